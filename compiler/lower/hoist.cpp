// Loop-invariant code motion across loop nests (hoist.hpp says what moves, and when).
//
// For a loop L, "invariant" means: computed from values defined before L and from indices of
// loops inside L, through pure instructions and loads of memory L does not write. Such an
// expression takes the same value for every index of L, so one evaluation per point of the
// inner indices it uses is enough. LLVM's own LICM moves an instruction out of the loop that
// contains it; it does not turn work inside an inner loop into a table over that loop's
// indices, which is what saves the GMM's exp(icf[k, j]) inside the sum over data points.

#include "compiler/lower/hoist.hpp"

#include <algorithm>
#include <functional>
#include <set>

namespace slope::lower {
namespace {

using ir::Op;

/// Operations worth a table: each costs far more than the load that replaces it.
bool costly(const ir::Instr& in, const ir::Function& f) {
  if (in.op == Op::Div) return isFloat(f.types[in.result].dtype);
  return ir::isTranscendental(in.op);
}

/// With HoistCost::IntegerTrees, a pure tree of at least this many operations is worth a
/// table too: one load and a branch replace it. (A strength-reduced loop's entry check is
/// 40 to 50 integer operations; a subscript is under 16.)
constexpr int kIntegerTree = 16;

/// The size name a `size` leaf reads when its extent is exactly one name, else "".
std::string singleName(const Poly& p) {
  if (p.terms().size() != 1) return "";
  const auto& [mono, coef] = *p.terms().begin();
  return mono.size() == 1 && coef == 1 ? mono[0] : "";
}

/// Whether p names a size bound in the function (a trip count, a triangular extent) other than
/// at its top level. One bound at the top level (splitShortRows' row counts) has one value from
/// its binding on, and whatever is hoisted out of a loop lands right before that loop, after
/// the binding: to a hoisted table it is as good as a parameter's size.
bool dynamicExtent(const Poly& p, const std::set<std::string>& top) {
  for (const auto& n : p.names())
    if (n[0] == '#' && !top.count(n)) return true;
  return false;
}

class Hoister {
public:
  Hoister(Function& f, HoistCost cost) : f_(f), cost_(cost) {}

  int run() {
    constants_ = integerLiterals(f_);
    std::map<std::string, int> bindings;
    forEachStmt(f_.body, [&](const Stmt& s) {
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) ++bindings[s.in.name];
    });
    for (const Stmt& s : f_.body)
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef && bindings[s.in.name] == 1)
        top_.insert(s.in.name);
    body(f_.body, 0);
    return count_;
  }

private:
  /// What hoisting out of one loop knows about that loop's body.
  struct Scope {
    std::set<int> inside;     // values defined in the body (indices included)
    std::set<int> written;    // memory the body writes or allocates
    std::map<int, Stmt*> def; // value -> the scalar statement defining it
    std::map<int, std::pair<Stmt*, size_t>> innerIndex; // index -> its loop, dimension
    std::map<int, int> order;                           // inner index -> position in nesting order
    std::set<int> ownIndices;                           // the loop's own indices
    std::map<int, std::vector<const Stmt*>> users;      // value -> statements that use it
    std::map<int, bool> ok;                             // memo: hoistable
    std::map<int, std::set<int>> idx; // memo: inner indices a hoistable value uses
    std::map<int, bool> expensive;    // memo: its tree has a costly operation
    std::map<int, int> weight;        // memo: operations in its tree (shared ones counted again)
    // Extents bound inside the loop (`size.def #e = v`): name -> v, or -1 when bound twice.
    std::map<std::string, int> sizeDef;
  };

