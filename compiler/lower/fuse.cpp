// Producer-consumer fusion (fuse.hpp says what it does and why).
//
// Fusing two loops P then C over the same leading extents gives one loop that runs, for each
// i, P's iteration i and then C's: for i { P(i); C(i) }. Against P then C, only the order of
// P's iterations relative to C's changes (C(i) now runs before P(i') for i' > i), which no one
// can see when every buffer that one of them writes and the other touches is accessed, in P
// and in C, with each fused index as a plain subscript in one fixed dimension: the two then
// meet at an element only in the same iteration, where P still runs first. Statements between
// P and C move before P when neither writes memory the other touches (P defines no value:
// it is a loop of effects). A loop with more indices than the shared ones becomes a nest
// (for i, j {...} is for i { for j {...} }, the same iterations in the same order).
//
// A call that fails must report the error it reported before, the first one in program
// order; so of P, C and the statements that move, at most one may fail (canFail, a computed
// extent). Allocations do not count: theirs is running out of memory, which has no order.
//
// At each level the fused body holds X's write and its reads. When they are in two loops, the
// two are fused in turn; when they are in one, it is entered. Where the write is a statement of
// the body itself, it runs once per iteration of the loops around it, and its subscripts are
// exactly their indices: every element is written once, by one iteration. The reads come
// after it in the same body with the same subscripts, so each reads what the same iteration
// wrote: v for a store, 0 + v for an addition into zeroed memory, which is what the read then
// computes (0 + v is v but for v = -0, and the bits stay those of the buffer's version).
//
// Compile time: the top-level statements' buffers are indexed once; an attempt copies the
// statements it fuses (at most kMaxStatements in the two loops, kMaxBetween between them),
// so the pass is linear in the program.

#include "compiler/lower/fuse.hpp"

#include <algorithm>
#include <optional>

namespace slope::lower {
namespace {

using ir::Op;

constexpr size_t kMaxBetween = 64;      // statements moved out of the way
constexpr size_t kMaxStatements = 4096; // in the two loops fused
constexpr int kMaxFusions = 4096;       // per function
// A fused sibling loop's statements: a vector body of more streams than this spills.
constexpr size_t kMaxSiblingStatements = 96;

/// The memory a statement touches from outside it, and what else fusion must know of it.
struct Footprint {
  struct Access {
    bool write;
    std::vector<int> subs;
  };
  std::map<int, std::vector<Access>> access; // buffer -> accesses
  bool fails = false;                        // can fail the call
  bool math = false;                         // calls a transcendental
  std::set<std::string> binds;               // size names bound (size.def)
  size_t statements = 0;

  bool writes(int b) const {
    auto a = access.find(b);
    if (a == access.end()) return false;
    return std::any_of(a->second.begin(), a->second.end(), [](const Access& x) { return x.write; });
  }
  void add(const Footprint& o) {
    for (const auto& [b, list] : o.access)
      access[b].insert(access[b].end(), list.begin(), list.end());
    fails = fails || o.fails;
    math = math || o.math;
    binds.insert(o.binds.begin(), o.binds.end());
    statements += o.statements;
  }
};

/// Whether running a and b in the other order can change what either does.
bool conflict(const Footprint& a, const Footprint& b) {
  for (const auto& entry : a.access)
    if (b.access.count(entry.first) && (a.writes(entry.first) || b.writes(entry.first)))
      return true;
  return false;
}

class Fuser {
public:
  explicit Fuser(Function& f) : f_(f), literals_(integerLiterals(f)) {}

