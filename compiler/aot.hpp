// Ahead-of-time compilation of a program's functions (what `slopec compile` and
// `slopec grad --emit obj|header` run): which functions go into the object, under which
// names, with which result names in the header. The object and the header themselves:
// compiler/codegen/object.hpp.
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/object.hpp"
#include "compiler/pipeline.hpp"

#include <string>
#include <vector>

namespace slope {

/// The functions `functions` of p (each NAME) and the gradients of `gradients` (NAME_grad
/// for a float scalar result, NAME_vjp otherwise, with respect to `wrt`: every float
/// parameter when empty), each gradient after its function when both are asked for. Results
/// are named as the typed entries of the header name them: `result` (resultK for several),
/// then for a gradient its `value` or the forward results, and `grad_P` for each parameter P
/// it differentiates. Throws std::invalid_argument for a gradient of a function with no float
/// parameter, GradError for a bad wrt.
std::vector<codegen::ObjectFunction> objectFunctions(const Program& p,
                                                     const std::vector<std::string>& functions,
                                                     const std::vector<std::string>& gradients,
                                                     const std::vector<std::string>& wrt,
                                                     const GradOptions& opt);

/// Whether the function has a float parameter (so a gradient).
bool hasGradient(const Program& p, const std::string& name);

} // namespace slope
