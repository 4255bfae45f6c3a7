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
#include <llvm/IR/IRBuilder.h>
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
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>

#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <utility>

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
void optimize(llvm::Module& m, llvm::TargetMachine& tm, int optLevel,
              const std::atomic<bool>* cancel) {
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
  if (cancel)
    pic.registerShouldRunOptionalPassCallback(
        [cancel](llvm::StringRef, llvm::Any) { return !cancel->load(std::memory_order_relaxed); });
  // LLVM's default tuning leaves the SLP vectorizer off (clang turns it on from -O2): without
  // it the K lanes of a batched JVP, each a scalar operation of its own, stayed scalar. On:
  // ADBench ba1's sparse Jacobian 217.7M -> 133.1M instructions (callgrind), the GMM, LSTM
  // and mixture within 0.5 % (docs/benchmarks.md). It does not reassociate, so no bit moves.
  llvm::PipelineTuningOptions pto;
  pto.SLPVectorization = optLevel >= 2;
  llvm::PassBuilder pb(&tm, pto, std::nullopt, timing() || cancel ? &pic : nullptr);
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

/// A target machine at one optimisation level and the ones its code generation threads use.
/// A TargetMachine serves one thread at a time: the thread of Jit::add and the tier thread
/// each have their own Backend.
struct Backend {
  int level = 2;
  std::unique_ptr<llvm::TargetMachine> tm;
  std::vector<std::unique_ptr<llvm::TargetMachine>>
      workerTms;                               // one per extra code generation thread
  std::unique_ptr<llvm::TargetMachine> hugeTm; // level 0's, for JitOptions::hugeBlock
};

/// How a module's machine code is made: in how many parts, and, for a module with a block over
/// JitOptions::hugeBlock instructions, at level 0 with its blocks cut into pieces (`hugeBlock`
/// that block's length, `piece` the pieces' length; 0 when not).
struct CodegenPlan {
  int parts = 1;
  size_t hugeBlock = 0;
  size_t piece = 0;

  /// What SLOPE_JIT_TIMING adds to the function's line.
  std::string note() const {
    return hugeBlock ? ", machine code at level 0: a block of " + std::to_string(hugeBlock) +
                           " instructions, in pieces of " + std::to_string(piece)
                     : "";
  }
};

struct Jit::Impl {
  JitOptions opt;
  std::unique_ptr<llvm::orc::LLJIT> jit;
  Backend first; // Jit::add's: level 0 under JitOptions::tiered, otherwise opt.optLevel
  Backend later; // the tier thread's (opt.optLevel); made by that thread
  std::mutex mutex;
  int counter = 0;
  std::vector<void (*)()> releases; // each function's NAME__release (abi.h), under mutex

  // Tiered compilation: each tiered function's state (stable addresses: the trampolines hold
  // them), and the thread that compiles the second tiers, one at a time, in queue order.
  std::deque<std::unique_ptr<Tier>> tiers; // under mutex
  std::mutex queueMutex;
  std::condition_variable queueCv;
  std::deque<Tier*> queue;         // under queueMutex
  bool stopping = false;           // under queueMutex
  std::atomic<bool> cancel{false}; // set with stopping: the second tier in hand stops early
  std::thread tierThread;

  CodegenPlan codegenPlan(const llvm::Module& m) const;
  void compileInParts(Backend& b, std::unique_ptr<llvm::Module> m, const CodegenPlan& plan);
  void request(Tier* t, bool front);
  void tierLoop();
  void compileSecondTier(Tier& t);
  /// NAME__release and NAME__set_parallel of a linked version; the latter has bound the
  /// process's pool for opt.threads threads (not under offload, whose runner binds its own).
  std::pair<void (*)(), void (*)(const slope_parallel*)> runtimeOf(const std::string& name);
};

/// The state of a function under JitOptions::tiered (docs/architecture.md, "Tiers"). Its
/// trampoline (NAME.K) loads `fast` and calls it, or slopeTierCall while it is null.
struct Tier {
  std::atomic<slope_fn> fast{nullptr}; // the code of optLevel, once linked
  slope_fn first = nullptr;            // the code of level 0 (NAME.K.t0)
  Jit::Impl* jit = nullptr;
  ir::Function f;                  // named NAME.K: what the second tier compiles again
  std::vector<Site> sites;         // the first tier's; the second's must be the same
  int64_t budgetNs = 0;            // < 0: no automatic request
  std::atomic<int64_t> spentNs{0}; // in calls of the first tier
  enum State : int { Idle, Queued, Done, Failed };
  std::atomic<int> state{Idle};
  std::mutex mutex; // for waiting on state
  std::condition_variable cv;
  std::string error; // Failed: why (under mutex)

  /// Done (no error) or Failed, and wakes whoever waits for it.
  void finish(const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex);
    error = why;
    state.store(why.empty() ? Done : Failed);
    cv.notify_all();
  }
};

