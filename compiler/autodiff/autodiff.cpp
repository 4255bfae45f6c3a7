// Reverse mode over straight-line code and regions (compiler/autodiff/autodiff.hpp); loops
// with state are in loops.cpp.
#include "compiler/autodiff/reverse.hpp"
#include "compiler/simplify/simplify.hpp"

#include <algorithm>

namespace slope {
namespace ad {

void Reverse::emitClone(const Block& fb, bool nested) {
  for (const Instr& in : fb.body) {
    if (in.op == Op::BufStore && in.ival > 0 && !nested) rememberOld(in);
    if (in.op == Op::BufStore && in.ival == kValueTapeStore && filledBuffer(in.args[0])) continue;
    auto tape = tape_.find(in.result);
    if (tape != tape_.end() && filled(tape->second)) {
      std::vector<int> idx;
      for (int a : tape->second.indices)
        idx.push_back(primal(a));
      if (static_cast<int>(primal_.size()) <= in.result) primal_.resize(in.result + 1, -1);
      primal_[in.result] = b_.load(primal(tape->second.buffer), idx, "", {}, /*checked=*/true);
      continue;
    }
    Instr c = in;
    c.regions.clear();
    for (int& a : c.args)
      a = primal(a);
    for (const Block& r : in.regions)
      c.regions.push_back(cloneRegion(r));
    if (in.result >= 0) {
      ir::Type rt = out_.types[in.result]; // (a copy: newValue may reallocate)
      c.result = out_.newValue(rt);
      if (static_cast<int>(primal_.size()) <= in.result) primal_.resize(in.result + 1, -1);
      primal_[in.result] = c.result;
    }
    b_.current().body.push_back(std::move(c));
  }
}

Block Reverse::cloneRegion(const Block& r) {
  std::vector<int> args;
  for (int a : r.args) {
    ir::Type t = out_.types[a]; // (a copy: newValue may reallocate)
    int fresh = out_.newValue(t);
    if (static_cast<int>(primal_.size()) <= a) primal_.resize(a + 1, -1);
    primal_[a] = fresh;
    args.push_back(fresh);
  }
  Block out = b_.buildBlock(args, [&] {
    emitClone(r, /*nested=*/true);
    return -1;
  });
  for (int y : r.yields)
    out.yields.push_back(primal(y));
  return out;
}

void Reverse::reverseBody(const Block& fb, const std::vector<int>& idx,
                          const std::function<int()>& seed) {
  pushScope(&fb);
  mapArgs(fb, idx);
  emitClone(recomputeOf(fb));
  size_t mark = b_.current().body.size();
  int y = fb.yields[0];
  if (active(y)) accumulate(y, seed());
  reverseBlock(fb);
  popScope(mark);
}

void Reverse::rememberOld(const Instr& st) {
  std::vector<int> idx;
  for (size_t k = 1; k + 1 < st.args.size(); ++k)
    idx.push_back(primal(st.args[k]));
  Instr ld;
  ld.op = Op::Load;
  ld.args.push_back(primal(st.args[0]));
  ld.args.insert(ld.args.end(), idx.begin(), idx.end());
  ld.checked = st.checked;
  ld.name = st.name;
  ld.loc = st.loc;
  old_[st.ival] = b_.emit(ld, ir::Type{out_.types[st.args[0]].dtype, {}});
}

void Reverse::analyze(const Block& b) {
  for (int a : b.args)
    defBlock_[a] = &b;
  for (const Instr& in : b.body) {
    bool userLoop = in.op == Op::For && in.ival == 1;
    userLoopDepth_ += userLoop;
    for (const Block& r : in.regions)
      analyze(r);
    userLoopDepth_ -= userLoop;
    // A var becomes active when an active value is stored into it; its memory is then active.
    // So does a float var that a user loop writes: reversing the loop then restores it (from
    // its tape or undo log; its adjoint is zero), as adjoint code reversed after the loop,
    // which reads vars directly, needs (var w = ones * 3; e = sum(x * w); for t { w[t] = 1 }).
    bool written = in.op == Op::BufStore && in.ival > 0 && userLoopDepth_ > 0;
    if (in.op == Op::BufStore && (active(in.args.back()) || written) && !active(in.args[0]) &&
        isFloat(src_.types[in.args[0]].dtype)) {
      active_[in.args[0]] = 1;
      activityChanged_ = true;
    }
    if (in.result < 0) continue;
    if (in.op == Op::BufZeros) { // keeps what stores made it
      defBlock_[in.result] = &b;
      defInstr_[in.result] = &in;
      continue;
    }
    defBlock_[in.result] = &b;
    defInstr_[in.result] = &in;
    if (!isFloat(src_.types[in.result].dtype) || in.op == Op::Param) continue;
    bool act = false;
    switch (ir::opKind(in.op)) {
    case ir::OpKind::Region:
      if (in.op == Op::Custom) { // (its rule's yields are cotangents, not results)
        for (int a : in.args)
          act = act || active(a);
        break;
      }
      for (const Block& r : in.regions)
        for (int y : r.yields)
          act = act || active(y);
      break;
    case ir::OpKind::Memory:
      if (in.op == Op::Load)
        act = active(in.args[0]);
      else
        for (int a : in.args)
          act = act || active(a);
      break;
    default:
      for (int a : in.args)
        act = act || active(a);
    }
    active_[in.result] = act;
  }
}

/// The adjoint of a loop recomputes its body, and a body's nested reduction is the costly part
/// to recompute (the log-sum-exp of a row, the inner product of a comprehension element). So
/// the forward sweep stores each scalar result of a reduction nested directly in a top-level
/// comprehension or reduction, one value per outer index (an array the size of that region's
/// index space), and the adjoint loads it instead. Only the gradient function's copy of the
/// forward code changes.
void Reverse::tapeNestedReductions() {
  std::vector<Instr> body;
  for (Instr& outer : out_.body.body) {
    bool loop = ir::opKind(outer.op) == ir::OpKind::Region && outer.op != Op::If &&
                outer.op != Op::For && outer.op != Op::Custom;
    if (loop) {
      Block& r = outer.regions[0];
      std::vector<Instr> inner;
      for (Instr& q : r.body) {
        inner.push_back(std::move(q));
        const Instr& qi = inner.back();
        bool reduction = ir::opKind(qi.op) == ir::OpKind::Region && qi.op != Op::If &&
                         qi.op != Op::For && qi.op != Op::Comp && qi.op != Op::Custom;
        if (!reduction || qi.result < 0 || !isFloat(src_.types[qi.result].dtype)) continue;
        Instr zero;
        zero.op = Op::BufZeros;
        zero.result = out_.newValue(ir::Type{src_.types[qi.result].dtype, outer.extents});
        body.push_back(zero);
        // An overwriting store, not an add: a backend may run a reduction's body more than
        // once (a two-pass logsumexp), and the tape must hold the value, not a multiple of it.
        Instr store;
        store.op = Op::BufStore;
        store.ival = ir::kTapeOnce;
        store.checked = true;
        store.args = r.args;
        store.args.insert(store.args.begin(), zero.result);
        store.args.push_back(qi.result);
        tape_[qi.result] = Tape{zero.result, r.args};
        inner.push_back(std::move(store));
      }
      r.body = std::move(inner);
    }
    body.push_back(std::move(outer));
  }
  out_.body.body = std::move(body);
}

void Reverse::reverseEffect(const Instr& in) {
  if (in.op == Op::BufStore) {
    // var[i] = v: v's adjoint takes dvar[i], which then starts again from zero; and var[i]
    // gets back the value the write overwrote.
    int var = in.args[0];
    std::vector<int> idx;
    for (size_t k = 1; k + 1 < in.args.size(); ++k)
      idx.push_back(primal(in.args[k]));
    auto old = old_.find(in.ival);
    auto saved = elementOld_.find(in.ival);
    if (in.ival > 0 && saved != elementOld_.end()) {
      std::vector<int> at;
      for (int a : saved->second.indices)
        at.push_back(primal(a));
      storeAt(primal(var), idx, b_.load(primal(saved->second.buffer), at, "", {}, true));
    } else if (in.ival > 0 && old != old_.end()) {
      storeAt(primal(var), idx, old->second);
    }
    if (!active(var)) return;
    int dvar = getAdj(var);
    int g = b_.load(dvar, idx, in.name, in.loc, in.checked);
    storeAt(dvar, idx, b_.constant(src_.types[var].dtype, 0));
    accumulate(in.args.back(), g);
    return;
  }
  if (in.op == Op::For) reverseLoop(in);
}

void Reverse::reverseInstr(const Instr& in) {
  if (in.result < 0) return reverseEffect(in);
  if (in.op == Op::BufZeros) return;
  if (!active(in.result)) return;
  int buf = findAdj(in.result);
  if (buf < 0) return; // nothing used it: its adjoint is the symbolic zero
  const ad::Rule& r = ad::ruleFor(in.op);
  switch (r.kind) {
  case RuleKind::Formula:
    cur_ = &in;
    curBuf_ = buf;
    curG_ = -1;
    r.fn(*this);
    cur_ = nullptr;
    return;
  case RuleKind::ZeroDerivative: return;
  case RuleKind::NotDifferentiable:
    // An op with a float result and no rule must not pass for one with derivative zero.
    throw GradError(std::string("'") + ir::opName(in.op) + "' cannot be differentiated (" + r.math +
                    ")");
  case RuleKind::Structural: structural(in, buf); return;
  }
}

void Reverse::structural(const Instr& in, int buf) {
  const ir::Type& t = src_.types[in.result];
  switch (in.op) {
  case Op::Param: return;
  case Op::Load: {
    // Gather -> scatter-add.
    if (!active(in.args[0])) return;
    std::vector<int> idx;
    for (size_t k = 1; k < in.args.size(); ++k)
      idx.push_back(primal(in.args[k]));
    int g = b_.load(buf, {});
    Instr add;
    add.op = Op::BufAdd;
    add.args.push_back(getAdj(in.args[0]));
    add.args.insert(add.args.end(), idx.begin(), idx.end());
    add.args.push_back(g);
    add.name = in.name;
    add.loc = in.loc;
    b_.emitEffect(std::move(add));
    return;
  }
  case Op::Stack: {
    std::vector<int64_t> shape;
    for (const Poly& p : t.shape)
      shape.push_back(*p.constValue());
    for (size_t k = 0; k < in.args.size(); ++k) {
      if (!active(in.args[k])) continue;
      std::vector<int> idx(shape.size());
      int64_t rem = static_cast<int64_t>(k);
      for (size_t d = shape.size(); d-- > 0;) {
        idx[d] = b_.constInt(rem % shape[d]);
        rem /= shape[d];
      }
      accumulate(in.args[k], b_.load(buf, idx));
    }
    return;
  }
  case Op::Comp: {
    const Block& body = in.regions[0];
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      reverseBody(body, idx, [&] { return b_.load(buf, idx); });
      return -1;
    });
    return;
  }
  case Op::ReduceSum: {
    const Block& body = in.regions[0];
    int g = b_.load(buf, {});
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      reverseBody(body, idx, [&] { return g; });
      return -1;
    });
    return;
  }
  case Op::ReduceLse: {
    // x_j's adjoint is g softmax_j = (g / W) exp(x_j - lse), W normalising the weights in f32
    // (see softmaxNormaliser): one more pass over the body's values, taped or recomputed.
    const Block& body = in.regions[0];
    int g = b_.load(buf, {});
    int lse = primal(in.result);
    int W = ad::softmaxNormaliser(b_, lse, in.extents, t.dtype,
                                  [&](const std::vector<int>& k) { return yieldAt(body, k); });
    int gw = W < 0 ? g : b_.binary(Op::Div, g, W);
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      reverseBody(body, idx, [&] {
        int xj = primal(body.yields[0]);
        return b_.binary(Op::Mul, gw, b_.unary(Op::Exp, b_.binary(Op::Sub, xj, lse)));
      });
      return -1;
    });
    return;
  }
  case Op::ReduceProd: {
    // x_j's adjoint is g prod_{k != j} x_k: P / x_j when x_j != 0, else the product of the
    // others, recomputed (only at zeros, so the usual cost stays linear).
    const Block& body = in.regions[0];
    int g = b_.load(buf, {});
    int P = primal(in.result);
    DType dt = t.dtype;
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      reverseBody(body, idx, [&] {
        int others =
            ad::productOfOthers(b_, P, primal(body.yields[0]), idx, in.extents, dt,
                                [&](const std::vector<int>& k) { return yieldAt(body, k); });
        return b_.binary(Op::Mul, g, others);
      });
      return -1;
    });
    return;
  }
  case Op::ReduceMax:
  case Op::ReduceMin: {
    // Only the first extremal element gets the adjoint: find it, then reverse the body there.
    const Block& body = in.regions[0];
    int g = b_.load(buf, {});
    Op arg = in.op == Op::ReduceMax ? Op::ArgMax : Op::ArgMin;
    int at = b_.region(arg, in.extents, ir::Type{DType::I64, {}},
                       [&](const std::vector<int>& k) { return yieldAt(body, k); });
    auto rev = [&] { reverseBody(body, b_.unflatten(at, in.extents), [&] { return g; }); };
    bool nonEmpty = true;
    for (const Poly& p : in.extents)
      nonEmpty = nonEmpty && (p - Poly(1)).provablyNonNegative();
    if (nonEmpty)
      rev();
    else
      b_.ifEffect(b_.binary(Op::Ge, at, b_.constInt(0)), rev, [] {});
    return;
  }
  case Op::If: {
    int c = primal(in.args[0]);
    auto branch = [&](const Block& blk) {
      pushScope(&blk);
      emitClone(recomputeOf(blk));
      size_t mark = b_.current().body.size();
      int y = blk.yields[0];
      if (t.rank() == 0)
        accumulate(y, b_.load(buf, {}));
      else
        accumulateTensor(y, buf);
      reverseBlock(blk);
      popScope(mark);
    };
    b_.ifEffect(
        c, [&] { branch(in.regions[0]); }, [&] { branch(in.regions[1]); });
    return;
  }
  case Op::Custom: {
    // The user's rule, run on the operands and the result's adjoint, gives each operand's
    // adjoint: dx_k += rule_k(x, g). The rule is ordinary code here (its own derivative, for an
    // HVP or a gradient of this gradient, is taken like any other code's).
    const Block& rule = in.regions[1];
    int g = t.rank() == 0 ? b_.load(buf, {}) : buf;
    if (static_cast<int>(primal_.size()) <= rule.args[0]) primal_.resize(rule.args[0] + 1, -1);
    primal_[rule.args[0]] = g;
    emitClone(rule, /*nested=*/true);
    for (size_t k = 0; k < in.args.size(); ++k) {
      int dx = primal(rule.yields[k]);
      if (src_.types[in.args[k]].rank() == 0)
        accumulate(in.args[k], dx);
      else
        accumulateTensor(in.args[k], dx);
    }
    return;
  }
  default:
    throw GradError(std::string("internal error: no adjoint for '") + ir::opName(in.op) + "'");
  }
}

