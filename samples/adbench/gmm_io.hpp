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
  std::vector<double> alphas, means, logdiag, lower, x;
  double gamma = 0;
  int64_t m = 0;
  int64_t l() const { return d * (d - 1) / 2; }
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
  std::vector<double> icf;
  read(icf, g.K * (g.d + g.l()));
  for (int64_t k = 0; k < g.K; ++k) {
    const double* row = &icf[static_cast<size_t>(k * (g.d + g.l()))];
    g.logdiag.insert(g.logdiag.end(), row, row + g.d);
    g.lower.insert(g.lower.end(), row + g.d, row + g.d + g.l());
  }
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

/// The objective and its gradient with respect to alphas, means and icf.
inline GmmResult runGmm(const slope::Module& m, GmmInput& g) {
  slope::Gradient grad = m.gradient("gmm", {"alphas", "means", "logdiag", "lower"});
  std::vector<double> da(g.alphas.size()), dm(g.means.size()), dq(g.logdiag.size()),
      dl(g.lower.size());
  // d = 1 has no lower triangle; the language needs extents >= 1, so pass one unused zero.
  std::vector<double> lower = g.lower.empty() ? std::vector<double>(g.K, 0.0) : g.lower;
  std::vector<double> dlower(lower.size());
  int64_t l = g.l() ? g.l() : 1;
  GmmResult r;
  r.objective = grad(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
                     slope::View(g.logdiag.data(), {g.K, g.d}), slope::View(lower.data(), {g.K, l}),
                     slope::View(g.x.data(), {g.n, g.d}), g.gamma, g.m,
                     slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
                     slope::View(dq.data(), {g.K, g.d}), slope::View(dlower.data(), {g.K, l}));
  r.gradient = da;
  r.gradient.insert(r.gradient.end(), dm.begin(), dm.end());
  for (int64_t k = 0; k < g.K; ++k) {
    r.gradient.insert(r.gradient.end(), dq.begin() + k * g.d, dq.begin() + (k + 1) * g.d);
    r.gradient.insert(r.gradient.end(), dlower.begin() + k * l, dlower.begin() + k * l + g.l());
  }
  return r;
}

} // namespace adbench
