// Printing gradient functions as Slope source (`slopec grad --emit slope`).
#pragma once

#include "compiler/ir/ir.hpp"

#include <stdexcept>
#include <string>

namespace slope {

struct SlopePrintError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The gradient (or any) function as a Slope function of the same name, which parses,
/// checks and computes the same numbers. Throws SlopePrintError for the few constructs the
/// language cannot express yet (a tensor computed inside a loop body).
std::string printSlope(const ir::Function& gradient);

} // namespace slope
