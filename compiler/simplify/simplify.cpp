#include "compiler/simplify/simplify.hpp"

#include "compiler/eval/interp.hpp"
#include "compiler/ir/builder.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;

/// What the rewrite rules see: the function and the constants known so far.
/// What the rules read of a value's definition: a copy of its op, operands and constant,
/// not of the whole instruction (names, extents, locations), since the body it points into is
/// being rewritten.
struct Def {
  Op op = Op::Const;
  std::vector<int> args;
  double fval = 0;
  int64_t ival = 0;
};

struct Ctx {
  ir::Function& f;
  std::unordered_map<int, Def> defs; // value -> its (region-free) definition
  const Def* def(int v) const {
    auto it = defs.find(v);
    return it == defs.end() ? nullptr : &it->second;
  }
  std::optional<double> constant(int v) const {
    const Def* d = def(v);
    if (!d || d->op != Op::Const) return {};
    return isFloat(f.types[v].dtype) ? d->fval : static_cast<double>(d->ival);
  }
  bool isConst(int v, double x) const {
    auto c = constant(v);
    return c && *c == x;
  }
  std::vector<Instr> pending; // instructions a rule made, inserted before the current one
  std::unordered_map<int, int> constComps; // comp whose every element is one constant -> it
};

/// A rule: if it applies to `in`, it returns the value that replaces in's result.
using RuleFn = std::function<std::optional<int>(const Instr& in, Ctx& c)>;

struct Rule {
  SimplifyRule info;
  RuleFn fn;
};

bool floatOp(const Instr& in, const Ctx& c) {
  return in.result >= 0 && isFloat(c.f.types[in.result].dtype);
}

// The rule list. "exact": the same value for every input, NaN and infinities included;
// "exact up to the sign of zero": may turn -0 into +0 (they compare equal).
const std::vector<Rule>& rules() {
  static const std::vector<Rule> r = {
      {{"mul-one", "x * 1 -> x, 1 * x -> x", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Mul) return {};
         if (c.isConst(in.args[1], 1)) return in.args[0];
         if (c.isConst(in.args[0], 1)) return in.args[1];
         return {};
       }},
      {{"int-mul-zero", "x * 0 -> 0 for integers", "exact (integers have no NaN)"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Mul || c.f.types[in.result].dtype != DType::I64) return {};
         if (c.isConst(in.args[1], 0)) return in.args[1];
         if (c.isConst(in.args[0], 0)) return in.args[0];
         return {};
       }},
      {{"div-one", "x / 1 -> x", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op == Op::Div && floatOp(in, c) && c.isConst(in.args[1], 1)) return in.args[0];
         return {};
       }},
      {{"add-zero", "x + 0 -> x, 0 + x -> x", "exact up to the sign of zero"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Add) return {};
         if (c.isConst(in.args[1], 0)) return in.args[0];
         if (c.isConst(in.args[0], 0)) return in.args[1];
         return {};
       }},
      {{"sub-zero", "x - 0 -> x", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op == Op::Sub && c.isConst(in.args[1], 0)) return in.args[0];
         return {};
       }},
      {{"neg-neg", "-(-x) -> x", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Neg) return {};
         const Def* d = c.def(in.args[0]);
         if (d && d->op == Op::Neg) return d->args[0];
         return {};
       }},
      {{"cast-same", "cast x to its own type -> x", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op == Op::Cast && c.f.types[in.args[0]].dtype == c.f.types[in.result].dtype)
           return in.args[0];
         return {};
       }},
      {{"mul-pow2", "c1 * (c2 * x) -> (c1 c2) * x when c1 or c2 is a power of two",
        "exact (scaling by a power of two rounds nothing)"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Mul || !floatOp(in, c)) return {};
         auto cv = [&](int v) { return c.constant(v); };
         auto pow2 = [](double x) {
           int e;
           return x != 0 && std::isfinite(x) && std::fabs(std::frexp(x, &e)) == 0.5;
         };
         auto c1 = cv(in.args[0]);
         const Def* d = c.def(in.args[1]);
         if (!c1 || !d || d->op != Op::Mul) return {};
         auto c2 = cv(d->args[0]);
         if (!c2 || !(pow2(*c1) || pow2(*c2))) return {};
         double k = *c1 * *c2;
         if (!std::isfinite(k) || k == 0) return {};
         // Emits the folded constant and product right away (they precede `in`).
         Instr kc;
         kc.op = Op::Const;
         kc.fval = k;
         kc.result = c.f.newValue(c.f.types[in.result]);
         Instr m;
         m.op = Op::Mul;
         m.args = {kc.result, d->args[1]};
         m.result = c.f.newValue(c.f.types[in.result]);
         c.pending.push_back(kc);
         c.pending.push_back(m);
         return m.result;
       }},
      {{"const-comp-load", "T[i] where T = comp [...] { c } -> c", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Load) return {};
         auto it = c.constComps.find(in.args[0]);
         if (it == c.constComps.end()) return {};
         return it->second;
       }},
      {{"select-same", "select(c, a, a) -> a", "exact"},
       [](const Instr& in, Ctx&) -> std::optional<int> {
         if (in.op == Op::Select && in.args[1] == in.args[2]) return in.args[1];
         return {};
       }},
      // A data-dependent loop's trip count is max(B - A, 0), written gt + select; for the
      // guarded loops `for k in 0..i64(c)` that print an if with effects (--emit slope) the
      // count is 0 or 1 already.
      {{"clamp-nonneg",
        "select(x > 0, x, 0) -> x for an x never negative (i64(bool), a size, a constant >= 0)",
        "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Select || c.f.types[in.result].dtype != DType::I64) return {};
         int x = in.args[1];
         const Def* g = c.def(in.args[0]);
         if (!g || g->op != Op::Gt || g->args[0] != x || !c.isConst(g->args[1], 0) ||
             !c.isConst(in.args[2], 0))
           return {};
         const Def* d = c.def(x);
         bool nonNeg = (d && d->op == Op::Cast && c.f.types[d->args[0]].dtype == DType::Bool) ||
                       (d && d->op == Op::Size) || (c.constant(x) && *c.constant(x) >= 0);
         if (nonNeg) return x;
         return {};
       }},
      {{"select-const", "select(true, a, b) -> a, select(false, a, b) -> b", "exact"},
       [](const Instr& in, Ctx& c) -> std::optional<int> {
         if (in.op != Op::Select) return {};
         if (c.isConst(in.args[0], 1)) return in.args[1];
         if (c.isConst(in.args[0], 0)) return in.args[2];
         return {};
       }},
  };
  return r;
}

