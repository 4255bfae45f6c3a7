// The public C++ API, as a host program uses it.

#include <slope/slope.hpp>

#include "runtime/cuda_driver.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>

namespace {

const char* kSrc = R"(fn quadratic(x: f64) -> f64 {
    2 * x^2 + 3 * x + 1
}
fn bowl(x: f64[n, m]) -> f64 {
    sum(x^2 + 2 * x + 1)
}
fn scale(x: f64[n], a: f64) -> f64[n] {
    a * x
}
fn pick(x: f64[n], k: i64) -> f64 {
    x[k]
}
fn stats(x: f32[n]) -> (f32, f32) {
    (sum(x), max(x))
}
)";

TEST(Api, ScalarCallsReadLikeCpp) {
  slope::Module m = slope::compile_string(kSrc);
  double y = m.function("quadratic")(2.0);
  EXPECT_EQ(y, 15.0);
  double d = 0;
  EXPECT_EQ(m.gradient("quadratic")(2.0, slope::View(d)), 15.0);
  EXPECT_EQ(d, 11.0);
}

TEST(Api, GradientWritesIntoCallerMemory) {
  slope::Module m = slope::compile_string(kSrc);
  double x[] = {1, 2, 3, 4}, g[] = {-1, -1, -1, -1};
  double v = m.gradient("bowl")(slope::View(x, {2, 2}), slope::View(g, {2, 2}));
  EXPECT_EQ(v, 54.0);
  EXPECT_EQ(g[0], 4.0);
  EXPECT_EQ(g[1], 6.0);
  EXPECT_EQ(g[2], 8.0);
  EXPECT_EQ(g[3], 10.0);
  // Owned results as well.
  slope::GradientResult r = m.gradient("bowl").evaluate({slope::View(x, {2, 2})});
  EXPECT_EQ(r.value(), 54.0);
  EXPECT_EQ(r.gradient("x").getF(3), 10.0);
}

TEST(Api, VectorJacobianProductAndCallInto) {
  slope::Module m = slope::compile_string(kSrc);
  const double x[] = {1, 2, 3};
  double out[3];
  m.function("scale").call_into({slope::View(x, {3}), 2.0}, {slope::View(out, {3})});
  EXPECT_EQ(out[2], 6.0);
  const double seed[] = {1, 1, 1};
  double dx[3], da = 0;
  auto vjp = m.gradient("scale");
  EXPECT_EQ(vjp.signature().name, "scale_vjp");
  vjp(slope::View(x, {3}), 2.0, slope::View(seed, {3}), slope::View(dx, {3}), slope::View(da));
  EXPECT_EQ(dx[0], 2.0);
  EXPECT_EQ(da, 6.0);
}

TEST(Api, TuplesAndF32) {
  slope::Module m = slope::compile_string(kSrc);
  const float x[] = {1, 5, 2};
  slope::Result r = m.function("stats")(slope::View(x, {3}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].data<float>()[0], 8.0f);
  EXPECT_EQ(r[1].data<float>()[0], 5.0f);
  EXPECT_THROW((void)static_cast<double>(r), std::logic_error);
}

TEST(Api, CompileErrorsCarryDiagnostics) {
  try {
    slope::compile_string("fn f(x: f64) -> f64 {\n  x + y\n}\n", "bad.slope");
    FAIL() << "no exception";
  } catch (const slope::CompileError& e) {
    ASSERT_EQ(e.diagnostics().size(), 1u);
    EXPECT_EQ(e.diagnostics()[0].file, "bad.slope");
    EXPECT_EQ(e.diagnostics()[0].line, 2);
    EXPECT_EQ(e.diagnostics()[0].column, 7);
    EXPECT_EQ(e.diagnostics()[0].message, "unknown name 'y'");
    EXPECT_EQ(std::string(e.what()), "bad.slope:2:7: error: unknown name 'y'\n  x + y\n      ^\n");
  }
  EXPECT_THROW(slope::compile_file("/nonexistent/file.slope"), slope::CompileError);
}

