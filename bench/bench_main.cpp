// Slope against hand-written C++ (compiled -O3 in this same binary), single thread.
//
//   build/bench/slope_bench                       # all benchmarks
//   build/bench/slope_bench --benchmark_filter=Mixture
//
// Targets (issue 3): forward within 1.5x of hand-written; gradient within 3x of the forward;
// JIT compile of the mixture's forward + gradient under 250 ms. Results: docs/benchmarks.md.

#include "../samples/adbench/gmm_io.hpp"
#include "../samples/adbench/lstm_io.hpp"
#include "mixture_problem.hpp"

#include <slope/slope.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

std::string samplePath(const char* name) {
  return std::string(SLOPE_SOURCE_DIR) + "/samples/" + name;
}

using mixture_bench::randn;

// --- (a) bowl: sum(x^2 + 2x + 1) over 1,000,000 elements ------------------------------------

constexpr int64_t kBowlRows = 1000, kBowlCols = 1000;

double bowlHand(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    s += x[i] * x[i] + 2 * x[i] + 1;
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
  for (auto _ : st)
    benchmark::DoNotOptimize(bowlHand(d.x.data(), kBowlRows * kBowlCols));
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
  for (auto _ : st)
    benchmark::DoNotOptimize(static_cast<double>(d.f(x)));
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

struct MixtureData : mixture_bench::Problem {
  MixtureData() : Problem(10000, 25, 10) {}
  slope::Module m = slope::compile_file(samplePath("mixture.slope"));
  slope::Function f = m.function("mixture");
  slope::Gradient grad = m.gradient("mixture");
};

MixtureData& mixture() {
  static MixtureData d;
  return d;
}

void BM_Mixture_Forward_Hand(benchmark::State& st) {
  auto& d = mixture();
  for (auto _ : st)
    benchmark::DoNotOptimize(mixture_bench::forwardHand(d));
}
void BM_Mixture_Forward_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = d.args();
  for (auto _ : st)
    benchmark::DoNotOptimize(static_cast<double>(d.f.call(args)));
}
void BM_Mixture_Gradient_Hand(benchmark::State& st) {
  auto& d = mixture();
  for (auto _ : st) {
    benchmark::DoNotOptimize(mixture_bench::gradientHand(d));
    benchmark::ClobberMemory();
  }
}
void BM_Mixture_Gradient_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = d.gradArgs();
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

// --- ADBench GMM, 10k points, d = 10, K = 25 (issue 5's benchmark; data from ../shared) ----

struct GmmData {
  bool ok = false;
  adbench::GmmInput g;
  std::optional<slope::Module> m;
  GmmData() {
    std::string path =
        std::string(SLOPE_SOURCE_DIR) + "/../shared/data/adbench/gmm/10k/gmm_d10_K25.txt";
    try {
      g = adbench::readGmm(path);
      m = slope::compile_file(samplePath("adbench/gmm.slope"));
      ok = true;
    } catch (const std::exception&) {
    }
  }
};

GmmData& gmm() {
  static GmmData d;
  return d;
}

void BM_Gmm10k_Objective(benchmark::State& st) {
  auto& d = gmm();
  if (!d.ok) return st.SkipWithError("ADBench gmm/10k/gmm_d10_K25.txt not found");
  slope::Function f = d.m->function("gmm");
  auto& g = d.g;
  for (auto _ : st)
    benchmark::DoNotOptimize(static_cast<double>(
        f(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
          slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}), g.gamma,
          g.m)));
}

void BM_Gmm10k_Gradient(benchmark::State& st) {
  auto& d = gmm();
  if (!d.ok) return st.SkipWithError("ADBench gmm/10k/gmm_d10_K25.txt not found");
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runGmm(*d.m, d.g).objective);
}

// --- ADBench LSTM, l = 2, c = 1024 (b = 14) -------------------------------------------------

struct LstmData {
  bool ok = false;
  adbench::LstmInput s;
  std::optional<slope::Module> m;
  LstmData() {
    std::string path = std::string(SLOPE_SOURCE_DIR) + "/tests/data/adbench/lstm/lstm_l2_c1024.txt";
    try {
      s = adbench::readLstm(path);
      m = slope::compile_file(samplePath("adbench/lstm.slope"));
      ok = true;
    } catch (const std::exception&) {
    }
  }
};

LstmData& lstm() {
  static LstmData d;
  return d;
}

void BM_LstmL2C1024_Objective(benchmark::State& st) {
  auto& d = lstm();
  if (!d.ok) return st.SkipWithError("ADBench lstm/lstm_l2_c1024.txt not found");
  slope::Function f = d.m->function("lstm");
  auto args = adbench::lstmArgs(d.s);
  for (auto _ : st)
    benchmark::DoNotOptimize(static_cast<double>(f.call(args)));
}

void BM_LstmL2C1024_Gradient(benchmark::State& st) {
  auto& d = lstm();
  if (!d.ok) return st.SkipWithError("ADBench lstm/lstm_l2_c1024.txt not found");
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(*d.m, d.s).loss);
}

void BM_LstmL2C1024_GradientCheckpointSqrt(benchmark::State& st) {
  auto& d = lstm();
  if (!d.ok) return st.SkipWithError("ADBench lstm/lstm_l2_c1024.txt not found");
  slope::Options o;
  o.checkpoint = -1;
  static slope::Module m = slope::compile_file(samplePath("adbench/lstm.slope"), o);
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(m, d.s).loss);
}

/// Binomial checkpointing within 64 KiB of snapshots (a state is hidden, cell, x and total:
/// 2 l b + b + 1 = 71 f64, 568 bytes; so 115 snapshots for the 1023 steps).
void BM_LstmL2C1024_GradientRevolve64K(benchmark::State& st) {
  auto& d = lstm();
  if (!d.ok) return st.SkipWithError("ADBench lstm/lstm_l2_c1024.txt not found");
  slope::Options o;
  o.checkpoint_memory = 64 * 1024;
  static slope::Module m = slope::compile_file(samplePath("adbench/lstm.slope"), o);
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(m, d.s).loss);
}

BENCHMARK(BM_LstmL2C1024_Objective)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_GradientCheckpointSqrt)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_GradientRevolve64K)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_Gradient)->Unit(benchmark::kMillisecond);

BENCHMARK(BM_Gmm10k_Objective)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Gmm10k_Gradient)->Unit(benchmark::kMillisecond);

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
  double hand = mixture_bench::gradientHand(d);
  if (std::fabs(hand - mixture_bench::forwardHand(d)) > 1e-9 * std::fabs(hand)) return false;
  std::vector<double> da = d.da, dm = d.dm, dl = d.dl, dx = d.dx;
  auto args = d.gradArgs();
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
