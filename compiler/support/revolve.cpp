#include "compiler/support/revolve.hpp"

#include <algorithm>

namespace slope {

int64_t revolveNext(int64_t cur, int64_t end, int64_t free) {
  if (free <= 0 || end <= cur) return end + 1;
  // In 128 bits: the binomials below reach (steps x snapshots), and a trip count near 2^62
  // overflowed 64 (a snapshot step outside the loop, then a read past the tape).
  using wide = __int128;
  const wide steps = wide(end) - cur + 1;         // to reverse, the held state included
  const wide s = std::min<wide>(free, steps) + 1; // states that may be held, cur's included
  // reps: the least r with beta(s, r) = C(s + r, s) >= steps (range holds beta(s, reps)).
  wide reps = 0, range = 1;
  while (range < steps) {
    ++reps;
    range = range * (reps + s) / reps; // exact: C(s + r, r) = C(s + r - 1, r - 1) (s + r) / r
  }
  // Neighbouring binomials: beta(s, r-1), beta(s-1, r-1), beta(s-2, r-1), beta(s-1, r-2),
  // beta(s-2, r-2) in Griewank's notation (the boundary cases s <= 3 spelled out).
  wide bino1 = range * reps / (s + reps);
  wide bino2 = s > 1 ? bino1 * s / (s + reps - 1) : 1;
  wide bino3 = s == 1 ? 0 : (s > 2 ? bino2 * (s - 1) / (s + reps - 2) : 1);
  wide bino4 = bino2 * (reps - 1) / s;
  wide bino5 = s < 3 ? 0 : (s > 3 ? bino3 * (s - 2) / reps : 1);
  wide m;
  if (steps <= bino1 + bino3)
    m = cur + bino4;
  else if (steps >= range - bino5)
    m = cur + bino1;
  else
    m = wide(end) + 1 - bino2 - bino3;
  if (m <= cur) m = wide(cur) + 1;
  if (m > end) m = end;
  return static_cast<int64_t>(m);
}

} // namespace slope
