// Slope against hand-written C++ (compiled -O3 in this same binary), single thread.
//
//   build/bench/slope_bench                       # all benchmarks
//   build/bench/slope_bench --benchmark_filter=Mixture
//
// Targets (issue 3): forward within 1.5x of hand-written; gradient within 3x of the forward;
// JIT compile of the mixture's forward + gradient under 250 ms. Results: docs/benchmarks.md.

#include <slope/slope.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

std::string samplePath(const char* name) { return std::string(SLOPE_SOURCE_DIR) + "/samples/" + name; }

std::vector<double> randn(size_t n, uint64_t seed, double scale = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// --- (a) bowl: sum(x^2 + 2x + 1) over 1,000,000 elements ------------------------------------

constexpr int64_t kBowlRows = 1000, kBowlCols = 1000;

double bowlHand(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i] + 2 * x[i] + 1;
  return s;
}

double bowlGradHand(const double* x, double* g, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    s += x[i] * x[i] + 2 * x[i] + 1;
    g[i] = 2 * x[i] + 2;
  }
  return s;
}

struct BowlData {
  std::vector<double> x = randn(kBowlRows * kBowlCols, 1);
  std::vector<double> g = std::vector<double>(kBowlRows * kBowlCols);
  slope::Module m = slope::compile_file(samplePath("autograd_intro.slope"));
  slope::Function f = m.function("bowl");
  slope::Gradient grad = m.gradient("bowl");
};

BowlData& bowl() {
  static BowlData d;
  return d;
}

void BM_Bowl_Forward_Hand(benchmark::State& st) {
  auto& d = bowl();
  for (auto _ : st) benchmark::DoNotOptimize(bowlHand(d.x.data(), kBowlRows * kBowlCols));
  st.SetItemsProcessed(st.iterations() * kBowlRows * kBowlCols);
}
void BM_Bowl_Forward_Slope(benchmark::State& st) {
  auto& d = bowl();
  // The raw entry point: what a hot loop calls (no validation, no allocation).
  slope_fn fn = d.f.raw();
  int64_t sizes[] = {kBowlRows, kBowlCols};
  double out = 0;
  void* args[] = {d.x.data()};
  void* res[] = {&out};
  slope_error err;
  for (auto _ : st) {
    fn(args, sizes, res, &err);
    benchmark::DoNotOptimize(out);
  }
  st.SetItemsProcessed(st.iterations() * kBowlRows * kBowlCols);
}
void BM_Bowl_Forward_SlopeApi(benchmark::State& st) {
  auto& d = bowl();
  slope::View x(d.x.data(), {kBowlRows, kBowlCols});
  for (auto _ : st) benchmark::DoNotOptimize(static_cast<double>(d.f(x)));
  st.SetItemsProcessed(st.iterations() * kBowlRows * kBowlCols);
}
void BM_Bowl_Gradient_Hand(benchmark::State& st) {
  auto& d = bowl();
  for (auto _ : st) {
    benchmark::DoNotOptimize(bowlGradHand(d.x.data(), d.g.data(), kBowlRows * kBowlCols));
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * kBowlRows * kBowlCols);
}
void BM_Bowl_Gradient_Slope(benchmark::State& st) {
  auto& d = bowl();
  slope::View x(d.x.data(), {kBowlRows, kBowlCols}), g(d.g.data(), {kBowlRows, kBowlCols});
  for (auto _ : st) {
    benchmark::DoNotOptimize(d.grad(x, g));
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * kBowlRows * kBowlCols);
}

// --- (b) mixture: N = 10,000 points, K = 25 components, D = 10 ------------------------------

constexpr int64_t N = 10000, K = 25, D = 10;
const double kLog2Pi = std::log(2 * 3.141592653589793);

struct MixtureData {
  std::vector<double> alphas = randn(K, 2), means = randn(K * D, 3), ls = randn(K * D, 4, 0.3),
                      x = randn(N * D, 5);
  std::vector<double> da = std::vector<double>(K), dm = std::vector<double>(K * D),
                      dl = std::vector<double>(K * D), dx = std::vector<double>(N * D);
  slope::Module m = slope::compile_file(samplePath("mixture.slope"));
  slope::Function f = m.function("mixture");
  slope::Gradient grad = m.gradient("mixture");
};

MixtureData& mixture() {
  static MixtureData d;
  return d;
}