TEST(Api, CallErrorsNameTheParameter) {
  slope::Module m = slope::compile_string(kSrc);
  double x[6], g[6];
  auto bowl = m.gradient("bowl");
  try {
    bowl(slope::View(x, {2, 3}), slope::View(g, {3, 2}));
    FAIL();
  } catch (const slope::CallError& e) {
    EXPECT_NE(std::string(e.what()).find("gradient 'x' must be f64[2, 3]"), std::string::npos)
        << e.what();
  }
  float xf[4];
  EXPECT_THROW(m.function("bowl")(slope::View(xf, {2, 2})), slope::CallError);
  EXPECT_THROW(m.function("quadratic")(), slope::CallError);
  EXPECT_THROW(m.function("nope"), std::invalid_argument);
  EXPECT_THROW(m.gradient("bowl", {"y"}), std::invalid_argument);
  const double cx[] = {1, 2, 3, 4};
  EXPECT_THROW(bowl(slope::View(cx, {2, 2}), slope::View(cx, {2, 2})),
               slope::CallError); // read-only
}

TEST(Api, RuntimeErrorsNameTensorAndIndex) {
  slope::Module m = slope::compile_string(kSrc, "k.slope");
  double x[] = {1, 2, 3};
  EXPECT_EQ(static_cast<double>(m.function("pick")(slope::View(x, {3}), 2)), 3.0);
  try {
    m.function("pick")(slope::View(x, {3}), 3);
    FAIL();
  } catch (const slope::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("k.slope:11:5: error: index 3 is out of range for 'x'"),
              std::string::npos)
        << e.what();
  }
}

TEST(Api, RawEntryPointFollowsTheDocumentedAbi) {
  slope::Module m = slope::compile_string(kSrc);
  slope_fn fn = m.gradient("bowl").raw();
  ASSERT_NE(fn, nullptr);
  double x[] = {1, 2, 3, 4}, value = 0, g[4];
  void* args[] = {x};
  int64_t sizes[] = {2, 2};
  void* results[] = {&value, g};
  slope_error err{};
  EXPECT_EQ(fn(args, sizes, results, &err), SLOPE_OK);
  EXPECT_EQ(value, 54.0);
  EXPECT_EQ(g[3], 10.0);
  // A failing check reports through the error struct.
  slope_fn pick = m.function("pick").raw();
  int64_t k = 7, n = 3;
  void* pargs[] = {x, &k};
  double out = 0;
  void* pres[] = {&out};
  EXPECT_EQ(pick(pargs, &n, pres, &err), SLOPE_ERR_INDEX);
  EXPECT_EQ(err.index, 7);
  EXPECT_EQ(err.extent, 3);
}

// A Function or Gradient keeps its module's code and source alive: the Module it came from
// may be gone (a temporary here; Python's slope.torch keeps only the functions). Under the
// sanitizers a dangling one is a use after free.
TEST(Api, FunctionsOutliveTheirModule) {
  slope::Function f = slope::compile_string(kSrc).function("quadratic");
  slope::Gradient g = slope::compile_string(kSrc).gradient("bowl");
  EXPECT_EQ(static_cast<double>(f(2.0)), 15.0);
  double x[] = {1, 2, 3, 4}, dx[4];
  EXPECT_EQ(g(slope::View(x, {2, 2}), slope::View(dx, {2, 2})), 54.0);
  EXPECT_EQ(dx[3], 10.0);
  // Errors still point into the source, which lives with the module.
  slope::Function pick =
      slope::compile_string("fn pick(x: f64[n], i: i64) -> f64 { x[i] }", "pick.slope")
          .function("pick");
  try {
    pick(slope::View(x, {4}), int64_t{9});
    ADD_FAILURE() << "no error";
  } catch (const slope::RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("pick.slope:1:"), std::string::npos) << e.what();
  }
}

