// Strength reduction of subscripts and bounds checks at loop entry (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// For each innermost loop over one index c (no loop inside it):
///
/// Strength reduction. A subscript computed in the body that is a polynomial of degree at
/// most 2 in c, with coefficients the loop does not change, and whose computation has a
/// multiplication or a division (`d + c (d - 1) - div(c (c - 1), 2) + j - c - 1`, the GMM's
/// triangular position) is carried across iterations instead: its value and its first
/// difference live in rank-0 slots set before the loop, and each iteration loads the value
/// and adds the difference (and the constant second difference to the difference). A division
/// takes part only where it is exact for every integer value of its operands. The loop then
/// carries state from one iteration to the next: it becomes sequential. An affine subscript
/// (degree 1) carries nothing: it is V(0) + D c, with V(0) and D computed before the loop, so
/// the loop's iterations stay independent (a parallel loop stays parallel and vectorises).
/// (Carried, it would save one multiplication by D per iteration, none when D is 1, at the
/// price of SIMD.)
///
/// Bounds checks at loop entry. An unproven access whose every subscript is either proven by
/// extents (bounds.hpp) or such a polynomial that is monotone over the loop's range is checked
/// once before the loop: its first and last iteration's value. When every check holds, a copy
/// of the loop with those accesses proven runs; otherwise the original loop does, unchanged,
/// so a call that fails still fails exactly where and how it failed before.
///
/// Returns how many loops it rewrote.
int reduceStrength(Function& f);

/// For each sequential loop over one index c with loops inside: the values of its body's
/// top level that are polynomials of degree 2 in c computed with a division, v1 .. vk in
/// order, each differing from the one before by an affine step A + B c with integer
/// coefficients (interchange.cpp's groups of eight columns and their triangular positions):
/// v1 is carried across iterations in two slots, and each next value is the one before plus
/// its step. Returns how many loops it rewrote.
int expandQuadratics(Function& f);

} // namespace slope::lower
