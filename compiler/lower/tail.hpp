// A tile's deferred columns (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// In a nest over (i, k) that runs in tiles of i (tile.hpp), the columns of a triangle's
/// adjoint that each iteration adds into k's entries (interchange.cpp's scatter form,
/// Stmt::deferrable: the GMM's rank-one update g z^T of component k's factor, for every point)
/// run once per tile and k, after the tile's points, with the points inside each column:
///
///     for each tile of i { for k {
///       head:  G = [tile, d], Z = [tile, d]        (one row per point of the tile)
///       for i in the tile { body, writing G[i - first], Z[i - first] instead of G, Z }
///       tail:  if cond { for c { for each 8 points p..p+7 { for r { e = L[k, e(c, r)];
///                  e += G[p, r] Z[p, c]; ...; e += G[p + 7, r] Z[p + 7, c]; L[k, e(c, r)] = e } }
///                  for each point p of the rest { for r { L[k, e(c, r)] += G[p, r] Z[p, c] } } } }
///     } }
///
/// Why: the columns' loop over rows is short (a column of the triangle) and runs once per
/// point and column, so most of its cost was its set-up, and each entry was loaded and stored
/// once per point. Hand-written GMM code updates each column for several points at once; so
/// does this form, with eight points per pass over a column's rows (one load and store of an
/// entry per eight points, written in Loop IR: LLVM kept every addition's store).
///
/// Why the bits are the same: every entry the columns add into takes the same terms in the
/// same order (the tile's points in increasing i, eight at a time and then the rest, one
/// after another in each row's iteration). No other statement of the nest touches those
/// entries: the columns are the last statement of an if whose condition does not depend on
/// the nest's indices (interchange's choice: it proves that the branch's other additions fall
/// outside them), and nothing outside that branch accesses the buffer. What the columns read
/// is memory the nest does not write, the rows of G and Z that each point wrote at its own
/// row, and values computed outside the nest or from k. The branch is the last statement of
/// the nest's body, and the nest's statements that can fail do so at every i or at none
/// (tileNests), so a failing call fails at the same statement with the same values.
///
/// Runs after tileNests and before planWorkspace. Sets Stmt::tileHead, tileTail, tileFirst and
/// tileEnd. Returns how many nests it changed.
int deferColumns(Function& f);

} // namespace slope::lower
