// Triangular sums, and their adjoints' additions, in column order (interchange.hpp says what
// and why; rewriteScatter() shows the second form).
//
// The loop it rewrites, after strength reduction (GMM: the rows of Q_k (x_i - mu_k)):
//
//   parallel for j < E {
//     A                               scalars: the row's extent x = j + o, its check ok, ...
//     size.def #e = max(x, 0)
//     s = if ok { carried sum } else { reduce.sum for c < #e cold { ...; yield v(c, j) } }
//     B                               uses s
//   }
//
// becomes, with blocks of eight rows whose x(j) lie in [8b, 8b + 8):
//
//   bad = sum for j < E (ok ? 0 : 1)
//   cond = bad == 0 and minColumns <= x(E - 1) <= kGroupElems and ...
//   if cond {
//     parallel for each full block b (its rows j0 + t, t < 8, all in [0, E)) {
//       acc = zeroed [9, 8]           (lanes 0..7, tail 8; a short sum: the tail alone)
//       if 8b >= 32 {                 columns c < 8b, which every row of the block has
//         sequential for g < b { for l < 8 { c = 8g + l; for t < 8 { acc[l, t] += v(c, j0 + t) } }
//         }
//       } else {
//         sequential for c < 8b { for t < 8 { acc[8, t] += v(c, j0 + t) } }
//       }
//       tails = acc[8, 0..7]; for q < 7 { for t < 8 { tails[t] += t > q ? v(8b + q, j0 + t) :
//       0 } }                                                        (the corner, q literal)
//       for t < 8 { j = j0 + t; A; s = tree(acc[0..7, t]) + tails[t]; B }
//     }
//   }
//   parallel for j < end { if j is in no full block (every j when cond fails) { the loop's body } }
//                                 (end: E, or the first block's first row when the blocks end E)
//
// Why the bits are the same: a row of e elements puts element c in lane c mod 8 when
// c < chunked(e) and in the tail otherwise (reduce_order.hpp), each accumulator taking its
// elements in increasing c. In a block every row has 8b <= e < 8b + 8, so chunked(e) is 8b
// when 8b >= 32 and 0 otherwise, the same for all eight rows: columns below 8b go to lane
// c mod 8 (or all to the tail), the corner's to the tail, and the loops visit each
// accumulator's columns in increasing order. The row result is 0 + (tree + tail) in codegen;
// a sum that starts from +0 is never -0, so adding the leading 0 changes no bit and is left
// out. The rows' values v(c, j) are the cold copy's, the original expression, read without
// checks: every row's check held, and a row's check proves its every access (strength.cpp).
//
// Why blocks: each column's eight rows are one vector (the triangle's column is contiguous),
// and the lane a column goes to is a literal, so a block's accumulators stay in registers
// for all its columns. Sweeping each column over all its rows instead (the form before)
// kept them in memory: every column loaded and stored every row's accumulator, with a
// vector start that moved by one row per column, which defeats store-to-load forwarding.
//
// Why x(j) = x(0) + j for every row: x is built from j by +, - and multiplication by literals
// with j's coefficient 1, so the i64 values agree modulo 2^64; with x(0) >= -2^40, E <= 2^40
// and x(E - 1) <= kGroupElems checked, neither side wraps.
#include "compiler/lower/interchange.hpp"

#include "compiler/support/reduce_order.hpp"

#include <algorithm>
#include <optional>

namespace slope::lower {
namespace {

using ir::Op;
namespace ro = reduce_order;

constexpr int64_t kMaxWrapFree = int64_t{1} << 40; // |x(0)| and E: no i64 wrap in x(0) + j
// Rows per block of the sums' column form: one vector of lanes (kLanes), so that the rows of a
// block, whose x(j) share floor(x(j) / 8), put the same columns in the same lane.
constexpr int64_t kBlock = reduce_order::kLanes;

class Interchanger {
public:
  Interchanger(Function& f, int64_t minColumns, int64_t minScatterColumns)
      : f_(f), minColumns_(minColumns), minScatterColumns_(minScatterColumns),
        literals_(integerLiterals(f)), names_(boundSizes(f.body)) {}

  int run() {
    for (int v : f_.src.params)
      top_.insert(v);
    for (const Stmt& s : f_.body) {
      if (s.in.result >= 0) top_.insert(s.in.result);
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) topSizes_.insert(s.in.name);
    }
    for (size_t p = 0; p < f_.body.size(); ++p) {
      Body once; // what decides between the forms, when it is the same for the whole call
      const size_t before = f_.body.size();
      walk(f_.body, p, once);
      const size_t grown = f_.body.size() - before; // (what went before a top-level loop)
      f_.body.insert(f_.body.begin() + static_cast<std::ptrdiff_t>(p),
                     std::make_move_iterator(once.begin()), std::make_move_iterator(once.end()));
      p += once.size() + grown;
    }
    return count_;
  }

private:
  // --- the match -----------------------------------------------------------------------------

  /// What the rewrite needs of a row loop.
  struct Rows {
    Stmt* loop = nullptr;
    size_t branch = 0;                    // the if on the row's check, in loop->body
    const Stmt* sum = nullptr;            // its else: the original sum
    int x = -1;                           // the sum's extent before max(., 0)
    std::map<int, size_t> def;            // the loop body's top-level scalars by value
    std::map<int, const ir::Instr*> expr; // those and the sum's, for coefficient()
    std::map<int, int> alias;             // `size #e` of a size the loop bound before: #e's value
    std::set<int> inner;         // values defined in the loop at any depth, indices included
    std::set<int> written;       // buffers the loop writes or allocates
    std::set<std::string> bound; // sizes bound in the loop
    // The loop body's statements that the row's check, its extent and the sum's body read
    // (needs(), in body order).
    std::vector<const Stmt*> okNeeds, xNeeds, sumNeeds;
  };

