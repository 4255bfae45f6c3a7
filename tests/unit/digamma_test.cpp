// digamma (psi, lgamma's derivative) against reference values computed once with mpmath
// (scripts/gen_digamma_table.py -> digamma_table.inc): the C++ function, the evaluator and the
// JIT (digamma itself, and the gradient of lgamma), in f64 and f32.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/special.hpp"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <string>

namespace slope {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Ref {
  double x, hi, lo; // psi(x) = hi + lo (about 106 bits)
  double scale;     // the magnitude whose ulps measure the error (see the script)
  double f32;       // psi(float(x)), rounded to double
  double scale32;   // scale at float(x)
};

const Ref kTable[] = {
#include "digamma_table.inc"
};

double ulp64(double v) {
  v = std::fabs(v);
  return v < DBL_MIN ? std::ldexp(1.0, -1074) : std::ldexp(1.0, std::ilogb(v) - 52);
}
double ulp32(double v) {
  v = std::fabs(v);
  return v < FLT_MIN ? std::ldexp(1.0, -149) : std::ldexp(1.0, std::ilogb(v) - 23);
}

/// The error of got in ulps of ref.scale (0 where both are the same infinity or both NaN).
double error64(double got, const Ref& r) {
  if (!std::isfinite(r.hi)) return got == r.hi ? 0 : kInf;
  return std::fabs((got - r.hi) - r.lo) / ulp64(r.scale);
}
double error32(double got, const Ref& r) {
  if (std::isnan(r.f32)) return std::isnan(got) ? 0 : kInf;
  if (!std::isfinite(r.f32)) return got == r.f32 ? 0 : kInf;
  return std::fabs(got - r.f32) / ulp32(r.scale32);
}

constexpr double kMaxUlp64 = 4, kMaxUlp32 = 1;

TEST(Digamma, TableIsWhatTheTestThinks) {
  ASSERT_GE(std::size(kTable), 100u);
  for (const Ref& r : kTable)
    if (r.x > 0) {
      EXPECT_EQ(r.scale, std::fabs(r.hi)) << r.x;
    }
}

TEST(Digamma, CxxWithinFewUlps) {
  double worst = 0, worst32 = 0;
  for (const Ref& r : kTable) {
    double e = error64(digamma(r.x), r);
    EXPECT_LE(e, kMaxUlp64) << "x = " << r.x << ": " << digamma(r.x) << " vs " << r.hi;
    double e32 = error32(digammaf(static_cast<float>(r.x)), r);
    EXPECT_LE(e32, kMaxUlp32) << "x = " << static_cast<float>(r.x);
    worst = std::max(worst, e);
    worst32 = std::max(worst32, e32);
  }
  std::printf("max error: f64 %.3g ulp, f32 %.3g ulp\n", worst, worst32);
}

TEST(Digamma, PolesAndSpecialValues) {
  EXPECT_EQ(digamma(0.0), -kInf);
  EXPECT_EQ(digamma(-0.0), kInf);
  EXPECT_EQ(digamma(kInf), kInf);
  for (double x : {-1.0, -2.0, -37.0, -1e300, -kInf, kNaN})
    EXPECT_TRUE(std::isnan(digamma(x))) << x;
  EXPECT_EQ(digammaf(0.0f), -HUGE_VALF);
  EXPECT_TRUE(std::isnan(digammaf(-3.0f)));
  // Exact at 1 and 2 to within the table's accuracy; the zero stays tiny, of the right sign.
  EXPECT_LT(digamma(1.4616321449683622), 0);
  EXPECT_GT(digamma(1.4616321449683624), 0);
}

/// Runs the gradient of `sum(lgamma(x))`, which is digamma(x), on every table point with one
/// backend, and checks it. (digamma is not a function of the language, only of the IR.)
void checkBackend(Runner& runner, DType dtype) {
  const bool f32 = dtype == DType::F32;
  const std::string T = f32 ? "f32" : "f64";
  auto prog = Program::fromString("digamma.slope",
                                  "fn lg(x: " + T + "[n]) -> " + T + " { sum(lgamma(x)) }\n");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  // Poles give inf or NaN, and lgamma's value overflows at some points: the gradient is
  // still psi, element by element.
  const int64_t n = std::size(kTable);
  Tensor x(dtype, {n});
  for (int64_t i = 0; i < n; ++i)
    x.setF(i, f32 ? static_cast<double>(static_cast<float>(kTable[i].x)) : kTable[i].x);
  Runnable grad = runner.prepare(prog->gradient("lg", {}));
  Tensor g = grad({x})[1];
  for (int64_t i = 0; i < n; ++i) {
    const Ref& r = kTable[i];
    if (f32) {
      EXPECT_LE(error32(g.getF(i), r), kMaxUlp32) << T << " d/dx lgamma at " << x.getF(i);
    } else {
      EXPECT_LE(error64(g.getF(i), r), kMaxUlp64) << T << " d/dx lgamma at " << r.x;
    }
  }
}

TEST(Digamma, EvaluatorF64) {
  InterpRunner r;
  checkBackend(r, DType::F64);
}
TEST(Digamma, EvaluatorF32) {
  InterpRunner r;
  checkBackend(r, DType::F32);
}
TEST(Digamma, JitF64) {
  JitRunner r;
  checkBackend(r, DType::F64);
}
TEST(Digamma, JitF32) {
  JitRunner r;
  checkBackend(r, DType::F32);
}

} // namespace
} // namespace slope
