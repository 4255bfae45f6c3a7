// CUDA kernels from the outlined chunks of parallel loop nests (ptx.hpp).
#include "compiler/codegen/ptx.hpp"

#include "compiler/codegen/codegen_internal.hpp"

#include <llvm/Bitcode/BitcodeReader.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/GlobalVariable.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/IntrinsicsNVPTX.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Linker/Linker.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

namespace slope::codegen {
namespace {

constexpr const char* kTriple = "nvptx64-nvidia-cuda";

/// The architectures LLVM 19 writes PTX for that Slope offers: Pascal to Hopper. Every one
/// takes PTX ISA 7.8 (CUDA 11.8), the first that knows sm_90.
const std::set<std::string>& architectures() {
  static const std::set<std::string> a{"sm_60", "sm_61", "sm_70", "sm_72", "sm_75",
                                       "sm_80", "sm_86", "sm_87", "sm_89", "sm_90"};
  return a;
}

void initNVPTX() {
  static std::once_flag once;
  std::call_once(once, [] {
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
  });
}

/// libm functions (double, and float with an `f`) that libdevice has as __nv_NAME, with the
/// same meaning: a chunk may call them.
bool deviceMath(const std::string& name) {
  static const std::set<std::string> base{
      "exp",   "exp2",  "expm1", "log",   "log2",  "log10",  "log1p",  "pow",  "sin",
      "cos",   "tan",   "asin",  "acos",  "atan",  "atan2",  "sinh",   "cosh", "tanh",
      "asinh", "acosh", "atanh", "erf",   "erfc",  "lgamma", "tgamma", "cbrt", "sqrt",
      "fabs",  "floor", "ceil",  "trunc", "round", "fmod",   "fmin",   "fmax", "hypot"};
  // lgamma_r and lgammaf_r (codegen.cpp's lgamma): the sign they also write is unused.
  if (base.count(name) || name == "lgamma_r" || name == "lgammaf_r") return true;
  return name.size() > 1 && name.back() == 'f' && base.count(name.substr(0, name.size() - 1));
}

/// The libm name of a math intrinsic NVPTX has no instruction for (llvm.exp.f64: "exp"), or
/// empty: it is either native (sqrt, fabs, fma, floor, minnum, ...) or not math at all.
std::string intrinsicMath(const llvm::Function& fn) {
  static const std::map<llvm::Intrinsic::ID, const char*> names{
      {llvm::Intrinsic::exp, "exp"},     {llvm::Intrinsic::exp2, "exp2"},
      {llvm::Intrinsic::log, "log"},     {llvm::Intrinsic::log2, "log2"},
      {llvm::Intrinsic::log10, "log10"}, {llvm::Intrinsic::sin, "sin"},
      {llvm::Intrinsic::cos, "cos"},     {llvm::Intrinsic::tan, "tan"},
      {llvm::Intrinsic::pow, "pow"}};
  auto it = names.find(fn.getIntrinsicID());
  if (it == names.end()) return {};
  llvm::Type* t = fn.getReturnType();
  if (t->isFloatTy()) return std::string(it->second) + "f";
  if (t->isDoubleTy()) return it->second;
  return {}; // (vector forms: not made with vector math off)
}

/// Why fn cannot run on the device, or empty if it can: everything it calls, itself
/// included, is an intrinsic, a libdevice math function or another such function.
std::string hostOnly(const llvm::Function& fn, std::map<const llvm::Function*, std::string>& memo) {
  auto known = memo.find(&fn);
  if (known != memo.end()) return known->second;
  memo[&fn] = {}; // (recursion: generated code has none, and a cycle adds no reason)
  std::string why;
  for (const llvm::BasicBlock& bb : fn) {
    for (const llvm::Instruction& in : bb) {
      // A global the host writes (a workspace table, say) has a copy of its own on the
      // device that the host never fills: such a chunk stays on the host.
      for (const llvm::Use& u : in.operands()) {
        const llvm::Value* v = u.get();
        if (const auto* ce = llvm::dyn_cast<llvm::ConstantExpr>(v)) v = ce->getOperand(0);
        if (const auto* g = llvm::dyn_cast<llvm::GlobalVariable>(v); g && !g->isConstant())
          why = "uses " + g->getName().str() + ", a global of the host's";
      }
      if (!why.empty()) break;
      const auto* call = llvm::dyn_cast<llvm::CallBase>(&in);
      if (!call) continue;
      const llvm::Function* callee = call->getCalledFunction();
      if (!callee) {
        why = "makes an indirect call";
      } else if (callee->isIntrinsic()) {
        continue; // (the math ones become libdevice calls; NVPTX lowers the rest)
      } else if (callee->isDeclaration()) {
        std::string n = callee->getName().str();
        if (deviceMath(n)) continue;
        if (n == "malloc" || n == "calloc" || n == "free" || n == kCountedMallocSymbol ||
            n == kCountedCallocSymbol || n == kCountedFreeSymbol || n == kManagedMallocSymbol ||
            n == kManagedCallocSymbol || n == kManagedFreeSymbol)
          why = "allocates memory (a temporary of its own from the workspace)";
        else
          why = "calls " + n + ", which has no device version";
      } else {
        why = hostOnly(*callee, memo);
      }
      if (!why.empty()) break;
    }
    if (!why.empty()) break;
  }
  memo[&fn] = why;
  return why;
}

/// Replaces fn's calls of math intrinsics and libm functions by libdevice's __nv_ functions.
void useLibdevice(llvm::Function& fn, llvm::Module& m) {
  std::vector<llvm::CallInst*> calls;
  for (llvm::BasicBlock& bb : fn)
    for (llvm::Instruction& in : bb)
      if (auto* call = llvm::dyn_cast<llvm::CallInst>(&in))
        if (call->getCalledFunction()) calls.push_back(call);
  for (llvm::CallInst* call : calls) {
    llvm::Function* callee = call->getCalledFunction();
    std::string libm = callee->isIntrinsic() ? intrinsicMath(*callee)
                       : callee->isDeclaration() && deviceMath(callee->getName().str())
                           ? callee->getName().str()
                           : std::string();
    if (libm.empty()) continue;
    if (libm == "lgamma_r" || libm == "lgammaf_r") { // (x, &sign) -> __nv_lgamma(x)
      llvm::Type* t = call->getType();
      auto nv = m.getOrInsertFunction(libm == "lgamma_r" ? "__nv_lgamma" : "__nv_lgammaf", t, t);
      llvm::IRBuilder<> B(call);
      call->replaceAllUsesWith(B.CreateCall(nv, {call->getArgOperand(0)}));
      call->eraseFromParent();
      continue;
    }
    auto nv = m.getOrInsertFunction("__nv_" + libm, call->getFunctionType());
    call->setCalledFunction(nv);
  }
}

/// The kernel of chunk function c (`i32 (i64 k, ptr err, i64 worker, captures...)`).
llvm::Function* makeKernel(llvm::Module& m, llvm::Function* c, const std::string& name) {
  llvm::LLVMContext& ctx = m.getContext();
  llvm::IRBuilder<> B(ctx);
  llvm::Type* i64 = B.getInt64Ty();
  llvm::FunctionType* ct = c->getFunctionType();
  std::vector<llvm::Type*> ps{i64, B.getPtrTy()};
  for (unsigned j = 3; j < ct->getNumParams(); ++j)
    ps.push_back(ct->getParamType(j));
  auto* k = llvm::Function::Create(llvm::FunctionType::get(B.getVoidTy(), ps, false),
                                   llvm::Function::ExternalLinkage, name, m);
  k->setCallingConv(llvm::CallingConv::PTX_Kernel);
  k->addFnAttr(llvm::Attribute::NoUnwind);
  for (unsigned j = 3; j < ct->getNumParams(); ++j)
    for (auto kind : {llvm::Attribute::NoAlias, llvm::Attribute::ReadOnly})
      if (c->hasParamAttribute(j, kind)) k->addParamAttr(j - 1, kind);
  auto* entry = llvm::BasicBlock::Create(ctx, "entry", k);
  auto* run = llvm::BasicBlock::Create(ctx, "run", k);
  auto* fail = llvm::BasicBlock::Create(ctx, "fail", k);
  auto* done = llvm::BasicBlock::Create(ctx, "done", k);
  B.SetInsertPoint(entry);
  auto sreg = [&](llvm::Intrinsic::ID id) {
    return B.CreateZExt(B.CreateIntrinsic(id, {}, {}), i64);
  };
  // The global thread index: block index * block size + thread index.
  llvm::Value* idx = B.CreateAdd(B.CreateMul(sreg(llvm::Intrinsic::nvvm_read_ptx_sreg_ctaid_x),
                                             sreg(llvm::Intrinsic::nvvm_read_ptx_sreg_ntid_x)),
                                 sreg(llvm::Intrinsic::nvvm_read_ptx_sreg_tid_x));
  B.CreateCondBr(B.CreateICmpULT(idx, k->getArg(0)), run, done);
  B.SetInsertPoint(run);
  // abi.h's slope_error, which the chunk fills when it fails: the host runs that chunk
  // again for the message, so this copy is the thread's own and is dropped.
  llvm::Value* err = B.CreateAlloca(llvm::ArrayType::get(i64, 4), nullptr, "err");
  std::vector<llvm::Value*> args{idx, err, B.getInt64(0)};
  for (unsigned j = 2; j < k->arg_size(); ++j)
    args.push_back(k->getArg(j));
  llvm::Value* code = B.CreateCall(c, args);
  B.CreateCondBr(B.CreateICmpNE(code, B.getInt32(0)), fail, done);
  B.SetInsertPoint(fail);
  B.CreateAtomicRMW(llvm::AtomicRMWInst::Min, k->getArg(1), idx, llvm::MaybeAlign(8),
                    llvm::AtomicOrdering::Monotonic);
  B.CreateBr(done);
  B.SetInsertPoint(done);
  B.CreateRetVoid();
  // Older NVPTX readers know a kernel by this annotation, newer ones by the calling convention.
  llvm::Metadata* md[] = {llvm::ValueAsMetadata::get(k), llvm::MDString::get(ctx, "kernel"),
                          llvm::ValueAsMetadata::get(B.getInt32(1))};
  m.getOrInsertNamedMetadata("nvvm.annotations")->addOperand(llvm::MDNode::get(ctx, md));
  // On the device the chunk is the kernel's body: inlined, as one function to optimise.
  c->removeFnAttr(llvm::Attribute::NoInline);
  c->addFnAttr(llvm::Attribute::AlwaysInline);
  return k;
}

/// Removes everything of m that no kernel reaches: the host function, its tasks and the
/// chunks that stay on the host.
void keepOnly(llvm::Module& m, const std::vector<llvm::Function*>& kernels) {
  std::set<llvm::Function*> keep(kernels.begin(), kernels.end());
  std::vector<llvm::Function*> work(kernels.begin(), kernels.end());
  while (!work.empty()) {
    llvm::Function* f = work.back();
    work.pop_back();
    for (llvm::BasicBlock& bb : *f)
      for (llvm::Instruction& in : bb)
        if (auto* call = llvm::dyn_cast<llvm::CallBase>(&in))
          if (llvm::Function* callee = call->getCalledFunction())
            if (keep.insert(callee).second && !callee->isDeclaration()) work.push_back(callee);
  }
  for (llvm::Function& f : m)
    if (!keep.count(&f) && !f.isDeclaration()) f.deleteBody();
  for (bool again = true; again;) {
    again = false;
    for (llvm::Function& f : llvm::make_early_inc_range(m))
      if (!keep.count(&f) && f.use_empty()) {
        f.eraseFromParent();
        again = true;
      }
    for (llvm::GlobalVariable& g : llvm::make_early_inc_range(m.globals()))
      if (g.use_empty()) {
        g.eraseFromParent();
        again = true;
      }
  }
}

std::unique_ptr<llvm::TargetMachine> ptxTargetMachine(const std::string& arch, int optLevel) {
  initLLVM();
  initNVPTX();
  std::string error;
  const llvm::Target* t = llvm::TargetRegistry::lookupTarget(kTriple, error);
  if (!t) throw std::runtime_error("LLVM's NVPTX target is missing: " + error);
  llvm::CodeGenOptLevel level = optLevel <= 0   ? llvm::CodeGenOptLevel::None
                                : optLevel == 1 ? llvm::CodeGenOptLevel::Less
                                : optLevel == 2 ? llvm::CodeGenOptLevel::Default
                                                : llvm::CodeGenOptLevel::Aggressive;
  return std::unique_ptr<llvm::TargetMachine>(t->createTargetMachine(
      kTriple, arch, "+ptx78", llvm::TargetOptions(), std::nullopt, std::nullopt, level));
}

} // namespace

std::string findLibdevice() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const char* env = std::getenv("SLOPE_LIBDEVICE"); env && *env)
    return fs::is_regular_file(env, ec) ? std::string(env) : std::string();
  std::vector<fs::path> roots;
  if (const char* home = std::getenv("CUDA_HOME"); home && *home) roots.emplace_back(home);
  roots.emplace_back("/usr/local/cuda");
  std::vector<fs::path> versioned; // /usr/local/cuda-X.Y, newest first
  for (const auto& e : fs::directory_iterator("/usr/local", ec))
    if (e.path().filename().string().rfind("cuda-", 0) == 0) versioned.push_back(e.path());
  std::sort(versioned.rbegin(), versioned.rend());
  roots.insert(roots.end(), versioned.begin(), versioned.end());
  roots.emplace_back("/usr/lib/cuda");
  roots.emplace_back("/usr/lib/nvidia-cuda-toolkit");
  for (const fs::path& r : roots) {
    fs::path p = r / "nvvm" / "libdevice" / "libdevice.10.bc";
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return {};
}

