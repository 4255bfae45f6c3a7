// Every silently wrong number reported against Slope (issue 9), at the values the report gave,
// on both backends: the evaluator and the JIT must each give the known right answer (from the
// math, or from PyTorch in float64 where the report quotes it). The families these examples
// stand for are in the gradient table (grad_cases.hpp) and the random program tests.

#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/vmath.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

namespace slope {
namespace {

Runner& backend(bool jit) {
  static InterpRunner interp;
  static JitRunner compiled;
  return jit ? static_cast<Runner&>(compiled) : interp;
}

Tensor vec(std::vector<double> v) {
  Tensor t(DType::F64, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i)
    t.setF(static_cast<int64_t>(i), v[i]);
  return t;
}
Tensor mat(int64_t n, int64_t m, std::vector<double> v) {
  Tensor t(DType::F64, {n, m});
  for (size_t i = 0; i < v.size(); ++i)
    t.setF(static_cast<int64_t>(i), v[i]);
  return t;
}
Tensor scalar(double x) {
  Tensor t(DType::F64, {});
  t.setF(0, x);
  return t;
}

/// Value and gradients of `fn` in `src` at `args`, on one backend.
std::vector<Tensor> valueAndGradient(const std::string& src, const std::string& fn,
                                     const std::vector<Tensor>& args, bool jit) {
  auto prog = Program::fromString("wrong_numbers", src);
  EXPECT_TRUE(prog->ok()) << prog->diagnostics();
  return backend(jit).prepare(prog->gradient(fn, {}))(args);
}

void expectValues(const Tensor& t, const std::vector<double>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(t.getF(static_cast<int64_t>(i)), want[i], tol) << what << " element " << i;
}

class WrongNumbers : public ::testing::TestWithParam<bool> {};

// Bug 1: a var write must stop the gradient reaching the value it overwrote, also when the
// adjoint reaching the write is the same for every element (sum(w): the simplifier used to
// turn that adjoint into the constant 1 and lose the write's reset to zero).
TEST_P(WrongNumbers, OverwrittenVarElementGetsNoGradient) {
  struct C {
    const char* src;
    std::vector<double> grad;
  };
  const C cases[] = {
      {"fn f(y: f64[n]) -> f64 { var w = y; w[0] = 2.0; sum(w) }", {0, 1, 1}},
      {"fn f(y: f64[n]) -> f64 { var w = y; w[0] = 2.0; sum(2.0 * w) }", {0, 2, 2}},
      {"fn f(y: f64[n]) -> f64 { var w = y; w[0] = 2.0; sum(w + 1.0) }", {0, 1, 1}},
      {"fn f(y: f64[n]) -> f64 { var w = y; w[0] = 2.0; sum[i](w[i]) }", {0, 1, 1}},
      {"fn f(y: f64[n]) -> f64 { var w = y; w[0] = 2.0; mean(w) }", {0, 1 / 3.0, 1 / 3.0}},
      {"fn f(y: f64[n]) -> f64 { var w = y; for t in 0..n - 1 { w[t] = 2.0; } sum(w) }", {0, 0, 1}},
      {"fn f(y: f64[n]) -> f64 { var w = exp(y); w[0] = 2.0; sum(w) }",
       {0, std::exp(2.0), std::exp(3.0)}},
      {"fn f(y: f64[n]) -> f64 { var w = y; w[n - 1] = y[0] * 3.0; sum(w) }", {4, 1, 0}},
  };
  for (const C& c : cases) {
    auto r = valueAndGradient(c.src, "f", {vec({1, 2, 3})}, GetParam());
    expectValues(r[1], c.grad, 1e-14, c.src);
  }
  // var s = y; s = tanh(y): only tanh'(y) = 1 - tanh(y)^2 reaches y.
  auto r = valueAndGradient("fn g(y: f64[n]) -> f64 { var s = y; s = tanh(y); sum(s) }", "g",
                            {vec({1, 2, 3})}, GetParam());
  std::vector<double> want;
  for (double y : {1.0, 2.0, 3.0})
    want.push_back(1 - std::tanh(y) * std::tanh(y));
  expectValues(r[1], want, 1e-14, "tanh overwrite");
}

// Bug 2: logsumexp over a body holding an inner reduction (a softmax layer). PyTorch float64:
// dA = [[0.1572, -0.5501], [0.0428, -0.1499]]; the JIT used to run the body, and with it the
// tape store of the inner reduction's value, twice.
TEST_P(WrongNumbers, LogsumexpOverInnerReduction) {
  auto r = valueAndGradient("fn f(A: f64[n, m], v: f64[m]) -> f64 { logsumexp(A @ v) }", "f",
                            {mat(2, 2, {0.5, -1, 0.3, 0.8}), vec({0.2, -0.7})}, GetParam());
  // softmax(A v) with A v = [0.8, -0.5]: p = [1, e^-1.3] / (1 + e^-1.3); dA = p v^T, dv = A^T p.
  double q = std::exp(-1.3), p0 = 1 / (1 + q), p1 = q / (1 + q);
  expectValues(r[0], {std::log(std::exp(0.8) + std::exp(-0.5))}, 1e-14, "value");
  expectValues(r[1], {p0 * 0.2, -p0 * 0.7, p1 * 0.2, -p1 * 0.7}, 1e-14, "dA");
  expectValues(r[1], {0.1572, -0.5501, 0.0428, -0.1499}, 1e-4, "dA (PyTorch)");
  expectValues(r[2], {0.5 * p0 + 0.3 * p1, -p0 + 0.8 * p1}, 1e-14, "dv");

  // The other reductions in a logsumexp: sum, max, mean. With x = [0.1, 0.4], y = [0.3, -0.2]:
  // logsumexp_j(sum_k(x_j - y_k)) = logsumexp(2x - sum(y)), d/dx_j = 2 softmax(2x)_j.
  auto s =
      valueAndGradient("fn f(x: f64[n], y: f64[m]) -> f64 { logsumexp[j](sum[k](x[j] - y[k])) }",
                       "f", {vec({0.1, 0.4}), vec({0.3, -0.2})}, GetParam());
  double e0 = std::exp(0.2), e1 = std::exp(0.8);
  expectValues(s[1], {2 * e0 / (e0 + e1), 2 * e1 / (e0 + e1)}, 1e-14, "sum inside");
  expectValues(s[2], {-1, -1}, 1e-14, "sum inside dy");
  auto m =
      valueAndGradient("fn f(x: f64[n], y: f64[m]) -> f64 { logsumexp[j](max[k](x[j] * y[k])) }",
                       "f", {vec({0.1, 0.4}), vec({0.3, -0.2})}, GetParam());
  // max_k(x_j y_k) = 0.3 x_j for x > 0; d/dx_j = 0.3 softmax(0.3 x)_j.
  double a0 = std::exp(0.03), a1 = std::exp(0.12);
  expectValues(m[1], {0.3 * a0 / (a0 + a1), 0.3 * a1 / (a0 + a1)}, 1e-14, "max inside");
  auto mean = valueAndGradient("fn f(x: f64[n], y: f64[m]) -> f64 { logsumexp[j](mean(x[j] - y)) }",
                               "f", {vec({0.1, 0.4}), vec({0.3, -0.2})}, GetParam());
  double b0 = std::exp(0.1), b1 = std::exp(0.4);
  expectValues(mean[1], {b0 / (b0 + b1), b1 / (b0 + b1)}, 1e-14, "mean inside");
}

// Found by the random programs (seed 162054): logsumexp's weights exp(x_j - lse), with lse
// rounded to its type, summed to 1 + O(|lse| eps): in f32 at lse = 1001 the gradient was off by
// 2.9e-5 relative (it summed to 1.0000286) and the HVP below by 2.7% (73.95 for 72), its terms
// no longer cancelling. The weights are now divided by their sum, in reverse and forward mode.
TEST_P(WrongNumbers, LogsumexpWeightsInF32AtALargeOffset) {
  Tensor x(DType::F32, {4});
  const double xs[] = {1000.1, 1000.4, 999.7, 1000.0};
  for (int64_t i = 0; i < 4; ++i)
    x.setF(i, xs[i]);
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < 4; ++i)
    m = std::max(m, x.getF(i)); // (the f32 values, exactly)
  for (int64_t i = 0; i < 4; ++i)
    s += std::exp(x.getF(i) - m);
  auto r = valueAndGradient("fn f(x: f32[n]) -> f32 { logsumexp(x) }", "f", {x}, GetParam());
  double total = 0;
  for (int64_t i = 0; i < 4; ++i) {
    double want = std::exp(x.getF(i) - m) / s; // a few f32 ulps: 2.4e-7 relative
    EXPECT_NEAR(r[1].getF(i), want, 4e-7 * want) << "softmax element " << i;
    total += r[1].getF(i);
  }
  EXPECT_NEAR(total, 1.0, 4e-7);

