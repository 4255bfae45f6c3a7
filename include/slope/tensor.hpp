// slope::Tensor: an owned, dense, row-major tensor of f32, f64, i64 or bool (stored as one
// byte, 0 or 1). A scalar is a tensor of rank 0 holding one element. Results of the C++ API
// are Tensors; the evaluator and the command line use them too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace slope {

enum class DType : uint8_t { F32, F64, I64, Bool };

const char* dtypeName(DType t); // "f32", "f64", "i64", "bool"
size_t dtypeSize(DType t);      // 4, 8, 8, 1
inline bool isFloat(DType t) {
  return t == DType::F32 || t == DType::F64;
}
/// "f64[2, 3]"-style description of a dtype and extents, for messages.
std::string typeString(DType t, const std::vector<int64_t>& shape);

/// A problem with the arguments of a call: their number, a dtype, a rank, an extent, or a
/// size name bound to two different extents. The message names the parameter.
struct CallError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class Tensor {
public:
  Tensor() = default;
  /// A zero-filled tensor of the given shape (an empty shape makes a scalar). Throws
  /// std::invalid_argument for a negative extent, and std::length_error (saying how many bytes
  /// it would need) when the element or byte count overflows or exceeds the machine's memory.
  Tensor(DType dtype, std::vector<int64_t> shape);
  static Tensor scalar(DType dtype, double v);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }

  /// Element access by flat (row-major) position, converting to and from double / int64.
  double getF(int64_t i) const;
  int64_t getI(int64_t i) const;
  void setF(int64_t i, double v);
  void setI(int64_t i, int64_t v);

  void* raw() { return storage_.data(); }
  const void* raw() const { return storage_.data(); }
  template <class T> T* data() { return reinterpret_cast<T*>(storage_.data()); }
  template <class T> const T* data() const { return reinterpret_cast<const T*>(storage_.data()); }

  /// "f64[2, 3]"-style description, for messages.
  std::string typeString() const;

private:
  DType dtype_ = DType::F64;
  std::vector<int64_t> shape_;
  int64_t numel_ = 1;
  std::vector<uint64_t> storage_{0}; // 8-byte aligned bytes
};

} // namespace slope
