// Gradient descent on a JIT-compiled loss: fits y = k x + b to the points (1, 5) and (2, 7),
// which lie on y = 2x + 3, printing the loss as it falls.
//
//   build/samples/linear_regression/linear_regression samples/linear_regression/loss.slope
#include <slope/slope.hpp>

#include <cmath>
#include <cstdio>

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "samples/linear_regression/loss.slope";
  slope::Module m = slope::compile_file(path);
  slope::Gradient loss = m.gradient("loss", {"k", "b"});

  const double xs[] = {1, 2};
  const double ys[] = {5, 7};
  double k = 0, b = 0, dk = 0, db = 0;
  const double rate = 0.05;
  double l = 0;
  int step = 0;
  for (; step < 20000; ++step) {
    l = loss(k, b, slope::View(xs, {2}), slope::View(ys, {2}), slope::View(dk), slope::View(db));
    if (step % 200 == 0) std::printf("step %5d  loss %.3e  k %.6f  b %.6f\n", step, l, k, b);
    if (l < 1e-20) break;
    k -= rate * dk;
    b -= rate * db;
  }
  std::printf("converged after %d steps: k = %.6f, b = %.6f, loss %.3e\n", step, k, b, l);
  return std::fabs(k - 2) < 1e-6 && std::fabs(b - 3) < 1e-6 ? 0 : 1;
}
