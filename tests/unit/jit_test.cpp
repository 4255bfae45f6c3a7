// The JIT against the reference evaluator: every gradient-table case and every sample
// function, forward and gradient, f64 and f32, at several shapes; and the JIT's run-time
// checks fail exactly as the evaluator's do.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/codegen/jit.hpp"
#include "compiler/codegen/object.hpp"
#include "compiler/codegen/offload.hpp"
#include "compiler/codegen/ptx.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/lower/loop_ir.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/sparsity.hpp"
#include "compiler/support/thread_pool.hpp"
#include "compiler/support/vmath.hpp"
#include "grad_cases.hpp"
#include "program_gen.hpp"
#include "runtime/cuda_driver.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <unistd.h>

namespace slope {
namespace {

JitRunner& jit() {
  static JitRunner r;
  return r;
}

/// How many times `what` occurs in `text` (a pass's marks in printed Loop IR or LLVM IR).
size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

/// Same values within a few ulps of the dtype (libm calls and evaluation order are shared,
/// so most results are bit-identical).
void expectClose(const Tensor& a, const Tensor& b, const std::string& what,
                 double f32Tolerance = 1e-5) {
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  double tol = a.dtype() == DType::F32 ? f32Tolerance : 1e-12;
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.getF(i), y = b.getF(i);
    if ((std::isnan(x) && std::isnan(y)) || x == y) continue; // (x == y: infinities too)
    if (std::fabs(x - y) <= tol * std::max({1.0, std::fabs(x), std::fabs(y)})) continue;
    if (bad++ < 3) {
      std::ostringstream os;
      os.precision(17);
      os << " element " << i << ": " << x << " against " << y << ";";
      first += os.str();
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.numel()
                    << " elements differ by more than " << tol << " relative:" << first;
}

void compareBackends(const ir::Function& f, const std::string& what,
                     const std::vector<std::map<std::string, int64_t>>& shapes) {
  ir::Function g = differentiate(f, {});
  Runnable jf = jit().prepare(f), jg = jit().prepare(g);
  for (const auto& sizes : shapes)
    for (uint64_t seed = 0; seed < 2; ++seed) {
      std::vector<Tensor> args = randomArgs(f, sizes, seed);
      auto a = jf(args), b = evaluate(f, args);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k)
        expectClose(a[k], b[k], what + " forward");
      std::vector<Tensor> gargs = args;
      for (const Tensor& r : b) // cotangents for VJPs
        if (isFloat(r.dtype()) && !(b.size() == 1 && r.rank() == 0)) {
          Tensor w(r.dtype(), r.shape());
          for (int64_t i = 0; i < w.numel(); ++i)
            w.setF(i, 0.5 + 0.25 * static_cast<double>(i % 3));
          gargs.push_back(w);
        }
      auto ga = jg(gargs), gb = evaluate(g, gargs);
      ASSERT_EQ(ga.size(), gb.size());
      for (size_t k = 0; k < ga.size(); ++k)
        expectClose(ga[k], gb[k], what + " gradient " + std::to_string(k));
    }
}

class JitVsInterp : public ::testing::TestWithParam<CaseParam> {};

TEST_P(JitVsInterp, GradientTableCase) {
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareBackends(prog->forward("f"), p.c->name,
                  {{}, {{"n", 1}, {"m", 1}, {"k", 1}}, {{"n", 4}, {"m", 2}, {"k", 5}}});
}

INSTANTIATE_TEST_SUITE_P(Ops, JitVsInterp, ::testing::ValuesIn(allCaseParams()),
                         caseParamName<::testing::TestParamInfo<CaseParam>>);

TEST(JitVsInterpSamples, EverySampleFunction) {
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(SLOPE_SOURCE_DIR) + "/samples")) {
    if (entry.path().extension() != ".slope") continue;
    auto prog = Program::fromFile(entry.path().string());
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    for (const auto& name : prog->functionNames())
      compareBackends(prog->forward(name), entry.path().filename().string() + ":" + name,
                      {{}, {{"n", 2}, {"m", 5}, {"N", 7}, {"K", 4}, {"D", 2}}});
  }
}

// Loop IR's classification (compiler/lower): a loop called parallel must give the same bits
// whatever order its iterations run in. The JIT runs every such loop last to first
// (JitOptions::reverseParallel) and the results must equal the usual ones bit for bit, for
// every gradient-table case, sample function and loop test program, forward and gradient.
JitRunner& reversedJit() {
  static JitRunner r([] {
    codegen::JitOptions o;
    o.reverseParallel = true;
    return o;
  }());
  return r;
}

void expectSameBits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.getF(i), y = b.getF(i);
    if (std::isnan(x) && std::isnan(y)) continue;
    ASSERT_EQ(std::memcmp(&x, &y, sizeof x), 0)
        << what << " element " << i << ": " << x << " in order, " << y << " reversed";
  }
}

/// The ways of running compiled code that must give the same bits as the default JIT's.
/// Each makes one or more callables from one compilation of a function.
using Variant = std::function<std::vector<std::pair<std::string, Runnable>>(const ir::Function&)>;

/// Every parallel loop run last to first.
std::vector<std::pair<std::string, Runnable>> reversed(const ir::Function& h) {
  return {{"reversed", reversedJit().prepare(h)}};
}

/// Compiled once with every parallel loop on the pool however small
/// (JitOptions::minParallelWork = 0), then run on each of `counts` threads: the module's pool
/// is bound again before each call, which is all a thread count changes (the code is the same).
Variant onThreads(std::vector<int> counts) {
  return [counts](const ir::Function& h) {
    static auto threaded = [] {
      codegen::JitOptions o;
      o.threads = 16;
      o.minParallelWork = 0;
      return std::make_shared<codegen::Jit>(o);
    }();
    auto fn = std::make_shared<ir::Function>(h);
    auto compiled = std::make_shared<codegen::CompiledFunction>(threaded->add(*fn));
    std::vector<std::pair<std::string, Runnable>> out;
    for (int t : counts)
      out.emplace_back("on " + std::to_string(t) + " threads",
                       [fn, compiled, t](const std::vector<Tensor>& args) {
                         compiled->setParallel(threadPool(t));
                         return callCompiled(*fn, *compiled, args);
                       });
    return out;
  };
}

/// One chunk per row of every parallel loop nest (JitOptions::rowChunks: how the CUDA kernels
/// of codegen/ptx.hpp cut them, a thread per row), run on 1 thread and on 16.
std::vector<std::pair<std::string, Runnable>> byRows(const ir::Function& h) {
  static auto rows = [] {
    codegen::JitOptions o;
    o.threads = 16;
    o.minParallelWork = 0;
    o.rowChunks = true;
    return std::make_shared<codegen::Jit>(o);
  }();
  auto fn = std::make_shared<ir::Function>(h);
  auto compiled = std::make_shared<codegen::CompiledFunction>(rows->add(*fn));
  std::vector<std::pair<std::string, Runnable>> out;
  for (int t : {1, 16})
    out.emplace_back("a chunk per row on " + std::to_string(t) + " threads",
                     [fn, compiled, t](const std::vector<Tensor>& args) {
                       compiled->setParallel(threadPool(t));
                       return callCompiled(*fn, *compiled, args);
                     });
  return out;
}

/// The sanitizer build: there the samples' sweeps below were a third of the stage's time, and
/// what the sanitizers watch is Slope's own C++ (generated code is not instrumented), which is
/// the same passes whichever variant a function is compiled for. So there each sample function
/// takes one variant, the next function the next (and the ahead-of-time sweep every third
/// function): every function and every variant still runs sanitized, not every pair. The
/// plain suite runs every pair.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

/// `all`, or under the sanitizers the `k`-th of them in turn.
std::vector<Variant> variantsFor(size_t k, const std::vector<Variant>& all) {
  if (!kSanitized) return all;
  return {all[k % all.size()]};
}

/// Machine code made in parts on 4 threads, every function of the module its own part.
std::vector<std::pair<std::string, Runnable>> inParts(const ir::Function& h) {
  static JitRunner parts([] {
    codegen::JitOptions o;
    o.compileThreads = 4;
    o.minSplitInstructions = 0;
    return o;
  }());
  return {{"compiled in parts", parts.prepare(h)}};
}

/// Compiled at LLVM optimisation levels other than the default 2 (Options::opt_level). Loop IR
/// fixes every order of operations and no fast-math flag lets LLVM change one, so each level
/// computes the same bits; and each must run at all (at opt_level 0 a misaligned vector load
/// of a sum's lanes block crashed once, where the optimiser had hidden it).
Variant atOptLevels(std::vector<int> levels) {
  return [levels](const ir::Function& h) {
    static std::map<int, std::shared_ptr<JitRunner>> runners;
    std::vector<std::pair<std::string, Runnable>> out;
    for (int level : levels) {
      std::shared_ptr<JitRunner>& r = runners[level];
      if (!r) {
        codegen::JitOptions o;
        o.optLevel = level;
        r = std::make_shared<JitRunner>(o);
      }
      out.emplace_back("at opt level " + std::to_string(level), r->prepare(h));
    }
    return out;
  };
}

