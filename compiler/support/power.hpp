// x ** y and x^n: one definition for the evaluator, the constant folder and generated code, so
// that every backend and every optimisation level gives the same bits.
//
// libm's pow is not correctly rounded (glibc documents under one ulp), and LLVM replaces a
// call with a constant exponent by an exact operation where one exists: pow(x, 2) by x * x,
// pow(x, -1) by 1 / x, pow(x, 0.5) by a square root, but only from opt_level 1 on, and only
// where it sees the constant. About one square in a thousand came out one ulp apart between
// opt levels 0 and 2 (and between the evaluator and the JIT). So Slope fixes the exponents
// with an exact answer itself, by value, and otherwise calls libm's pow in a way LLVM does
// not rewrite (codegen.cpp: a `nobuiltin` call).
#pragma once

#include <cmath>
#include <limits>

namespace slope {

/// x ** y: exactly rounded where the exponent allows it, libm's pow otherwise.
///   y = 2:   x * x                       (pow(x, 2) within an ulp of it)
///   y = 1:   x                           (pow's own answer, NaN included)
///   y = -1:  1 / x                       (pow(+-0, -1) = +-inf, as the division gives)
///   y = 0.5: |sqrt(x)|, +inf at -inf     (pow(-0, 0.5) = +0 and pow(-inf, 0.5) = +inf, which
///                                         sqrt alone gets wrong)
/// y = 0 and x = 1 need nothing: pow gives exactly 1 for every other operand, NaN included.
template <class T> T power(T x, T y) {
  if (y == T(2)) return x * x;
  if (y == T(1)) return x;
  if (y == T(-1)) return T(1) / x;
  if (y == T(0.5))
    return x == -std::numeric_limits<T>::infinity() ? std::numeric_limits<T>::infinity()
                                                    : std::fabs(std::sqrt(x));
  return std::pow(x, y);
}

} // namespace slope
