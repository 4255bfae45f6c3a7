// Guarded iteration becomes a shorter loop (guard.hpp says which loops).
//
// The math. For c in [0, e) with e >= 0 and j fixed, the iterations where the guard holds are
// one interval:
//   c < j   [0, h) with h = max(min(e, j), 0)
//   c <= j  [0, h) with h = max(min(e - 1, j) + 1, 0)
//   j < c   [l, e) with l = min(max(j, -1) + 1, e)
//   j <= c  [l, e) with l = min(max(j, 0), e)
// (written so that nothing overflows for any j). The narrowed loop runs c' over [0, h) or
// [0, e - l), with c = c' + l, through the same iterations in the same order. Its extent is a
// value computed in the function, so it is bound by a size.def as a triangular sum's is.

#include "compiler/lower/guard.hpp"

#include <cmath>
#include <functional>

namespace slope::lower {
namespace {

using ir::Op;

class Narrower {
public:
  explicit Narrower(Function& f) : f_(f), names_(boundSizes(f.body)) {}

  int run() {
    return rewriteLoops(f_.body, [&](Stmt& loop, Body& pre) { return narrow(loop, pre); });
  }

private:
  bool isInt(int v) const {
    const ir::Type& t = f_.src.types[v];
    return t.rank() == 0 && t.dtype == DType::I64;
  }

  /// Whether running s for an iteration that is skipped changes nothing: it neither fails nor
  /// writes memory other than the body's own rank-0 slots (`own`).
  bool harmless(const Stmt& s, const std::set<int>& own,
                const std::map<int, int64_t>& constants) const {
    if (s.kind != Stmt::Scalar) return false;
    const ir::Instr& in = s.in;
    if (canFail(in, f_.src, constants)) return false;
    switch (ir::opKind(in.op)) {
    case ir::OpKind::Leaf: return in.op == Op::Const || in.op == Op::Size;
    case ir::OpKind::Unary:
    case ir::OpKind::Binary: return true;
    case ir::OpKind::Ternary: return in.op == Op::Select;
    case ir::OpKind::Memory:
      if (in.op == Op::Load) return true;
      if (in.op == Op::BufZeros) return f_.src.types[in.result].rank() == 0;
      if (in.op == Op::BufAdd || in.op == Op::BufStore) return own.count(in.args[0]) > 0;
      return false;
    case ir::OpKind::Region: return false;
    }
    return false;
  }

