// ADBench GMM on the benchmark's own test file: the objective and its 18 gradient values
// against ADBench's reference values (to 1e-8), and the gradient against finite differences.
// The inputs are ADBench's own, copied into tests/data/adbench/ (see the README there).

#include "../../samples/adbench/ba_io.hpp"
#include "../../samples/adbench/gmm_io.hpp"
#include "../../samples/adbench/hand_io.hpp"
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

// ADBench bundle adjustment on its test file: every reprojection error and weight error against
// ADBench's expected values (BATests.cpp, to 1e-8), and the Jacobian of the errors with respect
// to cameras, points and weights: forward and reverse mode agree, the reverse-mode rows agree
// with finite differences (check_gradient's random cotangent), and every entry outside an
// observation's own camera, point and weight is exactly zero.
std::string baModel() {
  return std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/ba.slope";
}

TEST(AdbenchBa, MatchesTheReferenceErrors) {
  adbench::BaInput b = adbench::readBa(dataPath("ba/test.txt"));
  ASSERT_EQ(b.p, 10);
  adbench::BaResult r = adbench::runBa(slope::compile_file(baModel()), b);
  for (int64_t i = 0; i < b.p; ++i) {
    EXPECT_NEAR(r.reproj[2 * i], -2.69048849235189402e-01, 1e-8) << i;
    EXPECT_NEAR(r.reproj[2 * i + 1], 2.59944792677901881e-01, 1e-8) << i;
    EXPECT_NEAR(r.werr[i], 8.26092651515999976e-01, 1e-8) << i;
  }
}

TEST(AdbenchBa, JacobianIsSparseAndAgreesBothWays) {
  adbench::BaInput b = adbench::readBa(dataPath("ba/test.txt"));
  slope::Module m = slope::compile_file(baModel());
  const std::vector<std::string> wrt = {"cams", "X", "w"};
  slope::DenseResult fw = m.jacobian("ba", wrt, "forward").evaluate(adbench::baArgs(b));
  slope::DenseResult rv = m.jacobian("ba", wrt, "reverse").evaluate(adbench::baArgs(b));
  const int64_t rows = 3 * b.p, cols = 11 * b.n + 3 * b.m + b.p;
  ASSERT_EQ(fw.matrix.shape(), (std::vector<int64_t>{rows, cols}));
  for (int64_t i = 0; i < rows * cols; ++i)
    EXPECT_NEAR(fw.matrix.getF(i), rv.matrix.getF(i), 1e-9 * (1 + std::fabs(rv.matrix.getF(i))))
        << "row " << i / cols << " column " << i % cols;
  // Rows 0..2p-1: observation i's x and y; rows 2p..3p-1: weight i.
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r < 2 * b.p ? r / 2 : r - 2 * b.p;
    const int64_t cam = b.obs[2 * i], pt = b.obs[2 * i + 1];
    for (int64_t c = 0; c < cols; ++c) {
      bool own = c == 11 * b.n + 3 * b.m + i; // its weight
      if (r < 2 * b.p)
        own = own || (c >= 11 * cam && c < 11 * cam + 11) ||
              (c >= 11 * b.n + 3 * pt && c < 11 * b.n + 3 * pt + 3);
      if (!own) {
        EXPECT_EQ(rv.matrix.getF(r * cols + c), 0) << "row " << r << " column " << c;
      }
    }
  }
  slope::GradientCheck c = slope::check_gradient(m, "ba", adbench::baArgs(b));
  for (const auto& p : c.params)
    EXPECT_TRUE(p.passed) << p.name << ": max_abs_err " << p.max_abs_err;
}

// ADBench hand tracking on its test files (tests/data/adbench/hand: the simple_small model,
// test.txt for the simple variant, hand_complicated.txt for the complicated one): the errors
// against ADBench's expected values (HandTests.cpp, to 1e-8), and the Jacobian with respect to
// theta (and us) the same both ways and against finite differences.
adbench::HandInput handInput(bool complicated) {
  return adbench::readHand(dataPath("hand/model"),
                           dataPath(complicated ? "hand/hand_complicated.txt" : "hand/test.txt"),
                           complicated);
}
std::string handModel() {
  return std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/hand.slope";
}

TEST(AdbenchHand, MatchesTheReferenceErrors) {
  slope::Module m = slope::compile_file(handModel());
  struct {
    bool complicated;
    double expected[4];
  } cases[] = {
      {false,
       {1.65193147941611551e-01, -1.74542769272742593e-01, 1.54751161622253441e-01,
        -1.25651749731793605e-01}},
      {true,
       {0.15618766169646370, -0.14930052600332222, 0.17223808982645483, -0.098877045184959655}},
  };
  for (const auto& c : cases) {
    adbench::HandInput h = handInput(c.complicated);
    EXPECT_EQ(h.model.B, 22);
    EXPECT_EQ(h.model.V, 544);
    slope::Result r = m.function(c.complicated ? "hand_complicated" : "hand")
                          .call(adbench::handArgs(h, c.complicated));
    ASSERT_EQ(r[0].shape(), (std::vector<int64_t>{h.N, 3}));
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(r[0].getF(i), c.expected[i], 1e-8)
          << (c.complicated ? "complicated " : "simple ") << i;
  }
}

