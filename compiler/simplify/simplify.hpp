// The simplifier: Tensor IR -> Tensor IR, run on the forward function and again on its
// gradient.
//
// Rules that would change a result for some input (x * 0 -> 0 is wrong for NaN and
// infinities; reassociation changes rounding) are not in the list. "Exact up to the sign of
// zero" rules may turn a -0 result into +0, which compares equal; every other rule is exact.
// Each rule has a one-line golden test in tests/lit/simplify/.
#pragma once

#include "compiler/ir/ir.hpp"

#include <vector>

namespace slope {

struct SimplifyRule {
  const char* name;
  const char* pattern;
  const char* exactness;
};

/// Every rule, for documentation and tests.
const std::vector<SimplifyRule>& simplifyRules();

/// How much work one simplify() did, for tests of its cost: the rounds of the fixpoint (at
/// most kMaxSimplifyRounds) and the dead-code sweeps over the whole function, all rounds
/// together (each removes whole chains of dead values, so a few per round).
struct SimplifyStats {
  int rounds = 0;
  int dceSweeps = 0;
};
constexpr int kMaxSimplifyRounds = 8;

/// Simplifies f in place until nothing changes (or kMaxSimplifyRounds rounds).
SimplifyStats simplify(ir::Function& f);

/// The last step before a function runs: a result that copies a buffer the call made (a var
/// returned at the end, `{ var y = ...; ...; y }`) and that nothing writes after the copy is
/// returned as the buffer itself, so returning a var costs nothing. Reverse mode takes values,
/// so differentiate() first puts such copies back (copyBufferResults).
void returnBuffersInPlace(ir::Function& f);

/// The inverse: every result that is a buffer the call made is returned through a copy.
/// Returns whether anything changed.
bool copyBufferResults(ir::Function& f);

} // namespace slope
