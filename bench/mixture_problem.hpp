// The mixture benchmark's problem and its hand-written baselines (forward, and gradient
// derived by hand), shared by slope_bench (time) and slope_instructions (instruction counts).
#pragma once

#include <slope/slope.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace mixture_bench {

inline std::vector<double> randn(size_t n, uint64_t seed, double scale = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0, scale);
  std::vector<double> v(n);
  for (double& x : v)
    x = d(rng);
  return v;
}

inline const double kLog2Pi = std::log(2 * 3.141592653589793);

/// N points, K components, D dimensions; the sample's parameters drawn at random.
struct Problem {
  int64_t N, K, D;
  std::vector<double> alphas, means, ls, x;
  std::vector<double> da, dm, dl, dx;
  Problem(int64_t n, int64_t k, int64_t d)
      : N(n), K(k), D(d), alphas(randn(k, 2)), means(randn(k * d, 3)), ls(randn(k * d, 4, 0.3)),
        x(randn(n * d, 5)), da(k), dm(k * d), dl(k * d), dx(n * d) {}

  std::vector<slope::Arg> args() {
    return {slope::View(alphas.data(), {K}), slope::View(means.data(), {K, D}),
            slope::View(ls.data(), {K, D}), slope::View(x.data(), {N, D})};
  }
  /// args() followed by views of the gradient buffers.
  std::vector<slope::Arg> gradArgs() {
    auto a = args();
    a.push_back(slope::View(da.data(), {K}));
    a.push_back(slope::View(dm.data(), {K, D}));
    a.push_back(slope::View(dl.data(), {K, D}));
    a.push_back(slope::View(dx.data(), {N, D}));
    return a;
  }
};

inline double lse(const double* v, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; ++k)
    m = std::max(m, v[k]);
  double s = 0;
  for (int64_t k = 0; k < n; ++k)
    s += std::exp(v[k] - m);
  return m + std::log(s);
}

/// The log-likelihood, written by hand.
inline double forwardHand(const Problem& d) {
  const int64_t N = d.N, K = d.K, D = d.D;
  std::vector<double> invVar(K * D), logDet(K, 0), lp(K);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < D; ++j) {
      invVar[k * D + j] = std::exp(-2 * d.ls[k * D + j]);
      logDet[k] += d.ls[k * D + j];
    }
  double total = 0;
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t k = 0; k < K; ++k) {
      double q = 0;
      for (int64_t j = 0; j < D; ++j) {
        double r = d.x[i * D + j] - d.means[k * D + j];
        q += invVar[k * D + j] * r * r;
      }
      lp[k] = d.alphas[k] - logDet[k] - 0.5 * q;
    }
    total += lse(lp.data(), K);
  }
  return total - N * lse(d.alphas.data(), K) - 0.5 * N * D * kLog2Pi;
}

/// Its gradient, derived by hand: with r_ik the responsibilities softmax_k(lp_i),
///   d/dalpha_k = sum_i r_ik - N softmax(alpha)_k
///   d/dmu_kj   = sum_i r_ik w_kj (x_ij - mu_kj),           w = exp(-2 ls)
///   d/dls_kj   = sum_i r_ik (w_kj (x_ij - mu_kj)^2 - 1)
///   d/dx_ij    = -sum_k r_ik w_kj (x_ij - mu_kj)
inline double gradientHand(Problem& d) {
  const int64_t N = d.N, K = d.K, D = d.D;
  std::vector<double> invVar(K * D), logDet(K, 0), lp(K);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < D; ++j) {
      invVar[k * D + j] = std::exp(-2 * d.ls[k * D + j]);
      logDet[k] += d.ls[k * D + j];
    }
  std::fill(d.da.begin(), d.da.end(), 0.0);
  std::fill(d.dm.begin(), d.dm.end(), 0.0);
  std::fill(d.dl.begin(), d.dl.end(), 0.0);
  double total = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double* xi = &d.x[i * D];
    for (int64_t k = 0; k < K; ++k) {
      double q = 0;
      for (int64_t j = 0; j < D; ++j) {
        double r = xi[j] - d.means[k * D + j];
        q += invVar[k * D + j] * r * r;
      }
      lp[k] = d.alphas[k] - logDet[k] - 0.5 * q;
    }
    double l = lse(lp.data(), K);
    total += l;
    double* dxi = &d.dx[i * D];
    for (int64_t j = 0; j < D; ++j)
      dxi[j] = 0;
    for (int64_t k = 0; k < K; ++k) {
      double r = std::exp(lp[k] - l);
      d.da[k] += r;
      for (int64_t j = 0; j < D; ++j) {
        double diff = xi[j] - d.means[k * D + j];
        double wd = invVar[k * D + j] * diff;
        d.dm[k * D + j] += r * wd;
        d.dl[k * D + j] += r * (wd * diff - 1);
        dxi[j] -= r * wd;
      }
    }
  }
  double la = lse(d.alphas.data(), K);
  for (int64_t k = 0; k < K; ++k)
    d.da[k] -= N * std::exp(d.alphas[k] - la);
  return total - N * la - 0.5 * N * D * kLog2Pi;
}

} // namespace mixture_bench
