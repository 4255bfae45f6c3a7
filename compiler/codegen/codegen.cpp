// Loop IR -> LLVM IR (compiler/lower decides; this file translates).
//
// Each loop becomes a counted loop nest; scalar ops become LLVM instructions or libm calls;
// tensors are plain row-major buffers. The entry point has the C ABI of abi.h and unpacks its
// arguments into an internal function whose tensor parameters are `noalias`, so that LLVM's
// loop vectoriser can take the loops. Temporaries live in the call's workspace (Gen::workspace,
// docs/architecture.md "Workspaces"): each allocation site has an entry holding a buffer kept
// from one call to the next, and from one iteration of a loop to the next, grown when a call
// or an iteration needs more, so a steady-state call neither allocates nor faults a page in.
// The exit path gives the workspace back, also after an error in the middle of a loop. Checks
// (subscripts not proven at compile time, integer division, computed extents) branch to a
// cold block that records the site and returns an error code.

#include "compiler/codegen/codegen_internal.hpp"
#include "compiler/lower/loop_ir.hpp"
#include "compiler/support/checked.hpp"
#include "compiler/support/reduce_order.hpp"
#include "compiler/support/special.hpp"
#include "compiler/support/thread_pool.hpp"
#include "compiler/support/vmath.hpp"

#include <llvm/Analysis/ValueTracking.h>
#include <llvm/IR/BasicBlock.h>
#include <llvm/IR/ConstantFolder.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/MDBuilder.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Support/raw_ostream.h>

#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace slope::codegen {
namespace {

/// The most noalias pointer parameters (tensor parameters and results) for which the internal
/// function is inlined into the entry point (see Gen::run).
constexpr size_t kMaxInlinedNoalias = 32;
/// The most arguments the internal function takes one by one (see Gen::run); past it, its
/// scalars and sizes come through the entry point's arrays.
constexpr size_t kMaxImplArgs = 64;
/// The deepest loop nest one region becomes (see Gen::loopNest).
constexpr size_t kMaxLoopDepth = 8;
/// The elements of a reduction's row whose values are computed into a block before they go
/// into the lanes (see Gen::orderedReduce): 2 KiB of f64 on the stack, a multiple of kLanes.
constexpr uint64_t kLaneBlock = 256;
/// Workspaces a module keeps (Gen::workspace): this many threads calling the function at once
/// reuse memory from call to call; more threads' calls allocate and free as they go.
constexpr uint64_t kPoolSize = 16;
/// Busy flags per cache line's worth of i32s: one flag per line.
constexpr uint64_t kFlagStride = 16;
/// Chunks a parallel loop nest's outer index is cut into (Gen::outlineLoop): enough for the
/// threads of a large machine to balance, few enough that a chunk's call costs nothing. The
/// bounds depend on the extent only, so every thread count computes the same chunks.
constexpr int64_t kLoopChunks = 64;
/// Workers of one parallel loop: temporaries inside it have this many workspace entries.
constexpr int64_t kMaxWorkers = kMaxThreads;

using ir::Block;
using ir::Instr;
using ir::Op;

/// The libm function a float op's lowering computes through (Gen::unary: a call, or for exp,
/// log, sin and cos an LLVM intrinsic), or null: what vectorMath may replace by libmvec.
/// Sigmoid and softplus are made of exp (softplus also of log1p).
const char* libmFunction(Op op) {
  switch (op) {
  case Op::Exp:
  case Op::Sigmoid:
  case Op::Softplus: return "exp";
  case Op::Log: return "log";
  case Op::Sin: return "sin";
  case Op::Cos: return "cos";
  case Op::Log1p: return "log1p";
  case Op::Expm1: return "expm1";
  case Op::Tan: return "tan";
  case Op::Asin: return "asin";
  case Op::Acos: return "acos";
  case Op::Atan: return "atan";
  case Op::Sinh: return "sinh";
  case Op::Cosh: return "cosh";
  case Op::Tanh: return "tanh";
  case Op::Erf: return "erf";
  default: return nullptr;
  }
}

/// The IR builder's folder: constants as LLVM's default folder folds them, and the integer
/// identities x + 0, x - 0, x * 1, x * 0 and selects on a constant, which indexing code makes
/// many of (a flat index starts at 0, a unit stride multiplies by 1): LLVM is handed fewer
/// instructions to optimise. Nothing that looks through a value (InstSimplifyFolder would
/// look through a loop's phi before its back edge is added, and fold `i < n` to true).
class IdentityFolder final : public llvm::IRBuilderFolder {
  llvm::ConstantFolder cf_;
  static bool is(llvm::Value* v, uint64_t k) {
    auto* c = llvm::dyn_cast<llvm::ConstantInt>(v);
    return c && c->getValue() == k;
  }
  static llvm::Value* identity(llvm::Instruction::BinaryOps op, llvm::Value* l, llvm::Value* r) {
    if (!l->getType()->isIntegerTy()) return nullptr;
    switch (op) {
    case llvm::Instruction::Add: return is(l, 0) ? r : is(r, 0) ? l : nullptr;
    case llvm::Instruction::Sub: return is(r, 0) ? l : nullptr;
    case llvm::Instruction::Mul:
      if (is(l, 0) || is(r, 0)) return llvm::ConstantInt::get(l->getType(), 0);
      return is(l, 1) ? r : is(r, 1) ? l : nullptr;
    default: return nullptr;
    }
  }

public:
  llvm::Value* FoldBinOp(llvm::Instruction::BinaryOps op, llvm::Value* l,
                         llvm::Value* r) const override {
    if (llvm::Value* v = cf_.FoldBinOp(op, l, r)) return v;
    return identity(op, l, r);
  }
  llvm::Value* FoldExactBinOp(llvm::Instruction::BinaryOps op, llvm::Value* l, llvm::Value* r,
                              bool exact) const override {
    return cf_.FoldExactBinOp(op, l, r, exact);
  }
  llvm::Value* FoldNoWrapBinOp(llvm::Instruction::BinaryOps op, llvm::Value* l, llvm::Value* r,
                               bool nuw, bool nsw) const override {
    if (llvm::Value* v = cf_.FoldNoWrapBinOp(op, l, r, nuw, nsw)) return v;
    return identity(op, l, r);
  }
  llvm::Value* FoldBinOpFMF(llvm::Instruction::BinaryOps op, llvm::Value* l, llvm::Value* r,
                            llvm::FastMathFlags fmf) const override {
    return cf_.FoldBinOpFMF(op, l, r, fmf);
  }
  llvm::Value* FoldUnOpFMF(llvm::Instruction::UnaryOps op, llvm::Value* v,
                           llvm::FastMathFlags fmf) const override {
    return cf_.FoldUnOpFMF(op, v, fmf);
  }
  llvm::Value* FoldCmp(llvm::CmpInst::Predicate p, llvm::Value* l, llvm::Value* r) const override {
    return cf_.FoldCmp(p, l, r);
  }
  llvm::Value* FoldGEP(llvm::Type* ty, llvm::Value* ptr, llvm::ArrayRef<llvm::Value*> idx,
                       llvm::GEPNoWrapFlags nw) const override {
    return cf_.FoldGEP(ty, ptr, idx, nw);
  }
  llvm::Value* FoldSelect(llvm::Value* c, llvm::Value* t, llvm::Value* f) const override {
    if (llvm::Value* v = cf_.FoldSelect(c, t, f)) return v;
    if (auto* k = llvm::dyn_cast<llvm::ConstantInt>(c)) return k->isOne() ? t : f;
    return nullptr;
  }
  llvm::Value* FoldExtractValue(llvm::Value* a, llvm::ArrayRef<unsigned> idx) const override {
    return cf_.FoldExtractValue(a, idx);
  }
  llvm::Value* FoldInsertValue(llvm::Value* a, llvm::Value* v,
                               llvm::ArrayRef<unsigned> idx) const override {
    return cf_.FoldInsertValue(a, v, idx);
  }
  llvm::Value* FoldExtractElement(llvm::Value* v, llvm::Value* i) const override {
    return cf_.FoldExtractElement(v, i);
  }
  llvm::Value* FoldInsertElement(llvm::Value* v, llvm::Value* e, llvm::Value* i) const override {
    return cf_.FoldInsertElement(v, e, i);
  }
  llvm::Value* FoldShuffleVector(llvm::Value* a, llvm::Value* b,
                                 llvm::ArrayRef<int> mask) const override {
    return cf_.FoldShuffleVector(a, b, mask);
  }
  llvm::Value* FoldCast(llvm::Instruction::CastOps op, llvm::Value* v,
                        llvm::Type* ty) const override {
    return cf_.FoldCast(op, v, ty);
  }
  llvm::Value* FoldBinaryIntrinsic(llvm::Intrinsic::ID id, llvm::Value* l, llvm::Value* r,
                                   llvm::Type* ty, llvm::Instruction* fmf) const override {
    return cf_.FoldBinaryIntrinsic(id, l, r, ty, fmf);
  }
  llvm::Value* CreatePointerCast(llvm::Constant* c, llvm::Type* ty) const override {
    return cf_.CreatePointerCast(c, ty);
  }
  llvm::Value* CreatePointerBitCastOrAddrSpaceCast(llvm::Constant* c,
                                                   llvm::Type* ty) const override {
    return cf_.CreatePointerBitCastOrAddrSpaceCast(c, ty);
  }
};

/// Every builder of codegen folds as IdentityFolder does.
using Builder = llvm::IRBuilder<IdentityFolder>;

class Gen {
public:
  Gen(const lower::Function& lf, llvm::LLVMContext& ctx, std::vector<Site>& sites,
      const JitOptions& opt)
      : lf_(lf), f_(lf.src), opt_(opt), ctx_(ctx), B_(ctx), sites_(sites) {
    mod_ = std::make_unique<llvm::Module>(f_.name, ctx);
    for (const auto& [v, b] : lf.buffers)
      if (b.place == lower::Buffer::Temp) ++entryUsers_[b.entry];
  }

  std::unique_ptr<llvm::Module> run();

private:
  // --- types -------------------------------------------------------------------------------
  llvm::Type* elemTy(DType t) {
    switch (t) {
    case DType::F32: return B_.getFloatTy();
    case DType::F64: return B_.getDoubleTy();
    case DType::I64: return B_.getInt64Ty();
    case DType::Bool: return B_.getInt8Ty(); // in memory
    }
    return B_.getDoubleTy();
  }
  llvm::Type* scalarTy(DType t) { return t == DType::Bool ? B_.getInt1Ty() : elemTy(t); }
  llvm::Value* i64(int64_t v) { return B_.getInt64(static_cast<uint64_t>(v)); }

  // --- extents -----------------------------------------------------------------------------
  /// Whether p mentions a size bound inside the function (size.def: a data-dependent trip
  /// count), which lives in a slot rather than on entry.
  bool dynamic(const Poly& p) const {
    for (const auto& n : p.names())
      if (dynSlots_.count(n) || outerDynSlots_.count(n)) return true;
    return false;
  }
  /// The slot of size n, bound by size.def; in a chunk, a size bound outside it is read once,
  /// on the chunk's entry, into a slot of the chunk's own. (Read through the outer slot's
  /// pointer, it would be read again after every store LLVM cannot tell apart from it: a
  /// buffer's row length, reloaded in the innermost loop, keeps the loop from vectorising.)
  llvm::AllocaInst* dynSlot(const std::string& n) {
    auto slot = dynSlots_.find(n);
    if (slot != dynSlots_.end()) return slot->second;
    auto outer = outerDynSlots_.find(n);
    if (outer == outerDynSlots_.end()) return nullptr;
    llvm::AllocaInst* outerSlot = outer->second;
    return dynSlots_[n] = entrySlot(B_.getInt64Ty(), "size", [&](Builder& E) {
             return E.CreateLoad(E.getInt64Ty(), outerSlot);
           });
  }
  llvm::Value* poly(const Poly& p) {
    std::string key = p.str();
    if (dynamic(p)) {
      // A trip count bound in the function: computed where it is used, from its slot.
      llvm::Value* acc = i64(0);
      for (const auto& [mono, c] : p.terms()) {
        llvm::Value* term = i64(c);
        for (const auto& n : mono) {
          llvm::AllocaInst* slot = dynSlot(n);
          llvm::Value* v = slot ? B_.CreateLoad(B_.getInt64Ty(), slot) : sizeArg(n);
          term = B_.CreateMul(term, v);
        }
        acc = B_.CreateAdd(acc, term);
      }
      return acc;
    }
    auto it = polyCache_.find(key);
    if (it != polyCache_.end()) return it->second;
    // Computed in the entry block, so it dominates every use.
    Builder E(ctx_);
    E.SetInsertPoint(entryBlock_, std::prev(entryBlock_->end()));
    llvm::Value* acc = E.getInt64(0);
    for (const auto& [mono, c] : p.terms()) {
      llvm::Value* term = E.getInt64(static_cast<uint64_t>(c));
      for (const auto& n : mono)
        term = E.CreateMul(term, sizeArg(n));
      acc = E.CreateAdd(acc, term);
    }
    polyCache_[key] = acc;
    return acc;
  }
  llvm::Value* sizeArg(const std::string& n) {
    auto it = sizeVals_.find(n);
    if (it == sizeVals_.end()) throw std::logic_error("codegen: unbound size " + n);
    return it->second;
  }
  /// Extents of a region, with a check that computed ones are not negative.
  std::vector<llvm::Value*> extents(const std::vector<Poly>& ps, SrcRange loc) {
    std::vector<llvm::Value*> out;
    for (const Poly& p : ps) {
      llvm::Value* e = poly(p);
      // A trip count bound in the function is negative when its hi - lo overflowed.
      bool tripCount = dynamic(p);
      if (!p.provablyNonNegative() || tripCount) {
        int site = addSite(tripCount ? kTripCountSite : "", loc);
        sites_[site].extent = p.str();
        check(B_.CreateICmpSGE(e, i64(0)), SLOPE_ERR_EXTENT, site, 0, e, i64(0));
      }
      out.push_back(e);
    }
    return out;
  }
  /// The bytes of a buffer of type t, checked as compiler/support/checked.hpp checks sizes:
  /// a negative extent, an element or byte count that overflows i64, or more bytes than the
  /// machine has (measured when the code is generated) fail the call with SLOPE_ERR_SIZE and
  /// the bytes needed (-1: overflow) before anything is allocated.
  llvm::Value* checkedBytes(const ir::Type& t, SrcRange loc) {
    llvm::Value* n = i64(1);
    llvm::Value* overflow = B_.getFalse();
    auto mulChecked = [&](llvm::Value* a, llvm::Value* b) {
      llvm::Value* r = B_.CreateBinaryIntrinsic(llvm::Intrinsic::smul_with_overflow, a, b);
      overflow = B_.CreateOr(overflow, B_.CreateExtractValue(r, 1));
      return B_.CreateExtractValue(r, 0);
    };
    for (const Poly& p : t.shape) {
      llvm::Value* e = poly(p);
      overflow = B_.CreateOr(overflow, B_.CreateICmpSLT(e, i64(0)));
      n = mulChecked(n, e);
    }
    llvm::Value* bytes = mulChecked(n, i64(static_cast<int64_t>(dtypeSize(t.dtype))));
    llvm::Value* shown = B_.CreateSelect(overflow, i64(-1), bytes);
    llvm::Value* fits = B_.CreateAnd(B_.CreateNot(overflow),
                                     B_.CreateICmpSLE(bytes, i64(checked::physicalMemory())));
    check(fits, SLOPE_ERR_SIZE, addSite("", loc), 0, shown, i64(checked::physicalMemory()));
    return bytes;
  }
  llvm::Value* numel(const ir::Type& t) {
    llvm::Value* n = i64(1);
    for (const Poly& p : t.shape)
      n = B_.CreateMul(n, poly(p));
    return n;
  }
  /// t's bytes (no overflow check: for a buffer already allocated, whose size was checked).
  llvm::Value* bytesOf(const ir::Type& t) {
    return B_.CreateMul(numel(t), i64(static_cast<int64_t>(dtypeSize(t.dtype))));
  }

  // --- errors ------------------------------------------------------------------------------
  int addSite(const std::string& tensor, SrcRange loc) {
    sites_.push_back({tensor, loc, {}});
    return static_cast<int>(sites_.size()) - 1;
  }
  /// Continues when ok is true; otherwise records the error and leaves through cleanup.
  void check(llvm::Value* ok, int code, int site, int dim, llvm::Value* index,
             llvm::Value* extent) {
    if (auto* c = llvm::dyn_cast<llvm::ConstantInt>(ok); c && c->isOne()) return; // (holds)
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* fail = llvm::BasicBlock::Create(ctx_, "fail", fn);
    auto* cont = llvm::BasicBlock::Create(ctx_, "ok", fn);
    auto* w = llvm::MDBuilder(ctx_).createBranchWeights(1 << 20, 1);
    B_.CreateCondBr(ok, cont, fail, w);
    B_.SetInsertPoint(fail);
    llvm::Type* errTy = errType();
    auto field = [&](unsigned k) { return B_.CreateStructGEP(errTy, errArg_, k); };
    B_.CreateStore(B_.getInt32(code), field(0));
    B_.CreateStore(B_.getInt32(site), field(1));
    B_.CreateStore(B_.getInt32(dim), field(2));
    B_.CreateStore(B_.CreateSExtOrTrunc(index, B_.getInt64Ty()), field(4));
    B_.CreateStore(B_.CreateSExtOrTrunc(extent, B_.getInt64Ty()), field(5));
    B_.CreateStore(B_.getInt32(code), codeSlot_);
    B_.CreateBr(cleanup_);
    B_.SetInsertPoint(cont);
  }
  llvm::StructType* errType() {
    if (!errTy_)
      errTy_ = llvm::StructType::get(ctx_, {B_.getInt32Ty(), B_.getInt32Ty(), B_.getInt32Ty(),
                                            B_.getInt32Ty(), B_.getInt64Ty(), B_.getInt64Ty()});
    return errTy_;
  }

