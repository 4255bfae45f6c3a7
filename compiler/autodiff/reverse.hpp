// Reverse mode's pass object, shared by its two translation units: autodiff.cpp (the pass
// over straight-line code and regions) and loops.cpp (loops with state: tapes, value tapes,
// checkpointing). Internal to compiler/autodiff.
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/rules.hpp"
#include "compiler/ir/builder.hpp"

#include <functional>
#include <map>
#include <set>

namespace slope::ad {

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
  void emitClone(const Block& fb, bool nested = false);
  /// The body's yield at index values k, computed again (the value map left as it was).
  int yieldAt(const Block& body, const std::vector<int>& k) {
    auto saved = primal_;
    mapArgs(body, k);
    emitClone(body);
    int v = primal(body.yields[0]);
    primal_ = saved;
    return v;
  }
  /// A region of an instruction being cloned, through emitClone (so taped values load).
  Block cloneRegion(const Block& r);
  void mapArgs(const Block& fb, const std::vector<int>& idx) {
    for (size_t k = 0; k < fb.args.size(); ++k)
      primal_[fb.args[k]] = idx[k];
  }
  /// A region body (comprehension, reduction, `if` branch, element-wise loop) as its reversal
  /// recomputes it: with the tape code of the loops with state inside it and the saves of
  /// what its var writes overwrite (see recompute_); fb itself when it writes no var.
  const Block& recomputeOf(const Block& fb) const {
    auto it = recompute_.find(&fb);
    return it == recompute_.end() ? fb : it->second;
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
  void reverseBody(const Block& fb, const std::vector<int>& idx, const std::function<int()>& seed);

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
  void saveOverwritten(Block& b, std::vector<Instr>& alloc);

  void reverseBlock(const Block& fb) {
    for (auto it = fb.body.rbegin(); it != fb.body.rend(); ++it)
      reverseInstr(*it);
  }
  void reverseInstr(const Instr& in);
  void reverseEffect(const Instr& in);
  void reverseLoop(const Instr& in);
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
  bool killedBeforeRead(const Block& sb, int v) const;
  /// The values of loop body sb whose primal the reverse sweep needs (forward ids): operands
  /// of ops whose adjoints read them (a product's factors when the other one is active, a
  /// transcendental's argument, a condition, a subscript), then, backwards, whatever computing
  /// those needs, through memory as well (a var is needed when a load of it is; then so is
  /// every value stored into it). A var outside this set feeds only sums, differences,
  /// scalings by constants and other such vars: the reverse sweep never needs its value, so
  /// the tape need not hold it.
  std::set<int> neededIn(const Block& sb) const;
  /// The vars loop body sb writes whose state the tape keeps: those the reverse sweep needs
  /// inside the loop (neededIn), and those read before the loop (`readBefore`): code before
  /// the loop is reversed after it and reads vars directly, so reversing the loop must leave
  /// them as they were on entry (var w = x; e = sum(w * w); for t { w[t] = 1 }).
  std::set<int> carried(const Block& sb, const std::set<int>& readBefore) const;
  std::set<int> readBefore_; // vars loaded by the code tapeLoops has passed so far
  /// A fresh zero buffer holding `count` copies of var v (f[count, shape(v)...]), appended to
  /// `into`.
  int tapeBuffer(int v, const Poly& count, std::vector<Instr>& into);
  /// A var write's overwritten value, loaded just before the (recomputed) write: its adjoint
  /// puts it back, so that code reversed after it sees the state it saw going forward.
  std::map<int64_t, int> old_;
  void rememberOld(const Instr& st);
  void reverseCheckpointed(const Instr& in);
  void reverseBinomial(const Instr& in);
  struct LoopTape;
  void restoreEntryState(const LoopTape& tape, int trips);
  /// Binomial checkpointing: takes a snapshot of the state before step k into slot t (the
  /// first free one) and asks Revolve where the next one goes, reversing up to step `end`.
  /// `forward`: in the forward sweep (buffers by their own ids), else in the reverse sweep.
  void pushSnapshot(const LoopTape& tape, int k, int t, int end, bool forward);
  /// dst[dstPre..., j...] = src[srcPre..., j...] for every j of a var of type t.
  void copyVar(int dst, const std::vector<int>& dstPre, int src, const std::vector<int>& srcPre,
               const ir::Type& t);
  struct Undo {
    int var, value, index; // the var, the tape of old values, the tape of indices (or -1)
    int rank;              // how many subscripts the prefix has
    // Per prefix subscript: it is the iteration's own index (`h[i] = ...` in `for i`), which
    // the reversal knows; the index tape holds only the others.
    std::vector<bool> atStep;
    std::vector<Poly> row; // a row write's extents (the value tape is f[T, row...]); empty
                           // for an element write
  };
  /// Whether q (an instruction of a loop body) is a row write of var v: an element-wise loop
  /// writing v[p..., j...] at its own indices j under a prefix p fixed before it, and v
  /// nowhere else; the store if so.
  const Instr* rowWrite(const Instr& q, int v) const;
  /// The vars of `written` that loop body sb changes only by element writes and row writes
  /// directly in it: they keep an undo log (each write saves what it overwrites, and where),
  /// not a copy of the whole var per iteration.
  std::set<int> undoLogged(const Block& sb, const std::set<int>& written) const;
  struct UndoSize {
    Poly elements, subscripts; // what one iteration's undo log of a var holds
  };
  UndoSize undoSize(const Block& sb, int v) const;
  /// The subscripts of var v that write q (an element write, or a row write) fixes: the
  /// element, or the row's prefix.
  std::vector<int> undoWhere(const Instr& q, int v) const;
  struct LoopTape;
  /// Inserts, before each write of a var in `logged` in loop body ob (the forward sweep's
  /// copy of si's body), the saves of what it overwrites into undo logs indexed by the
  /// iteration (buffers appended to alloc), and records the logs in tape.undo.
  void logWrites(Block& ob, const Instr& si, const std::set<int>& logged, LoopTape& tape,
                 std::vector<Instr>& alloc);
  /// Puts back what iteration k's writes overwrote, last write first: the state from after
  /// iteration k becomes the state before it.
  void undoStep(const LoopTape& tape, int k);
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
  /// Region bodies of src_ that write vars -> the same bodies with the forward sweep's
  /// bookkeeping (state tapes and undo logs of the loops inside, old values of element-wise
  /// writes). Such a region runs once per index (or per enclosing iteration), and that
  /// bookkeeping lives in buffers its own run fills, indexed by a loop's step or an element
  /// at most: the forward sweep leaves them holding the last index's values. Its reversal at
  /// an index recomputes this copy, which refills them (into fresh buffers, or the shared
  /// old-value buffers) for that index before its adjoint reads them.
  std::map<const Block*, Block> recompute_;
  bool activityChanged_ = false;
  int userLoopDepth_ = 0; // user loops (for with state) around the instruction analyze() is at
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
  static void dropValueTapeStores(Block& b);
  void tapeValues(Block& ob, const Instr* root, std::vector<int> idx, std::vector<Poly> ext,
                  std::vector<Instr>& alloc);
  const Instr* cur_ = nullptr;
  int curBuf_ = -1;
  int curG_ = -1;
};

} // namespace slope::ad
