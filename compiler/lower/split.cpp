// Work that does not depend on a comprehension's last index, taken out of it
// (compiler/lower/split.hpp).
#include "compiler/lower/split.hpp"

#include <set>

namespace slope::lower {
namespace {

using ir::Op;

/// Statements below which a prefix of plain scalar work is not worth a loop of its own (a
/// few loads and an add cost less than the loop's entry).
constexpr int kMinScalars = 8;

/// Every value id a statement reads, nested statements included.
void usesOf(const Stmt& s, std::set<int>& out) {
  out.insert(s.in.args.begin(), s.in.args.end());
  if (s.yield >= 0) out.insert(s.yield);
  if (s.elseYield >= 0) out.insert(s.elseYield);
  if (s.buffer >= 0) out.insert(s.buffer);
  out.insert(s.indices.begin(), s.indices.end());
  for (const Stmt& t : s.body)
    usesOf(t, out);
  for (const Stmt& t : s.orelse)
    usesOf(t, out);
}

/// The size names a statement mentions (loop extents, a size leaf, the shapes of the tensors it
/// makes), and those it binds (size.def), nested statements included: a loop whose extent is a
/// size bound by a statement that depends on the index depends on it too (a triangular
/// `logsumexp[l: j + 1]` in a comprehension over j).
void sizesOf(const Stmt& s, const ir::Function& f, std::set<std::string>& mentions,
             std::set<std::string>& binds) {
  auto names = [&](const Poly& p) {
    for (const auto& n : p.names())
      mentions.insert(n);
  };
  for (const Poly& e : s.extents)
    names(e);
  for (const Poly& e : s.in.extents)
    names(e);
  names(s.in.poly);
  if (s.in.result >= 0)
    for (const Poly& e : f.types[s.in.result].shape)
      names(e);
  if (s.kind == Stmt::Scalar && s.in.op == Op::SizeDef) binds.insert(s.in.name);
  for (const Stmt& t : s.body)
    sizesOf(t, f, mentions, binds);
  for (const Stmt& t : s.orelse)
    sizesOf(t, f, mentions, binds);
}

/// Every value id a statement defines, nested statements included.
void defsOf(const Stmt& s, std::set<int>& out) {
  if (s.in.result >= 0) out.insert(s.in.result);
  if (s.kind == Stmt::Loop) out.insert(s.indices.begin(), s.indices.end());
  for (const Stmt& t : s.body)
    defsOf(t, out);
  for (const Stmt& t : s.orelse)
    defsOf(t, out);
}

/// Calls fn on s and on every statement nested in it.
template <class Fn> void forStmtAndNested(const Stmt& s, Fn&& fn) {
  fn(s);
  forEachStmt(s.body, fn);
  forEachStmt(s.orelse, fn);
}

/// The buffers a statement writes (stores, scatters, comprehension elements, stacks, an if's
/// tensor result) and reads (loads), nested statements included; `own`: the buffers it
/// allocates.
struct Memory {
  std::set<int> reads, writes, own;
};
void memoryOf(const Stmt& st, Memory& m) {
  forStmtAndNested(st, [&](const Stmt& s) {
    if (s.kind == Stmt::Alloc || s.kind == Stmt::Stack ||
        (s.kind == Stmt::Scalar && s.in.op == Op::BufZeros))
      m.own.insert(s.in.result);
    if (s.kind == Stmt::Stack) m.writes.insert(s.in.result);
    if (s.kind == Stmt::If && s.in.result >= 0) m.writes.insert(s.in.result); // (a tensor's copy)
    if (std::optional<Access> a = accessOf(s)) (a->writes() ? m.writes : m.reads).insert(a->buffer);
  });
}
void memoryOf(const Body& b, Memory& m) {
  for (const Stmt& s : b)
    memoryOf(s, m);
}

/// Whether the statements are worth a loop split: a loop, a branch, a costly operation, or
/// kMinScalars statements.
bool worthMoving(const Body& b, const ir::Function& f) {
  int count = 0;
  bool work = false;
  forEachStmt(b, [&](const Stmt& s) {
    ++count;
    if (s.kind == Stmt::Loop || s.kind == Stmt::If) work = true;
    if (s.kind == Stmt::Scalar && s.in.result >= 0 && costly(s.in, f)) work = true;
  });
  return work || count >= kMinScalars;
}

/// Whether a body's statements are straight-line (no loop, no branch).
bool straight(const Body& b) {
  for (const Stmt& s : b)
    if (s.kind == Stmt::Loop || s.kind == Stmt::If) return false;
  return true;
}

bool split(Function& f, Stmt& loop) {
  const bool effects = loop.in.op == Op::For && loop.in.ival != 1; // (not a user loop)
  if (loop.loopKind != LoopKind::Parallel || (loop.in.op != Op::Comp && !effects) ||
      loop.indices.size() < 2 || loop.blocked || loop.cold || loop.shortRow)
    return false;
  std::optional<int64_t> n = loop.extents.back().constValue();
  if (!n || *n < 1) return false;
  // P: the statements that read neither the last index nor a value that depends on it, in
  // their order; S: the others, in theirs. A statement of P may pass statements of S that
  // came before it only where that changes nothing: it writes nothing they touched, and it
  // cannot fail where one of them could have failed first (the error reported stays the
  // same).
  const std::map<int, int64_t> literals = integerLiterals(f);
  auto fails = [&](const Stmt& st) {
    bool any = false;
    forStmtAndNested(st, [&](const Stmt& x) {
      if (x.kind == Stmt::Scalar && canFail(x.in, f.src, literals)) any = true;
    });
    return any;
  };
  // A buffer that S writes is S's from its allocation on (a zeroed accumulator allocated in P
  // would otherwise carry one entry's additions into the next): `forced` holds those found,
  // and the partition is redone until it holds them all.
  std::set<int> forced;
  Body prefix, rest;
  Memory p, s; // what P and S touch
  for (;;) {
    std::set<int> dependent{loop.indices.back()};
    std::set<std::string> dependentSizes; // bound by statements that depend on the index
    prefix.clear();
    rest.clear();
    Memory touched;                  // by S so far
    std::set<std::string> restSizes; // mentioned or bound by S so far
    bool restCanFail = false;
    for (const Stmt& st : loop.body) {
      std::set<int> uses;
      usesOf(st, uses);
      std::set<std::string> mentions, binds;
      sizesOf(st, f.src, mentions, binds);
      bool dep = st.in.result >= 0 && forced.count(st.in.result);
      for (int u : uses)
        if (dependent.count(u)) dep = true;
      for (const std::string& n : mentions)
        if (dependentSizes.count(n)) dep = true;
      if (dep) {
        defsOf(st, dependent);
        dependentSizes.insert(binds.begin(), binds.end());
        restSizes.insert(mentions.begin(), mentions.end());
        restSizes.insert(binds.begin(), binds.end());
        memoryOf(st, touched);
        restCanFail = restCanFail || fails(st);
        rest.push_back(st);
        continue;
      }
      if (!rest.empty()) {
        Memory m;
        memoryOf(st, m);
        for (int b : m.writes)
          if (touched.reads.count(b) || touched.writes.count(b)) return false;
        if (restCanFail && fails(st)) return false;
        for (const std::string& n : binds) // (a binding S saw before would move past it)
          if (restSizes.count(n)) return false;
      }
      prefix.push_back(st);
    }
    p = Memory{};
    s = Memory{};
    memoryOf(prefix, p);
    memoryOf(rest, s);
    size_t before = forced.size();
    for (int b : s.writes)
      if (p.own.count(b)) forced.insert(b);
    if (forced.size() == before) break;
  }
  if (prefix.empty() || rest.empty()) return false;
  if (!worthMoving(prefix, f.src)) return false;
  for (int b : p.writes)
    if (!p.own.count(b)) return false; // P runs once, not once per entry: only its own memory
  for (int b : s.writes)
    if (p.reads.count(b) || p.writes.count(b)) return false; // P saw S's writes before
  // The values P defines must not be redefined by S (each is defined once in Loop IR; this
  // guards the assumption rather than relying on it).
  std::set<int> pDefs, sDefs;
  for (const Stmt& t : prefix)
    defsOf(t, pDefs);
  for (const Stmt& t : rest)
    defsOf(t, sDefs);
  for (int v : sDefs)
    if (pDefs.count(v)) return false;

  Stmt inner;
  inner.kind = Stmt::Loop;
  inner.in.op = Op::For;
  inner.in.loc = loop.in.loc;
  inner.indices = {loop.indices.back()};
  inner.extents = {loop.extents.back()};
  inner.loopKind = LoopKind::Parallel;
  inner.vectorisable = straight(rest);
  inner.memoryOnly = loop.memoryOnly;
  inner.body = std::move(rest);
  loop.indices.pop_back();
  loop.extents.pop_back();
  loop.vectorisable = false;
  loop.body = std::move(prefix);
  loop.body.push_back(std::move(inner));
  return true;
}

} // namespace

int splitInvariantPrefix(Function& f) {
  return rewriteLoops(f.body, [&](Stmt& loop, Body&) { return split(f, loop); });
}

} // namespace slope::lower
