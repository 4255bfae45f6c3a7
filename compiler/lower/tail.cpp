// A tile's deferred columns (compiler/lower/tail.hpp).
#include "compiler/lower/tail.hpp"

#include <algorithm>

namespace slope::lower {
namespace {

using ir::Op;

// Points per pass over a column's rows: one load and store of each entry per this many
// points. Each point adds a load of its row and a multiplication and addition per vector, and
// its broadcast z_c takes a register (eight and the sum: 9 of AVX2's 16). GMM gradient
// instructions (callgrind, AVX2) at 1k d64 and 10k d10: 2 points 227.4M, 313.7M; 4 points
// 220.4M, 318.5M; 8 points 217.6M, 305.4M; wall (1 thread, three interleaved rounds) 8 at
// least as fast as 4 at every size (docs/benchmarks.md, "Deferred columns").
constexpr int64_t kPointsTogether = 8;

class Deferral {
public:
  Deferral(Function& f, Stmt& nest) : f_(f), nest_(nest), names_(boundSizes(f.body)) {}

  bool run() {
    if (!match()) return false;
    rewrite();
    return true;
  }

private:
  /// Whether the nest ends with a branch whose then ends with deferrable columns that read
  /// only what the tail can give them; fills the members below.
  bool match() {
    Stmt& s = nest_;
    if (s.kind != Stmt::Loop || s.tile <= 0 || s.indices.size() != 2 || s.tileFirst >= 0 ||
        s.loopKind != LoopKind::Sequential || s.body.empty())
      return false;
    Stmt& branch = s.body.back();
    if (branch.kind != Stmt::If || branch.in.result >= 0 || branch.body.empty() ||
        branch.body.back().kind != Stmt::Loop || !branch.body.back().deferrable)
      return false;
    branch_ = &branch;
    const Stmt& cols = branch.body.back();

    // What the nest defines, and what the columns define.
    std::set<int> nestDefs(s.indices.begin(), s.indices.end()), colDefs;
    auto defs = [](const Stmt& t, std::set<int>& into) {
      if (t.in.result >= 0) into.insert(t.in.result);
      into.insert(t.indices.begin(), t.indices.end());
    };
    forEachStmt(s.body, [&](const Stmt& t) { defs(t, nestDefs); });
    defs(cols, colDefs);
    forEachNested(cols, [&](const Stmt& t) { defs(t, colDefs); });
    if (nestDefs.count(branch.in.args[0])) return false; // (the same choice for every (i, k))

    // The columns: loops and scalars, whose only writes are additions to buffers from outside.
    bool ok = true;
    std::set<int> used, loaded;
    auto visit = [&](const Stmt& t) {
      if (t.kind != Stmt::Scalar && t.kind != Stmt::Loop) ok = false;
      used.insert(t.in.args.begin(), t.in.args.end());
      if (t.yield >= 0) used.insert(t.yield);
      std::optional<Access> a = accessOf(t);
      if (a && a->kind == Access::Add)
        targets_.insert(a->buffer);
      else if (a && a->writes())
        ok = false;
      else if (a)
        loaded.insert(a->buffer);
    };
    visit(cols);
    forEachNested(cols, visit);
    if (!ok) return false;
    const int i = s.indices[0], k = s.indices[1];
    nestSizes_ = boundSizes(s.body);
    for (int v : used) {
      if (colDefs.count(v) || v == k || v == i || !nestDefs.count(v)) continue;
      if (!tileBuffer(v)) return false;
      rowBuffers_.insert(v);
    }
    for (int t : targets_)
      if (nestDefs.count(t) || rowBuffers_.count(t)) return false;
    // Sizes the nest binds outside the columns are each iteration's own.
    const std::set<std::string> own = boundSizes(cols.body);
    auto ownSizes = [&](const Poly& p) {
      for (const auto& n : p.names())
        if (nestSizes_.count(n) && !own.count(n)) return false;
      return true;
    };
    for (const Poly& e : cols.extents)
      ok = ok && ownSizes(e);
    forEachNested(cols, [&](const Stmt& t) {
      for (const Poly& e : t.extents)
        ok = ok && ownSizes(e);
      ok = ok && ownSizes(t.in.poly);
    });
    if (!ok) return false;

    // Nothing outside the branch touches the targets; the columns read no memory the nest
    // writes other than the rows they are given.
    std::set<int> written;
    auto untouched = [&](const Stmt& u) {
      std::optional<Access> a = accessOf(u);
      if (a && targets_.count(a->buffer)) ok = false;
    };
    for (const Stmt& t : s.body)
      if (&t != &branch) {
        untouched(t);
        forEachNested(t, untouched);
      }
    forEachStmt(s.body, [&](const Stmt& u) {
      if (&u == &cols) return;
      std::optional<Access> a = accessOf(u);
      if (a && a->writes()) written.insert(a->buffer);
    });
    for (int b : loaded)
      if (targets_.count(b) || (written.count(b) && !rowBuffers_.count(b))) return false;
    if (!ok) return false;

    // The row buffers appear only as the buffer of an access (and their allocation), so a
    // subscript for the row is all they need.
    forEachStmt(s.body, [&](const Stmt& u) {
      std::optional<Access> a = accessOf(u);
      for (size_t q = 0; q < u.in.args.size(); ++q)
        if (rowBuffers_.count(u.in.args[q]) && !(a && q == 0 && u.kind == Stmt::Scalar)) ok = false;
      for (int y : {u.yield, u.elseYield})
        if (y >= 0 && rowBuffers_.count(y)) ok = false;
    });
    if (!ok) return false;

    // The columns' body: scalars, then the loop over a column's rows.
    if (cols.body.empty() || cols.body.back().kind != Stmt::Loop ||
        cols.body.back().indices.size() != 1 || cols.body.back().in.result >= 0)
      return false;
    // Its scalars that read a point's rows (and what depends on them) are copied for each
    // point: none may bind a size, which the rows' loop of every point must share. None adds
    // (each point's additions must stay after the point before it: they are the loop's).
    std::set<int> varying;
    for (size_t q = 0; q + 1 < cols.body.size(); ++q) {
      const Stmt& t = cols.body[q];
      if (t.kind != Stmt::Scalar || t.in.op == Op::BufAdd) return false;
      if (!dependsOnPoint(t, varying)) continue;
      if (t.in.op == Op::SizeDef) return false;
      if (t.in.result >= 0) varying.insert(t.in.result);
    }
    // The rows' loop: scalars, with one addition per target, at an element that is the same
    // for every point (one load and store of it per group of points).
    std::set<int> added;
    for (const Stmt& t : cols.body.back().body) {
      if (t.kind != Stmt::Scalar || t.in.op == Op::SizeDef) return false;
      if (t.in.op == Op::BufAdd) {
        if (!added.insert(t.in.args[0]).second) return false;
        for (size_t q = 1; q + 1 < t.in.args.size(); ++q)
          if (varying.count(t.in.args[q]) || t.in.args[q] == s.indices[0]) return false;
        continue;
      }
      if (dependsOnPoint(t, varying) && t.in.result >= 0) varying.insert(t.in.result);
    }
    return true;
  }

