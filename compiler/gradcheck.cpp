#include "compiler/gradcheck.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/simplify/simplify.hpp"

#include <cmath>
#include <random>
#include <stdexcept>

namespace slope {

std::pair<double, double> defaultTolerances(DType t) {
  if (t == DType::F32) return {2e-3, 1e-4};
  return {1e-5, 1e-7};
}

namespace {

/// A reproducible N(0, 1) sample (Box-Muller over mt19937_64), the same on every platform.
double normal(std::mt19937_64& rng) {
  double u1 = (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
  double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

Tensor toF64(const Tensor& t) {
  if (t.dtype() != DType::F32) return t;
  Tensor o(DType::F64, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i)
    o.setF(i, t.getF(i));
  return o;
}

} // namespace

std::vector<Tensor> randomArgs(const ir::Function& f, const std::map<std::string, int64_t>& sizes,
                               uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 12345);
  std::vector<Tensor> args;
  for (size_t k = 0; k < f.paramTypes.size(); ++k) {
    const ir::Type& t = f.paramTypes[k];
    std::vector<int64_t> shape;
    for (const Poly& p : t.shape) {
      auto v = p.eval(sizes);
      if (!v) {
        std::map<std::string, int64_t> all = sizes;
        for (const auto& n : p.names())
          if (!all.count(n)) all[n] = 3;
        v = p.eval(all);
      }
      shape.push_back(*v);
    }
    Tensor x;
    try {
      x = Tensor(t.dtype, shape);
    } catch (const std::length_error& e) { // too large: say which argument
      throw std::length_error("argument '" + f.paramNames[k] + "': " + e.what());
    }
    for (int64_t i = 0; i < x.numel(); ++i) {
      if (isFloat(t.dtype))
        x.setF(i, normal(rng));
      else if (t.dtype == DType::I64)
        x.setI(i, static_cast<int64_t>(rng() % 3));
      else
        x.setI(i, static_cast<int64_t>(rng() & 1));
    }
    args.push_back(std::move(x));
  }
  return args;
}

GradCheckResult checkGradient(const ir::Function& f, const std::vector<Tensor>& args,
                              const GradCheckOptions& opt, Runner* runner) {
  bindSizes(f, args); // validates, throws CallError
  InterpRunner interp;
  Runner& run = runner ? *runner : interp;
  Runnable fwdFn = run.prepare(f);
  ir::Function g = differentiate(f, {}, opt.grad);
  simplify(g);
  Runnable gradFn = run.prepare(g);
  Runnable f64Fn = run.prepare(promoteToF64(f));

  // Output cotangents: 1 for a scalar loss, random otherwise.
  std::vector<Tensor> fwd = fwdFn(args);
  std::mt19937_64 rng(opt.seed + 777);
  std::vector<Tensor> seeds;
  bool scalarLoss = fwd.size() == 1 && isFloat(fwd[0].dtype()) && fwd[0].rank() == 0;
  std::vector<Tensor> gargs = args;
  if (!scalarLoss)
    for (const Tensor& r : fwd) {
      if (!isFloat(r.dtype())) continue;
      Tensor w(r.dtype(), r.shape());
      for (int64_t i = 0; i < w.numel(); ++i)
        w.setF(i, normal(rng));
      seeds.push_back(w);
      gargs.push_back(w);
    }
  std::vector<Tensor> gout = gradFn(gargs);

  std::vector<Tensor> a64;
  for (const Tensor& a : args)
    a64.push_back(toF64(a));
  auto objective = [&](const std::vector<Tensor>& xs) {
    std::vector<Tensor> r = f64Fn(xs);
    if (scalarLoss) return r[0].getF(0);
    double s = 0;
    size_t k = 0;
    for (const Tensor& t : r) {
      if (!isFloat(t.dtype())) continue;
      for (int64_t i = 0; i < t.numel(); ++i)
        s += seeds[k].getF(i) * t.getF(i);
      ++k;
    }
    return s;
  };

  GradCheckResult res;
  size_t gi = fwd.size();
  for (size_t p = 0; p < f.params.size(); ++p) {
    DType dt = f.paramTypes[p].dtype;
    if (!isFloat(dt)) continue;
    auto [rtol, atol] = defaultTolerances(dt);
    if (opt.rtol) rtol = *opt.rtol;
    if (opt.atol) atol = *opt.atol;
    const Tensor& ad = gout[gi++];
    FdParamCheck pc;
    pc.name = f.paramNames[p];
    std::vector<Tensor> xs = a64;
    for (int64_t i = 0; i < xs[p].numel(); ++i) {
      double x0 = xs[p].getF(i);
      double h = std::cbrt(2.220446049250313e-16) * std::max(1.0, std::fabs(x0));
      xs[p].setF(i, x0 + h);
      double up = objective(xs);
      xs[p].setF(i, x0 - h);
      double dn = objective(xs);
      xs[p].setF(i, x0);
      double fd = (up - dn) / (2 * h);
      double av = ad.getF(i);
      double err = std::fabs(av - fd);
      bool same = (std::isnan(av) && std::isnan(fd)) || av == fd;
      if (same)
        err = 0;
      else if (std::isnan(err))
        err = INFINITY;
      double scale = std::max(std::fabs(av), std::fabs(fd));
      double rel = err == 0 ? 0 : scale > 0 ? err / scale : INFINITY;
      pc.maxAbsErr = std::max(pc.maxAbsErr, err);
      pc.maxRelErr = std::max(pc.maxRelErr, rel);
      if (!(err <= atol + rtol * std::fabs(fd))) pc.passed = false;
    }
    res.passed = res.passed && pc.passed;
    res.params.push_back(pc);
  }
  return res;
}

} // namespace slope
