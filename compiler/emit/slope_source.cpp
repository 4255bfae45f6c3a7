// Gradient IR -> Slope source.
//
// Two steps. First the accumulators go: the adjoint pass writes gradients with buf.zeros /
// buf.add, which the language has no words for, so `functionalize` rewrites each accumulator
// as the sum of its contributions: an add in straight-line code is a term; the adds a `for`
// makes are a reduction over its indices (a comprehension over the tensor's shape when the
// loop writes element i at index i, a masked sum otherwise); the adds an `if` makes are an if
// expression. The result is pure IR, which the simplifier tidies. Then `print` writes it as
// Slope: a `let` for each value used more than once and for every tensor, expressions inlined
// elsewhere, comprehensions for tensor adjoints.

#include "compiler/emit/slope_source.hpp"

#include "compiler/eval/interp.hpp"
#include "compiler/ir/builder.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/support/stack.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;

struct NotPrintable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// An add to an accumulator; a reduction tape's store counts as one (ir::kTapeOnce).
bool isAdd(const Instr& in) {
  return in.op == Op::BufAdd || (in.op == Op::BufStore && in.ival == ir::kTapeOnce);
}

bool isEffect(const Instr& in) {
  return isAdd(in) || in.op == Op::For || (in.op == Op::If && in.result < 0);
}

/// Buffers that a block adds to, anywhere inside it.
void addsIn(const Block& b, std::set<int>& out) {
  ir::forEachInstr(b, [&](const Instr& i) {
    if (isAdd(i)) out.insert(i.args[0]);
  });
}

class Functionalizer {
public:
  explicit Functionalizer(const ir::Function& src) : src_(src), out_(src), b_(out_) {
    ir::forEachInstr(src.body, [&](const Instr& i) {
      if (i.op == Op::Const && src.types[i.result].dtype == DType::I64 && i.ival == 0)
        intZeros_.insert(i.result);
    });
    out_.body = Block{};
    map_.assign(src.types.size(), -1);
    for (int p : src.params)
      map_[p] = p;
  }

  ir::Function run() {
    Pass top;
    block(src_.body, top);
    std::vector<int> ys;
    for (int y : src_.body.yields)
      ys.push_back(value(y, top));
    out_.body.yields = ys;
    // Params were copied into out_.params; their Param instructions go first.
    std::vector<Instr> params;
    for (const Instr& in : src_.body.body)
      if (in.op == Op::Param) params.push_back(in);
    out_.body.body.insert(out_.body.body.begin(), params.begin(), params.end());
    return std::move(out_);
  }

private:
  struct Buf {
    std::vector<int> terms; // out values, each of the buffer's type
    int cached = -1;
  };
  /// One walk over a block: the accumulators it defines, and (for a contribution pass) the
  /// one outside accumulator whose contribution it sums.
  struct Pass {
    std::map<int, Buf> bufs;
    int target = -1;       // the outside accumulator this pass computes a term of
    std::vector<int> at;   // its element index (tensor target, masked form)
    bool identity = false; // the loop writes element i at index i (gather form)
    int sum = -1;          // the contribution so far
    Pass* outer = nullptr;
    // Gather over a loop nest: loops whose bodies are walked inline, their indices bound to
    // the comprehension's (or the enclosing sum's) indices.
    std::map<const Instr*, std::vector<int>> inlineLoops;
    // Tapes the region being rebuilt fills, as tensors computed before it (each element is
    // stored once, so element I of the tensor is the value stored at I).
    const std::map<int, int>* tapes = nullptr;
  };

  /// A loop nest that writes `buf` at indices made of its own loop indices, all adds the same
  /// way: buf[c] = sum over the nest's other indices of the adds' values at c (a gather).
  struct Nest {
    std::vector<const Instr*> loops; // outermost first, down to the loop holding the adds
    std::vector<int> bound;          // for each dimension of buf, the loop index it takes
    std::vector<int> unbound;        // the other loop indices (summed over)
    std::vector<Poly> unboundExtents;
    // Where a loop's extent is not the dimension it writes (icf[k, i] with i: D < T, proven
    // by an entry check), the elements beyond it get nothing: the loop extent, else empty.
    std::vector<std::optional<Poly>> guard;
  };
  std::optional<Nest> findNest(const Instr& top, int buf) {
    Nest n;
    const Instr* cur = &top;
    std::map<int, Poly> extentOf;
    std::vector<int> args;
    while (true) {
      n.loops.push_back(cur);
      const Block& b = cur->regions[0];
      for (size_t k = 0; k < b.args.size(); ++k) {
        extentOf[b.args[k]] = cur->extents[k];
        args.push_back(b.args[k]);
      }
      bool direct = false;
      const Instr* next = nullptr;
      for (const Instr& i : b.body) {
        if (isAdd(i) && i.args[0] == buf) {
          std::vector<int> idx(i.args.begin() + 1, i.args.end() - 1);
          if (direct && idx != n.bound) return std::nullopt;
          n.bound = idx;
          direct = true;
          continue;
        }
        if (i.regions.empty()) continue;
        std::set<int> inner;
        for (const Block& r : i.regions)
          addsIn(r, inner);
        if (!inner.count(buf)) continue;
        if (i.op != Op::For || next) return std::nullopt;
        next = &i;
      }
      if (direct && next) return std::nullopt;
      if (direct) break;
      if (!next) return std::nullopt;
      cur = next;
    }
    const ir::Type& t = src_.types[buf];
    if (n.bound.size() != t.shape.size()) return std::nullopt;
    std::set<int> seen;
    n.guard.resize(n.bound.size());
    for (size_t k = 0; k < n.bound.size(); ++k) {
      if (t.shape[k] == Poly(1) && intZeros_.count(n.bound[k])) { // a broadcast's unit extent
        n.bound[k] = -1;
        continue;
      }
      auto it = extentOf.find(n.bound[k]);
      if (it == extentOf.end() || !seen.insert(n.bound[k]).second) return std::nullopt;
      if (it->second != t.shape[k]) {
        for (const auto& s : it->second.names())
          if (s[0] == '#') return std::nullopt;
        n.guard[k] = it->second;
      }
    }
    for (int a : args)
      if (!seen.count(a)) {
        n.unbound.push_back(a);
        n.unboundExtents.push_back(extentOf[a]);
      }
    return n;
  }

