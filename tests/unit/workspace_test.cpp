// Workspaces (docs/architecture.md, "Workspaces"): a compiled function keeps its temporaries,
// tapes and adjoint buffers from one call to the next, so a steady-state call allocates
// nothing and takes no page fault; calls from several threads, calls that fail half-way and
// calls at changing sizes still give the evaluator's results.

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/resource.h>

#include <atomic>
#include <cmath>
#include <thread>

namespace slope {
namespace {

// A loop with state (its gradient keeps a tape) and tensor temporaries; `pick` then reads
// s[k], which is out of range for k >= n: the error comes after the tape is written.
const char* kSource = R"(
fn decay(x: f64[n], w: f64[n], T: i64) -> f64 {
    var s = x;
    for t in 0..T {
        s = 0.5 * s + sin(s) * w;
    }
    let y[i] = s[i] * exp(w[i]);
    sum(y) + sum(s^2)
}

fn pick(x: f64[n], T: i64, k: i64) -> f64 {
    var s = x;
    for t in 0..T {
        s = 0.5 * s + sin(s);
    }
    s[k] + sum(s^2)
}
)";

ir::Function gradientOf(const std::string& path, const std::string& source, const std::string& fn) {
  auto prog = path.empty() ? Program::fromString("workspace", source) : Program::fromFile(path);
  EXPECT_TRUE(prog->ok()) << prog->diagnostics();
  return differentiate(prog->forward(fn), {});
}

ir::Function decayGrad() {
  return gradientOf("", kSource, "decay");
}
ir::Function pickGrad() {
  return gradientOf("", kSource, "pick");
}
ir::Function gmmGrad() {
  return gradientOf(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope", "", "gmm");
}

void setInt(Tensor& t, int64_t v) {
  *static_cast<int64_t*>(t.raw()) = v;
}

/// The gradient's arguments: random floats for `sizes`, then the integer parameters named.
std::vector<Tensor> argsFor(const ir::Function& g, const std::map<std::string, int64_t>& sizes,
                            uint64_t seed, const std::map<std::string, int64_t>& ints = {}) {
  std::vector<Tensor> args = randomArgs(g, sizes, seed);
  for (size_t k = 0; k < g.params.size(); ++k) {
    if (g.paramTypes[k].rank() != 0) continue;
    auto it = ints.find(g.paramNames[k]);
    if (it != ints.end()) setInt(args[k], it->second);
    // GMM's Wishart prior takes log(gamma).
    if (g.paramNames[k] == "gamma") args[k].setF(0, 0.5 + std::fabs(args[k].getF(0)));
  }
  return args;
}

std::map<std::string, int64_t> gmmSizes(int64_t n) {
  return {{"K", 3}, {"d", 3}, {"T", 6}, {"n", n}};
}

/// The evaluator's results, within a few ulps (the JIT and the evaluator share libm).
::testing::AssertionResult sameResults(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "result counts differ";
  for (size_t r = 0; r < a.size(); ++r) {
    if (a[r].shape() != b[r].shape())
      return ::testing::AssertionFailure() << "result " << r << ": shapes differ";
    for (int64_t i = 0; i < a[r].numel(); ++i) {
      double x = a[r].getF(i), y = b[r].getF(i);
      if (std::isnan(x) || std::isnan(y))
        return ::testing::AssertionFailure() << "result " << r << " element " << i << " is NaN";
      if (!(std::fabs(x - y) <= 1e-12 * std::max({1.0, std::fabs(x), std::fabs(y)})))
        return ::testing::AssertionFailure()
               << "result " << r << " element " << i << ": " << x << " against " << y;
    }
  }
  return ::testing::AssertionSuccess();
}

codegen::JitOptions counting() {
  codegen::JitOptions o;
  o.countAllocations = true;
  return o;
}

int64_t allocsSoFar() {
  return codegen::allocationCounts().allocs;
}

TEST(Workspace, SecondCallAllocatesNothing) {
  JitRunner jit(counting());
  struct Case {
    const char* what;
    ir::Function g;
    std::map<std::string, int64_t> sizes, ints;
  };
  std::vector<Case> cases;
  cases.push_back({"gmm", gmmGrad(), gmmSizes(40), {}});
  cases.push_back({"decay", decayGrad(), {{"n", 30}}, {{"T", 12}}});
  for (const Case& c : cases) {
    Runnable run = jit.prepare(c.g);
    std::vector<Tensor> a1 = argsFor(c.g, c.sizes, 1, c.ints),
                        a2 = argsFor(c.g, c.sizes, 2, c.ints);
    int64_t before = allocsSoFar();
    ASSERT_TRUE(sameResults(run(a1), evaluate(c.g, a1))) << c.what;
    int64_t first = allocsSoFar() - before;
    EXPECT_GT(first, 0) << c.what << ": the first call allocates its workspace";
    before = allocsSoFar();
    ASSERT_TRUE(sameResults(run(a2), evaluate(c.g, a2))) << c.what;
    EXPECT_EQ(allocsSoFar() - before, 0) << c.what << ": a second call at the same sizes";
  }
}

// The memory the calls kept is freed when the code goes (NAME__release, called by ~Jit).
TEST(Workspace, DestroyingTheJitFreesWhatCallsKept) {
  codegen::AllocationCounts before = codegen::allocationCounts();
  {
    JitRunner jit(counting());
    ir::Function g = decayGrad();
    Runnable run = jit.prepare(g);
    for (int64_t n : {4, 40, 9})
      run(argsFor(g, {{"n", n}}, 3, {{"T", 5}}));
    codegen::AllocationCounts during = codegen::allocationCounts();
    EXPECT_GT(during.allocs - before.allocs, during.frees - before.frees) << "memory is kept";
  }
  codegen::AllocationCounts after = codegen::allocationCounts();
  EXPECT_GT(after.allocs - before.allocs, 0);
  EXPECT_EQ(after.allocs - before.allocs, after.frees - before.frees);
}

// The pages of a kept workspace stay mapped: a steady-state call takes no page fault, where
// a fresh allocation of the same megabytes takes one per page touched.
TEST(Workspace, SteadyStateCallTakesNoPageFault) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer touches shadow memory for every buffer the call uses: its faults are the
  // sanitizer's, not the workspace's (the allocation count above still holds there).
  GTEST_SKIP() << "page faults are not the generated code's own under AddressSanitizer";
#endif
  ir::Function g = gmmGrad();
  codegen::Jit jit;
  codegen::CompiledFunction c = jit.add(g);
  std::map<std::string, int64_t> sizes = gmmSizes(40000);
  std::vector<Tensor> args = argsFor(g, sizes, 5);
  std::vector<Tensor> results;
  for (size_t r = 0; r < g.body.yields.size(); ++r)
    results.emplace_back(g.types[g.body.yields[r]].dtype, resultShape(g, r, sizes));
  std::vector<void*> argp, resp;
  for (Tensor& t : args)
    argp.push_back(t.raw());
  for (Tensor& t : results)
    resp.push_back(t.raw());
  std::vector<int64_t> sz = sizesArray(g, sizes);
  auto faultsOfOneCall = [&] {
    slope_error err{};
    rusage a{}, b{};
    getrusage(RUSAGE_THREAD, &a);
    int32_t rc = c.fn(argp.data(), sz.data(), resp.data(), &err);
    getrusage(RUSAGE_THREAD, &b);
    EXPECT_EQ(rc, 0);
    return b.ru_minflt - a.ru_minflt;
  };
  // The count must be able to see faults, or the zeros below prove nothing. The first call's
  // own faults cannot show it: after other tests in the process, malloc may hand it memory
  // that is mapped already. Fresh pages from mmap fault once each, whatever came before.
  constexpr long kPages = 64;
  const long page = sysconf(_SC_PAGESIZE);
  void* fresh = mmap(nullptr, static_cast<size_t>(kPages * page), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(fresh, MAP_FAILED);
  rusage a{}, b{};
  getrusage(RUSAGE_THREAD, &a);
  for (long p = 0; p < kPages; ++p)
    static_cast<volatile char*>(fresh)[p * page] = 1;
  getrusage(RUSAGE_THREAD, &b);
  munmap(fresh, static_cast<size_t>(kPages * page));
  EXPECT_GE(b.ru_minflt - a.ru_minflt, kPages) << "the fault count sees fresh pages";
  faultsOfOneCall(); // (maps the temporaries, unless malloc had them mapped already)
  EXPECT_EQ(faultsOfOneCall(), 0);
  EXPECT_EQ(faultsOfOneCall(), 0);
}

// Threads calling one function at once, more of them than the module keeps workspaces for
// (those calls allocate and free as they go), each at its own sizes, each many times.
TEST(Workspace, ThreadsCallingOneFunction) {
  JitRunner jit;
  ir::Function g = decayGrad(), h = gmmGrad();
  Runnable runG = jit.prepare(g), runH = jit.prepare(h);
  constexpr int kThreads = 24, kCalls = 15;
  struct Work {
    std::vector<Tensor> argsG, argsH, wantG, wantH;
  };
  std::vector<Work> work(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    Work& w = work[t];
    w.argsG = argsFor(g, {{"n", 3 + 7 * t}}, 10 + t, {{"T", 2 + t % 5}});
    w.argsH = argsFor(h, gmmSizes(5 + 11 * t), 50 + t);
    w.wantG = evaluate(g, w.argsG);
    w.wantH = evaluate(h, w.argsH);
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < kCalls; ++k) {
        if (!sameResults(runG(work[t].argsG), work[t].wantG)) ++wrong;
        if (!sameResults(runH(work[t].argsH), work[t].wantH)) ++wrong;
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A call that fails half-way (after its tape is written) gives its workspace back in a
// consistent state: many failed calls (more than the module keeps workspaces) and then a
// good one, which gets the evaluator's results and allocates nothing.
TEST(Workspace, FailedCallThenGoodCall) {
  JitRunner jit(counting());
  ir::Function g = pickGrad();
  Runnable run = jit.prepare(g);
  std::vector<Tensor> good = argsFor(g, {{"n", 25}}, 7, {{"T", 9}, {"k", 4}});
  std::vector<Tensor> bad = argsFor(g, {{"n", 25}}, 8, {{"T", 9}, {"k", 25}});
  ASSERT_TRUE(sameResults(run(good), evaluate(g, good)));
  for (int k = 0; k < 40; ++k)
    EXPECT_THROW(run(bad), EvalError);
  int64_t before = allocsSoFar();
  ASSERT_TRUE(sameResults(run(good), evaluate(g, good)));
  EXPECT_EQ(allocsSoFar() - before, 0) << "the failed calls gave their workspace back";
  // A failure at larger sizes (the workspace grows, then the call fails) and then a good call
  // at those sizes.
  std::vector<Tensor> bigBad = argsFor(g, {{"n", 300}}, 9, {{"T", 4}, {"k", -1}});
  std::vector<Tensor> big = argsFor(g, {{"n", 300}}, 9, {{"T", 4}, {"k", 299}});
  EXPECT_THROW(run(bigBad), EvalError);
  ASSERT_TRUE(sameResults(run(big), evaluate(g, big)));
}

// Sizes that change from call to call: a buffer grows when a call needs more, a smaller call
// reuses the larger buffer (zeroed where the code asks for zeros), and results stay right.
TEST(Workspace, ChangingSizes) {
  JitRunner jit(counting());
  ir::Function g = decayGrad(), h = gmmGrad();
  Runnable runG = jit.prepare(g), runH = jit.prepare(h);
  uint64_t seed = 20;
  for (int64_t n : {5, 60, 3, 200, 1, 61, 200}) {
    for (int64_t T : {1, 7, 3}) {
      std::vector<Tensor> a = argsFor(g, {{"n", n}}, ++seed, {{"T", T}});
      ASSERT_TRUE(sameResults(runG(a), evaluate(g, a))) << "n = " << n << ", T = " << T;
    }
    std::vector<Tensor> b = argsFor(h, gmmSizes(n), ++seed);
    ASSERT_TRUE(sameResults(runH(b), evaluate(h, b))) << "gmm n = " << n;
  }
  // Every buffer is now as large as the largest sizes need: those sizes allocate nothing.
  std::vector<Tensor> a = argsFor(g, {{"n", 150}}, ++seed, {{"T", 7}});
  int64_t before = allocsSoFar();
  ASSERT_TRUE(sameResults(runG(a), evaluate(g, a)));
  EXPECT_EQ(allocsSoFar() - before, 0);
}

} // namespace
} // namespace slope
