// The C++ host API (include/slope/slope.hpp) on top of the pipeline, the JIT and the evaluator.

#include "slope/slope.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/codegen/offload.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/sparsity.hpp"
#include "compiler/support/thread_pool.hpp"
#include "runtime/cuda_driver.hpp"

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

namespace slope {

/// The public checkpointing options, as the autodiff pass takes them.
static codegen::JitOptions jitOptions(const Options& o) {
  codegen::JitOptions j;
  j.optLevel = o.opt_level;
  j.threads = o.threads;
  j.tiered = o.tiered;
  return j;
}

static GradOptions gradOptions(const Options& o) {
  GradOptions g;
  g.checkpoint = o.checkpoint;
  g.snapshots = o.checkpoint_snapshots;
  g.memory = o.checkpoint_memory;
  return g;
}

namespace detail {

/// What a compiled entry point computes.
enum class Kind { Value, Gradient, Jvp, Hvp };

struct Compiled {
  ir::Function f;
  std::vector<std::string> resultNames; // "result 1", "gradient 'x'", for error messages
  Signature sig;
  std::optional<codegen::CompiledFunction> jit; // empty when interpreted or on the GPU
  codegen::DeviceCall deviceCall; // on the GPU (Options::target): the offload, on the views
  size_t valueResults = 0;        // results before the gradients
  std::vector<std::string> wrt;
  const SourceFile* file = nullptr;
};

struct ModuleImpl {
  std::unique_ptr<Program> program;
  Options options;
  std::unique_ptr<codegen::Jit> jit;
  std::unique_ptr<codegen::CudaRunner> cuda; // the target is CUDA (jit is null then)
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const Compiled>> cache;

