// Ahead-of-time compilation: functions and their gradients in one relocatable object file,
// and the C header that declares them (`slopec compile`, `slopec grad --emit obj|header`;
// docs/aot.md).
//
// The object holds, for each function NAME, the code the JIT would make for it (the same
// optimisation pipeline, for the CPU chosen), exported as
//   NAME__abi           the function with the C ABI of slope/abi.h (argument and result arrays)
//   NAME__release       frees the memory its calls keep between calls (abi.h)
//   NAME__set_parallel  gives it threads (abi.h)
// and the header adds NAME itself, a static inline function with one typed parameter per
// argument, size and result, which checks what the C ABI leaves to the caller (sizes not
// negative, no null data, no output sharing memory with an input or another output) and
// turns an error into a message (NAME__message). The object needs only the C library, libm,
// libmvec (glibc's vector math, where it calls it) and, for the few programs that use
// digamma or binomial checkpointing, Slope's small run-time archive libslope_rt.a, which has
// no dependency of its own.
//
// This header has no LLVM types: LLVM lives in object.cpp.
#pragma once

#include "compiler/codegen/jit.hpp"

#include <set>
#include <string>
#include <vector>

namespace slope::codegen {

/// One function of an object file.
struct ObjectFunction {
  ir::Function f;                       // f.name is NAME
  std::string signature;                // the Slope signature, for the header's comment
  std::vector<std::string> resultNames; // the typed entry's output parameters, one per result
  std::string about;                    // what it is, a line for the comment (may be empty)
};

struct ObjectOptions {
  // The CPU the code is for: native (this machine, as the JIT), x86-64, x86-64-v2,
  // x86-64-v3 or x86-64-v4 (kObjectCpus).
  std::string cpu = "native";
  int optLevel = 2;
};
inline const std::vector<std::string> kObjectCpus = {"native", "x86-64", "x86-64-v2", "x86-64-v3",
                                                     "x86-64-v4"};

struct ObjectCode {
  std::string bytes;                    // the ELF object
  std::vector<std::vector<Site>> sites; // per function, for NAME__message
  std::set<std::string> runtime;        // symbols it takes from libslope_rt.a
  bool vectorMath = false;              // whether it calls libmvec
  std::string cpu;                      // the CPU it was compiled for (native resolved)
};

/// Compiles fns into one object for opt.cpu. Throws std::invalid_argument for an unknown CPU.
ObjectCode emitObject(const std::vector<ObjectFunction>& fns, const ObjectOptions& opt);

/// The C header for an object with fns: `source` names the .slope file in its comments.
std::string objectHeader(const std::vector<ObjectFunction>& fns, const ObjectCode& code,
                         const std::string& source);

} // namespace slope::codegen