  // --- memory ------------------------------------------------------------------------------
  llvm::AllocaInst* entryAlloca(llvm::Type* t, const char* name) {
    Builder E(ctx_);
    E.SetInsertPoint(entryBlock_, entryBlock_->begin());
    return E.CreateAlloca(t, nullptr, name);
  }
  /// An entry-block slot set on entry to what init makes (with a builder at the entry block's
  /// end), whatever path the code takes to its uses.
  llvm::AllocaInst* entrySlot(llvm::Type* t, const char* name,
                              const std::function<llvm::Value*(Builder&)>& init) {
    llvm::AllocaInst* slot = entryAlloca(t, name);
    Builder E(ctx_);
    E.SetInsertPoint(entryBlock_, std::prev(entryBlock_->end()));
    E.CreateStore(init(E), slot);
    return slot;
  }
  /// A buffer for the temporary `value` of type ty (zeroed if asked) from its entry in the
  /// call's workspace (lower::planWorkspace; see workspace()): the entry's buffer from an
  /// earlier call, an earlier iteration of the enclosing loop or an earlier temporary whose
  /// life has ended, when it is large enough; a new one otherwise. Nothing still reads it:
  /// the IR's values do not outlive the iteration that made them, and entries are shared only
  /// by lives that do not overlap.
  llvm::Value* allocate(int value, const ir::Type& ty, bool zero, SrcRange loc) {
    const lower::Buffer& b = lf_.buffers.at(value);
    llvm::Value* bytes = checkedBytes(ty, loc);
    bytes = B_.CreateSelect(B_.CreateICmpEQ(bytes, i64(0)), i64(1), bytes);
    // Inside a chunk of a parallel loop, each worker has its own copy of the entry.
    auto rep = replicaBase_.find(b.entry);
    llvm::Value* entry = worker_ && rep != replicaBase_.end()
                             ? B_.CreateAdd(i64(rep->second), worker_)
                             : i64(b.entry);
    // Only a buffer that is its entry's one dynamic instance in a call is malloc-like.
    bool sole = !b.inLoop && entryUsers_[b.entry] == 1;
    return take(entry, bytes, zero, sole);
  }
  /// Whether t's shape is the same wherever it is computed in a call: it names the function's
  /// sizes only, none bound by size.def.
  bool staticShape(const ir::Type& t) const {
    for (const Poly& d : t.shape)
      for (const auto& n : d.names())
        if (n[0] == '#') return false;
    return true;
  }
  /// A temporary of a loop's body whose extents are small literals (a 3-vector, forward mode's
  /// lanes of one: [3, K]): an array in the entry block of the function being generated,
  /// the same memory in every iteration as a workspace entry would be (the IR's values do
  /// not outlive their iteration), but one LLVM sees whole: where its accesses have constant
  /// indices (loops over literal extents unroll), SROA keeps it in registers, without the
  /// workspace's call, memset, gathers and scatters. Null where it does not fit: at most
  /// kStackBufferBytes each, kStackFrameBytes per function. ADBench BA ba1's objective, whose
  /// rotation and projection are 3-vectors: 13.98M -> 9.45M instructions
  /// (`slope_instructions ba-objective`), 1.51 -> 0.89 ms.
  llvm::Value* stackBuffer(const ir::Type& t) {
    constexpr int64_t kStackBufferBytes = 2048, kStackFrameBytes = 32768;
    int64_t n = 1;
    for (const Poly& d : t.shape) {
      std::optional<int64_t> c = d.constValue();
      if (!c || *c < 0) return nullptr;
      n *= *c;
      if (n > kStackBufferBytes) return nullptr;
    }
    const int64_t bytes = std::max<int64_t>(n, 1) * static_cast<int64_t>(dtypeSize(t.dtype));
    int64_t& used = stackBytes_[entryBlock_];
    if (bytes > kStackBufferBytes || used + bytes > kStackFrameBytes) return nullptr;
    used += bytes;
    llvm::AllocaInst* a = entryAlloca(
        llvm::ArrayType::get(elemTy(t.dtype), static_cast<uint64_t>(std::max<int64_t>(n, 1))),
        "small");
    a->setAlignment(llvm::Align(32));
    return a;
  }
  /// allocate() for a temporary of a loop's body with a static shape (a scratch row): its
  /// entry is its own (planWorkspace) and its size the same in every iteration, so the buffer
  /// taken in the first iteration is the one every later iteration would take. Taken once
  /// per call of the function being generated (a chunk's: on its worker's copy) and kept in
  /// a slot; an iteration then costs a test, not a call (plus a memset when zeroed). GMM 10k
  /// d10 K25 objective, whose qx row is one: 223.2M -> 219.9M instructions; LSTM gradient,
  /// whose sequential loops take 12 rows per step: 11.59M -> 11.31M.
  llvm::Value* allocateOnce(int value, const ir::Type& ty, bool zero, SrcRange loc) {
    llvm::AllocaInst* slot = entrySlot(B_.getPtrTy(), "scratch", [](Builder& E) {
      return llvm::ConstantPointerNull::get(E.getPtrTy());
    });
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* takeBB = llvm::BasicBlock::Create(ctx_, "scratch.take", fn);
    auto* haveBB = llvm::BasicBlock::Create(ctx_, "scratch.have", fn);
    llvm::Value* had = B_.CreateLoad(B_.getPtrTy(), slot);
    llvm::BasicBlock* from = B_.GetInsertBlock();
    B_.CreateCondBr(B_.CreateIsNull(had), takeBB, haveBB);
    B_.SetInsertPoint(takeBB);
    llvm::Value* got = allocate(value, ty, false, loc);
    B_.CreateStore(got, slot);
    llvm::BasicBlock* took = B_.GetInsertBlock();
    B_.CreateBr(haveBB);
    B_.SetInsertPoint(haveBB);
    llvm::PHINode* p = B_.CreatePHI(B_.getPtrTy(), 2);
    p->addIncoming(had, from);
    p->addIncoming(got, took);
    if (zero) B_.CreateMemSet(p, B_.getInt8(0), bytesOf(ty), llvm::MaybeAlign(8));
    return p;
  }
  /// The buffer of workspace entry `entry`, at least `bytes` long (zeroed if asked).
  llvm::Value* take(llvm::Value* entry, llvm::Value* bytes, bool zero, bool sole) {
    llvm::Value* site =
        B_.CreateInBoundsGEP(siteType(), B_.CreateLoad(B_.getPtrTy(), wsBase_), entry);
    llvm::Value* p = B_.CreateCall(takeFn(sole), {site, bytes, B_.getInt1(zero)});
    check(B_.CreateIsNotNull(p), SLOPE_ERR_NO_MEMORY, addSite("", {}), 0, i64(0), i64(0));
    return p;
  }
  /// A workspace entry: its buffer and the buffer's bytes.
  llvm::StructType* siteType() {
    if (!siteTy_) siteTy_ = llvm::StructType::get(ctx_, {B_.getPtrTy(), B_.getInt64Ty()});
    return siteTy_;
  }
  /// `ptr take(ptr entry, i64 bytes, i1 zero)`: the entry's buffer, grown to bytes if smaller
  /// (null when malloc fails; the entry then holds nothing), zeroed if asked. Not inlined.
  /// `sole`: the result is marked noalias, as malloc's is, so that LLVM keeps knowing that
  /// temporaries do not overlap; only for an entry that one allocation uses once per call
  /// (two results of one entry in a call are the same memory, which noalias would deny).
  llvm::Function* takeFn(bool sole) {
    llvm::Function*& fn = sole ? takeSoleFn_ : takeFn_;
    if (fn) return fn;
    auto* ty = llvm::FunctionType::get(B_.getPtrTy(),
                                       {B_.getPtrTy(), B_.getInt64Ty(), B_.getInt1Ty()}, false);
    fn = llvm::Function::Create(ty, llvm::Function::InternalLinkage,
                                f_.name + (sole ? ".take.sole" : ".take"), mod_.get());
    if (sole) fn->setReturnDoesNotAlias();
    fn->addFnAttr(llvm::Attribute::NoInline);
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    Builder T(ctx_);
    auto* entry = llvm::BasicBlock::Create(ctx_, "entry", fn);
    auto* grow = llvm::BasicBlock::Create(ctx_, "grow", fn);
    auto* reuse = llvm::BasicBlock::Create(ctx_, "reuse", fn);
    auto* clear = llvm::BasicBlock::Create(ctx_, "clear", fn);
    auto* done = llvm::BasicBlock::Create(ctx_, "done", fn);
    llvm::Value *site = fn->getArg(0), *bytes = fn->getArg(1), *zero = fn->getArg(2);
    T.SetInsertPoint(entry);
    llvm::Value* ptrField = T.CreateStructGEP(siteType(), site, 0);
    llvm::Value* capField = T.CreateStructGEP(siteType(), site, 1);
    llvm::Value* old = T.CreateLoad(T.getPtrTy(), ptrField);
    T.CreateCondBr(T.CreateICmpUGT(bytes, T.CreateLoad(T.getInt64Ty(), capField)), grow, reuse);
    T.SetInsertPoint(grow);
    // The old contents are dead: free and allocate (no copy). The site is consistent before
    // malloc can fail: it holds nothing until the new buffer is stored.
    T.CreateCall(freeFn(), {old});
    T.CreateStore(llvm::ConstantPointerNull::get(T.getPtrTy()), ptrField);
    T.CreateStore(T.getInt64(0), capField);
    auto* zeroed = llvm::BasicBlock::Create(ctx_, "calloc", fn);
    auto* plain = llvm::BasicBlock::Create(ctx_, "malloc", fn);
    auto* got = llvm::BasicBlock::Create(ctx_, "got", fn);
    T.CreateCondBr(zero, zeroed, plain);
    T.SetInsertPoint(zeroed);
    llvm::Value* z = T.CreateCall(callocFn(), {bytes, T.getInt64(1)});
    T.CreateBr(got);
    T.SetInsertPoint(plain);
    llvm::Value* m = T.CreateCall(mallocFn(), {bytes});
    T.CreateBr(got);
    T.SetInsertPoint(got);
    llvm::PHINode* fresh = T.CreatePHI(T.getPtrTy(), 2);
    fresh->addIncoming(z, zeroed);
    fresh->addIncoming(m, plain);
    T.CreateStore(fresh, ptrField);
    T.CreateStore(T.CreateSelect(T.CreateIsNull(fresh), T.getInt64(0), bytes), capField);
    T.CreateRet(fresh);
    T.SetInsertPoint(reuse);
    T.CreateCondBr(zero, clear, done);
    T.SetInsertPoint(clear);
    T.CreateMemSet(old, T.getInt8(0), bytes, llvm::MaybeAlign(1));
    T.CreateBr(done);
    T.SetInsertPoint(done);
    T.CreateRet(old);
    return fn;
  }
  /// Sets up the call's workspace in the entry block, once every allocation site is known,
  /// and its release in the cleanup block (see docs/architecture.md, "Workspaces"). The
  /// module owns kPoolSize workspaces (each a busy flag and one site entry per allocation
  /// site, kept from call to call); a call takes an idle one with a compare-and-swap and
  /// gives it back on exit, so calls from several threads each have their own. When all are
  /// busy the call uses a workspace on its stack and frees its buffers on exit.
  void workspace(llvm::Function* impl) {
    const uint64_t S = static_cast<uint64_t>(totalEntries_);
    Builder E(ctx_);
    E.SetInsertPoint(entryBlock_, std::prev(entryBlock_->end()));
    llvm::Value* local = nullptr;
    llvm::GlobalVariable *pool = nullptr, *busy = nullptr;
    auto* arrTy = llvm::ArrayType::get(siteType(), S);
    // One cache line per busy flag: threads taking neighbouring workspaces do not contend.
    auto* flagTy = llvm::ArrayType::get(E.getInt32Ty(), kFlagStride);
    auto* busyTy = llvm::ArrayType::get(flagTy, kPoolSize);
    auto* poolTy = llvm::ArrayType::get(arrTy, kPoolSize);
    if (S > 0) {
      pool = new llvm::GlobalVariable(*mod_, poolTy, false, llvm::GlobalValue::InternalLinkage,
                                      llvm::ConstantAggregateZero::get(poolTy), f_.name + ".pool");
      busy = new llvm::GlobalVariable(*mod_, busyTy, false, llvm::GlobalValue::InternalLinkage,
                                      llvm::ConstantAggregateZero::get(busyTy), f_.name + ".busy");
      busy->setAlignment(llvm::Align(64));
      local = entryAlloca(arrTy, "workspace");
      E.CreateMemSet(local, E.getInt8(0), E.getInt64(S * 16), llvm::MaybeAlign(8));
      llvm::Value* ws = E.CreateCall(acquireFn(busy), {});
      E.CreateStore(ws, wsIndex_);
      llvm::Value* mine = E.CreateGEP(poolTy, pool, {E.getInt64(0), ws}); // (ws < 0: unused)
      E.CreateStore(E.CreateSelect(E.CreateICmpSGE(ws, E.getInt64(0)), mine, local), wsBase_);
    } else {
      E.CreateStore(E.getInt64(-1), wsIndex_);
      E.CreateStore(llvm::ConstantPointerNull::get(E.getPtrTy()), wsBase_);
    }
    // The cleanup block: give the workspace back, or free the stack workspace's buffers.
    B_.SetInsertPoint(cleanup_);
    if (S > 0) {
      auto* giveBack = llvm::BasicBlock::Create(ctx_, "give_back", impl);
      auto* freeAll = llvm::BasicBlock::Create(ctx_, "free_all", impl);
      auto* ret = llvm::BasicBlock::Create(ctx_, "ret", impl);
      llvm::Value* ws = B_.CreateLoad(B_.getInt64Ty(), wsIndex_);
      B_.CreateCondBr(B_.CreateICmpSGE(ws, i64(0)), giveBack, freeAll);
      B_.SetInsertPoint(giveBack);
      auto* st =
          B_.CreateStore(B_.getInt32(0), B_.CreateInBoundsGEP(busyTy, busy, {i64(0), ws, i64(0)}));
      st->setAtomic(llvm::AtomicOrdering::Release);
      st->setAlignment(llvm::Align(4));
      B_.CreateBr(ret);
      B_.SetInsertPoint(freeAll);
      std::vector<llvm::Value*> idx;
      nestLevel(
          i64(static_cast<int64_t>(S)), idx,
          [&] {
            llvm::Value* e = B_.CreateInBoundsGEP(siteType(), local, idx[0]);
            B_.CreateCall(freeFn(),
                          {B_.CreateLoad(B_.getPtrTy(), B_.CreateStructGEP(siteType(), e, 0))});
          },
          false);
      B_.CreateBr(ret);
      B_.SetInsertPoint(ret);
    }
    B_.CreateRet(B_.CreateLoad(B_.getInt32Ty(), codeSlot_));
    releaseFn(pool, kPoolSize * S);
  }
  /// `i64 acquire()`: the index of an idle workspace, now busy, or -1 when all are busy.
  llvm::Function* acquireFn(llvm::GlobalVariable* busy) {
    auto* fn =
        llvm::Function::Create(llvm::FunctionType::get(B_.getInt64Ty(), false),
                               llvm::Function::InternalLinkage, f_.name + ".acquire", mod_.get());
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    Builder A(ctx_);
    auto* entry = llvm::BasicBlock::Create(ctx_, "entry", fn);
    auto* head = llvm::BasicBlock::Create(ctx_, "loop", fn);
    auto* body = llvm::BasicBlock::Create(ctx_, "try", fn);
    auto* next = llvm::BasicBlock::Create(ctx_, "next", fn);
    auto* got = llvm::BasicBlock::Create(ctx_, "got", fn);
    auto* none = llvm::BasicBlock::Create(ctx_, "none", fn);
    A.SetInsertPoint(entry);
    A.CreateBr(head);
    A.SetInsertPoint(head);
    llvm::PHINode* k = A.CreatePHI(A.getInt64Ty(), 2, "k");
    k->addIncoming(A.getInt64(0), entry);
    A.CreateCondBr(A.CreateICmpULT(k, A.getInt64(kPoolSize)), body, none);
    A.SetInsertPoint(body);
    auto* flagTy = llvm::ArrayType::get(A.getInt32Ty(), kFlagStride);
    llvm::Value* flag = A.CreateInBoundsGEP(llvm::ArrayType::get(flagTy, kPoolSize), busy,
                                            {A.getInt64(0), k, A.getInt64(0)});
    auto* cas =
        A.CreateAtomicCmpXchg(flag, A.getInt32(0), A.getInt32(1), llvm::MaybeAlign(4),
                              llvm::AtomicOrdering::Acquire, llvm::AtomicOrdering::Monotonic);
    A.CreateCondBr(A.CreateExtractValue(cas, 1), got, next);
    A.SetInsertPoint(next);
    k->addIncoming(A.CreateAdd(k, A.getInt64(1)), next);
    A.CreateBr(head);
    A.SetInsertPoint(got);
    A.CreateRet(k);
    A.SetInsertPoint(none);
    A.CreateRet(A.getInt64(-1));
    return fn;
  }
  /// The exported `void NAME__release(void)` (abi.h): frees every pooled buffer. Only while
  /// no call of the function is running; a later call starts again from an empty pool.
  void releaseFn(llvm::GlobalVariable* pool, uint64_t entries) {
    auto* fn = llvm::Function::Create(llvm::FunctionType::get(B_.getVoidTy(), false),
                                      llvm::Function::ExternalLinkage, f_.name + kReleaseSuffix,
                                      mod_.get());
    fn->addFnAttr(llvm::Attribute::NoUnwind);
    B_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn));
    if (pool) {
      std::vector<llvm::Value*> idx;
      nestLevel(
          i64(static_cast<int64_t>(entries)), idx,
          [&] {
            llvm::Value* e = B_.CreateInBoundsGEP(siteType(), pool, idx[0]);
            llvm::Value* ptrField = B_.CreateStructGEP(siteType(), e, 0);
            B_.CreateCall(freeFn(), {B_.CreateLoad(B_.getPtrTy(), ptrField)});
            B_.CreateStore(llvm::ConstantPointerNull::get(B_.getPtrTy()), ptrField);
            B_.CreateStore(i64(0), B_.CreateStructGEP(siteType(), e, 1));
          },
          false);
    }
    B_.CreateRetVoid();
  }
  llvm::FunctionCallee mallocFn() {
    auto c = mod_->getOrInsertFunction(opt_.offload            ? kManagedMallocSymbol
                                       : opt_.countAllocations ? kCountedMallocSymbol
                                                               : "malloc",
                                       B_.getPtrTy(), B_.getInt64Ty());
    if (auto* fn = llvm::dyn_cast<llvm::Function>(c.getCallee())) fn->setReturnDoesNotAlias();
    return c;
  }
  llvm::FunctionCallee callocFn() {
    auto c = mod_->getOrInsertFunction(opt_.offload            ? kManagedCallocSymbol
                                       : opt_.countAllocations ? kCountedCallocSymbol
                                                               : "calloc",
                                       B_.getPtrTy(), B_.getInt64Ty(), B_.getInt64Ty());
    if (auto* fn = llvm::dyn_cast<llvm::Function>(c.getCallee())) fn->setReturnDoesNotAlias();
    return c;
  }
  llvm::FunctionCallee freeFn() {
    return mod_->getOrInsertFunction(opt_.offload            ? kManagedFreeSymbol
                                     : opt_.countAllocations ? kCountedFreeSymbol
                                                             : "free",
                                     B_.getVoidTy(), B_.getPtrTy());
  }

  /// Address of an element; `checked` says the subscripts were proven in range.
  llvm::Value* elementPtr(int tensor, const std::vector<int>& idx, bool checked,
                          const std::string& name, SrcRange loc) {
    const ir::Type& t = f_.types[tensor];
    llvm::Value* flat = i64(0);
    for (size_t k = 0; k < idx.size(); ++k) {
      llvm::Value* e = poly(t.shape[k]);
      llvm::Value* ix = val(idx[k]);
      if (!checked) {
        int site = addSite(name, loc);
        check(B_.CreateICmpULT(ix, e), SLOPE_ERR_INDEX, site, static_cast<int>(k), ix, e);
      }
      flat = B_.CreateAdd(B_.CreateMul(flat, e, "", true, true), ix, "", true, true);
    }
    return B_.CreateInBoundsGEP(elemTy(t.dtype), val(tensor), flat);
  }
  llvm::Value* loadElem(DType t, llvm::Value* ptr) {
    llvm::Value* v = B_.CreateLoad(elemTy(t), ptr);
    return t == DType::Bool ? B_.CreateICmpNE(v, B_.getInt8(0)) : v;
  }
  void storeElem(DType t, llvm::Value* ptr, llvm::Value* v) {
    if (t == DType::Bool) v = B_.CreateZExt(v, B_.getInt8Ty());
    B_.CreateStore(v, ptr);
  }

  // --- loops -------------------------------------------------------------------------------
  /// for idx in [0, ext): body(idx). Loops nest in order; the innermost is the last index.
  void loopNest(const std::vector<llvm::Value*>& ext,
                const std::function<void(const std::vector<llvm::Value*>&)>& body,
                bool reversed = false) {
    std::vector<llvm::Value*> idx;
    // A deep nest costs LLVM's loop analyses time that grows with the cube of its depth (a
    // rank-40 tensor's loops took 50 s): past kMaxLoopDepth levels, the outer ones become one
    // loop over their product, their indices recovered by division once per iteration of it
    // (once per run of the inner loops, which stay as they are).
    size_t flatten = ext.size() > kMaxLoopDepth ? ext.size() - (kMaxLoopDepth - 1) : 0;
    std::function<void(size_t)> level = [&](size_t d) {
      if (d == ext.size()) {
        body(idx);
        return;
      }
      if (d == 0 && flatten > 0) {
        // The product saturates: past 2^63 iterations the nest would never finish anyway.
        llvm::Value* count = i64(1);
        llvm::Value* over = B_.getFalse();
        for (size_t k = 0; k < flatten; ++k) {
          llvm::Value* r =
              B_.CreateBinaryIntrinsic(llvm::Intrinsic::smul_with_overflow, count, ext[k]);
          count = B_.CreateExtractValue(r, 0);
          over = B_.CreateOr(over, B_.CreateExtractValue(r, 1));
        }
        count = B_.CreateSelect(over, i64(INT64_MAX), count);
        std::vector<llvm::Value*> flat;
        nestLevel(
            count, flat,
            [&] {
              // Row-major: the last flattened index varies fastest.
              llvm::Value* q = flat[0];
              idx.assign(flatten, nullptr);
              for (size_t k = flatten; k-- > 1;) {
                idx[k] = B_.CreateURem(q, ext[k]);
                q = B_.CreateUDiv(q, ext[k]);
              }
              idx[0] = q;
              level(flatten);
              idx.clear();
            },
            reversed);
        return;
      }
      nestLevel(
          ext[d], idx, [&] { level(d + 1); }, reversed);
    };
    level(0);
  }

  // The next loop nestLevel makes is a short row's serial sum: unrolled by 2 only. LLVM
  // unrolls such a loop by 8 and leaves rows under 8 (most short triangular rows) to a
  // remainder loop that costs about twice as much per element; by 2 the remainder is one
  // element. Measured (callgrind, 1 thread; docs/benchmarks.md (h)), against LLVM's choice and
  // against no unrolling: GMM 10k d10 K25 objective 220.4M (241.1M, 215.9M), 1k d64 K25
  // 602.2M (607.6M, 608.8M), LSTM gradient 15.45M (15.52M, 15.56M).
  bool shortUnroll_ = false;
  // The next loop nestLevel makes is lower::Stmt::fewTrips: vectorised without interleaving.
  bool fewTrips_ = false;
  // The next loop nestLevel makes is lower::Stmt::vectorFirst: not unrolled before the loop
  // vectoriser has run (llvm.loop.unroll.disable), its vector form then free to unroll (the
  // vectoriser's follow-up loops carry only llvm.loop.isvectorized).
  bool vectorFirst_ = false;
  // The loops nestLevel makes are a parallel, vectorisable Loop IR loop's (Stmt::vectorisable):
  // straight-line, and its iterations touch disjoint memory. Said to LLVM as
  // llvm.loop.parallel_accesses over an access group on every memory access of the body, so
  // that the loop vectoriser needs no proof of independence of its own. Without it, a loop
  // that adds into a temporary (whose bounds LLVM cannot see) stays scalar. Only where the
  // body's accesses keep their order under it (lower::accessesKeepOrder): LLVM then orders
  // grouped strided accesses of one iteration as if none met.
  bool parallelNest_ = false;
  // The loops nestLevel makes are a cold loop's (lower::Stmt::cold: it runs only when an entry
  // check fails): LLVM is told not to unroll or vectorise them, which is most of what it would
  // spend compiling them.
  bool coldNest_ = false;
  /// A flag (parallelNest_, coldNest_) set to `on` for as long as it lives, then back to what it
  /// was.
  struct NestMarks {
    bool& flag;
    const bool saved;
    NestMarks(bool& f, bool on) : flag(f), saved(std::exchange(f, on)) {}
    ~NestMarks() { flag = saved; }
  };
  static bool markedParallel(const lower::Stmt& s) {
    return s.loopKind == lower::LoopKind::Parallel && s.vectorisable && lower::accessesKeepOrder(s);
  }
  /// Whether a region's body computes a math function that goes through libmvec (vectorMath):
  /// an op whose libm function (libmFunction, the table the lowering calls through) vmath has.
  bool callsMathOnRows(const lower::Body& body) const {
    if (!opt_.vectorMath || !vmath::enabled()) return false;
    bool math = false;
    lower::forEachStmt(body, [&](const lower::Stmt& st) {
      const char* n = libmFunction(st.in.op);
      if (math || !n || st.in.result < 0) return;
      DType t = f_.types[st.in.result].dtype;
      math = isFloat(t) && vmath::has(n, t == DType::F32);
    });
    return math;
  }
  /// Whether the blocks from `first` to the end of fn call a libmvec-backed math function.
  static bool callsVectorMath(llvm::BasicBlock* first, llvm::Function* fn) {
    for (auto bb = first->getIterator(); bb != fn->end(); ++bb)
      for (llvm::Instruction& in : *bb)
        if (auto* c = llvm::dyn_cast<llvm::CallInst>(&in))
          if (llvm::Function* f = c->getCalledFunction();
              f && f->getName().starts_with(kVectorMathPrefix))
            return true;
    return false;
  }
  /// One counted loop `for i in [0, n)` at the insertion point, i pushed onto idx while
  /// inner() emits its body.
  void nestLevel(llvm::Value* n, std::vector<llvm::Value*>& idx, const std::function<void()>& inner,
                 bool reversed) {
    const bool shortRow = std::exchange(shortUnroll_, false); // (for this loop, not those inside)
    const bool few = std::exchange(fewTrips_, false);
    const bool vectorFirst = std::exchange(vectorFirst_, false);
    const bool cold = coldNest_;
    const bool parallel = parallelNest_ && !cold;
    constexpr int64_t kTinyTrips = 4;
    auto* trips = llvm::dyn_cast<llvm::ConstantInt>(n);
    const bool tiny = trips && trips->getSExtValue() <= kTinyTrips;
    {
      llvm::Function* fn = B_.GetInsertBlock()->getParent();
      llvm::BasicBlock* pre = B_.GetInsertBlock();
      auto* head = llvm::BasicBlock::Create(ctx_, "loop", fn);
      auto* bodyBB = llvm::BasicBlock::Create(ctx_, "body", fn);
      auto* exit = llvm::BasicBlock::Create(ctx_, "done", fn);
      B_.CreateBr(head);
      B_.SetInsertPoint(head);
      llvm::PHINode* i = B_.CreatePHI(B_.getInt64Ty(), 2, "i");
      i->addIncoming(i64(0), pre);
      B_.CreateCondBr(B_.CreateICmpSLT(i, n), bodyBB, exit);
      B_.SetInsertPoint(bodyBB);
      // Reversed (JitOptions::reverseParallel): the body sees n - 1 - i.
      idx.push_back(reversed ? B_.CreateSub(B_.CreateSub(n, i64(1)), i) : i);
      inner();
      idx.pop_back();
      llvm::Value* next = B_.CreateAdd(i, i64(1), "", true, true);
      i->addIncoming(next, B_.GetInsertBlock());
      llvm::BranchInst* latch = B_.CreateBr(head);
      std::vector<llvm::Metadata*> props{nullptr};
      auto property = [&](const char* name, int value) {
        props.push_back(llvm::MDNode::get(
            ctx_, {llvm::MDString::get(ctx_, name),
                   llvm::ConstantAsMetadata::get(B_.getInt32(static_cast<uint32_t>(value)))}));
      };
      if (cold) {
        props.push_back(
            llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, "llvm.loop.unroll.disable")}));
        property("llvm.loop.vectorize.width", 1);
        property("llvm.loop.interleave.count", 1);
      } else if (shortRow) {
        property("llvm.loop.unroll.count", 2);
      } else if (few && tiny) {
        // A loop of a literal few trips inside another (a 3-vector's): unrolled whole, not
        // vectorised across its trips. The loop vectoriser would run its 3 trips as one
        // masked vector of 4 and reach each trip's lanes (forward mode's [3, K] buffers,
        // K apart) by gathers and scatters; unrolled, the lanes of one trip are contiguous
        // and SLP vectorises them, and SROA keeps stack buffers in registers.
        props.push_back(
            llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, "llvm.loop.unroll.full")}));
        property("llvm.loop.vectorize.width", 1);
        property("llvm.loop.interleave.count", 1);
      } else if (few) {
        property("llvm.loop.interleave.count", 1);
        if (vectorFirst) {
          props.push_back(
              llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, "llvm.loop.unroll.disable")}));
          props.push_back(llvm::MDNode::get(
              ctx_,
              {llvm::MDString::get(ctx_, "llvm.loop.vectorize.followup_all"),
               llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, "llvm.loop.isvectorized")})}));
        }
        // A row with a math call: its last partial vector runs masked, not as a scalar
        // remainder. Each scalar call of a remainder evaluates all four lanes of libmvec's
        // function for one element (vmath.hpp), so a row of 14 (the LSTM's b) paid five
        // vector calls where four do. Only these rows: masked stores that the next loop
        // reads back cannot forward, and predicating every `few` loop made the GMM d = 64
        // slower (docs/benchmarks.md). Lanes are independent: the same bits. LSTM
        // objective 5.97M -> 5.09M, gradient 11.59M -> 10.53M instructions; GMM within 0.1 %.
        if (callsVectorMath(bodyBB, fn))
          props.push_back(llvm::MDNode::get(
              ctx_, {llvm::MDString::get(ctx_, "llvm.loop.vectorize.predicate.enable"),
                     llvm::ConstantAsMetadata::get(B_.getTrue())}));
      }
      if (parallel) {
        // The body's blocks are those made since bodyBB (appended in order), exit aside.
        llvm::MDNode* group = llvm::MDNode::getDistinct(ctx_, {});
        for (auto bb = bodyBB->getIterator(); bb != fn->end(); ++bb)
          for (llvm::Instruction& in : *bb)
            if (in.mayReadOrWriteMemory()) addAccessGroup(in, group);
        props.push_back(llvm::MDNode::get(
            ctx_, {llvm::MDString::get(ctx_, "llvm.loop.parallel_accesses"), group}));
      }
      if (props.size() > 1) {
        llvm::MDNode* self = llvm::MDNode::getDistinct(ctx_, props);
        self->replaceOperandWith(0, self);
        latch->setMetadata(llvm::LLVMContext::MD_loop, self);
      }
      B_.SetInsertPoint(exit);
    }
  }

  /// Adds an access group to the instruction's (a list when it has some already: it is in
  /// several parallel loops of one nest).
  void addAccessGroup(llvm::Instruction& in, llvm::MDNode* group) {
    llvm::MDNode* had = in.getMetadata(llvm::LLVMContext::MD_access_group);
    if (!had) {
      in.setMetadata(llvm::LLVMContext::MD_access_group, group);
      return;
    }
    std::vector<llvm::Metadata*> groups;
    if (had->getNumOperands() == 0)
      groups.push_back(had);
    else
      groups.assign(had->op_begin(), had->op_end());
    groups.push_back(group);
    in.setMetadata(llvm::LLVMContext::MD_access_group, llvm::MDNode::get(ctx_, groups));
  }

  /// Runs a loop's body for each index; `after` sees the yield (if any) and the flat position.
  void regionLoop(const lower::Stmt& s,
                  const std::function<void(llvm::Value* yield, llvm::Value* flat)>& after) {
    std::vector<llvm::Value*> ext = extents(s.extents, s.in.loc);
    bool reversed = opt_.reverseParallel && s.loopKind == lower::LoopKind::Parallel;
    NestMarks marks(parallelNest_, markedParallel(s));
    loopNest(
        ext,
        [&](const std::vector<llvm::Value*>& idx) {
          for (size_t k = 0; k < idx.size(); ++k)
            vals_[s.indices[k]] = idx[k];
          ++regionDepth_;
          {
            NestMarks inside(parallelNest_, false); // (loops in the body are their own)
            body(s.body);
          }
          llvm::Value* y = s.yield < 0 ? nullptr : val(s.yield);
          llvm::Value* flat = i64(0);
          for (size_t k = 0; k < idx.size(); ++k)
            flat = B_.CreateAdd(B_.CreateMul(flat, ext[k], "", true, true), idx[k], "", true, true);
          after(y, flat);
          --regionDepth_;
        },
        reversed);
  }

  // --- values ------------------------------------------------------------------------------
  llvm::Value* val(int id) {
    auto spill = spills_.find(id);
    if (spill != spills_.end())
      return B_.CreateLoad(spill->second->getAllocatedType(), spill->second);
    llvm::Value* v = vals_[id];
    if (!v)
      throw std::logic_error("codegen: value %" + std::to_string(id) + " used before definition");
    return v;
  }
  void body(const lower::Body& b) {
    for (const lower::Stmt& s : b)
      stmt(s);
  }
  void stmt(const lower::Stmt& s);
  void instr(const Instr& in);
  /// Binds a result; one used outside its block also goes to an entry-block slot.
  void define(int id, llvm::Value* out);
  llvm::Value* unary(const Instr& in);
  llvm::Value* binary(const Instr& in);
  llvm::Value* reduce(const lower::Stmt& s);
  /// The second pass of a one-index logsumexp: *sum += exp(y - m) for each of s's elements in
  /// order, the exps a block of elements at a time into a stack row (a loop that vectorises),
  /// then added one by one.
  void lseExps(const lower::Stmt& s, llvm::Value* m, llvm::AllocaInst* sum);
  /// The value of s's body at indices idx (one per index of s), its code emitted here.
  llvm::Value* bodyAt(const lower::Stmt& s, const std::vector<llvm::Value*>& idx) {
    for (size_t k = 0; k < idx.size(); ++k)
      vals_[s.indices[k]] = idx[k];
    ++regionDepth_;
    body(s.body);
    --regionDepth_;
    return val(s.yield);
  }
  /// A floating-point sum or product in the order of compiler/support/reduce_order.hpp; with
  /// `group`, that group's result only.
  llvm::Value* orderedReduce(const lower::Stmt& s, bool sum, llvm::Value* group = nullptr);
  // --- threads -----------------------------------------------------------------------------
  void planThreads();
  bool outlinable(const lower::Stmt& s) const;
  /// Chunk k of a top-level loop nest: rows [k size, min((k + 1) size, n)) of its first index
  /// (n = ext[0]) and every value of the others, s's body at each; a tiled nest's rows
  /// (lower::Stmt::tile) in tiles, the other indices outside a tile's rows.
  void chunkRows(const lower::Stmt& s, const std::vector<llvm::Value*>& ext, llvm::Value* k,
                 llvm::Value* size, bool reversed);
  /// Runs the chunks [0, chunks) of s, made by emitChunk(k): on the pool when usePool is true
  /// (null: poolWanted's answer), else in order on this thread, where `serial`, if given,
  /// emits the loop over the chunks itself (run(k) calls chunk k and handles its failure).
  using RunChunk = std::function<void(llvm::Value*)>;
  void outline(const lower::Stmt& s, llvm::Value* chunks, llvm::Value* work,
               const std::function<void(llvm::Value*)>& emitChunk, llvm::Value* usePool = nullptr,
               const std::function<void(const RunChunk& run)>& serial = nullptr);
  /// Whether outline runs `chunks` chunks of `work` iterations on the pool: one is set, has
  /// two workers or more, and the work is worth waking it.
  llvm::Value* poolWanted(llvm::Value* chunks, llvm::Value* work);
  void outlineLoop(const lower::Stmt& s);
  void prefetchNextRows(const lower::Stmt& s);
  void outlineBlocks(const lower::Stmt& s);
  llvm::Value* outlineSum(const lower::Stmt& s);
  llvm::Value* workOf(const lower::Stmt& s, const std::vector<llvm::Value*>& ext);
  llvm::StructType* parallelType() {
    return llvm::StructType::get(ctx_, {B_.getPtrTy(), B_.getPtrTy(), B_.getInt32Ty()});
  }
  /// x ** y as compiler/support/power.hpp defines it, for x and y of one float type: the exact
  /// operation where the exponent has one, otherwise libm's pow through a `nobuiltin` call,
  /// which LLVM neither rewrites (pow(2, y) into exp2(y), say) nor folds, at any opt level.
  /// An exponent known here picks its form; one known only at run time picks it by selects
  /// around the call.
  llvm::Value* power(llvm::Value* x, llvm::Value* y) {
    llvm::Type* t = x->getType();
    auto c = [&](double v) { return llvm::ConstantFP::get(t, v); };
    const double inf = std::numeric_limits<double>::infinity();
    auto square = [&] { return B_.CreateFMul(x, x); };
    auto reciprocal = [&] { return B_.CreateFDiv(c(1), x); };
    auto root = [&] {
      llvm::Value* r = B_.CreateUnaryIntrinsic(llvm::Intrinsic::fabs,
                                               B_.CreateUnaryIntrinsic(llvm::Intrinsic::sqrt, x));
      return B_.CreateSelect(B_.CreateFCmpOEQ(x, c(-inf)), c(inf), r);
    };
    auto call = [&] {
      auto f = mod_->getOrInsertFunction(t->isFloatTy() ? "powf" : "pow",
                                         llvm::FunctionType::get(t, {t, t}, false));
      llvm::CallInst* r = B_.CreateCall(f, {x, y});
      r->addFnAttr(llvm::Attribute::NoBuiltin);
      r->addFnAttr(llvm::Attribute::WillReturn);
      r->setDoesNotThrow();
      r->setDoesNotAccessMemory(); // (errno aside, which nothing here reads)
      return r;
    };
    if (auto* k = llvm::dyn_cast<llvm::ConstantFP>(y)) {
      const double e = k->getValueAPF().convertToDouble(); // (a float's value is a double's)
      return e == 2 ? square() : e == 1 ? x : e == -1 ? reciprocal() : e == 0.5 ? root() : call();
    }
    llvm::Value* r = call();
    r = B_.CreateSelect(B_.CreateFCmpOEQ(y, c(0.5)), root(), r);
    r = B_.CreateSelect(B_.CreateFCmpOEQ(y, c(-1)), reciprocal(), r);
    r = B_.CreateSelect(B_.CreateFCmpOEQ(y, c(1)), x, r);
    return B_.CreateSelect(B_.CreateFCmpOEQ(y, c(2)), square(), r);
  }
  llvm::Value* mathCall(const char* name, DType t, std::vector<llvm::Value*> args) {
    if (args.size() == 1)
      if (llvm::Value* v = vectorMath(name, t == DType::F32, args[0])) return v;
    std::string n = t == DType::F32 ? std::string(name) + "f" : name;
    llvm::Type* ft = scalarTy(t);
    std::vector<llvm::Type*> ps(args.size(), ft);
    auto c = mod_->getOrInsertFunction(n, llvm::FunctionType::get(ft, ps, false));
    if (auto* fn = llvm::dyn_cast<llvm::Function>(c.getCallee())) {
      fn->setDoesNotThrow();
      fn->setWillReturn();
    }
    return B_.CreateCall(c, args);
  }
  llvm::Value* intrinsic(llvm::Intrinsic::ID id, llvm::Value* a) {
    const char* libm = id == llvm::Intrinsic::exp   ? "exp"
                       : id == llvm::Intrinsic::log ? "log"
                       : id == llvm::Intrinsic::sin ? "sin"
                       : id == llvm::Intrinsic::cos ? "cos"
                                                    : nullptr;
    if (libm)
      if (llvm::Value* v = vectorMath(libm, a->getType()->isFloatTy(), a)) return v;
    return B_.CreateUnaryIntrinsic(id, a);
  }
  /// The libm function `name` of x through libmvec (compiler/support/vmath.hpp), or null where
  /// it is not in use.
  llvm::Value* vectorMath(const char* name, bool f32, llvm::Value* x) {
    if (!opt_.vectorMath || !vmath::has(name, f32)) return nullptr;
    std::string n = std::string(kVectorMathPrefix) + name + (f32 ? "f" : "");
    auto c =
        mod_->getOrInsertFunction(n, llvm::FunctionType::get(x->getType(), {x->getType()}, false));
    if (auto* fn = llvm::dyn_cast<llvm::Function>(c.getCallee())) {
      // A pure function: the vectoriser may call its vector version, and LLVM may hoist it.
      fn->setDoesNotThrow();
      fn->setWillReturn();
      fn->setDoesNotAccessMemory();
      fn->setSpeculatable();
    }
    return B_.CreateCall(c, {x});
  }
  llvm::Value* fconst(DType t, double v) { return llvm::ConstantFP::get(scalarTy(t), v); }
  llvm::Value* lgamma(DType t, llvm::Value* x);
  llvm::Value* digamma(DType t, llvm::Value* x);
  /// A call of special.cpp's function n (digamma, trigamma) of one t.
  llvm::Value* special(const char* n, DType t, llvm::Value* x);

  const lower::Function& lf_;
  const ir::Function& f_;
  const JitOptions& opt_;
  llvm::LLVMContext& ctx_;
  Builder B_;
  std::vector<Site>& sites_;
  std::unique_ptr<llvm::Module> mod_;
  std::vector<llvm::Value*> vals_;
  std::map<std::string, llvm::Value*> sizeVals_;
  std::map<std::string, llvm::Value*> polyCache_;
  llvm::BasicBlock* entryBlock_ = nullptr;
  llvm::BasicBlock* cleanup_ = nullptr;
  llvm::AllocaInst* codeSlot_ = nullptr;
  llvm::Value* errArg_ = nullptr;
  llvm::StructType* errTy_ = nullptr;
  llvm::StructType* siteTy_ = nullptr;
  llvm::Function *takeFn_ = nullptr, *takeSoleFn_ = nullptr;
  std::map<int, int> entryUsers_;       // temporaries per workspace entry
  llvm::AllocaInst* wsBase_ = nullptr;  // the call's workspace: its first site entry
  llvm::AllocaInst* wsIndex_ = nullptr; // which pooled workspace, or -1: one on the stack
  int regionDepth_ = 0;                 // regions (loop bodies, branches) being generated
  // Threads (docs/architecture.md, "Threads"): the top-level loops run in chunks (outline),
  // the workspace entries of the temporaries inside them (kMaxWorkers each, the first's
  // index; by the Loop IR entry), each outlined sum's entry for its group results, and the
  // workspace's size with them.
  std::set<const lower::Stmt*> outlined_;
  std::map<int, int64_t> replicaBase_;
  std::map<const lower::Stmt*, int64_t> partialEntry_;
  std::map<std::pair<const lower::Stmt*, int>, int64_t> blockEntry_; // a blocked loop's partials
  int64_t totalEntries_ = 0;
  llvm::Value* worker_ = nullptr;            // in a chunk's function: its worker
  llvm::GlobalVariable* parallel_ = nullptr; // NAME.parallel: the slope_parallel*, or null
  int outlinedCount_ = 0;
  std::map<int, llvm::Value*> resultBuffers_;       // top-level values that live in a result buffer
  std::map<int, llvm::AllocaInst*> scalarBufs_;     // rank-0 accumulators
  std::map<llvm::BasicBlock*, int64_t> stackBytes_; // stackBuffer()'s bytes per entry block
  std::map<std::string, llvm::AllocaInst*> dynSlots_; // sizes bound by size.def
  // In a chunk: the slots of sizes bound outside it, not yet read into the chunk's (dynSlot).
  std::map<std::string, llvm::AllocaInst*> outerDynSlots_;
  // Values used outside the region that defines them (lower::Function::escaping): their
  // definitions do not dominate those uses, so each lives in an entry-block slot (SROA and
  // mem2reg turn it back into registers and phis); every use loads it.
  std::map<int, llvm::AllocaInst*> spills_;
};

