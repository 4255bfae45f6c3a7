// Tensor IR -> Loop IR: regions become loop nests over buffers, and each loop is classified.
//
// The classification is what makes a loop safe to run out of order. A loop is sequential when
// an iteration may read or overwrite memory another iteration writes; otherwise it is
// parallel (a reduction's iterations then only meet in the combine). Memory a loop's body
// allocates is its own. For memory from outside, the test is on subscripts: if every access
// to a buffer the loop writes has each of the loop's indices as a plain subscript, in the same
// dimensions, then two iterations touch different elements. Anything else (a rank-0
// accumulator, a computed subscript, a value used after the loop, a size bound in the body
// and read where that binding may not precede it, a user loop whose iterations carry state)
// keeps the loop sequential. This is the whole of the analysis; it is
// conservative and exact: it never calls a loop parallel that is not.

#include "compiler/lower/loop_ir.hpp"

#include "compiler/lower/bounds.hpp"
#include "compiler/lower/fuse.hpp"
#include "compiler/lower/guard.hpp"
#include "compiler/lower/hoist.hpp"
#include "compiler/lower/interchange.hpp"
#include "compiler/lower/split.hpp"
#include "compiler/lower/strength.hpp"
#include "compiler/lower/tail.hpp"
#include "compiler/lower/tile.hpp"
#include "compiler/lower/workspace.hpp"
#include "compiler/support/reduce_order.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>

namespace slope::lower {
namespace {

using ir::Op;

bool isReduction(Op op) {
  return op == Op::ReduceSum || op == Op::ReduceProd || op == Op::ReduceMax ||
         op == Op::ReduceMin || op == Op::ReduceLse || op == Op::ArgMax || op == Op::ArgMin;
}

class Lowerer {
public:
  explicit Lowerer(const ir::Function& f) : f_(f) {}

  Function run() {
    for (int y : f_.body.yields)
      ++yieldCount_[y];
    findEscaping();
    std::vector<std::set<std::string>> scopes;
    findFreeNames(f_.body, scopes);
    for (size_t k = 0; k < f_.params.size(); ++k)
      if (f_.paramTypes[k].rank() > 0)
        out_.buffers[f_.params[k]] = {Buffer::Param, static_cast<int>(k), false};
    block(f_.body, out_.body);
    out_.src = f_;
    out_.src.body.body.clear();
    return std::move(out_);
  }

private:
  /// freeNames_: sizes bound in the function (size.def: #trips, #extent) mentioned somewhere
  /// that no binding in an enclosing block precedes (in an extent, a size literal or a
  /// result's shape).
  void findFreeNames(const ir::Block& b, std::vector<std::set<std::string>>& scopes) {
    scopes.emplace_back();
    auto mention = [&](const Poly& p) {
      for (const auto& n : p.names()) {
        if (n[0] != '#') continue;
        bool bound = false;
        for (const auto& sc : scopes)
          bound = bound || sc.count(n);
        if (!bound) freeNames_.insert(n);
      }
    };
    for (const ir::Instr& in : b.body) {
      for (const Poly& e : in.extents)
        mention(e);
      mention(in.poly);
      if (in.result >= 0)
        for (const Poly& d : f_.types[in.result].shape)
          mention(d);
      if (in.op == Op::SizeDef) scopes.back().insert(in.name);
      for (const ir::Block& r : in.regions)
        findFreeNames(r, scopes);
    }
    scopes.pop_back();
  }

  /// Function::escaping: values whose defining block does not enclose every use.
  void findEscaping() {
    std::map<int, const ir::Block*> defIn;
    std::map<const ir::Block*, const ir::Block*> parent;
    std::function<void(const ir::Block&)> defs = [&](const ir::Block& b) {
      for (int a : b.args)
        defIn[a] = &b;
      for (const ir::Instr& in : b.body) {
        if (in.result >= 0) defIn[in.result] = &b;
        for (const ir::Block& r : in.regions) {
          parent[&r] = &b;
          defs(r);
        }
      }
    };
    defs(f_.body);
    auto visible = [&](int v, const ir::Block* at) {
      auto d = defIn.find(v);
      if (d == defIn.end()) return true; // a parameter
      for (const ir::Block* b = at; b; b = parent.count(b) ? parent[b] : nullptr)
        if (b == d->second) return true;
      return false;
    };
    std::function<void(const ir::Block&)> uses = [&](const ir::Block& b) {
      for (const ir::Instr& in : b.body) {
        for (int a : in.args)
          if (!visible(a, &b)) out_.escaping.insert(a);
        for (const ir::Block& r : in.regions)
          uses(r);
      }
      for (int y : b.yields)
        if (!visible(y, &b)) out_.escaping.insert(y);
    };
    uses(f_.body);
  }

  void block(const ir::Block& b, Body& out) {
    for (const ir::Instr& in : b.body)
      instr(in, out);
  }

  /// A tensor value's buffer: a result the caller gave when a top-level comprehension,
  /// buf.zeros or literal is returned once (it is built in place), else a temporary.
  void place(const ir::Instr& in) {
    Buffer b;
    b.inLoop = depth_ > 0;
    if (depth_ == 0 && yieldCount_[in.result] == 1 &&
        (in.op == Op::Comp || in.op == Op::BufZeros || in.op == Op::Stack))
      for (size_t k = 0; k < f_.body.yields.size(); ++k)
        if (f_.body.yields[k] == in.result) b = {Buffer::Result, static_cast<int>(k), false};
    out_.buffers[in.result] = b;
  }

