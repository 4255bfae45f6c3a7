#!/usr/bin/env bash
# Builds Slope and runs the whole test suite (GoogleTest and lit, through ctest).
#   scripts/test.sh              Release build in build/
#   scripts/test.sh --sanitize   the same suite built with AddressSanitizer and UBSan in
#                                build-asan/ (time limits in tests scale; see docs/testing.md)
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's wall time, so that a CI log says where its minutes went.
stage() { echo "test.sh: $1 took $((SECONDS - t0)) s"; t0=$SECONDS; }
t0=$SECONDS
bash scripts/setup.sh
stage setup
if [ "${1:-}" = "--sanitize" ]; then
  # -O1: the sanitizers find the same faults, and the instrumented build takes half the time
  # of -O3 (check.cpp 58 s -> 32 s, jit_test.cpp 34 s -> 19 s on the CI machine's kind). The
  # benchmarks are not built: the tests do not run them.
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLOPE_ASAN=ON \
        -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" -DSLOPE_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build build-asan
  stage "sanitized build"
  # detect_leaks stays on; the JIT's own allocations are freed on exit.
  # 32 random programs, 20 loop fuzz programs and 8 gradient penalties of random programs here
  # (240, 40 and 40 in the plain run):
  # sanitized code is 3-5x slower, and what the sanitizers watch, Slope's own C++, is the
  # same passes for every program.
  # lit leaves out its two scale tests (30,000- and 20,000-term expressions through every
  # command): 35 s of lit in the plain run and about 4 minutes here, for the same passes the
  # other tests run under the sanitizers on small programs.
  LIT_FILTER_OUT=${LIT_FILTER_OUT:-'cli/long_sum.test|diagnostics/long_operator_chain.test'} \
  SLOPE_GEN_PROGRAMS=${SLOPE_GEN_PROGRAMS:-32} \
  SLOPE_LANG_GEN_PROGRAMS=${SLOPE_LANG_GEN_PROGRAMS:-8} \
  SLOPE_RULE_GEN_PROGRAMS=${SLOPE_RULE_GEN_PROGRAMS:-8} \
  SLOPE_LOOP_FUZZ_PROGRAMS=${SLOPE_LOOP_FUZZ_PROGRAMS:-20} \
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    ctest --test-dir build-asan --output-on-failure -j2 \
      -E 'SameBitsInAnyOrderOnAnyThreads|JitVsInterp\.SameBitsAtEveryOptLevel|BlockedScatterLoopsSameBits|AheadOfTimeSameBitsAsJit|PtxAssembles|Ptx.SamplesAndLoopProgramsAssemble|ForwardMode.SamplesAndLoopProgramsOnTheJit|ShortRowSplitOtherShapes|TriangleColumnsRandomShapes|PrintedForwardSamples|OffloadEmulated|Offload.SamplesEmulated'
  stage "sanitized tests"
  # (Generated code is not instrumented: the sanitizers watch Slope's own C++. The per-case
  # order and thread-count comparisons, 148 cases compiled three ways, run the same compiler
  # passes as the gradient-table cases and took a quarter of this stage's time; they run in the
  # plain suite, as do the per-case comparisons of objects from slopec compile and of other opt
  # levels with the JIT (JitVsInterpLarge.SameBitsAtEveryOptLevel stays here).
  # Here the samples' comparisons give each sample function one of threads, reversed loops,
  # code made in parts and a chunk per row in turn, and every third one an object made ahead of
  # time (tests/unit/jit_test.cpp, variantsFor): every function and every variant sanitized,
  # not every pair. The ptxas runs over every program's CUDA
  # kernels are LLVM's and ptxas's work, not Slope's: Ptx.KernelsAndHostLoops and lit's
  # cli/ptx.test keep codegen/ptx.cpp under the sanitizers. Forward mode over the samples
  # compiles five functions per sample; the gradient table's and the random programs' forward
  # checks run the same passes here. The short-row and triangle comparisons keep their
  # standard shapes here and leave the other and random shapes (80 s) to the plain suite; the
  # printed forward-mode round trips run the printer that the printed gradients keep here.
  # The CUDA offload's emulation over every gradient-table case and sample compiles each
  # twice more and runs the passes above (100 s plain); Offload.AdbenchGmm and
  # Offload.KernelsRunAndFailAsOnTheCpu keep codegen/offload.cpp under the sanitizers.)
  exit
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
stage build
ctest --test-dir build --output-on-failure -j2
stage tests