/// Compiled ahead of time (`slopec compile`'s path: codegen::emitObject for this machine's
/// CPU), linked by the system's C compiler into a shared library with libslope_rt.a, libmvec
/// and libm only, and called through its C ABI: the same bits as the JIT's (issue 13).
std::vector<std::pair<std::string, Runnable>> aheadOfTime(const ir::Function& h) {
  static int count = 0;
  static const std::filesystem::path dir = [] {
    auto d =
        std::filesystem::temp_directory_path() / ("slope_aot_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  auto fn = std::make_shared<ir::Function>(h);
  fn->name = "aot" + std::to_string(count++); // (each library its own names all the same)
  codegen::ObjectCode code = codegen::emitObject({{*fn, "", {}, ""}}, {});
  std::string obj = (dir / (fn->name + ".o")).string(), lib = (dir / (fn->name + ".so")).string();
  {
    std::ofstream o(obj, std::ios::binary);
    o << code.bytes;
  }
  std::string cmd = "cc -shared -o " + lib + " " + obj + " " + SLOPE_RT_PATH + " -lmvec -lm";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(handle, nullptr) << dlerror();
  std::filesystem::remove(obj);
  std::filesystem::remove(lib); // (mapped: it stays until the process ends)
  if (!handle) return {};
  auto compiled = std::make_shared<codegen::CompiledFunction>();
  compiled->fn = reinterpret_cast<slope_fn>(dlsym(handle, (fn->name + "__abi").c_str()));
  compiled->sites = code.sites.at(0);
  compiled->entryChecks = fn->entryChecks;
  EXPECT_NE(compiled->fn, nullptr);
  if (!compiled->fn) return {};
  return {{"ahead of time", [fn, compiled](const std::vector<Tensor>& args) {
             return callCompiled(*fn, *compiled, args);
           }}};
}

/// f and its gradient give the same bits in every variant as on the default JIT, which
/// compiles each once.
void compareOrders(const ir::Function& f, const std::string& what,
                   const std::map<std::string, int64_t>& sizes,
                   const std::vector<Variant>& variants = {reversed}) {
  ir::Function g = differentiate(f, {});
  for (const ir::Function* h : {&f, static_cast<const ir::Function*>(&g)}) {
    Runnable in = jit().prepare(*h);
    std::vector<Tensor> args = randomArgs(*h, sizes, 7); // (g's include its cotangents)
    std::vector<Tensor> a;
    bool fails = false;
    try {
      a = in(args);
    } catch (const EvalError&) {
      fails = true;
    }
    const std::string part = h == &f ? " forward " : " gradient ";
    for (const Variant& v : variants)
      for (auto& [label, run] : v(*h)) {
        if (fails) {
          EXPECT_THROW(run(args), EvalError) << what << " " << label;
          continue;
        }
        std::vector<Tensor> b = run(args);
        ASSERT_EQ(a.size(), b.size()) << what << " " << label;
        for (size_t k = 0; k < a.size(); ++k)
          expectSameBits(a[k], b[k], what + " " + label + part + std::to_string(k));
      }
  }
}

// Parallel loops in any order, and threads (docs/architecture.md, "Threads"): every
// gradient-table case gives the same bits with its parallel loops run last to first, and on 2
// and 16 threads, its parallel loops and sums cut into chunks that the pool's threads take in
// whatever order they come, as on the default JIT's one thread.
TEST_P(JitVsInterp, SameBitsInAnyOrderOnAnyThreads) {
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareOrders(prog->forward("f"), p.c->name, {{"n", 4}, {"m", 3}, {"k", 5}},
                {reversed, onThreads({2, 16}), byRows});
}

// Objects from `slopec compile` (compiler/codegen/object.hpp) compute the same bits as the
// JIT for this machine, forward and gradient, for every gradient-table case.
TEST_P(JitVsInterp, AheadOfTimeSameBitsAsJit) {
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareOrders(prog->forward("f"), p.c->name, {{"n", 4}, {"m", 3}, {"k", 5}}, {aheadOfTime});
}

// Every gradient-table case gives the same bits at opt levels 0 and 1 as at the default 2 (3
// differs from 2 in how far LLVM unrolls; the larger programs below compare it).
TEST_P(JitVsInterp, SameBitsAtEveryOptLevel) {
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareOrders(prog->forward("f"), p.c->name, {{"n", 4}, {"m", 3}, {"k", 5}},
                {atOptLevels({0, 1})});
}

// Sums long enough for the lanes of reduce_order.hpp (rows of 32 and more, in blocks), the
// ADBench GMM and LSTM and the blocked scatters, at every opt level: the same bits as at 2.
// (At opt_level 0 the first of these crashed: an aligned AVX-512 load from a stack block
// aligned 8.)
TEST(JitVsInterpLarge, SameBitsAtEveryOptLevel) {
  struct Case {
    std::string file, fn;
    std::map<std::string, int64_t> sizes;
  } cases[] = {
      {"/samples/adbench/gmm.slope", "gmm", {{"K", 3}, {"d", 8}, {"T", 36}, {"n", 300}}},
      {"/samples/adbench/lstm.slope", "lstm", {{"l", 2}, {"c", 40}, {"b", 14}}},
      {"/tests/lit/loops/blocks.slope", "centers", {{"k", 4}, {"d", 3}, {"n", 300}}},
      {"/samples/autograd_intro.slope", "bowl", {{"n", 70}, {"m", 45}}},
      {"/samples/autograd_intro.slope", "mlp", {{"n", 100}, {"d", 40}, {"h", 33}}},
      {"/samples/mixture.slope", "mixture32", {{"K", 3}, {"D", 4}, {"N", 300}}},
  };
  for (const Case& c : cases) {
    auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + c.file);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    compareOrders(prog->forward(c.fn), c.file + ":" + c.fn, c.sizes, {atOptLevels({0, 1, 3})});
  }
}

// A basic block longer than JitOptions::hugeBlock (a 3000-term expression: thousands of LLVM
// instructions in one block, forward and gradient) gets its machine code at level 0, the
// fast register allocator's (SLOPE_JIT_TIMING says so), where the greedy one grows faster
// than linearly: the same bits as the greedy allocator's code and the evaluator's.
TEST(JitVsInterpLarge, HugeBlocksSameBitsWithLevelZeroMachineCode) {
  const char* ops[] = {"x * y", "sin(x)", "x * x", "y * 0.5", "exp(y) * x"};
  std::string src = "fn f(x: f64, y: f64) -> f64 {\n    ";
  for (int i = 0; i < 3000; ++i)
    src += (i ? " + " : "") + std::string(ops[i % 5]) + " * " + std::to_string(i % 7 + 1);
  src += "\n}\n";
  auto prog = Program::fromString("huge", src);
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function f = prog->forward("f");
  ir::Function g = differentiate(f, {});
  // At level 0 too the huge block is cut into pieces (JitOptions::hugeBlock / 2 long); with
  // hugeBlock 0 it stays whole.
  codegen::JitOptions greedy, level0, level0Whole;
  greedy.hugeBlock = 0;
  level0.optLevel = level0Whole.optLevel = 0;
  level0Whole.hugeBlock = 0;
  std::pair<const char*, JitRunner> runners[] = {{"level 0 machine code in pieces", JitRunner{}},
                                                 {"greedy allocator", JitRunner{greedy}},
                                                 {"level 0 in pieces", JitRunner{level0}},
                                                 {"level 0 whole", JitRunner{level0Whole}}};
  for (const ir::Function* h :
       {static_cast<const ir::Function*>(&f), static_cast<const ir::Function*>(&g)}) {
    std::vector<Tensor> args = randomArgs(*h, {}, 3);
    auto e = evaluate(*h, args);
    for (auto& [what, runner] : runners) {
      auto a = runner.prepare(*h)(args);
      ASSERT_EQ(a.size(), e.size());
      for (size_t k = 0; k < e.size(); ++k)
        expectSameBits(a[k], e[k], h->name + " " + what + " " + std::to_string(k));
    }
  }
}

// Past 64 arguments the internal function takes its scalars and sizes, and past 64 tensors
// its tensor pointers, through the entry point's arrays instead of one by one (codegen,
// Gen::run: LLVM's interprocedural passes are quadratic in a call's arguments). Every mix
// against the evaluator: many scalars with a few tensors (the tensors stay noalias
// arguments), many tensors, and the gradients of both (a result per parameter), with f32
// and i64 scalars among them, at levels 2 and 0.
TEST(JitVsInterpLarge, ManyParametersThroughTheEntryPointsArrays) {
  auto program = [](int scalars, int tensors) {
    std::string sig, body;
    for (int i = 0; i < scalars; ++i) {
      const char* t = i % 10 == 3 ? "f32" : i % 10 == 7 ? "i64" : "f64";
      sig += (sig.empty() ? "" : ", ") + std::string("s") + std::to_string(i) + ": " + t;
      std::string v = "s" + std::to_string(i);
      if (i % 10 != 0 && i % 10 != 5) continue;
      body +=
          (body.empty() ? "" : " + ") + v + " * s" + std::to_string(i + 1 < scalars ? i + 1 : 0);
    }
    for (int i = 0; i < tensors; ++i) {
      sig += ", v" + std::to_string(i) + ": f64[n]";
      body += " + v" + std::to_string(i) + "[1] * v" + std::to_string((i + 1) % tensors) + "[2]";
    }
    // A few f32 and i64 parameters join the sum through conversions.
    for (int i = 3; i + 4 < scalars; i += 40)
      body += " + f64(s" + std::to_string(i) + ") * f64(s" + std::to_string(i + 4) + ")";
    return "fn f(" + sig + ") -> f64 {\n    " + body + "\n}\n" + "fn g(" + sig +
           ") -> f64[n] {\n    let w[i] = v0[i] * (" + body + ");\n    w\n}\n";
  };
  codegen::JitOptions level0;
  level0.optLevel = 0;
  JitRunner at2, at0{level0};
  for (auto [scalars, tensors] : {std::pair{100, 2}, std::pair{4, 70}, std::pair{90, 80}}) {
    std::string label =
        std::to_string(scalars) + " scalars, " + std::to_string(tensors) + " tensors";
    auto prog = Program::fromString("many", program(scalars, tensors));
    ASSERT_TRUE(prog->ok()) << label << "\n" << prog->diagnostics();
    for (const char* fn : {"f", "g"}) {
      ir::Function f = prog->forward(fn);
      ir::Function grad = differentiate(f, {});
      for (const ir::Function* h : {&f, &grad}) {
        std::vector<Tensor> args = randomArgs(*h, {{"n", 5}}, 3);
        auto e = evaluate(*h, args);
        ASSERT_EQ(e.size(), h->body.yields.size());
        for (JitRunner* r : {&at2, &at0}) {
          auto a = r->prepare(*h)(args);
          ASSERT_EQ(a.size(), e.size()) << label;
          for (size_t k = 0; k < e.size(); ++k)
            expectSameBits(a[k], e[k], label + " " + h->name + " result " + std::to_string(k));
        }
      }
    }
  }
}

/// Calls fn(label, f, sizes) for every function of the samples and loop programs, at sizes 5
/// where its entry checks hold.
template <class Fn> void forEachSampleFunction(Fn&& fn) {
  for (const char* dir : {"/samples", "/tests/lit/loops", "/tests/lit/slope", "/tests/lit/v3"})
    for (const auto& entry :
         std::filesystem::directory_iterator(std::string(SLOPE_SOURCE_DIR) + dir)) {
      if (entry.path().extension() != ".slope") continue;
      auto prog = Program::fromFile(entry.path().string());
      if (!prog->ok()) continue; // (files of deliberate errors)
      for (const auto& name : prog->functionNames()) {
        ir::Function f = prog->forward(name);
        std::map<std::string, int64_t> sizes;
        for (const auto& n : f.sizeNames())
          sizes[n] = 5;
        f.deriveSizes(sizes);
        bool ok = true;
        for (const auto& c : f.entryChecks)
          ok = ok && c.holds(sizes);
        if (ok) fn(entry.path().filename().string() + ":" + name, f, sizes);
      }
    }
}

// The same for every function of the samples and loop programs, and their machine code made
// in parts (docs/architecture.md, "JIT"): each function of a module its own part, up to 4,
// made on 4 threads.
TEST(JitThreads, SamplesAndLoopProgramsSameBitsEveryWay) {
  size_t k = 0;
  forEachSampleFunction([&](const std::string& label, const ir::Function& f,
                            const std::map<std::string, int64_t>& sizes) {
    compareOrders(f, label, sizes,
                  variantsFor(k++, {reversed, onThreads({2, 16}), inParts, byRows}));
  });
  EXPECT_GT(k, 80u); // (the samples and loop programs were found: 94)
}

// The same for every function of the samples and loop programs.
TEST(JitAheadOfTime, SamplesAndLoopProgramsSameBitsAsJit) {
  size_t k = 0;
  forEachSampleFunction([&](const std::string& label, const ir::Function& f,
                            const std::map<std::string, int64_t>& sizes) {
    if (!kSanitized || k % 3 == 0) compareOrders(f, label, sizes, {aheadOfTime});
    ++k;
  });
  EXPECT_GT(k, 80u);
}

// Forward mode on every function of the samples and loop programs, compiled: the JVP against
// the VJP and finite differences, the HVP of scalar functions against differences of the
// gradient (gradcheck.hpp, checkForward). Inputs that leave a function's domain (log of a
// negative) are drawn again with positive floats.
TEST(ForwardMode, SamplesAndLoopProgramsOnTheJit) {
  int checked = 0, hvps = 0;
  forEachSampleFunction([&](const std::string& label, const ir::Function& f,
                            const std::map<std::string, int64_t>& sizes) {
    for (int draw = 0; draw < 2; ++draw) {
      std::vector<Tensor> args = randomArgs(f, sizes, 11);
      if (draw == 1)
        for (Tensor& t : args)
          if (isFloat(t.dtype()))
            for (int64_t i = 0; i < t.numel(); ++i)
              t.setF(i, std::fabs(t.getF(i)) + 0.1);
      ForwardCheckResult r;
      try {
        r = checkForward(f, args, {}, &jit());
      } catch (const EvalError&) {
        return; // (a data-dependent subscript out of range at these inputs)
      }
      if (!r.notFinite.empty()) continue;
      EXPECT_TRUE(r.passed) << label << ": " << r.failure;
      EXPECT_EQ(r.hvpSkipped, "") << label; // (lgamma's second derivative is trigamma)
      ++checked;
      hvps += r.hvpChecked;
      return;
    }
  });
  std::cout << checked << " functions checked in forward mode, " << hvps << " HVPs\n";
  EXPECT_GT(checked, 40);
}

// Sparse Jacobians of every function of the samples and loop programs with a tensor or tuple
// result: every nonzero of the dense Jacobian (a JVP per column) lies in the pattern read off
// the IR, and the compressed Jacobian (a JVP direction per colour, batched) has the dense one's
// values.
TEST(SparseJacobian, SamplesAndLoopProgramsHoldEveryNonzero) {
  int patterns = 0, sparse = 0, seeded = 0;
  forEachSampleFunction([&](const std::string& label, const ir::Function& f,
                            const std::map<std::string, int64_t>& sizes) {
    std::vector<std::string> wrt = resolveWrt(f, {});
    if (wrt.empty()) return;
    std::vector<Tensor> args = randomArgs(f, sizes, 5);
    std::optional<SparsityPattern> pat = jacobianSparsity(f, args, wrt);
    if (!pat || pat->rows <= 1 || pat->cols > 400) return;
    ir::Function j = jvp(f, wrt);
    simplify(j);
    returnBuffersInPlace(j);
    Runnable jvpFn = jit().prepare(j);
    DenseDerivative d;
    try {
      d = denseJacobian(f, wrt, args, "forward", jvpFn, jvpFn);
    } catch (const EvalError&) {
      return; // (a data-dependent subscript out of range at these inputs)
    }
    // The compressed Jacobian from the batched JVP, 3 colours a call (the last call partly
    // filled), against the dense one from the unbatched JVP.
    ir::Function jb = jvp(f, wrt, 3);
    simplify(jb);
    returnBuffersInPlace(jb);
    SparseJacobian sj = sparseJacobian(f, wrt, args, *pat, Directional(jit().prepare(jb), 3));
    ++patterns;
    sparse += pat->nonzeros() < pat->rows * pat->cols;
    std::vector<double> got = toDense(*pat, sj.values);
    for (int64_t i = 0; i < d.matrix.numel(); ++i) {
      double want = d.matrix.getF(i), have = got[static_cast<size_t>(i)];
      if (std::isnan(want) && std::isnan(have)) continue;
      EXPECT_NEAR(have, want, 1e-12 * (1 + std::fabs(want)))
          << label << " entry (" << i / pat->cols << ", " << i % pat->cols << ")";
    }
    // The same colours through JVPs compiled for them (jvpSeeded), on the JIT, where each
    // colour is told by its column's parameter and last index (finite entries: a structural
    // zero gives 0 where the dense JVP's 0 * inf gives NaN).
    if (std::optional<Seeds> seeds =
            seedsFor(f, wrt, args, sj.colour, static_cast<int>(sj.colours))) {
      Directional sd = seededDirectional(*seeds, sj.colours, 3, [&](const Seeds& s) {
        ir::Function js = jvpSeeded(f, wrt, 3, s);
        simplify(js);
        returnBuffersInPlace(js);
        return [r = jit().prepare(js)](const std::vector<Tensor>& a, std::vector<Tensor>& out) {
          out = r(a);
        };
      });
      SparseJacobian ss = sparseJacobian(f, wrt, args, *pat, sd, false, &sj.colour);
      ++seeded;
      got = toDense(*pat, ss.values);
      for (int64_t i = 0; i < d.matrix.numel(); ++i) {
        double want = d.matrix.getF(i), have = got[static_cast<size_t>(i)];
        if (!std::isfinite(want)) continue;
        EXPECT_NEAR(have, want, 1e-12 * (1 + std::fabs(want)))
            << label << " (seeded) entry (" << i / pat->cols << ", " << i % pat->cols << ")";
      }
    }
  });
  std::cout << patterns << " patterns checked, " << sparse << " of them sparse, " << seeded
            << " also by seeded JVPs\n";
  EXPECT_GT(seeded, 0);
  EXPECT_GE(sparse, 3); // (most samples return a scalar: a dense row)
}

/// ptxas, from $SLOPE_PTXAS, the CUDA toolkit at /usr/local/cuda, or PATH; empty if none.
std::string ptxas() {
  if (const char* env = std::getenv("SLOPE_PTXAS"); env && *env) return env;
  if (std::filesystem::exists("/usr/local/cuda/bin/ptxas")) return "/usr/local/cuda/bin/ptxas";
  return std::system("command -v ptxas > /dev/null 2>&1") == 0 ? "ptxas" : "";
}

/// The kernels of f and of its gradient (codegen/ptx.hpp) for each architecture, and ptxas
/// accepts every module.
void expectPtxAssembles(const ir::Function& f, const std::string& what,
                        const std::vector<std::string>& archs, bool forwardToo = true) {
  static const auto dir = [] {
    auto d =
        std::filesystem::temp_directory_path() / ("slope_ptx_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  ir::Function g = differentiate(f, {});
  for (const ir::Function* h : {&f, static_cast<const ir::Function*>(&g)})
    for (const std::string& arch : archs) {
      if (h == &f && !forwardToo) continue;
      codegen::PtxOptions o;
      o.arch = arch;
      codegen::PtxModule m = codegen::emitPtx(*h, o);
      ASSERT_NE(m.ptx.find(".target " + arch), std::string::npos) << what;
      for (const codegen::PtxLoop& l : m.loops) {
        if (l.kernel.empty()) continue;
        EXPECT_NE(m.ptx.find(".entry " + l.kernel + "("), std::string::npos) << what;
      }
      auto file = dir / "k.ptx";
      std::ofstream(file) << m.ptx;
      std::string cmd = ptxas() + " -arch=" + arch + " -o " + (dir / "k.cubin").string() + " " +
                        file.string() + " 2>&1";
      EXPECT_EQ(std::system(cmd.c_str()), 0) << what << " " << h->name << " " << arch << "\n"
                                             << m.ptx.substr(0, 4000);
    }
}

bool ptxToolsPresent() {
  return !ptxas().empty() && !codegen::findLibdevice().empty();
}

// CUDA kernels (issue 12): every gradient-table case's gradient (which holds its forward loop
// nests too) makes a PTX module that ptxas takes for sm_90. (Skipped without the CUDA
// toolkit's ptxas and libdevice.)
TEST_P(JitVsInterp, PtxAssembles) {
  if (!ptxToolsPresent()) GTEST_SKIP() << "no ptxas or libdevice (the CUDA toolkit)";
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  expectPtxAssembles(prog->forward("f"), p.c->name, {"sm_90"}, false);
}

// The same for every function of the samples and loop programs, for sm_80 (the table: sm_90).
TEST(Ptx, SamplesAndLoopProgramsAssemble) {
  if (!ptxToolsPresent()) GTEST_SKIP() << "no ptxas or libdevice (the CUDA toolkit)";
  forEachSampleFunction(
      [](const std::string& label, const ir::Function& f, const std::map<std::string, int64_t>&) {
        expectPtxAssembles(f, label, {"sm_80"});
      });
}

// Which loop nests become kernels: elementwise maps and sums over data points do, named
// after their place in the source; in the GMM gradient, a loop nest that needs a temporary
// of its own per chunk (from the workspace) stays on the host, and says why.
TEST(Ptx, KernelsAndHostLoops) {
  if (codegen::findLibdevice().empty()) GTEST_SKIP() << "no libdevice (the CUDA toolkit)";
  auto prog = Program::fromString("k.slope", R"(fn f(x: f64[n, m]) -> f64 {
    let y[i, j] = exp(x[i, j]) * 2.0;
    sum[i: n](sum[j: m](y[i, j] * x[i, j]))
  })");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  codegen::PtxModule m = codegen::emitPtx(prog->forward("f"));
  ASSERT_FALSE(m.loops.empty());
  for (const codegen::PtxLoop& l : m.loops) {
    EXPECT_FALSE(l.kernel.empty()) << l.chunk << ": " << l.why;
    EXPECT_EQ(l.where.rfind("k.slope:", 0), 0u) << l.chunk;
  }
  EXPECT_FALSE(m.libdevice.empty());                   // (exp)
  EXPECT_EQ(m.ptx.find(".extern"), std::string::npos); // (libdevice's exp linked in)
  codegen::PtxOptions old;
  old.arch = "sm_10";
  EXPECT_THROW(codegen::emitPtx(prog->forward("f"), old), std::invalid_argument);

  auto gmm = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  ASSERT_TRUE(gmm->ok()) << gmm->diagnostics();
  codegen::PtxModule g = codegen::emitPtx(differentiate(gmm->forward("gmm"), {}));
  size_t kernels = 0, temporaries = 0;
  for (const codegen::PtxLoop& l : g.loops) {
    kernels += !l.kernel.empty();
    temporaries += l.why.find("allocates memory") != std::string::npos;
    EXPECT_EQ(l.kernel.empty(), !l.why.empty()) << l.chunk;
  }
  EXPECT_GE(kernels, g.loops.size() / 2);
  EXPECT_GE(temporaries, 1u);
}

// Longer than CI: the kernels of random programs (program_gen.hpp; SLOPE_GEN_SEED and
// SLOPE_GEN_PROGRAMS as for RandomPrograms, default 200 from 0), forward and gradient, for
// sm_90, through ptxas. Run it after changing codegen or ptx.cpp:
//   slope_unit_tests --gtest_also_run_disabled_tests --gtest_filter='*PtxRandomPrograms*'
TEST(Ptx, DISABLED_PtxRandomPrograms) {
  if (!ptxToolsPresent()) GTEST_SKIP() << "no ptxas or libdevice (the CUDA toolkit)";
  const char* seedEnv = std::getenv("SLOPE_GEN_SEED");
  const char* countEnv = std::getenv("SLOPE_GEN_PROGRAMS");
  int64_t seed = seedEnv ? std::atoll(seedEnv) : 0, count = countEnv ? std::atoll(countEnv) : 200;
  for (int64_t s = seed; s < seed + count; ++s) {
    std::string text = gen::print(gen::generate(static_cast<uint64_t>(s)));
    auto prog = Program::fromString("seed" + std::to_string(s) + ".slope", text);
    if (!prog->ok()) continue; // (the random program tests report these)
    for (const auto& name : prog->functionNames()) {
      SCOPED_TRACE("seed " + std::to_string(s) + "\n" + text);
      expectPtxAssembles(prog->forward(name), "seed " + std::to_string(s), {"sm_90"});
    }
  }
}

// On a GPU machine (scripts/gpu-check.sh): the driver compiles the kernels of every sample
// and loop program, forward and gradient, for its first GPU, and finds each kernel by name.
// Skipped where CUDA is not available (no driver library or no GPU: the reason is shown).
TEST(CudaDevice, SampleKernelsLoad) {
  const cuda::Probe& probe = cuda::probe();
  if (!probe.ok()) GTEST_SKIP() << probe.problem;
  std::string arch = probe.devices[0].arch();
  if (probe.devices[0].major * 10 + probe.devices[0].minor > 90)
    arch = "sm_90"; // (PTX runs on newer)
  std::cout << "device 0: " << probe.devices[0].name << " (" << arch << "), driver "
            << probe.driverVersion << ", " << probe.library << "\n";
  size_t modules = 0, kernels = 0;
  forEachSampleFunction(
      [&](const std::string& label, const ir::Function& f, const std::map<std::string, int64_t>&) {
        ir::Function g = differentiate(f, {});
        for (const ir::Function* h : {&f, static_cast<const ir::Function*>(&g)}) {
          codegen::PtxOptions o;
          o.arch = arch;
          codegen::PtxModule m = codegen::emitPtx(*h, o);
          std::vector<std::string> names;
          for (const codegen::PtxLoop& l : m.loops)
            if (!l.kernel.empty()) names.push_back(l.kernel);
          EXPECT_EQ(cuda::loadKernels(m.ptx, names), "") << label << " " << h->name;
          ++modules;
          kernels += names.size();
        }
      });
  std::cout << modules << " modules, " << kernels << " kernels loaded\n";
}

// --- CUDA offload (codegen/offload.hpp) -----------------------------------------------------

/// The CPU's JIT with the offload's options but no offload (offloadJitOptions): a chunk per
/// row, libm's math functions rather than libmvec's.
JitRunner& offloadCpuJit() {
  static JitRunner r([] {
    codegen::JitOptions o = codegen::offloadJitOptions();
    o.offload = false;
    return o;
  }());
  return r;
}

/// f and its gradient, run by `run` (made from each), against offloadCpuJit: the same bits
/// (`exact`: the emulated offload, the same machine code on the host) or within a few ulps
/// (on a GPU, whose math functions are libdevice's where the CPU's are libm's).
void compareWithJit(const ir::Function& f, const std::string& what,
                    const std::vector<std::map<std::string, int64_t>>& shapes,
                    const std::function<Runnable(const ir::Function&)>& run, bool exact) {
  ir::Function g = differentiate(f, {});
  for (const ir::Function* h : {&f, static_cast<const ir::Function*>(&g)}) {
    Runnable cpu = offloadCpuJit().prepare(*h), off = run(*h);
    const std::string part = h == &f ? " forward" : " gradient";
    for (const auto& sizes : shapes)
      for (uint64_t seed = 0; seed < 2; ++seed) {
        std::vector<Tensor> args = randomArgs(*h, sizes, seed); // (g's include cotangents)
        std::vector<Tensor> a;
        try {
          a = cpu(args);
        } catch (const EvalError& e) { // (an index drawn out of range, say): the same error
          EXPECT_THROW(off(args), EvalError) << what << part << ": the CPU said " << e.what();
          continue;
        }
        std::vector<Tensor> b = off(args);
        ASSERT_EQ(a.size(), b.size()) << what << part;
        for (size_t k = 0; k < a.size(); ++k) {
          std::string which = what + part + " " + std::to_string(k) + " (offload; cpu)";
          // (On a GPU, f32 to 1e-4: libdevice's tanhf and expf are within 2 ulps of glibc's,
          // and a sum of a few hundred such terms moved matmul_chain's f32 gradient at n 300
          // by up to 1.2e-5 on the H200. f64 holds to 1e-12.)
          if (exact)
            expectSameBits(b[k], a[k], which);
          else
            expectClose(b[k], a[k], which, 1e-4);
        }
      }
  }
}

/// The gradient-table shapes the offload runs at: small, and large enough for many blocks of
/// GPU threads.
const std::vector<std::map<std::string, int64_t>> kOffloadShapes = {
    {{"n", 4}, {"m", 3}, {"k", 5}}, {{"n", 300}, {"m", 7}, {"k", 130}}};

/// The offload without a GPU (CudaRunner::Mode::Emulate): the host code, the PTX and the
/// pairing of tasks with kernels as on a GPU, each launch played on the host with only the
/// bytes it passes, and every pointer it passes checked to point into memory a kernel
/// reaches.
codegen::CudaRunner& emulatedRunner() {
  static codegen::CudaRunner r(2, codegen::CudaRunner::Mode::Emulate);
  return r;
}

Runnable onEmulatedOffload(const ir::Function& h) {
  return emulatedRunner().prepare(h);
}

// Every gradient-table case on the emulated offload, against the JIT. (On a machine with a
// GPU the offload itself runs instead: OnCudaDevice.)
TEST_P(JitVsInterp, OffloadEmulated) {
  if (cuda::probe().ok()) GTEST_SKIP() << "a GPU is here: OnCudaDevice runs the offload itself";
  if (codegen::findLibdevice().empty()) GTEST_SKIP() << "no libdevice.10.bc (CUDA toolkit)";
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareWithJit(prog->forward("f"), p.c->name, kOffloadShapes, onEmulatedOffload, true);
}

// Every sample and loop program function and its gradient on the emulated offload.
TEST(Offload, SamplesEmulated) {
  if (cuda::probe().ok()) GTEST_SKIP() << "a GPU is here: CudaDevice.SamplesOnDevice runs them";
  if (codegen::findLibdevice().empty()) GTEST_SKIP() << "no libdevice.10.bc (CUDA toolkit)";
  int64_t loops = 0, kernels = 0;
  forEachSampleFunction([&](const std::string& label, const ir::Function& f,
                            const std::map<std::string, int64_t>& sizes) {
    compareWithJit(
        f, label, {sizes},
        [&](const ir::Function& h) {
          Runnable r = emulatedRunner().prepare(h);
          loops += emulatedRunner().lastStats()->loops;
          kernels += emulatedRunner().lastStats()->kernels;
          return r;
        },
        true);
  });
  std::cout << loops << " loop nests, " << kernels << " of them kernels\n";
  EXPECT_GT(kernels, loops / 2);
}

/// The offload on device 0 (one runner: its JIT and the GPU's modules live as long as the
/// tests).
codegen::CudaRunner& cudaRunner() {
  static codegen::CudaRunner r;
  return r;
}

Runnable onCuda(const ir::Function& h) {
  return cudaRunner().prepare(h);
}

// On a GPU: every gradient-table case, forward and gradient, at shapes that fill many blocks
// of threads, against the CPU. Skipped where CUDA is not available.
TEST_P(JitVsInterp, OnCudaDevice) {
  if (!cuda::probe().ok()) GTEST_SKIP() << cuda::probe().problem;
  const CaseParam& p = GetParam();
  auto prog = Program::fromString(p.c->name, instantiate(p.c->source, p.dtype));
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareWithJit(prog->forward("f"), p.c->name, kOffloadShapes, onCuda, false);
}

// On a GPU: every sample and loop program function and its gradient.
TEST(CudaDevice, SamplesOnDevice) {
  if (!cuda::probe().ok()) GTEST_SKIP() << cuda::probe().problem;
  forEachSampleFunction([](const std::string& label, const ir::Function& f,
                           const std::map<std::string, int64_t>& sizes) {
    compareWithJit(f, label, {sizes}, onCuda, false);
  });
}

/// The GPU's runner where there is one, else the emulation.
codegen::CudaRunner& offloadRunner() {
  return cuda::probe().ok() ? cudaRunner() : emulatedRunner();
}

// ADBench's GMM, forward and gradient (its sizes tie T to d, so the sample sweep above leaves
// it out), on a GPU or in the emulation; the report says which loop nests are kernels.
TEST(Offload, AdbenchGmm) {
  const bool gpu = cuda::probe().ok();
  if (!gpu && codegen::findLibdevice().empty())
    GTEST_SKIP() << "no GPU, and no libdevice.10.bc for the emulation";
  auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  compareWithJit(
      prog->forward("gmm"), "gmm", {{{"K", 3}, {"d", 4}, {"T", 10}, {"n", 300}}},
      [](const ir::Function& h) {
        Runnable r = offloadRunner().prepare(h);
        std::cout << offloadRunner().lastStats()->report;
        return r;
      },
      !gpu);
}

// The seed example runs its loop nests as kernels, and a subscript out of range in a kernel
// is the CPU's error, naming the tensor and the index: on a GPU, else in the emulation.
TEST(Offload, KernelsRunAndFailAsOnTheCpu) {
  if (!cuda::probe().ok() && codegen::findLibdevice().empty())
    GTEST_SKIP() << "no GPU, and no libdevice.10.bc for the emulation";
  auto p = Program::fromString("t.slope", "fn bowl(x: f64[n, m]) -> f64 {\n"
                                          "  sum(x^2 + 2 * x + 1)\n}\n"
                                          "fn shift(x: f64[n], k: i64) -> f64[n] {\n"
                                          "  let y[i: n] = x[i + k] * 2;\n  y\n}\n");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  Runnable g = offloadRunner().prepare(p->gradient("bowl", {}));
  auto stats = offloadRunner().lastStats();
  Tensor x(DType::F64, {2, 2});
  for (int i = 0; i < 4; ++i)
    x.setF(i, i + 1);
  auto out = g({x});
  EXPECT_EQ(out[0].getF(0), 54.0);
  EXPECT_EQ(out[1].getF(0), 4.0);
  EXPECT_EQ(out[1].getF(3), 10.0);
  Tensor big(DType::F64, {1000, 3});
  for (int64_t i = 0; i < big.numel(); ++i)
    big.setF(i, 0.001 * static_cast<double>(i));
  g({big});
  std::cout << stats->report << stats->launches << " launches, " << stats->hostLoops
            << " loop nests on the host\n";
  EXPECT_GT(stats->kernels, 0);
  EXPECT_GT(stats->launches, 0);
  Runnable s = offloadRunner().prepare(p->forward("shift"));
  Tensor v(DType::F64, {500});
  EXPECT_NO_THROW(s({v, Tensor::scalar(DType::I64, 0)}));
  try {
    s({v, Tensor::scalar(DType::I64, 3)});
    ADD_FAILURE() << "no error";
  } catch (const EvalError& e) {
    EXPECT_STREQ(e.what(), "index 500 is out of range for 'x': dimension 0 has extent 500");
  }
}

// The offload called on caller memory (codegen::DeviceCall, the C++ API's views on a GPU):
// the same bits as the call on tensors, results written straight into the caller's buffers,
// and a failing call throws the same error and writes nothing there.
TEST(Offload, CallOnCallerMemory) {
  if (!cuda::probe().ok() && codegen::findLibdevice().empty())
    GTEST_SKIP() << "no GPU, and no libdevice.10.bc for the emulation";
  auto p = Program::fromString("t.slope", "fn f(x: f64[n, m], k: i64) -> (f64, f64[n]) {\n"
                                          "  let r[i: n] = sum[j: m](exp(x[i, j]) * x[i, k]);\n"
                                          "  (sum(r), r)\n}\n");
  ASSERT_TRUE(p->ok()) << p->diagnostics();
  ir::Function g = p->forward("f");
  Runnable onTensors = offloadRunner().prepare(g);
  codegen::DeviceCall onMemory = offloadRunner().lastCall();
  ASSERT_TRUE(onMemory);
  Tensor x(DType::F64, {300, 7});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.setF(i, std::sin(0.37 * static_cast<double>(i)));
  for (int64_t k : {int64_t{2}, int64_t{7}}) {
    Tensor kt = Tensor::scalar(DType::I64, static_cast<double>(k));
    std::map<std::string, int64_t> sizes = bindSizes(g, std::vector<Tensor>{x, kt});
    std::vector<Tensor> mine;
    for (size_t r = 0; r < g.body.yields.size(); ++r) {
      mine.emplace_back(g.types[g.body.yields[r]].dtype, resultShape(g, r, sizes));
      for (int64_t e = 0; e < mine.back().numel(); ++e)
        mine.back().setF(e, -1.0); // (a failing call must leave these)
    }
    std::vector<codegen::Span> in{{x.raw(), sizeof(double) * 2100}, {kt.raw(), sizeof(int64_t)}};
    std::vector<codegen::Span> out;
    for (Tensor& t : mine)
      out.push_back({t.raw(), static_cast<size_t>(t.numel()) * dtypeSize(t.dtype())});
    if (k == 7) { // out of range for m = 7
      EXPECT_THROW(onMemory(in, sizes, out), EvalError);
      EXPECT_THROW(onTensors({x, kt}), EvalError);
      for (const Tensor& t : mine)
        EXPECT_EQ(t.getF(0), -1.0);
      continue;
    }
    onMemory(in, sizes, out);
    std::vector<Tensor> want = onTensors({x, kt});
    ASSERT_EQ(want.size(), mine.size());
    for (size_t r = 0; r < want.size(); ++r)
      EXPECT_EQ(0, std::memcmp(want[r].raw(), mine[r].raw(),
                               static_cast<size_t>(want[r].numel()) * sizeof(double)))
          << "result " << r;
  }
}

// Blocked loops (Loop IR's `in blocks`: the adjoint's scatter over data points, with per-block
// partial gradients): at sizes that cut them into many blocks, the GMM gradient and the
// nearest-centres gradient of tests/lit/loops/blocks.slope (and one whose partial is empty) give
// the same bits on 2 and 16 threads and with the blocks run last to first as on one thread in
// order, and agree with the evaluator (which adds in iteration order) to its usual tolerance.
TEST(JitThreads, BlockedScatterLoopsSameBitsOnAnyThreads) {
  struct Case {
    std::string file, fn;
    std::map<std::string, int64_t> sizes;
  } cases[] = {
      {"/samples/adbench/gmm.slope", "gmm", {{"K", 3}, {"d", 3}, {"T", 6}, {"n", 300}}},
      {"/tests/lit/loops/blocks.slope", "centers", {{"k", 4}, {"d", 3}, {"n", 300}}},
      // (A partial with no elements: its workspace entry still gets a buffer.)
      {"/tests/lit/loops/blocks.slope", "pairs", {{"n", 100}, {"m", 1}}},
  };
  for (const Case& c : cases) {
    auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + c.file);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    ir::Function f = prog->forward(c.fn);
    // (The test means something only while the loops are blocked. The GMM's two scatter
    // loops are one since fusion, compiler/lower/fuse.cpp; the centres' are not fused; the
    // pairs' adjoint of v[i + 1] is blocked too since bounds.cpp proves i + 1 in range.)
    std::string loops = lower::print(lower::lower(differentiate(f, {})));
    EXPECT_EQ(occurrences(loops, "in blocks, partials"), c.fn == "gmm" ? 1u : 2u) << loops;
    compareOrders(f, c.fn, c.sizes, {reversed, onThreads({2, 16})});
    compareBackends(f, c.fn, {c.sizes});
  }
}

// Producer-consumer fusion (compiler/lower/fuse.cpp): the adjoint of an intermediate tensor
// that one nest adds to and the next reads is not stored. Fusion keeps each buffer's order of
// accesses, so with one data point (one block: no partials) the gradient has the evaluator's
// bits, although the loops over components and coordinates are still fused; with 60 points
// it is within rounding (blocks), the same on 1, 2 and 16 threads and with parallel loops
// reversed, and agrees with finite differences. The forward, whose comprehensions are fused
// with their reader, has the evaluator's bits at every n.
TEST(JitVsInterp, FusedLoopsSameBitsAsEvaluator) {
  struct Case {
    std::string file, fn;
    std::map<std::string, int64_t> sizes;
  } cases[] = {
      {"/tests/lit/loops/fuse.slope", "mix", {{"k", 4}, {"d", 3}}},
      {"/tests/lit/loops/fuse.slope", "centred", {{"K", 4}, {"d", 5}}},
      {"/samples/adbench/gmm.slope", "gmm", {{"K", 3}, {"d", 3}, {"T", 6}}},
      {"/samples/adbench/gmm.slope", "gmm", {{"K", 2}, {"d", 40}, {"T", 820}}},
  };
  for (const Case& c : cases) {
    auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + c.file);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    ir::Function f = prog->forward(c.fn);
    ir::Function g = differentiate(f, {});
    // A comprehension read by one later nest shrinks to the row one iteration of the fused
    // loop writes and reads (fuse.cpp, fuseAndShrink): the GMM objective's qx and `centred`'s
    // q, n K d doubles each, are a row of d. Only where the values go changes: the forward
    // keeps the evaluator's bits, below.
    if (c.fn != "mix") {
      std::string floops = lower::print(lower::lower(f));
      EXPECT_EQ(floops.find("alloc f64[n, K, d]"), std::string::npos) << floops;
      EXPECT_NE(floops.find("alloc f64[d] (temp, kept across iterations)"), std::string::npos)
          << floops;
    }
    Runnable jf = jit().prepare(f);
    // (The test means something only while the buffer goes away: the GMM's one zeroed
    // [n, K, d] buffer left is the forward sweep's tape of its triangular sums.)
    std::string loops = lower::print(lower::lower(g));
    if (c.fn == "mix") {
      EXPECT_EQ(occurrences(loops, "alloc f64[n, k, d] zeroed"), 0u) << loops;
    } else if (c.fn == "gmm") {
      EXPECT_EQ(occurrences(loops, "alloc f64[n, K, d] zeroed"), 1u) << loops;
      EXPECT_EQ(occurrences(loops, "in blocks"), 1u) << loops;
    }
    Runnable jg = jit().prepare(g);
    for (int64_t n : {1, 60}) {
      std::map<std::string, int64_t> sizes = c.sizes;
      sizes["n"] = n;
      const std::string what =
          c.fn + " d = " + std::to_string(sizes.at("d")) + " n = " + std::to_string(n);
      std::vector<Tensor> fargs = randomArgs(f, sizes, 5);
      auto fa = jf(fargs), fb = evaluate(f, fargs);
      ASSERT_EQ(fa.size(), fb.size());
      for (size_t k = 0; k < fa.size(); ++k)
        expectSameBits(fa[k], fb[k], what + " forward");
      std::vector<Tensor> args = randomArgs(g, sizes, 11);
      auto a = jg(args), b = evaluate(g, args);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k) {
        if (n == 1)
          expectSameBits(a[k], b[k], what + " gradient " + std::to_string(k));
        else
          expectClose(a[k], b[k], what + " gradient " + std::to_string(k));
      }
      if (n > 1) compareOrders(f, what, sizes, {reversed, onThreads({2, 16})});
    }
    std::map<std::string, int64_t> sizes = c.sizes;
    sizes["n"] = 5;
    GradCheckResult r = checkGradient(f, randomArgs(f, sizes, 3), {}, &jit());
    EXPECT_TRUE(r.passed) << c.fn;
  }
}

