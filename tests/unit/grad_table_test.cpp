// The gradient table: one small function per op (or construct), each differentiated by the
// reverse-mode pass, run by the reference evaluator and compared with central finite
// differences, in f64 and f32 and at several shapes. A second test checks that together the
// cases exercise every differentiable op in compiler/ir/ops.def.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/autodiff/rules.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/sparsity.hpp"
#include "grad_cases.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <regex>
#include <set>

namespace slope {
namespace {

class GradTable : public ::testing::TestWithParam<CaseParam> {};

TEST_P(GradTable, MatchesFiniteDifferences) {
  const CaseParam& p = GetParam();
  std::string src = instantiate(p.c->source, p.dtype);
  auto prog = Program::fromString(std::string(p.c->name) + ".slope", src);
  ASSERT_TRUE(prog->ok()) << prog->diagnostics() << src;
  ir::Function f = prog->forward("f");
  const std::vector<std::map<std::string, int64_t>> shapes = {
      {}, {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 5}}};
  for (const auto& sizes : shapes) {
    for (uint64_t seed = 0; seed < 3; ++seed) {
      std::vector<Tensor> args = randomArgs(f, sizes, seed);
      GradCheckResult r = checkGradient(f, args, {});
      for (const auto& pc : r.params)
        EXPECT_TRUE(pc.passed) << p.c->name << " (" << p.dtype << ") param " << pc.name << " seed "
                               << seed << " n=" << args[0].numel() << ": max_abs_err "
                               << pc.maxAbsErr << " max_rel_err " << pc.maxRelErr;
    }
  }
}

// Forward mode on the same cases: the JVP against the VJP (<u, J v> = <J^T u, v>) and finite
// differences, and the HVP against differences of the gradient.
TEST_P(GradTable, ForwardModeMatches) {
  const CaseParam& p = GetParam();
  std::string src = instantiate(p.c->source, p.dtype);
  auto prog = Program::fromString(std::string(p.c->name) + ".slope", src);
  ASSERT_TRUE(prog->ok()) << prog->diagnostics() << src;
  ir::Function f = prog->forward("f");
  const std::vector<std::map<std::string, int64_t>> shapes = {
      {}, {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 5}}};
  int hvps = 0;
  for (const auto& sizes : shapes) {
    for (uint64_t seed = 0; seed < 3; ++seed) {
      std::vector<Tensor> args = randomArgs(f, sizes, seed);
      GradCheckOptions opt;
      opt.seed = seed;
      ForwardCheckResult r = checkForward(f, args, opt);
      if (!r.notFinite.empty()) continue;
      EXPECT_TRUE(r.passed) << p.c->name << " (" << p.dtype << ") seed " << seed
                            << " n=" << args[0].numel() << ": " << r.failure;
      hvps += r.hvpChecked;
      // Every op has a second derivative (lgamma's is trigamma): no HVP is left out.
      EXPECT_EQ(r.hvpSkipped, "") << p.c->name;
    }
  }
  (void)hvps;
}

// A compressed Jacobian or Hessian (pattern and values) against the dense one, entry by entry.
void expectSameAsDense(const SparsityPattern& pat, const std::vector<double>& values,
                       const Tensor& dense, const std::string& name) {
  std::vector<double> fromSparse = toDense(pat, values);
  for (int64_t i = 0; i < dense.numel(); ++i) {
    double want = dense.getF(i), got = fromSparse[static_cast<size_t>(i)];
    if (std::isnan(want) && std::isnan(got)) continue;
    EXPECT_NEAR(got, want, 1e-12 * (1 + std::fabs(want)))
        << name << " entry (" << i / pat.cols << ", " << i % pat.cols << ")";
  }
}