  int run() {
    // Positions in f_.body stay fixed during the sweep (a fusion leaves a hole where the
    // second loop was, and the allocation it removes becomes one); holes go at the end.
    Body& body = f_.body;
    touched_.resize(body.size());
    dead_.assign(body.size(), false);
    for (size_t k = 0; k < body.size(); ++k)
      for (const auto& entry : footprint(body[k]).access) {
        touched_[k].insert(entry.first);
        users_[entry.first].push_back(k);
      }
    int fused = 0;
    for (size_t a = 0; a < body.size() && fused < kMaxFusions; ++a)
      if (!dead_[a] && contractTop(a)) ++fused;
    size_t out = 0;
    for (size_t k = 0; k < body.size(); ++k)
      if (!dead_[k]) {
        if (out != k) body[out] = std::move(body[k]);
        ++out;
      }
    body.resize(out);
    return fused;
  }

  /// fuseSiblings(): in every body, each straight parallel vector loop fused with the next
  /// ones while fuse() allows it and they are the same kind of loop over the same extents.
  int siblings(Body& b) {
    int fused = 0;
    for (size_t k = 0; k < b.size(); ++k) {
      while (sibling(b[k])) {
        size_t c = k + 1; // the next loop, past statements fuse() may move before b[k]
        while (c < b.size() && c - k - 1 <= kMaxBetween && b[c].kind != Stmt::Loop &&
               b[c].kind != Stmt::If)
          ++c;
        if (c >= b.size() || c - k - 1 > kMaxBetween || !sibling(b[c]) ||
            b[c].indices.size() != b[k].indices.size() || b[c].extents != b[k].extents ||
            statements(b[k]) + statements(b[c]) > kMaxSiblingStatements ||
            mathCalls(b[k]) + mathCalls(b[c]) > 1)
          break;
        std::optional<std::map<int, int>> forward = storedReads(b[k], b[c]);
        if (!forward) break;
        const size_t first = b[k].body.size(); // (the fused body: P's, then C's)
        std::optional<size_t> at = fuse(b, k, c);
        if (!at) break;
        k = *at;
        Body& body = b[k].body;
        body.erase(std::remove_if(body.begin() + static_cast<std::ptrdiff_t>(first), body.end(),
                                  [&](const Stmt& t) {
                                    return t.kind == Stmt::Scalar && t.in.op == Op::Load &&
                                           forward->count(t.in.result);
                                  }),
                   body.end());
        renameValues(body, *forward);
        ++fused;
      }
    }
    for (Stmt& s : b) {
      fused += siblings(s.body);
      fused += siblings(s.orelse);
    }
    return fused;
  }

private:
  /// A loop fuseSiblings() fuses: straight-line, parallel, SIMD, run for speed.
  static bool sibling(const Stmt& s) {
    return fusible(s) && s.loopKind == LoopKind::Parallel && s.vectorisable && !s.cold &&
           !s.shortRow;
  }

  /// For fusing siblings P then C: C's loads of elements P stores, each with the value P
  /// stores there (load result -> value), or nothing when the fused loop's accesses would not
  /// keep their order under LLVM's vectoriser (accessesKeepOrder: a loop so fused would lose
  /// its SIMD marking; one unfused keeps each loop's own). A load takes the stored value where
  /// every write of P to the buffer is a plain store at the load's subscripts and C writes no
  /// part of it: the same bits, one load fewer, and a strided element stored and loaded back
  /// is then stored only (random program seed 128833: a [n, 3] tangent copied after the loop
  /// that wrote it; LLVM unrolled the loop over 3, vectorised the one over n and loaded the
  /// tangent before storing it).
  static std::optional<std::map<int, int>> storedReads(const Stmt& P, const Stmt& C) {
    struct Written {
      std::vector<int> subs;
      int value = -1;
      bool plain = true; // every write a store at subs
    };
    std::map<int, Written> written;
    forEachStmt(P.body, [&](const Stmt& t) {
      std::optional<Access> a = accessOf(t);
      if (!a || !a->writes()) return;
      const int value = t.kind == Stmt::Store ? t.yield : t.in.args.back();
      auto [w, fresh] = written.try_emplace(a->buffer, Written{a->subscripts, value, true});
      if (!fresh) {
        w->second.plain = w->second.plain && w->second.subs == a->subscripts;
        w->second.value = value;
      }
      w->second.plain = w->second.plain && a->kind == Access::Write;
    });
    std::map<int, int> index; // C's loop indices -> P's
    for (size_t q = 0; q < C.indices.size() && q < P.indices.size(); ++q)
      index[C.indices[q]] = P.indices[q];
    std::set<int> cWrites;
    forEachStmt(C.body, [&](const Stmt& t) {
      std::optional<Access> a = accessOf(t);
      if (a && a->writes()) cWrites.insert(a->buffer);
    });
    std::map<int, int> forward;
    Body rest; // C's body as the fused loop would have it
    for (const Stmt& t : C.body) {
      std::optional<Access> a = accessOf(t);
      if (a && !a->writes()) {
        auto w = written.find(a->buffer);
        std::vector<int> subs = a->subscripts;
        for (int& v : subs)
          if (auto i = index.find(v); i != index.end()) v = i->second;
        if (w != written.end() && w->second.plain && subs == w->second.subs &&
            !cWrites.count(a->buffer)) {
          forward[t.in.result] = w->second.value;
          continue;
        }
      }
      rest.push_back(t);
    }
    renameValues(rest, index);
    renameValues(rest, forward);
    Stmt fused = P;
    fused.body.insert(fused.body.end(), rest.begin(), rest.end());
    if (!accessesKeepOrder(fused)) return std::nullopt;
    return forward;
  }