  int mapped(int v) const {
    if (v < static_cast<int>(map_.size()) && map_[v] >= 0) return map_[v];
    throw NotPrintable("internal: value %" + std::to_string(v) + " not available");
  }
  Buf* findBuf(int v, Pass& p) {
    for (Pass* q = &p; q; q = q->outer) {
      auto it = q->bufs.find(v);
      if (it != q->bufs.end()) return &it->second;
    }
    return nullptr;
  }
  int value(int v, Pass& p) {
    if (Buf* b = findBuf(v, p)) return materialize(v, *b);
    return mapped(v);
  }
  int zero(const ir::Type& t) {
    if (t.rank() == 0) return b_.constant(t.dtype, 0);
    return b_.region(Op::Comp, t.shape, t,
                     [&](const std::vector<int>&) { return b_.constant(t.dtype, 0); });
  }
  int materialize(int v, Buf& b) {
    if (b.cached >= 0) return b.cached;
    const ir::Type& t = src_.types[v];
    if (b.terms.empty())
      b.cached = zero(t);
    else if (b.terms.size() == 1 || t.rank() == 0) {
      int s = b.terms[0];
      for (size_t k = 1; k < b.terms.size(); ++k)
        s = b_.binary(Op::Add, s, b.terms[k]);
      b.cached = s;
    } else {
      b.cached = b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& j) {
        int s = b_.load(b.terms[0], j, "", {}, true);
        for (size_t k = 1; k < b.terms.size(); ++k)
          s = b_.binary(Op::Add, s, b_.load(b.terms[k], j, "", {}, true));
        return s;
      });
    }
    return b.cached;
  }
  void addTerm(Buf& b, int term) {
    b.terms.push_back(term);
    b.cached = -1;
  }
  /// Accumulators read inside a region must have their value before the region starts.
  void materializeReads(const Block& r, Pass& p, const std::set<int>& written) {
    ir::forEachInstr(r, [&](const Instr& i) {
      if (i.op != Op::Load) return;
      Buf* b = findBuf(i.args[0], p);
      if (!b) return;
      if (written.count(i.args[0]))
        throw NotPrintable("a loop reads an accumulator it also adds to");
      materialize(i.args[0], *b);
    });
  }

  void contribute(int buf, const std::vector<int>& idx, int v, Pass& p) {
    if (buf == p.target) {
      int term = v;
      if (!p.at.empty()) { // masked: v where idx == at, else 0
        int cond = -1;
        for (size_t k = 0; k < idx.size(); ++k) {
          int c = b_.binary(Op::Eq, idx[k], p.at[k]);
          cond = cond < 0 ? c : b_.binary(Op::And, cond, c);
        }
        term = b_.select(cond, v, b_.constant(b_.type(v).dtype, 0));
      }
      p.sum = p.sum < 0 ? term : b_.binary(Op::Add, p.sum, term);
      return;
    }
    auto it = p.bufs.find(buf);
    if (it == p.bufs.end()) return; // an outside accumulator: another pass computes it
    const ir::Type& t = src_.types[buf];
    if (t.rank() == 0) {
      addTerm(it->second, v);
      return;
    }
    // An add at one element from straight-line code: a one-hot tensor.
    int hot = b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& j) {
      int cond = -1;
      for (size_t k = 0; k < j.size(); ++k) {
        int c = b_.binary(Op::Eq, j[k], idx[k]);
        cond = cond < 0 ? c : b_.binary(Op::And, cond, c);
      }
      return b_.select(cond, v, b_.constant(t.dtype, 0));
    });
    addTerm(it->second, hot);
  }

  /// Walks blk as a pass that sums its contributions to `target` (at element `at`, or every
  /// add's own element when `identity`), and returns that sum (zero when there is none).
  int passSum(const Block& blk, int target, const std::vector<int>& at, bool identity,
              Pass& outer) {
    Pass q;
    q.target = target;
    q.at = at;
    q.identity = identity;
    q.outer = &outer;
    block(blk, q);
    return q.sum < 0 ? b_.constant(src_.types[target].dtype, 0) : q.sum;
  }

  /// The term an effect region (`for` or effect `if`) adds to accumulator `buf`.
  int regionTerm(const Instr& in, int buf, Pass& p) {
    const ir::Type& t = src_.types[buf];
    bool isTarget = buf == p.target;
    std::vector<int> at = isTarget ? p.at : std::vector<int>{};
    if (in.op == Op::If) {
      ir::Type st = isTarget || t.rank() == 0 ? ir::Type{t.dtype, {}} : t;
      auto branch = [&](const Block& blk) {
        return [&, blk = &blk]() {
          if (st.rank() > 0) { // the branch's adds to buf, as if buf were the branch's own
            Pass q;
            q.outer = &p;
            q.bufs[buf] = Buf{};
            block(*blk, q);
            return materialize(buf, q.bufs[buf]);
          }
          return passSum(*blk, buf, at, false, p);
        };
      };
      return b_.ifElse(mapped(in.args[0]), st, branch(in.regions[0]), branch(in.regions[1]));
    }
    const Block& body = in.regions[0];
    if (isTarget || t.rank() == 0) { // a scalar: the sum over the loop
      return b_.region(Op::ReduceSum, in.extents, ir::Type{t.dtype, {}},
                       [&](const std::vector<int>& idx) {
                         for (size_t k = 0; k < idx.size(); ++k)
                           map_[body.args[k]] = idx[k];
                         return passSum(body, buf, at, false, p);
                       });
    }
    return tensorLoopTerm(&in, body, buf, p);
  }

  /// A tensor accumulator's term from a loop (or, with loop null, an if branch).
  int tensorLoopTerm(const Instr* loop, const Block& body, int buf, Pass& p) {
    const ir::Type& t = src_.types[buf];
    if (loop)
      if (auto nest = findNest(*loop, buf)) {
        // buf[c] = sum over the unbound indices of the nest's adds: a comprehension over
        // buf's shape whose body walks the nest inline.
        return b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& c) {
          auto walk = [&](const std::vector<int>& u) {
            std::map<int, int> bind;
            for (size_t k = 0; k < c.size(); ++k)
              if (nest->bound[k] >= 0) bind[nest->bound[k]] = c[k];
            for (size_t k = 0; k < u.size(); ++k)
              bind[nest->unbound[k]] = u[k];
            Pass q;
            q.target = buf;
            q.identity = true;
            q.outer = &p;
            for (const Instr* l : nest->loops) {
              std::vector<int> vals;
              for (int a : l->regions[0].args)
                vals.push_back(bind.at(a));
              q.inlineLoops[l] = vals;
            }
            for (int a : nest->loops[0]->regions[0].args)
              map_[a] = bind.at(a);
            block(nest->loops[0]->regions[0], q);
            return q.sum < 0 ? b_.constant(t.dtype, 0) : q.sum;
          };
          auto sum = [&]() {
            if (nest->unbound.empty()) return walk({});
            return b_.region(Op::ReduceSum, nest->unboundExtents, ir::Type{t.dtype, {}}, walk);
          };
          int inside = -1;
          for (size_t k = 0; k < c.size(); ++k)
            if (nest->guard[k]) {
              int lt = b_.binary(Op::Lt, c[k], b_.size(*nest->guard[k]));
              inside = inside < 0 ? lt : b_.binary(Op::And, inside, lt);
            }
          if (inside < 0) return sum();
          return b_.ifElse(inside, ir::Type{t.dtype, {}}, sum,
                           [&]() { return b_.constant(t.dtype, 0); });
        });
      }
    // Gather form: every add to buf sits directly in the body at exactly the loop's indices,
    // and the loop runs over buf's shape.
    bool gather = loop && loop->extents == t.shape;
    if (gather)
      for (const Instr& i : body.body) {
        if (isAdd(i) && i.args[0] == buf &&
            std::vector<int>(i.args.begin() + 1, i.args.end() - 1) != body.args)
          gather = false;
        if (!isAdd(i) && !i.regions.empty()) {
          std::set<int> inner;
          for (const Block& r : i.regions)
            addsIn(r, inner);
          if (inner.count(buf)) gather = false;
        }
      }
    if (gather)
      return b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& idx) {
        for (size_t k = 0; k < idx.size(); ++k)
          map_[body.args[k]] = idx[k];
        return passSum(body, buf, {}, true, p);
      });
    // Masked form: element j sums the contributions whose index is j.
    return b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& j) {
      auto inner = [&]() { return passSum(body, buf, j, false, p); };
      if (!loop) return inner();
      return b_.region(Op::ReduceSum, loop->extents, ir::Type{t.dtype, {}},
                       [&](const std::vector<int>& idx) {
                         for (size_t k = 0; k < idx.size(); ++k)
                           map_[body.args[k]] = idx[k];
                         return inner();
                       });
    });
  }

  /// What the regions of `in` add to this pass's accumulators (and its target) becomes terms
  /// of them; the accumulators the regions read are given their values first.
  void regionTerms(const Instr& in, Pass& p) {
    std::set<int> written;
    for (const Block& r : in.regions)
      addsIn(r, written);
    for (const Block& r : in.regions)
      materializeReads(r, p, written);
    for (int buf : written) {
      if (buf != p.target && !p.bufs.count(buf)) continue; // another pass computes it
      if (in.op == Op::If && in.result >= 0)
        throw NotPrintable("an if expression that also adds to an accumulator");
      int term = regionTerm(in, buf, p);
      if (buf == p.target)
        p.sum = p.sum < 0 ? term : b_.binary(Op::Add, p.sum, term);
      else
        addTerm(p.bufs[buf], term);
    }
  }

  void block(const Block& blk, Pass& p) {
    for (const Instr& in : blk.body) {
      if (in.op == Op::Param) continue;
      if (in.op == Op::BufZeros) {
        p.bufs[in.result] = Buf{};
        continue;
      }
      if (isAdd(in)) {
        std::vector<int> idx;
        for (size_t k = 1; k + 1 < in.args.size(); ++k)
          idx.push_back(mapped(in.args[k]));
        contribute(in.args[0], idx, mapped(in.args.back()), p);
        for (Pass* x = &p; x && in.op == Op::BufStore; x = x->outer)
          if (x->tapes && x->tapes->count(in.args[0])) {
            map_[in.args.back()] = b_.load(x->tapes->at(in.args[0]), idx, "", {}, true);
            break;
          }
        continue;
      }
      if (in.op == Op::BufStore || in.op == Op::SizeDef || (in.op == Op::For && in.ival == 1))
        throw NotPrintable("loops with state (var, for) have no printed form yet");
      // The same inside a region: its stores (forward mode's loop form writes a value and its
      // tangent into buffers that way) are not adds, and would be dropped.
      for (const Block& r : in.regions)
        ir::forEachInstr(r, [](const Instr& i) {
          if (i.op == Op::BufStore && i.ival != ir::kTapeOnce)
            throw NotPrintable("loops with state (var, for) have no printed form yet");
        });
      if (in.op == Op::Load && findBuf(in.args[0], p)) {
        Buf* b = findBuf(in.args[0], p);
        int whole = materialize(in.args[0], *b);
        std::vector<int> idx;
        for (size_t k = 1; k < in.args.size(); ++k)
          idx.push_back(mapped(in.args[k]));
        map_[in.result] = idx.empty() ? whole : b_.load(whole, idx, in.name, in.loc, true);
        continue;
      }
      auto inl = p.inlineLoops.find(&in);
      if (inl != p.inlineLoops.end()) { // part of a gathered nest: walk its body right here
        const Block& r = in.regions[0];
        for (size_t k = 0; k < r.args.size(); ++k)
          map_[r.args[k]] = inl->second[k];
        block(r, p);
        continue;
      }
      if (isEffect(in)) {
        regionTerms(in, p);
        continue;
      }
      // A value, possibly with regions: rebuild it with mapped operands. A loop that also adds
      // to accumulators of this pass (the tape the forward sweep writes) contributes terms.
      regionTerms(in, p);
      // The tapes the region fills are tensors computed before it; the region reads what it
      // stores back from them, so the stored value is computed once, not twice.
      std::map<int, int> tapes;
      for (const Block& r : in.regions)
        ir::forEachInstr(r, [&](const Instr& i) {
          if (i.op != Op::BufStore || i.ival != ir::kTapeOnce) return;
          Buf* b = findBuf(i.args[0], p);
          if (b && src_.types[i.args[0]].rank() > 0) tapes[i.args[0]] = materialize(i.args[0], *b);
        });
      Instr c = in;
      c.regions.clear();
      for (int& a : c.args)
        a = mapped(a);
      for (const Block& r : in.regions) {
        Block nb;
        nb.args.clear();
        for (int a : r.args) {
          int na = out_.newValue(src_.types[a]);
          map_[a] = na;
          nb.args.push_back(na);
        }
        nb = b_.buildBlock(nb.args, [&]() {
          Pass q;
          q.outer = &p;
          q.tapes = &tapes;
          block(r, q);
          return r.yields.empty() ? -1 : value(r.yields[0], q);
        });
        c.regions.push_back(std::move(nb));
      }
      int res = b_.emit(std::move(c), src_.types[in.result]);
      map_[in.result] = res;
    }
  }

  const ir::Function& src_;
  std::set<int> intZeros_; // i64 constants 0 (a unit extent's only index)
  ir::Function out_;
  ir::Builder b_;
  std::vector<int> map_;
};

