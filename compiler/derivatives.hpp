// Dense Jacobians and Hessians, assembled from the compiled JVP, VJP and HVP functions (what
// `slopec jacobian`, `slopec hessian` and Module::jacobian / Module::hessian return).
#pragma once

#include "compiler/codegen/execute.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <string>
#include <vector>

namespace slope {

struct DenseDerivative {
  /// f64[rows, cols]. Jacobian: a row per element of f's float results (row-major, result
  /// after result), a column per element of the differentiated parameters (in parameter
  /// order). Hessian: a row and a column per element of the differentiated parameters.
  Tensor matrix;
  std::vector<Tensor> value; // f's results at the point
  std::string mode;          // "forward" (a JVP per column) or "reverse" (a VJP per row);
                             // Hessians: "forward over reverse" (an HVP per column)
  int64_t calls = 0;         // compiled calls made
};

/// Elements of the float results of f at these sizes, and of the parameters named in wrt.
int64_t outputElements(const ir::Function& f, const std::vector<Tensor>& args);
int64_t inputElements(const ir::Function& f, const std::vector<Tensor>& args,
                      const std::vector<std::string>& wrt);

/// The Jacobian of f at args with respect to wrt (resolved names). mode "forward", "reverse",
/// or "auto": forward when the inputs are fewer than the outputs, reverse otherwise.
/// jvpFn runs jvp(f, wrt); vjpFn runs differentiate(f, wrt) (NAME_grad or NAME_vjp).
DenseDerivative denseJacobian(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, const std::string& mode,
                              const Runnable& jvpFn, const Runnable& vjpFn);

/// The Hessian of a scalar f at args with respect to wrt, a column per HVP (hvpFn runs
/// hvp(f's gradient, wrt)). H is symmetric up to rounding; the columns are returned as
/// computed.
DenseDerivative denseHessian(const ir::Function& f, const std::vector<std::string>& wrt,
                             const std::vector<Tensor>& args, const Runnable& hvpFn);

} // namespace slope
