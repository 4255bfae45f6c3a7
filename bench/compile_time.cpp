// Compile time against program size (issue 11, item 6): parse, check, differentiate, simplify
// and JIT the forward function and its gradient through the C++ API, for generated programs
// of growing size, and print each family's fitted exponent (the slope of log time against
// log size; 1 is linear).
//
//   build/bench/slope_compile_bench                            # everything (a few minutes)
//   build/bench/slope_compile_bench --benchmark_filter=Params
//
// The same programs, for slopec, come from bench/gen_compile_cases.py. Targets: GMM forward +
// gradient <= 0.15 s, LSTM <= 0.5 s, every family linear. Results: docs/benchmarks.md.

#include <slope/slope.hpp>

#include "gmm_generate.hpp"

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

// --- generators (the same programs as bench/gen_compile_cases.py) ------------------------------

/// f(x0, ..., x{n-1}) = x0 x1 + x1 x2 + ... + x{n-1} x0: a gradient with n scalar results.
std::string params(int64_t n) {
  std::ostringstream s;
  s << "fn f(";
  for (int64_t i = 0; i < n; ++i)
    s << (i ? ", " : "") << "x" << i << ": f64";
  s << ") -> f64 {\n    ";
  for (int64_t i = 0; i < n; ++i)
    s << (i ? " + " : "") << "x" << i << " * x" << (i + 1) % n;
  s << "\n}\n";
  return s.str();
}

/// One expression of n terms over two scalars.
std::string terms(int64_t n) {
  const char* ops[] = {"x * y", "sin(x)", "x * x", "y * 0.5", "exp(y) * x"};
  std::ostringstream s;
  s << "fn f(x: f64, y: f64) -> f64 {\n    ";
  for (int64_t i = 0; i < n; ++i)
    s << (i ? " + " : "") << ops[i % 5] << " * " << i % 7 + 1;
  s << "\n}\n";
  return s.str();
}

/// n lets, each computed from the one before.
std::string chain(int64_t n) {
  std::ostringstream s;
  s << "fn f(x: f64) -> f64 {\n    let a0 = x;\n";
  for (int64_t i = 1; i <= n; ++i)
    s << "    let a" << i << " = a" << i - 1 << " * 0.5 + sin(a" << i - 1 << ") * x;\n";
  s << "    a" << n << "\n}\n";
  return s.str();
}

