// Runs the ADBench LSTM objective on an ADBench data file and prints the loss and its
// gradient (main_params, then extra_params), one value per line.
//
//   build/samples/adbench_lstm tests/data/adbench/lstm/lstm_l2_c1024.txt
//   [samples/adbench/lstm.slope]
#include "lstm_io.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: adbench_lstm LSTM_FILE [lstm.slope]\n");
    return 2;
  }
  try {
    std::string model = argc > 2 ? argv[2] : "samples/adbench/lstm.slope";
    adbench::LstmInput s = adbench::readLstm(argv[1]);
    slope::Module m = slope::compile_file(model);
    adbench::LstmResult r = adbench::runLstm(m, s);
    std::printf("loss %.17g\n", r.loss);
    for (double v : r.gradient)
      std::printf("%.17g\n", v);
  } catch (const slope::CompileError& e) {
    std::fprintf(stderr, "%s", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adbench_lstm: %s\n", e.what());
    return 2;
  }
  return 0;
}
