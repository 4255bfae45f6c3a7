// Loops with state whose cost must stay linear in the trip count (issue 11, item 7).
// 1. A trajectory written row by row, M[t] = tanh(W @ M[t - 1] + ...), reads row t - 1 of M
//    itself: no copy of the whole M per step, in the function or in its gradient.
// 2. Checkpointing such a trajectory keeps the rows it overwrites (its undo log, one state's
//    worth over the whole loop) instead of copying all of M per checkpoint, so it costs a
//    small multiple of the plain gradient; a memory budget below one state is an error that
//    says the state's size, not a single slot that recomputes T^2 / 2 steps.
// The gradients stay exact: finite differences agree, and every schedule gives the plain
// gradient bit for bit on both backends.

#include "checkpoint_budget.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "slope/slope.hpp"

#include <gtest/gtest.h>

namespace slope {
namespace {

// The user's program from the issue.
const char* kTrajectory = R"(fn f(W: f64[h, h], xs: f64[T, h], m0: f64[h]) -> f64 {
    var M = zeros(f64[T + 1, h]);
    M[0] = m0;
    for t in 1..T + 1 {
        M[t] = tanh(W @ M[t - 1] + xs[t - 1]);
    }
    sum(M)
})";

// Reads the row it writes (after writing it once): that row is copied, not all of M.
const char* kOwnRow = R"(fn f(W: f64[h, h], xs: f64[T, h], m0: f64[h]) -> f64 {
    var M = zeros(f64[T + 1, h]);
    M[0] = m0;
    for t in 1..T + 1 {
        M[t] = M[t - 1] + xs[t - 1];
        M[t] = tanh(W @ M[t]) * 0.5 + M[t - 1] * 0.25;
    }
    sum(M * M)
})";

// A trajectory next to a state that is overwritten every step (kept by snapshots), and an
// element write per step.
const char* kWithState = R"(fn f(W: f64[h, h], xs: f64[T, h], m0: f64[h]) -> f64 {
    var s = m0;
    var M = zeros(f64[T, h]);
    var peak = zeros(f64[T]);
    for t in 0..T {
        s = tanh(W @ s + xs[t]);
        M[t] = s * s + M[t];
        peak[t] = max(s) * sum(M[t]);
    }
    sum(M) + sum(s) + sum(peak)
})";

// Two writes of the same row per step around a state: the row's undo log keeps what the step
// started with (once), the state s and the scalar c are snapshots.
const char* kTwoWrites = R"(fn f(W: f64[h, h], xs: f64[T, h], m0: f64[h]) -> f64 {
    var s = m0;
    var M = zeros(f64[T, h]);
    var c = 0.0;
    for t in 0..T {
        M[t] = s;
        s = tanh(W @ M[t] + xs[t]) * (1.0 + c);
        c = c * 0.5 + sum(M[t]) * 0.01;
        M[t] = M[t] * s;
    }
    sum(M * M) + sum(s) + c
})";

const char* const kPrograms[] = {kTrajectory, kOwnRow, kWithState, kTwoWrites};

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
  if (o.checkpoint) return "checkpoint " + std::to_string(o.checkpoint);
  return "plain";
}

std::unique_ptr<Program> compile(const char* src) {
  auto p = Program::fromString("loop.slope", src);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p;
}

struct Ops {
  int64_t forward = 0, gradient = 0;
};
Ops countOps(const Program& p, int64_t T, int64_t h, const GradOptions& o = {}) {
  ir::Function f = p.forward("f");
  auto args = randomArgs(f, {{"T", T}, {"h", h}}, 1);
  Ops n;
  evaluate(f, args, &n.forward);
  evaluate(p.gradient("f", {}, o), args, &n.gradient);
  return n;
}

TEST(LoopStateCost, TrajectoryOpsGrowLinearlyInTheTripCount) {
  for (const char* src : kPrograms) {
    auto p = compile(src);
    Ops a = countOps(*p, 200, 8), b = countOps(*p, 400, 8);
    // Twice the steps: twice the work (a whole-M copy per step made it four times).
    EXPECT_LT(static_cast<double>(b.forward) / static_cast<double>(a.forward), 2.5)
        << a.forward << " -> " << b.forward << "\n"
        << src;
    EXPECT_LT(static_cast<double>(b.gradient) / static_cast<double>(a.gradient), 2.5)
        << a.gradient << " -> " << b.gradient << "\n"
        << src;
  }
}

