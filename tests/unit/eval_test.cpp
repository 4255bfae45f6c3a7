// The reference evaluator and the gradient pass on known values: the seed examples exactly,
// call-time validation, run-time subscript checks, and IEEE behaviour at singular points.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "runtime/io.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace slope {
namespace {

std::unique_ptr<Program> compile(const std::string& src) {
  auto p = Program::fromString("test.slope", src);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p;
}

std::unique_ptr<Program> sample(const std::string& name) {
  auto p = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/" + name);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p;
}

Tensor matrix(std::vector<std::vector<double>> rows) {
  Tensor t(DType::F64, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
  int64_t k = 0;
  for (auto& r : rows)
    for (double v : r)
      t.setF(k++, v);
  return t;
}

TEST(Seed, QuadraticValueAndDerivativeAreExact) {
  auto p = sample("autograd_intro.slope");
  auto out = evaluate(p->gradient("quadratic", {}), {Tensor::scalar(DType::F64, 2)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].getF(0), 15.0);
  EXPECT_EQ(out[1].getF(0), 11.0);
}

TEST(Seed, BowlValueAndGradientAreExact) {
  auto p = sample("autograd_intro.slope");
  auto out = evaluate(p->gradient("bowl", {}), {matrix({{1, 2}, {3, 4}})});
  EXPECT_EQ(out[0].getF(0), 54.0);
  EXPECT_EQ(toJson(out[1]), "[[4,6],[8,10]]");
}

TEST(Seed, MatvecVjp) {
  auto p = sample("autograd_intro.slope");
  Tensor v(DType::F64, {2});
  v.setF(0, 1), v.setF(1, -1);
  Tensor seed(DType::F64, {2});
  seed.setF(0, 1), seed.setF(1, 2);
  auto out = evaluate(p->gradient("matvec", {}), {matrix({{1, 2}, {3, 4}}), v, seed});
  EXPECT_EQ(toJson(out[0]), "[-1,-1]");
  EXPECT_EQ(toJson(out[1]), "[[1,-1],[2,-2]]"); // dA = seed v^T
  EXPECT_EQ(toJson(out[2]), "[7,10]");          // dv = A^T seed
}

TEST(Wrt, SubsetKeepsParameterOrder) {
  auto p = compile("fn f(a: f64, b: f64, c: f64) -> f64 { a * b * c }");
  auto g = p->gradient("f", {"c", "a"});
  auto out = evaluate(g, {Tensor::scalar(DType::F64, 2), Tensor::scalar(DType::F64, 3),
                          Tensor::scalar(DType::F64, 5)});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].getF(0), 15.0); // d/da
  EXPECT_EQ(out[2].getF(0), 6.0);  // d/dc
  EXPECT_THROW(p->gradient("f", {"z"}), GradError);
}

TEST(Wrt, IntegerParameterIsRejected) {
  auto p = compile("fn f(a: f64, k: i64) -> f64 { a * f64(k) }");
  EXPECT_THROW(p->gradient("f", {"k"}), GradError);
}

