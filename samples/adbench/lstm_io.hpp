// Reading ADBench LSTM files and running samples/adbench/lstm.slope on them.
//
// File format (ADBench docs/FileFormat.md): `l c b`, then main_params[2 l][4 b],
// extra_params[3 b], state[2 l b], sequence[c b]; whitespace-separated.
#pragma once

#include <slope/slope.hpp>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace adbench {

struct LstmInput {
  int64_t l = 0, c = 0, b = 0;
  std::vector<double> main, extra, state, seq;
};

inline LstmInput readLstm(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  LstmInput s;
  in >> s.l >> s.c >> s.b;
  if (!in || s.l < 1 || s.c < 2 || s.b < 1) throw std::runtime_error(path + ": bad header");
  auto read = [&](std::vector<double>& v, int64_t count) {
    v.resize(static_cast<size_t>(count));
    for (double& e : v)
      in >> e;
    if (!in) throw std::runtime_error(path + ": file ends early");
  };
  read(s.main, 2 * s.l * 4 * s.b);
  read(s.extra, 3 * s.b);
  read(s.state, 2 * s.l * s.b);
  read(s.seq, s.c * s.b);
  return s;
}

inline std::vector<slope::Arg> lstmArgs(LstmInput& s) {
  return {slope::View(s.main.data(), {s.l, 2, 4, s.b}), slope::View(s.extra.data(), {3, s.b}),
          slope::View(s.state.data(), {s.l, 2, s.b}), slope::View(s.seq.data(), {s.c, s.b})};
}

/// The gradient's arguments: lstmArgs, then where the gradients with respect to main and
/// extra go (dmain and dextra, sized by the caller like s.main and s.extra).
inline std::vector<slope::Arg> lstmGradArgs(LstmInput& s, std::vector<double>& dmain,
                                            std::vector<double>& dextra) {
  auto args = lstmArgs(s);
  args.push_back(slope::View(dmain.data(), {s.l, 2, 4, s.b}));
  args.push_back(slope::View(dextra.data(), {3, s.b}));
  return args;
}

struct LstmResult {
  double loss = 0;
  std::vector<double> gradient; // ADBench order: main_params, then extra_params
};

inline LstmResult runLstm(const slope::Module& m, LstmInput& s) {
  slope::Gradient grad = m.gradient("lstm", {"main", "extra"});
  std::vector<double> dmain(s.main.size()), dextra(s.extra.size());
  LstmResult r;
  r.loss = grad.call(lstmGradArgs(s, dmain, dextra));
  r.gradient = dmain;
  r.gradient.insert(r.gradient.end(), dextra.begin(), dextra.end());
  return r;
}

} // namespace adbench