TEST(Api, InterpreterOptionGivesTheSameNumbers) {
  slope::Options o;
  o.interpret = true;
  slope::Module m = slope::compile_string(kSrc, "<string>", o);
  double x[] = {1, 2, 3, 4}, g[4];
  EXPECT_EQ(m.gradient("bowl")(slope::View(x, {2, 2}), slope::View(g, {2, 2})), 54.0);
  EXPECT_EQ(g[1], 6.0);
  EXPECT_EQ(m.gradient("bowl").raw(), nullptr);
  o.interpret = false;
  // cuda: runs on the GPU where CUDA starts, else throws saying what is missing
  // (tests/lit/cli/device.test covers each case with a fake driver); auto is CUDA where it
  // starts, else the CPU.
  const bool gpu = slope::cuda::probe().ok();
  o.target = "cuda";
  if (gpu) {
    slope::Module m = slope::compile_string(kSrc, "<string>", o);
    EXPECT_EQ(m.target(), "cuda");
    g[1] = 0;
    EXPECT_EQ(m.gradient("bowl")(slope::View(x, {2, 2}), slope::View(g, {2, 2})), 54.0);
    EXPECT_EQ(g[1], 6.0);
    EXPECT_EQ(m.gradient("bowl").raw(), nullptr);
    // A tensor result returned owned and one written into a view; an error from the device.
    double y[300], into[300];
    std::vector<double> xs(300);
    for (int k = 0; k < 300; ++k)
      xs[k] = 0.5 * k;
    auto owned = m.function("scale")(slope::View(xs.data(), {300}), 2.0);
    ASSERT_EQ(owned.size(), 1u);
    std::memcpy(y, owned[0].raw(), sizeof y);
    m.function("scale").call_into({slope::View(xs.data(), {300}), 2.0}, {slope::View(into, {300})});
    for (int k = 0; k < 300; ++k) {
      EXPECT_EQ(y[k], k * 1.0);
      EXPECT_EQ(into[k], k * 1.0);
    }
    EXPECT_THROW(m.function("pick")(slope::View(xs.data(), {300}), int64_t{300}),
                 slope::RuntimeError);
  } else {
    EXPECT_THROW(slope::compile_string(kSrc, "<string>", o), std::invalid_argument);
  }
  o.target = "gpu";
  EXPECT_THROW(slope::compile_string(kSrc, "<string>", o), std::invalid_argument);
  o.target = "auto";
  slope::Module a = slope::compile_string(kSrc, "<string>", o);
  EXPECT_EQ(a.target(), gpu ? "cuda" : "cpu");
  EXPECT_EQ(a.gradient("bowl")(slope::View(x, {2, 2}), slope::View(g, {2, 2})), 54.0);
}

TEST(Api, CheckpointingOptions) {
  const char* rnn = R"(fn f(x: f64[n]) -> f64 {
    var s = 0.5;
    for t in 0..n { s = sin(s * x[t]) + s; }
    s
  })";
  double x[] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}, plain[7], g[7];
  double v = slope::compile_string(rnn).gradient("f")(slope::View(x, {7}), slope::View(plain, {7}));
  slope::Options o;
  for (int k = 0; k < 3; ++k) {
    o.checkpoint = k == 0 ? 3 : 0;
    o.checkpoint_snapshots = k == 1 ? 2 : 0;
    o.checkpoint_memory = k == 2 ? 16 : 0;
    slope::Module m = slope::compile_string(rnn, "<string>", o);
    EXPECT_EQ(m.gradient("f")(slope::View(x, {7}), slope::View(g, {7})), v);
    for (int i = 0; i < 7; ++i)
      EXPECT_EQ(g[i], plain[i]) << "schedule " << k << " element " << i;
    EXPECT_TRUE(slope::check_gradient(m, "f", {slope::View(x, {7})}).passed);
  }
  o.checkpoint = 3; // two schedules at once
  EXPECT_THROW(slope::compile_string(rnn, "<string>", o), std::invalid_argument);
  o.checkpoint = 0;
  o.checkpoint_memory = -1;
  EXPECT_THROW(slope::compile_string(rnn, "<string>", o), std::invalid_argument);
}

