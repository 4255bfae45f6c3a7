// Tiles of the first index of a loop nest (compiler/lower/tile.hpp).
#include "compiler/lower/tile.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

namespace slope::lower {
namespace {

using ir::Op;

/// What a nest's body computes from the nest's first index i: which values and sizes depend
/// on it, whether a statement that can fail depends on it, and whether a loop of the body
/// reads data that is the same for every i.
class Dependence {
public:
  Dependence(const Function& f, const Stmt& nest, const std::map<int, int64_t>& literals)
      : f_(f), literals_(literals) {
    dep_.insert(nest.indices[0]);
    for (size_t k = 0; k < nest.indices.size(); ++k)
      extent_.emplace(nest.indices[k], nest.extents[k]);
    // Memory the body makes or writes: a load from it may see what an earlier statement
    // computed from i, so it counts as depending on i (without tracking which element).
    forEachStmt(nest.body, [&](const Stmt& s) {
      if (s.kind == Stmt::Alloc || s.kind == Stmt::Stack) written_.insert(s.in.result);
      if (auto a = accessOf(s); a && a->writes()) written_.insert(a->buffer);
    });
    walk(nest.body, false, 0);
  }
  bool failsWithIndex() const { return failsWithIndex_; }
  /// The buffers that loops two deep in the body read at elements that do not depend on i.
  const std::set<int>& reads() const { return reads_; }

private:
  bool any(const std::vector<int>& ids) const {
    return std::any_of(ids.begin(), ids.end(), [&](int v) { return dep_.count(v) > 0; });
  }
  bool mentions(const Poly& p) const {
    for (const auto& n : p.names())
      if (sizes_.count(n)) return true;
    return false;
  }
  void define(int v, bool d) {
    if (d && v >= 0) dep_.insert(v);
  }

  /// `underIndex`: whether reaching these statements depends on i (a branch on a value of i,
  /// a loop whose extent is a size computed from i). `depth`: loops of the body around them.
  void walk(const Body& b, bool underIndex, int depth) {
    for (const Stmt& s : b)
      stmt(s, underIndex, depth);
  }

  void stmt(const Stmt& s, bool underIndex, int depth) {
    switch (s.kind) {
    case Stmt::Scalar: {
      bool d = any(s.in.args) || (s.in.op == Op::Size && mentions(s.in.poly));
      const std::optional<Access> a = accessOf(s);
      if (s.in.op == Op::Load && s.in.args.size() > 1) {
        if (written_.count(s.in.args[0]))
          d = true;
        else if (!d && depth > 1)
          reads_.insert(s.in.args[0]); // (the same element for every i)
      }
      // An addition two loops deep at an element that is the same for every i reads and
      // writes it: the GMM's adjoint in column order (interchange.cpp's scatter form) adds a
      // rank-one update into component k's triangle for every point, which a tile keeps in
      // cache for its points.
      if (a && a->kind == Access::Add && depth > 1 && !a->subscripts.empty() && !any(a->subscripts))
        reads_.insert(a->buffer);
      if (s.in.op == Op::SizeDef && d) sizes_.insert(s.in.name);
      define(s.in.result, d);
      // (An access fails on its subscripts alone: not on the value a write stores.)
      // A subscript that is one of the nest's indices, within the dimension by its extent,
      // never fails (a cold copy's dx[i, c]: only c is checked).
      bool fails = a ? dep_.count(a->buffer) > 0 : d;
      for (size_t q = 0; a && q < a->subscripts.size(); ++q) {
        const int sub = a->subscripts[q];
        auto e = extent_.find(sub);
        const Poly& dim = f_.src.types[a->buffer].shape[q];
        if (e == extent_.end() || !(dim - e->second).provablyNonNegative())
          fails = fails || dep_.count(sub) > 0;
      }
      if ((fails || underIndex) && canFail(s.in, f_.src, literals_)) failsWithIndex_ = true;
      return;
    }
    case Stmt::Alloc:
    case Stmt::Stack:
    case Stmt::Store: return; // (writes: written_ has the buffer)
    case Stmt::If: {
      const bool c = dep_.count(s.in.args[0]) > 0;
      walk(s.body, underIndex || c, depth);
      walk(s.orelse, underIndex || c, depth);
      define(s.in.result, c || dep_.count(s.yield) || dep_.count(s.elseYield));
      return;
    }
    case Stmt::Loop: {
      bool e = false;
      for (const Poly& x : s.extents) {
        const bool xd = mentions(x);
        e = e || xd;
        if ((xd || underIndex) && extentCanFail(x)) failsWithIndex_ = true;
      }
      walk(s.body, underIndex || e, depth + 1);
      define(s.in.result, e || dep_.count(s.yield));
      return;
    }
    }
  }

