// Object files: each function's module made and optimised as the JIT makes it (generate +
// optimize, so the code and its results are the same bits for the same CPU), linked into one
// module, and compiled to a relocatable, position-independent ELF object.

#include "compiler/codegen/object.hpp"

#include "compiler/codegen/codegen_internal.hpp"
#include "compiler/support/special.hpp"
#include "compiler/support/vmath.hpp"

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/Linker/Linker.h>
#include <llvm/MC/MCSubtargetInfo.h>
#include <llvm/Target/TargetMachine.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace slope::codegen {
namespace {

std::unique_ptr<llvm::TargetMachine> targetMachine(const ObjectOptions& opt) {
  if (std::find(kObjectCpus.begin(), kObjectCpus.end(), opt.cpu) == kObjectCpus.end()) {
    std::string list;
    for (const auto& c : kObjectCpus)
      list += (list.empty() ? "" : ", ") + c;
    throw std::invalid_argument("unknown CPU '" + opt.cpu + "' (" + list + ")");
  }
  return objectTargetMachine(opt.cpu, opt.optLevel);
}

/// The bodies of the scalar math entry points generated code calls (kVectorMathPrefix + a
/// libm name): lane 0 of libmvec's AVX2 function on a splat, as compiler/support/vmath.cpp
/// defines them for the JIT, so an element gets the same bits as there. Added after
/// optimisation, as the JIT links them: out of line, so the vectoriser still sees the scalar
/// calls it maps to the vector functions.
void defineVectorMath(llvm::Module& m, const llvm::TargetMachine& tm) {
  for (llvm::Function& fn : m) {
    if (!fn.isDeclaration() || !fn.getName().starts_with(kVectorMathPrefix)) continue;
    std::string libm = fn.getName().drop_front(std::string(kVectorMathPrefix).size()).str();
    bool f32 = fn.getReturnType()->isFloatTy();
    std::string base = f32 ? libm.substr(0, libm.size() - 1) : libm;
    std::string vector = vmath::vectorName(base, f32);
    if (vector.empty()) throw std::logic_error("no libmvec function for " + libm);
    auto* vt = llvm::FixedVectorType::get(fn.getReturnType(), f32 ? 8 : 4);
    llvm::FunctionCallee vf = m.getOrInsertFunction(vector, vt, vt);
    fn.setLinkage(llvm::GlobalValue::InternalLinkage);
    fn.addFnAttr(llvm::Attribute::NoInline);
    fn.addFnAttr("target-cpu", tm.getTargetCPU());
    if (!tm.getTargetFeatureString().empty())
      fn.addFnAttr("target-features", tm.getTargetFeatureString());
    llvm::IRBuilder<> b(llvm::BasicBlock::Create(m.getContext(), "entry", &fn));
    llvm::Value* splat = b.CreateVectorSplat(vt->getNumElements(), fn.getArg(0));
    b.CreateRet(b.CreateExtractElement(b.CreateCall(vf, {splat}), uint64_t{0}));
  }
}

} // namespace

ObjectCode emitObject(const std::vector<ObjectFunction>& fns, const ObjectOptions& opt) {
  std::unique_ptr<llvm::TargetMachine> tm = targetMachine(opt);
  ObjectCode out;
  out.cpu = tm->getTargetCPU().str();
  // libmvec's functions take AVX2 vectors: only for a CPU that has them.
  bool avx2 = tm->getMCSubtargetInfo()->checkFeatures("+avx2,+fma");
  llvm::LLVMContext ctx;
  auto all = std::make_unique<llvm::Module>("slope", ctx);
  all->setDataLayout(tm->createDataLayout());
  all->setTargetTriple(tm->getTargetTriple().str());
  for (const ObjectFunction& of : fns) {
    JitOptions jo;
    jo.optLevel = opt.optLevel;
    jo.vectorMath = avx2;
    out.sites.emplace_back();
    std::unique_ptr<llvm::Module> m = generate(of.f, ctx, out.sites.back(), jo);
    optimize(*m, *tm, opt.optLevel);
    llvm::Function* abi = m->getFunction(of.f.name);
    if (!abi) throw std::logic_error("generated code has no function " + of.f.name);
    abi->setName(of.f.name + "__abi");
    // Internal names that two modules share are renamed by the linker; external ones clash.
    if (llvm::Linker::linkModules(*all, std::move(m)))
      throw std::invalid_argument("two functions of the object export the same symbol (" +
                                  of.f.name + ")");
  }
  defineVectorMath(*all, *tm);
  for (const char* s :
       {kRevolveNextSymbol, kDigammaSymbol, kDigammafSymbol, kTrigammaSymbol, kTrigammafSymbol})
    if (llvm::Function* fn = all->getFunction(s); fn && !fn->use_empty()) out.runtime.insert(s);
  for (const llvm::Function& fn : *all)
    if (fn.isDeclaration() && fn.getName().starts_with("_ZGV")) out.vectorMath = true;
  out.bytes = machineCode(*all, *tm, true);
  return out;
}

} // namespace slope::codegen
