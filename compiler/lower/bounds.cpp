// Subscript proofs on Loop IR (bounds.hpp says which).
//
// The checker proves the subscripts a user writes (docs/architecture.md, Subscripts); what
// reverse mode and the simplifier add afterwards carries no proof, and every unproven access
// is a compare and a branch in generated code. Most of those accesses are at the indices of
// the loops around them, and the proof is one comparison of extents: for an index i of a loop
// `for i < e`, i <= e - 1, so i is in range of a dimension of extent D when D - e >= 0.
//
// Reverse mode also runs loops backwards, at t = (T - 1) - k for its own index k < T. So each
// integer value gets a symbolic interval [lo, hi] where one is known (an index: [0, e - 1]; a
// literal or a size: itself; a sum or a difference: the sum or difference of intervals), and
// a subscript is in range of a dimension of extent D when lo >= 0 and D - 1 - hi >= 0 (t
// above: [0, T - 1]).

#include "compiler/lower/bounds.hpp"

#include "compiler/support/checked.hpp"

#include <functional>

namespace slope::lower {
namespace {

using ir::Op;

class Prover {
public:
  explicit Prover(Function& f) : f_(f) {}

  int run() {
    body(f_.body);
    return count_;
  }

private:
  void body(Body& b) {
    for (Stmt& s : b) {
      if (s.kind == Stmt::Scalar) {
        define(s.in);
        if ((s.in.op == Op::Load || s.in.op == Op::BufStore || s.in.op == Op::BufAdd) &&
            !s.in.checked && prove(s.in)) {
          s.in.checked = true;
          ++count_;
        }
      }
      if (s.kind == Stmt::Loop)
        for (size_t k = 0; k < s.indices.size(); ++k)
          range_[s.indices[k]] = {Poly(0), s.extents[k] - Poly(1)};
      body(s.body);
      body(s.orelse);
    }
  }

  /// The interval of the integer value the instruction defines, where one is known.
  void define(const ir::Instr& in) {
    if (in.result < 0 || f_.src.types[in.result].dtype != DType::I64) return;
    auto of = [&](size_t a) -> const Range* {
      if (a >= in.args.size()) return nullptr;
      auto r = range_.find(in.args[a]);
      return r == range_.end() ? nullptr : &r->second;
    };
    const Range* x = of(0);
    const Range* y = of(1);
    try {
      switch (in.op) {
      case Op::Const: range_[in.result] = {Poly(in.ival), Poly(in.ival)}; return;
      case Op::Size: range_[in.result] = {in.poly, in.poly}; return;
      case Op::Add:
        if (x && y) range_[in.result] = {x->lo + y->lo, x->hi + y->hi};
        return;
      case Op::Sub:
        if (x && y) range_[in.result] = {x->lo - y->hi, x->hi - y->lo};
        return;
      default: return;
      }
    } catch (const checked::SizeError&) {
      // (A coefficient past i64, as in a hash's arithmetic: no interval, so no proof.)
    }
  }

  /// Whether every subscript of the access is in range (see the file comment).
  bool prove(const ir::Instr& in) const {
    const ir::Type& t = f_.src.types[in.args[0]];
    size_t n = in.op == Op::Load ? in.args.size() - 1 : in.args.size() - 2;
    if (n != t.shape.size() || n == 0) return false;
    for (size_t k = 0; k < n; ++k) {
      auto r = range_.find(in.args[1 + k]);
      if (r == range_.end() || !r->second.lo.provablyNonNegative() ||
          !(t.shape[k] - Poly(1) - r->second.hi).provablyNonNegative())
        return false;
    }
    return true;
  }

  struct Range {
    Poly lo, hi; // lo <= value <= hi
  };

  Function& f_;
  int count_ = 0;
  std::map<int, Range> range_; // integer value -> its interval (SSA: one definition each)
};

} // namespace

int proveSubscripts(Function& f) {
  return Prover(f).run();
}

} // namespace slope::lower
