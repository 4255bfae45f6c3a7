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
#include <optional>
#include <set>

namespace slope::lower {
namespace {

using ir::Op;

/// With HoistCost::IntegerTrees, a pure tree of at least this many operations is worth a
/// table too: one load and a branch replace it. (A strength-reduced loop's entry check is
/// 40 to 50 integer operations; a subscript is under 16.)
constexpr int kIntegerTree = 16;

/// A tree that reads memory and combines what it reads is worth a table when at least this
/// heavy (an operation on two loads, each of them a load and its subscript: the GMM's
/// x[i, c] - means[k, c], recomputed in every row of its triangle): one load then replaces it
/// wherever the loop around it repeats it. (Weights count every value defined in the loop.)
constexpr int kMemoryTree = 5;

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
  /// The extent at an index that a tree's loads agree on (dim), when they agree (ok).
  struct ExtentAt {
    bool ok = true;
    std::optional<Poly> dim;
    void merge(const ExtentAt& o) {
      ok = ok && o.ok && !(dim && o.dim && !(*dim == *o.dim));
      if (!dim) dim = o.dim;
    }
  };

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
    std::map<int, bool> reads;        // memo: its tree loads from memory
    // Inner indices whose extent is bound inside the loop (a triangular sum's c < j): a table
    // over one takes its extent from the loads that read at it (tableExtent).
    std::set<int> dynamicIndex;
    // Extents bound inside the loop (`size.def #e = v`): name -> v, or -1 when bound twice.
    std::map<std::string, int> sizeDef;
    // memo: what the loads of a value's tree say of the extent at dynamic index i (tableExtent)
    std::map<std::pair<int, int>, ExtentAt> extentAt;
    std::map<int, bool> placeable; // memo: placeable()
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
        if (std::optional<Access> a = accessOf(s); a && a->writes()) sc.written.insert(a->buffer);
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
      // A table over this index is filled whether or not its loop would run. An extent fixed
      // before the loop and never negative is the table's; any other (bound in the loop, or
      // one that fails where it runs) makes the index dynamic: the table then takes its
      // extent from the loads that read at the index (tableExtent), or is not made.
      const Poly& e = ix->second.first->extents[ix->second.second];
      r = true;
      if (dynamicExtent(e, top_) || !e.provablyNonNegative()) sc.dynamicIndex.insert(v);
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
        // A load proven in range, of memory the loop does not write. A table over a dynamic
        // index reads at indices the loop may not reach: that index must be a subscript as it
        // is, so that tableExtent can keep the table within the dimension it subscripts.
        r = in.op == Op::Load && in.checked && !sc.written.count(in.args[0]) &&
            !sc.inside.count(in.args[0]);
        for (size_t k = 1; r && k < in.args.size(); ++k) {
          int a = in.args[k];
          if (!hoistable(a, sc) || sc.dynamicIndex.count(a)) continue;
          for (int i : sc.idx[a])
            if (sc.dynamicIndex.count(i)) r = false;
        }
        if (r) sc.reads[v] = true;
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
          if (sc.reads.count(a) && sc.reads[a]) sc.reads[v] = true;
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
    if (sc.reads[v] && sc.weight[v] >= kMemoryTree) return true;
    return cost_ == HoistCost::IntegerTrees && sc.weight[v] >= kIntegerTree;
  }

  /// The extent of a table over the dynamic index i for the tree of v: the dimension that i
  /// subscripts in each load of the tree that reads at i (they must agree). Every value of i
  /// the loop reaches is below it, since those loads are in range, and every load of the tree
  /// is in range for every i below it, since hoistable allows i as a whole subscript only.
  std::optional<Poly> tableExtent(int v, int i, Scope& sc) {
    const ExtentAt at = extentAt(v, i, sc);
    if (!at.ok || !at.dim || dynamicExtent(*at.dim, top_) || !at.dim->provablyNonNegative())
      return std::nullopt;
    return at.dim;
  }
  /// What the loads of u's tree subscript at i say (memoised: trees share values, and every
  /// value of the loop asks).
  ExtentAt extentAt(int u, int i, Scope& sc) {
    if (!sc.inside.count(u)) return {};
    const std::pair<int, int> key{u, i};
    if (auto m = sc.extentAt.find(key); m != sc.extentAt.end()) return m->second;
    ExtentAt r;
    if (int bound = boundHere(u, sc); bound >= 0) {
      r = extentAt(bound, i, sc);
    } else if (auto d = sc.def.find(u); d != sc.def.end()) {
      const ir::Instr& in = d->second->in;
      if (in.op == Op::Load) {
        const ir::Type& t = f_.src.types[in.args[0]];
        for (size_t k = 1; k < in.args.size(); ++k)
          if (in.args[k] == i) r.merge({true, t.shape[k - 1]});
      }
      for (int a : in.args)
        r.merge(extentAt(a, i, sc));
    }
    return sc.extentAt[key] = r;
  }

