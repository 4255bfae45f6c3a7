// CUDA offload (offload.hpp).
#include "compiler/codegen/offload.hpp"

#include "compiler/codegen/ptx.hpp"
#include "runtime/cuda_driver.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace slope::codegen {
namespace {

/// Threads per block: a chunk is one row of its loop nest, so blocks are plain 1-D cuts of
/// the rows. 128 leaves every kernel registers enough to launch (255 each at most).
constexpr unsigned kBlock = 128;

/// The newest architecture ptx.cpp writes that the device runs (its PTX JIT takes PTX for
/// any older one).
std::string archFor(const cuda::Device& d) {
  int cc = d.major * 10 + d.minor;
  for (int a : {90, 89, 87, 86, 80, 75, 72, 70, 61, 60})
    if (a <= cc) return "sm_" + std::to_string(a);
  throw std::runtime_error("CUDA: " + d.name + " (" + d.arch() +
                           ") is older than sm_60, the oldest GPU Slope's kernels run on");
}

size_t bytesOf(const Tensor& t) {
  return static_cast<size_t>(t.numel()) * dtypeSize(t.dtype());
}

/// A managed buffer that frees itself.
struct Managed {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Managed(size_t n) : p(cuda::managedMalloc(std::max<size_t>(n, 8))), bytes(n) {
    if (!p) throw std::bad_alloc();
  }
  ~Managed() { cuda::managedFree(p); }
  Managed(const Managed&) = delete;
  Managed& operator=(const Managed&) = delete;
};

/// One compiled function and its kernels.
struct Offloaded {
  ir::Function f;
  CompiledFunction c;
  cuda::CUmodule module = nullptr;
  struct Launch {
    bool device = false;               // a kernel's (else the host runs it)
    cuda::CUfunction kernel = nullptr; // (null in an emulation)
    const ChunkTask* task = nullptr;
  };
  bool emulated = false; // CudaRunner::Emulate
  std::unordered_map<const void*, Launch> byTask;
  slope_parallel parallel{};
  std::unique_ptr<Managed> failed;               // the kernels' least failed chunk
  std::vector<std::unique_ptr<Managed>> buffers; // the ABI's arrays, arguments and results
  std::string error;                             // the first CUDA error of this call
  std::shared_ptr<OffloadStats> stats;
  std::mutex mutex; // one call at a time: the code's slope_parallel is per function

  ~Offloaded() {
    if (module) cuda::api().cuModuleUnload(module);
    const char* env = std::getenv("SLOPE_CUDA_STATS");
    if (env && *env && std::string(env) != "0" && stats->calls > 0)
      std::fprintf(stderr,
                   "%sslope cuda %s: %lld calls, %.3f ms each, of which kernels %.3f ms "
                   "(%lld launches, %lld loop nests on the host; %s memory)\n",
                   stats->report.c_str(), f.name.c_str(), static_cast<long long>(stats->calls),
                   1e3 * stats->callSeconds / static_cast<double>(stats->calls),
                   1e3 * stats->kernelSeconds / static_cast<double>(stats->calls),
                   static_cast<long long>(stats->launches),
                   static_cast<long long>(stats->hostLoops), cuda::memoryKind());
  }

  /// abi.h's parallel_for: chunks 0..n-1 of `task`, as the kernel or on this thread.
  static void parallelFor(void* pool, int64_t n, int32_t, slope_task task, void* ctx) {
    auto* o = static_cast<Offloaded*>(pool);
    auto it = o->byTask.find(reinterpret_cast<const void*>(task));
    if (it == o->byTask.end() || !it->second.device || !o->error.empty()) {
      for (int64_t k = 0; k < n; ++k)
        task(ctx, k, 0);
      ++o->stats->hostLoops;
      return;
    }
    const ChunkTask& t = *it->second.task;
    if (o->emulated) {
      o->emulate(t, n, task, ctx);
      return;
    }
    const cuda::Api& a = cuda::api();
    auto* failed = static_cast<int64_t*>(o->failed->p);
    *failed = n;
    int64_t chunks = n;
    auto failedPtr = static_cast<cuda::CUdeviceptr>(reinterpret_cast<uintptr_t>(failed));
    std::vector<void*> params{&chunks, &failedPtr};
    for (uint32_t off : t.offsets)
      params.push_back(static_cast<char*>(ctx) + off);
    auto blocks = static_cast<unsigned>((n + kBlock - 1) / kBlock);
    auto t0 = std::chrono::steady_clock::now();
    cuda::CUresult r = a.cuLaunchKernel(it->second.kernel, blocks, 1, 1, kBlock, 1, 1, 0, nullptr,
                                        params.data(), nullptr);
    if (r == 0) r = a.cuCtxSynchronize();
    o->stats->kernelSeconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++o->stats->launches;
    if (r != 0) {
      // (The call fails with this message; the code goes on, but its results are dropped.)
      o->error = "the kernel of " + o->f.name + ".chunk" + std::to_string(t.index) +
                 " failed: " + cuda::errorText(r);
      return;
    }
    auto* least = reinterpret_cast<int64_t*>(static_cast<char*>(ctx) + t.failedOffset);
    *least = std::min(*least, *failed);
  }

