// User derivative rules (`@derivative(f) fn r(...)`, README, "User derivative rules"). Each case is
// checked twice over, with the rules written correctly (SCALE = 1) and with a factor 2 put into
// each (SCALE = 2, a rule that disagrees with the function on purpose):
// - correct rules: the gradient equals the one reverse mode derives from the bodies (the same
//   file with the attributes commented out), on the evaluator and the JIT; it passes the
//   finite-difference check; and forward mode and the HVP pass theirs (checkForward);
// - rules times 2: the gradient changes (so the rule is what reverse mode used), the JIT agrees
//   with the evaluator, and forward mode, which reads the same rule, still satisfies
//   <u, J v> = <J^T u, v> with the reverse mode of that rule.

#include "compiler/codegen/execute.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "program_gen.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>

namespace slope {
namespace {

const char* kSource = R"(
fn softplus1(x: f64) -> f64 { log(1 + exp(x)) }
@derivative(softplus1)
fn softplus1_vjp(x: f64, g: f64) -> f64 { SCALE * g * sigmoid(x) }

fn unit(x: f64[n]) -> f64[n] { x / sqrt(sum(x^2)) }
@derivative(unit)
fn unit_vjp(x: f64[n], g: f64[n]) -> f64[n] {
  let r = sqrt(sum(x^2));
  let y = x / r;
  SCALE * (g - y * sum(g * y)) / r
}

fn wpow(x: f64, w: f64, k: i64) -> f64 { w * x^k }
@derivative(wpow)
fn wpow_vjp(x: f64, w: f64, k: i64, g: f64) -> (f64, f64) {
  (SCALE * g * w * f64(k) * x^(k - 1), g * x^k)
}

fn mv(A: f64[n, m], v: f64[m]) -> f64[n] {
  let y[i] = sum[j](A[i, j] * v[j]);
  y
}
@derivative(mv)
fn mv_vjp(A: f64[n, m], v: f64[m], g: f64[n]) -> (f64[n, m], f64[m]) {
  let dA[i, j] = SCALE * g[i] * v[j];
  let dv[j] = sum[i](A[i, j] * g[i]);
  (dA, dv)
}

// The rule calls the function itself (there, its plain computation).
fn sq(x: f64) -> f64 { x * x }
@derivative(sq)
fn sq_vjp(x: f64, g: f64) -> f64 { SCALE * 2 * g * sq(x) / x }

fn t_elem(x: f64[n]) -> f64 { sum[i](softplus1(x[i]) * x[i]) }
fn t_unit(x: f64[n], w: f64[n]) -> f64 { sum(unit(x) * w) + sum(unit(x * w)) }
fn t_wpow(x: f64[n]) -> f64 { sum[i](wpow(x[i], 0.5 + x[i], 3)) }
fn t_mv(A: f64[n, m], v: f64[m]) -> f64 { sum(tanh(mv(A, v))) }
fn t_vec(A: f64[n, m], v: f64[m]) -> f64[n] { 2 * mv(A, v) + v[0] }
fn t_rows(A: f64[n, m]) -> f64 { sum[i](unit(A[i])[0] * softplus1(A[i, 0])) }
fn t_if(x: f64[n]) -> f64 { if x[0] > 0 { softplus1(x[1]) * 3 } else { sum(unit(x)) } }
fn t_loop(x: f64[n], T: i64) -> f64 {
  var s = 0.0;
  for t in 0..T + 2 { s = softplus1(s * 0.5 + x[0]) + sum(unit(x)) * 0.1; }
  s
}
fn t_sq(x: f64[n]) -> f64 { sum[i](sq(x[i]) * x[i]) + sq(x[0]) }
fn t_pen(x: f64[n]) -> f64 {
  let (v, g) = grad(t_elem)(x);
  v + sum(g^2)
}
)";

const char* kCases[] = {"softplus1", "t_elem", "t_unit", "t_wpow", "t_mv", "t_vec",
                        "t_rows",    "t_if",   "t_loop", "t_sq",   "t_pen"};

std::string withScale(const char* scale, bool attributes = true) {
  std::string s = kSource;
  for (size_t p; (p = s.find("SCALE")) != std::string::npos;)
    s.replace(p, 5, scale);
  if (!attributes)
    for (size_t p = 0; (p = s.find("@derivative", p)) != std::string::npos; p += 14)
      s.insert(p, "// ");
  return s;
}

std::unique_ptr<Program> compile(const std::string& text) {
  auto p = Program::fromString("rules.slope", text);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p;
}

const std::map<std::string, int64_t> kSizes = {{"n", 4}, {"m", 3}};

double maxRelDiff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t k = 0; k < a.size() && k < b.size(); ++k) {
    EXPECT_EQ(a[k].numel(), b[k].numel());
    for (int64_t i = 0; i < a[k].numel() && i < b[k].numel(); ++i)
      worst =
          std::max(worst, std::fabs(a[k].getF(i) - b[k].getF(i)) / (1 + std::fabs(b[k].getF(i))));
  }
  return worst;
}