llvm::Value* Gen::lgamma(DType t, llvm::Value* x) {
  // lgamma_r: the reentrant form, so calls from several threads do not race on signgam.
  llvm::AllocaInst* sign = entryAlloca(B_.getInt32Ty(), "sign");
  const char* n = t == DType::F32 ? "lgammaf_r" : "lgamma_r";
  auto c = mod_->getOrInsertFunction(n, scalarTy(t), scalarTy(t), B_.getPtrTy());
  return B_.CreateCall(c, {x, sign});
}

llvm::Value* Gen::digamma(DType t, llvm::Value* x) {
  return special(t == DType::F32 ? kDigammafSymbol : kDigammaSymbol, t, x);
}

llvm::Value* Gen::special(const char* n, DType t, llvm::Value* x) {
  // The evaluator's own function (compiler/support/special.cpp), which the JIT defines by
  // address: both backends give the same bits.
  auto c = mod_->getOrInsertFunction(n, scalarTy(t), scalarTy(t));
  if (auto* fn = llvm::dyn_cast<llvm::Function>(c.getCallee())) {
    fn->setDoesNotThrow();
    fn->setWillReturn();
    fn->setDoesNotAccessMemory();
  }
  return B_.CreateCall(c, {x});
}

llvm::Value* Gen::unary(const Instr& in) {
  DType t = f_.types[in.result].dtype;
  DType from = f_.types[in.args[0]].dtype;
  llvm::Value* x = val(in.args[0]);
  namespace I = llvm::Intrinsic;
  if (in.op == Op::Not) return B_.CreateNot(x);
  if (in.op == Op::Cast) {
    if (t == from) return x;
    if (t == DType::Bool)
      return isFloat(from) ? B_.CreateFCmpUNE(x, fconst(from, 0)) : B_.CreateICmpNE(x, i64(0));
    if (isFloat(t)) {
      if (isFloat(from))
        return t == DType::F32 ? B_.CreateFPTrunc(x, B_.getFloatTy())
                               : B_.CreateFPExt(x, B_.getDoubleTy());
      if (from == DType::Bool) return B_.CreateUIToFP(x, scalarTy(t));
      return B_.CreateSIToFP(x, scalarTy(t));
    }
    // To i64.
    if (from == DType::Bool) return B_.CreateZExt(x, B_.getInt64Ty());
    llvm::Value* ax = intrinsic(I::fabs, x);
    int site = addSite("", in.loc);
    // The value travels in err->index as the bits of a double, its dtype in err->dim (32 or
    // 64), for the message.
    llvm::Value* bits = B_.CreateBitCast(
        from == DType::F32 ? B_.CreateFPExt(x, B_.getDoubleTy()) : x, B_.getInt64Ty());
    check(B_.CreateFCmpOLT(ax, fconst(from, 9.2e18)), SLOPE_ERR_CONVERSION, site,
          from == DType::F32 ? 32 : 64, bits, i64(0));
    return B_.CreateFPToSI(x, B_.getInt64Ty());
  }
  if (!isFloat(t)) {
    switch (in.op) {
    case Op::Neg: return B_.CreateSub(i64(0), x);
    case Op::Abs: return B_.CreateSelect(B_.CreateICmpSLT(x, i64(0)), B_.CreateSub(i64(0), x), x);
    case Op::Sign:
      return B_.CreateSub(B_.CreateZExt(B_.CreateICmpSGT(x, i64(0)), B_.getInt64Ty()),
                          B_.CreateZExt(B_.CreateICmpSLT(x, i64(0)), B_.getInt64Ty()));
    default: return x;
    }
  }
  switch (in.op) {
  case Op::Neg: return B_.CreateFNeg(x);
  case Op::Exp: return intrinsic(I::exp, x);
  case Op::Log: return intrinsic(I::log, x);
  case Op::Sqrt: return intrinsic(I::sqrt, x);
  case Op::Abs: return intrinsic(I::fabs, x);
  case Op::Sin: return intrinsic(I::sin, x);
  case Op::Cos: return intrinsic(I::cos, x);
  case Op::Floor: return intrinsic(I::floor, x);
  case Op::Ceil: return intrinsic(I::ceil, x);
  case Op::Log1p:
  case Op::Expm1:
  case Op::Tan:
  case Op::Asin:
  case Op::Acos:
  case Op::Atan:
  case Op::Sinh:
  case Op::Cosh:
  case Op::Tanh:
  case Op::Erf: return mathCall(libmFunction(in.op), t, {x});
  case Op::Lgamma: return lgamma(t, x);
  case Op::Digamma: return digamma(t, x);
  case Op::Trigamma: return special(t == DType::F32 ? kTrigammafSymbol : kTrigammaSymbol, t, x);
  case Op::Sigmoid: {
    // e = exp(-|x|); sigmoid = 1/(1+e) for x >= 0, e/(1+e) otherwise: no overflow either way.
    llvm::Value* e = intrinsic(I::exp, B_.CreateFNeg(intrinsic(I::fabs, x)));
    llvm::Value* d = B_.CreateFAdd(fconst(t, 1), e);
    return B_.CreateSelect(B_.CreateFCmpOGE(x, fconst(t, 0)), B_.CreateFDiv(fconst(t, 1), d),
                           B_.CreateFDiv(e, d));
  }
  case Op::Relu: return B_.CreateSelect(B_.CreateFCmpOGT(x, fconst(t, 0)), x, fconst(t, 0));
  case Op::Softplus: {
    llvm::Value* e = intrinsic(I::exp, B_.CreateFNeg(intrinsic(I::fabs, x)));
    llvm::Value* pos = B_.CreateSelect(B_.CreateFCmpOGT(x, fconst(t, 0)), x, fconst(t, 0));
    return B_.CreateFAdd(mathCall("log1p", t, {e}), pos);
  }
  case Op::Sign: {
    llvm::Value* s = B_.CreateFSub(B_.CreateUIToFP(B_.CreateFCmpOGT(x, fconst(t, 0)), scalarTy(t)),
                                   B_.CreateUIToFP(B_.CreateFCmpOLT(x, fconst(t, 0)), scalarTy(t)));
    return B_.CreateSelect(B_.CreateFCmpUNO(x, x), x, s);
  }
  default: break;
  }
  throw std::logic_error(std::string("codegen: unary op ") + ir::opName(in.op));
}

