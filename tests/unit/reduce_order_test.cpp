// Sums and products over regions follow one order (compiler/support/reduce_order.hpp): the
// evaluator and the JIT both compute exactly the bits of an independent implementation of that
// order, written here from its description, at shapes around every boundary the order has
// (chunks of 8 lanes, the shortest row with lanes, groups of 1024 elements or 256 rows).

#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/support/reduce_order.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace slope {
namespace {

JitRunner& jit() {
  static JitRunner r;
  return r;
}

/// The order, from its description: elements in row-major order; a group is 1024 elements
/// (rank 1) or 256 values of the first index; a row is a run of the innermost index within a
/// group; a row of 32 or more puts its whole chunks of 8 into lanes by position, the rest into
/// the tail; group = tree(lanes) . tail; result = id . g0 . g1 ...
template <class T>
T referenceOrder(const std::vector<T>& x, const std::vector<int64_t>& shape, bool sum) {
  const T id = sum ? T(0) : T(1);
  auto op = [&](T a, T b) { return sum ? T(a + b) : T(a * b); };
  const int64_t inner = shape.back();
  int64_t rowsPerGroup = 1, rowLen = inner; // rows of a group, elements of a row
  if (shape.size() == 1) {
    rowLen = 1024;
  } else {
    rowsPerGroup = 256;
    for (size_t d = 1; d + 1 < shape.size(); ++d)
      rowsPerGroup *= shape[d];
  }
  const int64_t groupElems = rowsPerGroup * (shape.size() == 1 ? 1 : inner);
  const int64_t n = static_cast<int64_t>(x.size());
  T acc = id;
  for (int64_t g0 = 0; g0 < n; g0 += shape.size() == 1 ? 1024 : groupElems) {
    T lane[8], tail = id;
    for (T& l : lane)
      l = id;
    int64_t gEnd = std::min(n, g0 + (shape.size() == 1 ? 1024 : groupElems));
    for (int64_t r0 = g0; r0 < gEnd; r0 += rowLen) {
      int64_t len = std::min(rowLen, gEnd - r0);
      int64_t chunked = len >= 32 ? len - len % 8 : 0;
      for (int64_t j = 0; j < len; ++j) {
        T& into = j < chunked ? lane[j % 8] : tail;
        into = op(into, x[r0 + j]);
      }
    }
    T tree = op(op(op(lane[0], lane[1]), op(lane[2], lane[3])),
                op(op(lane[4], lane[5]), op(lane[6], lane[7])));
    acc = op(acc, op(tree, tail));
  }
  return acc;
}

template <class T> T serial(const std::vector<T>& x, bool sum) {
  T acc = sum ? T(0) : T(1);
  for (T v : x)
    acc = sum ? T(acc + v) : T(acc * v);
  return acc;
}

struct Shape {
  std::vector<int64_t> ext;
};

std::string program(size_t rank, const char* ty) {
  std::string dims, idx;
  for (size_t k = 0; k < rank; ++k) {
    dims += (k ? ", n" : "n") + std::to_string(k);
    idx += (k ? ", i" : "i") + std::to_string(k);
  }
  std::string t = ty;
  return "fn s(x: " + t + "[" + dims + "]) -> " + t + " { sum[" + idx + "](x[" + idx +
         "]) }\nfn p(x: " + t + "[" + dims + "]) -> " + t + " { prod[" + idx + "](x[" + idx +
         "]) }\n";
}

template <class T> void checkShapes(DType dt, const char* ty) {
  const std::vector<std::vector<int64_t>> shapes = {
      {1},      {7},       {31},      {32},         {33},      {40},
      {1023},   {1024},    {1025},    {3001},       {3, 31},   {3, 32},
      {300, 7}, {257, 45}, {600, 33}, {2, 300, 35}, {1, 1, 9}, {513, 2, 40},
  };
  int differs = 0; // cases where the order changes the bits of a serial sum
  for (const auto& shape : shapes) {
    auto prog = Program::fromString("order.slope", program(shape.size(), ty));
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    std::map<std::string, int64_t> sizes;
    for (size_t k = 0; k < shape.size(); ++k)
      sizes["n" + std::to_string(k)] = shape[k];
    for (bool sum : {true, false}) {
      ir::Function f = prog->forward(sum ? "s" : "p");
      Runnable compiled = jit().prepare(f);
      std::mt19937_64 rng(shape.size() * 1000 + shape.back());
      Tensor t(dt, shape);
      std::vector<T> xs(static_cast<size_t>(t.numel()));
      // Sums: magnitudes over 12 decades and both signs, so that the order shows in the bits.
      // Products: factors near 1, so that they neither overflow nor vanish.
      std::uniform_real_distribution<double> u(-1, 1), e(-6, 6);
      for (size_t i = 0; i < xs.size(); ++i) {
        double v = sum ? u(rng) * std::pow(10.0, e(rng)) : 1 + 0.01 * u(rng);
        xs[i] = static_cast<T>(v);
        t.setF(static_cast<int64_t>(i), static_cast<double>(xs[i]));
      }
      T want = referenceOrder(xs, shape, sum);
      if (want != serial(xs, sum)) ++differs;
      std::string what = std::string(ty) + (sum ? " sum" : " prod") + " at " +
                         std::to_string(shape.size()) + "-d shape ending " +
                         std::to_string(shape.back()) + " (" + std::to_string(xs.size()) + ")";
      double ev = evaluate(f, {t})[0].getF(0), jv = compiled({t})[0].getF(0);
      EXPECT_EQ(std::memcmp(&ev, &jv, sizeof ev), 0)
          << what << ": evaluator " << ev << " jit " << jv;
      EXPECT_EQ(static_cast<T>(ev), want) << what << ": evaluator";
      EXPECT_EQ(static_cast<T>(jv), want) << what << ": jit";
    }
  }
  // The data make the order visible: most of these results differ from a serial sum's.
  EXPECT_GT(differs, 10);
}

TEST(ReduceOrder, F64SumsAndProductsFollowTheOrderBitForBit) {
  checkShapes<double>(DType::F64, "f64");
}
TEST(ReduceOrder, F32SumsAndProductsFollowTheOrderBitForBit) {
  checkShapes<float>(DType::F32, "f32");
}

// The order is also more accurate than a serial sum: each lane and group adds a fraction of
// the terms. 2^20 uniform terms in [0, 1), against their sum in long double.
TEST(ReduceOrder, MoreAccurateThanASerialSum) {
  auto prog = Program::fromString("acc.slope", program(1, "f64"));
  ASSERT_TRUE(prog->ok());
  const int64_t n = 1 << 20;
  Tensor t(DType::F64, {n});
  std::vector<double> xs(n);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  long double exact = 0;
  for (int64_t i = 0; i < n; ++i) {
    xs[i] = u(rng);
    t.setF(i, xs[i]);
    exact += xs[i];
  }
  double got = jit().prepare(prog->forward("s"))({t})[0].getF(0);
  double ser = serial(xs, true);
  double errOrdered = std::fabs(static_cast<double>(got - exact));
  double errSerial = std::fabs(static_cast<double>(ser - exact));
  EXPECT_LT(errOrdered, errSerial);
  std::printf("sum of 2^20 uniform [0, 1): error ordered %.3g, serial %.3g (exact %.17Lg)\n",
              errOrdered, errSerial, exact);
}

} // namespace
} // namespace slope