  /// Whether v is a temporary the nest's body makes at its top level or at the branch's, one
  /// per iteration, with a shape from outside the nest.
  bool tileBuffer(int v) const {
    auto b = f_.buffers.find(v);
    if (b == f_.buffers.end() || b->second.place != Buffer::Temp || f_.escaping.count(v))
      return false;
    bool found = false;
    for (const Body* body : {&nest_.body, &branch_->body})
      for (const Stmt& t : *body)
        found = found || (t.kind == Stmt::Alloc && t.in.result == v);
    if (!found) return false;
    for (const Poly& d : f_.src.types[v].shape)
      for (const auto& n : d.names())
        if (nestSizes_.count(n)) return false;
    return true;
  }

  /// Whether scalar t of a column's body reads a point's row, or a value in `varying`.
  bool dependsOnPoint(const Stmt& t, const std::set<int>& varying) const {
    bool d = t.in.op == Op::Load && rowBuffers_.count(t.in.args[0]);
    for (int a : t.in.args)
      d = d || varying.count(a) || a == nest_.indices[0];
    return d;
  }

  /// Gives every access of a row buffer in b the row `row` as its first subscript.
  void addRow(Body& b, int row) const {
    forEachStmt(b, [&](Stmt& u) {
      if (u.kind == Stmt::Store && rowBuffers_.count(u.buffer))
        u.indices.insert(u.indices.begin(), row);
      else if (u.kind == Stmt::Scalar && accessOf(u) && rowBuffers_.count(u.in.args[0]))
        u.in.args.insert(u.in.args.begin() + 1, row);
    });
  }

