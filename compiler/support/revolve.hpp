// Binomial checkpointing: where Revolve puts the next snapshot.
//
// Griewank and Walther, "Algorithm 799: revolve" (ACM TOMS 26(1), 2000). Reversing l steps
// while holding at most s states costs at least r*l - C(s+r, r-1) forward steps, where r, the
// number of times the worst step is recomputed, is the least with C(s+r, s) >= l; Revolve's
// rule for placing snapshots attains it. Slope's reverse sweep runs that rule online, one
// reversed step at a time (see reverseBinomial in compiler/autodiff/loops.cpp), so the
// rule is all it needs: the evaluator and the JIT both call this one function.
#pragma once

#include <cstdint>

namespace slope {

/// The state before step `cur` is held and `free` slots are left; steps cur..end (inclusive)
/// are still to be reversed. Returns the step (cur < m <= end) before which the next snapshot
/// should be taken, or end + 1 when none should (no free slot, or nothing to advance over).
int64_t revolveNext(int64_t cur, int64_t end, int64_t free);

} // namespace slope
