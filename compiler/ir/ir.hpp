// Tensor IR: typed, shaped SSA with nested regions.
//
// A Function owns a Block; a Block is a list of Instrs and the values it yields. Values are
// numbered per function (Function::types[id] is the type of value id). Region instructions
// (comprehensions, reductions, if, for) own nested Blocks whose `args` are the index values.
// A body may use any value defined before it in an enclosing block.
//
// Everything is a value except the effects of the two buffer ops, which the adjoint pass uses
// to accumulate gradients: buf.zeros makes a mutable tensor and buf.add adds into it; later
// reads see the sum. Forward code never contains them.
#pragma once

#include "compiler/support/diagnostics.hpp"
#include "compiler/support/poly.hpp"
#include "slope/tensor.hpp"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace slope::ir {

enum class Op : uint8_t {
#define OP(E, M, K) E,
#include "compiler/ir/ops.def"
};
enum class OpKind : uint8_t { Leaf, Unary, Binary, Ternary, Memory, Region };

const char* opName(Op op);
OpKind opKind(Op op);
constexpr int kNumOps = 0
#define OP(E, M, K) +1
#include "compiler/ir/ops.def"
    ;

struct Type {
  DType dtype = DType::F64;
  std::vector<Poly> shape; // empty for a scalar
  int rank() const { return static_cast<int>(shape.size()); }
  bool operator==(const Type& o) const { return dtype == o.dtype && shape == o.shape; }
  bool operator!=(const Type& o) const { return !(*this == o); }
  std::string str() const;
};

struct Instr;

struct Block {
  std::vector<int> args; // index values of a region (i64 scalars)
  std::vector<Instr> body;
  std::vector<int> yields; // the block's results
};

struct Instr {
  Op op = Op::Const;
  int result = -1;           // -1 for For and BufAdd
  std::vector<int> args;     // operand value ids
  double fval = 0;           // Const (float)
  int64_t ival = 0;          // Const (int/bool), Param position; BufStore: see kTapeOnce
  std::string name;          // Param name; Load/BufAdd: the tensor's source name
  Poly poly;                 // Size
  std::vector<Poly> extents; // Comp, reductions, For: one per region index
  std::vector<Block> regions;
  SrcRange loc;         // source location, for run-time errors
  bool checked = false; // Load: subscripts proven in range at compile time
};

/// A size computed on entry from the parameters' sizes (checkpointing's segment counts and
/// snapshot slots): ceil(a / b), ceil(sqrt(a)), or floor(a / b) clamped to [1, cap]; each 0
/// when a <= 0 (and Clamp's when cap <= 0).
struct DerivedSize {
  enum Kind { CeilDiv, CeilSqrt, Clamp, FloorDiv } kind;
  std::string name;
  Poly a, b, cap;
  int64_t eval(const std::map<std::string, int64_t>& sizes) const;
};

/// A condition on the sizes, checked once on entry to the call before any work (LANGUAGE.md
/// v3, Subscripts): an affine subscript the checker could neither prove in range nor refute
/// (`icf[k, i]` with i: D and icf: f64[K, T] needs D <= T). It holds when `cond` >= 0, or
/// when some `guard` is below 1 (an index range that is empty, so the subscript never runs).
struct EntryCheck {
  // Subscript: as above. CheckpointBudget: a memory budget for binomial checkpointing
  // (`limit` bytes) that must hold one state of a loop (`got` bytes), its undo logs included.
  enum Kind { Subscript, CheckpointBudget } kind = Subscript;
  Poly cond;
  std::vector<Poly> guards;
  std::string what;   // "subscript 'i' of 'icf' (dimension 1)"
  std::string needs;  // the condition as the user would write it: "D <= T"
  bool lower = false; // the subscript's smallest value may be negative (else: its largest
                      // may reach the extent)
  Poly got, limit;    // the subscript's extreme value, and the extent it must stay below
  SrcRange loc;       // the subscript
  bool holds(const std::map<std::string, int64_t>& sizes) const;
  /// The message of a failed check, with the values of the sizes it mentions.
  /// `values`, where given, are the subscript's extreme value and the extent as computed.
  std::string message(const std::map<std::string, int64_t>& sizes,
                      const std::pair<int64_t, int64_t>* values = nullptr) const;
};

struct Function {
  std::string name;
  std::vector<int> params; // value ids of the Param instrs, in order
  std::vector<std::string> paramNames;
  std::vector<Type> paramTypes; // extents are literals or size names
  Block body;                   // yields: the results
  std::vector<Type> types;      // type of every value id
  const SourceFile* file = nullptr;

