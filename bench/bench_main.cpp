// Slope against hand-written C++ (compiled -O3 in this same binary), single thread.
//
//   build/bench/slope_bench                       # all benchmarks
//   build/bench/slope_bench --benchmark_filter=Mixture
//   build/bench/slope_bench --write_generated_gmm=FILE   # the generated GMM input, then exit
//
// Targets (issue 3): forward within 1.5x of hand-written; gradient within 3x of the forward;
// JIT compile of the mixture's forward + gradient under 250 ms. Issue 11: the ADBench GMM
// within 1.0x of the hand-written gmm_hand.cpp (built -O3 -march=native, as the JIT targets
// the host CPU), the LSTM within 0.5x of lstm_hand.cpp (built the same way). Results:
// docs/benchmarks.md.

#include "../samples/adbench/ba_io.hpp"
#include "../samples/adbench/gmm_io.hpp"
#include "../samples/adbench/hand_io.hpp"
#include "../samples/adbench/lstm_io.hpp"
#include "gmm_cases.hpp"
#include "lstm_hand.hpp"
#include "machine.hpp"
#include "mixture_problem.hpp"
#include "timed.hpp"

#include <slope/slope.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
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
  slope::Module m = slope::compile_file(samplePath("autograd_intro.slope"), timed());
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
  slope::Module m = slope::compile_file(samplePath("mixture.slope"), timed());
  slope::Function f = m.function("mixture");
  slope::Gradient grad = m.gradient("mixture");
  slope::Function jvp = m.jvp("mixture"), hvp = m.hvp("mixture");
  // A direction for every parameter, and the JVP's and HVP's outputs (written in place).
  std::vector<double> ta = fill(K), tm = fill(K * D), tl = fill(K * D), tx = fill(N * D);
  double value = 0, tangent = 0;
  std::vector<double> ga = fill(K), gm = fill(K * D), gl = fill(K * D), gx = fill(N * D);
  std::vector<double> ha = fill(K), hm = fill(K * D), hl = fill(K * D), hx = fill(N * D);
  static std::vector<double> fill(int64_t n) {
    std::vector<double> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = 0.01 * static_cast<double>(i % 7) - 0.03;
    return v;
  }
  std::vector<slope::Arg> withDirection() {
    auto a = args();
    a.push_back(slope::View(ta.data(), {K}));
    a.push_back(slope::View(tm.data(), {K, D}));
    a.push_back(slope::View(tl.data(), {K, D}));
    a.push_back(slope::View(tx.data(), {N, D}));
    return a;
  }
  std::vector<slope::View> jvpOut() { return {slope::View(value), slope::View(tangent)}; }
  std::vector<slope::View> hvpOut() {
    return {slope::View(value),
            slope::View(ga.data(), {K}),
            slope::View(gm.data(), {K, D}),
            slope::View(gl.data(), {K, D}),
            slope::View(gx.data(), {N, D}),
            slope::View(ha.data(), {K}),
            slope::View(hm.data(), {K, D}),
            slope::View(hl.data(), {K, D}),
            slope::View(hx.data(), {N, D})};
  }
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

// Forward mode (issue 15): the JVP along one direction, and the Hessian-vector product
// (forward over reverse), each against the gradient's time above.
void BM_Mixture_Jvp_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = d.withDirection();
  auto out = d.jvpOut();
  for (auto _ : st) {
    d.jvp.call_into(args, out);
    benchmark::ClobberMemory();
  }
}
void BM_Mixture_Hvp_Slope(benchmark::State& st) {
  auto& d = mixture();
  auto args = d.withDirection();
  auto out = d.hvpOut();
  for (auto _ : st) {
    d.hvp.call_into(args, out);
    benchmark::ClobberMemory();
  }
}

// --- (c) JIT compile time of the mixture's forward + gradient -------------------------------

void BM_Mixture_CompileForwardAndGradient(benchmark::State& st) {
  for (auto _ : st) {
    slope::Module m = slope::compile_file(samplePath("mixture.slope"), timed());
    benchmark::DoNotOptimize(m.function("mixture").raw());
    benchmark::DoNotOptimize(m.gradient("mixture").raw());
  }
}

