#include "compiler/gradcheck.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/simplify/factor.hpp"
#include "compiler/simplify/simplify.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
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
    } catch (const std::length_error& e) { // too large: say which argument and how large
      throw std::length_error("argument '" + f.paramNames[k] + "' (" + t.str() +
                              ") is too large: " + e.what());
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

namespace {

/// "[1, 2]": the multi-index of flat position i in shape.
std::string indexString(const std::vector<int64_t>& shape, int64_t i) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? i % shape[d] : 0;
    i = shape[d] ? i / shape[d] : 0;
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d)
    s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

const char* nonFiniteWord(double v) {
  return std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
}

/// The first non-finite element of a float tensor, or -1.
int64_t firstNonFinite(const Tensor& t) {
  if (!isFloat(t.dtype())) return -1;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.getF(i))) return i;
  return -1;
}

/// K distinct positions out of n (all of them, in order, when K >= n), sorted; Floyd's
/// algorithm, so a parameter of 10^8 elements costs K draws, not n.
std::vector<int64_t> sampleIndices(int64_t n, int64_t k, std::mt19937_64& rng) {
  std::vector<int64_t> out;
  if (k >= n) {
    out.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      out[static_cast<size_t>(i)] = i;
    return out;
  }
  std::set<int64_t> chosen;
  for (int64_t j = n - k; j < n; ++j) {
    int64_t t = static_cast<int64_t>(rng() % static_cast<uint64_t>(j + 1));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  return {chosen.begin(), chosen.end()};
}

constexpr double kEps = 2.220446049250313e-16;

} // namespace

