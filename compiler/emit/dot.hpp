// Graphviz DOT of a function's IR (`slopec graph`).
#pragma once

#include "compiler/ir/ir.hpp"

#include <string>

namespace slope {

/// One node per instruction, an edge from each operand to its user, a cluster per region.
/// Values numbered at or above `firstAdjoint` (when >= 0) are drawn as adjoint nodes: filled,
/// in the adjoint colour, so that forward and adjoint computation stand apart.
std::string printDot(const ir::Function& f, int firstAdjoint = -1);

} // namespace slope