// --- ADBench GMM: Slope against the hand-written gmm_hand.cpp (issue 11) ------------------
//
// One benchmark per (implementation, objective or objective + gradient, size), named
// BM_Gmm_{Objective,Gradient}_{Slope,Hand}/n:N/d:D/K:K; scripts/plot_gmm.py reads these names
// (and a /threads:T suffix, when Slope runs on threads). Each size is loaded, and Slope
// checked against the hand-written code, the first time one of its benchmarks runs, so a
// --benchmark_filter that leaves a size out does not pay for it.

/// The GMM compiled for `threads` threads (Options::threads).
const slope::Module& gmmModule(int threads) {
  static std::map<int, slope::Module> modules;
  auto it = modules.find(threads);
  if (it == modules.end()) {
    slope::Options o = timed();
    o.threads = threads;
    it = modules.emplace(threads, slope::compile_file(samplePath("adbench/gmm.slope"), o)).first;
  }
  return it->second;
}

bool gmmDisagreed = false; // main's exit status: a size whose numbers disagreed was not timed

struct GmmCase {
  std::string skip; // why this size is not timed; empty when it is
  adbench::GmmInput g;
  gmm_hand::Gmm hand;
  std::vector<double> da, dm, dicf;
  std::map<int, slope::Function> f; // by threads
  std::map<int, slope::Gradient> grad;

  explicit GmmCase(const gmm_bench::Size& s) {
    try {
      g = gmm_bench::load(s, SLOPE_SOURCE_DIR);
    } catch (const std::exception& e) {
      skip = std::string("ADBench GMM input not found: ") + e.what();
      return;
    }
    da.resize(g.alphas.size());
    dm.resize(g.means.size());
    dicf.resize(g.icf.size());
    skip = disagreement();
    if (!skip.empty()) {
      gmmDisagreed = true;
      std::fprintf(stderr, "slope_bench: GMM n=%lld d=%lld K=%lld: %s\n",
                   static_cast<long long>(g.n), static_cast<long long>(g.d),
                   static_cast<long long>(g.K), skip.c_str());
    }
  }

  /// The functions for `threads` threads, compiled on first use.
  void prepare(int threads) {
    if (f.count(threads)) return;
    f.emplace(threads, gmmModule(threads).function("gmm"));
    grad.emplace(threads, gmmModule(threads).gradient("gmm", {"alphas", "means", "icf"}));
  }
  double slopeObjective(int threads = 1) {
    prepare(threads);
    return f.at(threads)(
        slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
        slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}), g.gamma, g.m);
  }
  double slopeGradient(int threads = 1) {
    prepare(threads);
    return grad.at(threads)(
        slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
        slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}), g.gamma, g.m,
        slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
        slope::View(dicf.data(), {g.K, g.t()}));
  }
  /// The Hessian-vector product along (da, dm, dicf) as they stand, into ha, hm, hicf.
  void slopeHvp() {
    if (!hvp.f) {
      hvp.f = gmmModule(1).hvp("gmm", {"alphas", "means", "icf"});
      hvp.ga = da, hvp.gm = dm, hvp.gi = dicf, hvp.ha = da, hvp.hm = dm, hvp.hi = dicf;
    }
    double v = 0;
    hvp.f->call_into(
        {slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
         slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}), g.gamma, g.m,
         slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
         slope::View(dicf.data(), {g.K, g.t()})},
        {slope::View(v), slope::View(hvp.ga.data(), {g.K}), slope::View(hvp.gm.data(), {g.K, g.d}),
         slope::View(hvp.gi.data(), {g.K, g.t()}), slope::View(hvp.ha.data(), {g.K}),
         slope::View(hvp.hm.data(), {g.K, g.d}), slope::View(hvp.hi.data(), {g.K, g.t()})});
  }
  struct {
    std::optional<slope::Function> f;
    std::vector<double> ga, gm, gi, ha, hm, hi;
  } hvp;
  double handObjective() { return hand.objective(gmm_bench::problem(g)); }
  double handGradient() {
    return hand.gradient(gmm_bench::problem(g), da.data(), dm.data(), dicf.data());
  }
  std::vector<gmm_hand::Gmm> handWorkers = std::vector<gmm_hand::Gmm>(2);
  double handGradientThreads(int threads) {
    return gmm_hand::gradientThreads(gmm_bench::problem(g), da.data(), dm.data(), dicf.data(),
                                     handWorkers, threads);
  }

  /// Empty when Slope's objective and gradient agree with the hand-written ones: values to
  /// 1e-10 relative; each gradient entry to 1e-8 of the larger of 1 and its size (two exact
  /// algorithms that sum in different orders).
  std::string disagreement() {
    const double objHand = handObjective(), objSlope = slopeObjective();
    const double gradHand = handGradient();
    std::vector<double> hand = da;
    hand.insert(hand.end(), dm.begin(), dm.end());
    hand.insert(hand.end(), dicf.begin(), dicf.end());
    const double gradSlope = slopeGradient();
    std::vector<double> mine = da;
    mine.insert(mine.end(), dm.begin(), dm.end());
    mine.insert(mine.end(), dicf.begin(), dicf.end());
    char buf[200];
    for (double v : {objSlope, gradSlope, gradHand})
      if (!(std::fabs(v - objHand) <= 1e-10 * std::max(1.0, std::fabs(objHand)))) {
        std::snprintf(buf, sizeof buf, "objective %.17g (hand-written) against %.17g", objHand, v);
        return buf;
      }
    for (size_t i = 0; i < hand.size(); ++i)
      if (!(std::fabs(hand[i] - mine[i]) <= 1e-8 * std::max(1.0, std::fabs(hand[i])))) {
        std::snprintf(buf, sizeof buf, "gradient entry %zu: %.17g (hand-written), %.17g (Slope)", i,
                      hand[i], mine[i]);
        return buf;
      }
    return "";
  }
};