  /// Removes the arithmetic of b (straight-line scalars) whose results nothing uses: the
  /// copies' own subscripts, which the merged loads and stores do not take.
  static void dropUnused(Body& b) {
    for (bool again = true; again;) {
      again = false;
      std::set<int> used;
      for (const Stmt& t : b)
        used.insert(t.in.args.begin(), t.in.args.end());
      for (size_t q = b.size(); q-- > 0;)
        if (b[q].kind == Stmt::Scalar && b[q].in.result >= 0 && !used.count(b[q].in.result) &&
            (b[q].in.op == Op::Add || b[q].in.op == Op::Sub || b[q].in.op == Op::Mul ||
             b[q].in.op == Op::Const)) {
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(q));
          again = true;
        }
    }
  }

  int emit(Body& b, Op op, std::vector<int> args, int64_t ival = 0) {
    return emitScalar(f_, b, DType::I64, op, std::move(args), loc_, ival);
  }
  Stmt loop(const Poly& extent) {
    Stmt l;
    l.kind = Stmt::Loop;
    l.in.op = Op::For;
    l.in.loc = loc_;
    l.loopKind = LoopKind::Sequential;
    l.indices = {f_.src.newValue({DType::I64, {}})};
    l.extents = {extent};
    return l;
  }

  /// The point-dependent statements and the rows' loop for the point at row `row` of the
  /// tile: a fresh copy, reading that point's rows, with i the point's.
  Body pointCopy(const Body& point, int row) {
    std::map<int, int> rename;
    Body copy = copyFresh(f_, point, {}, rename, next_, names_);
    addRow(copy, row);
    Body out;
    const int i = emit(out, Op::Add, {nest_.tileFirst, row});
    renameValues(copy, {{nest_.indices[0], i}});
    out.insert(out.end(), std::make_move_iterator(copy.begin()),
               std::make_move_iterator(copy.end()));
    return out;
  }

