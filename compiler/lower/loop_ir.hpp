// Loop IR: the layer between Tensor IR and a backend (docs/architecture.md, "Loop IR").
//
// Tensor IR says what each value is; Loop IR says how it is computed: every tensor lives in a
// buffer with a place (a parameter, a result the caller gave, a temporary the call allocates),
// every region is an explicit loop nest over buffers, and every loop says how its iterations
// may run:
//   parallel    the iterations touch disjoint memory: any order, any thread, SIMD lanes;
//   reduction   the iterations are independent but combine into one value (sum, max, ...);
//   sequential  an iteration may see what an earlier one wrote: in order, on one thread.
// The decisions made on the way to a backend (which loops run in parallel or vectorise, where
// buffers live, what is hoisted) are made here, printed by `slopec grad --emit loops`, and
// read by the backends, which translate and decide nothing. Scalar work stays in Tensor IR's
// instructions (the same op list), so a backend shares its scalar lowering with Tensor IR.
#pragma once

#include "compiler/ir/ir.hpp"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slope::lower {

enum class LoopKind { Parallel, Reduction, Sequential };
const char* loopKindName(LoopKind k);

struct Stmt;
using Body = std::vector<Stmt>;

struct Stmt {
  enum Kind {
    Scalar, // `in`: a region-free instruction with a scalar result (leaf, unary, binary,
            // ternary, a load, a rank-0 accumulator) or an effect on memory (buf.store,
            // buf.add, size.def)
    Alloc,  // `in.result` gets fresh memory of its type (buf.zeros: zeroed; a comprehension's
            // or an if's tensor: not); nothing when the buffer is a result the caller gave
    Stack,  // `in`: a tensor literal written into its buffer
    Store,  // buffer[indices] = yield: a comprehension's element
    Loop,   // for indices < extents { body }, then for a reduction its combined value
    If,     // if in.args[0] { body } else { orelse }; in.result from yield / elseYield
  } kind = Scalar;
  ir::Instr in; // the Tensor IR instruction (without its regions)

  // Loop: the index values, their extents, how iterations run, and for a reduction the op
  // that combines the body's yield into in.result (ReduceSum, ..., ArgMin; Op::For: none).
  std::vector<int> indices;
  std::vector<Poly> extents;
  LoopKind loopKind = LoopKind::Sequential;
  bool vectorisable = false; // innermost, straight-line: a candidate for SIMD lanes
  bool onePass = false;      // logsumexp: one pass with a running maximum (a body with effects
                             // must not run twice, a costly one need not: ir::runBodyOnce)
  // A sequential loop whose iterations share nothing but memory: no state of a user loop, no
  // value used after the loop, no size bound in the body and read outside it (classify; what
  // planBlocks may cut into blocks).
  bool memoryOnly = false;
  // A float sum or product over one index whose extent is below reduce_order::kMinLaneRow
  // on every run (splitShortRows proves it): its order is the serial one, so a backend runs
  // one plain loop with no test of the extent and no lanes (`short` in --emit loops).
  bool shortRow = false;
  // The copy of a loop that runs only when its entry checks fail (strength.cpp: the original
  // loop, which reports the first failing access, or gives the same values when only a check
  // against wrapping failed). A backend compiles it for size: LLVM neither unrolls nor
  // vectorises it, and the branch to it is unlikely (`cold` in --emit loops).
  bool cold = false;
  // A vector loop of few iterations (a triangle's column, at most a row's length; any vector
  // loop nested in another, markFewTrips): a backend vectorises it one register at a time,
  // not several interleaved, which would leave rows shorter than the interleaved width to
  // the scalar remainder (`few` in --emit loops).
  bool fewTrips = false;
  // A `few` loop over a block's lanes that LLVM must vectorise before it unrolls it
  // (`vector-first` in --emit loops; interchange.cpp's triangle corner): unrolled first, its
  // literal offsets let SROA split the block's accumulators into scalars, which the SLP
  // vectoriser does not gather back into vectors, and its masked lanes become branches.
  bool vectorFirst = false;
  // A top-level sequential loop run in blocks of its first index (planBlocks; `in blocks` in
  // --emit loops): every buffer it writes is either touched only at its own first index
  // (blocks write disjoint elements) or only added to (buf.add), and each of the latter,
  // `partials`, gets one zeroed copy per block that the block adds into; after the loop the
  // copies are added into the buffer in block order. The block count (scatterBlocks) depends
  // on the extents only, so the sums are the same for any thread count.
  bool blocked = false;
  std::vector<int> partials;
  // A blocked loop's iterations, its nested loops' included, for the block count: a sum of
  // products of extents, one product per loop of the nest whose extents are known before it
  // runs (planBlocks). The backend evaluates it in doubles, as scatterBlocks' `iters`.
  std::vector<std::vector<Poly>> work;
  // A top-level nest run in tiles of this many values of its first index, the other indices
  // outside the tile's (tileNests, tile.hpp; `tiled N` in --emit loops): what the body reads
  // at the other indices only is read once per tile. 0: row order.
  int64_t tile = 0;
  // A tiled nest's statements per tile (tail.hpp; `per tile` in --emit loops): at each tile of
  // rows [tileFirst, tileEnd) of its first index and each value of its other indices, codegen
  // runs tileHead, then the body for each row of the tile, then tileTail. The head makes the
  // buffers that hold one row per point of the tile ([tile, ...]), which the body writes at
  // row i - tileFirst and the tail reads for every point; tileFirst and tileEnd are i64 values
  // codegen binds (-1: none).
  Body tileHead, tileTail;
  int tileFirst = -1, tileEnd = -1;
  // A tiled nest's buffers of rank 3 or more that every access in it reaches at [i, k, ...],
  // its first two indices (the GMM's qx, a tape of n K d doubles that the forward nest writes
  // and the adjoint's reads): at each (i, k) codegen prefetches the row of (i, k + 1), which
  // the tile's order reaches a tile's pass later, in time for memory to bring it. In tile order
  // the rows of one pass are K rows apart, which the processor's own prefetcher does not
  // follow (`prefetch %x` in --emit loops). A hint: nothing is read or written by it.
  std::vector<int> prefetchRows;
  Body body, orelse;
  int yield = -1, elseYield = -1;
  // Store: the comprehension's buffer (its element at `indices` gets `yield`).
  int buffer = -1;
  // interchange.cpp's columns of a triangle's adjoint, the last statement of the branch its
  // choice made: no other statement of that branch touches an element they add into, and
  // they only add (the branch's condition proves it), so they may run after later iterations
  // of the loops around them (tail.hpp).
  bool deferrable = false;
};

