// A checkpoint memory budget below one state of a loop is an error on entry that states the
// state's size ("... one state of this loop, N bytes ..."). Tests that run every schedule with
// a small budget take, where it is too small, exactly one state instead: the tightest budget
// that must work.
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/pipeline.hpp"

#include <regex>
#include <string>
#include <vector>

namespace slope {

/// The state size a budget error states, or -1 when the message is not one.
inline int64_t statedStateBytes(const std::string& message) {
  std::smatch m;
  if (!std::regex_search(message, m, std::regex("one state of this loop, ([0-9]+) bytes")))
    return -1;
  return std::stoll(m[1]);
}

/// GradOptions with memory = `bytes`, raised to one state of the largest loop of `name` at
/// these arguments where `bytes` is less (other errors propagate).
inline GradOptions budgetOfAtLeastOneState(const Program& p, const std::string& name,
                                           const std::vector<Tensor>& args, int64_t bytes) {
  GradOptions o;
  o.memory = bytes;
  for (int tries = 0; tries < 16; ++tries) {
    try {
      evaluate(p.gradient(name, {}, o), args);
      return o;
    } catch (const EvalError& e) {
      int64_t state = statedStateBytes(e.what());
      if (state <= o.memory) throw;
      o.memory = state;
    }
  }
  return o;
}

} // namespace slope
