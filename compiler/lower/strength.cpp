// Strength reduction of subscripts and bounds checks at loop entry (strength.hpp says what).
//
// The math. In a loop over c < n, an integer value computed from c, literals and values the
// loop does not change is, when it is built by +, -, * and exact divisions from those, a
// polynomial in c with rational coefficients: V(c) = P(c) / den, P with integer coefficients
// over c and the invariant values. If P has degree <= 2 in c:
//   V(c + 1) = V(c) + D(c),  D(c) = V(c + 1) - V(c),  D(c + 1) = D(c) + D2,
// where D is affine in c and D2 = V(2) - 2 V(1) + V(0) is a constant. V(0), D(0) = V(1) - V(0)
// and D2 are integers (V is integer everywhere), computed once before the loop from P at
// c = 0, 1, 2; each iteration then costs two additions instead of its multiplications and
// divisions. Of degree 1, V(c) = V(0) + D c is computed from c itself (one addition, and a
// multiplication unless D is 1), which keeps the iterations independent. Integer arithmetic
// wraps modulo 2^64, and so do these sums: they equal the original computation whenever its
// intermediate values fit in i64.
//
// Exact division. div(a, k) (floor division) is a / k exactly when k divides a. With
// a = A(x) / m (A integer over the variables x), k divides a for every integer x when m k
// divides A(x) for every x; a polynomial with integer coefficients taken modulo m k is
// periodic with period m k in each variable, so it is enough to evaluate A at every point of
// [0, m k)^vars (c (c - 1) at c = 0, 1: even everywhere). Anything else is left alone.
//
// Loops with loops inside. A sequential loop over c whose body computes several values of
// degree 2 in c that differ from one another by affine steps (interchange.cpp's groups: the
// triangle's positions of columns 8 c + l, l = 0 .. 7, one apart, each step d - 2 - 8 c - l)
// carries the first as above, V and D in two slots, and computes each next one as the one
// before plus its step A + B c (A and B computed before the loop, B c shared by the steps
// with the same B): an addition or two per value instead of the multiplications and the
// division, and two registers for the slots, not one induction variable per value (which
// spill: the eight columns of a group are eight). The same arithmetic modulo 2^64, equal to
// the original whenever its intermediate values fit in i64. A parallel loop with such values
// (interchange.cpp's blocks: the corner's seven columns at 8 b + q, q = 0 .. 6) computes the
// first as it did and the others from it within the iteration (nothing is carried across).
//
// Entry checks. A sequence whose differences are affine is monotone on [0, n - 1] when its
// difference has the same sign at both ends (D(0) and D(n - 2)); a monotone sequence lies
// between its first and last values, so checking V(0) and V(n - 1) against [0, dim) checks
// every iteration. That holds for the true integers; so that it holds for the i64 values the
// loop computes, the checks also bound n, D(0) and D2 (kAffineTrips, ...) so that no value of
// the sequence wraps. The checks only choose which copy of the loop runs: when one fails, the
// original loop runs and reports the first failing access as it always did.

#include "compiler/lower/strength.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>

namespace slope::lower {
namespace {

using ir::Op;

const char* const kIndex = "@c"; // the loop's index in a polynomial
const char* const kTrips = "@n"; // the loop's extent in a polynomial

// Bounds that keep a carried sequence in i64 (|V(c) - V(0)| < 2^62): an affine one over fewer
// than 2^31 iterations with |D| < 2^31, a quadratic one over fewer than 2^20 with
// |D(0)| < 2^40 and |D2| < 2^20.
constexpr int64_t kAffineTrips = int64_t{1} << 31, kAffineStep = int64_t{1} << 31;
constexpr int64_t kQuadTrips = int64_t{1} << 20, kQuadStep = int64_t{1} << 40,
                  kQuadStep2 = int64_t{1} << 20;
constexpr int kMaxTerms = 32;        // a polynomial larger than this is not worth carrying
constexpr int64_t kMaxPoints = 4096; // evaluations allowed to prove a division exact

std::string valueName(int v) {
  return "%" + std::to_string(v);
}

int degreeIn(const Poly& p, const std::string& x) {
  int d = 0;
  for (const auto& [m, c] : p.terms())
    d = std::max(d, static_cast<int>(std::count(m.begin(), m.end(), x)));
  return d;
}

/// p with every coefficient divided by g (which divides them all).
Poly divideCoefficients(const Poly& p, int64_t g) {
  Poly r;
  for (const auto& [m, c] : p.terms()) {
    Poly t(c / g);
    for (const auto& n : m)
      t = t * Poly::var(n);
    r = r + t;
  }
  return r;
}

/// Whether m divides p at every integer point (see the file comment).
bool divisibleEverywhere(const Poly& p, int64_t m) {
  if (m == 1) return true;
  std::vector<std::string> names = p.names();
  double points = std::pow(static_cast<double>(m), static_cast<double>(names.size()));
  if (points > static_cast<double>(kMaxPoints)) return false;
  std::map<std::string, int64_t> at;
  for (const auto& n : names)
    at[n] = 0;
  for (;;) {
    std::optional<int64_t> v = p.eval(at);
    if (!v || *v % m != 0) return false;
    size_t k = 0;
    for (; k < names.size(); ++k) {
      if (++at[names[k]] < m) break;
      at[names[k]] = 0;
    }
    if (k == names.size()) return true;
  }
}

/// An integer value as num / den, exact (see the file comment).
struct Quad {
  Poly num;
  int64_t den = 1;
  bool costly = false;  // computed with a multiplication or a division
  bool divides = false; // computed with a division
  int degree() const { return degreeIn(num, kIndex); }
};

class Reducer {
public:
  /// expanding: only expand() loops with loops inside (expandQuadratics); else only
  /// rewrite() innermost loops (reduceStrength).
  Reducer(Function& f, bool expanding) : f_(f), expanding_(expanding) {}