llvm::Value* Gen::binary(const Instr& in) {
  DType ot = f_.types[in.args[0]].dtype;
  llvm::Value* a = val(in.args[0]);
  llvm::Value* b = val(in.args[1]);
  bool fl = isFloat(ot);
  switch (in.op) {
  case Op::Lt: return fl ? B_.CreateFCmpOLT(a, b) : B_.CreateICmpSLT(a, b);
  case Op::Le: return fl ? B_.CreateFCmpOLE(a, b) : B_.CreateICmpSLE(a, b);
  case Op::Gt: return fl ? B_.CreateFCmpOGT(a, b) : B_.CreateICmpSGT(a, b);
  case Op::Ge: return fl ? B_.CreateFCmpOGE(a, b) : B_.CreateICmpSGE(a, b);
  case Op::Eq: return fl ? B_.CreateFCmpOEQ(a, b) : B_.CreateICmpEQ(a, b);
  case Op::Ne: return fl ? B_.CreateFCmpUNE(a, b) : B_.CreateICmpNE(a, b);
  case Op::And: return B_.CreateAnd(a, b);
  case Op::Or: return B_.CreateOr(a, b);
  default: break;
  }
  if (fl) {
    switch (in.op) {
    case Op::Add: return B_.CreateFAdd(a, b);
    case Op::Sub: return B_.CreateFSub(a, b);
    case Op::Mul: return B_.CreateFMul(a, b);
    case Op::Div: return B_.CreateFDiv(a, b);
    case Op::Pow: return power(a, b);
    case Op::Powi: {
      // x^n as the evaluator computes it: power(x, double(n)), rounded to the type. (The
      // builder's folder makes a literal n a constant, which power() reads.)
      llvm::Value* nf = B_.CreateSIToFP(b, B_.getDoubleTy());
      llvm::Value* xd = ot == DType::F32 ? B_.CreateFPExt(a, B_.getDoubleTy()) : a;
      llvm::Value* r = power(xd, nf);
      return ot == DType::F32 ? B_.CreateFPTrunc(r, B_.getFloatTy()) : r;
    }
    case Op::Atan2: return mathCall("atan2", ot, {a, b});
    case Op::Min:
    case Op::Max: {
      // NaN in either operand gives NaN; otherwise the smaller / larger, the first on a tie.
      llvm::Value* nan = B_.CreateFCmpUNO(a, b);
      llvm::Value* pick = in.op == Op::Min ? B_.CreateFCmpOLT(b, a) : B_.CreateFCmpOGT(b, a);
      return B_.CreateSelect(nan, B_.CreateFAdd(a, b), B_.CreateSelect(pick, b, a));
    }
    default: break;
    }
  } else {
    switch (in.op) {
    case Op::Add: return B_.CreateAdd(a, b);
    case Op::Sub: return B_.CreateSub(a, b);
    case Op::Mul: return B_.CreateMul(a, b);
    case Op::Min: return B_.CreateSelect(B_.CreateICmpSLT(b, a), b, a);
    case Op::Max: return B_.CreateSelect(B_.CreateICmpSGT(b, a), b, a);
    case Op::Div:
    case Op::Mod: {
      int site = addSite("", in.loc);
      check(B_.CreateICmpNE(b, i64(0)), SLOPE_ERR_DIV_ZERO, site, 0, i64(0), i64(0));
      // x / -1 wraps instead of trapping on INT64_MIN.
      llvm::Value* m1 = B_.CreateICmpEQ(b, i64(-1));
      llvm::Value* safe = B_.CreateSelect(m1, i64(1), b);
      // Floor division, remainder with the divisor's sign: C's truncating quotient, one less
      // (and the remainder plus b) when the remainder is nonzero and its sign differs from b's.
      llvm::Value* q = B_.CreateSDiv(a, safe);
      llvm::Value* r = B_.CreateSRem(a, safe);
      llvm::Value* fix =
          B_.CreateAnd(B_.CreateICmpNE(r, i64(0)), B_.CreateICmpSLT(B_.CreateXor(r, safe), i64(0)));
      if (in.op == Op::Div)
        return B_.CreateSelect(m1, B_.CreateSub(i64(0), a),
                               B_.CreateSub(q, B_.CreateZExt(fix, B_.getInt64Ty())));
      return B_.CreateSelect(m1, i64(0), B_.CreateSelect(fix, B_.CreateAdd(r, safe), r));
    }
    case Op::Powi: {
      // Integer power by squaring; a negative exponent truncates (0 unless |x| = 1).
      llvm::Function* fn = B_.GetInsertBlock()->getParent();
      llvm::BasicBlock* pre = B_.GetInsertBlock();
      auto* head = llvm::BasicBlock::Create(ctx_, "ipow", fn);
      auto* bodyBB = llvm::BasicBlock::Create(ctx_, "ipow.body", fn);
      auto* done = llvm::BasicBlock::Create(ctx_, "ipow.done", fn);
      llvm::Value* neg = B_.CreateICmpSLT(b, i64(0));
      llvm::Value* e0 = B_.CreateSelect(neg, i64(0), b); // (in pre: a phi's incoming value)
      B_.CreateBr(head);
      B_.SetInsertPoint(head);
      auto* r = B_.CreatePHI(B_.getInt64Ty(), 2);
      auto* base = B_.CreatePHI(B_.getInt64Ty(), 2);
      auto* e = B_.CreatePHI(B_.getInt64Ty(), 2);
      r->addIncoming(i64(1), pre);
      base->addIncoming(a, pre);
      e->addIncoming(e0, pre);
      B_.CreateCondBr(B_.CreateICmpSGT(e, i64(0)), bodyBB, done);
      B_.SetInsertPoint(bodyBB);
      llvm::Value* odd = B_.CreateTrunc(e, B_.getInt1Ty());
      r->addIncoming(B_.CreateSelect(odd, B_.CreateMul(r, base), r), bodyBB);
      base->addIncoming(B_.CreateMul(base, base), bodyBB);
      e->addIncoming(B_.CreateLShr(e, i64(1)), bodyBB);
      B_.CreateBr(head);
      B_.SetInsertPoint(done);
      int site = addSite("", in.loc);
      check(B_.CreateNot(B_.CreateAnd(neg, B_.CreateICmpEQ(a, i64(0)))), SLOPE_ERR_DIV_ZERO, site,
            0, i64(0), i64(0));
      llvm::Value* negr = B_.CreateSelect(
          B_.CreateICmpEQ(a, i64(1)), i64(1),
          B_.CreateSelect(B_.CreateICmpEQ(a, i64(-1)),
                          B_.CreateSelect(B_.CreateTrunc(b, B_.getInt1Ty()), i64(-1), i64(1)),
                          i64(0)));
      return B_.CreateSelect(neg, negr, r);
    }
    default: break;
    }
  }
  throw std::logic_error(std::string("codegen: binary op ") + ir::opName(in.op));
}