PtxModule emitPtx(const ir::Function& f, const PtxOptions& opt) {
  if (!architectures().count(opt.arch)) {
    std::string known;
    for (const auto& a : architectures())
      known += (known.empty() ? "" : ", ") + a;
    throw std::invalid_argument("unknown CUDA architecture '" + opt.arch + "' (" + known + ")");
  }
  PtxModule out;
  out.arch = opt.arch;
  auto tm = ptxTargetMachine(opt.arch, opt.optLevel);
  llvm::LLVMContext ctx;
  std::vector<Site> sites;
  JitOptions jo;
  jo.optLevel = opt.optLevel;
  jo.vectorMath = false;
  jo.rowChunks = true;
  jo.offload = true; // (the host's code for the kernels is generated so: the same captures)
  std::unique_ptr<llvm::Module> m = generate(f, ctx, sites, jo);

  // The chunks, in the order of their loop nests, and the kernels of those that can run there.
  std::map<const llvm::Function*, std::string> memo;
  std::vector<llvm::Function*> kernels;
  std::vector<llvm::Function*> chunks;
  for (llvm::Function& fn : *m)
    if (fn.hasFnAttribute(kLoopSourceAttr)) chunks.push_back(&fn);
  std::string prefix = f.name + ".chunk";
  for (llvm::Function* c : chunks) {
    PtxLoop loop;
    loop.chunk = c->getName().str();
    llvm::StringRef at = c->getFnAttribute(kLoopSourceAttr).getValueAsString();
    if (f.file && !at.empty()) // (none: a loop nest the adjoint made)
      loop.where = f.file->position(static_cast<uint32_t>(std::stoul(at.str())));
    loop.why = hostOnly(*c, memo);
    if (loop.why.empty()) {
      loop.kernel = f.name + "__chunk" + loop.chunk.substr(prefix.size());
      kernels.push_back(makeKernel(*m, c, loop.kernel));
    }
    out.loops.push_back(std::move(loop));
  }
  if (kernels.empty()) // (still a PTX module, with no kernel in it)
    m = std::make_unique<llvm::Module>(f.name, ctx);

  for (llvm::Function& fn : *m)
    if (!fn.isDeclaration()) useLibdevice(fn, *m); // (the host's go next)
  keepOnly(*m, kernels);
  // libdevice is linked where a kept function calls it.
  bool math = false;
  for (llvm::Function& fn : *m)
    math = math || (fn.isDeclaration() && fn.getName().starts_with("__nv_"));
  m->setTargetTriple(kTriple);
  m->setDataLayout(tm->createDataLayout());
  if (math) {
    out.libdevice = opt.libdevice.empty() ? findLibdevice() : opt.libdevice;
    if (out.libdevice.empty())
      throw std::runtime_error(
          "the kernels call math functions and libdevice.10.bc was not found (set "
          "SLOPE_LIBDEVICE, or install the CUDA toolkit under /usr/local/cuda)");
    auto buf = llvm::MemoryBuffer::getFile(out.libdevice);
    if (!buf) throw std::runtime_error("cannot read " + out.libdevice);
    auto lib = llvm::parseBitcodeFile((*buf)->getMemBufferRef(), ctx);
    if (!lib) {
      std::string e = llvm::toString(lib.takeError());
      throw std::runtime_error(out.libdevice + " is not LLVM bitcode: " + e);
    }
    (*lib)->setTargetTriple(kTriple);
    (*lib)->setDataLayout(m->getDataLayout());
    if (llvm::Linker::linkModules(*m, std::move(*lib), llvm::Linker::Flags::LinkOnlyNeeded))
      throw std::runtime_error("linking " + out.libdevice + " failed");
    // libdevice asks __nvvm_reflect whether denormals flush to zero: they do not (CUDA's
    // default without --use_fast_math), as on the CPU.
    m->addModuleFlag(llvm::Module::Override, "nvvm-reflect-ftz", uint32_t{0});
  }
  std::set<const llvm::Function*> entry(kernels.begin(), kernels.end());
  for (llvm::Function& fn : *m)
    if (!fn.isDeclaration() && !entry.count(&fn)) fn.setLinkage(llvm::GlobalValue::InternalLinkage);
  std::string broken;
  llvm::raw_string_ostream bs(broken);
  if (llvm::verifyModule(*m, &bs))
    throw std::logic_error("generated kernels for " + f.name + " are not valid LLVM IR: " + broken);
  optimize(*m, *tm, opt.optLevel);
  out.ptx = machineCode(*m, *tm, false);
  return out;
}

std::string printPtx(const PtxModule& m, const std::string& function) {
  size_t n = 0;
  for (const PtxLoop& l : m.loops)
    n += !l.kernel.empty();
  std::string s = "// " + function + ": " + std::to_string(n) + " of " +
                  std::to_string(m.loops.size()) + " parallel loop nests are CUDA kernels (" +
                  m.arch + (m.libdevice.empty() ? "" : ", math from " + m.libdevice) + ")\n";
  for (const PtxLoop& l : m.loops) {
    s += "//   " + (l.where.empty() ? l.chunk : l.where + " (" + l.chunk + ")") + ": ";
    s += l.kernel.empty() ? "host, " + l.why + "\n" : "kernel " + l.kernel + "\n";
  }
  if (m.loops.empty()) s += "//   (no parallel loop nest: everything runs on the host)\n";
  return s + m.ptx;
}

} // namespace slope::codegen
