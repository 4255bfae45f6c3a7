// Optimisation (the new pass manager's default pipelines) and in-process compilation with
// ORC's LLJIT. Machine code is tuned for the host CPU, so LLVM's vectoriser uses its vector
// width.

#include "compiler/codegen/codegen_internal.hpp"
#include "compiler/support/revolve.hpp"
#include "compiler/support/special.hpp"
#include "compiler/support/thread_pool.hpp"
#include "compiler/support/vmath.hpp"
#include "runtime/cuda_driver.hpp"

#include <llvm/Analysis/TargetLibraryInfo.h>
#include <llvm/Bitcode/BitcodeReader.h>
#include <llvm/Bitcode/BitcodeWriter.h>
#include <llvm/ExecutionEngine/JITLink/JITLink.h>
#include <llvm/ExecutionEngine/Orc/CompileUtils.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/ExecutionEngine/Orc/ObjectTransformLayer.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/PassTimingInfo.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Object/ObjectFile.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Passes/StandardInstrumentations.h>
#include <llvm/Support/CommandLine.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Format.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>
#include <llvm/Transforms/Utils/SplitModule.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include <stdexcept>
#include <thread>
#include <unistd.h>

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

/// SLOPE_JIT_TIMING set: each Jit::add prints its phases' times and LLVM's pass timing
/// report (what -time-passes prints) to stderr.
bool timing() {
  static const bool on = std::getenv("SLOPE_JIT_TIMING") != nullptr;
  return on;
}

/// SLOPE_JIT_DUMP=PREFIX: each Jit::add writes its module before and after optimisation to
/// PREFIX.NAME.pre.ll and PREFIX.NAME.post.ll (to see what codegen hands LLVM), and the JIT
/// writes every object it links to PREFIX.object.K.o (Jit::Jit).
void dump(const llvm::Module& m, const char* stage) {
  static const char* prefix = std::getenv("SLOPE_JIT_DUMP");
  if (!prefix) return;
  std::error_code ec;
  llvm::raw_fd_ostream os(std::string(prefix) + "." + m.getName().str() + "." + stage + ".ll", ec);
  if (!ec) m.print(os, nullptr);
}

/// SLOPE_PERF_MAP set: every function the JIT links (chunks included) gets a line in
/// /tmp/perf-PID.map, the file Linux perf reads to name addresses in anonymous memory, so that
/// `perf record` + `perf report` attribute samples to generated functions (docs/benchmarks.md).
/// The names and sizes come from the object file's symbol table: JITLink's graph has no
/// symbol for a local (internal) function, which is what every chunk is.
class PerfMapPlugin : public llvm::orc::ObjectLinkingLayer::Plugin {
public:
  static bool wanted() {
    static const bool on = std::getenv("SLOPE_PERF_MAP") != nullptr;
    return on;
  }

  void notifyMaterializing(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph& g,
                           llvm::jitlink::JITLinkContext&, llvm::MemoryBufferRef object) override {
    auto obj = llvm::object::ObjectFile::createObjectFile(object);
    if (!obj) return llvm::consumeError(obj.takeError());
    std::vector<Fn> fns;
    for (const llvm::object::SymbolRef& sym : (*obj)->symbols()) {
      auto type = sym.getType();
      auto name = sym.getName();
      auto value = sym.getValue();
      auto section = sym.getSection();
      if (!type || !name || !value || !section || *type != llvm::object::SymbolRef::ST_Function ||
          *section == (*obj)->section_end()) {
        if (!type) llvm::consumeError(type.takeError());
        if (!name) llvm::consumeError(name.takeError());
        if (!value) llvm::consumeError(value.takeError());
        if (!section) llvm::consumeError(section.takeError());
        continue;
      }
      auto sectionName = (*section)->getName();
      if (!sectionName) {
        llvm::consumeError(sectionName.takeError());
        continue;
      }
      uint64_t size = llvm::object::ELFSymbolRef(sym).getSize();
      if (size > 0) fns.push_back({name->str(), sectionName->str(), *value, size});
    }
    std::lock_guard<std::mutex> lock(mutex_);
    pending_[&g] = std::move(fns);
  }

  void modifyPassConfig(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostFixupPasses.emplace_back(Writer{this});
  }