class DerivativeRules : public ::testing::TestWithParam<const char*> {};

TEST_P(DerivativeRules, CorrectRulesGiveTheDerivedGradient) {
  const char* name = GetParam();
  auto withRules = compile(withScale("1.0")), plain = compile(withScale("1.0", false));
  ir::Function g = withRules->gradient(name, {}), want = plain->gradient(name, {});
  InterpRunner interp;
  JitRunner jit;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    std::vector<Tensor> args = randomArgs(g, kSizes, seed);
    std::vector<Tensor> got = interp.prepare(g)(args);
    EXPECT_LT(maxRelDiff(got, interp.prepare(want)(args)), 1e-10) << name << " seed " << seed;
    EXPECT_LT(maxRelDiff(jit.prepare(g)(args), got), 1e-12) << name << " (JIT) seed " << seed;
  }
  ir::Function f = withRules->forward(name);
  for (uint64_t seed = 0; seed < 3; ++seed) {
    std::vector<Tensor> args = randomArgs(f, kSizes, seed);
    GradCheckResult r = checkGradient(f, args);
    EXPECT_TRUE(r.passed) << name << " seed " << seed << " " << r.notFinite;
    ForwardCheckResult fc = checkForward(f, args);
    EXPECT_TRUE(fc.passed) << name << " seed " << seed << ": " << fc.failure << fc.notFinite;
  }
}