  // f = log 3 + 1 + s^2 with s = 6 (x + 3): f' = 12 s, f'' = 72 for every x.
  auto prog = Program::fromString("wrong_numbers", "fn f(x: f32) -> f32 {\n"
                                                   "  let s = 6 * (x + 3);\n"
                                                   "  logsumexp[j: 3](1 + s^2)\n}");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  Tensor x0(DType::F32, {}), v(DType::F32, {});
  x0.setF(0, 1.3);
  v.setF(0, 1);
  std::vector<Tensor> h = backend(GetParam()).prepare(prog->hvp("f", {}))({x0, v});
  const double s0 = 6 * (x0.getF(0) + 3);
  expectValues(h[1], {12 * s0}, 2e-6 * 12 * s0, "f'");
  expectValues(h[2], {72}, 72 * 1e-4, "f'' (H v)");
}

// Found by the random programs: code before a loop is reversed after it and reads vars
// directly, so reversing a loop (or an element-wise write) must put back every var it
// overwrote, also one the reverse sweep does not need inside the loop, and a constant one.
TEST_P(WrongNumbers, VarsReadBeforeALoopThatOverwritesThem) {
  struct C {
    const char* src;
    std::vector<double> grad;
  };
  const C cases[] = {
      // d/dx sum(x * w) with w = 3 (later overwritten by 1).
      {"fn f(x: f64[n]) -> f64 { var w = ones(f64[n]) * 3.0; let e = sum(x * w); "
       "w = ones(f64[n]); e }",
       {3, 3, 3}},
      {"fn f(x: f64[n]) -> f64 { var w = ones(f64[n]) * 3.0; let e = sum(x * w); "
       "for t in 0..2 { w[t % n] = 1.0; } e }",
       {3, 3, 3}},
      {"fn f(x: f64[n]) -> f64 { var w = x; let e = sum(w * w); for t in 0..2 { w[t % n] = 1.0; } "
       "e }",
       {2, 4, 6}},
      // e + sum(x / 4): 2x + 0.25.
      {"fn f(x: f64[n]) -> f64 { var w = x; let e = sum(w * w); for t in 0..2 { w = w * 0.5; } "
       "e + sum(w) }",
       {2.25, 4.25, 6.25}},
  };
  for (const C& c : cases)
    for (const char* schedule : {"", "sqrt", "revolve:1"}) {
      auto prog = Program::fromString("loops", c.src);
      ASSERT_TRUE(prog->ok()) << prog->diagnostics();
      GradOptions o;
      if (std::string(schedule) == "sqrt") o.checkpoint = -1;
      if (std::string(schedule) == "revolve:1") o.snapshots = 1;
      auto r = backend(GetParam()).prepare(prog->gradient("f", {}, o))({vec({1, 2, 3})});
      expectValues(r[1], c.grad, 1e-14, std::string(c.src) + " " + schedule);
    }
}

// Found by the random programs (seed 3377): a loop inlined into a comprehension kept a value
// tape indexed by its step alone, so reversing the comprehension at r = 0 read the logsumexp
// of the last r. f = 9 (A[0, 1] + log 3), so df/dA[0, 1] = 9.
TEST_P(WrongNumbers, LoopInsideAComprehension) {
  const char* src = "fn f(A: f64[n, n]) -> f64 {\n"
                    "  let y4[r: 3] = g(ones(f64[3, n]) * A[0, (r + 1) % n]);\n"
                    "  min(ones(f64[n, 3]) * y4[0])\n}\n"
                    "fn g(u1: f64[q, p]) -> f64 {\n"
                    "  var w2 = 0.5;\n"
                    "  for t in 0..p { w2 = logsumexp[i: q](u1[0, (i + 1) % p]); }\n"
                    "  ones(f64[q]) @ (ones(f64[q, 3]) @ (ones(f64[3]) * w2))\n}";
  auto r = valueAndGradient(src, "f", {mat(3, 3, {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9})},
                            GetParam());
  expectValues(r[0], {9 * (0.2 + std::log(3.0))}, 1e-12, "value");
  expectValues(r[1], {0, 9, 0, 0, 0, 0, 0, 0, 0}, 1e-12, "dA");
}

// Found by the random programs (seed 3377 again, after the fix above): a loop carrying a var,
// inlined into a comprehension, kept its state tape (the var at each step) in a buffer that
// each index's run refilled, and reversing the comprehension at every r read the last r's
// states. g(a) = a^3, so f = sum(x^3) and df/dx = 3 x^2 (it gave x^2 + 3 x + 9: w = 3, 9).
TEST_P(WrongNumbers, StateOfALoopInsideAComprehension) {
  const char* src = "fn f(x: f64[n]) -> f64 {\n"
                    "  let y[r: n] = g(x[r]);\n"
                    "  sum(y)\n}\n"
                    "fn g(a: f64) -> f64 {\n"
                    "  var w = a;\n"
                    "  for t in 0..2 { w = a * w; }\n"
                    "  w\n}";
  auto r = valueAndGradient(src, "f", {vec({1, 2, 3})}, GetParam());
  expectValues(r[0], {36}, 1e-12, "value");
  expectValues(r[1], {3, 12, 27}, 1e-12, "dx");
}

// The same inside an `if` branch inside a reduction: the branch's reversal recomputed the
// loop without refilling its tape. f = 1^3 + 2 * 2 + 3^3 (x[1] < 0 takes the other branch).
TEST_P(WrongNumbers, StateOfALoopInABranchInsideAReduction) {
  const char* src = "fn f(x: f64[n]) -> f64 {\n"
                    "  sum[r: n](g(x[r]))\n}\n"
                    "fn g(a: f64) -> f64 {\n"
                    "  if a > 0.0 { cube(a) } else { -2 * a }\n}\n"
                    "fn cube(a: f64) -> f64 {\n"
                    "  var w = a;\n"
                    "  for t in 0..2 { w = a * w; }\n"
                    "  w\n}";
  auto r = valueAndGradient(src, "f", {vec({1, -2, 3})}, GetParam());
  expectValues(r[0], {32}, 1e-12, "value");
  expectValues(r[1], {3, -2, 27}, 1e-12, "dx");
}

// No loop at all: a whole-var write inlined into a comprehension saves what it overwrites in
// a buffer the size of the var, which each index's run refilled, and the reversal of the
// sum(w * w) before it read the last r's w. g(a) = 2 a^2 + 6 a: df/dx = 4 x + 6.
TEST_P(WrongNumbers, OverwrittenVarInsideAComprehension) {
  const char* src = "fn f(x: f64[n]) -> f64 {\n"
                    "  let y[r: n] = g(x[r]);\n"
                    "  sum(y)\n}\n"
                    "fn g(a: f64) -> f64 {\n"
                    "  var w = ones(f64[2]) * a;\n"
                    "  let s = sum(w * w);\n"
                    "  w = ones(f64[2]) * 3.0;\n"
                    "  s + a * sum(w)\n}";
  auto r = valueAndGradient(src, "f", {vec({1, 2, 3})}, GetParam());
  expectValues(r[0], {64}, 1e-12, "value");
  expectValues(r[1], {10, 14, 18}, 1e-12, "dx");
}

// Bug 3: constants that differ after the sixth decimal were one constant to CSE, so a
// folded sin(0.01) = 0.0099998333 became 0.01. Folding gives the value the function has at run
// time, to the bit (compiler/support/vmath.hpp: libmvec's where it is in use, else libm's).
TEST_P(WrongNumbers, FoldedConstantsKeepEveryBit) {
  struct F {
    const char* name;
    double (*fn)(double);
  };
  const F fns[] = {{"sin", [](double x) { return vmath::sin(x); }},
                   {"tan", [](double x) { return vmath::tan(x); }},
                   {"asin", [](double x) { return vmath::asin(x); }},
                   {"atan", [](double x) { return vmath::atan(x); }},
                   {"sinh", [](double x) { return vmath::sinh(x); }},
                   {"tanh", [](double x) { return vmath::tanh(x); }},
                   {"log1p", [](double x) { return vmath::log1p(x); }},
                   {"expm1", [](double x) { return vmath::expm1(x); }}};
  for (const F& fn : fns)
    for (const char* c : {"0.01", "0.001", "0.00001", "-0.003", "0.5"}) {
      std::string src = std::string("fn f(x: f64) -> f64 { x + ") + fn.name + "(" + c + ") }";
      auto r = valueAndGradient(src, "f", {scalar(0)}, GetParam());
      EXPECT_EQ(r[0].getF(0), fn.fn(std::stod(c))) << src;
    }
  auto r =
      valueAndGradient("fn f(x: f64) -> f64 { x * 0.1000001 + 0.1 }", "f", {scalar(1)}, GetParam());
  EXPECT_EQ(r[0].getF(0), 0.1000001 + 0.1);
  EXPECT_EQ(r[1].getF(0), 0.1000001);
  // The same cause made every constant below 5e-7 the constant 0 once a 0 was around.
  r = valueAndGradient("fn f(x: f64) -> f64 { log(x + 1e-9) + 0.0 * x }", "f", {scalar(1e-9)},
                       GetParam());
  EXPECT_EQ(r[0].getF(0), std::log(2e-9));
}

// Bug 4 (language v3): '/' is true division everywhere, as in Python 3; div(a, b) floors and
// a % b takes the divisor's sign.
TEST_P(WrongNumbers, SlashIsTrueDivision) {
  auto sq = valueAndGradient("fn f(x: f64) -> f64 { x^(1/2) + pow(x, 1/2) + (1/2) * x }", "f",
                             {scalar(4)}, GetParam());
  EXPECT_EQ(sq[0].getF(0), 2 + 2 + 2);
  EXPECT_EQ(sq[1].getF(0), 0.25 + 0.25 + 0.5);
  auto mean = valueAndGradient("fn f(x: f64[n]) -> f64 { (1 / n) * sum(x) + 7 / 2 }", "f",
                               {vec({1, 2, 3})}, GetParam());
  EXPECT_EQ(mean[0].getF(0), 2 + 3.5);
  expectValues(mean[1], {1 / 3.0, 1 / 3.0, 1 / 3.0}, 0, "mean");
  auto prog = Program::fromString("div", "fn f(a: i64, b: i64) -> (i64, i64, f64) { "
                                         "(div(a, b), a % b, f64(a / b)) }");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  Runnable f = backend(GetParam()).prepare(prog->forward("f"));
  struct Want {
    int64_t a, b, div, mod;
  };
  for (Want w : {Want{7, 2, 3, 1}, Want{-7, 2, -4, 1}, Want{7, -2, -4, -1}, Want{-7, -2, 3, -1},
                 Want{6, 3, 2, 0}, Want{-6, 3, -2, 0}, Want{0, -5, 0, 0},
                 Want{INT64_MIN, -1, INT64_MIN, 0}}) {
    auto r = f({Tensor::scalar(DType::I64, w.a), Tensor::scalar(DType::I64, w.b)});
    EXPECT_EQ(r[0].getI(0), w.div) << w.a << " div " << w.b;
    EXPECT_EQ(r[1].getI(0), w.mod) << w.a << " % " << w.b;
    EXPECT_EQ(r[2].getF(0), static_cast<double>(w.a) / static_cast<double>(w.b));
  }
  EXPECT_THROW(f({Tensor::scalar(DType::I64, 1), Tensor::scalar(DType::I64, 0)}), EvalError);
}

// Bug 5: an untyped float (a literal, an integer quotient) takes the float type it meets, also
// when it meets an i64 on the way: f32 stays f32.
TEST_P(WrongNumbers, UntypedFloatsTakeTheTypeTheyMeet) {
  auto prog = Program::fromString(
      "f32", "fn f(x: f32[n]) -> f32 { x[0] + 0.5 / n + 1 / n + x[0] * (0.25 * n) }");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function f = prog->forward("f");
  EXPECT_EQ(f.types[f.body.yields[0]].dtype, DType::F32);
  Tensor x(DType::F32, {2});
  x.setF(0, 1);
  x.setF(1, 2);
  auto r = backend(GetParam()).prepare(f)({x});
  EXPECT_EQ(r[0].dtype(), DType::F32);
  EXPECT_EQ(r[0].getF(0), 1 + 0.25f + 0.5f + 0.5f);
}

// Bug 8: valid programs that codegen turned into invalid LLVM IR (a value used where its
// definition does not dominate): an integer power's start value, and the tapes a loop inside
// an if branch fills for the reverse sweep's branch on the same condition.
TEST_P(WrongNumbers, ValuesUsedOutsideTheirBlock) {
  auto prog = Program::fromString("pow", "fn g(k: i64, j: i64) -> i64 { k ^ j }");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  Runnable g = backend(GetParam()).prepare(prog->forward("g"));
  auto ipow = [&](int64_t k, int64_t j) {
    return g({Tensor::scalar(DType::I64, static_cast<double>(k)),
              Tensor::scalar(DType::I64, static_cast<double>(j))})[0]
        .getI(0);
  };
  EXPECT_EQ(ipow(3, 4), 81);
  EXPECT_EQ(ipow(-2, 3), -8);
  EXPECT_EQ(ipow(-1, -3), -1);
  EXPECT_EQ(ipow(5, 0), 1);
  const char* src = "fn h(x: f64) -> f64 { var s = x; for t in 0..3 { s = sin(s) * x; } s }\n"
                    "fn f(x: f64) -> f64 { (if x > 0.0 { 0.5 } else { h(x) }) * x }";
  for (double x : {-0.5, 0.5}) {
    auto r = valueAndGradient(src, "f", {scalar(x)}, GetParam());
    // Forward: s1 = sin(x) x, s2 = sin(s1) x, s3 = sin(s2) x; f = s3 x (x < 0) or 0.5 x.
    double s = x, ds = 1;
    for (int t = 0; t < 3; ++t) {
      ds = std::cos(s) * ds * x + std::sin(s);
      s = std::sin(s) * x;
    }
    double want = x > 0 ? 0.5 * x : s * x, dwant = x > 0 ? 0.5 : ds * x + s;
    EXPECT_NEAR(r[0].getF(0), want, 1e-15);
    EXPECT_NEAR(r[1].getF(0), dwant, 1e-15);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, WrongNumbers, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? "jit" : "interp";
                         });

} // namespace
} // namespace slope
