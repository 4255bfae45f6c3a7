// An experiment, not built by CMake: how fast the GMM's triangular product can be in the
// forms open to Slope, beside the hand-written one (bench/gmm_hand.cpp), at d = 64, with no
// other work around it. It answers "what is the floor of Slope's column form?" before any
// more work goes into the code around it (docs/benchmarks.md, "Where the d = 64 time goes").
//
//   hand       y = L z four columns at a time (gmm_hand.cpp): y[j] loaded and stored once
//              per four columns; every y[j] still takes its terms in column order
//   columns    Slope's column form: column c adds into lane row c mod 8 of an 8 x d
//              accumulator (reduce_order.hpp), zeroed per product
//   columns-nz the same without the zeroing (wrong sums: timing only)
//   one-row    one column at a time into a single accumulator row (the hand-written's y,
//              without its four columns per pass; wrong sums: timing only)
//   lane4      four columns of one lane (c, c + 8, c + 16, c + 24) per pass over the rows:
//              each accumulator element loaded and stored once per four columns
//   rowblock   eight rows at a time with the eight lanes in registers (no accumulator in
//              memory), the triangle's corner element by element
//
// The lane forms ignore reduce_order's tail and short rows (their sums are not Slope's): only
// the time is compared. Each form runs n * K = 25,000 products over K = 25 triangles.
//
//   g++ -O3 -march=native -o /tmp/triangle_forms bench/experiments/triangle_forms.cpp
//   /tmp/triangle_forms
//
// 2026-12-03, AMD EPYC (AVX-512) VM, fastest of 7 rounds; the machine's speed changed by a
// third within the hour, so two runs, each with its ratio to hand: hand 5.5 / 7.6 ms; columns
// 9.0 / 13.0 ms (1.6x / 1.7x); columns-nz 7.8 / 11.7 ms (1.4x / 1.5x); lane4 9.8 / 13.1 ms
// (1.8x / 1.7x); rowblock 11.9 / 18.0 ms (2.2x / 2.4x). A third run: hand 7.4 to 7.7 ms,
// one-row 15.1 to 15.3 ms (2.0x). Slope's whole objective at this size took 20 to 22 ms in the
// first run's hour.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using v8 = double __attribute__((vector_size(64)));

// Where column c of the strict lower triangle (rows c + 1 .. d - 1) starts.
int64_t columnStart(int64_t d, int64_t c) {
  return c * (d - 1) - c * (c - 1) / 2;
}

__attribute__((noinline)) void hand(int64_t d, const double* __restrict L,
                                    const double* __restrict z, double* __restrict y) {
  for (int64_t j = 0; j < d; ++j)
    y[j] = 0;
  int64_t c = 0;
  for (; c + 4 < d; c += 4) {
    const double* c0 = L + columnStart(d, c) - (c + 1);
    const double* c1 = L + columnStart(d, c + 1) - (c + 2);
    const double* c2 = L + columnStart(d, c + 2) - (c + 3);
    const double* c3 = L + columnStart(d, c + 3) - (c + 4);
    const double z0 = z[c], z1 = z[c + 1], z2 = z[c + 2], z3 = z[c + 3];
    y[c + 1] += c0[c + 1] * z0;
    y[c + 2] = y[c + 2] + c0[c + 2] * z0 + c1[c + 2] * z1;
    y[c + 3] = y[c + 3] + c0[c + 3] * z0 + c1[c + 3] * z1 + c2[c + 3] * z2;
    for (int64_t j = c + 4; j < d; ++j)
      y[j] = y[j] + c0[j] * z0 + c1[j] * z1 + c2[j] * z2 + c3[j] * z3;
  }
  for (; c + 1 < d; ++c) {
    const double* col = L + columnStart(d, c) - (c + 1);
    for (int64_t j = c + 1; j < d; ++j)
      y[j] += col[j] * z[c];
  }
}