  /// The launch as the host can play it: each pointer the task captures must point into
  /// memory a kernel reaches (cuda::reachable), and the task gets a fresh ctx holding only
  /// the bytes a launch passes. A wrong offset, a missing capture or a pointer into the
  /// host's own memory shows as an error or a wrong result.
  void emulate(const ChunkTask& t, int64_t n, slope_task task, void* ctx) {
    for (size_t j = 0; j < t.offsets.size(); ++j) {
      if (!t.pointers[j]) continue;
      void* p = nullptr;
      std::memcpy(&p, static_cast<char*>(ctx) + t.offsets[j], sizeof p);
      if (p && !cuda::reachable(p)) {
        error = "capture " + std::to_string(j) + " of " + f.name + ".chunk" +
                std::to_string(t.index) + " points to memory a kernel cannot reach";
        return;
      }
    }
    std::vector<uint64_t> copy(t.failedOffset / 8 + 1, 0);
    auto* dst = reinterpret_cast<char*>(copy.data());
    for (size_t j = 0; j < t.offsets.size(); ++j)
      std::memcpy(dst + t.offsets[j], static_cast<char*>(ctx) + t.offsets[j], t.sizes[j]);
    std::memcpy(dst + t.failedOffset, static_cast<char*>(ctx) + t.failedOffset, 8);
    for (int64_t k = 0; k < n; ++k)
      task(dst, k, 0);
    std::memcpy(static_cast<char*>(ctx) + t.failedOffset, dst + t.failedOffset, 8);
    ++stats->launches;
  }

  /// A call on tensors: the results are allocated here.
  std::vector<Tensor> call(const std::vector<Tensor>& args) {
    auto sizes = bindSizes(f, args);
    std::vector<Span> in, out;
    for (const Tensor& t : args)
      in.push_back({const_cast<void*>(t.raw()), bytesOf(t)});
    std::vector<Tensor> results;
    for (size_t r = 0; r < f.body.yields.size(); ++r)
      results.emplace_back(f.types[f.body.yields[r]].dtype, resultShape(f, r, sizes));
    for (Tensor& t : results)
      out.push_back({t.raw(), bytesOf(t)});
    run(in, sizes, out);
    return results;
  }