TEST(AdbenchHand, JacobianBothWaysAndFiniteDifferences) {
  slope::Module m = slope::compile_file(handModel());
  for (bool complicated : {false, true}) {
    adbench::HandInput h = handInput(complicated);
    std::string fn = complicated ? "hand_complicated" : "hand";
    std::vector<std::string> wrt = {"theta"};
    if (complicated) wrt.push_back("us");
    slope::DenseResult fw =
        m.jacobian(fn, wrt, "forward").evaluate(adbench::handArgs(h, complicated));
    slope::DenseResult rv =
        m.jacobian(fn, wrt, "reverse").evaluate(adbench::handArgs(h, complicated));
    ASSERT_EQ(fw.matrix.shape(), rv.matrix.shape());
    EXPECT_EQ(fw.matrix.shape()[1], complicated ? 26 + 2 * h.N : 26);
    for (int64_t i = 0; i < fw.matrix.numel(); ++i)
      EXPECT_NEAR(fw.matrix.getF(i), rv.matrix.getF(i), 1e-9 * (1 + std::fabs(rv.matrix.getF(i))))
          << fn << " entry " << i;
    slope::GradientCheck c = slope::check_gradient(m, fn, adbench::handArgs(h, complicated));
    for (const auto& p : c.params)
      EXPECT_TRUE(p.passed) << fn << " " << p.name << ": max_abs_err " << p.max_abs_err;
  }
}

/// The dense matrix of a sparse result, and how many of the dense entries the pattern left
/// out that are not zero (must be none).
int64_t missedNonzeros(const slope::SparseResult& s, const slope::DenseResult& d,
                       std::vector<double>& fromSparse) {
  fromSparse.assign(static_cast<size_t>(s.rows * s.cols), 0.0);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t z = s.row_start[r]; z < s.row_start[r + 1]; ++z)
      fromSparse[static_cast<size_t>(r * s.cols + s.col_index[z])] = s.values[z];
  int64_t missed = 0;
  for (int64_t i = 0; i < d.matrix.numel(); ++i)
    if (d.matrix.getF(i) != 0 && fromSparse[static_cast<size_t>(i)] == 0) ++missed;
  return missed;
}

// Sparse Jacobians: the pattern read off the IR, columns grouped by colouring. BA's 62 columns
// fall into 14 groups (11 camera parameters, 3 point coordinates, the weight; the principal
// point's x and y reach different rows, so they share one); the complicated
// hand's 30 into 28 (theta's 26, and the two barycentric coordinates of every point). The values
// are the dense Jacobian's.
TEST(AdbenchSparse, BundleAdjustmentAndHandByColouring) {
  {
    adbench::BaInput b = adbench::readBa(dataPath("ba/test.txt"));
    slope::Module m = slope::compile_file(baModel());
    slope::Jacobian J = m.jacobian("ba", {"cams", "X", "w"});
    slope::SparseResult s = J.evaluate_sparse(adbench::baArgs(b));
    slope::DenseResult d = J.evaluate(adbench::baArgs(b));
    EXPECT_TRUE(s.pattern_found);
    EXPECT_EQ(s.colours, 14);
    EXPECT_EQ(s.col_index.size(), 2u * 10 * 14 + 10); // 14 per reprojection row, 1 per weight row
    std::vector<double> dense;
    EXPECT_EQ(missedNonzeros(s, d, dense), 0);
    for (int64_t i = 0; i < d.matrix.numel(); ++i)
      EXPECT_NEAR(dense[static_cast<size_t>(i)], d.matrix.getF(i),
                  1e-9 * (1 + std::fabs(d.matrix.getF(i))))
          << i;
  }
  {
    adbench::HandInput h = handInput(true);
    slope::Module m = slope::compile_file(handModel());
    slope::Jacobian J = m.jacobian("hand_complicated", {"theta", "us"});
    slope::SparseResult s = J.evaluate_sparse(adbench::handArgs(h, true));
    slope::DenseResult d = J.evaluate(adbench::handArgs(h, true));
    EXPECT_TRUE(s.pattern_found);
    EXPECT_EQ(s.colours, 28);
    std::vector<double> dense;
    EXPECT_EQ(missedNonzeros(s, d, dense), 0);
    for (int64_t i = 0; i < d.matrix.numel(); ++i)
      EXPECT_NEAR(dense[static_cast<size_t>(i)], d.matrix.getF(i),
                  1e-9 * (1 + std::fabs(d.matrix.getF(i))))
          << i;
  }
}