/// n chained comprehensions over a vector.
std::string comps(int64_t n) {
  std::ostringstream s;
  s << "fn f(x: f64[n]) -> f64 {\n    let y0[i] = x[i];\n";
  for (int64_t k = 1; k <= n; ++k)
    s << "    let y" << k << "[i] = y" << k - 1 << "[i] * 0.5 + sin(x[i]);\n";
  s << "    sum(y" << n << ")\n}\n";
  return s.str();
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Compiles `source` and JITs the forward function and its gradient at opt level 2 (not
/// tiered: these families measure how LLVM's full pipeline grows with the program).
void compileBoth(benchmark::State& state, const std::string& source, const std::string& fn) {
  slope::Options o;
  o.tiered = false;
  for (auto _ : state) {
    slope::Module m = slope::compile_string(source, fn + ".slope", o);
    benchmark::DoNotOptimize(m.function(fn));
    benchmark::DoNotOptimize(m.gradient(fn));
  }
  state.SetComplexityN(state.range(0));
  state.counters["bytes"] = static_cast<double>(source.size());
}

void BM_CompileParams(benchmark::State& st) {
  compileBoth(st, params(st.range(0)), "f");
}
void BM_CompileTerms(benchmark::State& st) {
  compileBoth(st, terms(st.range(0)), "f");
}
void BM_CompileChain(benchmark::State& st) {
  compileBoth(st, chain(st.range(0)), "f");
}
void BM_CompileComps(benchmark::State& st) {
  compileBoth(st, comps(st.range(0)), "f");
}

/// The sample's function and its gradient, compiled at opt level `level` (Options::opt_level:
/// level 0 shows what the rest of the time is LLVM's optimisation). tiered (the default
/// options): until both can be called, their first tier compiled at level 0; not tiered: both
/// at `level` before they are returned.
void compileSample(benchmark::State& st, const char* file, const char* fn, int level, bool tiered) {
  std::string src = readFile(std::string(SLOPE_SOURCE_DIR) + "/samples/" + file);
  slope::Options o;
  o.opt_level = level;
  o.tiered = tiered;
  for (auto _ : st) {
    slope::Module m = slope::compile_string(src, file, o);
    benchmark::DoNotOptimize(m.function(fn).raw());
    benchmark::DoNotOptimize(m.gradient(fn).raw());
  }
}
void BM_CompileSample(benchmark::State& st, const char* file, const char* fn) {
  compileSample(st, file, fn, 2, true);
}
void BM_CompileSampleFull(benchmark::State& st, const char* file, const char* fn) {
  compileSample(st, file, fn, 2, false);
}

/// What a host waits for: compiling the GMM's gradient and its first `calls` calls on
/// 10,000 generated points (d = 10, K = 25, gmm_generate.hpp), on the default threads, the
/// module destroyed at the end (which waits for a second tier being compiled). tiered: the
/// default options, the calls starting on level-0 code; not: level 2 before the first call.
void BM_FirstCalls(benchmark::State& st) {
  static const adbench::GmmInput g = adbench::generateGmm(10, 25, 10000);
  std::string src = readFile(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  slope::Options o;
  o.tiered = st.range(0) != 0;
  for (auto _ : st) {
    slope::Module m = slope::compile_string(src, "gmm.slope", o);
    slope::Gradient grad = m.gradient("gmm", {"alphas", "means", "icf"});
    for (int64_t k = 0; k < st.range(1); ++k)
      benchmark::DoNotOptimize(adbench::runGmm(grad, g, g.x.data(), g.n).objective);
  }
}

/// Sizes from..to, doubling; one iteration each: the largest take seconds, and compile time
/// does not warm up.
void sizes(benchmark::internal::Benchmark* b, int64_t from, int64_t to) {
  for (int64_t n = from; n <= to; n *= 2)
    b->Arg(n);
  b->Iterations(1)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
}
BENCHMARK(BM_FirstCalls)
    ->ArgsProduct({{0, 1}, {1, 10, 30, 100}})
    ->ArgNames({"tiered", "calls"})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CompileParams)->Apply([](auto* b) { sizes(b, 250, 4000); });
BENCHMARK(BM_CompileTerms)->Apply([](auto* b) { sizes(b, 1000, 64000); });
BENCHMARK(BM_CompileChain)->Apply([](auto* b) { sizes(b, 1000, 64000); });
BENCHMARK(BM_CompileComps)->Apply([](auto* b) { sizes(b, 1000, 16000); });
BENCHMARK_CAPTURE(BM_CompileSample, gmm, "adbench/gmm.slope", "gmm")
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();
BENCHMARK_CAPTURE(BM_CompileSample, lstm, "adbench/lstm.slope", "lstm")
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CompileSampleFull, gmm, "adbench/gmm.slope", "gmm")
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();
BENCHMARK_CAPTURE(BM_CompileSampleFull, lstm, "adbench/lstm.slope", "lstm")
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMillisecond);
// The samples at the other opt levels (named apart, so that filters on "Sample" time the
// default only).
void BM_CompileAtLevel(benchmark::State& st, const char* file, const char* fn) {
  compileSample(st, file, fn, static_cast<int>(st.range(0)), false);
}
BENCHMARK_CAPTURE(BM_CompileAtLevel, gmm, "adbench/gmm.slope", "gmm")
    ->DenseRange(0, 3)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();
BENCHMARK_CAPTURE(BM_CompileAtLevel, lstm, "adbench/lstm.slope", "lstm")
    ->DenseRange(0, 3)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();

/// The console reporter, plus a least-squares fit of log(time) against log(N) per family
/// (every run of a family with a size; the median where there are repetitions' aggregates).
/// CPU time, of the whole process (code generation runs on up to Options::threads threads,
/// docs/architecture.md "JIT"): on a shared machine wall time also counts the time other
/// processes held the cores.
class FitReporter : public benchmark::ConsoleReporter {
public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.complexity_n <= 0) continue;
      bool aggregate = r.run_type == Run::RT_Aggregate;
      if (aggregate && r.aggregate_name != "median") continue;
      std::string family = r.run_name.function_name;
      auto& pts = aggregate ? medians_[family] : singles_[family];
      pts[r.complexity_n] = r.GetAdjustedCPUTime();
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    for (auto* m : {&medians_, &singles_}) {
      for (const auto& [family, pts] : *m) {
        if (m == &singles_ && medians_.count(family)) continue;
        if (pts.size() < 2) continue;
        double sx = 0, sy = 0, sxx = 0, sxy = 0, k = static_cast<double>(pts.size());
        for (const auto& [n, t] : pts) {
          double x = std::log(static_cast<double>(n)), y = std::log(t);
          sx += x, sy += y, sxx += x * x, sxy += x * y;
        }
        double slope = (k * sxy - sx * sy) / (k * sxx - sx * sx);
        std::printf("%-20s fitted exponent %.2f over N = %lld..%lld (%zu sizes)\n", family.c_str(),
                    slope, static_cast<long long>(pts.begin()->first),
                    static_cast<long long>(pts.rbegin()->first), pts.size());
      }
    }
  }

private:
  std::map<std::string, std::map<int64_t, double>> medians_, singles_;
};

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  FitReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
