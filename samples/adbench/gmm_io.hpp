// Reading ADBench GMM files and running samples/adbench/gmm.slope on them.
//
// File format (ADBench docs/FileFormat.md): `d K n`, then alphas[K], means[K][d],
// icf[K][d + d(d-1)/2] (log-diagonal first, then the strict lower triangle column by column),
// x[n][d], and `gamma m`. Files under gmm/2.5M hold one point that stands for n copies.
#pragma once

#include <slope/slope.hpp>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace adbench {

struct GmmInput {
  int64_t d = 0, K = 0, n = 0;
  std::vector<double> alphas, means, icf, x; // icf as ADBench lays it out: K rows of t()
  double gamma = 0;
  int64_t m = 0;
  int64_t l() const { return d * (d - 1) / 2; }
  int64_t t() const { return d + l(); }
};

inline GmmInput readGmm(const std::string& path, bool replicatePoint = false) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  GmmInput g;
  in >> g.d >> g.K >> g.n;
  if (!in || g.d < 1 || g.K < 1 || g.n < 1) throw std::runtime_error(path + ": bad header");
  auto read = [&](std::vector<double>& v, int64_t count) {
    v.resize(static_cast<size_t>(count));
    for (double& e : v)
      in >> e;
    if (!in) throw std::runtime_error(path + ": file ends early");
  };
  read(g.alphas, g.K);
  read(g.means, g.K * g.d);
  read(g.icf, g.K * g.t());
  int64_t stored = replicatePoint ? 1 : g.n;
  read(g.x, stored * g.d);
  if (replicatePoint)
    for (int64_t i = 1; i < g.n; ++i)
      g.x.insert(g.x.end(), g.x.begin(), g.x.begin() + g.d);
  in >> g.gamma >> g.m;
  if (!in) throw std::runtime_error(path + ": missing the Wishart parameters");
  return g;
}

struct GmmResult {
  double objective = 0;
  std::vector<double> gradient; // ADBench order: alphas, means, icf (per component)
};

/// The objective and its gradient with respect to alphas, means and icf (`grad`: the module's
/// gradient of gmm with respect to those) at the n points x (of g.d coordinates each) instead
/// of g's own.
inline GmmResult runGmm(const slope::Gradient& grad, const GmmInput& g, const double* x,
                        int64_t n) {
  std::vector<double> da(g.alphas.size()), dm(g.means.size()), dicf(g.icf.size());
  GmmResult r;
  r.objective = grad(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
                     slope::View(g.icf.data(), {g.K, g.t()}), slope::View(x, {n, g.d}), g.gamma,
                     g.m, slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
                     slope::View(dicf.data(), {g.K, g.t()}));
  r.gradient = da;
  r.gradient.insert(r.gradient.end(), dm.begin(), dm.end());
  r.gradient.insert(r.gradient.end(), dicf.begin(), dicf.end());
  return r;
}

/// The objective and its gradient with respect to alphas, means and icf, at g's points.
inline GmmResult runGmm(const slope::Module& m, const GmmInput& g) {
  return runGmm(m.gradient("gmm", {"alphas", "means", "icf"}), g, g.x.data(), g.n);
}

} // namespace adbench
