// CUDA offload: a function run with its parallel loop nests on the GPU (docs/gpu.md).
//
// The function is compiled twice from the same Tensor IR and the same options (one chunk per
// row of each parallel loop nest): for the host by the JIT, with JitOptions::offload, and as
// PTX kernels (ptx.hpp), which the driver compiles for the GPU. The host code runs as on the
// CPU, and wherever it would hand a loop nest's chunks to its thread pool (abi.h's
// slope_parallel), the offload's parallel_for launches that chunk's kernel instead, with
// the same captures read out of the task's ctx, and waits for it. A loop nest without a
// kernel (ptx.cpp says why) runs on the host.
//
// Memory is CUDA's managed memory: the arguments and results are copied into and out of it
// by the driver (cuda::copyIn, copyOut), and what the code allocates (its workspace, tapes,
// temporaries) comes from it, so one pointer is good on both sides and the driver moves pages to
// where they are used. The arithmetic is the CPU's LLVM IR; only the math functions differ
// (libdevice on the GPU).
#pragma once

#include "compiler/codegen/execute.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace slope::codegen {

/// What one offloaded function did, summed over its calls.
struct OffloadStats {
  int64_t kernels = 0;   // loop nests with a kernel (of `loops`)
  int64_t loops = 0;     // parallel loop nests
  int64_t launches = 0;  // kernel launches
  int64_t hostLoops = 0; // loop nests handed to the offload that ran on the host
  int64_t calls = 0;
  double kernelSeconds = 0; // launching the kernels and waiting for them
  double callSeconds = 0;   // whole calls, copies in and out included
  std::string arch;         // the architecture the PTX was made for
  std::string report;       // per loop nest: kernel or host, and why (printPtx's comment)
};

/// Caller memory: a buffer's first byte and its length.
struct Span {
  void* data;
  size_t bytes;
};

/// A call on caller memory (the C++ API's views, with no copy of its own): in[k] holds
/// parameter k's elements, whose shapes gave `sizes` (bindSizes, checked by the caller), and
/// out[r] receives result r (resultShape's extents for `sizes`). Copied into the device's
/// memory and out of it, with nothing in between.
using DeviceCall =
    std::function<void(const std::vector<Span>& in, const std::map<std::string, int64_t>& sizes,
                       const std::vector<Span>& out)>;

/// The JIT's options for the host side of an offloaded function (optimisation level optLevel).
JitOptions offloadJitOptions(int optLevel = 2);

/// Runs functions on CUDA device 0. With SLOPE_CUDA_STATS=1 in the environment, each
/// function's OffloadStats go to stderr when it is dropped. Throws std::runtime_error from the
/// constructor where CUDA is not usable (the message says what is missing), and from a call whose
/// kernel failed.
class CudaRunner final : public Runner {
public:
  /// Device: runs on GPU 0. Emulate (a test's, on a machine without CUDA): everything but
  /// the GPU, each launch played on the host (Offloaded::emulate), which checks that every
  /// pointer a kernel would get points into memory a kernel reaches.
  enum class Mode { Device, Emulate };
  explicit CudaRunner(int optLevel = 2, Mode mode = Mode::Device);
  Runnable prepare(const ir::Function& f) override;
  /// The stats of the function prepare() made last (shared with its Runnable).
  std::shared_ptr<const OffloadStats> lastStats() const { return last_; }
  /// The function prepare() made last, called on caller memory (DeviceCall).
  DeviceCall lastCall() const { return lastCall_; }

private:
  int optLevel_;
  Mode mode_;
  std::shared_ptr<Jit> jit_;
  std::shared_ptr<OffloadStats> last_;
  DeviceCall lastCall_;
};

} // namespace slope::codegen