GradCheckResult checkGradient(const ir::Function& f, const std::vector<Tensor>& args,
                              const GradCheckOptions& opt, Runner* runner) {
  bindSizes(f, args); // validates, throws CallError
  InterpRunner interp;
  Runner& run = runner ? *runner : interp;
  Runnable fwdFn = run.prepare(f);
  ir::Function g = differentiate(f, {}, opt.grad);
  simplify(g);
  if (factorScatters(g)) simplify(g); // (the gradient Program::gradient gives)
  returnBuffersInPlace(g);
  Runnable gradFn = run.prepare(g);
  Runnable f64Fn = run.prepare(promoteToF64(f));
  GradCheckResult res;

  // Output cotangents: 1 for a scalar loss, random otherwise.
  std::vector<Tensor> fwd = fwdFn(args);
  for (size_t r = 0; r < fwd.size(); ++r)
    if (int64_t i = firstNonFinite(fwd[r]); i >= 0) {
      res.passed = false;
      res.notFinite = "the value is " + std::string(nonFiniteWord(fwd[r].getF(i)));
      if (fwd.size() > 1 || fwd[r].rank() > 0)
        res.notFinite = (fwd.size() > 1 ? "result " + std::to_string(r + 1) : "the value") +
                        " is " + nonFiniteWord(fwd[r].getF(i)) + " at " +
                        indexString(fwd[r].shape(), i);
      return res;
    }
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
  if (opt.adjustGradient) {
    std::vector<Tensor> grads(gout.begin() + static_cast<long>(fwd.size()), gout.end());
    opt.adjustGradient(grads);
    std::copy(grads.begin(), grads.end(), gout.begin() + static_cast<long>(fwd.size()));
  }
  {
    size_t gi = fwd.size();
    for (size_t p = 0; p < f.params.size(); ++p) {
      if (!isFloat(f.paramTypes[p].dtype)) continue;
      const Tensor& gr = gout[gi++];
      if (int64_t i = firstNonFinite(gr); i >= 0) {
        res.passed = false;
        res.notFinite = "the gradient of '" + f.paramNames[p] + "' is " +
                        nonFiniteWord(gr.getF(i)) + " at " + indexString(gr.shape(), i);
        return res;
      }
    }
  }

  std::vector<Tensor> xs;
  int64_t work = 0; // elements an evaluation reads: the cost of one, roughly
  for (const Tensor& a : args) {
    xs.push_back(toF64(a));
    work += a.numel();
  }
  auto objective = [&]() {
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
  const double f0 = objective();

  // The rounding noise of the objective: sixth differences of f along a random direction
  // at a step (1e-10 relative) far too small for the function's curvature to show, so
  // what remains is rounding. For independent noise of deviation sigma, a sixth difference
  // has deviation sqrt(924) sigma (924 = sum of C(6, k)^2); the largest of six is taken.
  double sigma = kEps * std::fabs(f0);
  {
    std::mt19937_64 nrng(opt.seed + 4242);
    std::vector<Tensor> base = xs, dir = xs;
    for (size_t p = 0; p < xs.size(); ++p)
      if (isFloat(xs[p].dtype()))
        for (int64_t i = 0; i < xs[p].numel(); ++i)
          dir[p].setF(i, 1e-10 * normal(nrng) * std::max(1.0, std::fabs(base[p].getF(i))));
    std::vector<double> fs;
    for (int j = 0; j < 12; ++j) {
      for (size_t p = 0; p < xs.size(); ++p)
        if (isFloat(xs[p].dtype()))
          for (int64_t i = 0; i < xs[p].numel(); ++i)
            xs[p].setF(i, base[p].getF(i) + (j - 6) * dir[p].getF(i));
      fs.push_back(objective());
    }
    xs = base;
    // Rounding cannot exceed what accumulating one rounding per element read would give: a
    // larger sixth difference is a jump within the table (floor, a branch), not noise.
    double fmax = 0;
    for (double v : fs)
      fmax = std::max(fmax, std::fabs(v));
    const double cap = 4 * kEps * fmax * static_cast<double>(std::max<int64_t>(work, 16));
    static const double c6[7] = {1, -6, 15, -20, 15, -6, 1};
    double worst = 0;
    for (int w = 0; w + 6 < 12; ++w) {
      double d = 0;
      for (int k = 0; k < 7; ++k)
        d += c6[k] * fs[static_cast<size_t>(w + k)];
      worst = std::max(worst, std::fabs(d));
    }
    if (std::isfinite(worst)) sigma = std::max(sigma, std::min(cap, worst / std::sqrt(924.0)));
  }
  res.noise = sigma;

  // Elements per parameter: all up to maxElements; by default fewer where an evaluation is
  // so large that 4 of them per element would pass 1e10 element visits.
  int64_t limit = kDefaultMaxElements;
  if (opt.maxElements)
    limit = *opt.maxElements;
  else if (work > 0)
    limit = std::clamp<int64_t>(static_cast<int64_t>(1e10 / (4.0 * static_cast<double>(work))), 10,
                                kDefaultMaxElements);
  std::mt19937_64 pick(opt.seed * 0x9E3779B97F4A7C15ULL + 99);

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
    pc.elements = xs[p].numel();
    std::vector<int64_t> which = sampleIndices(pc.elements, limit, pick);
    pc.checked = static_cast<int64_t>(which.size());
    double worstExcess = -INFINITY;
    for (int64_t i : which) {
      const double x0 = xs[p].getF(i);
      const double av = ad.getF(i);
      auto at = [&](double x) {
        xs[p].setF(i, x);
        return objective();
      };
      double err = INFINITY, fd = NAN, bound = 0;
      bool ok = false;
      // Steps: h, then (where that fails) 10 h and 100 h where rounding limited it, or h / 10
      // and h / 100 where truncation did (a kink or a jump within reach of the step).
      double factor = 1, dir = 0;
      for (int tries = 0; tries < (opt.step ? 1 : 3) && !ok; ++tries) {
        // The step is a representable distance from x0, so x0 + h - (x0 - h) is exactly 2h.
        double h = opt.step ? *opt.step : std::cbrt(kEps) * std::max(1.0, std::fabs(x0));
        h *= factor;
        h = (x0 + h) - x0;
        if (h == 0) break;
        const double u1 = at(x0 + h), d1 = at(x0 - h), u2 = at(x0 + 2 * h), d2 = at(x0 - 2 * h);
        xs[p].setF(i, x0);
        if (!std::isfinite(u1 + d1 + u2 + d2)) {
          res.passed = false;
          res.params.clear();
          char step[32];
          std::snprintf(step, sizeof step, "%.3g", 2 * h);
          res.notFinite = "the function is not finite within a step of the draw at " + pc.name +
                          indexString(xs[p].shape(), i) + " +/- " + step;
          return res;
        }
        const double D1 = (u1 - d1) / (2 * h), D2 = (u2 - d2) / (4 * h);
        const double R = (4 * D1 - D2) / 3;
        const double trunc = std::fabs(D1 - D2) / 3;
        const double fmax = std::max({std::fabs(u1), std::fabs(d1), std::fabs(u2), std::fabs(d2)});
        const double noise = std::max(sigma, kEps * fmax);
        const double round = 3 * 1.5 * noise / h; // Richardson's weights, and a factor 3
        // Where D(h) and D(2h) differ by more than rounding explains and by more than 1 %,
        // the function is not smooth within the step (a kink, a jump): the bound from their
        // difference means nothing there, and the element does not pass at this step.
        const bool smooth = trunc <= 2 * round || trunc <= 0.01 * std::fabs(R) + atol;
        const double e = std::fabs(av - R);
        const double b = trunc + round;
        const double slack = atol + rtol * std::fabs(R) + (smooth ? b : 0);
        if (tries == 0 || e - slack < err - (atol + rtol * std::fabs(fd) + bound)) {
          err = e;
          fd = R;
          bound = smooth ? b : 0;
        }
        ok = e <= slack;
        if (dir == 0) dir = trunc > round ? 0.1 : 10;
        factor *= dir;
      }
      double scale = std::max(std::fabs(av), std::fabs(fd));
      double rel = err == 0 ? 0 : scale > 0 ? err / scale : INFINITY;
      pc.maxAbsErr = std::max(pc.maxAbsErr, err);
      pc.maxRelErr = std::max(pc.maxRelErr, rel);
      double excess = err - (atol + rtol * std::fabs(fd) + bound);
      if (!ok) pc.passed = false;
      if (excess > worstExcess) {
        worstExcess = excess;
        pc.worst = i;
        pc.worstAd = av;
        pc.worstFd = fd;
        pc.worstBound = bound;
      }
    }
    res.passed = res.passed && pc.passed;
    res.params.push_back(pc);
  }
  return res;
}

