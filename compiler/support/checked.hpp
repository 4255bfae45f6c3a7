// Checked size arithmetic: the one helper for every extent, element count, byte count and
// trip count, at compile time (symbolic extents) and at run time (the evaluator, host tensors,
// the CLI's inputs; generated code does the same with LLVM's overflow intrinsics). A size that
// does not fit in i64, or a buffer larger than this machine's memory, is an error that says
// so before anything is allocated: a wrapped byte count would be a small buffer that the
// program then writes past.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace slope::checked {

/// A size computation overflowed i64, or needs more memory than the machine has.
struct SizeError : std::length_error {
  using std::length_error::length_error;
};

inline std::optional<int64_t> add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<int64_t> sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<int64_t> mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// Bytes of physical memory (the limit a single buffer is checked against).
int64_t physicalMemory();

/// The number of elements of `shape`; throws SizeError (naming `what`) when an extent is
/// negative or the product overflows.
int64_t numel(const std::vector<int64_t>& shape, const std::string& what);

/// Bytes for `count` elements of `elemSize` bytes; throws SizeError (naming `what`, with the
/// bytes needed) when that overflows or exceeds physicalMemory().
int64_t bytes(int64_t count, int64_t elemSize, const std::string& what);

/// "2305843009213693953 x 8 bytes" style description of a shape, for messages.
std::string shapeString(const std::vector<int64_t>& shape);

} // namespace slope::checked