/// The case for the benchmark's (n, d, K) arguments, made on first use.
GmmCase& gmmCase(const benchmark::State& st) {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<GmmCase>> cases;
  const auto key = std::make_tuple(st.range(0), st.range(1), st.range(2)); // (not threads)
  auto& c = cases[key];
  if (!c)
    for (const auto& s : gmm_bench::kSizes)
      if (s.n == st.range(0) && s.d == st.range(1) && s.K == st.range(2))
        c = std::make_unique<GmmCase>(s);
  return *c;
}

// Slope's take a fourth argument, its threads (1 and 2: the CI machine's cores).
void BM_Gmm_Objective_Slope(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  const int threads = static_cast<int>(st.range(3));
  c.prepare(threads);
  for (auto _ : st)
    benchmark::DoNotOptimize(c.slopeObjective(threads));
}
void BM_Gmm_Gradient_Slope(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  const int threads = static_cast<int>(st.range(3));
  c.prepare(threads);
  for (auto _ : st) {
    benchmark::DoNotOptimize(c.slopeGradient(threads));
    benchmark::ClobberMemory();
  }
}
void BM_Gmm_Hvp_Slope(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  c.slopeGradient(); // (da, dm, dicf): the gradient, as the direction
  for (auto _ : st) {
    c.slopeHvp();
    benchmark::ClobberMemory();
  }
}
void BM_Gmm_Objective_Hand(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  for (auto _ : st)
    benchmark::DoNotOptimize(c.handObjective());
}
void BM_Gmm_Gradient_Hand(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  for (auto _ : st) {
    benchmark::DoNotOptimize(c.handGradient());
    benchmark::ClobberMemory();
  }
}

// The hand-written gradient on two threads (gmm_hand::gradientThreads: the points halved), as
// the yardstick for Slope's two threads: what this machine gives hand-written code. Checked
// against the one-thread hand-written gradient before it is timed.
void BM_Gmm_GradientThreads_Hand(benchmark::State& st) {
  auto& c = gmmCase(st);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  const int threads = static_cast<int>(st.range(3));
  const double one = c.handGradient();
  std::vector<double> want = c.da;
  want.insert(want.end(), c.dm.begin(), c.dm.end());
  want.insert(want.end(), c.dicf.begin(), c.dicf.end());
  const double value = c.handGradientThreads(threads);
  std::vector<double> got = c.da;
  got.insert(got.end(), c.dm.begin(), c.dm.end());
  got.insert(got.end(), c.dicf.begin(), c.dicf.end());
  bool same = std::fabs(value - one) <= 1e-10 * std::max(1.0, std::fabs(one));
  for (size_t i = 0; i < want.size(); ++i)
    same = same && std::fabs(got[i] - want[i]) <= 1e-8 * std::max(1.0, std::fabs(want[i]));
  if (!same) {
    gmmDisagreed = true;
    return st.SkipWithError("the hand-written gradient on threads differs from one thread's");
  }
  for (auto _ : st) {
    benchmark::DoNotOptimize(c.handGradientThreads(threads));
    benchmark::ClobberMemory();
  }
}