  llvm::Error notifyFailed(llvm::orc::MaterializationResponsibility&) override {
    return llvm::Error::success();
  }
  llvm::Error notifyRemovingResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey) override {
    return llvm::Error::success();
  }
  void notifyTransferringResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey,
                                   llvm::orc::ResourceKey) override {}

private:
  struct Fn {
    std::string name, section;
    uint64_t offset, size;
  };

  /// After fixups, blocks have their final addresses: one line per function of the object
  /// whose section is one block (JITLink's ELF reader makes one per section).
  struct Writer {
    PerfMapPlugin* self;
    llvm::Error operator()(llvm::jitlink::LinkGraph& g) const {
      std::lock_guard<std::mutex> lock(self->mutex_);
      auto it = self->pending_.find(&g);
      if (it == self->pending_.end()) return llvm::Error::success();
      std::error_code ec;
      llvm::raw_fd_ostream os("/tmp/perf-" + std::to_string(::getpid()) + ".map", ec,
                              llvm::sys::fs::OF_Append);
      for (const Fn& fn : it->second) {
        llvm::jitlink::Section* sec = g.findSectionByName(fn.section);
        if (ec || !sec || sec->blocks_size() != 1) continue;
        uint64_t at = (*sec->blocks().begin())->getAddress().getValue() + fn.offset;
        os << llvm::format_hex_no_prefix(at, 1) << " " << llvm::format_hex_no_prefix(fn.size, 1)
           << " " << fn.name << "\n";
      }
      self->pending_.erase(it);
      return llvm::Error::success();
    }
  };

  static inline std::mutex mutex_; // (several JITs, or code generation in parts, link at once)
  std::map<const llvm::jitlink::LinkGraph*, std::vector<Fn>> pending_;
};

} // namespace

void initLLVM() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    llvm::InitializeNativeTargetAsmParser();
    if (timing()) llvm::TimePassesIsEnabled = true;
    // SLOPE_LLVM_ARGS: options for LLVM, as its tools take them (experiments such as
    // -disable-lsr; docs/architecture.md "JIT time"). A bad one is an error, not an exit.
    const char* argv[] = {"slope"};
    std::string errors;
    llvm::raw_string_ostream es(errors);
    if (!llvm::cl::ParseCommandLineOptions(1, argv, "", &es, "SLOPE_LLVM_ARGS"))
      throw std::invalid_argument("SLOPE_LLVM_ARGS: " + es.str()); // (the user's option)
  });
}

namespace {

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

llvm::CodeGenOptLevel codeGenLevel(int optLevel) {
  return optLevel <= 0   ? llvm::CodeGenOptLevel::None
         : optLevel == 1 ? llvm::CodeGenOptLevel::Less
         : optLevel == 2 ? llvm::CodeGenOptLevel::Default
                         : llvm::CodeGenOptLevel::Aggressive;
}

llvm::orc::JITTargetMachineBuilder hostBuilder(int optLevel) {
  auto jtmb = orThrow(llvm::orc::JITTargetMachineBuilder::detectHost(), "detecting the host");
  jtmb.setCodeGenOptLevel(codeGenLevel(optLevel));
  // Position-independent code in the small code model, as for an object file: JITLink gives
  // each linked object a GOT and PLT stubs for what lies beyond 2 GiB (libm, the host's
  // functions). LLVM's default for a JIT on x86-64 is the large model, where every call and
  // global's address is a 64-bit constant: longer code, and FastISel (level 0) gives up on
  // every such address and hands the block to SelectionDAG.
  jtmb.setRelocationModel(llvm::Reloc::PIC_);
  jtmb.setCodeModel(llvm::CodeModel::Small);
  return jtmb;
}

} // namespace

std::unique_ptr<llvm::TargetMachine> objectTargetMachine(const std::string& cpu, int optLevel) {
  initLLVM();
  llvm::orc::JITTargetMachineBuilder b =
      cpu == "native"
          ? hostBuilder(optLevel)
          : llvm::orc::JITTargetMachineBuilder(llvm::Triple(llvm::sys::getProcessTriple()));
  if (cpu != "native") {
    b.setCPU(cpu);
    b.setCodeGenOptLevel(codeGenLevel(optLevel));
  }
  // An object is linked like any other: position-independent, the small code model (the
  // JIT's builder picks the large one, for code anywhere in the address space).
  b.setRelocationModel(llvm::Reloc::PIC_);
  b.setCodeModel(llvm::CodeModel::Small);
  return orThrow(b.createTargetMachine(), "creating the target machine");
}

