// Math functions through glibc's vector math library (libmvec), one implementation for every
// place Slope computes them: the evaluator, constant folding and the JIT's scalar calls and
// vectorised loops alike.
//
// Where the machine has it (x86-64 with AVX2 and FMA, glibc's libmvec.so.1) and it is not
// turned off (SLOPE_VECTOR_MATH=0 in the environment), exp, log, sin, cos, tan, log1p, expm1,
// tanh, sinh, cosh, asin, acos and atan are libmvec's AVX2 functions: 4 doubles or 8 floats
// at a time in a vectorised loop, lane 0 of the same function for one value. Lanes are
// computed independently, so an element gets the same bits in a vector loop, in a scalar
// remainder, in the evaluator or on any thread. Elsewhere they are libm's. Their accuracy
// against libm's is measured in tests/unit/vmath_test.cpp (docs/architecture.md).
#pragma once

#include <string>

namespace slope::vmath {

#define SLOPE_VECTOR_MATH(X)                                                                       \
  X(exp)                                                                                           \
  X(log) X(sin) X(cos) X(tan) X(log1p) X(expm1) X(tanh) X(sinh) X(cosh) X(asin) X(acos) X(atan)

/// Whether libmvec is in use (the machine has it and SLOPE_VECTOR_MATH is not 0).
bool enabled();
/// Whether libm's `name` (as libm spells the double version) goes through libmvec.
bool has(const std::string& name, bool f32);
/// The address of the scalar entry point (lane 0 of the AVX2 function) and the AVX2
/// function's name in libmvec, for the JIT; null / empty where `has` is false.
void* scalarEntry(const std::string& name, bool f32);
std::string vectorName(const std::string& name, bool f32);

#define SLOPE_VM_DECLARE(n)                                                                        \
  double n(double x);                                                                              \
  float n(float x);
SLOPE_VECTOR_MATH(SLOPE_VM_DECLARE)
#undef SLOPE_VM_DECLARE

} // namespace slope::vmath