// What this machine's cores give code bound by vector arithmetic: `threads` threads each run
// machine::vectorFmaChains, items = FMAs. Two vCPUs that are two threads of one physical core
// share its FMA units: two threads then do barely more than one, and no program whose time
// is vector arithmetic can run twice as fast on both.
void BM_Machine_VectorFma(benchmark::State& st) {
  const int threads = static_cast<int>(st.range(0));
  constexpr int64_t kSteps = 50'000'000;
  for (auto _ : st) {
    std::vector<std::thread> others;
    for (int t = 1; t < threads; ++t)
      others.emplace_back([] { benchmark::DoNotOptimize(machine::vectorFmaChains(kSteps)); });
    benchmark::DoNotOptimize(machine::vectorFmaChains(kSteps));
    for (std::thread& o : others)
      o.join();
  }
  st.SetItemsProcessed(st.iterations() * threads * kSteps * 40);
}

// --- ADBench bundle adjustment and hand tracking (issue 15) ---------------------------------
//
// BM_Ba_{Objective,Jacobian}/INPUT and BM_Hand_{Objective,Jacobian}_{Simple,Complicated}/INPUT:
// the errors, and their dense Jacobian (Module::jacobian: a JVP per column or a VJP per row,
// whichever is fewer). Inputs from ../shared/data/adbench (skipped where absent) or, for the
// small test files, tests/data/adbench. The Jacobian of BA is sparse (15 parameters reach an
// observation): the dense one is timed on the small input only, the sparse one (colouring,
// BM_Ba_JacobianSparse) on both.

std::string adbenchPath(const std::string& rel, bool shared) {
  return std::string(SLOPE_SOURCE_DIR) +
         (shared ? "/../shared/data/adbench/" : "/tests/data/adbench/") + rel;
}

struct BaCase {
  std::string skip;
  adbench::BaInput b;
  std::optional<slope::Function> f;
  std::optional<slope::Jacobian> J;
  explicit BaCase(const std::string& path) {
    try {
      b = adbench::readBa(path);
    } catch (const std::exception& e) {
      skip = std::string("ADBench BA input not found: ") + e.what();
      return;
    }
    static slope::Module m = slope::compile_file(samplePath("adbench/ba.slope"), timed());
    f = m.function("ba");
    J = m.jacobian("ba", {"cams", "X", "w"});
  }
};
BaCase& baCase(const std::string& path) {
  static std::map<std::string, std::unique_ptr<BaCase>> cases;
  auto& c = cases[path];
  if (!c) c = std::make_unique<BaCase>(path);
  return *c;
}
void BM_Ba_Objective(benchmark::State& st, const std::string& rel, bool shared) {
  BaCase& c = baCase(adbenchPath(rel, shared));
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  auto args = adbench::baArgs(c.b);
  for (auto _ : st)
    benchmark::DoNotOptimize(c.f->call(args));
}
void BM_Ba_Jacobian(benchmark::State& st, const std::string& rel, bool shared) {
  BaCase& c = baCase(adbenchPath(rel, shared));
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  auto args = adbench::baArgs(c.b);
  for (auto _ : st)
    benchmark::DoNotOptimize(c.J->evaluate(args));
}

// The sparse Jacobian: the pattern read once (as a solver would, for fixed observations),
// then up to 16 colours per JVP call, the values refilled in place each time
// (Jacobian::evaluate_sparse_into on the first call's result). BM_Ba_JacobianSparseCopy: the
// same with a new result per call (evaluate_sparse(args, like): the pattern copied, fresh
// buffers).
void timeSparseInPlace(benchmark::State& st, const slope::Jacobian& jac,
                       const std::vector<slope::Arg>& args) {
  slope::SparseResult J = jac.evaluate_sparse(args);
  jac.evaluate_sparse_into(args, J); // its buffers
  for (auto _ : st) {
    jac.evaluate_sparse_into(args, J);
    benchmark::DoNotOptimize(J.values.data());
  }
  st.counters["colours"] = static_cast<double>(J.colours);
  st.counters["nonzeros"] = static_cast<double>(J.col_index.size());
}
void BM_Ba_JacobianSparse(benchmark::State& st, const std::string& rel, bool shared) {
  BaCase& c = baCase(adbenchPath(rel, shared));
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  timeSparseInPlace(st, *c.J, adbench::baArgs(c.b));
}
void BM_Ba_JacobianSparseCopy(benchmark::State& st, const std::string& rel, bool shared) {
  BaCase& c = baCase(adbenchPath(rel, shared));
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  auto args = adbench::baArgs(c.b);
  slope::SparseResult first = c.J->evaluate_sparse(args);
  for (auto _ : st)
    benchmark::DoNotOptimize(c.J->evaluate_sparse(args, first));
}

