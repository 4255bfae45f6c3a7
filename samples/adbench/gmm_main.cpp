// Runs the ADBench GMM objective on an ADBench data file and prints the objective and its
// gradient (alphas, means, icf), one value per line, as ADBench's output files do.
//
//   build/samples/adbench_gmm tests/data/adbench/gmm/test.txt [samples/adbench/gmm.slope]
#include "gmm_io.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: adbench_gmm GMM_FILE [gmm.slope]\n");
    return 2;
  }
  try {
    std::string model = argc > 2 ? argv[2] : "samples/adbench/gmm.slope";
    bool replicate = std::string(argv[1]).find("2.5M") != std::string::npos;
    adbench::GmmInput g = adbench::readGmm(argv[1], replicate);
    slope::Module m = slope::compile_file(model);
    adbench::GmmResult r = adbench::runGmm(m, g);
    std::printf("objective %.17g\n", r.objective);
    for (double v : r.gradient)
      std::printf("%.17g\n", v);
  } catch (const slope::CompileError& e) {
    std::fprintf(stderr, "%s", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adbench_gmm: %s\n", e.what());
    return 2;
  }
  return 0;
}