/// Tags functions with the target's CPU and optimises the module.
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
  dump(m, "pre");
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassInstrumentationCallbacks pic;
  llvm::StandardInstrumentations si(m.getContext(), false);
  if (timing()) si.registerCallbacks(pic, &mam);
  // LLVM's default tuning leaves the SLP vectorizer off (clang turns it on from -O2): without
  // it the K lanes of a batched JVP, each a scalar operation of its own, stayed scalar. On:
  // ADBench ba1's sparse Jacobian 217.7M -> 133.1M instructions (callgrind), the GMM, LSTM
  // and mixture within 0.5 % (docs/benchmarks.md). It does not reassociate, so no bit moves.
  llvm::PipelineTuningOptions pto;
  pto.SLPVectorization = optLevel >= 2;
  llvm::PassBuilder pb(&tm, pto, std::nullopt, timing() ? &pic : nullptr);
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
  dump(m, "post");
}

struct Jit::Impl {
  JitOptions opt;
  std::unique_ptr<llvm::orc::LLJIT> jit;
  std::unique_ptr<llvm::TargetMachine> tm;
  std::vector<std::unique_ptr<llvm::TargetMachine>> workerTms; // one per code generation thread
  std::mutex mutex;
  int counter = 0;
  std::vector<void (*)()> releases; // each function's NAME__release (abi.h)

  int codegenParts(const llvm::Module& m) const;
  void compileInParts(std::unique_ptr<llvm::Module> m, int parts);
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
  if (const char* prefix = std::getenv("SLOPE_JIT_DUMP")) {
    // Each object file the JITs of the process link, as PREFIX.object.K.o: with
    // SLOPE_PERF_MAP's addresses, these name the instruction a profile's sample fell on
    // (scripts/jit_profile.py).
    static std::atomic<int> objects{0};
    impl_->jit->getObjTransformLayer().setTransform(
        [prefix = std::string(prefix)](std::unique_ptr<llvm::MemoryBuffer> obj)
            -> llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> {
          std::error_code ec;
          llvm::raw_fd_ostream os(prefix + ".object." + std::to_string(objects++) + ".o", ec);
          if (!ec) os << obj->getBuffer();
          return obj;
        });
  }
  if (PerfMapPlugin::wanted())
    if (auto* link =
            llvm::dyn_cast<llvm::orc::ObjectLinkingLayer>(&impl_->jit->getObjLinkingLayer()))
      link->addPlugin(std::make_unique<PerfMapPlugin>());
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
  own[impl_->jit->mangleAndIntern(kManagedMallocSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&cuda::managedMalloc), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kManagedCallocSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&cuda::managedCalloc), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kManagedFreeSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&cuda::managedFree), llvm::JITSymbolFlags::Exported};
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
  own[impl_->jit->mangleAndIntern(kTrigammaSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&slope_trigamma), llvm::JITSymbolFlags::Exported};
  own[impl_->jit->mangleAndIntern(kTrigammafSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&slope_trigammaf), llvm::JITSymbolFlags::Exported};
  if (auto err = impl_->jit->getMainJITDylib().define(llvm::orc::absoluteSymbols(std::move(own))))
    throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
}

Jit::~Jit() {
  // The memory the functions' calls kept (their workspaces), before their code goes.
  for (auto release : impl_->releases)
    release();
}

/// How many parts code generation splits m into: one per compile thread, at most one per
/// function, and one for a module too small to pay for a thread (starting one and the bitcode
/// round trip below cost about a millisecond; code generation takes about that for 40 LLVM
/// instructions).
int Jit::Impl::codegenParts(const llvm::Module& m) const {
  int threads = opt.compileThreads > 0 ? opt.compileThreads : opt.threads;
  int functions = 0;
  size_t instructions = 0, largest = 0;
  for (const llvm::Function& fn : m) {
    if (fn.isDeclaration()) continue;
    ++functions;
    instructions += fn.getInstructionCount();
    largest = std::max(largest, static_cast<size_t>(fn.getInstructionCount()));
  }
  if (instructions < opt.minSplitInstructions) return 1;
  // One function with most of the code (the LSTM gradient's): the other parts would finish
  // long before it, for the price of the split.
  if (opt.minSplitInstructions > 0 && largest * 4 > instructions * 3) return 1;
  return std::max(1, std::min({threads, functions, 8}));
}

