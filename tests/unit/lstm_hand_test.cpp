// The hand-written LSTM that slope_bench times Slope against (bench/lstm_hand.cpp): its loss
// against ADBench's reference value and Slope's samples/adbench/lstm.slope, its gradient
// against Slope's and against central finite differences. A wrong yardstick would make the
// benchmark's ratio wrong, so these run on every clone.

#include "../../bench/lstm_hand.hpp"
#include "../../samples/adbench/lstm_io.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace {

std::string dataPath() {
  return std::string(SLOPE_SOURCE_DIR) + "/tests/data/adbench/lstm/lstm_l2_c1024.txt";
}

const slope::Module& slopeLstm() {
  static slope::Module m =
      slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/lstm.slope");
  return m;
}

lstm_hand::Problem problem(const adbench::LstmInput& s) {
  return {s.l, s.c, s.b, s.main.data(), s.extra.data(), s.state.data(), s.seq.data()};
}

struct Result {
  double loss = 0;
  std::vector<double> dmain, dextra, dstate;
};

Result runHand(lstm_hand::Lstm& h, const adbench::LstmInput& s) {
  Result r;
  r.dmain.resize(s.main.size());
  r.dextra.resize(s.extra.size());
  r.dstate.resize(s.state.size());
  r.loss = h.gradient(problem(s), r.dmain.data(), r.dextra.data(), r.dstate.data());
  return r;
}

/// Slope's loss and gradient with respect to main, extra and state.
Result runSlope(adbench::LstmInput& s) {
  Result r;
  r.dmain.resize(s.main.size());
  r.dextra.resize(s.extra.size());
  r.dstate.resize(s.state.size());
  slope::Gradient g = slopeLstm().gradient("lstm", {"main", "extra", "state"});
  auto args = adbench::lstmGradArgs(s, r.dmain, r.dextra);
  args.push_back(slope::View(r.dstate.data(), {s.l, 2, s.b}));
  r.loss = g.call(args);
  return r;
}

/// Entries to 1e-10 relative, measured against the largest entry of the block: entries far
/// below it are sums of terms as large as it, whose rounding does not scale with the entry.
void expectClose(const std::vector<double>& hand, const std::vector<double>& slope,
                 const char* what) {
  ASSERT_EQ(hand.size(), slope.size());
  double scale = 0;
  for (double v : slope)
    scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < hand.size(); ++i)
    EXPECT_NEAR(hand[i], slope[i], 1e-10 * scale) << what << " " << i;
}

void expectSameAsSlope(adbench::LstmInput s) {
  lstm_hand::Lstm h;
  Result hand = runHand(h, s), slope = runSlope(s);
  const double f = static_cast<double>(slopeLstm().function("lstm").call(adbench::lstmArgs(s)));
  EXPECT_NEAR(slope.loss, f, 1e-14 * std::fabs(f));
  EXPECT_NEAR(h.objective(problem(s)), f, 1e-12 * std::fabs(f));
  EXPECT_NEAR(hand.loss, f, 1e-12 * std::fabs(f));
  expectClose(hand.dmain, slope.dmain, "main");
  expectClose(hand.dextra, slope.dextra, "extra");
  expectClose(hand.dstate, slope.dstate, "state");
}

/// l layers, c steps, b units of standard normal draws (a fixed seed).
adbench::LstmInput randomInput(int64_t l, int64_t c, int64_t b, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 1);
  adbench::LstmInput s;
  s.l = l;
  s.c = c;
  s.b = b;
  for (auto* v : {&s.main, &s.extra, &s.state, &s.seq})
    v->clear();
  s.main.resize(static_cast<size_t>(l * 8 * b));
  s.extra.resize(static_cast<size_t>(3 * b));
  s.state.resize(static_cast<size_t>(l * 2 * b));
  s.seq.resize(static_cast<size_t>(c * b));
  for (auto* v : {&s.main, &s.extra, &s.state, &s.seq})
    for (double& e : *v)
      e = n(rng);
  return s;
}

TEST(LstmHand, MatchesAdbenchReferenceLoss) {
  adbench::LstmInput s = adbench::readLstm(dataPath());
  lstm_hand::Lstm h;
  // ADBench's test/cpp/modules/common/LstmTests.cpp, as in adbench_test.cpp.
  EXPECT_NEAR(h.objective(problem(s)), 0.66666518, 1e-8);
  EXPECT_NEAR(runHand(h, s).loss, 0.66666518, 1e-8);
}

TEST(LstmHand, GradientMatchesSlopeOnAdbenchInput) {
  expectSameAsSlope(adbench::readLstm(dataPath()));
}

// Three layers (a middle layer fed by one and feeding another), another width, and values
// that ADBench's file, with its small weights, does not reach.
TEST(LstmHand, GradientMatchesSlopeOnRandomInputs) {
  expectSameAsSlope(randomInput(3, 9, 5, 1));
  expectSameAsSlope(randomInput(1, 2, 1, 2)); // one layer, one unit, one predicted step
  expectSameAsSlope(randomInput(2, 40, 17, 3));
}

// A sample of entries of each block (main, extra, state) on ADBench's full input, against
// central differences of the hand-written loss.
TEST(LstmHand, GradientMatchesCentralDifferences) {
  adbench::LstmInput s = adbench::readLstm(dataPath());
  lstm_hand::Lstm h;
  Result r = runHand(h, s);
  std::mt19937_64 rng(7);
  const std::pair<std::vector<double>*, std::vector<double>*> blocks[] = {
      {&s.main, &r.dmain}, {&s.extra, &r.dextra}, {&s.state, &r.dstate}};
  for (const auto& [v, g] : blocks)
    for (int q = 0; q < 8; ++q) {
      const size_t at = std::uniform_int_distribution<size_t>(0, v->size() - 1)(rng);
      double& e = (*v)[at];
      const double keep = e, step = 1e-5 * std::max(1.0, std::fabs(keep));
      e = keep + step;
      const double up = h.objective(problem(s));
      e = keep - step;
      const double down = h.objective(problem(s));
      e = keep;
      const double fd = (up - down) / (2 * step);
      // The quotient's rounding is about 1e-16 |loss| / step, 1e-11 here.
      EXPECT_NEAR((*g)[at], fd, 1e-6 * std::fabs(fd) + 1e-10) << "entry " << at;
    }
}

// The scratch buffers persist between calls: a call must not see what an earlier one left,
// whatever the sizes in between.
TEST(LstmHand, CallsDoNotLeakIntoEachOther) {
  adbench::LstmInput big = randomInput(3, 30, 9, 4), small = randomInput(1, 3, 2, 5);
  lstm_hand::Lstm fresh, reused;
  Result first = runHand(fresh, big);
  runHand(reused, big);
  runHand(reused, small);
  reused.objective(problem(big));
  Result again = runHand(reused, big);
  EXPECT_EQ(first.loss, again.loss);
  EXPECT_EQ(first.dmain, again.dmain);
  EXPECT_EQ(first.dextra, again.dextra);
  EXPECT_EQ(first.dstate, again.dstate);
  lstm_hand::Lstm freshSmall;
  EXPECT_EQ(runHand(freshSmall, small).dmain, runHand(reused, small).dmain);
}

} // namespace
