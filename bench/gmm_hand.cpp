// The ADBench GMM objective and gradient, by hand.
//
// Notation: D_k = exp(logdiag_k) (a vector), L_k the strict lower triangle, Q_k = diag(D_k) + L_k,
// s_k = sum_j logdiag_kj, z_ik = x_i - mu_k, y_ik = Q_k z_ik, and
//
//   beta_ik = alpha_k + s_k - |y_ik|^2 / 2,      lse_i = logsumexp_k beta_ik,
//   f = -n d / 2 log(2 pi) + sum_i lse_i - n logsumexp(alpha)
//       + sum_k (gamma^2 / 2 (|D_k|^2 + |L_k|_F^2) - m s_k) - K C(d, m, gamma).
//
// With w_ik = exp(beta_ik - lse_i) (df / dbeta_ik) and W_k = sum_i w_ik:
//
//   df/dalpha_k     = W_k - n softmax(alpha)_k
//   df/dlogdiag_kj  = W_k - D_kj sum_i w_ik y_ikj z_ikj + gamma^2 D_kj^2 - m
//                     (y_ikj = D_kj z_ikj + ..., so dy_ikj / dlogdiag_kj = D_kj z_ikj)
//   df/dL_k[j, c]   = -sum_i w_ik y_ikj z_ikc + gamma^2 L_k[j, c]          (c < j)
//   df/dmu_k        = sum_i w_ik Q_k^T y_ik = Q_k^T (sum_i w_ik y_ik)
//
// The last line is why the gradient keeps v_k = sum_i w_ik y_ik and multiplies by Q_k^T once
// per component instead of once per point. Only df/dL needs work per point and component: a
// rank-one update of the triangle, as much work as computing y. So the gradient costs about
// twice the objective.
//
// Loops: points go in blocks; within a block the component is the outer loop, so Q_k is read
// once per block from cache and reused for every point in it. Q_k's strict lower triangle is
// stored column by column, so y = Q z is computed as y = D * z, then y[c+1:] += z_c L[c+1:, c]
// for each column c: contiguous, independent updates that the compiler vectorises without
// reassociating any sum (this file is built without fast-math, as slope_bench's other
// baselines are). The rank-one update of df/dL walks the same columns the same way.

#include "gmm_hand.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

