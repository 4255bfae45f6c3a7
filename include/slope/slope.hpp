// Slope's C++ host API: compile .slope source at run time, then call its functions and their
// gradients on your own memory at native speed.
//
//   slope::Module m = slope::compile_file("model.slope");
//   double y = m.function("quadratic")(2.0);                 // 15
//   auto grad = m.gradient("bowl");                          // value + d/d(every float param)
//   double g[4];
//   double v = grad(slope::View(x, {2, 2}), slope::View(g, {2, 2}));   // writes g, returns 54
//
// No LLVM or Boost type appears here. Modules are cheap to copy (shared) and safe to call from
// several threads at once. Compiled code follows the C ABI documented in slope/abi.h.
#pragma once

#include "slope/abi.h"
#include "slope/tensor.hpp"

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace slope {

/// One compile error, with its location (1-based line and column).
struct Diagnostic {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message;
};

/// The source does not compile. what() and rendered() print the diagnostics exactly as
/// `slopec` does (FILE:LINE:COL: error: MESSAGE, the source line, a caret).
class CompileError : public std::runtime_error {
public:
  CompileError(std::vector<Diagnostic> diags, const std::string& rendered)
      : std::runtime_error(rendered), diags_(std::move(diags)) {}
  const std::vector<Diagnostic>& diagnostics() const { return diags_; }
  std::string rendered() const { return what(); }

private:
  std::vector<Diagnostic> diags_;
};

/// A failure while a function runs: a data-dependent subscript out of range, an integer
/// division by zero. The message names the tensor and the index and points into the source.
class RuntimeError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A non-owning view of caller memory: a pointer, a dtype and extents (dense, row-major).
/// Scalars are views of rank 0. Gradient outputs must be views of writable memory.
/// A call throws CallError, naming the parameter, for a null pointer (unless the view has no
/// elements) and for a result or gradient view that overlaps an argument or another output.
class View {
public:
  View(double* p, std::vector<int64_t> shape) : View(p, DType::F64, std::move(shape), true) {}
  View(float* p, std::vector<int64_t> shape) : View(p, DType::F32, std::move(shape), true) {}
  View(int64_t* p, std::vector<int64_t> shape) : View(p, DType::I64, std::move(shape), true) {}
  View(const double* p, std::vector<int64_t> shape)
      : View(const_cast<double*>(p), DType::F64, std::move(shape), false) {}
  View(const float* p, std::vector<int64_t> shape)
      : View(const_cast<float*>(p), DType::F32, std::move(shape), false) {}
  View(const int64_t* p, std::vector<int64_t> shape)
      : View(const_cast<int64_t*>(p), DType::I64, std::move(shape), false) {}
  /// A bool tensor: one byte per element, 0 or 1.
  static View bools(uint8_t* p, std::vector<int64_t> shape) {
    return View(p, DType::Bool, std::move(shape), true);
  }
  /// A scalar in caller memory (rank 0).
  View(double& x) : View(&x, DType::F64, {}, true) {}
  View(float& x) : View(&x, DType::F32, {}, true) {}
  View(Tensor& t) : View(t.raw(), t.dtype(), t.shape(), true) {}
  View(const Tensor& t) : View(const_cast<void*>(t.raw()), t.dtype(), t.shape(), false) {}

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  bool writable() const { return writable_; }

private:
  View(void* p, DType t, std::vector<int64_t> shape, bool w)
      : data_(p), dtype_(t), shape_(std::move(shape)), writable_(w) {}
  void* data_;
  DType dtype_;
  std::vector<int64_t> shape_;
  bool writable_;
};

/// An argument: a view, or a scalar passed by value (`f(2.0)`, `f(3)` for an i64 parameter).
/// An integer passed by value for a float parameter (`f(2)` for an f64 x) is converted when
/// the float holds it exactly, and is a CallError otherwise.
class Arg {
public:
  Arg(const View& v) : view_(v) {}
  Arg(Tensor& t) : view_(t) {}
  Arg(const Tensor& t) : view_(t) {}
  Arg(double x) : owned_(std::make_shared<Tensor>(Tensor::scalar(DType::F64, x))), view_(*owned_) {}
  Arg(float x) : owned_(std::make_shared<Tensor>(Tensor::scalar(DType::F32, x))), view_(*owned_) {}
  Arg(int64_t x)
      : owned_(std::make_shared<Tensor>(DType::I64, std::vector<int64_t>{})), view_(*owned_),
        integer_(true) {
    owned_->setI(0, x);
  }
  Arg(int x) : Arg(static_cast<int64_t>(x)) {}
  Arg(bool x)
      : owned_(std::make_shared<Tensor>(DType::Bool, std::vector<int64_t>{})), view_(*owned_) {
    owned_->setI(0, x);
  }
  const View& view() const { return view_; }
  /// Whether this is an integer passed by value (which converts to a float parameter).
  bool integer_literal() const { return integer_; }

private:
  std::shared_ptr<Tensor> owned_;
  View view_;
  bool integer_ = false;
};

/// What a call returns: the function's results, owned. A single scalar result converts to
/// double (`double y = f(2.0);`).
class Result {
public:
  explicit Result(std::vector<Tensor> r) : r_(std::move(r)) {}
  size_t size() const { return r_.size(); }
  const Tensor& operator[](size_t k) const { return r_.at(k); }
  const std::vector<Tensor>& tensors() const { return r_; }
  /// The value of a single scalar result; throws std::logic_error otherwise.
  double scalar() const;
  operator double() const { return scalar(); }

private:
  std::vector<Tensor> r_;
};

/// A value with its gradients (owned), as Gradient::evaluate returns them.
struct GradientResult {
  std::vector<Tensor> values;    // the function's results
  std::vector<Tensor> gradients; // one per differentiated parameter, in parameter order
  std::vector<std::string> wrt;  // their names
  double value() const;          // the single scalar value
  const Tensor& gradient(const std::string& param) const;
};

struct Options {
  /// LLVM optimisation level, 0..3: how long compiling takes against how fast the code runs.
  /// Results are the same bits at every level.
  int opt_level = 2;
  /// Tiered compilation: a function is first compiled at level 0 (within a tenth of the time
  /// of level 2 or less), and compiled again at opt_level on a thread of the module once its
  /// calls have taken about as long as that compile is expected to; calls then switch to the
  /// faster code (raw() pointers included). The results are the same bits either way. A
  /// host that times its calls, or makes one long call, calls optimize() first or sets this
  /// false (each function compiled at opt_level before it is returned).
  bool tiered = true;
  /// "cpu"; "cuda": parallel loop nests run as kernels on GPU 0 and the rest on the calling
  /// thread, the arguments and results copied to and from the GPU's memory (docs/gpu.md);
  /// throws std::invalid_argument saying what is missing (no driver library, no device)
  /// where CUDA cannot start. "auto": CUDA where it starts, else the CPU (Module::target()
  /// says which). Function::raw() is null on CUDA.
  std::string target = "cpu";
  /// Threads per parallel loop, the calling thread's included (1..64); 0: SLOPE_NUM_THREADS
  /// when set, otherwise every core. Results are the same bits for every number of threads.
  int threads = 0;
  bool interpret = false; // run on the reference evaluator instead of the JIT
  /// Loops with state in gradients: 0 keeps a tape entry per iteration; N > 0 keeps the state
  /// every N iterations and recomputes in between; -1 picks N = ceil(sqrt(iterations)).
  int checkpoint = 0;
  /// Binomial checkpointing (Revolve's schedule) instead: keep at most this many states of
  /// each loop whose trip count is known on entry, and recompute as little as that allows.
  std::int64_t checkpoint_snapshots = 0;
  /// Binomial checkpointing with as many states as fit in this many bytes. A budget below one
  /// state of a loop (its vars, and the rows a trajectory overwrites) makes the call throw
  /// RuntimeError, saying the state's size.
  /// At most one of checkpoint, checkpoint_snapshots and checkpoint_memory may be set.
  std::int64_t checkpoint_memory = 0;
};

namespace detail {
struct Compiled;
struct ModuleImpl;
struct SparsePatternKey;
struct SparseWork;

/// Owns the buffers a sparse result's next in-place evaluation reuses. A copy starts without
/// any, so two results never share them.
class SparseWorkSlot {
public:
  SparseWorkSlot() noexcept;
  SparseWorkSlot(const SparseWorkSlot&) noexcept;
  SparseWorkSlot(SparseWorkSlot&&) noexcept;
  SparseWorkSlot& operator=(const SparseWorkSlot&) noexcept;
  SparseWorkSlot& operator=(SparseWorkSlot&&) noexcept;
  ~SparseWorkSlot();
  SparseWork& get(); // made on first use
  void release() noexcept;

private:
  std::unique_ptr<SparseWork> work_;
};
} // namespace detail

/// The signature of a compiled entry point, for error messages and raw calls.
struct Signature {
  std::string name; // e.g. "bowl" or "bowl_grad"
  std::vector<std::string> param_names;
  std::vector<std::string> param_types; // "f64[n, m]"
  std::vector<std::string> result_types;
  std::vector<std::string> size_names; // order of the C ABI's sizes array
};

/// A compiled function.
class Function {
public:
  /// Calls with views or scalars; the results are returned owned.
  Result call(const std::vector<Arg>& args) const;
  template <class... A> Result operator()(A&&... args) const {
    return call(std::vector<Arg>{Arg(std::forward<A>(args))...});
  }
  /// Calls and writes the results into caller memory (one writable view per result).
  void call_into(const std::vector<Arg>& args, const std::vector<View>& results) const;
  /// The raw entry point (C ABI of slope/abi.h); null when the module is interpreted.
  slope_fn raw() const;
  const Signature& signature() const;
  /// Options::tiered: compiles at opt_level now unless that is done, and waits for it.
  void optimize() const;
  /// Whether calls run the code of opt_level (always true where not tiered).
  bool optimized() const;

private:
  friend class Module;
  friend class Gradient;
  std::shared_ptr<const detail::Compiled> c_;
};

/// A compiled gradient. For a function with one scalar float result (`NAME_grad`):
///   double v = g(args..., grads...);   // the arguments, then one writable view per
///                                      // differentiated parameter; returns the value.
/// For other functions (`NAME_vjp`), the output cotangents follow the arguments.
class Gradient {
public:
  template <class... A> double operator()(A&&... args) const {
    return call(std::vector<Arg>{Arg(std::forward<A>(args))...});
  }
  /// The arguments followed by one writable view per gradient; returns the scalar value (NaN
  /// for a VJP of a non-scalar function, whose values are not returned this way).
  double call(const std::vector<Arg>& argsThenGrads) const;
  /// Value and gradients, owned.
  GradientResult evaluate(const std::vector<Arg>& args) const;
  const std::vector<std::string>& wrt() const;
  slope_fn raw() const;
  const Signature& signature() const;
  void optimize() const;  // as Function::optimize
  bool optimized() const; // as Function::optimized

private:
  friend class Module;
  std::shared_ptr<const detail::Compiled> c_;
  std::vector<std::string> wrt_;
};

/// A dense Jacobian or Hessian at a point (Jacobian::evaluate).
struct DenseResult {
  /// f64[rows, cols]. Jacobian: a row per element of the float results (row-major, result
  /// after result), a column per element of the differentiated parameters (in parameter
  /// order). Hessian: rows and columns both per element of the differentiated parameters.
  Tensor matrix;
  std::vector<Tensor> value;   // the function's results at the point
  std::string mode;            // "forward", "reverse" or (Hessians) "forward over reverse"
  std::int64_t calls = 0;      // compiled calls it took (JVPs and HVPs go 16 directions a call)
  std::int64_t directions = 0; // JVPs or HVPs (a column each), or VJPs (a row each)
};

/// A sparse Jacobian or Hessian in compressed sparse rows (Jacobian::evaluate_sparse).
struct SparseResult {
  std::int64_t rows = 0, cols = 0;     // as DenseResult's matrix
  std::vector<std::int64_t> row_start; // rows + 1 offsets into col_index and values
  std::vector<std::int64_t> col_index; // the pattern: sorted within a row
  std::vector<double> values;
  std::vector<Tensor> value;        // the function's results at the point
  std::int64_t colours = 0;         // JVP (HVP) directions: columns that share no row share one
  std::vector<std::int64_t> colour; // per column: its colour (given back in `like`, reused)
  std::int64_t calls = 0;           // compiled calls it took (up to 16 colours a call)
  bool pattern_found = true;        // false: the pattern could not be read off the IR (every entry
                                    // is then stored, and it took a call per column)
  // Kept by the library for a later call given this result. pattern_key: what the pattern
  // was read for (the function, every argument's shape, the values of the integer and bool
  // arguments); a copy shares it. work: buffers evaluate_sparse_into reuses; a copy has none.
  std::shared_ptr<const detail::SparsePatternKey> pattern_key;
  detail::SparseWorkSlot work;
};

/// A dense Jacobian (Module::jacobian) or Hessian (Module::hessian) of a function, built
/// column by column from JVPs (forward mode), row by row from VJPs (reverse mode), or column
/// by column from Hessian-vector products; or its nonzeros (evaluate_sparse).
class Jacobian {
public:
  template <class... A> DenseResult operator()(A&&... args) const {
    return evaluate(std::vector<Arg>{Arg(std::forward<A>(args))...});
  }
  DenseResult evaluate(const std::vector<Arg>& args) const;
  /// The nonzeros only: the pattern read off the function's IR at these arguments (what each
  /// result element can depend on, through gathers and comprehensions; for a Hessian, the
  /// terms of a sum and what each depends on), the columns grouped by colouring, a JVP (HVP)
  /// direction per group, up to 16 directions in one call of a batched JVP (HVP). Each call
  /// reads the pattern afresh (it may depend on integer arguments, as bundle adjustment's
  /// does).
  SparseResult evaluate_sparse(const std::vector<Arg>& args) const;
  /// The same with the pattern of an earlier result (`like`: its row_start and col_index), not
  /// read again, and its colouring (`colour`) where it is one of that pattern (else coloured
  /// afresh): for a solver whose integer arguments (which observation sees what) stay fixed
  /// while the floats change. A CallError where the pattern was read for other sizes, another
  /// function or other values of an integer or bool argument (the pattern depends on those;
  /// a result assembled by hand, without pattern_key, is taken as given).
  SparseResult evaluate_sparse(const std::vector<Arg>& args, const SparseResult& like) const;
  /// evaluate_sparse(args, result) in place: result keeps its pattern and colouring, its
  /// values and value are overwritten, and the buffers of its last such call are reused, so a
  /// solver's steady-state call copies no pattern and allocates nothing of the Jacobian's
  /// size. The buffers (the arguments, the tangents and the compiled code's results: about
  /// a batched JVP's arguments and results) stay with the result until it is destroyed; the
  /// results of evaluate_sparse and copies hold none. A result without a pattern
  /// (default-constructed) gets one, as evaluate_sparse(args) reads it. The checks and errors
  /// are evaluate_sparse(args, like)'s, and a pattern that is not CSR of its size is a
  /// CallError; after an error thrown while the compiled code runs, the values are
  /// unspecified. One result is refilled by one thread at a time; a Jacobian serves any.
  void evaluate_sparse_into(const std::vector<Arg>& args, SparseResult& result) const;

private:
  friend class Module;
  std::shared_ptr<detail::ModuleImpl> impl_;
  std::string name_, mode_;
  std::vector<std::string> wrt_;
  bool hessian_ = false;
};

class Module {
public:
  /// The function `name` (compiled on first use). Throws std::invalid_argument if unknown.
  Function function(const std::string& name) const;
  /// Its gradient with respect to `wrt` (every float parameter when empty).
  Gradient gradient(const std::string& name, const std::vector<std::string>& wrt = {}) const;
  /// Forward mode, NAME_jvp: called with the arguments, then one tangent per differentiated
  /// parameter (its type, in parameter order), it returns the function's results, then the
  /// tangent of each float result (J v). No tape, whatever loops the function has.
  Function jvp(const std::string& name, const std::vector<std::string>& wrt = {}) const;
  /// The Hessian-vector product NAME_hvp of a function with one scalar float result (forward
  /// mode over its gradient): the arguments, then a direction per differentiated parameter;
  /// it returns the value, the gradient per parameter, then H v per parameter. Throws
  /// std::invalid_argument for a function with another result.
  Function hvp(const std::string& name, const std::vector<std::string>& wrt = {}) const;
  /// The dense Jacobian. mode: "forward" (a JVP per input element), "reverse" (a VJP per
  /// output element), or "auto": forward when the inputs are fewer than the outputs.
  Jacobian jacobian(const std::string& name, const std::vector<std::string>& wrt = {},
                    const std::string& mode = "auto") const;
  /// The dense Hessian of a function with one scalar float result (an HVP per column).
  Jacobian hessian(const std::string& name, const std::vector<std::string>& wrt = {}) const;
  std::vector<std::string> function_names() const;
  /// Where the module's functions run: "cpu", "cuda" or "interpreter" (Options::interpret).
  std::string target() const;

private:
  friend class Jacobian;
  friend Module compile_file(const std::string&, const Options&);
  friend Module compile_string(const std::string&, const std::string&, const Options&);
  friend struct GradientCheck check_gradient(const Module&, const std::string&,
                                             const std::vector<Arg>&, double, double);
  Module() = default;
  std::shared_ptr<detail::ModuleImpl> impl_;
};

/// Compiles a .slope file or source text. Throws CompileError with the diagnostics.
Module compile_file(const std::string& path, const Options& options = {});
Module compile_string(const std::string& source, const std::string& name = "<string>",
                      const Options& options = {});

struct ParamCheck {
  std::string name;
  double max_abs_err = 0;
  double max_rel_err = 0;
  bool passed = true;
  int64_t elements = 0; // the parameter's element count
  int64_t checked = 0;  // how many were compared (a random subset of at most 1000)
};

struct GradientCheck {
  bool passed = true;
  std::vector<ParamCheck> params;
  /// Where the value or the gradient is not finite at args: why (no comparison was made and
  /// passed is false). Empty otherwise.
  std::string not_finite;
};

/// Compares reverse mode with central finite differences at `args` (what `slopec check`
/// does). rtol / atol < 0 take the dtype's defaults (f64 1e-5 / 1e-7, f32 2e-3 / 1e-4).
GradientCheck check_gradient(const Module& m, const std::string& name, const std::vector<Arg>& args,
                             double rtol = -1, double atol = -1);

} // namespace slope
