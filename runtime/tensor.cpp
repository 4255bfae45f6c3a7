#include "slope/tensor.hpp"

#include "compiler/support/checked.hpp"

#include <cstring>
#include <stdexcept>

namespace slope {

const char* dtypeName(DType t) {
  switch (t) {
  case DType::F32: return "f32";
  case DType::F64: return "f64";
  case DType::I64: return "i64";
  case DType::Bool: return "bool";
  }
  return "?";
}

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::F32: return 4;
  case DType::F64: return 8;
  case DType::I64: return 8;
  case DType::Bool: return 1;
  }
  return 8;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t e : shape_)
    if (e < 0) throw std::invalid_argument("negative tensor extent");
  // Checked: a shape whose element or byte count overflows, or that needs more memory than
  // the machine has, is refused before allocating (std::length_error, with the bytes).
  numel_ = checked::numel(shape_, std::string("a ") + dtypeName(dtype_) + " tensor");
  int64_t bytes = checked::bytes(numel_, static_cast<int64_t>(dtypeSize(dtype_)),
                                 std::string("a ") + dtypeName(dtype_) + " tensor of shape " +
                                     checked::shapeString(shape_));
  storage_.assign(static_cast<size_t>(bytes) / 8 + 2, 0);
}

Tensor Tensor::scalar(DType dtype, double v) {
  Tensor t(dtype, {});
  t.setF(0, v);
  return t;
}

double Tensor::getF(int64_t i) const {
  switch (dtype_) {
  case DType::F32: return data<float>()[i];
  case DType::F64: return data<double>()[i];
  case DType::I64: return static_cast<double>(data<int64_t>()[i]);
  case DType::Bool: return data<uint8_t>()[i] ? 1.0 : 0.0;
  }
  return 0;
}

int64_t Tensor::getI(int64_t i) const {
  switch (dtype_) {
  case DType::F32: return static_cast<int64_t>(data<float>()[i]);
  case DType::F64: return static_cast<int64_t>(data<double>()[i]);
  case DType::I64: return data<int64_t>()[i];
  case DType::Bool: return data<uint8_t>()[i] ? 1 : 0;
  }
  return 0;
}

void Tensor::setF(int64_t i, double v) {
  switch (dtype_) {
  case DType::F32: data<float>()[i] = static_cast<float>(v); break;
  case DType::F64: data<double>()[i] = v; break;
  case DType::I64: data<int64_t>()[i] = static_cast<int64_t>(v); break;
  case DType::Bool: data<uint8_t>()[i] = v != 0; break;
  }
}

void Tensor::setI(int64_t i, int64_t v) {
  switch (dtype_) {
  case DType::F32: data<float>()[i] = static_cast<float>(v); break;
  case DType::F64: data<double>()[i] = static_cast<double>(v); break;
  case DType::I64: data<int64_t>()[i] = v; break;
  case DType::Bool: data<uint8_t>()[i] = v != 0; break;
  }
}

std::string typeString(DType t, const std::vector<int64_t>& shape) {
  std::string s = dtypeName(t);
  if (shape.empty()) return s;
  s += "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string Tensor::typeString() const {
  return slope::typeString(dtype_, shape_);
}

} // namespace slope