/// Where a tensor value lives.
struct Buffer {
  enum Place { Param, Result, Temp } place = Temp;
  int slot = -1;       // Param: its position; Result: which result
  bool inLoop = false; // allocated inside a loop or branch: one buffer kept across iterations
  int entry = -1;      // Temp: its entry in the call's workspace (planWorkspace); temporaries
                       // whose lives do not overlap share one
};

struct Function {
  // The Tensor IR function's signature and value types (its body's instructions cleared: the
  // body is below). Passes that make values append their types here.
  ir::Function src;
  Body body;
  std::map<int, Buffer> buffers; // every tensor value (rank > 0) by its Tensor IR value id
  // Values used outside the loop or branch that defines them (reverse mode's sweep reads, in
  // its `if` on the same condition, the tapes a forward branch made). A backend keeps each in
  // one slot per call; a loop that defines one is sequential (the slot holds the last
  // iteration's value).
  std::set<int> escaping;
  int entries = 0; // workspace entries (planWorkspace)
};

/// Calls fn on every statement of b, nested ones included (a loop or if before its body); b
/// const or not, and fn gets the statements as b has them.
template <class BodyT, class Fn> void forEachStmt(BodyT& b, Fn&& fn);
/// Calls fn on every statement nested in s (not s itself): a tiled nest's head, its body, an
/// if's else, a tiled nest's tail, in the order they run.
template <class StmtT, class Fn> void forEachNested(StmtT& s, Fn&& fn) {
  forEachStmt(s.tileHead, fn);
  forEachStmt(s.body, fn);
  forEachStmt(s.orelse, fn);
  forEachStmt(s.tileTail, fn);
}
template <class BodyT, class Fn> void forEachStmt(BodyT& b, Fn&& fn) {
  for (auto& s : b) {
    fn(s);
    forEachNested(s, fn);
  }
}

/// Calls rewrite(loop, pre) on every loop of b, inner ones first; when it returns true (it
/// rewrote the loop), the statements it put in `pre` go right before the loop. Returns how
/// many loops it rewrote.
int rewriteLoops(Body& b, const std::function<bool(Stmt& loop, Body& pre)>& rewrite);

/// The names of the sizes bound in b (size.def), nested statements included.
std::set<std::string> boundSizes(const Body& b);

