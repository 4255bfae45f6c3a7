// Probes of the machine the benchmarks run on, as yardsticks beside them.
#pragma once

#include <cstdint>

namespace machine {

/// `steps` steps of 10 independent chains of 4-wide fused multiply-adds (40 FMAs a step):
/// enough independent work to keep a core's FMA units busy, so that time measures their
/// throughput. Returns a sum of the chains (for DoNotOptimize).
double vectorFmaChains(int64_t steps);

} // namespace machine
