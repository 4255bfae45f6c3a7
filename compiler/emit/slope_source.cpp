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

#include "compiler/ir/builder.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/support/stack.hpp"

#include <charconv>
#include <cmath>
#include <functional>
#include <map>
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
  };

  /// A loop nest that writes `buf` at indices made of its own loop indices, all adds the same
  /// way: buf[c] = sum over the nest's other indices of the adds' values at c (a gather).
  struct Nest {
    std::vector<const Instr*> loops; // outermost first, down to the loop holding the adds
    std::vector<int> bound;          // for each dimension of buf, the loop index it takes
    std::vector<int> unbound;        // the other loop indices (summed over)
    std::vector<Poly> unboundExtents;
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
    for (size_t k = 0; k < n.bound.size(); ++k) {
      auto it = extentOf.find(n.bound[k]);
      if (it == extentOf.end() || it->second != t.shape[k] || !seen.insert(n.bound[k]).second)
        return std::nullopt;
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
              bind[nest->bound[k]] = c[k];
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
          if (nest->unbound.empty()) return walk({});
          return b_.region(Op::ReduceSum, nest->unboundExtents, ir::Type{t.dtype, {}}, walk);
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
        continue;
      }
      if (in.op == Op::BufStore || in.op == Op::SizeDef || (in.op == Op::For && in.ival == 1))
        throw NotPrintable("loops with state (var, for) have no printed form yet");
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
  ir::Function out_;
  ir::Builder b_;
  std::vector<int> map_;
};

// ---------------------------------------------------------------------------------------------
// Printing pure IR as Slope

struct Expr {
  std::string s;
  int prec; // 10 atom, 9 power, 8 unary, 7 mul, 6 add, 5 compare, 4 and, 3 or
};

class Printer {
public:
  Printer(const ir::Function& f, std::string name) : f_(f), name_(std::move(name)) {}

