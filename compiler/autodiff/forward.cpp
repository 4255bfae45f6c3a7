// Forward mode (compiler/autodiff/forward.hpp).
#include "compiler/autodiff/forward.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/rules.hpp"
#include "compiler/ir/builder.hpp"
#include "compiler/simplify/simplify.hpp"

#include <algorithm>
#include <optional>

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;

/// Whether block b writes memory it does not make itself (a var or accumulator outside it):
/// then running it twice, once for the value and once for the tangent, would write twice.
/// A reduction tape's store (kTapeOnce) writes the same value however often it runs.
bool writesOutside(const Block& b) {
  std::set<int> own = ir::definedIn(b);
  bool w = false;
  ir::forEachInstr(b, [&](const Instr& i) {
    if ((i.op == Op::BufStore || i.op == Op::BufAdd) && !own.count(i.args[0]) &&
        !(i.op == Op::BufStore && i.ival == ir::kTapeOnce))
      w = true;
  });
  return w;
}

/// Whether block b binds a size (a triangular sum's `sum[c: j + 1]` does): its copies, one per
/// element of an unrolled region, would bind one name to several values in one block, and a
/// read of the size after the second would be taken for the first (seed 147530 of the random
/// programs: a mean over j + 1 divided every unrolled row by 1).
bool bindsSize(const Block& b) {
  bool any = false;
  ir::forEachInstr(b, [&](const Instr& i) { any = any || i.op == Op::SizeDef; });
  return any;
}

class Forward final : public ad::RuleCtx {
public:
  Forward(const ir::Function& src, int batch, const Seeds* seeds = nullptr)
      : src_(src), out_(src), b_(out_), batch_(batch), lanes_(batch > 0 ? batch : 1),
        seeds_(seeds) {
    out_.body = Block{};
  }

  ir::Function run(const std::vector<std::string>& wrtIn);

  // RuleCtx: the adjoint rules, run with g = 1, give the partials (see forward.hpp).
  ir::Builder& b() override { return b_; }
  const Instr& instr() override { return *cur_; }
  int x(int k) override { return primal(cur_->args[k]); }
  int y() override { return primal(cur_->result); }
  int g() override {
    if (one_ < 0) one_ = b_.constant(src_.types[cur_->result].dtype, 1.0);
    return one_;
  }
  void acc(int k, int partial) override {
    const std::vector<int>& t = lane_[cur_->args[k]];
    if (t.empty()) return;
    if (sum_.empty()) sum_.assign(t.size(), -1);
    DType want = src_.types[cur_->result].dtype;
    for (size_t j = 0; j < t.size(); ++j) { // the partial is computed once for every lane
      if (t[j] < 0) continue;               // (a lane that is structurally zero)
      int term = b_.binary(Op::Mul, partial, t[j]);
      if (out_.types[term].dtype != want) term = b_.cast(term, want);
      sum_[j] = sum_[j] < 0 ? term : b_.binary(Op::Add, sum_[j], term);
    }
  }
  const Instr* def(int k) override { return def_[cur_->args[k]]; }
  bool needs(int k) override { return !lane_[cur_->args[k]].empty(); }

private:
  bool active(int v) const { return active_[v] != 0; }
  int primal(int v) const { return primal_[v] >= 0 ? primal_[v] : v; }
  void mapArgs(const Block& b, const std::vector<int>& idx) {
    for (size_t k = 0; k < b.args.size(); ++k)
      primal_[b.args[k]] = idx[k];
  }
  /// The body's yield at index values k, computed again (the value map left as it was).
  int yieldAt(const Block& body, const std::vector<int>& k) {
    auto saved = primal_;
    mapArgs(body, k);
    for (const Instr& i : body.body)
      emitPrimal(i);
    int v = primal(body.yields[0]);
    primal_ = saved;
    return v;
  }

  void analyze(const Block& b);
  void setActive(int v) {
    if (active_[v]) return;
    active_[v] = 1;
    changed_ = true;
  }