TEST(CallErrors, NameTheParameter) {
  auto p = compile("fn f(x: f64[n], y: f64[n], z: f64[3]) -> f64 { sum(x * y) + sum(z) }");
  ir::Function f = p->forward("f");
  Tensor v3(DType::F64, {3}), v4(DType::F64, {4}), m(DType::F64, {3, 3});
  Tensor i3(DType::I64, {3});
  auto expectMsg = [&](std::vector<Tensor> args, const std::string& part) {
    try {
      evaluate(f, args);
      ADD_FAILURE() << "no error, expected: " << part;
    } catch (const CallError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expectMsg({v3, v3}, "takes 3 arguments, got 2");
  expectMsg({v3, v4, v3}, "size 'n' is 3 (from parameter 'x') but parameter 'y' has extent 4");
  expectMsg({v3, m, v3}, "parameter 'y' must be f64[n], got f64[3, 3]");
  expectMsg({v3, i3, v3}, "parameter 'y' must be f64[n], got i64[3]");
  expectMsg({v3, v3, v4}, "parameter 'z' must have extent 3 in dimension 0, got 4");
  expectMsg({Tensor(DType::F64, {0}), Tensor(DType::F64, {0}), v3}, "extents must be at least 1");
}

TEST(RuntimeErrors, DataDependentSubscriptOutOfRange) {
  auto p = compile("fn f(x: f64[n], k: i64) -> f64 {\n  x[k] * 2\n}");
  ir::Function f = p->forward("f");
  Tensor x(DType::F64, {3});
  EXPECT_NO_THROW(evaluate(f, {x, Tensor::scalar(DType::I64, 2)}));
  try {
    evaluate(f, {x, Tensor::scalar(DType::I64, 3)});
    ADD_FAILURE() << "no error";
  } catch (const EvalError& e) {
    EXPECT_STREQ(e.what(), "index 3 is out of range for 'x': dimension 0 has extent 3");
    EXPECT_EQ(p->diags().file().lineCol(e.where.begin).line, 2);
  }
  EXPECT_THROW(evaluate(f, {x, Tensor::scalar(DType::I64, -1)}), EvalError);
  // The gradient's scatter is checked the same way.
  EXPECT_THROW(evaluate(p->gradient("f", {}), {x, Tensor::scalar(DType::I64, 7)}), EvalError);
}

TEST(RuntimeErrors, NonAffineSubscriptAndIntegerDivision) {
  auto p = compile("fn f(x: f64[n]) -> f64 { let y[i: n] = x[i * i]; sum(y) }\n"
                   "fn g(x: f64[n], k: i64) -> f64 { x[0] * f64(div(n, k)) }");
  Tensor x(DType::F64, {2});
  EXPECT_NO_THROW(evaluate(p->forward("f"), {x})); // 0, 1 in range
  Tensor x3(DType::F64, {3});
  EXPECT_THROW(evaluate(p->forward("f"), {x3}), EvalError); // 4 is out of range
  EXPECT_THROW(evaluate(p->forward("g"), {x, Tensor::scalar(DType::I64, 0)}), EvalError);
}

TEST(Ieee, SingularPointsGiveInfOrNanNotACrash) {
  auto p = compile("fn f(x: f64) -> f64 { sqrt(x) }\nfn g(x: f64) -> f64 { log(x) }\n"
                   "fn h(x: f64) -> f64 { abs(x) + relu(x) }");
  auto zero = Tensor::scalar(DType::F64, 0);
  EXPECT_TRUE(std::isinf(evaluate(p->gradient("f", {}), {zero})[1].getF(0)));
  EXPECT_TRUE(std::isinf(evaluate(p->gradient("g", {}), {zero})[1].getF(0)));
  EXPECT_EQ(evaluate(p->gradient("h", {}), {zero})[1].getF(0), 0.0); // abs'(0) = relu'(0) = 0
}

TEST(Conventions, MaxSendsGradientToFirstMaximum) {
  auto p = compile(
      "fn f(x: f64[n]) -> f64 { max(x) }\nfn g(x: f64[n]) -> f64 { max[i](x[i]) + min(x) }");
  Tensor x(DType::F64, {4});
  for (int i = 0; i < 4; ++i)
    x.setF(i, i == 1 || i == 3 ? 5 : 1);
  EXPECT_EQ(toJson(evaluate(p->gradient("f", {}), {x})[1]), "[0,1,0,0]");
  EXPECT_EQ(toJson(evaluate(p->gradient("g", {}), {x})[1]), "[1,1,0,0]");
}

TEST(Conventions, ProdGradientAtZeros) {
  auto p = compile("fn f(x: f64[n]) -> f64 { prod(x) }");
  Tensor x(DType::F64, {3});
  x.setF(0, 2), x.setF(1, 0), x.setF(2, 3);
  EXPECT_EQ(toJson(evaluate(p->gradient("f", {}), {x})[1]), "[0,6,0]");
  x.setF(2, 0);
  EXPECT_EQ(toJson(evaluate(p->gradient("f", {}), {x})[1]), "[0,0,0]");
}

TEST(F32, ComputesInSinglePrecision) {
  auto p = compile("fn f(x: f32) -> f32 { x * 0.1 + 1e-8 }");
  auto out = evaluate(p->forward("f"), {Tensor::scalar(DType::F32, 3)});
  EXPECT_EQ(out[0].dtype(), DType::F32);
  EXPECT_EQ(out[0].data<float>()[0], 3.0f * 0.1f + 1e-8f);
}

TEST(Mixture, MatchesAHandWrittenLogLikelihood) {
  auto p = sample("mixture.slope");
  // K = 2, D = 1, N = 2.
  Tensor alphas(DType::F64, {2}), means(DType::F64, {2, 1}), ls(DType::F64, {2, 1}),
      x(DType::F64, {2, 1});
  alphas.setF(0, 0.3), alphas.setF(1, -0.2);
  means.setF(0, 0.5), means.setF(1, -1);
  ls.setF(0, 0.1), ls.setF(1, -0.3);
  x.setF(0, 0.2), x.setF(1, -0.7);
  double expect = 0;
  double z = std::log(std::exp(0.3) + std::exp(-0.2));
  for (int i = 0; i < 2; ++i) {
    double s = 0;
    for (int k = 0; k < 2; ++k) {
      double sig = std::exp(ls.getF(k));
      double d = (x.getF(i) - means.getF(k)) / sig;
      s += std::exp(alphas.getF(k) - z) * std::exp(-0.5 * d * d) / (sig * std::sqrt(2 * M_PI));
    }
    expect += std::log(s);
  }
  auto out = evaluate(p->forward("mixture"), {alphas, means, ls, x});
  EXPECT_NEAR(out[0].getF(0), expect, 1e-12);
}

} // namespace
} // namespace slope
