// Dense Jacobians and Hessians, assembled from the compiled JVP, VJP and HVP functions (what
// `slopec jacobian`, `slopec hessian` and Module::jacobian / Module::hessian return).
#pragma once

#include "compiler/autodiff/forward.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace slope {

/// A compiled JVP or HVP and how many directions it takes per call. batch 0: one, each tangent
/// shaped as its parameter (jvp(f, wrt)); batch K: K, each tangent that shape ++ [K],
/// direction j at [..., j] (jvp(f, wrt, K)). `into`, where the caller has one, runs the same
/// function on the arguments and the tangents given apart, writing its results into `out`
/// (tensors of the results' types, as an earlier `run` gave them): a caller that calls again
/// and again then allocates nothing, and the compiled code overwrites every element.
/// `seeded`, where set, replaces run and into: seeded(d0, args, out) runs jvpSeeded()'s
/// function for directions d0 .. d0 + batch - 1, which takes the arguments only (its tangents
/// are constants of its code), writing its results into out (out empty: it sets them).
struct Directional {
  using RunInto =
      std::function<void(const std::vector<Tensor>& args, const std::vector<Tensor>& tangents,
                         std::vector<Tensor>& out)>;
  Directional(Runnable r, int64_t k = 0) : run(std::move(r)), batch(k) {} // NOLINT: implicit
  Runnable run;
  int64_t batch = 0;
  RunInto into;
  std::function<void(int64_t d0, const std::vector<Tensor>& args, std::vector<Tensor>& out)> seeded;
  /// One call's compiled function of seededDirectional(): writes the results into out (out
  /// empty: it sets them).
  using SeededRun = std::function<void(const std::vector<Tensor>& args, std::vector<Tensor>& out)>;
};

/// The directions per call for `count` of them: as few calls as 16 directions per call need,
/// the directions spread evenly over them (17 take two calls of 9). More lanes make the
/// generated code longer; 16 keeps compile time near the unbatched JVP's few times.
int directionBatch(int64_t count);

/// Runs fn along every direction of the input space that is a unit column (the wrt parameters'
/// elements, in parameter order), batch at a time. take(c, t) receives column c's output
/// tangents, fn's results from `first` on, flattened and concatenated; the first call's results
/// before `first` go to value (when not null). Returns the number of calls.
int64_t alongDirections(const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams,
                        const Directional& fn, size_t first, std::vector<Tensor>* value,
                        const std::function<void(int64_t c, const std::vector<double>& t)>& take);

/// What a sequence of batched calls keeps from one sequence to the next: the tangents it
/// passes, which directions they were set for, and the results fn.into writes in place. A
/// caller that runs the same directions again (a sparse Jacobian at new arguments) sets no
/// tangent and allocates nothing the second time.
struct DirectionWork {
  std::vector<Tensor> tangents;                // a tangent per differentiated parameter
  std::vector<int64_t> dirOf;                  // what `tangents` were built for
  int64_t lanesFor = -1;                       // the d0 whose lanes are 1 in `tangents` (-1: none)
  std::vector<Tensor> out;                     // fn's results, when fn.into is given
  std::vector<std::vector<int64_t>> argShapes; // the argument shapes and batch `out` was
  int64_t batch = -1;                          // shaped for
};

/// Runs fn along `count` directions, batch at a time: input element `col` (counting the wrt
/// parameters' elements in parameter order) is 1 in direction dirOf[col] and 0 in the others
/// (a unit column, or a colour of columns). takeCall(d0, out) receives each call's results
/// whole (directions d0 .. d0 + batch - 1; a tangent result has its value's shape ++ [batch],
/// direction d0 + j at [..., j]), for a caller that reads the lanes where they lie; the first
/// call's results before `first` go to value (when not null). work: buffers kept between
/// sequences (null: this sequence's own). Returns the number of calls.
int64_t alongDirectionBatches(
    const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams, const Directional& fn,
    int64_t count, const std::vector<int64_t>& dirOf, size_t first, std::vector<Tensor>* value,
    const std::function<void(int64_t d0, const std::vector<Tensor>& out)>& takeCall,
    DirectionWork* work = nullptr);

/// The seeds of a JVP compiled for these directions (jvpSeeded()), where every direction can be
/// told from its parameter and the last index of its element alone: for each parameter in
/// wrt, one lane for all its elements, or a lane per index of its last extent (which must
/// then be a literal of f's type: the code then does not depend on the sizes). Input element
/// `col` (as for alongDirectionBatches) is in direction dirOf[col]; all directions must be
/// below `lanes`. None where the directions have another form. The lanes are the directions;
/// seedsOfBatch() gives a call's.
std::optional<Seeds> seedsFor(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, const std::vector<int64_t>& dirOf,
                              int lanes);

/// The seeds of the call for directions d0 .. d0 + batch - 1: direction d in lane d - d0, and
/// the others in none.
Seeds seedsOfBatch(const Seeds& all, int64_t d0, int64_t batch);

/// The Directional that runs `count` directions through JVPs compiled for them, batch at a
/// time: compile(seeds) is called once per call, with its seeds (seedsOfBatch(all, d0,
/// batch)), and gives that call's function of the arguments alone; `seeded` runs the one for
/// d0. Every caller that compiles seeded JVPs (the API, slopec, the tests) builds it here.
Directional seededDirectional(const Seeds& all, int64_t count, int64_t batch,
                              const std::function<Directional::SeededRun(const Seeds&)>& compile);

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