namespace gmm_hand {

namespace {

constexpr double kPi = 3.141592653589793;

/// Offset of column c of the strict lower triangle (rows c + 1 .. d - 1) within a component's
/// triangle: columns 0 .. c - 1 hold (d - 1) + (d - 2) + ... + (d - c) entries.
inline int64_t columnOffset(int64_t d, int64_t c) {
  return c * (d - 1) - c * (c - 1) / 2;
}

inline double logsumexp(const double* v, int64_t n) {
  double mx = v[0];
  for (int64_t k = 1; k < n; ++k)
    mx = std::max(mx, v[k]);
  double s = 0;
  for (int64_t k = 0; k < n; ++k)
    s += std::exp(v[k] - mx);
  return mx + std::log(s);
}

/// y = Q z for one component: D the diagonal, L its strict lower triangle by columns. Four
/// columns at a time, so that each y[j] is loaded and stored once per four columns; every
/// y[j] still adds its terms in column order, as a column-at-a-time loop would.
inline void lowerTimes(int64_t d, const double* __restrict D, const double* __restrict L,
                       const double* __restrict z, double* __restrict y) {
  for (int64_t j = 0; j < d; ++j)
    y[j] = D[j] * z[j];
  int64_t c = 0;
  for (; c + 4 < d; c += 4) {
    // col_q[j] is L[j, c + q]; rows c + 1 .. c + 3 meet the triangle's corner.
    const double* __restrict c0 = L + columnOffset(d, c) - (c + 1);
    const double* __restrict c1 = L + columnOffset(d, c + 1) - (c + 2);
    const double* __restrict c2 = L + columnOffset(d, c + 2) - (c + 3);
    const double* __restrict c3 = L + columnOffset(d, c + 3) - (c + 4);
    const double z0 = z[c], z1 = z[c + 1], z2 = z[c + 2], z3 = z[c + 3];
    y[c + 1] += c0[c + 1] * z0;
    y[c + 2] = y[c + 2] + c0[c + 2] * z0 + c1[c + 2] * z1;
    y[c + 3] = y[c + 3] + c0[c + 3] * z0 + c1[c + 3] * z1 + c2[c + 3] * z2;
    for (int64_t j = c + 4; j < d; ++j)
      y[j] = y[j] + c0[j] * z0 + c1[j] * z1 + c2[j] * z2 + c3[j] * z3;
  }
  for (; c + 1 < d; ++c) {
    const double zc = z[c];
    const double* __restrict col = L + columnOffset(d, c) - (c + 1); // col[j]: row j
    for (int64_t j = c + 1; j < d; ++j)
      y[j] += col[j] * zc;
  }
}

/// Points per block. The gradient keeps y for every point and component of a block, so its
/// blocks hold at most 32768 values of y (256 KiB, within L2); the objective keeps none.
int64_t blockSize(const Problem& p, bool keepY) {
  if (!keepY) return 64;
  return std::clamp<int64_t>(32768 / (p.K * p.d), 1, 64);
}

} // namespace

void Gmm::prepare(const Problem& p, int64_t block, bool keepY) {
  const int64_t d = p.d, K = p.K, t = d + d * (d - 1) / 2;
  diag_.resize(K * d);
  sumLog_.resize(K);
  beta_.resize(block * K);
  lse_.resize(block);
  y_.resize(keepY ? block * K * d : d);
  z_.resize(d);
  for (int64_t k = 0; k < K; ++k) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double q = p.icf[k * t + j];
      diag_[k * d + j] = std::exp(q);
      s += q;
    }
    sumLog_[k] = s;
  }
}

template <bool keepY> void Gmm::forwardBlock(const Problem& p, int64_t i0, int64_t b) {
  const int64_t d = p.d, K = p.K, t = d + d * (d - 1) / 2;
  double* __restrict z = z_.data();
  for (int64_t k = 0; k < K; ++k) {
    const double* D = diag_.data() + k * d;
    const double* L = p.icf + k * t + d;
    const double* mu = p.means + k * d;
    const double base = p.alphas[k] + sumLog_[k];
    for (int64_t i = 0; i < b; ++i) {
      const double* xi = p.x + (i0 + i) * d;
      for (int64_t j = 0; j < d; ++j)
        z[j] = xi[j] - mu[j];
      double* y = keepY ? y_.data() + (i * K + k) * d : y_.data();
      lowerTimes(d, D, L, z, y);
      double sq = 0;
      for (int64_t j = 0; j < d; ++j)
        sq += y[j] * y[j];
      beta_[i * K + k] = base - 0.5 * sq;
    }
  }
  for (int64_t i = 0; i < b; ++i)
    lse_[i] = logsumexp(beta_.data() + i * K, K);
}

double Gmm::constantTerms(const Problem& p) const {
  const int64_t d = p.d, K = p.K, t = d + d * (d - 1) / 2;
  const double nd = static_cast<double>(p.n * d);
  double f = -0.5 * nd * std::log(2 * kPi) - static_cast<double>(p.n) * logsumexp(p.alphas, K);
  // The Wishart prior: gamma^2 / 2 |Q_k|_F^2 - m log det Q_k per component, less its
  // normalising constant C = nw d (log gamma - log(2) / 2) - log Gamma_d(nw / 2), nw = d + m + 1.
  const double g2 = p.gamma * p.gamma;
  for (int64_t k = 0; k < K; ++k) {
    double fro = 0;
    for (int64_t j = 0; j < d; ++j)
      fro += diag_[k * d + j] * diag_[k * d + j];
    for (int64_t q = d; q < t; ++q)
      fro += p.icf[k * t + q] * p.icf[k * t + q];
    f += 0.5 * g2 * fro - static_cast<double>(p.m) * sumLog_[k];
  }
  const double nw = static_cast<double>(d + p.m + 1);
  double logGammaD = 0.25 * static_cast<double>(d * (d - 1)) * std::log(kPi);
  for (int64_t j = 1; j <= d; ++j)
    logGammaD += std::lgamma(0.5 * nw + 0.5 * (1 - static_cast<double>(j)));
  const double C =
      nw * static_cast<double>(d) * (std::log(p.gamma) - 0.5 * std::log(2.0)) - logGammaD;
  return f - static_cast<double>(K) * C;
}