// Sibling fusion (compiler/lower/fuse.cpp, fuseSiblings): neighbouring parallel vector loops
// over one extent run as one. Each buffer keeps its order of accesses, so the forward has the
// evaluator's bits; both functions give the same bits with the loops reversed and on 2 and 16
// threads, and agree with the evaluator and with finite differences. The printouts hold the
// fused forms (without them the test would compare unfused loops).
TEST(JitVsInterp, SiblingLoopsSameBitsAsEvaluator) {
  struct Case {
    std::string file, fn;
    std::map<std::string, int64_t> sizes;
    size_t loops; // parallel loops in the forward (unfused: 4 and 12)
  } cases[] = {
      {"/tests/lit/loops/fuse.slope", "cell", {{"b", 13}}, 2},
      {"/tests/lit/loops/fuse.slope", "strided", {{"n", 4}}, 6},
      {"/samples/adbench/lstm.slope", "lstm", {{"l", 2}, {"b", 5}, {"c", 4}}, 9},
  };
  for (const Case& c : cases) {
    auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + c.file);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    ir::Function f = prog->forward(c.fn);
    std::string loops = lower::print(lower::lower(f));
    EXPECT_EQ(occurrences(loops, "parallel for"), c.loops) << loops;
    Runnable jf = jit().prepare(f);
    for (uint64_t seed : {1, 2}) {
      std::vector<Tensor> args = randomArgs(f, c.sizes, seed);
      auto a = jf(args), b = evaluate(f, args);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k)
        expectSameBits(a[k], b[k], c.fn + " forward");
    }
    compareOrders(f, c.fn, c.sizes, {reversed, onThreads({2, 16})});
    compareBackends(f, c.fn, {c.sizes});
    GradCheckResult r = checkGradient(f, randomArgs(f, c.sizes, 3), {}, &jit());
    EXPECT_TRUE(r.passed) << c.fn;
    // The JVP, whose fused loops store w and its tangent and then copy both (`strided`:
    // LLVM's vectoriser, given the copies' loads, read the tangents' old values).
    ir::Function j = jvp(f, {});
    simplify(j);
    returnBuffersInPlace(j);
    std::vector<Tensor> jargs = randomArgs(j, c.sizes, 4);
    auto ja = jit().prepare(j)(jargs), jb = evaluate(j, jargs);
    ASSERT_EQ(ja.size(), jb.size());
    for (size_t k = 0; k < ja.size(); ++k)
      expectClose(ja[k], jb[k], c.fn + " JVP " + std::to_string(k));
  }
}

