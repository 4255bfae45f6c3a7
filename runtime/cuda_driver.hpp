// The CUDA driver API, loaded at run time with dlopen: Slope builds and runs without CUDA,
// and finds the driver where a GPU machine has one. No CUDA header is needed; the few
// declarations used are below, with the driver's ABI (cuda.h, CUDA 12 and 13).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slope::cuda {

using CUresult = int;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUdeviceptr = unsigned long long;

/// cuda.h's CUmemLocation (CUDA 12.2 and later): where cuMemPrefetchAsync_v2 moves pages.
struct MemLocation {
  int type; // 1: a device (CU_MEM_LOCATION_TYPE_DEVICE), 2: the host
  int id;   // the device's ordinal
};

/// The driver's entry points Slope uses (the _v2 ones where cuda.h maps the name to them).
struct Api {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDriverGetVersion)(int*);
  CUresult (*cuDeviceGetCount)(int*);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetName)(char*, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice); // cuDeviceTotalMem_v2
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuModuleLoadDataEx)(CUmodule*, const void*, unsigned, int*, void**);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuMemAlloc)(CUdeviceptr*, size_t); // cuMemAlloc_v2
  CUresult (*cuMemAllocManaged)(CUdeviceptr*, size_t, unsigned);
  CUresult (*cuMemFree)(CUdeviceptr);                         // cuMemFree_v2
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void*, size_t); // cuMemcpyHtoD_v2
  CUresult (*cuMemcpyDtoH)(void*, CUdeviceptr, size_t);       // cuMemcpyDtoH_v2
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void**, void**);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuGetErrorString)(CUresult, const char**);
  CUresult (*cuCtxGetCurrent)(CUcontext*);
  // Optional (null where the driver lacks it, older than CUDA 12.2): moves managed pages in
  // bulk before they are used, instead of a page fault each.
  CUresult (*cuMemPrefetchAsync)(CUdeviceptr, size_t, MemLocation, unsigned, CUstream);
  // Page-locked host memory mapped into the device's address space (the fallback where
  // managed memory is refused).
  CUresult (*cuMemHostAlloc)(void**, size_t, unsigned);
  CUresult (*cuMemFreeHost)(void*);
};

/// One GPU as the driver describes it.
struct Device {
  int index = 0;
  std::string name;
  int major = 0, minor = 0; // compute capability
  size_t memory = 0;        // bytes
  std::string arch() const { return "sm_" + std::to_string(major * 10 + minor); }
};

/// What this machine offers. Never throws: where CUDA cannot be used, `problem` says what is
/// missing (no driver library, an old driver, no device) and `devices` is empty.
struct Probe {
  std::string library;   // the driver library loaded
  int driverVersion = 0; // e.g. 13000 for CUDA 13.0
  std::vector<Device> devices;
  std::string problem;
  bool ok() const { return problem.empty(); }
};

/// Loads the driver (once per process) and lists the devices. The library: $SLOPE_CUDA_DRIVER
/// where set (a path), else libcuda.so.1 from the loader's path, then from
/// /usr/local/nvidia/lib64 and /usr/lib/wsl/lib.
const Probe& probe();

/// The driver's entry points; throws std::runtime_error with probe().problem where CUDA is
/// not usable.
const Api& api();

/// A driver call's result as text ("CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is
/// detected"); empty for success.
std::string errorText(CUresult r);

/// `ptx` loaded on device 0 (made current), the driver compiling it for that GPU; throws
/// std::runtime_error with the driver's error and its compile log.
CUmodule loadModule(const std::string& ptx);

/// The kernels of `ptx` loaded on device 0 (the driver compiles the PTX for it), each looked
/// up by name: empty on success, else what failed. For checks on a GPU machine.
std::string loadKernels(const std::string& ptx, const std::vector<std::string>& kernels);

/// Makes device 0's primary context current on this thread (the context offload runs in);
/// throws std::runtime_error where CUDA is not usable.
void useDevice();

/// The memory that code compiled with JitOptions::offload allocates from, one address that
/// kernels and the host both read and write. Chosen once per process: CUDA managed memory
/// (cuMemAllocManaged, attached globally; the driver moves pages to where they are used),
/// or, where the driver refuses it or SLOPE_CUDA_MEMORY=pinned, page-locked host memory
/// mapped into the GPU's address space (kernels read it across the bus). Null when the
/// allocation fails, so the caller reports the want of memory as it does for malloc. Where
/// CUDA is not usable (offload code run on the CPU alone, in a test) they are malloc, calloc
/// and free.
void* managedMalloc(size_t n);
void* managedCalloc(size_t n, size_t size);
void managedFree(void* p);
/// Without CUDA: whether p lies in (or just past) a block of managedMalloc's, the memory a
/// kernel could reach (the offload's emulation checks each pointer a task captures). With
/// CUDA: true.
bool reachable(const void* p);
/// "managed" or "pinned" (see managedMalloc), or "host" without CUDA.
const char* memoryKind();

/// Copies n bytes of the host's memory into managedMalloc's memory (copyIn) or back out of
/// it (copyOut). With managed memory the driver copies (cuMemcpyHtoD/DtoH), writing the pages
/// where they are, on the device after an earlier call's kernels, instead of faulting each
/// one back to the host as a plain memcpy would; otherwise memcpy. Throws std::runtime_error
/// where the driver's copy fails.
void copyIn(void* dst, const void* src, size_t n);
void copyOut(void* dst, const void* src, size_t n);

/// Moves the pages of [p, p + n) of managed memory to the device (or the host) ahead of their
/// use, where the driver can; ordered before later kernels. A hint: nothing fails without it.
void prefetch(const void* p, size_t n, bool toDevice);

} // namespace slope::cuda
