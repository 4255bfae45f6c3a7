// The checker: names, dtypes, symbolic shapes, index extents, subscript proofs, recursion,
// arity and result types; and, in the same walk, lowering of the AST to Tensor IR.
//
// Checking and lowering share one walk because the questions are the same ("what is the
// type of this expression here?") and lowering needs every answer. Calls are inlined: a
// callee is lowered again at each call site with its size names bound to the caller's
// extents. Each function is first checked on its own, so an error inside a callee is
// reported once, at its own source location.
#pragma once

#include "compiler/ir/ir.hpp"
#include "compiler/parse/ast.hpp"

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slope {

/// The most AST nodes (expressions and statements) a function may have once every call in it
/// is inlined, recursively; past it, checkModule reports the call that makes it too large.
/// A 200,000-term expression has 1.2 million; compiling 2 million takes about 30 s and 1 GB.
constexpr double kMaxInlinedNodes = 2e6;

/// Checks every function in the module; diagnostics go to diags. Returns true when clean.
bool checkModule(const ast::Module& m, DiagSink& diags);

/// A derivative of a function of the module as Tensor IR, for `grad(f)(...)`, `jvp(f)(...)`
/// and `hvp(f)(...)` in the language (kind "grad", "jvp" or "hvp"; wrt: parameter names,
/// never empty): what Program::gradient / jvp / hvp build, with results as values (not
/// returned in place). The pipeline supplies it, so that the checker does not depend on
/// autodiff. It throws (GradError) what it cannot differentiate.
using DerivativeSource = std::function<ir::Function(const std::string& kind, const std::string& fn,
                                                    const std::vector<std::string>& wrt,
                                                    const std::set<std::string>& plain)>;

/// Lowers one function (after a clean checkModule) to Tensor IR with all calls inlined.
/// Returns nullopt (with diagnostics) if the function does not check, or if a derivative it
/// calls cannot be built (then at the call). `derivatives` is needed only by functions that
/// call one.
/// `plain`: functions whose user derivative rules are not to be used here (calls of them are
/// their plain computation): those whose rule is being inlined where this lowering was asked
/// for (a rule that calls `grad(f)` of its own f), or there would be no end to it.
std::optional<ir::Function> lowerFunction(const ast::Module& m, const std::string& name,
                                          DiagSink& diags,
                                          const DerivativeSource& derivatives = nullptr,
                                          const std::set<std::string>& plain = {});

/// Whether the function calls a derivative (`grad(f)(...)` and the like), itself; not through
/// the functions it calls.
bool callsDerivative(const ast::Function& fn);

} // namespace slope
