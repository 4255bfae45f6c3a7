// Runs the ADBench bundle-adjustment objective on an ADBench data file: prints the first
// reprojection error and weight error, then the Jacobian of every error with respect to the
// cameras, points and weights (dense, a row per error, reverse or forward mode as
// Module::jacobian picks) as the count of its rows, columns and nonzeros.
//
//   build/samples/adbench_ba tests/data/adbench/ba/test.txt [samples/adbench/ba.slope]
#include "ba_io.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: adbench_ba BA_FILE [ba.slope]\n");
    return 2;
  }
  try {
    std::string model = argc > 2 ? argv[2] : "samples/adbench/ba.slope";
    adbench::BaInput b = adbench::readBa(argv[1]);
    slope::Module m = slope::compile_file(model);
    adbench::BaResult r = adbench::runBa(m, b);
    std::printf("reprojection error 0: %.17g %.17g\n", r.reproj[0], r.reproj[1]);
    std::printf("weight error 0: %.17g\n", r.werr[0]);
    slope::DenseResult J = m.jacobian("ba", {"cams", "X", "w"}).evaluate(adbench::baArgs(b));
    int64_t nnz = 0;
    for (int64_t i = 0; i < J.matrix.numel(); ++i)
      nnz += J.matrix.getF(i) != 0;
    std::printf("jacobian %lld x %lld, %lld nonzeros (%s mode, %lld calls)\n",
                static_cast<long long>(J.matrix.shape()[0]),
                static_cast<long long>(J.matrix.shape()[1]), static_cast<long long>(nnz),
                J.mode.c_str(), static_cast<long long>(J.calls));
  } catch (const slope::CompileError& e) {
    std::fprintf(stderr, "%s", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adbench_ba: %s\n", e.what());
    return 2;
  }
  return 0;
}