// Rules that rewrite an instruction in place rather than replacing its value.
void rewriteInPlace(Instr& in, Ctx& c) {
  // a - (-b) -> a + b, a + (-b) -> a - b: exact.
  if ((in.op == Op::Sub || in.op == Op::Add) && floatOp(in, c)) {
    const Def* d = c.def(in.args[1]);
    if (d && d->op == Op::Neg) {
      in.op = in.op == Op::Sub ? Op::Add : Op::Sub;
      in.args[1] = d->args[0];
    }
  }
  // (-1) * x -> -x, x * (-1) -> -x: exact.
  if (in.op == Op::Mul && floatOp(in, c)) {
    if (c.isConst(in.args[0], -1))
      in.op = Op::Neg, in.args = {in.args[1]};
    else if (c.isConst(in.args[1], -1))
      in.op = Op::Neg, in.args = {in.args[0]};
  }
}

/// Removes the instructions of `body` whose `drop` flag is set, in place: the passes below
/// run several times a round over bodies of 100,000s of instructions, and a fresh vector each
/// time is fresh memory, page faults and all (half of a 16,000-step chain's simplify time).
/// Returns whether it removed any.
bool compact(std::vector<Instr>& body, const std::vector<char>& drop) {
  size_t w = 0;
  for (size_t n = 0; n < body.size(); ++n)
    if (!drop[n]) {
      if (w != n) body[w] = std::move(body[n]);
      ++w;
    }
  bool removed = w != body.size();
  body.erase(body.begin() + static_cast<std::ptrdiff_t>(w), body.end());
  return removed;
}

class Simplifier {
public:
  explicit Simplifier(ir::Function& f) : f_(f), ctx_{f, {}, {}, {}} {}
  void record(const Instr& in) {
    if (in.result < 0 || !in.regions.empty()) return;
    Def& d = ctx_.defs[in.result];
    d.op = in.op;
    d.args = in.args;
    d.fval = in.fval;
    d.ival = in.ival;
  }

  SimplifyStats stats;

  void run() {
    for (int round = 0; round < kMaxSimplifyRounds; ++round) {
      ++stats.rounds;
      changed_ = false;
      repl_.clear();
      ctx_.defs.clear();
      ctx_.constComps.clear();
      findBuffers(); // (rewrite's constant comprehensions must not be written)
      rewrite(f_.body);
      findBuffers();
      cse();
      promoteAccumulators(f_.body);
      applyReplacements(f_.body);
      countWrites();
      scatterToGather(f_.body);
      findBuffers(); // (scatter-to-gather turns buffers into comprehensions)
      copies(f_.body);
      applyReplacements(f_.body);
      forwardSnapshots(f_.body);
      narrowSnapshots();
      deadStores(f_.body);
      dce();
      hoist(f_.body);
      if (!changed_) break;
    }
  }

private:
  /// buffers_: memory rather than values: the buf.zeros results, and anything a buf.store or
  /// buf.add writes (scatter-to-gather turns an accumulator into a comprehension, and a later
  /// `dvar[i] = 0` still writes it). A value that is written is never a constant, a copy or a
  /// pure load. (Ids are never reused, so one that a later step of the round removes stays
  /// harmlessly in the set.)
  void findBuffers() {
    buffers_.clear();
    ir::forEachInstr(f_.body, [&](const Instr& i) {
      if (i.op == Op::BufZeros) buffers_.insert(i.result);
      if (i.op == Op::BufStore || i.op == Op::BufAdd) buffers_.insert(i.args[0]);
    });
  }
  int resolve(int v) const {
    int root = v;
    for (auto it = repl_.find(root); it != repl_.end(); it = repl_.find(root))
      root = it->second;
    // Path compression: a chain of n replacements (the adjoints of a sum of n terms, say)
    // would otherwise cost n for each of its n users.
    while (v != root) {
      int& next = repl_[v];
      v = next;
      next = root;
    }
    return root;
  }

  // --- folding and the rule list -----------------------------------------------------------
  void rewrite(Block& b) {
    // In place: a new body only when a rule emitted instructions (ctx_.pending).
    std::vector<std::pair<size_t, std::vector<Instr>>> emitted; // what goes before b.body[n]
    for (size_t n = 0; n < b.body.size(); ++n) {
      Instr& in = b.body[n];
      for (int& a : in.args)
        a = resolve(a);
      for (Block& r : in.regions)
        rewrite(r);
      if (in.result < 0) continue;
      ir::OpKind k = ir::opKind(in.op);
      if (k == ir::OpKind::Unary || k == ir::OpKind::Binary || k == ir::OpKind::Ternary ||
          in.op == Op::Load) {
        rewriteInPlace(in, ctx_);
        // Constant folding, with the evaluator's arithmetic.
        std::vector<Scalar> vals;
        bool all = true;
        for (int a : in.args) {
          const Def* d = ctx_.def(a);
          if (!d || d->op != Op::Const) {
            all = false;
            break;
          }
          vals.push_back({d->fval, d->ival});
        }
        Scalar out;
        if (all && foldConstant(f_, in, vals, out)) {
          in.op = Op::Const;
          in.args.clear();
          in.fval = isFloat(f_.types[in.result].dtype) ? out.f : static_cast<double>(out.i);
          in.ival = isFloat(f_.types[in.result].dtype) ? 0 : out.i;
          changed_ = true;
        } else {
          for (const Rule& r : rules())
            if (auto v = r.fn(in, ctx_)) {
              repl_[in.result] = *v;
              changed_ = true;
              break;
            }
        }
      }
      if (in.op == Op::Comp) {
        // Every element is the same constant: loads of it fold (the constant is defined in the
        // comprehension's body, so hoisting has moved it out, or it is outside already).
        int y = in.regions[0].yields.empty() ? -1 : in.regions[0].yields[0];
        const Def* d = y >= 0 ? ctx_.def(y) : nullptr;
        bool inside = false;
        for (const Instr& x : in.regions[0].body)
          inside = inside || x.result == y;
        if (d && d->op == Op::Const && !inside && !buffers_.count(in.result))
          ctx_.constComps[in.result] = y;
      }
      if (!ctx_.pending.empty()) {
        for (Instr& p : ctx_.pending)
          record(p);
        emitted.emplace_back(n, std::move(ctx_.pending));
        ctx_.pending.clear();
      }
      record(in);
    }
    insertBefore(b.body, emitted);
    for (int& y : b.yields)
      y = resolve(y);
  }