llvm::Value* Gen::orderedReduce(const lower::Stmt& s, bool sum, llvm::Value* group) {
  // The order of compiler/support/reduce_order.hpp, as loops:
  //   for each group g: lanes = id, tail = id
  //     for the group's values of the first index, the middle indices in order (the rows),
  //       for each whole chunk of the row: lanes[l] = lanes[l] op body(chunk + l), l < kLanes
  //       for the row's tail, in order: tail = tail op body(j)
  //     acc = acc op tree(lanes) op tail
  // The whole chunks' values go through a block on the stack: the body runs in a plain loop
  // that stores its values (vectorised as a comprehension is, math functions included, and in
  // order when it has effects), then each chunk of kLanes values is one vector operation on
  // the lanes. The body's work vectorises without reassociating anything: each lane still
  // sums its own elements in order, as the evaluator does, whatever LLVM makes of the loops.
  namespace ro = reduce_order;
  DType bt = f_.types[s.yield].dtype;
  llvm::Type* ty = scalarTy(bt);
  auto* vecTy = llvm::FixedVectorType::get(ty, static_cast<unsigned>(ro::kLanes));
  llvm::Value* id = fconst(bt, sum ? 0 : 1);
  auto op = [&](llvm::Value* a, llvm::Value* b) {
    return sum ? B_.CreateFAdd(a, b) : B_.CreateFMul(a, b);
  };
  std::vector<llvm::Value*> ext = extents(s.extents, s.in.loc);
  const size_t rank = ext.size();
  const bool rank1 = rank == 1;
  llvm::AllocaInst* acc = entryAlloca(ty, "acc");
  llvm::AllocaInst* tail = entryAlloca(ty, "tail");
  llvm::AllocaInst* lanes = entryAlloca(vecTy, "lanes");
  llvm::AllocaInst* block = entryAlloca(llvm::ArrayType::get(ty, kLaneBlock), "block");
  // The block is read a vector of lanes at a time, at multiples of kLanes elements. Those loads
  // claim the element's alignment only: a load of <8 x double> claims 64 unless told otherwise,
  // and at opt_level 0 that was an aligned AVX-512 load from a stack slot aligned 8, and a
  // crash. (Aligning the block instead made every function with one realign its stack: the
  // GMM and LSTM ran 0.4 to 0.9 % more instructions.)
  const llvm::Align vecAlign = mod_->getDataLayout().getABITypeAlign(ty);
  B_.CreateStore(id, acc);
  llvm::Value* groupSize = i64(rank1 ? ro::kGroupElems : ro::kGroupRows);
  llvm::Value* e0 = ext[0];
  llvm::Value* groups = B_.CreateUDiv(B_.CreateAdd(e0, B_.CreateSub(groupSize, i64(1))), groupSize);
  std::vector<llvm::Value*> idx; // the indices outside the innermost
  // The body's value at innermost index j.
  auto element = [&](llvm::Value* j) {
    idx.push_back(j);
    llvm::Value* y = bodyAt(s, idx);
    idx.pop_back();
    return y;
  };
  auto into = [&](llvm::Value* ptr, llvm::Value* y) {
    B_.CreateStore(op(B_.CreateLoad(ty, ptr), y), ptr);
  };
  // The row [lo, hi) of the innermost index.
  auto row = [&](llvm::Value* lo, llvm::Value* hi) {
    llvm::Value* len = B_.CreateSub(hi, lo);
    llvm::Value* whole = B_.CreateSelect(B_.CreateICmpSLT(len, i64(ro::kMinLaneRow)), i64(0),
                                         B_.CreateUDiv(len, i64(ro::kLanes)));
    // The whole chunks, a block of kLaneBlock elements at a time: the body's values into the
    // block (a plain loop over the body, which LLVM vectorises like a comprehension's), then
    // the block into the lanes, one vector operation per chunk.
    llvm::Value* chunkedEnd = B_.CreateAdd(lo, B_.CreateMul(whole, i64(ro::kLanes)));
    llvm::Value* blocks = B_.CreateUDiv(
        B_.CreateAdd(B_.CreateSub(chunkedEnd, lo), i64(kLaneBlock - 1)), i64(kLaneBlock));
    std::vector<llvm::Value*> bi, k, c, t;
    nestLevel(
        blocks, bi,
        [&] {
          llvm::Value* b0 = B_.CreateAdd(lo, B_.CreateMul(bi[0], i64(kLaneBlock)));
          llvm::Value* rest = B_.CreateSub(chunkedEnd, b0);
          llvm::Value* n =
              B_.CreateSelect(B_.CreateICmpSLT(rest, i64(kLaneBlock)), rest, i64(kLaneBlock));
          nestLevel(
              n, k,
              [&] {
                llvm::Value* y = element(B_.CreateAdd(b0, k[0], "", true, true));
                B_.CreateStore(y, B_.CreateInBoundsGEP(ty, block, k[0]));
              },
              false);
          nestLevel(
              B_.CreateUDiv(n, i64(ro::kLanes)), c,
              [&] {
                llvm::Value* v = B_.CreateAlignedLoad(
                    vecTy, B_.CreateInBoundsGEP(ty, block, B_.CreateMul(c[0], i64(ro::kLanes))),
                    vecAlign);
                B_.CreateStore(op(B_.CreateLoad(vecTy, lanes), v), lanes);
              },
              false);
        },
        false);
    nestLevel(
        B_.CreateSub(hi, chunkedEnd), t,
        [&] { into(tail, element(B_.CreateAdd(chunkedEnd, t[0]))); }, false);
  };
  // Rows shorter than kMinLaneRow leave the lanes at the identity, and combining identities into
  // the tail changes no bit of it (x + 0 = x for every x the tail can hold, which starts at +0;
  // x * 1 = x): such groups skip the lanes, which keeps short triangular rows cheap.
  auto ifLanes = [&](llvm::Value* used, const std::function<void()>& then) {
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* yes = llvm::BasicBlock::Create(ctx_, "lanes", fn);
    auto* next = llvm::BasicBlock::Create(ctx_, "lanes.done", fn);
    B_.CreateCondBr(used, yes, next);
    B_.SetInsertPoint(yes);
    then();
    B_.CreateBr(next);
    B_.SetInsertPoint(next);
  };
  // Group g's result, into tail.
  auto groupResult = [&](llvm::Value* g) {
    llvm::Value* lo = B_.CreateMul(g, groupSize);
    llvm::Value* end = B_.CreateAdd(lo, groupSize);
    llvm::Value* hi = B_.CreateSelect(B_.CreateICmpSLT(end, e0), end, e0);
    llvm::Value* used =
        B_.CreateICmpSGE(rank1 ? B_.CreateSub(hi, lo) : ext.back(), i64(ro::kMinLaneRow));
    ifLanes(used, [&] { B_.CreateStore(B_.CreateVectorSplat(ro::kLanes, id), lanes); });
    B_.CreateStore(id, tail);
    if (rank1) {
      row(lo, hi);
    } else {
      std::vector<llvm::Value*> rows;
      nestLevel(
          B_.CreateSub(hi, lo), rows,
          [&] {
            llvm::Value* i0 = B_.CreateAdd(lo, rows[0], "", true, true);
            std::vector<llvm::Value*> middle(ext.begin() + 1, ext.end() - 1);
            loopNest(middle, [&](const std::vector<llvm::Value*>& mid) {
              idx.assign(1, i0);
              idx.insert(idx.end(), mid.begin(), mid.end());
              row(i64(0), ext.back());
            });
          },
          false);
    }
    ifLanes(used, [&] {
      llvm::Value* v = B_.CreateLoad(vecTy, lanes);
      llvm::Value* l[ro::kLanes];
      for (int64_t k = 0; k < ro::kLanes; ++k)
        l[k] = B_.CreateExtractElement(v, k);
      B_.CreateStore(ro::combineGroup<llvm::Value*>(l, B_.CreateLoad(ty, tail), op), tail);
    });
  };
  if (group) {
    groupResult(group);
    return B_.CreateLoad(ty, tail);
  }
  // A one-index region shorter than kMinLaneRow is one group that is all tail: its sum is the
  // serial sum (id . tail = tail, bit for bit, as above), and a plain loop skips the groups'
  // bookkeeping, which costs more than a short row (triangular rows are mostly short).
  llvm::BasicBlock* orderedBB = nullptr;
  llvm::BasicBlock* joinBB = nullptr;
  if (rank1) {
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* serialBB = llvm::BasicBlock::Create(ctx_, "short", fn);
    orderedBB = llvm::BasicBlock::Create(ctx_, "ordered", fn);
    joinBB = llvm::BasicBlock::Create(ctx_, "reduced", fn);
    B_.CreateCondBr(B_.CreateICmpSLT(e0, i64(ro::kMinLaneRow)), serialBB, orderedBB);
    B_.SetInsertPoint(serialBB);
    std::vector<llvm::Value*> j;
    static_assert(ro::kMinLaneRow <= static_cast<int64_t>(kLaneBlock),
                  "a short row fits the block");
    std::function<llvm::Value*(llvm::Value*)> value = element;
    if (callsMathOnRows(s.body)) {
      // A math function in the body (the LSTM's sum(exp(y)) over b = 14): the row's values
      // first, into the block in one loop that vectorises (its last partial vector masked,
      // as every `few` row with a math call), then summed from the block in order. Summed
      // as they come, each value was a scalar call, and a scalar call of libmvec's function
      // evaluates all its lanes for one element. The same values in the same order: the
      // same bits.
      fewTrips_ = true;
      nestLevel(
          e0, j, [&] { B_.CreateStore(element(j[0]), B_.CreateInBoundsGEP(ty, block, j[0])); },
          false);
      j.clear();
      value = [&](llvm::Value* i) { return B_.CreateLoad(ty, B_.CreateInBoundsGEP(ty, block, i)); };
    }
    shortUnroll_ = true;
    nestLevel(
        e0, j, [&] { into(acc, value(j[0])); }, false);
    B_.CreateBr(joinBB);
    B_.SetInsertPoint(orderedBB);
  }
  std::vector<llvm::Value*> gidx;
  nestLevel(
      groups, gidx,
      [&] {
        groupResult(gidx[0]);
        into(acc, B_.CreateLoad(ty, tail));
      },
      false);
  if (joinBB) {
    B_.CreateBr(joinBB);
    B_.SetInsertPoint(joinBB);
  }
  return B_.CreateLoad(ty, acc);
}

// --- threads -------------------------------------------------------------------------------
// A top-level parallel loop nest (or a top-level sum or product over floats) runs in chunks:
// its outer index cut into kLoopChunks pieces (a sum: its groups, reduce_order.hpp), each
// chunk a call of a function of its own, which the module's slope_parallel (abi.h) hands to
// threads. Chunk bounds depend on the extents only; a sum's group results go to a buffer and
// combine in group order afterwards, as the serial code combines them; a chunk's temporaries
// live in its worker's own workspace entries. So the bits are the same for every thread count,
// including the calling thread alone, which runs the same chunks in order.

bool Gen::outlinable(const lower::Stmt& s) const {
  if (s.kind != lower::Stmt::Loop || s.extents.empty()) return false;
  if (s.blocked) return true;
  if (s.loopKind == lower::LoopKind::Parallel) return s.in.op == Op::For || s.in.op == Op::Comp;
  if (s.loopKind == lower::LoopKind::Reduction)
    return (s.in.op == Op::ReduceSum || s.in.op == Op::ReduceProd) &&
           isFloat(f_.types[s.yield].dtype);
  return false;
}

void Gen::planThreads() {
  int64_t next = lf_.entries;
  for (const lower::Stmt& s : lf_.body) {
    if (!outlinable(s)) continue;
    outlined_.insert(&s);
    lower::forEachNested(s, [&](const lower::Stmt& t) {
      if (t.kind != lower::Stmt::Alloc && t.kind != lower::Stmt::Stack) return;
      auto b = lf_.buffers.find(t.in.result);
      if (b == lf_.buffers.end() || b->second.place != lower::Buffer::Temp) return;
      if (replicaBase_.emplace(b->second.entry, next).second) next += kMaxWorkers;
    });
    if (s.in.op == Op::ReduceSum || s.in.op == Op::ReduceProd) partialEntry_[&s] = next++;
    for (int b : s.partials)
      blockEntry_[{&s, b}] = next++;
  }
  totalEntries_ = next;
}

llvm::Value* Gen::workOf(const lower::Stmt& s, const std::vector<llvm::Value*>& ext) {
  size_t stmts = 0;
  lower::forEachNested(s, [&](const lower::Stmt&) { ++stmts; });
  llvm::Value* w = fconst(DType::F64, static_cast<double>(stmts + 1));
  for (llvm::Value* e : ext)
    w = B_.CreateFMul(w, B_.CreateSIToFP(e, B_.getDoubleTy()));
  return w;
}

llvm::Value* Gen::poolWanted(llvm::Value* chunks, llvm::Value* work) {
  llvm::Function* outer = B_.GetInsertBlock()->getParent();
  llvm::Value* p = B_.CreateLoad(B_.getPtrTy(), parallel_);
  llvm::Value* worth =
      B_.CreateAnd(B_.CreateICmpSGE(chunks, i64(2)),
                   B_.CreateFCmpOGE(work, fconst(DType::F64, opt_.minParallelWork)));
  llvm::BasicBlock* from = B_.GetInsertBlock();
  auto* maybeBB = llvm::BasicBlock::Create(ctx_, "pool.maybe", outer);
  auto* joinBB = llvm::BasicBlock::Create(ctx_, "pool.known", outer);
  B_.CreateCondBr(B_.CreateAnd(B_.CreateIsNotNull(p), worth), maybeBB, joinBB);
  B_.SetInsertPoint(maybeBB);
  llvm::Value* workers = B_.CreateLoad(B_.getInt32Ty(), B_.CreateStructGEP(parallelType(), p, 2));
  llvm::Value* two = B_.CreateICmpSGE(workers, B_.getInt32(2));
  B_.CreateBr(joinBB);
  B_.SetInsertPoint(joinBB);
  llvm::PHINode* use = B_.CreatePHI(B_.getInt1Ty(), 2, "pool.use");
  use->addIncoming(B_.getFalse(), from);
  use->addIncoming(two, maybeBB);
  return use;
}