TEST(LoopStateCost, CheckpointingATrajectoryCostsASmallMultipleOfThePlainGradient) {
  for (const char* src : kPrograms) {
    auto p = compile(src);
    const int64_t T = 1000, h = 8;
    const int64_t plain = countOps(*p, T, h).gradient;
    // One state: what the budget error states for a budget of 1 byte.
    int64_t state = -1;
    try {
      countOps(*p, T, h, memory(1));
    } catch (const EvalError& e) {
      state = statedStateBytes(e.what());
    }
    ASSERT_GT(state, 0) << src;
    // kWithState's s is a snapshot state of 64 bytes (kTwoWrites': 72): a budget of one state
    // holds one snapshot (Revolve with one slot: T^2 / 2 steps, as asked), 4 KiB more hold 56.
    std::vector<GradOptions> schedules = {uniform(-1), uniform(30), memory(state + 4096),
                                          memory(1 << 24)};
    if (src != kWithState && src != kTwoWrites) schedules.push_back(memory(state));
    for (const GradOptions& o : schedules) {
      int64_t ops = countOps(*p, T, h, o).gradient;
      EXPECT_LT(ops, 4 * plain) << describe(o) << ": " << ops << " ops, plain " << plain << "\n"
                                << src;
    }
  }
}

TEST(LoopStateCost, GradientsAreExactUnderEverySchedule) {
  JitRunner jit;
  const std::vector<int64_t> trips = {1, 2, 3, 7, 20};
  for (const char* src : kPrograms) {
    auto p = compile(src);
    ir::Function f = p->forward("f");
    std::vector<std::vector<Tensor>> args, plain;
    for (int64_t T : trips) {
      args.push_back(randomArgs(f, {{"T", T}, {"h", 3}}, static_cast<uint64_t>(T)));
      plain.push_back(evaluate(p->gradient("f", {}, {}), args.back()));
      // Finite differences: the plain gradient, and with exactly one state's budget.
      GradCheckOptions one;
      one.grad = budgetOfAtLeastOneState(*p, "f", args.back(), 1);
      for (const GradCheckOptions& co : {GradCheckOptions{}, one})
        for (const auto& pc : checkGradient(f, args.back(), co).params)
          EXPECT_TRUE(pc.passed) << "T " << T << " " << describe(co.grad) << " param " << pc.name
                                 << " max_rel_err " << pc.maxRelErr << "\n"
                                 << src;
    }
    auto expectPlain = [&](size_t n, const std::vector<Tensor>& r, const std::string& what) {
      ASSERT_EQ(plain[n].size(), r.size()) << what;
      for (size_t k = 0; k < r.size(); ++k)
        for (int64_t i = 0; i < r[k].numel(); ++i)
          EXPECT_EQ(plain[n][k].getF(i), r[k].getF(i))
              << what << " T " << trips[n] << " result " << k << " element " << i << "\n"
              << src;
    };
    // Every schedule, bit for bit, on both backends (one compiled gradient for every T).
    for (const GradOptions& o : {uniform(1), uniform(2), uniform(3), uniform(-1), revolve(1),
                                 revolve(2), revolve(5), revolve(100), memory(1 << 20)}) {
      ir::Function g = p->gradient("f", {}, o);
      Runnable compiled = jit.prepare(g);
      for (size_t n = 0; n < trips.size(); ++n) {
        expectPlain(n, evaluate(g, args[n]), describe(o) + " (evaluator)");
        expectPlain(n, compiled(args[n]), describe(o) + " (JIT)");
      }
    }
    // Budgets of one state and a little more (the state grows with T).
    for (size_t n = 0; n < trips.size(); ++n) {
      GradOptions one = budgetOfAtLeastOneState(*p, "f", args[n], 1);
      for (const GradOptions& o : {one, memory(one.memory + 50)})
        expectPlain(n, evaluate(p->gradient("f", {}, o), args[n]), describe(o));
    }
  }
}

