// Instruction counts of one call, under callgrind: deterministic where wall-clock time on a
// shared machine is not. Only the call itself is counted (JIT compilation is not).
//
//   valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null
//            build/bench/slope_instructions WHAT
//   WHAT: mixture-forward | mixture-gradient | mixture-forward-hand | mixture-gradient-hand
//         | lstm-objective | lstm-gradient[-sqrt | -revolve64k]
//         | lstm-hand-objective | lstm-hand-gradient
//         | gmm-objective | gmm-gradient | gmm-hand-objective | gmm-hand-gradient  [N:D:K [LEVEL]]
//         | ba-objective | ba-jacobian | ba-jacobian-copy  [ADBENCH-BA-FILE]
//
// Uses the benchmark's mixture problem at N = 2,000 points (K = 25, D = 10) to keep callgrind
// quick; the counts scale linearly in N. The LSTM is ADBench's l = 2, c = 1024 (from
// tests/data/adbench/), with checkpointing as in bench_main.cpp; the GMM is one of
// bench/gmm_cases.hpp's sizes, by default ADBench's 10k points, d = 10, K = 25 (from
// ../shared/data/adbench/: without it, gmm-* says so and exits 77), compiled at opt level LEVEL
// (Options::opt_level, default 2). The hand-written GMM and
// LSTM are built -march=x86-64-v3 here, not -march=native as in slope_bench: valgrind runs no
// AVX-512, and under valgrind the JIT's host detection sees no AVX-512 either. BA is ADBench's
// ba1 (n = 49, m = 7776, p = 31843, from ../shared/data/adbench/; exits 77 without it) unless a
// file under ba/ is named; ba-jacobian counts a call of the sparse Jacobian refilling a first
// call's result in place (its pattern, colouring and buffers), as the benchmark times it;
// ba-jacobian-copy the same into a new result (evaluate_sparse(args, like)).
#include "../samples/adbench/ba_io.hpp"
#include "../samples/adbench/gmm_io.hpp"
#include "../samples/adbench/lstm_io.hpp"
#include "gmm_cases.hpp"
#include "lstm_hand.hpp"
#include "mixture_problem.hpp"
#include "timed.hpp"

