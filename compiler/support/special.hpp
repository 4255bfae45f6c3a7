// Special functions that the evaluator computes and generated code calls by address, so that
// both backends give the same bits.
#pragma once

namespace slope {

/// psi(x) = d/dx lgamma(x), within a few ulps of the exact value wherever psi is not next to
/// one of its zeros on the negative axis (one in each interval (-n-1, -n)): there, the
/// reflection formula subtracts two nearly equal terms, and the error is a few ulps of the
/// larger one. Poles: psi(+0) = -inf and psi(-0) = +inf (the sign of -1/x, as tgamma(+-0) is
/// +-inf); psi(x) = NaN at x = -1, -2, ... (the one-sided limits are +inf and -inf; tgamma gives
/// NaN there too) and at -inf; psi(+inf) = +inf; NaN gives NaN.
double digamma(double x);

/// psi in f32: digamma(x) rounded to float (within an ulp of float).
float digammaf(float x);

/// The symbols generated code calls (extern "C", defined in special.cpp; the JIT binds them by
/// address).
inline constexpr const char* kDigammaSymbol = "slope_digamma";
inline constexpr const char* kDigammafSymbol = "slope_digammaf";

} // namespace slope

extern "C" double slope_digamma(double x);
extern "C" float slope_digammaf(float x);