  // --- common subexpressions ---------------------------------------------------------------
  static std::string key(const Instr& in, const ir::Function& f) {
    std::string k = std::to_string(static_cast<int>(in.op)) + ":" + f.types[in.result].str() + ":";
    for (int a : in.args)
      k += std::to_string(a) + ",";
    if (in.op == Op::Const) {
      // Every bit of the constant (std::to_string keeps six decimals: sin(0.01) and 0.01 would
      // be one constant).
      uint64_t bits;
      std::memcpy(&bits, &in.fval, sizeof bits);
      k += isFloat(f.types[in.result].dtype) ? std::to_string(bits) : std::to_string(in.ival);
    }
    if (in.op == Op::Size) k += in.poly.str();
    return k;
  }
  void cse() {
    std::vector<std::map<std::string, int>> scopes;
    std::function<void(Block&)> walk = [&](Block& b) {
      scopes.emplace_back();
      for (Instr& in : b.body) {
        for (int& a : in.args)
          a = resolve(a);
        for (Block& r : in.regions)
          walk(r);
        if (in.result < 0 || !in.regions.empty() || in.op == Op::Param || in.op == Op::BufZeros ||
            in.op == Op::Stack)
          continue;
        // A load from an accumulator sees the adds before it: not a pure expression.
        if (in.op == Op::Load && buffers_.count(in.args[0])) continue;
        std::string k = key(in, f_);
        int found = -1;
        for (auto it = scopes.rbegin(); it != scopes.rend() && found < 0; ++it) {
          auto f = it->find(k);
          if (f != it->end()) found = f->second;
        }
        if (found >= 0) {
          repl_[in.result] = found;
          changed_ = true;
        } else {
          scopes.back()[k] = in.result;
        }
      }
      for (int& y : b.yields)
        y = resolve(y);
      scopes.pop_back();
    };
    walk(f_.body);
    applyReplacements(f_.body);
  }
  void applyReplacements(Block& b) {
    for (Instr& in : b.body) {
      for (int& a : in.args)
        a = resolve(a);
      for (Block& r : in.regions)
        applyReplacements(r);
    }
    for (int& y : b.yields)
      y = resolve(y);
  }

  // --- scalar accumulators -> values -------------------------------------------------------
  /// A rank-0 accumulator whose adds and loads all sit directly in the block that makes it is
  /// a running sum: each load becomes the sum of the adds before it.
  void promoteAccumulators(Block& b) {
    for (Instr& in : b.body)
      for (Block& r : in.regions)
        promoteAccumulators(r);
    std::map<int, int> direct; // buffer -> uses directly in b
    std::set<int> candidates;
    for (const Instr& in : b.body)
      if (in.op == Op::BufZeros && f_.types[in.result].rank() == 0) candidates.insert(in.result);
    if (candidates.empty()) return;
    // Any use nested in a region, or as a yield, disqualifies.
    for (const Instr& in : b.body)
      for (const Block& r : in.regions)
        ir::forEachInstr(r, [&](const Instr& i) {
          for (int a : i.args)
            candidates.erase(a);
        });
    // Yields of b itself become the final sum; yields of other blocks cannot see b's buffers.
    for (const Instr& in : b.body) {
      if (in.op == Op::BufAdd || in.op == Op::Load) continue;
      for (int a : in.args)
        candidates.erase(a);
    }
    if (candidates.empty()) return;
    std::map<int, int> sum; // buffer -> current value (-1: zero so far)
    std::vector<Instr> out;
    out.reserve(b.body.size());
    ir::Builder bld(f_);
    for (Instr& in : b.body) {
      if (in.op == Op::BufZeros && candidates.count(in.result)) {
        sum[in.result] = -1;
        changed_ = true;
        continue;
      }
      if (in.op == Op::BufAdd && candidates.count(in.args[0])) {
        int& s = sum[in.args[0]];
        int v = in.args.back();
        if (s < 0) {
          s = v;
        } else {
          Instr add;
          add.op = Op::Add;
          add.args = {s, v};
          add.result = f_.newValue(f_.types[v]);
          s = add.result;
          out.push_back(add);
        }
        continue;
      }
      if (in.op == Op::Load && candidates.count(in.args[0])) {
        int s = sum[in.args[0]];
        if (s < 0) { // nothing added: zero
          in.op = Op::Const;
          in.args.clear();
          in.fval = 0;
          in.ival = 0;
          out.push_back(std::move(in));
        } else {
          repl_[in.result] = s;
        }
        continue;
      }
      out.push_back(std::move(in));
    }
    b.body = std::move(out);
    for (int& y : b.yields) {
      auto it = sum.find(y);
      if (it == sum.end()) continue;
      if (it->second >= 0) {
        y = it->second;
      } else { // a result nothing was added to: zero
        Instr z;
        z.op = Op::Const;
        z.result = f_.newValue(f_.types[y]);
        b.body.push_back(z);
        y = z.result;
      }
    }
    // (run() then applies the replacements to the whole function once: doing it here, for
    // every block with an accumulator, made the pass quadratic in the number of blocks)
  }

  // --- scatter-adds -> gathers -------------------------------------------------------------
  /// addsTo_: buffer -> number of buf.add anywhere; stored_: buffers that some buf.store
  /// writes (an adjoint that a var write resets to zero is not a sum of its adds, and stays a
  /// buffer). Counted once for the whole function: a conversion removes only its target's
  /// adds, and that target is never converted again, so the counts stay right for the rest.
  void countWrites() {
    addsTo_.clear();
    stored_.clear();
    ir::forEachInstr(f_.body, [&](const Instr& i) {
      if (i.op == Op::BufAdd) ++addsTo_[i.args[0]];
      if (i.op == Op::BufStore) stored_.insert(i.args[0]);
    });
  }
  /// `B = buf.zeros; for [i < shape(B)] { ...; buf.add B[i], v1; ...; buf.add B[i], v2 }`
  /// where the loop does nothing else and nothing else adds to B is `B = comp [i] { ...;
  /// v1 + v2 }`: every element is written once, in order, with no read-modify-write (and no
  /// atomics on a GPU). Exact up to the sign of zero (0 + v1 + v2 versus v1 + v2).
  void scatterToGather(Block& b) {
    for (Instr& in : b.body)
      for (Block& r : in.regions)
        scatterToGather(r);
    std::map<int, size_t> zeros; // buffer -> position in b
    for (size_t k = 0; k < b.body.size(); ++k)
      if (b.body[k].op == Op::BufZeros && f_.types[b.body[k].result].rank() > 0)
        zeros[b.body[k].result] = k;
    for (Instr& loop : b.body) {
      if (loop.op != Op::For) continue;
      Block& body = loop.regions[0];
      int target = -1;
      int count = 0;
      bool ok = true;
      for (const Instr& x : body.body) {
        if (x.op == Op::BufAdd) {
          if (target >= 0 && x.args[0] != target) ok = false;
          target = x.args[0];
          ++count;
          std::vector<int> idx(x.args.begin() + 1, x.args.end() - 1);
          if (idx != body.args) ok = false;
        } else if (Simplifier::hasEffects(x)) {
          ok = false;
        }
      }
      if (!ok || target < 0 || !zeros.count(target) || addsTo_[target] != count ||
          stored_.count(target) || f_.types[target].shape != loop.extents)
        continue;
      // The loop becomes the comprehension; the accumulator goes.
      std::vector<Instr> keep;
      int sum = -1;
      for (Instr& x : body.body) {
        if (x.op != Op::BufAdd) {
          keep.push_back(std::move(x));
          continue;
        }
        int v = x.args.back();
        if (sum < 0) {
          sum = v;
        } else {
          Instr add;
          add.op = Op::Add;
          add.args = {sum, v};
          add.result = f_.newValue(f_.types[v]);
          sum = add.result;
          keep.push_back(add);
        }
      }
      body.body = std::move(keep);
      body.yields = {sum};
      loop.op = Op::Comp;
      loop.result = target;
      b.body[zeros[target]].op = Op::Const; // placeholder, removed below
      b.body[zeros[target]].result = -2;
      changed_ = true;
    }
    std::vector<char> drop(b.body.size(), 0);
    for (size_t n = 0; n < b.body.size(); ++n)
      drop[n] = b.body[n].result == -2;
    compact(b.body, drop);
  }

