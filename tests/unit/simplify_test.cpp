// The simplifier's rule list and its golden tests stay in step: every rule has a one-line
// golden file in tests/lit/simplify/, and every rule says how exact it is.

#include "compiler/simplify/simplify.hpp"

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

} // namespace
} // namespace slope