ir::Function Reverse::run(const std::vector<std::string>& wrtIn) {
  std::vector<std::string> wrt = resolveWrt(src_, wrtIn);
  size_t n = src_.types.size();
  active_.assign(n, 0);
  defBlock_.assign(n, nullptr);
  defInstr_.assign(n, nullptr);
  primal_.assign(n, -1);
  std::vector<int> wrtIds;
  for (size_t k = 0; k < src_.params.size(); ++k)
    for (const auto& w : wrt)
      if (src_.paramNames[k] == w) {
        active_[src_.params[k]] = 1;
        wrtIds.push_back(src_.params[k]);
      }
  do {
    activityChanged_ = false;
    analyze(src_.body);
  } while (activityChanged_); // loops feed stores back into loads
  tapeLoops(out_.body, src_.body);
  tapeNestedReductions();
  {
    std::vector<Instr> alloc;
    saveOverwritten(out_.body, alloc);
    for (auto& [loop, tape] : loopTapes_)
      saveOverwritten(tape.body, alloc);
    for (auto& [region, body] : recompute_)
      saveOverwritten(body, alloc);
    out_.body.body.insert(out_.body.body.begin(), alloc.begin(), alloc.end());
  }
  // The forward code's own top-level var writes remember what they overwrite (those inside
  // loops do so where the adjoint recomputes them).
  {
    std::vector<Instr> body;
    for (Instr& in : out_.body.body) {
      if (in.op == Op::BufStore && in.ival > 0) {
        Block save = b_.buildBlock({}, [&] {
          rememberOld(in);
          return -1;
        });
        body.insert(body.end(), save.body.begin(), save.body.end());
      }
      body.push_back(std::move(in));
    }
    out_.body.body = std::move(body);
  }

  const std::vector<int>& results = src_.body.yields;
  std::vector<int> floatResults;
  for (int r : results)
    if (isFloat(src_.types[r].dtype)) floatResults.push_back(r);
  bool scalarLoss =
      results.size() == 1 && floatResults.size() == 1 && src_.types[results[0]].rank() == 0;
  out_.name = src_.name + (scalarLoss ? "_grad" : "_vjp");

  // Cotangent parameters (after the forward parameters).
  std::vector<int> seeds;
  if (!scalarLoss) {
    for (size_t k = 0; k < floatResults.size(); ++k) {
      Instr p;
      p.op = Op::Param;
      p.ival = static_cast<int64_t>(out_.params.size());
      p.name = floatResults.size() == 1 ? "seed" : "seed" + std::to_string(k + 1);
      ir::Type ty = src_.types[floatResults[k]];
      p.result = out_.newValue(ty);
      out_.params.push_back(p.result);
      out_.paramNames.push_back(p.name);
      out_.paramTypes.push_back(ty);
      seeds.push_back(p.result);
      out_.body.body.push_back(p);
    }
  }
  int one = scalarLoss ? b_.constant(src_.types[results[0]].dtype, 1.0) : -1;

  scopes_.push_back(Scope{&src_.body, {}, {}, {}});
  size_t mark = out_.body.body.size();
  for (size_t k = 0; k < floatResults.size(); ++k) {
    int r = floatResults[k];
    int s = scalarLoss ? one : seeds[k];
    if (src_.types[r].rank() == 0)
      accumulate(r, s);
    else
      accumulateTensor(r, s);
  }
  reverseBlock(src_.body);
  std::vector<int> grads;
  for (int p : wrtIds)
    grads.push_back(getAdj(p));
  Scope top = std::move(scopes_.back());
  scopes_.pop_back();
  out_.body.body.insert(out_.body.body.begin() + static_cast<long>(mark), top.prologue.begin(),
                        top.prologue.end());
  for (int gid : grads)
    out_.body.yields.push_back(gid);
  return std::move(out_);
}

} // namespace ad