constexpr const char* kDestroyedFirst = "the JIT was destroyed first";

namespace {

/// A call of a tiered function while its second tier is not in place: runs the first tier,
/// and asks for the second once these calls have taken the budget. While the second tier is
/// queued or being compiled, a call waits for it instead: a level-0 call cannot move to the
/// faster code once started, and it would compete with the compile for the cores; what
/// waiting can lose is at most the compile's time over the speed-up, while a long level-0
/// call started just before the switch loses nearly all of its length (docs/architecture.md,
/// "Tiers").
extern "C" int32_t slopeTierCall(Tier* t, void* const* args, const int64_t* sizes,
                                 void* const* results, slope_error* err) {
  if (t->state.load() == Tier::Queued) {
    std::unique_lock<std::mutex> lock(t->mutex);
    t->cv.wait(lock, [&] { return t->state.load() != Tier::Queued; });
  }
  if (slope_fn fast = t->fast.load(std::memory_order_acquire))
    return fast(args, sizes, results, err);
  auto start = std::chrono::steady_clock::now();
  int32_t rc = t->first(args, sizes, results, err);
  int64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  int64_t spent = t->spentNs.fetch_add(ns) + ns;
  if (t->budgetNs >= 0 && spent >= t->budgetNs && t->state.load() == Tier::Idle)
    t->jit->request(t, false);
  return rc;
}
constexpr const char* kTierCallSymbol = "slope_tier_call";

/// The trampoline NAME(args, sizes, results, err), added to the first tier's module:
///   fast = load acquire tier->fast; fast ? fast(...) : slope_tier_call(tier, ...)
/// The Tier's address is a constant of the code (it lives as long as the Jit).
void addTrampoline(llvm::Module& m, const std::string& name, Tier* tier) {
  llvm::LLVMContext& ctx = m.getContext();
  llvm::Type* ptr = llvm::PointerType::get(ctx, 0);
  llvm::Type* i32 = llvm::Type::getInt32Ty(ctx);
  auto* entryTy = llvm::FunctionType::get(i32, {ptr, ptr, ptr, ptr}, false);
  auto* slowTy = llvm::FunctionType::get(i32, {ptr, ptr, ptr, ptr, ptr}, false);
  auto* fn = llvm::Function::Create(entryTy, llvm::Function::ExternalLinkage, name, m);
  llvm::FunctionCallee slow = m.getOrInsertFunction(kTierCallSymbol, slowTy);
  auto* entry = llvm::BasicBlock::Create(ctx, "entry", fn);
  auto* fastBB = llvm::BasicBlock::Create(ctx, "fast", fn);
  auto* slowBB = llvm::BasicBlock::Create(ctx, "slow", fn);
  llvm::IRBuilder<> b(entry);
  static_assert(sizeof(std::atomic<slope_fn>) == sizeof(void*) &&
                std::atomic<slope_fn>::is_always_lock_free);
  auto address = [&](const void* p) {
    return b.CreateIntToPtr(b.getInt64(reinterpret_cast<uint64_t>(p)), ptr);
  };
  llvm::LoadInst* fast = b.CreateAlignedLoad(ptr, address(&tier->fast), llvm::Align(8), "fast");
  fast->setAtomic(llvm::AtomicOrdering::Acquire);
  b.CreateCondBr(b.CreateIsNull(fast), slowBB, fastBB);
  std::vector<llvm::Value*> args;
  for (llvm::Argument& a : fn->args())
    args.push_back(&a);
  b.SetInsertPoint(fastBB);
  llvm::CallInst* call = b.CreateCall(entryTy, fast, args);
  call->setTailCall();
  b.CreateRet(call);
  b.SetInsertPoint(slowBB);
  args.insert(args.begin(), address(tier));
  llvm::CallInst* slowCall = b.CreateCall(slow, args);
  slowCall->setTailCall();
  b.CreateRet(slowCall);
}

bool sameSites(const std::vector<Site>& a, const std::vector<Site>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k)
    if (a[k].tensor != b[k].tensor || a[k].extent != b[k].extent ||
        a[k].loc.begin != b[k].loc.begin || a[k].loc.end != b[k].loc.end)
      return false;
  return true;
}

