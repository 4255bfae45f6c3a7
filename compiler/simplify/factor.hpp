// Sum factorisation of the adjoint's scatters: Tensor IR -> Tensor IR, on gradients only.
//
// Reverse mode turns a product inside a sum over data points into one scatter per point:
//
//   for [i < n, k < K, j < d] {
//     p = ...                                  (depends on i)
//     for [c < e] { B[k, c] += -(p * q) }      (q, e and the subscripts do not)
//   }
//
// adds the same q for every i, so the sum over i is a distributive law away:
// sum_i -(p_i q) = -((sum_i p_i) q). The pass rewrites it as
//
//   G = buf.zeros [K, d]
//   for [i < n, k < K, j < d] { p = ...; G[k, j] += p; ... }
//   if n > 0 { for [k < K, j < d] { g = G[k, j]; for [c < e] { B[k, c] += -(g * q) } } }
//
// which moves O(n K d e) read-modify-writes out of the nest for O(n K d) adds into G. The
// GMM's adjoint is the case: -g_j L[j, c] into dmeans[k, c] for every point and triangle
// element (ADBench's hand-written gradient does the same: Q^T times a sum over the points).
//
// Not exact: it reassociates a sum, so results differ in the last bits from the unfactored
// gradient (like Loop IR's blocked scatters, docs/architecture.md "Threads"). The reference
// evaluator runs the factored IR too, so it and the JIT still compute the same sums. The
// `if n > 0` keeps every subscript check of the moved computation where it was: it runs for
// the same (k, j, c) as before, provided some i did. (It is left out where the extent is at
// least 1 anyway, as a size the user gave always is: `n`, but not `n - 1`.)
#pragma once

#include "compiler/ir/ir.hpp"

namespace slope {

/// Applies the rewrite above to every top-level `for` of f where it holds (see factor.cpp for
/// the conditions). Returns whether anything changed; run the simplifier after it, which
/// removes the products the moved scatters no longer use.
bool factorScatters(ir::Function& f);

} // namespace slope
