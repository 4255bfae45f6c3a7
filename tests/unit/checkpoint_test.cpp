// Checkpointing loops with state: the same gradient (bit for bit) with and without it, on both
// backends, and tape memory that grows like the square root of the trip count instead of
// linearly.

#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

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

int64_t tapePeak(const Program& p, int checkpoint, int64_t T) {
  ir::Function g = p.gradient("f", {}, checkpoint);
  std::map<std::string, int64_t> sizes{{"h", 4}, {"T", T}};
  g.deriveSizes(sizes);
  return ir::peakBufferBytes(g, sizes);
}

TEST(Checkpoint, SameGradientOnBothBackends) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  ir::Function f = p->forward("f");
  JitRunner jit;
  for (int64_t T : {1, 7, 30}) {
    auto args = randomArgs(f, {{"h", 4}, {"T", T}}, 3);
    auto plain = evaluate(p->gradient("f", {}, 0), args);
    for (int cp : {1, 4, 7, -1}) {
      auto interp = evaluate(p->gradient("f", {}, cp), args);
      auto compiled = jit.prepare(p->gradient("f", {}, cp))(args);
      for (size_t k = 0; k < plain.size(); ++k)
        for (int64_t i = 0; i < plain[k].numel(); ++i) {
          EXPECT_EQ(plain[k].getF(i), interp[k].getF(i)) << "T " << T << " checkpoint " << cp;
          EXPECT_EQ(plain[k].getF(i), compiled[k].getF(i)) << "T " << T << " checkpoint " << cp;
        }
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

TEST(Checkpoint, FiniteDifferencesAgree) {
  auto p = Program::fromString("rnn.slope", kRnn);
  ASSERT_TRUE(p->ok());
  ir::Function f = p->forward("f");
  GradCheckOptions o;
  o.checkpoint = -1;
  auto r = checkGradient(f, randomArgs(f, {{"h", 3}, {"T", 10}}, 5), o);
  EXPECT_TRUE(r.passed);
}

} // namespace
} // namespace slope