  /// The math function calls (exp, tanh, ...) in s. A fused body keeps at most one: a vector
  /// math function is a call, which may overwrite every vector register (the vector function
  /// ABI keeps none), so a body with two keeps what lives across the first in memory.
  /// Measured on the ADBench LSTM: its cell's seven loops as one, with five calls, ran the
  /// objective 24 % slower than as seven loops; fused up to one call each, no slower.
  static int mathCalls(const Stmt& s) {
    int n = 0;
    forEachStmt(s.body, [&](const Stmt& t) {
      n += t.kind == Stmt::Scalar && ir::isTranscendental(t.in.op);
    });
    return n;
  }
  static size_t statements(const Stmt& s) {
    size_t n = 0;
    forEachStmt(s.body, [&](const Stmt&) { ++n; });
    return n;
  }

  Footprint footprint(const Stmt& s) const {
    Footprint fp;
    std::set<int> own;
    scan(s, fp, own);
    for (int b : own)
      fp.access.erase(b);
    return fp;
  }

  void scan(const Stmt& s, Footprint& fp, std::set<int>& own) const {
    ++fp.statements;
    switch (s.kind) {
    case Stmt::Alloc:
    case Stmt::Stack: own.insert(s.in.result); break;
    case Stmt::Store: fp.access[s.buffer].push_back({true, s.indices}); break;
    case Stmt::Loop:
      for (const Poly& e : s.extents)
        fp.fails = fp.fails || extentCanFail(e);
      break;
    case Stmt::If:
      // A branch that yields a tensor reads all of it (the if's result is that buffer or a
      // copy): a use, or fusion could move the buffer's writer past it (random seed 290242).
      for (int y : {s.yield, s.elseYield})
        if (y >= 0 && f_.src.types[y].rank() > 0) fp.access[y].push_back({false, {}});
      break;
    case Stmt::Scalar: {
      const ir::Instr& in = s.in;
      if (in.op == Op::BufZeros) own.insert(in.result);
      if (in.op == Op::SizeDef) fp.binds.insert(in.name);
      if (std::optional<Access> a = accessOf(s))
        fp.access[a->buffer].push_back({a->writes(), a->subscripts});
      fp.fails = fp.fails || canFail(in, f_.src, literals_);
      fp.math = fp.math || ir::isTranscendental(in.op);
      break;
    }
    }
    for (const Stmt& t : s.body)
      scan(t, fp, own);
    for (const Stmt& t : s.orelse)
      scan(t, fp, own);
  }

  static bool touches(const Footprint& fp, int x) { return fp.access.count(x) > 0; }

