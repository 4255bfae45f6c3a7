// Loop-invariant code motion across loop nests (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// Moves costly work out of loops that do not change it. For each loop L, a pure expression
/// inside L (at any depth) that does not depend on L's indices, nor on anything L's body
/// computes or writes, and that contains a costly operation (a transcendental, a float
/// division, a power) is computed before L: as a scalar when it depends on no index of a
/// loop inside L either, else as a buffer over the indices of the inner loops it uses,
/// computed in a parallel nest of its own and read where the expression was (`exp(icf[k, j])`
/// inside a sum over data points i becomes one buffer [K, d] per call instead of n K d
/// calls of exp). Outer loops are treated first, so work leaves as many loops as it can.
/// Nothing speculative is hoisted: no load not proven in range, no integer division or
/// conversion that can fail. Returns how many expressions were hoisted.
///
/// HoistCost::IntegerTrees also hoists a pure tree of many operations with no costly one
/// (run after strength reduction: its entry checks depend on the index of the loop around the
/// reduced one, not on the outer indices, and are worth a table over that index).
enum class HoistCost { Costly, IntegerTrees };
int hoistInvariants(Function& f, HoistCost cost = HoistCost::Costly);

} // namespace slope::lower