double lse(const double* v, int64_t n) {
  double m = -INFINITY;
  for (int64_t k = 0; k < n; ++k) m = std::max(m, v[k]);
  double s = 0;
  for (int64_t k = 0; k < n; ++k) s += std::exp(v[k] - m);
  return m + std::log(s);
}

/// The log-likelihood, written by hand.
double mixtureHand(const MixtureData& d) {
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
double mixtureGradHand(MixtureData& d) {
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
    for (int64_t j = 0; j < D; ++j) dxi[j] = 0;
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
  for (int64_t k = 0; k < K; ++k) d.da[k] -= N * std::exp(d.alphas[k] - la);
  return total - N * la - 0.5 * N * D * kLog2Pi;
}

std::vector<slope::Arg> mixtureArgs(MixtureData& d) {
  return {slope::View(d.alphas.data(), {K}), slope::View(d.means.data(), {K, D}),
          slope::View(d.ls.data(), {K, D}), slope::View(d.x.data(), {N, D})};
}

void BM_Mixture_Forward_Hand(benchmark::State& st) {
  auto& d = mixture();
  for (auto _ : st) benchmark::DoNotOptimize(mixtureHand(d));
}
void BM_Mixture_Forward_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = mixtureArgs(d);
  for (auto _ : st) benchmark::DoNotOptimize(static_cast<double>(d.f.call(args)));
}
void BM_Mixture_Gradient_Hand(benchmark::State& st) {
  auto& d = mixture();
  for (auto _ : st) {
    benchmark::DoNotOptimize(mixtureGradHand(d));
    benchmark::ClobberMemory();
  }
}
void BM_Mixture_Gradient_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = mixtureArgs(d);
  args.push_back(slope::View(d.da.data(), {K}));
  args.push_back(slope::View(d.dm.data(), {K, D}));
  args.push_back(slope::View(d.dl.data(), {K, D}));
  args.push_back(slope::View(d.dx.data(), {N, D}));
  for (auto _ : st) {
    benchmark::DoNotOptimize(d.grad.call(args));
    benchmark::ClobberMemory();
  }
}

// --- (c) JIT compile time of the mixture's forward + gradient -------------------------------

void BM_Mixture_CompileForwardAndGradient(benchmark::State& st) {
  for (auto _ : st) {
    slope::Module m = slope::compile_file(samplePath("mixture.slope"));
    benchmark::DoNotOptimize(m.function("mixture").raw());
    benchmark::DoNotOptimize(m.gradient("mixture").raw());
  }
}

BENCHMARK(BM_Bowl_Forward_Hand)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Forward_Slope)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Forward_SlopeApi)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Gradient_Hand)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Gradient_Slope)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mixture_Forward_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Forward_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Gradient_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Gradient_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_CompileForwardAndGradient)->Unit(benchmark::kMillisecond);

/// Before timing anything: Slope and the hand-written code must agree.
bool sameNumbers() {
  auto& b = bowl();
  double v1 = bowlHand(b.x.data(), kBowlRows * kBowlCols);
  double v2 = b.grad(slope::View(b.x.data(), {kBowlRows, kBowlCols}),
                     slope::View(b.g.data(), {kBowlRows, kBowlCols}));
  if (std::fabs(v1 - v2) > 1e-9 * std::fabs(v1) || b.g[7] != 2 * b.x[7] + 2) return false;
  auto& d = mixture();
  double hand = mixtureGradHand(d);
  std::vector<double> da = d.da, dm = d.dm, dl = d.dl, dx = d.dx;
  auto args = mixtureArgs(d);
  args.push_back(slope::View(d.da.data(), {K}));
  args.push_back(slope::View(d.dm.data(), {K, D}));
  args.push_back(slope::View(d.dl.data(), {K, D}));
  args.push_back(slope::View(d.dx.data(), {N, D}));
  double v = d.grad.call(args);
  auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::fabs(a[i] - b[i]) > 1e-8 * std::max(1.0, std::fabs(a[i]))) return false;
    return true;
  };
  return std::fabs(hand - v) < 1e-8 * std::fabs(hand) && close(da, d.da) && close(dm, d.dm) &&
         close(dl, d.dl) && close(dx, d.dx);
}

} // namespace

int main(int argc, char** argv) {
  if (!sameNumbers()) {
    std::fprintf(stderr, "slope_bench: Slope and the hand-written baselines disagree\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