  int run() {
    constants_ = integerLiterals(f_);
    body(f_.body);
    return count_;
  }

private:
  // --- the walk --------------------------------------------------------------------------
  void body(Body& b) {
    for (size_t p = 0; p < b.size(); ++p) {
      Stmt& s = b[p];
      if (s.kind == Stmt::Loop)
        for (size_t k = 0; k < s.indices.size(); ++k)
          extent_[s.indices[k]] = s.extents[k];
      if (s.kind == Stmt::Loop) {
        const bool inner = innermost(s);
        Body pre;
        if (inner != expanding_ && (inner ? rewrite(s, pre) : expand(s, pre))) {
          ++count_;
          p += pre.size();
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(p - pre.size()),
                   std::make_move_iterator(pre.begin()), std::make_move_iterator(pre.end()));
        }
        if (inner) continue;
      }
      body(b[p].body);
      body(b[p].orelse);
    }
  }

  static bool innermost(const Stmt& loop) {
    bool inner = false;
    forEachStmt(loop.body, [&](const Stmt& s) { inner = inner || s.kind == Stmt::Loop; });
    return !inner;
  }

  // --- one loop ----------------------------------------------------------------------------
  /// What the rewrite of one loop knows about its body.
  struct Scope {
    int index = -1;
    std::set<int> inside;                    // values defined in the loop (its index included)
    std::map<int, const Stmt*> def;          // top-level scalar statement defining a value
    std::set<std::string> bound;             // sizes bound in the body (size.def)
    std::map<int, std::optional<Quad>> memo; // (quad)
  };

  bool boundInside(const Poly& p, const Scope& sc) const {
    for (const auto& n : p.names())
      if (sc.bound.count(n)) return true;
    return false;
  }

  bool isI64(int v) const {
    const ir::Type& t = f_.src.types[v];
    return t.rank() == 0 && t.dtype == DType::I64;
  }

  /// v as a polynomial in the loop's index, or nothing (see the file comment).
  std::optional<Quad> quad(int v, Scope& sc) {
    if (auto m = sc.memo.find(v); m != sc.memo.end()) return m->second;
    sc.memo[v] = std::nullopt;
    std::optional<Quad> r;
    try {
      r = quadOf(v, sc);
    } catch (const std::exception&) { // (a coefficient overflows i64)
      r = std::nullopt;
    }
    if (r) {
      // Lowest terms: the common factor of the numerator's coefficients and den.
      int64_t g = r->den;
      for (const auto& [m, c] : r->num.terms())
        g = std::gcd(g, c);
      if (g > 1) {
        r->num = divideCoefficients(r->num, g);
        r->den /= g;
      }
      if (r->degree() > 2 || static_cast<int>(r->num.terms().size()) > kMaxTerms) r = std::nullopt;
    }
    sc.memo[v] = r;
    return r;
  }