TEST(Api, CheckGradient) {
  slope::Module m = slope::compile_string(kSrc);
  double x[] = {0.3, -1.2, 2.5, 0.7};
  slope::GradientCheck c = slope::check_gradient(m, "bowl", {slope::View(x, {2, 2})});
  EXPECT_TRUE(c.passed);
  ASSERT_EQ(c.params.size(), 1u);
  EXPECT_EQ(c.params[0].name, "x");
  EXPECT_LT(c.params[0].max_rel_err, 1e-6);
  EXPECT_EQ(c.params[0].checked, 4);
  EXPECT_EQ(c.params[0].elements, 4);
}

TEST(Api, SafeToCallFromSeveralThreads) {
  slope::Module m = slope::compile_string(kSrc);
  std::vector<std::thread> ts;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      auto g = m.gradient("bowl"); // compiled once, whichever thread gets there first
      std::vector<double> x(100), grad(100);
      for (int rep = 0; rep < 200; ++rep) {
        for (int i = 0; i < 100; ++i)
          x[i] = t + i * 0.01;
        double v = g(slope::View(x.data(), {10, 10}), slope::View(grad.data(), {10, 10}));
        double expect = 0;
        for (double xi : x)
          expect += xi * xi + 2 * xi + 1;
        if (std::fabs(v - expect) > 1e-9 * expect || grad[5] != 2 * x[5] + 2) return;
      }
      ok[t] = 1;
    });
  for (auto& th : ts)
    th.join();
  for (int t = 0; t < 8; ++t)
    EXPECT_TRUE(ok[t]) << "thread " << t;
}

} // namespace