  // Tangents. A scalar value's tangent is one scalar per lane (lane_); a tensor's, and any
  // buffer's (a var), is one value (whole_) of the tensor's type, or with batch K, of type
  // its shape ++ [K]: lane j of element [i...] at [i..., j], so that an element's K lanes lie
  // side by side (the lanes of one scalar operation are contiguous loads and stores, which
  // LLVM's SLP vectorizer turns into vector instructions). As a matrix, [n, K] holds the K
  // directions as columns: J V for x: f64[n] is [m, K].
  ir::Type batched(const ir::Type& t) const {
    if (batch_ == 0) return t;
    ir::Type b = t;
    b.shape.push_back(Poly(batch_));
    return b;
  }
  /// Index idx into lane j of a whole tangent.
  std::vector<int> laneIndex(int j, const std::vector<int>& idx) {
    if (batch_ == 0) return idx;
    std::vector<int> at = idx;
    at.push_back(b_.constInt(j));
    return at;
  }
  // A scalar's lanes: a value each, or -1 where the lane is structurally zero (a seeded JVP's
  // lanes that no seed reaches: no code computes them). A scalar with no lane nonzero has no
  // lanes at all (lane_ empty), so that rules see it as having no tangent.
  void setLanes(int v, std::vector<int> lanes) {
    if (std::none_of(lanes.begin(), lanes.end(), [](int l) { return l >= 0; })) lanes.clear();
    lane_[v] = std::move(lanes);
  }
  /// Lane j of scalar v's tangent: a value, or -1 where it is structurally zero.
  int laneOf(int v, int j) const {
    return lane_[v].empty() ? -1 : lane_[v][static_cast<size_t>(j)];
  }
  std::vector<int> lanesOf(int v) const {
    return lane_[v].empty() ? std::vector<int>(static_cast<size_t>(lanes_), -1) : lane_[v];
  }
  /// Lane j of scalar v's tangent, or a zero where v has none.
  int laneOrZero(int v, int j) {
    int l = laneOf(v, j);
    return l >= 0 ? l : b_.constant(src_.types[v].dtype, 0);
  }
  std::vector<int> lanesOrZero(int v) {
    std::vector<int> out;
    for (int j = 0; j < lanes_; ++j)
      out.push_back(laneOrZero(v, j));
    return out;
  }
  /// The value of src_'s integer v where it is a literal: a constant, or a tiny region's index
  /// that unrolled() made one.
  std::optional<int64_t> literal(int v) const {
    if (const Instr* d = def_[v]; d && d->op == Op::Const) return d->ival;
    auto it = literal_.find(primal(v));
    if (it == literal_.end()) return std::nullopt;
    return it->second;
  }
  /// The flat element of a tensor of type t at indices idx (src_ values), where t's extents
  /// and the indices are all literals and the element is in range.
  std::optional<int64_t> literalElement(const ir::Type& t, const int* idx) const {
    int64_t e = 0;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      std::optional<int64_t> n = t.shape[d].constValue(), k = literal(idx[d]);
      if (!n || !k || *k < 0 || *k >= *n) return std::nullopt;
      e = e * *n + *k;
    }
    return e;
  }
  /// Indices (out_ values) of flat element e of a literal shape.
  std::vector<int> literalIndex(const ir::Type& t, int64_t e) {
    std::vector<int> idx(t.shape.size());
    for (size_t d = t.shape.size(); d-- > 0;) {
      const int64_t n = *t.shape[d].constValue();
      idx[d] = b_.constInt(e % n);
      e /= n;
    }
    return idx;
  }
  /// Whether a region is unrolled in a seeded JVP: a comprehension or a sum over literal
  /// extents of at most kTinyElements elements (a 3-vector's), whose body writes nothing
  /// outside it and binds no size. Its elements' lanes then stay apart (elems_), so that a lane no
  /// seed reaches stays structurally zero through it.
  bool tiny(const Instr& in) const {
    constexpr int64_t kTinyElements = 4;
    if (!seeds_ || (in.op != Op::Comp && in.op != Op::ReduceSum) || in.extents.empty() ||
        in.regions.size() != 1 || src_.types[in.result].rank() != (in.op == Op::Comp ? 1 : 0) ||
        writesOutside(in.regions[0]) || bindsSize(in.regions[0]))
      return false;
    int64_t n = 1;
    for (const Poly& e : in.extents) {
      std::optional<int64_t> c = e.constValue();
      if (!c || *c < 1) return false;
      n *= *c;
      if (n > kTinyElements) return false;
    }
    return true;
  }
  void unrolled(const Instr& in);
  /// The lanes of an element of a seeded parameter whose last index is k (a value of src_): 1
  /// in the lane its seed names, structurally 0 in the others. A literal k picks its lane
  /// here; another k is compared with the indices of each lane's seeds.
  std::vector<int> seededLanes(const std::vector<int>& seeds, int k, DType dt) {
    std::vector<int> out(static_cast<size_t>(lanes_), -1);
    auto one = [&](int lane) { out[static_cast<size_t>(lane)] = b_.constant(dt, 1); };
    if (seeds.size() == 1) {
      if (seeds[0] >= 0) one(seeds[0]);
      return out;
    }
    if (std::optional<int64_t> lit = literal(k)) {
      // (An index out of range has no lane: its load fails, checked, before it is used.)
      if (*lit >= 0 && *lit < static_cast<int64_t>(seeds.size()) &&
          seeds[static_cast<size_t>(*lit)] >= 0)
        one(seeds[static_cast<size_t>(*lit)]);
      return out;
    }
    for (int j = 0; j < lanes_; ++j) {
      int hit = -1;
      for (size_t e = 0; e < seeds.size(); ++e) {
        if (seeds[e] != j) continue;
        int eq = b_.binary(Op::Eq, primal(k), b_.constInt(static_cast<int64_t>(e)));
        hit = hit < 0 ? eq : b_.binary(Op::Or, hit, eq);
      }
      if (hit >= 0)
        out[static_cast<size_t>(j)] = b_.select(hit, b_.constant(dt, 1), b_.constant(dt, 0));
    }
    return out;
  }
  /// A seeded parameter's whole tangent, for the uses that read it other than as scalar
  /// loads (those take seededLanes; this is dead code when they are all there is).
  int seededWhole(int p, const std::vector<int>& seeds) {
    const ir::Type t = batched(src_.types[p]);
    const DType dt = t.dtype;
    const size_t r = static_cast<size_t>(src_.types[p].rank());
    return b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& idx) {
      int lane = batch_ > 0 ? idx[r] : b_.constInt(0);
      int hit = -1;
      for (size_t e = 0; e < seeds.size(); ++e) {
        if (seeds[e] < 0) continue;
        int eq = b_.binary(Op::Eq, lane, b_.constInt(seeds[e]));
        if (seeds.size() > 1)
          eq = b_.binary(Op::And, eq,
                         b_.binary(Op::Eq, idx[r - 1], b_.constInt(static_cast<int64_t>(e))));
        hit = hit < 0 ? eq : b_.binary(Op::Or, hit, eq);
      }
      return hit < 0 ? b_.constant(dt, 0) : b_.select(hit, b_.constant(dt, 1), b_.constant(dt, 0));
    });
  }
  /// Tensor v's whole tangent, or a zero tensor where v has none.
  int wholeOrZero(int v) {
    if (whole_[v] >= 0) return whole_[v];
    ir::Type t = batched(src_.types[v]);
    DType dt = t.dtype;
    return b_.region(Op::Comp, t.shape, t,
                     [&](const std::vector<int>&) { return b_.constant(dt, 0); });
  }
  /// Lanes read from a whole tangent at idx (every index of a scalar).
  std::vector<int> loadLanes(int whole, const std::vector<int>& idx, const Instr* like = nullptr) {
    std::vector<int> out;
    for (int j = 0; j < lanes_; ++j)
      out.push_back(like ? b_.load(whole, laneIndex(j, idx), like->name, like->loc, like->checked)
                         : b_.load(whole, laneIndex(j, idx)));
    return out;
  }
  /// Stores the lanes of scalar v's tangent into a whole tangent at idx.
  void storeLanes(Op op, int whole, const std::vector<int>& idx, int v,
                  const Instr* like = nullptr) {
    for (int j = 0; j < lanes_; ++j)
      store(op, whole, laneIndex(j, idx), laneOrZero(v, j), like);
  }
  /// The tangent of a scalar-valued sum over extents, the terms given per lane for each
  /// element (-1: a zero term): a reduction without batch; with one, a loop adding into K
  /// accumulators, so the body runs once for all lanes.
  std::vector<int> sumLanes(const Instr& like, DType dt,
                            const std::function<std::vector<int>(const std::vector<int>&)>& terms) {
    if (batch_ == 0)
      return {b_.region(
          Op::ReduceSum, like.extents, ir::Type{dt, {}},
          [&](const std::vector<int>& idx) {
            int t = terms(idx)[0];
            return t >= 0 ? t : b_.constant(dt, 0);
          },
          like.loc)};
    int acc = b_.bufZeros(batched(ir::Type{dt, {}}));
    emitFor(like, [&](const std::vector<int>& idx) {
      std::vector<int> t = terms(idx);
      for (int j = 0; j < lanes_; ++j)
        if (t[static_cast<size_t>(j)] >= 0)
          store(Op::BufAdd, acc, laneIndex(j, {}), t[static_cast<size_t>(j)]);
    });
    return loadLanes(acc, {});
  }

  /// The instruction as forward code, with the current value map (regions cloned).
  void emitPrimal(const Instr& in);
  Block clonePrimal(const Block& r);
  /// Forward code and tangent code for a block, into the current one.
  void fwdBlock(const Block& b) {
    for (const Instr& in : b.body)
      fwdInstr(in);
  }
  void fwdInstr(const Instr& in);
  /// A call with a user rule (reverse mode's form: a VJP). The rule is linear in the
  /// cotangent u, so <rule(x, u), v> = <J^T u, v> = <u, J v>: with u = 1 for a scalar result it
  /// gives the tangent J v in one run of the rule; for a tensor result, element i of J v is
  /// that with u = e_i, one run per element (the price of a VJP-only rule in forward mode).
  void customTangent(const Instr& in);
  void tangentEffect(const Instr& in);
  void tangentStructural(const Instr& in);
  /// A region run once for the value and the tangent together: a comprehension or a sum as a
  /// loop, an `if` as one with effects only, each leaving its value and tangent in buffers
  /// (the other reductions are not supported). For a body that writes memory outside it, and
  /// with a batch (the body then runs once for every lane).
  void loopForm(const Instr& in);
  bool writesActive(const Instr& in) const {
    bool w = false;
    for (const Block& r : in.regions)
      ir::forEachInstr(r, [&](const Instr& i) {
        if ((i.op == Op::BufStore || i.op == Op::BufAdd) && active(i.args[0])) w = true;
      });
    return w;
  }
  /// buf = v, for a buffer and a value of the same type.
  void storeWhole(int buf, int v, const ir::Type& t) {
    if (t.rank() == 0) return store(Op::BufStore, buf, {}, v);
    Instr like;
    like.op = Op::Comp;
    like.extents = t.shape;
    emitFor(like, [&](const std::vector<int>& idx) {
      store(Op::BufStore, buf, idx, b_.load(v, idx, "", {}, /*checked=*/true));
    });
  }
  /// A loop with fresh index values; body(idx) emits its effects.
  void emitFor(const Instr& like, const std::function<void(const std::vector<int>&)>& body) {
    Instr c;
    c.op = Op::For;
    c.ival = like.op == Op::For ? like.ival : 0;
    c.extents = like.extents;
    c.loc = like.loc;
    for (int a : like.args)
      c.args.push_back(primal(a));
    std::vector<int> idx;
    for (size_t k = 0; k < like.extents.size(); ++k)
      idx.push_back(out_.newValue(ir::Type{DType::I64, {}}));
    c.regions.push_back(b_.buildBlock(idx, [&] {
      body(idx);
      return -1;
    }));
    b_.emitEffect(std::move(c));
  }
  void store(Op op, int buf, const std::vector<int>& idx, int v, const Instr* like = nullptr) {
    Instr s;
    s.op = op;
    s.args.push_back(buf);
    s.args.insert(s.args.end(), idx.begin(), idx.end());
    s.args.push_back(v);
    if (like) {
      s.checked = like->checked;
      s.name = like->name;
      s.loc = like->loc;
      s.ival = like->ival < 0 ? like->ival : 0; // a tape's tag stays; a user write's does not
    } else {
      s.checked = true;
    }
    b_.emitEffect(std::move(s));
  }

  const ir::Function& src_;
  ir::Function out_;
  ir::Builder b_;
  const int batch_;    // tangents per call (0: one, shaped as its value)
  const int lanes_;    // max(batch_, 1)
  const Seeds* seeds_; // a seeded JVP's (jvpSeeded), else null
  std::vector<char> active_;
  std::vector<const Instr*> def_;
  std::vector<int> primal_;            // forward value -> its value in out_ (-1: the same id)
  std::vector<std::vector<int>> lane_; // scalar forward value -> tangent per lane (none: zero)
  std::vector<int> whole_;             // tensor or buffer -> its tangent (-1: zero)
  std::vector<const std::vector<int>*> seed_; // a seeded parameter -> its seeds
  // A seeded JVP's small tensors whose lanes are known element by element (a stack, a tiny
  // region unrolled, an `if` of those): elems_[v][e][j], for flat element e and lane j, is
  // a value, -1 (structurally zero) or kInWhole (nonzero: read it from whole_[v]). A load at
  // literal indices takes its lanes from here, so structural zeros survive it.
  static constexpr int kInWhole = -2;
  std::map<int, std::vector<std::vector<int>>> elems_;
  std::map<int, int64_t> literal_; // out_'s index constants that unrolled() made
  bool changed_ = false;
  const Instr* cur_ = nullptr;
  int one_ = -1;
  std::vector<int> sum_;
  int rewalk_ = 0; // > 0 while a body runs again for its tangent (see emitPrimal)
};