  /// A top-level temporary allocated by statement a, touched by exactly two later top-level
  /// loops, the first writing it: fuse them and contract it (zeroed: to the written value; a
  /// comprehension's: to the slice one iteration of the fused loop writes and reads). A
  /// comprehension's touched by more (a tape the adjoint reads again): its writer and first
  /// reader fused where each iteration reads only its own slice, the buffer kept.
  bool contractTop(size_t a) {
    Body& body = f_.body;
    const Stmt& alloc = body[a];
    if (alloc.kind != Stmt::Alloc || (alloc.in.op != Op::BufZeros && alloc.in.op != Op::Comp))
      return false;
    const bool zeroed = alloc.in.op == Op::BufZeros;
    const int x = alloc.in.result;
    auto buf = f_.buffers.find(x);
    if (buf == f_.buffers.end() || buf->second.place != Buffer::Temp || f_.escaping.count(x))
      return false;
    std::vector<size_t> at;
    for (size_t k : users_[x])
      if (!dead_[k] && k > a) at.push_back(k);
    const bool keep = !zeroed && at.size() > 2;
    if (at.size() != 2 && !keep) return false;
    const size_t w = at[0], r = at[1];
    std::vector<size_t> live; // the statements from w to r
    for (size_t k = w; k <= r; ++k)
      if (!dead_[k]) live.push_back(k);
    if (live.size() - 2 > kMaxBetween) return false;
    Body seg;
    for (size_t k : live)
      seg.push_back(body[k]);
    if (keep     ? !fuseReader(seg, seg.size() - 1, x)
        : zeroed ? !fuseAndContract(seg, 0, seg.size() - 1, x, {})
                 : !fuseAndShrink(seg, seg.size() - 1, alloc))
      return false;
    // seg: the statements between, then the fused loop; into the live positions but the last.
    std::set<int> fusedTouched = touched_[w];
    fusedTouched.insert(touched_[r].begin(), touched_[r].end());
    if (!keep) fusedTouched.erase(x);
    std::vector<std::set<int>> sets;
    for (size_t q = 1; q + 1 < live.size(); ++q)
      sets.push_back(touched_[live[q]]);
    sets.push_back(fusedTouched);
    for (size_t k : live)
      for (int b : touched_[k])
        unuse(b, k);
    for (size_t q = 0; q + 1 < live.size(); ++q) {
      body[live[q]] = std::move(seg[q]);
      touched_[live[q]] = sets[q];
      for (int b : sets[q])
        use(b, live[q]);
    }
    dead_[r] = true;
    touched_[r].clear();
    if (keep) return true;
    dead_[a] = true;
    if (zeroed)
      f_.buffers.erase(x);
    else
      f_.buffers[x].inLoop = true;
    return true;
  }

  /// Fuses the loops seg[0] (the comprehension that writes x) and seg[r] (one that reads it)
  /// on their shared leading extents where one iteration of the fused loop then reads only
  /// the slice x[i, k, ...] it wrote: the reads find it in cache, not in memory (the ADBench
  /// GMM gradient's qx, n K d doubles that its squares' sums read once and the adjoint again).
  bool fuseReader(Body& seg, size_t r, int x) {
    std::optional<size_t> at = fuse(seg, 0, r);
    if (!at) return false;
    const Stmt& loop = seg[*at];
    bool ok = true;
    forEachStmt(loop.body, [&](const Stmt& s) {
      std::optional<Access> a = accessOf(s);
      if (a && a->buffer == x)
        ok = ok && a->subscripts.size() > loop.indices.size() &&
             std::equal(loop.indices.begin(), loop.indices.end(), a->subscripts.begin());
      else if (std::count(s.in.args.begin(), s.in.args.end(), x))
        ok = false;
    });
    return ok;
  }

