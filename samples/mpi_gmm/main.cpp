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
  const adbench::GmmInput& g;
  std::vector<double> x; // this rank's points
  int64_t n = 0;         // how many

  /// The objective over this rank's points, less the prior but on rank 0, and its gradient
  /// (alphas, means, icf, in one vector).
  adbench::GmmResult local(bool withPrior) const {
    adbench::GmmResult r = adbench::runGmm(grad, g, x.data(), n);
    if (!withPrior) {
      std::vector<double> z2(x.begin(), x.begin() + g.d); // z, then z again
      z2.insert(z2.end(), x.begin(), x.begin() + g.d);
      adbench::GmmResult one = adbench::runGmm(grad, g, z2.data(), 1);
      adbench::GmmResult two = adbench::runGmm(grad, g, z2.data(), 2);
      r.objective -= 2 * one.objective - two.objective;
      for (size_t k = 0; k < r.gradient.size(); ++k)
        r.gradient[k] -= 2 * one.gradient[k] - two.gradient[k];
    }
    return r;
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
    std::vector<double> sum;
    double seconds = 0;
    for (int step = 0; step <= steps; ++step) {
      MPI_Barrier(MPI_COMM_WORLD);
      auto t0 = std::chrono::steady_clock::now();
      adbench::GmmResult part = fit.local(rank == 0);
      double total = 0;
      sum.assign(part.gradient.size(), 0);
      MPI_Allreduce(&part.objective, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      MPI_Allreduce(part.gradient.data(), sum.data(), static_cast<int>(sum.size()), MPI_DOUBLE,
                    MPI_SUM, MPI_COMM_WORLD);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rank == 0) std::printf("step %d objective %.17g\n", step, total);
      if (step == steps) break;
      // Every rank holds the same parameters and takes the same step.
      size_t k = 0; // (the gradient's order: alphas, means, icf)
      for (std::vector<double>* v : {&g.alphas, &g.means, &g.icf})
        for (double& e : *v)
          e -= rate * sum[k++];
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