DrawnCheck checkDrawn(const ir::Function& f, const std::vector<std::optional<Tensor>>& given,
                      const std::map<std::string, int64_t>& sizes, const GradCheckOptions& opt,
                      Runner* runner) {
  bool anyRandom = false;
  for (size_t k = 0; k < f.params.size(); ++k)
    anyRandom = anyRandom || !(k < given.size() && given[k]);
  DrawnCheck out;
  const int draws = anyRandom ? kMaxDraws : 1;
  for (int d = 0; d < draws; ++d) {
    std::vector<Tensor> args = randomArgs(f, sizes, opt.seed + static_cast<uint64_t>(d) * 1000003);
    // The second half: positive floats, for functions defined only there (log, sqrt).
    out.positive = d >= kMaxDraws / 2;
    if (out.positive)
      for (Tensor& t : args)
        if (isFloat(t.dtype()))
          for (int64_t i = 0; i < t.numel(); ++i)
            t.setF(i, std::fabs(t.getF(i)) + 0.1);
    for (size_t k = 0; k < args.size() && k < given.size(); ++k)
      if (given[k]) args[k] = *given[k];
    out.draws = d + 1;
    out.result = checkGradient(f, args, opt, runner);
    out.args = std::move(args);
    if (out.result.notFinite.empty()) return out;
    // Counted by kind ("the value is NaN"), without the element where it showed first.
    if (d + 1 < draws) {
      const std::string& why = out.result.notFinite;
      ++out.discarded[why.substr(0, why.find(" at "))];
    }
  }
  return out;
}

