// Random loops with state, differentiated three ways. A small generator writes functions with
// scalar, vector and matrix vars, element, row and whole writes, nested loops, branches and
// costly ops; each gradient must match central finite differences (reference evaluator), the
// JIT must agree with the evaluator, and every checkpointing schedule must give the same
// gradient to the bit. Silent wrong gradients are the failure this hunts: the tape, the value
// tape, the analysis of which vars it keeps and the checkpoint schedules all interact here.

#include "checkpoint_budget.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>

namespace slope {
namespace {

/// Writes one random function f(x: f64[n], A: f64[n, m]) -> f64. Values stay bounded (tanh,
/// sin, sigmoid, contractions by 0.5) so that finite differences stay meaningful.
class Generator {
public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  std::string function() {
    std::string body = "    var s = 0.3;\n    var v = A[0] * 0.5;\n    var M = A;\n";
    body += "    var c = 0;\n";
    body += "    for t in 0..n {\n";
    int stmts = pick(1, 3);
    for (int k = 0; k < stmts; ++k)
      body += statement(2);
    body += "        c = c + 1;\n    }\n";
    body += "    tanh(s * v[0]) + sum(v * v) * 0.25 + sum(M * M) * 0.125 + s\n";
    return "fn f(x: f64[n], A: f64[n, m]) -> f64 {\n" + body + "}\n";
  }

private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  std::string statement(int depth) {
    std::string in(4 * depth, ' ');
    switch (pick(0, depth > 2 ? 4 : 10)) {
    // Products only: the tape must keep what a product's other factor's adjoint reads.
    case 6: return in + "s = s * x[t] * 0.9 + A[t, 0] * 0.1;\n";
    case 7: return in + "v = v * A[t] * 0.9 + s * 0.1;\n";
    case 9: return in + "M[t] = M[t] * v * 0.5 + A[t] * s;\n";
    case 10: return in + "v[c % m] = v[c % m] * s * 0.5 + x[t];\n";
    case 8: return in + "s = if s > 0.0 { s * 0.5 } else { v[0] * 0.5 };\n"; // active condition
    case 0: return in + "s = " + scalar(2, true) + ";\n";
    case 1: return in + "v = " + vector(2) + ";\n";
    case 2: return in + "M[t] = " + vector(2) + ";\n";
    case 3: return in + "v[c % m] = " + scalar(2, true) + ";\n";
    case 4:
      return in + "s = if x[t] > 0.2 { " + scalar(1, true) + " } else { " + scalar(1, true) +
             " };\n";
    case 5: { // a nested loop over the columns
      std::string inner = in + "for j in 0..m {\n";
      inner += in + "    s = s * 0.5 + tanh(v[j] * " + leaf() + ");\n";
      if (pick(0, 1)) inner += in + "    v[j] = sin(v[j] + s * 0.5);\n";
      return inner + in + "}\n";
    }
    }
    return "";
  }
  std::string leaf() {
    switch (pick(0, 5)) {
    case 0: return "s";
    case 1: return "x[t]";
    case 2: return "v[0]";
    case 3: return "M[t, 0]";
    case 4: return "(sum(v) * 0.25)";
    default: return "0.7";
    }
  }
  std::string scalar(int depth, bool bounded) {
    if (depth == 0) return leaf();
    std::string a = scalar(depth - 1, false), b = scalar(depth - 1, false);
    std::string e;
    switch (pick(0, 5)) {
    case 0: e = a + " + " + b; break;
    case 1: e = a + " * " + b; break;
    case 2: e = "sin(" + a + ")"; break;
    case 3: e = "sigmoid(" + a + " - " + b + ")"; break;
    case 4: e = "exp(-(" + a + ") * (" + a + "))"; break;
    default: e = a + " * 0.5 - " + b; break;
    }
    return bounded ? "tanh(" + e + ")" : "(" + e + ")";
  }
  std::string vector(int depth) {
    std::string s = scalar(depth - 1, true);
    switch (pick(0, 4)) {
    case 0: return "tanh(v * " + s + " + A[t])";
    case 1: return "v * 0.5 + A[t] * " + s;
    case 2: return "sin(M[t] + v * 0.5)";
    case 3: return "sigmoid(v - A[t]) * " + s;
    default: return "v + M[t] * 0.25";
    }
  }
  std::mt19937_64 rng_;
};

std::string scheduleName(const GradOptions& o) {
  if (o.snapshots) return "revolve:" + std::to_string(o.snapshots);
  if (o.memory) return "memory:" + std::to_string(o.memory);
  return "checkpoint " + std::to_string(o.checkpoint);
}

TEST(LoopFuzz, RandomLoopsDifferentiateTheSameEveryWay) {
  JitRunner jit;
  std::vector<GradOptions> schedules(4);
  schedules[0].checkpoint = -1;
  schedules[1].checkpoint = 2;
  schedules[2].snapshots = 2;
  schedules[3].memory = 100;
  // SLOPE_LOOP_FUZZ_PROGRAMS=4000 runs more (docs/testing.md).
  const char* env = std::getenv("SLOPE_LOOP_FUZZ_PROGRAMS");
  const int programs = env ? std::atoi(env) : 40;
  for (int p = 0; p < programs; ++p) {
    std::string src = Generator(1000 + p).function();
    auto prog = Program::fromString("fuzz.slope", src);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics() << src;
    ir::Function f = prog->forward("f");
    std::vector<Tensor> args = randomArgs(f, {{"n", 5}, {"m", 3}}, p);
    // 1. Finite differences, on the evaluator.
    GradCheckResult fd = checkGradient(f, args, {});
    for (const auto& pc : fd.params)
      EXPECT_TRUE(pc.passed) << "param " << pc.name << " max_rel_err " << pc.maxRelErr << "\n"
                             << src;
    // 2. The JIT against the evaluator.
    ir::Function g = prog->gradient("f", {});
    std::vector<Tensor> plain = evaluate(g, args);
    std::vector<Tensor> compiled = jit.prepare(g)(args);
    ASSERT_EQ(plain.size(), compiled.size());
    for (size_t k = 0; k < plain.size(); ++k)
      for (int64_t i = 0; i < plain[k].numel(); ++i) {
        double a = plain[k].getF(i), b = compiled[k].getF(i);
        EXPECT_LE(std::fabs(a - b), 1e-12 * std::max({1.0, std::fabs(a), std::fabs(b)}))
            << "result " << k << " element " << i << "\n"
            << src;
      }
    // 3. Every schedule: the same gradient, bit for bit.
    for (GradOptions o : schedules) {
      if (o.memory) o = budgetOfAtLeastOneState(*prog, "f", args, o.memory);
      std::vector<Tensor> r = evaluate(prog->gradient("f", {}, o), args);
      for (size_t k = 0; k < plain.size(); ++k)
        for (int64_t i = 0; i < plain[k].numel(); ++i)
          EXPECT_EQ(plain[k].getF(i), r[k].getF(i))
              << scheduleName(o) << " result " << k << " element " << i << "\n"
              << src;
    }
    if (HasFailure()) break; // one program's report is enough to read
  }
}

} // namespace
} // namespace slope
