#include "compiler/codegen/execute.hpp"

#include <bit>
#include <new>

namespace slope {

Runnable InterpRunner::prepare(const ir::Function& f) {
  auto fn = std::make_shared<ir::Function>(f);
  return [fn](const std::vector<Tensor>& args) { return evaluate(*fn, args); };
}

JitRunner::JitRunner(const codegen::JitOptions& opt) : jit_(std::make_shared<codegen::Jit>(opt)) {}

Runnable JitRunner::prepare(const ir::Function& f) {
  auto fn = std::make_shared<ir::Function>(f);
  auto compiled = std::make_shared<codegen::CompiledFunction>(jit_->add(*fn));
  auto jit = jit_; // keeps the code alive as long as the callable
  return [fn, compiled, jit](const std::vector<Tensor>& args) {
    return callCompiled(*fn, *compiled, args);
  };
}

std::vector<int64_t> sizesArray(const ir::Function& f,
                                const std::map<std::string, int64_t>& sizes) {
  std::vector<int64_t> out;
  for (const auto& n : f.sizeNames())
    out.push_back(sizes.at(n));
  return out;
}

std::vector<int64_t> resultShape(const ir::Function& f, size_t r,
                                 const std::map<std::string, int64_t>& sizes) {
  std::vector<int64_t> shape;
  for (const Poly& p : f.types[f.body.yields[r]].shape) {
    int64_t e = *p.eval(sizes);
    if (e < 0)
      throw EvalError({}, "result " + std::to_string(r) + " has a negative extent " + p.str() +
                              " = " + std::to_string(e));
    shape.push_back(e);
  }
  return shape;
}

void throwCallFailure(const codegen::CompiledFunction& c, const slope_error& e,
                      const std::map<std::string, int64_t>* sizes) {
  codegen::Site site =
      e.site >= 0 && e.site < static_cast<int>(c.sites.size()) ? c.sites[e.site] : codegen::Site{};
  switch (e.code) {
  case SLOPE_ERR_INDEX:
    throw EvalError(site.loc, "index " + std::to_string(e.index) + " is out of range for '" +
                                  (site.tensor.empty() ? std::string("tensor") : site.tensor) +
                                  "': dimension " + std::to_string(e.dim) + " has extent " +
                                  std::to_string(e.extent));
  case SLOPE_ERR_ENTRY:
    if (e.dim >= 0 && e.dim < static_cast<int>(c.entryChecks.size())) {
      std::pair<int64_t, int64_t> values{e.index, e.extent};
      throw EvalError(site.loc, c.entryChecks[e.dim].message(
                                    sizes ? *sizes : std::map<std::string, int64_t>{}, &values));
    }
    break;
  case SLOPE_ERR_DIV_ZERO: throw EvalError(site.loc, "integer division by zero");
  case SLOPE_ERR_EXTENT:
    if (site.tensor == codegen::kTripCountSite)
      throw EvalError(site.loc, "the loop's trip count (its upper bound minus its lower bound) "
                                "overflows i64");
    // Worded as the evaluator words it (compiler/eval/interp.cpp).
    throw EvalError(site.loc,
                    "extent " + site.extent + " is negative (" + std::to_string(e.index) + ")");
  case SLOPE_ERR_SIZE:
    if (e.index < 0) throw EvalError(site.loc, "a buffer's size overflows i64");
    throw EvalError(site.loc, "a buffer needs " + std::to_string(e.index) +
                                  " bytes, more than this machine's " + std::to_string(e.extent) +
                                  " bytes of memory");
  case SLOPE_ERR_CONVERSION:
    throw EvalError(site.loc, conversionMessage(std::bit_cast<double>(e.index),
                                                e.dim == 32 ? DType::F32 : DType::F64));
  case SLOPE_ERR_NO_MEMORY:
    throw EvalError(site.loc, "out of memory: a temporary could not be allocated");
  default: break;
  }
  throw EvalError(site.loc, "compiled code failed with code " + std::to_string(e.code));
}

std::vector<Tensor> callCompiled(const ir::Function& f, const codegen::CompiledFunction& c,
                                 const std::vector<Tensor>& args) {
  auto sizes = bindSizes(f, args);
  std::vector<int64_t> sz = sizesArray(f, sizes);
  std::vector<void*> argp;
  for (const Tensor& t : args)
    argp.push_back(const_cast<void*>(t.raw()));
  std::vector<Tensor> results;
  for (size_t r = 0; r < f.body.yields.size(); ++r)
    results.emplace_back(f.types[f.body.yields[r]].dtype, resultShape(f, r, sizes));
  std::vector<void*> resp;
  for (Tensor& t : results)
    resp.push_back(t.raw());
  slope_error err{};
  int32_t code = c.fn(argp.data(), sz.data(), resp.data(), &err);
  if (code != 0) throwCallFailure(c, err, &sizes);
  return results;
}

} // namespace slope
