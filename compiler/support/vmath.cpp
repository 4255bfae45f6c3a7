#include "compiler/support/vmath.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

namespace slope::vmath {
namespace {

typedef double V4d __attribute__((vector_size(32)));
typedef float V8f __attribute__((vector_size(32)));

struct Table {
  bool on = false;
#define SLOPE_VM_FIELD(n)                                                                          \
  V4d (*n)(V4d) = nullptr;                                                                         \
  V8f (*n##f)(V8f) = nullptr;
  SLOPE_VECTOR_MATH(SLOPE_VM_FIELD)
#undef SLOPE_VM_FIELD
};

const Table& table() {
  static const Table t = [] {
    Table v;
#if defined(__x86_64__)
    const char* env = std::getenv("SLOPE_VECTOR_MATH");
    if (env && std::strcmp(env, "0") == 0) return v;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return v;
    void* h = dlopen("libmvec.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!h) return v;
#define SLOPE_VM_LOAD(n)                                                                           \
  v.n = reinterpret_cast<V4d (*)(V4d)>(dlsym(h, "_ZGVdN4v_" #n));                                  \
  v.n##f = reinterpret_cast<V8f (*)(V8f)>(dlsym(h, "_ZGVdN8v_" #n "f"));
    SLOPE_VECTOR_MATH(SLOPE_VM_LOAD)
#undef SLOPE_VM_LOAD
    v.on = v.exp != nullptr;
#endif
    return v;
  }();
  return t;
}

// The scalar entry points: lane 0 of the AVX2 function on a splat (compiled for AVX2, which
// the vector argument's calling convention needs). The JIT calls them by address.
#define SLOPE_VM_SCALAR(n)                                                                         \
  __attribute__((target("avx2,fma"))) double vm_##n(double x) {                                    \
    return table().n(V4d{x, x, x, x})[0];                                                          \
  }                                                                                                \
  __attribute__((target("avx2,fma"))) float vm_##n##f(float x) {                                   \
    return table().n##f(V8f{x, x, x, x, x, x, x, x})[0];                                           \
  }
SLOPE_VECTOR_MATH(SLOPE_VM_SCALAR)
#undef SLOPE_VM_SCALAR

} // namespace

bool enabled() {
  return table().on;
}

bool has(const std::string& name, bool f32) {
  return scalarEntry(name, f32) != nullptr;
}

void* scalarEntry(const std::string& name, bool f32) {
  const Table& t = table();
  if (!t.on) return nullptr;
#define SLOPE_VM_ENTRY(n)                                                                          \
  if (name == #n) {                                                                                \
    if (f32) return t.n##f ? reinterpret_cast<void*>(&vm_##n##f) : nullptr;                        \
    return t.n ? reinterpret_cast<void*>(&vm_##n) : nullptr;                                       \
  }
  SLOPE_VECTOR_MATH(SLOPE_VM_ENTRY)
#undef SLOPE_VM_ENTRY
  return nullptr;
}

std::string vectorName(const std::string& name, bool f32) {
  if (!has(name, f32)) return "";
  return f32 ? "_ZGVdN8v_" + name + "f" : "_ZGVdN4v_" + name;
}

#define SLOPE_VM_DEFINE(n)                                                                         \
  double n(double x) {                                                                             \
    return table().n ? vm_##n(x) : std::n(x);                                                      \
  }                                                                                                \
  float n(float x) {                                                                               \
    return table().n##f ? vm_##n##f(x) : std::n(x);                                                \
  }
SLOPE_VECTOR_MATH(SLOPE_VM_DEFINE)
#undef SLOPE_VM_DEFINE

} // namespace slope::vmath
