#include "compiler/simplify/factor.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>

// What must hold for a nest `for [i, rest...] { body }` (a top-level `for` of two or more
// indices, not a user loop with state) and a product p of its body (defined directly in it):
// - every scatter rewritten is `B[s] += p * q` or `B[s] += -(p * q)` (either operand order),
//   in the body or in `for`s nested in it (not under an `if` or inside an expression), into a
//   buffer B the function made before the nest and the nest never reads or stores;
// - p depends on i and q does not; nor do the subscripts s;
// - what the moved scatters need (q, s, the extents of the loops around them, as a slice of
//   the body) uses nothing of i, reads no buffer the nest writes and makes no buffer: so it
//   computes the same values after the nest as in any of its iterations, and the loops around
//   the scatter run the same trips for every i;
// - at least one of the scatters is in a nested loop (otherwise one add into G replaces one
//   add into B, and nothing is saved).
// The index factored out is the nest's first (the data points, in the nests reverse mode
// makes): G then has the extents of the others, so it is as large as the parameters it feeds,
// not as the data.

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;

/// Positions of an instruction: in the nest's body, then in the bodies of nested `for`s.
using Path = std::vector<size_t>;

/// The block that holds the instruction at `path` under `root`.
Block& blockAt(Block& root, const Path& path) {
  Block* b = &root;
  for (size_t d = 0; d + 1 < path.size(); ++d)
    b = &b->body[path[d]].regions[0];
  return *b;
}

/// The values and size names that depend on one index within a block.
struct Deps {
  std::set<int> values;
  std::set<std::string> sizes;

  bool names(const Poly& p) const {
    for (const std::string& n : p.names())
      if (sizes.count(n)) return true;
    return false;
  }
  /// Adds what depends on `values` in b; returns whether anything in b does.
  bool walk(const Block& b) {
    bool any = false;
    for (const Instr& in : b.body) {
      bool d = false;
      for (int a : in.args)
        d |= values.count(a) > 0;
      if (in.op == Op::Size) d |= names(in.poly);
      bool extents = false;
      for (const Poly& e : in.extents)
        extents |= names(e);
      for (const Block& r : in.regions) {
        if (extents)
          for (int a : r.args)
            values.insert(a);
        d |= walk(r);
      }
      d |= extents;
      if (!d) continue;
      any = true;
      if (in.result >= 0) values.insert(in.result);
      if (in.op == Op::SizeDef) sizes.insert(in.name);
    }
    for (int y : b.yields)
      any |= values.count(y) > 0;
    return any;
  }
};

/// One scatter `B[s] += [-](p * q)` of the nest.
struct Scatter {
  Path path;
  int p = -1, q = -1;
  bool neg = false;    // the value is -(p * q)
  bool pFirst = false; // the product is p * q (else q * p)
};

struct Nest {
  const ir::Function& f;
  const Block& body;
  Deps dep;                              // on the nest's first index
  std::map<int, const Instr*> defs;      // values defined in the nest
  std::set<int> top;                     // values defined directly in the body
  std::set<int> written, loaded, stored; // buffers the nest adds to or stores into; reads
  const std::set<int>& callBuffers;      // buf.zeros of the function before the nest
  std::vector<Scatter> scatters;

  Nest(const ir::Function& fn, const Block& b, const std::set<int>& bufs)
      : f(fn), body(b), callBuffers(bufs) {
    dep.values.insert(b.args[0]);
    dep.walk(b);
    ir::forEachInstr(b, [&](const Instr& in) {
      if (in.result >= 0) defs[in.result] = &in;
      if (in.op == Op::BufAdd || in.op == Op::BufStore) written.insert(in.args[0]);
      if (in.op == Op::BufStore) stored.insert(in.args[0]);
      if (in.op == Op::Load) loaded.insert(in.args[0]);
    });
    for (const Instr& in : b.body)
      if (in.result >= 0) top.insert(in.result);
    Path path;
    collect(b, path);
  }

  const Instr* def(int v) const {
    auto it = defs.find(v);
    return it == defs.end() ? nullptr : it->second;
  }

  void collect(const Block& b, Path& path) {
    for (size_t k = 0; k < b.body.size(); ++k) {
      const Instr& in = b.body[k];
      path.push_back(k);
      if (in.op == Op::For && in.ival == 0 && in.regions.size() == 1)
        collect(in.regions[0], path);
      else if (in.op == Op::BufAdd)
        match(in, path);
      path.pop_back();
    }
  }

  void match(const Instr& add, const Path& path) {
    int buf = add.args[0];
    if (!callBuffers.count(buf) || loaded.count(buf) || stored.count(buf)) return;
    for (size_t k = 1; k + 1 < add.args.size(); ++k)
      if (dep.values.count(add.args[k])) return;
    Scatter s;
    s.path = path;
    const Instr* d = def(add.args.back());
    if (d && d->op == Op::Neg) {
      s.neg = true;
      d = def(d->args[0]);
    }
    if (!d || d->op != Op::Mul || !isFloat(f.types[d->result].dtype)) return;
    bool a = dep.values.count(d->args[0]) > 0, b = dep.values.count(d->args[1]) > 0;
    if (a == b) return;
    s.pFirst = a;
    s.p = a ? d->args[0] : d->args[1];
    s.q = a ? d->args[1] : d->args[0];
    if (!top.count(s.p)) return;
    scatters.push_back(s);
  }
};