  // --- copies ------------------------------------------------------------------------------
  /// `comp [i < shape(T)] { load T[i] }` is T.
  void copies(Block& b) {
    for (Instr& in : b.body) {
      for (Block& r : in.regions)
        copies(r);
      if (in.op != Op::Comp) continue;
      const Block& r = in.regions[0];
      if (r.body.size() != 1 || r.yields.size() != 1) continue;
      const Instr& l = r.body[0];
      if (l.op != Op::Load || l.result != r.yields[0]) continue;
      std::vector<int> idx(l.args.begin() + 1, l.args.end());
      const ir::Type& src = f_.types[l.args[0]];
      if (idx != r.args || src.shape != in.extents || src.dtype != f_.types[in.result].dtype)
        continue;
      if (buffers_.count(l.args[0])) continue; // a copy of an accumulator is a snapshot
      if (buffers_.count(in.result)) continue; // a copy that is then written is a new buffer
      repl_[in.result] = l.args[0];
      changed_ = true;
    }
    // (run() applies the replacements once, after the whole function)
  }

  // --- loads through snapshots --------------------------------------------------------------
  static bool writes(const Instr& in, int buf) {
    bool w = false;
    auto check = [&](const Instr& i) {
      if ((i.op == Op::BufStore || i.op == Op::BufAdd) && i.args[0] == buf) w = true;
    };
    check(in);
    for (const Block& r : in.regions)
      ir::forEachInstr(r, check);
    return w;
  }
  static bool reads(const Instr& in, int buf) {
    bool rd = false;
    auto check = [&](const Instr& i) {
      if (i.op == Op::Load && i.args[0] == buf) rd = true;
      if (i.op == Op::BufAdd && i.args[0] == buf) rd = true;
      for (size_t k = 1; k < i.args.size(); ++k)
        if (i.args[k] == buf) rd = true; // any other use of the buffer as a value
    };
    check(in);
    for (const Block& r : in.regions)
      ir::forEachInstr(r, check);
    return rd;
  }
  /// Loads of `snap` in `in` (nested included) -> loads of buf at prefix ++ their indices.
  static void redirect(Instr& in, int snap, int buf, const std::vector<int>& prefix,
                       const Instr& copyLoad) {
    if (in.op == Op::Load && in.args[0] == snap) {
      std::vector<int> args{buf};
      args.insert(args.end(), prefix.begin(), prefix.end());
      args.insert(args.end(), in.args.begin() + 1, in.args.end());
      in.args = std::move(args);
      in.checked = in.checked && copyLoad.checked;
      in.name = copyLoad.name;
      if (!copyLoad.checked) in.loc = copyLoad.loc;
    }
    for (Block& r : in.regions)
      for (Instr& i : r.body)
        redirect(i, snap, buf, prefix, copyLoad);
  }
  /// Whether `q`, which writes buf and reads snap (a copy of buf at prefix), updates buf in
  /// place element by element: a `for` whose iterations each read snap only where they then
  /// write buf, at an index that differs between iterations, so every read sees the value
  /// from before q, as through the copy.
  bool inPlace(const Instr& q, int snap, int buf, const std::vector<int>& prefix) const {
    if (q.op != Op::For || q.ival != 0) return false;
    const Block& r = q.regions[0];
    std::set<int> inside = ir::definedIn(r);
    ir::forEachInstr(r, [&](const Instr& i) { // (and the indices of nested regions)
      for (const Block& nr : i.regions)
        inside.insert(nr.args.begin(), nr.args.end());
    });
    std::optional<std::vector<int>> where; // the one index q writes buf at
    bool storeSeen = false;
    std::vector<const Instr*> loads, late; // of snap; those after the store
    for (const Instr& i : r.body) {
      bool direct = (i.op == Op::BufStore || i.op == Op::BufAdd) && i.args[0] == buf;
      if (direct) {
        std::vector<int> idx(i.args.begin() + 1, i.args.end() - 1);
        if (where && *where != idx) return false;
        where = idx;
        storeSeen = true;
        continue;
      }
      if (!i.regions.empty()) {
        if (writes(i, buf)) return false;
        // Reads of snap nested in a region that does not write buf (the reduction of a
        // matrix-vector product): each must be a plain load, judged like a direct one below.
        bool plain = true;
        for (const Block& nr : i.regions)
          ir::forEachInstr(nr, [&](const Instr& x) {
            for (const Block& xb : x.regions)
              for (int y : xb.yields)
                plain = plain && y != snap;
            if (x.op == Op::Load && x.args[0] == snap) {
              loads.push_back(&x);
              if (storeSeen) late.push_back(&x);
              for (size_t k = 1; k < x.args.size(); ++k)
                plain = plain && x.args[k] != snap;
              return;
            }
            for (int a : x.args)
              plain = plain && a != snap;
          });
        for (const Block& nr : i.regions)
          for (int y : nr.yields)
            plain = plain && y != snap;
        if (!plain) return false;
      }
      if (i.op == Op::Load && i.args[0] == snap) {
        loads.push_back(&i);
        if (storeSeen) late.push_back(&i);
        continue;
      }
      for (int a : i.args)
        if (a == snap) return false;
    }
    if (!where) return false;
    for (int a : r.args)
      if (std::count(where->begin(), where->end(), a) != 1) return false;
    for (int v : *where)
      if (inside.count(v) && std::find(r.args.begin(), r.args.end(), v) == r.args.end())
        return false;
    // Each read is where its own iteration writes, before the write, or where q never
    // writes: a subscript fixed for all of q that differs from the written one (the row
    // before the one being written: M[t] = f(M[t - 1])).
    for (const Instr* i : loads) {
      std::vector<int> idx = prefix;
      idx.insert(idx.end(), i->args.begin() + 1, i->args.end());
      bool elsewhere = false;
      for (size_t c = 0; c < idx.size() && c < where->size(); ++c)
        elsewhere = elsewhere || (!inside.count(idx[c]) && !inside.count((*where)[c]) &&
                                  differ(idx[c], (*where)[c]));
      if (elsewhere) continue;
      if (idx != *where || std::count(late.begin(), late.end(), i)) return false;
    }
    return true;
  }
  /// In an element-wise `for` q whose only writes of buf are direct stores at one index, the
  /// loads of snap (a copy of buf at prefix, taken before q) at an index that differs from the
  /// written one in some subscript fixed for all of q read elements q never writes: they read
  /// buf itself (`M[t] = tanh(W @ M[t]) + M[t - 1]` reads row t - 1 of M directly, and only
  /// row t through a copy). Returns whether any was redirected.
  bool redirectUntouched(Instr& q, int snap, int buf, const std::vector<int>& prefix,
                         const Instr& copyLoad) {
    if (q.op != Op::For || q.ival != 0) return false;
    Block& r = q.regions[0];
    std::optional<std::vector<int>> where;
    for (const Instr& i : r.body) {
      if ((i.op == Op::BufStore || i.op == Op::BufAdd) && i.args[0] == buf) {
        std::vector<int> idx(i.args.begin() + 1, i.args.end() - 1);
        if (where && *where != idx) return false;
        where = idx;
      } else if (!i.regions.empty() && writes(i, buf)) {
        return false;
      }
    }
    if (!where) return false;
    const std::set<int> inside = ir::definedIn(r);
    std::set<int> nestedArgs; // (definedIn leaves out the indices of nested regions)
    ir::forEachInstr(r, [&](const Instr& i) {
      for (const Block& nr : i.regions)
        nestedArgs.insert(nr.args.begin(), nr.args.end());
    });
    auto fixed = [&](int v) { return !inside.count(v) && !nestedArgs.count(v); };
    bool any = false;
    std::function<void(Block&)> walk = [&](Block& b) {
      for (Instr& i : b.body) {
        for (Block& nr : i.regions)
          walk(nr);
        if (i.op != Op::Load || i.args[0] != snap) continue;
        std::vector<int> idx = prefix;
        idx.insert(idx.end(), i.args.begin() + 1, i.args.end());
        bool elsewhere = false;
        for (size_t c = 0; c < idx.size() && c < where->size(); ++c)
          elsewhere =
              elsewhere || (fixed(idx[c]) && fixed((*where)[c]) && differ(idx[c], (*where)[c]));
        if (!elsewhere) continue;
        redirect(i, snap, buf, prefix, copyLoad);
        any = true;
      }
    };
    walk(r);
    return any;
  }
  /// Whether two i64 values always differ: distinct constants, or a value and the same value
  /// plus or minus a nonzero constant.
  bool differ(int a, int b) const {
    auto def = [&](int v) -> const Instr* {
      auto it = defs_.find(v);
      return it == defs_.end() ? nullptr : it->second;
    };
    auto nonzeroConst = [&](int v) {
      const Instr* d = def(v);
      return d && d->op == Op::Const && f_.types[v].dtype == DType::I64 && d->ival != 0;
    };
    auto offset = [&](int x, int y) { // x = y +- c, c != 0
      const Instr* d = def(x);
      if (!d || (d->op != Op::Add && d->op != Op::Sub)) return false;
      if (d->args[0] == y && nonzeroConst(d->args[1])) return true;
      return d->op == Op::Add && d->args[1] == y && nonzeroConst(d->args[0]);
    };
    const Instr *da = def(a), *db = def(b);
    if (da && db && da->op == Op::Const && db->op == Op::Const && f_.types[a].dtype == DType::I64 &&
        f_.types[b].dtype == DType::I64)
      return da->ival != db->ival;
    return offset(a, b) || offset(b, a);
  }
  /// Whether `s` is `S = comp [j...] { load B[p..., j...] }` (B a buffer, p fixed before s),
  /// a copy of part of B; if so, p.
  std::optional<std::vector<int>> copyPrefix(const Instr& s) const {
    if (s.op != Op::Comp || s.result < 0) return std::nullopt;
    const Block& r = s.regions[0];
    if (r.body.size() != 1 || r.yields.size() != 1) return std::nullopt;
    const Instr& l = r.body[0];
    if (l.op != Op::Load || l.result != r.yields[0] || !buffers_.count(l.args[0]))
      return std::nullopt;
    size_t rank = r.args.size();
    if (l.args.size() < 1 + rank) return std::nullopt;
    std::vector<int> prefix(l.args.begin() + 1, l.args.end() - static_cast<long>(rank));
    if (!std::equal(r.args.begin(), r.args.end(), l.args.end() - static_cast<long>(rank)))
      return std::nullopt;
    for (int p : prefix)
      if (std::count(r.args.begin(), r.args.end(), p)) return std::nullopt;
    return prefix;
  }
  /// `S = comp [j...] { load B[p..., j...] }` copies part of a buffer B (a var's snapshot, a
  /// tape's row). Until something writes B again, a load S[i...] reads what B[p..., i...]
  /// holds: loads before the next write (or within an element-wise in-place update of B, see
  /// inPlace) read B directly, and the copy goes when nothing else reads it.
  void forwardSnapshots(Block& b) {
    if (&b == &f_.body) {
      defs_.clear();
      ir::forEachInstr(f_.body, [&](const Instr& i) {
        if (i.result >= 0) defs_[i.result] = &i;
      });
    }
    for (Instr& in : b.body)
      for (Block& r : in.regions)
        forwardSnapshots(r);
    for (size_t n = 0; n < b.body.size(); ++n) {
      const Instr& s = b.body[n];
      std::optional<std::vector<int>> pre = copyPrefix(s);
      if (!pre) continue;
      const std::vector<int> prefix = *pre;
      const Instr& l = s.regions[0].body[0];
      int snap = s.result, buf = l.args[0];
      const Instr copyLoad = l;
      for (size_t m = n + 1; m < b.body.size(); ++m) {
        Instr& q = b.body[m];
        bool w = writes(q, buf);
        if (!reads(q, snap)) {
          if (w) break;
          continue;
        }
        if (w && !inPlace(q, snap, buf, prefix)) {
          // Not all of q's reads can go to buf; those of elements q never writes can.
          if (redirectUntouched(q, snap, buf, prefix, copyLoad)) changed_ = true;
          break;
        }
        redirect(q, snap, buf, prefix, copyLoad);
        changed_ = true;
        if (w) break;
      }
    }
  }

