// The hand-written GMM that slope_bench times Slope against (bench/gmm_hand.cpp): its objective
// and gradient against ADBench's reference values, against Slope's samples/adbench/gmm.slope,
// and against central finite differences; and the generator of bench/gmm_generate.hpp.
// A wrong yardstick would make every benchmark ratio wrong, so these run on every clone.

#include "../../bench/gmm_generate.hpp"
#include "../../bench/gmm_hand.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace {

std::string dataPath(const std::string& rel) {
  return std::string(SLOPE_SOURCE_DIR) + "/tests/data/adbench/" + rel;
}

gmm_hand::Problem problem(const adbench::GmmInput& g) {
  return {g.d, g.K, g.n, g.alphas.data(), g.means.data(), g.icf.data(), g.x.data(), g.gamma, g.m};
}

/// The hand-written objective and gradient in ADBench's order (alphas, means, icf).
adbench::GmmResult runHand(gmm_hand::Gmm& h, const adbench::GmmInput& g) {
  std::vector<double> da(g.alphas.size()), dm(g.means.size()), dicf(g.icf.size());
  adbench::GmmResult r;
  r.objective = h.gradient(problem(g), da.data(), dm.data(), dicf.data());
  r.gradient = da;
  r.gradient.insert(r.gradient.end(), dm.begin(), dm.end());
  r.gradient.insert(r.gradient.end(), dicf.begin(), dicf.end());
  return r;
}

const slope::Module& slopeGmm() {
  static slope::Module m =
      slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  return m;
}

void expectSameAsSlope(adbench::GmmInput g) {
  gmm_hand::Gmm h;
  adbench::GmmResult hand = runHand(h, g);
  adbench::GmmResult slope = adbench::runGmm(slopeGmm(), g);
  EXPECT_NEAR(h.objective(problem(g)), slope.objective, 1e-10 * std::fabs(slope.objective));
  EXPECT_NEAR(hand.objective, slope.objective, 1e-10 * std::fabs(slope.objective));
  ASSERT_EQ(hand.gradient.size(), slope.gradient.size());
  for (size_t i = 0; i < hand.gradient.size(); ++i)
    EXPECT_NEAR(hand.gradient[i], slope.gradient[i],
                1e-9 * std::max(1.0, std::fabs(slope.gradient[i])))
        << "gradient " << i;
}

TEST(GmmHand, MatchesAdbenchReferenceValues) {
  adbench::GmmInput g = adbench::readGmm(dataPath("gmm/test.txt"));
  gmm_hand::Gmm h;
  adbench::GmmResult r = runHand(h, g);
  // ADBench's test/cpp/modules/common/GmmTests.cpp, as in adbench_test.cpp.
  EXPECT_NEAR(r.objective, 8.07380408004975791, 1e-8);
  EXPECT_NEAR(h.objective(problem(g)), 8.07380408004975791, 1e-8);
  const double expected[18] = {
      1.08662855508652456e-01, -7.41270039523898472e-01, 6.32607184015246071e-01,
      1.11692576532787013e+00, 1.63333013551455269e-01,  -2.19989824071193142e-02,
      2.27778292254236098e-01, 1.20963025612832187e+00,  -6.06375920733956339e-02,
      2.58529994051162237e+00, 1.12632694524213789e-01,  3.85744309849611777e-01,
      7.35180573182305508e-02, 5.41836362715595232e+00,  -3.21494409677446469e-01,
      1.71892309775004937e+00, 8.60091090790866875e-01,  -9.94640930466322848e-01};
  ASSERT_EQ(r.gradient.size(), 18u);
  for (int i = 0; i < 18; ++i)
    EXPECT_NEAR(r.gradient[i], expected[i], 1e-8) << "gradient " << i;
}

TEST(GmmHand, GradientMatchesSlopeOnAdbenchInputs) {
  expectSameAsSlope(adbench::readGmm(dataPath("gmm/test.txt")));
  expectSameAsSlope(adbench::readGmm(dataPath("gmm/1k/gmm_d2_K5.txt")));
}