  /// batch: Jvp and Hvp only, the directions per call (0: one; see jvp()). seeds: Jvp only,
  /// its tangents constants of the code (jvpSeeded(); batch >= 1).
  std::shared_ptr<const Compiled> get(const std::string& name, Kind kind,
                                      const std::vector<std::string>& wrt, int batch = 0,
                                      const Seeds* seeds = nullptr);
};

std::shared_ptr<const Compiled> ModuleImpl::get(const std::string& name, Kind kind,
                                                const std::vector<std::string>& wrtIn, int batch,
                                                const Seeds* seeds) {
  static const char* const kKindKey[] = {"", "|grad", "|jvp", "|hvp"};
  std::string batchKey = batch > 0 ? "*" + std::to_string(batch) : "";
  if (seeds) { // (a JIT per colouring: the seeds are in the key, `x:lane,lane;`)
    batchKey += "@";
    for (const auto& [param, lanes] : *seeds) {
      batchKey += param + ":";
      for (int l : lanes)
        batchKey += std::to_string(l) + ",";
      batchKey += ";";
    }
  }
  const bool grad = kind != Kind::Value;
  if (!program->hasFunction(name)) {
    std::string names;
    for (const auto& n : program->functionNames())
      names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("no function '" + name + "' (the module has: " + names + ")");
  }
  // Asked for before with the same words: no lowering to resolve wrt again (a host that asks
  // for the gradient on every call pays a map lookup, not a front-end run).
  std::string asked = name + kKindKey[static_cast<int>(kind)] + batchKey + "?";
  for (const auto& w : wrtIn)
    asked += "|" + w;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(asked);
    if (it != cache.end()) return it->second;
  }
  std::string key = name;
  std::vector<std::string> wrt;
  if (grad) {
    ir::Function f = program->forward(name);
    try {
      wrt = resolveWrt(f, wrtIn);
    } catch (const GradError& e) {
      throw std::invalid_argument(e.what());
    }
    key += kKindKey[static_cast<int>(kind)] + batchKey;
    for (const auto& w : wrt)
      key += "|" + w;
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) {
    cache[asked] = it->second;
    return it->second;
  }
  auto c = std::make_shared<Compiled>();
  ir::Function fwd = program->forward(name);
  c->valueResults = fwd.body.yields.size();
  try {
    switch (kind) {
    case Kind::Value: c->f = fwd; break;
    case Kind::Gradient: c->f = program->gradient(name, wrt, gradOptions(options)); break;
    case Kind::Jvp:
      c->f = seeds ? program->jvpSeeded(name, wrt, batch, *seeds) : program->jvp(name, wrt, batch);
      break;
    case Kind::Hvp: c->f = program->hvp(name, wrt, gradOptions(options), batch); break;
    }
  } catch (const GradError& e) {
    throw std::invalid_argument(e.what());
  }
  for (size_t r = 0; r < c->valueResults; ++r)
    c->resultNames.push_back("result " + std::to_string(r + 1));
  if (kind == Kind::Gradient || kind == Kind::Hvp)
    for (const auto& w : wrt)
      c->resultNames.push_back("gradient '" + w + "'");
  if (kind == Kind::Hvp)
    for (const auto& w : wrt)
      c->resultNames.push_back("H v for '" + w + "'");
  if (kind == Kind::Jvp)
    for (size_t r = 0; r < c->valueResults; ++r)
      if (isFloat(fwd.types[fwd.body.yields[r]].dtype))
        c->resultNames.push_back("the tangent of result " + std::to_string(r + 1));
  c->wrt = wrt;
  c->file = &program->diags().file();
  c->sig.name = c->f.name;
  c->sig.param_names = c->f.paramNames;
  for (const auto& t : c->f.paramTypes)
    c->sig.param_types.push_back(t.str());
  for (int y : c->f.body.yields)
    c->sig.result_types.push_back(c->f.types[y].str());
  c->sig.size_names = c->f.sizeNames();
  if (cuda) {
    cuda->prepare(c->f); // (its call on tensors is for slopec and the tests)
    c->deviceCall = cuda->lastCall();
  } else if (jit) {
    c->jit = jit->add(c->f);
  }
  cache[key] = c;
  cache[asked] = c;
  return c;
}

namespace {

Tensor copyOf(const View& v) {
  Tensor t(v.dtype(), v.shape());
  std::memcpy(t.raw(), v.data(), static_cast<size_t>(t.numel()) * dtypeSize(v.dtype()));
  return t;
}

int64_t viewBytes(const View& v) {
  int64_t n = static_cast<int64_t>(dtypeSize(v.dtype()));
  for (int64_t e : v.shape())
    n *= e; // validated: bindSizes / the result shapes checked the extents
  return n;
}

/// Runs c on args. outs[r], where given, receives result r; the others are returned.
std::vector<Tensor> run(const Compiled& c, const std::vector<View>& args,
                        const std::vector<const View*>& outs) {
  std::vector<ArgShape> shapes;
  for (const View& v : args)
    shapes.push_back({v.dtype(), v.shape()});
  auto sizes = bindSizes(c.f, shapes);
  // Null data: the compiled code would dereference it. A view with no elements may be null
  // (an empty std::vector's data()).
  for (size_t k = 0; k < args.size(); ++k)
    if (!args[k].data() && viewBytes(args[k]) > 0)
      throw CallError("parameter '" + c.f.paramNames[k] + "' (" + c.sig.param_types[k] +
                      "): the view's data pointer is null");
  size_t nr = c.f.body.yields.size();
  std::vector<std::vector<int64_t>> rshape;
  for (size_t r = 0; r < nr; ++r)
    rshape.push_back(resultShape(c.f, r, sizes));
  for (size_t r = 0; r < nr; ++r) {
    const View* o = r < outs.size() ? outs[r] : nullptr;
    if (!o) continue;
    DType want = c.f.types[c.f.body.yields[r]].dtype;
    const std::string& what = c.resultNames[r];
    if (o->dtype() != want || o->shape() != rshape[r])
      throw CallError(what + " must be " + typeString(want, rshape[r]) + ", got a view of " +
                      typeString(o->dtype(), o->shape()));
    if (!o->writable()) throw CallError(what + " needs a writable view");
    if (!o->data() && viewBytes(*o) > 0)
      throw CallError(what + ": the view's data pointer is null");
  }
  // An output that shares memory with an argument or another output would be read after it
  // is overwritten (the C ABI forbids it): refuse, naming both.
  auto name = [&](size_t r) { return c.resultNames[r]; };
  auto overlap = [](const View& a, const View& b) {
    auto pa = reinterpret_cast<uintptr_t>(a.data()), pb = reinterpret_cast<uintptr_t>(b.data());
    auto na = static_cast<uintptr_t>(viewBytes(a)), nb = static_cast<uintptr_t>(viewBytes(b));
    return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
  };
  for (size_t r = 0; r < nr; ++r) {
    const View* o = r < outs.size() ? outs[r] : nullptr;
    if (!o) continue;
    for (size_t k = 0; k < args.size(); ++k)
      if (overlap(*o, args[k]))
        throw CallError(name(r) + " overlaps parameter '" + c.f.paramNames[k] +
                        "': an output must not share memory with an input");
    for (size_t q = 0; q < r; ++q)
      if (q < outs.size() && outs[q] && overlap(*o, *outs[q]))
        throw CallError(name(r) + " overlaps " + name(q) +
                        ": outputs must not share memory with each other");
  }
  std::vector<Tensor> owned(nr);
  try {
    if (c.deviceCall) { // the GPU: the offload copies straight from the views and into them
      std::vector<codegen::Span> in, out;
      for (const View& v : args)
        in.push_back({v.data(), static_cast<size_t>(viewBytes(v))});
      for (size_t r = 0; r < nr; ++r) {
        const View* o = r < outs.size() ? outs[r] : nullptr;
        if (!o) owned[r] = Tensor(c.f.types[c.f.body.yields[r]].dtype, rshape[r]);
        View v = o ? *o : View(owned[r]);
        out.push_back({v.data(), static_cast<size_t>(viewBytes(v))});
      }
      c.deviceCall(in, sizes, out);
      return owned;
    }
    if (!c.jit) { // the evaluator: on copies of the views
      std::vector<Tensor> in;
      for (const View& v : args)
        in.push_back(copyOf(v));
      std::vector<Tensor> res = evaluate(c.f, in);
      for (size_t r = 0; r < nr; ++r) {
        const View* o = r < outs.size() ? outs[r] : nullptr;
        if (o)
          std::memcpy(o->data(), res[r].raw(),
                      static_cast<size_t>(res[r].numel()) * dtypeSize(res[r].dtype()));
        else
          owned[r] = std::move(res[r]);
      }
      return owned;
    }
    std::vector<int64_t> sz = sizesArray(c.f, sizes);
    std::vector<void*> argp;
    for (const View& v : args)
      argp.push_back(v.data());
    std::vector<void*> resp;
    for (size_t r = 0; r < nr; ++r) {
      const View* o = r < outs.size() ? outs[r] : nullptr;
      if (o) {
        resp.push_back(o->data());
      } else {
        owned[r] = Tensor(c.f.types[c.f.body.yields[r]].dtype, rshape[r]);
        resp.push_back(owned[r].raw());
      }
    }
    slope_error err{};
    if (c.jit->fn(argp.data(), sz.data(), resp.data(), &err) != 0)
      throwCallFailure(*c.jit, err, &sizes);
  } catch (const EvalError& e) {
    throw RuntimeError(renderDiagnostic(*c.file, Diag{e.where, e.what()}));
  }
  return owned;
}

/// The views of args for c's parameters; an integer passed by value for a float parameter
/// becomes a float in `hold` when the float holds it exactly (f(2) for an f64 x).
std::vector<View> views(const Compiled& c, const std::vector<Arg>& args,
                        std::vector<Tensor>& hold) {
  std::vector<View> v;
  hold.reserve(args.size()); // views point into hold: no reallocation
  for (size_t k = 0; k < args.size(); ++k) {
    const Arg& a = args[k];
    if (a.integer_literal() && k < c.f.paramTypes.size() && isFloat(c.f.paramTypes[k].dtype)) {
      int64_t x =
          a.view().dtype() == DType::I64 ? *static_cast<const int64_t*>(a.view().data()) : 0;
      DType dt = c.f.paramTypes[k].dtype;
      double d = static_cast<double>(x);
      bool exact = dt == DType::F64 ? (d < 9223372036854775808.0 && static_cast<int64_t>(d) == x)
                                    : (static_cast<int64_t>(static_cast<float>(x)) == x &&
                                       static_cast<float>(x) < 9223372036854775808.0f);
      if (!exact)
        throw CallError("parameter '" + c.f.paramNames[k] + "' is " + dtypeName(dt) +
                        ": the integer " + std::to_string(x) + " is not exactly representable");
      hold.push_back(Tensor::scalar(dt, d));
      v.push_back(View(hold.back()));
    } else {
      v.push_back(a.view());
    }
  }
  return v;
}

} // namespace

/// Runs c on tensors: the arguments, then the tangents (where given). Results go into out's
/// tensors where out holds them (an earlier call's, of these shapes), else into out afresh.
void runTensors(const Compiled& c, const std::vector<Tensor>& args,
                const std::vector<Tensor>* tangents, std::vector<Tensor>& out) {
  std::vector<View> v, o;
  for (const Tensor& t : args)
    v.push_back(View(t));
  if (tangents)
    for (const Tensor& t : *tangents)
      v.push_back(View(t));
  if (out.empty()) {
    out = run(c, v, {});
    return;
  }
  for (Tensor& t : out)
    o.push_back(View(t));
  std::vector<const View*> op;
  for (const View& x : o)
    op.push_back(&x);
  run(c, v, op);
}

/// c as a Runnable (its arguments and tangents in one list).
Runnable runnerOf(std::shared_ptr<const Compiled> c) {
  return [c](const std::vector<Tensor>& a) {
    std::vector<Tensor> out;
    runTensors(*c, a, nullptr, out);
    return out;
  };
}

} // namespace detail