struct HandCase {
  std::string skip;
  bool complicated;
  adbench::HandInput h;
  std::optional<slope::Function> f;
  std::optional<slope::Jacobian> J;
  HandCase(const std::string& model, const std::string& path, bool compl_) : complicated(compl_) {
    try {
      h = adbench::readHand(model, path, complicated);
    } catch (const std::exception& e) {
      skip = std::string("ADBench hand input not found: ") + e.what();
      return;
    }
    static slope::Module m = slope::compile_file(samplePath("adbench/hand.slope"), timed());
    std::string fn = complicated ? "hand_complicated" : "hand";
    f = m.function(fn);
    J = complicated ? m.jacobian(fn, {"theta", "us"}) : m.jacobian(fn, {"theta"});
  }
};
HandCase& handCase(const std::string& rel, bool shared, bool complicated) {
  static std::map<std::string, std::unique_ptr<HandCase>> cases;
  auto& c = cases[rel + (complicated ? "|c" : "|s")];
  if (!c) {
    std::string model = shared ? adbenchPath(std::string(complicated ? "hand/complicated_small"
                                                                     : "hand/simple_small") +
                                                 "/model",
                                             true)
                               : adbenchPath("hand/model", false);
    c = std::make_unique<HandCase>(model, adbenchPath(rel, shared), complicated);
  }
  return *c;
}
void BM_Hand_Objective(benchmark::State& st, const std::string& rel, bool shared,
                       bool complicated) {
  HandCase& c = handCase(rel, shared, complicated);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  auto args = adbench::handArgs(c.h, complicated);
  for (auto _ : st)
    benchmark::DoNotOptimize(c.f->call(args));
}
void BM_Hand_JacobianSparse(benchmark::State& st, const std::string& rel, bool shared,
                            bool complicated) {
  HandCase& c = handCase(rel, shared, complicated);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  timeSparseInPlace(st, *c.J, adbench::handArgs(c.h, complicated));
}
void BM_Hand_Jacobian(benchmark::State& st, const std::string& rel, bool shared, bool complicated) {
  HandCase& c = handCase(rel, shared, complicated);
  if (!c.skip.empty()) return st.SkipWithError(c.skip.c_str());
  auto args = adbench::handArgs(c.h, complicated);
  int64_t calls = 0;
  for (auto _ : st)
    calls = c.J->evaluate(args).calls;
  st.counters["calls"] = static_cast<double>(calls);
}

void gmmSizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "K"})->Unit(benchmark::kMillisecond);
  for (const auto& s : gmm_bench::kSizes)
    b->Args({s.n, s.d, s.K});
}
void gmmSizesThreads(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "K", "threads"})->Unit(benchmark::kMillisecond);
  for (const auto& s : gmm_bench::kSizes)
    for (int64_t threads : {1, 2})
      b->Args({s.n, s.d, s.K, threads});
}

// --- ADBench LSTM, l = 2, c = 1024 (b = 14): Slope against the hand-written lstm_hand.cpp ---
//
// BM_LstmL2C1024_{Objective,Gradient} are Slope's, BM_LstmL2C1024_{Objective,Gradient}_Hand the
// hand-written code's ("Gradient": the loss and its gradient with respect to main and extra).
// None of them is timed unless Slope and the hand-written code agree on this input.

bool lstmDisagreed = false; // main's exit status, as gmmDisagreed

