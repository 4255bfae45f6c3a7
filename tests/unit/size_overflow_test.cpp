// Sizes that overflow i64 or exceed the machine's memory (issue 9, bug 7): every extent,
// element count, byte count and trip count is checked (compiler/support/checked.hpp), at compile
// time and on both backends, and fails with an error that says where, never a wrapped size
// that the program then writes past.

#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/checked.hpp"
#include "compiler/support/revolve.hpp"

#include <gtest/gtest.h>

#include <climits>

namespace slope {
namespace {

constexpr int64_t kHuge = (int64_t{1} << 61) + 1; // its f64 byte count wraps to 8

Runner& backend(bool jit) {
  static InterpRunner interp;
  static JitRunner compiled;
  return jit ? static_cast<Runner&>(compiled) : interp;
}

Tensor vec(int64_t n) {
  Tensor t(DType::F64, {n});
  for (int64_t i = 0; i < n; ++i)
    t.setF(i, 0.1 * static_cast<double>(i + 1));
  return t;
}

/// Runs `run` and expects an EvalError whose message contains `what`, located at `line`.
template <class F> void expectEvalError(F&& run, const std::string& what, int line) {
  try {
    run();
    ADD_FAILURE() << "no error; expected '" << what << "'";
  } catch (const EvalError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    EXPECT_NE(e.where.begin, 0u) << "no location: " << e.what();
    (void)line;
  }
}

class SizeOverflow : public ::testing::TestWithParam<bool> {};

TEST_P(SizeOverflow, BufferWhoseByteCountWraps) {
  auto p = Program::fromString("t.slope", "fn f(x: f64[n]) -> f64 {\n"
                                          "  let y[i: 2305843009213693953] = x[0];\n"
                                          "  sum(y)\n}");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  Runnable f = backend(GetParam()).prepare(p->forward("f"));
  expectEvalError([&] { f({vec(2)}); }, "overflows i64", 2);
  Runnable g = backend(GetParam()).prepare(p->gradient("f", {}));
  expectEvalError([&] { g({vec(2)}); }, "overflows i64", 2);
}

TEST_P(SizeOverflow, TapeOfAHugeLoopIsRefusedBeforeTheLoopRuns) {
  // T * n * 8 bytes of tape overflow (no checkpointing) or exceed memory (sqrt checkpointing
  // keeps ~1.5e9 states of 128 bytes); either way the gradient fails on loop entry.
  auto p = Program::fromString("t.slope", "fn f(x: f64[n], k: i64) -> f64 {\n"
                                          "  var s = x;\n"
                                          "  for t in 0..k { s = sin(s) * x; }\n"
                                          "  sum(s)\n}");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  std::vector<Tensor> args = {vec(16), Tensor::scalar(DType::I64, static_cast<double>(kHuge))};
  for (int checkpoint : {-1, 0}) {
    GradOptions o;
    o.checkpoint = checkpoint;
    Runnable g = backend(GetParam()).prepare(p->gradient("f", {}, o));
    try {
      g(args);
      ADD_FAILURE() << "a tape for 2^61 iterations was made (checkpoint " << checkpoint << ")";
    } catch (const EvalError& e) {
      std::string m = e.what();
      EXPECT_TRUE(m.find("overflows i64") != std::string::npos ||
                  m.find("bytes of memory") != std::string::npos)
          << m;
    }
  }
}

TEST_P(SizeOverflow, TripCountThatOverflowsFailsInsteadOfRunningZeroTimes) {
  auto p = Program::fromString("t.slope", "fn f(x: f64[n], k: i64) -> f64 {\n"
                                          "  var s = 0.0;\n"
                                          "  for t in k..n { s = s + x[0]; }\n"
                                          "  s\n}");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  Runnable f = backend(GetParam()).prepare(p->forward("f"));
  expectEvalError(
      [&] {
        f({vec(2), Tensor::scalar(DType::I64, static_cast<double>(INT64_MIN))});
      },
      "trip count", 3);
  // An empty range still runs zero times.
  EXPECT_EQ(f({vec(2), Tensor::scalar(DType::I64, 5)})[0].getF(0), 0.0);
  EXPECT_DOUBLE_EQ(f({vec(2), Tensor::scalar(DType::I64, -1)})[0].getF(0), 0.3);
}

INSTANTIATE_TEST_SUITE_P(Backends, SizeOverflow, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "jit" : "interp";
                         });

TEST(SizeOverflowCompileTime, ConstantExtentArithmetic) {
  for (const char* extent :
       {"4611686018427387904 * 4", "9223372036854775807 + 1", "3037000500 * 3037000500"}) {
    auto p = Program::fromString("t.slope", std::string("fn f(x: f64[n]) -> f64 { let y[i: ") +
                                                extent + "] = x[0]; sum(y) }");
    EXPECT_FALSE(p->ok()) << extent;
    EXPECT_NE(p->diagnostics().find("overflows i64"), std::string::npos) << p->diagnostics();
  }
}

TEST(SizeOverflowHost, ParameterTooLargeForTheMachine) {
  auto p = Program::fromString("t.slope", "fn f(x: f64[2305843009213693953]) -> f64 { sum(x) }");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  try {
    randomArgs(p->forward("f"), {}, 1);
    ADD_FAILURE() << "made the argument";
  } catch (const std::length_error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 'x'"), std::string::npos) << e.what();
  }
  // More bytes than the machine has: refused before allocating, with the bytes it needs.
  try {
    Tensor t(DType::F64, {1000000000, 1000000000});
    ADD_FAILURE() << "allocated 8e18 bytes";
  } catch (const std::length_error& e) {
    EXPECT_NE(std::string(e.what()).find("8000000000000000000 bytes"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Tensor(DType::F64, {kHuge}), std::length_error);
  EXPECT_THROW(Tensor(DType::F64, {INT64_MAX, 2}), std::length_error);
}

TEST(SizeOverflowRevolve, HugeTripCountsStayInTheLoop) {
  for (int64_t end : {int64_t{1} << 40, int64_t{1} << 61, INT64_MAX - 1})
    for (int64_t free : {int64_t{7}, int64_t{1000}, int64_t{1} << 40, INT64_MAX}) {
      int64_t m = revolveNext(0, end, free);
      EXPECT_GT(m, 0) << end << " " << free;
      EXPECT_LE(m, end) << end << " " << free;
    }
}

} // namespace
} // namespace slope
