// The thread pool behind generated code's parallel loops (abi.h: slope_parallel).
//
// One pool per process, shared by every module: its workers sleep until a call of compiled
// code hands out chunks. The calling thread always takes part (worker 0), so a call finishes
// even when every pool thread is busy with other callers' chunks, and a caller with threads of
// its own (several threads calling compiled code at once) shares the pool's threads with the
// others instead of multiplying them. Which chunk runs where changes no result: generated
// code cuts its work at bounds that depend on the sizes only and combines chunk results in
// chunk order (docs/architecture.md, "Threads").
#pragma once

#include "slope/abi.h"

#include <cstdint>
#include <string>

namespace slope {

/// The pool's slope_parallel for up to `threads` threads per parallel loop (the caller's
/// included); starts the pool's threads the first time they are needed. The result lives as
/// long as the process.
const slope_parallel* threadPool(int threads);

/// The default number of threads: SLOPE_NUM_THREADS when set, otherwise every core of the
/// machine. Throws std::invalid_argument naming the variable when it is not a positive integer.
int defaultThreads();

/// Parses a thread count (a positive integer, at most kMaxThreads); throws
/// std::invalid_argument saying what `what` (e.g. "--threads") should be.
int parseThreads(const std::string& text, const std::string& what);

/// The most threads one parallel loop uses (generated code keeps scratch memory per thread).
inline constexpr int kMaxThreads = 64;

} // namespace slope