void Forward::analyze(const Block& b) {
  for (const Instr& in : b.body) {
    for (const Block& r : in.regions)
      analyze(r);
    if ((in.op == Op::BufStore || in.op == Op::BufAdd) && active(in.args.back()) &&
        isFloat(src_.types[in.args[0]].dtype))
      setActive(in.args[0]);
    if (in.result < 0) continue;
    def_[in.result] = &in;
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
      if (in.op == Op::Load) {
        act = active(in.args[0]);
        break;
      }
      [[fallthrough]];
    default:
      for (int a : in.args)
        act = act || active(a);
    }
    if (act) setActive(in.result);
  }
}

void Forward::emitPrimal(const Instr& in) {
  // A reduction tape is filled once, by the forward code; code that runs a body again for its
  // tangent leaves it be (the same values; and a printed derivative reads each such store as
  // the one write of its element).
  if (rewalk_ > 0 && in.op == Op::BufStore && in.ival == ir::kTapeOnce) return;
  Instr c = in;
  c.regions.clear();
  for (int& a : c.args)
    a = primal(a);
  for (const Block& r : in.regions)
    c.regions.push_back(clonePrimal(r));
  if (in.result >= 0) {
    ir::Type rt = src_.types[in.result];
    c.result = out_.newValue(rt);
    primal_[in.result] = c.result;
  }
  b_.current().body.push_back(std::move(c));
}

