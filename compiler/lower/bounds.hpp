// Subscript proofs on Loop IR (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// Marks proven the loads, stores and adds whose every subscript is in range by construction:
/// an index of an enclosing loop whose extent is at most the dimension's (`b[i, j]` inside
/// `for i < n, j < d` with `b: f64[n, d]`), or a literal below a dimension that is at least
/// one more than it. Reverse mode writes many such accesses (tapes and adjoints indexed by the
/// loop that made them) without a proof; a proven access has no check, so the inner loops it
/// sits in are branch-free. Returns how many accesses it proved.
int proveSubscripts(Function& f);

} // namespace slope::lower
