// Checkpointing loops with state: the same gradient (bit for bit) with and without it, on both
// backends and under every schedule; tape memory that grows like the square root of the trip
// count (uniform spacing) or stays within a byte budget whatever the trip count (binomial);
// and binomial recomputation close to Revolve's bound.

#include "checkpoint_budget.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "grad_cases.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace slope {
namespace {

const char* kRnn = R"(fn f(W: f64[h, h], xs: f64[T, h], h0: f64[h]) -> f64 {
    var s = h0;
    var steps = 0;
    for t in 0..T {
        s = tanh(W @ s * 0.5 + xs[t]);
        steps = steps + 1;
    }
    sum(s) * f64(steps)
})";

GradOptions uniform(int every) {
  GradOptions o;
  o.checkpoint = every;
  return o;
}
GradOptions revolve(int64_t snapshots) {
  GradOptions o;
  o.snapshots = snapshots;
  return o;
}
GradOptions memory(int64_t bytes) {
  GradOptions o;
  o.memory = bytes;
  return o;
}
std::string describe(const GradOptions& o) {
  if (o.snapshots) return "revolve:" + std::to_string(o.snapshots);
  if (o.memory) return "memory:" + std::to_string(o.memory);
  return "checkpoint " + std::to_string(o.checkpoint);
}

int64_t tapePeak(const Program& p, const GradOptions& o, int64_t T) {
  ir::Function g = p.gradient("f", {}, o);
  std::map<std::string, int64_t> sizes{{"h", 4}, {"T", T}};
  g.deriveSizes(sizes);
  return ir::peakBufferBytes(g, sizes);
}
int64_t tapePeak(const Program& p, int checkpoint, int64_t T) {
  return tapePeak(p, uniform(checkpoint), T);
}

/// Revolve's bound: the fewest forward steps that reverse l steps holding s states,
/// r l - C(s + r, r - 1), with r the least such that C(s + r, s) >= l (the forward sweep to the
/// last step included).
int64_t revolveBound(int64_t l, int64_t s) {
  auto choose = [](int64_t n, int64_t k) {
    double c = 1;
    for (int64_t i = 1; i <= k; ++i)
      c = c * static_cast<double>(n - k + i) / static_cast<double>(i);
    return static_cast<int64_t>(c + 0.5);
  };
  int64_t r = 0;
  while (choose(s + r, s) < l)
    ++r;
  return r == 0 ? 0 : r * l - choose(s + r, r - 1);
}

void expectSame(const std::vector<Tensor>& a, const std::vector<Tensor>& b,
                const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t k = 0; k < a.size(); ++k)
    for (int64_t i = 0; i < a[k].numel(); ++i)
      EXPECT_EQ(a[k].getF(i), b[k].getF(i)) << what << " result " << k << " element " << i;
}

TEST(Checkpoint, SameGradientOnBothBackends) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  ir::Function f = p->forward("f");
  JitRunner jit;
  const GradOptions schedules[] = {uniform(1), uniform(4), uniform(7),   uniform(-1), revolve(1),
                                   revolve(2), revolve(3), revolve(100), memory(40),  memory(200)};
  for (int64_t T : {1, 7, 30}) {
    auto args = randomArgs(f, {{"h", 4}, {"T", T}}, 3);
    auto plain = evaluate(p->gradient("f", {}, 0), args);
    for (const GradOptions& o : schedules) {
      std::string what = "T " + std::to_string(T) + " " + describe(o);
      expectSame(plain, evaluate(p->gradient("f", {}, o), args), what + " (evaluator)");
      expectSame(plain, jit.prepare(p->gradient("f", {}, o))(args), what + " (JIT)");
    }
  }
}

