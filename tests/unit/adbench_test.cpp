// ADBench GMM on the benchmark's own test file: the objective and its 18 gradient values
// against ADBench's reference values (to 1e-8), and the gradient against finite differences.
// The inputs are ADBench's own, copied into tests/data/adbench/ (see the README there).

#include "../../samples/adbench/gmm_io.hpp"
#include "../../samples/adbench/lstm_io.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace {

std::string dataPath(const std::string& rel) {
  return std::string(SLOPE_SOURCE_DIR) + "/tests/data/adbench/" + rel;
}
std::string model() {
  return std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope";
}

TEST(AdbenchGmm, MatchesTheReferenceValues) {
  adbench::GmmInput g = adbench::readGmm(dataPath("gmm/test.txt"));
  slope::Module m = slope::compile_file(model());
  adbench::GmmResult r = adbench::runGmm(m, g);
  EXPECT_NEAR(r.objective, 8.07380408004975791, 1e-8);
  const double expected[18] = {
      1.08662855508652456e-01, -7.41270039523898472e-01, 6.32607184015246071e-01,
      1.11692576532787013e+00, 1.63333013551455269e-01,  -2.19989824071193142e-02,
      2.27778292254236098e-01, 1.20963025612832187e+00,  -6.06375920733956339e-02,
      2.58529994051162237e+00, 1.12632694524213789e-01,  3.85744309849611777e-01,
      7.35180573182305508e-02, 5.41836362715595232e+00,  -3.21494409677446469e-01,
      1.71892309775004937e+00, 8.60091090790866875e-01,  -9.94640930466322848e-01};
  ASSERT_EQ(r.gradient.size(), 18u);
  for (int i = 0; i < 18; ++i)
    EXPECT_NEAR(r.gradient[i], expected[i], 1e-8) << "gradient " << i;
}

TEST(AdbenchGmm, InterpreterAgrees) {
  adbench::GmmInput g = adbench::readGmm(dataPath("gmm/test.txt"));
  slope::Options o;
  o.interpret = true;
  adbench::GmmResult a = adbench::runGmm(slope::compile_file(model(), o), g);
  adbench::GmmResult b = adbench::runGmm(slope::compile_file(model()), g);
  EXPECT_NEAR(a.objective, b.objective, 1e-12);
  for (size_t i = 0; i < a.gradient.size(); ++i)
    EXPECT_NEAR(a.gradient[i], b.gradient[i], 1e-12);
}

TEST(AdbenchGmm, GradientMatchesFiniteDifferences) {
  adbench::GmmInput g = adbench::readGmm(dataPath("gmm/1k/gmm_d2_K5.txt"));
  slope::Module m = slope::compile_file(model());
  // The first 20 points keep the difference quotients quick.
  int64_t n = 20;
  g.x.resize(static_cast<size_t>(n * g.d));
  slope::GradientCheck c = slope::check_gradient(
      m, "gmm",
      {slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
       slope::View(g.icf.data(), {g.K, g.t()}), slope::View(g.x.data(), {n, g.d}), g.gamma, g.m});
  for (const auto& p : c.params)
    EXPECT_TRUE(p.passed) << p.name << ": max_abs_err " << p.max_abs_err << " max_rel_err "
                          << p.max_rel_err;
}

std::string lstmModel() {
  return std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/lstm.slope";
}

TEST(AdbenchLstm, MatchesTheReferenceLoss) {
  adbench::LstmInput s = adbench::readLstm(dataPath("lstm/lstm_l2_c1024.txt"));
  adbench::LstmResult r = adbench::runLstm(slope::compile_file(lstmModel()), s);
  EXPECT_NEAR(r.loss, 0.66666518, 1e-8);
  EXPECT_EQ(r.gradient.size(), static_cast<size_t>(2 * 2 * 4 * 14 + 3 * 14));
}

TEST(AdbenchLstm, GradientMatchesFiniteDifferencesAndTheInterpreter) {
  adbench::LstmInput s = adbench::readLstm(dataPath("lstm/lstm_l2_c1024.txt"));
  s.c = 6; // the first steps of the sequence keep the difference quotients quick
  s.seq.resize(static_cast<size_t>(s.c * s.b));
  slope::Module m = slope::compile_file(lstmModel());
  slope::GradientCheck c = slope::check_gradient(m, "lstm", adbench::lstmArgs(s));
  for (const auto& p : c.params)
    EXPECT_TRUE(p.passed) << p.name << ": max_abs_err " << p.max_abs_err << " max_rel_err "
                          << p.max_rel_err;
  slope::Options o;
  o.interpret = true;
  adbench::LstmResult a = adbench::runLstm(m, s);
  adbench::LstmResult b = adbench::runLstm(slope::compile_file(lstmModel(), o), s);
  EXPECT_NEAR(a.loss, b.loss, 1e-12);
  for (size_t i = 0; i < a.gradient.size(); ++i)
    EXPECT_NEAR(a.gradient[i], b.gradient[i], 1e-12);
}

} // namespace
