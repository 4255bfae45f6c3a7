// Built for the host CPU (bench/CMakeLists.txt), as the hand-written baselines are.
#include "machine.hpp"

namespace machine {

double vectorFmaChains(int64_t steps) {
  // 10 chains of 4 doubles: 10 vector registers on AVX2 (16 of them) or AVX-512, with room
  // for the two constants; 10 chains cover an FMA's latency on two pipes (4 cycles x 2).
  typedef double v4 __attribute__((vector_size(32)));
  v4 a[10];
  for (int k = 0; k < 10; ++k)
    a[k] = v4{} + (1.0 + k * 1e-3);
  const v4 m = v4{} + 0.9999999, c = v4{} + 1e-7;
  for (int64_t r = 0; r < steps; ++r)
    for (int k = 0; k < 10; ++k)
      a[k] = a[k] * m + c; // (no fast-math: every step is done; -march gives the FMA)
  double s = 0;
  for (int k = 0; k < 10; ++k)
    for (int j = 0; j < 4; ++j)
      s += a[k][j];
  return s;
}

} // namespace machine