// Sparse Jacobians on the same cases: the pattern read off the IR holds every nonzero of the
// dense Jacobian (JVP per column), and the compressed Jacobian (a JVP per colour) has the dense
// one's values.
void sparseJacobianCase(const CaseParam& p) {
  auto prog =
      Program::fromString(std::string(p.c->name) + ".slope", instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok());
  ir::Function f = prog->forward("f");
  ir::Function j = jvp(f, {});
  simplify(j);
  returnBuffersInPlace(j);
  InterpRunner interp;
  Runnable jvpFn = interp.prepare(j);
  ir::Function j2 = jvp(f, {}, 2);
  simplify(j2);
  returnBuffersInPlace(j2);
  Runnable jvp2 = interp.prepare(j2);
  std::vector<std::string> wrt = resolveWrt(f, {});
  for (const auto& sizes : std::vector<std::map<std::string, int64_t>>{
           {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 3}}}) {
    std::vector<Tensor> args = randomArgs(f, sizes, 3);
    std::optional<SparsityPattern> pat = jacobianSparsity(f, args, wrt);
    if (!pat) continue; // (dense then)
    DenseDerivative d = denseJacobian(f, wrt, args, "forward", jvpFn, jvpFn);
    SparseJacobian s = sparseJacobian(f, wrt, args, *pat, jvpFn);
    ASSERT_EQ(pat->rows, d.matrix.shape()[0]);
    ASSERT_EQ(pat->cols, d.matrix.shape()[1]);
    expectSameAsDense(*pat, s.values, d.matrix, p.c->name);
    // Batched, two directions a call: the same Jacobian, dense and compressed.
    SparseJacobian sb = sparseJacobian(f, wrt, args, *pat, Directional(jvp2, 2));
    expectSameAsDense(*pat, sb.values, d.matrix, p.c->name + std::string(" (batch 2)"));
    DenseDerivative db = denseJacobian(f, wrt, args, "forward", Directional(jvp2, 2), jvpFn);
    EXPECT_EQ(db.calls, (d.calls + 1) / 2);
    expectSameAsDense(
        densePattern(pat->rows, pat->cols),
        std::vector<double>(db.matrix.data<double>(), db.matrix.data<double>() + db.matrix.numel()),
        d.matrix, p.c->name + std::string(" (dense, batch 2)"));
  }
}

TEST(GradTableSparse, JacobianPatternHoldsEveryNonzero) {
  for (const CaseParam& p : allCaseParams()) {
    if (p.dtype != std::string("f64")) continue;
    SCOPED_TRACE(p.c->name);
    sparseJacobianCase(p);
  }
}

// The JVP compiled for its seeds (jvpSeeded: the tangents constants of the code, lanes that
// no seed reaches structurally zero) against the batched JVP run along the same one-hot
// tangents, on every case: the same values and the same lanes. Each parameter seeds one lane
// (drawn at random, or none) or, where its last extent is a literal, a lane per last index.
// The lanes can differ only where a partial is not finite (0 * inf is 0 there, NaN here).
void seededJvpCase(const CaseParam& p, uint64_t draw) {
  auto prog =
      Program::fromString(std::string(p.c->name) + ".slope", instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok());
  ir::Function f = prog->forward("f");
  const std::vector<std::string> wrt = resolveWrt(f, {});
  const int K = 3;
  std::mt19937_64 rng(draw * 7919 + 17);
  Seeds seeds;
  for (size_t q : wrtParams(f, wrt)) {
    const ir::Type& t = f.paramTypes[q];
    const int64_t last = t.rank() > 0 ? t.shape.back().constValue().value_or(0) : 0;
    std::vector<int>& s = seeds[f.paramNames[q]];
    if (last > 1 && rng() % 2) {
      for (int64_t k = 0; k < last; ++k)
        s.push_back(static_cast<int>(rng() % (K + 1)) - 1);
    } else {
      s.push_back(static_cast<int>(rng() % (K + 1)) - 1);
    }
  }
  ir::Function js;
  ir::Function jb = prog->jvp("f", wrt, K);
  js = prog->jvpSeeded("f", wrt, K, seeds);
  InterpRunner interp;
  Runnable batched = interp.prepare(jb), seeded = interp.prepare(js);
  for (const auto& sizes : std::vector<std::map<std::string, int64_t>>{
           {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 3}}}) {
    std::vector<Tensor> args = randomArgs(f, sizes, draw);
    std::vector<Tensor> withTangents = args;
    for (size_t q : wrtParams(f, wrt)) { // the one-hot tangents the seeds stand for
      std::vector<int64_t> shape = args[q].shape();
      const int64_t n = args[q].numel();
      const int64_t last = shape.empty() ? 1 : shape.back();
      shape.push_back(K);
      Tensor t(args[q].dtype(), shape);
      const std::vector<int>& s = seeds.at(f.paramNames[q]);
      for (int64_t i = 0; i < n; ++i) {
        int lane = s.size() == 1 ? s[0] : s[static_cast<size_t>(i % last)];
        if (lane >= 0) t.setF(i * K + lane, 1);
      }
      withTangents.push_back(std::move(t));
    }
    std::vector<Tensor> want = batched(withTangents), got = seeded(args);
    ASSERT_EQ(got.size(), want.size());
    for (size_t r = 0; r < want.size(); ++r) {
      ASSERT_EQ(got[r].shape(), want[r].shape()) << "result " << r;
      if (!isFloat(want[r].dtype())) continue;
      for (int64_t i = 0; i < want[r].numel(); ++i) {
        const double w = want[r].getF(i), g = got[r].getF(i);
        if (!std::isfinite(w)) continue;
        EXPECT_EQ(g, w) << "result " << r << " element " << i << " (draw " << draw << ")";
      }
    }
  }
}

