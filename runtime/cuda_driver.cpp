// The CUDA driver, found and loaded at run time (cuda_driver.hpp).
#include "runtime/cuda_driver.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <mutex>
#include <stdexcept>

namespace slope::cuda {
namespace {

// cuda.h's values of the few enumerators used here.
constexpr int kAttrComputeMajor = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeMinor = 76; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
constexpr int kJitErrorLogBuffer = 5; // CU_JIT_ERROR_LOG_BUFFER
constexpr int kJitErrorLogSize = 6;   // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
/// CUDA 12.0: the oldest driver whose PTX JIT reads PTX ISA 7.8 (ptx.cpp writes it).
constexpr int kOldestDriver = 12000;

Api gApi{};
Probe gProbe;

/// dlopen's handle of the driver (`opened`: the name that worked), or null with `tried`
/// listing where it looked and why not.
void* openDriver(std::string& opened, std::string& tried) {
  std::vector<std::string> names;
  if (const char* env = std::getenv("SLOPE_CUDA_DRIVER"); env && *env) {
    names.emplace_back(env);
  } else {
    names = {"libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1",
             "/usr/lib/wsl/lib/libcuda.so.1"};
  }
  for (const std::string& n : names) {
    if (void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      opened = n;
      return h;
    }
    const char* e = dlerror();
    tried += "\n  " + (e ? std::string(e) : n + ": not found"); // (dlerror names the file)
  }
  return nullptr;
}

/// Resolves every entry point of Api; the first one missing, or empty.
std::string resolve(void* h) {
  struct Entry {
    void** slot;
    const char* symbol;
  };
#define SLOPE_CU(field, symbol)                                                                    \
  Entry {                                                                                          \
    reinterpret_cast<void**>(&gApi.field), symbol                                                  \
  }
  const Entry entries[] = {
      SLOPE_CU(cuInit, "cuInit"),
      SLOPE_CU(cuDriverGetVersion, "cuDriverGetVersion"),
      SLOPE_CU(cuDeviceGetCount, "cuDeviceGetCount"),
      SLOPE_CU(cuDeviceGet, "cuDeviceGet"),
      SLOPE_CU(cuDeviceGetName, "cuDeviceGetName"),
      SLOPE_CU(cuDeviceGetAttribute, "cuDeviceGetAttribute"),
      SLOPE_CU(cuDeviceTotalMem, "cuDeviceTotalMem_v2"),
      SLOPE_CU(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
      SLOPE_CU(cuCtxSetCurrent, "cuCtxSetCurrent"),
      SLOPE_CU(cuModuleLoadDataEx, "cuModuleLoadDataEx"),
      SLOPE_CU(cuModuleGetFunction, "cuModuleGetFunction"),
      SLOPE_CU(cuModuleUnload, "cuModuleUnload"),
      SLOPE_CU(cuMemAlloc, "cuMemAlloc_v2"),
      SLOPE_CU(cuMemAllocManaged, "cuMemAllocManaged"),
      SLOPE_CU(cuMemFree, "cuMemFree_v2"),
      SLOPE_CU(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
      SLOPE_CU(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
      SLOPE_CU(cuLaunchKernel, "cuLaunchKernel"),
      SLOPE_CU(cuCtxSynchronize, "cuCtxSynchronize"),
      SLOPE_CU(cuGetErrorString, "cuGetErrorString"),
      SLOPE_CU(cuCtxGetCurrent, "cuCtxGetCurrent"),
  };
#undef SLOPE_CU
  for (const Entry& e : entries) {
    *e.slot = dlsym(h, e.symbol);
    if (!*e.slot) return e.symbol;
  }
  gApi.cuMemPrefetchAsync = reinterpret_cast<decltype(gApi.cuMemPrefetchAsync)>(
      dlsym(h, "cuMemPrefetchAsync_v2")); // (optional, as the two below)
  gApi.cuMemHostAlloc = reinterpret_cast<decltype(gApi.cuMemHostAlloc)>(dlsym(h, "cuMemHostAlloc"));
  gApi.cuMemFreeHost = reinterpret_cast<decltype(gApi.cuMemFreeHost)>(dlsym(h, "cuMemFreeHost"));
  return {};
}

void load() {
  std::string opened, tried;
  void* h = openDriver(opened, tried);
  if (!h) {
    gProbe.problem = "no CUDA driver library (libcuda.so.1, which the NVIDIA driver installs); "
                     "looked for:" +
                     tried;
    return;
  }
  // The file the loader found (a bare soname resolves through its path), else the name.
  Dl_info info{};
  void* any = dlsym(h, "cuInit");
  gProbe.library = any && dladdr(any, &info) && info.dli_fname ? info.dli_fname : opened;
  if (std::string missing = resolve(h); !missing.empty()) {
    gProbe.problem = "the CUDA driver library " + gProbe.library + " has no " + missing +
                     " (a driver older than CUDA 12?)";
    return;
  }
  if (CUresult r = gApi.cuInit(0)) {
    gProbe.problem = "the CUDA driver did not start: cuInit: " + errorText(r);
    return;
  }
  int version = 0;
  gApi.cuDriverGetVersion(&version);
  gProbe.driverVersion = version;
  if (version < kOldestDriver) {
    gProbe.problem = "the CUDA driver is version " + std::to_string(version / 1000) + "." +
                     std::to_string(version % 1000 / 10) + "; Slope's kernels need 12.0 or later";
    return;
  }
  int count = 0;
  if (CUresult r = gApi.cuDeviceGetCount(&count)) {
    gProbe.problem = "cuDeviceGetCount: " + errorText(r);
    return;
  }
  for (int i = 0; i < count; ++i) {
    Device d;
    CUdevice dev = 0;
    if (gApi.cuDeviceGet(&dev, i)) continue;
    char name[256] = {};
    gApi.cuDeviceGetName(name, sizeof name - 1, dev);
    d.index = i;
    d.name = name;
    gApi.cuDeviceGetAttribute(&d.major, kAttrComputeMajor, dev);
    gApi.cuDeviceGetAttribute(&d.minor, kAttrComputeMinor, dev);
    gApi.cuDeviceTotalMem(&d.memory, dev);
    gProbe.devices.push_back(d);
  }
  if (gProbe.devices.empty())
    gProbe.problem = "the CUDA driver (" + gProbe.library + ") sees no GPU";
}

} // namespace

const Probe& probe() {
  static std::once_flag once;
  std::call_once(once, load);
  return gProbe;
}

const Api& api() {
  if (!probe().ok()) throw std::runtime_error("CUDA is not available: " + probe().problem);
  return gApi;
}

std::string errorText(CUresult r) {
  if (r == 0) return {};
  const char* s = nullptr;
  if (gApi.cuGetErrorString && gApi.cuGetErrorString(r, &s) == 0 && s)
    return std::string(s) + " (error " + std::to_string(r) + ")";
  return "error " + std::to_string(r);
}

CUmodule loadModule(const std::string& ptx) {
  const Api& a = api();
  useDevice();
  char log[8192] = {};
  int options[] = {kJitErrorLogBuffer, kJitErrorLogSize};
  void* values[] = {log, reinterpret_cast<void*>(static_cast<uintptr_t>(sizeof log - 1))};
  CUmodule m = nullptr;
  if (CUresult r = a.cuModuleLoadDataEx(&m, ptx.c_str(), 2, options, values))
    throw std::runtime_error("cuModuleLoadDataEx: " + errorText(r) +
                             (log[0] ? std::string("\n") + log : ""));
  return m;
}

std::string loadKernels(const std::string& ptx, const std::vector<std::string>& kernels) {
  CUmodule m = nullptr;
  try {
    m = loadModule(ptx);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  std::string out;
  for (const std::string& k : kernels) {
    CUfunction f = nullptr;
    if (CUresult r = api().cuModuleGetFunction(&f, m, k.c_str()))
      out += (out.empty() ? "" : "\n") + ("cuModuleGetFunction " + k + ": " + errorText(r));
  }
  api().cuModuleUnload(m);
  return out;
}

void useDevice() {
  const Api& a = api();
  static CUcontext primary = [&] {
    CUdevice dev = 0;
    CUcontext c = nullptr;
    if (CUresult r = a.cuDeviceGet(&dev, 0))
      throw std::runtime_error("CUDA: cuDeviceGet: " + errorText(r));
    if (CUresult r = a.cuDevicePrimaryCtxRetain(&c, dev))
      throw std::runtime_error("CUDA: cuDevicePrimaryCtxRetain: " + errorText(r));
    return c;
  }();
  CUcontext current = nullptr;
  if (a.cuCtxGetCurrent(&current) == 0 && current == primary) return;
  if (CUresult r = a.cuCtxSetCurrent(primary))
    throw std::runtime_error("CUDA: cuCtxSetCurrent: " + errorText(r));
}

namespace {

enum class Memory { Host, Managed, Pinned };

/// Without CUDA: the blocks managedMalloc handed out (start, bytes), for reachable().
std::mutex gHostMutex;
std::map<uintptr_t, size_t> gHostBlocks;

/// managedMalloc's kind of memory, chosen at the first allocation.
Memory memory() {
  static const Memory kind = [] {
    if (!probe().ok()) return Memory::Host;
    const char* env = std::getenv("SLOPE_CUDA_MEMORY");
    std::string want = env ? env : "";
    if (want == "pinned" && gApi.cuMemHostAlloc && gApi.cuMemFreeHost) return Memory::Pinned;
    useDevice();
    CUdeviceptr p = 0;
    constexpr unsigned kAttachGlobal = 1; // CU_MEM_ATTACH_GLOBAL
    if (gApi.cuMemAllocManaged(&p, 8, kAttachGlobal) == 0) {
      gApi.cuMemFree(p);
      return Memory::Managed;
    }
    return gApi.cuMemHostAlloc && gApi.cuMemFreeHost ? Memory::Pinned : Memory::Managed;
  }();
  return kind;
}

} // namespace

const char* memoryKind() {
  switch (memory()) {
  case Memory::Host: return "host";
  case Memory::Managed: return "managed";
  case Memory::Pinned: return "pinned";
  }
  return "?";
}

void* managedMalloc(size_t n) {
  Memory m = memory();
  if (m == Memory::Host) { // (offload code run on the CPU alone: a test's)
    void* p = std::malloc(n);
    if (p) {
      std::lock_guard<std::mutex> lock(gHostMutex);
      gHostBlocks[reinterpret_cast<uintptr_t>(p)] = n;
    }
    return p;
  }
  if (n == 0) n = 1; // (the driver takes no empty allocation)
  if (m == Memory::Pinned) {
    // CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP: with unified addressing (every
    // 64-bit platform CUDA 12 runs on) the host pointer is the device's too.
    void* h = nullptr;
    return gApi.cuMemHostAlloc(&h, n, 0x01 | 0x02) == 0 ? h : nullptr;
  }
  CUdeviceptr p = 0;
  constexpr unsigned kAttachGlobal = 1; // CU_MEM_ATTACH_GLOBAL
  if (gApi.cuMemAllocManaged(&p, n, kAttachGlobal) != 0) return nullptr;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(p));
}

bool reachable(const void* p) {
  if (memory() != Memory::Host) return true;
  auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(gHostMutex);
  auto it = gHostBlocks.upper_bound(a);
  if (it == gHostBlocks.begin()) return false;
  --it;
  return a <= it->first + it->second; // (one past the end too)
}

void* managedCalloc(size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size) return nullptr;
  void* p = managedMalloc(n * size);
  if (p) std::memset(p, 0, n * size);
  return p;
}

void managedFree(void* p) {
  switch (memory()) {
  case Memory::Host:
    if (p) {
      std::lock_guard<std::mutex> lock(gHostMutex);
      gHostBlocks.erase(reinterpret_cast<uintptr_t>(p));
    }
    std::free(p);
    break;
  case Memory::Managed:
    if (p) gApi.cuMemFree(static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p)));
    break;
  case Memory::Pinned:
    if (p) gApi.cuMemFreeHost(p);
    break;
  }
}

void copyIn(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  if (memory() != Memory::Managed) {
    std::memcpy(dst, src, n);
    return;
  }
  if (CUresult r =
          gApi.cuMemcpyHtoD(static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(dst)), src, n))
    throw std::runtime_error("CUDA: copying an argument to the device: " + errorText(r));
}

void copyOut(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  if (memory() != Memory::Managed) {
    std::memcpy(dst, src, n);
    return;
  }
  if (CUresult r =
          gApi.cuMemcpyDtoH(dst, static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(src)), n))
    throw std::runtime_error("CUDA: copying a result from the device: " + errorText(r));
}

void prefetch(const void* p, size_t n, bool toDevice) {
  if (!p || n == 0 || memory() != Memory::Managed || !gApi.cuMemPrefetchAsync) return;
  gApi.cuMemPrefetchAsync(static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p)), n,
                          MemLocation{toDevice ? 1 : 2, 0}, 0, nullptr);
}

} // namespace slope::cuda