Block Forward::clonePrimal(const Block& r) {
  std::vector<int> args;
  for (int a : r.args) {
    ir::Type at = src_.types[a]; // (an index; a user rule's cotangent)
    int fresh = out_.newValue(at);
    primal_[a] = fresh;
    args.push_back(fresh);
  }
  Block out = b_.buildBlock(args, [&] {
    for (const Instr& in : r.body)
      emitPrimal(in);
    return -1;
  });
  for (int y : r.yields)
    out.yields.push_back(primal(y));
  return out;
}

void Forward::fwdInstr(const Instr& in) {
  if (in.op == Op::Param) { // the parameters keep their ids; tangents are set up in run()
    b_.current().body.push_back(in);
    return;
  }
  if (in.op == Op::For) {
    // Value and tangent in the same iteration: no tape, whatever state the loop carries.
    emitFor(in, [&](const std::vector<int>& idx) {
      mapArgs(in.regions[0], idx);
      fwdBlock(in.regions[0]);
    });
    return;
  }
  if (in.op == Op::If && in.result < 0) {
    b_.ifEffect(
        primal(in.args[0]), [&] { fwdBlock(in.regions[0]); }, [&] { fwdBlock(in.regions[1]); });
    return;
  }
  if (in.op == Op::Custom) return customTangent(in);
  if (in.result >= 0 && active(in.result) && tiny(in)) return unrolled(in);
  if (ir::opKind(in.op) == ir::OpKind::Region && in.result >= 0) {
    // Running such a body a second time for the tangent would repeat its writes.
    bool writes = false;
    for (const Block& r : in.regions)
      writes = writes || writesOutside(r);
    if (writes && (active(in.result) || writesActive(in))) return loopForm(in);
    // With a batch, a region that yields one value cannot yield K tangents; a loop computes
    // the value and every lane's tangent in one pass over the body.
    if (batch_ > 0 && active(in.result) &&
        (in.op == Op::Comp || in.op == Op::ReduceSum || in.op == Op::If))
      return loopForm(in);
    // A tape the body fills (kTapeOnce) whose values have tangents gets a tangent tape, filled
    // at every element, also where the tangent of the result needs only one (max, min) or
    // none (the result is inactive).
    if (writesActive(in)) {
      if (in.op == Op::If) return loopForm(in);
      bool some = in.op == Op::ReduceMax || in.op == Op::ReduceMin || in.op == Op::ArgMax ||
                  in.op == Op::ArgMin;
      if (some || !active(in.result)) {
        emitPrimal(in);
        ++rewalk_;
        emitFor(in, [&](const std::vector<int>& idx) {
          mapArgs(in.regions[0], idx);
          fwdBlock(in.regions[0]);
        });
        if (active(in.result)) tangentStructural(in);
        --rewalk_;
        return;
      }
    }
  }
  emitPrimal(in);
  if (in.result < 0) return tangentEffect(in);
  if (!active(in.result)) return;
  const ad::Rule& r = ad::ruleFor(in.op);
  switch (r.kind) {
  case ad::RuleKind::Formula:
    cur_ = &in;
    one_ = -1;
    sum_.clear();
    r.fn(*this);
    setLanes(in.result, sum_);
    cur_ = nullptr;
    return;
  case ad::RuleKind::ZeroDerivative: return;
  case ad::RuleKind::NotDifferentiable:
    throw GradError(std::string("'") + ir::opName(in.op) + "' cannot be differentiated (" + r.math +
                    ")");
  case ad::RuleKind::Structural:
    // Structural tangents of regions run the body again, after the forward code ran it.
    ++rewalk_;
    tangentStructural(in);
    --rewalk_;
    return;
  }
}

