// Math functions through libmvec (compiler/support/vmath.hpp): their accuracy, and the same
// bits for an element whether the JIT's loop computed it in a SIMD lane, in its scalar
// remainder, or the evaluator did.

#include "compiler/codegen/execute.hpp"
#include "compiler/codegen/jit.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/vmath.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace slope {
namespace {

/// Distance in units in the last place of `got` from the exact value `want`.
template <class T> double ulps(T got, long double want) {
  long double ulp = std::nextafter(static_cast<T>(want), std::numeric_limits<T>::infinity()) -
                    static_cast<T>(want);
  if (ulp == 0 || !std::isfinite(static_cast<double>(ulp))) return 0;
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

struct Case {
  const char* name;
  double (*f)(double);
  float (*g)(float);
  long double (*exact)(long double);
  double lo, hi;
};

TEST(VectorMath, AccuracyAgainstLongDouble) {
  const Case cases[] = {
      {"exp", vmath::exp, vmath::exp, expl, -700, 700},
      {"log", vmath::log, vmath::log, logl, 1e-300, 1e300},
      {"sin", vmath::sin, vmath::sin, sinl, -100, 100},
      {"cos", vmath::cos, vmath::cos, cosl, -100, 100},
      {"tan", vmath::tan, vmath::tan, tanl, -1.5, 1.5},
      {"log1p", vmath::log1p, vmath::log1p, log1pl, -0.99, 100},
      {"expm1", vmath::expm1, vmath::expm1, expm1l, -30, 30},
      {"tanh", vmath::tanh, vmath::tanh, tanhl, -20, 20},
      {"sinh", vmath::sinh, vmath::sinh, sinhl, -30, 30},
      {"cosh", vmath::cosh, vmath::cosh, coshl, -30, 30},
      {"asin", vmath::asin, vmath::asin, asinl, -1, 1},
      {"acos", vmath::acos, vmath::acos, acosl, -1, 1},
      {"atan", vmath::atan, vmath::atan, atanl, -100, 100},
  };
  std::mt19937_64 rng(1);
  for (const Case& c : cases) {
    std::uniform_real_distribution<double> u(c.lo, c.hi);
    double worst = 0, worstF = 0;
    for (int i = 0; i < 20000; ++i) {
      double x = u(rng);
      if (c.lo > 0)
        x = std::exp(std::uniform_real_distribution<double>(std::log(c.lo), std::log(c.hi))(rng));
      worst = std::max(worst, ulps(c.f(x), c.exact(x)));
      float xf = static_cast<float>(std::max(-80.0, std::min(80.0, x)));
      if (c.lo > 0) xf = static_cast<float>(std::min(x, 1e30));
      worstF = std::max(worstF, ulps(c.g(xf), c.exact(xf)));
    }
    std::printf("%-6s %s: max error %.2f ulp (f64), %.2f ulp (f32)\n", c.name,
                vmath::has(c.name, false) ? "libmvec" : "libm", worst, worstF);
    EXPECT_LE(worst, 4.0) << c.name;
    EXPECT_LE(worstF, 4.0) << c.name;
  }
}

TEST(VectorMath, SameBitsInLanesRemaindersAndTheEvaluator) {
  // 1003 elements: vector bodies and a scalar remainder; every function libmvec has.
  const char* src = R"(
fn f(x: f64[n]) -> f64[n] {
    let y[i] = exp(x[i]) + log(x[i] + 2) + sin(x[i]) * cos(x[i]) + tanh(x[i]) + atan(x[i])
        + log1p(x[i] + 1) + expm1(x[i]) + sinh(x[i]) + cosh(x[i]) + tan(x[i]) + asin(x[i] / 2)
        + acos(x[i] / 2);
    y
}
fn g(x: f32[n]) -> f32[n] {
    let y[i] = exp(x[i]) + log(x[i] + 2) + sin(x[i]) * cos(x[i]) + tanh(x[i]);
    y
}
)";
  auto p = Program::fromString("vm.slope", src);
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  JitRunner jit;
  for (const char* fn : {"f", "g"}) {
    ir::Function f = p->forward(fn);
    DType t = std::string(fn) == "f" ? DType::F64 : DType::F32;
    Tensor x(t, {1003});
    for (int64_t i = 0; i < x.numel(); ++i)
      x.setF(i, -1.5 + 3.0 * static_cast<double>(i) / 1003.0);
    Tensor a = jit.prepare(f)({x})[0], b = evaluate(f, {x})[0];
    for (int64_t i = 0; i < x.numel(); ++i) {
      double u = a.getF(i), v = b.getF(i);
      EXPECT_EQ(std::memcmp(&u, &v, sizeof u), 0)
          << fn << " element " << i << ": " << u << " vs " << v;
    }
  }
}

// A logsumexp's exps vectorise, though its sum of them runs in order (codegen's lseExps: the
// exps a block at a time into a row, then added one by one), and it gives the evaluator's
// bits for rows shorter than a block, one block, and past one.
TEST(VectorMath, LogsumexpRowsVectoriseWithTheEvaluatorsBits) {
  if (!vmath::enabled()) GTEST_SKIP() << "libmvec is not in use on this machine";
  auto p = Program::fromString("lse.slope", R"(
fn f(x: f64[n, k]) -> f64[n] {
    let r[i] = logsumexp[j](x[i, j]);
    r
}
fn g(x: f32[n, k]) -> f32[n] {
    let r[i] = logsumexp[j](x[i, j]);
    r
}
)");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  // (Calls of the vector function, none of the scalar one: the row's last partial vector
  // runs masked.)
  const std::string f64 = codegen::emitLLVM(p->forward("f")),
                    f32 = codegen::emitLLVM(p->forward("g"));
  EXPECT_NE(f64.find("call <4 x double> @_ZGVdN4v_exp("), std::string::npos) << f64;
  EXPECT_EQ(f64.find("call double @slope_vm_exp("), std::string::npos) << f64;
  EXPECT_NE(f32.find("call <8 x float> @_ZGVdN8v_expf("), std::string::npos) << f32;
  EXPECT_EQ(f32.find("call float @slope_vm_expf("), std::string::npos) << f32;
  JitRunner jit;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-30.0, 30.0);
  for (const char* fn : {"f", "g"}) {
    ir::Function f = p->forward(fn);
    Runnable run = jit.prepare(f);
    for (int64_t k : {1, 3, 25, 63, 64, 65, 130, 1003}) {
      Tensor x(std::string(fn) == "f" ? DType::F64 : DType::F32, {3, k});
      for (int64_t i = 0; i < x.numel(); ++i)
        x.setF(i, u(rng));
      Tensor a = run({x})[0], b = evaluate(f, {x})[0];
      for (int64_t i = 0; i < 3; ++i) {
        double v = a.getF(i), w = b.getF(i);
        EXPECT_EQ(std::memcmp(&v, &w, sizeof v), 0)
            << fn << ", k = " << k << ", row " << i << ": " << v << " vs " << w;
      }
    }
  }
}

} // namespace
} // namespace slope
