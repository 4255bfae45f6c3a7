// Finite-difference checking of reverse-mode gradients (what `slopec check` runs).
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace slope {

struct GradCheckOptions {
  std::optional<double> rtol, atol; // defaults suit the dtype (see defaultTolerances)
  uint64_t seed = 0;                // for the random output cotangent
  GradOptions grad;                 // how the gradient checked is built (checkpointing)
};

struct FdParamCheck {
  std::string name;
  double maxAbsErr = 0;
  double maxRelErr = 0;
  bool passed = true;
};

struct GradCheckResult {
  std::vector<FdParamCheck> params;
  bool passed = true;
};

/// Tolerances for a dtype: f64 rtol 1e-5 atol 1e-7; f32 rtol 2e-3 atol 1e-4 (the f32
/// gradient is compared with differences of the function computed in f64).
std::pair<double, double> defaultTolerances(DType t);

/// Compares reverse mode with central differences for every float parameter of f at args.
/// Tensor or tuple results are contracted with a random cotangent w: the checked quantity is
/// d<w, f(x)>/dx. Differences are taken on an f64 copy of f, with h = cbrt(eps) max(1, |x|).
/// Runs through `runner` (the reference evaluator by default).
GradCheckResult checkGradient(const ir::Function& f, const std::vector<Tensor>& args,
                              const GradCheckOptions& opt = {}, Runner* runner = nullptr);

/// Random arguments for f: every size from `sizes` (default 3), floats ~ N(0, 1), integers
/// uniform in [0, 3), bools fair coins. Deterministic for a seed.
std::vector<Tensor> randomArgs(const ir::Function& f, const std::map<std::string, int64_t>& sizes,
                               uint64_t seed);

} // namespace slope