/// Machine code for m's functions, split into `parts` modules (llvm::SplitModule, largest
/// functions dealt round-robin) compiled side by side, the calling thread taking the first.
/// The others go to a fresh LLVMContext each through bitcode, since one context is not safe
/// to use from two threads; each thread has its own TargetMachine. The objects then link in
/// the JIT like one: SplitModule gives the internal functions and globals that the parts
/// share external (hidden) names, unique in the JIT because the function's name is.
void Jit::Impl::compileInParts(std::unique_ptr<llvm::Module> m, int parts) {
  // Unnamed globals would all be externalised under one name.
  for (llvm::GlobalValue& g : m->global_values())
    if (!g.hasName()) g.setName(m->getName() + ".anon");
  std::unique_ptr<llvm::Module> first;
  std::vector<llvm::SmallVector<char, 0>> bitcode;
  llvm::SplitModule(
      *m, static_cast<unsigned>(parts),
      [&](std::unique_ptr<llvm::Module> part) {
        if (!first) {
          first = std::move(part);
          return;
        }
        bitcode.emplace_back();
        llvm::raw_svector_ostream os(bitcode.back());
        llvm::WriteBitcodeToFile(*part, os);
      },
      /*PreserveLocals=*/false, /*RoundRobin=*/true);
  while (workerTms.size() < bitcode.size())
    workerTms.push_back(
        orThrow(hostBuilder(opt.optLevel).createTargetMachine(), "creating the target machine"));
  std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects(bitcode.size() + 1);
  std::vector<std::string> errors(bitcode.size() + 1);
  auto compile = [&](size_t k, llvm::Module& mod, llvm::TargetMachine& tm) {
    auto obj = llvm::orc::SimpleCompiler(tm)(mod);
    if (obj)
      objects[k] = std::move(*obj);
    else
      errors[k] = llvm::toString(obj.takeError());
  };
  std::vector<std::thread> workers;
  for (size_t k = 0; k < bitcode.size(); ++k)
    workers.emplace_back([&, k] {
      llvm::LLVMContext ctx;
      auto mod = llvm::parseBitcodeFile(
          llvm::MemoryBufferRef(llvm::StringRef(bitcode[k].data(), bitcode[k].size()), "part"),
          ctx);
      if (!mod)
        errors[k + 1] = llvm::toString(mod.takeError());
      else
        compile(k + 1, **mod, *workerTms[k]);
    });
  compile(0, *first, *tm);
  for (auto& w : workers)
    w.join();
  for (size_t k = 0; k < objects.size(); ++k) {
    if (!errors[k].empty()) throw std::runtime_error("JIT: " + errors[k]);
    if (auto err = jit->addObjectFile(std::move(objects[k])))
      throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
  }
}

namespace {

/// The tasks of an offload module (kTaskAttr), their ctx laid out by m's data layout.
std::vector<ChunkTask> chunkTasks(llvm::Module& m, const std::string& name) {
  std::vector<ChunkTask> out;
  const std::string prefix = name + ".chunk";
  llvm::LLVMContext& ctx = m.getContext();
  for (llvm::Function& fn : m) {
    if (!fn.hasFnAttribute(kTaskAttr)) continue;
    std::string spec = fn.getFnAttribute(kTaskAttr).getValueAsString().str();
    std::string fname = fn.getName().str(); // NAME.chunkK.task
    ChunkTask t;
    t.index = std::stoi(fname.substr(prefix.size()));
    size_t semi = spec.find(';');
    t.hostOnly = spec.substr(semi + 1);
    std::vector<llvm::Type*> fields;
    std::string types = spec.substr(0, semi);
    for (size_t at = 0; at < types.size();) {
      size_t comma = std::min(types.find(',', at), types.size());
      std::string ty = types.substr(at, comma - at);
      at = comma + 1;
      llvm::Type* lt = ty == "ptr"      ? llvm::PointerType::get(ctx, 0)
                       : ty == "double" ? llvm::Type::getDoubleTy(ctx)
                       : ty == "float"  ? llvm::Type::getFloatTy(ctx)
                       : ty[0] == 'i'   ? llvm::Type::getIntNTy(ctx, std::stoi(ty.substr(1)))
                                        : nullptr;
      if (!lt) throw std::logic_error("offload: a capture of type " + ty + " in " + fname);
      fields.push_back(lt);
    }
    fields.push_back(llvm::Type::getInt64Ty(ctx)); // the least failed chunk
    const llvm::StructLayout* sl =
        m.getDataLayout().getStructLayout(llvm::StructType::get(ctx, fields));
    for (size_t j = 0; j + 1 < fields.size(); ++j) {
      t.offsets.push_back(static_cast<uint32_t>(sl->getElementOffset(j)));
      t.sizes.push_back(static_cast<uint32_t>(m.getDataLayout().getTypeAllocSize(fields[j])));
      t.pointers.push_back(fields[j]->isPointerTy());
    }
    t.failedOffset = static_cast<uint32_t>(sl->getElementOffset(fields.size() - 1));
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(),
            [](const ChunkTask& a, const ChunkTask& b) { return a.index < b.index; });
  return out;
}

} // namespace