void Gen::outline(const lower::Stmt& s, llvm::Value* chunks, llvm::Value* work,
                  const std::function<void(llvm::Value*)>& emitChunk, llvm::Value* usePool,
                  const std::function<void(const RunChunk& run)>& serial) {
  llvm::Function* outer = B_.GetInsertBlock()->getParent();
  std::string base = f_.name + ".chunk" + std::to_string(outlinedCount_++);
  llvm::Type* i32 = B_.getInt32Ty();
  llvm::Type* i64t = B_.getInt64Ty();
  llvm::Type* ptr = B_.getPtrTy();
  // 1. The chunk, generated into a scratch function `i32 (i64 k, ptr err, i64 worker)` as if
  // it were inline: it uses the outer function's values where it needs them.
  auto* scratch =
      llvm::Function::Create(llvm::FunctionType::get(i32, {i64t, ptr, i64t}, false),
                             llvm::Function::InternalLinkage, base + ".scratch", mod_.get());
  auto savedIP = B_.saveIP();
  llvm::BasicBlock *savedEntry = entryBlock_, *savedCleanup = cleanup_;
  llvm::AllocaInst* savedCode = codeSlot_;
  llvm::Value* savedErr = errArg_;
  auto savedPoly = polyCache_;
  auto savedDyn = dynSlots_;
  auto savedOuterDyn = outerDynSlots_;
  for (const auto& [n, slot] : dynSlots_)
    outerDynSlots_[n] = slot;
  dynSlots_.clear();
  entryBlock_ = llvm::BasicBlock::Create(ctx_, "entry", scratch);
  auto* start = llvm::BasicBlock::Create(ctx_, "start", scratch);
  cleanup_ = llvm::BasicBlock::Create(ctx_, "cleanup", scratch);
  B_.SetInsertPoint(entryBlock_);
  codeSlot_ = B_.CreateAlloca(i32, nullptr, "code");
  B_.CreateStore(B_.getInt32(0), codeSlot_);
  B_.CreateBr(start);
  errArg_ = scratch->getArg(1);
  worker_ = scratch->getArg(2);
  // Sizes bound in the body (size.def) are each chunk's own.
  lower::forEachNested(s, [&](const lower::Stmt& t) {
    if (t.kind != lower::Stmt::Scalar || t.in.op != Op::SizeDef) return;
    dynSlots_[t.in.name] = entrySlot(i64t, "trips", [](Builder& E) { return E.getInt64(0); });
    outerDynSlots_.erase(t.in.name);
  });
  B_.SetInsertPoint(start);
  ++regionDepth_;
  emitChunk(scratch->getArg(0));
  --regionDepth_;
  B_.CreateBr(cleanup_);
  B_.SetInsertPoint(cleanup_);
  B_.CreateRet(B_.CreateLoad(i32, codeSlot_));
  B_.restoreIP(savedIP);
  entryBlock_ = savedEntry;
  cleanup_ = savedCleanup;
  codeSlot_ = savedCode;
  errArg_ = savedErr;
  polyCache_ = std::move(savedPoly);
  dynSlots_ = std::move(savedDyn);
  outerDynSlots_ = std::move(savedOuterDyn);
  worker_ = nullptr;

  // For a device (JitOptions::offload), a slot on the outer function's stack that the chunk
  // only reads (a size bound outside it: its trip count) is read once here and passed by
  // value, since a kernel cannot reach the host's stack. (Chunks run after this point and
  // none writes the slot, so every read gives this value.)
  if (opt_.offload) {
    std::map<llvm::AllocaInst*, std::vector<llvm::LoadInst*>> reads;
    std::set<llvm::AllocaInst*> written;
    for (llvm::BasicBlock& bb : *scratch)
      for (llvm::Instruction& I : bb)
        for (llvm::Use& u : I.operands()) {
          auto* a = llvm::dyn_cast<llvm::AllocaInst>(u.get());
          if (!a || a->getFunction() == scratch) continue;
          auto* ld = llvm::dyn_cast<llvm::LoadInst>(&I);
          if (ld && ld->getPointerOperand() == a && ld->getType() == a->getAllocatedType())
            reads[a].push_back(ld);
          else
            written.insert(a);
        }
    for (auto& [a, loads] : reads) {
      if (written.count(a)) continue;
      llvm::Value* v = B_.CreateLoad(a->getAllocatedType(), a, a->getName() + ".value");
      for (llvm::LoadInst* ld : loads) {
        ld->replaceAllUsesWith(v);
        ld->eraseFromParent();
      }
    }
  }

  // 2. Its captures: the outer function's values it uses, which become parameters.
  std::vector<llvm::Value*> caps;
  std::map<llvm::Value*, size_t> capIndex;
  for (llvm::BasicBlock& bb : *scratch)
    for (llvm::Instruction& I : bb)
      for (llvm::Use& u : I.operands()) {
        llvm::Value* v = u.get();
        auto* vi = llvm::dyn_cast<llvm::Instruction>(v);
        auto* va = llvm::dyn_cast<llvm::Argument>(v);
        bool outside = (vi && vi->getFunction() != scratch) || (va && va->getParent() != scratch);
        if (outside && capIndex.emplace(v, caps.size()).second) caps.push_back(v);
      }
  std::vector<llvm::Type*> ps{i64t, ptr, i64t};
  for (llvm::Value* v : caps)
    ps.push_back(v->getType());
  auto* chunk = llvm::Function::Create(llvm::FunctionType::get(i32, ps, false),
                                       llvm::Function::InternalLinkage, base, mod_.get());
  chunk->addFnAttr(llvm::Attribute::NoUnwind);
  // Out of line: the task, the serial loop over chunks and the rerun below all call it, and
  // inlined into each LLVM would optimise and compile its loops once per caller (a quarter of
  // the GMM gradient's JIT time). One call per chunk costs nothing next to a chunk's work.
  chunk->addFnAttr(llvm::Attribute::NoInline);
  // Where the loop nest is in the source, for the report of codegen/ptx.cpp.
  chunk->addFnAttr(kLoopSourceAttr,
                   s.in.loc.end > s.in.loc.begin ? std::to_string(s.in.loc.begin) : "");
  chunk->splice(chunk->end(), scratch);
  for (unsigned k = 0; k < 3; ++k)
    scratch->getArg(k)->replaceAllUsesWith(chunk->getArg(k));
  scratch->eraseFromParent();
  for (size_t j = 0; j < caps.size(); ++j) {
    llvm::Value* v = caps[j];
    auto argNo = static_cast<unsigned>(3 + j);
    v->replaceUsesWithIf(chunk->getArg(argNo), [&](llvm::Use& u) {
      auto* user = llvm::dyn_cast<llvm::Instruction>(u.getUser());
      return user && user->getFunction() == chunk;
    });
    // What LLVM knew of a pointer outside, it knows inside: tensor parameters and results are
    // noalias (and parameters read-only), as are buffers of entries used once per call.
    if (auto* a = llvm::dyn_cast<llvm::Argument>(v)) {
      if (a->hasNoAliasAttr()) chunk->addParamAttr(argNo, llvm::Attribute::NoAlias);
      if (a->onlyReadsMemory()) chunk->addParamAttr(argNo, llvm::Attribute::ReadOnly);
    } else if (auto* c = llvm::dyn_cast<llvm::CallInst>(v)) {
      if (c->getCalledFunction() && c->getCalledFunction() == takeSoleFn_)
        chunk->addParamAttr(argNo, llvm::Attribute::NoAlias);
    }
  }

  // 3. The task the pool runs: `void (ptr ctx, i64 k, i32 worker)`, the captures in ctx. A
  // failed chunk records its index (the least failed one wins); its error is made again below.
  std::vector<llvm::Type*> fields;
  for (llvm::Value* v : caps)
    fields.push_back(v->getType());
  fields.push_back(i64t); // the least failed chunk
  auto* ctxTy = llvm::StructType::get(ctx_, fields);
  const unsigned failedField = static_cast<unsigned>(caps.size());
  auto* task =
      llvm::Function::Create(llvm::FunctionType::get(B_.getVoidTy(), {ptr, i64t, i32}, false),
                             llvm::Function::InternalLinkage, base + ".task", mod_.get());
  task->addFnAttr(llvm::Attribute::NoUnwind);
  {
    Builder T(llvm::BasicBlock::Create(ctx_, "entry", task));
    llvm::Value* c = task->getArg(0);
    llvm::Value* k = task->getArg(1);
    llvm::Value* err = T.CreateAlloca(errType(), nullptr, "err");
    std::vector<llvm::Value*> args{k, err, T.CreateSExt(task->getArg(2), i64t)};
    for (unsigned j = 0; j < caps.size(); ++j)
      args.push_back(T.CreateLoad(fields[j], T.CreateStructGEP(ctxTy, c, j)));
    llvm::Value* code = T.CreateCall(chunk, args);
    auto* fail = llvm::BasicBlock::Create(ctx_, "fail", task);
    auto* done = llvm::BasicBlock::Create(ctx_, "done", task);
    T.CreateCondBr(T.CreateICmpNE(code, T.getInt32(0)), fail, done);
    T.SetInsertPoint(fail);
    T.CreateAtomicRMW(llvm::AtomicRMWInst::Min, T.CreateStructGEP(ctxTy, c, failedField), k,
                      llvm::MaybeAlign(8), llvm::AtomicOrdering::Monotonic);
    T.CreateBr(done);
    T.SetInsertPoint(done);
    T.CreateRetVoid();
  }
  if (opt_.offload) { // (kTaskAttr: the layout for a device's launch of the same chunk)
    task->setLinkage(llvm::GlobalValue::ExternalLinkage);
    std::string types, why;
    for (llvm::Value* v : caps) {
      std::string t;
      llvm::raw_string_ostream ts(t);
      v->getType()->print(ts);
      types += (types.empty() ? "" : ",") + t;
      const llvm::Value* base = llvm::getUnderlyingObject(v);
      if (v->getType()->isPointerTy() &&
          !llvm::isa<llvm::Argument, llvm::LoadInst, llvm::CallInst>(base))
        why = "it reads '" + base->getName().str() + "' on the host's stack";
    }
    task->addFnAttr(kTaskAttr, types + ";" + why);
  }

  // 4. The call site: the pool when one is set, has two threads or more, and the work is worth
  // waking it; otherwise the chunks in order on this thread (reverseParallel: last to first).
  auto callChunk = [&](llvm::Value* k) {
    std::vector<llvm::Value*> args{k, errArg_, i64(0)};
    args.insert(args.end(), caps.begin(), caps.end());
    return B_.CreateCall(chunk, args);
  };
  auto failWith = [&](llvm::Value* code) { // (the chunk filled *err)
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* fail = llvm::BasicBlock::Create(ctx_, "chunk.fail", fn);
    auto* ok = llvm::BasicBlock::Create(ctx_, "chunk.ok", fn);
    B_.CreateCondBr(B_.CreateICmpNE(code, B_.getInt32(0)), fail, ok,
                    llvm::MDBuilder(ctx_).createBranchWeights(1, 1 << 20));
    B_.SetInsertPoint(fail);
    B_.CreateStore(code, codeSlot_);
    B_.CreateBr(cleanup_);
    B_.SetInsertPoint(ok);
  };
  llvm::StructType* parTy = parallelType();
  if (!usePool) usePool = poolWanted(chunks, work);
  auto* poolBB = llvm::BasicBlock::Create(ctx_, "pool", outer);
  auto* serialBB = llvm::BasicBlock::Create(ctx_, "serial", outer);
  auto* joinBB = llvm::BasicBlock::Create(ctx_, "chunks.done", outer);
  B_.CreateCondBr(usePool, poolBB, serialBB);
  B_.SetInsertPoint(poolBB);
  llvm::Value* p = B_.CreateLoad(ptr, parallel_);
  llvm::Value* workers = B_.CreateLoad(i32, B_.CreateStructGEP(parTy, p, 2));
  llvm::AllocaInst* ctxA = entryAlloca(ctxTy, "chunk.ctx");
  for (unsigned j = 0; j < caps.size(); ++j)
    B_.CreateStore(caps[j], B_.CreateStructGEP(ctxTy, ctxA, j));
  llvm::Value* failed = B_.CreateStructGEP(ctxTy, ctxA, failedField);
  B_.CreateStore(chunks, failed);
  llvm::Value* capped = B_.CreateSelect(B_.CreateICmpSGT(workers, B_.getInt32(kMaxWorkers)),
                                        B_.getInt32(kMaxWorkers), workers);
  auto* forTy = llvm::FunctionType::get(B_.getVoidTy(), {ptr, i64t, i32, ptr, ptr}, false);
  B_.CreateCall(forTy, B_.CreateLoad(ptr, B_.CreateStructGEP(parTy, p, 0)),
                {B_.CreateLoad(ptr, B_.CreateStructGEP(parTy, p, 1)), chunks, capped, task, ctxA});
  llvm::Value* first = B_.CreateLoad(i64t, failed);
  auto* rerun = llvm::BasicBlock::Create(ctx_, "chunk.rerun", outer);
  B_.CreateCondBr(B_.CreateICmpSLT(first, chunks), rerun, joinBB);
  B_.SetInsertPoint(rerun);
  // The least failed chunk again, on this thread: the error a serial run reports (chunks do
  // not depend on each other). Only a chunk that failed for want of memory can pass now.
  failWith(callChunk(first));
  check(B_.getFalse(), SLOPE_ERR_NO_MEMORY, addSite("", {}), 0, i64(0), i64(0));
  B_.CreateBr(joinBB);
  B_.SetInsertPoint(serialBB);
  if (serial) {
    serial([&](llvm::Value* k) { failWith(callChunk(k)); });
  } else {
    std::vector<llvm::Value*> k;
    nestLevel(
        chunks, k, [&] { failWith(callChunk(k[0])); }, opt_.reverseParallel);
  }
  B_.CreateBr(joinBB);
  B_.SetInsertPoint(joinBB);
}

void Gen::outlineLoop(const lower::Stmt& s) {
  std::vector<llvm::Value*> ext = extents(s.extents, s.in.loc);
  llvm::Value* n = ext[0];
  llvm::Value* pos = B_.CreateICmpSGT(n, i64(0));
  // size = ceil(n / kLoopChunks), chunks = ceil(n / size) (none for n = 0); rowChunks: 1.
  llvm::Value* size =
      opt_.rowChunks
          ? i64(1)
          : B_.CreateSelect(
                pos, B_.CreateAdd(B_.CreateUDiv(B_.CreateSub(n, i64(1)), i64(kLoopChunks)), i64(1)),
                i64(1));
  llvm::Value* chunks = B_.CreateSelect(
      pos, B_.CreateAdd(B_.CreateUDiv(B_.CreateSub(n, i64(1)), size), i64(1)), i64(0));
  bool reversed = opt_.reverseParallel;
  outline(s, chunks, workOf(s, ext), [&](llvm::Value* k) { chunkRows(s, ext, k, size, reversed); });
}

void Gen::chunkRows(const lower::Stmt& s, const std::vector<llvm::Value*>& ext, llvm::Value* k,
                    llvm::Value* size, bool reversed) {
  llvm::Value* n = ext[0];
  llvm::Value* lo = B_.CreateMul(k, size);
  llvm::Value* end = B_.CreateAdd(lo, size);
  llvm::Value* hi = B_.CreateSelect(B_.CreateICmpSLT(end, n), end, n);
  NestMarks marks(parallelNest_, markedParallel(s));
  // Rows [a, b) of the first index, inner() at each.
  std::vector<llvm::Value*> i;
  auto rows = [&](llvm::Value* a, llvm::Value* b, const std::function<void()>& inner) {
    nestLevel(
        B_.CreateSub(b, a), i,
        [&] {
          vals_[s.indices[0]] = B_.CreateAdd(a, i[0], "", true, true);
          inner();
        },
        reversed);
  };
  // Every value of the other indices, inner() at each.
  auto others = [&](const std::function<void()>& inner) {
    std::vector<llvm::Value*> rest(ext.begin() + 1, ext.end());
    loopNest(
        rest,
        [&](const std::vector<llvm::Value*>& idx) {
          for (size_t d = 0; d < idx.size(); ++d)
            vals_[s.indices[d + 1]] = idx[d];
          inner();
        },
        reversed);
  };
  auto run = [&] {
    NestMarks inside(parallelNest_, false);
    if (s.tile > 0) prefetchNextRows(s);
    body(s.body);
  };
  if (s.tile <= 0 || ext.size() < 2) {
    rows(lo, hi, [&] { others(run); });
    return;
  }
  // Tiles (lower::Stmt::tile): rows [t0, t1) of the chunk at each value of the other indices,
  // those outside. (tileNests: this order gives the same results.)
  std::vector<llvm::Value*> t;
  llvm::Value* tiles =
      B_.CreateUDiv(B_.CreateAdd(B_.CreateSub(hi, lo), i64(s.tile - 1)), i64(s.tile));
  nestLevel(
      tiles, t,
      [&] {
        llvm::Value* t0 =
            B_.CreateAdd(lo, B_.CreateMul(t[0], i64(s.tile), "", true, true), "", true, true);
        llvm::Value* next = B_.CreateAdd(t0, i64(s.tile));
        llvm::Value* t1 = B_.CreateSelect(B_.CreateICmpSLT(next, hi), next, hi);
        others([&] {
          if (s.tileFirst < 0) return rows(t0, t1, run);
          // (lower::Stmt::tileHead and tileTail: before and after the tile's rows.)
          NestMarks inside(parallelNest_, false);
          vals_[s.tileFirst] = t0;
          vals_[s.tileEnd] = t1;
          body(s.tileHead);
          rows(t0, t1, run);
          body(s.tileTail);
        });
      },
      reversed);
}

// lower::Stmt::prefetchRows, at the body of (i, k): each cache line of row (i, k + 1) of each
// buffer, for writing where the nest writes it. (The row after the last is past the buffer's
// end: a prefetch of any address is a hint that cannot fault.)
void Gen::prefetchNextRows(const lower::Stmt& s) {
  constexpr int64_t kLine = 64;
  std::set<int> written;
  lower::forEachNested(s, [&](const lower::Stmt& t) {
    std::optional<lower::Access> a = lower::accessOf(t);
    if (a && a->writes()) written.insert(a->buffer);
  });
  llvm::Value* i = vals_.at(s.indices[0]);
  llvm::Value* k = vals_.at(s.indices[1]);
  for (int b : s.prefetchRows) {
    const ir::Type& t = f_.types[b];
    llvm::Value* row = i64(1);
    for (size_t d = 2; d < t.shape.size(); ++d)
      row = B_.CreateMul(row, poly(t.shape[d]));
    llvm::Value* next = B_.CreateAdd(B_.CreateMul(i, poly(t.shape[1])), B_.CreateAdd(k, i64(1)));
    llvm::Value* bytes = B_.CreateMul(row, i64(static_cast<int64_t>(dtypeSize(t.dtype))));
    llvm::Value* start = B_.CreateGEP(B_.getInt8Ty(), val(b), B_.CreateMul(next, bytes));
    llvm::Value* lines = B_.CreateUDiv(B_.CreateAdd(bytes, i64(kLine - 1)), i64(kLine));
    const bool write = written.count(b) > 0;
    std::vector<llvm::Value*> l;
    nestLevel(
        lines, l,
        [&] {
          llvm::Value* at = B_.CreateGEP(B_.getInt8Ty(), start, B_.CreateMul(l[0], i64(kLine)));
          B_.CreateIntrinsic(llvm::Intrinsic::prefetch, {B_.getPtrTy()},
                             {at, B_.getInt32(write ? 1 : 0), B_.getInt32(3), B_.getInt32(1)});
        },
        false);
  }
}

// A blocked loop (lower::Stmt::blocked): chunks are blocks of its first index, as many as
// lower::scatterBlocks says (from the extents only); each block runs its iterations in order
// and adds into its own zeroed slice of each partial buffer (one workspace entry per partial:
// blocks copies), and after the blocks each buffer gets its partials added, element by
// element, in block order. Under two blocks the loop runs as it is.
void Gen::outlineBlocks(const lower::Stmt& s) {
  std::vector<llvm::Value*> ext = extents(s.extents, s.in.loc);
  llvm::Value* n = ext[0];
  llvm::Type* f64 = B_.getDoubleTy();
  // The iterations of the nest (Stmt::work): a sum of products of extents, in doubles. An
  // inner extent may be negative here (its loop checks it where it runs): it counts as 0.
  llvm::Value* iters = fconst(DType::F64, 0);
  for (const std::vector<Poly>& product : s.work) {
    llvm::Value* p = fconst(DType::F64, 1);
    for (const Poly& e : product) {
      llvm::Value* v = poly(e);
      v = B_.CreateSelect(B_.CreateICmpSLT(v, i64(0)), i64(0), v);
      p = B_.CreateFMul(p, B_.CreateSIToFP(v, f64));
    }
    iters = B_.CreateFAdd(iters, p);
  }
  llvm::Value* elems = fconst(DType::F64, 0);
  llvm::Value* bytes = fconst(DType::F64, 0);
  for (int b : s.partials) {
    const ir::Type& t = f_.types[b];
    llvm::Value* ne = B_.CreateSIToFP(numel(t), f64);
    elems = B_.CreateFAdd(elems, ne);
    bytes = B_.CreateFAdd(
        bytes, B_.CreateFMul(ne, fconst(DType::F64, static_cast<double>(dtypeSize(t.dtype)))));
  }
  // lower::scatterBlocks, in the same doubles.
  auto fmin = [&](llvm::Value* a, llvm::Value* b) {
    return B_.CreateSelect(B_.CreateFCmpOLT(b, a), b, a);
  };
  auto ffloor = [&](llvm::Value* x) { return B_.CreateUnaryIntrinsic(llvm::Intrinsic::floor, x); };
  llvm::Value* zero = fconst(DType::F64, 0);
  llvm::Value* cap =
      fmin(fconst(DType::F64, static_cast<double>(lower::kMaxBlocks)), B_.CreateSIToFP(n, f64));
  cap = B_.CreateSelect(B_.CreateFCmpOGT(elems, zero),
                        fmin(cap, ffloor(B_.CreateFDiv(iters, elems))), cap);
  cap = B_.CreateSelect(
      B_.CreateFCmpOGT(bytes, zero),
      fmin(cap, ffloor(B_.CreateFDiv(fconst(DType::F64, lower::kMaxPartialBytes), bytes))), cap);
  llvm::Value* blocks = B_.CreateFPToSI(cap, B_.getInt64Ty());

  llvm::Function* fn = B_.GetInsertBlock()->getParent();
  auto* blockedBB = llvm::BasicBlock::Create(ctx_, "blocks", fn);
  auto* plainBB = llvm::BasicBlock::Create(ctx_, "blocks.none", fn);
  auto* joinBB = llvm::BasicBlock::Create(ctx_, "blocks.done", fn);
  B_.CreateCondBr(B_.CreateICmpSGE(blocks, i64(2)), blockedBB, plainBB);
  B_.SetInsertPoint(plainBB);
  if (s.tileFirst >= 0) { // (its tiles' heads and tails: one block of all rows, in tiles)
    ++regionDepth_;
    chunkRows(s, ext, i64(0), n, false);
    --regionDepth_;
  } else {
    regionLoop(s, [](llvm::Value*, llvm::Value*) {});
  }
  B_.CreateBr(joinBB);

  B_.SetInsertPoint(blockedBB);
  // size = ceil(n / blocks), then blocks = ceil(n / size) (n >= blocks >= 2 here).
  llvm::Value* size = B_.CreateAdd(B_.CreateUDiv(B_.CreateSub(n, i64(1)), blocks), i64(1));
  llvm::Value* chunks = B_.CreateAdd(B_.CreateUDiv(B_.CreateSub(n, i64(1)), size), i64(1));
  llvm::Value* work = workOf(s, ext);
  // On the pool each block adds into its own copy of the partials, and the copies go into
  // the buffers in block order after the last block. On this thread the blocks run in order,
  // and each adds into one copy, zeroed before it, that goes into the buffers right after
  // it: every element takes the same additions in the same order, b[e] = (b[e] + p_0[e]) +
  // p_1[e] + ..., so the bits are the pool's, and the partials are one copy in cache instead
  // of one per block in memory (GMM 1k d64 gradient: 19 copies of 429 KB, zeroed, written
  // and read back). (reverseParallel runs the blocks last to first: copies, added after.)
  const bool inOrder = !opt_.reverseParallel;
  llvm::Value* usePool = poolWanted(chunks, work);
  llvm::Value* copies = inOrder ? B_.CreateSelect(usePool, chunks, i64(1)) : chunks;
  // Each copy starts a 64-byte line of its own: blocks run at once on two threads add into
  // neighbouring copies, and a line the two shared would move between the cores at each
  // addition near the boundary (GMM 10k d10: dalphas' copies are 200 bytes, added into for
  // every point).
  std::map<int, llvm::Value*> real, base, count, copyBytes, stride;
  for (int b : s.partials) {
    const ir::Type& t = f_.types[b];
    const int64_t size = static_cast<int64_t>(dtypeSize(t.dtype));
    real[b] = val(b);
    count[b] = numel(t);
    copyBytes[b] = B_.CreateAnd(B_.CreateAdd(B_.CreateMul(count[b], i64(size)), i64(63)), i64(-64));
    stride[b] = B_.CreateUDiv(copyBytes[b], i64(size));
    llvm::Value* sz = B_.CreateAdd(B_.CreateMul(copyBytes[b], copies), i64(64));
    llvm::Value* p = take(i64(blockEntry_.at({&s, b})), sz, true, false);
    llvm::Value* skip = B_.CreateAnd(B_.CreateNeg(B_.CreatePtrToInt(p, B_.getInt64Ty())), i64(63));
    base[b] = B_.CreateInBoundsGEP(B_.getInt8Ty(), p, skip);
  }
  // One copy's elements into its buffer: b[e] = b[e] + copy[e] (elements apart: SIMD).
  auto addCopy = [&](int b, llvm::Value* copy) {
    vals_[b] = real[b];
    llvm::Type* et = elemTy(f_.types[b].dtype);
    std::vector<llvm::Value*> e;
    NestMarks marks(parallelNest_, true);
    nestLevel(
        count[b], e,
        [&] {
          llvm::Value* dst = B_.CreateInBoundsGEP(et, real[b], e[0]);
          llvm::Value* src = B_.CreateInBoundsGEP(et, copy, e[0]);
          B_.CreateStore(B_.CreateFAdd(B_.CreateLoad(et, dst), B_.CreateLoad(et, src)), dst);
        },
        false);
  };
  auto blocksInOrder = [&](const RunChunk& run) {
    std::vector<llvm::Value*> c;
    nestLevel(
        chunks, c,
        [&] {
          // (take zeroed the copy for the first block)
          llvm::Value* later = B_.CreateICmpSGT(c[0], i64(0));
          for (int b : s.partials)
            B_.CreateMemSet(base[b], B_.getInt8(0), B_.CreateSelect(later, copyBytes[b], i64(0)),
                            llvm::MaybeAlign(8));
          run(c[0]);
          for (int b : s.partials)
            addCopy(b, base[b]);
        },
        false);
  };
  outline(
      s, chunks, work,
      [&](llvm::Value* k) {
        llvm::Value* copy = inOrder ? B_.CreateURem(k, copies) : k;
        for (int b : s.partials)
          vals_[b] = B_.CreateInBoundsGEP(elemTy(f_.types[b].dtype), base[b],
                                          B_.CreateMul(copy, stride[b]));
        // (In order within a block, also under reverseParallel: the iterations are sequential.)
        chunkRows(s, ext, k, size, false);
      },
      usePool, inOrder ? blocksInOrder : std::function<void(const RunChunk&)>());
  // After the pool's blocks (or reverseParallel's): the copies into their buffers one after
  // another, in block order: b[e] = (b[e] + p_0[e]) + p_1[e] + ..., as on one thread.
  auto* copiesBB = llvm::BasicBlock::Create(ctx_, "blocks.copies", fn);
  B_.CreateCondBr(inOrder ? usePool : B_.getTrue(), copiesBB, joinBB);
  B_.SetInsertPoint(copiesBB);
  std::vector<llvm::Value*> c;
  nestLevel(
      chunks, c,
      [&] {
        for (int b : s.partials)
          addCopy(b, B_.CreateInBoundsGEP(elemTy(f_.types[b].dtype), base[b],
                                          B_.CreateMul(c[0], stride[b])));
      },
      false);
  B_.CreateBr(joinBB);
  B_.SetInsertPoint(joinBB);
}