// ---------------------------------------------------------------------------------------------
// Loop fission
//
// An adjoint loop computes values once and adds them to several accumulators (loss.slope:
// the residual feeds dk, db and dxs). The accumulator-free form sums each accumulator on its
// own, which recomputes the shared values once per accumulator. Fission first gives every
// value that more than one instruction of such a loop uses a tensor of its own (a
// comprehension over the loop's extents, computed once); the loop then loads it, and each
// accumulator's gather reads the loads. The numbers are the same: the same operations on the
// same operands.

/// Whether a loop body's only effects are adds to accumulators (in it or in parallel loops
/// nested in it).
bool addsOnly(const Block& b) {
  for (const Instr& in : b.body) {
    if (in.op == Op::BufAdd) continue;
    if (in.op == Op::For && in.ival == 0 && addsOnly(in.regions[0])) continue;
    if (in.op == Op::BufStore || in.op == Op::BufZeros || in.op == Op::SizeDef ||
        in.op == Op::For || in.op == Op::Param || (in.op == Op::If && in.result < 0))
      return false;
    bool effect = false;
    for (const Block& r : in.regions)
      ir::forEachInstr(r, [&](const Instr& i) {
        if (i.op == Op::BufAdd || i.op == Op::BufStore || i.op == Op::For || i.op == Op::SizeDef)
          effect = true;
      });
    if (effect) return false;
  }
  return true;
}

void fission(ir::Function& f, Block& blk) {
  std::vector<Instr> out;
  for (Instr& in : blk.body) {
    bool rect = true;
    for (const Poly& p : in.extents)
      for (const auto& n : p.names())
        rect = rect && n[0] != '#';
    if (in.op != Op::For || in.ival != 0 || !rect || !addsOnly(in.regions[0])) {
      for (Block& r : in.regions)
        fission(f, r);
      out.push_back(std::move(in));
      continue;
    }
    Block& body = in.regions[0];
    // Uses by instruction: a value two adds of a nested loop use is shared.
    std::map<int, int> uses;
    ir::forEachInstr(body, [&](const Instr& i) {
      for (int a : std::set<int>(i.args.begin(), i.args.end()))
        ++uses[a];
    });
    for (size_t k = 0; k < body.body.size(); ++k) {
      const Instr& c = body.body[k];
      if (c.result < 0 || c.op == Op::Const || c.op == Op::Size || c.op == Op::Load ||
          uses[c.result] < 2 || f.types[c.result].rank() > 0)
        continue;
      // The body's pure part, yielding c, cloned into a comprehension over the loop's extents.
      Block pure;
      pure.args = body.args;
      for (size_t j = 0; j <= k; ++j)
        if (body.body[j].op != Op::BufAdd && body.body[j].op != Op::For)
          pure.body.push_back(body.body[j]);
      pure.yields = {c.result};
      std::vector<int> map;
      Instr comp;
      comp.op = Op::Comp;
      comp.extents = in.extents;
      comp.loc = c.loc;
      comp.regions.push_back(ir::cloneBlock(f, pure, map));
      ir::Type t = f.types[c.result];
      t.shape = in.extents;
      comp.result = f.newValue(t);
      // The loop loads it instead (same value id, so its uses stay).
      Instr load;
      load.op = Op::Load;
      load.args.push_back(comp.result);
      load.args.insert(load.args.end(), body.args.begin(), body.args.end());
      load.result = c.result;
      load.loc = c.loc;
      load.checked = true; // the loop's indices, over the comprehension's own extents
      body.body[k] = load;
      out.push_back(std::move(comp));
    }
    fission(f, body); // its nested loops, over the values still computed per element
    out.push_back(std::move(in));
  }
  blk.body = std::move(out);
}

// ---------------------------------------------------------------------------------------------
// Printing IR as Slope
//
// Pure IR prints as comprehensions and reductions over inlined expressions. What has no
// expression form prints as the v2 statements (LANGUAGE.md, Loops), one for one with the IR,
// so the printed function does the same work as the compiled one:
//   buf.zeros          var b = zeros(T);          (a scalar: var b = 0.0;)
//   buf.add b[i], v    b[i] = b[i] + v;
//   buf.store b[i], v  b[i] = v;
//   for [i < n]        for i in 0..n { ... }
//   if (effects only)  for k in 0..i64(c) { ... }  for k in 0..i64(!c) { ... }
// A comprehension, reduction or if whose body needs statements (it holds one of the above, a
// tensor, or a value used twice) becomes a loop filling a var. In statement context a value
// is inlined into its one use only where that does not move it into a loop or past a write
// to a var it reads; elsewhere it gets a `let`.

struct Expr {
  std::string s;
  int prec; // 10 atom, 9 power, 8 unary, 7 mul, 6 add, 5 compare, 4 and, 3 or
};

bool isRegionValue(Op op) {
  return op == Op::Comp || op == Op::ReduceSum || op == Op::ReduceProd || op == Op::ReduceMax ||
         op == Op::ReduceMin || op == Op::ReduceLse || op == Op::ArgMax || op == Op::ArgMin ||
         op == Op::If;
}

/// Values that print as a literal or a size name: inlined anywhere, at no cost.
bool isFree(Op op) {
  return op == Op::Const || op == Op::Size || op == Op::Param;
}

/// Whether two blocks compute the same thing, instruction for instruction (`m` maps a's
/// values to b's; values from outside both map to themselves).
bool sameBlock(const ir::Function& f, const Block& a, const Block& b, std::map<int, int>& m) {
  if (a.args.size() != b.args.size() || a.body.size() != b.body.size() ||
      a.yields.size() != b.yields.size())
    return false;
  for (size_t k = 0; k < a.args.size(); ++k)
    m[a.args[k]] = b.args[k];
  auto same = [&](int x, int y) {
    auto it = m.find(x);
    return (it == m.end() ? x : it->second) == y;
  };
  for (size_t k = 0; k < a.body.size(); ++k) {
    const Instr &x = a.body[k], &y = b.body[k];
    if (x.op != y.op || x.ival != y.ival || !(x.fval == y.fval) || !(x.poly == y.poly) ||
        x.extents != y.extents || x.args.size() != y.args.size() ||
        x.regions.size() != y.regions.size() || (x.result < 0) != (y.result < 0) || isEffect(x) ||
        x.op == Op::BufStore || x.op == Op::SizeDef)
      return false;
    if (x.result >= 0 && !(f.types[x.result] == f.types[y.result])) return false;
    for (size_t j = 0; j < x.args.size(); ++j)
      if (!same(x.args[j], y.args[j])) return false;
    for (size_t j = 0; j < x.regions.size(); ++j)
      if (!sameBlock(f, x.regions[j], y.regions[j], m)) return false;
    if (x.result >= 0) m[x.result] = y.result;
  }
  for (size_t k = 0; k < a.yields.size(); ++k)
    if (!same(a.yields[k], b.yields[k])) return false;
  return true;
}

/// Functions printed for if branches that need statements (shared by the printers of a
/// function and of its branches).
struct Helpers {
  std::vector<std::string> texts;
  int count = 0;
  std::string root; // the printed function's name, which theirs extend
};

class Printer {
public:
  /// With `helpers`, an if whose branch needs statements may print that branch as a function
  /// of its own, called from the branch: the checker inlines the call, so the printed `if`
  /// does the compiled if's work (a var and guarded loops would add a dozen operations).
  Printer(const ir::Function& f, std::string name, std::shared_ptr<Helpers> helpers = nullptr)
      : f_(f), name_(std::move(name)), helpers_(std::move(helpers)) {}