  std::string run() {
    for (const auto& n : f_.paramNames)
      taken_.insert(n);
    for (const auto& n : f_.sizeNames())
      taken_.insert(n);
    countUses(f_.body);
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
    for (const Instr& in : f_.body.body)
      statement(in, out, "    ");
    std::vector<std::string> ys;
    for (int y : f_.body.yields)
      ys.push_back(expr(y).s);
    out += "    " + (ys.size() == 1 ? ys[0] : "(" + join(ys) + ")") + "\n}\n";
    return out;
  }

private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (size_t k = 0; k < v.size(); ++k)
      s += (k ? ", " : "") + v[k];
    return s;
  }
  void countUses(const Block& b) {
    for (const Instr& in : b.body) {
      defs_[in.result] = &in;
      for (int a : in.args)
        ++uses_[a];
      for (const Block& r : in.regions) {
        for (int a : r.args)
          names_[a] = fresh("i", indexCount_);
        countUses(r);
      }
    }
    for (int y : b.yields)
      ++uses_[y];
  }

  /// A name not used by the function's parameters or sizes: PREFIX1, PREFIX2, ...
  std::string fresh(const char* prefix, int& counter) {
    std::string n;
    do
      n = prefix + std::to_string(++counter);
    while (taken_.count(n));
    return n;
  }

  /// A `let` for a value that is a tensor or is used more than once; the rest is inlined.
  void statement(const Instr& in, std::string& out, const std::string& indent) {
    if (in.result < 0 || in.op == Op::Param) return;
    const ir::Type& t = f_.types[in.result];
    bool named = t.rank() > 0 || uses_[in.result] > 1;
    if (!named || in.op == Op::Const || in.op == Op::Size) return; // inlined where used
    std::string n = fresh("t", letCount_);
    if (in.op == Op::Comp) {
      const Block& r = in.regions[0];
      std::string idx;
      for (size_t k = 0; k < r.args.size(); ++k)
        idx += (k ? ", " : "") + names_[r.args[k]] + ": " + in.extents[k].str();
      out += indent + "let " + n + "[" + idx + "] = " + expr(r.yields[0]).s + ";\n";
    } else {
      out += indent + "let " + n + " = " + exprOf(in, indent).s + ";\n";
    }
    names_[in.result] = n;
  }

  /// An if branch: `{ expr }`, or `{ let ...; expr }` when it computes tensors.
  std::string branch(const Block& b, const std::string& indent) {
    std::string lets;
    for (const Instr& in : b.body)
      statement(in, lets, indent + "    ");
    std::string y = expr(b.yields[0]).s;
    if (lets.empty()) return "{ " + y + " }";
    return "{\n" + lets + indent + "    " + y + "\n" + indent + "}";
  }

  Expr expr(int v) {
    auto it = names_.find(v);
    if (it != names_.end()) return {it->second, 10};
    auto d = defs_.find(v);
    if (d == defs_.end() || !d->second)
      throw NotPrintable("internal: no definition for %" + std::to_string(v));
    return exprOf(*d->second, "    ");
  }
  static std::string paren(const Expr& e, int need) {
    return e.prec >= need ? e.s : "(" + e.s + ")";
  }

  std::string number(double v, DType t) {
    if (std::isnan(v)) return "(0.0 / 0.0)";
    if (std::isinf(v)) return v > 0 ? "(1.0 / 0.0)" : "(-1.0 / 0.0)";
    char buf[64];
    auto r = t == DType::F32 ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v))
                             : std::to_chars(buf, buf + sizeof buf, v);
    std::string s(buf, r.ptr);
    if (s.find('e') != std::string::npos && s.find('.') == std::string::npos) {
      // 1e-05 is a float literal in Slope already; keep it.
    }
    return s;
  }

  Expr exprOf(const Instr& in, const std::string& indent) {
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
      std::string s = paren(a(0), 10) + "[";
      for (size_t k = 1; k < in.args.size(); ++k)
        s += (k > 1 ? ", " : "") + expr(in.args[k]).s;
      return {s + "]", 10};
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
      return {std::string(n.at(in.op)) + "[" + indexList(in) + "](" +
                  expr(in.regions[0].yields[0]).s + ")",
              10};
    }
    case Op::ArgMax:
    case Op::ArgMin: {
      // The first extremal position: the smallest flat index whose element equals the extreme.
      const Block& r = in.regions[0];
      std::string body = expr(r.yields[0]).s;
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
      std::string inner = expr(r.yields[0]).s;
      std::string mIdx;
      for (size_t k = 0; k < r.args.size(); ++k)
        mIdx += (k ? ", " : "") + names_[r.args[k]] + ": " + in.extents[k].str();
      names_ = saved;
      std::string ext =
          std::string(in.op == Op::ArgMax ? "max" : "min") + "[" + mIdx + "](" + inner + ")";
      return {"min[" + indexList(in) + "](select(" + body + " == " + ext + ", " + flat + ", " +
                  polyExpr(total).s + "))",
              10};
    }
    case Op::If: {
      return {"if " + a(0).s + " " + branch(in.regions[0], indent) + " else " +
                  branch(in.regions[1], indent),
              10};
    }
    case Op::Comp:
      throw NotPrintable("a tensor computed inside a loop body has no Slope expression");
    default: break;
    }
    if (ir::opKind(in.op) == ir::OpKind::Unary)
      return {std::string(ir::opName(in.op)) + "(" + a(0).s + ")", 10};
    throw NotPrintable(std::string("no Slope form for '") + ir::opName(in.op) + "'");
  }

  static Expr polyExpr(const Poly& p) {
    std::string s = p.str();
    if (p.terms().size() > 1 || s[0] == '-') return {s, 6};
    return {s, s.find('*') != std::string::npos ? 7 : 10};
  }

  std::string indexList(const Instr& in) {
    const Block& r = in.regions[0];
    std::string s;
    for (size_t k = 0; k < r.args.size(); ++k)
      s += (k ? ", " : "") + names_[r.args[k]] + ": " + in.extents[k].str();
    return s;
  }

  const ir::Function& f_;
  std::string name_;
  std::map<int, int> uses_;
  std::map<int, const Instr*> defs_;
  std::map<int, std::string> names_;
  int letCount_ = 0;
  int indexCount_ = 0;
  std::set<std::string> taken_;
};

} // namespace

std::string printSlope(const ir::Function& gradient) {
  std::string out;
  try {
    // The printer rebuilds expression trees recursively (a sum of n terms nests n deep), so it
    // runs on a large stack, as the checker does.
    withLargeStack([&] {
      Functionalizer fz(gradient);
      ir::Function pure = fz.run();
      simplify(pure);
      out = Printer(pure, gradient.name).run();
    });
  } catch (const NotPrintable& e) {
    throw SlopePrintError(std::string("cannot print '") + gradient.name +
                          "' as Slope source: " + e.what());
  }
  return out;
}

} // namespace slope