  static Stmt make(Stmt::Kind k, const ir::Instr& in) {
    Stmt s;
    s.kind = k;
    s.in = in;
    s.in.regions.clear();
    return s;
  }

  void instr(const ir::Instr& in, Body& out) {
    if (in.op == Op::Param) return;
    bool tensor = in.result >= 0 && f_.types[in.result].rank() > 0;
    switch (ir::opKind(in.op)) {
    case ir::OpKind::Region: break;
    default:
      if (in.op == Op::BufZeros && tensor) {
        place(in);
        out.push_back(make(Stmt::Alloc, in));
      } else if (in.op == Op::Stack) {
        place(in);
        out.push_back(make(Stmt::Stack, in));
      } else {
        out.push_back(make(Stmt::Scalar, in));
      }
      return;
    }
    if (in.op == Op::If) {
      if (tensor) {
        place(in);
        ir::Instr a = in;
        a.op = Op::If; // (the alloc of the if's result; the If stmt copies a branch into it)
        out.push_back(make(Stmt::Alloc, a));
      }
      Stmt s = make(Stmt::If, in);
      ++depth_;
      block(in.regions[0], s.body);
      block(in.regions[1], s.orelse);
      --depth_;
      if (in.result >= 0) {
        s.yield = in.regions[0].yields[0];
        s.elseYield = in.regions[1].yields[0];
      }
      out.push_back(std::move(s));
      return;
    }
    const ir::Block& r = in.regions[0];
    Stmt s = make(Stmt::Loop, in);
    s.indices = r.args;
    s.extents = in.extents;
    if (in.op == Op::Comp) {
      place(in);
      out.push_back(make(Stmt::Alloc, in));
    }
    ++depth_;
    block(r, s.body);
    --depth_;
    if (in.op == Op::Comp) {
      Stmt st;
      st.kind = Stmt::Store;
      st.buffer = in.result;
      st.indices = r.args;
      st.yield = r.yields[0];
      st.in.loc = in.loc;
      s.body.push_back(std::move(st));
    } else if (isReduction(in.op)) {
      s.yield = r.yields[0];
      s.onePass = in.op == Op::ReduceLse && ir::runBodyOnce(r);
    }
    classify(s);
    out.push_back(std::move(s));
  }

  /// Sets the loop's kind and whether it is a candidate for SIMD (see the file comment).
  void classify(Stmt& loop) const {
    bool ordered = loop.in.op == Op::For && loop.in.ival == 1; // a user loop with state
    std::set<int> own;                                         // memory the body allocates
    std::map<int, std::vector<std::vector<int>>> access; // buffer -> subscripts of each access
    std::set<int> written;
    bool straight = true;
    std::set<std::string> bound; // sizes bound in the body (size.def)
    std::function<void(const Body&)> walk = [&](const Body& b) {
      for (const Stmt& s : b) {
        switch (s.kind) {
        case Stmt::Alloc:
        case Stmt::Stack:
          own.insert(s.in.result);
          if (out_.escaping.count(s.in.result)) ordered = true;
          break;
        case Stmt::Store:
          written.insert(s.buffer);
          access[s.buffer].push_back(s.indices);
          break;
        case Stmt::Loop:
        case Stmt::If:
          straight = false;
          if (s.in.result >= 0 && out_.escaping.count(s.in.result)) ordered = true;
          walk(s.body);
          walk(s.orelse);
          break;
        case Stmt::Scalar: {
          const ir::Instr& in = s.in;
          if (in.result >= 0 && out_.escaping.count(in.result)) ordered = true;
          if (in.op == Op::SizeDef) bound.insert(in.name);
          if (in.op == Op::BufZeros) own.insert(in.result);
          if (std::optional<Access> a = accessOf(s)) {
            access[a->buffer].push_back(a->subscripts);
            if (a->writes()) written.insert(a->buffer);
          }
          break;
        }
        }
      }
    };
    walk(loop.body);
    // A size bound in the body (a triangular extent, a trip count) and mentioned only after a
    // binding in an enclosing block is the iteration's own: bound before each use.
    for (const auto& n : bound)
      if (freeNames_.count(n)) ordered = true;
    // (Only memory can order the iterations from here on: what planBlocks looks at.)
    loop.memoryOnly = !ordered;
    for (int b : written) {
      if (ordered || own.count(b)) continue;
      // Each loop index at one fixed position of every access to b.
      std::vector<const std::vector<int>*> subs;
      for (const auto& a : access[b])
        subs.push_back(&a);
      for (int ix : loop.indices)
        if (!fixedSubscript(ix, subs)) {
          ordered = true;
          break;
        }
    }
    loop.loopKind = ordered                   ? LoopKind::Sequential
                    : isReduction(loop.in.op) ? LoopKind::Reduction
                                              : LoopKind::Parallel;
    loop.vectorisable = !ordered && straight;
  }

