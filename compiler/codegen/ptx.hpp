// CUDA kernels: the parallel loop nests of a function as PTX, through LLVM's NVPTX backend.
//
// A function's code is generated as for the CPU (codegen.cpp), with one chunk per row of each
// parallel loop nest (JitOptions::rowChunks) and no libmvec. Each outlined chunk function
// (Gen::outline: `i32 NAME.chunkK(i64 k, ptr err, i64 worker, captures...)`) that calls
// nothing the device lacks gets a kernel
//
//   NAME__chunkK(i64 chunks, ptr failed, captures...)
//
// in which global thread k < chunks runs chunk k and, if it fails, lowers *failed to k with
// an atomic min: the least failed chunk, which the host runs again to make its error, as the
// thread pool's tasks do. Math functions are libdevice's (__nv_exp, ...), linked in from the
// CUDA toolkit's libdevice.10.bc. A chunk that needs memory of its own (a temporary per
// chunk from the workspace), the Revolve schedule or digamma stays on the host, and the report
// says so. Not public: slopec's `--emit ptx` prints it.
#pragma once

#include "compiler/ir/ir.hpp"

#include <string>
#include <vector>

namespace slope::codegen {

struct PtxOptions {
  std::string arch = "sm_80"; // the GPU architecture (sm_80, sm_90, ...)
  int optLevel = 2;           // 0..3
  std::string libdevice;      // libdevice.10.bc; empty: findLibdevice()
};

/// Where one parallel loop nest runs.
struct PtxLoop {
  std::string chunk;  // the chunk function, NAME.chunkK
  std::string where;  // the loop nest's source position (PATH:LINE:COL), if known
  std::string kernel; // its kernel's name; empty: it runs on the host
  std::string why;    // on the host: the reason
};

struct PtxModule {
  std::string ptx; // the PTX module (with no kernel when no loop nest is one)
  std::vector<PtxLoop> loops;
  std::string libdevice; // the libdevice linked in, if any was needed
  std::string arch;
};

/// The kernels of f. Throws std::invalid_argument for an unknown architecture.
PtxModule emitPtx(const ir::Function& f, const PtxOptions& opt = {});

/// The report and the module as `slopec grad --emit ptx` prints them: a comment per loop nest
/// (kernel or host, and why), then the PTX.
std::string printPtx(const PtxModule& m, const std::string& function);

/// libdevice.10.bc: $SLOPE_LIBDEVICE, else the CUDA toolkit's (under $CUDA_HOME, /usr/local/cuda
/// and /usr/local/cuda-*, /usr/lib/cuda, /usr/lib/nvidia-cuda-toolkit); empty if none.
std::string findLibdevice();

} // namespace slope::codegen