/// Drops from b every effect but the adds of `keep` values, and every value and loop those
/// adds do not need (walking backwards: `live` holds the values needed below).
void prune(Block& b, const std::set<int>& keep, std::set<int>& live,
           std::set<std::string>& liveSizes) {
  auto needPoly = [&](const Poly& p) {
    for (const std::string& n : p.names())
      liveSizes.insert(n);
  };
  std::vector<Instr> kept;
  for (auto it = b.body.rbegin(); it != b.body.rend(); ++it) {
    Instr& in = *it;
    bool k = false;
    switch (in.op) {
    case Op::BufAdd: k = keep.count(in.args.back()) > 0; break;
    case Op::BufStore: break;
    case Op::For:
      prune(in.regions[0], keep, live, liveSizes);
      k = !in.regions[0].body.empty();
      break;
    case Op::SizeDef: k = liveSizes.count(in.name) > 0; break;
    default: k = in.result >= 0 && live.count(in.result) > 0; break;
    }
    if (!k) continue;
    for (int a : in.args)
      live.insert(a);
    for (const Poly& e : in.extents)
      needPoly(e);
    if (in.op == Op::Size) needPoly(in.poly);
    if (in.op != Op::For)
      for (const Block& r : in.regions)
        ir::forEachInstr(r, [&](const Instr& i) {
          for (int a : i.args)
            live.insert(a);
          for (const Poly& e : i.extents)
            needPoly(e);
          if (i.op == Op::Size) needPoly(i.poly);
        });
    kept.push_back(std::move(in));
  }
  std::reverse(kept.begin(), kept.end());
  b.body = std::move(kept);
}

/// Whether the moved slice c can run after the nest: it uses nothing of the factored index
/// `index`, makes no buffer and reads none the nest writes (or made).
bool movable(const Block& c, int index, const std::set<int>& written) {
  std::set<int> made = ir::definedIn(c);
  bool ok = true;
  ir::forEachInstr(c, [&](const Instr& in) {
    for (int a : in.args)
      ok &= a != index;
    if (in.op == Op::BufZeros || in.op == Op::BufStore || in.op == Op::Custom ||
        in.op == Op::RevolveNext)
      ok = false;
    if (in.op == Op::Load && (written.count(in.args[0]) || made.count(in.args[0]))) ok = false;
  });
  return ok;
}

Instr make(Op op, int result, std::vector<int> args, SrcRange loc = {}) {
  Instr i;
  i.op = op;
  i.result = result;
  i.args = std::move(args);
  i.loc = loc;
  return i;
}