TEST(GradTableSeeded, SameAsBatchedJvpAlongItsSeeds) {
  for (const CaseParam& p : allCaseParams()) {
    SCOPED_TRACE(std::string(p.c->name) + " " + p.dtype);
    for (uint64_t draw = 0; draw < 3; ++draw)
      seededJvpCase(p, draw);
  }
}

// A seed table that is neither one lane nor one per index of a literal last extent, a lane
// out of range, a parameter left out: errors, not code.
TEST(GradTableSeeded, BadSeedsAreErrors) {
  auto prog = Program::fromString("s.slope", "fn f(x: f64[n, 3], y: f64) -> f64 { sum(x) * y }");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  EXPECT_THROW(prog->jvpSeeded("f", {}, 2, {{"x", {0, 1}}, {"y", {0}}}), GradError);
  EXPECT_THROW(prog->jvpSeeded("f", {}, 2, {{"x", {0}}, {"y", {2}}}), GradError);
  EXPECT_THROW(prog->jvpSeeded("f", {}, 2, {{"x", {0}}}), GradError);
  EXPECT_THROW(prog->jvpSeeded("f", {}, 0, {{"x", {0}}, {"y", {0}}}), GradError);
  EXPECT_NO_THROW(prog->jvpSeeded("f", {}, 2, {{"x", {0, 1, -1}}, {"y", {1}}}));
}

// Sparse Hessians on the same cases (each f is a scalar): the pattern (f as a sum of terms)
// holds every nonzero of the dense Hessian (an HVP per column), and the compressed Hessian (an
// HVP per colour) has its values.
void sparseHessianCase(const CaseParam& p) {
  auto prog =
      Program::fromString(std::string(p.c->name) + ".slope", instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok());
  ir::Function f = prog->forward("f");
  std::vector<std::string> wrt = resolveWrt(f, {});
  ir::Function h;
  try {
    h = prog->hvp("f", wrt);
  } catch (const GradError&) {
    return; // (no second derivative: digamma)
  }
  InterpRunner interp;
  Runnable hvpFn = interp.prepare(h), hvp2 = interp.prepare(prog->hvp("f", wrt, {}, 2));
  for (const auto& sizes : std::vector<std::map<std::string, int64_t>>{
           {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 3}}}) {
    std::vector<Tensor> args = randomArgs(f, sizes, 3);
    std::optional<SparsityPattern> pat = hessianSparsity(f, args, wrt);
    if (!pat) continue;
    DenseDerivative d = denseHessian(f, wrt, args, hvpFn);
    SparseJacobian s = sparseJacobian(f, wrt, args, *pat, hvpFn, /*hessian=*/true);
    ASSERT_EQ(pat->rows, d.matrix.shape()[0]);
    expectSameAsDense(*pat, s.values, d.matrix, p.c->name);
    SparseJacobian sb = sparseJacobian(f, wrt, args, *pat, Directional(hvp2, 2), true);
    expectSameAsDense(*pat, sb.values, d.matrix, p.c->name + std::string(" (batch 2)"));
  }
}

TEST(GradTableSparse, HessianPatternHoldsEveryNonzero) {
  for (const CaseParam& p : allCaseParams()) {
    if (p.dtype != std::string("f64")) continue;
    SCOPED_TRACE(p.c->name);
    sparseHessianCase(p);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, GradTable, ::testing::ValuesIn(allCaseParams()),
                         caseParamName<::testing::TestParamInfo<CaseParam>>);

// Every op has an entry in the rule table, and every op with a derivative rule is exercised
// by some case of the table above (in its forward or its gradient IR).
TEST(GradTableCoverage, EveryOpHasARuleAndACase) {
  std::set<ir::Op> seen;
  for (const CaseParam& cp : allCaseParams()) {
    const Case& c = *cp.c;
    auto prog = Program::fromString(c.name, instantiate(c.source, "f64"));
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    ir::Function f = prog->forward("f");
    ir::Function g = differentiate(f, {});
    ir::forEachInstr(g.body, [&](const ir::Instr& i) { seen.insert(i.op); });
  }
  for (int k = 0; k < ir::kNumOps; ++k) {
    ir::Op op = static_cast<ir::Op>(k);
    const ad::Rule& r = ad::ruleFor(op);
    ASSERT_NE(r.math, nullptr) << ir::opName(op);
    EXPECT_NE(std::string(r.math), "unknown") << ir::opName(op) << " has no rule table entry";
    if (r.kind == ad::RuleKind::Formula) {
      EXPECT_NE(r.fn, nullptr) << ir::opName(op);
    }
    if (r.kind != ad::RuleKind::NotDifferentiable) {
      EXPECT_TRUE(seen.count(op)) << "no gradient-table case exercises '" << ir::opName(op) << "'";
    }
  }
}

} // namespace
} // namespace slope