  const Function& f_;
  const std::map<int, int64_t>& literals_; // integerLiterals(f)
  std::set<int> dep_, written_, reads_;
  std::set<std::string> sizes_;
  std::map<int, Poly> extent_; // the nest's indices
  bool failsWithIndex_ = false;
};

/// Whether a sequential nest over (i, k) gives the same results in tiles: it runs in blocks
/// (planBlocks; codegen tiles a sequential nest only within its blocks), its iterations share
/// nothing but memory (Stmt::memoryOnly), and every buffer the body writes, other than those it
/// makes, is reached at every access in the body with i at one subscript position, or with k
/// at one. Tiles swap the order of two iterations (i1, k1), (i2, k2) only when i1 < i2 and
/// k1 > k2: they differ in both indices, so they touch different elements of every such
/// buffer, and each element takes the same terms in the same order (the GMM's adjoint: its
/// additions into component k's gradient, partials by blocks of i, in order of i).
bool disjointAcrossIterations(const Stmt& nest) {
  if (nest.indices.size() != 2 || !nest.blocked || !nest.memoryOnly) return false;
  std::set<int> own; // (a buffer the body makes is each iteration's own)
  forEachStmt(nest.body, [&](const Stmt& s) {
    if (s.in.result >= 0) own.insert(s.in.result);
  });
  std::map<int, std::vector<std::vector<int>>> accesses;
  std::set<int> written;
  forEachStmt(nest.body, [&](const Stmt& s) {
    std::optional<Access> a = accessOf(s);
    if (!a || own.count(a->buffer)) return;
    accesses[a->buffer].push_back(a->subscripts);
    if (a->writes()) written.insert(a->buffer);
  });
  auto apart = [&](const std::vector<std::vector<int>>& subs) {
    for (int index : nest.indices)
      for (size_t p = 0; p < subs[0].size(); ++p)
        if (std::all_of(subs.begin(), subs.end(),
                        [&](const std::vector<int>& v) { return p < v.size() && v[p] == index; }))
          return true;
    return false;
  };
  return std::all_of(written.begin(), written.end(), [&](int b) { return apart(accesses[b]); });
}

} // namespace

/// The buffers of rank >= 3, made outside nest s, that every access in s reaches with s's
/// first two indices as its first two subscripts (Stmt::prefetchRows).
std::vector<int> rowsAtBothIndices(const Function& f, const Stmt& s) {
  std::map<int, bool> ok; // buffer -> every access so far at [i, k, ...]
  std::set<int> inside;
  forEachStmt(s.body, [&](const Stmt& t) {
    if (t.kind == Stmt::Alloc || t.kind == Stmt::Stack ||
        (t.kind == Stmt::Scalar && t.in.op == Op::BufZeros))
      inside.insert(t.in.result);
    std::optional<Access> a = accessOf(t);
    if (!a) return;
    const bool here = a->subscripts.size() >= 3 && a->subscripts[0] == s.indices[0] &&
                      a->subscripts[1] == s.indices[1];
    auto [it, fresh] = ok.try_emplace(a->buffer, here);
    if (!fresh) it->second = it->second && here;
  });
  std::vector<int> out;
  for (const auto& [b, all] : ok)
    if (all && !inside.count(b) && f.src.types[b].rank() >= 3) out.push_back(b);
  return out;
}

int tileNests(Function& f, int64_t rows) {
  int tiled = 0;
  if (rows <= 0) return 0;
  const std::map<int, int64_t> literals = integerLiterals(f);
  for (Stmt& s : f.body) {
    if (s.kind != Stmt::Loop || s.indices.size() < 2) continue;
    const bool free =
        s.loopKind == LoopKind::Parallel && (s.in.op == Op::For || s.in.op == Op::Comp);
    if (!free &&
        !(s.loopKind == LoopKind::Sequential && s.in.op == Op::For && disjointAcrossIterations(s)))
      continue;
    Dependence dep(f, s, literals);
    if (dep.reads().empty() || dep.failsWithIndex()) continue;
    s.tile = rows;
    s.prefetchRows = rowsAtBothIndices(f, s);
    ++tiled;
  }
  return tiled;
}

} // namespace slope::lower
