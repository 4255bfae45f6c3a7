// Sum factorisation of the adjoint's scatters (compiler/simplify/factor.hpp): the factored
// gradient computes what the unfactored one does, to rounding (it reassociates a sum over the
// data points), on the programs where the rewrite applies, and leaves alone those where it
// must not (a factor or a trip count that depends on the point).
#include "compiler/simplify/factor.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/simplify/simplify.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace slope {
namespace {

const char* kSource = R"(
fn shift(x: f64[n, d], m: f64[d], L: f64[d, d]) -> f64 {
    let y[i, j] = sum[c](L[j, c] * (x[i, c] - m[c]));
    sum(sin(y))
}

fn plain(x: f64[n, d], L: f64[e, d]) -> f64 {
    let y[i, j] = sum[c](L[j, c] * x[i, c]);
    sum(sin(y))
}

fn ragged(x: f64[n, n], m: f64[n], L: f64[e, n]) -> f64 {
    let y[i, j] = sum[c: i](L[j, c] * (x[i, c] - m[c]));
    sum(sin(y))
}

fn squares(x: f64[n, d], m: f64[d], L: f64[d, e]) -> f64 {
    let y[i, j] = sum[c](L[j, c * c] * (x[i, c] - m[c]));
    sum(sin(y))
}

fn later(x: f64[n, d], m: f64[d], L: f64[d, e]) -> f64 {
    let y[i: n - 1, j: d] = sum[c: d](L[j, c * c] * (x[i + 1, c] - m[c]));
    sum(sin(y))
}
)";

struct Case {
  const char* name;
  const char* file; // empty: kSource
  const char* fn;
  bool factors; // whether the rewrite applies
  std::map<std::string, int64_t> sizes;
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
  return os << c.fn;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"shift", "", "shift", true, {{"n", 5}, {"d", 4}}},
      {"shift_one_point", "", "shift", true, {{"n", 1}, {"d", 4}}},
      {"squares", "", "squares", true, {{"n", 3}, {"d", 3}, {"e", 5}}},
      // The subscript c * c is checked on every read: with no points (n - 1 = 0) nothing reads
      // it, before or after the rewrite (e = 2 is too small for c = 2).
      {"later_no_points", "", "later", true, {{"n", 1}, {"d", 3}, {"e", 2}}},
      {"later", "", "later", true, {{"n", 4}, {"d", 3}, {"e", 5}}},
      // The product's other factor is a point's own: nothing to factor.
      {"plain", "", "plain", false, {{"n", 5}, {"d", 4}, {"e", 3}}},
      // The triangle's length is the point's index: the trip counts differ from point to point.
      {"ragged", "", "ragged", false, {{"n", 5}, {"e", 3}}},
      {"gmm", "samples/adbench/gmm.slope", "gmm", true, {{"n", 4}, {"K", 3}, {"d", 3}, {"T", 6}}},
      {"gmm_one_point",
       "samples/adbench/gmm.slope",
       "gmm",
       true,
       {{"n", 1}, {"K", 2}, {"d", 4}, {"T", 10}}},
  };
  return all;
}

class FactorScatters : public ::testing::TestWithParam<Case> {};

TEST_P(FactorScatters, SameGradientToRounding) {
  const Case& c = GetParam();
  std::string path = c.file[0] ? std::string(SLOPE_SOURCE_DIR) + "/" + c.file : "";
  auto prog = path.empty() ? Program::fromString("factor", kSource) : Program::fromFile(path);
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function g = differentiate(prog->forward(c.fn), {});
  simplify(g);
  ir::Function factored = g;
  ASSERT_EQ(factorScatters(factored), c.factors) << ir::print(factored);
  if (!c.factors) return;
  simplify(factored);
  ASSERT_EQ(ir::scopeError(factored), "");
  // The guard of the moved part: only where the first extent may be 0.
  EXPECT_EQ(ir::print(factored).find("if ") != std::string::npos, std::string(c.fn) == "later")
      << ir::print(factored);
  // The pipeline's own gradient is the factored one.
  ir::Function returned = factored;
  returnBuffersInPlace(returned);
  EXPECT_EQ(ir::print(prog->gradient(c.fn, {})), ir::print(returned));

  std::vector<Tensor> args = randomArgs(g, c.sizes, 7);
  for (size_t k = 0; k < g.params.size(); ++k) // GMM's prior takes log(gamma)
    if (g.paramNames[k] == "gamma") args[k].setF(0, 0.5 + std::fabs(args[k].getF(0)));
  std::vector<Tensor> want = evaluate(g, args);
  codegen::JitOptions two;
  two.threads = 2; // (the sum into G runs in blocks like any other partial)
  for (const auto& [what, got] : {std::pair{"evaluator", evaluate(factored, args)},
                                  std::pair{"JIT", JitRunner(two).prepare(returned)(args)}}) {
    ASSERT_EQ(want.size(), got.size());
    for (size_t r = 0; r < want.size(); ++r) {
      ASSERT_EQ(want[r].numel(), got[r].numel());
      double scale = 0;
      for (int64_t e = 0; e < want[r].numel(); ++e)
        scale = std::max(scale, std::fabs(want[r].getF(e)));
      for (int64_t e = 0; e < want[r].numel(); ++e)
        EXPECT_NEAR(got[r].getF(e), want[r].getF(e), 1e-13 * std::max(scale, 1.0))
            << what << ", result " << r << " element " << e;
    }
  }
}

// A read out of range in the moved part fails the call as it did before the rewrite.
TEST(FactorScattersErrors, OutOfRangeStillFails) {
  auto prog = Program::fromString("factor", kSource);
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function g = differentiate(prog->forward("squares"), {});
  simplify(g);
  ir::Function factored = g;
  ASSERT_TRUE(factorScatters(factored));
  simplify(factored);
  std::vector<Tensor> args = randomArgs(g, {{"n", 2}, {"d", 3}, {"e", 2}}, 3);
  EXPECT_ANY_THROW(evaluate(g, args));
  EXPECT_ANY_THROW(evaluate(factored, args));
}

INSTANTIATE_TEST_SUITE_P(Cases, FactorScatters, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

} // namespace
} // namespace slope