// Every loop of the gradient table (nested loops, row and element writes, data-dependent
// bounds, branches) under each schedule: the gradient does not change by a bit.
TEST(Checkpoint, EveryLoopCaseUnderEverySchedule) {
  JitRunner jit;
  for (const Case& c : kLoopCases) {
    auto p = Program::fromString(std::string(c.name) + ".slope", instantiate(c.source, "f64"));
    ASSERT_TRUE(p->ok()) << p->diagnostics();
    ir::Function f = p->forward("f");
    auto args = randomArgs(f, {{"n", 6}, {"m", 3}, {"l", 2}, {"h", 2}, {"d", 2}}, 1);
    auto plain = evaluate(p->gradient("f", {}, 0), args);
    for (const GradOptions& o : {uniform(-1), uniform(2), revolve(1), revolve(3),
                                 budgetOfAtLeastOneState(*p, "f", args, 64)}) {
      std::string what = std::string(c.name) + " " + describe(o);
      expectSame(plain, evaluate(p->gradient("f", {}, o), args), what + " (evaluator)");
      expectSame(plain, jit.prepare(p->gradient("f", {}, o))(args), what + " (JIT)");
    }
  }
}

TEST(Checkpoint, TapeMemoryGrowsLikeTheSquareRoot) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok());
  int64_t plain100 = tapePeak(*p, 0, 100), plain1600 = tapePeak(*p, 0, 1600);
  int64_t sqrt100 = tapePeak(*p, -1, 100), sqrt1600 = tapePeak(*p, -1, 1600);
  // 16 times the steps: 16 times the tape without checkpoints, about 4 times with sqrt spacing.
  EXPECT_GT(static_cast<double>(plain1600) / static_cast<double>(plain100), 12.0);
  EXPECT_LT(static_cast<double>(sqrt1600) / static_cast<double>(sqrt100), 5.0);
  EXPECT_LT(sqrt1600 * 8, plain1600);
  // A fixed spacing of 40 at 1600 steps: 40 checkpoints and one 40-step segment.
  EXPECT_LT(tapePeak(*p, 40, 1600) * 8, plain1600);
}

// A byte budget bounds the snapshots whatever the trip count: kRnn's state is s, 4 f64 or 32
// bytes (the counter `steps` only ever has 1 added, so the reverse sweep never needs it and
// it is not kept), so 400 bytes hold 12 states.
TEST(Checkpoint, BinomialTapeStaysWithinTheBudget) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok());
  const int64_t state = 32, budget = 400, slots = budget / state;
  for (int64_t T : {100, 1600, 25600}) {
    int64_t peak = tapePeak(*p, memory(budget), T);
    // Over one kept state (revolve:1): at most the rest of the budget, and a step number per
    // further slot.
    int64_t extra = peak - tapePeak(*p, revolve(1), T);
    EXPECT_LE(extra, budget - state + (slots - 1) * 8) << "T " << T;
    EXPECT_GT(extra, 0) << "T " << T;
    EXPECT_EQ(peak, tapePeak(*p, memory(budget), 100)) << "T " << T;
  }
  // Fewer steps than slots: one slot per step, no more.
  EXPECT_EQ(tapePeak(*p, revolve(1000), 5), tapePeak(*p, revolve(5), 5));
  EXPECT_LT(tapePeak(*p, revolve(10), 25600) * 100, tapePeak(*p, 0, 25600));
}

// Revolve's schedule is followed, not just some schedule with S slots. The evaluator's op
// counts give the forward steps run between reversals: a single slot runs exactly
// T(T-1)/2 of them (every step from the start), which prices one step; S >= T slots run none.
// With 2 to 20 slots the count must be Revolve's minimum (revolveBound) to within 5 %.
TEST(Checkpoint, BinomialRecomputesAsLittleAsRevolve) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok());
  ir::Function f = p->forward("f");
  const int64_t T = 200;
  auto args = randomArgs(f, {{"h", 4}, {"T", T}}, 2);
  auto ops = [&](const GradOptions& o) {
    int64_t n = 0;
    evaluate(p->gradient("f", {}, o), args, &n);
    return static_cast<double>(n);
  };
  double none = ops(revolve(T)), step = (ops(revolve(1)) - none) / (T * (T - 1) / 2.0);
  for (int64_t S : {2, 5, 10, 20}) {
    double advances = (ops(revolve(S)) - none) / step;
    double bound = static_cast<double>(revolveBound(T, S) - (T - 1)); // less the forward sweep
    EXPECT_NEAR(advances / bound, 1.0, 0.05) << "S " << S << ": " << advances << " vs " << bound;
  }
}