  /// Fuses the loops seg[0] (the comprehension that writes x) and seg[r] on their shared
  /// leading extents; when every access to x in the fused loop has its indices as leading
  /// subscripts, one iteration writes and reads only its own slice x[i, k, ...], and x becomes
  /// that slice: allocated in the loop's body, without the fused dimensions (the ADBench GMM
  /// objective's qx: n K d doubles written and read back become d per iteration, in cache).
  /// The arithmetic and its order do not change, nor do the bits.
  bool fuseAndShrink(Body& seg, size_t r, const Stmt& alloc) {
    const int x = alloc.in.result;
    std::optional<size_t> at = fuse(seg, 0, r);
    if (!at) return false;
    Stmt& loop = seg[*at];
    const size_t m = loop.indices.size();
    // The subscripts of s's access to x (a store of the comprehension's element, a load,
    // buf.store or buf.add), if s is one.
    auto subscripts = [&](const Stmt& s) -> std::optional<std::vector<int>> {
      std::optional<Access> a = accessOf(s);
      if (!a || a->buffer != x) return std::nullopt;
      return a->subscripts;
    };
    bool ok = true;
    forEachStmt(loop.body, [&](const Stmt& s) {
      if (auto subs = subscripts(s))
        ok = ok && subs->size() > m &&
             std::equal(loop.indices.begin(), loop.indices.end(), subs->begin());
      else if (std::count(s.in.args.begin(), s.in.args.end(), x)) // (x used otherwise)
        ok = false;
    });
    if (!ok) return false;
    forEachStmt(loop.body, [&](Stmt& s) {
      if (!subscripts(s)) return;
      if (s.kind == Stmt::Store)
        s.indices.erase(s.indices.begin(), s.indices.begin() + static_cast<long>(m));
      else
        s.in.args.erase(s.in.args.begin() + 1, s.in.args.begin() + 1 + static_cast<long>(m));
    });
    Stmt slice = alloc;
    slice.in.extents.erase(slice.in.extents.begin(),
                           slice.in.extents.begin() + static_cast<long>(m));
    std::vector<Poly>& shape = f_.src.types[x].shape;
    shape.erase(shape.begin(), shape.begin() + static_cast<long>(m));
    loop.body.insert(loop.body.begin(), std::move(slice));
    return true;
  }

  void use(int b, size_t k) {
    auto& list = users_[b];
    list.insert(std::upper_bound(list.begin(), list.end(), k), k);
  }
  void unuse(int b, size_t k) {
    auto& list = users_[b];
    auto it = std::lower_bound(list.begin(), list.end(), k);
    if (it != list.end() && *it == k) list.erase(it);
  }

  /// Fuses the loops b[w] and b[r] (statements between them move before b[w]), then contracts
  /// x in the fused body. False when either step is not possible (b is then a wreck: the
  /// caller works on a copy).
  bool fuseAndContract(Body& b, size_t w, size_t r, int x, std::vector<int> around) {
    std::optional<size_t> at = fuse(b, w, r);
    if (!at) return false;
    Stmt& loop = b[*at];
    around.insert(around.end(), loop.indices.begin(), loop.indices.end());
    return contract(loop.body, x, around);
  }

  /// Makes x's write and reads meet in body b (the statements of the loops whose indices are
  /// `around`) and replaces the reads by the written value.
  bool contract(Body& b, int x, const std::vector<int>& around) {
    std::vector<size_t> at;
    for (size_t k = 0; k < b.size(); ++k)
      if (touches(footprint(b[k]), x)) at.push_back(k);
    if (at.empty()) return false;
    Stmt& first = b[at[0]];
    if (first.kind == Stmt::Scalar && first.in.args.size() >= 2 && first.in.args[0] == x &&
        (first.in.op == Op::BufAdd || first.in.op == Op::BufStore))
      return replaceReads(b, at[0], x, around);
    if (first.kind != Stmt::Loop) return false;
    if (at.size() == 1) {
      // Write and reads in one inner loop: the element is then its iteration's.
      std::vector<int> inner = around;
      inner.insert(inner.end(), first.indices.begin(), first.indices.end());
      return contract(first.body, x, inner);
    }
    if (at.size() != 2 || b[at[1]].kind != Stmt::Loop || at[1] - at[0] - 1 > kMaxBetween)
      return false;
    return fuseAndContract(b, at[0], at[1], x, around);
  }