  std::optional<Quad> quadOf(int v, Scope& sc) {
    if (!isI64(v)) return std::nullopt;
    if (v == sc.index) return Quad{Poly::var(kIndex), 1, false};
    if (auto c = constants_.find(v); c != constants_.end()) return Quad{Poly(c->second), 1, false};
    if (!sc.inside.count(v)) return Quad{Poly::var(valueName(v)), 1, false};
    auto d = sc.def.find(v);
    if (d == sc.def.end()) return std::nullopt;
    const ir::Instr& in = d->second->in;
    auto arg = [&](size_t k) { return quad(in.args[k], sc); };
    switch (in.op) {
    case Op::Size:
      if (boundInside(in.poly, sc)) return std::nullopt;
      return Quad{in.poly, 1, false};
    case Op::Neg: {
      auto a = arg(0);
      if (!a) return std::nullopt;
      a->num = -a->num;
      return a;
    }
    case Op::Add:
    case Op::Sub:
    case Op::Mul: {
      auto a = arg(0), b = arg(1);
      if (!a || !b) return std::nullopt;
      Quad q;
      q.costly = a->costly || b->costly || in.op == Op::Mul;
      q.divides = a->divides || b->divides;
      if (in.op == Op::Mul) {
        q.num = a->num * b->num;
        q.den = a->den * b->den;
      } else {
        Poly x = a->num * Poly(b->den), y = b->num * Poly(a->den);
        q.num = in.op == Op::Add ? x + y : x - y;
        q.den = a->den * b->den;
      }
      return q;
    }
    case Op::Div: {
      // Only by a literal, and only where exact (see the file comment).
      auto k = constants_.find(in.args[1]);
      auto a = arg(0);
      if (k == constants_.end() || k->second == 0 || !a) return std::nullopt;
      int64_t m = a->den * (k->second < 0 ? -k->second : k->second);
      if (!divisibleEverywhere(a->num, m)) return std::nullopt;
      Quad q{k->second < 0 ? -a->num : a->num, m, true, true};
      return q;
    }
    default: return std::nullopt;
    }
  }

  /// Whether subscript s of dimension dim is in range by the extents of the loops around it.
  bool provenByExtent(int s, const Poly& dim) const {
    if (auto e = extent_.find(s); e != extent_.end())
      return (dim - e->second).provablyNonNegative();
    if (auto c = constants_.find(s); c != constants_.end())
      return c->second >= 0 && (dim - Poly(c->second + 1)).provablyNonNegative();
    return false;
  }

  struct Check {
    Quad q;
    Poly dim;
  };

  /// What the loop's body defines, or false where it makes memory, binds a size or defines a
  /// value that escapes (nothing is rewritten then).
  /// `carrying`: values will be carried across iterations, which allocations, escaping values
  /// and sizes bound in the body rule out; otherwise (a chain within one iteration) they stay.
  bool scope(const Stmt& loop, Scope& sc, bool carrying = true) const {
    if (loop.indices.size() != 1) return false;
    sc.index = loop.indices[0];
    sc.inside.insert(sc.index);
    bool escapes = false, effects = false;
    forEachStmt(loop.body, [&](const Stmt& s) {
      if (s.in.result >= 0) {
        sc.inside.insert(s.in.result);
        escapes = escapes || f_.escaping.count(s.in.result);
      }
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) sc.bound.insert(s.in.name);
      if (s.kind == Stmt::Alloc || s.kind == Stmt::Stack) effects = true;
    });
    if (carrying && (escapes || effects || !sc.bound.empty())) return false;
    for (const Stmt& s : loop.body)
      if (s.kind == Stmt::Scalar && s.in.result >= 0) sc.def[s.in.result] = &s;
    return true;
  }

  /// Starts the preamble of one loop: `pre`, with nothing computed yet.
  void begin(const Stmt& loop, Body& pre) {
    pre_ = &pre;
    loc_ = loop.in.loc;
    trips_ = loop.extents[0];
    names_.clear();
    literals_.clear();
    known_.clear();
    polys_.clear();
    series_.clear();
    ops_.clear();
  }