  std::string run() {
    // div(e, k) extents are derived sizes named by their own source text; a checkpointed
    // gradient's sizes (ceil(T / k) segments, ...) have no source form.
    for (const ir::DerivedSize& d : f_.derived)
      if (d.kind != ir::DerivedSize::FloorDiv)
        throw NotPrintable("checkpointed gradients (sizes derived on entry) have no printed form");
    for (const auto& n : f_.paramNames)
      taken_.insert(n);
    for (const auto& n : f_.sizeNames())
      taken_.insert(n);
    bool any = false, all32 = true;
    for (const auto& t : f_.paramTypes)
      if (isFloat(t.dtype)) {
        any = true;
        all32 = all32 && t.dtype == DType::F32;
      }
    weakFloat_ = any && all32 ? DType::F32 : DType::F64;
    countUses(f_.body, 0);
    for (const auto& [def, text] : defText_)
      releaseDead(def->args[0]);
    for (size_t k = 0; k < f_.params.size(); ++k)
      names_[f_.params[k]] = f_.paramNames[k];
    std::string out = "fn " + name_ + "(";
    for (size_t k = 0; k < f_.params.size(); ++k)
      out += (k ? ", " : "") + f_.paramNames[k] + ": " + f_.paramTypes[k].str();
    out += ") -> ";
    std::vector<std::string> rt;
    for (int y : f_.body.yields)
      rt.push_back(f_.types[y].str());
    out += rt.size() == 1 ? rt[0] : "(" + join(rt) + ")";
    out += " {\n";
    statements(f_.body, out, "    ");
    std::vector<std::string> ys;
    for (int y : f_.body.yields)
      ys.push_back(expr(y).s);
    out += "    " + (ys.size() == 1 ? ys[0] : "(" + join(ys) + ")") + "\n}\n";
    if (helpers_ && !nested_)
      for (const std::string& h : helpers_->texts)
        out += "\n" + h;
    return out;
  }

private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (size_t k = 0; k < v.size(); ++k)
      s += (k ? ", " : "") + v[k];
    return s;
  }
  void countUses(const Block& b, int depth) {
    for (const Instr& in : b.body) {
      if (in.result >= 0) {
        defs_[in.result] = &in;
        depth_[in.result] = depth;
      }
      if (in.op == Op::BufZeros) bufs_.insert(in.result);
      if (in.op == Op::SizeDef) {
        // A triangular extent or trip count (v3): max(a, 0) of an affine a prints as a's
        // source text, which the checker binds again; anything else as a `let`.
        std::optional<std::string> t = sizeDefText(in);
        if (t) defText_[&in] = *t;
        recovered_[in.name] = t.has_value();
        continue; // its value is not printed when recovered; when not, the let uses it once
      }
      // The index of a region over an extent that is a `let` is a plain i64 in the printed
      // source (a loop with data-dependent bounds), not an index an extent may use.
      bool letExtent = false;
      for (const Poly& p : in.extents)
        for (const auto& n : p.names())
          if (n[0] == '#' && !recovered_[n]) letExtent = true;
      if (in.op == Op::ArgMax || in.op == Op::ArgMin) // the extreme the function computes anyway
        for (const Instr& e : b.body) {
          if (&e == &in) break;
          std::map<int, int> m;
          if (e.op == (in.op == Op::ArgMax ? Op::ReduceMax : Op::ReduceMin) &&
              e.extents == in.extents && sameBlock(f_, e.regions[0], in.regions[0], m)) {
            extremeOf_[&in] = e.result;
            ++uses_[e.result]; // named, for the search to read
          }
        }
      if (letExtent) {
        letExtent_.insert(&in);
        for (const Block& r : in.regions)
          for (int a : r.args)
            plainArgs_.insert(a);
      }
      for (size_t k = 0; k < in.args.size(); ++k) {
        // An add prints its subscripts twice (b[i] = b[i] + v).
        bool twice = in.op == Op::BufAdd && k > 0 && k + 1 < in.args.size();
        uses_[in.args[k]] += twice ? 2 : 1;
        useDepth_[in.args[k]] = std::max(useDepth_[in.args[k]], depth);
      }
      for (const Block& r : in.regions) {
        for (int a : r.args)
          names_[a] = fresh("i", indexCount_);
        countUses(r, depth + 1);
      }
    }
    for (const Instr& in : b.body)
      if (in.op == Op::SizeDef && !defText_.count(&in)) {
        ++uses_[in.args[0]];
        useDepth_[in.args[0]] = std::max(useDepth_[in.args[0]], depth);
      }
    for (int y : b.yields) {
      ++uses_[y];
      useDepth_[y] = std::max(useDepth_[y], depth);
    }
  }

  /// Values only a recovered size.def used are not printed: they lose the uses they gave
  /// their operands.
  void releaseDead(int v) {
    auto d = defs_.find(v);
    if (uses_[v] > 0 || d == defs_.end() || !d->second || isFree(d->second->op) ||
        !d->second->regions.empty())
      return;
    for (int a : d->second->args)
      if (--uses_[a] == 0) releaseDead(a);
  }

  /// The source text of an affine i64 value (indices, sizes, integer literals, + -, and * by a
  /// literal), or nothing for any other value.
  std::optional<Expr> affineExpr(int v) {
    auto d = defs_.find(v);
    if (d == defs_.end() || !d->second) { // a region's index
      auto n = names_.find(v);
      if (plainArgs_.count(v) || n == names_.end()) return std::nullopt;
      return Expr{n->second, 10};
    }
    const Instr& in = *d->second;
    if (in.result < 0 || f_.types[in.result].dtype != DType::I64 || f_.types[in.result].rank())
      return std::nullopt;
    auto two = [&](const char* op, int lp, int rp, int prec) -> std::optional<Expr> {
      auto a = affineExpr(in.args[0]), b = affineExpr(in.args[1]);
      if (!a || !b) return std::nullopt;
      return Expr{paren(*a, lp) + " " + op + " " + paren(*b, rp), prec};
    };
    switch (in.op) {
    case Op::Const: {
      std::string t = std::to_string(in.ival);
      return Expr{t, in.ival < 0 ? 8 : 10};
    }
    case Op::Size:
      for (const auto& n : in.poly.names())
        if (n[0] == '#') return std::nullopt;
      return polyExpr(in.poly);
    case Op::Add: return two("+", 6, 7, 6);
    case Op::Sub: return two("-", 6, 7, 6);
    case Op::Mul: {
      auto isConst = [&](int a) {
        auto da = defs_.find(a);
        return da != defs_.end() && da->second && da->second->op == Op::Const;
      };
      if (!isConst(in.args[0]) && !isConst(in.args[1])) return std::nullopt;
      return two("*", 7, 8, 7);
    }
    case Op::Neg: {
      auto a = affineExpr(in.args[0]);
      if (!a) return std::nullopt;
      return Expr{"-" + paren(*a, 9), 8};
    }
    default: return std::nullopt;
    }
  }
  /// The text of a size.def the checker makes for a triangular extent or trip count: it binds
  /// max(a, 0), as select(a > 0, a, 0) or select(hi > lo, hi - lo, 0), of an affine a.
  std::optional<std::string> sizeDefText(const Instr& def) {
    auto opOf = [&](int v) -> const Instr* {
      auto d = defs_.find(v);
      return d == defs_.end() ? nullptr : d->second;
    };
    auto isZero = [&](int v) {
      const Instr* z = opOf(v);
      return z && z->op == Op::Const && z->ival == 0;
    };
    const Instr* sel = opOf(def.args[0]);
    if (!sel || sel->op != Op::Select || !isZero(sel->args[2])) return std::nullopt;
    const Instr* gt = opOf(sel->args[0]);
    int a = sel->args[1];
    const Instr* sub = opOf(a);
    bool ok =
        gt && gt->op == Op::Gt &&
        ((gt->args[0] == a && isZero(gt->args[1])) ||
         (sub && sub->op == Op::Sub && sub->args[0] == gt->args[0] && sub->args[1] == gt->args[1]));
    if (!ok) return std::nullopt;
    auto e = affineExpr(a);
    if (!e) return std::nullopt;
    return e->s;
  }
  /// Binds a size.def's name for the extents and size values printed after it.
  void bindSizeDef(const Instr& def, const std::string& letName = "") {
    auto t = defText_.find(&def);
    if (t == defText_.end()) {
      sizeAlias_[def.name] = valueAlias_[def.name] = letName;
      return;
    }
    bool atom = isName(t->second) || std::all_of(t->second.begin(), t->second.end(), ::isdigit);
    sizeAlias_[def.name] = atom ? t->second : "(" + t->second + ")";
    valueAlias_[def.name] = "max(" + t->second + ", 0)";
  }
  /// A comprehension's or reduction's body: an expression, or a call of its helper.
  Expr regionBody(const Instr& in) {
    auto h = bodyHelper_.find(&in);
    if (h != bodyHelper_.end()) return {call(h->second), 10};
    return bodyExpr(in.regions[0]);
  }
  /// A region body printed as one expression; its size.defs bind first.
  Expr bodyExpr(const Block& r) {
    for (const Instr& i : r.body)
      if (i.op == Op::SizeDef) bindSizeDef(i);
    return expr(r.yields[0]);
  }

  /// A name not used by the function's parameters or sizes: PREFIX1, PREFIX2, ...
  std::string fresh(const char* prefix, int& counter) {
    std::string n;
    do
      n = prefix + std::to_string(++counter);
    while (taken_.count(n));
    taken_.insert(n);
    return n;
  }

  /// An if branch as a call of a function of its own (printed into helpers_), or nothing
  /// where that function cannot be written: the branch touches a var of this function, or
  /// uses a size no parameter of the branch binds.
  struct Helper {
    std::string name, text;
    std::vector<int> args; // the values passed, in parameter order
  };
  /// The call of a helper, with the arguments' current names or expressions; its text goes
  /// out with the function.
  std::string call(const Helper& h) {
    helpers_->texts.push_back(h.text);
    std::string a;
    for (int v : h.args)
      a += (a.empty() ? "" : ", ") + expr(v).s;
    return h.name + "(" + a + ")";
  }
  /// A block as a function of its own: of the values it uses (and, with `indices`, of its
  /// own indices: a comprehension's or reduction's body, called once per element).
  std::optional<Helper> helper(const Block& r, bool indices) {
    if (!helpers_) return std::nullopt;
    std::set<int> inside = ir::definedIn(r), seen;
    if (indices)
      for (int a : r.args)
        inside.erase(a);
    std::set<std::string> needed, local;
    std::vector<int> free;
    if (indices) {
      free = r.args;
      seen.insert(r.args.begin(), r.args.end());
    }
    std::vector<Instr> copied; // outside constants and sizes, defined again in the function
    bool ok = true;
    ir::forEachInstr(r, [&](const Instr& i) { // (definedIn leaves out nested regions' indices)
      for (const Block& b : i.regions)
        inside.insert(b.args.begin(), b.args.end());
    });
    auto sizesOf = [&](const Poly& p) {
      for (const auto& n : p.names())
        needed.insert(n);
    };
    auto use = [&](int a) {
      if (inside.count(a) || !seen.insert(a).second) return;
      auto d = defs_.find(a);
      const Instr* di = d == defs_.end() ? nullptr : d->second;
      if (di && (di->op == Op::Const || di->op == Op::Size)) { // literals, size names
        if (di->op == Op::Size) sizesOf(di->poly);
        copied.push_back(*di);
        return;
      }
      if (bufs_.count(a)) ok = false;
      free.push_back(a);
    };
    ir::forEachInstr(r, [&](const Instr& i) {
      for (int a : i.args)
        use(a);
      for (const Block& b : i.regions)
        for (int y : b.yields)
          use(y);
      for (const Poly& p : i.extents)
        sizesOf(p);
      if (i.op == Op::Size) sizesOf(i.poly);
      if (i.op == Op::SizeDef) local.insert(i.name);
      if (i.result >= 0)
        for (const Poly& p : f_.types[i.result].shape)
          sizesOf(p);
    });
    for (int y : r.yields)
      use(y);
    if (!ok) return std::nullopt;
    // A size the branch uses that none of its values' types carries: a parameter of this
    // function that does comes along (passing it costs nothing; the call is inlined).
    std::set<std::string> carried;
    for (int v : free)
      for (const Poly& p : f_.types[v].shape)
        for (const auto& n : p.names())
          carried.insert(n);
    for (const auto& n : needed)
      if (!carried.count(n))
        for (size_t k = 0; k < f_.params.size(); ++k) {
          bool has = false;
          for (const Poly& p : f_.paramTypes[k].shape)
            for (const auto& m : p.names())
              has = has || m == n;
          if (has && seen.insert(f_.params[k]).second) {
            free.push_back(f_.params[k]);
            for (const Poly& p : f_.paramTypes[k].shape)
              for (const auto& m : p.names())
                carried.insert(m);
          }
          if (has) break;
        }
    ir::Function h;
    if (helpers_->root.empty()) helpers_->root = name_;
    h.name = helpers_->root + (indices ? "_elem" : "_branch") + std::to_string(++helpers_->count);
    h.types = f_.types;
    h.file = f_.file;
    std::set<std::string> bound, pnames;
    for (int v : free) {
      const ir::Type& t = f_.types[v];
      for (const Poly& p : t.shape) {
        if (p.isConst()) continue;
        std::vector<std::string> ns = p.names();
        if (ns.size() != 1 || !(p == Poly::var(ns[0])) || ns[0][0] == '#' ||
            ns[0].find('(') != std::string::npos)
          return std::nullopt; // not a parameter type
        bound.insert(ns[0]);
      }
      auto nm = names_.find(v);
      std::string pn = nm != names_.end() && isName(nm->second) && !pnames.count(nm->second)
                           ? nm->second
                           : "a" + std::to_string(v);
      pnames.insert(pn);
      Instr pi;
      pi.op = Op::Param;
      pi.name = pn;
      pi.ival = static_cast<int64_t>(h.params.size());
      pi.result = v;
      h.body.body.push_back(pi);
      h.params.push_back(v);
      h.paramNames.push_back(pn);
      h.paramTypes.push_back(t);
    }
    for (const auto& n : needed)
      if (!bound.count(n) && !local.count(n)) return std::nullopt;
    h.body.body.insert(h.body.body.end(), copied.begin(), copied.end());
    for (const Instr& i : r.body)
      h.body.body.push_back(i);
    h.body.yields = r.yields;
    Printer nested(h, h.name, helpers_);
    nested.nested_ = true;
    std::string text;
    try {
      text = nested.run();
    } catch (const NotPrintable&) {
      return std::nullopt;
    }
    return Helper{h.name, text, free};
  }

  // --- which instructions need statements ------------------------------------------------------

  bool needsStatements(const Instr& in) {
    auto it = needs_.find(&in);
    if (it != needs_.end()) return it->second;
    bool r = false;
    switch (in.op) {
    case Op::BufZeros:
    case Op::BufAdd:
    case Op::BufStore:
    case Op::For:
    // The first extremal position has no expression that costs what the reduction costs
    // (without a let for the extreme it is recomputed per position): a loop.
    case Op::ArgMax:
    case Op::ArgMin: r = true; break;
    case Op::If: r = in.result < 0; break;
    case Op::SizeDef: r = !defText_.count(&in); break;
    default: break;
    }
    if (letExtent_.count(&in)) r = true; // `for i in 0..e` with e a let
    if (!r && isRegionValue(in.op))
      for (const Block& b : in.regions)
        r = r || !expressible(b);
    if (r &&
        (in.op == Op::Comp || in.op == Op::ReduceSum || in.op == Op::ReduceProd ||
         in.op == Op::ReduceMax || in.op == Op::ReduceMin || in.op == Op::ReduceLse) &&
        !letExtent_.count(&in)) {
      // A body that needs statements as a function called per element: no var, no loops.
      if (auto h = helper(in.regions[0], true)) {
        bodyHelper_[&in] = *h;
        r = false;
      }
    }
    needs_[&in] = r;
    return r;
  }
  /// A region body that prints as one expression: no statements, no tensors, and no value that
  /// would be computed twice or moved into an inner loop by inlining (a load may be: one op).
  bool expressible(const Block& b) {
    for (const Instr& in : b.body) {
      if (needsStatements(in)) return false;
      if (in.result < 0) continue;
      if (f_.types[in.result].rank() > 0) return false;
      if (isFree(in.op) || in.op == Op::Load) continue;
      if (uses_[in.result] > 1 || useDepth_[in.result] > depth_[in.result]) return false;
    }
    return true;
  }

  // --- statement context --------------------------------------------------------------------

  /// Buffers an instruction writes (anywhere inside it) and reads.
  static void effects(const Instr& in, std::set<int>& writes, std::set<int>* reads) {
    auto one = [&](const Instr& i) {
      if (i.op == Op::BufAdd || i.op == Op::BufStore) writes.insert(i.args[0]);
      if (reads && i.op == Op::Load) reads->insert(i.args[0]);
    };
    one(in);
    for (const Block& r : in.regions)
      ir::forEachInstr(r, one);
  }
  /// The buffers a value reads when printed inline (its operands' reads included).
  const std::set<int>& readsOf(int v) {
    auto it = reads_.find(v);
    if (it != reads_.end()) return it->second;
    std::set<int> r;
    auto d = defs_.find(v);
    if (d != defs_.end() && d->second && !bufs_.count(v)) {
      std::set<int> w;
      effects(*d->second, w, &r);
      for (int a : d->second->args)
        if (!bufs_.count(a)) {
          const std::set<int>& ra = readsOf(a);
          r.insert(ra.begin(), ra.end());
        }
    }
    return reads_[v] = r;
  }

  void statements(const Block& b, std::string& out, const std::string& indent) {
    // Where each value is used (the position of the instruction holding the use), and what
    // each instruction writes, to decide which values may be inlined.
    size_t n = b.body.size();
    std::vector<std::set<int>> writes(n);
    std::map<int, size_t> pos, lastUse;
    for (size_t k = 0; k < n; ++k) {
      const Instr& in = b.body[k];
      effects(in, writes[k], nullptr);
      if (in.result >= 0) pos[in.result] = k;
      std::function<void(const Instr&)> use = [&](const Instr& i) {
        for (int a : i.args)
          lastUse[a] = std::max(lastUse.count(a) ? lastUse[a] : 0, k);
      };
      use(in);
      for (const Block& r : in.regions)
        ir::forEachInstr(r, use);
    }
    for (int y : b.yields)
      lastUse[y] = n;
    for (size_t k = 0; k < n; ++k) {
      const Instr& in = b.body[k];
      if (in.op == Op::Param) continue;
      if (in.result >= 0 && !needsStatements(in)) {
        int v = in.result;
        bool named = f_.types[v].rank() > 0 || uses_[v] > 1;
        if (isFree(in.op) || uses_[v] == 0) continue; // inlined where used, or dead
        if (useDepth_[v] > depth_[v]) named = true;   // inlining would move it into a loop
        if (!named) {
          auto lu = lastUse.find(v);
          size_t q = lu == lastUse.end() ? n : lu->second;
          const std::set<int>& rd = readsOf(v);
          for (size_t j = k + 1; j <= q && j < n && !named; ++j) {
            if (j == q && b.body[j].regions.empty()) break; // the use reads before it writes
            for (int w : writes[j])
              if (rd.count(w)) named = true;
          }
        }
        if (named) let(in, out, indent);
        continue;
      }
      statement(in, out, indent);
    }
  }

  void let(const Instr& in, std::string& out, const std::string& indent) {
    std::string n = fresh("t", letCount_);
    if (in.op == Op::Comp) {
      out += indent + "let " + n + "[" + indexList(in) + "] = " + regionBody(in).s + ";\n";
    } else {
      out += indent + "let " + n + " = " + exprOf(in).s + ";\n";
    }
    names_[in.result] = n;
  }

  std::string zeroOf(DType t) {
    switch (t) {
    case DType::Bool: return "false";
    case DType::I64: return "0";
    default: return t == weakFloat_ ? "0.0" : std::string(dtypeName(t)) + "(0)";
    }
  }
  std::string typeStr(const ir::Type& t) {
    for (const Poly& p : t.shape)
      for (const auto& s : p.names())
        if (!s.empty() && s[0] == '#')
          throw NotPrintable("a tensor whose size is computed in the function (" + s + ")");
    return t.str();
  }
  /// `var NAME = zero of t;`
  std::string var(const ir::Type& t, std::string& out, const std::string& indent,
                  const char* prefix = "b") {
    std::string n = fresh(prefix, varCount_);
    out += indent + "var " + n + " = " +
           (t.rank() == 0 ? zeroOf(t.dtype) : "zeros(" + typeStr(t) + ")") + ";\n";
    return n;
  }
  /// A poly as an extent (a triangular extent as its affine text), or with `value` as an i64
  /// value (max(text, 0), what the extent binds).
  std::string extent(const Poly& p, bool value = false) {
    std::map<std::string, Poly> rename;
    const auto& alias = value ? valueAlias_ : sizeAlias_;
    for (const auto& s : p.names()) {
      auto it = alias.find(s);
      if (it != alias.end()) rename[s] = Poly::var(it->second);
    }
    Poly q = rename.empty() ? p : p.substitute(rename);
    return q.str();
  }
  /// Opens `for` loops over a region's indices; returns the body's indent.
  std::string openLoops(const Instr& in, const Block& r, std::string& out, std::string indent) {
    for (size_t k = 0; k < r.args.size(); ++k) {
      out += indent + "for " + names_[r.args[k]] + " in 0.." + extent(in.extents[k]) + " {\n";
      indent += "    ";
    }
    return indent;
  }
  static void closeLoops(size_t count, std::string& out, std::string indent) {
    for (size_t k = 0; k < count; ++k) {
      indent.resize(indent.size() - 4);
      out += indent + "}\n";
    }
  }
  std::string subscripts(const Instr& in, size_t first, size_t end) {
    std::string s;
    for (size_t k = first; k < end; ++k)
      s += (k > first ? ", " : "") + expr(in.args[k]).s;
    return s;
  }

  void statement(const Instr& in, std::string& out, const std::string& indent) {
    switch (in.op) {
    case Op::BufZeros: names_[in.result] = var(f_.types[in.result], out, indent); return;
    case Op::BufAdd:
    case Op::BufStore: {
      std::string target = names_.at(in.args[0]);
      if (in.args.size() > 2) target += "[" + subscripts(in, 1, in.args.size() - 1) + "]";
      Expr v = expr(in.args.back());
      out += indent + target + " = " + (in.op == Op::BufAdd ? target + " + " + paren(v, 7) : v.s) +
             ";\n";
      return;
    }
    case Op::SizeDef: {
      if (defText_.count(&in)) {
        bindSizeDef(in);
        return;
      }
      std::string n = in.name;
      n.erase(std::remove(n.begin(), n.end(), '#'), n.end());
      while (taken_.count(n))
        n += "_";
      taken_.insert(n);
      bindSizeDef(in, n);
      out += indent + "let " + n + " = " + expr(in.args[0]).s + ";\n";
      return;
    }
    case Op::For: {
      const Block& r = in.regions[0];
      std::string inner = openLoops(in, r, out, indent);
      statements(r, out, inner);
      closeLoops(r.args.size(), out, inner);
      return;
    }
    case Op::If: {
      if (in.result >= 0) { // branches as expressions, or as calls of functions of their own
        std::optional<Helper> h[2];
        bool ok = true;
        for (int k = 0; k < 2; ++k)
          if (!expressible(in.regions[k])) {
            h[k] = helper(in.regions[k], false);
            ok = ok && h[k];
          }
        if (ok) {
          std::string br[2];
          for (int k = 0; k < 2; ++k)
            br[k] = h[k] ? call(*h[k]) : bodyExpr(in.regions[k]).s;
          std::string n = fresh("t", letCount_);
          out += indent + "let " + n + " = if " + expr(in.args[0]).s + " { " + br[0] +
                 " } else { " + br[1] + " };\n";
          names_[in.result] = n;
          return;
        }
      }
      std::string c = expr(in.args[0]).s;
      if (!isName(c)) {
        std::string n = fresh("c", condCount_);
        out += indent + "let " + n + " = " + c + ";\n";
        c = n;
      }
      std::string result;
      if (in.result >= 0) result = var(f_.types[in.result], out, indent, "r");
      for (int k = 0; k < 2; ++k) {
        const Block& r = in.regions[k];
        if (in.result < 0 && r.body.empty()) continue; // (an `if` without an else)
        std::string once = fresh("once", onceCount_);
        out += indent + "for " + once + " in 0..i64(" + (k ? "!" + c : c) + ") {\n";
        statements(r, out, indent + "    ");
        if (in.result >= 0) out += indent + "    " + result + " = " + expr(r.yields[0]).s + ";\n";
        out += indent + "}\n";
      }
      if (in.result >= 0) names_[in.result] = result;
      return;
    }
    case Op::Comp: {
      const Block& r = in.regions[0];
      std::string n = var(f_.types[in.result], out, indent, "t");
      std::string inner = openLoops(in, r, out, indent);
      statements(r, out, inner);
      std::string idx;
      for (size_t k = 0; k < r.args.size(); ++k)
        idx += (k ? ", " : "") + names_[r.args[k]];
      out += inner + n + "[" + idx + "] = " + expr(r.yields[0]).s + ";\n";
      closeLoops(r.args.size(), out, inner);
      names_[in.result] = n;
      return;
    }
    case Op::ReduceSum:
    case Op::ReduceProd:
    case Op::ReduceMax:
    case Op::ReduceMin:
    case Op::ReduceLse:
    case Op::ArgMax:
    case Op::ArgMin: reduction(in, out, indent); return;
    default: break;
    }
    throw NotPrintable(std::string("internal: no statement form for '") + ir::opName(in.op) + "'");
  }

  static bool isName(const std::string& s) {
    if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
    for (char ch : s)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') return false;
    return true;
  }

  /// A reduction whose body needs statements: a loop updating a running value.
  void reduction(const Instr& in, std::string& out, const std::string& indent) {
    const Block& r = in.regions[0];
    if ((in.op == Op::ArgMax || in.op == Op::ArgMin) && expressible(r)) {
      // The first extremal position: the extreme (the function's own where it computes it),
      // then the smallest flat index whose element equals it. (A loop keeping both would
      // update two vars per element.)
      std::string m;
      auto e = extremeOf_.find(&in);
      if (e != extremeOf_.end()) {
        m = expr(e->second).s;
      } else {
        m = fresh("t", letCount_);
        out += indent + "let " + m + " = " + (in.op == Op::ArgMax ? "max[" : "min[") +
               indexList(in) + "](" + bodyExpr(r).s + ");\n";
      }
      // Over several indices, one dimension at a time: the first i0 at which the extreme
      // occurs (a search over all elements), then the first i1 in that row (a search over the
      // rest), and so on, and the flat position made from them. That is a compare and a select
      // per element, as in the compiled search, where a flat index would add its arithmetic to
      // every element. Where nothing equals the extreme (no elements, or a NaN), i0 is its
      // extent, the later searches are skipped (their row does not exist), and the position is
      // the element count, as the flat search gives. Triangular extents (one naming an enclosing
      // index) keep the flat form.
      bool rect = r.args.size() > 1;
      for (const Poly& e : in.extents)
        for (const auto& n : e.names())
          if (n[0] == '#') rect = false;
      std::string flat;
      if (rect) {
        std::map<int, std::string> saved;
        std::string first;
        for (size_t k = 0; k < r.args.size(); ++k) {
          std::string ix;
          for (size_t j = k; j < r.args.size(); ++j)
            ix += (j > k ? ", " : "") + names_[r.args[j]] + ": " + extent(in.extents[j]);
          std::string p = fresh("t", letCount_);
          std::string search = "min[" + ix + "](select(" + paren(bodyExpr(r), 6) +
                               " == " + paren({m, 10}, 6) + ", " + names_[r.args[k]] + ", " +
                               paren(polyExpr(in.extents[k]), 6) + "))";
          if (k == 0)
            first = p + " < " + paren(polyExpr(in.extents[0]), 6);
          else
            search = "if " + first + " { " + search + " } else { 0 }";
          out += indent + "let " + p + " = " + search + ";\n";
          saved[r.args[k]] = names_[r.args[k]];
          names_[r.args[k]] = p; // the later searches read this row
          flat = k == 0 ? p
                        : paren({flat, k == 1 ? 10 : 6}, 7) + " * " +
                              paren(polyExpr(in.extents[k]), 8) + " + " + p;
        }
        for (const auto& [a, n] : saved)
          names_[a] = n;
        std::string p = fresh("t", letCount_);
        out += indent + "let " + p + " = " + flat + ";\n";
        names_[in.result] = p;
        return;
      }
      Poly total(1);
      for (size_t k = 0; k < r.args.size(); ++k) {
        flat = k == 0 ? names_[r.args[k]]
                      : paren({flat, k == 1 ? 10 : 6}, 7) + " * " +
                            paren(polyExpr(in.extents[k]), 8) + " + " + names_[r.args[k]];
        total = total * in.extents[k];
      }
      std::string p = fresh("t", letCount_);
      out += indent + "let " + p + " = min[" + indexList(in) + "](select(" + paren(bodyExpr(r), 6) +
             " == " + paren({m, 10}, 6) + ", " + flat + ", " + polyExpr(total).s + "));\n";
      names_[in.result] = p;
      return;
    }
    DType dt = f_.types[r.yields[0]].dtype;
    auto lit = [&](double v) { return number(v, dt); };
    std::string acc = fresh("s", varCount_), top;
    std::string init;
    switch (in.op) {
    case Op::ReduceSum: init = zeroOf(dt); break;
    case Op::ReduceProd: init = dt == DType::I64 ? "1" : isFloat(dt) ? "1.0" : "true"; break;
    case Op::ReduceMax:
    case Op::ReduceLse:
    case Op::ArgMax: init = lit(-INFINITY); break;
    default: init = lit(INFINITY); break;
    }
    bool weak = isFloat(dt) && dt != weakFloat_;
    if (weak) init = std::string(dtypeName(dt)) + "(" + init + ")";
    out += indent + "var " + acc + " = " + init + ";\n";
    std::string sum, pos;
    if (in.op == Op::ReduceLse) {
      sum = fresh("s", varCount_);
      out += indent + "var " + sum + " = " + zeroOf(dt) + ";\n";
    }
    if (in.op == Op::ArgMax || in.op == Op::ArgMin) {
      pos = fresh("s", varCount_);
      out += indent + "var " + pos + " = 0;\n";
    }
    std::string inner = openLoops(in, r, out, indent);
    statements(r, out, inner);
    Expr y = expr(r.yields[0]);
    std::string v = y.s;
    if (in.op == Op::ReduceLse || in.op == Op::ArgMax || in.op == Op::ArgMin) {
      if (!isName(v)) {
        std::string n = fresh("t", letCount_);
        out += inner + "let " + n + " = " + v + ";\n";
        v = n;
      }
      y = {v, 10};
    }
    switch (in.op) {
    case Op::ReduceSum: out += inner + acc + " = " + acc + " + " + paren(y, 7) + ";\n"; break;
    case Op::ReduceProd: out += inner + acc + " = " + acc + " * " + paren(y, 8) + ";\n"; break;
    case Op::ReduceMax: out += inner + acc + " = max(" + acc + ", " + v + ");\n"; break;
    case Op::ReduceMin: out += inner + acc + " = min(" + acc + ", " + v + ");\n"; break;
    case Op::ReduceLse: {
      // One pass: a running maximum that rescales the running sum when it grows.
      std::string m = fresh("t", letCount_);
      out += inner + "let " + m + " = max(" + acc + ", " + v + ");\n";
      out += inner + sum + " = " + sum + " * exp(" + acc + " - " + m + ") + exp(" + v + " - " + m +
             ");\n";
      out += inner + acc + " = " + m + ";\n";
      break;
    }
    default: { // the first extremal position, row-major
      std::string flat;
      for (size_t k = 0; k < r.args.size(); ++k)
        flat = k == 0 ? names_[r.args[k]]
                      : paren({flat, k == 1 ? 10 : 6}, 7) + " * " +
                            paren(polyExpr(in.extents[k]), 8) + " + " + names_[r.args[k]];
      const char* cmp = in.op == Op::ArgMax ? " > " : " < ";
      out += inner + pos + " = select(" + v + cmp + acc + ", " + flat + ", " + pos + ");\n";
      out +=
          inner + acc + " = " + (in.op == Op::ArgMax ? "max(" : "min(") + acc + ", " + v + ");\n";
      break;
    }
    }
    closeLoops(r.args.size(), out, inner);
    if (in.op == Op::ReduceLse) {
      std::string n = fresh("t", letCount_);
      out += indent + "let " + n + " = " + acc + " + log(" + sum + ");\n";
      acc = n;
    }
    names_[in.result] = in.op == Op::ArgMax || in.op == Op::ArgMin ? pos : acc;
  }

  // --- expressions ------------------------------------------------------------------------

  Expr expr(int v) {
    auto it = names_.find(v);
    if (it != names_.end()) return {it->second, 10};
    auto d = defs_.find(v);
    if (d == defs_.end() || !d->second)
      throw NotPrintable("internal: no definition for %" + std::to_string(v));
    return exprOf(*d->second);
  }
  static std::string paren(const Expr& e, int need) {
    return e.prec >= need ? e.s : "(" + e.s + ")";
  }

  static std::string number(double v, DType t) {
    if (std::isnan(v)) return "(0.0 / 0.0)";
    if (std::isinf(v)) return v > 0 ? "(1.0 / 0.0)" : "(-1.0 / 0.0)";
    char buf[64];
    auto r = t == DType::F32 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
                             : std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  }

  Expr exprOf(const Instr& in) {
    if (needsStatements(in))
      throw NotPrintable(std::string("internal: '") + ir::opName(in.op) +
                         "' used as an expression");
    const ir::Type& t = in.result >= 0 ? f_.types[in.result] : ir::Type{};
    auto a = [&](int k) { return expr(in.args[k]); };
    auto bin = [&](const char* op, int lp, int rp, int prec) {
      return Expr{paren(a(0), lp) + " " + op + " " + paren(a(1), rp), prec};
    };
    switch (in.op) {
    case Op::Const: {
      if (t.dtype == DType::Bool) return {in.ival ? "true" : "false", 10};
      std::string s = isFloat(t.dtype) ? number(in.fval, t.dtype) : std::to_string(in.ival);
      if (s[0] == '-') return {s, 8};
      return {s, 10};
    }
    case Op::Size: return polyExpr(in.poly);
    case Op::Neg: return {"-" + paren(a(0), 9), 8};
    case Op::Not: return {"!" + paren(a(0), 9), 8};
    case Op::Cast:
      if (t.dtype == DType::Bool) return {paren(a(0), 6) + " != 0", 5};
      return {std::string(dtypeName(t.dtype)) + "(" + a(0).s + ")", 10};
    case Op::Add: return bin("+", 6, 7, 6);
    case Op::Sub: return bin("-", 6, 7, 6);
    case Op::Mul:
      if (in.args[0] == in.args[1]) return {paren(a(0), 10) + "^2", 9}; // x * x reads as x^2
      return bin("*", 7, 8, 7);
    case Op::Div:
      if (!isFloat(t.dtype)) return {"div(" + a(0).s + ", " + a(1).s + ")", 10};
      return bin("/", 7, 8, 7);
    case Op::Mod: return bin("%", 7, 8, 7);
    case Op::Powi: return {paren(a(0), 10) + "^" + paren(a(1), 8), 9};
    case Op::Lt: return bin("<", 6, 6, 5);
    case Op::Le: return bin("<=", 6, 6, 5);
    case Op::Gt: return bin(">", 6, 6, 5);
    case Op::Ge: return bin(">=", 6, 6, 5);
    case Op::Eq: return bin("==", 6, 6, 5);
    case Op::Ne: return bin("!=", 6, 6, 5);
    case Op::And: return bin("&&", 4, 5, 4);
    case Op::Or: return bin("||", 3, 4, 3);
    case Op::Pow:
    case Op::Atan2:
    case Op::Min:
    case Op::Max: return {std::string(ir::opName(in.op)) + "(" + a(0).s + ", " + a(1).s + ")", 10};
    case Op::Select: return {"select(" + a(0).s + ", " + a(1).s + ", " + a(2).s + ")", 10};
    case Op::Load: {
      if (in.args.size() == 1) return a(0); // a scalar var
      Expr base = a(0);
      if (base.prec < 10 || !isName(base.s))
        throw NotPrintable("internal: a subscript of an unnamed tensor");
      return {base.s + "[" + subscripts(in, 1, in.args.size()) + "]", 10};
    }
    case Op::Stack: {
      // Nested literal from the flat elements.
      std::vector<int64_t> shape;
      for (const Poly& p : t.shape)
        shape.push_back(*p.constValue());
      size_t pos = 0;
      std::function<std::string(size_t)> lit = [&](size_t d) -> std::string {
        std::string s = "[";
        for (int64_t k = 0; k < shape[d]; ++k) {
          s += k ? ", " : "";
          s += d + 1 == shape.size() ? expr(in.args[pos++]).s : lit(d + 1);
        }
        return s + "]";
      };
      return {lit(0), 10};
    }
    case Op::ReduceSum:
    case Op::ReduceProd:
    case Op::ReduceMax:
    case Op::ReduceMin:
    case Op::ReduceLse: {
      static const std::map<Op, const char*> n = {{Op::ReduceSum, "sum"},
                                                  {Op::ReduceProd, "prod"},
                                                  {Op::ReduceMax, "max"},
                                                  {Op::ReduceMin, "min"},
                                                  {Op::ReduceLse, "logsumexp"}};
      return {std::string(n.at(in.op)) + "[" + indexList(in) + "](" + regionBody(in).s + ")", 10};
    }
    case Op::ArgMax:
    case Op::ArgMin: {
      // The first extremal position: the smallest flat index whose element equals the extreme.
      const Block& r = in.regions[0];
      std::string body = bodyExpr(r).s;
      std::string flat;
      Poly total(1);
      for (size_t k = 0; k < r.args.size(); ++k) {
        flat = k == 0 ? names_[r.args[k]]
                      : paren({flat, k == 1 ? 10 : 6}, 7) + " * " +
                            paren(polyExpr(in.extents[k]), 8) + " + " + names_[r.args[k]];
        total = total * in.extents[k];
      }
      // The extreme is computed with fresh index names (the same body, renamed).
      std::map<int, std::string> saved = names_;
      for (int x : r.args)
        names_[x] = names_[x] + "m";
      std::string inner = bodyExpr(r).s;
      std::string mIdx;
      for (size_t k = 0; k < r.args.size(); ++k)
        mIdx += (k ? ", " : "") + names_[r.args[k]] + ": " + extent(in.extents[k]);
      names_ = saved;
      std::string ext =
          std::string(in.op == Op::ArgMax ? "max" : "min") + "[" + mIdx + "](" + inner + ")";
      return {"min[" + indexList(in) + "](select(" + body + " == " + ext + ", " + flat + ", " +
                  polyExpr(total).s + "))",
              10};
    }
    case Op::If:
      // Both branches are single expressions here (else needsStatements).
      return {"if " + a(0).s + " { " + bodyExpr(in.regions[0]).s + " } else { " +
                  bodyExpr(in.regions[1]).s + " }",
              // An if is a primary, but a following operator would be read as part of the
              // else branch's block; parenthesise it wherever it is an operand.
              0};
    default: break;
    }
    if (ir::opKind(in.op) == ir::OpKind::Unary)
      return {std::string(ir::opName(in.op)) + "(" + a(0).s + ")", 10};
    throw NotPrintable(std::string("no Slope form for '") + ir::opName(in.op) + "'");
  }

  Expr polyExpr(const Poly& p) {
    std::string s = extent(p, true);
    if (p.terms().size() > 1 || s[0] == '-') return {s, 6};
    return {s, s.find('*') != std::string::npos ? 7 : 10};
  }

  std::string indexList(const Instr& in) {
    const Block& r = in.regions[0];
    std::string s;
    for (size_t k = 0; k < r.args.size(); ++k)
      s += (k ? ", " : "") + names_[r.args[k]] + ": " + extent(in.extents[k]);
    return s;
  }

  const ir::Function& f_;
  std::string name_;
  std::shared_ptr<Helpers> helpers_;
  bool nested_ = false; // printing a helper: the top printer appends the helpers
  DType weakFloat_ = DType::F64;
  std::map<int, int> uses_, depth_, useDepth_;
  std::map<int, const Instr*> defs_;
  std::map<int, std::string> names_;
  std::set<int> bufs_;
  std::map<int, std::set<int>> reads_;
  std::map<const Instr*, bool> needs_;
  std::map<std::string, std::string> sizeAlias_, valueAlias_;
  std::map<const Instr*, std::string> defText_; // recovered size.defs: their affine text
  std::map<std::string, bool> recovered_;       // by name, as the walk meets them
  std::set<const Instr*> letExtent_;            // regions over a let extent
  std::set<int> plainArgs_;                     // their indices (plain i64 values)
  std::map<const Instr*, int> extremeOf_;       // argmax -> the same max, computed before
  std::map<const Instr*, Helper> bodyHelper_;   // regions whose body prints as a call
  int letCount_ = 0, indexCount_ = 0, varCount_ = 0, condCount_ = 0, onceCount_ = 0;
  std::set<std::string> taken_;
};

