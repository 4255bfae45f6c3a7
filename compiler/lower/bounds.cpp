// Subscript proofs on Loop IR (bounds.hpp says which).
//
// The checker proves the subscripts a user writes (docs/architecture.md, Subscripts); what
// reverse mode and the simplifier add afterwards carries no proof, and every unproven access
// is a compare and a branch in generated code. Most of those accesses are at the indices of
// the loops around them, and the proof is one comparison of extents: for an index i of a loop
// `for i < e`, i <= e - 1, so i is in range of a dimension of extent D when D - e >= 0.

#include "compiler/lower/bounds.hpp"

#include <functional>

namespace slope::lower {
namespace {

using ir::Op;

class Prover {
public:
  explicit Prover(Function& f) : f_(f) {}

  int run() {
    constants_ = integerLiterals(f_);
    body(f_.body);
    return count_;
  }

private:
  void body(Body& b) {
    for (Stmt& s : b) {
      if (s.kind == Stmt::Scalar &&
          (s.in.op == Op::Load || s.in.op == Op::BufStore || s.in.op == Op::BufAdd) &&
          !s.in.checked && prove(s.in)) {
        s.in.checked = true;
        ++count_;
      }
      if (s.kind == Stmt::Loop)
        for (size_t k = 0; k < s.indices.size(); ++k)
          extent_[s.indices[k]] = s.extents[k];
      body(s.body);
      body(s.orelse);
    }
  }

  /// Whether every subscript of the access is in range (see the file comment).
  bool prove(const ir::Instr& in) const {
    const ir::Type& t = f_.src.types[in.args[0]];
    size_t n = in.op == Op::Load ? in.args.size() - 1 : in.args.size() - 2;
    if (n != t.shape.size() || n == 0) return false;
    for (size_t k = 0; k < n; ++k) {
      int v = in.args[1 + k];
      const Poly& dim = t.shape[k];
      if (auto e = extent_.find(v); e != extent_.end()) {
        if (!(dim - e->second).provablyNonNegative()) return false;
      } else if (auto c = constants_.find(v); c != constants_.end()) {
        if (c->second < 0 || !(dim - Poly(c->second + 1)).provablyNonNegative()) return false;
      } else {
        return false;
      }
    }
    return true;
  }

  Function& f_;
  int count_ = 0;
  std::map<int, Poly> extent_;       // loop index -> its extent
  std::map<int, int64_t> constants_; // integer literals
};

} // namespace

int proveSubscripts(Function& f) {
  return Prover(f).run();
}

} // namespace slope::lower