  /// A sequential loop with loops inside (see the file comment, "Loops with loops inside"):
  /// the values of its body's top level that are polynomials of degree 2 in the index,
  /// computed with a division and used other than by one another, v1 .. vk in the body's
  /// order, when each difference v(i+1) - v(i) is affine in the index with integer
  /// coefficients: v1 is carried (two slots), and each next one is the one before plus its
  /// difference A + B c, the products B c shared. In a parallel loop (interchange.cpp's blocks
  /// of eight rows: the positions of the corner's seven columns) v1 is computed as it was, and
  /// the others follow it the same way.
  bool expand(Stmt& loop, Body& pre) {
    const bool carried = loop.loopKind == LoopKind::Sequential;
    if (!carried && loop.loopKind != LoopKind::Parallel) return false;
    Scope sc;
    if (!scope(loop, sc, carried)) return false;
    const int c = sc.index;
    std::set<int> wide; // the integer quadratics with a division of the top level
    for (const Stmt& s : loop.body)
      if (s.kind == Stmt::Scalar && s.in.result >= 0 && s.in.op != Op::Const) {
        auto q = quad(s.in.result, sc);
        if (q && q->degree() == 2 && q->divides) wide.insert(s.in.result);
      }
    if (wide.empty()) return false;
    // Those with a use outside the others' computation: the others then fall out.
    std::set<int> used;
    forEachStmt(loop.body, [&](const Stmt& s) {
      const bool inner = s.kind == Stmt::Scalar && wide.count(s.in.result);
      auto use = [&](int v) {
        if (wide.count(v) && !inner) used.insert(v);
      };
      for (int a : s.in.args)
        use(a);
      use(s.yield);
      use(s.elseYield);
      use(s.buffer);
    });
    if (loop.yield >= 0 && wide.count(loop.yield)) used.insert(loop.yield);
    if (used.size() < 2) return false; // (one value: the carried slots would not pay)
    std::vector<int> chain(used.begin(), used.end());
    std::sort(chain.begin(), chain.end(),
              [&](int a, int b) { return position(loop.body, a) < position(loop.body, b); });
    // Each step: v(i) - v(i - 1) = A + B c.
    std::vector<std::pair<Poly, Poly>> steps;
    for (size_t i = 1; i < chain.size(); ++i) {
      const Quad &a = *sc.memo.at(chain[i - 1]), &b = *sc.memo.at(chain[i]);
      Poly diff;
      try {
        diff = b.num * Poly(a.den) - a.num * Poly(b.den);
      } catch (const std::exception&) { // (a coefficient overflows i64)
        return false;
      }
      int64_t den = a.den * b.den, g = den;
      for (const auto& [m, coef] : diff.terms())
        g = std::gcd(g, coef);
      if (g > 1) diff = divideCoefficients(diff, g);
      if (den / g != 1 || degreeIn(diff, kIndex) > 1) return false;
      steps.emplace_back(coefficient(diff, 0), coefficient(diff, 1));
    }
    begin(loop, pre);
    if (carried) carry(loop, chain[0], sc);
    Body head;                 // B c, once for each B
    std::map<int, int> scaled; // B's value -> B c
    int firstStep = -1;        // the first step's value, in the body
    for (size_t i = 1; i < chain.size(); ++i) {
      Body def;
      auto stmt = [&](Body& into, Op o, std::vector<int> args, int result = -1) {
        Stmt st = scalarStmt(o, std::move(args), loc_);
        st.in.result = result >= 0 ? result : f_.src.newValue({DType::I64, {}});
        into.push_back(st);
        return st.in.result;
      };
      // A step that differs from the first by a literal (the columns 8 c + l: d - 2 - 8 c - l)
      // is the first plus that literal: one value kept across the body instead of one A per
      // step (which LLVM hoists out of the loop, into registers the loop's work needs).
      std::optional<int64_t> offset = (steps[i - 1].first - steps[0].first).constValue();
      int step = -1;
      if (i > 1 && steps[i - 1].second == steps[0].second && offset) {
        step = stmt(def, Op::Add, {firstStep, value(Poly(*offset), 1)});
      } else {
        const int a = value(steps[i - 1].first, 1), b = value(steps[i - 1].second, 1);
        step = a;
        if (auto k = known_.find(b); k == known_.end() || k->second != 0) {
          auto [it, fresh] = scaled.try_emplace(b, -1);
          if (fresh) it->second = stmt(head, Op::Mul, {b, c});
          step = stmt(def, Op::Add, {a, it->second});
        }
        if (i == 1) firstStep = step;
      }
      stmt(def, Op::Add, {chain[i - 1], step}, chain[i]);
      size_t p = position(loop.body, chain[i]);
      loop.body.erase(loop.body.begin() + static_cast<std::ptrdiff_t>(p));
      loop.body.insert(loop.body.begin() + static_cast<std::ptrdiff_t>(p), def.begin(), def.end());
    }
    loop.body.insert(loop.body.begin(), head.begin(), head.end());
    removeDead(loop);
    dropUnused(pre, loop);
    return true;
  }

  /// Drops the preamble's pure integer statements that neither it nor the loop reads (the
  /// series' last values, which only entry checks use).
  void dropUnused(Body& pre, const Stmt& loop) const {
    for (bool again = true; again;) {
      again = false;
      std::set<int> read;
      auto note = [&](const Stmt& s) {
        for (int a : s.in.args)
          read.insert(a);
        for (int v : s.indices)
          read.insert(v);
        for (int v : {s.yield, s.elseYield, s.buffer})
          read.insert(v);
      };
      forEachStmt(pre, note);
      note(loop);
      forEachStmt(loop.body, note);
      for (size_t p = pre.size(); p-- > 0;) {
        const Stmt& s = pre[p];
        // (A division by a literal of the preamble's own cannot fail either.)
        auto k = s.in.op == Op::Div ? known_.find(s.in.args[1]) : known_.end();
        const bool divides = k != known_.end() && k->second != 0;
        if (s.kind != Stmt::Scalar || s.in.result < 0 || read.count(s.in.result) ||
            (!pure(s.in) && !divides))
          continue;
        pre.erase(pre.begin() + static_cast<std::ptrdiff_t>(p));
        again = true;
      }
    }
  }