#include <slope/slope.hpp>
#include <valgrind/callgrind.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "";
  mixture_bench::Problem p(2000, 25, 10);
  slope::Module m =
      slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/mixture.slope", timed());
  slope::Function f = m.function("mixture");
  slope::Gradient g = m.gradient("mixture");
  auto args = p.args();
  auto gargs = p.gradArgs();
  double r = 0;
  if (what.rfind("gmm-", 0) == 0) {
    // The size: N:D:K from gmm_cases.hpp's list (default ADBench's 10k points, d = 10, K = 25).
    const std::string size = argc > 2 ? argv[2] : "10000:10:25";
    const gmm_bench::Size* chosen = nullptr;
    for (const auto& s : gmm_bench::kSizes)
      if (size == std::to_string(s.n) + ":" + std::to_string(s.d) + ":" + std::to_string(s.K))
        chosen = &s;
    if (!chosen) {
      std::fprintf(stderr, "slope_instructions: no GMM size %s in bench/gmm_cases.hpp\n",
                   size.c_str());
      return 2;
    }
    adbench::GmmInput g;
    try {
      g = gmm_bench::load(*chosen, SLOPE_SOURCE_DIR);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "skipped: ADBench's GMM input is not there (%s)\n", e.what());
      return 77;
    }
    slope::Options options = timed();
    options.opt_level = argc > 3 ? std::atoi(argv[3]) : 2;
    slope::Module gm =
        slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope", options);
    slope::Function obj = gm.function("gmm");
    slope::Gradient grad = gm.gradient("gmm", {"alphas", "means", "icf"});
    (void)obj.raw(); // compile before counting
    (void)grad.raw();
    std::vector<double> da(g.alphas.size()), dm(g.means.size()), dicf(g.icf.size());
    gmm_hand::Gmm hand;
    const gmm_hand::Problem p = gmm_bench::problem(g);
    // The hand-written code's first call sizes its buffers; count a later one, as timed.
    if (what == "gmm-hand-gradient") hand.gradient(p, da.data(), dm.data(), dicf.data());
    if (what == "gmm-hand-objective") hand.objective(p);
    CALLGRIND_START_INSTRUMENTATION;
    if (what == "gmm-objective")
      r = obj(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
              slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}), g.gamma,
              g.m);
    else if (what == "gmm-gradient")
      r = grad(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
               slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {g.n, g.d}),
               g.gamma, g.m, slope::View(da.data(), {g.K}), slope::View(dm.data(), {g.K, g.d}),
               slope::View(dicf.data(), {g.K, g.t()}));
    else if (what == "gmm-hand-objective")
      r = hand.objective(p);
    else if (what == "gmm-hand-gradient")
      r = hand.gradient(p, da.data(), dm.data(), dicf.data());
    CALLGRIND_STOP_INSTRUMENTATION;
    std::printf("%s = %.17g\n", what.c_str(), r);
    return 0;
  }
  if (what.rfind("ba-", 0) == 0) {
    const std::string file = argc > 2 ? argv[2] : "ba1_n49_m7776_p31843.txt";
    adbench::BaInput b;
    try {
      b = adbench::readBa(std::string(SLOPE_SOURCE_DIR) + "/../shared/data/adbench/ba/" + file);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "skipped: ADBench's BA input is not there (%s)\n", e.what());
      return 77;
    }
    slope::Module bm =
        slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/ba.slope", timed());
    slope::Function obj = bm.function("ba");
    slope::Jacobian jac = bm.jacobian("ba", {"cams", "X", "w"});
    auto bargs = adbench::baArgs(b);
    (void)obj.raw();
    slope::SparseResult first = jac.evaluate_sparse(bargs); // the pattern, and a compile
    jac.evaluate_sparse_into(bargs, first);                 // its buffers
    // SLOPE_REPEAT=N: the call N times (a steady state for perf record, without the setup).
    const char* repeat = std::getenv("SLOPE_REPEAT");
    const int times = repeat ? std::max(1, std::atoi(repeat)) : 1;
    CALLGRIND_START_INSTRUMENTATION;
    for (int k = 0; k < times; ++k) {
      if (what == "ba-objective") {
        r = obj.call(bargs)[0].getF(0);
      } else if (what == "ba-jacobian") {
        jac.evaluate_sparse_into(bargs, first);
        r = first.values[0];
      } else if (what == "ba-jacobian-copy") {
        r = jac.evaluate_sparse(bargs, first).values[0];
      }
    }
    CALLGRIND_STOP_INSTRUMENTATION;
    std::printf("%s = %.17g\n", what.c_str(), r);
    return 0;
  }
  if (what.rfind("lstm-", 0) == 0) {
    std::string src = std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/lstm.slope";
    adbench::LstmInput s = adbench::readLstm(std::string(SLOPE_SOURCE_DIR) +
                                             "/tests/data/adbench/lstm/lstm_l2_c1024.txt");
    slope::Options o = timed();
    if (what == "lstm-gradient-sqrt") o.checkpoint = -1;
    if (what == "lstm-gradient-revolve64k") o.checkpoint_memory = 64 * 1024;
    slope::Module lm = slope::compile_file(src, o);
    slope::Function obj = lm.function("lstm");
    slope::Gradient grad = lm.gradient("lstm", {"main", "extra"});
    std::vector<double> dmain(s.main.size()), dextra(s.extra.size());
    auto largs = adbench::lstmArgs(s);
    auto gargs = adbench::lstmGradArgs(s, dmain, dextra);
    (void)grad.raw(); // compile before counting
    (void)obj.raw();
    lstm_hand::Lstm hand;
    const lstm_hand::Problem hp{
        s.l, s.c, s.b, s.main.data(), s.extra.data(), s.state.data(), s.seq.data()};
    // The hand-written code's first call sizes its buffers; count a later one, as timed.
    if (what == "lstm-hand-objective") hand.objective(hp);
    if (what == "lstm-hand-gradient") hand.gradient(hp, dmain.data(), dextra.data());
    CALLGRIND_START_INSTRUMENTATION;
    if (what == "lstm-hand-objective")
      r = hand.objective(hp);
    else if (what == "lstm-hand-gradient")
      r = hand.gradient(hp, dmain.data(), dextra.data());
    else
      r = what == "lstm-objective" ? obj.call(largs) : grad.call(gargs);
    CALLGRIND_STOP_INSTRUMENTATION;
    std::printf("%s = %.17g\n", what.c_str(), r);
    return 0;
  }
  CALLGRIND_START_INSTRUMENTATION;
  if (what == "mixture-forward")
    r = f.call(args);
  else if (what == "mixture-gradient")
    r = g.call(gargs);
  else if (what == "mixture-forward-hand")
    r = mixture_bench::forwardHand(p);
  else if (what == "mixture-gradient-hand")
    r = mixture_bench::gradientHand(p);
  else {
    CALLGRIND_STOP_INSTRUMENTATION;
    std::fprintf(stderr, "usage: slope_instructions WHAT (see the comment at the top of "
                         "bench/instructions.cpp)\n");
    return 2;
  }
  CALLGRIND_STOP_INSTRUMENTATION;
  std::printf("%s = %.17g\n", what.c_str(), r);
  return 0;
}
