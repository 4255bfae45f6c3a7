// Random programs over the whole language (program_gen.hpp): the JIT against the evaluator,
// both against finite differences, checkpointed gradients against plain ones. CI runs a few
// hundred seeds in kBatches test cases; SLOPE_GEN_PROGRAMS and SLOPE_GEN_SEED run more (see
// docs/testing.md, "Random programs"). A failure prints the seed, the check that failed and the
// program shrunk to a small reproducer.

#include "program_gen.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>

namespace slope::gen {
namespace {

constexpr int kBatches = 8;
constexpr int64_t kDefaultPrograms = 240;

class RandomPrograms : public ::testing::TestWithParam<int> {};

TEST_P(RandomPrograms, AgreeWithEachOtherAndWithFiniteDifferences) {
  const int64_t total = envInt("SLOPE_GEN_PROGRAMS", kDefaultPrograms);
  const int64_t start = envInt("SLOPE_GEN_SEED", 0);
  const bool keepGoing = envInt("SLOPE_GEN_KEEP_GOING", 0) != 0;
  const bool doShrink = envInt("SLOPE_GEN_SHRINK", 1) != 0;
  const bool isolate = envInt("SLOPE_GEN_ISOLATE", 1) != 0;
  const int64_t per = (total + kBatches - 1) / kBatches;
  const int64_t lo = start + GetParam() * per, hi = std::min(start + total, lo + per);
  Checker checker(isolate);
  std::map<Verdict, int> counts;
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t seed = lo; seed < hi; ++seed) {
    Verdict v;
    std::string report = checkSeed(checker, static_cast<uint64_t>(seed), &v, doShrink);
    counts[v]++;
    if (v == Verdict::Pass) continue;
    if (v == Verdict::Domain) { // counted, below
      std::cout << "seed " << seed << ": " << verdictName(v) << "\n";
      continue;
    }
    ADD_FAILURE() << report;
    if (!keepGoing) break;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "seeds " << lo << ".." << hi << " in " << secs << " s:";
  for (const auto& [v, c] : counts)
    std::cout << " " << verdictName(v) << " " << c << ";";
  std::cout << "\n";
  // Values out of the range where finite differences mean something: the generator should
  // (almost) never write such programs.
  EXPECT_LE(counts[Verdict::Domain], std::max<int64_t>(1, (hi - lo) / 50))
      << "too many programs with values out of range";
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomPrograms, ::testing::Range(0, kBatches));

TEST(ProgramGen, DeterministicBySeed) {
  for (uint64_t seed : {0, 1, 77, 12345})
    EXPECT_EQ(print(generate(seed)), print(generate(seed)));
  EXPECT_NE(print(generate(1)), print(generate(2)));
}

TEST(ProgramGen, CoversTheLanguage) {
  // Over a few hundred seeds every construct appears.
  std::string all;
  for (uint64_t seed = 0; seed < 300; ++seed)
    all += print(generate(seed));
  for (const char* s : {"var ",       "for ",    "] = ",  "let (",      "@",         "^",
                        "logsumexp[", "sum[",    "prod(", "max(",       "min(",      "mean(",
                        "if ",        "select(", "g(",    "transpose(", "f32",       ": i64",
                        "..t",        "0..k",    "1..",   "% ",         "/ n",       "ones(",
                        "lgamma(",    "asin(",   "pow(",  "[i] = ",     "[i, j] = ", "-1",
                        "(1 / 2)",    "&&",      "atan2("})
    EXPECT_NE(all.find(s), std::string::npos) << s;
}

TEST(ProgramGen, ShrinksToWhatFails) {
  // A stand-in failure: the program mentions logsumexp. The shrinker keeps that and little else.
  uint64_t seed = 0;
  while (print(generate(seed)).find("logsumexp(") == std::string::npos)
    ++seed;
  Prog p = generate(seed);
  auto fails = [](const Prog& q) { return print(q).find("logsumexp(") != std::string::npos; };
  Shrunk s = shrink(p, fails, 5000);
  EXPECT_TRUE(fails(s.prog));
  EXPECT_LT(measure(s.prog), measure(p));
  EXPECT_LE(print(s.prog).size(), 120u) << print(s.prog);
}

} // namespace
} // namespace slope::gen

namespace slope::gen {
namespace {
// Prints the program of SLOPE_GEN_SEED and its verdict:
//   slope_unit_tests --gtest_also_run_disabled_tests --gtest_filter='*PrintOne*'
TEST(ProgramGen, DISABLED_PrintOne) {
  const int64_t seed = envInt("SLOPE_GEN_SEED", 0);
  const int64_t count = envInt("SLOPE_GEN_PROGRAMS", 1);
  Checker c(envInt("SLOPE_GEN_ISOLATE", 1) != 0);
  for (int64_t s = seed; s < seed + count; ++s) {
    Prog p = generate(static_cast<uint64_t>(s));
    std::cout << "// seed " << s << " n = " << p.n << " m = " << p.m << "\n"
              << print(p) << std::flush;
    Outcome o = c.check(p);
    std::cout << "// " << verdictName(o.v) << " " << o.detail << "\n\n";
  }
}
} // namespace
} // namespace slope::gen