  /// The coefficient of c^power in p (a polynomial over the invariants).
  static Poly coefficient(const Poly& p, int power) {
    Poly r;
    for (const auto& [m, coef] : p.terms()) {
      if (std::count(m.begin(), m.end(), kIndex) != power) continue;
      Poly t(coef);
      for (const auto& n : m)
        if (n != kIndex) t = t * Poly::var(n);
      r = r + t;
    }
    return r;
  }

  bool rewrite(Stmt& loop, Body& pre) {
    Scope sc;
    if (!scope(loop, sc)) return false;

    // Accesses at the body's top level that the entry checks prove.
    std::vector<size_t> proven;
    std::vector<Check> checks;
    std::vector<int> carried; // subscripts worth carrying, in order of definition
    for (size_t p = 0; p < loop.body.size(); ++p) {
      const Stmt& s = loop.body[p];
      if (s.kind != Stmt::Scalar) continue;
      const ir::Instr& in = s.in;
      if (in.op != Op::Load && in.op != Op::BufStore && in.op != Op::BufAdd) continue;
      const ir::Type& t = f_.src.types[in.args[0]];
      size_t n = in.op == Op::Load ? in.args.size() - 1 : in.args.size() - 2;
      if (t.rank() == 0 || n != t.shape.size()) continue;
      std::vector<Check> mine;
      bool ok = true;
      for (size_t k = 0; k < n && ok; ++k) {
        int sub = in.args[1 + k];
        auto q = quad(sub, sc);
        if (q && q->degree() > 0 && q->costly && sc.def.count(sub) &&
            std::find(carried.begin(), carried.end(), sub) == carried.end())
          carried.push_back(sub);
        if (in.checked || provenByExtent(sub, t.shape[k])) continue;
        if (!q || boundInside(t.shape[k], sc) || sc.inside.count(in.args[0]))
          ok = false;
        else
          mine.push_back({*q, t.shape[k]});
      }
      if (in.checked || !ok) continue;
      proven.push_back(p);
      checks.insert(checks.end(), mine.begin(), mine.end());
    }
    if (proven.empty() && carried.empty()) return false;
    std::sort(carried.begin(), carried.end(),
              [&](int a, int b) { return position(loop.body, a) < position(loop.body, b); });

    begin(loop, pre);
    if (checks.empty()) { // (proven by extents alone)
      for (size_t p : proven)
        loop.body[p].in.checked = true;
      proven.clear();
    }

    // The entry checks: ok = n <= 0 or every check holds.
    int ok = -1;
    if (!proven.empty()) {
      std::vector<int> all;
      std::set<std::string> seen;
      for (const Check& c : checks) {
        if (!seen.insert(key(c.q) + " < " + c.dim.str()).second) continue;
        const Series& sr = series(c.q);
        inRange(sr.v0, c.dim, all);
        if (c.q.degree() == 0) continue;
        inRange(sr.last, c.dim, all);
        // No wrapping: the sequence the loop computes, V(0) + D(0) c + D2 c (c - 1) / 2, then
        // never leaves i64, so V(0) and V(n - 1) in range and monotone say every V(c) is.
        bool quadratic = c.q.degree() == 2;
        below(name(kTrips), quadratic ? kQuadTrips : kAffineTrips, all, true);
        below(sr.d0, quadratic ? kQuadStep : kAffineStep, all);
        if (!quadratic) continue;
        below(sr.d2, kQuadStep2, all);
        // Monotone: D(0) and D(n - 2) of one sign (or at most one iteration).
        int zero = literal(0);
        auto sign = [&](Op o) {
          return op(Op::And, DType::Bool,
                    {op(o, DType::Bool, {sr.d0, zero}), op(o, DType::Bool, {sr.dlast, zero})});
        };
        // With D2 a literal the order of D(0) and D(n - 2) is known: one comparison each way.
        int mono;
        if (auto k = known_.find(sr.d2); k != known_.end())
          mono = k->second <= 0 ? op(Op::Or, DType::Bool,
                                     {op(Op::Ge, DType::Bool, {sr.dlast, zero}),
                                      op(Op::Le, DType::Bool, {sr.d0, zero})})
                                : op(Op::Or, DType::Bool,
                                     {op(Op::Ge, DType::Bool, {sr.d0, zero}),
                                      op(Op::Le, DType::Bool, {sr.dlast, zero})});
        else
          mono = op(Op::Or, DType::Bool, {sign(Op::Ge), sign(Op::Le)});
        int few = op(Op::Le, DType::Bool, {name(kTrips), literal(1)});
        all.push_back(op(Op::Or, DType::Bool, {mono, few}));
      }
      int every = -1;
      for (int c : all)
        every = every < 0 ? c : op(Op::And, DType::Bool, {every, c});
      if (every >= 0)
        ok = op(Op::Or, DType::Bool, {op(Op::Le, DType::Bool, {name(kTrips), literal(0)}), every});
      if (ok < 0) { // (every check is known to hold)
        for (size_t p : proven)
          loop.body[p].in.checked = true;
        proven.clear();
      }
    }

    // The fast copy: a clone when the original stays as the fallback, else the loop itself.
    Stmt fast;
    if (ok >= 0) {
      std::map<int, int> rename;
      fast = clone(loop, rename);
      for (size_t p : proven)
        fast.body[p].in.checked = true;
      for (int& v : carried)
        v = rename.at(v);
    } else {
      fast = std::move(loop);
    }
    bool state = false;
    for (int v : carried)
      state = carry(fast, v, sc) || state;
    if (state) {
      fast.loopKind = LoopKind::Sequential; // (an iteration reads the slots the last wrote)
      fast.vectorisable = false;
    }
    if (!carried.empty()) removeDead(fast);
    if (ok < 0) {
      loop = std::move(fast);
      return true;
    }
    // if ok { fast } else { the original }, yielding the loop's value if it has one.
    Stmt branch;
    branch.kind = Stmt::If;
    branch.in.op = Op::If;
    branch.in.args = {ok};
    branch.in.loc = loc_;
    if (loop.in.result >= 0 && loop.in.op != Op::Comp) {
      int r = loop.in.result;
      branch.in.result = r;
      fast.in.result = f_.src.newValue(f_.src.types[r]);
      loop.in.result = f_.src.newValue(f_.src.types[r]);
      branch.yield = fast.in.result;
      branch.elseYield = loop.in.result;
    }
    branch.body.push_back(std::move(fast));
    loop.cold = true;
    branch.orelse.push_back(std::move(loop));
    loop = std::move(branch);
    return true;
  }