  /// Whether v can be computed before the loop into a table: hoistable, and every dynamic index
  /// it uses has a table extent.
  bool placeable(int v, Scope& sc) {
    if (auto m = sc.placeable.find(v); m != sc.placeable.end()) return m->second;
    bool ok = hoistable(v, sc);
    for (int i : ok ? sc.idx[v] : std::set<int>{})
      ok = ok && !(sc.dynamicIndex.count(i) && !tableExtent(v, i, sc));
    return sc.placeable[v] = ok;
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
      if (!placeable(v, sc) || !worthIt(v, sc) || sc.idx[v].size() > 2) continue;
      bool stays = false;
      for (const Stmt* u : sc.users[v])
        if (u->kind != Stmt::Scalar || u->in.result < 0 || !placeable(u->in.result, sc) ||
            sc.idx[u->in.result].size() > 2)
          stays = true;
      if (stays) roots.push_back(s);
    }
    Body pre;
    std::set<int> moved; // values of the hoisted trees, left behind in the loop
    for (Stmt* s : roots) {
      int v = s->in.result;
      for (int a : s->in.args)
        moved.insert(a);
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
          Poly e = sc.dynamicIndex.count(i) ? *tableExtent(v, i, sc) : l->extents[k];
          bt.shape.push_back(e);
          int fresh = f_.src.newValue(f_.src.types[i]);
          rename[i] = fresh;
          nest.indices.push_back(fresh);
          nest.extents.push_back(e);
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
    guardEmpty(loop, pre);
    dropUnused(loop, moved);
    return pre;
  }

  /// Removes what hoisting left behind in the loop: statements of the moved trees (pure, since
  /// hoistable) that nothing reads any more. Loop IR's printout then shows the table's load
  /// where the tree was, and nothing else.
  void dropUnused(Stmt& loop, std::set<int> left) {
    std::map<int, int> uses; // (a value of the loop is read in it, or escapes: Function)
    std::map<int, const Stmt*> def;
    forEachStmt(loop.body, [&](const Stmt& s) {
      std::vector<int> args;
      argsOf(s, args);
      for (int a : args)
        ++uses[a];
      if (s.kind == Stmt::Scalar && s.in.result >= 0) def[s.in.result] = &s;
    });
    // A worklist: a dead statement's operands may die with it.
    std::set<int> dead;
    std::vector<int> work(left.begin(), left.end());
    while (!work.empty()) {
      const int v = work.back();
      work.pop_back();
      auto d = def.find(v);
      if (d == def.end() || uses[v] || f_.escaping.count(v) || !dead.insert(v).second) continue;
      for (int a : d->second->in.args)
        if (--uses[a] == 0) work.push_back(a);
    }
    if (dead.empty()) return;
    std::function<void(Body&)> erase = [&](Body& b) {
      b.erase(std::remove_if(
                  b.begin(), b.end(),
                  [&](const Stmt& s) { return s.kind == Stmt::Scalar && dead.count(s.in.result); }),
              b.end());
      for (Stmt& s : b)
        erase(s.body), erase(s.orelse);
    };
    erase(loop.body);
  }

  /// When the loop may run no iteration (a split triangle's long rows, none when d < 32),
  /// the tables are filled only when it runs one: `if extent > 0 { fills }`. Buffers and
  /// slots are made outside the branch, since the loop names them.
  void guardEmpty(const Stmt& loop, Body& pre) {
    const Poly& e = loop.extents[0];
    bool tables =
        std::any_of(pre.begin(), pre.end(), [](const Stmt& s) { return s.kind == Stmt::Loop; });
    if (!tables || (e - Poly(1)).provablyNonNegative()) return;
    Body outside;
    Stmt branch;
    branch.kind = Stmt::If;
    branch.in.op = Op::If;
    branch.in.loc = loop.in.loc;
    for (Stmt& s : pre) {
      bool makes = s.kind == Stmt::Alloc || (s.kind == Stmt::Scalar && s.in.op == Op::BufZeros);
      (makes ? outside : branch.body).push_back(std::move(s));
    }
    const SrcRange loc = loop.in.loc;
    const int size = emitScalar(f_, outside, DType::I64, Op::Size, {}, loc, 0, e);
    const int zero = emitScalar(f_, outside, DType::I64, Op::Const, {}, loc);
    branch.in.args = {emitScalar(f_, outside, DType::Bool, Op::Gt, {size, zero}, loc)};
    outside.push_back(std::move(branch));
    pre = std::move(outside);
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
