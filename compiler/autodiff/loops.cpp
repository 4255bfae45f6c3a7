// Reverse mode for loops with state: the tapes the forward sweep keeps (state, undo logs,
// value tapes, saved elements), which vars they need, and the reverse sweep over a loop's
// iterations, plain or checkpointed (uniform or binomial). See docs/architecture.md, "Loops
// with state".
#include "compiler/autodiff/reverse.hpp"

#include <algorithm>
#include <tuple>

namespace slope::ad {

void Reverse::saveOverwritten(Block& b, std::vector<Instr>& alloc) {
  for (Instr& in : b.body) {
    for (Block& r : in.regions)
      saveOverwritten(r, alloc);
    if (in.op != Op::For || in.ival != 0) continue;
    bool known = true;
    for (const Poly& p : in.extents)
      known = known && p.str().find('#') == std::string::npos;
    if (!known) continue;
    Block& r = in.regions[0];
    std::vector<Instr> body;
    for (Instr& st : r.body) {
      if (st.op == Op::BufStore && st.ival > 0) {
        int var = st.args[0];
        DType dt = out_.types[var].dtype;
        auto it = elementOld_.find(st.ival);
        if (it == elementOld_.end()) {
          Instr z;
          z.op = Op::BufZeros;
          z.result = out_.newValue(ir::Type{dt, in.extents});
          alloc.push_back(z);
          it = elementOld_.emplace(st.ival, OldValues{z.result, r.args}).first;
        }
        Instr ld;
        ld.op = Op::Load;
        ld.args.assign(st.args.begin(), st.args.end() - 1);
        ld.checked = st.checked;
        ld.name = st.name;
        ld.loc = st.loc;
        ld.result = out_.newValue(ir::Type{dt, {}});
        Instr sv;
        sv.op = Op::BufStore;
        sv.ival = kOldValueStore;
        sv.args.push_back(it->second.buffer);
        sv.args.insert(sv.args.end(), r.args.begin(), r.args.end());
        sv.args.push_back(ld.result);
        sv.checked = true;
        body.push_back(std::move(ld));
        body.push_back(std::move(sv));
      }
      body.push_back(std::move(st));
    }
    r.body = std::move(body);
  }
}

bool Reverse::killedBeforeRead(const Block& sb, int v) const {
  auto reads = [&](const Instr& in) {
    bool r = false;
    auto check = [&](const Instr& i) {
      for (size_t k = 0; k < i.args.size(); ++k)
        if (i.args[k] == v && !(k == 0 && i.op == Op::BufStore)) r = true;
    };
    check(in);
    for (const Block& b : in.regions)
      ir::forEachInstr(b, check);
    return r;
  };
  const ir::Type& t = src_.types[v];
  for (const Instr& in : sb.body) {
    if (reads(in)) return false;
    if (t.rank() == 0 && in.op == Op::BufStore && in.args.size() == 2 && in.args[0] == v)
      return true;
    if (in.op == Op::For && in.ival == 0 && in.extents == t.shape)
      for (const Instr& x : in.regions[0].body)
        if (x.op == Op::BufStore && x.args[0] == v &&
            std::vector<int>(x.args.begin() + 1, x.args.end() - 1) == in.regions[0].args)
          return true;
  }
  return false;
}

std::set<int> Reverse::neededIn(const Block& sb) const {
  std::set<int> need;
  for (bool changed = true; changed;) {
    changed = false;
    auto mark = [&](int v) {
      if (v >= 0 && need.insert(v).second) changed = true;
    };
    ir::forEachInstr(sb, [&](const Instr& i) {
      bool res = i.result >= 0 && need.count(i.result);
      auto yields = [&] {
        for (const Block& r : i.regions)
          for (int y : r.yields)
            mark(y);
      };
      switch (i.op) {
      case Op::Load:
        for (size_t k = 1; k < i.args.size(); ++k)
          mark(i.args[k]);
        if (res) mark(i.args[0]);
        return;
      case Op::BufStore:
      case Op::BufAdd:
        for (size_t k = 1; k + 1 < i.args.size(); ++k)
          mark(i.args[k]);
        if (need.count(i.args[0])) mark(i.args.back());
        return;
      case Op::SizeDef: mark(i.args[0]); return;
      case Op::Comp:
      case Op::ReduceSum:
      case Op::Stack:
        if (res) {
          yields();
          for (int a : i.args)
            mark(a);
        }
        return;
      case Op::ReduceProd:
      case Op::ReduceMax:
      case Op::ReduceMin:
      case Op::ReduceLse:
      case Op::ArgMax:
      case Op::ArgMin: yields(); return; // their adjoints read the elements
      case Op::If:
        mark(i.args[0]);
        if (res) yields();
        return;
      case Op::Custom:
        // The value needs the call; the adjoint runs the rule, which reads whatever it uses
        // from outside (the operands, mostly).
        if (res) {
          for (int y : i.regions[0].yields)
            mark(y);
          for (int a : i.args)
            mark(a);
        }
        if (i.result >= 0 && active(i.result)) {
          std::set<int> inside = ir::definedIn(i.regions[1]);
          ir::forEachInstr(i.regions[1], [&](const Instr& q) {
            for (int a : q.args)
              if (!inside.count(a)) mark(a);
          });
          for (int y : i.regions[1].yields)
            if (!inside.count(y)) mark(y);
        }
        return;
      case Op::For:
      case Op::BufZeros:
      case Op::Param:
      case Op::Const:
      case Op::Size: return;
      default: break;
      }
      if (res)
        for (int a : i.args)
          mark(a);
      bool adjoint = i.result >= 0 && isFloat(src_.types[i.result].dtype) && active(i.result);
      if (!adjoint) return;
      switch (i.op) {
      case Op::Add:
      case Op::Sub:
      case Op::Neg:
      case Op::Cast: return;
      case Op::Mul:
        if (active(i.args[1])) mark(i.args[0]);
        if (active(i.args[0])) mark(i.args[1]);
        return;
      case Op::Div:
        if (active(i.args[0])) mark(i.args[1]);
        if (active(i.args[1])) mark(i.args[0]), mark(i.args[1]);
        return;
      case Op::Select: mark(i.args[0]); return;
      default:
        for (int a : i.args)
          mark(a);
      }
    });
  }
  return need;
}

/// The state a loop's iterations carry that the tape must keep: the vars its body writes but
/// did not declare, less those it overwrites before reading (killedBeforeRead) and those whose
/// values the reverse sweep never needs (neededIn).
std::set<int> Reverse::carried(const Block& sb, const std::set<int>& readBefore) const {
  std::set<int> declared, written, carried;
  ir::forEachInstr(sb, [&](const Instr& i) {
    if (i.op == Op::BufZeros) declared.insert(i.result);
    if (i.op == Op::BufStore && i.ival >= 0) written.insert(i.args[0]);
  });
  std::set<int> need = neededIn(sb);
  for (int v : written)
    if (!declared.count(v) && ((need.count(v) && !killedBeforeRead(sb, v)) || readBefore.count(v)))
      carried.insert(v);
  return carried;
}

int Reverse::tapeBuffer(int v, const Poly& count, std::vector<Instr>& into) {
  const ir::Type& vt = src_.types[v];
  std::vector<Poly> shape{count};
  shape.insert(shape.end(), vt.shape.begin(), vt.shape.end());
  Instr zero;
  zero.op = Op::BufZeros;
  zero.result = out_.newValue(ir::Type{vt.dtype, shape});
  into.push_back(zero);
  return zero.result;
}

void Reverse::pushSnapshot(const LoopTape& tape, int k, int t, int end, bool forward) {
  auto id = [&](int v) { return forward ? v : primal(v); };
  for (const auto& [v, snap] : tape.vars)
    copyVar(id(snap), {t}, id(v), {}, src_.types[v]);
  auto store = [&](int buf, const std::vector<int>& idx, int value) {
    storeAt(id(buf), idx, value);
  };
  int one = b_.constInt(1);
  int t1 = b_.binary(Op::Add, t, one);
  store(tape.pos, {t}, k);
  store(tape.top, {}, t1);
  int free = b_.binary(Op::Sub, b_.size(tape.snapshots), t1);
  Instr nx;
  nx.op = Op::RevolveNext;
  nx.args = {k, end, free};
  store(tape.next, {}, b_.emit(nx, ir::Type{DType::I64, {}}));
}

void Reverse::copyVar(int dst, const std::vector<int>& dstPre, int src,
                      const std::vector<int>& srcPre, const ir::Type& t) {
  auto copyAt = [&](const std::vector<int>& j) {
    std::vector<int> sj = srcPre, dj = dstPre;
    sj.insert(sj.end(), j.begin(), j.end());
    dj.insert(dj.end(), j.begin(), j.end());
    storeAt(dst, dj, b_.load(src, sj, "", {}, true));
    return -1;
  };
  if (t.rank() == 0)
    copyAt({});
  else
    b_.forLoop(t.shape, copyAt);
}

void Reverse::dropValueTapeStores(Block& b) {
  std::vector<Instr> keep;
  for (Instr& in : b.body) {
    for (Block& r : in.regions)
      dropValueTapeStores(r);
    if (!(in.op == Op::BufStore && in.ival == kValueTapeStore)) keep.push_back(std::move(in));
  }
  b.body = std::move(keep);
}

/// Whether loop body q is a row write of var v: an element-wise loop writing v[p..., j...] at
/// its own indices j under a prefix p fixed before it, and writing v nowhere else.
const Instr* Reverse::rowWrite(const Instr& q, int v) const {
  if (q.op != Op::For || q.ival != 0) return nullptr;
  const Block& r = q.regions[0];
  const std::set<int> inside = ir::definedIn(r);
  const Instr* found = nullptr;
  int stores = 0;
  ir::forEachInstr(r, [&](const Instr& i) {
    if (i.op == Op::BufStore && i.args[0] == v) ++stores;
  });
  for (const Instr& i : r.body)
    if (i.op == Op::BufStore && i.args[0] == v) found = &i;
  if (!found || stores != 1) return nullptr;
  size_t rank = static_cast<size_t>(src_.types[v].rank()), nr = r.args.size();
  if (found->args.size() != rank + 2 || nr > rank) return nullptr;
  auto idx = found->args.begin() + 1;
  for (size_t d = 0; d < rank; ++d) {
    int a = idx[static_cast<long>(d)];
    if (d < rank - nr ? inside.count(a) != 0 : a != r.args[d - (rank - nr)]) return nullptr;
  }
  return found;
}

std::set<int> Reverse::undoLogged(const Block& sb, const std::set<int>& written) const {
  std::set<int> logged;
  for (int v : written) {
    int covered = 0, all = 0;
    ir::forEachInstr(sb, [&](const Instr& i) {
      if (i.op == Op::BufStore && i.args[0] == v) ++all;
    });
    for (const Instr& i : sb.body) {
      if (i.op == Op::BufStore && i.args[0] == v &&
          static_cast<int>(i.args.size()) - 2 == src_.types[v].rank())
        ++covered;
      if (rowWrite(i, v)) ++covered;
    }
    if (covered == all) logged.insert(v);
  }
  return logged;
}

/// A row write's extents, as a set key.
static std::string rowKey(const std::vector<Poly>& row) {
  std::string k = "row";
  for (const Poly& p : row)
    k += " " + p.str();
  return k;
}

std::vector<int> Reverse::undoWhere(const Instr& q, int v) const {
  if (q.op == Op::BufStore && q.args[0] == v)
    return std::vector<int>(q.args.begin() + 1, q.args.end() - 1);
  const Instr* w = rowWrite(q, v);
  if (!w) return {};
  size_t p = w->args.size() - 2 - q.regions[0].args.size();
  return std::vector<int>(w->args.begin() + 1, w->args.begin() + 1 + static_cast<long>(p));
}

Reverse::UndoSize Reverse::undoSize(const Block& sb, int v) const {
  UndoSize u{Poly(0), Poly(0)};
  std::set<std::pair<std::vector<int>, std::string>> seen; // see logWrites
  for (const Instr& i : sb.body) {
    bool write = (i.op == Op::BufStore && i.args[0] == v) || rowWrite(i, v);
    if (write && !seen.insert({undoWhere(i, v), i.op == Op::For ? rowKey(i.extents) : ""}).second)
      continue;
    // (The index tape holds the subscripts other than the step's own: see logWrites.)
    auto taped = [&](const std::vector<int>& prefix) {
      return Poly(static_cast<int64_t>(
          std::count_if(prefix.begin(), prefix.end(), [&](int x) { return x != sb.args[0]; })));
    };
    if (i.op == Op::BufStore && i.args[0] == v) {
      u.elements = u.elements + Poly(1);
      u.subscripts = u.subscripts + taped(undoWhere(i, v));
    }
    if (rowWrite(i, v)) {
      Poly row(1);
      for (const Poly& x : i.extents)
        row = row * x;
      u.elements = u.elements + row;
      u.subscripts = u.subscripts + taped(undoWhere(i, v));
    }
  }
  return u;
}

void Reverse::logWrites(Block& ob, const Instr& si, const std::set<int>& logged, LoopTape& tape,
                        std::vector<Instr>& alloc) {
  int k = ob.args[0];
  std::vector<Instr> newBody;
  // Saves v[prefix..., j...] for every j < row into fresh tapes indexed by the iteration.
  auto log = [&](int v, const std::vector<int>& prefix, const std::vector<Poly>& row,
                 const Instr& write) {
    int p = static_cast<int>(prefix.size());
    Undo u{v, -1, -1, p, {}, row};
    for (int x : prefix)
      u.atStep.push_back(x == k);
    DType dt = src_.types[v].dtype;
    std::vector<Poly> shape{si.extents[0]};
    shape.insert(shape.end(), row.begin(), row.end());
    Instr tv;
    tv.op = Op::BufZeros;
    tv.result = out_.newValue(ir::Type{dt, shape});
    alloc.push_back(tv);
    u.value = tv.result;
    if (std::count(u.atStep.begin(), u.atStep.end(), false) > 0) {
      Instr ti;
      ti.op = Op::BufZeros;
      ti.result = out_.newValue(ir::Type{DType::I64, {si.extents[0], Poly(p)}});
      alloc.push_back(ti);
      u.index = ti.result;
    }
    Block save = b_.buildBlock({}, [&] {
      for (int d = 0; d < p; ++d)
        if (!u.atStep[static_cast<size_t>(d)])
          storeAt(u.index, {k, b_.constInt(d)}, prefix[static_cast<size_t>(d)]);
      auto saveAt = [&](const std::vector<int>& j) {
        std::vector<int> at = prefix, into{k};
        at.insert(at.end(), j.begin(), j.end());
        into.insert(into.end(), j.begin(), j.end());
        Instr old;
        old.op = Op::Load;
        old.args.push_back(v);
        old.args.insert(old.args.end(), at.begin(), at.end());
        old.name = write.name;
        old.loc = write.loc;
        old.checked = write.checked;
        storeAt(u.value, into, b_.emit(old, ir::Type{dt, {}}));
        return -1;
      };
      if (row.empty())
        saveAt({});
      else
        b_.forLoop(row, saveAt);
      return -1;
    });
    newBody.insert(newBody.end(), save.body.begin(), save.body.end());
    tape.undo.push_back(u);
  };
  // A write of what an earlier write of the same iteration wrote (the same subscript values,
  // the same row) saves nothing: undoing the iteration needs only what it started with, and
  // the earlier write saved that. (`M[t] = ...; M[t] = f(M[t])` keeps one row per step.)
  std::set<std::tuple<int, std::vector<int>, std::string>> seen;
  // (ob already holds the tape code of nested loops, so walk it, not sb: the ids agree.)
  for (size_t n = 0; n < ob.body.size(); ++n) {
    const Instr st = ob.body[n];
    if (st.op == Op::BufStore && logged.count(st.args[0]) &&
        seen.insert({st.args[0], undoWhere(st, st.args[0]), ""}).second)
      log(st.args[0], undoWhere(st, st.args[0]), {}, st);
    for (int v : logged)
      if (const Instr* w = rowWrite(st, v))
        if (seen.insert({v, undoWhere(st, v), rowKey(st.extents)}).second)
          log(v, undoWhere(st, v), st.extents, *w);
    newBody.push_back(std::move(ob.body[n]));
  }
  ob.body = std::move(newBody);
}

void Reverse::undoStep(const LoopTape& tape, int k) {
  for (auto it = tape.undo.rbegin(); it != tape.undo.rend(); ++it) {
    std::vector<int> prefix;
    for (int d = 0; d < it->rank; ++d)
      prefix.push_back(it->atStep[static_cast<size_t>(d)]
                           ? k
                           : b_.load(primal(it->index), {k, b_.constInt(d)}, "", {}, true));
    auto restore = [&](const std::vector<int>& j) {
      std::vector<int> at = prefix, from{k};
      at.insert(at.end(), j.begin(), j.end());
      from.insert(from.end(), j.begin(), j.end());
      storeAt(primal(it->var), at, b_.load(primal(it->value), from, "", {}, true));
      return -1;
    };
    if (it->row.empty())
      restore({});
    else
      b_.forLoop(it->row, restore);
  }
}

/// Loops with state: the forward sweep of the gradient stores, at the start of each iteration,
/// every var the loop writes (and did not declare), so the adjoint loop can run backwards,
/// putting each iteration's state back before it recomputes and reverses that iteration.
/// Memory: iterations x state. (Checkpointing, which trades this for recomputation, is open.)
void Reverse::tapeLoops(Block& out, const Block& src, int depth, bool underRoot) {
  std::vector<Instr> body;
  for (size_t n = 0; n < src.body.size(); ++n) {
    const Instr& si = src.body[n];
    Instr oi = std::move(out.body[n]);
    // (A trip count known only inside the function cannot size checkpoints made on entry.)
    bool dynamicTrips = si.op == Op::For && si.extents[0].str().find('#') != std::string::npos;
    bool sequential = si.op == Op::For && si.ival == 1;
    // Binomial checkpointing needs the trip count on loop entry only; uniform checkpointing
    // sizes its checkpoints on function entry, so a data-dependent trip count keeps a full tape.
    bool binomial = opt_.binomial();
    bool checkpointed =
        sequential && depth == 0 && opt_.checkpointing() && (binomial || !dynamicTrips);
    // The outermost sequential loops tape the costly values computed inside them (see
    // tapeValues): for every iteration, or with uniform checkpointing for one segment (the
    // one being reversed). Under binomial checkpointing each step is recomputed right before
    // it is reversed, so only its nested loops keep value tapes.
    bool root = sequential && !checkpointed && !underRoot;
    bool segmentRoot = checkpointed && !binomial && !underRoot;
    const std::set<int> pre = readBefore_; // (the recursion adds the loop's own loads)
    for (size_t r = 0; r < si.regions.size(); ++r)
      // A comprehension's or reduction's body runs once per index, and its reversal
      // recomputes it per index: a loop inside it keeps no value tape of its own (one indexed
      // by the loop's step alone would hold the last index's values).
      tapeLoops(
          oi.regions[r], si.regions[r], depth + 1,
          underRoot || root || segmentRoot ||
              (ir::opKind(si.op) == ir::OpKind::Region && si.op != Op::If && si.op != Op::For));
    if (!sequential)
      for (size_t r = 0; r < si.regions.size(); ++r) {
        bool writes = false;
        ir::forEachInstr(si.regions[r], [&](const Instr& i) { writes |= i.op == Op::BufStore; });
        if (writes) recompute_[&si.regions[r]] = oi.regions[r];
      }
    ir::forEachInstr(si.regions.empty() ? Block{} : si.regions[0], [&](const Instr& i) {
      if (i.op == Op::Load) readBefore_.insert(i.args[0]);
    });
    if (si.op == Op::Load) readBefore_.insert(si.args[0]);
    for (size_t r = 1; r < si.regions.size(); ++r)
      ir::forEachInstr(si.regions[r], [&](const Instr& i) {
        if (i.op == Op::Load) readBefore_.insert(i.args[0]);
      });
    if (checkpointed) {
      // Checkpointing (top-level loops): states at some iterations, nothing else.
      std::set<int> written = carried(si.regions[0], pre);
      LoopTape tape;
      tape.checkpointed = true;
      const Poly& e = si.extents[0];
      int id = checkpoints_++;
      Block& ob = oi.regions[0];
      int k = ob.args[0];
      tape.body = ob; // what the reverse sweep recomputes: without the saves below
      // A trajectory (a var written a row per step, M[t] = f(M[t - 1])) is kept as an undo
      // log, as without checkpointing: over the whole loop the log holds no more elements
      // than the var, so it costs one state, where a snapshot would copy the whole var per
      // checkpoint. Its state at any step is the state after the last one, with the steps in
      // between undone (see reverseCheckpointed and reverseBinomial).
      std::set<int> logged, snapshotted;
      Poly undoBytes(0), stateBytes(0);
      for (int v : undoLogged(si.regions[0], written)) {
        UndoSize u = undoSize(si.regions[0], v);
        Poly numel(1);
        for (const Poly& p : src_.types[v].shape)
          numel = numel * p;
        Poly spare = numel - e * u.elements;
        std::string names = e.str() + u.elements.str();
        if (!dynamicTrips && names.find('#') == std::string::npos && spare.provablyNonNegative()) {
          logged.insert(v);
          undoBytes = undoBytes +
                      e * (u.elements * Poly(static_cast<int64_t>(dtypeSize(src_.types[v].dtype))) +
                           u.subscripts * Poly(8));
        }
      }
      for (int v : written) {
        if (logged.count(v)) continue;
        snapshotted.insert(v);
        Poly n(static_cast<int64_t>(dtypeSize(src_.types[v].dtype)));
        for (const Poly& p : src_.types[v].shape)
          n = n * p;
        stateBytes = stateBytes + n;
      }
      Block save;
      if (binomial) {
        // Binomial: S slots, a stack of (step, state); the forward sweep fills it as Revolve
        // places snapshots over the whole loop (see reverseBinomial).
        tape.binomial = true;
        std::string sn = "#snapshots" + std::to_string(id);
        // No more slots than steps; a trip count known only on loop entry cannot cap them.
        Poly cap = dynamicTrips ? Poly(int64_t(1) << 40) : e;
        if (opt_.memory > 0) {
          // The budget holds the undo logs and at least one snapshot: one state of the loop.
          // Less is an error on entry, never a single slot that recomputes T^2 / 2 steps.
          ir::EntryCheck c;
          c.kind = ir::EntryCheck::CheckpointBudget;
          c.got = undoBytes + stateBytes;
          c.limit = Poly(opt_.memory);
          c.cond = c.limit - c.got;
          c.what = "the checkpoint memory budget holds one state of the loop";
          c.needs = c.got.str() + " <= " + c.limit.str();
          if (!dynamicTrips) c.guards = {e}; // (a loop that does not run keeps nothing)
          c.loc = si.loc;
          if (c.got.str().find('#') == std::string::npos) out_.entryChecks.push_back(c);
          // Slots for the snapshots in what the undo logs leave (a budget of exactly one
          // state has one).
          // With no snapshot state (only trajectories), every step gets a slot: the undo logs
          // restore any step, so there is nothing to recompute.
          if (stateBytes == Poly(0) && !dynamicTrips) {
            out_.derived.push_back({ir::DerivedSize::Clamp, sn, cap, Poly(1), cap});
          } else {
            Poly slot = stateBytes == Poly(0) ? Poly(8) : stateBytes;
            out_.derived.push_back({ir::DerivedSize::Clamp, sn,
                                    Poly(opt_.memory) - undoBytes - stateBytes + slot, slot, cap});
          }
        } else {
          out_.derived.push_back({ir::DerivedSize::Clamp, sn, Poly(opt_.snapshots), Poly(1), cap});
        }
        tape.snapshots = Poly::var(sn);
        for (int v : snapshotted)
          tape.vars.push_back({v, tapeBuffer(v, tape.snapshots, body)});
        auto scalarBuffer = [&](std::vector<Poly> shape) {
          Instr z;
          z.op = Op::BufZeros;
          z.result = out_.newValue(ir::Type{DType::I64, std::move(shape)});
          body.push_back(z);
          return z.result;
        };
        tape.pos = scalarBuffer({tape.snapshots});
        tape.top = scalarBuffer({});  // slots in use (zero on entry)
        tape.next = scalarBuffer({}); // the step of the next snapshot (zero: the first)
        // if k == next && top < S { push(k) }
        save = b_.buildBlock({}, [&] {
          int t = b_.load(tape.top, {});
          int due = b_.binary(Op::And, b_.binary(Op::Eq, k, b_.load(tape.next, {})),
                              b_.binary(Op::Lt, t, b_.size(tape.snapshots)));
          int last = b_.binary(Op::Sub, b_.size(e), b_.constInt(1));
          b_.ifEffect(
              due, [&] { pushSnapshot(tape, k, t, last, /*forward=*/true); }, [] {});
          return -1;
        });
      } else {
        if (opt_.checkpoint > 0) {
          tape.segment = Poly(opt_.checkpoint);
        } else {
          std::string cn = "#checkpoint_spacing" + std::to_string(id);
          out_.derived.push_back({ir::DerivedSize::CeilSqrt, cn, e, Poly(1), Poly(0)});
          tape.segment = Poly::var(cn);
        }
        std::string sn = "#checkpoints" + std::to_string(id);
        out_.derived.push_back({ir::DerivedSize::CeilDiv, sn, e, tape.segment, Poly(0)});
        tape.segments = Poly::var(sn);
        for (int v : snapshotted)
          tape.vars.push_back({v, tapeBuffer(v, tape.segments, body)});
        // if k % c == 0 { checkpoint[k / c] = state }
        save = b_.buildBlock({}, [&] {
          int c = b_.size(tape.segment);
          int at = b_.binary(Op::Eq, b_.binary(Op::Mod, k, c), b_.constInt(0));
          b_.ifEffect(
              at,
              [&] {
                int slot = b_.binary(Op::Div, k, c);
                for (const auto& [v, t] : tape.vars)
                  copyVar(t, {slot}, v, {}, src_.types[v]);
              },
              [] {});
          return -1;
        });
        if (segmentRoot) {
          // The value tape holds one segment, at k % c; the segment's forward run in the
          // reverse sweep fills it (the forward sweep does not store).
          Block kb =
              b_.buildBlock({}, [&] { return b_.binary(Op::Mod, k, b_.size(tape.segment)); });
          ob.body.insert(ob.body.begin(), kb.body.begin(), kb.body.end());
          tapeValues(ob, &si, {kb.yields[0]}, {tape.segment}, body);
          tape.body = ob;
          dropValueTapeStores(ob);
        }
      }
      // (After tape.body is taken: the reverse sweep's forward runs rewrite what the log
      // already holds.)
      logWrites(ob, si, logged, tape, body);
      ob.body.insert(ob.body.begin(), save.body.begin(), save.body.end());
      loopTapes_[&si] = std::move(tape);
      body.push_back(std::move(oi));
      continue;
    }
    if (sequential) {
      std::set<int> written = carried(si.regions[0], pre);
      LoopTape tape;
      Block& ob = oi.regions[0];
      std::vector<Instr> prologue;
      int k = ob.args[0];
      const Block& sb = si.regions[0];
      // A var written only by element writes and row writes directly in the body keeps an
      // undo log (undoLogged): the tape grows by the elements written, not by the whole var
      // per iteration.
      std::set<int> logged = undoLogged(sb, written);
      // What reversing an iteration recomputes: the body with its nested loops' tape code
      // (their reversal reads those tapes), without its own (this iteration's entry is kept).
      Block recompute = ob;
      logWrites(ob, si, logged, tape, body);
      for (int v : written) {
        if (logged.count(v)) continue;
        int t = tapeBuffer(v, si.extents[0], body);
        tape.vars.push_back({v, t});
        // tape[k, j...] = v[j...]
        Block copy = b_.buildBlock({}, [&] {
          copyVar(t, {k}, v, {}, src_.types[v]);
          return -1;
        });
        prologue.insert(prologue.end(), copy.body.begin(), copy.body.end());
      }
      ob.body.insert(ob.body.begin(), prologue.begin(), prologue.end());
      if (root) tapeValues(ob, &si, {k}, {si.extents[0]}, body);
      tape.body = std::move(recompute);
      loopTapes_[&si] = std::move(tape);
    }
    body.push_back(std::move(oi));
  }
  out.body = std::move(body);
}

/// Whether recomputing a value costs much more than loading it: transcendental functions and
/// reductions (a whole loop each).
static bool costly(Op op) {
  switch (op) {
  case Op::ReduceSum:
  case Op::ReduceProd:
  case Op::ReduceMax:
  case Op::ReduceMin:
  case Op::ReduceLse: return true;
  default: return ir::isTranscendental(op);
  }
}

/// The value tape of a loop with state (`root`, an outermost sequential loop that keeps every
/// iteration): each active scalar a costly op computes in its body, nested loops and regions
/// included, is stored at [iteration, nested indices...]. Reversing an iteration restores the
/// state and recomputes the body, and there these values are loaded instead, so the reverse
/// sweep recomputes only cheap arithmetic; nested loops, which the reverse sweep would
/// otherwise recompute once per enclosing level, compute each value once. Memory: iterations
/// x (costly active values per iteration).
void Reverse::tapeValues(Block& ob, const Instr* root, std::vector<int> idx, std::vector<Poly> ext,
                         std::vector<Instr>& alloc) {
  std::vector<Instr> body;
  for (Instr& in : ob.body) {
    bool nestedExtentsKnown = true;
    for (const Poly& p : in.extents)
      nestedExtentsKnown = nestedExtentsKnown && p.str().find('#') == std::string::npos;
    if (nestedExtentsKnown)
      for (Block& r : in.regions) {
        // A user rule runs in the adjoint only: a tape store in it would never be filled.
        if (in.op == Op::Custom && &r != &in.regions[0]) continue;
        std::vector<int> ri = idx;
        std::vector<Poly> re = ext;
        ri.insert(ri.end(), r.args.begin(), r.args.end());
        if (in.op != Op::If) re.insert(re.end(), in.extents.begin(), in.extents.end());
        tapeValues(r, root, ri, re, alloc);
      }
    int v = in.result;
    bool tape = v >= 0 && costly(in.op) && active(v) && src_.types[v].rank() == 0 &&
                isFloat(src_.types[v].dtype) && !tape_.count(v);
    body.push_back(std::move(in));
    if (!tape) continue;
    Instr zero;
    zero.op = Op::BufZeros;
    zero.result = out_.newValue(ir::Type{src_.types[v].dtype, ext});
    alloc.push_back(zero);
    Instr st;
    st.op = Op::BufStore;
    st.ival = kValueTapeStore;
    st.args.push_back(zero.result);
    st.args.insert(st.args.end(), idx.begin(), idx.end());
    st.args.push_back(v);
    st.checked = true;
    body.push_back(std::move(st));
    tape_[v] = Tape{zero.result, idx, root};
    valueTapeRoot_[zero.result] = root;
  }
  ob.body = std::move(body);
}

/// The adjoint of a `for`: element-wise loops reverse each iteration; loops with state run
/// backwards over their tape (or their checkpoints).
void Reverse::reverseLoop(const Instr& in) {
  // A loop that writes only inactive vars has no adjoint, but an element-wise one still puts
  // back what it overwrote: adjoint code reversed after it reads vars directly, and must see
  // them as they were (var w = ones * 3; e = sum(x * w); w = ones: de/dx is 3, not 1).
  bool active = writesActive(in);
  if (!active && in.ival == 1) return;
  const Block& body = in.regions[0];
  if (in.ival != 1) { // independent iterations (element writes): reverse each
    std::set<int> inside;
    for (const Instr& i : body.body)
      if (i.result >= 0) inside.insert(i.result);
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      // The loop already ran (forward sweep or recomputation): put back each element this
      // iteration overwrote before recomputing it, since it may read the element first
      // (x[i] = x[i] * 2 reads the var itself).
      mapArgs(body, idx);
      for (const Instr& st : body.body) {
        auto saved = elementOld_.find(st.ival);
        if (st.op != Op::BufStore || st.ival <= 0 || saved == elementOld_.end()) continue;
        std::vector<int> at, where;
        bool known = true;
        for (size_t k = 1; k + 1 < st.args.size(); ++k) {
          known = known && !inside.count(st.args[k]);
          where.push_back(primal(st.args[k]));
        }
        if (!known) continue;
        for (int a : saved->second.indices)
          at.push_back(primal(a));
        storeAt(primal(st.args[0]), where, b_.load(primal(saved->second.buffer), at, "", {}, true));
      }
      if (active) reverseIteration(body, recomputeOf(body), idx);
      return -1;
    });
    return;
  }
  // Backwards over the iterations: restore the state, recompute, reverse.
  const LoopTape& tape = loopTapes_.at(&in);
  if (tape.binomial) return reverseBinomial(in);
  if (tape.checkpointed) return reverseCheckpointed(in);
  bool root = !filled_.count(&in);
  filled_.insert(&in); // (its value tape, if it has one, is full now)
  b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
    int e = b_.size(in.extents[0]);
    int k = b_.binary(Op::Sub, b_.binary(Op::Sub, e, b_.constInt(1)), idx[0]);
    for (const auto& [v, t] : tape.vars)
      copyVar(primal(v), {}, primal(t), {k}, src_.types[v]);
    // Element writes of this iteration, undone last to first: the state it started from.
    auto undo = [&] { undoStep(tape, k); };
    undo();
    reverseIteration(body, tape.body, {k}); // (tape.body: nested loops' tapes included)
    undo();                                 // the recomputation wrote them again
    return -1;
  });
  if (root) filled_.erase(&in);
  restoreEntryState(tape, b_.size(in.extents[0]));
}