  static size_t position(const Body& b, int v) {
    for (size_t p = 0; p < b.size(); ++p)
      if (b[p].in.result == v) return p;
    return b.size();
  }

  /// Replaces the definition of v (a top-level statement of the loop's body) by a load of a
  /// slot carried across iterations (see the file comment); an affine v by V(0) + D c, from
  /// values computed before the loop, which carries nothing. Returns whether it carries.
  bool carry(Stmt& loop, int v, Scope& sc) {
    size_t p = position(loop.body, v);
    // (a clone renamed v; the polynomial is memoised by the original's id)
    auto o = original_.find(v);
    const Quad q = *sc.memo.at(o == original_.end() ? v : o->second);
    const Series sr = series(q);
    Body step;
    auto add = [&](int result, Op o, std::vector<int> args) {
      Stmt s = scalarStmt(o, std::move(args), loc_);
      s.in.result = result;
      step.push_back(std::move(s));
    };
    auto replace = [&] {
      loop.body.erase(loop.body.begin() + static_cast<std::ptrdiff_t>(p));
      loop.body.insert(loop.body.begin() + static_cast<std::ptrdiff_t>(p), step.begin(),
                       step.end());
    };
    if (q.degree() == 1) {
      // The iterations stay independent: a parallel loop stays parallel, and vectorises.
      int c = loop.indices[0];
      auto unit = known_.find(sr.d0);
      if (unit == known_.end() || unit->second != 1) {
        c = f_.src.newValue({DType::I64, {}});
        add(c, Op::Mul, {loop.indices[0], sr.d0});
      }
      add(v, Op::Add, {sr.v0, c});
      replace();
      return false;
    }
    int value = slot(sr.v0), diff = q.degree() == 2 ? slot(sr.d0) : -1;
    add(v, Op::Load, {value});
    int d = sr.d0;
    if (diff >= 0) add(d = f_.src.newValue({DType::I64, {}}), Op::Load, {diff});
    int next = f_.src.newValue({DType::I64, {}});
    add(next, Op::Add, {v, d});
    add(-1, Op::BufStore, {value, next});
    if (diff >= 0) {
      int dn = f_.src.newValue({DType::I64, {}});
      add(dn, Op::Add, {d, sr.d2});
      add(-1, Op::BufStore, {diff, dn});
    }
    replace();
    return true;
  }

  /// A rank-0 i64 slot holding `init` (before the loop).
  int slot(int init) {
    int s = f_.src.newValue({DType::I64, {}});
    Stmt z = scalarStmt(Op::BufZeros, {}, loc_);
    z.in.result = s;
    pre_->push_back(z);
    pre_->push_back(scalarStmt(Op::BufStore, {s, init}, loc_));
    return s;
  }

