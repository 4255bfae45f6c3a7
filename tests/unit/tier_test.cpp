// Tiered compilation (codegen::JitOptions::tiered, Options::tiered; docs/architecture.md,
// "Tiers"): a function's calls run level-0 code until the tier thread has compiled it at the
// full level, then that code. Both tiers must give the same bits and the same errors, the
// switch must be safe while other threads call, and a JIT destroyed mid-compile must neither
// hang nor crash.
#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/codegen/jit.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "slope/slope.hpp"
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace slope {
namespace {

std::unique_ptr<Program> gmm() {
  auto prog = Program::fromFile(std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope");
  EXPECT_TRUE(prog->ok()) << prog->diagnostics();
  return prog;
}
const std::map<std::string, int64_t> kGmmSizes{{"K", 3}, {"d", 8}, {"T", 36}, {"n", 200}};

codegen::JitOptions tieredOptions(double budget) {
  codegen::JitOptions o;
  o.tiered = true;
  o.tierBudget = budget;
  return o;
}

void expectSameBits(const std::vector<Tensor>& a, const std::vector<Tensor>& b,
                    const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].shape(), b[k].shape()) << what;
    for (int64_t i = 0; i < a[k].numel(); ++i) {
      double x = a[k].getF(i), y = b[k].getF(i);
      ASSERT_TRUE((std::isnan(x) && std::isnan(y)) || std::memcmp(&x, &y, sizeof x) == 0)
          << what << ": result " << k << " element " << i << ": " << x << " against " << y;
    }
  }
}

/// Waits (up to a minute) for the tier thread to put c's second tier in place.
bool waitOptimized(const codegen::CompiledFunction& c) {
  auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!codegen::Jit::optimized(c) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return codegen::Jit::optimized(c);
}

// The GMM's gradient through its trampoline: level 0 first, with budget 0 the first call asks
// for the second tier, and from then on (the same entry point) the level-2 code: the same bits
// as a JIT that compiles at level 2 only, before and after the switch.
TEST(TieredJit, SwitchesAfterTheBudgetWithTheSameBits) {
  auto prog = gmm();
  ir::Function g = differentiate(prog->forward("gmm"), {});
  std::vector<Tensor> args = randomArgs(g, kGmmSizes, 3);
  codegen::Jit plain;
  std::vector<Tensor> want = callCompiled(g, plain.add(g), args);

  codegen::Jit jit(tieredOptions(0));
  codegen::CompiledFunction c = jit.add(g);
  ASSERT_NE(c.tier, nullptr);
  EXPECT_EQ(c.setParallel, nullptr);
  EXPECT_FALSE(codegen::Jit::optimized(c));
  expectSameBits(callCompiled(g, c, args), want, "first tier");
  ASSERT_TRUE(waitOptimized(c));
  expectSameBits(callCompiled(g, c, args), want, "second tier");
  codegen::Jit::optimize(c); // (done: returns at once)
}

// A negative budget: no number of calls starts the second tier; Jit::optimize does, waits for
// it, and leaves the entry point where it was.
TEST(TieredJit, NegativeBudgetWaitsForOptimize) {
  auto prog = gmm();
  ir::Function f = prog->forward("gmm");
  std::vector<Tensor> args = randomArgs(f, kGmmSizes, 4);
  codegen::Jit jit(tieredOptions(-1));
  codegen::CompiledFunction c = jit.add(f);
  slope_fn entry = c.fn;
  std::vector<Tensor> first = callCompiled(f, c, args);
  for (int k = 0; k < 20; ++k)
    callCompiled(f, c, args);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(codegen::Jit::optimized(c));
  codegen::Jit::optimize(c);
  EXPECT_TRUE(codegen::Jit::optimized(c));
  EXPECT_EQ(c.fn, entry);
  expectSameBits(callCompiled(f, c, args), first, "after optimize");
}

