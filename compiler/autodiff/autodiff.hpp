// Reverse mode as an IR-to-IR pass.
//
// The gradient function runs the forward code unchanged, then walks it backwards. Each
// active value gets an adjoint accumulator (buf.zeros) in the scope where the value lives;
// every use adds its contribution with buf.add. Regions are reversed by recomputation: the
// adjoint of a comprehension is a `for` loop over the same indices that recomputes the body
// and runs its adjoint, so nothing is stored per element (no tape). A gather's adjoint is a
// scatter-add into the tensor's accumulator.
#pragma once

#include "compiler/ir/ir.hpp"

#include <stdexcept>
#include <string>
#include <vector>

namespace slope {

struct GradError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Builds the gradient (scalar float result: `NAME_grad`) or vector-Jacobian product
/// (otherwise: `NAME_vjp`) of f with respect to the float parameters named in wrt (all float
/// parameters when wrt is empty).
///   parameters: f's parameters, then one cotangent per float result unless f has a single
///               scalar float result (whose seed is 1);
///   results:    f's results, then one gradient per differentiated parameter, in order.
struct GradOptions {
  /// Checkpointing of loops with state: 0 off (a tape entry per iteration); N > 0 keeps the
  /// state every N iterations and recomputes each segment in the reverse sweep; -1 picks
  /// N = ceil(sqrt(iterations)), so tape memory grows like the square root of the trip count.
  int checkpoint = 0;
  /// Binomial checkpointing instead (Revolve's schedule, compiler/support/revolve.hpp), for
  /// loops whose trip count is known on entry: keep at most `snapshots` states per loop, or
  /// as many as fit in `memory` bytes; the reverse sweep recomputes the least it can with that
  /// many. A budget below one state (a snapshot and the undo logs) fails on entry, saying the
  /// state's size. At most one of checkpoint, snapshots and memory is set.
  int64_t snapshots = 0;
  int64_t memory = 0;
  bool binomial() const { return snapshots > 0 || memory > 0; }
  bool checkpointing() const { return checkpoint != 0 || binomial(); }
};

ir::Function differentiate(const ir::Function& f, const std::vector<std::string>& wrt,
                           const GradOptions& opt = {});

/// The names of the parameters differentiate() uses for wrt (validated; throws GradError).
std::vector<std::string> resolveWrt(const ir::Function& f, const std::vector<std::string>& wrt);

} // namespace slope