  /// b[w] writes x once per iteration of the loops around it, at their indices; every later
  /// access is a read at the same subscripts: the reads become the written value.
  bool replaceReads(Body& b, size_t w, int x, const std::vector<int>& around) {
    const Stmt write = b[w];
    const std::vector<int> subs(write.in.args.begin() + 1, write.in.args.end() - 1);
    std::vector<int> sorted = subs, want = around;
    std::sort(sorted.begin(), sorted.end());
    std::sort(want.begin(), want.end());
    if (sorted != want || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      return false;
    bool ok = true;
    std::vector<int> reads;
    auto check = [&](const Stmt& s) {
      if (s.kind == Stmt::Store && s.buffer == x) ok = false;
      if (s.kind != Stmt::Scalar || s.in.args.empty() || s.in.args[0] != x) return;
      if (s.in.op != Op::Load || std::vector<int>(s.in.args.begin() + 1, s.in.args.end()) != subs)
        ok = false;
      else
        reads.push_back(s.in.result);
    };
    for (size_t k = w + 1; k < b.size(); ++k) {
      check(b[k]);
      forEachStmt(b[k].body, check);
      forEachStmt(b[k].orelse, check);
    }
    if (!ok) return false;

    const int v = write.in.args.back();
    int value = v;
    Body now;
    if (write.in.op == Op::BufAdd) {
      // The buffer's element was 0 + v: so is the value read.
      const ir::Type scalar{f_.src.types[x].dtype, {}};
      Stmt zero;
      zero.in.op = Op::Const;
      zero.in.result = f_.src.newValue(scalar);
      zero.in.loc = write.in.loc;
      Stmt sum;
      sum.in.op = Op::Add;
      sum.in.result = f_.src.newValue(scalar);
      sum.in.args = {zero.in.result, v};
      sum.in.loc = write.in.loc;
      value = sum.in.result;
      now = {zero, sum};
    }
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(w));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(w), now.begin(), now.end());
    std::map<int, int> rename;
    for (int r : reads)
      rename[r] = value;
    eraseReads(b, x);
    renameValues(b, rename);
    return true;
  }

  static void eraseReads(Body& b, int x) {
    b.erase(std::remove_if(b.begin(), b.end(),
                           [&](const Stmt& s) {
                             return s.kind == Stmt::Scalar && s.in.op == Op::Load &&
                                    s.in.args[0] == x;
                           }),
            b.end());
    for (Stmt& s : b) {
      eraseReads(s.body, x);
      eraseReads(s.orelse, x);
    }
  }

  /// A loop of effects (a comprehension's is: its element is a store) whose iterations share
  /// nothing but memory.
  static bool fusible(const Stmt& s) {
    return s.kind == Stmt::Loop && (s.in.op == Op::For || s.in.op == Op::Comp) && s.in.ival != 1 &&
           s.memoryOnly && !s.blocked && !s.indices.empty();
  }

  /// The statements of loop s over its indices from m on (the inner part of a split).
  static Body innerPart(const Stmt& s, size_t m) {
    if (s.indices.size() == m) return s.body;
    Stmt inner = s;
    inner.indices.erase(inner.indices.begin(), inner.indices.begin() + static_cast<long>(m));
    inner.extents.erase(inner.extents.begin(), inner.extents.begin() + static_cast<long>(m));
    inner.in.extents = inner.extents;
    return {inner};
  }