  const ir::Function& f_;
  Function out_;
  int depth_ = 0;
  std::map<int, int> yieldCount_;
  std::set<std::string> freeNames_; // (findFreeNames)
};

// --- blocks ---------------------------------------------------------------------------------
// A top-level sequential loop over data points that adds into parameter gradients (the
// adjoint's scatter: `buf.add dmeans[k, j]` in a loop over points i) has iterations that
// only meet in those additions. Cut into blocks of its first index, each block adding into
// zeroed partial copies of its own, and the partials added into the buffers in block order,
// it gives the same bits whichever threads run the blocks in whatever order. The test is on
// the final Loop IR (after hoisting, guards and strength reduction, whose slots may carry
// values across iterations), and is conservative: a loop stays as it is unless every buffer
// from outside that it writes is
//   - disjoint: every access to it (loads too) has the loop's first index as a plain
//     subscript in one fixed dimension, so two blocks never touch the same element; or
//   - a partial: a float tensor that the loop only adds to (no load, no store), so its final
//     value is its value before plus the sum of the additions, whichever block made them;
// and the loop carries nothing else between iterations (Stmt::memoryOnly).

/// Stmt::work of loop s inside loops whose extents are `outer`: a product per loop of the nest
/// (an inner loop's iterations are its extents' product times the loops' around it), leaving
/// out a loop whose extent is bound inside the nest (a triangular row: not known before).
void nestWork(const Stmt& s, std::vector<Poly> outer, const std::set<std::string>& inside,
              std::vector<std::vector<Poly>>& out) {
  for (const Poly& e : s.extents) {
    for (const auto& n : e.names())
      if (inside.count(n)) return;
    outer.push_back(e);
  }
  out.push_back(outer);
  std::function<void(const Body&)> walk = [&](const Body& b) {
    for (const Stmt& t : b) {
      if (t.kind == Stmt::Loop) nestWork(t, outer, inside, out);
      if (t.kind == Stmt::If) walk(t.body), walk(t.orelse);
    }
  };
  walk(s.body);
}

void planBlocks(Function& f) {
  for (Stmt& s : f.body) {
    if (s.kind != Stmt::Loop || s.loopKind != LoopKind::Sequential || s.in.op != Op::For ||
        s.in.ival == 1 || !s.memoryOnly || s.indices.empty())
      continue;
    const int first = s.indices[0];
    std::set<int> own;
    std::map<int, std::vector<std::pair<Access::Kind, std::vector<int>>>> access;
    std::function<void(const Body&)> walk = [&](const Body& b) {
      for (const Stmt& t : b) {
        switch (t.kind) {
        case Stmt::Alloc:
        case Stmt::Stack: own.insert(t.in.result); break;
        case Stmt::Store: access[t.buffer].push_back({Access::Write, t.indices}); break;
        case Stmt::Loop:
        case Stmt::If:
          walk(t.body);
          walk(t.orelse);
          break;
        case Stmt::Scalar: {
          if (t.in.op == Op::BufZeros) own.insert(t.in.result);
          if (std::optional<Access> a = accessOf(t))
            access[a->buffer].push_back({a->kind, a->subscripts});
          break;
        }
        }
      }
    };
    walk(s.body);
    bool ok = true;
    std::vector<int> partials;
    for (const auto& [b, list] : access) {
      if (own.count(b)) continue;
      bool writes = false, onlyAdds = true;
      for (const auto& a : list) {
        writes = writes || a.first != Access::Read;
        onlyAdds = onlyAdds && a.first == Access::Add;
      }
      if (!writes) continue;
      // Disjoint: the first index at one fixed position of every access.
      std::vector<const std::vector<int>*> subs;
      for (const auto& a : list)
        subs.push_back(&a.second);
      if (fixedSubscript(first, subs)) continue;
      const ir::Type& t = f.src.types[b];
      auto buf = f.buffers.find(b);
      if (onlyAdds && t.rank() > 0 && isFloat(t.dtype) && buf != f.buffers.end() &&
          buf->second.place != Buffer::Param && !f.escaping.count(b)) {
        partials.push_back(b);
        continue;
      }
      ok = false;
      break;
    }
    if (!ok) continue;
    s.blocked = true;
    s.partials = partials;
    s.work.clear();
    nestWork(s, {}, boundSizes(s.body), s.work);
  }
}

// --- short rows ------------------------------------------------------------------------------
// A triangular sum `sum[c: j]` inside a loop over j < e is a row of j elements: rows under
// reduce_order::kMinLaneRow are summed serially, longer ones in lanes and a tail. Generated as
// one loop over j, every row tests its length and carries both ways of summing it, and the
// lane code's state stays live (in registers or spilled) across the short rows, which are
// most of them (ADBench's GMM: all ten rows of d = 10). Split at the length where the order
// changes, j < min(e, kMinLaneRow) then the rest, the first loop's sums are short by
// construction (their extent is max(j, 0) < kMinLaneRow) and become one plain serial loop each,
// `short` in --emit loops; the second loop is the original body at j = j' + 32. The
// order of every sum is unchanged, so are its bits. The split applies to a parallel loop of two
// or more indices (its iterations are independent, so running the rows j >= kMinLaneRow after
// the others changes nothing) whose innermost extent is a size expression, non-negative for
// every size (no extent check moves), and whose body binds a sum's extent to the front end's
// form of `sum[c: j + b]`, b a literal: size.def #e = select(gt(r, 0), r, 0) with r = j or
// r = j + b. Then the split is at 32 - b for the largest b (`sum[c: j + 1]`: rows j < 31).

class ShortRows {
public:
  explicit ShortRows(Function& f)
      : f_(f), literals_(integerLiterals(f)), names_(boundSizes(f.body)) {}

