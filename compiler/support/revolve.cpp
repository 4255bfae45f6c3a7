#include "compiler/support/revolve.hpp"

namespace slope {

int64_t revolveNext(int64_t cur, int64_t end, int64_t free) {
  if (free <= 0 || end <= cur) return end + 1;
  const int64_t steps = end - cur + 1; // to reverse, the held state included
  const int64_t s = free + 1;          // states that may be held, the one at cur included
  // reps: the least r with beta(s, r) = C(s + r, s) >= steps (range holds beta(s, reps)).
  int64_t reps = 0, range = 1;
  while (range < steps) {
    ++reps;
    range = range * (reps + s) / reps; // exact: C(s + r, r) = C(s + r - 1, r - 1) (s + r) / r
  }
  // Neighbouring binomials: beta(s, r-1), beta(s-1, r-1), beta(s-2, r-1), beta(s-1, r-2),
  // beta(s-2, r-2) in Griewank's notation (the boundary cases s <= 3 spelled out).
  int64_t bino1 = range * reps / (s + reps);
  int64_t bino2 = s > 1 ? bino1 * s / (s + reps - 1) : 1;
  int64_t bino3 = s == 1 ? 0 : (s > 2 ? bino2 * (s - 1) / (s + reps - 2) : 1);
  int64_t bino4 = bino2 * (reps - 1) / s;
  int64_t bino5 = s < 3 ? 0 : (s > 3 ? bino3 * (s - 2) / reps : 1);
  int64_t m;
  if (steps <= bino1 + bino3)
    m = cur + bino4;
  else if (steps >= range - bino5)
    m = cur + bino1;
  else
    m = end + 1 - bino2 - bino3;
  if (m <= cur) m = cur + 1;
  if (m > end) m = end;
  return m;
}

} // namespace slope