double Result::scalar() const {
  if (r_.size() != 1 || r_[0].rank() != 0)
    throw std::logic_error("the result is not a single scalar");
  return r_[0].getF(0);
}

double GradientResult::value() const {
  if (values.size() != 1 || values[0].rank() != 0)
    throw std::logic_error("the value is not a single scalar");
  return values[0].getF(0);
}

const Tensor& GradientResult::gradient(const std::string& param) const {
  for (size_t k = 0; k < wrt.size(); ++k)
    if (wrt[k] == param) return gradients[k];
  throw std::invalid_argument("no gradient for '" + param + "'");
}

Result Function::call(const std::vector<Arg>& args) const {
  std::vector<Tensor> hold;
  return Result(detail::run(*c_, detail::views(*c_, args, hold), {}));
}

void Function::call_into(const std::vector<Arg>& args, const std::vector<View>& results) const {
  if (results.size() != c_->f.body.yields.size())
    throw CallError("'" + c_->sig.name + "' has " + std::to_string(c_->f.body.yields.size()) +
                    " results, got " + std::to_string(results.size()) + " views");
  std::vector<const View*> outs;
  for (const View& v : results)
    outs.push_back(&v);
  std::vector<Tensor> hold;
  detail::run(*c_, detail::views(*c_, args, hold), outs);
}