/// Under SLOPE_JIT_TIMING, LLVM's pass timers are global: one compile at a time.
std::mutex timingMutex;

/// SLOPE_JIT_TIMING: LLVM's pass timing report, then one line with the phases of a compile
/// (at[0..3]: start, IR generated, optimised, linked).
void reportTiming(const std::string& name,
                  const std::array<std::chrono::steady_clock::time_point, 4>& at, int parts,
                  int level, const std::string& what) {
  auto ms = [&](int k) {
    return std::chrono::duration<double, std::milli>(at[k + 1] - at[k]).count();
  };
  llvm::reportAndResetTimings();
  std::fprintf(stderr,
               "slope jit %s: IR generation %.1f ms, optimisation %.1f ms, "
               "code generation %.1f ms (wall, %d part%s, level %d%s)\n",
               name.c_str(), ms(0), ms(1), ms(2), parts, parts == 1 ? "" : "s", level,
               what.c_str());
}

} // namespace

AllocationCounts allocationCounts() {
  return {countedAllocs.load(), countedFrees.load()};
}

Jit::Jit(const JitOptions& opt) : impl_(std::make_unique<Impl>()) {
  initLLVM();
  impl_->opt = opt;
  if (opt.offload || opt.optLevel <= 0) impl_->opt.tiered = false;
  impl_->first.level = impl_->opt.tiered ? 0 : opt.optLevel;
  impl_->later.level = opt.optLevel;
  // (the JIT's own compile layer is not used: modules arrive as objects, from Backend's
  // target machines)
  auto jtmb = hostBuilder(impl_->first.level);
  impl_->first.tm = orThrow(jtmb.createTargetMachine(), "creating the target machine");
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
  own[impl_->jit->mangleAndIntern(kTierCallSymbol)] = {
      llvm::orc::ExecutorAddr::fromPtr(&slopeTierCall), llvm::JITSymbolFlags::Exported};
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
  // Queued second tiers are dropped; the one in hand skips the optimisation passes it has
  // not run (LLVM's optional passes) and is not linked, but machine code generation already
  // started runs to its end (it cannot be interrupted).
  {
    std::lock_guard<std::mutex> lock(impl_->queueMutex);
    impl_->stopping = true;
    impl_->cancel.store(true);
    for (Tier* t : impl_->queue)
      t->finish(kDestroyedFirst);
    impl_->queue.clear();
  }
  impl_->queueCv.notify_all();
  if (impl_->tierThread.joinable()) impl_->tierThread.join();
  // The memory the functions' calls kept (their workspaces), before their code goes.
  for (auto release : impl_->releases)
    release();
}

