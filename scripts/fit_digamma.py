#!/usr/bin/env python3
"""Constants of slope::digamma (compiler/support/special.cpp), printed as C++.

psi(y) on [1, 2] is computed as (y - x0) * h(y - 1.5), where x0 = 1.46163... is psi's positive
zero and h is a polynomial fitted to psi(y) / (y - x0) by Chebyshev interpolation (mpmath's
chebyfit) at 60 significant digits. The factor (y - x0) keeps the relative error small next to
the zero. Run once: python3 scripts/fit_digamma.py (needs mpmath; not part of the build).
"""
import mpmath as mp

mp.mp.dps = 60
DEGREE = 23

x0 = mp.findroot(mp.digamma, mp.mpf("1.4616321449683622"))
r1 = float(x0)
r2 = float(x0 - r1)


def h(t):
    y = t + mp.mpf(1.5)
    if abs(y - x0) < mp.mpf(10) ** -40:
        return mp.psi(1, x0)
    return mp.digamma(y) / (y - x0)


coeffs, err = mp.chebyfit(h, [-0.5, 0.5], DEGREE + 1, error=True)
print(f"// psi's positive zero, x0 = {mp.nstr(x0, 40)} = kRoot1 + kRoot2.")
print(f"constexpr double kRoot1 = {r1!r};")
print(f"constexpr double kRoot2 = {r2!r};")
print(f"// psi(y) / (y - x0) on y in [1, 2], in t = y - 1.5, highest degree first")
print(f"// (degree {DEGREE}; interpolation error {mp.nstr(err, 3)}).")
print("constexpr double kH[] = {")
for c in coeffs:
    print(f"    {float(c)!r},")
print("};")
pi = mp.pi
print(f"constexpr double kPi = {float(pi)!r}, kPiLo = {float(pi - float(pi))!r};")
g = mp.euler
print(f"constexpr double kEuler = {float(g)!r}, kEulerLo = {float(g - float(g))!r};")
print(f"constexpr double kZeta2 = {float(mp.zeta(2))!r};")
# B_2k / (2k) for the asymptotic series, k = 1..9.
print("// B_2k / (2k), k = 1..9: psi(s) ~ log s - 1/(2s) - sum_k B_2k / (2k s^2k).")
print("constexpr double kB[] = {" + ", ".join(repr(float(mp.bernoulli(2 * k) / (2 * k))) for k in range(1, 10)) + "};")