struct LstmData {
  std::string skip; // why the LSTM is not timed; empty when it is
  adbench::LstmInput s;
  std::optional<slope::Module> m;
  lstm_hand::Lstm hand;
  std::vector<double> dmain, dextra; // the hand-written gradient's output
  LstmData() {
    std::string path = std::string(SLOPE_SOURCE_DIR) + "/tests/data/adbench/lstm/lstm_l2_c1024.txt";
    try {
      s = adbench::readLstm(path);
      m = slope::compile_file(samplePath("adbench/lstm.slope"), timed());
    } catch (const std::exception& e) {
      skip = std::string("ADBench lstm/lstm_l2_c1024.txt not found: ") + e.what();
      return;
    }
    dmain.resize(s.main.size());
    dextra.resize(s.extra.size());
    skip = disagreement();
    if (!skip.empty()) {
      lstmDisagreed = true;
      std::fprintf(stderr, "slope_bench: LSTM l=2 c=1024: %s\n", skip.c_str());
    }
  }

  lstm_hand::Problem problem() const {
    return {s.l, s.c, s.b, s.main.data(), s.extra.data(), s.state.data(), s.seq.data()};
  }
  double handObjective() { return hand.objective(problem()); }
  double handGradient() { return hand.gradient(problem(), dmain.data(), dextra.data()); }

  /// Empty when Slope's loss and gradient agree with the hand-written ones: the losses to
  /// 1e-10 relative, each gradient entry to 1e-8 of the larger of 1 and its size (the GMM's
  /// tolerances; lstm_hand_test.cpp checks far tighter).
  std::string disagreement() {
    const double objHand = handObjective();
    const double objSlope = static_cast<double>(m->function("lstm").call(adbench::lstmArgs(s)));
    const double gradHand = handGradient();
    std::vector<double> mine = dmain;
    mine.insert(mine.end(), dextra.begin(), dextra.end());
    const adbench::LstmResult slope = adbench::runLstm(*m, s);
    char buf[200];
    for (double v : {objSlope, slope.loss, gradHand})
      if (!(std::fabs(v - objHand) <= 1e-10 * std::max(1.0, std::fabs(objHand)))) {
        std::snprintf(buf, sizeof buf, "loss %.17g (hand-written) against %.17g", objHand, v);
        return buf;
      }
    for (size_t i = 0; i < mine.size(); ++i)
      if (!(std::fabs(mine[i] - slope.gradient[i]) <= 1e-8 * std::max(1.0, std::fabs(mine[i])))) {
        std::snprintf(buf, sizeof buf, "gradient entry %zu: %.17g (hand-written), %.17g (Slope)", i,
                      mine[i], slope.gradient[i]);
        return buf;
      }
    return "";
  }
};

LstmData& lstm() {
  static LstmData d;
  return d;
}

void BM_LstmL2C1024_Objective(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  slope::Function f = d.m->function("lstm");
  auto args = adbench::lstmArgs(d.s);
  for (auto _ : st)
    benchmark::DoNotOptimize(static_cast<double>(f.call(args)));
}

void BM_LstmL2C1024_Gradient(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(*d.m, d.s).loss);
}

void BM_LstmL2C1024_Objective_Hand(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  for (auto _ : st)
    benchmark::DoNotOptimize(d.handObjective());
}

void BM_LstmL2C1024_Gradient_Hand(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  for (auto _ : st) {
    benchmark::DoNotOptimize(d.handGradient());
    benchmark::ClobberMemory();
  }
}

void BM_LstmL2C1024_GradientCheckpointSqrt(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  slope::Options o = timed();
  o.checkpoint = -1;
  static slope::Module m = slope::compile_file(samplePath("adbench/lstm.slope"), o);
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(m, d.s).loss);
}

/// Binomial checkpointing within 64 KiB of snapshots (a state is hidden, cell, x and total:
/// 2 l b + b + 1 = 71 f64, 568 bytes; so 115 snapshots for the 1023 steps).
void BM_LstmL2C1024_GradientRevolve64K(benchmark::State& st) {
  auto& d = lstm();
  if (!d.skip.empty()) return st.SkipWithError(d.skip.c_str());
  slope::Options o = timed();
  o.checkpoint_memory = 64 * 1024;
  static slope::Module m = slope::compile_file(samplePath("adbench/lstm.slope"), o);
  for (auto _ : st)
    benchmark::DoNotOptimize(adbench::runLstm(m, d.s).loss);
}

