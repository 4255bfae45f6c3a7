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

/// psi'(x), the trigamma function: d/dx digamma(x), within about 1e-15 relative for x > 0
/// (ten steps of psi'(x) = psi'(x + 1) + 1/x^2, then the asymptotic series at x + 10); for
/// x < 0 by the reflection psi'(x) = pi^2 / sin^2(pi x) - psi'(1 - x). Poles at 0, -1, -2,
/// ...: +inf (both one-sided limits are); psi'(+inf) = 0; psi'(-inf) and NaN give NaN.
double trigamma(double x);
float trigammaf(float x);

/// The symbols generated code calls (extern "C", defined in special.cpp; the JIT binds them by
/// address).
inline constexpr const char* kDigammaSymbol = "slope_digamma";
inline constexpr const char* kDigammafSymbol = "slope_digammaf";
inline constexpr const char* kTrigammaSymbol = "slope_trigamma";
inline constexpr const char* kTrigammafSymbol = "slope_trigammaf";

} // namespace slope

extern "C" double slope_digamma(double x);
extern "C" float slope_digammaf(float x);
extern "C" double slope_trigamma(double x);
extern "C" float slope_trigammaf(float x);