  /// DeviceCall: the arguments are copied from `in` into the device's memory, and the
  /// results from there into `out`.
  void run(const std::vector<Span>& in, const std::map<std::string, int64_t>& sizes,
           const std::vector<Span>& out) {
    std::lock_guard<std::mutex> lock(mutex);
    auto t0 = std::chrono::steady_clock::now();
    if (!emulated) cuda::useDevice();
    std::vector<int64_t> sz = sizesArray(f, sizes);
    // Everything the code reads through a pointer is managed, the ABI's arrays included (a
    // kernel may read an extent through `sizes`). The buffers stay for the next call.
    size_t slot = 0;
    auto managed = [&](size_t bytes) {
      if (slot == buffers.size()) buffers.emplace_back();
      std::unique_ptr<Managed>& b = buffers[slot++];
      if (!b || b->bytes < bytes) {
        b.reset(); // (the old one first: a big buffer is not held twice)
        b = std::make_unique<Managed>(bytes);
      }
      return b->p;
    };
    auto* argp = static_cast<void**>(managed(sizeof(void*) * in.size()));
    for (size_t k = 0; k < in.size(); ++k) {
      argp[k] = managed(in[k].bytes);
      cuda::copyIn(argp[k], in[k].data, in[k].bytes);
      cuda::prefetch(argp[k], in[k].bytes, true);
    }
    auto* sizesp = static_cast<int64_t*>(managed(sizeof(int64_t) * sz.size()));
    std::copy(sz.begin(), sz.end(), sizesp);
    auto* resp = static_cast<void**>(managed(sizeof(void*) * out.size()));
    for (size_t r = 0; r < out.size(); ++r)
      resp[r] = managed(out[r].bytes);
    error.clear();
    c.setParallel(&parallel);
    slope_error err{};
    int32_t code = c.fn(argp, sizesp, resp, &err);
    if (!error.empty())
      throw std::runtime_error((emulated ? "offload emulation: " : "CUDA: ") + error);
    if (code != 0) throwCallFailure(c, err, &sizes);
    if (!emulated) cuda::api().cuCtxSynchronize();
    // (The driver's copy leaves the pages where they are, on the device for the next call.)
    for (size_t r = 0; r < out.size(); ++r)
      cuda::copyOut(out[r].data, resp[r], out[r].bytes);
    ++stats->calls;
    stats->callSeconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

} // namespace

JitOptions offloadJitOptions(int optLevel) {
  JitOptions o;
  o.optLevel = optLevel;
  o.offload = true;
  o.rowChunks = true;    // a chunk per row, as the kernels cut the loop nests
  o.vectorMath = false;  // as the PTX is generated (the same chunks, captures and order)
  o.minParallelWork = 0; // every loop nest of two rows or more goes to the offload
  o.threads = 1;
  return o;
}

CudaRunner::CudaRunner(int optLevel, Mode mode)
    : optLevel_(optLevel), mode_(mode), jit_(std::make_shared<Jit>(offloadJitOptions(optLevel))) {
  if (mode_ == Mode::Device)
    cuda::useDevice(); // (throws, saying what is missing, where CUDA is not usable)
  else if (cuda::probe().ok())
    throw std::logic_error("the offload's emulation is for machines without CUDA");
}

Runnable CudaRunner::prepare(const ir::Function& f) {
  const bool emulated = mode_ == Mode::Emulate;
  auto o = std::make_shared<Offloaded>();
  o->f = f;
  o->emulated = emulated;
  o->c = jit_->add(f);
  o->stats = std::make_shared<OffloadStats>();
  PtxOptions po;
  po.arch = emulated ? "sm_90" : archFor(cuda::probe().devices.at(0));
  po.optLevel = optLevel_;
  PtxModule ptx = emitPtx(f, po);
  o->stats->arch = po.arch;
  std::string printed = printPtx(ptx, f.name);
  o->stats->report = printed.substr(0, printed.size() - ptx.ptx.size());
  o->stats->loops = static_cast<int64_t>(ptx.loops.size());
  if (ptx.loops.size() != o->c.tasks.size())
    throw std::logic_error("offload: " + f.name + " has " + std::to_string(o->c.tasks.size()) +
                           " host tasks and " + std::to_string(ptx.loops.size()) +
                           " loop nests in its PTX");
  bool anyKernel = std::any_of(ptx.loops.begin(), ptx.loops.end(),
                               [](const PtxLoop& l) { return !l.kernel.empty(); });
  if (anyKernel && !emulated) {
    try {
      o->module = cuda::loadModule(ptx.ptx);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("CUDA: the driver did not load the kernels of " + f.name + ": " +
                               e.what());
    }
  }
  for (size_t k = 0; k < ptx.loops.size(); ++k) {
    const PtxLoop& l = ptx.loops[k];
    const ChunkTask& t = o->c.tasks[k];
    if (t.index != static_cast<int>(k) || l.chunk != f.name + ".chunk" + std::to_string(k))
      throw std::logic_error("offload: " + f.name + "'s tasks and kernels are not in step");
    Offloaded::Launch launch;
    launch.task = &t;
    if (!l.kernel.empty() && t.hostOnly.empty()) {
      launch.device = true;
      if (!emulated)
        if (cuda::CUresult r =
                cuda::api().cuModuleGetFunction(&launch.kernel, o->module, l.kernel.c_str()))
          throw std::runtime_error("CUDA: no kernel " + l.kernel + ": " + cuda::errorText(r));
      ++o->stats->kernels;
    } else if (!l.kernel.empty()) {
      o->stats->report += "//   (" + l.chunk + " runs on the host after all: " + t.hostOnly + ")\n";
    }
    o->byTask[reinterpret_cast<const void*>(t.task)] = launch;
  }
  o->failed = std::make_unique<Managed>(sizeof(int64_t));
  o->parallel.parallel_for = &Offloaded::parallelFor;
  o->parallel.pool = o.get();
  o->parallel.workers = 1 << 20; // (the code caps what it passes; the offload ignores it)
  last_ = o->stats;
  auto jit = jit_; // keeps the code alive as long as the callables
  lastCall_ = [o, jit](const std::vector<Span>& in, const std::map<std::string, int64_t>& sizes,
                       const std::vector<Span>& out) { o->run(in, sizes, out); };
  return [o, jit](const std::vector<Tensor>& args) { return o->call(args); };
}

} // namespace slope::codegen