  int run() {
    return rewriteLoops(f_.body, [&](Stmt& loop, Body& pre) { return split(loop, pre); });
  }

private:
  /// The sums of the loop's body whose extent is max(j + b, 0), j the innermost index and b a
  /// literal (`sum[c: j]`, `sum[c: j + 1]`), each with its b.
  std::vector<std::pair<Stmt*, int64_t>> triangular(Stmt& loop) {
    const int j = loop.indices.back();
    std::map<int, const Stmt*> def;
    std::map<std::string, int64_t> rowNames;
    std::vector<std::pair<Stmt*, int64_t>> out;
    auto defined = [&](int v) -> const ir::Instr* {
      auto d = def.find(v);
      return d == def.end() ? nullptr : &d->second->in;
    };
    // j + b for a value of the body, if it is one.
    auto offset = [&](int v) -> std::optional<int64_t> {
      if (v == j) return 0;
      auto d = def.find(v);
      if (d == def.end()) return std::nullopt;
      const ir::Instr& in = d->second->in;
      if (in.args.size() != 2) return std::nullopt;
      auto lit = [&](int a) -> std::optional<int64_t> {
        auto l = literals_.find(a);
        if (l == literals_.end() || l->second < -kMaxOffset || l->second > kMaxOffset)
          return std::nullopt;
        return l->second;
      };
      if (in.op == Op::Add && in.args[0] == j) return lit(in.args[1]);
      if (in.op == Op::Add && in.args[1] == j) return lit(in.args[0]);
      if (in.op == Op::Sub && in.args[0] == j)
        if (auto b = lit(in.args[1])) return -*b;
      return std::nullopt;
    };
    for (Stmt& s : loop.body) {
      if (s.kind == Stmt::Scalar && s.in.result >= 0) def[s.in.result] = &s;
      if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef && s.in.args.size() == 1) {
        auto sel = def.find(s.in.args[0]);
        if (sel == def.end()) continue;
        const int r = maxWithZeroOf(sel->second->in, defined, literals_);
        if (r < 0) continue;
        if (auto b = offset(r)) rowNames[s.in.name] = *b;
      }
      if (s.kind == Stmt::Loop && (s.in.op == Op::ReduceSum || s.in.op == Op::ReduceProd) &&
          s.extents.size() == 1 && s.yield >= 0 && isFloat(f_.src.types[s.yield].dtype)) {
        auto names = s.extents[0].names();
        if (names.size() == 1 && rowNames.count(*names.begin()) &&
            s.extents[0] == Poly::var(*names.begin()))
          out.emplace_back(&s, rowNames.at(*names.begin()));
      }
    }
    return out;
  }

  /// Splits the loop; pre gets what computes the split's extents, to go before the loop (so
  /// that what depends on j only can still leave the loops around it).
  bool split(Stmt& loop, Body& pre) {
    if (loop.loopKind != LoopKind::Parallel || loop.indices.size() < 2 || loop.blocked ||
        (loop.in.op != Op::Comp && loop.in.op != Op::For))
      return false;
    const Poly e = loop.extents.back();
    for (const auto& n : e.names())
      if (n[0] == '#') return false;
    if (!e.provablyNonNegative()) return false;
    std::vector<std::pair<Stmt*, int64_t>> sums = triangular(loop);
    if (sums.empty()) return false;
    // Rows j < at have every such sum's extent, max(j + b, 0), below kMinLaneRow.
    int64_t most = -kMaxOffset;
    for (const auto& [sum, b] : sums)
      most = std::max(most, b);
    const int64_t at = reduce_order::kMinLaneRow - most;
    if (at < 1) return false;
    bool escapes = false; // (a copy of a value used outside the loop would not be that value)
    forEachStmt(loop.body, [&](const Stmt& s) {
      escapes = escapes || (s.in.result >= 0 && f_.escaping.count(s.in.result));
    });
    if (escapes) return false;
    for (const auto& sum : sums)
      sum.first->shortRow = true;

    const SrcRange loc = loop.in.loc;
    auto emit = [&](Op o, std::vector<int> args, int64_t ival = 0, const Poly& poly = Poly()) {
      return emitScalar(f_, pre, DType::I64, o, std::move(args), loc, ival, poly);
    };
    auto bind = [&](int value) {
      return bindSize(pre, uniqueSizeName("#rows", next_, names_), value, loc);
    };
    const int ev = emit(Op::Size, {}, 0, e);
    const int lanes = emit(Op::Const, {}, at);
    const Poly shortRows = bind(emit(Op::Min, {ev, lanes})); // (lanes: `at`)
    const Poly longRows = bind(emit(Op::Max, {emit(Op::Sub, {ev, lanes}), emit(Op::Const, {}, 0)}));

    // The rows j < min(e, at): the body as it is.
    Stmt first;
    first.kind = Stmt::Loop;
    first.in.op = Op::For;
    first.in.loc = loc;
    first.indices = {loop.indices.back()};
    first.extents = {shortRows};
    first.loopKind = LoopKind::Parallel;
    first.memoryOnly = loop.memoryOnly;
    first.body = loop.body;
    // The rest, j = j' + at: a copy with every value it defines renamed, and sums of
    // any length.
    // (Sizes the body binds get names of their own in the copy: a size bound once in a loop
    // is one hoisting can see through, a triangular extent to the row index's table.)
    Stmt rest = first;
    std::map<int, int> rename;
    rest.body = copyFresh(f_, first.body, {rest.indices[0]}, rename, next_, names_);
    forEachStmt(rest.body, [](Stmt& s) { s.shortRow = false; });
    const int jr = rename.at(rest.indices[0]);
    const int jp = f_.src.newValue(f_.src.types[jr]);
    rest.indices = {jp};
    rest.extents = {longRows};
    Stmt shift;
    shift.kind = Stmt::Scalar;
    shift.in.op = Op::Add;
    shift.in.args = {jp, lanes};
    shift.in.result = jr;
    shift.in.loc = loc;
    rest.body.insert(rest.body.begin(), shift);

    loop.indices.pop_back();
    loop.extents.pop_back();
    loop.vectorisable = false;
    loop.body.clear();
    loop.body.push_back(std::move(first));
    loop.body.push_back(std::move(rest));
    return true;
  }

