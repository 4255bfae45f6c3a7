#include "compiler/support/checked.hpp"

#include <unistd.h>

namespace slope::checked {

int64_t physicalMemory() {
  static const int64_t bytes = [] {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return INT64_MAX;
    auto b = mul(pages, page);
    return b ? *b : INT64_MAX;
  }();
  return bytes;
}

std::string shapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t k = 0; k < shape.size(); ++k)
    s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

int64_t numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t e : shape) {
    if (e < 0)
      throw SizeError(what + " has a negative extent " + std::to_string(e) + " in shape " +
                      shapeString(shape));
    auto r = mul(n, e);
    if (!r)
      throw SizeError(what + " of shape " + shapeString(shape) +
                      ": its element count overflows i64");
    n = *r;
  }
  return n;
}

int64_t bytes(int64_t count, int64_t elemSize, const std::string& what) {
  auto b = mul(count, elemSize);
  if (!b)
    throw SizeError(what + " needs " + std::to_string(count) + " x " + std::to_string(elemSize) +
                    " bytes: its byte count overflows i64");
  if (*b > physicalMemory())
    throw SizeError(what + " needs " + std::to_string(*b) + " bytes, more than this machine's " +
                    std::to_string(physicalMemory()) + " bytes of memory");
  return *b;
}

} // namespace slope::checked
