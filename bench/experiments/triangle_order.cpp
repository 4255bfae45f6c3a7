// An experiment, not built by CMake: the GMM's triangular product L z (ADBench's layout, the
// strict lower triangle packed column by column) in the row order Slope generates today
// against the column order with per-row lane accumulators, which adds every row's terms in
// the same order (compiler/support/reduce_order.hpp: a row of 32 or more elements puts term c
// in lane c mod 8 while c < chunked(row), the rest in its tail; shorter rows are all tail),
// so both give the same bits (checked on every run). The column order reads contiguous
// memory in its inner loop, so it vectorises; the row order gathers.
//
//   g++ -O3 -mavx2 -mfma -ffp-contract=off -o tri bench/experiments/triangle_order.cpp
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null ./tri D 25000 MODE
//
// Instructions for 25,000 products (MODE 0: rows, 1: columns), 2026-12-03:
//   d = 10: 44.9M rows, 51.4M columns     d = 32: 296.3M, 216.5M
//   d = 64: 1231.8M, 577.3M               d = 128: 4869.2M, 1268.4M
// Wall at d = 64 (200,000 products, a busy machine): 1.00 and 1.21 s rows, 0.51 and 0.32 s
// columns. (-mavx2 rather than -march=native: valgrind does not run AVX-512 code.)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
static inline int64_t chunked(int64_t e) {
  return e < 32 ? 0 : e - e % 8;
}
// L(j,c), c < j at off(c) + j - c - 1 with off(c) = d + c(d-1) - c(c-1)/2
__attribute__((noinline)) void rowForm(int d, const double* icf, const double* z, double* q) {
  for (int j = 0; j < d; ++j) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0;
    int64_t ch = chunked(j);
    for (int c = 0; c < j; ++c) {
      double v = icf[d + c * (d - 1) - c * (c - 1) / 2 + j - c - 1] * z[c];
      if (c < ch)
        lane[c % 8] += v;
      else
        tail += v;
    }
    double s = (((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                ((lane[4] + lane[5]) + (lane[6] + lane[7]))) +
               tail;
    q[j] = std::exp(icf[j]) * z[j] + s;
  }
}
__attribute__((noinline)) void colForm(int d, const double* icf, const double* z, double* q,
                                       double* lanes, double* tail) {
  std::memset(lanes, 0, sizeof(double) * 8 * d);
  std::memset(tail, 0, sizeof(double) * d);
  for (int c = 0; c < d; ++c) {
    const double* col = icf + d + c * (d - 1) - c * (c - 1) / 2 - c - 1; // col[j] = L(j, c)
    const double zc = z[c];
    // rows j > c: tail while c >= chunked(j), else lane c % 8
    int j1 = c + 1;
    while (j1 < d && !(c < chunked(j1)))
      ++j1; // first row with c in its chunks
    for (int j = c + 1; j < j1; ++j)
      tail[j] += col[j] * zc;
    double* ln = lanes + (c % 8) * d;
    for (int j = j1; j < d; ++j)
      ln[j] += col[j] * zc;
  }
  for (int j = 0; j < d; ++j) {
    const double* l = lanes;
    double s = (((l[j] + l[d + j]) + (l[2 * d + j] + l[3 * d + j])) +
                ((l[4 * d + j] + l[5 * d + j]) + (l[6 * d + j] + l[7 * d + j]))) +
               tail[j];
    q[j] = std::exp(icf[j]) * z[j] + s;
  }
}
int main(int argc, char** argv) {
  int d = atoi(argv[1]), reps = atoi(argv[2]), mode = atoi(argv[3]);
  int T = d + d * (d - 1) / 2;
  std::vector<double> icf(T), z(d), q1(d), q2(d), lanes(8 * d), tail(d);
  srand(1);
  for (auto& v : icf)
    v = rand() / (double)RAND_MAX - 0.5;
  for (auto& v : z)
    v = rand() / (double)RAND_MAX - 0.5;
  rowForm(d, icf.data(), z.data(), q1.data());
  colForm(d, icf.data(), z.data(), q2.data(), lanes.data(), tail.data());
  if (memcmp(q1.data(), q2.data(), sizeof(double) * d)) {
    printf("BITS DIFFER\n");
    return 1;
  }
  double acc = 0;
  for (int r = 0; r < reps; ++r) {
    z[r % d] += 1e-9;
    if (mode == 0)
      rowForm(d, icf.data(), z.data(), q1.data());
    else
      colForm(d, icf.data(), z.data(), q1.data(), lanes.data(), tail.data());
    acc += q1[d - 1];
  }
  printf("ok %g\n", acc);
}