void Forward::customTangent(const Instr& in) {
  emitPrimal(in);
  if (!active(in.result)) return;
  const ir::Type t = src_.types[in.result];
  const DType dt = t.dtype;
  const Block& rule = in.regions[1];
  auto runRule = [&](int u) {
    primal_[rule.args[0]] = u;
    for (const Instr& q : rule.body)
      emitPrimal(q);
  };
  // sum_k <rule_k, lane j of x_k's tangent>, after runRule.
  auto dotLane = [&](int j) {
    int sum = -1;
    for (size_t k = 0; k < in.args.size(); ++k) {
      int a = in.args[k], rk = primal(rule.yields[k]);
      const ir::Type at = src_.types[a];
      int term;
      if (at.rank() == 0) {
        if (laneOf(a, j) < 0) continue;
        term = b_.binary(Op::Mul, rk, laneOf(a, j));
      } else {
        if (whole_[a] < 0) continue;
        int w = whole_[a];
        term = b_.region(Op::ReduceSum, at.shape, ir::Type{at.dtype, {}},
                         [&](const std::vector<int>& idx) {
                           return b_.binary(Op::Mul, b_.load(rk, idx, "", {}, true),
                                            b_.load(w, laneIndex(j, idx), "", {}, true));
                         });
      }
      if (out_.types[term].dtype != dt) term = b_.cast(term, dt);
      sum = sum < 0 ? term : b_.binary(Op::Add, sum, term);
    }
    return sum; // (-1: zero)
  };
  if (t.rank() == 0) {
    runRule(b_.constant(dt, 1.0));
    std::vector<int> lanes;
    for (int j = 0; j < lanes_; ++j)
      lanes.push_back(dotLane(j));
    setLanes(in.result, lanes);
    return;
  }
  int tan = b_.bufZeros(batched(t));
  Instr like;
  like.op = Op::Comp;
  like.extents = t.shape;
  like.loc = in.loc;
  for (int j = 0; j < lanes_; ++j)
    emitFor(like, [&](const std::vector<int>& idx) {
      int u = b_.region(Op::Comp, t.shape, t, [&](const std::vector<int>& k) {
        int same = b_.constant(DType::Bool, 1);
        for (size_t d = 0; d < k.size(); ++d)
          same = b_.binary(Op::And, same, b_.binary(Op::Eq, k[d], idx[d]));
        return b_.select(same, b_.constant(dt, 1), b_.constant(dt, 0));
      });
      runRule(u);
      int d = dotLane(j);
      store(Op::BufStore, tan, laneIndex(j, idx), d >= 0 ? d : b_.constant(dt, 0));
    });
  whole_[in.result] = tan;
}

void Forward::tangentEffect(const Instr& in) {
  if (in.op != Op::BufStore && in.op != Op::BufAdd) return; // size.def
  int buf = in.args[0];
  if (!active(buf)) return;
  int v = in.args.back();
  if (in.op == Op::BufAdd && lane_[v].empty()) return;
  std::vector<int> idx;
  for (size_t k = 1; k + 1 < in.args.size(); ++k)
    idx.push_back(primal(in.args[k]));
  // A store of an inactive value into an active var still sets its tangent (to zero).
  storeLanes(in.op, whole_[buf], idx, v, &in);
}