BENCHMARK(BM_LstmL2C1024_Objective_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_Objective)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_Gradient_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_GradientCheckpointSqrt)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_GradientRevolve64K)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LstmL2C1024_Gradient)->Unit(benchmark::kMillisecond);

BENCHMARK(BM_Gmm_Objective_Hand)->Apply(gmmSizes);
BENCHMARK(BM_Gmm_Objective_Slope)->Apply(gmmSizesThreads);
BENCHMARK(BM_Gmm_Gradient_Hand)->Apply(gmmSizes);
BENCHMARK(BM_Gmm_Gradient_Slope)->Apply(gmmSizesThreads);
BENCHMARK(BM_Gmm_Hvp_Slope)->Apply(gmmSizes);
BENCHMARK(BM_Gmm_GradientThreads_Hand)->Apply([](benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "K", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const auto& s : gmm_bench::kSizes)
    b->Args({s.n, s.d, s.K, 2});
});
BENCHMARK(BM_Machine_VectorFma)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_CAPTURE(BM_Ba_Objective, test, "ba/test.txt", false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Ba_Jacobian, test, "ba/test.txt", false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Ba_JacobianSparse, test, "ba/test.txt", false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Ba_Objective, ba1, "ba/ba1_n49_m7776_p31843.txt", true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Ba_JacobianSparse, ba1, "ba/ba1_n49_m7776_p31843.txt", true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Ba_JacobianSparseCopy, ba1, "ba/ba1_n49_m7776_p31843.txt", true)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Hand_Objective, simple_c100, "hand/simple_small/hand1_t26_c100.txt", true,
                  false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Hand_Jacobian, simple_c100, "hand/simple_small/hand1_t26_c100.txt", true,
                  false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Hand_Objective, complicated_c100, "hand/complicated_small/hand1_t26_c100.txt",
                  true, true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Hand_Jacobian, complicated_c100, "hand/complicated_small/hand1_t26_c100.txt",
                  true, true)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Hand_JacobianSparse, complicated_c100,
                  "hand/complicated_small/hand1_t26_c100.txt", true, true)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_Bowl_Forward_Hand)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Forward_Slope)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Forward_SlopeApi)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Gradient_Hand)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Bowl_Gradient_Slope)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Mixture_Forward_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Forward_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Gradient_Hand)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Gradient_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Jvp_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_Hvp_Slope)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Mixture_CompileForwardAndGradient)->Unit(benchmark::kMillisecond);

// --- CUDA offload (issue 12; docs/gpu.md) -----------------------------------------------------
//
// The workloads of ../shared/bench/gpu_anchors.py, which times PyTorch and JAX on them: the
// seed's bowl value and gradient in f32 over 2^28 elements, and the ADBench GMM objective and
// gradient in f64 at n 10k, d 10, K 25 and d 64, K 200 (ADBench's generator rules,
// gmm_generate.hpp, so no file is needed on the GPU machine), on Options::target = "cuda".
// A call's time includes copying its arguments into the GPU's memory and its results out
// (SLOPE_CUDA_STATS=1 prints each function's kernel time at exit). Skipped without a GPU; a
// GMM whose numbers disagree with the hand-written code is not timed.

/// The sample (or, with `source`, that text) compiled for the GPU; empty, with why in skip,
/// where CUDA does not start.
std::optional<slope::Module> cudaModule(const char* sample, std::string& skip,
                                        const char* source = nullptr) {
  slope::Options o = timed();
  o.target = "cuda";
  try {
    return source ? slope::compile_string(source, sample, o)
                  : slope::compile_file(samplePath(sample), o);
  } catch (const std::invalid_argument& e) {
    skip = e.what();
    return std::nullopt;
  }
}

void BM_Cuda_Bowl_Gradient_F32(benchmark::State& st) {
  static std::string skip;
  static std::optional<slope::Module> m =
      cudaModule("bowl32.slope", skip, "fn bowl(x: f32[n]) -> f32 {\n  sum(x^2 + 2 * x + 1)\n}\n");
  if (!m) return st.SkipWithError(skip.c_str());
  const int64_t n = st.range(0);
  std::vector<float> x(static_cast<size_t>(n)), g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    x[static_cast<size_t>(i)] = static_cast<float>((i % 1000) * 1e-3 - 0.5);
  slope::Gradient grad = m->gradient("bowl");
  for (auto _ : st) {
    benchmark::DoNotOptimize(grad(slope::View(x.data(), {n}), slope::View(g.data(), {n})));
    benchmark::ClobberMemory();
  }
  if (g[3] != 2 * x[3] + 2) st.SkipWithError("the gradient is wrong");
  st.SetBytesProcessed(st.iterations() * n * 2 * static_cast<int64_t>(sizeof(float)));
}