slope_fn Function::raw() const {
  return c_->jit ? c_->jit->fn : nullptr;
}
void Function::optimize() const {
  if (c_->jit) codegen::Jit::optimize(*c_->jit);
}
bool Function::optimized() const {
  return !c_->jit || codegen::Jit::optimized(*c_->jit);
}
const Signature& Function::signature() const {
  return c_->sig;
}

double Gradient::call(const std::vector<Arg>& all) const {
  size_t np = c_->f.params.size(), ng = wrt_.size();
  if (all.size() != np + ng)
    throw CallError("'" + c_->sig.name + "' takes " + std::to_string(np) + " arguments and " +
                    std::to_string(ng) + " gradient views, got " + std::to_string(all.size()));
  std::vector<Tensor> hold;
  std::vector<View> args =
      detail::views(*c_, std::vector<Arg>(all.begin(), all.begin() + static_cast<long>(np)), hold);
  std::vector<View> grads;
  for (size_t k = 0; k < ng; ++k)
    grads.push_back(all[np + k].view());
  std::vector<const View*> outs(c_->valueResults, nullptr);
  for (const View& g : grads)
    outs.push_back(&g);
  std::vector<Tensor> r = detail::run(*c_, args, outs);
  if (c_->valueResults == 1 && r[0].rank() == 0 && isFloat(r[0].dtype())) return r[0].getF(0);
  return std::nan("");
}

GradientResult Gradient::evaluate(const std::vector<Arg>& args) const {
  std::vector<Tensor> hold;
  std::vector<Tensor> r = detail::run(*c_, detail::views(*c_, args, hold), {});
  GradientResult out;
  out.values.assign(r.begin(), r.begin() + static_cast<long>(c_->valueResults));
  out.gradients.assign(r.begin() + static_cast<long>(c_->valueResults), r.end());
  out.wrt = wrt_;
  return out;
}

const std::vector<std::string>& Gradient::wrt() const {
  return wrt_;
}
slope_fn Gradient::raw() const {
  return c_->jit ? c_->jit->fn : nullptr;
}
void Gradient::optimize() const {
  if (c_->jit) codegen::Jit::optimize(*c_->jit);
}
bool Gradient::optimized() const {
  return !c_->jit || codegen::Jit::optimized(*c_->jit);
}
const Signature& Gradient::signature() const {
  return c_->sig;
}

Function Module::function(const std::string& name) const {
  Function f;
  // The pointer shares the module's ownership (aliasing): the code and the source it points
  // into live in the module, which the cache never drops, so a Function that outlives every
  // Module handle keeps them (`auto f = compile_string(src).function("f"); f(2.0);`).
  f.c_ = std::shared_ptr<const detail::Compiled>(impl_,
                                                 impl_->get(name, detail::Kind::Value, {}).get());
  return f;
}

Gradient Module::gradient(const std::string& name, const std::vector<std::string>& wrt) const {
  Gradient g;
  g.c_ = std::shared_ptr<const detail::Compiled>(
      impl_, impl_->get(name, detail::Kind::Gradient, wrt).get());
  g.wrt_ = g.c_->wrt;
  return g;
}

