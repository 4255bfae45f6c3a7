// ADBench GMM inputs that ADBench does not ship (or that ../shared/data/adbench leaves out),
// made by ADBench's generator's rules so they look like its files. The rules, as ADBench's
// data/gmm/gmm-data-gen.py (commit 38cb7931) applies them:
//
//   - gamma = 1, m = 0;
//   - alphas[K], then icf[K][d + d (d - 1) / 2], then x[n][d]: consecutive draws from one
//     stream of standard normals N(0, 1);
//   - means[K][d]: draws from a second stream, uniform on [0, 1);
//   - every value is written with 6 decimals ("%.6f"), so a reader sees those roundings.
//
// ADBench draws one stream per d for its largest K and n and cuts every (K, n) file from its
// start; this draws exactly what one file needs, from std::mt19937_64 with a fixed seed, so
// the data are the same on every run and machine (libstdc++'s distributions are fixed), but
// not ADBench's own numbers (it seeds NumPy from the clock). Files under 2.5M hold one point
// that the benchmark replicates; this makes n distinct points, as the 1k and 10k files do.
#pragma once

#include "../samples/adbench/gmm_io.hpp"

#include <cstdio>
#include <cstdlib>
#include <random>

namespace adbench {

/// A GMM input with d dimensions, K components and n points, by the rules above.
inline GmmInput generateGmm(int64_t d, int64_t K, int64_t n, uint64_t seed = 20190412) {
  GmmInput g;
  g.d = d;
  g.K = K;
  g.n = n;
  std::mt19937_64 normalStream(seed), uniformStream(seed + 1);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  // What "%.6f" writes and a reader parses back.
  auto sixDecimals = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6f", v);
    return std::strtod(buf, nullptr);
  };
  auto fill = [&](std::vector<double>& v, int64_t count, auto& dist, std::mt19937_64& rng) {
    v.resize(static_cast<size_t>(count));
    for (double& e : v)
      e = sixDecimals(dist(rng));
  };
  fill(g.alphas, K, normal, normalStream);
  fill(g.means, K * d, uniform, uniformStream);
  fill(g.icf, K * g.t(), normal, normalStream);
  fill(g.x, n * d, normal, normalStream);
  g.gamma = 1.0;
  g.m = 0;
  return g;
}

/// Writes g in ADBench's text format (readGmm reads it back).
inline void writeGmm(const GmmInput& g, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw std::runtime_error(path + ": cannot write");
  std::fprintf(f, "%lld %lld %lld\n", static_cast<long long>(g.d), static_cast<long long>(g.K),
               static_cast<long long>(g.n));
  auto rows = [&](const std::vector<double>& v, int64_t width) {
    for (size_t i = 0; i < v.size(); ++i)
      std::fprintf(f, "%.6f%s", v[i], (static_cast<int64_t>(i) + 1) % width ? " " : " \n");
  };
  rows(g.alphas, 1);
  rows(g.means, g.d);
  rows(g.icf, g.t());
  rows(g.x, g.d);
  std::fprintf(f, "%.6f %lld \n", g.gamma, static_cast<long long>(g.m));
  if (std::fclose(f) != 0) throw std::runtime_error(path + ": write failed");
}

} // namespace adbench
