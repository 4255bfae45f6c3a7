// Optimisation (the new pass manager's default pipelines) and in-process compilation with
// ORC's LLJIT. Machine code is tuned for the host CPU, so LLVM's vectoriser uses its vector
// width.

#include "compiler/codegen/codegen_internal.hpp"
#include "compiler/support/revolve.hpp"
#include "compiler/support/special.hpp"
#include "compiler/support/thread_pool.hpp"
#include "compiler/support/vmath.hpp"

#include <llvm/Analysis/TargetLibraryInfo.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace slope::codegen {
namespace {

extern "C" int64_t revolveNextC(int64_t cur, int64_t end, int64_t free) {
  return slope::revolveNext(cur, end, free);
}

std::atomic<int64_t> countedAllocs{0}, countedFrees{0};
extern "C" void* countedMalloc(size_t n) {
  countedAllocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n);
}
extern "C" void* countedCalloc(size_t n, size_t k) {
  countedAllocs.fetch_add(1, std::memory_order_relaxed);
  return std::calloc(n, k);
}
extern "C" void countedFree(void* p) {
  if (p) countedFrees.fetch_add(1, std::memory_order_relaxed);
  std::free(p);
}

void initLLVM() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
  });
}

/// The vectoriser's mappings from the scalar entry points of compiler/support/vmath.hpp to
/// libmvec's AVX2 functions (4 doubles, 8 floats).
std::vector<llvm::VecDesc> vectorMathMappings() {
  // VecDesc holds StringRefs: the names live as long as the process.
  static const std::vector<std::array<std::string, 3>> names = [] {
    std::vector<std::array<std::string, 3>> v;
    for (bool f32 : {false, true})
      for (const char* n : {
#define SLOPE_VM_NAME(n) #n,
               SLOPE_VECTOR_MATH(SLOPE_VM_NAME)
#undef SLOPE_VM_NAME
           })
        if (vmath::has(n, f32))
          v.push_back({kVectorMathPrefix + std::string(n) + (f32 ? "f" : ""),
                       vmath::vectorName(n, f32), f32 ? "_ZGV_LLVM_N8v" : "_ZGV_LLVM_N4v"});
    return v;
  }();
  std::vector<llvm::VecDesc> out;
  for (const auto& [scalar, vector, abi] : names)
    out.emplace_back(scalar, vector, llvm::ElementCount::getFixed(abi == "_ZGV_LLVM_N8v" ? 8 : 4),
                     false, abi);
  return out;
}

template <class T> T orThrow(llvm::Expected<T> v, const char* what) {
  if (!v) throw std::runtime_error(std::string(what) + ": " + llvm::toString(v.takeError()));
  return std::move(*v);
}

llvm::orc::JITTargetMachineBuilder hostBuilder(int optLevel) {
  auto jtmb = orThrow(llvm::orc::JITTargetMachineBuilder::detectHost(), "detecting the host");
  jtmb.setCodeGenOptLevel(optLevel == 0   ? llvm::CodeGenOptLevel::None
                          : optLevel == 1 ? llvm::CodeGenOptLevel::Less
                          : optLevel == 2 ? llvm::CodeGenOptLevel::Default
                                          : llvm::CodeGenOptLevel::Aggressive);
  return jtmb;
}

/// Tags functions with the host CPU and optimises the module.
void optimize(llvm::Module& m, llvm::TargetMachine& tm, int optLevel) {
  m.setDataLayout(tm.createDataLayout());
  m.setTargetTriple(tm.getTargetTriple().str());
  std::string cpu = tm.getTargetCPU().str();
  std::string features = tm.getTargetFeatureString().str();
  for (llvm::Function& fn : m) {
    if (fn.isDeclaration()) continue;
    fn.addFnAttr("target-cpu", cpu);
    if (!features.empty()) fn.addFnAttr("target-features", features);
  }
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder pb(&tm);
  llvm::TargetLibraryInfoImpl tlii(tm.getTargetTriple());
  tlii.addVectorizableFunctions(vectorMathMappings());
  fam.registerPass([&] { return llvm::TargetLibraryAnalysis(tlii); }); // (before the default)
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::OptimizationLevel level = optLevel <= 0   ? llvm::OptimizationLevel::O0
                                  : optLevel == 1 ? llvm::OptimizationLevel::O1
                                  : optLevel == 2 ? llvm::OptimizationLevel::O2
                                                  : llvm::OptimizationLevel::O3;
  llvm::ModulePassManager mpm =
      optLevel <= 0 ? pb.buildO0DefaultPipeline(level) : pb.buildPerModuleDefaultPipeline(level);
  mpm.run(m, mam);
}

} // namespace

struct Jit::Impl {
  JitOptions opt;
  std::unique_ptr<llvm::orc::LLJIT> jit;
  std::unique_ptr<llvm::TargetMachine> tm;
  std::mutex mutex;
  int counter = 0;
  std::vector<void (*)()> releases; // each function's NAME__release (abi.h)
};

AllocationCounts allocationCounts() {
  return {countedAllocs.load(), countedFrees.load()};
}

