// Instruction counts of one call, under callgrind: deterministic where wall-clock time on a
// shared machine is not. Only the call itself is counted (JIT compilation is not).
//
//   valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null
//            build/bench/slope_instructions WHAT
//   WHAT: mixture-forward | mixture-gradient | mixture-forward-hand | mixture-gradient-hand
//
// Uses the benchmark's mixture problem at N = 2,000 points (K = 25, D = 10) to keep callgrind
// quick; the counts scale linearly in N.
#include "mixture_problem.hpp"

#include <slope/slope.hpp>
#include <valgrind/callgrind.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "";
  mixture_bench::Problem p(2000, 25, 10);
  slope::Module m = slope::compile_file(std::string(SLOPE_SOURCE_DIR) + "/samples/mixture.slope");
  slope::Function f = m.function("mixture");
  slope::Gradient g = m.gradient("mixture");
  auto args = p.args();
  auto gargs = p.gradArgs();
  double r = 0;
  CALLGRIND_START_INSTRUMENTATION;
  if (what == "mixture-forward")
    r = f.call(args);
  else if (what == "mixture-gradient")
    r = g.call(gargs);
  else if (what == "mixture-forward-hand")
    r = mixture_bench::forwardHand(p);
  else if (what == "mixture-gradient-hand")
    r = mixture_bench::gradientHand(p);
  else {
    CALLGRIND_STOP_INSTRUMENTATION;
    std::fprintf(stderr, "usage: slope_instructions mixture-{forward,gradient}[-hand]\n");
    return 2;
  }
  CALLGRIND_STOP_INSTRUMENTATION;
  std::printf("%s = %.17g\n", what.c_str(), r);
  return 0;
}