/// Leaves every var the tape keeps as it was before the loop (entry 0 of its tape holds that
/// state), as code reversed after the loop expects; `trips` > 0 says the loop ran.
void Reverse::restoreEntryState(const LoopTape& tape, int trips) {
  if (tape.vars.empty()) return;
  b_.ifEffect(
      b_.binary(Op::Gt, trips, b_.constInt(0)),
      [&] {
        int zero = b_.constInt(0);
        for (const auto& [v, t] : tape.vars)
          copyVar(primal(v), {}, primal(t), {zero}, src_.types[v]);
      },
      [] {});
}

/// Checkpointed loop, backwards one segment at a time: from the segment's checkpoint, run it
/// forward keeping each iteration's state (c of them), then reverse it as an ordinary taped
/// loop. Tape memory: checkpoints + one segment, O(sqrt(iterations)) with spacing sqrt.
void Reverse::reverseCheckpointed(const Instr& in) {
  const LoopTape& tape = loopTapes_.at(&in);
  const Block& body = in.regions[0];
  int e = b_.size(in.extents[0]);
  b_.forLoop({tape.segments}, [&](const std::vector<int>& sidx) {
    int c = b_.size(tape.segment);
    int count = b_.size(tape.segments);
    int seg = b_.binary(Op::Sub, b_.binary(Op::Sub, count, b_.constInt(1)), sidx[0]);
    int lo = b_.binary(Op::Mul, seg, c);
    // The logged vars hold the state before the next segment: undo this one's steps.
    if (!tape.undo.empty())
      b_.forLoop({tape.segment}, [&](const std::vector<int>& jj) {
        int k = b_.binary(Op::Sub, b_.binary(Op::Add, lo, b_.binary(Op::Sub, c, b_.constInt(1))),
                          jj[0]);
        b_.ifEffect(
            b_.binary(Op::Lt, k, e), [&] { undoStep(tape, k); }, [] {});
        return -1;
      });
    std::vector<int> local;
    for (const auto& [v, t] : tape.vars) {
      copyVar(primal(v), {}, primal(t), {seg}, src_.types[v]);
      const ir::Type& vt = src_.types[v];
      std::vector<Poly> shape{tape.segment};
      shape.insert(shape.end(), vt.shape.begin(), vt.shape.end());
      local.push_back(b_.bufZeros(ir::Type{vt.dtype, shape}));
    }
    // Forward over the segment, keeping each iteration's starting state.
    b_.forLoop({tape.segment}, [&](const std::vector<int>& j) {
      int k = b_.binary(Op::Add, lo, j[0]);
      b_.ifEffect(
          b_.binary(Op::Lt, k, e),
          [&] {
            for (size_t n = 0; n < tape.vars.size(); ++n)
              copyVar(local[n], {j[0]}, primal(tape.vars[n].first), {},
                      src_.types[tape.vars[n].first]);
            auto saved = primal_;
            mapArgs(body, {k});
            emitClone(tape.body);
            primal_ = saved;
          },
          [] {});
      return -1;
    });
    // Backwards over it: restore, recompute (loading the values the forward run taped),
    // reverse.
    filled_.insert(&in);
    b_.forLoop({tape.segment}, [&](const std::vector<int>& jj) {
      int j = b_.binary(Op::Sub, b_.binary(Op::Sub, c, b_.constInt(1)), jj[0]);
      int k = b_.binary(Op::Add, lo, j);
      b_.ifEffect(
          b_.binary(Op::Lt, k, e),
          [&] {
            for (size_t n = 0; n < tape.vars.size(); ++n)
              copyVar(primal(tape.vars[n].first), {}, local[n], {j},
                      src_.types[tape.vars[n].first]);
            undoStep(tape, k); // (the logged vars, from after step k to before it)
            reverseIteration(body, tape.body, {k});
            undoStep(tape, k); // (the recomputation wrote them again)
          },
          [] {});
      return -1;
    });
    filled_.erase(&in);
    return -1;
  });
  restoreEntryState(tape, b_.size(tape.segments));
}

