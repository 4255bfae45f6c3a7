// x ** y and x^n (compiler/support/power.hpp): the evaluator and the JIT at every opt level give
// the same bits, exponents known at compile time or only at run time, f64 and f32, on the
// special operands (signed zeros, infinities, NaN) and on squares that libm's pow rounds
// differently from x * x.
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/power.hpp"
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace slope {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::nan("");

// Squares of these three differ by an ulp between glibc's pow(x, 2) and x * x.
const std::vector<double> kX{-0.0,
                             0.0,
                             -kInf,
                             kInf,
                             kNaN,
                             -2.5,
                             -1.0,
                             1.0,
                             2.0,
                             3.7,
                             1e300,
                             1e-300,
                             -1e-300,
                             -0.15431810643259358,
                             1.2608566653266813,
                             0.47524621639179365};
const std::vector<double> kY{2.0, 1.0, -1.0, 0.5, 0.0, 3.0, 2.5, -0.5, -2.0};

bool sameBits(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

std::string source(const std::string& T) {
  return "fn runtime(x: " + T + "[n], y: " + T + "[n]) -> " + T +
         "[n] {\n"
         "    let r[i] = pow(x[i], y[i]);\n    r\n}\n"
         "fn square(x: " +
         T + "[n]) -> " + T +
         "[n] {\n    let r[i] = x[i]^2;\n    r\n}\n"
         "fn square_pow(x: " +
         T + "[n]) -> " + T +
         "[n] {\n    let r[i] = pow(x[i], 2.0);\n    r\n}\n"
         "fn root(x: " +
         T + "[n]) -> " + T +
         "[n] {\n    let r[i] = pow(x[i], 0.5);\n    r\n}\n"
         "fn reciprocal(x: " +
         T + "[n]) -> " + T +
         "[n] {\n    let r[i] = pow(x[i], -1.0);\n    r\n}\n"
         "fn cube(x: " +
         T + "[n]) -> " + T +
         "[n] {\n    let r[i] = x[i]^3;\n    r\n}\n"
         "fn base2(x: " +
         T + "[n]) -> " + T + "[n] {\n    let r[i] = pow(2.0, x[i]);\n    r\n}\n";
}

/// What power.hpp says each function computes at x (and y), in the program's float type.
double expected(const std::string& fn, double x, double y, bool f32) {
  auto pw = [&](double a, double b) {
    return f32 ? static_cast<double>(power(static_cast<float>(a), static_cast<float>(b)))
               : power(a, b);
  };
  // x^n is computed in double and rounded to the type.
  auto pwi = [&](double a, int n) {
    double r = power(f32 ? static_cast<double>(static_cast<float>(a)) : a, double(n));
    return f32 ? static_cast<double>(static_cast<float>(r)) : r;
  };
  if (fn == "runtime") return pw(x, y);
  if (fn == "square") return pwi(x, 2);
  if (fn == "square_pow") return pw(x, 2.0);
  if (fn == "root") return pw(x, 0.5);
  if (fn == "reciprocal") return pw(x, -1.0);
  if (fn == "cube") return pwi(x, 3);
  return pw(2.0, x); // base2
}

TEST(Power, ExactWhereTheExponentAllows) {
  EXPECT_EQ(power(-0.15431810643259358, 2.0), -0.15431810643259358 * -0.15431810643259358);
  EXPECT_TRUE(sameBits(power(-0.0, 0.5), 0.0)); // pow's +0, where sqrt(-0) is -0
  EXPECT_EQ(power(-kInf, 0.5), kInf);           // pow's +inf, where sqrt(-inf) is NaN
  EXPECT_TRUE(std::isnan(power(-4.0, 0.5)));
  EXPECT_EQ(power(-0.0, -1.0), -kInf);
  EXPECT_EQ(power(kNaN, 0.0), 1.0);
  EXPECT_EQ(power(3.0, 2.5), std::pow(3.0, 2.5));
  EXPECT_EQ(power(2.0f, 0.5f), std::sqrt(2.0f));
}

TEST(Power, SameBitsOnEveryBackendAndOptLevel) {
  std::vector<std::pair<std::string, std::shared_ptr<Runner>>> runners;
  runners.emplace_back("evaluator", std::make_shared<InterpRunner>());
  for (int level : {0, 1, 2}) {
    codegen::JitOptions o;
    o.optLevel = level;
    runners.emplace_back("JIT at opt level " + std::to_string(level),
                         std::make_shared<JitRunner>(o));
  }
  for (DType dtype : {DType::F64, DType::F32}) {
    const bool f32 = dtype == DType::F32;
    auto prog = Program::fromString("power.slope", source(f32 ? "f32" : "f64"));
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    // Every x with every y, in a row long enough to run through a vectorised loop.
    const int64_t n = static_cast<int64_t>(kX.size() * kY.size());
    Tensor x(dtype, {n}), y(dtype, {n});
    for (int64_t i = 0; i < n; ++i) {
      x.setF(i, kX[i % kX.size()]);
      y.setF(i, kY[i / kX.size()]);
    }
    for (const std::string fn :
         {"runtime", "square", "square_pow", "root", "reciprocal", "cube", "base2"}) {
      ir::Function f = prog->forward(fn);
      std::vector<Tensor> args{x};
      if (fn == "runtime") args.push_back(y);
      for (const auto& [label, runner] : runners) {
        Tensor r = runner->prepare(f)(args).at(0);
        for (int64_t i = 0; i < n; ++i) {
          const double want = expected(fn, x.getF(i), y.getF(i), f32);
          ASSERT_TRUE(sameBits(r.getF(i), want))
              << (f32 ? "f32 " : "f64 ") << fn << " on the " << label << " at x = " << x.getF(i)
              << ", y = " << y.getF(i) << ": " << r.getF(i) << ", want " << want;
        }
      }
    }
  }
}

} // namespace
} // namespace slope