Jit::Jit(const JitOptions& opt) : impl_(std::make_unique<Impl>()) {
  initLLVM();
  impl_->opt = opt;
  auto jtmb = hostBuilder(opt.optLevel);
  impl_->tm = orThrow(jtmb.createTargetMachine(), "creating the target machine");
  impl_->jit = orThrow(llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(jtmb).create(),
                       "creating the JIT");
  // libm and libc (exp, lgamma_r, malloc, ...) come from the host process.
  auto gen = orThrow(llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
                         impl_->jit->getDataLayout().getGlobalPrefix()),
                     "opening the host process");
  impl_->jit->getMainJITDylib().addGenerator(std::move(gen));
  if (vmath::enabled())
    impl_->jit->getMainJITDylib().addGenerator(
        orThrow(llvm::orc::DynamicLibrarySearchGenerator::Load(
                    "libmvec.so.1", impl_->jit->getDataLayout().getGlobalPrefix()),
                "opening libmvec"));
  // Slope's own run-time functions, by address (the host need not export them).
  llvm::orc::SymbolMap own;
  own[impl_->jit->mangleAndIntern(kRevolveNextSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&revolveNextC), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kCountedMallocSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&countedMalloc), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kCountedCallocSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&countedCalloc), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kCountedFreeSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&countedFree), llvm::JITSymbolFlags::Exported};
  for (bool f32 : {false, true}) {
#define SLOPE_VM_SYMBOL(n)                                                                         \
  if (void* p = vmath::scalarEntry(#n, f32))                                                       \
    own[impl_->jit->mangleAndIntern(std::string(kVectorMathPrefix) + #n + (f32 ? "f" : ""))] = {   \
        llvm::orc::ExecutorAddr::fromPtr(p), llvm::JITSymbolFlags::Exported};
    SLOPE_VECTOR_MATH(SLOPE_VM_SYMBOL)
#undef SLOPE_VM_SYMBOL
  }
  own[impl_->jit->mangleAndIntern(kDigammaSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&slope_digamma), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kDigammafSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&slope_digammaf), llvm::JITSymbolFlags::Exported};
  if (auto err = impl_->jit->getMainJITDylib().define(llvm::orc::absoluteSymbols(std::move(own))))
    throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
}

Jit::~Jit() {
  // The memory the functions' calls kept (their workspaces), before their code goes.
  for (auto release : impl_->releases)
    release();
}

CompiledFunction Jit::add(const ir::Function& f) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ir::Function named = f;
  named.name = f.name + "." + std::to_string(impl_->counter++); // unique within this JIT
  CompiledFunction out;
  out.entryChecks = f.entryChecks;
  auto ctx = std::make_unique<llvm::LLVMContext>();
  std::unique_ptr<llvm::Module> m = generate(named, *ctx, out.sites, impl_->opt);
  optimize(*m, *impl_->tm, impl_->opt.optLevel);
  if (auto err = impl_->jit->addIRModule(llvm::orc::ThreadSafeModule(std::move(m), std::move(ctx))))
    throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
  auto sym = orThrow(impl_->jit->lookup(named.name), "JIT lookup");
  out.fn = sym.toPtr<slope_fn>();
  impl_->releases.push_back(
      orThrow(impl_->jit->lookup(named.name + kReleaseSuffix), "JIT lookup").toPtr<void (*)()>());
  // Threads: the process's pool, for up to opt.threads threads per parallel loop.
  if (impl_->opt.threads > 1)
    orThrow(impl_->jit->lookup(named.name + kSetParallelSuffix), "JIT lookup")
        .toPtr<void (*)(const slope_parallel*)>()(threadPool(impl_->opt.threads));
  return out;
}

namespace {

std::unique_ptr<llvm::Module> optimized(const ir::Function& f, const JitOptions& opt,
                                        llvm::LLVMContext& ctx, llvm::TargetMachine& tm) {
  std::vector<Site> sites;
  auto m = generate(f, ctx, sites, opt);
  optimize(*m, tm, opt.optLevel);
  return m;
}

} // namespace

std::string emitLLVM(const ir::Function& f, const JitOptions& opt) {
  initLLVM();
  auto tm = orThrow(hostBuilder(opt.optLevel).createTargetMachine(), "creating the target machine");
  llvm::LLVMContext ctx;
  auto m = optimized(f, opt, ctx, *tm);
  std::string s;
  llvm::raw_string_ostream os(s);
  m->print(os, nullptr);
  return os.str();
}

std::string emitAsm(const ir::Function& f, const JitOptions& opt) {
  initLLVM();
  auto tm = orThrow(hostBuilder(opt.optLevel).createTargetMachine(), "creating the target machine");
  llvm::LLVMContext ctx;
  auto m = optimized(f, opt, ctx, *tm);
  llvm::SmallString<0> buf;
  llvm::raw_svector_ostream os(buf);
  llvm::legacy::PassManager pm;
  if (tm->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::AssemblyFile))
    throw std::runtime_error("the target cannot emit assembly");
  pm.run(*m);
  return std::string(buf.str());
}

} // namespace slope::codegen
