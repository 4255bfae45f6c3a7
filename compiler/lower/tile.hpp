// Tiles of the first index of a loop nest (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// A top-level nest over (i, k, ...) whose body reads, in loops two deep, data that does not
/// depend on i (the GMM: `parallel for i < n, k < K`, each (i, k) reading component k's
/// triangle of d (d - 1) / 2 entries, a matrix per component against a vector per point) runs
/// in tiles of `rows` values of i (LowerOptions::tileRows, 16):
///
///     for each tile of i { for k ... { for i in the tile { body } } }
///
/// so component k's data is read from memory once per tile and from cache by the tile's other
/// points, instead of all K components' data passing through the cache for every point (50
/// triangles of 128 x 128 are 3.2 MB). Hand-written GMM code blocks its points the same way.
/// Additions two loops deep at elements that do not depend on i count as such reads: the
/// GMM's gradient with respect to its parameters alone adds a rank-one update into component
/// k's triangle for every point (interchange.cpp's scatter form), 66 KB per component at
/// d = 128, which a tile updates from cache for its points.
/// (Data read one loop deep, a vector per component, is left alone: the mixture's and the
/// GMM's at d = 10 fit in the L1 cache, and there, tiles cost instructions, measured in
/// docs/benchmarks.md, "Tiles of points".)
///
/// Which nests, and why their results keep their bits:
/// - A parallel nest (a comprehension, a loop of stores): its iterations are independent.
/// - A sequential nest over two indices that runs in blocks (codegen's tiles run within its
///   blocks; under two blocks it runs in row order), whose iterations share nothing but
///   memory, each buffer it writes reached at every access with i at one subscript position
///   or with k at one (the GMM's adjoint: additions into component k's gradient, and point
///   i's): tiles swap only iterations that differ in both i and k, which touch different
///   elements, so each element takes the same terms in the same order.
/// - In both, every statement that can fail (canFail, a loop extent that can fail) fails or not,
///   with the same values, at every i: neither it nor a branch or loop extent on the way to it
///   depends on i (through values, or through memory the body writes). Then the first failing
///   iteration in tile order has the same k and the same failure as the first in row order:
///   a failing call reports what it did before.
///
/// Sets Stmt::tile (`tiled N` in --emit loops); codegen runs the tiles within each chunk of
/// the nest's threads (or block of a blocked loop). Runs after planBlocks. Returns how many
/// nests it tiled; none when rows <= 0.
int tileNests(Function& f, int64_t rows);

} // namespace slope::lower