CompiledFunction Jit::add(const ir::Function& f) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ir::Function named = f;
  named.name = f.name + "." + std::to_string(impl_->counter++); // unique within this JIT
  CompiledFunction out;
  out.entryChecks = f.entryChecks;
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  auto ctx = std::make_unique<llvm::LLVMContext>();
  std::unique_ptr<llvm::Module> m = generate(named, *ctx, out.sites, impl_->opt);
  auto t1 = Clock::now();
  optimize(*m, *impl_->tm, impl_->opt.optLevel);
  auto t2 = Clock::now();
  if (impl_->opt.offload) out.tasks = chunkTasks(*m, named.name);
  int parts = impl_->codegenParts(*m);
  if (parts <= 1) {
    if (auto err =
            impl_->jit->addIRModule(llvm::orc::ThreadSafeModule(std::move(m), std::move(ctx))))
      throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
  } else {
    impl_->compileInParts(std::move(m), parts);
  }
  auto sym = orThrow(impl_->jit->lookup(named.name), "JIT lookup"); // (compiles it)
  if (timing()) {
    auto ms = [](Clock::duration d) {
      return std::chrono::duration<double, std::milli>(d).count();
    };
    llvm::reportAndResetTimings();
    std::fprintf(stderr,
                 "slope jit %s: IR generation %.1f ms, optimisation %.1f ms, "
                 "code generation %.1f ms (wall, %d part%s)\n",
                 named.name.c_str(), ms(t1 - t0), ms(t2 - t1), ms(Clock::now() - t2), parts,
                 parts == 1 ? "" : "s");
  }
  out.fn = sym.toPtr<slope_fn>();
  impl_->releases.push_back(
      orThrow(impl_->jit->lookup(named.name + kReleaseSuffix), "JIT lookup").toPtr<void (*)()>());
  // Threads: the process's pool, for up to opt.threads threads per parallel loop.
  out.setParallel = orThrow(impl_->jit->lookup(named.name + kSetParallelSuffix), "JIT lookup")
                        .toPtr<void (*)(const slope_parallel*)>();
  if (impl_->opt.threads > 1 && !impl_->opt.offload)
    out.setParallel(threadPool(impl_->opt.threads));
  for (ChunkTask& t : out.tasks)
    t.task = orThrow(impl_->jit->lookup(named.name + ".chunk" + std::to_string(t.index) + ".task"),
                     "JIT lookup")
                 .toPtr<slope_task>();
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
  return machineCode(*m, *tm, false);
}

std::string machineCode(llvm::Module& m, llvm::TargetMachine& tm, bool object) {
  llvm::SmallString<0> buf;
  llvm::raw_svector_ostream os(buf);
  llvm::legacy::PassManager pm;
  if (tm.addPassesToEmitFile(pm, os, nullptr,
                             object ? llvm::CodeGenFileType::ObjectFile
                                    : llvm::CodeGenFileType::AssemblyFile))
    throw std::runtime_error(std::string("the target cannot emit ") +
                             (object ? "an object file" : "assembly"));
  pm.run(m);
  return std::string(buf.begin(), buf.end());
}

} // namespace slope::codegen