namespace {

/// The message of the CallError that `call` throws ("" when it throws none).
template <class F> std::string callError(F call) {
  try {
    call();
  } catch (const slope::CallError& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST(Api, NullDataIsACallErrorNamingTheParameter) {
  slope::Module m = slope::compile_string(kSrc);
  std::string e = callError([&] { m.function("bowl")(slope::View((double*)nullptr, {2})); });
  // bowl takes a matrix: the rank is wrong first; a vector function gets to the pointer.
  EXPECT_FALSE(e.empty());
  e = callError([&] { m.function("scale")(slope::View((double*)nullptr, {2}), 2.0); });
  EXPECT_NE(e.find("parameter 'x'"), std::string::npos) << e;
  EXPECT_NE(e.find("null"), std::string::npos) << e;
  double x[4] = {1, 2, 3, 4};
  e = callError([&] {
    m.gradient("bowl")(slope::View(x, {2, 2}), slope::View((double*)nullptr, {2, 2}));
  });
  EXPECT_NE(e.find("gradient 'x'"), std::string::npos) << e;
  EXPECT_NE(e.find("null"), std::string::npos) << e;
  e = callError([&] {
    slope::check_gradient(m, "scale", {slope::View((double*)nullptr, {2}), 2.0});
  });
  EXPECT_NE(e.find("parameter 'x'"), std::string::npos) << e;
}

TEST(Api, GradientBufferOverlappingAnInputIsACallError) {
  slope::Module m = slope::compile_string(kSrc);
  double x[4] = {1, 2, 3, 4};
  std::string e = callError([&] {
    m.gradient("bowl")(slope::View(x, {2, 2}), slope::View(x, {2, 2}));
  });
  EXPECT_NE(e.find("gradient 'x' overlaps parameter 'x'"), std::string::npos) << e;
  // Partly overlapping.
  double buf[6] = {1, 2, 3, 4, 5, 6};
  e = callError([&] {
    m.gradient("bowl")(slope::View(buf, {2, 2}), slope::View(buf + 2, {2, 2}));
  });
  EXPECT_NE(e.find("overlaps"), std::string::npos) << e;
  // Two gradient buffers sharing memory.
  const char* two = "fn f(a: f64[n], b: f64[n]) -> f64 { sum(a * b) }";
  slope::Module m2 = slope::compile_string(two);
  double a[2] = {1, 2}, b[2] = {3, 4}, g[3];
  e = callError([&] {
    m2.gradient("f")(slope::View(a, {2}), slope::View(b, {2}), slope::View(g, {2}),
                     slope::View(g + 1, {2}));
  });
  EXPECT_NE(e.find("gradient 'b' overlaps gradient 'a'"), std::string::npos) << e;
  // call_into: a result over an input.
  e = callError([&] {
    m.function("scale").call_into({slope::View(a, {2}), 2.0}, {slope::View(a, {2})});
  });
  EXPECT_NE(e.find("result 1 overlaps parameter 'x'"), std::string::npos) << e;
  // Adjacent, not overlapping: fine.
  double ab[4] = {1, 2, 0, 0};
  EXPECT_NO_THROW(
      m.function("scale").call_into({slope::View(ab, {2}), 2.0}, {slope::View(ab + 2, {2})}));
  EXPECT_EQ(ab[3], 4);
}

TEST(Api, IntegerForAFloatParameterConvertsWhenExact) {
  slope::Module m = slope::compile_string(kSrc);
  double y = m.function("quadratic")(2); // an int for an f64 x
  EXPECT_EQ(y, 15);
  double x[2] = {1, 2};
  slope::Result r = m.function("scale")(slope::View(x, {2}), 3);
  EXPECT_EQ(r[0].getF(1), 6);
  double g = 0;
  EXPECT_EQ(m.gradient("quadratic")(2, slope::View(g)), 15);
  EXPECT_EQ(g, 11);
  // Not exactly representable in f64: refused, naming the parameter.
  std::string e = callError([&] { m.function("quadratic")(int64_t(9007199254740993)); });
  EXPECT_NE(e.find("parameter 'x'"), std::string::npos) << e;
  // An i64 parameter still takes an integer.
  EXPECT_EQ(static_cast<double>(m.function("pick")(slope::View(x, {2}), 1)), 2);
}

namespace {

// Options::threads (docs/architecture.md, "Threads"): a sum over 200,000 elements and its
// gradient, large enough for the pool, give the same bits on 1, 2 and 16 threads; a module
// on 2 threads called from 4 threads of the caller at once gives them too.
const char* kBig = R"(fn big(x: f64[n, m], w: f64[m]) -> f64 {
    let y[i, j] = exp(0.1 * x[i, j]) * w[j];
    sum[i](log(1 + sum[j](y[i, j]^2)))
}
)";

struct BigResult {
  double value;
  std::vector<double> dx, dw;
};

BigResult runBig(const slope::Module& m) {
  const int64_t n = 4000, k = 50;
  std::vector<double> x(n * k), w(k);
  for (int64_t i = 0; i < n * k; ++i)
    x[i] = std::sin(0.37 * static_cast<double>(i));
  for (int64_t j = 0; j < k; ++j)
    w[j] = 0.5 + 0.01 * static_cast<double>(j);
  BigResult r{0, std::vector<double>(n * k), std::vector<double>(k)};
  r.value = m.gradient("big")(slope::View(x.data(), {n, k}), slope::View(w.data(), {k}),
                              slope::View(r.dx.data(), {n, k}), slope::View(r.dw.data(), {k}));
  return r;
}

bool sameBits(const BigResult& a, const BigResult& b) {
  return std::memcmp(&a.value, &b.value, sizeof a.value) == 0 && a.dx == b.dx && a.dw == b.dw;
}

slope::Module bigOn(int threads) {
  slope::Options o;
  o.threads = threads;
  return slope::compile_string(kBig, "big.slope", o);
}

TEST(Api, ThreadsGiveTheSameBits) {
  BigResult one = runBig(bigOn(1));
  EXPECT_TRUE(std::isfinite(one.value));
  EXPECT_TRUE(sameBits(one, runBig(bigOn(2))));
  EXPECT_TRUE(sameBits(one, runBig(bigOn(16))));
  EXPECT_TRUE(sameBits(one, runBig(bigOn(0)))); // SLOPE_NUM_THREADS, or every core
  slope::Module two = bigOn(2);
  std::vector<std::thread> ts;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep)
        if (!sameBits(one, runBig(two))) return;
      ok[t] = 1;
    });
  for (auto& th : ts)
    th.join();
  for (int t = 0; t < 4; ++t)
    EXPECT_TRUE(ok[t]) << "caller thread " << t;
}

