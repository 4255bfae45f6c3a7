// A data-parallel fit of the ADBench GMM over MPI (docs/scaling.md): every rank holds a slice
// of the points, computes the objective and its gradient on its slice with Slope, and
// MPI_Allreduce sums them; then every rank takes the same gradient-descent step.
//
//   mpirun -np 2 build/samples/mpi_gmm tests/data/adbench/gmm/1k/gmm_d10_K25.txt 5
//
// The objective is a sum over points plus terms that are not (the Wishart prior and its
// constant, P): gmm(S) = sum of d_i over the points i of S, plus P, so the slices would sum to
// f + (R - 1) P. Every rank but the first subtracts P, which it gets from one of its points z:
// gmm({z}) = d_z + P and gmm({z, z}) = 2 d_z + P, so P = 2 gmm({z}) - gmm({z, z}) (Slope's
// API takes no empty tensor, so gmm at no points is not an option), and the same for the
// gradient. The sum over ranks is f, within rounding of a one-process run: the partial sums
// add in another order, and P comes out of a difference. Prints, on rank 0, the objective at
// every step and at the end the parameters' sum and largest magnitude, for tests/mpi_gmm.sh
// to compare across rank counts.
#include "../adbench/gmm_io.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

struct Fit {
  slope::Gradient grad;
  adbench::GmmInput& g;
  std::vector<double> x; // this rank's points
  int64_t n = 0;         // how many

  /// The objective over this rank's points (less the prior but on rank 0), and its gradient
  /// (alphas, means, icf) into out.
  double local(bool withPrior, std::vector<double>& out) {
    size_t na = g.alphas.size(), nm = g.means.size(), ni = g.icf.size();
    std::vector<double> da(na), dm(nm), dicf(ni), pa(na), pm(nm), picf(ni);
    auto call = [&](const double* pts, int64_t count, std::vector<double>& a,
                    std::vector<double>& m, std::vector<double>& c) {
      return grad(slope::View(g.alphas.data(), {g.K}), slope::View(g.means.data(), {g.K, g.d}),
                  slope::View(g.icf.data(), {g.K, g.t()}), slope::View(pts, {count, g.d}), g.gamma,
                  g.m, slope::View(a.data(), {g.K}), slope::View(m.data(), {g.K, g.d}),
                  slope::View(c.data(), {g.K, g.t()}));
    };
    double f = call(x.data(), n, da, dm, dicf);
    if (!withPrior) {
      std::vector<double> z2(x.begin(), x.begin() + g.d); // z, then z again
      z2.insert(z2.end(), x.begin(), x.begin() + g.d);
      std::vector<double> qa(na), qm(nm), qicf(ni);
      double one = call(z2.data(), 1, pa, pm, picf), two = call(z2.data(), 2, qa, qm, qicf);
      f -= 2 * one - two;
      for (size_t k = 0; k < na; ++k)
        da[k] -= 2 * pa[k] - qa[k];
      for (size_t k = 0; k < nm; ++k)
        dm[k] -= 2 * pm[k] - qm[k];
      for (size_t k = 0; k < ni; ++k)
        dicf[k] -= 2 * picf[k] - qicf[k];
    }
    out = da;
    out.insert(out.end(), dm.begin(), dm.end());
    out.insert(out.end(), dicf.begin(), dicf.end());
    return f;
  }
};

} // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  int status = 0;
  try {
    if (argc < 3) throw std::invalid_argument("usage: mpi_gmm GMM_FILE STEPS [gmm.slope]");
    std::string model =
        argc > 3 ? argv[3] : std::string(SLOPE_SOURCE_DIR) + "/samples/adbench/gmm.slope";
    int steps = std::stoi(argv[2]);
    // Every rank reads the file and keeps its slice of the points (a cluster run would read
    // only its slice: docs/scaling.md).
    adbench::GmmInput g = adbench::readGmm(argv[1]);
    if (g.n < ranks) throw std::invalid_argument("fewer points than ranks");
    int64_t lo = g.n * rank / ranks, hi = g.n * (rank + 1) / ranks;
    slope::Options o;
    o.threads = 1; // one rank per core
    slope::Module m = slope::compile_file(model, o);
    Fit fit{m.gradient("gmm", {"alphas", "means", "icf"}), g,
            std::vector<double>(g.x.begin() + lo * g.d, g.x.begin() + hi * g.d), hi - lo};
    const double rate = 0.1 / static_cast<double>(g.n);
    std::vector<double> grad, sum;
    double seconds = 0;
    for (int step = 0; step <= steps; ++step) {
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = std::chrono::steady_clock::now();
      double f = fit.local(rank == 0, grad), total = 0;
      sum.assign(grad.size(), 0);
      MPI_Allreduce(&f, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      MPI_Allreduce(grad.data(), sum.data(), static_cast<int>(grad.size()), MPI_DOUBLE, MPI_SUM,
                    MPI_COMM_WORLD);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rank == 0) std::printf("step %d objective %.17g\n", step, total);
      if (step == steps) break;
      // Every rank holds the same parameters and takes the same step.
      size_t k = 0;
      for (double* v : {g.alphas.data(), g.means.data(), g.icf.data()}) {
        size_t count = v == g.alphas.data()  ? g.alphas.size()
                       : v == g.means.data() ? g.means.size()
                                             : g.icf.size();
        for (size_t j = 0; j < count; ++j)
          v[j] -= rate * sum[k++];
      }
    }
    double total = 0, largest = 0;
    for (const auto* v : {&g.alphas, &g.means, &g.icf})
      for (double e : *v) {
        total += e;
        largest = std::max(largest, std::fabs(e));
      }
    if (rank == 0) {
      std::printf("parameters sum %.17g max %.17g\n", total, largest);
      std::printf("ranks %d points %lld: %.3f ms per step (objective + gradient + allreduce)\n",
                  ranks, static_cast<long long>(g.n), 1e3 * seconds / (steps + 1));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_gmm (rank %d): %s\n", rank, e.what());
    // The other ranks may be waiting in a collective call for this one: end them all.
    if (ranks > 1) MPI_Abort(MPI_COMM_WORLD, 2);
    status = 2;
  }
  MPI_Finalize();
  return status;
}