// The issue's sizes: T = 2000, h = 8 has 2000 rows of 8 f64 (and a row number each) to keep:
// 144000 bytes. A budget of 4 KiB cannot hold them; T = 20000 with 64 KiB used to run for
// minutes with one slot and no warning.
TEST(CheckpointBudget, BelowOneStateIsAnErrorThatSaysTheStateSize) {
  auto p = compile(kTrajectory);
  ir::Function f = p->forward("f");
  JitRunner jit;
  for (auto [T, budget] : {std::pair<int64_t, int64_t>{2000, 4096}, {20000, 65536}}) {
    auto args = randomArgs(f, {{"T", T}, {"h", 8}}, 1);
    ir::Function g = p->gradient("f", {}, memory(budget));
    const std::string state = std::to_string(T * (8 * 8 + 8)) + " bytes";
    for (int backend = 0; backend < 2; ++backend) {
      try {
        if (backend == 0)
          evaluate(g, args);
        else
          jit.prepare(g)(args);
        ADD_FAILURE() << "no error at T " << T << " backend " << backend;
      } catch (const EvalError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("checkpoint memory budget of " + std::to_string(budget) + " bytes"),
                  std::string::npos)
            << m;
        EXPECT_NE(m.find("one state of this loop, " + state), std::string::npos) << m;
        // At the loop: `for t in 1..T + 1`.
        EXPECT_EQ(std::string(kTrajectory).substr(e.where.begin, 3), "for") << m;
      }
    }
  }
  // Exactly one state is enough.
  auto args = randomArgs(f, {{"T", 50}, {"h", 8}}, 1);
  auto plain = evaluate(p->gradient("f", {}, {}), args);
  auto fits = evaluate(p->gradient("f", {}, memory(50 * 72)), args);
  for (size_t k = 0; k < plain.size(); ++k)
    for (int64_t i = 0; i < plain[k].numel(); ++i)
      EXPECT_EQ(plain[k].getF(i), fits[k].getF(i));
}

TEST(CheckpointBudget, ThePublicApiThrows) {
  slope::Options o;
  o.checkpoint_memory = 1000;
  slope::Module m = slope::compile_string(kTrajectory, "<string>", o);
  const int64_t T = 100, h = 2;
  std::vector<double> W(h * h, 0.5), xs(T * h, 0.1), m0(h, 0.2), gW(h * h), gxs(T * h), gm0(h);
  auto call = [&] {
    return m.gradient("f")(slope::View(W.data(), {h, h}), slope::View(xs.data(), {T, h}),
                           slope::View(m0.data(), {h}), slope::View(gW.data(), {h, h}),
                           slope::View(gxs.data(), {T, h}), slope::View(gm0.data(), {h}));
  };
  try {
    call();
    ADD_FAILURE() << "no error";
  } catch (const slope::RuntimeError& e) {
    // 100 rows of 2 f64 and a row number: 2400 bytes.
    EXPECT_NE(std::string(e.what()).find("one state of this loop, 2400 bytes"), std::string::npos)
        << e.what();
  }
  o.checkpoint_memory = 2400;
  slope::Module fits = slope::compile_string(kTrajectory, "<string>", o);
  std::vector<double> plain(h * h);
  slope::compile_string(kTrajectory)
      .gradient("f")(slope::View(W.data(), {h, h}), slope::View(xs.data(), {T, h}),
                     slope::View(m0.data(), {h}), slope::View(plain.data(), {h, h}),
                     slope::View(gxs.data(), {T, h}), slope::View(gm0.data(), {h}));
  fits.gradient("f")(slope::View(W.data(), {h, h}), slope::View(xs.data(), {T, h}),
                     slope::View(m0.data(), {h}), slope::View(gW.data(), {h, h}),
                     slope::View(gxs.data(), {T, h}), slope::View(gm0.data(), {h}));
  EXPECT_EQ(gW, plain);
}

} // namespace
} // namespace slope