TEST(Api, ThreadsOutOfRangeIsAnError) {
  for (int bad : {-1, 65}) {
    slope::Options o;
    o.threads = bad;
    EXPECT_THROW(slope::compile_string(kBig, "big.slope", o), std::invalid_argument) << bad;
  }
}

} // namespace

// Forward mode: the JVP returns the value, then J v; the HVP the value, the gradient, H v.
TEST(Api, JvpAndHvpOfTheSeedExample) {
  slope::Module m = slope::compile_string(kSrc);
  slope::Result r = m.jvp("quadratic")(2.0, 1.0);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].getF(0), 15);
  EXPECT_EQ(r[1].getF(0), 11);
  EXPECT_EQ(m.jvp("quadratic").signature().name, "quadratic_jvp");
  EXPECT_EQ(m.jvp("quadratic").signature().param_names[1], "x_dot");
  double x[4] = {1, 2, 3, 4}, v[4] = {1, 1, 1, 1};
  slope::Result b = m.jvp("bowl")(slope::View(x, {2, 2}), slope::View(v, {2, 2}));
  EXPECT_EQ(b[0].getF(0), 54);
  EXPECT_EQ(b[1].getF(0), 28); // sum(2 x + 2)
  double e0[4] = {1, 0, 0, 0};
  slope::Result h = m.hvp("bowl")(slope::View(x, {2, 2}), slope::View(e0, {2, 2}));
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].getF(0), 54);
  EXPECT_EQ(h[1].getF(3), 10);
  EXPECT_EQ(h[2].getF(0), 2);
  EXPECT_EQ(h[2].getF(1), 0);
  // Only the parameters in wrt get tangents.
  double s[3] = {1, 2, 3};
  slope::Result sc = m.jvp("scale", {"a"})(slope::View(s, {3}), 2.0, 1.0);
  EXPECT_EQ(sc[1].getF(2), 3);
  EXPECT_THROW(m.hvp("scale"), std::invalid_argument);
  EXPECT_THROW(m.jvp("nope"), std::invalid_argument);
  EXPECT_THROW(m.jvp("pick", {"k"}), std::invalid_argument);
}

TEST(Api, JvpResultViewsAreNamedInErrors) {
  slope::Module m = slope::compile_string(kSrc);
  double x[3] = {1, 2, 3}, v[3] = {0, 1, 0}, y[3], bad[2];
  try {
    m.jvp("scale").call_into({slope::View(x, {3}), 2.0, slope::View(v, {3}), 0.0},
                             {slope::View(y, {3}), slope::View(bad, {2})});
    FAIL() << "no error";
  } catch (const slope::CallError& e) {
    EXPECT_NE(std::string(e.what()).find("the tangent of result 1 must be f64[3]"),
              std::string::npos)
        << e.what();
  }
}