  static constexpr int64_t kMaxOffset = int64_t{1} << 20; // |b| in j + b (no overflow)
  Function& f_;
  std::map<int, int64_t> literals_;
  std::set<std::string> names_; // sizes bound in the function, the split's own included
  int next_ = 0;
};

// --- printing --------------------------------------------------------------------------------

struct Printer {
  const Function& lf;
  const ir::Function& f;
  std::string out;

  static std::string v(int id) { return "%" + std::to_string(id); }
  void indent(int depth) { out.append(static_cast<size_t>(depth) * 2, ' '); }

  std::string where(int value) const {
    auto b = lf.buffers.find(value);
    if (b == lf.buffers.end()) return "";
    switch (b->second.place) {
    case Buffer::Param: return "param " + std::to_string(b->second.slot);
    case Buffer::Result: return "in result " + std::to_string(b->second.slot);
    case Buffer::Temp: return b->second.inLoop ? "temp, kept across iterations" : "temp";
    }
    return "";
  }
  /// A temporary's workspace entry (planWorkspace): w3 is entry 3, which other temporaries
  /// may share when their lives do not overlap.
  std::string entry(int value) const {
    auto b = lf.buffers.find(value);
    if (b == lf.buffers.end() || b->second.place != Buffer::Temp) return "";
    return " in w" + std::to_string(b->second.entry);
  }

  void body(const Body& b, int depth) {
    for (const Stmt& s : b)
      stmt(s, depth);
  }

  void stmt(const Stmt& s, int depth) {
    indent(depth);
    switch (s.kind) {
    case Stmt::Scalar: out += ir::printInstr(f, s.in) + "\n"; return;
    case Stmt::Alloc:
      out += v(s.in.result) + " = alloc " + f.types[s.in.result].str() +
             (s.in.op != Op::BufZeros         ? ""
              : s.in.ival == ir::kFilledWhole ? " filled"
                                              : " zeroed") +
             " (" + where(s.in.result) + ")" + entry(s.in.result) + "\n";
      return;
    case Stmt::Stack:
      out += ir::printInstr(f, s.in) + " (" + where(s.in.result) + ")" + entry(s.in.result) + "\n";
      return;
    case Stmt::Store: {
      out += "store " + v(s.buffer) + "[";
      for (size_t k = 0; k < s.indices.size(); ++k)
        out += (k ? ", " : "") + v(s.indices[k]);
      out += "], " + v(s.yield) + "\n";
      return;
    }
    case Stmt::If:
      out += (s.in.result >= 0 ? v(s.in.result) + " = " : "") + "if " + v(s.in.args[0]) + " {\n";
      body(s.body, depth + 1);
      if (s.yield >= 0) indent(depth + 1), out += "yield " + v(s.yield) + "\n";
      indent(depth);
      if (s.orelse.empty() && s.elseYield < 0) { // (nothing to do otherwise: no else)
        out += "}\n";
        return;
      }
      out += "} else {\n";
      body(s.orelse, depth + 1);
      if (s.elseYield >= 0) indent(depth + 1), out += "yield " + v(s.elseYield) + "\n";
      indent(depth);
      out += "}\n";
      return;
    case Stmt::Loop: {
      if (s.in.result >= 0 && s.in.op != Op::Comp) out += v(s.in.result) + " = ";
      out += loopKindName(s.loopKind);
      if (s.in.op != Op::For && s.in.op != Op::Comp) out += std::string(" ") + ir::opName(s.in.op);
      out += " for ";
      for (size_t k = 0; k < s.indices.size(); ++k)
        out += (k ? ", " : "") + v(s.indices[k]) + " < " + s.extents[k].str();
      if (s.vectorisable) out += " vector";
      if (s.shortRow) out += " short";
      if (s.cold) out += " cold";
      if (s.fewTrips) out += " few";
      if (s.vectorFirst) out += " vector-first";
      // (Parallel, but not said so to LLVM: accessesKeepOrder.)
      if (s.loopKind == LoopKind::Parallel && s.vectorisable && !accessesKeepOrder(s))
        out += " unmarked";
      if (depth == 1) out += " on host"; // (a loop nest's placement; the CUDA backend adds device)
      if (s.tile > 0) out += " tiled " + std::to_string(s.tile);
      for (int b : s.prefetchRows)
        out += " prefetch " + v(b);
      if (s.blocked) {
        out += " in blocks";
        for (size_t k = 0; k < s.partials.size(); ++k)
          out += (k ? ", " : ", partials ") + v(s.partials[k]);
      }
      out += " {\n";
      if (s.tileFirst >= 0) {
        indent(depth + 1);
        out += "per tile of rows " + v(s.tileFirst) + " to " + v(s.tileEnd) + ", first {\n";
        body(s.tileHead, depth + 2);
        indent(depth + 1);
        out += "}\n";
      }
      body(s.body, depth + 1);
      if (s.tileFirst >= 0) {
        indent(depth + 1);
        out += "per tile, last {\n";
        body(s.tileTail, depth + 2);
        indent(depth + 1);
        out += "}\n";
      }
      if (s.in.op != Op::Comp && s.yield >= 0)
        indent(depth + 1), out += "yield " + v(s.yield) + "\n";
      indent(depth);
      out += "}\n";
      return;
    }
    }
  }
};

} // namespace

