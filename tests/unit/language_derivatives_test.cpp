// Derivatives in the language (v3): grad(f)(...), jvp(f)(...) and hvp(f)(...) inside a Slope
// function. Three checks: what the call returns is what Program::gradient / jvp / hvp compute
// for f (the same function, inlined); the derivative of a function that calls one, in forward
// mode, against central differences (reverse mode where the inlined derivative became values,
// and a clear refusal where it keeps accumulators or tapes); and the seed example's numbers.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <cmath>

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

// Reverse mode: through a derivative that became values it runs, and matches differences;
// through one that keeps accumulators, tapes or tangent vars it refuses, naming the function.
TEST(LanguageDerivatives, ReverseModeRunsOrRefuses) {
  auto p = program();
  for (const char* name : {"newton", "slope_at"}) {
    ir::Function f = p->forward(name);
    for (uint64_t seed = 0; seed < 3; ++seed) {
      GradCheckResult r = checkGradient(f, randomArgs(f, {}, seed), {});
      for (const auto& pc : r.params)
        EXPECT_TRUE(pc.passed) << name << " " << pc.name << ": " << pc.maxAbsErr;
    }
  }
  for (const char* name : {"penalty", "directional", "curvature"}) {
    try {
      p->gradient(name, {});
      ADD_FAILURE() << name << ": reverse mode did not refuse";
    } catch (const GradError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + name + "' calls a derivative"),
                std::string::npos)
          << e.what();
    }
  }
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

} // namespace
} // namespace slope