  void body(Body& b, int depth) {
    for (size_t p = 0; p < b.size(); ++p) {
      if (b[p].kind == Stmt::Loop) {
        Body pre = outOf(b[p], depth);
        size_t n = pre.size();
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(p), std::make_move_iterator(pre.begin()),
                 std::make_move_iterator(pre.end()));
        p += n;
        body(b[p].body, depth + 1);
      } else if (b[p].kind == Stmt::If) {
        body(b[p].body, depth + 1);
        body(b[p].orelse, depth + 1);
      }
    }
  }

  static void argsOf(const Stmt& s, std::vector<int>& out) {
    switch (s.kind) {
    case Stmt::Scalar:
    case Stmt::Stack: out.insert(out.end(), s.in.args.begin(), s.in.args.end()); break;
    case Stmt::Store:
      out.insert(out.end(), s.indices.begin(), s.indices.end());
      out.push_back(s.yield);
      break;
    case Stmt::Loop:
    case Stmt::If:
      out.insert(out.end(), s.in.args.begin(), s.in.args.end());
      if (s.yield >= 0) out.push_back(s.yield);
      if (s.elseYield >= 0) out.push_back(s.elseYield);
      break;
    case Stmt::Alloc: break;
    }
  }

  void scan(Body& b, Scope& sc, int& counter) {
    for (Stmt& s : b) {
      std::vector<int> args;
      argsOf(s, args);
      for (int a : args)
        sc.users[a].push_back(&s);
      if (s.in.result >= 0) sc.inside.insert(s.in.result);
      switch (s.kind) {
      case Stmt::Scalar:
        if (s.in.result >= 0) sc.def[s.in.result] = &s;
        if (s.in.op == Op::SizeDef)
          sc.sizeDef[s.in.name] = sc.sizeDef.count(s.in.name) ? -1 : s.in.args[0];
        if (s.in.op == Op::BufStore || s.in.op == Op::BufAdd) sc.written.insert(s.in.args[0]);
        if (s.in.op == Op::BufZeros) sc.written.insert(s.in.result);
        break;
      case Stmt::Alloc:
      case Stmt::Stack: sc.written.insert(s.in.result); break;
      case Stmt::Store: sc.written.insert(s.buffer); break;
      case Stmt::Loop:
        for (size_t k = 0; k < s.indices.size(); ++k) {
          sc.inside.insert(s.indices[k]);
          sc.innerIndex[s.indices[k]] = {&s, k};
          sc.order[s.indices[k]] = counter++;
        }
        scan(s.body, sc, counter);
        break;
      case Stmt::If:
        scan(s.body, sc, counter);
        scan(s.orelse, sc, counter);
        break;
      }
    }
  }

  /// Whether v can be computed before the loop (see the file comment); fills sc.idx[v].
  bool hoistable(int v, Scope& sc) {
    if (!sc.inside.count(v)) return true; // from before the loop
    auto memo = sc.ok.find(v);
    if (memo != sc.ok.end()) return memo->second;
    sc.ok[v] = false; // (no cycles in SSA; this also answers a use before its definition)
    bool r = false;
    std::set<int> used;
    bool costlyHere = false;
    int weight = 1;
    if (int bound = boundHere(v, sc); bound >= 0) {
      // `size #e` where the loop binds #e to a value: that value, wherever it can go.
      r = hoistable(bound, sc);
      if (r) {
        used = sc.idx[bound];
        costlyHere = sc.expensive[bound];
        weight = sc.weight[bound];
      }
    } else if (sc.ownIndices.count(v)) {
      r = false;
    } else if (auto ix = sc.innerIndex.find(v); ix != sc.innerIndex.end()) {
      // A table over this index is filled whether or not its loop would run: its extent must
      // be fixed before the loop and never negative (a negative one fails where it runs).
      const Poly& e = ix->second.first->extents[ix->second.second];
      r = !dynamicExtent(e, top_) && e.provablyNonNegative();
      used.insert(v);
    } else if (auto d = sc.def.find(v); d != sc.def.end()) {
      const ir::Instr& in = d->second->in;
      const ir::Function& f = f_.src;
      r = true;
      switch (ir::opKind(in.op)) {
      case ir::OpKind::Leaf:
        r = in.op == Op::Const || (in.op == Op::Size && !dynamicExtent(in.poly, top_));
        break;
      case ir::OpKind::Unary:
      case ir::OpKind::Binary:
        // Nothing that can fail is speculated: a float -> i64 conversion, an integer division
        // or power by a value that is not a safe literal.
        r = !canFail(in, f, constants_);
        break;
      case ir::OpKind::Ternary: r = in.op == Op::Select; break;
      case ir::OpKind::Memory:
        // A load proven in range, of memory the loop does not write.
        r = in.op == Op::Load && in.checked && !sc.written.count(in.args[0]) &&
            !sc.inside.count(in.args[0]);
        break;
      case ir::OpKind::Region: r = false; break;
      }
      if (r)
        for (int a : in.args) {
          if (!hoistable(a, sc)) {
            r = false;
            break;
          }
          if (sc.idx.count(a)) used.insert(sc.idx[a].begin(), sc.idx[a].end());
          if (sc.expensive.count(a) && sc.expensive[a]) costlyHere = true;
          if (sc.weight.count(a)) weight = std::min(weight + sc.weight[a], 1 << 20);
        }
      if (r && costly(in, f)) costlyHere = true;
    }
    sc.ok[v] = r;
    if (r) {
      sc.idx[v] = used;
      sc.expensive[v] = costlyHere;
      sc.weight[v] = weight;
    }
    return r;
  }

  /// The value a `size #e` leaf v stands for when the loop binds #e once, else -1.
  int boundHere(int v, const Scope& sc) const {
    auto d = sc.def.find(v);
    if (d == sc.def.end() || d->second->in.op != Op::Size) return -1;
    auto b = sc.sizeDef.find(singleName(d->second->in.poly));
    return b == sc.sizeDef.end() ? -1 : b->second;
  }

  /// Whether hoisting v saves enough to pay for its table (or slot).
  bool worthIt(int v, Scope& sc) const {
    if (sc.expensive[v]) return true;
    return cost_ == HoistCost::IntegerTrees && sc.weight[v] >= kIntegerTree;
  }

  /// A copy of v's computation, appended to `out`, with inner indices renamed by `rename`.
  int clone(int v, Scope& sc, std::map<int, int>& done, const std::map<int, int>& rename,
            Body& out) {
    if (auto r = rename.find(v); r != rename.end()) return r->second;
    if (!sc.inside.count(v)) return v;
    if (auto d = done.find(v); d != done.end()) return d->second;
    if (int bound = boundHere(v, sc); bound >= 0)
      return done[v] = clone(bound, sc, done, rename, out);
    const Stmt& s = *sc.def.at(v);
    Stmt c;
    c.kind = Stmt::Scalar;
    c.in = s.in;
    for (int& a : c.in.args)
      a = clone(a, sc, done, rename, out);
    c.in.result = f_.src.newValue(f_.src.types[v]);
    done[v] = c.in.result;
    out.push_back(std::move(c));
    return done[v];
  }

  /// The statements to run before `loop`, and the loop rewritten to read their results.
  Body outOf(Stmt& loop, int depth) {
    // A loop over several indices is a nest: what does not depend on its first index is
    // hoisted out of it, into a table over the others it uses.
    Scope sc;
    int counter = 0;
    sc.ownIndices.insert(loop.indices[0]);
    for (size_t k = 0; k < loop.indices.size(); ++k) {
      sc.inside.insert(loop.indices[k]);
      if (k == 0) continue;
      sc.innerIndex[loop.indices[k]] = {&loop, k};
      sc.order[loop.indices[k]] = counter++;
    }
    scan(loop.body, sc, counter);
    // Roots: hoistable values with a costly operation, used by something that stays.
    std::vector<Stmt*> roots;
    for (const auto& [v, s] : sc.def) {
      // At most two indices: the table then holds at most as many elements as one iteration
      // of the loop evaluates over them, and stays small beside the work it saves.
      if (!hoistable(v, sc) || !worthIt(v, sc) || sc.idx[v].size() > 2) continue;
      bool stays = false;
      for (const Stmt* u : sc.users[v])
        if (u->kind != Stmt::Scalar || u->in.result < 0 || !hoistable(u->in.result, sc))
          stays = true;
      if (stays) roots.push_back(s);
    }
    Body pre;
    for (Stmt* s : roots) {
      int v = s->in.result;
      std::vector<int> ix(sc.idx[v].begin(), sc.idx[v].end());
      std::sort(ix.begin(), ix.end(), [&](int a, int b) { return sc.order[a] < sc.order[b]; });
      const ir::Type vt = f_.src.types[v];
      std::map<int, int> done, rename;
      int buf;
      if (ix.empty()) {
        // A scalar: computed once before the loop into a rank-0 slot.
        ir::Type bt{vt.dtype, {}};
        buf = f_.src.newValue(bt);
        Stmt z;
        z.kind = Stmt::Scalar;
        z.in.op = Op::BufZeros;
        z.in.result = buf;
        pre.push_back(std::move(z));
        int c = clone(v, sc, done, rename, pre);
        Stmt st;
        st.kind = Stmt::Scalar;
        st.in.op = Op::BufStore;
        st.in.args = {buf, c};
        pre.push_back(std::move(st));
      } else {
        // A table over the inner indices it uses, filled by a parallel nest of its own.
        ir::Type bt{vt.dtype, {}};
        Stmt nest;
        nest.kind = Stmt::Loop;
        nest.in.op = Op::For;
        nest.in.loc = s->in.loc;
        nest.loopKind = LoopKind::Parallel;
        nest.vectorisable = true;
        for (int i : ix) {
          const auto& [l, k] = sc.innerIndex.at(i);
          bt.shape.push_back(l->extents[k]);
          int fresh = f_.src.newValue(f_.src.types[i]);
          rename[i] = fresh;
          nest.indices.push_back(fresh);
          nest.extents.push_back(l->extents[k]);
        }
        buf = f_.src.newValue(bt);
        Stmt a;
        a.kind = Stmt::Alloc;
        a.in.op = Op::Comp;
        a.in.result = buf;
        a.in.extents = bt.shape;
        a.in.loc = s->in.loc;
        f_.buffers[buf] = {Buffer::Temp, -1, depth > 0};
        pre.push_back(std::move(a));
        int c = clone(v, sc, done, rename, nest.body);
        Stmt st;
        st.kind = Stmt::Store;
        st.buffer = buf;
        st.indices = nest.indices;
        st.yield = c;
        nest.body.push_back(std::move(st));
        pre.push_back(std::move(nest));
      }
      // The expression becomes a load of what was computed before the loop.
      ir::Instr l;
      l.op = Op::Load;
      l.result = v;
      l.args = {buf};
      l.args.insert(l.args.end(), ix.begin(), ix.end());
      l.checked = true; // (its subscripts are the table's own indices)
      l.loc = s->in.loc;
      s->in = l;
      ++count_;
    }
    return pre;
  }

  Function& f_;
  std::set<std::string> top_; // sizes bound once, at the top level (dynamicExtent)
  HoistCost cost_;
  int count_ = 0;
  std::map<int, int64_t> constants_; // integer literals anywhere in the function
};

} // namespace

int hoistInvariants(Function& f, HoistCost cost) {
  return Hoister(f, cost).run();
}

} // namespace slope::lower
