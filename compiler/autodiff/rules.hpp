// The derivative rule table: one entry per IR op.
//
// Elementwise ops have a formula here (the math in a comment, then the IR that computes it).
// Ops that own regions or touch memory are "structural": the reverse-mode pass
// (autodiff.cpp) handles them, because their adjoints are loops and scatters rather than
// formulas. Integer and boolean ops are not differentiable; piecewise-constant float ops
// (floor, ceil, sign) have derivative zero. A test checks that every op has an entry.
#pragma once

#include "compiler/ir/builder.hpp"

namespace slope::ad {

/// What a formula rule sees: the forward instruction, primal values and the adjoint.
class RuleCtx {
public:
  virtual ~RuleCtx() = default;
  virtual ir::Builder& b() = 0;
  virtual const ir::Instr& instr() = 0;
  virtual int x(int k) = 0;                // primal of operand k, usable here
  virtual int y() = 0;                     // primal of the result
  virtual int g() = 0;                     // adjoint of the (scalar) result
  virtual void acc(int k, int v) = 0;      // adjoint of operand k += v (ignored if inactive)
  virtual const ir::Instr* def(int k) = 0; // the forward instruction defining operand k
  virtual bool needs(int k) = 0;           // operand k is active (its adjoint is wanted)
};

enum class RuleKind {
  Formula,           // fn computes the operands' adjoints
  ZeroDerivative,    // piecewise constant: no contribution
  NotDifferentiable, // integer/bool results, or made only by autodiff itself
  Structural,        // handled by the pass (regions, loads, stacks, leaves)
};

struct Rule {
  RuleKind kind;
  void (*fn)(RuleCtx&);
  const char* math; // the derivative, for humans (and `slopec` docs)
};

const Rule& ruleFor(ir::Op op);

/// d prod / d x_j = prod_{k != j} x_k, for element j (indices idx over extents) of a product P
/// of dtype dt: P / x_j where x_j != 0, else the product of the others, recomputed (only at a
/// zero, so the usual cost stays linear). elementAt(k) emits element k's value. Reverse and
/// forward mode share it.
int productOfOthers(ir::Builder& b, int P, int xj, const std::vector<int>& idx,
                    const std::vector<Poly>& extents, DType dt,
                    const std::function<int(const std::vector<int>&)>& elementAt);

/// d lse / d x_j = softmax_j = e_j / W, with e_j = exp(x_j - lse) and W = sum_k e_k: W, as a
/// sum over extents of dtype dt (elementAt(k) emits x_k's value), or -1 where it is left out.
/// W is 1 in exact arithmetic, but lse is rounded to its type: off by up to half an ulp of
/// |lse|, it scales every e_j by one factor 1 + O(|lse| eps), which dividing by W cancels.
/// Without it the weights sum to 1 + O(|lse| eps) and the derivative is off by that much: in f32
/// 3e-5 at lse = 1000, and an HVP, whose terms then no longer cancel, by far more (2.7% for
/// seed 162054 of the random programs). W costs a pass over the elements with an exp each (3%
/// of the GMM gradient, 9% of the mixture's, in instructions), so f64, where the error is
/// 1.1e-13 at lse = 1000, goes without. Reverse and forward mode share it.
int softmaxNormaliser(ir::Builder& b, int lse, const std::vector<Poly>& extents, DType dt,
                      const std::function<int(const std::vector<int>&)>& elementAt);

} // namespace slope::ad
