// trigamma (psi', digamma's derivative: lgamma's second derivative, which the HVP of a function
// with lgamma needs) against reference values from mpmath (mpmath.psi(1, x) at 40 digits, x
// the double as written): the C++ function, and the HVP of sum(lgamma(x)) on the evaluator
// and the JIT, in f64 and f32.

#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/special.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace slope {
namespace {

struct Ref {
  double x, psi1;
};

// python3 -c "import mpmath; mpmath.mp.dps = 40; print(mpmath.psi(1, mpmath.mpf(x)))"
const Ref kTable[] = {
    {1e-09, 999999999999999877.08},   {0.001, 1000001.6425331958273},
    {0.1, 101.4332991507927477},      {0.25, 17.197329154507110739},
    {0.5, 4.9348022005446793094},     {0.75, 2.5418796476716064984},
    {1, 1.6449340668482264365},       {1.5, 0.93480220054467930942},
    {2, 0.64493406684822643647},      {2.5, 0.49035775610023486497},
    {3.7, 0.31003785767003830216},    {5, 0.22132295573711532536},
    {9.99, 0.10527695014824178439},   {10, 0.10516633568168574612},
    {10.5, 0.099916956059126733204},  {12.25, 0.085055142988163208079},
    {40, 0.025315103841291028158},    {123.456, 0.0081329458342781978071},
    {1e4, 0.00010000500016666666633}, {1e8, 1.0000000050000000167e-8},
    {-0.5, 8.9348022005446793094},    {-0.25, 18.541879647671606498},
    {-1.5, 9.3792466449891237539},    {-2.75, 19.433868949488464162},
    {-10.1, 103.26156923946724557},   {-100.3, 15.069493149244011019},
};

/// Relative error bound: a few ulps for x > 0; the reflection for x < 0 subtracts psi'(1 - x)
/// from pi^2 / sin^2(pi x), and sin(pi x) carries the rounding of pi x.
double bound(double x) {
  return x > 0 ? 4e-15 : 2e-13;
}

TEST(Trigamma, AgreesWithMpmath) {
  for (const Ref& r : kTable) {
    double got = trigamma(r.x);
    EXPECT_LE(std::fabs(got - r.psi1), bound(r.x) * std::fabs(r.psi1)) << "x = " << r.x;
    double got32 = trigammaf(static_cast<float>(r.x));
    double want32 = trigamma(static_cast<double>(static_cast<float>(r.x)));
    EXPECT_LE(std::fabs(got32 - want32), 1.2e-7 * std::fabs(want32)) << "f32 x = " << r.x;
  }
}

TEST(Trigamma, PolesInfinitiesAndTheRecurrence) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(trigamma(0.0), inf);
  EXPECT_EQ(trigamma(-0.0), inf);
  EXPECT_EQ(trigamma(-3.0), inf);
  EXPECT_EQ(trigamma(inf), 0.0);
  EXPECT_TRUE(std::isnan(trigamma(-inf)));
  EXPECT_TRUE(std::isnan(trigamma(std::nan(""))));
  // psi'(x) = psi'(x + 1) + 1/x^2 across the switch points (0.5, and 10.5 where the series
  // starts without steps of its own).
  for (double x : {0.3, 0.49, 0.5, 0.51, 3.3, 9.4, 9.6, 10.4, 10.6, 77.0}) {
    double lhs = trigamma(x), rhs = trigamma(x + 1) + 1 / (x * x);
    EXPECT_LE(std::fabs(lhs - rhs), 1e-14 * lhs) << "x = " << x;
  }
  // And it is digamma's derivative: a central difference of digamma.
  for (double x : {0.7, 2.0, 15.0, -0.3}) {
    double h = 1e-5 * std::max(1.0, std::fabs(x));
    double fd = (digamma(x + h) - digamma(x - h)) / (2 * h);
    EXPECT_NEAR(trigamma(x), fd, 1e-6 * std::fabs(fd)) << "x = " << x;
  }
}

/// The HVP of sum(lgamma(x)) along ones is psi'(x), element by element.
void checkBackend(Runner& runner, DType dtype) {
  const bool f32 = dtype == DType::F32;
  const std::string T = f32 ? "f32" : "f64";
  auto prog = Program::fromString("trigamma.slope",
                                  "fn lg(x: " + T + "[n]) -> " + T + " { sum(lgamma(x)) }\n");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  std::vector<Ref> pts;
  for (const Ref& r : kTable)
    if (std::fabs(r.x) < 1e6 && std::fabs(r.x) > 1e-6) pts.push_back(r);
  const int64_t n = static_cast<int64_t>(pts.size());
  Tensor x(dtype, {n}), v(dtype, {n});
  for (int64_t i = 0; i < n; ++i) {
    x.setF(i, pts[static_cast<size_t>(i)].x);
    v.setF(i, 1);
  }
  Runnable hvp = runner.prepare(prog->hvp("lg", {}));
  Tensor hv = hvp({x, v})[2]; // the value, the gradient, then H v
  for (int64_t i = 0; i < n; ++i) {
    double at = x.getF(i), want = f32 ? trigammaf(static_cast<float>(at)) : trigamma(at);
    EXPECT_EQ(hv.getF(i), want) << T << " at " << at; // the same function, the same bits
    // (f32: x itself is rounded to float, so against the f64 function at that point.)
    double exact = f32 ? trigamma(at) : pts[static_cast<size_t>(i)].psi1;
    EXPECT_LE(std::fabs(hv.getF(i) - exact), (f32 ? 1.2e-7 : bound(at)) * std::fabs(exact))
        << T << " at " << at;
  }
}

TEST(Trigamma, HvpOfLgammaEvaluatorF64) {
  InterpRunner r;
  checkBackend(r, DType::F64);
}
TEST(Trigamma, HvpOfLgammaEvaluatorF32) {
  InterpRunner r;
  checkBackend(r, DType::F32);
}
TEST(Trigamma, HvpOfLgammaJitF64) {
  JitRunner r;
  checkBackend(r, DType::F64);
}
TEST(Trigamma, HvpOfLgammaJitF32) {
  JitRunner r;
  checkBackend(r, DType::F32);
}

} // namespace
} // namespace slope