/// Whether a loop with extent e checks it where it runs (codegen: a size bound in the
/// function, or one not provably non-negative, fails the call when negative).
bool extentCanFail(const Poly& e);

/// stem + a number, the first not in `taken` from `next` on; taken and next are updated.
std::string uniqueSizeName(const std::string& stem, int& next, std::set<std::string>& taken);

/// For a copy of statements: a fresh id in `rename` for every value they define (results,
/// except a comprehension's, which is its buffer and stays the one from outside, and the
/// indices of loops), in statement order; renameValues then applies them.
void freshDefinitions(Function& f, const Body& b, std::map<int, int>& rename);
/// Maps every value the statements of b define or use through rename (ids not in it stay).
void renameValues(Body& b, const std::map<int, int>& rename);
/// A copy of the statements of b to go elsewhere in the same function: every value they
/// define gets a fresh id (freshDefinitions; also each value of `also`, a loop index around b,
/// say), and every size they bind a fresh name (its name + "r" + a number, uniqueSizeName),
/// with the extents, types and buffers that mention them updated. `rename` gets the new ids.
Body copyFresh(Function& f, const Body& b, const std::vector<int>& also, std::map<int, int>& rename,
               int& next, std::set<std::string>& taken);
/// A scalar statement `op args` at loc (a literal's ival, a size's poly), with no result.
Stmt scalarStmt(ir::Op op, std::vector<int> args, SrcRange loc, int64_t ival = 0,
                const Poly& poly = Poly());
/// The same with a fresh result of type t (rank 0), appended to b; the result's id.
int emitScalar(Function& f, Body& b, DType t, ir::Op op, std::vector<int> args, SrcRange loc,
               int64_t ival = 0, const Poly& poly = Poly());
/// `size.def name = value` appended to b; the size as a polynomial (for an extent).
Poly bindSize(Body& b, const std::string& name, int value, SrcRange loc);
/// A fresh id of v's type for v in rename, unless it has one.
void freshValue(Function& f, int v, std::map<int, int>& rename);
/// Whether b is straight-line code that a vector loop can run: scalars and stores only.
bool straightLine(const Body& b);

/// Blocks of a blocked loop (Stmt::blocked) over first index extent n, whose loop nest runs
/// `iters` iterations (Stmt::work) and whose partial buffers hold
/// `partialElems` elements (`partialBytes` bytes) in all: at most kMaxBlocks, at most n, few
/// enough that zeroing and adding the partials (blocks * partialElems) costs no more than
/// the iterations, and at most kMaxPartialBytes of partials. Under 2: the loop runs as it is,
/// with no partials. Computed in doubles, as the generated code computes it.
constexpr int64_t kMaxBlocks = 64;
constexpr double kMaxPartialBytes = 8.0 * 1024 * 1024;
int64_t scatterBlocks(int64_t n, double iters, double partialElems, double partialBytes);

/// Every literal of the function by its value id (its ival: an integer's or a bool's value).
std::map<int, int64_t> integerLiterals(const Function& f);

/// What a statement does to a buffer element, if it touches one: a comprehension's store
/// (its indices), a load, a buf.store or a buf.add (in.args: the buffer, the subscripts, then
/// for the writes the value).
struct Access {
  enum Kind { Read, Write, Add } kind = Read;
  int buffer = -1;
  std::vector<int> subscripts;
  bool writes() const { return kind != Read; }
};
std::optional<Access> accessOf(const Stmt& s);

/// The position at which index value ix is the subscript in every one of the accesses (each
/// a list of subscripts), the first if several: two iterations with different ix then never
/// reach one element through them, so they may run in any order. The one test behind a
/// parallel loop (the Lowerer), blocks of a scatter (planBlocks), fused nests (fuse) and rows
/// made parallel (markIndependentLoops). None for no accesses.
std::optional<size_t> fixedSubscript(int ix, const std::vector<const std::vector<int>*>& accesses);

/// Whether a parallel vector loop's accesses keep their order within an iteration when LLVM
/// is told its iterations are independent (codegen's `llvm.loop.parallel_accesses`): every
/// buffer the body writes and touches more than once (other than one the body makes) is
/// accessed only at subscripts consecutive in the loop (consecutiveIn), or written once after
/// all its reads. LLVM's loop vectoriser, grouping the strided accesses of a loop so marked,
/// orders them as if no two accesses of one iteration met: it moved a load above a store to
/// the same element (random program seed 128833; fuse.cpp). Consecutive accesses are widened
/// one at a time, in program order. Where this is false, codegen leaves the loop unmarked
/// (`--emit loops` prints `unmarked`), and LLVM vectorises it only where it proves that safe.
bool accessesKeepOrder(const Stmt& loop);
/// Whether subscripts (of an access in loop's body) reach consecutive elements as the loop's
/// innermost index steps: that index is the last subscript and no other, and its extent is
/// not a literal (LLVM may unroll a literal few trips whole and vectorise the loop around
/// them, where the same access is strided).
bool consecutiveIn(const Stmt& loop, const std::vector<int>& subs);

