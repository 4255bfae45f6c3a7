// Derivatives in the language (v3): grad(f)(...), jvp(f)(...) and hvp(f)(...) inside a Slope
// function. Three checks: what the call returns is what Program::gradient / jvp / hvp compute
// for f (the same function, inlined); the derivative of a function that calls one, in forward
// and reverse mode, against central differences, also over random programs; and the seed
// example's numbers.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/ir/builder.hpp"
#include "compiler/pipeline.hpp"
#include "program_gen.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

namespace slope {
namespace {

const char* kSource = R"(
fn h(x: f64[n], A: f64[n, m]) -> f64 { sum(0.5 * x^2 + sin(x)) + sum(tanh(A) * x[0]) }
fn q(x: f64[n], s: f64) -> f64 {
  var acc = 0.0;
  for t in 0..n { acc = acc * 0.5 + s * x[t]^2; }
  acc
}
fn r(x: f64, s: f64) -> f64 { exp(s * x) + x^4 }

// Each returns a derivative's results, as a tuple, so they can be compared with f's.
fn use_grad(x: f64[n], A: f64[n, m]) -> (f64, f64[n], f64[n, m]) {
  let (v, gx, gA) = grad(h)(x, A);
  (v, gx, gA)
}
fn use_jvp(x: f64[n], s: f64, dx: f64[n], ds: f64) -> (f64, f64) {
  let (y, dy) = jvp(q)(x, s, dx, ds);
  (y, dy)
}
fn use_hvp(x: f64[n], s: f64, vx: f64[n]) -> (f64, f64[n], f64[n]) {
  let (y, g, hv) = hvp(q, x)(x, s, vx);
  (y, g, hv)
}

// Scalar functions of derivatives, to differentiate in turn.
fn penalty(x: f64[n], A: f64[n, m]) -> f64 {
  let (v, gx, gA) = grad(h)(x, A);
  v * sum(gx^2) + sum(gA * A)
}
fn directional(x: f64[n], v: f64[n]) -> f64 {
  let (y, dy) = jvp(q, x)(x, 1.5, v);
  y * dy + dy^2
}
fn curvature(x: f64[n], v: f64[n]) -> f64 {
  let (y, g, hv) = hvp(q, x)(x, 1.5, v);
  y + sum(g * hv)
}
fn newton(x: f64, s: f64) -> f64 {
  let (y, gx, gs, hx, hs) = hvp(r)(x, s, 1.0, 0.0);
  y - gx / hx + gs * hs
}
fn quadratic(x: f64) -> f64 { 2 * x^2 + 3 * x + 1 }
fn slope_at(x: f64) -> f64 {
  let (_, g) = grad(quadratic)(x);
  g
}
)";

std::unique_ptr<Program> program() {
  auto p = Program::fromString("language.slope", kSource);
  EXPECT_TRUE(p->ok()) << p->diagnostics();
  return p;
}

void expectSame(const std::vector<Tensor>& got, const std::vector<Tensor>& want,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_EQ(got[k].numel(), want[k].numel()) << what << " result " << k;
    for (int64_t i = 0; i < got[k].numel(); ++i)
      EXPECT_NEAR(got[k].getF(i), want[k].getF(i), 1e-12 * (1 + std::fabs(want[k].getF(i))))
          << what << " result " << k << " element " << i;
  }
}

// The language's derivative returns what the derivative function of the API returns, on the
// evaluator and on the JIT.
TEST(LanguageDerivatives, ReturnWhatTheApiComputes) {
  auto p = program();
  InterpRunner interp;
  JitRunner jit;
  const std::map<std::string, int64_t> sizes = {{"n", 4}, {"m", 3}};
  struct Pair {
    const char* caller;
    ir::Function want;
  };
  std::vector<Pair> pairs = {{"use_grad", p->gradient("h", {})},
                             {"use_jvp", p->jvp("q", {})},
                             {"use_hvp", p->hvp("q", {"x"})}};
  for (const Pair& pr : pairs) {
    ir::Function caller = p->forward(pr.caller);
    for (uint64_t seed = 0; seed < 3; ++seed) {
      std::vector<Tensor> args = randomArgs(caller, sizes, seed);
      std::vector<Tensor> want = interp.prepare(pr.want)(args);
      expectSame(interp.prepare(caller)(args), want, std::string(pr.caller) + " (evaluator)");
      expectSame(jit.prepare(caller)(args), want, std::string(pr.caller) + " (JIT)");
    }
  }
}

