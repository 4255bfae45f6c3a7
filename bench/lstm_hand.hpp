// A hand-written ADBench LSTM objective and its gradient: the yardstick slope_bench holds the
// Slope-compiled samples/adbench/lstm.slope to. Written for this project (derivation in
// lstm_hand.cpp), not taken from ADBench.
//
// The model and data layout are ADBench's (the same that lstm.slope and
// samples/adbench/lstm_io.hpp read), l layers of b units over a sequence of c vectors:
//   main  f64[l, 2, 4, b]: per layer, weights then biases, each for the forget, input and
//         output gates and the cell change,
//   extra f64[3, b]: input scale, output scale, output bias,
//   state f64[l, 2, b]: per layer, the initial hidden state then the initial cell state,
//   seq   f64[c, b].
#pragma once

#include <cstdint>
#include <vector>

namespace lstm_hand {

/// Borrowed views of one problem; nothing is copied.
struct Problem {
  int64_t l = 0, c = 0, b = 0; // c >= 2: the loss predicts steps 1 .. c - 1
  const double* main = nullptr;
  const double* extra = nullptr;
  const double* state = nullptr;
  const double* seq = nullptr;
};

/// Evaluates the loss, or the loss and its gradient. Holds its scratch buffers (the forward
/// states the reverse sweep reads) between calls: only a call with larger sizes than any
/// before allocates. One instance per thread.
class Lstm {
public:
  double objective(const Problem& p);
  /// Writes the gradient with respect to main into dmain[l * 2 * 4 * b] and extra into
  /// dextra[3 * b], and, when dstate is not null, with respect to state into dstate[l * 2 * b]
  /// (all overwritten, not added to); returns the loss.
  double gradient(const Problem& p, double* dmain, double* dextra, double* dstate = nullptr);

private:
  std::vector<double> hidden_; // [c][l][b]: step t's hidden states before the step (t = 0: state)
  std::vector<double> cell_;   // [c][l][b]: the same for the cell states
  std::vector<double> gates_;  // [c - 1][l][5][b]: forget, input, output, change, tanh(new cell)
  std::vector<double> dtop_;   // [c - 1][b]: d loss / d (top layer's new hidden state), output only
  std::vector<double> dh_;     // [l][b]: d loss / d hidden state, carried back a step
  std::vector<double> dc_;     // [l][b]: d loss / d cell state, carried back a step
  std::vector<double> x_;      // [b]: a layer's input
  std::vector<double> dx_;     // [b]: d loss / d a layer's input (the layer below's output)
  std::vector<double> ey_;     // [b]: exp of the output's logits
};

} // namespace lstm_hand