/// Binomial checkpointing, one reversed step at a time: drop the snapshots of steps after j,
/// restore the latest one left (step cur), run forward to j taking snapshots where Revolve
/// places them, then recompute and reverse step j. With S slots and T steps this runs the
/// least number of forward steps Revolve's bound allows (plus at most a few; see
/// tests/unit/revolve_test.cpp), and holds S states whatever T is.
void Reverse::reverseBinomial(const Instr& in) {
  const LoopTape& tape = loopTapes_.at(&in);
  const Block& body = in.regions[0];
  int top = primal(tape.top), pos = primal(tape.pos), next = primal(tape.next);
  b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
    int one = b_.constInt(1);
    int S = b_.size(tape.snapshots);
    int j = b_.binary(Op::Sub, b_.binary(Op::Sub, b_.size(in.extents[0]), one), idx[0]);
    // The snapshot of step j + 1, if any, is spent. (Only it: one of a later step was spent
    // when that step was reversed, and the snapshots taken since are of steps up to j. Slot 0,
    // step 0, never is.)
    {
      int t = b_.load(top, {});
      int t1 = b_.binary(Op::Sub, t, one);
      int spent = b_.binary(Op::And, b_.binary(Op::Gt, t, one),
                            b_.binary(Op::Gt, b_.load(pos, {t1}, "", {}, true), j));
      b_.ifEffect(
          spent, [&] { storeAt(top, {}, t1); }, [] {});
    }
    int t = b_.load(top, {});
    int t1 = b_.binary(Op::Sub, t, one);
    int cur = b_.load(pos, {t1}, "", {}, true);
    for (const auto& [v, snap] : tape.vars)
      copyVar(primal(v), {}, primal(snap), {t1}, src_.types[v]);
    // The logged vars hold the state before step j + 1: undo steps j down to cur.
    if (!tape.undo.empty()) {
      std::string back = "#rewind" + std::to_string(advances_++);
      Instr rw;
      rw.op = Op::SizeDef;
      rw.name = back;
      rw.args = {b_.binary(Op::Add, b_.binary(Op::Sub, j, cur), one)};
      b_.emitEffect(rw);
      b_.forLoop({Poly::var(back)}, [&](const std::vector<int>& a) {
        undoStep(tape, b_.binary(Op::Sub, j, a[0]));
        return -1;
      });
    }
    Instr nx;
    nx.op = Op::RevolveNext;
    nx.args = {cur, j, b_.binary(Op::Sub, S, t)};
    storeAt(next, {}, b_.emit(nx, ir::Type{DType::I64, {}}));
    // Forward from cur to j (a trip count known only here: bound with size.def).
    std::string steps = "#advance" + std::to_string(advances_++);
    Instr def;
    def.op = Op::SizeDef;
    def.name = steps;
    def.args = {b_.binary(Op::Sub, j, cur)};
    b_.emitEffect(def);
    b_.forLoop({Poly::var(steps)}, [&](const std::vector<int>& a) {
      int k = b_.binary(Op::Add, cur, a[0]);
      int tk = b_.load(top, {});
      int due =
          b_.binary(Op::And, b_.binary(Op::Eq, k, b_.load(next, {})), b_.binary(Op::Lt, tk, S));
      b_.ifEffect(
          due, [&] { pushSnapshot(tape, k, tk, j, /*forward=*/false); }, [] {});
      auto saved = primal_;
      mapArgs(body, {k});
      emitClone(tape.body);
      primal_ = saved;
      return -1;
    });
    reverseIteration(body, tape.body, {j}); // step j: recompute, reverse
    undoStep(tape, j);                      // the logged vars as step j found them
    return -1;
  });
  restoreEntryState(tape, b_.size(in.extents[0])); // (slot 0 holds step 0)
}

} // namespace slope::ad
