// The finite-difference checker itself: it must pass correct gradients of large, badly
// scaled functions (no crying wolf) and still fail wrong ones.
#include "compiler/codegen/execute.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace slope {
namespace {

const char* kRosenbrock = R"(fn rosen(x: f64[n]) -> f64 {
    sum[i: n - 1](100 * (x[i + 1] - x[i]^2)^2 + (1 - x[i])^2)
}
fn logs(x: f64[n]) -> f64 {
    sum[i](log(x[i]))
}
)";

ir::Function load(const char* name) {
  static auto p = Program::fromString("rosen.slope", kRosenbrock);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p->forward(name);
}

JitRunner& jit() {
  static JitRunner r;
  return r;
}

TEST(GradCheck, LargeRosenbrockPasses) {
  ir::Function f = load("rosen");
  for (int64_t n : {3000, 20000}) {
    auto args = randomArgs(f, {{"n", n}}, 1);
    GradCheckResult r = checkGradient(f, args, {}, &jit());
    ASSERT_EQ(r.params.size(), 1u);
    EXPECT_TRUE(r.passed) << "n = " << n << ": max_rel_err " << r.params[0].maxRelErr;
    EXPECT_EQ(r.params[0].elements, n);
    EXPECT_EQ(r.params[0].checked, 1000); // a random subset, reported
  }
}

TEST(GradCheck, WrongGradientsStillFail) {
  ir::Function f = load("rosen");
  auto args = randomArgs(f, {{"n", 3000}}, 2);
  GradCheckOptions o;
  o.maxElements = 3000; // every element, so the one made wrong is among them
  // One element off by 0.1 %.
  o.adjustGradient = [](std::vector<Tensor>& g) { g[0].setF(1234, g[0].getF(1234) * 1.001); };
  EXPECT_FALSE(checkGradient(f, args, o, &jit()).passed);
  // Every element off by 1e-4 relative, on the default random subset of a larger input.
  GradCheckOptions all;
  all.adjustGradient = [](std::vector<Tensor>& g) {
    for (int64_t i = 0; i < g[0].numel(); ++i)
      g[0].setF(i, g[0].getF(i) * (1 + 1e-4));
  };
  auto big = randomArgs(f, {{"n", 20000}}, 3);
  EXPECT_FALSE(checkGradient(f, big, all, &jit()).passed);
  // The same inputs unchanged pass (the failure above is the perturbation's).
  EXPECT_TRUE(checkGradient(f, big, {}, &jit()).passed);
  // A fixed step (--step) still catches a wrong sign.
  GradCheckOptions step;
  step.step = 1e-6;
  step.adjustGradient = [](std::vector<Tensor>& g) { g[0].setF(0, -g[0].getF(0) + 1); };
  step.maxElements = 10;
  EXPECT_FALSE(checkGradient(f, randomArgs(f, {{"n", 10}}, 4), step, &jit()).passed);
}

TEST(GradCheck, MaxElementsAndStep) {
  ir::Function f = load("rosen");
  auto args = randomArgs(f, {{"n", 50}}, 5);
  GradCheckOptions o;
  o.maxElements = 7;
  o.step = 1e-5;
  GradCheckResult r = checkGradient(f, args, o, &jit());
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.params[0].checked, 7);
  EXPECT_EQ(r.params[0].elements, 50);
}

TEST(GradCheck, NotFiniteSaysWhyAndRedraws) {
  ir::Function f = load("logs");
  Tensor x(DType::F64, {3});
  x.setF(0, 1);
  x.setF(1, -2);
  x.setF(2, 3);
  GradCheckResult r = checkGradient(f, {x}, {}, &jit());
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.notFinite, "the value is NaN");
  // Random draws: some have a negative element and are discarded, counted by reason.
  DrawnCheck d = checkDrawn(f, {std::nullopt}, {{"n", 3}}, {}, &jit());
  EXPECT_TRUE(d.result.passed) << d.result.notFinite;
  EXPECT_GT(d.draws, 1);
  ASSERT_EQ(d.discarded.size(), 1u);
  EXPECT_EQ(d.discarded.begin()->first, "the value is NaN");
  EXPECT_EQ(d.discarded.begin()->second, d.draws - 1);
  // Every input given and not finite: one draw, the reason, no comparison.
  DrawnCheck g = checkDrawn(f, {x}, {}, {}, &jit());
  EXPECT_EQ(g.draws, 1);
  EXPECT_FALSE(g.result.passed);
  EXPECT_TRUE(g.result.params.empty());
}

} // namespace
} // namespace slope
