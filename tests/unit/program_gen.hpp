// Random well-typed Slope programs, deterministic by seed, for differential testing: the JIT
// against the reference evaluator, both against central finite differences, and checkpointed
// gradients against plain ones. Programs are trees (not strings) so that a failing one can be
// shrunk to a small reproducer. See docs/testing.md, "Random programs".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace slope {
class JitRunner;
}

namespace slope::gen {

/// Extents: 0 and 1 are the function's size names (n, m in f; p, q in the helper g), 2 is the
/// literal 3.
constexpr int kLit3 = 2;

/// A value's type: float (the program's float type), bool or i64, with extents.
struct Ty {
  bool boolean = false;
  bool integer = false;
  std::vector<int> dims;
  bool operator==(const Ty& o) const {
    return boolean == o.boolean && integer == o.integer && dims == o.dims;
  }
  bool operator!=(const Ty& o) const { return !(*this == o); }
  bool isFloat() const { return !boolean && !integer; }
};

/// An i64 index expression: `b`, `b - 1`, `size - 1 - b` or `(b + 1) % size`, where b is an
/// index name or the literal `lit`.
enum class IK { Plain, Prev, Rev, Mod };
struct IExpr {
  IK k = IK::Plain;
  std::string var; // empty: the literal
  int lit = 0;
  int size = 0; // Rev, Mod
};

/// An index bound by a comprehension, an indexed reduction or a loop. Its values lie in
/// [lo, extent of `size`) (size -1: unknown), so subscripts of that extent may use it.
struct Binder {
  std::string name;
  int size = 0;
  int lo = 0;
  bool tri = false; // the extent is `triBase + 1` (a reduction) or `triBase` (a loop)
  IExpr triBase;
  bool explicitExtent = true; // else printed without one where a plain subscript infers it
};

enum class EK {
  Name,      // op: the name
  Lit,       // lit
  BoolLit,   // lit != 0
  Fill,      // lit * ones(T[dims])
  IndexVal,  // T(idx[0])
  SizeVal,   // the size name op (i64, only as a divisor)
  Sub,       // op[idx...]
  Un,        // op: a template, `@` the operand
  Two,       // op: a template, `@` and `#` the operands
  Bin,       // op in + - * /
  MatMul,    // kids[0] @ kids[1]
  Transpose, // transpose(kids[0])
  Reduce,    // op(kids[0])
  IReduce,   // op[binders](kids[0])
  If,        // if kids[0] { kids[1] } else { kids[2] }
  Select,    // select(kids[0], kids[1], kids[2])
  Call,      // op(kids...)
  Cmp,       // kids[0] op kids[1]
  Logic,     // kids[0] op kids[1], op in && ||
  Not,       // !kids[0]
  VecLit,    // [kids...]
};

struct Expr {
  EK k = EK::Lit;
  Ty ty;
  std::string op;
  double lit = 0;
  std::vector<Expr> kids;
  std::vector<IExpr> idx;
  std::vector<Binder> binders;
};

enum class SK { Let, LetComp, LetTuple, Var, Assign, Write, For };
enum class LoopHi { Size, Tri, K }; // `0..n`, `0..t`, `0..k` with k an i64 parameter

struct Stmt {
  SK k = SK::Let;
  std::string name, name2; // LetTuple binds two names
  Expr value;
  std::vector<Binder> binders; // LetComp: its indices; For: the loop variable
  std::vector<IExpr> idx;      // Write: the subscripts
  LoopHi hi = LoopHi::Size;    // For
  std::vector<Stmt> body;      // For
};

struct Function {
  std::string name;
  std::vector<std::pair<std::string, Ty>> params;
  std::vector<Stmt> body;
  std::vector<Expr> results; // two: a tuple
  bool helper = false;       // size names p, q instead of n, m
};

struct Prog {
  uint64_t seed = 0;
  bool f32 = false;
  std::vector<Function> fns; // f, then the helper g if any
  int64_t n = 3, m = 2;
};

/// An integer from the environment (how many programs, from which seed), or dflt where the
/// variable is unset or empty.
int64_t envInt(const char* name, int64_t dflt);

/// A random program for a seed (the same on every platform).
Prog generate(uint64_t seed);
/// Its Slope source.
std::string print(const Prog& p);
/// Its size: what the shrinker makes smaller.
int measure(const Prog& p);

enum class Verdict {
  Pass,
  Rejected,          // the compiler rejects it: a generator bug
  Domain,            // values overflow or leave a function's domain: a generator bug
  Threw,             // compiling or evaluating it throws
  JitThrew,          // the JIT throws where the evaluator does not
  JitForward,        // JIT value != evaluator value
  JitGradient,       // JIT gradient != evaluator gradient
  FiniteDifferences, // gradient != central differences (at two points)
  Schedule,          // a checkpointed gradient differs (bitwise) from the plain one
  ForwardMode,       // the JVP or HVP disagrees with the VJP or finite differences
  Crashed,           // the process died (a signal) or took over a minute (isolated checks)
};
const char* verdictName(Verdict v);

struct Outcome {
  Verdict v = Verdict::Pass;
  std::string detail;
};

/// Compiles and runs programs; owns a JIT, renewed every so often. Isolated, each check runs
/// in a child process (fork), so that a crash or a hang is a verdict like any other.
class Checker {
public:
  explicit Checker(bool isolate = false);
  ~Checker();
  /// Runs every check (focus Pass) or only those that can give `focus` (for shrinking).
  Outcome check(const Prog& p, Verdict focus = Verdict::Pass);

private:
  Outcome checkHere(const Prog& p, Verdict focus);
  bool isolate_;
  std::unique_ptr<JitRunner> jit_, jitReversed_; // (JitOptions::reverseParallel)
  std::unique_ptr<JitRunner> jitThreads_[2];     // 2 and 16 threads (JitOptions::threads)
  std::unique_ptr<JitRunner> jitLevel0_;         // JitOptions::optLevel 0
  int uses_ = 0;
};

struct Shrunk {
  Prog prog;
  int steps = 0, tries = 0;
};
/// Greedily shrinks p while `fails` holds (drops statements, unwraps loops, replaces subtrees
/// by a leaf or a child, simplifies subscripts, lowers sizes), at most maxTries candidates.
Shrunk shrink(const Prog& p, const std::function<bool(const Prog&)>& fails, int maxTries);

/// Checks the program of a seed; on a failure shrinks it and returns the report (else "").
std::string checkSeed(Checker& c, uint64_t seed, Verdict* verdict = nullptr, bool doShrink = true);

} // namespace slope::gen