TEST(Api, DenseJacobianBothWaysAndHessian) {
  slope::Module m = slope::compile_string(R"(
fn roll(x0: f64[2], a: f64, T: i64) -> f64[2] {
    var s = x0;
    for t in 0..T {
        s = [a * s[0] - s[1]^2, s[0] * s[1]];
    }
    s
}
fn rosen(x: f64[n]) -> f64 {
    sum[i: n - 1](100 * (x[i + 1] - x[i]^2)^2 + (1 - x[i])^2)
}
)");
  double x0[2] = {0.5, 0.25};
  slope::DenseResult fw = m.jacobian("roll", {}, "forward")(slope::View(x0, {2}), 1.5, 2);
  slope::DenseResult rv = m.jacobian("roll", {}, "reverse")(slope::View(x0, {2}), 1.5, 2);
  slope::DenseResult au = m.jacobian("roll")(slope::View(x0, {2}), 1.5, 2);
  EXPECT_EQ(fw.mode, "forward");
  EXPECT_EQ(fw.directions, 3);
  EXPECT_EQ(fw.calls, 1); // the three columns in one batched JVP
  EXPECT_EQ(rv.mode, "reverse");
  EXPECT_EQ(rv.directions, 2);
  EXPECT_EQ(rv.calls, 2);
  EXPECT_EQ(au.mode, "reverse"); // 2 outputs, 3 inputs
  ASSERT_EQ(fw.matrix.shape(), (std::vector<int64_t>{2, 3}));
  const double want[6] = {2.1875, -0.875, 1.4375, 0.359375, 0.28125, 0.0625};
  for (int i = 0; i < 6; ++i) {
    EXPECT_DOUBLE_EQ(fw.matrix.getF(i), want[i]) << i;
    EXPECT_DOUBLE_EQ(rv.matrix.getF(i), want[i]) << i;
  }
  double x[3] = {1, 1, 1};
  slope::DenseResult h = m.hessian("rosen")(slope::View(x, {3}));
  const double H[9] = {802, -400, 0, -400, 1002, -400, 0, -400, 200};
  ASSERT_EQ(h.matrix.shape(), (std::vector<int64_t>{3, 3}));
  for (int i = 0; i < 9; ++i)
    EXPECT_DOUBLE_EQ(h.matrix.getF(i), H[i]) << i;
  EXPECT_EQ(h.directions, 3);
  EXPECT_EQ(h.calls, 1);
  // The sparse Hessian of Rosenbrock's function: tridiagonal, 3 HVPs for any n.
  double x6[6] = {1, 1, 1, 1, 1, 1};
  slope::SparseResult hs = m.hessian("rosen").evaluate_sparse({slope::View(x6, {6})});
  EXPECT_TRUE(hs.pattern_found);
  EXPECT_EQ(hs.colours, 3);
  EXPECT_EQ(hs.calls, 1);
  EXPECT_EQ(hs.colour.size(), 6u);
  EXPECT_EQ(hs.col_index.size(), 16u);
  EXPECT_EQ(hs.values[0], 802);
  EXPECT_EQ(hs.values[15], 200);
  slope::SparseResult again = m.hessian("rosen").evaluate_sparse({slope::View(x6, {6})}, hs);
  EXPECT_EQ(again.values, hs.values);
  // A colouring in `like` that is not one of the pattern (two columns of a row share a
  // colour) is not trusted: the columns are coloured afresh and the values are the same.
  slope::SparseResult bad = hs;
  bad.colour.assign(6, 0);
  slope::SparseResult fixed = m.hessian("rosen").evaluate_sparse({slope::View(x6, {6})}, bad);
  EXPECT_EQ(fixed.values, hs.values);
  EXPECT_EQ(fixed.colours, 3);
  EXPECT_THROW(m.hessian("rosen").evaluate_sparse({slope::View(x, {3})}, hs), slope::CallError);
  EXPECT_THROW(m.hessian("roll"), std::invalid_argument);
  EXPECT_THROW(m.jacobian("roll", {}, "sideways"), std::invalid_argument);
  EXPECT_THROW(m.jacobian("roll")(slope::View(x0, {2}), 1.5), slope::CallError);
}
