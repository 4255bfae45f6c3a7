// Revolve's placement rule (compiler/support/revolve.hpp), run the way the reverse sweep runs
// it (reverseBinomial in compiler/autodiff/loops.cpp): never more than S states held, every
// step reversed from its own state, and forward steps close to Revolve's minimum.

#include "compiler/support/revolve.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace slope {
namespace {

struct Schedule {
  int64_t advances = 0; // forward steps run after the forward sweep
  int64_t peak = 0;     // most states held at once
  bool ok = true;       // every reversal started from the state before its step
};

/// The forward sweep over T steps, then each step j from T-1 down: drop the snapshot of step
/// j + 1, restore the latest, advance to j taking the snapshots Revolve asks for.
Schedule simulate(int64_t T, int64_t S) {
  Schedule r;
  std::vector<int64_t> pos;
  int64_t next = 0;
  for (int64_t k = 0; k < T; ++k)
    if (k == next && static_cast<int64_t>(pos.size()) < S) {
      pos.push_back(k);
      next = revolveNext(k, T - 1, S - static_cast<int64_t>(pos.size()));
    }
  r.peak = static_cast<int64_t>(pos.size());
  for (int64_t j = T - 1; j >= 0; --j) {
    if (pos.size() > 1 && pos.back() > j) pos.pop_back();
    r.ok = r.ok && pos.back() <= j && (pos.size() == 1 || pos[pos.size() - 2] < pos.back());
    int64_t cur = pos.back();
    next = revolveNext(cur, j, S - static_cast<int64_t>(pos.size()));
    for (int64_t k = cur; k < j; ++k) {
      if (k == next && static_cast<int64_t>(pos.size()) < S) {
        pos.push_back(k);
        next = revolveNext(k, j, S - static_cast<int64_t>(pos.size()));
      }
      ++r.advances;
    }
    r.peak = std::max(r.peak, static_cast<int64_t>(pos.size()));
  }
  return r;
}

int64_t choose(int64_t n, int64_t k) {
  double c = 1;
  for (int64_t i = 1; i <= k; ++i)
    c = c * static_cast<double>(n - k + i) / static_cast<double>(i);
  return static_cast<int64_t>(c + 0.5);
}

/// Revolve's minimum number of forward steps after a sweep to the last step: r l - C(s+r,
/// r-1) - (l - 1), r the least with C(s + r, s) >= l.
int64_t minimum(int64_t l, int64_t s) {
  int64_t r = 0;
  while (choose(s + r, s) < l)
    ++r;
  return r == 0 ? 0 : r * l - choose(s + r, r - 1) - (l - 1);
}

TEST(Revolve, HoldsAtMostSStatesAndStaysNearTheMinimum) {
  for (int64_t T : {1, 2, 3, 10, 37, 100, 1000, 5000})
    for (int64_t S : {1, 2, 3, 4, 7, 10, 32, 100}) {
      Schedule r = simulate(T, S);
      EXPECT_TRUE(r.ok) << "T " << T << " S " << S;
      EXPECT_LE(r.peak, S) << "T " << T << " S " << S;
      // The sweep runs the last step too, so the first reversal may advance once more than
      // Revolve's (to at most T / S steps past its last snapshot).
      int64_t lo = minimum(T, S), hi = lo + T / S + 1;
      EXPECT_GE(r.advances, lo) << "T " << T << " S " << S;
      EXPECT_LE(r.advances, hi) << "T " << T << " S " << S;
    }
}

TEST(Revolve, EdgeCases) {
  EXPECT_EQ(simulate(10, 1).advances, 45); // every step from the start: 9 + 8 + ... + 1
  EXPECT_EQ(simulate(50, 50).advances, 0); // a slot per step
  EXPECT_EQ(simulate(50, 80).advances, 0);
  EXPECT_EQ(revolveNext(3, 3, 5), 4);  // nothing to advance over
  EXPECT_EQ(revolveNext(0, 9, 0), 10); // no free slot
  for (int64_t end : {1, 2, 10, 1000})
    for (int64_t free : {1, 2, 5}) {
      int64_t m = revolveNext(0, end, free);
      EXPECT_GT(m, 0);
      EXPECT_LE(m, end);
    }
}

} // namespace
} // namespace slope