TEST_P(DerivativeRules, ReverseModeUsesTheRuleAndForwardModeAgreesWithIt) {
  const char* name = GetParam();
  auto one = compile(withScale("1.0")), two = compile(withScale("2.0"));
  ir::Function g1 = one->gradient(name, {}), g2 = two->gradient(name, {});
  InterpRunner interp;
  JitRunner jit;
  double changed = 0;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    std::vector<Tensor> args = randomArgs(g2, kSizes, seed);
    std::vector<Tensor> got = interp.prepare(g2)(args);
    changed = std::max(changed, maxRelDiff(got, interp.prepare(g1)(args)));
    EXPECT_LT(maxRelDiff(jit.prepare(g2)(args), got), 1e-12) << name << " (JIT) seed " << seed;
  }
  EXPECT_GT(changed, 1e-3) << name << ": the gradient did not change with the rule";
  ir::Function f = two->forward(name);
  for (uint64_t seed = 0; seed < 3; ++seed) {
    ForwardCheckResult fc = checkForward(f, randomArgs(f, kSizes, seed));
    EXPECT_NEAR(fc.uJv, fc.JTuv, 1e-10 * (1 + std::fabs(fc.JTuv))) << name << " seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DerivativeRules, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

// The seed example with a rule: y = 2x^2 + 3x + 1, whose rule says 4x + 3; 11 at x = 2, on the
// evaluator and the JIT, through `slopec`'s pipeline. And the rule is a VJP: a factor of the
// cotangent carries through a call in a larger expression.
TEST(DerivativeRulesKnownValues, SeedExample) {
  auto p = compile("fn y(x: f64) -> f64 { 2 * x^2 + 3 * x + 1 }\n"
                   "@derivative(y)\n"
                   "fn y_vjp(x: f64, g: f64) -> f64 { g * (4 * x + 3) }\n"
                   "fn z(x: f64) -> f64 { 5 * y(x) }\n");
  InterpRunner interp;
  JitRunner jit;
  Tensor two = Tensor::scalar(DType::F64, 2.0);
  for (Runner* r : {static_cast<Runner*>(&interp), static_cast<Runner*>(&jit)}) {
    std::vector<Tensor> out = r->prepare(p->gradient("y", {}))({two});
    EXPECT_EQ(out[0].getF(0), 15.0);
    EXPECT_EQ(out[1].getF(0), 11.0);
    EXPECT_EQ(r->prepare(p->gradient("z", {}))({two})[1].getF(0), 55.0);
    std::vector<Tensor> jv = r->prepare(p->jvp("z", {}))({two, Tensor::scalar(DType::F64, 1.0)});
    EXPECT_EQ(jv[1].getF(0), 55.0);
    // The HVP differentiates the rule: d/dx 5 (4x + 3) = 20.
    EXPECT_EQ(r->prepare(p->hvp("z", {}))({two, Tensor::scalar(DType::F64, 1.0)})[2].getF(0), 20.0);
  }
}

// A rule that disagrees with its function is what `slopec check` is for: the check fails, and
// says where.
TEST(DerivativeRulesKnownValues, CheckFindsAWrongRule) {
  auto p = compile("fn f(x: f64[n]) -> f64 { sum(x^3) }\n"
                   "@derivative(f)\n"
                   "fn f_vjp(x: f64[n], g: f64) -> f64[n] { 3 * g * x^2 + 0.01 }\n");
  ir::Function f = p->forward("f");
  GradCheckResult r = checkGradient(f, randomArgs(f, kSizes, 0));
  EXPECT_FALSE(r.passed);
  ASSERT_EQ(r.params.size(), 1u);
  EXPECT_NEAR(r.params[0].maxAbsErr, 0.01, 1e-6);
}

// A rule over everything the random program tests generate: each program's f gets the rule
// made of its own gradient (`let (_, g1, ...) = grad(f)(...)`, inlined plainly inside the
// rule), so reverse mode through the rule, forward mode through its transposition, and the
// HVP over it must give what f's derivatives give without a rule, on the evaluator and the
// JIT. SLOPE_RULE_GEN_PROGRAMS and SLOPE_GEN_SEED choose the seeds.
TEST(DerivativeRulesRandomPrograms, TheirOwnGradientAsARule) {
  const int64_t count = gen::envInt("SLOPE_RULE_GEN_PROGRAMS", 30),
                start = gen::envInt("SLOPE_GEN_SEED", 0);
  InterpRunner interp;
  JitRunner jit;
  int checked = 0;
  for (int64_t seed = start; seed < start + count; ++seed) {
    gen::Prog prog = gen::generate(static_cast<uint64_t>(seed));
    std::string src = gen::print(prog);
    auto p0 = Program::fromString("gen.slope", src);
    ASSERT_TRUE(p0->ok()) << p0->diagnostics();
    ir::Function f = p0->forward("f");
    if (f.body.yields.size() != 1 || f.types[f.body.yields[0]].rank() != 0 ||
        !isFloat(f.types[f.body.yields[0]].dtype))
      continue;
    const std::string rt = f.types[f.body.yields[0]].str();
    std::string params, args, names = "_", results, types;
    int grads = 0;
    for (size_t k = 0; k < f.paramNames.size(); ++k) {
      const ir::Type& t = f.paramTypes[k];
      params += f.paramNames[k] + ": " + t.str() + ", ";
      args += (k ? ", " : "") + f.paramNames[k];
      if (!isFloat(t.dtype)) continue;
      std::string g = "d" + std::to_string(++grads) + "_";
      names += ", " + g;
      results += std::string(grads > 1 ? ", " : "") + "cot_ * " + g;
      types += std::string(grads > 1 ? ", " : "") + t.str();
    }
    if (grads == 0) continue;
    if (grads > 1) results = "(" + results + ")", types = "(" + types + ")";
    src += "\n@derivative(f)\nfn f_rule(" + params + "cot_: " + rt + ") -> " + types +
           " {\n  let (" + names + ") = grad(f)(" + args + ");\n  " + results + "\n}\n";
    auto p1 = Program::fromString("rule.slope", src);
    ASSERT_TRUE(p1->ok()) << p1->diagnostics() << src;
    const std::map<std::string, int64_t> sizes = {{"n", prog.n}, {"m", prog.m}};
    std::vector<Tensor> in = randomArgs(f, sizes, static_cast<uint64_t>(seed) * 31 + 7);
    std::vector<Tensor> want, got;
    try {
      want = interp.prepare(p0->gradient("f", {}))(in);
    } catch (const std::exception&) { // what the test of random programs covers
      continue;
    }
    bool finite = true, large = false;
    for (const Tensor& t : want)
      for (int64_t i = 0; i < t.numel(); ++i) {
        finite = finite && std::isfinite(t.getF(i));
        large = large || std::fabs(t.getF(i)) > 1e6;
      }
    if (!finite || large) continue;
    double tol = prog.f32 ? 1e-5 : 1e-11;
    try {
      ir::Function g = p1->gradient("f", {});
      got = interp.prepare(g)(in);
      EXPECT_LT(maxRelDiff(got, want), tol) << "seed " << seed << "\n" << src;
      EXPECT_LT(maxRelDiff(jit.prepare(g)(in), got), tol) << "seed " << seed << " (JIT)\n" << src;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << ": " << e.what() << "\n" << src;
      continue;
    }
    ++checked;
    // Forward mode through the rule, against forward mode through f's body.
    std::vector<Tensor> jin = in, tangents = randomArgs(f, sizes, static_cast<uint64_t>(seed) + 99);
    for (size_t k = 0; k < f.paramTypes.size(); ++k)
      if (isFloat(f.paramTypes[k].dtype)) jin.push_back(tangents[k]);
    try {
      std::vector<Tensor> jv0 = interp.prepare(p0->jvp("f", {}))(jin);
      std::vector<Tensor> jv1 = interp.prepare(p1->jvp("f", {}))(jin);
      EXPECT_LT(maxRelDiff(jv1, jv0), prog.f32 ? 1e-4 : 1e-9) << "seed " << seed << " (JVP)\n"
                                                              << src;
    } catch (const GradError&) { // forward mode's own limits, through f's body
    }
  }
  std::cout << "rules made of their function's gradient: " << checked << " of " << count
            << " programs checked\n";
  EXPECT_GT(checked, count / 4);
}

} // namespace
} // namespace slope