  /// Fuses loops b[p] and b[c] on their shared leading extents (see the file comment); the
  /// statements between them move before the fused loop. Returns its position, or nothing
  /// (b unchanged) when that is not legal or would cost SIMD math.
  std::optional<size_t> fuse(Body& b, size_t p, size_t c) {
    if (!fusible(b[p]) || !fusible(b[c])) return std::nullopt;
    const Stmt& P = b[p];
    Stmt C = b[c];
    size_t m = 0;
    while (m < P.extents.size() && m < C.extents.size() && P.extents[m] == C.extents[m])
      ++m;
    if (m == 0) return std::nullopt;
    {
      std::map<int, int> rename;
      for (size_t q = 0; q < m; ++q)
        rename[C.indices[q]] = P.indices[q];
      Body one{C};
      renameValues(one, rename);
      C = std::move(one[0]);
    }
    const Footprint fp = footprint(P), fc = footprint(C);
    Footprint between;
    for (size_t k = p + 1; k < c; ++k)
      between.add(footprint(b[k]));
    if (fp.statements + fc.statements > kMaxStatements) return std::nullopt;
    if (int(fp.fails) + int(fc.fails) + int(between.fails) > 1) return std::nullopt;
    if (!between.binds.empty() || conflict(between, fp)) return std::nullopt;
    for (const auto& n : fp.binds)
      if (fc.binds.count(n)) return std::nullopt;
    // Shared memory with a write: each fused index at one fixed position of every access.
    for (const auto& [buf, list] : fp.access) {
      auto other = fc.access.find(buf);
      if (other == fc.access.end() || !(fp.writes(buf) || fc.writes(buf))) continue;
      std::vector<const std::vector<int>*> subs;
      for (const auto& acc : list)
        subs.push_back(&acc.subs);
      for (const auto& acc : other->second)
        subs.push_back(&acc.subs);
      for (size_t q = 0; q < m; ++q)
        if (!fixedSubscript(P.indices[q], subs)) return std::nullopt;
    }
    // SIMD: a loop vectorised at the fused level keeps its lanes only if the fused loop is
    // still a straight parallel loop; losing them costs a vector math call its lanes.
    const bool parallel = P.loopKind == LoopKind::Parallel && C.loopKind == LoopKind::Parallel;
    const bool vector = parallel && P.vectorisable && C.vectorisable && P.indices.size() == m &&
                        C.indices.size() == m;
    if (!vector && ((P.vectorisable && P.indices.size() == m && fp.math) ||
                    (C.vectorisable && C.indices.size() == m && fc.math)))
      return std::nullopt;

    Stmt fused = P;
    fused.in.op = Op::For; // (a comprehension's store is in its inner part)
    fused.in.result = -1;
    fused.indices.resize(m);
    fused.extents.resize(m);
    fused.in.extents = fused.extents;
    fused.loopKind = parallel ? LoopKind::Parallel : LoopKind::Sequential;
    fused.vectorisable = vector;
    fused.memoryOnly = true;
    fused.body = innerPart(P, m);
    Body tail = innerPart(C, m);
    fused.body.insert(fused.body.end(), std::make_move_iterator(tail.begin()),
                      std::make_move_iterator(tail.end()));
    Body moved(std::make_move_iterator(b.begin() + static_cast<std::ptrdiff_t>(p) + 1),
               std::make_move_iterator(b.begin() + static_cast<std::ptrdiff_t>(c)));
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(p),
            b.begin() + static_cast<std::ptrdiff_t>(c) + 1);
    moved.push_back(std::move(fused));
    b.insert(b.begin() + static_cast<std::ptrdiff_t>(p), std::make_move_iterator(moved.begin()),
             std::make_move_iterator(moved.end()));
    return p + moved.size() - 1;
  }

  Function& f_;
  std::map<int, int64_t> literals_;
  std::vector<std::set<int>> touched_;       // top-level statement -> buffers it touches
  std::map<int, std::vector<size_t>> users_; // buffer -> top-level statements, in order
  std::vector<bool> dead_;                   // holes left by fusion
};

} // namespace

int fuseProducers(Function& f) {
  return Fuser(f).run();
}

int fuseSiblings(Function& f) {
  return Fuser(f).siblings(f.body);
}

} // namespace slope::lower