// ---------------------------------------------------------------------------------------------
// Choosing the form

/// Operations a function executes, estimated from its IR at the given sizes, counted as the
/// evaluator counts them (extraOps, stepOps; a size computed in the function counts as
/// `other`). Which branch of an if runs is data; the
/// cheaper one counts (a costly branch is usually the rare case, a zero in prod's adjoint).
double staticCost(const ir::Function& f, const Block& b,
                  const std::map<std::string, int64_t>& sizes, int64_t other) {
  auto eval = [&](const Poly& p) {
    std::map<std::string, int64_t> all = sizes;
    for (const auto& s : p.names())
      all.emplace(s, other);
    return static_cast<double>(std::max<int64_t>(0, p.eval(all).value_or(other)));
  };
  double c = 0;
  for (const Instr& in : b.body) {
    if (!isFree(in.op)) c += static_cast<double>(1 + extraOps(in.op));
    if (in.regions.empty()) continue;
    if (in.op == Op::If) {
      c += std::min(staticCost(f, in.regions[0], sizes, other),
                    staticCost(f, in.regions[1], sizes, other));
      continue;
    }
    double trips = 1;
    for (const Poly& p : in.extents)
      trips *= eval(p);
    c += trips * (staticCost(f, in.regions[0], sizes, other) + static_cast<double>(stepOps(in.op)));
  }
  return c;
}