Function Module::jvp(const std::string& name, const std::vector<std::string>& wrt) const {
  Function f;
  f.c_ = std::shared_ptr<const detail::Compiled>(impl_,
                                                 impl_->get(name, detail::Kind::Jvp, wrt).get());
  return f;
}

Function Module::hvp(const std::string& name, const std::vector<std::string>& wrt) const {
  Function f;
  f.c_ = std::shared_ptr<const detail::Compiled>(impl_,
                                                 impl_->get(name, detail::Kind::Hvp, wrt).get());
  return f;
}

Jacobian Module::jacobian(const std::string& name, const std::vector<std::string>& wrt,
                          const std::string& mode) const {
  if (mode != "forward" && mode != "reverse" && mode != "auto")
    throw std::invalid_argument("unknown Jacobian mode '" + mode + "' (forward, reverse, auto)");
  impl_->get(name, detail::Kind::Value, {}); // an unknown name fails here, not at the call
  Jacobian j;
  j.impl_ = impl_;
  j.name_ = name;
  j.mode_ = mode;
  j.wrt_ = wrt;
  return j;
}

Jacobian Module::hessian(const std::string& name, const std::vector<std::string>& wrt) const {
  Jacobian j = jacobian(name, wrt);
  j.hessian_ = true;
  impl_->get(name, detail::Kind::Hvp, wrt); // a function that is not scalar fails here
  return j;
}

DenseResult Jacobian::evaluate(const std::vector<Arg>& args) const {
  using detail::Kind;
  auto fwd = impl_->get(name_, Kind::Value, {});
  std::vector<Tensor> hold, in;
  for (const View& v : detail::views(*fwd, args, hold))
    in.push_back(detail::copyOf(v));
  bindSizes(fwd->f, in); // argument count, dtypes and shapes, as a call checks them
  auto runner = detail::runnerOf;
  Runnable none = [](const std::vector<Tensor>&) -> std::vector<Tensor> {
    throw std::logic_error("unused");
  };
  DenseDerivative d;
  if (hessian_) {
    auto h = impl_->get(name_, Kind::Hvp, wrt_);
    int batch = directionBatch(inputElements(fwd->f, in, h->wrt));
    d = denseHessian(fwd->f, h->wrt, in,
                     Directional(runner(impl_->get(name_, Kind::Hvp, wrt_, batch)), batch));
  } else {
    std::string mode = mode_;
    if (mode == "auto") {
      std::vector<std::string> w = impl_->get(name_, Kind::Gradient, wrt_)->wrt;
      mode = inputElements(fwd->f, in, w) < outputElements(fwd->f, in) ? "forward" : "reverse";
    }
    if (mode == "forward") {
      auto c = impl_->get(name_, Kind::Jvp, wrt_);
      int batch = directionBatch(inputElements(fwd->f, in, c->wrt));
      d = denseJacobian(fwd->f, c->wrt, in, mode,
                        Directional(runner(impl_->get(name_, Kind::Jvp, wrt_, batch)), batch),
                        none);
    } else {
      auto c = impl_->get(name_, Kind::Gradient, wrt_);
      d = denseJacobian(fwd->f, c->wrt, in, mode, none, runner(c));
    }
  }
  return DenseResult{std::move(d.matrix), std::move(d.value), d.mode, d.calls, d.directions};
}