// Reverse mode's loops over reversed steps (t = (T - 1) - k) with their subscripts proven
// (compiler/lower/bounds.cpp) and no tape of a row index that is the step's own: their
// reversal has no entry checks, and sibling fusion (compiler/lower/fuse.cpp) makes each
// step's reversal fewer loops, mixing loads, stores and additions of one element in a fused
// body where they are consecutive. The gradients agree with the evaluator and with finite
// differences, and have the same bits on 1, 2 and 16 threads and with parallel loops
// reversed.
TEST(JitVsInterp, ReversedStepsProvenAndFused) {
  struct Case {
    std::string file, fn;
    std::map<std::string, int64_t> sizes;
    size_t loops; // parallel loops in the gradient (before: 9, 2 and 41)
  } cases[] = {
      {"/tests/lit/loops/bounds.slope", "rows", {{"l", 5}, {"b", 7}}, 5},
      {"/tests/lit/loops/bounds.slope", "shifted", {{"n", 9}}, 2},
      {"/samples/adbench/lstm.slope", "lstm", {{"l", 2}, {"b", 5}, {"c", 4}}, 20},
  };
  for (const Case& c : cases) {
    auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + c.file);
    ASSERT_TRUE(prog->ok()) << prog->diagnostics();
    ir::Function f = prog->forward(c.fn);
    std::string loops = lower::print(lower::lower(prog->gradient(c.fn, {})));
    EXPECT_EQ(occurrences(loops, "parallel for"), c.loops) << loops;
    EXPECT_EQ(occurrences(loops, " cold {"), 0u) << loops;
    EXPECT_EQ(occurrences(loops, "alloc i64"), 0u) << loops;
    compareBackends(f, c.fn, {c.sizes});
    compareOrders(f, c.fn, c.sizes, {reversed, onThreads({2, 16})});
    GradCheckResult r = checkGradient(f, randomArgs(f, c.sizes, 3), {}, &jit());
    EXPECT_TRUE(r.passed) << c.fn;
  }
}