const char* loopKindName(LoopKind k) {
  switch (k) {
  case LoopKind::Parallel: return "parallel";
  case LoopKind::Reduction: return "reduction";
  case LoopKind::Sequential: return "sequential";
  }
  return "?";
}

int64_t scatterBlocks(int64_t n, double iters, double partialElems, double partialBytes) {
  double b = std::min(static_cast<double>(kMaxBlocks), static_cast<double>(n));
  if (partialElems > 0) b = std::min(b, std::floor(iters / partialElems));
  if (partialBytes > 0) b = std::min(b, std::floor(kMaxPartialBytes / partialBytes));
  return static_cast<int64_t>(b);
}

int splitShortRows(Function& f) {
  return ShortRows(f).run();
}

int rewriteLoops(Body& b, const std::function<bool(Stmt& loop, Body& pre)>& rewrite) {
  int count = 0;
  for (size_t p = 0; p < b.size(); ++p) {
    count += rewriteLoops(b[p].body, rewrite);
    count += rewriteLoops(b[p].orelse, rewrite);
    Body pre;
    if (b[p].kind == Stmt::Loop && rewrite(b[p], pre)) {
      ++count;
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(p), std::make_move_iterator(pre.begin()),
               std::make_move_iterator(pre.end()));
      p += pre.size();
    }
  }
  return count;
}

std::set<std::string> boundSizes(const Body& b) {
  std::set<std::string> out;
  forEachStmt(b, [&](const Stmt& s) {
    if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) out.insert(s.in.name);
  });
  return out;
}

bool extentCanFail(const Poly& e) {
  for (const auto& n : e.names())
    if (n[0] == '#') return true;
  return !e.provablyNonNegative();
}

std::string uniqueSizeName(const std::string& stem, int& next, std::set<std::string>& taken) {
  std::string name;
  do
    name = stem + std::to_string(next++);
  while (taken.count(name));
  taken.insert(name);
  return name;
}

Stmt scalarStmt(Op op, std::vector<int> args, SrcRange loc, int64_t ival, const Poly& poly) {
  Stmt s;
  s.kind = Stmt::Scalar;
  s.in.op = op;
  s.in.args = std::move(args);
  s.in.ival = ival;
  s.in.poly = poly;
  s.in.loc = loc;
  return s;
}

bool straightLine(const Body& b) {
  return std::all_of(b.begin(), b.end(),
                     [](const Stmt& s) { return s.kind == Stmt::Scalar || s.kind == Stmt::Store; });
}

int emitScalar(Function& f, Body& b, DType t, Op op, std::vector<int> args, SrcRange loc,
               int64_t ival, const Poly& poly) {
  b.push_back(scalarStmt(op, std::move(args), loc, ival, poly));
  return b.back().in.result = f.src.newValue({t, {}});
}

Poly bindSize(Body& b, const std::string& name, int value, SrcRange loc) {
  b.push_back(scalarStmt(Op::SizeDef, {value}, loc));
  b.back().in.name = name;
  return Poly::var(name);
}

void freshValue(Function& f, int v, std::map<int, int>& rename) {
  if (!rename.count(v)) rename[v] = f.src.newValue(f.src.types[v]);
}

/// A comprehension's result is its buffer, allocated outside the loop (a copy writes the same
/// buffer); any other statement's result is a value it defines.
static bool definesResult(const Stmt& s) {
  return s.in.result >= 0 && !(s.kind == Stmt::Loop && s.in.op == Op::Comp);
}

void freshDefinitions(Function& f, const Body& b, std::map<int, int>& rename) {
  forEachStmt(b, [&](const Stmt& s) {
    if (definesResult(s)) freshValue(f, s.in.result, rename);
    if (s.kind == Stmt::Loop)
      for (int i : s.indices)
        freshValue(f, i, rename);
  });
}

Body copyFresh(Function& f, const Body& b, const std::vector<int>& also, std::map<int, int>& rename,
               int& next, std::set<std::string>& taken) {
  Body out = b;
  std::map<std::string, Poly> sizes;
  forEachStmt(out, [&](const Stmt& s) {
    if (s.kind != Stmt::Scalar || s.in.op != Op::SizeDef || sizes.count(s.in.name)) return;
    sizes[s.in.name] = Poly::var(uniqueSizeName(s.in.name + "r", next, taken));
  });
  auto sub = [&](Poly& p) { p = p.substitute(sizes); };
  freshDefinitions(f, out, rename);
  for (int v : also)
    freshValue(f, v, rename);
  renameValues(out, rename);
  forEachStmt(out, [&](Stmt& s) {
    if (s.in.op == Op::SizeDef) s.in.name = sizes.at(s.in.name).names()[0];
    for (Poly& e : s.extents)
      sub(e);
    for (Poly& e : s.in.extents)
      sub(e);
    sub(s.in.poly);
  });
  for (const auto& [from, to] : rename) {
    for (Poly& d : f.src.types[to].shape)
      sub(d);
    if (auto buf = f.buffers.find(from); buf != f.buffers.end()) f.buffers[to] = buf->second;
  }
  return out;
}