template <bool kZero, bool kOneRow = false>
__attribute__((noinline)) void columns(int64_t d, const double* __restrict L,
                                       const double* __restrict z, double* __restrict acc) {
  if (kZero) std::memset(acc, 0, sizeof(double) * 8 * d);
  for (int64_t c = 0; c + 1 < d; ++c) {
    const double* col = L + columnStart(d, c) - (c + 1);
    double* a = acc + (kOneRow ? 0 : (c % 8) * d);
    for (int64_t j = c + 1; j < d; ++j)
      a[j] += col[j] * z[c];
  }
}

__attribute__((noinline)) void lane4(int64_t d, const double* __restrict L,
                                     const double* __restrict z, double* __restrict acc) {
  std::memset(acc, 0, sizeof(double) * 8 * d);
  for (int64_t l = 0; l < 8; ++l) {
    double* a = acc + l * d;
    int64_t c = l;
    for (; c + 25 < d; c += 32) {
      const double* c0 = L + columnStart(d, c) - (c + 1);
      const double* c1 = L + columnStart(d, c + 8) - (c + 9);
      const double* c2 = L + columnStart(d, c + 16) - (c + 17);
      const double* c3 = L + columnStart(d, c + 24) - (c + 25);
      const double z0 = z[c], z1 = z[c + 8], z2 = z[c + 16], z3 = z[c + 24];
      for (int64_t j = c + 1; j < c + 9; ++j)
        a[j] += c0[j] * z0;
      for (int64_t j = c + 9; j < c + 17; ++j)
        a[j] = a[j] + c0[j] * z0 + c1[j] * z1;
      for (int64_t j = c + 17; j < c + 25; ++j)
        a[j] = a[j] + c0[j] * z0 + c1[j] * z1 + c2[j] * z2;
      for (int64_t j = c + 25; j < d; ++j)
        a[j] = a[j] + c0[j] * z0 + c1[j] * z1 + c2[j] * z2 + c3[j] * z3;
    }
    for (; c + 1 < d; c += 8) {
      const double* col = L + columnStart(d, c) - (c + 1);
      for (int64_t j = c + 1; j < d; ++j)
        a[j] += col[j] * z[c];
    }
  }
}

__attribute__((noinline)) void rowblock(int64_t d, const double* __restrict L,
                                        const double* __restrict z, double* __restrict y) {
  for (int64_t j0 = 0; j0 + 8 <= d; j0 += 8) {
    v8 lanes[8] = {};
    int64_t c = 0;
    for (; c + 8 <= j0; c += 8) // columns below every row of the block
      for (int l = 0; l < 8; ++l) {
        v8 v;
        std::memcpy(&v, L + columnStart(d, c + l) - (c + l + 1) + j0, sizeof v);
        lanes[l] += v * z[c + l];
      }
    for (; c < j0 + 7 && c + 1 < d; ++c) { // the block's corner
      const double* col = L + columnStart(d, c) - (c + 1);
      for (int r = 0; r < 8; ++r)
        if (j0 + r > c) lanes[c % 8][r] += col[j0 + r] * z[c];
    }
    for (int r = 0; r < 8; ++r)
      y[j0 + r] = ((lanes[0][r] + lanes[1][r]) + (lanes[2][r] + lanes[3][r])) +
                  ((lanes[4][r] + lanes[5][r]) + (lanes[6][r] + lanes[7][r]));
  }
}

} // namespace

int main() {
  const int64_t d = 64, K = 25, n = 1000, t = d * (d - 1) / 2;
  std::vector<double> L(K * t + 64), z(d), out(8 * d);
  std::mt19937 gen(1);
  std::normal_distribution<double> normal;
  for (double& v : L)
    v = normal(gen);
  for (double& v : z)
    v = normal(gen);
  auto time = [&](auto form, const char* name) {
    double best = 1e30, sink = 0;
    for (int round = 0; round < 7; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < K; ++k) {
          form(d, L.data() + k * t, z.data(), out.data());
          sink += out[d - 1];
        }
      std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - t0;
      best = std::min(best, ms.count());
    }
    std::printf("%-11s %6.2f ms  (%g)\n", name, best, sink);
  };
  for (int run = 0; run < 2; ++run) {
    time(hand, "hand");
    time(columns<true>, "columns");
    time(columns<false>, "columns-nz");
    time(lane4, "lane4");
    time(columns<false, true>, "one-row");
    time(rowblock, "rowblock");
  }
}
