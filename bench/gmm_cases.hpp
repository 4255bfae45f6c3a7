// The ADBench GMM sizes the benchmarks run, and where each one's input comes from: ADBench's
// own files in ../shared/data/adbench/gmm/ when they are there, or made by ADBench's generator
// rules (gmm_generate.hpp) for the size that ADBench's data here leaves out.
#pragma once

#include "gmm_generate.hpp"
#include "gmm_hand.hpp"

#include <string>

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
};

/// The size's input; throws std::runtime_error naming the file when it is missing.
inline adbench::GmmInput load(const Size& s, const std::string& sourceDir) {
  if (!s.file) return adbench::generateGmm(s.d, s.K, s.n);
  adbench::GmmInput g = adbench::readGmm(sourceDir + "/../shared/data/adbench/gmm/" + s.file);
  if (g.n != s.n || g.d != s.d || g.K != s.K)
    throw std::runtime_error(std::string(s.file) + ": not the expected sizes");
  return g;
}

inline gmm_hand::Problem problem(const adbench::GmmInput& g) {
  return {g.d, g.K, g.n, g.alphas.data(), g.means.data(), g.icf.data(), g.x.data(), g.gamma, g.m};
}

} // namespace gmm_bench