namespace {

/// Cuts every basic block of m longer than `piece` instructions into blocks of `piece`, each
/// ending in a branch to the next: the same computation. Level 0's register allocator works a
/// block at a time and, at every call in a block, visits every value live in that block: in
/// one block of straight-line code with N values live across N calls (a gradient's forward
/// values waiting for the reverse sweep, each step calling sin or cos) that is N^2 visits, 70 %
/// of the code generation of a 16,000-step chain's gradient. Across a block boundary a value lives
/// in its stack slot, as it would in a huge block anyway, and each block's visits are bounded by
/// its length. The entry block is cut only after its last alloca, so allocas stay static.
void splitBlocks(llvm::Module& m, size_t piece) {
  if (piece == 0) return;
  for (llvm::Function& fn : m) {
    std::vector<llvm::BasicBlock*> blocks;
    for (llvm::BasicBlock& bb : fn)
      if (bb.size() > piece) blocks.push_back(&bb);
    for (llvm::BasicBlock* bb : blocks) {
      // Cut points: every `piece` instructions after the PHIs (and the entry's allocas),
      // before the terminator. From the last one back, so each cut moves one piece.
      std::vector<llvm::Instruction*> cuts;
      size_t first = 0, k = 0;
      for (llvm::Instruction& i : *bb) {
        ++k;
        if (llvm::isa<llvm::PHINode>(i) || (bb->isEntryBlock() && llvm::isa<llvm::AllocaInst>(i)))
          first = k;
      }
      k = 0;
      for (llvm::Instruction& i : *bb) {
        if (k > first && (k - first) % piece == 0 && !i.isTerminator()) cuts.push_back(&i);
        ++k;
      }
      for (auto it = cuts.rbegin(); it != cuts.rend(); ++it)
        bb->splitBasicBlock(*it, "piece");
    }
  }
}

} // namespace

/// How m's machine code is made. At level 0 whole, its blocks cut into pieces, for a block over
/// JitOptions::hugeBlock instructions (whatever the level its IR was optimised at). Otherwise in
/// parts: one per compile thread, at most one per function, and one for a module too small to pay
/// for a thread (starting one and the bitcode round trip below cost about a millisecond; code
/// generation takes about that for 40 LLVM instructions).
CodegenPlan Jit::Impl::codegenPlan(const llvm::Module& m) const {
  int threads = opt.compileThreads > 0 ? opt.compileThreads : opt.threads;
  int functions = 0;
  size_t instructions = 0, largest = 0, block = 0;
  for (const llvm::Function& fn : m) {
    if (fn.isDeclaration()) continue;
    ++functions;
    instructions += fn.getInstructionCount();
    largest = std::max(largest, static_cast<size_t>(fn.getInstructionCount()));
    for (const llvm::BasicBlock& bb : fn)
      block = std::max(block, bb.size());
  }
  CodegenPlan plan;
  if (opt.hugeBlock > 0 && block > opt.hugeBlock) {
    plan.hugeBlock = block;
    plan.piece = opt.hugeBlock / 2;
    return plan;
  }
  if (instructions < opt.minSplitInstructions) return plan;
  // One function with most of the code (the LSTM gradient's): the other parts would finish
  // long before it, for the price of the split.
  if (opt.minSplitInstructions > 0 && largest * 4 > instructions * 3) return plan;
  plan.parts = std::max(1, std::min({threads, functions, 8}));
  return plan;
}