  /// A copy that reading through (forwardSnapshots) could not remove, `S = comp [j...] {
  /// load B[p..., j...] }`, whose every use is a load S[q..., i...] with the same leading
  /// subscripts q, proven in range: only that part is copied, `S' = comp [i...] { load
  /// B[p..., q..., i...] }`, placed just before S's first reader (nothing writes B in between,
  /// so it copies what S did). `M[t] = tanh(W @ M[t])` copies row t, not all of M; the loads
  /// of the narrower copy may then be read through in turn.
  void narrowSnapshots() {
    std::unordered_map<int, std::vector<const Instr*>> loadsOf;
    std::set<int> otherUse;
    ir::forEachInstr(f_.body, [&](const Instr& i) {
      for (size_t k = 0; k < i.args.size(); ++k)
        if (k == 0 && i.op == Op::Load)
          loadsOf[i.args[0]].push_back(&i);
        else
          otherUse.insert(i.args[k]);
      for (const Block& r : i.regions)
        otherUse.insert(r.yields.begin(), r.yields.end());
    });
    otherUse.insert(f_.body.yields.begin(), f_.body.yields.end());
    struct Plan {
      Block* block;
      size_t at;
      Instr copy; // S (by value: inserting into a block moves its instructions)
      size_t common;
      std::vector<int> q; // the common subscripts
    };
    std::vector<Plan> plans;
    std::function<void(Block&)> scan = [&](Block& b) {
      for (Instr& in : b.body)
        for (Block& r : in.regions)
          scan(r);
      for (size_t n = 0; n < b.body.size(); ++n) {
        const Instr& s = b.body[n];
        if (!copyPrefix(s) || otherUse.count(s.result)) continue;
        auto it = loadsOf.find(s.result);
        if (it == loadsOf.end()) continue;
        const std::vector<const Instr*>& ls = it->second;
        size_t common = s.extents.size();
        bool proven = true;
        for (const Instr* l : ls) {
          proven = proven && l->checked;
          size_t c = 0;
          while (c < common && l->args[1 + c] == ls[0]->args[1 + c])
            ++c;
          common = c;
        }
        if (!proven || common == 0) continue;
        // The first reader, with no write to B before it; the common subscripts defined
        // before it (or outside b).
        int buf = s.regions[0].body[0].args[0];
        size_t at = n + 1;
        while (at < b.body.size() && !reads(b.body[at], s.result) && !writes(b.body[at], buf))
          ++at;
        if (at == b.body.size() || !reads(b.body[at], s.result)) continue;
        std::set<int> later;
        for (size_t m = 0; m < b.body.size(); ++m) {
          if (m >= at && b.body[m].result >= 0) later.insert(b.body[m].result);
          for (const Block& r : b.body[m].regions) {
            later.insert(r.args.begin(), r.args.end());
            ir::forEachInstr(r, [&](const Instr& i) {
              if (i.result >= 0) later.insert(i.result);
              for (const Block& ir : i.regions)
                later.insert(ir.args.begin(), ir.args.end());
            });
          }
        }
        size_t avail = 0;
        while (avail < common && !later.count(ls[0]->args[1 + avail]))
          ++avail;
        if (avail == 0) continue;
        std::vector<int> q(ls[0]->args.begin() + 1,
                           ls[0]->args.begin() + 1 + static_cast<long>(avail));
        plans.push_back({&b, at, s, avail, q});
      }
    };
    scan(f_.body);
    // Apply from the last position of each block, so the earlier positions stay valid.
    std::stable_sort(plans.begin(), plans.end(), [](const Plan& x, const Plan& y) {
      return x.block != y.block ? std::less<Block*>()(x.block, y.block) : x.at > y.at;
    });
    std::unordered_map<int, std::pair<int, size_t>> narrowed; // S -> (S', subscripts dropped)
    for (const Plan& p : plans) {
      const Instr& l = p.copy.regions[0].body[0];
      size_t rank = p.copy.extents.size();
      DType dt = f_.types[p.copy.result].dtype;
      Instr load = l; // (its name, location and proof)
      load.args.assign(l.args.begin(), l.args.end() - static_cast<long>(rank));
      load.args.insert(load.args.end(), p.q.begin(), p.q.end());
      Instr out;
      if (p.common == rank) { // one element: a load, not a copy
        load.result = f_.newValue(ir::Type{dt, {}});
        out = std::move(load);
      } else {
        out.op = Op::Comp;
        out.loc = p.copy.loc;
        out.extents.assign(p.copy.extents.begin() + static_cast<long>(p.common),
                           p.copy.extents.end());
        out.result = f_.newValue(ir::Type{dt, out.extents});
        Block r;
        for (size_t d = p.common; d < rank; ++d) {
          r.args.push_back(f_.newValue(ir::Type{DType::I64, {}}));
          load.args.push_back(r.args.back());
        }
        load.result = f_.newValue(ir::Type{dt, {}});
        r.yields = {load.result};
        r.body.push_back(std::move(load));
        out.regions.push_back(std::move(r));
      }
      narrowed[p.copy.result] = {out.result, p.common};
      p.block->body.insert(p.block->body.begin() + static_cast<long>(p.at), std::move(out));
      changed_ = true;
    }
    if (narrowed.empty()) return;
    // Loads of S -> loads of S' (or its one element); S is then dead and dce removes it.
    std::function<void(Block&)> redirectAll = [&](Block& b) {
      for (Instr& i : b.body) {
        for (Block& r : i.regions)
          redirectAll(r);
        if (i.op != Op::Load) continue;
        auto it = narrowed.find(i.args[0]);
        if (it == narrowed.end()) continue;
        auto [to, dropped] = it->second;
        if (i.args.size() == 1 + dropped) {
          repl_[i.result] = to;
          continue;
        }
        std::vector<int> args{to};
        args.insert(args.end(), i.args.begin() + 1 + static_cast<long>(dropped), i.args.end());
        i.args = std::move(args);
      }
    };
    redirectAll(f_.body);
    applyReplacements(f_.body);
  }

