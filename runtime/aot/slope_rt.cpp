// libslope_rt.a: the functions that code in an object from `slopec compile` may call besides
// the C library, libm and libmvec. They are the ones the JIT defines by address
// (compiler/codegen/jit.cpp): the evaluator's own digamma (compiler/support/special.cpp, also
// in this archive, defines slope_digamma and slope_digammaf) and the Revolve schedule, so an
// object computes the same bits as the JIT. C linkage, built without exceptions or RTTI: a C
// program links it with cc and no C++ library.
#include "compiler/support/revolve.hpp"

// (kRevolveNextSymbol in compiler/codegen/codegen_internal.hpp; tests/aot links a program
// with checkpointing against this archive.)
extern "C" int64_t slope_revolve_next(int64_t cur, int64_t end, int64_t free) {
  return slope::revolveNext(cur, end, free);
}
