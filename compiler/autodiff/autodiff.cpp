#include "compiler/autodiff/autodiff.hpp"

#include "compiler/autodiff/rules.hpp"
#include "compiler/ir/builder.hpp"

#include <map>
#include <set>

namespace slope {
namespace {

using ad::RuleKind;
using ir::Block;
using ir::Instr;
using ir::Op;

class Reverse final : public ad::RuleCtx {
public:
  Reverse(const ir::Function& src, const GradOptions& opt)
      : opt_(opt), src_(src), out_(src), b_(out_) {}

  ir::Function run(const std::vector<std::string>& wrt);

  // RuleCtx
  ir::Builder& b() override { return b_; }
  const Instr& instr() override { return *cur_; }
  int x(int k) override { return primal(cur_->args[k]); }
  int y() override { return primal(cur_->result); }
  int g() override {
    if (curG_ < 0) curG_ = b_.load(curBuf_, {});
    return curG_;
  }
  void acc(int k, int v) override { accumulate(cur_->args[k], v); }
  const Instr* def(int k) override { return defInstr_[cur_->args[k]]; }
  bool needs(int k) override { return active(cur_->args[k]); }

private:
  struct Scope {
    const Block* fwd;
    std::vector<Instr> prologue; // buf.zeros for the adjoints of values defined in fwd
    std::map<int, int> adj;      // forward value -> its accumulator
    std::vector<int> savedPrimal;
  };

  int primal(int v) const {
    return v < static_cast<int>(primal_.size()) && primal_[v] >= 0 ? primal_[v] : v;
  }
  bool active(int v) const { return v < static_cast<int>(active_.size()) && active_[v]; }

  void analyze(const Block& b);
  Scope* scopeOf(int v) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (it->fwd == defBlock_[v]) return &*it;
    throw GradError("internal error in autodiff: value %" + std::to_string(v) + " is out of scope");
  }
  int findAdj(int v) {
    Scope* s = scopeOf(v);
    auto it = s->adj.find(v);
    return it == s->adj.end() ? -1 : it->second;
  }
  int getAdj(int v) {
    Scope* s = scopeOf(v);
    auto it = s->adj.find(v);
    if (it != s->adj.end()) return it->second;
    Instr z;
    z.op = Op::BufZeros;
    z.result = out_.newValue(src_.types[v]);
    s->adj[v] = z.result;
    s->prologue.push_back(z);
    return z.result;
  }
  void accumulate(int v, int value) {
    if (!active(v)) return;
    b_.bufAdd(getAdj(v), {}, value);
  }
  /// adj(v) += t elementwise, for a tensor-valued v.
  void accumulateTensor(int v, int t) {
    if (!active(v)) return;
    int buf = getAdj(v);
    b_.forLoop(src_.types[v].shape, [&](const std::vector<int>& idx) {
      b_.bufAdd(buf, idx, b_.load(t, idx));
      return -1;
    });
  }

  void pushScope(const Block* fwd) { scopes_.push_back(Scope{fwd, {}, {}, primal_}); }
  /// Closes a scope: its accumulators are zeroed at `mark` in the current block, after the
  /// recomputed primal values and before any adjoint code.
  void popScope(size_t mark) {
    Scope s = std::move(scopes_.back());
    scopes_.pop_back();
    auto& body = b_.current().body;
    body.insert(body.begin() + static_cast<long>(mark), s.prologue.begin(), s.prologue.end());
    primal_ = std::move(s.savedPrimal);
  }

