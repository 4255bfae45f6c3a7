// A hand-written ADBench GMM objective and its gradient: the yardstick slope_bench holds the
// Slope-compiled samples/adbench/gmm.slope to. Written for this project (derivation in
// gmm_hand.cpp), not taken from ADBench.
//
// The model and data layout are ADBench's (the same that gmm.slope reads):
//   alphas f64[K], means f64[K, d], x f64[n, d],
//   icf    f64[K, d + d (d - 1) / 2]: per component, the log of the diagonal of the inverse
//          Cholesky factor Q_k (d entries), then its strict lower triangle column by column,
//   gamma, m: the Wishart prior.
#pragma once

#include <cstdint>
#include <vector>

namespace gmm_hand {

/// Borrowed views of one problem; nothing is copied.
struct Problem {
  int64_t d = 0, K = 0, n = 0;
  const double* alphas = nullptr;
  const double* means = nullptr;
  const double* icf = nullptr;
  const double* x = nullptr;
  double gamma = 0;
  int64_t m = 0;
};

/// Evaluates the objective, or the objective and its gradient with respect to alphas, means
/// and icf. Holds its scratch buffers between calls: only a call with larger sizes than any
/// before allocates. One instance per thread.
class Gmm {
public:
  double objective(const Problem& p);
  /// Writes the gradient into dalphas[K], dmeans[K * d] and dicf[K * (d + d (d - 1) / 2)]
  /// (overwritten, not added to) and returns the objective.
  double gradient(const Problem& p, double* dalphas, double* dmeans, double* dicf);

private:
  /// The exponentiated diagonals and per-component sums that every point reuses.
  void prepare(const Problem& p, int64_t block, bool keepY);
  /// For points [i0, i0 + b): beta_[i][k] = alpha_k + sum_j logdiag_kj - |Q_k (x_i - mu_k)|^2 / 2
  /// and lse_[i] = logsumexp_k beta_[i][k]; with keepY, also y_[i][k] = Q_k (x_i - mu_k).
  template <bool keepY> void forwardBlock(const Problem& p, int64_t i0, int64_t b);
  /// Everything but the data term: the mixture weights' normaliser and the Wishart prior.
  double constantTerms(const Problem& p) const;

  std::vector<double> diag_;   // [K][d] exp(logdiag)
  std::vector<double> sumLog_; // [K] sum_j logdiag_kj
  std::vector<double> beta_;   // [block][K]
  std::vector<double> lse_;    // [block]
  std::vector<double> y_;      // [block][K][d] (gradient only), or one [d] row
  std::vector<double> z_;      // [d] x_i - mu_k
  std::vector<double> wz_;     // [block][d] w_ik z_ik for the current component
  std::vector<double> wsum_;   // [K] sum_i w_ik
  std::vector<double> wy_;     // [K][d] sum_i w_ik y_ik
  std::vector<double> wyz_;    // [K][d] sum_i w_ik y_ikj z_ikj
};

/// The gradient on `threads` threads (workers.size() >= threads, one instance each): the points
/// split into that many consecutive parts, each part's gradient computed as a problem of its
/// own, in parallel, then added. Each term of the gradient and the objective is a sum over the
/// points (df/dalpha's -n softmax(alpha) too: the parts' n add up to n) plus terms that do not
/// depend on them (the prior's), which the parts' sum holds `threads` times: it takes away
/// `threads - 1` times the gradient of the problem with no points. Sums in another order than
/// Gmm::gradient: equal to rounding. One std::thread per part but the first, made per call.
double gradientThreads(const Problem& p, double* dalphas, double* dmeans, double* dicf,
                       std::vector<Gmm>& workers, int threads);

} // namespace gmm_hand