namespace detail {

/// What a sparse result's pattern was read for: its function, and the arguments the pattern
/// can depend on (every shape; the values of the arguments that are not floats: a float
/// condition takes both branches, so float values never change a pattern).
struct SparsePatternKey {
  std::string of;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<Tensor> exact; // a copy of each argument that is not a float; empty for a float
};

struct SparseWork {
  std::vector<Tensor> args; // the last call's arguments
  DirectionWork directions;
};

SparseWorkSlot::SparseWorkSlot() noexcept = default;
SparseWorkSlot::SparseWorkSlot(const SparseWorkSlot&) noexcept {}
SparseWorkSlot::SparseWorkSlot(SparseWorkSlot&&) noexcept = default;
SparseWorkSlot& SparseWorkSlot::operator=(const SparseWorkSlot&) noexcept {
  return *this; // its own buffers stay: they are checked against each call's arguments
}
SparseWorkSlot& SparseWorkSlot::operator=(SparseWorkSlot&&) noexcept = default;
SparseWorkSlot::~SparseWorkSlot() = default;
SparseWork& SparseWorkSlot::get() {
  if (!work_) work_ = std::make_unique<SparseWork>();
  return *work_;
}
void SparseWorkSlot::release() noexcept {
  work_.reset();
}

namespace {

std::shared_ptr<const SparsePatternKey> patternKey(const std::string& of, const ir::Function& f,
                                                   const std::vector<Tensor>& in) {
  auto key = std::make_shared<SparsePatternKey>();
  key->of = of;
  for (size_t k = 0; k < in.size(); ++k) {
    key->shapes.push_back(in[k].shape());
    key->exact.push_back(isFloat(f.paramTypes[k].dtype) ? Tensor() : in[k]);
  }
  return key;
}

/// Throws a CallError where the arguments are not those the pattern was read for.
void checkPatternKey(const SparsePatternKey& key, const std::string& of, const ir::Function& f,
                     const std::vector<Tensor>& in) {
  if (key.of != of)
    throw CallError("the pattern given is that of the " + key.of + ", not of the " + of);
  for (size_t k = 0; k < in.size() && k < key.shapes.size(); ++k) {
    const std::string param = "parameter '" + f.paramNames[k] + "'";
    if (key.shapes[k] != in[k].shape())
      throw CallError("the pattern given was read for " + param + " of shape " +
                      typeString(in[k].dtype(), key.shapes[k]) + "; it is " + in[k].typeString() +
                      " now: read the pattern afresh (evaluate_sparse(args))");
    if (isFloat(f.paramTypes[k].dtype)) continue;
    const Tensor& was = key.exact[k];
    if (was.dtype() != in[k].dtype() ||
        std::memcmp(was.raw(), in[k].raw(),
                    static_cast<size_t>(in[k].numel()) * dtypeSize(in[k].dtype())) != 0)
      throw CallError("the pattern given was read at other values of " + param +
                      " (the pattern depends on them): read it afresh (evaluate_sparse(args))");
  }
}

} // namespace
} // namespace detail

SparseResult Jacobian::evaluate_sparse(const std::vector<Arg>& args) const {
  SparseResult r;
  evaluate_sparse_into(args, r);
  r.work.release(); // a result kept for its values holds no buffers
  return r;
}

SparseResult Jacobian::evaluate_sparse(const std::vector<Arg>& args,
                                       const SparseResult& like) const {
  SparseResult r = like; // the pattern and colouring, without like's buffers
  evaluate_sparse_into(args, r);
  r.work.release();
  return r;
}