// Threads call through the trampoline while the second tier is compiled and put in place:
// every call gives the same bits, whichever tier ran it.
TEST(TieredJit, CallsFromThreadsAcrossTheSwitch) {
  auto prog = gmm();
  ir::Function g = differentiate(prog->forward("gmm"), {});
  std::vector<Tensor> args = randomArgs(g, kGmmSizes, 5);
  codegen::JitOptions o = tieredOptions(0);
  o.threads = 2; // (parallel loops on the pool too, in both tiers)
  o.minParallelWork = 0;
  codegen::Jit jit(o);
  codegen::CompiledFunction c = jit.add(g);
  std::vector<Tensor> want = callCompiled(g, c, args); // (asks for the second tier)
  std::atomic<int> calls{0}, mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int k = 0; k < 400 && (k < 5 || !codegen::Jit::optimized(c) || k < 20); ++k) {
        try {
          std::vector<Tensor> r = callCompiled(g, c, args);
          for (size_t j = 0; j < r.size(); ++j)
            if (std::memcmp(r[j].raw(), want[j].raw(), r[j].numel() * sizeof(double)) != 0)
              ++mismatches;
        } catch (...) {
          ++failures;
        }
        ++calls;
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(waitOptimized(c));
  expectSameBits(callCompiled(g, c, args), want, "second tier");
}

// A failed check reports the same site in both tiers (the error codes index the first tier's
// sites, which the second tier's must equal).
TEST(TieredJit, SameErrorsInBothTiers) {
  auto prog = Program::fromString("gather.slope", "fn f(x: f64[n], i: i64) -> f64 {\n"
                                                  "    x[i] * 2.0\n"
                                                  "}\n");
  ASSERT_TRUE(prog->ok()) << prog->diagnostics();
  ir::Function f = prog->forward("f");
  codegen::Jit jit(tieredOptions(-1));
  codegen::CompiledFunction c = jit.add(f);
  Tensor x(DType::F64, {3});
  for (int64_t k = 0; k < 3; ++k)
    x.setF(k, 1.5 * static_cast<double>(k));
  std::vector<Tensor> bad{x, Tensor::scalar(DType::I64, 7.0)};
  auto message = [&] {
    try {
      callCompiled(f, c, bad);
    } catch (const EvalError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string first = message();
  EXPECT_NE(first.find("7"), std::string::npos) << first;
  codegen::Jit::optimize(c);
  EXPECT_EQ(message(), first);
  std::vector<Tensor> good{x, Tensor::scalar(DType::I64, 2.0)};
  EXPECT_EQ(callCompiled(f, c, good).at(0).getF(0), 6.0);
}

// Destroying the JIT while second tiers are queued and one is being compiled: it finishes the
// one in hand (LLVM cannot be stopped), drops the rest, and returns.
TEST(TieredJit, DestroyedWhileCompiling) {
  auto prog = gmm();
  ir::Function f = prog->forward("gmm");
  ir::Function g = differentiate(f, {});
  std::vector<Tensor> fa = randomArgs(f, kGmmSizes, 6), ga = randomArgs(g, kGmmSizes, 6);
  for (int round = 0; round < 2; ++round) {
    auto jit = std::make_unique<codegen::Jit>(tieredOptions(0));
    codegen::CompiledFunction cf = jit->add(f), cg = jit->add(g), cf2 = jit->add(f);
    callCompiled(f, cf, fa); // (each asks for its second tier)
    callCompiled(g, cg, ga);
    callCompiled(f, cf2, fa);
    if (round == 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    jit.reset();
  }
}

// The public API: tiered by default; optimize() and optimized() say and do the same through
// Function and Gradient; a module with tiered = false returns code at opt_level at once.
TEST(TieredJit, PublicApi) {
  const std::string path = std::string(SLOPE_SOURCE_DIR) + "/samples/autograd_intro.slope";
  Module m = compile_file(path);
  Function f = m.function("bowl");
  Gradient g = m.gradient("bowl");
  std::vector<double> x(6 * 4, 0.25);
  for (size_t k = 0; k < x.size(); ++k)
    x[k] = 0.1 * static_cast<double>(k) - 1.0;
  View xv(x.data(), {6, 4});
  EXPECT_FALSE(f.optimized());
  EXPECT_FALSE(g.optimized());
  GradientResult before = g.evaluate({xv});
  double value = f(xv).scalar();
  g.optimize();
  f.optimize();
  EXPECT_TRUE(f.optimized());
  EXPECT_TRUE(g.optimized());
  GradientResult after = g.evaluate({xv});
  EXPECT_EQ(f(xv).scalar(), value);
  EXPECT_EQ(after.value(), before.value());
  expectSameBits(after.gradients, before.gradients, "bowl's gradient");

  Options o;
  o.tiered = false;
  Module full = compile_file(path, o);
  EXPECT_TRUE(full.function("bowl").optimized());
  EXPECT_TRUE(full.gradient("bowl").optimized());
  EXPECT_EQ(full.function("bowl")(xv).scalar(), value);
}

} // namespace
} // namespace slope