// d = 2 has a single lower-triangle entry; d = 7 with n not a multiple of the hand-written
// code's block of points exercises every column of the triangle and a partial block.
TEST(GmmHand, GradientMatchesSlopeOnGeneratedInputs) {
  expectSameAsSlope(adbench::generateGmm(7, 4, 131));
  adbench::GmmInput g = adbench::generateGmm(12, 3, 70, 5);
  g.gamma = 0.7; // the prior's other parameters, which ADBench's files never vary
  g.m = 3;
  expectSameAsSlope(g);
}

TEST(GmmHand, GradientMatchesCentralDifferences) {
  adbench::GmmInput g = adbench::generateGmm(5, 3, 40, 11);
  g.m = 2;
  gmm_hand::Gmm h;
  adbench::GmmResult r = runHand(h, g);
  std::vector<double>* blocks[] = {&g.alphas, &g.means, &g.icf};
  size_t at = 0;
  for (std::vector<double>* v : blocks)
    for (double& e : *v) {
      const double keep = e, step = 1e-5 * std::max(1.0, std::fabs(keep));
      e = keep + step;
      const double up = h.objective(problem(g));
      e = keep - step;
      const double down = h.objective(problem(g));
      e = keep;
      const double fd = (up - down) / (2 * step);
      EXPECT_NEAR(r.gradient[at], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "entry " << at;
      ++at;
    }
  EXPECT_EQ(at, r.gradient.size());
}

// The scratch buffers persist between calls: a call must not see what an earlier one left,
// whatever the sizes in between.
TEST(GmmHand, CallsDoNotLeakIntoEachOther) {
  adbench::GmmInput big = adbench::generateGmm(9, 6, 300), small = adbench::generateGmm(3, 2, 5);
  gmm_hand::Gmm fresh, reused;
  adbench::GmmResult first = runHand(fresh, big);
  runHand(reused, big);
  runHand(reused, small);
  reused.objective(problem(small));
  adbench::GmmResult again = runHand(reused, big);
  EXPECT_EQ(first.objective, again.objective);
  EXPECT_EQ(first.gradient, again.gradient);
  gmm_hand::Gmm freshSmall;
  EXPECT_EQ(runHand(freshSmall, small).gradient, runHand(reused, small).gradient);
}

TEST(GmmGenerate, FollowsAdbenchRules) {
  adbench::GmmInput g = adbench::generateGmm(6, 4, 50);
  EXPECT_EQ(g.gamma, 1.0);
  EXPECT_EQ(g.m, 0);
  ASSERT_EQ(g.icf.size(), static_cast<size_t>(4 * (6 + 15)));
  ASSERT_EQ(g.x.size(), static_cast<size_t>(50 * 6));
  for (double v : g.means) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  double mean = 0, var = 0;
  for (double v : g.x)
    mean += v / static_cast<double>(g.x.size());
  for (double v : g.x)
    var += (v - mean) * (v - mean) / static_cast<double>(g.x.size());
  EXPECT_NEAR(mean, 0.0, 0.2); // 300 draws of N(0, 1): 3.5 standard errors
  EXPECT_NEAR(var, 1.0, 0.3);
  for (double v : g.icf) // six decimals, as ADBench's files have
    EXPECT_NEAR(v * 1e6, std::round(v * 1e6), 1e-6);
  // The same seed makes the same data; ADBench's reader reads what writeGmm writes.
  adbench::GmmInput again = adbench::generateGmm(6, 4, 50);
  EXPECT_EQ(g.x, again.x);
  std::string path = ::testing::TempDir() + "gmm_generate_test.txt";
  adbench::writeGmm(g, path);
  adbench::GmmInput read = adbench::readGmm(path);
  std::remove(path.c_str());
  EXPECT_EQ(read.d, 6);
  EXPECT_EQ(read.K, 4);
  EXPECT_EQ(read.n, 50);
  EXPECT_EQ(read.alphas, g.alphas);
  EXPECT_EQ(read.means, g.means);
  EXPECT_EQ(read.icf, g.icf);
  EXPECT_EQ(read.x, g.x);
  EXPECT_EQ(read.gamma, g.gamma);
  EXPECT_EQ(read.m, g.m);
}

} // namespace