  // --- dead stores -------------------------------------------------------------------------
  /// Within a block: a store to B[I] that a later store to B[I] overwrites before anything
  /// reads B is dead; and `v = load B[I]; ...; store B[I], v` with no write to B in between
  /// stores what is already there. (What reversing a recomputed write leaves: the write, then
  /// putting back the value it overwrote.)
  void deadStores(Block& b) {
    if (&b == &f_.body) {
      zeroConsts_.clear();
      ir::forEachInstr(f_.body, [&](const Instr& i) {
        bool zero = i.op == Op::Const &&
                    (isFloat(f_.types[i.result].dtype) ? i.fval == 0 && !std::signbit(i.fval)
                                                       : i.ival == 0);
        if (zero) zeroConsts_.insert(i.result);
      });
    }
    for (Instr& in : b.body)
      for (Block& r : in.regions)
        deadStores(r);
    std::vector<char> drop(b.body.size(), 0);
    // zero-init: stores of +0 into a buffer that buf.zeros made and nothing has written since
    // (`var b = zeros(f64[n])` is buf.zeros and then a loop storing 0.0 into every element).
    auto zeroStores = [&](const Instr& q, int buf) {
      auto isZeroStore = [&](const Instr& i) {
        // (only subscripts proven in range: a store that would fail must still fail)
        return i.op == Op::BufStore && i.args[0] == buf && i.checked &&
               zeroConsts_.count(i.args.back());
      };
      if (isZeroStore(q)) return true;
      if (q.op != Op::For) return false;
      for (const Instr& i : q.regions[0].body)
        if (i.op != Op::Const && !isZeroStore(i)) return false;
      return true;
    };
    for (size_t n = 0; n < b.body.size(); ++n) {
      if (b.body[n].op != Op::BufZeros) continue;
      int buf = b.body[n].result;
      for (size_t m = n + 1; m < b.body.size(); ++m) {
        if (zeroStores(b.body[m], buf))
          drop[m] = 1;
        else if (writes(b.body[m], buf))
          break;
      }
    }
    auto index = [](const Instr& st) {
      return std::vector<int>(st.args.begin() + 1, st.args.end() - 1);
    };
    for (size_t n = 0; n < b.body.size(); ++n) {
      const Instr& st = b.body[n];
      if (st.op != Op::BufStore || drop[n]) continue;
      int buf = st.args[0];
      for (size_t m = n + 1; m < b.body.size(); ++m) {
        const Instr& q = b.body[m];
        if (q.op == Op::BufStore && q.args[0] == buf && index(q) == index(st) && !reads(q, buf)) {
          drop[n] = 1;
          break;
        }
        if (reads(q, buf) || writes(q, buf)) break;
      }
      if (drop[n]) continue;
      // store B[I], v where v = load B[I] with no write to B since.
      for (size_t m = n; m-- > 0;) {
        const Instr& q = b.body[m];
        if (q.op == Op::Load && q.result == st.args.back() && q.args[0] == buf &&
            std::vector<int>(q.args.begin() + 1, q.args.end()) == index(st)) {
          drop[n] = 1;
          break;
        }
        if (writes(q, buf) && !drop[m]) break;
      }
    }
    if (compact(b.body, drop)) changed_ = true;
  }