// A loop whose accesses LLVM's vectoriser could reorder within an iteration is not marked
// parallel to it (lower::accessesKeepOrder; codegen's llvm.loop.parallel_accesses): reverse
// mode restoring a [n, 3] state and reading it back in one loop over (n, 3) is one (3 is a
// literal: LLVM may unroll it whole and vectorise over n, the accesses then strided), the
// same over (n, b) is not. Both gradients agree with the evaluator, and have the same bits on
// 1, 2 and 16 threads and with parallel loops reversed.
TEST(JitVsInterp, StridedStoreAndLoadLeftUnmarked) {
  auto prog = Program::fromString("state", R"(
fn decay3(x: f64[n, 3], T: i64) -> f64 {
    var s = x;
    for t in 0..T {
        s = 0.5 * s + sin(s);
    }
    sum(s)
}
fn decayb(x: f64[n, b], T: i64) -> f64 {
    var s = x;
    for t in 0..T {
        s = 0.5 * s + sin(s);
    }
    sum(s)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  for (const std::string fn : {"decay3", "decayb"}) {
    lower::Function lf = lower::lower(prog->gradient(fn, {}));
    size_t vector = 0, unmarked = 0;
    lower::forEachStmt(lf.body, [&](const lower::Stmt& s) {
      if (s.kind != lower::Stmt::Loop || s.loopKind != lower::LoopKind::Parallel || !s.vectorisable)
        return;
      ++vector;
      unmarked += !lower::accessesKeepOrder(s);
    });
    EXPECT_GT(vector, 3u) << fn;
    EXPECT_EQ(unmarked > 0, fn == "decay3") << fn << "\n" << lower::print(lf);
    const std::map<std::string, int64_t> sizes{{"n", 6}, {"b", 5}, {"T", 3}};
    ir::Function f = prog->forward(fn);
    compareBackends(f, fn, {sizes});
    compareOrders(f, fn, sizes, {reversed, onThreads({2, 16})});
  }
}

// A row loop nested in another (`few`) whose body calls a vector-math function runs its last
// partial vector masked, not as scalar iterations (codegen.cpp, nestLevel), and a short sum
// of such a function (under reduce_order's kMinLaneRow) computes its values in one such loop
// before summing them in order (orderedReduce): each lane is libmvec's same function, so the
// rows give the evaluator's bits for every row length around the vector width and past the
// short rows, forward and gradient (whose sweep tapes exp's values). A row without math
// calls keeps its scalar remainder (masked stores read back by the next loop do not
// forward).
TEST(JitVsInterp, MathRowsRunTheirTailMasked) {
  auto prog = Program::fromString("rows", R"(
fn f(w: f64[b], xs: f64[T, b]) -> f64 {
    var h = zeros(f64[b]);
    var total = 0.0;
    for t in 0..T {
        h = tanh(h * w + xs[t]);
        h = h * 0.5 + w;
        total = total + log(sum(exp(h)) + 2);
    }
    total + sum(h)
}
fn plain(w: f64[b], xs: f64[T, b]) -> f64 {
    var h = zeros(f64[b]);
    for t in 0..T {
        h = h * w + xs[t];
    }
    sum(h)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  if (vmath::enabled()) {
    const std::string ir = codegen::emitLLVM(prog->gradient("f", {}));
    EXPECT_NE(ir.find("@llvm.masked.store"), std::string::npos) << ir;
    EXPECT_NE(ir.find(vmath::vectorName("tanh", false)), std::string::npos) << ir;
    const std::string plain = codegen::emitLLVM(prog->gradient("plain", {}));
    EXPECT_EQ(plain.find("@llvm.masked."), std::string::npos) << plain;
  }
  ir::Function f = prog->forward("f");
  ir::Function g = differentiate(f, {});
  Runnable jf = jit().prepare(f), jg = jit().prepare(g);
  for (int64_t b : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 17, 31, 32, 40}) {
    const std::map<std::string, int64_t> sizes{{"b", b}, {"T", 3}};
    const std::string what = "b = " + std::to_string(b);
    std::vector<Tensor> args = randomArgs(f, sizes, 5);
    auto a = jf(args), e = evaluate(f, args);
    expectSameBits(a[0], e[0], what + " forward");
    auto ga = jg(args), ge = evaluate(g, args);
    ASSERT_EQ(ga.size(), ge.size());
    for (size_t k = 0; k < ga.size(); ++k)
      expectSameBits(ga[k], ge[k], what + " gradient " + std::to_string(k));
  }
}

// Row loops of triangular sums split at 32 (compiler/lower/lower.cpp, "short rows"): the rows
// under 32 sum serially in a loop of their own, the rest as before. The GMM (its Q (x - mu) is
// such a loop) gives the evaluator's bits (its gradient: within rounding, as the scatter
// loops' blocks sum in an order of their own) with d = 3 (short rows only), 40 (both parts)
// and 1100 (rows longer than a 1024-element group), the same bits on 1, 2 and 16 threads and
// with its parallel loops reversed, and agrees with finite differences.
TEST(JitVsInterp, ShortRowSplitSameBitsAsEvaluator) {
  auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function f = prog->forward("gmm");
  ir::Function g = differentiate(f, {});
  // (The test means something only while the split happens, in the forward and the gradient.)
  for (const ir::Function* h :
       {static_cast<const ir::Function*>(&f), static_cast<const ir::Function*>(&g)}) {
    std::string loops = lower::print(lower::lower(*h));
    EXPECT_NE(loops.find("size.def #rows0 = "), std::string::npos) << loops;
    EXPECT_NE(loops.find(" short {"), std::string::npos) << loops;
  }
  Runnable jf = jit().prepare(f), jg = jit().prepare(g);
  for (int64_t d : {3, 40, 1100}) {
    // (Under the sanitizers d = 1100 is left out: it runs the passes d = 40 runs, and there
    // the evaluator, instrumented, is slow on its 600,000-element triangle.)
    if (kSanitized && d > 100) continue;
    const int64_t n = d > 100 ? 2 : 5, K = d > 100 ? 1 : 3;
    const std::map<std::string, int64_t> sizes{
        {"K", K}, {"d", d}, {"T", d + d * (d - 1) / 2}, {"n", n}};
    const std::string what = "gmm d = " + std::to_string(d);
    std::vector<Tensor> args = randomArgs(f, sizes, 3);
    auto a = jf(args), b = evaluate(f, args);
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k)
      expectSameBits(a[k], b[k], what + " forward");
    auto ga = jg(args), gb = evaluate(g, args);
    ASSERT_EQ(ga.size(), gb.size());
    // (The gradient's scatter loops add per-block partials, in an order of their own.)
    for (size_t k = 0; k < ga.size(); ++k)
      expectClose(ga[k], gb[k], what + " gradient " + std::to_string(k));
    compareOrders(f, what, sizes, {reversed, onThreads({2, 16})});
    if (d < 100) {
      GradCheckResult r = checkGradient(f, args, {}, &jit());
      EXPECT_TRUE(r.passed) << what;
    }
  }
}

// The split on other shapes of the same pattern: a product over rows of j + 1 (split at 31),
// a row sum used twice and with the row index after it, a row loop of three indices, with d on
// both sides of 31 and 32.
TEST(JitVsInterp, ShortRowSplitOtherShapes) {
  auto prog = Program::fromString("rows", R"(
fn rows(a: f64[n, d], w: f64[d, d]) -> f64 {
    let p[i, j: d] = prod[c: j + 1](1 + 0.01 * a[i, c] * w[j, c]);
    let q[i, k: 2, j: d] = f64(j) * sum[c: j](a[i, c] * w[j, c] + f64(k)) + sum[c: j](w[c, j]^2);
    sum(p) + sum(q^2)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function f = prog->forward("rows");
  std::string loops = lower::print(lower::lower(f));
  EXPECT_NE(loops.find("prod for"), std::string::npos) << loops;
  // (Both loops split: the product and the two sums are short.)
  EXPECT_GE(occurrences(loops, " short {"), 3u) << loops;
  for (int64_t d : {3, 31, 32, 33, 40}) {
    const std::map<std::string, int64_t> sizes{{"n", 3}, {"d", d}};
    const std::string what = "rows d = " + std::to_string(d);
    std::vector<Tensor> args = randomArgs(f, sizes, 5);
    auto a = jit().prepare(f)(args), b = evaluate(f, args);
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k)
      expectSameBits(a[k], b[k], what + " forward");
    compareBackends(f, what, {sizes});
    compareOrders(f, what, sizes, {reversed, onThreads({2, 16})});
  }
}

/// A JIT whose tiled nests run in tiles of `rows` (0: row order).
std::shared_ptr<JitRunner> tiledJit(int64_t rows) {
  codegen::JitOptions o;
  o.tileRows = rows;
  return std::make_shared<JitRunner>(o);
}

// Tiles of points (compiler/lower/tile.cpp): a parallel nest over (i, k) whose body reads
// component k's data in a loop runs in tiles of i, with the evaluator's bits, on any thread
// count and in reverse, the tile's end at every place in a chunk (n from 1 to past a tile and a
// chunk). A failure that depends on k alone leaves the nest tiled and is the evaluator's; one
// that depends on i leaves it in row order, where the first failing access is the evaluator's.
TEST(JitVsInterp, TiledNestsSameBitsAsEvaluator) {
  auto prog = Program::fromString("tiles", R"(
fn near(a: f64[K, d], x: f64[n, d]) -> f64 {
    let e[i, k] = sum[j: d]((x[i, j] - a[k, j])^2) + sum[j: d](sum[c: j](a[k, c] * x[i, j]));
    sum[i](logsumexp[k](-e[i, k]))
}
fn picked(a: f64[K, d], x: f64[n, d], p: i64[K]) -> f64 {
    let e[i, k] = sum[j: d](sum[c: j](a[p[k], c] * x[i, c]));
    sum(e^2)
}
fn per_point(a: f64[K, d], x: f64[n, d], p: i64[n]) -> f64 {
    let e[i, k] = sum[j: d](sum[c: j](a[p[i] + k, c] * x[i, c] + a[k, c]));
    sum(e^2)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  auto inRange = [](std::vector<Tensor> args) {
    for (Tensor& t : args)
      if (t.dtype() == DType::I64)
        for (int64_t q = 0; q < t.numel(); ++q)
          t.setI(q, 0); // (p[i] + k < K)
    return args;
  };
  // Tiled nests in the forward and in the gradient. near's adjoint nest adds into a's gradient
  // at [k, c] and into x's at [i, c]: tiled. picked's adds into a's at [p[k], c], where two
  // components may meet: row order. per_point's reads of a[p[i] + k, c] can fail at some
  // points and not others: row order.
  const std::vector<std::tuple<const char*, size_t, size_t>> cases{
      {"near", 1, 2}, {"picked", 1, 1}, {"per_point", 0, 0}};
  // Row order (no tiles), and tiles of 3 rows: the default's bits, forward and gradient (its
  // blocked adjoint nests included, which are blocked from a few hundred points on).
  static std::shared_ptr<JitRunner> untiled = tiledJit(0), threeRows = tiledJit(3);
  for (const auto& [fn, forwardTiled, gradientTiled] : cases) {
    ir::Function f = prog->forward(fn);
    ir::Function g = differentiate(f, {});
    EXPECT_EQ(occurrences(lower::print(lower::lower(f)), " tiled 16 "), forwardTiled) << fn;
    EXPECT_EQ(occurrences(lower::print(lower::lower(g)), " tiled 16 "), gradientTiled) << fn;
    Runnable jf = jit().prepare(f), jg = jit().prepare(g);
    Runnable plain[] = {untiled->prepare(f), untiled->prepare(g)};
    Runnable three[] = {threeRows->prepare(f), threeRows->prepare(g)};
    // (A chunk of the nest's threads is ceil(n / 64) rows: 200 makes chunks of 4, tiles of 3
    // and 1; 1100 chunks of 18, tiles of 16 and 2.)
    for (int64_t n : {1, 17, 200, 1100}) {
      const std::map<std::string, int64_t> sizes{{"n", n}, {"K", 3}, {"d", 5}};
      const std::string what = std::string(fn) + " n = " + std::to_string(n);
      std::vector<Tensor> args = inRange(randomArgs(f, sizes, 11));
      auto a = jf(args), b = evaluate(f, args);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k)
        expectSameBits(a[k], b[k], what + " forward");
      std::vector<Tensor> gargs = inRange(randomArgs(g, sizes, 11));
      auto ga = jg(gargs), gb = evaluate(g, gargs);
      ASSERT_EQ(ga.size(), gb.size());
      for (size_t k = 0; k < ga.size(); ++k)
        expectClose(ga[k], gb[k], what + " gradient " + std::to_string(k));
      for (int h = 0; h < 2; ++h) {
        const std::vector<Tensor>& in = h ? gargs : args;
        auto want = (h ? jg : jf)(in), p = plain[h](in), t = three[h](in);
        for (size_t k = 0; k < want.size(); ++k) {
          expectSameBits(p[k], want[k], what + " in row order " + std::to_string(h));
          expectSameBits(t[k], want[k], what + " in tiles of 3 " + std::to_string(h));
        }
      }
      if (n == 1100) compareOrders(f, what, sizes, {reversed, onThreads({2, 16})});
      // Out of range at some k (picked), some i (per_point): the evaluator's error.
      if (std::string(fn) == "near") continue;
      Tensor& p = args.back();
      for (int64_t q = 1; q < p.numel(); q += 2)
        p.setI(q, 3 + q);
      // (per_point at n = 1100: (0, 2) fails first in row order, reading a[3]; in tiles, it
      // would be (1, 0), reading a[4].)
      p.setI(0, 1);
      std::string want;
      try {
        evaluate(f, args);
      } catch (const EvalError& e) {
        want = e.what();
      }
      ASSERT_FALSE(want.empty()) << what;
      try {
        jf(args);
        ADD_FAILURE() << what << ": no error";
      } catch (const EvalError& e) {
        EXPECT_EQ(std::string(e.what()), want) << what;
      }
    }
  }
}

// A nest whose only work two loops deep is additions into component k's data: the gradient of
// a packed triangle taken with respect to the triangle alone (the GMM's, wrt alphas, means and
// icf), whose rank-one updates run column by column (interchange.cpp's scatter form, from 2
// columns on). Tiles keep a component's triangle in cache for their points; every element
// still takes its terms in point order, so the bits are row order's, on any thread count.
TEST(JitVsInterp, TiledScatterSameBitsAsRowOrder) {
  auto prog = Program::fromString("scatter", R"(
fn packed(L: f64[K, T], x: f64[n, d]) -> f64 {
    let y[i, k, j: d] = x[i, j] + sum[c: j](L[k, d + c * (d - 1) - div(c * (c - 1), 2) + j - c - 1]
                                             * x[i, c]);
    let e[i, k] = -0.5 * sum[j](y[i, k, j]^2);
    sum[i](logsumexp[k](e[i, k]))
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function g = prog->gradient("packed", {"L"});
  const std::string loops = lower::print(lower::lower(g));
  // (The adjoint's nest prefetches y, the tape it reads: Stmt::prefetchRows.)
  const size_t blocks = loops.find(" in blocks");
  ASSERT_NE(blocks, std::string::npos) << loops;
  const size_t nest = loops.rfind(" tiled 16 prefetch %", blocks);
  ASSERT_NE(nest, std::string::npos) << loops;
  EXPECT_GT(nest, loops.rfind('\n', blocks)) << loops; // (on the blocked nest's line)
  EXPECT_NE(loops.find("#cols", loops.rfind("\n", nest)), std::string::npos) << loops; // (scatter)
  static std::shared_ptr<JitRunner> untiled = tiledJit(0), threeRows = tiledJit(3);
  Runnable jg = jit().prepare(g), plain = untiled->prepare(g), three = threeRows->prepare(g);
  for (int64_t d : {5, 17}) // (a short triangle and one of over 16 columns)
    for (int64_t n : {1, 17, 1100}) {
      const std::map<std::string, int64_t> sizes{
          {"n", n}, {"K", 3}, {"d", d}, {"T", d + d * (d - 1) / 2}};
      const std::string what = "packed d = " + std::to_string(d) + ", n = " + std::to_string(n);
      std::vector<Tensor> args = randomArgs(g, sizes, 13);
      auto want = jg(args), b = evaluate(g, args), p = plain(args), t = three(args);
      ASSERT_EQ(want.size(), b.size());
      for (size_t k = 0; k < want.size(); ++k) {
        expectClose(want[k], b[k], what + " against the evaluator " + std::to_string(k));
        expectSameBits(p[k], want[k], what + " in row order " + std::to_string(k));
        expectSameBits(t[k], want[k], what + " in tiles of 3 " + std::to_string(k));
      }
      for (auto& [label, run] : onThreads({2, 16})(g)) {
        auto r = run(args);
        for (size_t k = 0; k < want.size(); ++k)
          expectSameBits(r[k], want[k], what + " " + label + " " + std::to_string(k));
      }
    }
}

// Triangular sums in column order (compiler/lower/interchange.cpp): a triangle stored by
// columns is summed column by column into per-row lanes and tails, with the evaluator's bits;
// the rows' own loop runs when there are fewer than 7 columns, when a row's check fails
// (reporting the evaluator's first failing access), and for a triangle stored by rows.
TEST(JitVsInterp, TriangleColumnsSameBitsAsEvaluator) {
  auto prog = Program::fromString("columns", R"(
fn strict(icf: f64[T], x: f64[n, d]) -> f64 {
    let q[i, j: d] = sum[c: j](icf[d + c * (d - 1) - div(c * (c - 1), 2) + j - c - 1] * x[i, c]);
    sum(q^2)
}
fn diagonal(l: f64[T], x: f64[d]) -> f64 {
    let q[j: d] = sum[c: j + 1](l[c * d - div(c * (c - 1), 2) + j - c] * x[c]);
    sum(q^2)
}
fn byrows(l: f64[T], x: f64[n, d]) -> f64 {
    let q[i, j: d] = sum[c: j](l[div(j * (j - 1), 2) + c] * x[i, c]);
    sum(q^2)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  struct Case {
    const char* fn;
    bool columns;
    int64_t (*t)(int64_t d);
  };
  const Case cases[] = {
      {"strict", true, [](int64_t d) { return d + d * (d - 1) / 2; }},
      {"diagonal", true, [](int64_t d) { return d * (d + 1) / 2; }},
      {"byrows", false, [](int64_t d) { return d * (d - 1) / 2; }},
  };
  for (const Case& c : cases) {
    ir::Function f = prog->forward(c.fn);
    const std::string loops = lower::print(lower::lower(f));
    EXPECT_EQ(loops.find("< #cols") != std::string::npos, c.columns) << c.fn << "\n" << loops;
    Runnable jf = jit().prepare(f);
    for (int64_t d : {3, 16, 17, 20, 31, 33, 40, 47, 64, 100}) {
      const std::map<std::string, int64_t> sizes{{"d", d}, {"n", 3}, {"T", c.t(d)}};
      const std::string what = std::string(c.fn) + " d = " + std::to_string(d);
      std::vector<Tensor> args = randomArgs(f, sizes, 7);
      auto a = jf(args), b = evaluate(f, args);
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k)
        expectSameBits(a[k], b[k], what);
      if (d == 40) {
        compareBackends(f, what, {sizes});
        compareOrders(f, what, sizes, {reversed, onThreads({2, 16})});
      }
    }
  }
  // A triangle that does not fit: the failing call reports what the evaluator reports.
  ir::Function f = prog->forward("strict");
  const int64_t d = 40;
  std::vector<Tensor> args = randomArgs(f, {{"d", d}, {"n", 3}, {"T", d + d * (d - 1) / 2 - 3}}, 7);
  std::string jitError, evalError;
  try {
    jit().prepare(f)(args);
  } catch (const EvalError& e) {
    jitError = e.what();
  }
  try {
    evaluate(f, args);
  } catch (const EvalError& e) {
    evalError = e.what();
  }
  EXPECT_FALSE(jitError.empty());
  EXPECT_EQ(jitError, evalError);
}

/// A random shape of the triangle pattern (TriangleColumnsRandomShapes and
/// TriangleScatterColumnsRandomShapes): a triangle l stored by columns with or without its
/// diagonal, a row's sum over c < j + o for o from -11 to 11 (mostly -2 to 2), a term x, exp(x) or
/// x * c, one or two row indices (n points), d from 1 to 70 (rows of 32 and more take lanes), and T
/// up to 2 entries short of the triangle.
struct TriangleShape {
  std::string src, what;
  std::map<std::string, int64_t> sizes;
};
TriangleShape randomTriangle(std::mt19937_64& rng, int64_t n) {
  auto pick = [&](int lo, int hi) {
    return static_cast<int>(std::uniform_int_distribution<int>(lo, hi)(rng));
  };
  const char* terms[] = {"x[IX]", "exp(x[IX])", "x[IX] * f64(c)"};
  const bool diagonal = pick(0, 1) == 1, nested = pick(0, 1) == 1;
  // (Mostly near 0; a wider offset puts partial blocks of eight rows at both ends.)
  const int o = pick(0, 3) == 0 ? pick(-11, 11) : pick(-2, 2);
  // Column c starts at base(c); entry (j, c) sits at base(c) + j - c (diagonal) or
  // base(c) + j - c - 1 (strict).
  const std::string base =
      diagonal ? "c * d - div(c * (c - 1), 2)" : "d + c * (d - 1) - div(c * (c - 1), 2)";
  std::string term = terms[pick(0, 2)];
  term.replace(term.find("IX"), 2, nested ? "i, c" : "c");
  TriangleShape s;
  s.src = std::string("fn t(l: f64[T], x: f64[") + (nested ? "n, d" : "d") + "]) -> f64 {\n" +
          "    let q[" + (nested ? "i, " : "") + "j: d] = sum[c: j + (" + std::to_string(o) +
          ")](l[" + base + " + j - c" + (diagonal ? "" : " - 1") + "] * " + term + ");\n" +
          "    sum(q^2)\n}\n";
  const int64_t d = pick(0, 3) == 0 ? pick(32, 70) : pick(1, 31);
  const int64_t need = diagonal ? d * (d + 1) / 2 : d + d * (d - 1) / 2;
  const int64_t t = std::max<int64_t>(need - (pick(0, 3) == 0 ? pick(1, 2) : 0), 1);
  s.sizes = {{"d", d}, {"n", n}, {"T", t}};
  s.what = s.src + "d = " + std::to_string(d) + ", T = " + std::to_string(t);
  return s;
}

// The column form on random shapes of the pattern, from one column on
// (JitOptions::minTriangleColumns = 1; random programs never make the pattern): a triangle
// stored by columns with or without its diagonal, the sum's extent j + o for o from -11 to 11,
// a term of the row's sum that is x, exp(x) or x * c, one or two row indices, d from 1 to 70
// (rows of 32 and more take lanes), and a triangle 0 to 2 entries short (a call that fails
// must fail as the evaluator does, naming the same index in order). The JIT gives the
// evaluator's bits, on 2 threads and reversed too.
TEST(JitVsInterp, TriangleColumnsRandomShapes) {
  static JitRunner columns([] {
    codegen::JitOptions o;
    o.minTriangleColumns = 1;
    return o;
  }());
  static JitRunner reversedColumns([] {
    codegen::JitOptions o;
    o.minTriangleColumns = 1;
    o.reverseParallel = true;
    o.threads = 2;
    o.minParallelWork = 0;
    return o;
  }());
  std::mt19937_64 rng(11);
  int rewritten = 0, failed = 0;
  for (int round = 0; round < 40; ++round) {
    const TriangleShape shape = randomTriangle(rng, 3);
    auto prog = Program::fromString("t", shape.src);
    ASSERT_TRUE(prog->ok()) << shape.src << prog->diagnostics();
    ir::Function f = prog->forward("t");
    lower::LowerOptions lo;
    lo.minTriangleColumns = 1;
    rewritten += lower::print(lower::lower(f, lo)).find("< #cols") != std::string::npos;
    const std::string& what = shape.what;
    std::vector<Tensor> args = randomArgs(f, shape.sizes, static_cast<uint64_t>(round));
    std::vector<Tensor> want;
    std::string wantError;
    try {
      want = evaluate(f, args);
    } catch (const EvalError& e) {
      wantError = e.what();
    }
    for (JitRunner* r : {&columns, &reversedColumns}) {
      std::vector<Tensor> got;
      std::string gotError;
      try {
        got = r->prepare(f)(args);
      } catch (const EvalError& e) {
        gotError = e.what();
      }
      // (Reversed, a parallel loop meets its failing iterations in another order.)
      if (r == &columns)
        EXPECT_EQ(gotError, wantError) << what;
      else
        EXPECT_EQ(gotError.empty(), wantError.empty()) << what << gotError;
      if (!wantError.empty() || !gotError.empty()) continue;
      ASSERT_EQ(got.size(), want.size());
      for (size_t k = 0; k < got.size(); ++k)
        expectSameBits(got[k], want[k], what);
    }
    failed += !wantError.empty();
  }
  // (The test means something only while most shapes take the column form, and some fail.)
  EXPECT_GE(rewritten, 30);
  EXPECT_GE(failed, 3);
}

/// Whether printed Loop IR has the scatter form's choice: a sum over a triangle's columns
/// (`reduction reduce.sum for %N < #colsK`, the columns whose ranges overlap).
bool scatterColumns(const std::string& loops) {
  const std::string head = "reduce.sum for %";
  for (size_t at = loops.find(head); at != std::string::npos; at = loops.find(head, at + 1)) {
    const size_t end = loops.find('{', at);
    if (loops.substr(at, end - at).find("< #cols") != std::string::npos) return true;
  }
  return false;
}

// The adjoint of a triangle in column order (interchange.cpp, rewriteScatter): row j's
// additions into the packed entries (j, c) of a gradient (in the loop over rows that a nest
// over points and components holds, the GMM's shape) run column by column, with the bits
// of the rows' form, which still runs for fewer columns, a triangle that does not fit, or
// additions of the rest of the loop into the triangle's range (`overlap`: the diagonal's
// entries 0 .. d - 1 are also the first column's; its adjoint is one nest over i, k, j, split
// for the rows). One point (n = 1) gives the evaluator's
// bits; more points add per-block partials, compared with the rows' form of the JIT, on 1
// and 2 threads and reversed.
TEST(JitVsInterp, TriangleScatterColumnsSameBits) {
  static JitRunner rowsOnly([] {
    codegen::JitOptions o;
    o.minTriangleColumns = int64_t{1} << 40;
    o.minScatterColumns = int64_t{1} << 40;
    return o;
  }());
  static JitRunner columnsOnTwo([] {
    codegen::JitOptions o;
    o.threads = 2;
    o.minParallelWork = 0;
    o.reverseParallel = true;
    return o;
  }());
  auto prog = Program::fromString("scatter", R"(
fn gmmlike(icf: f64[K, T], x: f64[n, d], mu: f64[K, d]) -> f64 {
    let q[i, k, j: d] = exp(icf[k, j]) * (x[i, j] - mu[k, j])
        + sum[c: j](icf[k, d + c * (d - 1) - div(c * (c - 1), 2) + j - c - 1] * (x[i, c] - mu[k, c]));
    sum[i](logsumexp[k](-0.5 * sum[j](q[i, k, j]^2)))
}
fn overlap(icf: f64[K, T], x: f64[n, d], mu: f64[K, d]) -> f64 {
    let q[i, k, j: d] = exp(icf[k, j]) * (x[i, j] - mu[k, j])
        + sum[c: j](icf[k, c * (d - 1) - div(c * (c - 1), 2) + j - c - 1] * (x[i, c] - mu[k, c]));
    sum(q^2)
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  for (const std::string fn : {"gmmlike", "overlap"}) {
    ir::Function g = prog->gradient(fn, {"icf"});
    const std::string loops = lower::print(lower::lower(g));
    EXPECT_TRUE(scatterColumns(loops)) << loops;
    Runnable columns = jit().prepare(g), rows = rowsOnly.prepare(g), two = columnsOnTwo.prepare(g);
    for (int64_t d : {3, 16, 17, 33, 40}) {
      for (int64_t n : {1, 5}) {
        const int64_t t = d + d * (d - 1) / 2;
        const std::map<std::string, int64_t> sizes{{"d", d}, {"n", n}, {"K", 2}, {"T", t}};
        const std::string what = fn + " d = " + std::to_string(d) + " n = " + std::to_string(n);
        std::vector<Tensor> args = randomArgs(g, sizes, 3);
        auto a = columns(args), b = rows(args), c = two(args);
        ASSERT_EQ(a.size(), b.size());
        for (size_t k = 0; k < a.size(); ++k) {
          expectSameBits(a[k], b[k], what + " result " + std::to_string(k));
          expectSameBits(a[k], c[k], what + " 2 threads, result " + std::to_string(k));
        }
        if (n == 1) {
          auto e = evaluate(g, args);
          for (size_t k = 0; k < a.size(); ++k)
            expectSameBits(a[k], e[k], what + " evaluator, result " + std::to_string(k));
        }
      }
    }
  }
}

// The same on random shapes of the pattern, from one column on: the gradient with respect to
// a triangle stored by columns with or without its diagonal, extents j + o for o from -11 to
// 11, one or two row indices, d from 1 to 70, and a triangle 0 to 2 entries short (the call
// must fail as the evaluator's does, naming the same index).
TEST(JitVsInterp, TriangleScatterColumnsRandomShapes) {
  static JitRunner columns([] {
    codegen::JitOptions o;
    o.minScatterColumns = 1;
    return o;
  }());
  std::mt19937_64 rng(23);
  int rewritten = 0, failed = 0;
  for (int round = 0; round < 40; ++round) {
    const TriangleShape shape = randomTriangle(rng, 1);
    auto prog = Program::fromString("t", shape.src);
    ASSERT_TRUE(prog->ok()) << shape.src << prog->diagnostics();
    ir::Function g = prog->gradient("t", {"l"});
    lower::LowerOptions lo;
    lo.minScatterColumns = 1;
    rewritten += scatterColumns(lower::print(lower::lower(g, lo)));
    const std::string& what = shape.what;
    std::vector<Tensor> args = randomArgs(g, shape.sizes, static_cast<uint64_t>(round));
    std::vector<Tensor> want, got;
    std::string wantError, gotError;
    try {
      want = evaluate(g, args);
    } catch (const EvalError& e) {
      wantError = e.what();
    }
    try {
      got = columns.prepare(g)(args);
    } catch (const EvalError& e) {
      gotError = e.what();
    }
    EXPECT_EQ(gotError, wantError) << what;
    failed += !wantError.empty();
    if (!wantError.empty() || !gotError.empty()) continue;
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k)
      expectSameBits(got[k], want[k], what);
  }
  EXPECT_GE(rewritten, 30);
  EXPECT_GE(failed, 3);
}

// A tile's deferred columns (compiler/lower/tail.cpp): in the adjoint's nest over (i, k), run in
// tiles of i, the triangle's columns run once per tile and component, eight points at a time
// and then the rest, and every entry takes the same terms in the same order. So the bits are
// those of row order (no tiles: no deferral), of tiles of 3 (no group of eight) and of 10 (a
// group and two), on 2 and 16 threads and in reverse: n = 1 runs the nest as it is (one
// block), 300 in blocks of 5 rows, 1100 in blocks of 18 (a tile of 16, two groups, and one of
// 2); at d = 600 the partials would take too much memory, so 9 points run as one block in one
// tile (a group and one). A triangle one entry short takes the rows' form, and fails as row
// order does.
TEST(JitVsInterp, DeferredColumnsSameBits) {
  auto prog = Program::fromString("deferred", R"(
fn gmmlike(alphas: f64[K], icf: f64[K, T], x: f64[n, d], mu: f64[K, d]) -> f64 {
    let q[i, k, j: d] = exp(icf[k, j]) * (x[i, j] - mu[k, j])
        + sum[c: j](icf[k, d + c * (d - 1) - div(c * (c - 1), 2) + j - c - 1] * (x[i, c] - mu[k, c]));
    let main[i, k] = alphas[k] + sum[j: d](icf[k, j]) - 0.5 * sum[j](q[i, k, j]^2);
    sum[i](logsumexp[k](main[i, k]))
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function g = prog->gradient("gmmlike", {"icf", "mu"});
  const std::string loops = lower::print(lower::lower(g));
  EXPECT_EQ(occurrences(loops, "per tile, last {"), 1u) << loops;
  lower::LowerOptions rowOrder;
  rowOrder.tileRows = 0;
  EXPECT_EQ(occurrences(lower::print(lower::lower(g, rowOrder)), "per tile"), 0u);
  static std::shared_ptr<JitRunner> untiled = tiledJit(0), three = tiledJit(3), ten = tiledJit(10);
  Runnable deferred = jit().prepare(g);
  std::vector<std::pair<std::string, Runnable>> others{{"row order", untiled->prepare(g)},
                                                       {"tiles of 3", three->prepare(g)},
                                                       {"tiles of 10", ten->prepare(g)}};
  for (auto& v : {reversed(g), onThreads({2, 16})(g)})
    others.insert(others.end(), v.begin(), v.end());
  const std::vector<std::pair<int64_t, int64_t>> shapes{{3, 1},     {3, 300},  {10, 1}, {10, 300},
                                                        {10, 1100}, {17, 300}, {600, 9}};
  for (const auto& [d, n] : shapes) {
    const int64_t t = d + d * (d - 1) / 2;
    const std::map<std::string, int64_t> sizes{{"d", d}, {"n", n}, {"K", 3}, {"T", t}};
    const std::string what = "d = " + std::to_string(d) + ", n = " + std::to_string(n);
    std::vector<Tensor> args = randomArgs(g, sizes, 5);
    auto want = deferred(args);
    for (auto& [name, run] : others) {
      auto got = run(args);
      ASSERT_EQ(got.size(), want.size());
      for (size_t k = 0; k < got.size(); ++k)
        expectSameBits(got[k], want[k], what + ", " + name + ", result " + std::to_string(k));
    }
    if (d <= 10 && n <= 300) {
      auto e = evaluate(g, args);
      for (size_t k = 0; k < e.size(); ++k)
        expectClose(want[k], e[k], what + ", evaluator, result " + std::to_string(k));
    }
  }
  // One entry short: icf[k, T] is read (and fails) in the rows' form, at the same access.
  const std::map<std::string, int64_t> shortSizes{{"d", 10}, {"n", 300}, {"K", 3}, {"T", 54}};
  std::vector<Tensor> args = randomArgs(g, shortSizes, 5);
  auto error = [&](Runnable& run) {
    try {
      run(args);
    } catch (const EvalError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string want = error(deferred);
  EXPECT_NE(want, "no error");
  EXPECT_EQ(error(others[0].second), want);
}

// Loops Loop IR calls parallel and vectorisable reach LLVM marked so (access groups and
// llvm.loop.parallel_accesses; docs/architecture.md, "C ABI"), and no other loop is: a user
// loop with state, whose iterations depend on each other, must not be.
TEST(JitCodegen, ParallelLoopsMarkedForTheVectoriser) {
  auto prog = Program::fromString("marks", R"(
fn par(x: f64[n]) -> f64 {
    let y[i] = exp(x[i]) * x[i];
    sum[i](y[i] * y[i])
}
fn seq(x: f64[n]) -> f64 {
    var acc = 0.0;
    for i in 0..n {
        acc = acc * 0.5 + x[i];
    }
    acc
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  codegen::JitOptions o0;
  o0.optLevel = 0; // (the optimiser drops the marks of the loops it vectorises)
  const std::string par = codegen::emitLLVM(prog->forward("par"), o0);
  EXPECT_GE(occurrences(par, "llvm.loop.parallel_accesses"), 1u) << par;
  EXPECT_GE(occurrences(par, "!llvm.access.group"), 2u) << par; // (a load and a store at least)
  const std::string seq = codegen::emitLLVM(prog->forward("seq"), o0);
  EXPECT_EQ(occurrences(seq, "llvm.loop.parallel_accesses"), 0u) << seq;
  EXPECT_EQ(occurrences(seq, "!llvm.access.group"), 0u) << seq;
}

// The copy of a strength-reduced loop that runs only when its entry check fails (Loop IR's
// `cold`) is compiled for size: neither unrolled nor vectorised, behind an unlikely branch.
// A function with no entry check has none of that.
TEST(JitCodegen, ColdLoopsCompiledForSize) {
  auto prog = Program::fromString("cold", R"(
fn tri(icf: f64[T], x: f64[d]) -> f64 {
    let q[j: d] = sum[c: j](icf[d + c * (d - 1) - div(c * (c - 1), 2) + j - c - 1] * x[c]);
    sum(q^2)
}
fn plain(x: f64[n]) -> f64 {
    sum[i](x[i] * x[i])
}
)");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  codegen::JitOptions o0;
  o0.optLevel = 0;
  const std::string tri = codegen::emitLLVM(prog->forward("tri"), o0);
  EXPECT_GE(occurrences(tri, "llvm.loop.unroll.disable"), 1u) << tri;
  EXPECT_GE(occurrences(tri, "llvm.loop.vectorize.width\", i32 1"), 1u) << tri;
  EXPECT_GE(occurrences(tri, "!\"branch_weights\""), 1u) << tri;
  const std::string plain = codegen::emitLLVM(prog->forward("plain"), o0);
  EXPECT_EQ(occurrences(plain, "llvm.loop.unroll.disable"), 0u) << plain;
  EXPECT_EQ(occurrences(plain, "llvm.loop.vectorize.width"), 0u) << plain;
}

// Past eight levels, codegen flattens the outer levels of a loop nest into one loop and
// recovers their indices by division: a rank-11 tensor (with extents 1, 2 and 3 mixed, so a
// wrong divisor or order shows) and a rank-40 one give what the evaluator gives, in
// comprehensions and reductions that use the indices.
TEST(JitVsInterpDeep, FlattenedLoopNests) {
  auto program = [](int rank, const std::string& weight) {
    std::string dims, idx;
    for (int k = 0; k < rank; ++k) {
      dims += (k ? ", n" : "n") + std::to_string(k);
      idx += (k ? ", i" : "i") + std::to_string(k);
    }
    return "fn f(x: f64[" + dims + "]) -> f64 {\n    let y[" + idx + "] = x[" + idx + "] * f64(" +
           weight + ");\n    sum(y * x) + sum[" + idx + "](x[" + idx + "] * f64(i0 + 1))\n}\n";
  };
  auto p11 =
      Program::fromString("rank11.slope", program(11, "i0 + 2 * i2 + 3 * i5 + 5 * i9 + 7 * i10"));
  ASSERT_TRUE(p11->ok()) << p11->diagnostics();
  std::map<std::string, int64_t> sizes;
  const int64_t ext[] = {2, 1, 3, 1, 1, 2, 1, 1, 1, 2, 3};
  for (int k = 0; k < 11; ++k)
    sizes["n" + std::to_string(k)] = ext[k];
  compareBackends(p11->forward("f"), "rank 11", {sizes});
  auto p40 = Program::fromString("rank40.slope", program(40, "i0 + 2 * i20 + 3 * i39"));
  ASSERT_TRUE(p40->ok()) << p40->diagnostics();
  std::map<std::string, int64_t> s40;
  for (int k = 0; k < 40; ++k)
    s40["n" + std::to_string(k)] = k == 0 || k == 20 || k == 39 ? 2 : 1;
  compareBackends(p40->forward("f"), "rank 40", {s40});
  // The flattened loop of a parallel nest runs last to first too.
  compareOrders(p11->forward("f"), "rank 11", sizes);
}

TEST(JitErrors, SubscriptOutOfRangeNamesTensorAndIndex) {
  auto p = Program::fromString("t.slope", "fn f(x: f64[n], k: i64) -> f64 {\n  x[k] * 2\n}");
  ASSERT_TRUE(p->ok());
  Runnable f = jit().prepare(p->forward("f"));
  Tensor x(DType::F64, {3});
  EXPECT_NO_THROW(f({x, Tensor::scalar(DType::I64, 2)}));
  try {
    f({x, Tensor::scalar(DType::I64, 3)});
    ADD_FAILURE() << "no error";
  } catch (const EvalError& e) {
    EXPECT_STREQ(e.what(), "index 3 is out of range for 'x': dimension 0 has extent 3");
    EXPECT_EQ(p->diags().file().lineCol(e.where.begin).line, 2);
  }
  EXPECT_THROW(f({x, Tensor::scalar(DType::I64, -5)}), EvalError);
  Runnable g = jit().prepare(p->gradient("f", {}));
  EXPECT_THROW(g({x, Tensor::scalar(DType::I64, 9)}), EvalError);
}

TEST(JitErrors, IntegerDivisionAndCallErrors) {
  auto p =
      Program::fromString("t.slope", "fn f(x: f64[n], k: i64) -> f64 { x[0] * f64(div(n, k)) }");
  ASSERT_TRUE(p->ok());
  Runnable f = jit().prepare(p->forward("f"));
  Tensor x(DType::F64, {4});
  x.setF(0, 1);
  EXPECT_EQ(f({x, Tensor::scalar(DType::I64, 2)})[0].getF(0), 2.0);
  EXPECT_THROW(f({x, Tensor::scalar(DType::I64, 0)}), EvalError);
  EXPECT_THROW(f({x}), CallError);
  EXPECT_THROW(f({Tensor(DType::F32, {4}), Tensor::scalar(DType::I64, 1)}), CallError);
}

TEST(JitGradcheck, AgreesWithFiniteDifferences) {
  auto p = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/mixture.slope");
  ASSERT_TRUE(p->ok());
  ir::Function f = p->forward("mixture");
  auto args = randomArgs(f, {{"N", 6}, {"K", 3}, {"D", 2}}, 1);
  GradCheckResult r = checkGradient(f, args, {}, &jit());
  EXPECT_TRUE(r.passed);
}

} // namespace
} // namespace slope
