// Triangular sums in column order (a Loop IR pass).
#pragma once

#include "compiler/lower/loop_ir.hpp"

namespace slope::lower {

/// For a parallel loop over rows j < E whose body has a triangular float sum over c < e(j),
/// e(j) = j + o, after strength reduction has given it entry checks (an if on a per-row
/// check, whose else is the original sum): when every row's check holds, the rows' sums are
/// computed in blocks of eight rows (those whose e(j) share floor(e(j) / 8)), column by
/// column, each column c adding its eight rows' terms into their accumulators; the block's
/// rows then read their sums from there, and the loop over j takes the rows outside the
/// blocks.
///
/// Why: a triangle stored by columns (ADBench's GMM: L[j, c] at an offset of c plus j) is read
/// with a stride that changes every element in row order, and contiguously in column order,
/// where a column's eight rows are one vector. Every row's sum keeps the order of
/// reduce_order.hpp to the bit: a row's accumulators are its lanes and its tail, column c
/// adds to lane c mod 8 of the rows whose chunks reach past c and to the tail of the others
/// (in a block, the same for all eight rows), and columns run in order, so each lane and the
/// tail take their terms in the order the row would. The rows are then combined as codegen
/// combines one (the lane tree, then the tail). A block's accumulators have a literal shape
/// and, once LLVM has vectorised the loops over its rows, literal offsets: they stay in
/// registers.
///
/// The blocks run under an if: every row's entry check holds (so its reads are proven
/// for every (j, c)), the last row has at least LowerOptions::minTriangleColumns columns (7:
/// fewer, and no block of eight rows exists) and at most reduce_order::kGroupElems (one group
/// per row). Otherwise the loop runs as it was, reporting the first failing access in row
/// order as before.
///
/// The adjoint of such a triangle is the same loop turned into additions: a sequential loop
/// over rows j whose strength-reduced loop over c < e(j) adds into a buffer's packed entry
/// (j, c) (the GMM's gradient of L_k). When every row's check holds, the columns' ranges of
/// entries do not overlap and the loop's other additions to the buffer fall outside them, the
/// loop runs without those additions and a loop over columns then makes them, a column's rows
/// in a vector loop over consecutive entries. Every entry still takes the same terms in the
/// same order (each takes one from the triangle), so the bits are the rows' form's. A nest
/// over [i..., j] is split into a loop over j in one over i... for it. This form runs from
/// LowerOptions::minScatterColumns columns (2): a row's loop does little work for its cost,
/// and the columns' loops win even on the smallest triangles.
///
/// Runs after reduceStrength. Returns how many loops it rewrote.
/// `minColumns`: LowerOptions::minTriangleColumns; `minScatterColumns`, the same for the
/// adjoint's form: LowerOptions::minScatterColumns.
int interchangeTriangles(Function& f, int64_t minColumns, int64_t minScatterColumns);

} // namespace slope::lower