void renameValues(Body& b, const std::map<int, int>& rename) {
  auto r = [&](int& v) {
    if (auto it = rename.find(v); it != rename.end()) v = it->second;
  };
  forEachStmt(b, [&](Stmt& s) {
    if (definesResult(s)) r(s.in.result);
    for (int& a : s.in.args)
      r(a);
    for (int& i : s.indices)
      r(i);
    if (s.yield >= 0) r(s.yield);
    if (s.elseYield >= 0) r(s.elseYield);
    if (s.buffer >= 0) r(s.buffer);
  });
}

void markFewTrips(Function& f) {
  std::function<void(Body&, bool)> walk = [&](Body& b, bool inLoop) {
    for (Stmt& s : b) {
      if (s.kind == Stmt::Loop && inLoop && s.vectorisable && !s.cold &&
          s.loopKind == LoopKind::Parallel && s.indices.size() == 1 &&
          (s.in.op == Op::For || s.in.op == Op::Comp))
        s.fewTrips = true;
      walk(s.body, inLoop || s.kind == Stmt::Loop);
      walk(s.orelse, inLoop || s.kind == Stmt::Loop);
    }
  };
  walk(f.body, false);
}

int markIndependentLoops(Function& f) {
  int marked = 0;
  auto independent = [](const Stmt& loop) {
    // The body's accesses by buffer, read once; each buffer written is checked.
    std::map<int, std::vector<Access>> access;
    std::set<int> written;
    for (const Stmt& t : loop.body) {
      if (t.kind == Stmt::Scalar && t.in.op == Op::BufZeros) return false;
      if (std::optional<Access> a = accessOf(t)) {
        if (a->writes()) written.insert(a->buffer);
        access[a->buffer].push_back(std::move(*a));
      }
    }
    for (int b : written) {
      std::vector<const std::vector<int>*> subs;
      for (const Access& a : access[b])
        subs.push_back(&a.subscripts);
      if (!fixedSubscript(loop.indices[0], subs)) return false;
    }
    return true;
  };
  std::function<void(Body&, bool)> walk = [&](Body& b, bool inLoop) {
    for (Stmt& s : b) {
      if (s.kind == Stmt::Loop && inLoop && s.loopKind == LoopKind::Sequential &&
          s.in.op == Op::For && s.in.result < 0 && s.memoryOnly && !s.cold && !s.blocked &&
          s.tile == 0 && s.indices.size() == 1 && straightLine(s.body) && independent(s)) {
        s.loopKind = LoopKind::Parallel;
        s.vectorisable = true;
        ++marked;
      }
      walk(s.body, inLoop || s.kind == Stmt::Loop);
      walk(s.orelse, inLoop || s.kind == Stmt::Loop);
    }
  };
  walk(f.body, false);
  return marked;
}

std::optional<Access> accessOf(const Stmt& s) {
  if (s.kind == Stmt::Store) return Access{Access::Write, s.buffer, s.indices};
  if (s.kind != Stmt::Scalar || s.in.args.empty()) return std::nullopt;
  const auto& a = s.in.args;
  switch (s.in.op) {
  case Op::Load: return Access{Access::Read, a[0], {a.begin() + 1, a.end()}};
  case Op::BufStore: return Access{Access::Write, a[0], {a.begin() + 1, a.end() - 1}};
  case Op::BufAdd: return Access{Access::Add, a[0], {a.begin() + 1, a.end() - 1}};
  default: return std::nullopt;
  }
}

std::optional<size_t> fixedSubscript(int ix, const std::vector<const std::vector<int>*>& accesses) {
  if (accesses.empty()) return std::nullopt;
  for (size_t d = 0; d < accesses[0]->size(); ++d)
    if (std::all_of(accesses.begin(), accesses.end(), [&](const std::vector<int>* subs) {
          return d < subs->size() && (*subs)[d] == ix;
        }))
      return d;
  return std::nullopt;
}

bool consecutiveIn(const Stmt& loop, const std::vector<int>& subs) {
  if (loop.indices.empty() || loop.extents.back().isConst() || subs.empty()) return false;
  const int inner = loop.indices.back();
  return subs.back() == inner && std::count(subs.begin(), subs.end(), inner) == 1;
}

bool accessesKeepOrder(const Stmt& loop) {
  struct Uses {
    int count = 0, writes = 0;
    bool readAfterWrite = false;
    bool consecutive = true; // every access consecutiveIn(loop)
  };
  std::map<int, Uses> uses;
  std::set<int> own; // buffers made in the body: each iteration's own (rank 0: registers)
  forEachStmt(loop.body, [&](const Stmt& t) {
    if (t.in.result >= 0) own.insert(t.in.result);
    std::optional<Access> a = accessOf(t);
    if (!a || own.count(a->buffer)) return;
    Uses& u = uses[a->buffer];
    ++u.count;
    u.readAfterWrite = u.readAfterWrite || (!a->writes() && u.writes > 0);
    u.writes += a->writes();
    u.consecutive = u.consecutive && consecutiveIn(loop, a->subscripts);
  });
  // (Reads, then one write: LLVM's groups place loads at a load and stores at a store, so the
  // reads stay before the write whatever it groups.)
  return std::all_of(uses.begin(), uses.end(), [](const auto& e) {
    const Uses& u = e.second;
    return u.writes == 0 || u.count < 2 || u.consecutive || (u.writes == 1 && !u.readAfterWrite);
  });
}