void Forward::tangentStructural(const Instr& in) {
  const ir::Type& t = src_.types[in.result];
  DType dt = t.dtype;
  switch (in.op) {
  case Op::Load: {
    if (in.args.size() == 1 && !lane_[in.args[0]].empty()) { // of a scalar comprehension
      lane_[in.result] = lane_[in.args[0]];
      return;
    }
    if (auto el = elems_.find(in.args[0]); el != elems_.end()) {
      const ir::Type& at = src_.types[in.args[0]];
      if (in.args.size() == 1 + static_cast<size_t>(at.rank()))
        if (std::optional<int64_t> e = literalElement(at, in.args.data() + 1)) {
          std::vector<int> lanes = el->second[static_cast<size_t>(*e)];
          std::vector<int> idx;
          for (size_t k = 1; k < in.args.size(); ++k)
            idx.push_back(primal(in.args[k]));
          for (int j = 0; j < lanes_; ++j)
            if (lanes[static_cast<size_t>(j)] == kInWhole)
              lanes[static_cast<size_t>(j)] = b_.load(whole_[in.args[0]], laneIndex(j, idx));
          setLanes(in.result, lanes);
          return;
        }
    }
    if (const std::vector<int>* seeds = seed_[in.args[0]];
        seeds && in.args.size() == 1 + static_cast<size_t>(src_.types[in.args[0]].rank())) {
      setLanes(in.result, seededLanes(*seeds, in.args.back(), dt));
      return;
    }
    if (whole_[in.args[0]] < 0) return;
    std::vector<int> idx;
    for (size_t k = 1; k < in.args.size(); ++k)
      idx.push_back(primal(in.args[k]));
    lane_[in.result] = loadLanes(whole_[in.args[0]], idx, &in);
    return;
  }
  case Op::Stack: {
    // Row-major over shape ++ [K]: each element's lanes in turn.
    Instr s;
    s.op = Op::Stack;
    for (int a : in.args)
      for (int j = 0; j < lanes_; ++j)
        s.args.push_back(laneOrZero(a, j));
    whole_[in.result] = b_.emit(std::move(s), batched(t));
    if (seeds_) {
      std::vector<std::vector<int>>& el = elems_[in.result];
      el.clear();
      for (int a : in.args)
        el.push_back(lanesOf(a));
    }
    return;
  }
  case Op::BufZeros: whole_[in.result] = b_.bufZeros(batched(t)); return;
  case Op::Comp: { // without a batch (fwdInstr takes the loop form with one)
    const Block& body = in.regions[0];
    int v = b_.region(
        in.op, in.extents, t,
        [&](const std::vector<int>& idx) {
          mapArgs(body, idx);
          fwdBlock(body);
          return laneOrZero(body.yields[0], 0);
        },
        in.loc);
    if (t.rank() == 0) // (over no indices: a scalar, as copyBufferResults makes)
      lane_[in.result] = {v};
    else
      whole_[in.result] = v;
    return;
  }
  case Op::ReduceSum: {
    const Block& body = in.regions[0];
    lane_[in.result] = sumLanes(in, dt, [&](const std::vector<int>& idx) {
      mapArgs(body, idx);
      fwdBlock(body);
      return lanesOf(body.yields[0]);
    });
    return;
  }
  case Op::ReduceLse: {
    // d lse = sum_j softmax_j dx_j = (sum_j e_j dx_j) / W, e_j = exp(x_j - lse), W normalising
    // the weights in f32 as the adjoint does (see softmaxNormaliser): one more pass.
    const Block& body = in.regions[0];
    int lse = primal(in.result);
    int W = ad::softmaxNormaliser(b_, lse, in.extents, dt,
                                  [&](const std::vector<int>& k) { return yieldAt(body, k); });
    std::vector<int> sums = sumLanes(in, dt, [&](const std::vector<int>& idx) {
      mapArgs(body, idx);
      fwdBlock(body);
      int w = b_.unary(Op::Exp, b_.binary(Op::Sub, primal(body.yields[0]), lse));
      std::vector<int> terms;
      for (int dx : lanesOf(body.yields[0]))
        terms.push_back(dx < 0 ? -1 : b_.binary(Op::Mul, w, dx));
      return terms;
    });
    for (int& s : sums)
      if (s >= 0 && W >= 0) s = b_.binary(Op::Div, s, W);
    lane_[in.result] = sums;
    return;
  }
  case Op::ReduceProd: {
    // d prod = sum_j dx_j prod_{k != j} x_k; the product of the others is P / x_j when
    // x_j != 0, and recomputed only where x_j = 0 (as the adjoint does).
    const Block& body = in.regions[0];
    int P = primal(in.result);
    lane_[in.result] = sumLanes(in, dt, [&](const std::vector<int>& idx) {
      mapArgs(body, idx);
      fwdBlock(body);
      int others = ad::productOfOthers(b_, P, primal(body.yields[0]), idx, in.extents, dt,
                                       [&](const std::vector<int>& k) { return yieldAt(body, k); });
      std::vector<int> terms;
      for (int dx : lanesOf(body.yields[0]))
        terms.push_back(dx < 0 ? -1 : b_.binary(Op::Mul, dx, others));
      return terms;
    });
    return;
  }
  case Op::ReduceMax:
  case Op::ReduceMin: {
    // The tangent of the first extremal element (the one the adjoint also picks).
    const Block& body = in.regions[0];
    Op arg = in.op == Op::ReduceMax ? Op::ArgMax : Op::ArgMin;
    int at = b_.region(arg, in.extents, ir::Type{DType::I64, {}}, [&](const std::vector<int>& k) {
      mapArgs(body, k);
      for (const Instr& i : body.body)
        emitPrimal(i);
      return primal(body.yields[0]);
    });
    auto there = [&] {
      mapArgs(body, b_.unflatten(at, in.extents));
      fwdBlock(body);
      return lanesOrZero(body.yields[0]);
    };
    bool nonEmpty = true;
    for (const Poly& p : in.extents)
      nonEmpty = nonEmpty && (p - Poly(1)).provablyNonNegative();
    if (nonEmpty) {
      lane_[in.result] = there();
      return;
    }
    // Possibly empty: the tangent is 0 where there is no element (each lane in its own `if`).
    std::vector<int> lanes;
    for (int j = 0; j < lanes_; ++j)
      lanes.push_back(b_.ifElse(
          b_.binary(Op::Ge, at, b_.constInt(0)), t, [&] { return there()[static_cast<size_t>(j)]; },
          [&] { return b_.constant(dt, 0); }));
    lane_[in.result] = lanes;
    return;
  }
  case Op::If: { // without a batch (fwdInstr takes the loop form with one)
    auto branch = [&](const Block& blk) {
      fwdBlock(blk);
      int y = blk.yields[0];
      return t.rank() == 0 ? laneOrZero(y, 0) : wholeOrZero(y);
    };
    int v = b_.ifElse(
        primal(in.args[0]), t, [&] { return branch(in.regions[0]); },
        [&] { return branch(in.regions[1]); });
    if (t.rank() == 0)
      lane_[in.result] = {v};
    else
      whole_[in.result] = v;
    return;
  }
  default:
    throw GradError(std::string("internal error: no tangent for '") + ir::opName(in.op) + "'");
  }
}

void Forward::unrolled(const Instr& in) {
  // The body once per element, its indices literals: the value and the lanes of each element
  // (with the structural zeros) are at hand, for the loads at literal indices that follow.
  const Block& body = in.regions[0];
  const ir::Type& t = src_.types[in.result];
  const DType dt = t.dtype;
  std::vector<int64_t> ext;
  int64_t n = 1;
  for (const Poly& e : in.extents) {
    ext.push_back(*e.constValue());
    n *= ext.back();
  }
  std::vector<int> vals;
  std::vector<std::vector<int>> lanes;
  for (int64_t e = 0; e < n; ++e) {
    std::vector<int> idx(ext.size());
    for (int64_t d = static_cast<int64_t>(ext.size()) - 1, rest = e; d >= 0;
         rest /= ext[static_cast<size_t>(d)], --d) {
      const int64_t k = rest % ext[static_cast<size_t>(d)];
      idx[static_cast<size_t>(d)] = b_.constInt(k);
      literal_[idx[static_cast<size_t>(d)]] = k;
    }
    mapArgs(body, idx);
    fwdBlock(body);
    vals.push_back(primal(body.yields[0]));
    lanes.push_back(lanesOf(body.yields[0]));
  }
  if (in.op == Op::ReduceSum) {
    // In the order the sum's loop adds: ((0 + x0) + x1) + ..., and each lane likewise, its
    // structurally zero terms left out.
    int acc = b_.constant(dt, 0);
    for (int v : vals)
      acc = b_.binary(Op::Add, acc, v);
    primal_[in.result] = acc;
    std::vector<int> sum(static_cast<size_t>(lanes_), -1);
    for (const std::vector<int>& l : lanes)
      for (size_t j = 0; j < sum.size(); ++j)
        if (l[j] >= 0) sum[j] = sum[j] < 0 ? l[j] : b_.binary(Op::Add, sum[j], l[j]);
    setLanes(in.result, sum);
    return;
  }
  Instr value;
  value.op = Op::Stack;
  value.args = vals;
  primal_[in.result] = b_.emit(std::move(value), t);
  Instr tangent; // (row-major over shape ++ [K], as a stack's tangent)
  tangent.op = Op::Stack;
  for (const std::vector<int>& l : lanes)
    for (int x : l)
      tangent.args.push_back(x >= 0 ? x : b_.constant(dt, 0));
  whole_[in.result] = b_.emit(std::move(tangent), batched(t));
  elems_[in.result] = std::move(lanes);
}