/// Marks every parallel vector loop nested in another loop `few` (Stmt::fewTrips): its trip
/// count is a row's (d = 10 in the GMM, b = 14 in the LSTM), and LLVM's default of four
/// vectors interleaved leaves any row under 32 elements (AVX-512, f64) to the scalar
/// remainder. Measured: docs/benchmarks.md, "Inner loops one vector at a time".
void markFewTrips(Function& f);

/// Marks parallel and vectorisable every sequential straight-line loop over one index, nested
/// in another loop, whose iterations share nothing but memory (Stmt::memoryOnly) and touch
/// disjoint elements: each buffer the body writes, at every access in it, has the loop's index
/// as one subscript at one fixed position. Fusion leaves such loops sequential when the nest
/// they came from was (the GMM adjoint's row of d inside its nest over points and components,
/// which adds into component k's gradient at [k, j]); iterations that touch different elements
/// give the same bits in any order, and LLVM then vectorises the row without the run-time
/// overlap checks that kept rows under 25 scalar. Returns how many loops it marked.
int markIndependentLoops(Function& f);

/// x when `sel` is max(x, 0) as the front end writes it, select(gt(x, 0), x, 0); else -1.
/// `def`: the instruction that defines a value, or nullptr where it is not at hand (the pass
/// looks in one loop body). `literals`: integerLiterals(f).
int maxWithZeroOf(const ir::Instr& sel, const std::function<const ir::Instr*(int)>& def,
                  const std::map<int, int64_t>& literals);

/// Whether running the scalar instruction `in` can fail the call (return an error code): a
/// float -> i64 conversion (out of range), an integer division or modulo whose divisor is not
/// a non-zero literal, an integer power whose exponent is not a non-negative literal (0 to a
/// negative power), an access whose subscripts are not proven in range. `literals`:
/// integerLiterals(f).
bool canFail(const ir::Instr& in, const ir::Function& f, const std::map<int, int64_t>& literals);

/// Whether the scalar instruction `in` costs far more than a load (a transcendental, a float
/// division): work worth a table (hoist.cpp) or a loop of its own (split.cpp).
bool costly(const ir::Instr& in, const ir::Function& f);

/// Splits parallel loops over j whose body has a triangular sum `sum[c: j]` at the row length
/// where the sum's order changes (lower.cpp, "short rows"): the sums of the rows below it
/// become Stmt::shortRow. Returns how many loops it split.
int splitShortRows(Function& f);

/// Choices of the Loop IR passes that tests change.
struct LowerOptions {
  // The fewest columns (of the last row) for which a triangular sum runs in column order
  // (interchange.hpp): 7, the fewest for which eight rows of a block can exist (rows with 0
  // to 7 columns). Fewer: no block runs, and the rows' own loop pays only the checks (GMM
  // objective at d = 6: +0.6 % from 2). From 7 on the blocks win: GMM objective instructions
  // at d = 8, 10, 16 fall 39 %, 21 %, 52 % against a threshold of 16 (docs/benchmarks.md).
  // Tests lower it so that random programs, whose sizes are small, run the column form.
  int64_t minTriangleColumns = 7;
  // The same for a triangle's adjoint, whose additions run column by column (the scatter form
  // of interchange.hpp). The rows' form keeps a loop per row with little work in it; the
  // column form wins from 2 columns on (GMM gradient instructions at 2,000 points, K = 25:
  // -1.3 % at d = 3, -6 % at d = 6, -11 % at d = 10; docs/benchmarks.md).
  int64_t minScatterColumns = 2;
  // Rows of a nest's first index per tile (tile.hpp); 0: no nest runs in tiles. Tests compare
  // the bits of other tile sizes with row order's.
  int64_t tileRows = 16;
};

/// Tensor IR -> Loop IR, with the Loop IR passes (hoisting) applied.
Function lower(const ir::Function& f, const LowerOptions& options = {});

/// The Loop IR as text (`slopec grad --emit loops`).
std::string print(const Function& f);

} // namespace slope::lower
