// The order in which a floating-point sum or product over a region combines its elements.
//
// Floating-point addition is not associative, so "the sum" of a region is only defined once
// its order is. Slope fixes one order, the same for the evaluator and every backend, that SIMD
// lanes and threads can follow without changing a bit of the result:
//
//   - The region's index space is cut into groups along its first index: kGroupRows
//     consecutive values of it, or for a one-index region kGroupElems consecutive elements.
//     Groups are what a thread takes; their results combine one after another in group
//     order, starting from the identity (0 or 1).
//   - A row is one run of the innermost index within a group (for a one-index region, the
//     group's elements). A row of e >= kMinLaneRow elements has kLanes * floor(e / kLanes) of
//     them in whole chunks and the rest, fewer than kLanes, in its tail; a shorter row is all
//     tail. (Short rows gain nothing from lanes: a loop around them already overlaps one row's
//     additions with the next row's, and setting up and combining lanes costs more than the
//     row. Measured: rows of 10, 2.5x slower with lanes.)
//   - Within a group there are kLanes lane accumulators and one tail accumulator, each
//     starting from the identity. A chunk's element at innermost index j goes to lane
//     j mod kLanes; a tail's elements go to the tail accumulator; each takes its elements in
//     row-major order. This is what a SIMD register of kLanes (or kLanes / 2, twice) holds,
//     and the tail is what a vector loop's scalar remainder does.
//   - A group's result is ((l0 . l1) . (l2 . l3)) . ((l4 . l5) . (l6 . l7)), then . tail.
//
// The order depends on the extents only, never on the machine's vector width or the number
// of threads. It is also more accurate than one serial sum: each lane sums an eighth of a
// group, and the groups' partial sums are an n / 1024-th of the terms (docs/benchmarks.md
// measures the error). Integer sums and products wrap and are associative: any order will do.
#pragma once

#include <cstdint>

namespace slope::reduce_order {

inline constexpr int64_t kLanes = 8;
inline constexpr int64_t kGroupRows = 256;   // values of the first index per group (rank >= 2)
inline constexpr int64_t kGroupElems = 1024; // elements per group (rank 1); a multiple of kLanes
inline constexpr int64_t kMinLaneRow = 32;   // the shortest row whose chunks go to lanes

/// The group of an element: by its first index i0 (and, for rank 1, that is the element).
inline int64_t group(int64_t i0, bool rank1) {
  return i0 / (rank1 ? kGroupElems : kGroupRows);
}

/// A group's result: its kLanes lanes combined pairwise in the fixed tree above, then its tail.
template <class T, class Op> T combineGroup(const T* lane, T tail, Op op) {
  return op(op(op(op(lane[0], lane[1]), op(lane[2], lane[3])),
               op(op(lane[4], lane[5]), op(lane[6], lane[7]))),
            tail);
}

/// The elements of a row of e that are in whole chunks (the rest are its tail).
inline int64_t chunked(int64_t e) {
  return e < kMinLaneRow ? 0 : e - e % kLanes;
}

} // namespace slope::reduce_order