void Forward::loopForm(const Instr& in) {
  const ir::Type& t = src_.types[in.result];
  const ir::Type bt = batched(t);
  if (in.op == Op::If) {
    int val = b_.bufZeros(t), tan = b_.bufZeros(bt);
    // A seeded JVP stores only the lanes a branch knows to be nonzero (the buffer starts
    // zeroed), and the result keeps, element by element, which lanes neither branch reaches.
    std::vector<std::vector<char>> reached; // [element][lane], while `known`
    bool known = seeds_ != nullptr;
    auto branch = [&](const Block& blk) {
      fwdBlock(blk);
      int y = blk.yields[0];
      storeWhole(val, primal(y), t);
      if (known && t.rank() == 0) {
        reached.resize(1, std::vector<char>(static_cast<size_t>(lanes_), 0));
        for (int j = 0; j < lanes_; ++j)
          if (laneOf(y, j) >= 0) {
            store(Op::BufStore, tan, laneIndex(j, {}), laneOf(y, j));
            reached[0][static_cast<size_t>(j)] = 1;
          }
        return;
      }
      auto el = elems_.find(y);
      if (known && el != elems_.end()) {
        const auto& lanes = el->second;
        reached.resize(lanes.size(), std::vector<char>(static_cast<size_t>(lanes_), 0));
        for (size_t e = 0; e < lanes.size(); ++e) {
          std::vector<int> idx = literalIndex(t, static_cast<int64_t>(e));
          for (int j = 0; j < lanes_; ++j) {
            int l = lanes[e][static_cast<size_t>(j)];
            if (l == -1) continue;
            if (l == kInWhole) l = b_.load(whole_[y], laneIndex(j, idx));
            store(Op::BufStore, tan, laneIndex(j, idx), l);
            reached[e][static_cast<size_t>(j)] = 1;
          }
        }
        return;
      }
      known = false;
      if (t.rank() == 0)
        storeLanes(Op::BufStore, tan, {}, y);
      else
        storeWhole(tan, wholeOrZero(y), bt);
    };
    b_.ifEffect(
        primal(in.args[0]), [&] { branch(in.regions[0]); }, [&] { branch(in.regions[1]); });
    if (t.rank() == 0) {
      primal_[in.result] = b_.load(val, {});
      lane_[in.result] = loadLanes(tan, {});
      if (known) {
        std::vector<int> lanes = lane_[in.result];
        for (int j = 0; j < lanes_; ++j)
          if (!reached[0][static_cast<size_t>(j)]) lanes[static_cast<size_t>(j)] = -1;
        setLanes(in.result, lanes);
      }
    } else {
      if (known) {
        std::vector<std::vector<int>>& el = elems_[in.result];
        el.assign(reached.size(), std::vector<int>(static_cast<size_t>(lanes_), -1));
        for (size_t e = 0; e < reached.size(); ++e)
          for (size_t j = 0; j < static_cast<size_t>(lanes_); ++j)
            if (reached[e][j]) el[e][j] = kInWhole;
      }
      primal_[in.result] = val;
      whole_[in.result] = tan;
    }
    return;
  }
  if (in.op != Op::Comp && in.op != Op::ReduceSum)
    throw GradError(std::string("forward mode cannot yet differentiate a '") + ir::opName(in.op) +
                    "' whose body writes memory outside it");
  const Block& body = in.regions[0];
  // A comprehension's loop stores its value and every lane of its tangent at every index:
  // the zeros of its buffers are never read. A sum's adds into them.
  const bool filled = in.op == Op::Comp;
  int val = b_.bufZeros(t, filled), tan = b_.bufZeros(bt, filled);
  emitFor(in, [&](const std::vector<int>& idx) {
    mapArgs(body, idx);
    fwdBlock(body);
    int y = body.yields[0];
    std::vector<int> at = in.op == Op::Comp ? idx : std::vector<int>{};
    Op op = in.op == Op::Comp ? Op::BufStore : Op::BufAdd;
    store(op, val, at, primal(y));
    storeLanes(op, tan, at, y);
  });
  if (in.op == Op::Comp && t.rank() == 0) { // over no indices: a scalar
    primal_[in.result] = b_.load(val, {});
    lane_[in.result] = loadLanes(tan, {});
  } else if (in.op == Op::Comp) {
    primal_[in.result] = val;
    whole_[in.result] = tan;
  } else {
    primal_[in.result] = b_.load(val, {});
    lane_[in.result] = loadLanes(tan, {});
  }
}

