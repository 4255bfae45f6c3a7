// Dense Jacobians and Hessians, assembled from the compiled JVP, VJP and HVP functions (what
// `slopec jacobian`, `slopec hessian` and Module::jacobian / Module::hessian return).
#pragma once

#include "compiler/codegen/execute.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <functional>
#include <string>
#include <vector>

namespace slope {

/// A compiled JVP or HVP and how many directions it takes per call. batch 0: one, each tangent
/// shaped as its parameter (jvp(f, wrt)); batch K: K, each tangent that shape ++ [K],
/// direction j at [..., j] (jvp(f, wrt, K)).
struct Directional {
  Directional(Runnable r, int64_t k = 0) : run(std::move(r)), batch(k) {} // NOLINT: implicit
  Runnable run;
  int64_t batch = 0;
};

/// The directions per call for `count` of them: as few calls as 16 directions per call need,
/// the directions spread evenly over them (17 take two calls of 9). More lanes make the
/// generated code longer; 16 keeps compile time near the unbatched JVP's few times.
int directionBatch(int64_t count);

/// Runs fn along `count` directions of the input space (the wrt parameters' elements, in
/// parameter order), batch at a time: input element `col` is 1 in direction dirOf(col) and 0
/// in the others (a unit column, or a colour of columns). take(d, t) receives direction d's
/// output tangents, fn's results from `first` on, flattened and concatenated; the first call's
/// results before `first` go to value (when not null). Returns the number of calls.
int64_t alongDirections(const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams,
                        const Directional& fn, int64_t count,
                        const std::function<int64_t(int64_t col)>& dirOf, size_t first,
                        std::vector<Tensor>* value,
                        const std::function<void(int64_t d, const std::vector<double>& t)>& take);

/// alongDirections without the flattening: takeCall(d0, out) receives each call's results
/// whole (directions d0 .. d0 + batch - 1; a tangent result has its value's shape ++ [batch],
/// direction d0 + j at [..., j]), for a caller that reads the lanes where they lie.
int64_t alongDirectionBatches(
    const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams, const Directional& fn,
    int64_t count, const std::function<int64_t(int64_t col)>& dirOf, size_t first,
    std::vector<Tensor>* value,
    const std::function<void(int64_t d0, const std::vector<Tensor>& out)>& takeCall);

/// The positions of the parameters of f named in wrt.
std::vector<size_t> wrtParams(const ir::Function& f, const std::vector<std::string>& wrt);

struct DenseDerivative {
  /// f64[rows, cols]. Jacobian: a row per element of f's float results (row-major, result
  /// after result), a column per element of the differentiated parameters (in parameter
  /// order). Hessian: a row and a column per element of the differentiated parameters.
  Tensor matrix;
  std::vector<Tensor> value; // f's results at the point
  std::string mode;          // "forward" (a JVP per column, or per batch of columns) or
                             // "reverse" (a VJP per row); Hessians: "forward over reverse"
                             // (an HVP per column or batch of columns)
  int64_t directions = 0;    // JVPs, VJPs or HVPs: columns or rows
  int64_t calls = 0;         // compiled calls made (a batched JVP or HVP takes several)
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
                              const Directional& jvpFn, const Runnable& vjpFn);

/// The Hessian of a scalar f at args with respect to wrt, a column per HVP (hvpFn runs
/// hvp(f's gradient, wrt)). H is symmetric up to rounding; the columns are returned as
/// computed.
DenseDerivative denseHessian(const ir::Function& f, const std::vector<std::string>& wrt,
                             const std::vector<Tensor>& args, const Directional& hvpFn);

} // namespace slope