/// Size probes: every size at 8, every size at 64, and each size in turn at 64 with the others
/// at 8 (a term of a higher order in any one size shows in one of them).
std::vector<std::map<std::string, int64_t>> sizeProbes(const ir::Function& f) {
  std::vector<std::string> names = f.sizeNames();
  std::vector<std::map<std::string, int64_t>> probes(2);
  for (const auto& n : names) {
    probes[0][n] = 8;
    probes[1][n] = 64;
  }
  for (const auto& n : names) {
    probes.push_back(probes[0]);
    probes.back()[n] = 64;
  }
  for (auto& p : probes)
    f.deriveSizes(p);
  return probes;
}

/// The operations a compiled function executes, estimated from its IR at the probes. A trip
/// count computed in the function counts as 1: the guarded loops of an if (`for k in
/// 0..i64(c)`) run once or not at all, and a triangular extent is one in both functions.
std::vector<double> compiledCost(const ir::Function& f) {
  std::vector<double> out;
  for (const auto& sizes : sizeProbes(f))
    out.push_back(staticCost(f, f.body, sizes, 1));
  return out;
}

/// The candidate text whose compiled form costs least against the gradient `g` (its worst
/// ratio over the size probes); an earlier, more readable one wins within 2%. The estimate is
/// read off the IR the printed source compiles to: what a reader running it would get. A
/// candidate that does not compile is never chosen (when none does, the last is returned, and
/// compiling it shows the error).
std::string cheapest(const std::vector<std::string>& texts, const ir::Function& g) {
  std::vector<double> base = compiledCost(g);
  double best = INFINITY;
  const std::string* pick = nullptr;
  for (const std::string& t : texts) {
    auto p = Program::fromString(g.name + " (printed)", t);
    if (!p->ok() || !p->hasFunction(g.name)) continue;
    std::vector<double> c = compiledCost(p->forward(g.name));
    double worst = 0;
    for (size_t k = 0; k < c.size() && k < base.size(); ++k)
      worst = std::max(worst, (c[k] + 1) / (base[k] + 1));
    if (worst < best / 1.02) {
      best = std::min(best, worst);
      pick = &t;
    }
  }
  return pick ? *pick : texts.back();
}

} // namespace