void Jacobian::evaluate_sparse_into(const std::vector<Arg>& args, SparseResult& r) const {
  using detail::Kind;
  auto fwd = impl_->get(name_, Kind::Value, {});
  detail::SparseWork& work = r.work.get();
  // The arguments, copied into the result's tensors of the last call where the types agree.
  std::vector<Tensor> hold;
  std::vector<View> views = detail::views(*fwd, args, hold);
  std::vector<Tensor>& in = work.args;
  in.resize(views.size());
  for (size_t k = 0; k < views.size(); ++k) {
    if (in[k].dtype() != views[k].dtype() || in[k].shape() != views[k].shape())
      in[k] = Tensor(views[k].dtype(), views[k].shape());
    if (!views[k].data() && in[k].numel() > 0)
      throw CallError("parameter " + std::to_string(k + 1) + ": the view's data pointer is null");
    if (in[k].numel() > 0)
      std::memcpy(in[k].raw(), views[k].data(),
                  static_cast<size_t>(in[k].numel()) * dtypeSize(in[k].dtype()));
  }
  bindSizes(fwd->f, in);
  const Kind kind = hessian_ ? Kind::Hvp : Kind::Jvp;
  // The names differentiated, resolved as get() resolves them; without compiling the
  // unbatched JVP only to ask (a Hessian's HVP is asked for: it checks for a scalar result).
  std::vector<std::string> wrt;
  if (hessian_) {
    wrt = impl_->get(name_, kind, wrt_)->wrt;
  } else {
    try {
      wrt = resolveWrt(fwd->f, wrt_);
    } catch (const GradError& e) {
      throw std::invalid_argument(e.what());
    }
  }
  const int64_t cols = inputElements(fwd->f, in, wrt);
  const int64_t rows = hessian_ ? cols : outputElements(fwd->f, in);
  std::string of = std::string(hessian_ ? "Hessian" : "Jacobian") + " of '" + name_ + "' in";
  for (const std::string& w : wrt)
    of += " " + w;
  // The pattern: the result's own (moved out for the call and back after it, thrown or not),
  // or read off the IR.
  SparsityPattern p;
  p.rows = rows;
  p.cols = cols;
  const bool given = !r.row_start.empty();
  if (given) {
    if (r.pattern_key) detail::checkPatternKey(*r.pattern_key, of, fwd->f, in);
    if (r.rows != rows || r.cols != cols || r.row_start.size() != static_cast<size_t>(rows) + 1)
      throw CallError("the pattern given is for a " + std::to_string(r.rows) + " x " +
                      std::to_string(r.cols) + " Jacobian; these arguments make it " +
                      std::to_string(rows) + " x " + std::to_string(cols));
    p.rowStart = std::move(r.row_start);
    p.colIndex = std::move(r.col_index);
  } else {
    std::optional<SparsityPattern> read =
        hessian_ ? hessianSparsity(fwd->f, in, wrt) : jacobianSparsity(fwd->f, in, wrt);
    r.pattern_found = read.has_value();
    p = read ? std::move(*read) : densePattern(rows, cols); // none: every entry
    r.pattern_key = detail::patternKey(of, fwd->f, in);
    r.colour.clear();
  }
  struct PutBack { // the pattern goes back into the result however the call ends
    SparsityPattern& p;
    SparseResult& r;
    ~PutBack() {
      r.rows = p.rows;
      r.cols = p.cols;
      r.row_start = std::move(p.rowStart);
      r.col_index = std::move(p.colIndex);
    }
  } putBack{p, r};
  // The colours: the result's where they are one of the pattern (checked as the values are
  // read), else coloured afresh; a batch of them per call. A pattern that is not CSR of its
  // size is the caller's error (checked before colouring reads it, else as the values are).
  auto callError = [](const std::invalid_argument& e) { return CallError(e.what()); };
  try {
    if (r.colour.size() != static_cast<size_t>(cols)) {
      checkPattern(p);
      r.colour = colourColumns(p, nullptr);
    }
  } catch (const std::invalid_argument& e) {
    throw callError(e);
  }
  for (int attempt = 0;; ++attempt) {
    int64_t colours = 0;
    for (int64_t k : r.colour)
      colours = std::max(colours, k + 1);
    const int batch = directionBatch(std::max<int64_t>(colours, 1));
    // Where each colour is told by its column's parameter and last index alone (bundle
    // adjustment's cameras and points, the hand's; any vector parameter's), the JVP is
    // compiled for the colours, one function per call: its one-hot seeds are constants of
    // the code, and lanes that are structurally zero cost nothing. Otherwise the batched JVP
    // runs along tangents set per colour. (Not for Hessians: their HVP's seeds would be the
    // gradient code's too; left as it is.)
    std::optional<Seeds> seeds;
    if (!hessian_) seeds = seedsFor(fwd->f, wrt, in, r.colour, static_cast<int>(colours));
    Directional fn(nullptr, batch);
    if (seeds) { // a function per call, each for its batch of colours
      fn = seededDirectional(*seeds, colours, batch, [&](const Seeds& s) {
        return [cb = impl_->get(name_, kind, wrt_, batch, &s)](const std::vector<Tensor>& a,
                                                               std::vector<Tensor>& out) {
          detail::runTensors(*cb, a, nullptr, out);
        };
      });
    } else {
      auto cb = impl_->get(name_, kind, wrt_, batch);
      fn.run = detail::runnerOf(cb);
      fn.into = [cb](const std::vector<Tensor>& a, const std::vector<Tensor>& tangents,
                     std::vector<Tensor>& out) { detail::runTensors(*cb, a, &tangents, out); };
    }
    int64_t calls = 0;
    try {
      calls = fillSparse(fwd->f, wrt, in, p, r.colour, fn, hessian_, r.values, &r.value,
                         &work.directions);
    } catch (const CallError&) {
      throw;
    } catch (const std::invalid_argument& e) {
      throw callError(e);
    }
    if (calls >= 0) {
      r.calls = calls;
      r.colours = colours;
      break;
    }
    if (attempt > 0) throw std::logic_error("a fresh colouring is not one of its pattern");
    // The result's colouring is not one of its pattern (whose columns were all in range).
    r.colour = colourColumns(p, nullptr);
  }
  r.value.resize(fwd->f.body.yields.size()); // (an HVP's gradients follow f's results)
}

std::string Module::target() const {
  return impl_->options.interpret ? "interpreter" : impl_->cuda ? "cuda" : "cpu";
}

std::vector<std::string> Module::function_names() const {
  return impl_->program->functionNames();
}