std::vector<std::string> resolveWrt(const ir::Function& f, const std::vector<std::string>& wrt) {
  std::vector<std::string> out;
  if (wrt.empty()) {
    for (size_t k = 0; k < f.params.size(); ++k)
      if (isFloat(f.paramTypes[k].dtype)) out.push_back(f.paramNames[k]);
    return out;
  }
  for (const auto& w : wrt) {
    bool found = false;
    for (size_t k = 0; k < f.params.size(); ++k) {
      if (f.paramNames[k] != w) continue;
      found = true;
      if (!isFloat(f.paramTypes[k].dtype))
        throw GradError("parameter '" + w + "' is " + f.paramTypes[k].str() +
                        "; only float parameters can be differentiated");
    }
    if (!found) throw GradError("'" + f.name + "' has no parameter '" + w + "'");
    out.push_back(w);
  }
  // Keep parameter order, whatever order wrt was given in.
  std::vector<std::string> ordered;
  for (const auto& n : f.paramNames)
    for (const auto& w : out)
      if (n == w && std::find(ordered.begin(), ordered.end(), n) == ordered.end())
        ordered.push_back(n);
  return ordered;
}

namespace {

/// Whether f holds memory that only a derivative the language inlined brings: an adjoint
/// accumulator (buf.add) or an untagged store (a tape's, a tangent var's).
bool foreignMemory(const ir::Function& f) {
  bool foreign = false;
  ir::forEachInstr(f.body, [&](const ir::Instr& i) {
    if (i.op == ir::Op::BufAdd || (i.op == ir::Op::BufStore && i.ival <= 0)) foreign = true;
  });
  return foreign;
}

/// Whether a block writes memory (a store, an add, or a loop that does).
bool writesMemory(const ir::Block& b) {
  bool w = false;
  ir::forEachInstr(
      b, [&](const ir::Instr& i) { w = w || i.op == ir::Op::BufStore || i.op == ir::Op::BufAdd; });
  return w;
}

/// Memory as the checker writes it, from the memory a derivative the language inlined brings
/// (grad(g)(...) and the like): reverse mode reverses var writes, each tagged with a positive
/// buf.store ival (the old value is restored, the stored value's adjoint takes the var's), but
/// has no rule of its own for adjoint accumulators or for the untagged stores of tapes and
/// tangent vars. So `buf.add b[i], v` becomes `b[i] = b[i] + v`, a load, an add and a tagged
/// store, and every store gets a tag of its own. The adjoint of b[i] = b[i] + v leaves b's adjoint
/// as it was and gives it to v, as the adjoint of an accumulation must.
void accumulatorsAsVars(ir::Function& f) {
  int64_t next = 1;
  // top: the block is the function's body or a for loop's, nested only in for loops (where
  // the checker puts loops with state).
  std::function<void(ir::Block&, bool)> walk = [&](ir::Block& b, bool top) {
    std::vector<ir::Instr> body;
    body.reserve(b.body.size());
    for (ir::Instr& i : b.body) {
      if (i.op == ir::Op::For && top && i.extents.size() > 1) {
        // Loops with state have one index: for [i < n, j < m] becomes for [i < n] { for
        // [j < m] }, the same iterations in the same order.
        ir::Block rest = std::move(i.regions[0]);
        ir::Instr inner;
        inner.op = ir::Op::For;
        inner.loc = i.loc;
        inner.extents.assign(i.extents.begin() + 1, i.extents.end());
        const int first = rest.args[0];
        rest.args.erase(rest.args.begin());
        inner.regions.push_back(std::move(rest));
        ir::Block outer;
        outer.args = {first};
        outer.body.push_back(std::move(inner));
        i.extents.resize(1);
        i.regions[0] = std::move(outer);
      }
      // The adjoint of an `if` is an `if` that only writes memory; reverse mode has no rule
      // for one (the checker never makes it), and would drop its terms.
      if (i.op == ir::Op::If && i.result < 0 &&
          (writesMemory(i.regions[0]) || writesMemory(i.regions[1])))
        throw GradError("'" + f.name +
                        "' calls a derivative (grad or hvp) of a function with an `if`, and "
                        "reverse mode cannot yet differentiate the adjoint of an `if`; forward "
                        "mode can: jvp('" +
                        f.name + "') in the language, or slopec jvp");
      // A user rule runs as it is in the adjoint and is never reversed: its memory stays.
      for (size_t r = 0; r < (i.op == ir::Op::Custom ? 1 : i.regions.size()); ++r)
        walk(i.regions[r], top && i.op == ir::Op::For);
      // Every store its own tag: a derivative holds copies of one var write (the forward
      // sweep's and the recomputation's) under the tag of the original, and reverse mode keys
      // each write's overwritten values by tag.
      if (i.op == ir::Op::BufStore) i.ival = next++;
      // An adjoint's loops are `for` loops without the mark of state (ival 0), yet the
      // reverse sweep of a loop with state carries its adjoint vars from one iteration to the
      // next: read as independent iterations, their reversal would restore that state at the
      // wrong points. Marked as loops with state, each gets the general treatment.
      if (i.op == ir::Op::For && top) i.ival = 1;
      if (i.op != ir::Op::BufAdd) {
        body.push_back(std::move(i));
        continue;
      }
      const DType d = f.types[i.args[0]].dtype;
      ir::Instr ld;
      ld.op = ir::Op::Load;
      ld.args.assign(i.args.begin(), i.args.end() - 1);
      ld.checked = i.checked;
      ld.name = i.name;
      ld.loc = i.loc;
      ld.result = f.newValue(ir::Type{d, {}});
      ir::Instr sum;
      sum.op = ir::Op::Add;
      sum.args = {ld.result, i.args.back()};
      sum.loc = i.loc;
      sum.result = f.newValue(ir::Type{d, {}});
      ir::Instr st = std::move(i);
      st.op = ir::Op::BufStore;
      st.args.back() = sum.result;
      st.ival = next++;
      body.push_back(std::move(ld));
      body.push_back(std::move(sum));
      body.push_back(std::move(st));
    }
    b.body = std::move(body);
  };
  walk(f.body, true);
}

} // namespace

ir::Function differentiate(const ir::Function& f, const std::vector<std::string>& wrt,
                           const GradOptions& opt) {
  ir::Function copied;
  const ir::Function* in = &f;
  if (foreignMemory(f)) {
    copied = f;
    accumulatorsAsVars(copied);
    in = &copied;
  }
  // A var returned in place (returnBuffersInPlace) is read into a value first: the adjoint
  // of a result is the adjoint of a value.
  for (int y : in->body.yields)
    if (in->types[y].rank() > 0) {
      if (in == &f) copied = f;
      if (copyBufferResults(copied)) in = &copied;
      break;
    }
  ad::Reverse r(*in, opt);
  return r.run(wrt);
}

} // namespace slope