/// Machine code for m's functions as `plan` says: whole (for a huge block, cut into pieces and
/// on level 0's TargetMachine), or split into plan.parts modules (llvm::SplitModule, largest
/// functions dealt round-robin) compiled side by side, the calling thread taking the first. The
/// others go to a fresh LLVMContext each through bitcode, since one context is not safe to use from
/// two threads; each thread has its own TargetMachine. The objects then link in the JIT like one:
/// SplitModule gives the internal functions and globals that the parts share external (hidden)
/// names, unique in the JIT because the function's name is.
void Jit::Impl::compileInParts(Backend& b, std::unique_ptr<llvm::Module> m,
                               const CodegenPlan& plan) {
  if (plan.parts <= 1) {
    llvm::TargetMachine* tm = b.tm.get();
    if (plan.hugeBlock) {
      splitBlocks(*m, plan.piece);
      if (b.level > 0 && !b.hugeTm)
        b.hugeTm = orThrow(hostBuilder(0).createTargetMachine(), "creating the target machine");
      if (b.level > 0) tm = b.hugeTm.get();
    }
    auto obj = llvm::orc::SimpleCompiler(*tm)(*m);
    if (!obj) throw std::runtime_error("JIT: " + llvm::toString(obj.takeError()));
    if (auto err = jit->addObjectFile(std::move(*obj)))
      throw std::runtime_error("JIT: " + llvm::toString(std::move(err)));
    return;
  }
  // Unnamed globals would all be externalised under one name.
  for (llvm::GlobalValue& g : m->global_values())
    if (!g.hasName()) g.setName(m->getName() + ".anon");
  std::unique_ptr<llvm::Module> first;
  std::vector<llvm::SmallVector<char, 0>> bitcode;
  llvm::SplitModule(
      *m, static_cast<unsigned>(plan.parts),
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
  while (b.workerTms.size() < bitcode.size())
    b.workerTms.push_back(
        orThrow(hostBuilder(b.level).createTargetMachine(), "creating the target machine"));
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
        compile(k + 1, **mod, *b.workerTms[k]);
    });
  compile(0, *first, *b.tm);
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
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  ir::Function named = f;
  named.name = f.name + "." + std::to_string(impl_->counter++); // unique within this JIT
  const std::string entry = named.name;
  CompiledFunction out;
  out.entryChecks = f.entryChecks;
  Tier* tier = nullptr;
  if (impl_->opt.tiered) { // NAME.K is the trampoline, NAME.K.t0 the first tier
    impl_->tiers.push_back(std::make_unique<Tier>());
    tier = impl_->tiers.back().get();
    tier->jit = impl_.get();
    tier->f = named;
    named.name = entry + ".t0";
    out.tier = tier;
  }
  auto ctx = std::make_unique<llvm::LLVMContext>();
  std::unique_ptr<llvm::Module> m = generate(named, *ctx, out.sites, impl_->opt);
  if (tier) addTrampoline(*m, entry, tier);
  auto t1 = Clock::now();
  std::unique_lock<std::mutex> timingLock(timingMutex, std::defer_lock);
  if (timing()) timingLock.lock();
  codegen::optimize(*m, *impl_->first.tm, impl_->first.level);
  auto t2 = Clock::now();
  if (impl_->opt.offload) out.tasks = chunkTasks(*m, named.name);
  const CodegenPlan plan = impl_->codegenPlan(*m);
  impl_->compileInParts(impl_->first, std::move(m), plan);
  ctx.reset();
  auto sym = orThrow(impl_->jit->lookup(entry), "JIT lookup");
  if (timing()) {
    reportTiming(named.name, {t0, t1, t2, Clock::now()}, plan.parts, impl_->first.level,
                 plan.note());
    timingLock.unlock();
  }
  out.fn = sym.toPtr<slope_fn>();
  auto [release, setParallel] = impl_->runtimeOf(named.name);
  impl_->releases.push_back(release);
  if (!tier) out.setParallel = setParallel;
  for (ChunkTask& t : out.tasks)
    t.task = orThrow(impl_->jit->lookup(named.name + ".chunk" + std::to_string(t.index) + ".task"),
                     "JIT lookup")
                 .toPtr<slope_task>();
  if (tier) {
    tier->first = orThrow(impl_->jit->lookup(named.name), "JIT lookup").toPtr<slope_fn>();
    tier->sites = out.sites;
    // The budget: the first tier's compile time times tierBudget (level 2 takes 17 to 19
    // times as long as level 0 on the ADBench samples, docs/benchmarks.md "Tiers").
    double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    tier->budgetNs =
        impl_->opt.tierBudget < 0 ? -1 : static_cast<int64_t>(impl_->opt.tierBudget * ns);
  }
  return out;
}

/// Queues t's second tier (at the front: Jit::optimize waits for it) unless it is queued,
/// being compiled or done; starts the tier thread on the first request.
void Jit::Impl::request(Tier* t, bool front) {
  std::lock_guard<std::mutex> lock(queueMutex);
  if (stopping) {
    // (only this function, under queueMutex, moves a tier off Idle)
    if (t->state.load() == Tier::Idle) t->finish(kDestroyedFirst);
    return;
  }
  int idle = Tier::Idle;
  if (t->state.compare_exchange_strong(idle, Tier::Queued)) {
    if (front)
      queue.push_front(t);
    else
      queue.push_back(t);
  } else if (front) {
    auto it = std::find(queue.begin(), queue.end(), t);
    if (it == queue.end()) return; // being compiled, or done
    queue.erase(it);
    queue.push_front(t);
  } else {
    return;
  }
  if (!tierThread.joinable()) tierThread = std::thread([this] { tierLoop(); });
  queueCv.notify_one();
}