  void rewrite() {
    Stmt& s = nest_;
    loc_ = s.in.loc;
    const int cond = branch_->in.args[0];
    Stmt cols = std::move(branch_->body.back());
    branch_->body.pop_back();

    // The tile's rows; each point's row in the row buffers.
    s.tileFirst = f_.src.newValue({DType::I64, {}});
    s.tileEnd = f_.src.newValue({DType::I64, {}});
    Body front;
    const int row = emit(front, Op::Sub, {s.indices[0], s.tileFirst});
    for (int b : rowBuffers_) {
      ir::Type& t = f_.src.types[b];
      t.shape.insert(t.shape.begin(), Poly(s.tile));
      auto moveAlloc = [&](Body& body) {
        for (size_t q = 0; q < body.size(); ++q)
          if (body[q].kind == Stmt::Alloc && body[q].in.result == b) {
            s.tileHead.push_back(std::move(body[q]));
            body.erase(body.begin() + static_cast<std::ptrdiff_t>(q));
            return true;
          }
        return false;
      };
      if (!moveAlloc(s.body)) moveAlloc(s.body.back().body); // (the nest's, else the branch's)
    }
    branch_ = nullptr; // (s.body has moved)
    addRow(s.body, row);
    s.body.insert(s.body.begin(), std::make_move_iterator(front.begin()),
                  std::make_move_iterator(front.end()));

    // The column's scalars that read a point's rows (z_c), with what depends on them, go with
    // the rows' loop into each point's copy; the others stay, once per column.
    std::set<int> varying;
    Body invariant, point;
    Stmt rowsLoop = std::move(cols.body.back());
    cols.body.pop_back();
    for (Stmt& t : cols.body) {
      if (dependsOnPoint(t, varying)) {
        if (t.in.result >= 0) varying.insert(t.in.result);
        point.push_back(std::move(t));
      } else {
        invariant.push_back(std::move(t));
      }
    }
    point.push_back(std::move(rowsLoop));

    Body& tail = s.tileTail;
    const int count = emit(tail, Op::Sub, {s.tileEnd, s.tileFirst});
    const int width = emit(tail, Op::Const, {}, kPointsTogether);
    const int groups = emit(tail, Op::Div, {count, width});
    const Poly groupsSize = bindSize(tail, uniqueSizeName("#groups", next_, names_), groups, loc_);
    const int whole = emit(tail, Op::Mul, {groups, width});
    const Poly restSize = bindSize(tail, uniqueSizeName("#rest", next_, names_),
                                   emit(tail, Op::Sub, {count, whole}), loc_);

    // Groups of kPointsTogether points: each point's scalars, then one loop over the rows in
    // which each element the points add into is loaded once, takes the points' terms in
    // order (old + t0, then + t1, ...: what the additions did), and is stored once. (Left to
    // LLVM, the additions' stores stayed: it cannot tell the rows' buffer from the target.)
    Stmt together = loop(groupsSize);
    {
      Body& gb = together.body;
      const int first = emit(gb, Op::Mul, {together.indices[0], width});
      Stmt rows;
      Body scalars, merged;
      std::map<int, Stmt> firstAdd; // target -> copy 0's addition (its subscripts)
      std::map<int, int> acc;       // target -> its running value
      for (int64_t q = 0; q < kPointsTogether; ++q) {
        const int at = q == 0 ? first : emit(gb, Op::Add, {first, emit(gb, Op::Const, {}, q)});
        Body copy = pointCopy(point, at);
        Stmt r = std::move(copy.back());
        copy.pop_back();
        scalars.insert(scalars.end(), std::make_move_iterator(copy.begin()),
                       std::make_move_iterator(copy.end()));
        if (q == 0)
          rows = std::move(r);
        else
          renameValues(r.body, {{r.indices[0], rows.indices[0]}});
        for (Stmt& t : q == 0 ? rows.body : r.body) {
          if (t.in.op != Op::BufAdd) {
            merged.push_back(std::move(t));
            continue;
          }
          const int target = t.in.args[0];
          const DType dt = f_.src.types[target].dtype;
          if (!acc.count(target)) {
            Stmt load = t;
            load.in.op = Op::Load;
            load.in.args.pop_back();
            load.in.result = f_.src.newValue({dt, {}});
            acc[target] = load.in.result;
            merged.push_back(load);
            firstAdd.emplace(target, t);
          }
          acc[target] = emitScalar(f_, merged, dt, Op::Add, {acc[target], t.in.args.back()}, loc_);
        }
      }
      for (auto& [target, add] : firstAdd) {
        add.in.op = Op::BufStore;
        add.in.args.back() = acc[target];
        merged.push_back(std::move(add));
      }
      dropUnused(merged);
      rows.body = std::move(merged);
      gb.insert(gb.end(), std::make_move_iterator(scalars.begin()),
                std::make_move_iterator(scalars.end()));
      gb.push_back(std::move(rows));
    }
    // The rest, a point at a time.
    Stmt rest = loop(restSize);
    {
      const int at = emit(rest.body, Op::Add, {whole, rest.indices[0]});
      Body copy = pointCopy(point, at);
      rest.body.insert(rest.body.end(), std::make_move_iterator(copy.begin()),
                       std::make_move_iterator(copy.end()));
    }
    cols.body = std::move(invariant);
    cols.body.push_back(std::move(together));
    cols.body.push_back(std::move(rest));
    cols.deferrable = false;

    Stmt choice;
    choice.kind = Stmt::If;
    choice.in.op = Op::If;
    choice.in.loc = loc_;
    choice.in.args = {cond};
    choice.body.push_back(std::move(cols));
    tail.push_back(std::move(choice));
  }

  Function& f_;
  Stmt& nest_;
  Stmt* branch_ = nullptr;
  std::set<int> targets_;           // the buffers the columns add into
  std::set<int> rowBuffers_;        // the nest's temporaries the columns read: one row per point
  std::set<std::string> nestSizes_; // the sizes the nest's body binds
  SrcRange loc_;
  std::set<std::string> names_;
  int next_ = 0;
};

} // namespace

int deferColumns(Function& f) {
  int count = 0;
  for (Stmt& s : f.body)
    if (s.kind == Stmt::Loop && Deferral(f, s).run()) ++count;
  return count;
}

} // namespace slope::lower