  int newValue(const Type& t) {
    types.push_back(t);
    return static_cast<int>(types.size()) - 1;
  }
  /// Size names, in order of first appearance in the parameter types.
  std::vector<std::string> sizeNames() const;
  std::vector<DerivedSize> derived;    // in dependency order
  std::vector<EntryCheck> entryChecks; // evaluated after the derived sizes
  /// Adds the derived sizes to sizes bound from the arguments.
  void deriveSizes(std::map<std::string, int64_t>& sizes) const {
    for (const DerivedSize& d : derived)
      sizes[d.name] = d.eval(sizes);
  }
};

/// Peak bytes of buffers (vars, tapes, adjoint accumulators) live at once, read off the IR:
/// every buf.zeros at its size, those inside regions once (generated code keeps a region's
/// buffer from one iteration to the next, and until the function returns).
/// The function's results (gradients, as large as the inputs) are not counted. `sizes` must
/// include the derived sizes.
int64_t peakBufferBytes(const Function& f, const std::map<std::string, int64_t>& sizes);

/// Prints the function in the textual form `slopec grad --emit ir` shows.
std::string print(const Function& f);
/// One instruction without its regions, as print writes it (no indent, no newline).
std::string printInstr(const Function& f, const Instr& i);
/// What print writes before the body: on entry, sizes computed from the parameters' sizes
/// that the source names (`div(n, 2)` as an extent), then the entry checks (LANGUAGE.md v3,
/// Subscripts), one indented line each.
std::string printEntry(const Function& f);

/// Deep-copies a block, giving every value it defines a fresh id; `map` translates ids of
/// values used but not defined in the block (and receives the new ids of those it defines).
Block cloneBlock(Function& f, const Block& b, std::vector<int>& map);

/// The first value used where it is not defined (not earlier in its block or an enclosing one,
/// nor an index of an enclosing region), as "value %N used out of scope in: INSTR"; "" when
/// every use is in scope. The reference evaluator does not notice such a use (it reads
/// whatever the value last was); generated code does not compile.
std::string scopeError(const Function& f);

/// The values a block defines: its index values and the results of its instructions, nested
/// regions included (what a value from outside the block can never be).
std::set<int> definedIn(const Block& b);

/// BufStore::ival of the store that fills a reduction tape (autodiff's tapeNestedReductions):
/// each element of a fresh zero buffer is written once with the value it keeps, so reading
/// the store as an add (as the Slope printer does) means the same. It is a store, not an add,
/// because a backend may run the body holding it more than once.
constexpr int64_t kTapeOnce = -3;

/// BufZeros::ival of a buffer whose every element a loop right after it stores before any is
/// read (forward mode's loop form of a comprehension: the value and every lane of its tangent
/// at each index): the zeros need not be written, and a backend does not write them.
constexpr int64_t kFilledWhole = 1;

/// Whether a reduction's body must run exactly once per element: it has effects a second run
/// would repeat (adds, size.def, a store to memory the body also reads) or nested regions
/// (costly to run twice). Both backends then compute logsumexp in one pass (a running maximum
/// that rescales the running sum whenever it grows) instead of two (the maximum, then the
/// sum), and agree to the bit. A store to memory the body does not read (the tape of the
/// gradient's forward pass) does not count: running it twice stores the same value again, and
/// the gradient must compute the same logsumexp as the function (seed 12359 of the random
/// program tests).
bool runBodyOnce(const Block& body);

/// A transcendental function, a power or digamma: far dearer than an add or a load, which is
/// why reverse mode tapes it rather than recompute it, and Loop IR hoists it out of loops.
bool isTranscendental(Op op);

/// Replaces every `custom` instruction (a call with a user derivative rule) by its first region,
/// the call's own computation, inlined where it stood: what a function computes, once nothing
/// will differentiate it. False when there was none.
bool stripCustom(Function& f);
/// Whether any `custom` instruction is left in b, nested regions included.
bool hasCustom(const Block& b);

/// Calls fn(instr) for every instruction, nested regions included (pre-order).
template <class Fn> void forEachInstr(const Block& b, Fn&& fn) {
  for (const Instr& i : b.body) {
    fn(i);
    for (const Block& r : i.regions)
      forEachInstr(r, fn);
  }
}

} // namespace slope::ir
