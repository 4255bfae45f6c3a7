// Runs the ADBench hand-tracking objective on an ADBench model folder and input file: prints
// the first errors and the Jacobian of the errors with respect to theta (and, for the
// complicated variant, us) as its size, the mode Module::jacobian took and its first row.
//
//   build/samples/adbench_hand MODEL_DIR INPUT [simple|complicated] [hand.slope]
//   build/samples/adbench_hand tests/data/adbench/hand/model tests/data/adbench/hand/test.txt
#include "hand_io.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: adbench_hand MODEL_DIR INPUT [simple|complicated] [hand.slope]\n");
    return 2;
  }
  try {
    bool complicated = argc > 3 && std::string(argv[3]) == "complicated";
    std::string model = argc > 4 ? argv[4] : "samples/adbench/hand.slope";
    adbench::HandInput h = adbench::readHand(argv[1], argv[2], complicated);
    slope::Module m = slope::compile_file(model);
    std::string fn = complicated ? "hand_complicated" : "hand";
    slope::Result err = m.function(fn).call(adbench::handArgs(h, complicated));
    std::printf("errors:");
    for (int64_t i = 0; i < std::min<int64_t>(6, err[0].numel()); ++i)
      std::printf(" %.17g", err[0].getF(i));
    std::printf("\n");
    std::vector<std::string> wrt = {"theta"};
    if (complicated) wrt.push_back("us");
    slope::DenseResult J = m.jacobian(fn, wrt).evaluate(adbench::handArgs(h, complicated));
    std::printf("jacobian %lld x %lld (%s mode, %lld calls), first row:",
                static_cast<long long>(J.matrix.shape()[0]),
                static_cast<long long>(J.matrix.shape()[1]), J.mode.c_str(),
                static_cast<long long>(J.calls));
    for (int64_t c = 0; c < std::min<int64_t>(4, J.matrix.shape()[1]); ++c)
      std::printf(" %.10g", J.matrix.getF(c));
    std::printf("\n");
  } catch (const slope::CompileError& e) {
    std::fprintf(stderr, "%s", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adbench_hand: %s\n", e.what());
    return 2;
  }
  return 0;
}