// Forward mode through an inlined derivative (forward over reverse, over forward, over forward
// over reverse): the JVP of the caller against a central difference along the tangent.
TEST(LanguageDerivatives, ForwardModeThroughThemMatchesDifferences) {
  auto p = program();
  InterpRunner interp;
  for (const char* name : {"penalty", "directional", "curvature", "newton"}) {
    ir::Function f = p->forward(name);
    Runnable value = interp.prepare(f);
    Runnable tangent = interp.prepare(p->jvp(name, {}));
    for (uint64_t seed = 0; seed < 3; ++seed) {
      std::vector<Tensor> args = randomArgs(f, {{"n", 3}, {"m", 2}}, seed);
      std::vector<Tensor> dirs = randomArgs(f, {{"n", 3}, {"m", 2}}, seed + 100);
      std::vector<Tensor> in = args;
      in.insert(in.end(), dirs.begin(), dirs.end());
      double jv = tangent(in).back().getF(0);
      const double h = 1e-5;
      auto at = [&](double t) {
        std::vector<Tensor> a = args;
        for (size_t k = 0; k < a.size(); ++k)
          for (int64_t i = 0; i < a[k].numel(); ++i)
            a[k].setF(i, args[k].getF(i) + t * dirs[k].getF(i));
        return value(a)[0].getF(0);
      };
      double fd = (at(h) - at(-h)) / (2 * h);
      EXPECT_NEAR(jv, fd, 1e-6 * (1 + std::fabs(fd))) << name << " seed " << seed;
    }
  }
}

// Reverse mode through an inlined derivative (reverse over reverse, over forward, over forward
// over reverse) against central differences; and the one construct it refuses, the adjoint of
// an `if`, refused with the function's name rather than differentiated wrongly.
TEST(LanguageDerivatives, ReverseModeThroughThemMatchesDifferencesOrRefuses) {
  auto p = program();
  for (const char* name : {"penalty", "directional", "curvature", "newton", "slope_at"}) {
    ir::Function f = p->forward(name);
    for (uint64_t seed = 0; seed < 3; ++seed) {
      GradCheckResult r = checkGradient(f, randomArgs(f, {{"n", 3}, {"m", 2}}, seed), {});
      EXPECT_TRUE(r.passed) << name << " seed " << seed << " " << r.notFinite;
      for (const auto& pc : r.params)
        EXPECT_TRUE(pc.passed) << name << " " << pc.name << ": " << pc.maxAbsErr;
    }
  }
  auto q = Program::fromString("if.slope",
                               "fn f(x: f64) -> f64 { if x > 0 { x^3 } else { sin(x) } }\n"
                               "fn pen(x: f64) -> f64 { let (v, g) = grad(f)(x); v + g * g }\n");
  ASSERT_TRUE(q->ok()) << q->diagnostics();
  try {
    q->gradient("pen", {});
    ADD_FAILURE() << "reverse mode did not refuse the adjoint of an if";
  } catch (const GradError& e) {
    EXPECT_NE(std::string(e.what()).find("'pen' calls a derivative"), std::string::npos)
        << e.what();
  }
  // Forward mode through it is fine: d/dx (x^3 + 9 x^4) at 0.5 is 0.75 + 4.5.
  InterpRunner interp;
  std::vector<Tensor> out = interp.prepare(q->jvp("pen", {}))(
      {Tensor::scalar(DType::F64, 0.5), Tensor::scalar(DType::F64, 1.0)});
  EXPECT_NEAR(out[1].getF(0), 0.75 + 4.5, 1e-12);
}

// The seed example, through the language: d/dx (2x^2 + 3x + 1) at 2 is 11, and its
// derivative 4; a Newton step on exp(s x) + x^4.
TEST(LanguageDerivatives, KnownValues) {
  auto p = program();
  InterpRunner interp;
  Tensor two = Tensor::scalar(DType::F64, 2.0);
  EXPECT_EQ(interp.prepare(p->forward("slope_at"))({two})[0].getF(0), 11.0);
  EXPECT_EQ(interp.prepare(p->gradient("slope_at", {}))({two})[1].getF(0), 4.0);
  // newton(x, s) = r - r_x / r_xx + r_s * r_ss at x = 1, s = 0: r = 2, r_x = 4, r_xx = 12,
  // r_s = x e^(s x) = 1, r_ss = x^2 e^(s x) = 1.
  double got = interp
                   .prepare(p->forward("newton"))(
                       {Tensor::scalar(DType::F64, 1.0), Tensor::scalar(DType::F64, 0.0)})[0]
                   .getF(0);
  EXPECT_NEAR(got, 2.0 - 4.0 / 12.0 + 1.0, 1e-15);
}