double Gmm::objective(const Problem& p) {
  const int64_t block = blockSize(p, false);
  prepare(p, block, false);
  double data = 0;
  for (int64_t i0 = 0; i0 < p.n; i0 += block) {
    const int64_t b = std::min(block, p.n - i0);
    forwardBlock<false>(p, i0, b);
    for (int64_t i = 0; i < b; ++i)
      data += lse_[i];
  }
  return data + constantTerms(p);
}

double Gmm::gradient(const Problem& p, double* dalphas, double* dmeans, double* dicf) {
  const int64_t d = p.d, K = p.K, t = d + d * (d - 1) / 2;
  const int64_t block = blockSize(p, true);
  prepare(p, block, true);
  wsum_.assign(K, 0.0);
  wy_.assign(K * d, 0.0);
  wyz_.assign(K * d, 0.0);
  std::fill(dicf, dicf + K * t, 0.0);
  wz_.resize(block * d);

  double data = 0;
  for (int64_t i0 = 0; i0 < p.n; i0 += block) {
    const int64_t b = std::min(block, p.n - i0);
    forwardBlock<true>(p, i0, b);
    for (int64_t i = 0; i < b; ++i)
      data += lse_[i];
    for (int64_t k = 0; k < K; ++k) {
      const double* mu = p.means + k * d;
      double* __restrict v = wy_.data() + k * d;
      double* __restrict a = wyz_.data() + k * d;
      double W = 0;
      for (int64_t i = 0; i < b; ++i) {
        const double w = std::exp(beta_[i * K + k] - lse_[i]);
        W += w;
        const double* __restrict y = y_.data() + (i * K + k) * d;
        const double* xi = p.x + (i0 + i) * d;
        double* __restrict wz = wz_.data() + i * d;
        for (int64_t j = 0; j < d; ++j) {
          const double z = xi[j] - mu[j];
          v[j] += w * y[j];
          a[j] += w * y[j] * z;
          wz[j] = w * z;
        }
      }
      wsum_[k] += W;
      // gL[j, c] -= sum_i w_i z_ic y_ij (j > c), column by column as L is stored; the points
      // of the block are the middle loop, four at a time, so that a column stays in L1 and
      // each entry is loaded and stored once per four points (in point order all the same).
      double* gL = dicf + k * t + d;
      const double* yk = y_.data() + k * d;
      const int64_t ys = K * d; // from one point's y_ik to the next's
      for (int64_t c = 0; c + 1 < d; ++c) {
        double* __restrict col = gL + columnOffset(d, c) - (c + 1);
        int64_t i = 0;
        for (; i + 4 <= b; i += 4) {
          const double t0 = wz_[i * d + c], t1 = wz_[(i + 1) * d + c];
          const double t2 = wz_[(i + 2) * d + c], t3 = wz_[(i + 3) * d + c];
          const double* __restrict y0 = yk + i * ys;
          const double* __restrict y1 = y0 + ys;
          const double* __restrict y2 = y1 + ys;
          const double* __restrict y3 = y2 + ys;
          for (int64_t j = c + 1; j < d; ++j)
            col[j] = col[j] - t0 * y0[j] - t1 * y1[j] - t2 * y2[j] - t3 * y3[j];
        }
        for (; i < b; ++i) {
          const double t0 = wz_[i * d + c];
          const double* __restrict y0 = yk + i * ys;
          for (int64_t j = c + 1; j < d; ++j)
            col[j] -= t0 * y0[j];
        }
      }
    }
  }

  // Per component: the terms that need only the sums over points, and the prior's.
  const double amax = *std::max_element(p.alphas, p.alphas + K);
  double asum = 0;
  for (int64_t k = 0; k < K; ++k)
    asum += std::exp(p.alphas[k] - amax);
  const double g2 = p.gamma * p.gamma, n = static_cast<double>(p.n), m = static_cast<double>(p.m);
  for (int64_t k = 0; k < K; ++k) {
    const double W = wsum_[k];
    dalphas[k] = W - n * std::exp(p.alphas[k] - amax) / asum;
    const double* D = diag_.data() + k * d;
    const double* L = p.icf + k * t + d;
    const double* v = wy_.data() + k * d;
    const double* a = wyz_.data() + k * d;
    double* gmu = dmeans + k * d;
    double* gq = dicf + k * t;
    // Q_k^T v: the diagonal, then each stored column of L dotted with v below the diagonal.
    for (int64_t c = 0; c < d; ++c) {
      double s = D[c] * v[c];
      const double* col = L + columnOffset(d, c) - (c + 1);
      for (int64_t j = c + 1; j < d; ++j)
        s += col[j] * v[j];
      gmu[c] = s;
    }
    for (int64_t j = 0; j < d; ++j)
      gq[j] = W - D[j] * a[j] + g2 * D[j] * D[j] - m;
    for (int64_t q = d; q < t; ++q)
      gq[q] += g2 * p.icf[k * t + q];
  }
  return data + constantTerms(p);
}

