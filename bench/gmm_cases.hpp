// The ADBench GMM sizes the benchmarks run, and where each one's input comes from: ADBench's
// own files in ../shared/data/adbench/gmm/ when they are there, or made by ADBench's generator
// rules (gmm_generate.hpp) for the size that ADBench's data here leaves out.
#pragma once

#include "gmm_generate.hpp"
#include "gmm_hand.hpp"

#include <string>
#include <vector>

namespace gmm_bench {

struct Size {
  int64_t n, d, K;
  const char* file; // under ../shared/data/adbench/gmm/; nullptr: generated
};

inline constexpr Size kSizes[] = {
    {1000, 10, 25, "1k/gmm_d10_K25.txt"},
    {10000, 10, 25, "10k/gmm_d10_K25.txt"},
    {1000, 64, 25, "1k/gmm_d64_K25.txt"},
    // ADBench has d = 128, K = 50 at 1k, 10k and 2.5M points; none of those files is in
    // ../shared (all are over 4 MiB). 2,500 points keeps a call near a second here.
    {2500, 128, 50, nullptr},
    // Time against n for the plot (scripts/plot_gmm.py): ADBench's 10k points, taken in order
    // and repeated (point i is the file's point i mod 10,000), as ADBench's own 2.5M instances
    // repeat their one point.
    {3000, 10, 25, "10k/gmm_d10_K25.txt"},
    {30000, 10, 25, "10k/gmm_d10_K25.txt"},
    {100000, 10, 25, "10k/gmm_d10_K25.txt"},
};

/// The size's input; throws std::runtime_error naming the file when it is missing.
inline adbench::GmmInput load(const Size& s, const std::string& sourceDir) {
  if (!s.file) return adbench::generateGmm(s.d, s.K, s.n);
  adbench::GmmInput g = adbench::readGmm(sourceDir + "/../shared/data/adbench/gmm/" + s.file);
  if (g.d != s.d || g.K != s.K || g.n < 1)
    throw std::runtime_error(std::string(s.file) + ": not the expected sizes");
  if (g.n != s.n) { // the file's points in order, repeated as far as s.n takes them
    std::vector<double> x(static_cast<size_t>(s.n * s.d));
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = g.x[i % g.x.size()];
    g.x = std::move(x);
    g.n = s.n;
  }
  return g;
}

inline gmm_hand::Problem problem(const adbench::GmmInput& g) {
  return {g.d, g.K, g.n, g.alphas.data(), g.means.data(), g.icf.data(), g.x.data(), g.gamma, g.m};
}

} // namespace gmm_bench