ir::Function Forward::run(const std::vector<std::string>& wrtIn) {
  std::vector<std::string> wrt = resolveWrt(src_, wrtIn);
  size_t n = src_.types.size();
  active_.assign(n, 0);
  def_.assign(n, nullptr);
  primal_.assign(n, -1);
  lane_.assign(n, {});
  whole_.assign(n, -1);
  seed_.assign(n, nullptr);
  std::vector<std::pair<int, int>> scalarTangents; // (parameter, its tangent parameter)
  std::vector<int> seeded;                         // parameters with constant seeds
  for (size_t k = 0; k < src_.params.size(); ++k) {
    if (std::find(wrt.begin(), wrt.end(), src_.paramNames[k]) == wrt.end()) continue;
    int p = src_.params[k];
    if (seeds_) {
      const std::string& name = src_.paramNames[k];
      auto it = seeds_->find(name);
      if (it == seeds_->end())
        throw GradError("no lanes given for '" + name +
                        "' (a seeded JVP needs them for every parameter it differentiates)");
      const std::vector<int>& s = it->second;
      const ir::Type& t = src_.paramTypes[k];
      std::optional<int64_t> last;
      if (t.rank() > 0) last = t.shape.back().constValue();
      if (s.size() != 1 && !(last && static_cast<int64_t>(s.size()) == *last))
        throw GradError(
            "lanes for '" + name + "': " + std::to_string(s.size()) + " given; " + name + " is " +
            t.str() + ", so give one (for every element)" +
            (last ? " or " + std::to_string(*last) + " (one per index of its last extent)"
                  : std::string()));
      for (int l : s)
        if (l < -1 || l >= lanes_)
          throw GradError("lanes for '" + name + "': lane " + std::to_string(l) +
                          " is not -1 (none) or one of 0 to " + std::to_string(lanes_ - 1));
      if (std::none_of(s.begin(), s.end(), [](int l) { return l >= 0; })) continue; // fixed
      active_[p] = 1;
      seed_[p] = &s;
      seeded.push_back(p);
      continue;
    }
    active_[p] = 1;
    Instr in;
    in.op = Op::Param;
    in.ival = static_cast<int64_t>(out_.params.size());
    in.name = tangentName(src_, src_.paramNames[k]);
    ir::Type ty = batched(src_.paramTypes[k]);
    in.result = out_.newValue(ty);
    out_.params.push_back(in.result);
    out_.paramNames.push_back(in.name);
    out_.paramTypes.push_back(ty);
    out_.body.body.push_back(in);
    if (src_.paramTypes[k].rank() == 0)
      scalarTangents.push_back({p, in.result});
    else
      whole_[p] = in.result;
  }
  do {
    changed_ = false;
    analyze(src_.body);
  } while (changed_); // loops feed stores back into loads
  out_.name = src_.name + (seeds_       ? "_jvp_seeded" + std::to_string(lanes_)
                           : batch_ > 0 ? "_jvp_batch" + std::to_string(batch_)
                                        : "_jvp");
  // A scalar parameter's lanes, read once at the top (without a batch, the parameter itself).
  for (auto [p, t] : scalarTangents)
    lane_[p] = batch_ == 0 ? std::vector<int>{t} : loadLanes(t, {});
  for (int p : seeded) {
    const ir::Type& t = src_.types[p];
    if (t.rank() == 0)
      setLanes(p, seededLanes(*seed_[p], -1, t.dtype));
    else
      whole_[p] = seededWhole(p, *seed_[p]);
  }
  fwdBlock(src_.body);
  out_.body.yields.clear();
  for (int y : src_.body.yields)
    out_.body.yields.push_back(primal(y));
  for (int y : src_.body.yields) {
    const ir::Type& t = src_.types[y];
    if (!isFloat(t.dtype)) continue;
    if (t.rank() > 0) {
      out_.body.yields.push_back(wholeOrZero(y));
      continue;
    }
    Instr s; // a scalar result's lanes, as f64[K] with a batch
    s.op = Op::Stack;
    s.args = lanesOrZero(y);
    out_.body.yields.push_back(batch_ == 0 ? s.args[0] : b_.emit(std::move(s), batched(t)));
  }
  return std::move(out_);
}

} // namespace

std::string tangentName(const ir::Function& f, const std::string& param) {
  std::string name = param + "_dot";
  while (std::find(f.paramNames.begin(), f.paramNames.end(), name) != f.paramNames.end())
    name.insert(param.size(), "_");
  return name;
}

ir::Function jvp(const ir::Function& f, const std::vector<std::string>& wrt, int batch) {
  if (batch < 0) throw GradError("a JVP batch is a count of tangents, at least 1");
  // A var returned in place is read into a value first (as differentiate() does).
  ir::Function copied = f;
  copyBufferResults(copied);
  Forward fw(copied, batch);
  return fw.run(wrt);
}

ir::Function jvpSeeded(const ir::Function& f, const std::vector<std::string>& wrt, int batch,
                       const Seeds& seeds) {
  if (batch < 1) throw GradError("a seeded JVP's batch is a count of lanes, at least 1");
  ir::Function copied = f;
  copyBufferResults(copied);
  Forward fw(copied, batch, &seeds);
  return fw.run(wrt);
}

ir::Function hvp(const ir::Function& grad, const std::vector<std::string>& wrt, int batch) {
  // grad's results: the value, then the gradients. jvp adds the value's tangent (the
  // directional derivative, dropped here) and the gradients' tangents, H v.
  std::vector<std::string> w = resolveWrt(grad, wrt);
  ir::Function h = jvp(grad, w, batch);
  size_t nres = grad.body.yields.size();
  auto& ys = h.body.yields;
  ys.erase(ys.begin() + static_cast<long>(nres));
  std::string base = grad.name;
  if (base.size() > 5 && base.compare(base.size() - 5, 5, "_grad") == 0)
    base.resize(base.size() - 5);
  h.name = base + (batch > 0 ? "_hvp_batch" + std::to_string(batch) : "_hvp");
  return h;
}

} // namespace slope
