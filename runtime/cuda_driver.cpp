// The CUDA driver, found and loaded at run time (cuda_driver.hpp).
#include "runtime/cuda_driver.hpp"

#include <cstdlib>
#include <dlfcn.h>
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
      SLOPE_CU(cuMemFree, "cuMemFree_v2"),
      SLOPE_CU(cuMemcpyHtoD, "cuMemcpyHtoD_v2"),
      SLOPE_CU(cuMemcpyDtoH, "cuMemcpyDtoH_v2"),
      SLOPE_CU(cuLaunchKernel, "cuLaunchKernel"),
      SLOPE_CU(cuCtxSynchronize, "cuCtxSynchronize"),
      SLOPE_CU(cuGetErrorString, "cuGetErrorString"),
  };
#undef SLOPE_CU
  for (const Entry& e : entries) {
    *e.slot = dlsym(h, e.symbol);
    if (!*e.slot) return e.symbol;
  }
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

std::string loadKernels(const std::string& ptx, const std::vector<std::string>& kernels) {
  const Api& a = api();
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  if (CUresult r = a.cuDeviceGet(&dev, 0)) return "cuDeviceGet: " + errorText(r);
  if (CUresult r = a.cuDevicePrimaryCtxRetain(&ctx, dev))
    return "cuDevicePrimaryCtxRetain: " + errorText(r);
  if (CUresult r = a.cuCtxSetCurrent(ctx)) return "cuCtxSetCurrent: " + errorText(r);
  char log[8192] = {};
  int options[] = {kJitErrorLogBuffer, kJitErrorLogSize};
  void* values[] = {log, reinterpret_cast<void*>(static_cast<uintptr_t>(sizeof log - 1))};
  CUmodule m = nullptr;
  if (CUresult r = a.cuModuleLoadDataEx(&m, ptx.c_str(), 2, options, values))
    return "cuModuleLoadDataEx: " + errorText(r) + (log[0] ? std::string("\n") + log : "");
  std::string out;
  for (const std::string& k : kernels) {
    CUfunction f = nullptr;
    if (CUresult r = a.cuModuleGetFunction(&f, m, k.c_str()))
      out += (out.empty() ? "" : "\n") + ("cuModuleGetFunction " + k + ": " + errorText(r));
  }
  a.cuModuleUnload(m);
  return out;
}

} // namespace slope::cuda