/// The definition in Slope of a polygamma function the language lacks (`name` of dtype t):
/// the reflection's argument r = 1 - x below 0.5, ten steps of the recurrence from r (`step`
/// adds a term to s and runs with y = r, r + 1, ...), then `tail`: the asymptotic series at
/// y = r + 10 >= 10.5 and the result.
static std::string polygammaSource(const std::string& name, const std::string& comment,
                                   const std::string& t, const std::string& step,
                                   const std::string& tail) {
  return "\n// " + comment + "\nfn " + name + "(x: " + t + ") -> " + t +
         " {\n"
         "    let pi = 3.141592653589793;\n"
         "    let r = if x < 0.5 { 1 - x } else { x };\n"
         "    var s = " +
         t +
         "(0);\n"
         "    var y = r;\n"
         "    for k in 0..10 {\n"
         "        " +
         step +
         "\n"
         "        y = y + 1;\n"
         "    }\n" +
         tail + "}\n";
}

/// digamma, lgamma's derivative, is an op of the IR but not a function of the language
/// (LANGUAGE.md), so a printed gradient that calls it carries its definition in Slope: the
/// recurrence psi(x) = psi(x + 10) - sum 1 / (x + k) up to x + 10 >= 10.5, the asymptotic
/// series there (error below 1e-15), and the reflection psi(x) = psi(1 - x) - pi / tan(pi x)
/// below 0.5. It agrees with the compiled digamma (compiler/support/special.cpp) to about
/// 1e-14 relative, away from the poles.
static std::string digammaSource(const std::string& t) {
  return polygammaSource(
      "digamma", "lgamma's derivative, written out: the language has no digamma.", t,
      "s = s - 1 / y;",
      "    let z = 1 / (y * y);\n"
      "    let series = z * (1 / 12 - z * (1 / 120 - z * (1 / 252 - z * (1 / 240 - z * (1 / 132 "
      "- z * (691 / 32760 - z / 12))))));\n"
      "    let psi = s + log(y) - 0.5 / y - series;\n"
      "    if x < 0.5 { psi - pi / tan(pi * x) } else { psi }\n");
}

