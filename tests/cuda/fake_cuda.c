/* A stand-in for the CUDA driver library (libcuda.so.1), for testing how Slope finds and
 * reports on the driver where no GPU is: slopec runs with SLOPE_CUDA_DRIVER pointing here,
 * and FAKE_CUDA says which machine to pretend to be:
 *   nodevice  cuInit fails with CUDA_ERROR_NO_DEVICE (a driver without a GPU)
 *   old       a CUDA 11.8 driver
 *   zero      the driver starts and counts no device
 *   one       one device, "Fake H200", compute capability 9.0, 141 GiB
 * Built without FAKE_CUDA_FULL it lacks cuLaunchKernel (a driver too old or broken). */
#include <stdlib.h>
#include <string.h>

static const char* mode(void) {
  const char* m = getenv("FAKE_CUDA");
  return m ? m : "one";
}
static int is(const char* m) {
  return strcmp(mode(), m) == 0;
}

int cuInit(unsigned flags) {
  (void)flags;
  return is("nodevice") ? 100 : 0;
}
int cuDriverGetVersion(int* v) {
  *v = is("old") ? 11080 : 13000;
  return 0;
}
int cuDeviceGetCount(int* n) {
  *n = is("one") ? 1 : 0;
  return 0;
}
int cuDeviceGet(int* d, int i) {
  *d = i;
  return 0;
}
int cuDeviceGetName(char* s, int len, int d) {
  (void)d;
  strncpy(s, "Fake H200", (size_t)len);
  return 0;
}
int cuDeviceGetAttribute(int* v, int attr, int d) {
  (void)d;
  *v = attr == 75 ? 9 : 0;
  return 0;
}
int cuDeviceTotalMem_v2(size_t* bytes, int d) {
  (void)d;
  *bytes = (size_t)141 << 30;
  return 0;
}
int cuGetErrorString(int r, const char** s) {
  *s = r == 100 ? "no CUDA-capable device is detected" : "unknown error";
  return 0;
}
/* The rest: a context that never starts, so nothing runs on a fake device. */
int cuDevicePrimaryCtxRetain(void** c, int d) {
  (void)c;
  (void)d;
  return 999;
}
int cuCtxSetCurrent(void* c) {
  (void)c;
  return 999;
}
int cuModuleLoadDataEx(void** m, const void* p, unsigned n, int* o, void** v) {
  (void)m;
  (void)p;
  (void)n;
  (void)o;
  (void)v;
  return 999;
}
int cuModuleGetFunction(void** f, void* m, const char* n) {
  (void)f;
  (void)m;
  (void)n;
  return 999;
}
int cuModuleUnload(void* m) {
  (void)m;
  return 999;
}
int cuMemAlloc_v2(unsigned long long* p, size_t n) {
  (void)p;
  (void)n;
  return 999;
}
int cuMemAllocManaged(unsigned long long* p, size_t n, unsigned flags) {
  (void)flags;
  return cuMemAlloc_v2(p, n);
}

int cuCtxGetCurrent(void** c) {
  *c = 0;
  return 0;
}

int cuMemFree_v2(unsigned long long p) {
  (void)p;
  return 999;
}
int cuMemcpyHtoD_v2(unsigned long long d, const void* s, size_t n) {
  (void)d;
  (void)s;
  (void)n;
  return 999;
}
int cuMemcpyDtoH_v2(void* d, unsigned long long s, size_t n) {
  (void)d;
  (void)s;
  (void)n;
  return 999;
}
int cuCtxSynchronize(void) {
  return 999;
}
#ifdef FAKE_CUDA_FULL
int cuLaunchKernel(void* f, unsigned a, unsigned b, unsigned c, unsigned d, unsigned e, unsigned g,
                   unsigned shared, void* stream, void** params, void** extra) {
  (void)f;
  (void)a;
  (void)b;
  (void)c;
  (void)d;
  (void)e;
  (void)g;
  (void)shared;
  (void)stream;
  (void)params;
  (void)extra;
  return 999;
}
#endif