/// Rewrites the nest at f.body.body[t] for the scatters of one p; returns the number of
/// instructions inserted before it (0: not rewritten).
size_t rewrite(ir::Function& f, size_t t, std::vector<Scatter> group,
               const std::set<int>& written) {
  // Last path first: replacing one scatter then never moves another one's position.
  std::sort(group.begin(), group.end(),
            [](const Scatter& a, const Scatter& b) { return a.path > b.path; });
  const int p = group[0].p;
  const ir::Type pt = f.types[p];
  std::vector<int> map;
  Block post = ir::cloneBlock(f, f.body.body[t].regions[0], map);
  auto mapped = [&](int v) {
    return v >= 0 && v < static_cast<int>(map.size()) && map[v] >= 0 ? map[v] : v;
  };
  const int g = f.newValue(pt);
  std::set<int> keep;
  for (const Scatter& s : group) {
    Block& b = blockAt(post, s.path);
    auto at = b.body.begin() + static_cast<std::ptrdiff_t>(s.path.back());
    Instr add = *at;
    std::vector<Instr> ins;
    int q = mapped(s.q);
    ins.push_back(make(Op::Mul, f.newValue(pt),
                       s.pFirst ? std::vector<int>{g, q} : std::vector<int>{q, g}, add.loc));
    if (s.neg) ins.push_back(make(Op::Neg, f.newValue(pt), {ins.back().result}, add.loc));
    add.args.back() = ins.back().result;
    keep.insert(add.args.back());
    ins.push_back(std::move(add));
    at = b.body.erase(at);
    b.body.insert(at, ins.begin(), ins.end());
  }
  std::set<int> live;
  std::set<std::string> liveSizes;
  prune(post, keep, live, liveSizes);
  if (!movable(post, post.args[0], written)) return 0;

  // The slice's loops get size names of their own (the nest keeps its size.defs).
  std::set<std::string> taken;
  ir::forEachInstr(f.body, [&](const Instr& in) {
    if (in.op == Op::SizeDef) taken.insert(in.name);
  });
  std::map<std::string, Poly> rename;
  std::map<std::string, std::string> newName;
  ir::forEachInstr(post, [&](const Instr& in) {
    if (in.op != Op::SizeDef) return;
    std::string n = in.name + "f";
    while (taken.count(n))
      n += "f";
    taken.insert(n);
    newName[in.name] = n;
    rename[in.name] = Poly::var(n);
  });
  std::function<void(Block&)> renameIn = [&](Block& b) {
    for (Instr& in : b.body) {
      if (in.op == Op::SizeDef) in.name = newName.at(in.name);
      if (in.op == Op::Size) in.poly = in.poly.substitute(rename);
      for (Poly& e : in.extents)
        e = e.substitute(rename);
      if (in.result >= 0)
        for (Poly& d : f.types[in.result].shape)
          d = d.substitute(rename);
      for (Block& r : in.regions)
        renameIn(r);
    }
  };
  if (!rename.empty()) renameIn(post);

  // G, and its adds in the nest in place of the scatters.
  Instr& nest = f.body.body[t];
  std::vector<Poly> rest(nest.extents.begin() + 1, nest.extents.end());
  Instr zeros = make(Op::BufZeros, f.newValue(ir::Type{pt.dtype, rest}), {});
  const int gbuf = zeros.result;
  Block& body = nest.regions[0];
  for (const Scatter& s : group) { // (still last path first)
    Block& b = blockAt(body, s.path);
    b.body.erase(b.body.begin() + static_cast<std::ptrdiff_t>(s.path.back()));
  }
  auto pDef = std::find_if(body.body.begin(), body.body.end(),
                           [&](const Instr& in) { return in.result == p; });
  std::vector<int> gIdx(body.args.begin() + 1, body.args.end());
  Instr gAdd = make(Op::BufAdd, -1, {gbuf}, pDef->loc);
  gAdd.args.insert(gAdd.args.end(), gIdx.begin(), gIdx.end());
  gAdd.args.push_back(p);
  gAdd.checked = true; // the nest's own indices, in G's extents
  body.body.insert(pDef + 1, std::move(gAdd));

  // The moved scatters, after the nest, reading G.
  post.args.erase(post.args.begin());
  Instr load = make(Op::Load, g, {gbuf});
  load.args.insert(load.args.end(), post.args.begin(), post.args.end());
  load.checked = true;
  post.body.insert(post.body.begin(), std::move(load));
  Instr loop;
  loop.op = Op::For;
  loop.extents = rest;
  loop.regions.push_back(std::move(post));
  std::vector<Instr> after;
  const Poly n = nest.extents[0];
  if ((n - Poly(1)).provablyNonNegative()) { // (a size the user gave is at least 1)
    after.push_back(std::move(loop));
  } else { // if n > 0: the slice's checks run only where the nest's did
    Instr size = make(Op::Size, f.newValue(ir::Type{DType::I64, {}}), {});
    size.poly = n;
    Instr zero = make(Op::Const, f.newValue(ir::Type{DType::I64, {}}), {});
    Instr some = make(Op::Gt, f.newValue(ir::Type{DType::Bool, {}}), {size.result, zero.result});
    Instr cond = make(Op::If, -1, {some.result});
    Block then;
    then.body.push_back(std::move(loop));
    cond.regions.push_back(std::move(then));
    cond.regions.emplace_back();
    after.push_back(std::move(size));
    after.push_back(std::move(zero));
    after.push_back(std::move(some));
    after.push_back(std::move(cond));
  }
  auto at = f.body.body.begin() + static_cast<std::ptrdiff_t>(t);
  at = f.body.body.insert(at + 1, std::make_move_iterator(after.begin()),
                          std::make_move_iterator(after.end()));
  f.body.body.insert(f.body.body.begin() + static_cast<std::ptrdiff_t>(t), std::move(zeros));
  return 1;
}

/// One rewrite of the nest at t, if some p qualifies; returns the instructions inserted before
/// it.
size_t factorOne(ir::Function& f, size_t t, const std::set<int>& callBuffers) {
  const Instr& nest = f.body.body[t];
  if (nest.op != Op::For || nest.ival != 0 || nest.regions.size() != 1 || nest.extents.size() < 2)
    return 0;
  Nest n(f, nest.regions[0], callBuffers);
  std::map<int, std::vector<Scatter>> byP;
  for (const Scatter& s : n.scatters)
    byP[s.p].push_back(s);
  for (auto& [p, group] : byP) {
    bool nested =
        std::any_of(group.begin(), group.end(), [](const Scatter& s) { return s.path.size() > 1; });
    if (!nested) continue;
    if (size_t before = rewrite(f, t, group, n.written)) return before;
  }
  return 0;
}

} // namespace

bool factorScatters(ir::Function& f) {
  bool changed = false;
  std::set<int> callBuffers;
  for (size_t t = 0; t < f.body.body.size(); ++t) {
    const Instr& in = f.body.body[t];
    if (in.op == Op::BufZeros) callBuffers.insert(in.result);
    // Each rewrite takes one p's scatters out of the nest; try again for the next p.
    while (size_t before = factorOne(f, t, callBuffers)) {
      changed = true;
      t += before;
    }
  }
  return changed;
}

} // namespace slope