/// trigamma, digamma's derivative (in the HVP of a function with lgamma), likewise: the
/// recurrence psi'(x) = psi'(x + 10) + sum 1 / (x + k)^2, the asymptotic series at x + 10 >=
/// 10.5 (through B_14), and the reflection psi'(x) = pi^2 / sin^2(pi x) - psi'(1 - x) below
/// 0.5: compiler/support/special.cpp's computation for x >= 0.5.
static std::string trigammaSource(const std::string& t) {
  return polygammaSource(
      "trigamma", "digamma's derivative, written out: the language has no trigamma.", t,
      "s = s + 1 / (y * y);",
      "    let z = 1 / y;\n"
      "    let z2 = z * z;\n"
      "    let series = z * (1 + z * (1 / 2 + z * (1 / 6 - z2 * (1 / 30 - z2 * (1 / 42 - z2 * "
      "(1 / 30 - z2 * (5 / 66 - z2 * (691 / 2730 - z2 * 7 / 6))))))));\n"
      "    let psi1 = s + series;\n"
      "    if x < 0.5 { pi^2 / sin(pi * x)^2 - psi1 } else { psi1 }\n");
}

std::string printSlope(const ir::Function& gradient) {
  std::string out;
  try {
    // The printer rebuilds expression trees recursively (a sum of n terms nests n deep), so it
    // runs on a large stack, as the checker does.
    withLargeStack([&] {
      ir::Function direct = gradient;
      simplify(direct);
      // The candidates, most readable first: the accumulator-free form (gathers instead of
      // scatters), then the compiled gradient written statement by statement.
      std::vector<std::string> texts;
      // The accumulator-free form of g, without and with helper functions.
      auto pureForms = [&](const ir::Function& g) {
        try {
          Functionalizer fz(g);
          ir::Function pure = fz.run();
          simplify(pure);
          texts.push_back(Printer(pure, gradient.name).run());
          texts.push_back(Printer(pure, gradient.name, std::make_shared<Helpers>()).run());
        } catch (const NotPrintable&) {
        }
      };
      pureForms(direct);
      // The accumulator-free form again, after loop fission (values shared by several
      // accumulators computed once, as tensors).
      ir::Function split = direct;
      fission(split, split.body);
      simplify(split);
      pureForms(split);
      try {
        texts.push_back(Printer(direct, gradient.name, std::make_shared<Helpers>()).run());
      } catch (const NotPrintable&) {
      }
      try {
        texts.push_back(Printer(direct, gradient.name).run());
      } catch (const NotPrintable&) {
        if (texts.empty()) throw;
      }
      out = cheapest(texts, direct);
    });
  } catch (const NotPrintable& e) {
    throw SlopePrintError(std::string("cannot print '") + gradient.name +
                          "' as Slope source: " + e.what());
  }
  bool usesDigamma = false, usesTrigamma = false;
  ir::forEachInstr(gradient.body, [&](const ir::Instr& i) {
    usesDigamma |= i.op == Op::Digamma;
    usesTrigamma |= i.op == Op::Trigamma;
  });
  bool f32 = false;
  for (const ir::Type& t : gradient.paramTypes)
    f32 = f32 || t.dtype == DType::F32;
  if (usesDigamma) out += digammaSource(f32 ? "f32" : "f64");
  if (usesTrigamma) out += trigammaSource(f32 ? "f32" : "f64");
  return out;
}

} // namespace slope