  // --- dead code ---------------------------------------------------------------------------
  static bool hasEffects(const Instr& in) {
    if (in.op == Op::BufAdd || in.op == Op::BufStore || in.op == Op::SizeDef || in.op == Op::For ||
        (in.op == Op::If && in.result < 0))
      return true;
    bool e = false;
    for (const Block& r : in.regions)
      for (const Instr& i : r.body)
        e = e || hasEffects(i);
    return e;
  }
  /// Counts (delta +1) or uncounts (-1) the reads in `in`, nested regions included.
  static void countUses(const Instr& in, std::unordered_map<int, int>& uses, int delta) {
    for (size_t k = 0; k < in.args.size(); ++k) {
      if ((in.op == Op::BufAdd || in.op == Op::BufStore) && k == 0)
        continue; // adding or storing is not reading
      uses[in.args[k]] += delta;
    }
    for (const Block& r : in.regions) {
      for (const Instr& i : r.body)
        countUses(i, uses, delta);
      for (int y : r.yields)
        uses[y] += delta;
    }
  }
  void dce() {
    // Each sweep goes backwards and uncounts what it removes, so a chain of dead values goes
    // in one sweep (forwards, each sweep removed only its last link: quadratic). Another
    // sweep runs while one removes something, for writes to buffers whose last reader went
    // after the sweep had passed them.
    for (bool again = true; again;) {
      again = false;
      ++stats.dceSweeps;
      std::unordered_map<int, int> uses;
      for (const Instr& in : f_.body.body)
        countUses(in, uses, +1);
      for (int y : f_.body.yields)
        ++uses[y];
      std::function<void(Block&)> sweep = [&](Block& b) {
        std::vector<char> drop(b.body.size(), 0);
        for (size_t n = b.body.size(); n-- > 0;) {
          Instr& in = b.body[n];
          for (Block& r : in.regions)
            sweep(r);
          bool dead;
          if (in.op == Op::BufAdd || in.op == Op::BufStore)
            dead = uses[in.args[0]] == 0; // writes to a buffer nobody reads
          else if (in.op == Op::Param)
            dead = false;
          else if (in.result >= 0)
            dead = uses[in.result] == 0 && !hasEffects(in);
          else
            dead = !hasEffects(in) || (in.op == Op::For && in.regions[0].body.empty());
          if (in.op == Op::If && in.result < 0)
            dead = in.regions[0].body.empty() && in.regions[1].body.empty();
          if (dead) {
            again = true;
            changed_ = true;
            drop[n] = 1;
            countUses(in, uses, -1);
          }
        }
        compact(b.body, drop);
      };
      sweep(f_.body);
    }
  }

  // --- loop-invariant code motion ----------------------------------------------------------
  /// Moves pure instructions that use nothing defined in a loop body to just before the loop.
  /// Loads move only when proven in range, and integer division never, so nothing that could
  /// fail runs when the loop would not have run it.
  void hoist(Block& b) {
    std::vector<std::pair<size_t, std::vector<Instr>>> moved; // what goes before b.body[n]
    for (size_t n = 0; n < b.body.size(); ++n) {
      Instr& in = b.body[n];
      for (Block& r : in.regions)
        hoist(r);
      // (A call with a user rule is not a loop: its computation stays in it, readable.)
      bool loop = ir::opKind(in.op) == ir::OpKind::Region && in.op != Op::If && in.op != Op::Custom;
      if (!loop) continue;
      Block& body = in.regions[0];
      std::set<int> inside(body.args.begin(), body.args.end());
      std::vector<char> drop(body.body.size(), 0);
      std::vector<Instr> out;
      for (size_t m = 0; m < body.body.size(); ++m) {
        Instr& x = body.body[m];
        bool movable =
            x.result >= 0 && x.regions.empty() && x.op != Op::BufZeros && x.op != Op::Stack &&
            !(x.op == Op::Size && x.poly.str().find('#') != std::string::npos) &&
            !(x.op == Op::Load && (!x.checked || buffers_.count(x.args[0]))) &&
            !((x.op == Op::Div || x.op == Op::Mod || x.op == Op::Powi || x.op == Op::Cast) &&
              !isFloat(f_.types[x.result].dtype));
        for (int a : x.args)
          movable = movable && !inside.count(a);
        if (movable) {
          out.push_back(std::move(x));
          drop[m] = 1;
          changed_ = true;
        } else {
          if (x.result >= 0) inside.insert(x.result);
          for (const Block& r : x.regions)
            ir::forEachInstr(r, [&](const Instr& i) {
              if (i.result >= 0) inside.insert(i.result);
            });
        }
      }
      if (out.empty()) continue;
      compact(body.body, drop);
      moved.emplace_back(n, std::move(out));
    }
    insertBefore(b.body, moved);
  }