llvm::Value* Gen::outlineSum(const lower::Stmt& s) {
  namespace ro = reduce_order;
  bool sum = s.in.op == Op::ReduceSum;
  DType bt = f_.types[s.yield].dtype;
  llvm::Type* ty = scalarTy(bt);
  std::vector<llvm::Value*> ext = extents(s.extents, s.in.loc);
  llvm::Value* e0 = ext[0];
  llvm::Value* groupSize = i64(ext.size() == 1 ? ro::kGroupElems : ro::kGroupRows);
  llvm::Value* groups = B_.CreateSelect(
      B_.CreateICmpSGT(e0, i64(0)),
      B_.CreateAdd(B_.CreateUDiv(B_.CreateSub(e0, i64(1)), groupSize), i64(1)), i64(0));
  // The group results, in the call's workspace (one entry per sum).
  llvm::Value* bytes = B_.CreateMul(groups, i64(static_cast<int64_t>(dtypeSize(bt))));
  bytes = B_.CreateSelect(B_.CreateICmpEQ(bytes, i64(0)), i64(1), bytes);
  llvm::Value* site =
      B_.CreateConstInBoundsGEP1_64(siteType(), B_.CreateLoad(B_.getPtrTy(), wsBase_),
                                    static_cast<uint64_t>(partialEntry_.at(&s)));
  llvm::Value* partial = B_.CreateCall(takeFn(false), {site, bytes, B_.getFalse()});
  check(B_.CreateIsNotNull(partial), SLOPE_ERR_NO_MEMORY, addSite("", {}), 0, i64(0), i64(0));
  outline(s, groups, workOf(s, ext), [&](llvm::Value* g) {
    llvm::Value* r = orderedReduce(s, sum, g);
    B_.CreateStore(r, B_.CreateInBoundsGEP(ty, partial, g));
  });
  // Combined in group order, as orderedReduce combines them.
  llvm::AllocaInst* acc = entryAlloca(ty, "acc");
  B_.CreateStore(fconst(bt, sum ? 0 : 1), acc);
  std::vector<llvm::Value*> g;
  nestLevel(
      groups, g,
      [&] {
        llvm::Value* r = B_.CreateLoad(ty, B_.CreateInBoundsGEP(ty, partial, g[0]));
        llvm::Value* a = B_.CreateLoad(ty, acc);
        B_.CreateStore(sum ? B_.CreateFAdd(a, r) : B_.CreateFMul(a, r), acc);
      },
      false);
  return B_.CreateLoad(ty, acc);
}

llvm::Value* Gen::reduce(const lower::Stmt& s) {
  const Instr& in = s.in;
  DType t = f_.types[in.result].dtype;
  DType bt = f_.types[s.yield].dtype;
  llvm::Type* ty = scalarTy(bt);
  bool fl = isFloat(bt);
  switch (in.op) {
  case Op::ReduceSum:
  case Op::ReduceProd: {
    bool sum = in.op == Op::ReduceSum;
    if (fl && !s.extents.empty() && !s.shortRow) return orderedReduce(s, sum);
    // (A short row's order is the serial one: reduce_order.hpp, lower::Stmt::shortRow.)
    shortUnroll_ = s.shortRow;
    llvm::AllocaInst* acc = entryAlloca(ty, "acc");
    B_.CreateStore(fl ? fconst(bt, sum ? 0 : 1) : i64(sum ? 0 : 1), acc);
    regionLoop(s, [&](llvm::Value* y, llvm::Value*) {
      llvm::Value* a = B_.CreateLoad(ty, acc);
      llvm::Value* n = sum ? (fl ? B_.CreateFAdd(a, y) : B_.CreateAdd(a, y))
                           : (fl ? B_.CreateFMul(a, y) : B_.CreateMul(a, y));
      B_.CreateStore(n, acc);
    });
    return B_.CreateLoad(ty, acc);
  }
  case Op::ReduceMax:
  case Op::ReduceMin:
  case Op::ArgMax:
  case Op::ArgMin: {
    // The first extremal element wins; a NaN wins over everything and stays.
    bool mx = in.op == Op::ReduceMax || in.op == Op::ArgMax;
    llvm::AllocaInst* best = entryAlloca(ty, "best");
    llvm::AllocaInst* at = entryAlloca(B_.getInt64Ty(), "at");
    llvm::AllocaInst* nan = entryAlloca(B_.getInt1Ty(), "nan");
    double inf = std::numeric_limits<double>::infinity();
    B_.CreateStore(
        fl ? fconst(bt, mx ? -inf : inf)
           : i64(mx ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max()),
        best);
    B_.CreateStore(i64(-1), at);
    B_.CreateStore(B_.getFalse(), nan);
    regionLoop(s, [&](llvm::Value* y, llvm::Value* flat) {
      llvm::Value* b = B_.CreateLoad(ty, best);
      llvm::Value* first = B_.CreateICmpSLT(B_.CreateLoad(B_.getInt64Ty(), at), i64(0));
      llvm::Value* better = fl ? (mx ? B_.CreateFCmpOGT(y, b) : B_.CreateFCmpOLT(y, b))
                               : (mx ? B_.CreateICmpSGT(y, b) : B_.CreateICmpSLT(y, b));
      llvm::Value* take = B_.CreateOr(first, better);
      llvm::Value* seen = B_.CreateLoad(B_.getInt1Ty(), nan);
      if (fl) {
        llvm::Value* isnan = B_.CreateFCmpUNO(y, y);
        take = B_.CreateAnd(B_.CreateNot(seen), B_.CreateOr(take, isnan));
        B_.CreateStore(B_.CreateOr(seen, isnan), nan);
      }
      B_.CreateStore(B_.CreateSelect(take, y, b), best);
      B_.CreateStore(B_.CreateSelect(take, flat, B_.CreateLoad(B_.getInt64Ty(), at)), at);
    });
    if (in.op == Op::ArgMax || in.op == Op::ArgMin) return B_.CreateLoad(B_.getInt64Ty(), at);
    return B_.CreateLoad(ty, best);
  }
  case Op::ReduceLse: {
    llvm::AllocaInst* m = entryAlloca(ty, "m");
    llvm::AllocaInst* sum = entryAlloca(ty, "s");
    double inf = std::numeric_limits<double>::infinity();
    B_.CreateStore(fconst(t, -inf), m);
    if (s.onePass) {
      // One pass, as the evaluator's for such a body (a body with effects must not run
      // twice, a costly one need not): m running maximum (NaN wins and stays), s the sum of
      // exp(x - m), rescaled by exp(m_old - x) when x becomes the maximum.
      B_.CreateStore(fconst(t, 0), sum);
      regionLoop(s, [&](llvm::Value* y, llvm::Value*) {
        llvm::Value* cur = B_.CreateLoad(ty, m);
        llvm::Value* sv = B_.CreateLoad(ty, sum);
        llvm::Value* curNan = B_.CreateFCmpUNO(cur, cur);
        llvm::Value* yNan = B_.CreateFCmpUNO(y, y);
        llvm::Value* grows = B_.CreateFCmpOGT(y, cur);
        llvm::Value* empty = B_.CreateFCmpOEQ(cur, fconst(t, -inf));
        // One exp per element: exp(m_old - x) when x is the new maximum, else exp(x - m).
        llvm::Value* e =
            intrinsic(llvm::Intrinsic::exp,
                      B_.CreateSelect(grows, B_.CreateFSub(cur, y), B_.CreateFSub(y, cur)));
        llvm::Value* rescaled = B_.CreateFAdd(B_.CreateFMul(sv, e), fconst(t, 1));
        llvm::Value* added = B_.CreateFAdd(sv, e);
        llvm::Value* same = B_.CreateOr(curNan, yNan);
        llvm::Value* ns = B_.CreateSelect(
            same, sv, B_.CreateSelect(grows, rescaled, B_.CreateSelect(empty, sv, added)));
        llvm::Value* nm =
            B_.CreateSelect(curNan, cur, B_.CreateSelect(B_.CreateOr(yNan, grows), y, cur));
        B_.CreateStore(ns, sum);
        B_.CreateStore(nm, m);
      });
      llvm::Value* mv = B_.CreateLoad(ty, m);
      llvm::Value* res = B_.CreateFAdd(mv, intrinsic(llvm::Intrinsic::log, B_.CreateLoad(ty, sum)));
      llvm::Value* finite = B_.CreateFCmpOLT(intrinsic(llvm::Intrinsic::fabs, mv), fconst(t, inf));
      return B_.CreateSelect(finite, res, mv);
    }
    // Two passes, as the evaluator: m = max (NaN wins), then m + log(sum exp(x - m)); the body
    // is cheap and pure (ir::runBodyOnce), so running it twice costs little and changes nothing.
    regionLoop(s, [&](llvm::Value* y, llvm::Value*) {
      llvm::Value* cur = B_.CreateLoad(ty, m);
      llvm::Value* take = B_.CreateOr(B_.CreateFCmpOGT(y, cur), B_.CreateFCmpUNO(y, y));
      llvm::Value* keepNan = B_.CreateFCmpUNO(cur, cur);
      B_.CreateStore(B_.CreateSelect(B_.CreateAnd(take, B_.CreateNot(keepNan)), y, cur), m);
    });
    llvm::Value* mv = B_.CreateLoad(ty, m);
    B_.CreateStore(fconst(t, 0), sum);
    if (s.extents.size() == 1 && vmath::has("exp", t == DType::F32) && opt_.vectorMath) {
      lseExps(s, mv, sum);
    } else {
      regionLoop(s, [&](llvm::Value* y, llvm::Value*) {
        llvm::Value* e = intrinsic(llvm::Intrinsic::exp, B_.CreateFSub(y, mv));
        B_.CreateStore(B_.CreateFAdd(B_.CreateLoad(ty, sum), e), sum);
      });
    }
    llvm::Value* res = B_.CreateFAdd(mv, intrinsic(llvm::Intrinsic::log, B_.CreateLoad(ty, sum)));
    // m infinite (or NaN): the result is m itself.
    llvm::Value* finite = B_.CreateFCmpOLT(intrinsic(llvm::Intrinsic::fabs, mv), fconst(t, inf));
    return B_.CreateSelect(finite, res, mv);
  }
  default: break;
  }
  throw std::logic_error(std::string("codegen: reduction ") + ir::opName(in.op));
}

// The serial sum of exps kept a logsumexp's exps scalar: LLVM vectorises no loop with an
// in-order floating-point sum (it would have to reassociate), so each element paid a call of
// vmath's scalar exp, all four lanes of libmvec's function for one (vmath.hpp). Computed a
// block at a time into a row first, the exps vectorise (lanes are independent: the same bits
// as the scalar calls), and the sum still takes them in order: the same bits as before.
void Gen::lseExps(const lower::Stmt& s, llvm::Value* m, llvm::AllocaInst* sum) {
  constexpr int64_t kBlock = 64;
  llvm::Type* ty = sum->getAllocatedType();
  llvm::Value* n = extents(s.extents, s.in.loc)[0];
  // (Aligned as its elements: a wider alignment makes the function realign its stack, as
  // orderedReduce's block notes.)
  llvm::AllocaInst* row = entryAlloca(llvm::ArrayType::get(ty, kBlock), "lse.exps");
  llvm::Value* blocks =
      B_.CreateSelect(B_.CreateICmpSGT(n, i64(0)),
                      B_.CreateSDiv(B_.CreateAdd(n, i64(kBlock - 1)), i64(kBlock)), i64(0));
  std::vector<llvm::Value*> b;
  NestMarks serial(parallelNest_, false);
  nestLevel(
      blocks, b,
      [&] {
        llvm::Value* lo = B_.CreateMul(b[0], i64(kBlock), "", true, true);
        llvm::Value* left = B_.CreateSub(n, lo);
        llvm::Value* len = B_.CreateSelect(B_.CreateICmpSLT(left, i64(kBlock)), left, i64(kBlock));
        std::vector<llvm::Value*> j;
        {
          // (The body is pure: ir::runBodyOnce sends one with effects to the one-pass form.)
          NestMarks parallel(parallelNest_, true);
          fewTrips_ = true; // (a row's last partial vector masked: see nestLevel)
          nestLevel(
              len, j,
              [&] {
                NestMarks inside(parallelNest_, false); // (loops in the body are their own)
                llvm::Value* y = bodyAt(s, {B_.CreateAdd(lo, j[0], "", true, true)});
                llvm::Value* e = intrinsic(llvm::Intrinsic::exp, B_.CreateFSub(y, m));
                B_.CreateStore(e, B_.CreateInBoundsGEP(ty, row, j[0]));
              },
              false);
        }
        nestLevel(
            len, j,
            [&] {
              llvm::Value* e = B_.CreateLoad(ty, B_.CreateInBoundsGEP(ty, row, j[0]));
              B_.CreateStore(B_.CreateFAdd(B_.CreateLoad(ty, sum), e), sum);
            },
            false);
      },
      false);
}

void Gen::instr(const Instr& in) {
  llvm::Value* out = nullptr;
  switch (ir::opKind(in.op)) {
  case ir::OpKind::Leaf:
    if (in.op == Op::Param) return; // bound at entry
    if (in.op == Op::Const) {
      DType t = f_.types[in.result].dtype;
      if (isFloat(t))
        out = fconst(t, in.fval);
      else if (t == DType::Bool)
        out = B_.getInt1(in.ival != 0);
      else
        out = i64(in.ival);
    } else {
      out = poly(in.poly);
    }
    break;
  case ir::OpKind::Unary: out = unary(in); break;
  case ir::OpKind::Binary: out = binary(in); break;
  case ir::OpKind::Ternary:
    if (in.op == Op::RevolveNext) {
      // The one schedule function, shared with the evaluator (the JIT defines the symbol).
      llvm::Type* i = B_.getInt64Ty();
      llvm::FunctionCallee fn = mod_->getOrInsertFunction(
          kRevolveNextSymbol, llvm::FunctionType::get(i, {i, i, i}, false));
      out = B_.CreateCall(fn, {val(in.args[0]), val(in.args[1]), val(in.args[2])});
    } else {
      out = B_.CreateSelect(val(in.args[0]), val(in.args[1]), val(in.args[2]));
    }
    break;
  case ir::OpKind::Memory:
    switch (in.op) {
    case Op::Load: {
      const ir::Type& t = f_.types[in.args[0]];
      std::vector<int> idx(in.args.begin() + 1, in.args.end());
      if (t.rank() == 0) {
        // A rank-0 accumulator lives in an alloca.
        out = B_.CreateLoad(scalarTy(t.dtype), val(in.args[0]));
        break;
      }
      out = loadElem(t.dtype, elementPtr(in.args[0], idx, in.checked, in.name, in.loc));
      break;
    }
    case Op::BufAdd: {
      const ir::Type& t = f_.types[in.args[0]];
      std::vector<int> idx(in.args.begin() + 1, in.args.end() - 1);
      llvm::Value* p = t.rank() == 0 ? val(in.args[0])
                                     : elementPtr(in.args[0], idx, in.checked, in.name, in.loc);
      llvm::Value* v = val(in.args.back());
      llvm::Value* old = B_.CreateLoad(scalarTy(t.dtype), p);
      B_.CreateStore(B_.CreateFAdd(old, v), p);
      return;
    }
    case Op::SizeDef: B_.CreateStore(val(in.args[0]), dynSlots_.at(in.name)); return;
    case Op::BufStore: {
      const ir::Type& t = f_.types[in.args[0]];
      std::vector<int> idx(in.args.begin() + 1, in.args.end() - 1);
      llvm::Value* v = val(in.args.back());
      if (t.rank() == 0) {
        B_.CreateStore(v, val(in.args[0])); // a scalar var lives in an alloca
        return;
      }
      storeElem(t.dtype, elementPtr(in.args[0], idx, in.checked, in.name, in.loc), v);
      return;
    }
    case Op::BufZeros: { // a rank-0 accumulator (a tensor one is an Alloc)
      const ir::Type& t = f_.types[in.result];
      llvm::AllocaInst* a = entryAlloca(scalarTy(t.dtype), "adj");
      B_.CreateStore(
          isFloat(t.dtype) ? fconst(t.dtype, 0) : llvm::ConstantInt::get(scalarTy(t.dtype), 0), a);
      out = a;
      break;
    }
    default: throw std::logic_error("codegen: memory op");
    }
    break;
  case ir::OpKind::Region: throw std::logic_error("codegen: a region outside Loop IR");
  }
  if (in.result >= 0) define(in.result, out);
}