// The tape holds what the reverse sweep needs: a tensor that a loop only adds terms to is not
// kept per iteration (its value enters no derivative), one that is multiplied is.
TEST(Tape, HoldsOnlyWhatTheReverseSweepNeeds) {
  auto peak = [](const char* body) {
    std::string src = std::string("fn f(A: f64[n, m], x: f64[n]) -> f64 { var acc = zeros(f64[m]); "
                                  "var s = 1.0; for t in 0..n { ") +
                      body + " s = s * 0.9 + x[t] * x[t]; } sum(acc * acc) + s }";
    auto p = Program::fromString("acc.slope", src);
    EXPECT_TRUE(p->ok()) << p->diagnostics();
    ir::Function g = p->gradient("f", {});
    std::map<std::string, int64_t> sizes{{"n", 1000}, {"m", 100}};
    return ir::peakBufferBytes(g, sizes);
  };
  const int64_t perIteration = 100 * 8; // acc, were it kept for each of the 1000 iterations
  EXPECT_LT(peak("acc = acc + A[t] * s;"), 1000 * perIteration / 10);
  EXPECT_LT(peak("acc = acc * 0.5 - A[t] / 2.0;"), 1000 * perIteration / 10); // scalings too
  EXPECT_GE(peak("acc = acc * A[t] + s;"), 1000 * perIteration);              // a product
  EXPECT_GE(peak("acc = sin(acc) + s;"), 1000 * perIteration);                // a sine
}

// A loop that writes one row of a matrix per step keeps the rows it overwrites, not the
// matrix: the tape of a trajectory is as large as the trajectory, not T times larger.
TEST(Tape, RowWritesKeepTheRowsTheyOverwrite) {
  auto p = Program::fromString(
      "traj.slope", "fn f(x: f64[n, m]) -> f64 { var M = x; for t in 1..n { M[t] = tanh(M[t - 1]) "
                    "+ M[t] * 0.5; } sum(M) }");
  ASSERT_TRUE(p->ok());
  ir::Function g = p->gradient("f", {});
  std::map<std::string, int64_t> sizes{{"n", 1000}, {"m", 100}};
  EXPECT_LT(ir::peakBufferBytes(g, sizes), 10 * 1000 * 100 * 8); // whole-matrix copies: 800 MB
}

TEST(Checkpoint, FiniteDifferencesAgree) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok());
  ir::Function f = p->forward("f");
  GradCheckOptions o;
  o.grad.checkpoint = -1;
  auto r = checkGradient(f, randomArgs(f, {{"h", 3}, {"T", 10}}, 5), o);
  EXPECT_TRUE(r.passed);
  o.grad = revolve(2);
  EXPECT_TRUE(checkGradient(f, randomArgs(f, {{"h", 3}, {"T", 10}}, 5), o).passed);
}

// A logsumexp whose body the gradient tapes (a store per element) inside a loop with state: the
// gradient's value is the function's, with or without checkpointing, on both backends. The
// backends once summed a taped body in one pass and an untaped one in two, so the plain
// gradient (taped) and the checkpointed one (recomputed, untaped) differed by 2 ulps in f32
// (random program seed 12359, shrunk).
TEST(Checkpoint, TapedLogsumexpKeepsTheFunctionsValue) {
  auto p = Program::fromString("lse.slope", R"(fn f(y: f32[n], A: f32[m, n]) -> f32 {
    var w1 = ones(f32[m]);
    for t2 in 0..m {
        w1[0] = logsumexp(log(1.5 + ((1 + A^2)^-1)^2));
    }
    mean(w1)
})");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  ir::Function f = p->forward("f");
  JitRunner jit;
  for (const GradOptions& o : {GradOptions{}, memory(64), uniform(1), revolve(1)}) {
    ir::Function g = p->gradient("f", {}, o);
    auto compiled = jit.prepare(g);
    for (uint64_t seed = 1; seed <= 200; ++seed) {
      auto args = randomArgs(f, {{"n", 2}, {"m", 3}}, seed);
      double value = evaluate(f, args)[0].getF(0);
      std::string what = "seed " + std::to_string(seed) + " " + describe(o);
      ASSERT_EQ(evaluate(g, args)[0].getF(0), value) << what << " (evaluator)";
      ASSERT_EQ(compiled(args)[0].getF(0), value) << what << " (JIT)";
    }
  }
}

} // namespace
} // namespace slope