  /// Drops pure integer statements of the body's top level that nothing uses any more.
  void removeDead(Stmt& loop) {
    for (bool again = true; again;) {
      again = false;
      std::map<int, int> uses;
      std::function<void(const Body&)> count = [&](const Body& b) {
        for (const Stmt& s : b) {
          for (int a : s.in.args)
            ++uses[a];
          for (int i : s.indices)
            ++uses[i];
          if (s.yield >= 0) ++uses[s.yield];
          if (s.elseYield >= 0) ++uses[s.elseYield];
          if (s.buffer >= 0) ++uses[s.buffer];
          count(s.body);
          count(s.orelse);
        }
      };
      count(loop.body);
      if (loop.yield >= 0) ++uses[loop.yield];
      for (size_t p = loop.body.size(); p-- > 0;) {
        const Stmt& s = loop.body[p];
        if (s.kind != Stmt::Scalar || s.in.result < 0 || uses[s.in.result] || !pure(s.in)) continue;
        loop.body.erase(loop.body.begin() + static_cast<std::ptrdiff_t>(p));
        again = true;
      }
    }
  }

  bool pure(const ir::Instr& in) const {
    if (!isI64(in.result)) return false;
    switch (in.op) {
    case Op::Const:
    case Op::Size:
    case Op::Add:
    case Op::Sub:
    case Op::Mul:
    case Op::Neg: return true;
    case Op::Div:
    case Op::Mod: {
      auto c = constants_.find(in.args[1]);
      return c != constants_.end() && c->second != 0;
    }
    default: return false;
    }
  }

  /// A copy of the loop with every value it defines renamed.
  Stmt clone(const Stmt& loop, std::map<int, int>& rename) {
    freshDefinitions(f_, loop.body, rename);
    for (int i : loop.indices)
      freshValue(f_, i, rename);
    Stmt c = loop;
    renameValues(c.body, rename);
    for (int& i : c.indices)
      if (auto it = rename.find(i); it != rename.end()) i = it->second;
    if (c.yield >= 0)
      if (auto it = rename.find(c.yield); it != rename.end()) c.yield = it->second;
    for (const auto& [from, to] : rename) {
      original_[to] = from;
      if (auto b = f_.buffers.find(from); b != f_.buffers.end()) f_.buffers[to] = b->second;
    }
    return c;
  }

  // --- emitting ----------------------------------------------------------------------------
  /// Values before the loop of one carried or checked polynomial: V(0), D(0), D2 (degree 2),
  /// V(n - 1) and D(n - 2) = D(0) + D2 (n - 2) (see the file comment).
  struct Series {
    int v0 = -1, d0 = -1, d2 = -1, last = -1, dlast = -1;
  };

  static std::string key(const Quad& q) { return q.num.str() + " / " + std::to_string(q.den); }

  const Series& series(const Quad& q) {
    auto [it, fresh] = series_.try_emplace(key(q));
    Series& s = it->second;
    if (!fresh) return s;
    // Each as a polynomial over the invariants first: the differences are simpler than the
    // values they are differences of (the GMM's D2 is the literal -1).
    auto p = [&](const Poly& c) { return q.num.substitute({{kIndex, c}}); };
    Poly n = Poly::var(kTrips);
    s.v0 = value(p(0), q.den);
    if (q.degree() == 0) return s;
    Poly d0 = p(1) - p(0);
    s.d0 = value(d0, q.den);
    // V(n - 1) = V(0) + D(0) (n - 1) + D2 (n - 1) (n - 2) / 2: the sequence the loop computes
    // (the bounds on n, D(0) and D2 keep every term in i64).
    int n1 = value(n - 1, 1);
    s.last = op(Op::Add, DType::I64, {s.v0, op(Op::Mul, DType::I64, {s.d0, n1})});
    if (q.degree() < 2) return s;
    Poly d2 = p(2) - p(1) * Poly(2) + p(0);
    s.d2 = value(d2, q.den);
    s.last = op(Op::Add, DType::I64,
                {s.last, op(Op::Mul, DType::I64, {s.d2, value((n - 1) * (n - 2), 2)})});
    s.dlast = op(Op::Add, DType::I64, {s.d0, op(Op::Mul, DType::I64, {s.d2, value(n - 2, 1)})});
    return s;
  }

  /// Appends to `all` the conditions for -bound < x < bound (x < bound for a count, where
  /// x <= 0 runs nothing) that are not known to hold.
  void below(int x, int64_t bound, std::vector<int>& all, bool count = false) {
    auto k = known_.find(x);
    if (k != known_.end() && k->second > -bound && k->second < bound) return;
    if (!count) all.push_back(op(Op::Gt, DType::Bool, {x, literal(-bound)}));
    all.push_back(op(Op::Lt, DType::Bool, {x, literal(bound)}));
  }