int maxWithZeroOf(const ir::Instr& sel, const std::function<const ir::Instr*(int)>& def,
                  const std::map<int, int64_t>& literals) {
  auto zero = [&](int v) {
    auto l = literals.find(v);
    return l != literals.end() && l->second == 0;
  };
  if (sel.op != Op::Select || sel.args.size() != 3 || !zero(sel.args[2])) return -1;
  const ir::Instr* gt = def(sel.args[0]);
  if (!gt || gt->op != Op::Gt || gt->args[0] != sel.args[1] || !zero(gt->args[1])) return -1;
  return sel.args[1];
}

std::map<int, int64_t> integerLiterals(const Function& f) {
  std::map<int, int64_t> out;
  forEachStmt(f.body, [&](const Stmt& s) {
    if (s.kind == Stmt::Scalar && s.in.op == Op::Const && s.in.result >= 0)
      out[s.in.result] = s.in.ival;
  });
  return out;
}

bool costly(const ir::Instr& in, const ir::Function& f) {
  if (in.op == Op::Div) return isFloat(f.types[in.result].dtype);
  return ir::isTranscendental(in.op);
}

bool canFail(const ir::Instr& in, const ir::Function& f, const std::map<int, int64_t>& literals) {
  auto literal = [&](int v) -> std::optional<int64_t> {
    auto l = literals.find(v);
    return l == literals.end() ? std::nullopt : std::optional<int64_t>(l->second);
  };
  bool intResult = in.result >= 0 && !isFloat(f.types[in.result].dtype);
  switch (in.op) {
  case Op::Cast: return intResult && isFloat(f.types[in.args[0]].dtype);
  case Op::Div:
  case Op::Mod: return intResult && literal(in.args[1]).value_or(0) == 0;
  case Op::Pow:
  case Op::Powi: return intResult && literal(in.args[1]).value_or(-1) < 0;
  case Op::Load: return !in.checked && in.args.size() > 1;
  case Op::BufStore:
  case Op::BufAdd: return !in.checked && in.args.size() > 2;
  default: return false;
  }
}

Function lower(const ir::Function& fIn, const LowerOptions& options) {
  // A call with a user derivative rule runs its own computation (the rule is autodiff's).
  std::optional<ir::Function> stripped;
  if (ir::hasCustom(fIn.body)) ir::stripCustom(stripped.emplace(fIn));
  const ir::Function& f = stripped ? *stripped : fIn;
  Function lf = Lowerer(f).run();
  splitInvariantPrefix(lf); // (first: every pass below sees the vector computed once)
  splitShortRows(lf);       // (first: the passes below treat both copies of a split loop)
  proveSubscripts(lf);      // (first: hoisting moves only proven loads)
  // Fusion before hoisting: fusing nests makes loops inside loops (the GMM's adjoint: a nest
  // over i, k around the rows j), and a row loop inside the nest is a loop that work can leave
  // for a table per (i, k) (hoist.cpp). After hoisting, that work would have nowhere to go.
  fuseProducers(lf);
  fuseSiblings(lf); // (after: a producer's loop fused with its sibling would not be its own)
  hoistInvariants(lf);
  narrowGuards(lf);   // (before strength reduction: a narrowed loop is branch-free)
  reduceStrength(lf); // (after hoisting: its slots and branches are not for hoisting)
  // Again, for what strength reduction made: an entry check that depends on the index of
  // the loop around the reduced one only (GMM: on j, inside a nest over i, k, j) becomes a
  // table over that index instead of 40-odd integer operations per iteration.
  hoistInvariants(lf, HoistCost::IntegerTrees);
  // (After both: the rows' checks are tables to sum, and the sums' original copies, which it
  // reads in columns, are the else of strength reduction's ifs.)
  interchangeTriangles(lf, options.minTriangleColumns, options.minScatterColumns);
  expandQuadratics(lf);     // (the column positions of interchange's groups, without a division)
  markIndependentLoops(lf); // (on the loops as they will run; before: they may still change)
  markFewTrips(lf);
  planBlocks(lf);                  // (on the loops as they will run)
  tileNests(lf, options.tileRows); // (its tiles run within the blocks of planBlocks)
  deferColumns(lf);                // (on the tiles of tileNests)
  planWorkspace(lf);               // (last: after every pass that makes buffers)
  return lf;
}

std::string print(const Function& lf) {
  const ir::Function& f = lf.src;
  Printer p{lf, f, {}};
  p.out = "loops @" + f.name + "(";
  for (size_t k = 0; k < f.params.size(); ++k)
    p.out += (k ? ", " : "") + Printer::v(f.params[k]) + " " + f.paramNames[k] + ": " +
             f.paramTypes[k].str();
  p.out += ") -> (";
  for (size_t k = 0; k < f.body.yields.size(); ++k)
    p.out += (k ? ", " : "") + f.types[f.body.yields[k]].str();
  p.out += ") {\n" + ir::printEntry(f);
  p.body(lf.body, 1);
  p.out += "  return";
  for (size_t k = 0; k < f.body.yields.size(); ++k)
    p.out += (k ? ", " : " ") + Printer::v(f.body.yields[k]);
  p.out += "\n}\n";
  return p.out;
}

} // namespace slope::lower