void BM_Cuda_Gmm_Gradient(benchmark::State& st) {
  static std::string skip;
  static std::optional<slope::Module> m = cudaModule("adbench/gmm.slope", skip);
  if (!m) return st.SkipWithError(skip.c_str());
  adbench::GmmInput g = adbench::generateGmm(st.range(1), st.range(2), st.range(0));
  std::vector<double> da(g.alphas.size()), dm(g.means.size()), dicf(g.icf.size());
  slope::Gradient grad = m->gradient("gmm", {"alphas", "means", "icf"});
  auto call = [&] {
    return grad(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
                slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}),
                g.gamma, g.m, slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
                slope::View(dicf.data(), {g.K, g.t()}));
  };
  // The GPU's numbers against the hand-written code's, as for the CPU (GmmCase).
  const double v = call();
  gmm_hand::Gmm hand;
  std::vector<double> ha(da.size()), hm(dm.size()), hi(dicf.size());
  const double hv = hand.gradient(gmm_bench::problem(g), ha.data(), hm.data(), hi.data());
  if (!(std::fabs(v - hv) <= 1e-10 * std::max(1.0, std::fabs(hv)))) {
    gmmDisagreed = true;
    return st.SkipWithError("the GPU's GMM objective disagrees with the hand-written code");
  }
  for (auto [a, b] : {std::pair{&da, &ha}, {&dm, &hm}, {&dicf, &hi}})
    for (size_t i = 0; i < a->size(); ++i)
      if (!(std::fabs((*a)[i] - (*b)[i]) <= 1e-8 * std::max(1.0, std::fabs((*b)[i])))) {
        gmmDisagreed = true;
        return st.SkipWithError("the GPU's GMM gradient disagrees with the hand-written code");
      }
  for (auto _ : st) {
    benchmark::DoNotOptimize(call());
    benchmark::ClobberMemory();
  }
}

/// Compile time for the GPU: the GMM's forward and gradient, host code, PTX and the driver's
/// load, as a host's first call pays it.
void BM_Cuda_CompileGmm(benchmark::State& st) {
  std::string skip;
  if (!cudaModule("adbench/gmm.slope", skip)) return st.SkipWithError(skip.c_str());
  for (auto _ : st) {
    std::optional<slope::Module> m = cudaModule("adbench/gmm.slope", skip);
    benchmark::DoNotOptimize(m->function("gmm").raw());
    benchmark::DoNotOptimize(m->gradient("gmm", {"alphas", "means", "icf"}).raw());
  }
}

BENCHMARK(BM_Cuda_Bowl_Gradient_F32)->Arg(1 << 28)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cuda_Gmm_Gradient)
    ->ArgNames({"n", "d", "K"})
    ->Args({10000, 10, 25})
    ->Args({10000, 64, 200})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cuda_CompileGmm)->Unit(benchmark::kMillisecond)->Iterations(3);

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
  const std::string writeFlag = "--write_generated_gmm=";
  if (argc == 2 && std::string(argv[1]).rfind(writeFlag, 0) == 0) {
    for (const auto& s : gmm_bench::kSizes)
      if (!s.file)
        adbench::writeGmm(adbench::generateGmm(s.d, s.K, s.n), argv[1] + writeFlag.size());
    return 0;
  }
  if (!sameNumbers()) {
    std::fprintf(stderr, "slope_bench: Slope and the hand-written baselines disagree\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (gmmDisagreed) {
    std::fprintf(stderr, "slope_bench: Slope and the hand-written GMM disagree (above); those "
                         "sizes were not timed\n");
  }
  if (lstmDisagreed) {
    std::fprintf(stderr, "slope_bench: Slope and the hand-written LSTM disagree (above); the "
                         "LSTM was not timed\n");
  }
  if (gmmDisagreed || lstmDisagreed) return 1;
  return 0;
}
