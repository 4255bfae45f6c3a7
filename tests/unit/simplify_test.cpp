// The simplifier's rule list and its golden tests stay in step: every rule has a one-line
// golden file in tests/lit/simplify/, and every rule says how exact it is.

#include "compiler/simplify/simplify.hpp"

#include "compiler/check/check.hpp"
#include "compiler/parse/parser.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace slope {
namespace {

TEST(SimplifyRules, EachRuleHasAGoldenTestAndAnExactness) {
  for (const SimplifyRule& r : simplifyRules()) {
    std::string golden = std::string(SLOPE_SOURCE_DIR) + "/tests/lit/simplify/" + r.name + ".slope";
    EXPECT_TRUE(std::filesystem::exists(golden)) << "rule '" << r.name << "' has no " << golden;
    EXPECT_NE(std::string(r.exactness).find("exact"), std::string::npos) << r.name;
  }
}

/// The forward IR of `name` in `source`, lowered and not yet simplified.
ir::Function lowered(const std::string& source, const std::string& name) {
  SourceFile file("t.slope", source);
  DiagSink diags(file);
  ast::Module m = parseModule(file, diags);
  EXPECT_TRUE(checkModule(m, diags)) << diags.render();
  auto f = lowerFunction(m, name, diags);
  EXPECT_TRUE(f.has_value());
  f->file = nullptr; // (the SourceFile goes out of scope)
  return *f;
}

// A chain of dead values goes in one dead-code sweep, not one sweep per link (which made
// simplifying a long unused chain quadratic).
TEST(SimplifyCost, DeadChainGoesInOneSweep) {
  std::string src = "fn f(x: f64) -> f64 {\n    let a0 = x;\n";
  for (int i = 1; i <= 2000; ++i)
    src += "    let a" + std::to_string(i) + " = sin(a" + std::to_string(i - 1) + ");\n";
  src += "    x\n}\n";
  ir::Function f = lowered(src, "f");
  size_t before = f.body.body.size();
  ASSERT_GE(before, 2000u);
  SimplifyStats st = simplify(f);
  EXPECT_LE(st.rounds, kMaxSimplifyRounds);
  EXPECT_LE(st.dceSweeps, 2 * st.rounds) << "rounds " << st.rounds;
  EXPECT_LE(f.body.body.size(), 2u) << print(f); // the parameter (and nothing else) stays
}

// The fixpoint stops after a bounded number of rounds, and each round's dead-code removal takes
// a bounded number of sweeps, however long the program: on a gradient of 2000 chained values
// as on one of 20.
TEST(SimplifyCost, RoundsAndSweepsDoNotGrowWithTheProgram) {
  auto chain = [](int n) {
    std::string src = "fn f(x: f64) -> f64 {\n    let a0 = x;\n";
    for (int i = 1; i <= n; ++i)
      src += "    let a" + std::to_string(i) + " = a" + std::to_string(i - 1) + " * 0.5 + sin(a" +
             std::to_string(i - 1) + ") * x;\n";
    return src + "    a" + std::to_string(n) + "\n}\n";
  };
  for (int n : {20, 2000}) {
    ir::Function f = lowered(chain(n), "f");
    SimplifyStats st = simplify(f);
    EXPECT_LE(st.rounds, kMaxSimplifyRounds) << n;
    EXPECT_LE(st.dceSweeps, 2 * st.rounds) << n;
  }
}

} // namespace
} // namespace slope