void Gen::define(int id, llvm::Value* out) {
  {
    vals_[id] = out;
    bool dominatesAll = llvm::isa<llvm::Constant>(out) || llvm::isa<llvm::AllocaInst>(out) ||
                        llvm::isa<llvm::Argument>(out);
    if (lf_.escaping.count(id) && !dominatesAll) {
      llvm::AllocaInst* slot = entryAlloca(out->getType(), "escape");
      // (Zero on entry: never undef, whatever path reads it.)
      Builder E(ctx_);
      E.SetInsertPoint(entryBlock_, std::prev(entryBlock_->end()));
      E.CreateStore(llvm::Constant::getNullValue(out->getType()), slot);
      B_.CreateStore(out, slot);
      spills_[id] = slot;
    }
  }
}

void Gen::stmt(const lower::Stmt& s) {
  const Instr& in = s.in;
  switch (s.kind) {
  case lower::Stmt::Scalar: instr(in); return;
  case lower::Stmt::Alloc: {
    // buf.zeros (zeroed), a comprehension's buffer, an if's tensor result.
    const ir::Type& t = f_.types[in.result];
    const lower::Buffer& b = lf_.buffers.at(in.result);
    bool zero = in.op == Op::BufZeros && in.ival != ir::kFilledWhole;
    if (in.op == Op::Comp) extents(in.extents, in.loc); // the negative-extent checks
    llvm::Value* out;
    if (b.place == lower::Buffer::Result) {
      out = resultBuffers_.at(in.result);
      if (zero) {
        B_.CreateMemSet(out, B_.getInt8(0), bytesOf(t), llvm::MaybeAlign(8));
      }
    } else if (llvm::Value* small = b.inLoop && regionDepth_ > 0 ? stackBuffer(t) : nullptr) {
      out = small;
      if (zero) B_.CreateMemSet(out, B_.getInt8(0), bytesOf(t), llvm::MaybeAlign(32));
    } else if (b.inLoop && regionDepth_ > 0 && staticShape(t)) {
      out = allocateOnce(in.result, t, zero, in.loc);
    } else {
      out = allocate(in.result, t, zero, in.loc);
    }
    define(in.result, out);
    return;
  }
  case lower::Stmt::Stack: {
    const ir::Type& t = f_.types[in.result];
    auto rb = resultBuffers_.find(in.result);
    auto bi = lf_.buffers.find(in.result);
    const bool inLoop = bi != lf_.buffers.end() && bi->second.inLoop && regionDepth_ > 0;
    llvm::Value* small = rb == resultBuffers_.end() && inLoop ? stackBuffer(t) : nullptr;
    llvm::Value* out = rb != resultBuffers_.end() ? rb->second
                       : small                    ? small
                                                  : allocate(in.result, t, false, in.loc);
    for (size_t k = 0; k < in.args.size(); ++k)
      storeElem(t.dtype, B_.CreateInBoundsGEP(elemTy(t.dtype), out, i64(static_cast<int64_t>(k))),
                val(in.args[k]));
    define(in.result, out);
    return;
  }
  case lower::Stmt::Store: {
    const ir::Type& t = f_.types[s.buffer];
    storeElem(t.dtype, elementPtr(s.buffer, s.indices, true, "", in.loc), val(s.yield));
    return;
  }
  case lower::Stmt::Loop: {
    NestMarks cold(coldNest_, coldNest_ || s.cold);
    if (outlined_.count(&s)) {
      if (s.blocked)
        outlineBlocks(s);
      else if (in.op == Op::For || in.op == Op::Comp)
        outlineLoop(s);
      else
        define(in.result, outlineSum(s));
      return;
    }
    if (in.op == Op::For || in.op == Op::Comp) {
      fewTrips_ = s.fewTrips && s.indices.size() == 1;
      vectorFirst_ = fewTrips_ && s.vectorFirst;
      regionLoop(s, [](llvm::Value*, llvm::Value*) {});
      return;
    }
    define(in.result, reduce(s));
    return;
  }
  case lower::Stmt::If: {
    llvm::Function* fn = B_.GetInsertBlock()->getParent();
    auto* thenBB = llvm::BasicBlock::Create(ctx_, "then", fn);
    auto* elseBB = llvm::BasicBlock::Create(ctx_, "else", fn);
    auto* join = llvm::BasicBlock::Create(ctx_, "join", fn);
    llvm::AllocaInst* slot = nullptr;
    llvm::Value* tensorOut = nullptr;
    const ir::Type* rt = in.result >= 0 ? &f_.types[in.result] : nullptr;
    if (rt && rt->rank() == 0) slot = entryAlloca(scalarTy(rt->dtype), "ifv");
    if (rt && rt->rank() > 0) tensorOut = val(in.result); // its Alloc came first
    // An else that is a cold loop runs only when an entry check fails.
    bool coldElse = !s.orelse.empty() && std::all_of(s.orelse.begin(), s.orelse.end(),
                                                     [](const lower::Stmt& e) { return e.cold; });
    B_.CreateCondBr(val(in.args[0]), thenBB, elseBB,
                    coldElse ? llvm::MDBuilder(ctx_).createBranchWeights(1 << 20, 1) : nullptr);
    for (int k = 0; k < 2; ++k) {
      B_.SetInsertPoint(k == 0 ? thenBB : elseBB);
      ++regionDepth_;
      body(k == 0 ? s.body : s.orelse);
      if (rt) {
        llvm::Value* y = val(k == 0 ? s.yield : s.elseYield);
        if (slot) {
          B_.CreateStore(y, slot);
        } else {
          B_.CreateMemCpy(tensorOut, llvm::MaybeAlign(1), y, llvm::MaybeAlign(1), bytesOf(*rt));
        }
      }
      --regionDepth_;
      B_.CreateBr(join);
    }
    B_.SetInsertPoint(join);
    if (slot) define(in.result, B_.CreateLoad(scalarTy(rt->dtype), slot));
    return;
  }
  }
}

std::unique_ptr<llvm::Module> Gen::run() {
  vals_.assign(f_.types.size(), nullptr);
  std::vector<std::string> sizes = f_.sizeNames();

  // The internal function: typed, tensor pointers noalias. LLVM's interprocedural passes
  // (CalledValuePropagation, IPSCCP, function attributes) revisit a call site in full each
  // time one of its arguments changes state: quadratic in the arguments, 9 s of a gradient
  // over 4000 scalars. So past kMaxImplArgs arguments, the scalars and sizes come through the
  // entry point's arrays (one load each, on entry), and past kMaxImplArgs tensors the tensor
  // pointers too, without noalias. Inlined (the usual case), both forms are the same code.
  size_t np = f_.params.size(), ns = sizes.size(), nr = f_.body.yields.size();
  size_t tensors = 0;
  for (size_t k = 0; k < np; ++k)
    tensors += f_.paramTypes[k].rank() ? 1 : 0;
  for (int y : f_.body.yields)
    tensors += f_.types[y].rank() ? 1 : 0;
  const bool packScalars = np + ns + nr + 1 > kMaxImplArgs;
  const bool packTensors = tensors > kMaxImplArgs;
  auto direct = [&](bool tensor) { return tensor ? !packTensors : !packScalars; };
  // Each parameter's, size's and result's argument in the internal function; -1: packed.
  std::vector<int> paramArg(np, -1), sizeArg(ns, -1), resultArg(nr, -1);
  std::vector<llvm::Type*> ps;
  for (size_t k = 0; k < np; ++k) {
    const ir::Type& t = f_.paramTypes[k];
    if (!direct(t.rank() > 0)) continue;
    paramArg[k] = static_cast<int>(ps.size());
    ps.push_back(t.rank() ? B_.getPtrTy() : scalarTy(t.dtype));
  }
  for (size_t k = 0; k < ns; ++k) {
    if (!direct(false)) continue;
    sizeArg[k] = static_cast<int>(ps.size());
    ps.push_back(B_.getInt64Ty());
  }
  for (size_t k = 0; k < nr; ++k) {
    if (!direct(f_.types[f_.body.yields[k]].rank() > 0)) continue;
    resultArg[k] = static_cast<int>(ps.size());
    ps.push_back(B_.getPtrTy());
  }
  const bool packed = packScalars || packTensors;
  const unsigned arrays = static_cast<unsigned>(ps.size()); // args, sizes, results
  if (packed) ps.insert(ps.end(), 3, B_.getPtrTy());
  ps.push_back(B_.getPtrTy()); // slope_error*
  auto* implTy = llvm::FunctionType::get(B_.getInt32Ty(), ps, false);
  auto* impl = llvm::Function::Create(implTy, llvm::Function::InternalLinkage, f_.name + ".impl",
                                      mod_.get());
  size_t noaliasPtrs = 0;
  for (size_t k = 0; k < np; ++k)
    if (f_.paramTypes[k].rank() && paramArg[k] >= 0) {
      impl->addParamAttr(static_cast<unsigned>(paramArg[k]), llvm::Attribute::NoAlias);
      impl->addParamAttr(static_cast<unsigned>(paramArg[k]), llvm::Attribute::ReadOnly);
      ++noaliasPtrs;
    }
  for (size_t k = 0; k < nr; ++k)
    if (resultArg[k] >= 0) {
      impl->addParamAttr(static_cast<unsigned>(resultArg[k]), llvm::Attribute::NoAlias);
      ++noaliasPtrs;
    }
  impl->addFnAttr(llvm::Attribute::NoUnwind);
  // Inlined into the entry point, each noalias pointer becomes an alias scope, and every load
  // and store gets a list of all the other scopes: size and alias queries quadratic in the
  // number of pointers (a gradient over 2000 scalars has 2000 result pointers). Past a few
  // dozen the call stays a call, and the attributes on its arguments say the same for free.
  if (noaliasPtrs > kMaxInlinedNoalias) impl->addFnAttr(llvm::Attribute::NoInline);

  planThreads();
  // NAME.parallel and NAME__set_parallel (abi.h): the slope_parallel the caller gives.
  parallel_ = new llvm::GlobalVariable(
      *mod_, B_.getPtrTy(), false, llvm::GlobalValue::InternalLinkage,
      llvm::ConstantPointerNull::get(B_.getPtrTy()), f_.name + ".parallel");
  {
    auto* set = llvm::Function::Create(
        llvm::FunctionType::get(B_.getVoidTy(), {B_.getPtrTy()}, false),
        llvm::Function::ExternalLinkage, f_.name + kSetParallelSuffix, mod_.get());
    set->addFnAttr(llvm::Attribute::NoUnwind);
    Builder S(llvm::BasicBlock::Create(ctx_, "entry", set));
    S.CreateStore(set->getArg(0), parallel_);
    S.CreateRetVoid();
  }
  entryBlock_ = llvm::BasicBlock::Create(ctx_, "entry", impl);
  auto* start = llvm::BasicBlock::Create(ctx_, "start", impl);
  cleanup_ = llvm::BasicBlock::Create(ctx_, "cleanup", impl);
  B_.SetInsertPoint(entryBlock_);
  codeSlot_ = B_.CreateAlloca(B_.getInt32Ty(), nullptr, "code");
  wsBase_ = B_.CreateAlloca(B_.getPtrTy(), nullptr, "ws");
  wsIndex_ = B_.CreateAlloca(B_.getInt64Ty(), nullptr, "ws_index");
  B_.CreateStore(B_.getInt32(0), codeSlot_);
  // Packed parameters, sizes and result pointers: loaded on entry, from the entry point's
  // arrays (abi.h: args[k] points at parameter k, sizes[k] is size k, results[k] points at
  // result k's buffer).
  auto fromArray = [&](unsigned array, size_t k, llvm::Type* elem) -> llvm::Value* {
    return B_.CreateLoad(elem,
                         B_.CreateConstInBoundsGEP1_64(elem, impl->getArg(arrays + array), k));
  };
  std::vector<llvm::Value*> resultPtr(nr);
  for (size_t k = 0; k < np; ++k) {
    const ir::Type& t = f_.paramTypes[k];
    if (paramArg[k] >= 0) {
      vals_[f_.params[k]] = impl->getArg(static_cast<unsigned>(paramArg[k]));
    } else {
      llvm::Value* p = fromArray(0, k, B_.getPtrTy());
      vals_[f_.params[k]] = t.rank() ? p : loadElem(t.dtype, p);
    }
  }
  for (size_t k = 0; k < ns; ++k)
    sizeVals_[sizes[k]] = sizeArg[k] >= 0 ? impl->getArg(static_cast<unsigned>(sizeArg[k]))
                                          : fromArray(1, k, B_.getInt64Ty());
  for (size_t k = 0; k < nr; ++k)
    resultPtr[k] = resultArg[k] >= 0 ? impl->getArg(static_cast<unsigned>(resultArg[k]))
                                     : fromArray(2, k, B_.getPtrTy());
  B_.CreateBr(start);
  // Sizes bound inside the function (data-dependent trip counts) live in slots.
  lower::forEachStmt(lf_.body, [&](const lower::Stmt& s) {
    const ir::Instr& in = s.in;
    if (s.kind == lower::Stmt::Scalar && in.op == Op::SizeDef && !dynSlots_.count(in.name)) {
      dynSlots_[in.name] =
          entrySlot(B_.getInt64Ty(), "trips", [](Builder& E) { return E.getInt64(0); });
    }
  });
  // Derived sizes, on entry (ir::DerivedSize).
  for (const ir::DerivedSize& d : f_.derived) {
    B_.SetInsertPoint(entryBlock_, std::prev(entryBlock_->end()));
    llvm::Value* a = poly(d.a);
    llvm::Value* pos = B_.CreateICmpSGT(a, i64(0));
    auto divisor = [&] { // b, at least 1
      llvm::Value* b = poly(d.b);
      return B_.CreateSelect(B_.CreateICmpSLT(b, i64(1)), i64(1), b);
    };
    llvm::Value* v;
    if (d.kind == ir::DerivedSize::CeilSqrt) {
      llvm::Value* r = B_.CreateFPToSI(
          intrinsic(llvm::Intrinsic::ceil,
                    intrinsic(llvm::Intrinsic::sqrt, B_.CreateSIToFP(a, B_.getDoubleTy()))),
          B_.getInt64Ty());
      v = r; // exact for a < 2^52
    } else if (d.kind == ir::DerivedSize::FloorDiv) {
      v = B_.CreateSDiv(a, divisor()); // a > 0 here: rounds down
    } else if (d.kind == ir::DerivedSize::Clamp) {
      llvm::Value* q = B_.CreateSDiv(a, divisor());
      q = B_.CreateSelect(B_.CreateICmpSLT(q, i64(1)), i64(1), q);
      llvm::Value* cap = poly(d.cap);
      q = B_.CreateSelect(B_.CreateICmpSGT(q, cap), cap, q);
      v = B_.CreateSelect(B_.CreateICmpSGT(cap, i64(0)), q, i64(0));
    } else {
      llvm::Value* b = divisor();
      // ceil(a / b) = a / b + (a % b != 0): no a + b - 1 to overflow (the evaluator's too).
      v = B_.CreateAdd(
          B_.CreateSDiv(a, b),
          B_.CreateZExt(B_.CreateICmpNE(B_.CreateSRem(a, b), i64(0)), B_.getInt64Ty()));
    }
    sizeVals_[d.name] = B_.CreateSelect(pos, v, i64(0));
  }
  errArg_ = impl->getArg(impl->arg_size() - 1);

  // Results built in place (lower::Buffer::Result).
  for (const auto& [v, b] : lf_.buffers)
    if (b.place == lower::Buffer::Result) resultBuffers_[v] = resultPtr[b.slot];

  B_.SetInsertPoint(start);
  // Entry checks (ir::EntryCheck), before any work: cond >= 0, unless a guard is below 1.
  for (size_t k = 0; k < f_.entryChecks.size(); ++k) {
    const ir::EntryCheck& c = f_.entryChecks[k];
    llvm::Value* ok = B_.CreateICmpSGE(poly(c.cond), i64(0));
    for (const Poly& g : c.guards)
      ok = B_.CreateOr(ok, B_.CreateICmpSLT(poly(g), i64(1)));
    check(ok, SLOPE_ERR_ENTRY, addSite("", c.loc), static_cast<int>(k), poly(c.got), poly(c.limit));
  }
  body(lf_.body);
  for (size_t k = 0; k < nr; ++k) {
    int y = f_.body.yields[k];
    const ir::Type& t = f_.types[y];
    llvm::Value* dst = resultPtr[k];
    if (resultBuffers_.count(y)) continue;
    if (t.rank() == 0) {
      llvm::Value* v = val(y);
      if (v->getType()->isPointerTy()) v = B_.CreateLoad(scalarTy(t.dtype), v); // accumulator
      storeElem(t.dtype, dst, v);
    } else {
      B_.CreateMemCpy(dst, llvm::MaybeAlign(1), val(y), llvm::MaybeAlign(1), bytesOf(t));
    }
  }
  B_.CreateBr(cleanup_);
  workspace(impl);

  // The C ABI entry point: unpack args / sizes / results and call the internal function.
  auto* abiTy = llvm::FunctionType::get(
      B_.getInt32Ty(), {B_.getPtrTy(), B_.getPtrTy(), B_.getPtrTy(), B_.getPtrTy()}, false);
  auto* abi = llvm::Function::Create(abiTy, llvm::Function::ExternalLinkage, f_.name, mod_.get());
  abi->addFnAttr(llvm::Attribute::NoUnwind);
  B_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", abi));
  std::vector<llvm::Value*> callArgs;
  for (size_t k = 0; k < np; ++k) {
    if (paramArg[k] < 0) continue;
    llvm::Value* p = B_.CreateLoad(B_.getPtrTy(),
                                   B_.CreateConstInBoundsGEP1_64(B_.getPtrTy(), abi->getArg(0), k));
    const ir::Type& t = f_.paramTypes[k];
    callArgs.push_back(t.rank() ? p : loadElem(t.dtype, p));
  }
  for (size_t k = 0; k < ns; ++k)
    if (sizeArg[k] >= 0)
      callArgs.push_back(B_.CreateLoad(
          B_.getInt64Ty(), B_.CreateConstInBoundsGEP1_64(B_.getInt64Ty(), abi->getArg(1), k)));
  for (size_t k = 0; k < nr; ++k)
    if (resultArg[k] >= 0)
      callArgs.push_back(B_.CreateLoad(
          B_.getPtrTy(), B_.CreateConstInBoundsGEP1_64(B_.getPtrTy(), abi->getArg(2), k)));
  if (packed)
    for (unsigned a = 0; a < 3; ++a)
      callArgs.push_back(abi->getArg(a));
  callArgs.push_back(abi->getArg(3));
  B_.CreateRet(B_.CreateCall(impl, callArgs));

  std::string err;
  llvm::raw_string_ostream os(err);
  if (llvm::verifyModule(*mod_, &os))
    throw std::logic_error("codegen produced invalid LLVM IR for " + f_.name + ": " + os.str());
  return std::move(mod_);
}

} // namespace

std::unique_ptr<llvm::Module> generate(const ir::Function& f, llvm::LLVMContext& ctx,
                                       std::vector<Site>& sites, const JitOptions& opt) {
  lower::LowerOptions lo;
  if (opt.minTriangleColumns >= 0) lo.minTriangleColumns = opt.minTriangleColumns;
  if (opt.minScatterColumns >= 0) lo.minScatterColumns = opt.minScatterColumns;
  if (opt.tileRows >= 0) lo.tileRows = opt.tileRows;
  lower::Function lf = lower::lower(f, lo);
  Gen g(lf, ctx, sites, opt);
  return g.run();
}

} // namespace slope::codegen