  /// Rewrites the row loops in b[p] and what it nests. The statements that choose the form go
  /// before the loop; to `once` instead (to go before the function's top-level statement)
  /// when they read only what is computed there: the GMM's choice depends on d alone, and
  /// made inside the loops over i and k it cost 10% of the d = 10 objective.
  void walk(Body& b, size_t p, Body& once) {
    if (b[p].kind == Stmt::Loop) {
      std::vector<int> tables;
      Body pre, with;
      if (std::optional<Rows> r = match(b[p]))
        pre = rewrite(*r, with);
      else if (std::optional<Scatter> s = matchScatter(b[p]))
        pre = rewriteScatter(*s, tables, with);
      else if (splitLast(b[p])) { // (a nest over i, k, j: its rows are those of each (i, k))
        walk(b[p].body, 0, once);
        return;
      }
      if (!with.empty()) {
        const bool hoist = &b != &f_.body && readsTopOnly(pre);
        for (int t : tables) // (made before the loop; inside the loops around it unless hoisted)
          f_.buffers[t] = {Buffer::Temp, -1, &b != &f_.body && !hoist};
        if (hoist)
          for (const Stmt& s : pre)
            if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) topSizes_.insert(s.in.name);
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(p));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(p), std::make_move_iterator(with.begin()),
                 std::make_move_iterator(with.end()));
        Body& to = hoist ? once : b;
        to.insert(hoist ? to.end() : to.begin() + static_cast<std::ptrdiff_t>(p),
                  std::make_move_iterator(pre.begin()), std::make_move_iterator(pre.end()));
        ++count_;
        return;
      }
    }
    for (Body* inner : {&b[p].body, &b[p].orelse})
      for (size_t q = 0; q < inner->size(); ++q) {
        const size_t before = inner->size();
        walk(*inner, q, once);
        q += inner->size() - before; // (what went before the loop)
      }
  }

  /// Whether the statements of b read values and sizes only from the function's top level.
  bool readsTopOnly(const Body& b) const {
    std::set<int> defined, read;
    std::set<std::string> bound; // (by b's own top-level size.defs, before their use)
    bool ok = true;
    auto sizes = [&](const Poly& p) {
      for (const auto& n : p.names())
        ok = ok && (n[0] != '#' || topSizes_.count(n) || bound.count(n));
    };
    for (const Stmt& s : b)
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) bound.insert(s.in.name);
    forEachStmt(b, [&](const Stmt& s) {
      if (s.in.result >= 0) defined.insert(s.in.result);
      defined.insert(s.indices.begin(), s.indices.end());
      read.insert(s.in.args.begin(), s.in.args.end());
      if (s.yield >= 0) read.insert(s.yield);
      for (const Poly& e : s.extents)
        sizes(e);
      sizes(s.in.poly);
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) ok = ok && bound.count(s.in.name);
    });
    for (int v : read)
      ok = ok && (defined.count(v) || top_.count(v));
    return ok;
  }

  bool literal(int v, int64_t* out = nullptr) const {
    auto l = literals_.find(v);
    if (l == literals_.end()) return false;
    if (out) *out = l->second;
    return true;
  }

  std::optional<Rows> match(Stmt& loop) {
    std::optional<Rows> r = rowsOf(loop, false);
    if (!r || !columnsContiguous(*r)) return std::nullopt;
    // Everything the columns compute must be computable there: the sum's body and what it
    // reads of the loop's scalars, and the check.
    for (const Stmt& t : r->sum->body)
      if (!pure(*r, t, true)) return std::nullopt;
    if (!needs(*r, reads(*r), r->sumNeeds) ||
        !needs(*r, {loop.body[r->branch].in.args[0]}, r->okNeeds) || !needs(*r, {r->x}, r->xNeeds))
      return std::nullopt;
    return r;
  }

  /// What the scatter form needs beyond Rows.
  struct Scatter {
    Rows r;
    // The cold loop's additions (one per buffer), and for each its last subscript's
    // statements in the cold body (integer arithmetic: no load), in body order.
    std::vector<const Stmt*> adds;
    std::vector<Body> slices;
    std::vector<std::vector<const Stmt*>> sliceNeeds; // (the slice's of the loop's body)
    // The loop body's own additions to those buffers (top level, outside the branch): which
    // add they share a buffer with, and what their last subscript needs.
    std::vector<std::pair<const Stmt*, size_t>> others;
    std::vector<std::vector<const Stmt*>> otherNeeds;
  };

  /// The adjoint of a triangle (the GMM's gradient: row j adds g_j (x_c - mu_c) into the
  /// packed entry (j, c) of icf's gradient for every c < j): a sequential loop over rows j
  /// whose strength-reduced additions have the entry-check if, its else a cold sequential
  /// loop over c < max(j + o, 0) of pure scalars and buf.adds, each into its own buffer B at
  /// subscripts that do not depend on j or c but the last, which is j + h(c) (j's
  /// coefficient 1: a column's entries are consecutive, where a row's step by a stride that
  /// changes every element). B is not read or stored in the loop, and the loop's only other
  /// writes to it are buf.adds at its top level with the same leading subscripts and a last
  /// one of j's coefficient 1 (the GMM's diagonal).
  std::optional<Scatter> matchScatter(Stmt& loop) {
    std::optional<Rows> r = rowsOf(loop, true);
    if (!r) return std::nullopt;
    Scatter sc;
    const int j = loop.indices[0], c = r->sum->indices[0];
    std::map<int, const Stmt*> coldDef;
    std::set<int> targets;
    for (const Stmt& t : r->sum->body) {
      if (t.kind != Stmt::Scalar) return std::nullopt;
      if (t.in.op != Op::BufAdd) {
        if (!pure(*r, t, true)) return std::nullopt;
        coldDef[t.in.result] = &t;
        continue;
      }
      const int buffer = t.in.args[0];
      if (t.in.args.size() < 3 || !targets.insert(buffer).second) return std::nullopt;
      for (size_t k = 1; k + 2 < t.in.args.size(); ++k) // leading subscripts: set before the loop
        if (r->inner.count(t.in.args[k]) || t.in.args[k] == c) return std::nullopt;
      const int last = t.in.args[t.in.args.size() - 2];
      if (coefficient(*r, last, j) != std::optional<int64_t>(1)) return std::nullopt;
      // The last subscript's slice of the cold body: arithmetic alone, so that the choice can
      // evaluate it at any (j, c).
      std::set<const Stmt*> in;
      std::vector<int> work{last}, outside;
      while (!work.empty()) {
        const int v = work.back();
        work.pop_back();
        auto d = coldDef.find(v);
        if (d == coldDef.end()) {
          if (v != c) outside.push_back(v);
          continue;
        }
        if (d->second->in.op == Op::Load || !in.insert(d->second).second) continue;
        work.insert(work.end(), d->second->in.args.begin(), d->second->in.args.end());
      }
      for (const Stmt* s : in)
        if (s->in.op == Op::Load) return std::nullopt;
      Body slice;
      for (const Stmt& t2 : r->sum->body)
        if (in.count(&t2)) slice.push_back(t2);
      std::vector<const Stmt*> need;
      if (!needs(*r, outside, need) || readsMemory(need)) return std::nullopt;
      sc.adds.push_back(&t);
      sc.slices.push_back(std::move(slice));
      sc.sliceNeeds.push_back(std::move(need));
    }
    if (sc.adds.empty()) return std::nullopt;
    // Every other access of the targets in the loop: top-level additions of the same shape.
    for (size_t p = 0; p < loop.body.size(); ++p) {
      if (p == r->branch) continue;
      const Stmt& s = loop.body[p];
      std::optional<Access> a = accessOf(s);
      if (s.kind == Stmt::Scalar && a && targets.count(a->buffer)) {
        size_t k = 0;
        while (sc.adds[k]->in.args[0] != a->buffer)
          ++k;
        const std::vector<int>& mine = s.in.args;
        const std::vector<int>& theirs = sc.adds[k]->in.args;
        if (a->kind != Access::Add || mine.size() != theirs.size() ||
            !std::equal(mine.begin(), mine.end() - 2, theirs.begin()))
          return std::nullopt;
        const int last = mine[mine.size() - 2];
        std::vector<const Stmt*> need;
        if (coefficient(*r, last, j) != std::optional<int64_t>(1) || !needs(*r, {last}, need) ||
            readsMemory(need))
          return std::nullopt;
        sc.others.emplace_back(&s, k);
        sc.otherNeeds.push_back(std::move(need));
        continue;
      }
      bool touches = a && targets.count(a->buffer);
      auto visit = [&](const Stmt& t) {
        std::optional<Access> b = accessOf(t);
        touches = touches || (b && targets.count(b->buffer));
      };
      forEachStmt(s.body, visit);
      forEachStmt(s.orelse, visit);
      if (touches) return std::nullopt;
    }
    if (!needs(*r, reads(*r), r->sumNeeds) ||
        !needs(*r, {loop.body[r->branch].in.args[0]}, r->okNeeds) ||
        !needs(*r, {r->x}, r->xNeeds) || readsMemory(r->xNeeds))
      return std::nullopt;
    sc.r = std::move(*r);
    return sc;
  }

  /// A sequential nest over [i..., j] whose loop over j alone matchScatter takes: becomes
  /// `for [i...] { for j { ... } }` (the same iterations in the same order), true. Otherwise
  /// left as it was.
  bool splitLast(Stmt& loop) {
    if (loop.loopKind != LoopKind::Sequential || loop.in.op != Op::For || loop.in.ival == 1 ||
        loop.indices.size() < 2 || loop.blocked || loop.cold)
      return false;
    Stmt inner = loop;
    inner.indices = {loop.indices.back()};
    inner.extents = {loop.extents.back()};
    inner.work.clear();
    if (!matchScatter(inner)) return false;
    loop.indices.pop_back();
    loop.extents.pop_back();
    loop.work.clear();
    loop.body.clear();
    loop.body.push_back(std::move(inner));
    return true;
  }

  static bool readsMemory(const std::vector<const Stmt*>& stmts) {
    for (const Stmt* s : stmts)
      if (s->in.op == Op::Load) return true;
    return false;
  }

  /// What match() and matchScatter() share: a loop over rows j with one index whose body
  /// has an if on the row's entry check, its else the original loop over c < max(x, 0) (a
  /// float sum; with `scatter`, a sequential loop of additions into memory), its carried copy
  /// proven, and x = j + o.
  std::optional<Rows> rowsOf(Stmt& loop, bool scatter) {
    coefficients_.clear();
    const LoopKind kind = scatter ? LoopKind::Sequential : LoopKind::Parallel;
    if (loop.loopKind != kind || loop.indices.size() != 1 || loop.cold || loop.blocked ||
        (scatter &&
         (loop.in.op != Op::For || loop.in.ival == 1 || loop.yield >= 0 || loop.in.result >= 0)))
      return std::nullopt;
    Rows r;
    r.loop = &loop;
    bool escapes = false;
    forEachStmt(loop.body, [&](const Stmt& s) {
      if (s.in.result >= 0) r.inner.insert(s.in.result);
      escapes = escapes || (s.in.result >= 0 && f_.escaping.count(s.in.result));
      if (s.kind == Stmt::Loop) r.inner.insert(s.indices.begin(), s.indices.end());
      if (std::optional<Access> a = accessOf(s); a && a->writes()) r.written.insert(a->buffer);
      if (s.kind == Stmt::Alloc || s.kind == Stmt::Stack) r.written.insert(s.in.result);
      if (s.kind == Stmt::Scalar && s.in.op == Op::BufZeros) r.written.insert(s.in.result);
    });
    if (escapes) return std::nullopt;
    r.inner.insert(loop.indices[0]);
    r.bound = boundSizes(loop.body);
    std::map<std::string, int> sizeDef; // #e -> its value
    for (size_t p = 0; p < loop.body.size(); ++p) {
      const Stmt& s = loop.body[p];
      if (s.kind == Stmt::Scalar && s.in.result >= 0) {
        r.def[s.in.result] = p;
        r.expr[s.in.result] = &s.in;
      }
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef && s.in.args.size() == 1)
        sizeDef[s.in.name] = s.in.args[0];
      if (s.kind == Stmt::Scalar && s.in.op == Op::Size && s.in.result >= 0) {
        auto n = s.in.poly.names();
        if (n.size() == 1 && s.in.poly == Poly::var(n[0]) && sizeDef.count(n[0]))
          r.alias[s.in.result] = sizeDef.at(n[0]);
      }
      if (s.kind != Stmt::If || (s.in.result < 0) != scatter || s.orelse.size() != 1 || r.sum)
        continue;
      const Stmt& sum = s.orelse[0];
      if (sum.kind != Stmt::Loop || !sum.cold || sum.indices.size() != 1) continue;
      if (scatter ? sum.in.op != Op::For || sum.loopKind != LoopKind::Sequential ||
                        sum.yield >= 0 || sum.in.result >= 0
                  : sum.in.op != Op::ReduceSum || sum.yield < 0 || s.elseYield != sum.in.result ||
                        !isFloat(f_.src.types[sum.in.result].dtype))
        continue;
      auto names = sum.extents[0].names();
      if (names.size() != 1 || !(sum.extents[0] == Poly::var(names[0])) || !sizeDef.count(names[0]))
        continue;
      // The carried copy must have proven every access: then the row's check covers them all.
      bool proven = true;
      forEachStmt(s.body, [&](const Stmt& t) {
        proven = proven && !(t.kind == Stmt::Scalar && canFail(t.in, f_.src, literals_));
      });
      if (!proven) continue;
      r.branch = p;
      r.sum = &sum;
      r.x = sizeDef.at(names[0]);
    }
    if (!r.sum) return std::nullopt;
    // The extent is max(x, 0), as the front end writes it.
    if (auto d = r.def.find(r.x); d != r.def.end()) {
      auto defined = [&](int v) -> const ir::Instr* {
        auto g = r.def.find(v);
        return g == r.def.end() ? nullptr : &loop.body[g->second].in;
      };
      if (int x = maxWithZeroOf(loop.body[d->second].in, defined, literals_); x >= 0) r.x = x;
    }
    for (const Stmt& t : r.sum->body)
      if (t.kind == Stmt::Scalar && t.in.result >= 0) r.expr[t.in.result] = &t.in;
    if (coefficient(r, r.x, loop.indices[0]) != std::optional<int64_t>(1)) return std::nullopt;
    return r;
  }

  /// The coefficient of index `idx` (the row's j or the sum's c) in v, when v is built from
  /// it by +, -, negation and multiplication by a literal over values that do not depend on it.
  std::optional<int64_t> coefficient(const Rows& r, int v, int idx) const {
    // (Memoised: an expression is a DAG, and its shared parts are met once each.)
    const std::pair<int, int> key{v, idx};
    if (auto m = coefficients_.find(key); m != coefficients_.end()) return m->second;
    return coefficients_[key] = coefficientOf(r, v, idx);
  }
  std::optional<int64_t> coefficientOf(const Rows& r, int v, int idx) const {
    if (v == idx) return 1;
    if (v == r.loop->indices[0] || v == r.sum->indices[0]) return 0; // (the other index)
    if (auto a = r.alias.find(v); a != r.alias.end()) return coefficient(r, a->second, idx);
    auto d = r.expr.find(v);
    if (d == r.expr.end()) return r.inner.count(v) ? std::nullopt : std::optional<int64_t>(0);
    const ir::Instr& in = *d->second;
    auto of = [&](int k) { return coefficient(r, in.args[static_cast<size_t>(k)], idx); };
    switch (in.op) {
    case Op::Const: return 0;
    case Op::Size:
      for (const auto& n : in.poly.names())
        if (r.bound.count(n)) return std::nullopt;
      return 0;
    case Op::Add:
    case Op::Sub: {
      auto a = of(0), b = of(1);
      if (!a || !b) return std::nullopt;
      return in.op == Op::Add ? *a + *b : *a - *b;
    }
    case Op::Neg:
      if (auto a = of(0)) return -*a;
      return std::nullopt;
    case Op::Mul: {
      auto a = of(0), b = of(1);
      if (!a || !b) return std::nullopt;
      int64_t k = 0;
      if (*a == 0 && *b == 0) return 0;
      if (*a == 0 && literal(in.args[0], &k) && std::abs(k) < 1024) return k * *b;
      if (*b == 0 && literal(in.args[1], &k) && std::abs(k) < 1024) return k * *a;
      return std::nullopt;
    }
    default: // (independent of idx when every operand is)
      for (size_t k = 0; k < in.args.size(); ++k)
        if (of(static_cast<int>(k)) != std::optional<int64_t>(0)) return std::nullopt;
      return 0;
    }
  }

  /// Whether the columns read memory in order where the rows do not: some load of the sum
  /// steps by one element per row (j's coefficient 1 in its last subscript) and not per
  /// column. Otherwise (a triangle stored by rows, say) the row order is the better one.
  bool columnsContiguous(const Rows& r) const {
    const int j = r.loop->indices[0], c = r.sum->indices[0];
    for (const Stmt& t : r.sum->body) {
      if (t.kind != Stmt::Scalar || t.in.op != Op::Load || t.in.args.size() < 2) continue;
      const int last = t.in.args.back();
      if (coefficient(r, last, j) == std::optional<int64_t>(1) &&
          coefficient(r, last, c) != std::optional<int64_t>(1))
        return true;
    }
    return false;
  }

  /// Whether the scalar t can be computed anywhere in the loop's body without changing what
  /// it computes or what the call does: no effect, no failure, no read of memory the loop
  /// writes, no size the loop binds. `unchecked`: a load may be one that checks (the sum's,
  /// proven by the rows' checks).
  bool pure(const Rows& r, const Stmt& t, bool unchecked) const {
    if (t.kind != Stmt::Scalar || t.in.result < 0) return false;
    switch (t.in.op) {
    case Op::SizeDef:
    case Op::BufAdd:
    case Op::BufStore:
    case Op::BufZeros:
    case Op::RevolveNext:
    case Op::Param: return false;
    case Op::Load:
      if (r.written.count(t.in.args[0])) return false;
      if (!unchecked && !t.in.checked && t.in.args.size() > 1) return false;
      break;
    case Op::Size:
      for (const auto& n : t.in.poly.names())
        if (r.bound.count(n)) return false;
      break;
    default:
      if (canFail(t.in, f_.src, literals_)) return false;
    }
    return true;
  }

  /// The values the sum's body reads from outside it (its index aside).
  static std::vector<int> reads(const Rows& r) {
    std::set<int> defined{r.sum->indices[0]}, used;
    forEachStmt(r.sum->body, [&](const Stmt& s) {
      if (s.in.result >= 0) defined.insert(s.in.result);
      defined.insert(s.indices.begin(), s.indices.end());
      used.insert(s.in.args.begin(), s.in.args.end());
      if (s.yield >= 0) used.insert(s.yield);
    });
    std::vector<int> out;
    for (int v : used)
      if (!defined.count(v)) out.push_back(v);
    return out;
  }

  /// The loop body's top-level statements that `roots` depend on, in body order, into out
  /// (appended, each once); false when one is not pure or a root is defined deeper.
  bool needs(const Rows& r, const std::vector<int>& roots, std::vector<const Stmt*>& out) const {
    std::set<size_t> at;
    std::vector<int> work = roots;
    while (!work.empty()) {
      int v = work.back();
      work.pop_back();
      if (v == r.loop->indices[0]) continue;
      auto d = r.def.find(v);
      if (d == r.def.end()) {
        if (r.inner.count(v)) return false;
        continue;
      }
      if (!at.insert(d->second).second) continue;
      if (auto a = r.alias.find(v); a != r.alias.end()) { // (copy() reads it as its value)
        work.push_back(a->second);
        continue;
      }
      const Stmt& s = r.loop->body[d->second];
      if (!pure(r, s, false)) return false;
      work.insert(work.end(), s.in.args.begin(), s.in.args.end());
    }
    for (size_t p : at)
      out.push_back(&r.loop->body[p]);
    return true;
  }

  // --- the rewrite ---------------------------------------------------------------------------

  /// A scalar statement into b; its result's id.
  int emit(Body& b, Op op, DType t, std::vector<int> args, int64_t ival = 0,
           const Poly& poly = Poly()) {
    return emitScalar(f_, b, t, op, std::move(args), loc_, ival, poly);
  }
  int constant(Body& b, int64_t v) { return emit(b, Op::Const, DType::I64, {}, v); }

  /// A size bound to value v (loop extents are sizes).
  Poly bind(Body& b, const std::string& stem, int v) {
    return bindSize(b, uniqueSizeName(stem, next_, names_), v, loc_);
  }

  /// Copies of the loop's statements `needed` (then `extra`, statements of the sum's body)
  /// into b with fresh values, the row index read as j (and the sum's index as c); the id
  /// each value of `want` has in the copy.
  std::vector<int> copy(const Rows& r, const std::vector<const Stmt*>& needed, const Body& extra,
                        const std::map<int, int>& seed, Body& b, const std::vector<int>& want) {
    std::vector<const Stmt*> order = needed;
    std::sort(order.begin(), order.end());
    order.erase(std::unique(order.begin(), order.end()), order.end());
    Body tmp;
    std::vector<std::pair<int, int>> aliases;
    for (const Stmt* s : order) {
      if (auto a = r.alias.find(s->in.result); a != r.alias.end())
        aliases.emplace_back(*a); // (`size #e`: #e is bound in the loop, its value is not)
      else
        tmp.push_back(*s);
    }
    tmp.insert(tmp.end(), extra.begin(), extra.end());
    std::map<int, int> rename = seed;
    freshDefinitions(f_, tmp, rename);
    for (const auto& [v, a] : aliases)
      rename[v] = rename.count(a) ? rename.at(a) : a;
    renameValues(tmp, rename);
    for (Stmt& s : tmp) {
      if (s.in.op == Op::Load) s.in.checked = true; // (see the file comment)
      b.push_back(std::move(s));
    }
    std::vector<int> out;
    for (int v : want)
      out.push_back(rename.count(v) ? rename.at(v) : v);
    return out;
  }

  /// An `if cond` with empty branches, at the rewrite's location.
  Stmt branch(int cond) const {
    Stmt b;
    b.kind = Stmt::If;
    b.in.op = Op::If;
    b.in.loc = loc_;
    b.in.args = {cond};
    return b;
  }

  /// A fresh buffer of type t (not zeroed: what follows fills it), its alloc appended to b.
  int allocate(Body& b, const ir::Type& t) {
    const int v = f_.src.newValue(t);
    Stmt a;
    a.kind = Stmt::Alloc;
    a.in.op = Op::Comp;
    a.in.result = v;
    a.in.extents = t.shape;
    a.in.loc = loc_;
    b.push_back(std::move(a));
    return v;
  }

  Stmt loopOver(const Poly& extent, LoopKind kind, bool vector) {
    Stmt l;
    l.kind = Stmt::Loop;
    l.in.op = Op::For;
    l.in.loc = loc_;
    l.loopKind = kind;
    l.vectorisable = vector;
    l.indices = {f_.src.newValue({DType::I64, {}})};
    l.extents = {extent};
    return l;
  }

  /// What every column form starts with.
  struct Prefix {
    int e = -1, zero = -1, one = -1; // the rows' extent E, 0 and 1
    int x0 = -1, xLast = -1;         // x at the first row and the last
    std::vector<int> conds;          // what must hold for the column form to run
  };

  /// Into pre: E, how many rows' checks fail, x(0) and x(E - 1), and the conditions of the
  /// column form: no row's check fails, 0 < E <= 2^40, x(0) >= -2^40 (neither wraps), and
  /// minColumns <= x(E - 1) <= maxColumns columns.
  Prefix prefix(const Rows& r, Body& pre, int64_t maxColumns, int64_t minColumns) {
    const Stmt& loop = *r.loop;
    const int j = loop.indices[0];
    const int ok = loop.body[r.branch].in.args[0];
    Prefix p;
    p.e = emit(pre, Op::Size, DType::I64, {}, 0, loop.extents[0]);
    p.zero = constant(pre, 0);
    p.one = constant(pre, 1);
    // bad = the rows whose check fails.
    Stmt check = loopOver(loop.extents[0], LoopKind::Reduction, true);
    check.in.op = Op::ReduceSum;
    {
      const int t = check.indices[0];
      int okT = copy(r, r.okNeeds, {}, {{j, t}}, check.body, {ok})[0];
      check.yield = emit(check.body, Op::Select, DType::I64, {okT, p.zero, p.one});
      check.in.result = f_.src.newValue({DType::I64, {}});
    }
    const int bad = check.in.result;
    pre.push_back(std::move(check));
    const int last = emit(pre, Op::Sub, DType::I64, {p.e, p.one});
    p.xLast = copy(r, r.xNeeds, {}, {{j, last}}, pre, {r.x})[0];
    p.x0 = copy(r, r.xNeeds, {}, {{j, p.zero}}, pre, {r.x})[0];
    p.conds.push_back(emit(pre, Op::Eq, DType::Bool, {bad, p.zero}));
    p.conds.push_back(emit(pre, Op::Gt, DType::Bool, {p.e, p.zero}));
    p.conds.push_back(emit(pre, Op::Le, DType::Bool, {p.e, constant(pre, kMaxWrapFree)}));
    p.conds.push_back(emit(pre, Op::Ge, DType::Bool, {p.x0, constant(pre, -kMaxWrapFree)}));
    p.conds.push_back(emit(pre, Op::Ge, DType::Bool, {p.xLast, constant(pre, minColumns)}));
    p.conds.push_back(emit(pre, Op::Le, DType::Bool, {p.xLast, constant(pre, maxColumns)}));
    return p;
  }

  /// The conjunction of conds (at least one), into pre.
  int all(Body& pre, const std::vector<int>& conds) {
    int cond = conds[0];
    for (size_t k = 1; k < conds.size(); ++k)
      cond = emit(pre, Op::And, DType::Bool, {cond, conds[k]});
    return cond;
  }

  /// The statements that choose the form (into the returned body, to go before the loop or,
  /// when they read only the top level, before the function's top-level statement), and into
  /// `with` the statements that replace r's loop: the blocks' form under its condition, then
  /// the loop, which skips the blocks' rows.
  Body rewrite(Rows& r, Body& with) {
    Stmt& loop = *r.loop;
    loc_ = loop.in.loc;
    const int j = loop.indices[0];
    const bool lanes = !r.sum->shortRow;
    const DType ft = f_.src.types[r.sum->in.result].dtype;

    Body pre;
    const Prefix pf = prefix(r, pre, ro::kGroupElems, minColumns_);
    const int e = pf.e, zero = pf.zero, x0 = pf.x0;
    const int cond = all(pre, pf.conds);
    // Full blocks b: x(j) in [8b, 8b + 8) for eight rows j in [0, E). bLo = ceil(max(x(0), 0)
    // / 8), bHi = floor(x(E - 1) + 1) / 8) (x(E - 1) >= minColumns > 0 when cond holds).
    const int k8 = constant(pre, kBlock);
    const int bLo =
        emit(pre, Op::Div, DType::I64,
             {emit(pre, Op::Add, DType::I64,
                   {emit(pre, Op::Max, DType::I64, {x0, zero}), constant(pre, kBlock - 1)}),
              k8});
    const int bHi = emit(pre, Op::Div, DType::I64, {emit(pre, Op::Add, DType::I64, {x0, e}), k8});
    const int nBlocks = emit(
        pre, Op::Select, DType::I64,
        {cond, emit(pre, Op::Max, DType::I64, {zero, emit(pre, Op::Sub, DType::I64, {bHi, bLo})}),
         zero});
    const Poly blocks = bind(pre, "#blocks", nBlocks);
    // The blocks' rows, [rowLo, rowHi): the loop skips them (none when cond fails).
    const int rowLo =
        emit(pre, Op::Sub, DType::I64, {emit(pre, Op::Mul, DType::I64, {bLo, k8}), x0});
    const int rowHi =
        emit(pre, Op::Add, DType::I64, {rowLo, emit(pre, Op::Mul, DType::I64, {nBlocks, k8})});

    Stmt version = branch(cond);
    Stmt each = loopOver(blocks, LoopKind::Parallel, false);
    Body& bb = each.body;
    const int b = emit(bb, Op::Add, DType::I64, {bLo, each.indices[0]});
    const int xb = emit(bb, Op::Mul, DType::I64, {b, constant(bb, kBlock)});
    const int j0 = emit(bb, Op::Sub, DType::I64, {xb, x0});
    // The accumulators of the block's rows: lanes 0..7 and the tail (8); a short sum has a
    // tail only. A literal shape: codegen keeps it on the stack, and LLVM in registers.
    const int64_t rows = lanes ? ro::kLanes + 1 : 1;
    const int acc = f_.src.newValue(ir::Type{ft, {Poly(rows), Poly(kBlock)}});
    {
      Stmt a;
      a.kind = Stmt::Alloc;
      a.in.op = Op::BufZeros;
      a.in.result = acc;
      a.in.loc = loc_;
      bb.push_back(std::move(a));
      f_.buffers[acc] = {Buffer::Temp, -1, true};
    }
    // Column c into accumulator `into` of every row of the block, appended to cb.
    //
    // Every loop over the block's rows is vectorised before LLVM may unroll it
    // (Stmt::vectorFirst): unrolled first, as it would be (eight trips, a literal), its
    // accesses to acc have literal offsets, SROA splits acc into 72 scalars, and the SLP
    // vectoriser gathers only some of them back, with shuffles; the corner's masked lanes
    // become branches. Vectorised first, acc is promoted to vector registers after. GMM
    // objective (callgrind, 1 thread): d = 128 2,447.5M -> 1,837.7M instructions, d = 64
    // 161.2M -> 124.2M (docs/benchmarks.md).
    auto column = [&](Body& cb, int c, int into) {
      Stmt add = loopOver(Poly(kBlock), LoopKind::Parallel, true);
      add.fewTrips = true;
      add.vectorFirst = true;
      const int t = add.indices[0];
      const int jv = emit(add.body, Op::Add, DType::I64, {j0, t});
      const int v = copy(r, r.sumNeeds, r.sum->body, {{j, jv}, {r.sum->indices[0], c}}, add.body,
                         {r.sum->yield})[0];
      add.body.push_back(scalarStmt(Op::BufAdd, {acc, into, t, v}, loc_));
      add.body.back().in.checked = true; // (into < rows, t < kBlock)
      hoistInvariant(add, cb);
      cb.push_back(std::move(add));
    };
    const int tailRow = constant(bb, rows - 1);
    // Columns c < 8b, which every row of the block has, all into the tail.
    Stmt tails = loopOver(bind(bb, "#cols", xb), LoopKind::Sequential, false);
    column(tails.body, tails.indices[0], tailRow);
    if (lanes) {
      // Rows of at least 32 (8b >= 32) put those columns in lanes: groups g of eight
      // columns, column 8g + l into lane l, a literal, so the lanes stay in registers.
      Stmt groups = loopOver(bind(bb, "#groups", b), LoopKind::Sequential, false);
      Body& gb = groups.body;
      const int base = emit(gb, Op::Mul, DType::I64, {groups.indices[0], constant(gb, kBlock)});
      for (int64_t l = 0; l < ro::kLanes; ++l) {
        const int lane = constant(gb, l);
        column(gb, emit(gb, Op::Add, DType::I64, {base, lane}), lane);
      }
      Stmt pick = branch(emit(bb, Op::Ge, DType::Bool, {xb, constant(bb, ro::kMinLaneRow)}));
      pick.body.push_back(std::move(groups));
      pick.orelse.push_back(std::move(tails));
      bb.push_back(std::move(pick));
    } else {
      bb.push_back(std::move(tails));
    }
    // The corner: row t of the block has columns 8b .. 8b + t - 1 in its tail as well. Column
    // by column (q = 0..6, literals), each a vector over the block's rows, the rows without
    // the column (t <= q) adding 0 instead:
    //
    //   tails[t] = acc[8, t];  c = 8b + q: { column's part; for t < 8 { tails[t] += t > q ?
    //   v(c, j0 + t) : 0 } }  for q = 0..6
    //
    // Row t still takes its corner columns in increasing order after its earlier tail, which
    // starts from +0 and so is never -0: the zeros change no bit. The value is an if, not a
    // select: a row's check proves only the columns it has, so the other rows' loads stay
    // behind it (masked loads). The corner's tails have a buffer of their own: read at
    // variable offsets until LLVM has vectorised and unrolled its loops, acc's last row would
    // keep acc from being promoted. Row by row and scalar (the form before), the corner and
    // the block's finish cost a d = 128 block 416 instructions against 101 for a group of
    // eight full columns.
    const int tails8 = allocate(bb, ir::Type{ft, {Poly(kBlock)}});
    f_.buffers[tails8] = {Buffer::Temp, -1, true};
    {
      Stmt copyTails = loopOver(Poly(kBlock), LoopKind::Parallel, true);
      copyTails.fewTrips = copyTails.vectorFirst = true;
      const int t = copyTails.indices[0];
      const int v = emit(copyTails.body, Op::Load, ft, {acc, tailRow, t});
      copyTails.body.back().in.checked = true;
      copyTails.body.push_back(scalarStmt(Op::BufStore, {tails8, t, v}, loc_));
      copyTails.body.back().in.checked = true; // (t < kBlock)
      bb.push_back(std::move(copyTails));
    }
    for (int64_t qc = 0; qc + 1 < kBlock; ++qc) {
      const int q = constant(bb, qc);
      const int c = emit(bb, Op::Add, DType::I64, {xb, q});
      Stmt add = loopOver(Poly(kBlock), LoopKind::Parallel, true);
      add.fewTrips = add.vectorFirst = true;
      const int t = add.indices[0];
      const int jv = emit(add.body, Op::Add, DType::I64, {j0, t});
      const int v = copy(r, r.sumNeeds, r.sum->body, {{j, jv}, {r.sum->indices[0], c}}, add.body,
                         {r.sum->yield})[0];
      hoistInvariant(add, bb); // (the column's part: every column has the block's last row)
      Body rowPart = std::move(add.body);
      add.body.clear();
      Stmt pick = branch(emit(add.body, Op::Lt, DType::Bool, {q, t}));
      pick.in.result = f_.src.newValue({ft, {}});
      pick.body = std::move(rowPart);
      pick.yield = v;
      pick.elseYield = emit(pick.orelse, Op::Const, ft, {});
      const int picked = pick.in.result;
      add.body.push_back(std::move(pick));
      add.body.push_back(scalarStmt(Op::BufAdd, {tails8, t, picked}, loc_));
      add.body.back().in.checked = true; // (t < kBlock)
      bb.push_back(std::move(add));
    }

    // The rows' sums, combined as codegen combines a row's (the lane tree, then the tail),
    // into a buffer over the block's rows: in a loop of their own, which LLVM vectorises, so
    // that every access of the accumulators has a literal offset and they stay in registers.
    const int sums = allocate(bb, ir::Type{ft, {Poly(kBlock)}});
    f_.buffers[sums] = {Buffer::Temp, -1, true};
    {
      Stmt comb = loopOver(Poly(kBlock), LoopKind::Parallel, true);
      comb.fewTrips = true;
      comb.vectorFirst = true;
      Body& cb = comb.body;
      const int t = comb.indices[0];
      std::vector<int> part;
      for (int64_t k = 0; k < rows; ++k) {
        part.push_back(k + 1 < rows ? emit(cb, Op::Load, ft, {acc, constant(cb, k), t})
                                    : emit(cb, Op::Load, ft, {tails8, t}));
        cb.back().in.checked = true;
      }
      int total = part[0];
      if (lanes) { // ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then + tail
        auto add = [&](int a, int c) { return emit(cb, Op::Add, ft, {a, c}); };
        const int lo = add(add(part[0], part[1]), add(part[2], part[3]));
        const int hi = add(add(part[4], part[5]), add(part[6], part[7]));
        total = add(add(lo, hi), part[8]);
      }
      cb.push_back(scalarStmt(Op::BufStore, {sums, t, total}, loc_));
      cb.back().in.checked = true; // (t < kBlock)
      bb.push_back(std::move(comb));
    }
    // The block's rows, reading their sums: the loop's body with its if replaced by the
    // sum's load, at j = j0 + t; one vector of the block's rows where that body is
    // straight-line (the GMM's: Q's diagonal term plus the sum, stored).
    {
      Stmt rowsLoop = loop;
      const int t = f_.src.newValue({DType::I64, {}});
      rowsLoop.indices = {t};
      rowsLoop.extents = {Poly(kBlock)};
      rowsLoop.work.clear();
      Stmt& br = rowsLoop.body[r.branch];
      const int result = br.in.result;
      Body combine;
      emit(combine, Op::Load, ft, {sums, t});
      combine.back().in.checked = true;
      combine.back().in.result = result; // (the last statement makes the if's value)
      rowsLoop.body.erase(rowsLoop.body.begin() + static_cast<std::ptrdiff_t>(r.branch));
      rowsLoop.body.insert(rowsLoop.body.begin() + static_cast<std::ptrdiff_t>(r.branch),
                           combine.begin(), combine.end());
      Stmt jAt = scalarStmt(Op::Add, {j0, t}, loc_);
      jAt.in.result = j; // (the row index, now a value of the block's row t)
      rowsLoop.body.insert(rowsLoop.body.begin(), std::move(jAt));
      dropDead(rowsLoop.body);
      if (straightLine(rowsLoop.body) && rowsLoop.loopKind == LoopKind::Parallel) {
        rowsLoop.vectorisable = true;
        rowsLoop.fewTrips = true;
        rowsLoop.vectorFirst = true;
      }
      std::map<int, int> rename;
      Body copied = copyFresh(f_, Body{std::move(rowsLoop)}, {}, rename, next_, names_);
      bb.push_back(std::move(copied[0]));
    }
    version.body.push_back(std::move(each));
    with.push_back(std::move(version));

    // The loop, for the rows outside the blocks (all of them when cond fails): as it was, each
    // row testing that it is outside, over the rows before `end`, which leaves out the blocks'
    // rows when they end the range (the GMM's, for every d that is a multiple of 8: then no
    // row is left). Visiting all of [0, E) and skipping the blocks' rows cost those rows 17
    // instructions each, 8 % of the GMM's d = 128 objective. Blocks that begin the range are
    // still skipped row by row: starting the loop at rowHi makes j an index plus an offset,
    // and that cost the d = 10 objective, whose rows are all here, 9 % (LLVM kept more of
    // the row's values on the stack).
    //
    //   end = nBlocks > 0 and rowHi >= E ? rowLo : E
    //   parallel for j < end { if j < rowLo or j >= rowHi { the loop's body } }
    {
      const int atEnd = emit(pre, Op::And, DType::Bool,
                             {emit(pre, Op::Gt, DType::Bool, {nBlocks, zero}),
                              emit(pre, Op::Ge, DType::Bool, {rowHi, e})});
      const Poly end = bind(pre, "#rest", emit(pre, Op::Select, DType::I64, {atEnd, rowLo, e}));
      Body body = std::move(loop.body);
      loop.body.clear();
      const int outside = emit(loop.body, Op::Or, DType::Bool,
                               {emit(loop.body, Op::Lt, DType::Bool, {j, rowLo}),
                                emit(loop.body, Op::Ge, DType::Bool, {j, rowHi})});
      Stmt rest = branch(outside);
      rest.body = std::move(body);
      loop.body.push_back(std::move(rest));
      loop.extents = {end};
      loop.work.clear();
      with.push_back(std::move(loop));
    }
    return pre;
  }

  /// The scatter form (matchScatter), as rewrite() for sums:
  ///
  ///   if the prefix's conditions hold, and for every addition the columns' ranges of its
  ///      last subscript s increase (s(E - 1, c) < s(lo(c + 1), c + 1)), and the loop's other
  ///      additions to its buffer fall below or above them all {
  ///     the loop without the branch
  ///     sequential for c < x(E - 1) {
  ///       lo = max(0, c + 1 - x(0))
  ///       parallel for t < E - lo { j = lo + t; the cold body at (j, c) }
  ///     }
  ///   } else {
  ///     the loop as it was
  ///   }
  ///
  /// Why the bits are the same: the rows' checks hold, so no addition fails; the ranges make
  /// the additions of the triangle go to distinct elements, none of which the rest of the
  /// loop adds to, and nothing in the loop reads them. So every element takes the same terms
  /// in the same order as before: each buffer's values are sums of the same terms.
  Body rewriteScatter(Scatter& sc, std::vector<int>& tables, Body& with) {
    Rows& r = sc.r;
    Stmt& loop = *r.loop;
    loc_ = loop.in.loc;
    const int j = loop.indices[0], c0 = r.sum->indices[0];

    Body pre;
    const Prefix pf = prefix(r, pre, kMaxWrapFree, minScatterColumns_);
    const int e = pf.e, zero = pf.zero, one = pf.one, x0 = pf.x0;
    const int cond = all(pre, pf.conds);
    const Poly cols = bind(pre, "#cols", emit(pre, Op::Select, DType::I64, {cond, pf.xLast, zero}));
    const int colsV = emit(pre, Op::Size, DType::I64, {}, 0, cols);
    // lo(c) = max(0, c + 1 - x(0)): the first row of column c; every column's last is E - 1.
    auto lowest = [&](Body& b, int c) {
      return emit(
          b, Op::Max, DType::I64,
          {zero, emit(b, Op::Sub, DType::I64, {emit(b, Op::Add, DType::I64, {c, one}), x0})});
    };
    // Addition k's last subscript at row jv, column cv.
    auto at = [&](Body& b, size_t k, int jv, int cv) {
      const int last = sc.adds[k]->in.args[sc.adds[k]->in.args.size() - 2];
      return copy(r, sc.sliceNeeds[k], sc.slices[k], {{j, jv}, {c0, cv}}, b, {last})[0];
    };
    // Columns whose range does not end below the next one's start.
    Stmt overlaps = loopOver(cols, LoopKind::Reduction, true);
    overlaps.in.op = Op::ReduceSum;
    {
      Body& ob = overlaps.body;
      const int c = overlaps.indices[0];
      const int next = emit(ob, Op::Add, DType::I64, {c, one});
      const int hasNext = emit(ob, Op::Lt, DType::Bool, {next, colsV});
      const int lastRow = emit(ob, Op::Sub, DType::I64, {e, one});
      int bad = -1;
      for (size_t k = 0; k < sc.adds.size(); ++k) {
        const int end = at(ob, k, lastRow, c), start = at(ob, k, lowest(ob, next), next);
        const int b = emit(ob, Op::Ge, DType::Bool, {end, start});
        bad = bad < 0 ? b : emit(ob, Op::Or, DType::Bool, {bad, b});
      }
      bad = emit(ob, Op::And, DType::Bool, {hasNext, bad});
      overlaps.yield = emit(ob, Op::Select, DType::I64, {bad, one, zero});
      overlaps.in.result = f_.src.newValue({DType::I64, {}});
    }
    const int overlapping = overlaps.in.result;
    pre.push_back(std::move(overlaps));
    std::vector<int> conds{cond, emit(pre, Op::Eq, DType::Bool, {overlapping, zero})};
    // The triangle spans [s(lo(0), 0), s(E - 1, cols - 1)]; the loop's other additions to the
    // same buffer, j + q for j < E, must fall wholly outside it.
    if (!sc.others.empty()) {
      const int lastRow = emit(pre, Op::Sub, DType::I64, {e, one});
      const int lastCol =
          emit(pre, Op::Max, DType::I64, {zero, emit(pre, Op::Sub, DType::I64, {colsV, one})});
      for (size_t w = 0; w < sc.others.size(); ++w) {
        const auto& [other, k] = sc.others[w];
        const int q = other->in.args[other->in.args.size() - 2];
        const int lo = at(pre, k, lowest(pre, zero), zero), hi = at(pre, k, lastRow, lastCol);
        const int q0 = copy(r, sc.otherNeeds[w], {}, {{j, zero}}, pre, {q})[0];
        const int qLast = copy(r, sc.otherNeeds[w], {}, {{j, lastRow}}, pre, {q})[0];
        conds.push_back(emit(pre, Op::Or, DType::Bool,
                             {emit(pre, Op::Lt, DType::Bool, {qLast, lo}),
                              emit(pre, Op::Gt, DType::Bool, {q0, hi})}));
      }
    }

    Stmt version = branch(all(pre, conds));
    Body& then = version.body;

    // The row's float values the additions read (the GMM's g_j) are kept in a buffer over the
    // rows, written by the rows' loop, so that each column reads them instead of computing
    // them again for every entry.
    std::map<int, int> kept; // value -> its buffer
    for (int v : reads(r))
      if (r.def.count(v) && !r.alias.count(v) && isFloat(f_.src.types[v].dtype)) {
        const int buffer = allocate(then, ir::Type{f_.src.types[v].dtype, {loop.extents[0]}});
        f_.buffers[buffer] = {Buffer::Temp, -1, true};
        kept[v] = buffer;
      }
    // The rows, without the triangle.
    {
      Stmt rowsLoop = loop;
      rowsLoop.body.erase(rowsLoop.body.begin() + static_cast<std::ptrdiff_t>(r.branch));
      for (const auto& [v, buffer] : kept) {
        rowsLoop.body.push_back(scalarStmt(Op::BufStore, {buffer, j, v}, loc_));
        rowsLoop.body.back().in.checked = true; // (j < E, the buffer's extent)
      }
      dropDead(rowsLoop.body);
      std::map<int, int> rename;
      Body copied = copyFresh(f_, Body{std::move(rowsLoop)}, {}, rename, next_, names_);
      then.push_back(std::move(copied[0]));
    }
    // The columns' first rows: a table made with the choice (once per call for the GMM).
    const int loTable = allocate(pre, ir::Type{DType::I64, {cols}});
    tables.push_back(loTable);
    {
      Stmt fill = loopOver(cols, LoopKind::Parallel, true);
      const int c = fill.indices[0];
      const int lo = lowest(fill.body, c);
      fill.body.push_back(scalarStmt(Op::BufStore, {loTable, c, lo}, loc_));
      fill.body.back().in.checked = true; // (c < #cols, the table's extent)
      pre.push_back(std::move(fill));
    }
    Stmt columns = loopOver(cols, LoopKind::Sequential, false);
    columns.deferrable = true; // (the branch's condition: the rows' additions fall outside)
    {
      Body& cb = columns.body;
      const int c = columns.indices[0];
      const int lo = emit(cb, Op::Load, DType::I64, {loTable, c});
      cb.back().in.checked = true;
      Stmt seg = loopOver(bind(cb, "#rows", emit(cb, Op::Sub, DType::I64, {e, lo})),
                          LoopKind::Parallel, true);
      seg.fewTrips = true; // (at most E: a column of the triangle)
      const int jv = emit(seg.body, Op::Add, DType::I64, {lo, seg.indices[0]});
      std::map<int, int> seed{{j, jv}, {c0, c}};
      std::vector<int> computed; // (what the columns still compute of the row's values)
      for (int v : reads(r)) {
        auto k = kept.find(v);
        if (k == kept.end()) {
          computed.push_back(v);
          continue;
        }
        seed[v] = emit(seg.body, Op::Load, f_.src.types[v].dtype, {k->second, jv});
        seg.body.back().in.checked = true;
      }
      std::vector<const Stmt*> need;
      needs(r, computed, need); // (a part of sumNeeds, which matchScatter found pure)
      copy(r, need, r.sum->body, seed, seg.body, {});
      for (Stmt& s : seg.body) // (proven: every row's check held)
        if (s.kind == Stmt::Scalar && s.in.op == Op::BufAdd) s.in.checked = true;
      hoistInvariant(seg, cb);
      cb.push_back(std::move(seg));
    }
    then.push_back(std::move(columns));

    version.orelse.push_back(std::move(loop));
    with.push_back(std::move(version));
    return pre;
  }

  /// Moves the scalars of a column's loop over rows that do not depend on the row to the
  /// column's body, before the loop: x_c is read once per column, not once per row (LLVM
  /// does not hoist a load past additions to memory it cannot tell apart from it). Only what
  /// the copies of pure statements compute is there; a load that moves reads what some row of
  /// the column read, since every column has a row, and nothing the column loop writes.
  ///
  /// Integer sums are regrouped on the way (exact: i64 arithmetic wraps, and + and - are
  /// associative modulo 2^64): x +- y with y the same for every row and x = a + b or a - b,
  /// a the same and b not, used only there, becomes (a +- y) + b or (a +- y) - b, and a +- y
  /// moves out with the rest. The triangle's subscript P(c) + j - c - 1 then costs the row
  /// one addition, and its column part P(c) - c - 1 is one value per column (which
  /// strength.cpp's expandQuadratics carries from column to column).
  void hoistInvariant(Stmt& seg, Body& into) {
    std::set<int> varying{seg.indices[0]};
    std::map<int, int> uses;
    forEachStmt(seg.body, [&](const Stmt& s) {
      for (int a : s.in.args)
        ++uses[a];
      for (int v : {s.yield, s.elseYield, s.buffer})
        ++uses[v];
    });
    if (seg.yield >= 0) ++uses[seg.yield];
    std::map<int, size_t> at; // a varying scalar of keep -> its position
    std::set<size_t> dead;
    Body keep;
    auto sum = [&](const Stmt& s) {
      return s.kind == Stmt::Scalar && (s.in.op == Op::Add || s.in.op == Op::Sub) &&
             s.in.result >= 0 && f_.src.types[s.in.result] == ir::Type{DType::I64, {}};
    };
    for (Stmt& s : seg.body) {
      bool depends = s.kind != Stmt::Scalar || s.in.result < 0 || s.in.op == Op::SizeDef;
      for (int a : s.in.args)
        depends = depends || varying.count(a);
      if (!depends) {
        into.push_back(std::move(s));
        continue;
      }
      if (sum(s) && varying.count(s.in.args[0]) && !varying.count(s.in.args[1])) {
        auto x = at.find(s.in.args[0]);
        if (x != at.end() && uses[s.in.args[0]] == 1 && sum(keep[x->second])) {
          const Stmt& xs = keep[x->second];
          const bool first = !varying.count(xs.in.args[0]); // a + b, a - b (else b + a, b - a)
          if (first != !varying.count(xs.in.args[1])) {
            const int a = xs.in.args[first ? 0 : 1], b = xs.in.args[first ? 1 : 0];
            // x +- y: (a + b) +- y = (a +- y) + b; (a - b) +- y = (a +- y) - b;
            // (b + a) +- y = (a +- y) + b; (b - a) +- y = b - (a -+ y).
            const bool bMinusA = !first && xs.in.op == Op::Sub;
            Op inner = s.in.op;
            if (bMinusA) inner = inner == Op::Add ? Op::Sub : Op::Add;
            Stmt inv = scalarStmt(inner, {a, s.in.args[1]}, s.in.loc);
            inv.in.result = f_.src.newValue({DType::I64, {}});
            into.push_back(inv);
            const bool minus = first && xs.in.op == Op::Sub;
            s.in.op = minus || bMinusA ? Op::Sub : Op::Add;
            s.in.args =
                bMinusA ? std::vector<int>{b, inv.in.result} : std::vector<int>{inv.in.result, b};
            dead.insert(x->second);
          }
        }
      }
      if (s.in.result >= 0) {
        varying.insert(s.in.result);
        at[s.in.result] = keep.size();
      }
      keep.push_back(std::move(s));
    }
    seg.body.clear();
    for (size_t k = 0; k < keep.size(); ++k)
      if (!dead.count(k)) seg.body.push_back(std::move(keep[k]));
  }

  /// Removes the top-level scalars of b that nothing reads once the carried sum is gone: its
  /// slots (made and written here, never read) and what only they and the check needed.
  /// Nothing that can fail goes.
  void dropDead(Body& b) const {
    std::map<int, int> reads;
    std::map<std::string, int> mentions;
    std::set<int> slots;
    // What s reads (a store's target aside: writing a slot is not reading it), counted by
    // `by` (1 to count, -1 when s goes).
    auto count = [&](const Stmt& s, int by) {
      const bool store = s.kind == Stmt::Scalar && s.in.op == Op::BufStore;
      for (size_t k = store ? 1 : 0; k < s.in.args.size(); ++k)
        reads[s.in.args[k]] += by;
      if (s.yield >= 0) reads[s.yield] += by;
      if (s.elseYield >= 0) reads[s.elseYield] += by;
      if (s.kind == Stmt::Store) // (a store's subscripts are its indices)
        for (int i : s.indices)
          reads[i] += by;
      auto mention = [&](const Poly& p) {
        for (const auto& n : p.names())
          mentions[n] += by;
      };
      for (const Poly& e : s.extents)
        mention(e);
      for (const Poly& e : s.in.extents)
        mention(e);
      mention(s.in.poly);
      if (s.in.result >= 0)
        for (const Poly& d : f_.src.types[s.in.result].shape)
          mention(d);
    };
    forEachStmt(b, [&](const Stmt& s) {
      count(s, 1);
      if (s.kind == Stmt::Scalar && s.in.op == Op::BufZeros) slots.insert(s.in.result);
    });
    auto dead = [&](const Stmt& s) {
      if (s.kind != Stmt::Scalar) return false;
      if (s.in.op == Op::SizeDef) return mentions[s.in.name] == 0;
      if (s.in.op == Op::BufStore) return slots.count(s.in.args[0]) && reads[s.in.args[0]] == 0;
      if (s.in.result < 0 || reads[s.in.result] || f_.escaping.count(s.in.result)) return false;
      return s.in.op != Op::RevolveNext && !canFail(s.in, f_.src, literals_);
    };
    // Last to first, so that what a dead statement alone read is dead when it is reached (a
    // value is read only after it is defined; nested statements are never dropped).
    std::vector<bool> drop(b.size(), false);
    for (size_t p = b.size(); p-- > 0;)
      if (dead(b[p])) {
        drop[p] = true;
        count(b[p], -1);
      }
    size_t out = 0;
    for (size_t p = 0; p < b.size(); ++p)
      if (!drop[p]) {
        if (out != p) b[out] = std::move(b[p]); // (not onto itself: that would empty it)
        ++out;
      }
    b.resize(out);
  }

  Function& f_;
  const int64_t minColumns_;        // (the rows' own loop below it)
  const int64_t minScatterColumns_; // (the same for the scatter form)
  std::map<int, int64_t> literals_;
  std::set<int> top_;              // values the function's top level defines, params included
  std::set<std::string> topSizes_; // sizes bound at the top level
  std::set<std::string> names_;    // sizes bound in the function
  mutable std::map<std::pair<int, int>, std::optional<int64_t>> coefficients_; // (per loop)
  int next_ = 0;
  SrcRange loc_;
  int count_ = 0;
};

} // namespace

int interchangeTriangles(Function& f, int64_t minColumns, int64_t minScatterColumns) {
  return Interchanger(f, minColumns, minScatterColumns).run();
}

} // namespace slope::lower