double gradientThreads(const Problem& p, double* dalphas, double* dmeans, double* dicf,
                       std::vector<Gmm>& workers, int threads) {
  const int64_t K = p.K, d = p.d, t = d + d * (d - 1) / 2;
  const int64_t T = std::clamp<int64_t>(threads, 1, static_cast<int64_t>(workers.size()));
  // Part h's gradient into grads[h]: [K] dalphas, [K d] dmeans, [K t] dicf.
  const int64_t size = K + K * d + K * t;
  std::vector<std::vector<double>> grads(static_cast<size_t>(T + 1), std::vector<double>(size));
  std::vector<double> values(static_cast<size_t>(T + 1));
  auto part = [&](int64_t h, Problem q) {
    std::vector<double>& g = grads[static_cast<size_t>(h)];
    values[static_cast<size_t>(h)] = workers[static_cast<size_t>(h % T)].gradient(
        q, g.data(), g.data() + K, g.data() + K + K * d);
  };
  std::vector<Problem> parts(static_cast<size_t>(T), p);
  for (int64_t h = 0; h < T; ++h) {
    const int64_t i0 = p.n * h / T, i1 = p.n * (h + 1) / T;
    parts[static_cast<size_t>(h)].n = i1 - i0;
    parts[static_cast<size_t>(h)].x = p.x + i0 * d;
  }
  std::vector<std::thread> running;
  for (int64_t h = 1; h < T; ++h)
    running.emplace_back(part, h, parts[static_cast<size_t>(h)]);
  part(0, parts[0]);
  for (std::thread& r : running)
    r.join();
  Problem none = p;
  none.n = 0;
  part(T, none); // (on worker 0, after the parts)
  double value = -static_cast<double>(T - 1) * values[static_cast<size_t>(T)];
  std::vector<double> sum(size);
  for (int64_t e = 0; e < size; ++e)
    sum[e] = -static_cast<double>(T - 1) * grads[static_cast<size_t>(T)][e];
  for (int64_t h = 0; h < T; ++h) {
    value += values[static_cast<size_t>(h)];
    for (int64_t e = 0; e < size; ++e)
      sum[e] += grads[static_cast<size_t>(h)][e];
  }
  std::copy(sum.begin(), sum.begin() + K, dalphas);
  std::copy(sum.begin() + K, sum.begin() + K + K * d, dmeans);
  std::copy(sum.begin() + K + K * d, sum.end(), dicf);
  return value;
}

} // namespace gmm_hand