  /// Inserts each `moved` list before the instruction it names (in order of position), in
  /// one pass; nothing to do (the usual case) costs nothing.
  static void insertBefore(std::vector<Instr>& body,
                           std::vector<std::pair<size_t, std::vector<Instr>>>& moved) {
    if (moved.empty()) return;
    size_t extra = 0;
    for (const auto& [n, xs] : moved)
      extra += xs.size();
    std::vector<Instr> out;
    out.reserve(body.size() + extra);
    size_t k = 0;
    for (size_t n = 0; n < body.size(); ++n) {
      for (; k < moved.size() && moved[k].first == n; ++k)
        for (Instr& x : moved[k].second)
          out.push_back(std::move(x));
      out.push_back(std::move(body[n]));
    }
    body = std::move(out);
  }

  ir::Function& f_;
  Ctx ctx_;
  std::set<int> buffers_;     // buf.zeros results: memory, not values
  std::set<int> zeroConsts_;  // constants +0, 0 and false (dead-store)
  std::map<int, int> addsTo_; // scatter-to-gather, see countWrites()
  std::set<int> stored_;
  std::unordered_map<int, const Instr*> defs_; // for differ(), during forwardSnapshots
  mutable std::unordered_map<int, int> repl_;  // resolve() compresses chains
  bool changed_ = false;
};

} // namespace

const std::vector<SimplifyRule>& simplifyRules() {
  static const std::vector<SimplifyRule> all = [] {
    std::vector<SimplifyRule> v;
    v.push_back({"fold", "an op on constants -> its value (the evaluator's arithmetic)", "exact"});
    for (const Rule& r : rules())
      v.push_back(r.info);
    v.push_back({"sub-neg", "a - (-b) -> a + b, a + (-b) -> a - b", "exact"});
    v.push_back({"mul-minus-one", "x * -1 -> -x", "exact"});
    v.push_back({"cse", "a second identical pure op -> the first", "exact"});
    v.push_back({"copy", "comp [i < shape(T)] { T[i] } -> T", "exact"});
    v.push_back(
        {"snapshot", "S = comp [j] { B[p, j] }; S[i] -> B[p, i] until B is next written", "exact"});
    v.push_back({"dead-store",
                 "store B[I] overwritten before B is read, store B[I], load B[I] -> removed",
                 "exact"});
    v.push_back({"zero-init",
                 "stores of +0 into a buf.zeros buffer nothing has written since -> removed",
                 "exact"});
    v.push_back({"scatter-to-gather",
                 "buf.zeros + a loop that adds each element once at its own index -> comp",
                 "exact up to the sign of zero"});
    v.push_back({"accumulator", "adds to a scalar accumulator read in the same block -> a sum",
                 "exact up to the sign of zero"});
    v.push_back({"dce", "unused pure ops, adds to accumulators nobody reads -> removed", "exact"});
    v.push_back(
        {"hoist", "a loop body's op that uses nothing of the loop -> before the loop", "exact"});
    v.push_back({"result-in-place",
                 "return comp [i] { B[i] } of a buffer not written after -> return B "
                 "(returnBuffersInPlace, last)",
                 "exact"});
    return v;
  }();
  return all;
}

SimplifyStats simplify(ir::Function& f) {
  Simplifier s(f);
  s.run();
  return s.stats;
}

namespace {

/// The buffer a copy reads: `comp [i < shape(B)] { load B[i] }` over all of B, or -1.
int copiedBuffer(const ir::Function& f, const Instr& in) {
  if (in.op != Op::Comp || in.regions.size() != 1) return -1;
  const Block& r = in.regions[0];
  if (r.body.size() != 1 || r.yields.size() != 1) return -1;
  const Instr& l = r.body[0];
  if (l.op != Op::Load || l.result != r.yields[0] || l.args.size() != r.args.size() + 1) return -1;
  for (size_t k = 0; k < r.args.size(); ++k)
    if (l.args[k + 1] != r.args[k]) return -1;
  const ir::Type &b = f.types[l.args[0]], &c = f.types[in.result];
  if (b.dtype != c.dtype || b.shape != c.shape || in.extents != b.shape) return -1;
  return l.args[0];
}

} // namespace

void returnBuffersInPlace(ir::Function& f) {
  std::map<int, int> uses;
  auto count = [&](const Instr& in) {
    for (int a : in.args)
      ++uses[a];
    for (const Block& r : in.regions)
      for (int y : r.yields)
        ++uses[y];
  };
  for (const Instr& in : f.body.body) {
    count(in);
    for (const Block& r : in.regions)
      ir::forEachInstr(r, count);
  }
  for (int y : f.body.yields)
    ++uses[y];
  std::map<int, const Instr*> zeros; // top-level buf.zeros: buffers the call owns
  for (const Instr& in : f.body.body)
    if (in.op == Op::BufZeros) zeros[in.result] = &in;
  std::set<int> returned(f.body.yields.begin(), f.body.yields.end());
  std::set<size_t> drop;
  for (size_t p = 0; p < f.body.body.size(); ++p) {
    const Instr& in = f.body.body[p];
    int b = copiedBuffer(f, in);
    // The copy must be read by the return alone, of a buffer nothing returns otherwise.
    if (b < 0 || !zeros.count(b) || returned.count(b) || uses[in.result] != 1 ||
        !returned.count(in.result))
      continue;
    bool written = false; // after the copy: then the copy holds values the buffer lost
    auto writes = [&](const Instr& i) {
      if ((i.op == Op::BufAdd || i.op == Op::BufStore) && i.args[0] == b) written = true;
    };
    for (size_t q = p + 1; q < f.body.body.size() && !written; ++q) {
      writes(f.body.body[q]);
      for (const Block& r : f.body.body[q].regions)
        ir::forEachInstr(r, writes);
    }
    if (written) continue;
    for (int& y : f.body.yields)
      if (y == in.result) y = b;
    returned.insert(b);
    drop.insert(p);
  }
  if (drop.empty()) return;
  std::vector<Instr> kept;
  for (size_t p = 0; p < f.body.body.size(); ++p)
    if (!drop.count(p)) kept.push_back(std::move(f.body.body[p]));
  f.body.body = std::move(kept);
}

bool copyBufferResults(ir::Function& f) {
  std::set<int> bufs;
  for (const Instr& in : f.body.body)
    if (in.op == Op::BufZeros) bufs.insert(in.result);
  bool changed = false;
  ir::Builder b(f);
  for (int& y : f.body.yields) {
    if (!bufs.count(y)) continue;
    ir::Type t = f.types[y];
    int buf = y;
    y = b.region(Op::Comp, t.shape, t,
                 [&](const std::vector<int>& idx) { return b.load(buf, idx, {}, {}, true); });
    changed = true;
  }
  return changed;
}

} // namespace slope