// Gradient penalties of random programs: for each program of the random program tests whose
// f returns one float scalar, `pen` adds the squares of f's gradient (grad(f) inlined) to its
// value, and pen's gradient (reverse over reverse) is checked against central differences,
// on the evaluator and the JIT, and pen's JVP (forward over reverse) against the VJP and
// differences. SLOPE_LANG_GEN_PROGRAMS and SLOPE_GEN_SEED choose the seeds.
TEST(LanguageDerivatives, GradientPenaltiesOfRandomPrograms) {
  const int64_t count = gen::envInt("SLOPE_LANG_GEN_PROGRAMS", 40),
                start = gen::envInt("SLOPE_GEN_SEED", 0);
  JitRunner jit;
  int checked = 0, refused = 0, forwardRefused = 0;
  for (int64_t seed = start; seed < start + count; ++seed) {
    gen::Prog prog = gen::generate(static_cast<uint64_t>(seed));
    std::string src = gen::print(prog);
    auto p0 = Program::fromString("gen.slope", src);
    ASSERT_TRUE(p0->ok()) << p0->diagnostics();
    ir::Function f = p0->forward("f");
    if (f.body.yields.size() != 1 || f.types[f.body.yields[0]].rank() != 0 ||
        !isFloat(f.types[f.body.yields[0]].dtype))
      continue;
    std::string params, args, names = "v", terms = "v";
    int grads = 0;
    for (size_t k = 0; k < f.paramNames.size(); ++k) {
      const ir::Type& t = f.paramTypes[k];
      params += (k ? ", " : "") + f.paramNames[k] + ": " + t.str();
      args += (k ? ", " : "") + f.paramNames[k];
      if (!isFloat(t.dtype)) continue;
      std::string g = "g" + std::to_string(++grads);
      names += ", " + g;
      terms += t.rank() == 0 ? " + " + g + " * " + g : " + sum(" + g + " * " + g + ")";
    }
    if (grads == 0) continue;
    src += "\nfn pen(" + params + ") -> " + f.types[f.body.yields[0]].str() + " {\n  let (" +
           names + ") = grad(f)(" + args + ");\n  " + terms + "\n}\n";
    auto prog2 = Program::fromString("pen.slope", src);
    ASSERT_TRUE(prog2->ok()) << prog2->diagnostics() << src;
    ir::Function pen = prog2->forward("pen");
    std::vector<Tensor> in = randomArgs(pen, {{"n", prog.n}, {"m", prog.m}}, seed * 31 + 5);
    GradCheckResult r;
    try {
      // (The evaluator reads a value used out of its scope as whatever it last was; generated
      // code does not compile. Seed 1300 had one, through two copies of a var write.)
      EXPECT_EQ(ir::scopeError(prog2->gradient("pen", {})), "") << "seed " << seed << "\n" << src;
      r = checkGradient(pen, in, {});
    } catch (const GradError& e) { // what reverse mode refuses, it says (an `if`'s adjoint)
      EXPECT_NE(std::string(e.what()).find("'pen' calls a derivative"), std::string::npos)
          << e.what();
      ++refused;
      continue;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << ": " << e.what() << "\n" << src;
      continue;
    }
    if (!r.notFinite.empty()) continue;
    bool large = false; // values where differences say little (as the random program tests)
    for (const Tensor& t : evaluate(pen, in))
      for (int64_t i = 0; i < t.numel(); ++i)
        large = large || std::fabs(t.getF(i)) > 1e6;
    if (large) continue;
    ++checked;
    for (const auto& pc : r.params)
      EXPECT_TRUE(pc.passed) << "seed " << seed << " param " << pc.name << ": max_abs_err "
                             << pc.maxAbsErr << " max_rel_err " << pc.maxRelErr << "\n"
                             << src;
    try {
      GradCheckResult rj = checkGradient(pen, in, {}, &jit);
      for (const auto& pc : rj.params)
        EXPECT_TRUE(pc.passed) << "seed " << seed << " (JIT) param " << pc.name << "\n" << src;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << " (JIT): " << e.what() << "\n" << src;
    }
    // (In f32 the HVP of pen, a third derivative of f, is within rounding of differences of
    // an f32 gradient only loosely: seed 1413 is off by 3e-3. The JVP and HVP of f64 programs
    // are checked.)
    if (prog.f32) continue;
    GradCheckOptions fo;
    fo.seed = static_cast<uint64_t>(seed);
    ForwardCheckResult fr;
    try {
      fr = checkForward(pen, in, fo);
    } catch (const GradError&) { // forward mode's own limits: said, not wrong
      ++forwardRefused;
      continue;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "seed " << seed << " (forward mode): " << e.what() << "\n" << src;
      continue;
    }
    if (fr.notFinite.empty()) {
      EXPECT_TRUE(fr.passed) << "seed " << seed << " forward mode: " << fr.failure << "\n" << src;
    }
  }
  std::cout << "gradient penalties of " << count << " programs: " << checked
            << " checked in reverse mode (" << forwardRefused << " of them not in forward mode), "
            << refused << " refused\n";
  EXPECT_GT(checked, count / 4);
}

// The scope check that the random penalties run finds a value used outside its region.
TEST(LanguageDerivatives, ScopeErrorFindsAValueUsedOutsideItsRegion) {
  ir::Function f;
  f.name = "bad";
  ir::Builder b(f);
  int inner = -1;
  b.region(ir::Op::Comp, {Poly(2)}, ir::Type{DType::F64, {Poly(2)}},
           [&](const std::vector<int>& idx) {
             inner = b.cast(idx[0], DType::F64);
             return inner;
           });
  EXPECT_EQ(ir::scopeError(f), "");
  f.body.yields.push_back(b.unary(ir::Op::Neg, inner));
  EXPECT_NE(ir::scopeError(f).find("used out of scope"), std::string::npos) << ir::scopeError(f);
}

} // namespace
} // namespace slope
