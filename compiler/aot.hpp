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

/// The functions `names` of p (each NAME), and with `gradients` also each one's gradient
/// (NAME_grad for a float scalar result, NAME_vjp otherwise) with respect to `wrt` (every
/// float parameter when empty), for those with a float parameter. Results are named as the
/// typed entries of the header name them: `result` (resultK for several), then for a
/// gradient's `value` or the forward results, `grad_P` for each parameter P in wrt.
std::vector<codegen::ObjectFunction>
objectFunctions(const Program& p, const std::vector<std::string>& names, bool gradients,
                const std::vector<std::string>& wrt, const GradOptions& opt);

} // namespace slope
