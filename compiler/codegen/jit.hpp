// The LLVM backend: Tensor IR -> LLVM IR -> machine code in process (ORC LLJIT).
//
// This header has no LLVM types: LLVM lives in codegen.cpp (IR generation) and jit.cpp (the
// pass pipeline and ORC), so only those two translation units include LLVM headers.
#pragma once

#include "compiler/ir/ir.hpp"
#include "slope/abi.h"

#include <memory>
#include <string>
#include <vector>

namespace slope::codegen {

/// A check in generated code, so that an error code can be turned into a message.
struct Site {
  std::string tensor; // the tensor a subscript indexes, if any (kTripCountSite: a loop)
  SrcRange loc;
  std::string extent; // SLOPE_ERR_EXTENT: the extent, as the evaluator names it
};
/// Site::tensor of a loop whose trip count (hi - lo) overflowed i64.
inline constexpr const char* kTripCountSite = "#trips";

/// A parallel loop nest's task (abi.h slope_task) as JitOptions::offload leaves it for a
/// device: the kernel of chunk `index` (codegen/ptx.hpp, NAME__chunkK) takes the same
/// captures, which the task's ctx holds at `offsets` (codegen/offload.hpp launches it).
struct ChunkTask {
  int index = 0;                 // K of NAME.chunkK: its place among the loop nests
  slope_task task = nullptr;     // its address in the JIT
  std::vector<uint32_t> offsets; // each capture's byte offset in ctx
  std::vector<uint32_t> sizes;   // and its size
  std::vector<bool> pointers;    // and whether it is a pointer
  uint32_t failedOffset = 0;     // the i64 least failed chunk, which the code reads after
  std::string hostOnly;          // non-empty: why only the host can run it
};

struct Tier;

struct CompiledFunction {
  // The entry point. Under JitOptions::tiered, a trampoline that runs the level-0 code until
  // the code of optLevel is in place, and that code from then on: callers may keep it.
  slope_fn fn = nullptr;
  std::vector<Site> sites;
  std::vector<ir::EntryCheck> entryChecks; // SLOPE_ERR_ENTRY's dim indexes these
  // NAME__set_parallel (abi.h): Jit::add binds the pool of JitOptions::threads; a test may
  // bind another between calls (the code is the same for every thread count). Null under
  // JitOptions::tiered (each tier gets the pool of JitOptions::threads).
  void (*setParallel)(const slope_parallel*) = nullptr;
  Tier* tier = nullptr; // JitOptions::tiered: what Jit::optimize and Jit::optimized ask about
  std::vector<ChunkTask> tasks; // JitOptions::offload only
};

struct JitOptions {
  int optLevel = 2; // 0..3
  // A test's knob: loops that Loop IR calls parallel run their iterations last to first. The
  // results must not change by a bit (tests/unit/jit_test.cpp), which checks the
  // classification a parallel schedule will rely on.
  bool reverseParallel = false;
  // A test's knob (lower::LowerOptions::minTriangleColumns): the fewest columns for which a
  // triangular sum runs in column order; -1: Loop IR's default.
  int64_t minTriangleColumns = -1;
  // A test's knob (lower::LowerOptions::minScatterColumns): the same for a triangle's
  // adjoint; -1: Loop IR's default.
  int64_t minScatterColumns = -1;
  // A test's knob (lower::LowerOptions::tileRows): rows per tile of a tiled nest; 0: none
  // tiled; -1: Loop IR's default.
  int64_t tileRows = -1;
  // A test's knob: generated code allocates and frees through counters (allocationCounts)
  // instead of calling malloc, calloc and free directly.
  bool countAllocations = false;
  // Threads per parallel loop (the calling thread's included; docs/architecture.md,
  // "Threads"): 1 runs everything on the calling thread. Results are the same bits for every
  // value.
  int threads = 1;
  // A test's knob: the least work (iterations times Loop IR statements) for which a parallel
  // loop uses the threads; 0 makes tests' small loops use them.
  double minParallelWork = 32768;
  // Threads that generate machine code for one function's module (its parts are compiled
  // side by side, docs/architecture.md "JIT"): 0 takes `threads`. Machine code does the same
  // arithmetic for every value.
  int compileThreads = 0;
  // A test's knob: the least LLVM instructions (after optimisation) for which code generation
  // splits a module into parts at all.
  size_t minSplitInstructions = 2000;
  // A module with a basic block of more LLVM instructions than this (after optimisation) gets
  // its machine code at level 0, in one part, whatever its level, with its blocks cut into
  // pieces of hugeBlock / 2: LLVM's greedy register allocator grows faster than linearly in
  // a block's length (a 16,000-term expression: 91 % of code generation, docs/benchmarks.md
  // (g)), and level 0's fast one is linear in the number of blocks but quadratic within one
  // that has many values live across many calls. Such blocks are straight-line code
  // thousands of operations long (the samples' largest has 141). The same bits at every
  // level; 0: never.
  size_t hugeBlock = 2000;
  // Math functions through libmvec where this machine has it (compiler/support/vmath.hpp).
  // An object file for a CPU without AVX2 and FMA turns it off (codegen/object.hpp).
  bool vectorMath = true;
  // CUDA kernels (codegen/ptx.hpp): a parallel loop nest is cut into one chunk per row of its
  // first index, a GPU thread each, instead of kLoopChunks pieces. Rows do not depend on each
  // other, so the results are the same bits either way (tests/unit/jit_test.cpp).
  bool rowChunks = false;
  // Tiered compilation (docs/architecture.md, "Tiers"): Jit::add compiles at level 0 only
  // (a tenth of the time of level 2 or less) and returns a trampoline to that code; once its
  // calls have taken tierBudget times that compile time, a thread of the Jit compiles the
  // function again at optLevel, the calls wait for it, and the trampoline switches to it.
  // Every level gives the same bits, so only the speed changes. tierBudget 0: the second
  // tier starts with the first call; below 0: only Jit::optimize starts it. The default is
  // about the ratio of the two compile times (17-19 on the ADBench GMM and LSTM), the budget
  // at which paying for the compile bounds the loss against either choice made in hindsight
  // (ski rental). Off for optLevel 0 and for offload.
  bool tiered = false;
  double tierBudget = 15;
  // CUDA offload (codegen/offload.hpp): memory from CUDA's managed allocator (which kernels
  // read as the host does), and each parallel loop nest's task exported with its ctx's
  // layout (CompiledFunction::tasks), so a slope_parallel can launch its kernel instead.
  bool offload = false;
};

/// Calls of malloc + calloc and of free made by code compiled with
/// JitOptions::countAllocations, in all threads, since the process started.
struct AllocationCounts {
  int64_t allocs = 0, frees = 0;
};
AllocationCounts allocationCounts();

class Jit {
public:
  explicit Jit(const JitOptions& opt = {});
  ~Jit();
  Jit(const Jit&) = delete;
  Jit& operator=(const Jit&) = delete;

  /// Compiles f (under the symbol f.name, which must be new to this Jit) and returns its
  /// entry point. Thread-safe. The code and the memory its calls keep (abi.h: NAME__release)
  /// live until the Jit is destroyed, which must not happen while a call is running.
  CompiledFunction add(const ir::Function& f);

  /// Under JitOptions::tiered: compiles c at JitOptions::optLevel now (first in the tier
  /// thread's queue) unless that is done, and waits for it; throws std::runtime_error where
  /// that compile failed (c's calls then stay on level 0). Nothing to do for other functions.
  static void optimize(const CompiledFunction& c);
  /// Whether c's calls run the code of JitOptions::optLevel (always, where not tiered).
  static bool optimized(const CompiledFunction& c);

  struct Impl; // (jit.cpp)

private:
  std::unique_ptr<Impl> impl_;
};

/// The optimised LLVM IR of f, as text.
std::string emitLLVM(const ir::Function& f, const JitOptions& opt = {});
/// Assembly for the host machine.
std::string emitAsm(const ir::Function& f, const JitOptions& opt = {});

} // namespace slope::codegen
