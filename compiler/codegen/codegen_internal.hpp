// Between codegen.cpp (IR generation) and jit.cpp (optimisation and ORC): not public.
#pragma once

#include "compiler/codegen/jit.hpp"

#include <atomic>
#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
} // namespace llvm

namespace slope::codegen {

/// LLVM IR for f: an external function named f.name with the C ABI of abi.h, and the table
/// of its run-time check sites.
std::unique_ptr<llvm::Module> generate(const ir::Function& f, llvm::LLVMContext& ctx,
                                       std::vector<Site>& sites, const JitOptions& opt = {});

/// Registers LLVM's native target once per process and reads SLOPE_LLVM_ARGS (jit.cpp).
void initLLVM();

/// Tags m's functions with tm's CPU and features and runs the optimisation pipeline of
/// optLevel (jit.cpp; the JIT and object files share it, so their code is the same). Once
/// *cancel is true, the passes left that LLVM may skip are skipped (m is then to be dropped).
void optimize(llvm::Module& m, llvm::TargetMachine& tm, int optLevel,
              const std::atomic<bool>* cancel = nullptr);

/// A position-independent target machine for an object file (jit.cpp): `cpu` "native" is
/// the JIT's own (the host's CPU and features, as JITTargetMachineBuilder::detectHost finds
/// them), otherwise an LLVM CPU name such as x86-64-v3, for the host's triple.
std::unique_ptr<llvm::TargetMachine> objectTargetMachine(const std::string& cpu, int optLevel);

/// m's machine code for tm: an object file, or assembly text (jit.cpp).
std::string machineCode(llvm::Module& m, llvm::TargetMachine& tm, bool object);

/// The external function generated code calls for revolve.next (slope::revolveNext; the JIT
/// defines it, an object file would link it from the Slope library).
inline constexpr const char* kRevolveNextSymbol = "slope_revolve_next";

/// The string attribute of an outlined chunk function (Gen::outline, `NAME.chunkK`): the
/// source offset of the loop nest it runs a chunk of.
inline constexpr const char* kLoopSourceAttr = "slope-loop";

/// NAME + this: the exported function that frees the memory NAME's calls keep (abi.h).
inline constexpr const char* kReleaseSuffix = "__release";

/// NAME + this: the exported function that gives NAME its threads (abi.h, slope_parallel).
inline constexpr const char* kSetParallelSuffix = "__set_parallel";

/// What generated code calls instead of malloc, calloc and free under
/// JitOptions::countAllocations (the JIT defines them).
inline constexpr const char* kCountedMallocSymbol = "slope_counted_malloc";
inline constexpr const char* kCountedCallocSymbol = "slope_counted_calloc";
inline constexpr const char* kCountedFreeSymbol = "slope_counted_free";

/// What generated code calls instead of malloc, calloc and free under JitOptions::offload:
/// CUDA managed memory (runtime/cuda_driver.hpp), which kernels and the host both read.
inline constexpr const char* kManagedMallocSymbol = "slope_managed_malloc";
inline constexpr const char* kManagedCallocSymbol = "slope_managed_calloc";
inline constexpr const char* kManagedFreeSymbol = "slope_managed_free";

/// Under JitOptions::offload, the string attribute of a chunk's task (`NAME.chunkK.task`,
/// exported): its ctx's layout as "TYPES;WHY", TYPES the captures' LLVM types in field order
/// (the least-failed-chunk i64 follows them) and WHY, if not empty, the reason only the host
/// can run it (a capture points into the host's stack). jit.cpp turns it into a ChunkTask.
inline constexpr const char* kTaskAttr = "slope-task";

/// Generated code calls kVectorMathPrefix + a libm name (+ "f") for the functions
/// compiler/support/vmath.hpp runs through libmvec: the JIT defines them as that header's
/// scalar entry points and maps them to libmvec's AVX2 functions for the vectoriser.
inline constexpr const char* kVectorMathPrefix = "slope_vm_";

} // namespace slope::codegen