  /// Appends to `all` the conditions for 0 <= x < dim that are not known to hold.
  void inRange(int x, const Poly& dim, std::vector<int>& all) {
    auto k = known_.find(x);
    if (k == known_.end() || k->second < 0) all.push_back(op(Op::Le, DType::Bool, {literal(0), x}));
    if (k == known_.end() || !(dim - Poly(k->second + 1)).provablyNonNegative()) {
      auto [it, fresh] = polys_.try_emplace("size " + dim.str(), -1);
      if (fresh) it->second = emit(Op::Size, DType::I64, {}, 0, dim);
      all.push_back(op(Op::Lt, DType::Bool, {x, it->second}));
    }
  }

  int emit(Op o, DType t, std::vector<int> args, int64_t ival = 0, const Poly& poly = Poly()) {
    Stmt s = scalarStmt(o, std::move(args), loc_);
    s.in.ival = ival;
    s.in.poly = poly;
    s.in.result = f_.src.newValue({t, {}});
    pre_->push_back(s);
    return s.in.result;
  }

  /// An operation before the loop; integer arithmetic on literals is folded.
  int op(Op o, DType t, std::vector<int> args) {
    if (t == DType::I64 && args.size() == 2 && known_.count(args[0]) && known_.count(args[1])) {
      int64_t a = known_[args[0]], b = known_[args[1]];
      uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
      if (o == Op::Add) return literal(static_cast<int64_t>(ua + ub));
      if (o == Op::Sub) return literal(static_cast<int64_t>(ua - ub));
      if (o == Op::Mul) return literal(static_cast<int64_t>(ua * ub));
    }
    auto [it, fresh] = ops_.try_emplace({static_cast<int>(o), args}, -1);
    if (fresh) it->second = emit(o, t, std::move(args));
    return it->second;
  }

  int literal(int64_t c) {
    auto [it, fresh] = literals_.try_emplace(c, -1);
    if (fresh) {
      it->second = emit(Op::Const, DType::I64, {}, c);
      known_[it->second] = c;
    }
    return it->second;
  }

  /// p / den (an integer: exact), p a polynomial in sizes, invariant values and kTrips,
  /// computed before the loop.
  int value(Poly p, int64_t den) {
    std::string k = p.str() + " / " + std::to_string(den);
    if (auto it = polys_.find(k); it != polys_.end()) return it->second;
    int64_t g = den; // (lowest terms: often no division is left)
    for (const auto& [m, coef] : p.terms())
      g = std::gcd(g, coef);
    den /= g;
    if (g > 1) p = divideCoefficients(p, g);
    int v = -1;
    if (auto cv = p.constValue()) {
      v = literal(*cv / den); // (exact: p / den is an integer)
    } else {
      for (const auto& [m, coef] : p.terms()) {
        int t = -1;
        for (const auto& n : m)
          t = t < 0 ? name(n) : op(Op::Mul, DType::I64, {t, name(n)});
        if (t < 0)
          t = literal(coef);
        else if (coef != 1)
          t = op(Op::Mul, DType::I64, {literal(coef), t});
        v = v < 0 ? t : op(Op::Add, DType::I64, {v, t});
      }
      if (den != 1) v = op(Op::Div, DType::I64, {v, literal(den)});
    }
    polys_[k] = v;
    return v;
  }

  int name(const std::string& n) {
    if (auto it = names_.find(n); it != names_.end()) return it->second;
    int v = n[0] == '%' ? std::stoi(n.substr(1))
                        : emit(Op::Size, DType::I64, {}, 0, n == kTrips ? trips_ : Poly::var(n));
    names_[n] = v;
    return v;
  }

  Function& f_;
  const bool expanding_;
  int count_ = 0;
  std::map<int, int64_t> constants_; // integer literals
  std::map<int, Poly> extent_;       // index of a loop around -> its extent
  std::map<int, int> original_;      // a clone's value -> the value it copies
  // While one loop is rewritten: where its preamble goes, and what the preamble has computed.
  Body* pre_ = nullptr;
  SrcRange loc_;
  Poly trips_; // its extent (kTrips)
  std::map<std::string, int> names_, polys_;
  std::map<int64_t, int> literals_;
  std::map<std::pair<int, std::vector<int>>, int> ops_; // (op, args) -> value: no duplicates
  std::map<int, int64_t> known_;                        // preamble value -> its literal value
  std::map<std::string, Series> series_;
};

} // namespace

int reduceStrength(Function& f) {
  return Reducer(f, false).run();
}

int expandQuadratics(Function& f) {
  return Reducer(f, true).run();
}

} // namespace slope::lower