namespace {

std::shared_ptr<detail::ModuleImpl> finish(std::unique_ptr<Program> p, const Options& options) {
  if (!p->ok()) {
    std::vector<Diagnostic> diags;
    if (!p->ioError().empty()) {
      diags.push_back({p->diags().file().path(), 0, 0, p->ioError()});
    } else {
      for (const auto& d : p->diags().diagnostics()) {
        LineCol lc = p->diags().file().lineCol(d.range.begin);
        diags.push_back({p->diags().file().path(), lc.line, lc.column, d.message});
      }
    }
    throw CompileError(std::move(diags), p->diagnostics());
  }
  if (options.target != "cpu" && options.target != "cuda" && options.target != "auto")
    throw std::invalid_argument("unknown target '" + options.target + "' (cpu, cuda, auto)");
  if (options.opt_level < 0 || options.opt_level > 3)
    throw std::invalid_argument("opt_level must be 0..3");
  if (options.checkpoint < -1 || options.checkpoint_snapshots < 0 || options.checkpoint_memory < 0)
    throw std::invalid_argument("checkpoint: -1 (sqrt), 0 (off) or a positive spacing; "
                                "checkpoint_snapshots and checkpoint_memory: 0 (off) or positive");
  if ((options.checkpoint != 0) + (options.checkpoint_snapshots > 0) +
          (options.checkpoint_memory > 0) >
      1)
    throw std::invalid_argument(
        "set at most one of checkpoint, checkpoint_snapshots and checkpoint_memory");
  if (options.threads < 0 || options.threads > kMaxThreads)
    throw std::invalid_argument("threads must be 0 (SLOPE_NUM_THREADS, or every core) or 1.." +
                                std::to_string(kMaxThreads));
  auto impl = std::make_shared<detail::ModuleImpl>();
  impl->program = std::move(p);
  impl->options = options;
  if (impl->options.threads == 0) impl->options.threads = defaultThreads();
  // "cuda" runs on device 0 or throws what is missing; "auto" runs there where CUDA starts.
  if (options.target != "cpu" && !options.interpret) {
    const cuda::Probe& probe = cuda::probe(); // (asked first: no JIT is made for nothing)
    std::string why = probe.ok() ? "" : "CUDA is not available: " + probe.problem;
    if (why.empty()) {
      try {
        impl->cuda = std::make_unique<codegen::CudaRunner>(options.opt_level);
      } catch (const std::runtime_error& e) {
        why = e.what();
      }
    }
    if (!why.empty() && options.target == "cuda")
      throw std::invalid_argument("target 'cuda': " + why);
  }
  if (!options.interpret && !impl->cuda)
    impl->jit = std::make_unique<codegen::Jit>(jitOptions(impl->options));
  return impl;
}

} // namespace

Module compile_file(const std::string& path, const Options& options) {
  Module m;
  m.impl_ = finish(Program::fromFile(path), options);
  return m;
}

Module compile_string(const std::string& source, const std::string& name, const Options& options) {
  Module m;
  m.impl_ = finish(Program::fromString(name, source), options);
  return m;
}

GradientCheck check_gradient(const Module& m, const std::string& name, const std::vector<Arg>& args,
                             double rtol, double atol) {
  const Program& p = *m.impl_->program;
  if (!p.hasFunction(name)) throw std::invalid_argument("no function '" + name + "'");
  ir::Function f = p.forward(name);
  std::vector<Tensor> in;
  for (size_t k = 0; k < args.size(); ++k) {
    const View& v = args[k].view();
    if (!v.data())
      throw CallError("parameter '" + (k < f.paramNames.size() ? f.paramNames[k] : "?") +
                      "': the view's data pointer is null");
    if (args[k].integer_literal() && k < f.paramTypes.size() && isFloat(f.paramTypes[k].dtype))
      in.push_back(Tensor::scalar(f.paramTypes[k].dtype,
                                  static_cast<double>(*static_cast<const int64_t*>(v.data()))));
    else
      in.push_back(detail::copyOf(v));
  }
  GradCheckOptions o;
  o.grad = gradOptions(m.impl_->options);
  if (rtol >= 0) o.rtol = rtol;
  if (atol >= 0) o.atol = atol;
  std::unique_ptr<Runner> runner;
  if (m.impl_->options.interpret)
    runner = std::make_unique<InterpRunner>();
  else if (m.impl_->cuda)
    runner = std::make_unique<codegen::CudaRunner>(m.impl_->options.opt_level);
  else
    runner = std::make_unique<JitRunner>(jitOptions(m.impl_->options));
  GradCheckResult r;
  try {
    r = checkGradient(f, in, o, runner.get());
  } catch (const EvalError& e) {
    throw RuntimeError(renderDiagnostic(p.diags().file(), Diag{e.where, e.what()}));
  }
  GradientCheck out;
  out.passed = r.passed;
  out.not_finite = r.notFinite;
  for (const auto& pc : r.params)
    out.params.push_back(
        ParamCheck{pc.name, pc.maxAbsErr, pc.maxRelErr, pc.passed, pc.elements, pc.checked});
  return out;
}

} // namespace slope
