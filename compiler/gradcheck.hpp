// Finite-difference checking of reverse-mode gradients (what `slopec check` runs).
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace slope {

/// How many elements of a parameter are checked when GradCheckOptions::maxElements is unset:
/// at most this many, and fewer for very large inputs (see checkGradient).
inline constexpr int64_t kDefaultMaxElements = 1000;

/// How many random draws `check` makes before it gives up on finding one where the function
/// and its gradient are finite.
inline constexpr int kMaxDraws = 20;

struct GradCheckOptions {
  std::optional<double> rtol, atol;   // defaults suit the dtype (see defaultTolerances)
  uint64_t seed = 0;                  // the random output cotangent and the element subset
  GradOptions grad;                   // how the gradient checked is built (checkpointing)
  std::optional<double> step;         // a fixed finite-difference step (--step); else per element
  std::optional<int64_t> maxElements; // elements checked per parameter (--max-elements)
  /// For tests of the checker itself: changes the reverse-mode gradients (one tensor per
  /// float parameter) before they are compared, so that a wrong gradient can be made.
  std::function<void(std::vector<Tensor>&)> adjustGradient;
};

struct FdParamCheck {
  std::string name;
  double maxAbsErr = 0;
  double maxRelErr = 0;
  bool passed = true;
  int64_t elements = 0; // the parameter's element count
  int64_t checked = 0;  // how many of them were compared (a random subset when fewer)
  // The element that failed worst (or, when all pass, the one with the largest error):
  // its flat index, the reverse-mode and finite-difference values, and the error the
  // finite difference itself may have (rounding and truncation) at the step used.
  int64_t worst = -1;
  double worstAd = 0, worstFd = 0, worstBound = 0;
};

struct GradCheckResult {
  std::vector<FdParamCheck> params;
  bool passed = true;
  /// Why no comparison was made: the value or the gradient is not finite at these inputs
  /// (params is then empty and passed false). Empty when the comparison ran.
  std::string notFinite;
  /// The estimated rounding noise of one evaluation of the (f64) objective.
  double noise = 0;
};

/// Tolerances for a dtype: f64 rtol 1e-5 atol 1e-7; f32 rtol 2e-3 atol 1e-4 (the f32
/// gradient is compared with differences of the function computed in f64).
std::pair<double, double> defaultTolerances(DType t);

/// Compares reverse mode with finite differences for every float parameter of f at args.
/// Tensor or tuple results are contracted with a random cotangent w: the checked quantity is
/// d<w, f(x)>/dx. Differences are taken on an f64 copy of f.
///
/// Per element x_i: central differences D(h) and D(2h), with h = cbrt(eps) max(1, |x_i|)
/// (or opt.step), extrapolated by Richardson to R = (4 D(h) - D(2h)) / 3. The finite
/// difference's own error is bounded by |D(h) - D(2h)| / 3 (truncation) plus the rounding of
/// the objective, 1.5 sigma / h with sigma measured once per call from a difference table of
/// tiny perturbations (Moré and Wild's ECnoise) and never below eps |f|. An element passes
/// when |ad - R| <= atol + rtol |R| + that bound; where it does not, steps 10 h and 100 h
/// are tried where rounding dominated, h / 10 and h / 100 where truncation did (not with
/// opt.step). Where D(h) and D(2h) differ by more than rounding explains and by more than
/// 1 %, the function is not smooth within the step (a kink, a jump) and the bound is not
/// used. So a correct gradient of a function whose value is 1e6 passes, while a gradient
/// wrong by more than the tolerances fails.
///
/// A parameter with more elements than opt.maxElements (default: 1000, and fewer when the
/// inputs are so large that the 4 evaluations per element would cost more than about 1e10
/// element visits, never fewer than 10) is checked on a random subset (from opt.seed).
///
/// Where the value or the gradient is not finite, or a difference evaluates the function
/// where it is not finite, the result has notFinite set (and passed false) instead.
/// Runs through `runner` (the reference evaluator by default).
GradCheckResult checkGradient(const ir::Function& f, const std::vector<Tensor>& args,
                              const GradCheckOptions& opt = {}, Runner* runner = nullptr);

/// What checkDrawn did: the check at the draw used, the inputs of that draw, and the draws
/// it discarded because the function or its gradient was not finite there.
struct DrawnCheck {
  GradCheckResult result;
  std::vector<Tensor> args;
  int draws = 0;                        // draws made (the last one is `args`)
  std::map<std::string, int> discarded; // reason -> how many draws it discarded
  bool positive = false;                // the draw used has positive float inputs
};

/// Checks f at random inputs: `given[k]`, where set, is argument k as the user gave it; the
/// others are drawn as randomArgs does. Where the function or its gradient is not finite at
/// a draw, draws again (up to kMaxDraws; the second half of the draws take |x| + 0.1 for
/// float inputs, so that log and sqrt of an input are defined). Where every input is given
/// there is one draw.
DrawnCheck checkDrawn(const ir::Function& f, const std::vector<std::optional<Tensor>>& given,
                      const std::map<std::string, int64_t>& sizes, const GradCheckOptions& opt,
                      Runner* runner = nullptr);

/// What checkForward found. The three checks of forward mode: the identity
/// <u, J v> = <J^T u, v> between the JVP and the VJP (both exact up to rounding, so its
/// tolerance is tight), the JVP against a central difference of <u, f(x + t v)> along v, and,
/// for a scalar f, the Hessian-vector product (forward over reverse) against central
/// differences of the gradient along v, element by element, and the symmetry
/// <w, H v> = <H w, v>.
struct ForwardCheckResult {
  bool passed = true;
  std::string notFinite;    // why no comparison was made (as GradCheckResult::notFinite)
  std::string failure;      // the first check that failed, with its numbers
  bool exactFailed = false; // it was a check without truncation error (the identity, the
                            // JVP's values, the HVP's symmetry): not a kink within a step
  double uJv = 0, JTuv = 0, fd = 0;
  bool hvpChecked = false;
  std::string hvpSkipped; // why no HVP was built (an op without a second derivative)
  double hvpMaxAbsErr = 0;
};

/// Checks f's JVP (and, for a scalar f, its HVP) at args with random tangents and
/// cotangents from opt.seed; tolerances as checkGradient's (opt.rtol, opt.atol).
ForwardCheckResult checkForward(const ir::Function& f, const std::vector<Tensor>& args,
                                const GradCheckOptions& opt = {}, Runner* runner = nullptr);

/// Random arguments for f: every size from `sizes` (default 3), floats ~ N(0, 1), integers
/// uniform in [0, 3), bools fair coins. Deterministic for a seed. An argument too large for
/// this machine is a std::length_error naming it and saying how many bytes it needs.
std::vector<Tensor> randomArgs(const ir::Function& f, const std::map<std::string, int64_t>& sizes,
                               uint64_t seed);

} // namespace slope