// A solver's loop: the pattern read once, then the values refilled in place at new floats
// (evaluate_sparse_into). The refilled values are a fresh evaluation's, bit for bit, for BA
// (14 colours: one call) and the complicated hand (28: two calls, whose lanes the tangents
// kept from the last refill must be reset for); copies and bad input are handled.
TEST(AdbenchSparse, RefillInPlaceAtNewFloats) {
  auto moved = [](std::vector<double>& v, double by) {
    for (size_t i = 0; i < v.size(); ++i)
      v[i] += by * std::sin(static_cast<double>(i) + 1);
  };
  {
    adbench::BaInput b = adbench::readBa(dataPath("ba/test.txt"));
    slope::Module m = slope::compile_file(baModel());
    slope::Jacobian J = m.jacobian("ba", {"cams", "X", "w"});
    slope::SparseResult s = J.evaluate_sparse(adbench::baArgs(b));
    const std::vector<int64_t> rowStart = s.row_start, colIndex = s.col_index;
    const double* storage = s.values.data();
    for (int step = 1; step <= 3; ++step) {
      moved(b.cams, 1e-3);
      moved(b.X, 1e-2);
      moved(b.w, 1e-2);
      J.evaluate_sparse_into(adbench::baArgs(b), s);
      slope::SparseResult fresh = J.evaluate_sparse(adbench::baArgs(b));
      EXPECT_EQ(s.values, fresh.values) << step;
      EXPECT_EQ(s.value[0].getF(3), fresh.value[0].getF(3)) << step;
      EXPECT_EQ(s.row_start, rowStart);
      EXPECT_EQ(s.col_index, colIndex);
      EXPECT_EQ(s.values.data(), storage); // refilled where it was
      EXPECT_EQ(s.calls, 1);
      // A copy (without the buffers) and a new result from it give the same values.
      slope::SparseResult copy = s;
      J.evaluate_sparse_into(adbench::baArgs(b), copy);
      EXPECT_EQ(copy.values, fresh.values);
      EXPECT_EQ(J.evaluate_sparse(adbench::baArgs(b), s).values, fresh.values);
    }
    // A colouring that is not one of the pattern is replaced, the values still right.
    slope::SparseResult bad = s;
    bad.colour.assign(bad.colour.size(), 3);
    J.evaluate_sparse_into(adbench::baArgs(b), bad);
    EXPECT_EQ(bad.values, s.values);
    EXPECT_EQ(bad.colours, 14);
    // Other observations: the pattern was read for the old ones.
    adbench::BaInput other = b;
    std::swap(other.obs[0], other.obs[2]);
    try {
      J.evaluate_sparse_into(adbench::baArgs(other), s);
      ADD_FAILURE() << "no error for other observations";
    } catch (const slope::CallError& e) {
      EXPECT_NE(std::string(e.what()).find("other values of parameter 'obs'"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(s.row_start, rowStart); // the result keeps its pattern after the error
    EXPECT_EQ(s.col_index, colIndex);
    // A pattern that is not CSR of its size: an error, no read outside it.
    slope::SparseResult broken = s;
    broken.col_index[5] = broken.cols;
    EXPECT_THROW(J.evaluate_sparse_into(adbench::baArgs(b), broken), slope::CallError);
    broken = s;
    broken.row_start[3] = broken.row_start[4] + 1;
    EXPECT_THROW(J.evaluate_sparse_into(adbench::baArgs(b), broken), slope::CallError);
    broken = s;
    broken.row_start.back() += 1;
    EXPECT_THROW(J.evaluate_sparse_into(adbench::baArgs(b), broken), slope::CallError);
    // Another function's pattern.
    slope::Jacobian Jw = m.jacobian("ba", {"w"});
    EXPECT_THROW(Jw.evaluate_sparse_into(adbench::baArgs(b), s), slope::CallError);
    // A default result gets a pattern.
    slope::SparseResult none;
    J.evaluate_sparse_into(adbench::baArgs(b), none);
    EXPECT_EQ(none.values, s.values);
  }
  {
    adbench::HandInput h = handInput(true);
    slope::Module m = slope::compile_file(handModel());
    slope::Jacobian J = m.jacobian("hand_complicated", {"theta", "us"});
    slope::SparseResult s = J.evaluate_sparse(adbench::handArgs(h, true));
    EXPECT_EQ(s.calls, 2);
    for (int step = 1; step <= 2; ++step) {
      moved(h.theta, 1e-2);
      moved(h.us, 1e-3);
      J.evaluate_sparse_into(adbench::handArgs(h, true), s);
      EXPECT_EQ(s.values, J.evaluate_sparse(adbench::handArgs(h, true)).values) << step;
    }
  }
}

} // namespace