namespace {

ir::Function prepared(ir::Function f) {
  simplify(f);
  returnBuffersInPlace(f);
  return f;
}

double maxAbs(const std::vector<Tensor>& ts) {
  double m = 0;
  for (const Tensor& t : ts)
    if (isFloat(t.dtype()))
      for (int64_t i = 0; i < t.numel(); ++i)
        m = std::max(m, std::fabs(t.getF(i)));
  return m;
}

/// sum_k <a_k, b_k> over float tensors, and sum_k <|a_k|, |b_k|> (the scale of its rounding).
std::pair<double, double> dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double s = 0, m = 0;
  for (size_t k = 0; k < a.size(); ++k)
    for (int64_t i = 0; i < a[k].numel(); ++i) {
      s += a[k].getF(i) * b[k].getF(i);
      m += std::fabs(a[k].getF(i) * b[k].getF(i));
    }
  return {s, m};
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.10g", v);
  return b;
}

} // namespace

ForwardCheckResult checkForward(const ir::Function& f, const std::vector<Tensor>& args,
                                const GradCheckOptions& opt, Runner* runner) {
  bindSizes(f, args);
  InterpRunner interp;
  Runner& run = runner ? *runner : interp;
  ForwardCheckResult res;
  ir::Function g = differentiate(f, {}, opt.grad);
  simplify(g);
  Runnable fwdFn = run.prepare(f), jvpFn = run.prepare(prepared(jvp(f, {})));
  Runnable gradFn = run.prepare(prepared(g)), f64Fn = run.prepare(promoteToF64(f));

  // Tolerances: the loosest dtype among the float parameters and results.
  DType dt = DType::F64;
  for (const ir::Type& t : f.paramTypes)
    if (t.dtype == DType::F32) dt = DType::F32;
  for (int y : f.body.yields)
    if (f.types[y].dtype == DType::F32) dt = DType::F32;
  auto [rtol, atol] = defaultTolerances(dt);
  if (opt.rtol) rtol = *opt.rtol;
  if (opt.atol) atol = *opt.atol;
  auto fail = [&](const std::string& why, bool exact = false) {
    if (res.passed) {
      res.failure = why;
      res.exactFailed = exact;
    }
    res.passed = false;
  };

  std::vector<Tensor> fwd = fwdFn(args);
  if (maxAbs(fwd) == INFINITY || std::isnan(maxAbs(fwd))) {
    res.passed = false;
    res.notFinite = "the value is not finite";
    return res;
  }
  std::mt19937_64 rng(opt.seed + 31337);
  auto randomLike = [&](const Tensor& like) {
    Tensor t(like.dtype(), like.shape());
    for (int64_t i = 0; i < t.numel(); ++i)
      t.setF(i, normal(rng));
    return t;
  };
  std::vector<Tensor> v, u, floatArgs, floatRes;
  for (size_t p = 0; p < args.size(); ++p)
    if (isFloat(f.paramTypes[p].dtype)) {
      v.push_back(randomLike(args[p]));
      floatArgs.push_back(args[p]);
    }
  bool scalarLoss = fwd.size() == 1 && isFloat(fwd[0].dtype()) && fwd[0].rank() == 0;
  for (const Tensor& r : fwd)
    if (isFloat(r.dtype())) {
      floatRes.push_back(r);
      u.push_back(scalarLoss ? Tensor::scalar(r.dtype(), 1.0) : randomLike(r));
    }

  // The JVP: its values are the function's, then J v.
  std::vector<Tensor> jargs = args;
  jargs.insert(jargs.end(), v.begin(), v.end());
  std::vector<Tensor> jout = jvpFn(jargs);
  for (size_t r = 0; r < fwd.size(); ++r)
    for (int64_t i = 0; i < fwd[r].numel(); ++i) {
      double a = jout[r].getF(i), b = fwd[r].getF(i);
      if (!(std::fabs(a - b) <= 1e-12 * std::fabs(b) || (isFloat(fwd[r].dtype()) && a == b) ||
            (dt == DType::F32 && std::fabs(a - b) <= 1e-6 * std::fabs(b)))) {
        fail("the JVP's value " + std::to_string(r + 1) + " differs from the function's at " +
                 indexString(fwd[r].shape(), i) + ": " + fmt(a) + " against " + fmt(b),
             true);
        return res;
      }
    }
  std::vector<Tensor> Jv(jout.begin() + static_cast<long>(fwd.size()), jout.end());
  if (std::isnan(maxAbs(Jv)) || maxAbs(Jv) == INFINITY) {
    res.passed = false;
    res.notFinite = "the JVP is not finite";
    return res;
  }

  // <u, J v> against <J^T u, v>.
  std::vector<Tensor> gargs = args;
  if (!scalarLoss) gargs.insert(gargs.end(), u.begin(), u.end());
  std::vector<Tensor> gout = gradFn(gargs);
  std::vector<Tensor> JTu(gout.begin() + static_cast<long>(fwd.size()), gout.end());
  if (std::isnan(maxAbs(JTu)) || maxAbs(JTu) == INFINITY) {
    res.passed = false;
    res.notFinite = "the gradient is not finite";
    return res;
  }
  auto [uJv, s1] = dot(u, Jv);
  auto [JTuv, s2] = dot(JTu, v);
  res.uJv = uJv;
  res.JTuv = JTuv;
  if (!(std::fabs(uJv - JTuv) <= atol + rtol * std::max(s1, s2)))
    fail("<u, J v> = " + fmt(uJv) + " but <J^T u, v> = " + fmt(JTuv), true);

  // <u, J v> against a central difference of <u, f(x + t v)> (in f64), extrapolated.
  std::vector<Tensor> xs, vs;
  for (const Tensor& a : args)
    xs.push_back(toF64(a));
  for (const Tensor& t : v)
    vs.push_back(toF64(t));
  const double xmax = std::max(1.0, maxAbs(xs)), vmax = std::max(1e-300, maxAbs(vs));
  auto along = [&](double t) { // the arguments x + t v
    std::vector<Tensor> x = xs;
    size_t k = 0;
    for (size_t p = 0; p < x.size(); ++p) {
      if (!isFloat(x[p].dtype())) continue;
      for (int64_t i = 0; i < x[p].numel(); ++i)
        x[p].setF(i, x[p].getF(i) + t * vs[k].getF(i));
      ++k;
    }
    return x;
  };
  auto phi = [&](double t) {
    std::vector<Tensor> r = f64Fn(along(t));
    double s = 0, m = 0;
    size_t j = 0;
    for (const Tensor& y : r) {
      if (!isFloat(y.dtype())) continue;
      for (int64_t i = 0; i < y.numel(); ++i) {
        s += u[j].getF(i) * y.getF(i);
        m += std::fabs(u[j].getF(i) * y.getF(i));
      }
      ++j;
    }
    return std::make_pair(s, m);
  };
  {
    bool ok = false;
    double best = INFINITY;
    for (double factor : {1.0, 0.1, 0.01, 10.0}) {
      const double h = std::cbrt(kEps) * xmax / vmax * factor;
      auto [a1, m1] = phi(h);
      auto [b1, n1] = phi(-h);
      auto [a2, m2] = phi(2 * h);
      auto [b2, n2] = phi(-2 * h);
      if (!std::isfinite(a1 + b1 + a2 + b2)) continue;
      const double D1 = (a1 - b1) / (2 * h), D2 = (a2 - b2) / (4 * h);
      const double R = (4 * D1 - D2) / 3;
      const double round = 4.5 * 64 * kEps * std::max({m1, n1, m2, n2}) / h;
      const double e = std::fabs(uJv - R);
      if (e < best) {
        best = e;
        res.fd = R;
      }
      if (e <= atol + rtol * std::max(std::fabs(R), s1) + std::fabs(D1 - D2) / 3 + round) ok = true;
      if (ok) break;
    }
    if (!ok) fail("<u, J v> = " + fmt(uJv) + " but finite differences give " + fmt(res.fd));
  }

  // The HVP, for a scalar function.
  if (!scalarLoss) return res;
  ir::Function h;
  try {
    h = prepared(hvp(g, {}));
  } catch (const GradError& e) {
    res.hvpSkipped = e.what();
    return res;
  }
  res.hvpChecked = true;
  Runnable hvpFn = run.prepare(h);
  const size_t ng = JTu.size();
  auto Hof = [&](const std::vector<Tensor>& dir) {
    std::vector<Tensor> a = args;
    a.insert(a.end(), dir.begin(), dir.end());
    std::vector<Tensor> o = hvpFn(a);
    return std::vector<Tensor>(o.end() - static_cast<long>(ng), o.end());
  };
  std::vector<Tensor> Hv = Hof(v);
  if (std::isnan(maxAbs(Hv)) || maxAbs(Hv) == INFINITY) {
    res.hvpChecked = false;
    res.hvpSkipped = "the HVP is not finite";
    return res;
  }
  // Symmetry: <w, H v> = <H w, v>.
  {
    std::vector<Tensor> w;
    for (const Tensor& t : v)
      w.push_back(randomLike(t));
    std::vector<Tensor> Hw = Hof(w);
    auto [wHv, t1] = dot(w, Hv);
    auto [Hwv, t2] = dot(Hw, v);
    if (!(std::fabs(wHv - Hwv) <= atol + rtol * std::max(t1, t2)))
      fail("the HVP is not symmetric: <w, H v> = " + fmt(wHv) + " but <H w, v> = " + fmt(Hwv),
           true);
  }
  // Element by element against differences of the (f64) gradient along v.
  Runnable g64 = run.prepare(prepared(differentiate(promoteToF64(f), {}, opt.grad)));
  auto gradAt = [&](double t) {
    std::vector<Tensor> o = g64(along(t));
    return std::vector<Tensor>(o.end() - static_cast<long>(ng), o.end());
  };
  std::vector<std::vector<double>> best(ng);
  std::vector<std::vector<char>> ok(ng);
  for (size_t p = 0; p < ng; ++p) {
    best[p].assign(static_cast<size_t>(Hv[p].numel()), INFINITY);
    ok[p].assign(static_cast<size_t>(Hv[p].numel()), 0);
  }
  for (double factor : {1.0, 0.1, 0.01, 10.0}) {
    const double hh = std::cbrt(kEps) * xmax / vmax * factor;
    std::vector<Tensor> a1 = gradAt(hh), b1 = gradAt(-hh), a2 = gradAt(2 * hh),
                        b2 = gradAt(-2 * hh);
    const double gmax = std::max({maxAbs(a1), maxAbs(b1), maxAbs(a2), maxAbs(b2), maxAbs(JTu)});
    if (!std::isfinite(gmax)) continue;
    bool all = true;
    for (size_t p = 0; p < ng; ++p)
      for (int64_t i = 0; i < Hv[p].numel(); ++i) {
        size_t ii = static_cast<size_t>(i);
        if (ok[p][ii]) continue;
        const double D1 = (a1[p].getF(i) - b1[p].getF(i)) / (2 * hh);
        const double D2 = (a2[p].getF(i) - b2[p].getF(i)) / (4 * hh);
        const double R = (4 * D1 - D2) / 3;
        const double round = 4.5 * 64 * kEps * gmax / hh;
        const double e = std::fabs(Hv[p].getF(i) - R);
        best[p][ii] = std::min(best[p][ii], e);
        if (e <= atol + rtol * std::fabs(R) + std::fabs(D1 - D2) / 3 + round)
          ok[p][ii] = 1;
        else
          all = false;
      }
    if (all) break;
  }
  for (size_t p = 0; p < ng; ++p)
    for (int64_t i = 0; i < Hv[p].numel(); ++i) {
      res.hvpMaxAbsErr = std::max(res.hvpMaxAbsErr, best[p][static_cast<size_t>(i)]);
      if (!ok[p][static_cast<size_t>(i)]) {
        fail("H v of gradient " + std::to_string(p + 1) + " at " + indexString(Hv[p].shape(), i) +
             " is " + fmt(Hv[p].getF(i)) + ", off finite differences of the gradient by " +
             fmt(best[p][static_cast<size_t>(i)]));
        return res;
      }
    }
  return res;
}

} // namespace slope