void Jit::Impl::tierLoop() {
  for (;;) {
    Tier* t = nullptr;
    {
      std::unique_lock<std::mutex> lock(queueMutex);
      queueCv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) return;
      t = queue.front();
      queue.pop_front();
    }
    std::string error;
    try {
      compileSecondTier(*t);
    } catch (const std::exception& e) {
      error = e.what();
    }
    t->f = ir::Function{}; // (compiled once either way: the IR is not needed again)
    t->sites.clear();
    t->finish(error);
  }
}

/// On the tier thread: t's function again at opt.optLevel, linked under NAME.K.tLEVEL, with
/// the same pool; then the trampoline's pointer. The first tier's code and workspace stay
/// (a call may be running in them) until the Jit goes.
void Jit::Impl::compileSecondTier(Tier& t) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  if (!later.tm)
    later.tm =
        orThrow(hostBuilder(later.level).createTargetMachine(), "creating the target machine");
  ir::Function named = t.f;
  named.name = t.f.name + ".t" + std::to_string(later.level);
  auto ctx = std::make_unique<llvm::LLVMContext>();
  std::vector<Site> sites;
  std::unique_ptr<llvm::Module> m = generate(named, *ctx, sites, opt);
  if (!sameSites(sites, t.sites)) // (error codes index the sites: both tiers must agree)
    throw std::logic_error("JIT: the second tier of " + t.f.name + " has other check sites");
  auto t1 = Clock::now();
  std::unique_lock<std::mutex> timingLock(timingMutex, std::defer_lock);
  if (timing()) timingLock.lock();
  codegen::optimize(*m, *later.tm, later.level, &cancel);
  auto t2 = Clock::now();
  {
    std::lock_guard<std::mutex> lock(queueMutex);
    if (stopping) throw std::runtime_error(kDestroyedFirst);
  }
  const CodegenPlan plan = codegenPlan(*m);
  compileInParts(later, std::move(m), plan);
  ctx.reset();
  auto fn = orThrow(jit->lookup(named.name), "JIT lookup").toPtr<slope_fn>();
  if (timing()) {
    reportTiming(named.name, {t0, t1, t2, Clock::now()}, plan.parts, later.level,
                 ", second tier" + plan.note());
    timingLock.unlock();
  }
  auto release = runtimeOf(named.name).first;
  {
    std::lock_guard<std::mutex> lock(mutex);
    releases.push_back(release);
  }
  t.fast.store(fn, std::memory_order_release);
}

std::pair<void (*)(), void (*)(const slope_parallel*)>
Jit::Impl::runtimeOf(const std::string& name) {
  auto release = orThrow(jit->lookup(name + kReleaseSuffix), "JIT lookup").toPtr<void (*)()>();
  auto setParallel = orThrow(jit->lookup(name + kSetParallelSuffix), "JIT lookup")
                         .toPtr<void (*)(const slope_parallel*)>();
  // Threads: the process's pool, for up to opt.threads threads per parallel loop.
  if (opt.threads > 1 && !opt.offload) setParallel(threadPool(opt.threads));
  return {release, setParallel};
}

void Jit::optimize(const CompiledFunction& c) {
  Tier* t = c.tier;
  if (!t) return;
  t->jit->request(t, true);
  std::unique_lock<std::mutex> lock(t->mutex);
  t->cv.wait(lock, [&] {
    int s = t->state.load();
    return s == Tier::Done || s == Tier::Failed;
  });
  if (t->state.load() == Tier::Failed)
    throw std::runtime_error("compiling at the full optimisation level: " + t->error);
}

bool Jit::optimized(const CompiledFunction& c) {
  return !c.tier || c.tier->fast.load(std::memory_order_acquire) != nullptr;
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
