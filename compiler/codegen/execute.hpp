// Running compiled or interpreted functions on Tensors: the one place that turns the C ABI's
// error codes into the evaluator's exceptions, so that every backend fails the same way.
#pragma once

#include "compiler/codegen/jit.hpp"
#include "compiler/eval/interp.hpp"

#include <functional>
#include <memory>

namespace slope {

using Runnable = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

/// Prepares functions for running: the reference evaluator or the JIT.
class Runner {
public:
  virtual ~Runner() = default;
  /// A callable for f (which it copies); throws CallError / EvalError like evaluate().
  virtual Runnable prepare(const ir::Function& f) = 0;
};

class InterpRunner final : public Runner {
public:
  Runnable prepare(const ir::Function& f) override;
};

class JitRunner final : public Runner {
public:
  explicit JitRunner(const codegen::JitOptions& opt = {});
  Runnable prepare(const ir::Function& f) override;

private:
  std::shared_ptr<codegen::Jit> jit_;
};

/// Calls a compiled function through its C ABI: validates args (bindSizes), allocates the
/// results, and maps an error code to EvalError / std::bad_alloc.
std::vector<Tensor> callCompiled(const ir::Function& f, const codegen::CompiledFunction& c,
                                 const std::vector<Tensor>& args);

/// The sizes array of the C ABI, in f.sizeNames() order.
std::vector<int64_t> sizesArray(const ir::Function& f, const std::map<std::string, int64_t>& sizes);
/// The shape of result r for the given sizes.
std::vector<int64_t> resultShape(const ir::Function& f, size_t r,
                                 const std::map<std::string, int64_t>& sizes);
/// The exception for a failed call (code != 0); `sizes`, where given, are named in the message
/// of a failed entry check.
[[noreturn]] void throwCallFailure(const codegen::CompiledFunction& c, const slope_error& e,
                                   const std::map<std::string, int64_t>* sizes = nullptr);

} // namespace slope
