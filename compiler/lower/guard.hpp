// Guarded iteration becomes a shorter loop (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// A loop over c < e whose body does its work under `if c < j` (or c <= j; or j < c, j <= c:
/// a lower bound), j not changed by the loop, becomes a loop over only the iterations where
/// the guard holds, without the branch: `sum[c: d](if c < j {e} else {0})` is a sum over
/// c < min(d, j), the same loop as the triangular `sum[c: j]`. It applies to a sum whose
/// skipped iterations add 0 (an exact no-op: a sum starts at +0 and never becomes -0 by adding
/// +0) and to a loop of effects (reverse mode's adjoint of such a sum) whose skipped
/// iterations do nothing; what the body computes outside the branch must neither fail nor
/// write memory other than its own, so skipping it changes nothing. Returns how many loops it
/// narrowed.
int narrowGuards(Function& f);

} // namespace slope::lower