  bool narrow(Stmt& loop, Body& pre) {
    if (loop.indices.size() != 1) return false;
    bool sum = loop.in.op == Op::ReduceSum;
    if (!sum && !(loop.in.op == Op::For && loop.in.ival != 1)) return false;
    // The extent's own check (negative: an error) stays where it is only if it has none.
    const Poly& e = loop.extents[0];
    if (extentCanFail(e)) return false;
    int c = loop.indices[0];

    std::set<int> inside{c}, own;
    forEachStmt(loop.body, [&](const Stmt& s) {
      if (s.in.result >= 0) inside.insert(s.in.result);
    });
    for (int v : inside)
      if (f_.escaping.count(v)) return false;
    std::map<int, int64_t> constants = integerLiterals(f_);
    std::map<int, const Stmt*> def;
    size_t at = loop.body.size();
    for (size_t p = 0; p < loop.body.size(); ++p) {
      const Stmt& s = loop.body[p];
      if (s.kind == Stmt::If && at == loop.body.size()) {
        at = p;
        continue;
      }
      if (s.kind == Stmt::Scalar && s.in.op == Op::BufZeros) own.insert(s.in.result);
      if (!harmless(s, own, constants)) return false;
      if (s.in.result >= 0) def[s.in.result] = &s;
    }
    if (at == loop.body.size()) return false;
    Stmt& branch = loop.body[at];

    // What the skipped iterations would give: nothing, or +0 to a sum.
    if (sum) {
      if (branch.in.result < 0 || loop.yield != branch.in.result) return false;
      if (branch.orelse.size() != 1) return false;
      const ir::Instr& z = branch.orelse[0].in;
      if (branch.orelse[0].kind != Stmt::Scalar || z.op != Op::Const ||
          z.result != branch.elseYield)
        return false;
      bool zero = isFloat(f_.src.types[z.result].dtype) ? z.fval == 0 && !std::signbit(z.fval)
                                                        : z.ival == 0;
      if (!zero) return false;
    } else if (branch.in.result >= 0 || !branch.orelse.empty()) {
      return false;
    }
    int uses = 0;
    forEachStmt(loop.body, [&](const Stmt& s) {
      for (int a : s.in.args)
        uses += a == branch.in.result;
    });
    if (branch.in.result >= 0 && uses > 0) return false;

    // The guard: a comparison of c with a value the loop does not change.
    auto g = def.find(branch.in.args[0]);
    if (g == def.end()) return false;
    const ir::Instr& cmp = g->second->in;
    int guard = cmp.result;
    if (cmp.op != Op::Lt && cmp.op != Op::Le && cmp.op != Op::Gt && cmp.op != Op::Ge) return false;
    int a = cmp.args[0], b = cmp.args[1];
    Op op = cmp.op;
    if (b == c) { // j < c is c > j
      std::swap(a, b);
      op = op == Op::Lt ? Op::Gt : op == Op::Le ? Op::Ge : op == Op::Gt ? Op::Lt : Op::Le;
    }
    if (a != c || b == c || !isInt(b) || (inside.count(b) && !constants.count(b))) return false;
    int j = b;

    SrcRange loc = loop.in.loc;
    auto emit = [&](Op o, std::vector<int> args, int64_t ival = 0, const Poly& poly = Poly()) {
      return emitScalar(f_, pre, DType::I64, o, std::move(args), loc, ival, poly);
    };
    if (inside.count(j)) j = emit(Op::Const, {}, constants.at(j)); // (a literal in the body)
    int ev = emit(Op::Size, {}, 0, e);
    int zero = emit(Op::Const, {}, 0);
    auto one = [&] { return emit(Op::Const, {}, 1); };
    int trips, lo = -1;
    if (op == Op::Lt) { // (see the file comment)
      trips = emit(Op::Max, {emit(Op::Min, {ev, j}), zero});
    } else if (op == Op::Le) {
      int top = emit(Op::Min, {emit(Op::Sub, {ev, one()}), j});
      trips = emit(Op::Max, {emit(Op::Add, {top, one()}), zero});
    } else {
      int from = op == Op::Gt ? emit(Op::Add, {emit(Op::Max, {j, emit(Op::Const, {}, -1)}), one()})
                              : emit(Op::Max, {j, zero});
      lo = emit(Op::Min, {from, ev});
      trips = emit(Op::Sub, {ev, lo});
    }
    loop.extents[0] = bindSize(pre, uniqueSizeName("#guard", next_, names_), trips, loc);

    // The body without the branch; c = c' + l for a lower bound.
    Body then = std::move(branch.body);
    int yield = branch.yield;
    loop.body.erase(loop.body.begin() + static_cast<std::ptrdiff_t>(at));
    loop.body.insert(loop.body.begin() + static_cast<std::ptrdiff_t>(at),
                     std::make_move_iterator(then.begin()), std::make_move_iterator(then.end()));
    if (sum) loop.yield = yield;
    if (lo >= 0) {
      int fresh = f_.src.newValue(f_.src.types[c]);
      loop.indices[0] = fresh;
      Stmt shift = scalarStmt(Op::Add, {fresh, lo}, loc);
      shift.in.result = c;
      loop.body.insert(loop.body.begin(), shift);
    }
    // The guard itself, if nothing else reads it.
    bool read = false;
    forEachStmt(loop.body, [&](const Stmt& s) {
      for (int x : s.in.args)
        read = read || x == guard;
      read = read || s.yield == guard;
    });
    if (!read)
      for (size_t p = 0; p < loop.body.size(); ++p)
        if (loop.body[p].kind == Stmt::Scalar && loop.body[p].in.result == guard) {
          loop.body.erase(loop.body.begin() + static_cast<std::ptrdiff_t>(p));
          break;
        }
    loop.vectorisable = straightLine(loop.body) && loop.loopKind != LoopKind::Sequential;
    return true;
  }

  Function& f_;
  std::set<std::string> names_; // sizes bound in the function, the narrowing's own included
  int next_ = 0;
};

} // namespace

int narrowGuards(Function& f) {
  return Narrower(f).run();
}

} // namespace slope::lower