  /// Recomputes a forward block in the current one (its values become the primals here).
  /// Values the forward sweep taped are loaded instead of recomputed, and the stores that
  /// filled those tapes are not repeated. `nested`: a region inside the block being cloned
  /// (whose var writes are remembered where their own adjoint recomputes them).
  void emitClone(const Block& fb, bool nested = false) {
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
  /// A region of an instruction being cloned, through emitClone (so taped values load).
  Block cloneRegion(const Block& r) {
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
  void mapArgs(const Block& fb, const std::vector<int>& idx) {
    for (size_t k = 0; k < fb.args.size(); ++k)
      primal_[fb.args[k]] = idx[k];
  }
  /// Reverses one iteration of a loop body at index values idx: recompute `recompute` (the
  /// body, with whatever tape code it carries), then run the body's adjoint.
  void reverseIteration(const Block& body, const Block& recompute, const std::vector<int>& idx) {
    pushScope(&body);
    mapArgs(body, idx);
    emitClone(recompute);
    size_t mark = b_.current().body.size();
    reverseBlock(body);
    popScope(mark);
  }
  /// buf[idx...] = value, with subscripts known to be in range (tape bookkeeping).
  void storeAt(int buf, const std::vector<int>& idx, int value) {
    Instr st;
    st.op = Op::BufStore;
    st.args.push_back(buf);
    st.args.insert(st.args.end(), idx.begin(), idx.end());
    st.args.push_back(value);
    st.checked = true;
    b_.emitEffect(st);
  }
  /// Reverses a region body in the current block, seeding its yield with `seed`.
  void reverseBody(const Block& fb, const std::vector<int>& idx, const std::function<int()>& seed) {
    pushScope(&fb);
    mapArgs(fb, idx);
    emitClone(fb);
    size_t mark = b_.current().body.size();
    int y = fb.yields[0];
    if (active(y)) accumulate(y, seed());
    reverseBlock(fb);
    popScope(mark);
  }

  int linear(const std::vector<int>& idx, const std::vector<Poly>& ext) {
    int lin = b_.constInt(0);
    for (size_t k = 0; k < idx.size(); ++k)
      lin = b_.binary(Op::Add, b_.binary(Op::Mul, lin, b_.size(ext[k])), idx[k]);
    return lin;
  }
  std::vector<int> unflatten(int lin, const std::vector<Poly>& ext) {
    std::vector<int> idx(ext.size());
    for (size_t k = ext.size(); k-- > 0;) {
      int e = b_.size(ext[k]);
      idx[k] = b_.binary(Op::Mod, lin, e);
      lin = b_.binary(Op::Div, lin, e);
    }
    return idx;
  }

  void tapeNestedReductions();

  /// Element-wise loops (`for` regions that are not user loops: a row write, a whole-var
  /// assignment) save each element they overwrite, at the loop's index, into a buffer made on
  /// function entry; reversing the write puts it back from there. (Loading it back when the
  /// adjoint recomputes the write would be too late: by then the loop has written the new
  /// value.) So code reversed after the loop finds the var as it was before it, as code that
  /// reads vars directly, not through snapshots, needs. The reverse of such a loop always
  /// follows a recomputation of it (or the forward sweep), which refills the buffer.
  struct OldValues {
    int buffer;               // f[the loop's extents]
    std::vector<int> indices; // the loop's index values (forward ids)
  };
  std::map<int64_t, OldValues> elementOld_;     // user write id -> where its old values are
  static constexpr int64_t kOldValueStore = -2; // BufStore::ival of such a save
  void saveOverwritten(Block& b, std::vector<Instr>& alloc) {
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

  void reverseBlock(const Block& fb) {
    for (auto it = fb.body.rbegin(); it != fb.body.rend(); ++it)
      reverseInstr(*it);
  }
  void reverseInstr(const Instr& in);
  void reverseEffect(const Instr& in);
  bool writesActive(const Instr& in) const {
    bool w = false;
    for (const Block& r : in.regions)
      ir::forEachInstr(r, [&](const Instr& i) {
        if (i.op == Op::BufStore && active(i.args[0])) w = true;
      });
    return w;
  }
  void tapeLoops(Block& out, const Block& src, int depth = 0, bool underRoot = false);
  /// Whether an iteration of loop body sb overwrites all of var v before anything reads it:
  /// then the state it starts from holds nothing the iteration needs, and v stays off the
  /// tape (a temporary declared outside the loop, such as the LSTM's layer input).
  bool killedBeforeRead(const Block& sb, int v) const {
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
  /// The values of loop body sb whose primal the reverse sweep needs (forward ids): operands
  /// of ops whose adjoints read them (a product's factors when the other one is active, a
  /// transcendental's argument, a condition, a subscript), then, backwards, whatever computing
  /// those needs, through memory as well (a var is needed when a load of it is; then so is
  /// every value stored into it). A var outside this set feeds only sums, differences,
  /// scalings by constants and other such vars: the reverse sweep never needs its value, so
  /// the tape need not hold it.
  std::set<int> neededIn(const Block& sb) const {
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
  void dropUnneeded(const Block& sb, std::set<int>& written) const {
    std::set<int> need = neededIn(sb);
    for (auto it = written.begin(); it != written.end();)
      it = need.count(*it) ? std::next(it) : written.erase(it);
  }
  void dropKilled(const Block& sb, std::set<int>& written) const {
    for (auto it = written.begin(); it != written.end();)
      it = killedBeforeRead(sb, *it) ? written.erase(it) : std::next(it);
  }
  /// A fresh zero buffer holding `count` copies of var v (f[count, shape(v)...]), appended to
  /// `into`.
  int tapeBuffer(int v, const Poly& count, std::vector<Instr>& into) {
    const ir::Type& vt = src_.types[v];
    std::vector<Poly> shape{count};
    shape.insert(shape.end(), vt.shape.begin(), vt.shape.end());
    Instr zero;
    zero.op = Op::BufZeros;
    zero.result = out_.newValue(ir::Type{vt.dtype, shape});
    into.push_back(zero);
    return zero.result;
  }
  /// A var write's overwritten value, loaded just before the (recomputed) write: its adjoint
  /// puts it back, so that code reversed after it sees the state it saw going forward.
  std::map<int64_t, int> old_;
  void rememberOld(const Instr& st) {
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
  void reverseCheckpointed(const Instr& in);
  void reverseBinomial(const Instr& in);
  struct LoopTape;
  /// Binomial checkpointing: takes a snapshot of the state before step k into slot t (the
  /// first free one) and asks Revolve where the next one goes, reversing up to step `end`.
  /// `forward`: in the forward sweep (buffers by their own ids), else in the reverse sweep.
  void pushSnapshot(const LoopTape& tape, int k, int t, int end, bool forward) {
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
  /// dst[dstPre..., j...] = src[srcPre..., j...] for every j of a var of type t.
  void copyVar(int dst, const std::vector<int>& dstPre, int src, const std::vector<int>& srcPre,
               const ir::Type& t) {
    auto copyAt = [&](const std::vector<int>& j) {
      std::vector<int> sj = srcPre, dj = dstPre;
      sj.insert(sj.end(), j.begin(), j.end());
      dj.insert(dj.end(), j.begin(), j.end());
      Instr st;
      st.op = Op::BufStore;
      st.args = {dst};
      st.args.insert(st.args.end(), dj.begin(), dj.end());
      st.args.push_back(b_.load(src, sj, "", {}, true));
      st.checked = true;
      b_.emitEffect(st);
      return -1;
    };
    if (t.rank() == 0)
      copyAt({});
    else
      b_.forLoop(t.shape, copyAt);
  }
  struct Undo {
    int var, value, index; // the var, the tape of old values, the tape of indices (or -1)
    int rank;
  };
  struct LoopTape {
    std::vector<std::pair<int, int>> vars; // (var buffer, tape buffer): state at each iteration
    std::vector<Undo> undo;                // element writes, in program order: old values
    Block body;                            // the forward body with its tape writes
    bool checkpointed = false;             // vars hold checkpoints every `segment` iterations
    Poly segment, segments;                // checkpoint spacing, and how many
    bool binomial = false;                 // or, a stack of up to `snapshots` states:
    Poly snapshots;                        //   slots (vars' tapes are f[snapshots, ...])
    int pos = -1, top = -1, next = -1;     //   i64 buffers: slot -> step, slots used, next step
  };
  GradOptions opt_;
  int checkpoints_ = 0;
  int advances_ = 0; // size.def names of binomial checkpointing's forward runs
  std::map<const Instr*, LoopTape> loopTapes_; // sequential loops of src_
  bool activityChanged_ = false;
  void structural(const Instr& in, int buf);

  const ir::Function& src_;
  ir::Function out_;
  ir::Builder b_;
  std::vector<char> active_;
  std::vector<const Block*> defBlock_;
  std::vector<const Instr*> defInstr_;
  std::vector<int> primal_;
  std::vector<Scope> scopes_;
  struct Tape {
    int buffer;                  // f[extents of the enclosing region]
    std::vector<int> indices;    // the enclosing region's index values (forward ids)
    const Instr* root = nullptr; // the loop whose iterations fill it (null: the forward sweep)
  };
  std::map<int, Tape> tape_; // forward value -> where the forward sweep stored it
  /// Value tapes of loops with state (see tapeValues): a tape is read only while its root
  /// loop is being reversed (filled_), since a clone of the whole loop must compute the values
  /// afresh, as the forward sweep did.
  static constexpr int64_t kValueTapeStore = -1; // BufStore::ival of a value-tape write
  std::set<const Instr*> filled_;
  std::map<int, const Instr*> valueTapeRoot_; // tape buffer -> its root loop
  bool filled(const Tape& t) const { return !t.root || filled_.count(t.root); }
  bool filledBuffer(int buf) const {
    auto it = valueTapeRoot_.find(buf);
    return it != valueTapeRoot_.end() && filled_.count(it->second);
  }
  static void dropValueTapeStores(Block& b) {
    std::vector<Instr> keep;
    for (Instr& in : b.body) {
      for (Block& r : in.regions)
        dropValueTapeStores(r);
      if (!(in.op == Op::BufStore && in.ival == kValueTapeStore)) keep.push_back(std::move(in));
    }
    b.body = std::move(keep);
  }
  void tapeValues(Block& ob, const Instr* root, std::vector<int> idx, std::vector<Poly> ext,
                  std::vector<Instr>& alloc);
  const Instr* cur_ = nullptr;
  int curBuf_ = -1;
  int curG_ = -1;
};

void Reverse::analyze(const Block& b) {
  for (int a : b.args)
    defBlock_[a] = &b;
  for (const Instr& in : b.body) {
    for (const Block& r : in.regions)
      analyze(r);
    // A var becomes active when an active value is stored into it; its memory is then active.
    if (in.op == Op::BufStore && active(in.args.back()) && !active(in.args[0]) &&
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
    bool loop =
        ir::opKind(outer.op) == ir::OpKind::Region && outer.op != Op::If && outer.op != Op::For;
    if (loop) {
      Block& r = outer.regions[0];
      std::vector<Instr> inner;
      for (Instr& q : r.body) {
        inner.push_back(std::move(q));
        const Instr& qi = inner.back();
        bool reduction = ir::opKind(qi.op) == ir::OpKind::Region && qi.op != Op::If &&
                         qi.op != Op::For && qi.op != Op::Comp;
        if (!reduction || qi.result < 0 || !isFloat(src_.types[qi.result].dtype)) continue;
        Instr zero;
        zero.op = Op::BufZeros;
        zero.result = out_.newValue(ir::Type{src_.types[qi.result].dtype, outer.extents});
        body.push_back(zero);
        Instr store;
        store.op = Op::BufAdd;
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
    bool binomial = opt_.snapshots > 0 || opt_.memory > 0;
    bool checkpointed =
        sequential && depth == 0 && opt_.checkpointing() && (binomial || !dynamicTrips);
    // The outermost sequential loops tape the costly values computed inside them (see
    // tapeValues): for every iteration, or with uniform checkpointing for one segment (the
    // one being reversed). Under binomial checkpointing each step is recomputed right before
    // it is reversed, so only its nested loops keep value tapes.
    bool root = sequential && !checkpointed && !underRoot;
    bool segmentRoot = checkpointed && !binomial && !underRoot;
    for (size_t r = 0; r < si.regions.size(); ++r)
      tapeLoops(oi.regions[r], si.regions[r], depth + 1, underRoot || root || segmentRoot);
    if (checkpointed) {
      // Checkpointing (top-level loops): states at some iterations, nothing else.
      std::set<int> declared, written;
      ir::forEachInstr(si.regions[0], [&](const Instr& i) {
        if (i.op == Op::BufZeros) declared.insert(i.result);
        if (i.op == Op::BufStore) written.insert(i.args[0]);
      });
      dropKilled(si.regions[0], written);
      dropUnneeded(si.regions[0], written);
      LoopTape tape;
      tape.checkpointed = true;
      const Poly& e = si.extents[0];
      int id = checkpoints_++;
      Block& ob = oi.regions[0];
      int k = ob.args[0];
      tape.body = ob; // what the reverse sweep recomputes: without the saves below
      Block save;
      if (binomial) {
        // Binomial: S slots, a stack of (step, state); the forward sweep fills it as Revolve
        // places snapshots over the whole loop (see reverseBinomial).
        tape.binomial = true;
        Poly stateBytes(0);
        for (int v : written) {
          if (declared.count(v)) continue;
          Poly n(static_cast<int64_t>(dtypeSize(src_.types[v].dtype)));
          for (const Poly& p : src_.types[v].shape)
            n = n * p;
          stateBytes = stateBytes + n;
        }
        std::string sn = "#snapshots" + std::to_string(id);
        // No more slots than steps; a trip count known only on loop entry cannot cap them.
        Poly cap = dynamicTrips ? Poly(int64_t(1) << 40) : e;
        if (opt_.memory > 0)
          out_.derived.push_back({ir::DerivedSize::Clamp, sn, Poly(opt_.memory), stateBytes, cap});
        else
          out_.derived.push_back({ir::DerivedSize::Clamp, sn, Poly(opt_.snapshots), Poly(1), cap});
        tape.snapshots = Poly::var(sn);
        for (int v : written)
          if (!declared.count(v)) tape.vars.push_back({v, tapeBuffer(v, tape.snapshots, body)});
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
        for (int v : written)
          if (!declared.count(v)) tape.vars.push_back({v, tapeBuffer(v, tape.segments, body)});
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
      ob.body.insert(ob.body.begin(), save.body.begin(), save.body.end());
      loopTapes_[&si] = std::move(tape);
      body.push_back(std::move(oi));
      continue;
    }
    if (sequential) {
      // Vars written inside but declared outside the loop carry state between iterations.
      std::set<int> declared, written;
      ir::forEachInstr(si.regions[0], [&](const Instr& i) {
        if (i.op == Op::BufZeros) declared.insert(i.result);
        if (i.op == Op::BufStore) written.insert(i.args[0]);
      });
      dropKilled(si.regions[0], written);
      dropUnneeded(si.regions[0], written);
      LoopTape tape;
      Block& ob = oi.regions[0];
      std::vector<Instr> prologue;
      int k = ob.args[0];
      const Block& sb = si.regions[0];
      // A var written only by element writes directly in the body keeps an undo log: each
      // write saves the element it overwrites (and where), so the tape grows by one element
      // per write, not by the whole var per iteration.
      std::set<int> logged;
      for (int v : written) {
        if (declared.count(v)) continue;
        int direct = 0, all = 0;
        ir::forEachInstr(sb, [&](const Instr& i) {
          if (i.op == Op::BufStore && i.args[0] == v) ++all;
        });
        for (const Instr& i : sb.body)
          if (i.op == Op::BufStore && i.args[0] == v &&
              static_cast<int>(i.args.size()) - 2 == src_.types[v].rank())
            ++direct;
        if (direct == all) logged.insert(v);
      }
      // What reversing an iteration recomputes: the body with its nested loops' tape code
      // (their reversal reads those tapes), without its own (this iteration's entry is kept).
      Block recompute = ob;
      std::vector<Instr> newBody;
      // (ob already holds the tape code of nested loops, so walk it, not sb: the ids agree.)
      for (size_t n = 0; n < ob.body.size(); ++n) {
        const Instr st = ob.body[n];
        if (st.op == Op::BufStore && logged.count(st.args[0])) {
          int v = st.args[0];
          int rank = src_.types[v].rank();
          Undo u{v, -1, -1, rank};
          Instr tv;
          tv.op = Op::BufZeros;
          tv.result = out_.newValue(ir::Type{src_.types[v].dtype, si.extents});
          body.push_back(tv);
          u.value = tv.result;
          if (rank > 0) {
            Instr ti;
            ti.op = Op::BufZeros;
            ti.result = out_.newValue(ir::Type{DType::I64, {si.extents[0], Poly(rank)}});
            body.push_back(ti);
            u.index = ti.result;
          }
          Block save = b_.buildBlock({}, [&] {
            std::vector<int> idx(st.args.begin() + 1, st.args.end() - 1);
            Instr old;
            old.op = Op::Load;
            old.args.push_back(v);
            old.args.insert(old.args.end(), idx.begin(), idx.end());
            old.name = st.name;
            old.loc = st.loc;
            old.checked = st.checked;
            int ov = b_.emit(old, ir::Type{src_.types[v].dtype, {}});
            Instr s1;
            s1.op = Op::BufStore;
            s1.args = {u.value, k, ov};
            b_.emitEffect(s1);
            for (int d = 0; d < rank; ++d) {
              Instr s2;
              s2.op = Op::BufStore;
              s2.args = {u.index, k, b_.constInt(d), idx[d]};
              b_.emitEffect(s2);
            }
            return -1;
          });
          newBody.insert(newBody.end(), save.body.begin(), save.body.end());
          tape.undo.push_back(u);
        }
        newBody.push_back(std::move(ob.body[n]));
      }
      ob.body = std::move(newBody);
      for (int v : written) {
        if (declared.count(v) || logged.count(v)) continue;
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
  case Op::Exp:
  case Op::Log:
  case Op::Log1p:
  case Op::Expm1:
  case Op::Sqrt:
  case Op::Sin:
  case Op::Cos:
  case Op::Tan:
  case Op::Asin:
  case Op::Acos:
  case Op::Atan:
  case Op::Sinh:
  case Op::Cosh:
  case Op::Tanh:
  case Op::Sigmoid:
  case Op::Softplus:
  case Op::Erf:
  case Op::Lgamma:
  case Op::Pow:
  case Op::Atan2:
  case Op::ReduceSum:
  case Op::ReduceProd:
  case Op::ReduceMax:
  case Op::ReduceMin:
  case Op::ReduceLse: return true;
  default: return false;
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
    Instr clear;
    clear.op = Op::BufStore;
    clear.args.push_back(dvar);
    clear.args.insert(clear.args.end(), idx.begin(), idx.end());
    clear.args.push_back(b_.constant(src_.types[var].dtype, 0));
    clear.checked = true;
    b_.emitEffect(clear);
    accumulate(in.args.back(), g);
    return;
  }
  if (in.op != Op::For || !writesActive(in)) return;
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
      reverseIteration(body, body, idx);
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
    auto undo = [&] {
      for (auto it = tape.undo.rbegin(); it != tape.undo.rend(); ++it) {
        std::vector<int> idx;
        for (int d = 0; d < it->rank; ++d)
          idx.push_back(b_.load(primal(it->index), {k, b_.constInt(d)}, "", {}, true));
        Instr st;
        st.op = Op::BufStore;
        st.args = {primal(it->var)};
        st.args.insert(st.args.end(), idx.begin(), idx.end());
        st.args.push_back(b_.load(primal(it->value), {k}, "", {}, true));
        st.checked = true;
        b_.emitEffect(st);
      }
    };
    undo();
    reverseIteration(body, tape.body, {k}); // (tape.body: nested loops' tapes included)
    undo();                                 // the recomputation wrote them again
    return -1;
  });
  if (root) filled_.erase(&in);
  // Leave every var as it was before the loop, as earlier code's adjoints expect.
  if (!tape.vars.empty()) {
    int count = b_.size(in.extents[0]);
    b_.ifEffect(
        b_.binary(Op::Gt, count, b_.constInt(0)),
        [&] {
          int zero = b_.constInt(0);
          for (const auto& [v, t] : tape.vars)
            copyVar(primal(v), {}, primal(t), {zero}, src_.types[v]);
        },
        [] {});
  }
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
            reverseIteration(body, tape.body, {k});
          },
          [] {});
      return -1;
    });
    filled_.erase(&in);
    return -1;
  });
  // Leave the vars as they were before the loop.
  b_.ifEffect(
      b_.binary(Op::Gt, b_.size(tape.segments), b_.constInt(0)),
      [&] {
        int zero = b_.constInt(0);
        for (const auto& [v, t] : tape.vars)
          copyVar(primal(v), {}, primal(t), {zero}, src_.types[v]);
      },
      [] {});
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
  auto store = [&](int buf, const std::vector<int>& idx, int value) { storeAt(buf, idx, value); };
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
          spent, [&] { store(top, {}, t1); }, [] {});
    }
    int t = b_.load(top, {});
    int t1 = b_.binary(Op::Sub, t, one);
    int cur = b_.load(pos, {t1}, "", {}, true);
    for (const auto& [v, snap] : tape.vars)
      copyVar(primal(v), {}, primal(snap), {t1}, src_.types[v]);
    Instr nx;
    nx.op = Op::RevolveNext;
    nx.args = {cur, j, b_.binary(Op::Sub, S, t)};
    store(next, {}, b_.emit(nx, ir::Type{DType::I64, {}}));
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
    return -1;
  });
  // Leave the vars as they were before the loop (slot 0 holds step 0).
  b_.ifEffect(
      b_.binary(Op::Gt, b_.size(in.extents[0]), b_.constInt(0)),
      [&] {
        int zero = b_.constInt(0);
        for (const auto& [v, snap] : tape.vars)
          copyVar(primal(v), {}, primal(snap), {zero}, src_.types[v]);
      },
      [] {});
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
    // x_j's adjoint is g softmax_j = g exp(x_j - lse).
    const Block& body = in.regions[0];
    int g = b_.load(buf, {});
    int lse = primal(in.result);
    b_.forLoop(in.extents, [&](const std::vector<int>& idx) {
      reverseBody(body, idx, [&] {
        int xj = primal(body.yields[0]);
        return b_.binary(Op::Mul, g, b_.unary(Op::Exp, b_.binary(Op::Sub, xj, lse)));
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
        int xj = primal(body.yields[0]);
        int nz = b_.binary(Op::Ne, xj, b_.constant(dt, 0));
        int others = b_.ifElse(
            nz, ir::Type{dt, {}}, [&] { return b_.binary(Op::Div, P, xj); },
            [&] {
              int self = linear(idx, in.extents);
              return b_.region(Op::ReduceProd, in.extents, ir::Type{dt, {}},
                               [&](const std::vector<int>& k) {
                                 auto saved = primal_;
                                 mapArgs(body, k);
                                 emitClone(body);
                                 int xk = primal(body.yields[0]);
                                 primal_ = saved;
                                 int same = b_.binary(Op::Eq, linear(k, in.extents), self);
                                 return b_.select(same, b_.constant(dt, 1), xk);
                               });
            });
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
    int at = b_.region(arg, in.extents, ir::Type{DType::I64, {}}, [&](const std::vector<int>& k) {
      auto saved = primal_;
      mapArgs(body, k);
      emitClone(body);
      int v = primal(body.yields[0]);
      primal_ = saved;
      return v;
    });
    auto rev = [&] { reverseBody(body, unflatten(at, in.extents), [&] { return g; }); };
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
      emitClone(blk);
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

} // namespace

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

ir::Function differentiate(const ir::Function& f, const std::vector<std::string>& wrt,
                           const GradOptions& opt) {
  Reverse r(f, opt);
  return r.run(wrt);
}

} // namespace slope
