/* A C program (not C++) that calls functions and gradients compiled ahead of time by
   `slopec compile` (tests/CMakeLists.txt builds them with slope_add_library), linked with
   libslope_rt.a, libmvec and libm only: the seed examples, digamma and binomial
   checkpointing from libslope_rt.a, and every kind of error the typed entries report. */
#include "autograd_intro.h"
#include "extra.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      ++failures;                                                                                  \
    }                                                                                              \
  } while (0)

/* An error with the message we expect (a substring of it). */
static void expectError(int32_t code, int32_t want, const char* message, const char* part) {
  CHECK(code == want, "code %d, expected %d (%s)", (int)code, (int)want, message);
  CHECK(strstr(message, part) != NULL, "message '%s' lacks '%s'", message, part);
}

static double decayValue(double x0, double rate, const double* steps, int64_t T) {
  double y = 0;
  slope_error e;
  if (decay(x0, rate, steps, T, &y, &e) != 0) ++failures;
  return y;
}

int main(void) {
  slope_error e;
  char msg[512];

  /* The seed examples: 2x^2 + 3x + 1 at 2 is 15 with derivative 11; bowl over [[1,2],[3,4]]
     is 54 with gradient [[4,6],[8,10]]. */
  double y = 0, dx = 0;
  CHECK(quadratic_grad(2.0, &y, &dx, &e) == 0, "%s", quadratic_grad__message(&e, msg, sizeof msg));
  CHECK(y == 15 && dx == 11, "quadratic_grad(2) = %.17g, %.17g", y, dx);
  printf("quadratic(2) = %g, d/dx = %g\n", y, dx);
  double x[4] = {1, 2, 3, 4}, g[4] = {0, 0, 0, 0};
  CHECK(bowl_grad(x, 2, 2, &y, g, &e) == 0, "%s", bowl_grad__message(&e, msg, sizeof msg));
  CHECK(y == 54 && g[0] == 4 && g[1] == 6 && g[2] == 8 && g[3] == 10,
        "bowl_grad = %g, [%g, %g, %g, %g]", y, g[0], g[1], g[2], g[3]);
  printf("bowl([[1,2],[3,4]]) = %g, gradient = [[%g, %g], [%g, %g]]\n", y, g[0], g[1], g[2], g[3]);
  double fy = 0;
  CHECK(bowl(x, 2, 2, &fy, NULL) == 0 && fy == 54, "bowl = %g", fy);

  /* What the typed entry checks: sizes below 1, null data, an output over an input. */
  int32_t rc = bowl_grad(x, -1, 2, &y, g, &e);
  expectError(rc, SLOPE_ERR_ARGUMENT, bowl_grad__message(&e, msg, sizeof msg),
              "size 'n' must be at least 1, got -1");
  rc = bowl_grad(NULL, 2, 2, &y, g, &e);
  expectError(rc, SLOPE_ERR_ARGUMENT, bowl_grad__message(&e, msg, sizeof msg),
              "argument 'x': the data pointer is null");
  rc = bowl_grad(x, 2, 2, &y, x + 1, &e);
  expectError(rc, SLOPE_ERR_ARGUMENT, bowl_grad__message(&e, msg, sizeof msg),
              "argument 'grad_x' shares memory with 'x'");
  CHECK(x[1] == 2, "a refused call wrote its output: x[1] = %g", x[1]);
  rc = bowl(x, 2, 0, &fy, &e);
  expectError(rc, SLOPE_ERR_ARGUMENT, bowl__message(&e, msg, sizeof msg),
              "size 'm' must be at least 1, got 0");

  /* What the code checks: a subscript out of range, with its place in the source. */
  double v[3] = {1, 2, 3}, pv = 0, dv[3];
  CHECK(pick(v, 2, 3, &pv, &e) == 0 && pv == 9, "pick(v, 2) = %g", pv);
  rc = pick_grad(v, 5, 3, &pv, dv, &e);
  expectError(rc, SLOPE_ERR_INDEX, pick_grad__message(&e, msg, sizeof msg),
              "extra.slope:18:12: index 5 is out of range for 'v': dimension 0 has extent 3");
  printf("pick_grad(v, 5): %s\n", msg);

  /* digamma from libslope_rt.a: d/dx lgamma(x) at 1, 2 and 0.5. */
  double lx[3] = {1, 2, 0.5}, lg[3], lv;
  CHECK(lgsum_grad(lx, 3, &lv, lg, &e) == 0, "%s", lgsum_grad__message(&e, msg, sizeof msg));
  CHECK(fabs(lg[0] + 0.57721566490153286) < 1e-15 && fabs(lg[1] - 0.42278433509846714) < 1e-15 &&
            fabs(lg[2] + 1.9635100260214235) < 1e-15,
        "digamma = %.17g %.17g %.17g", lg[0], lg[1], lg[2]);

  /* Binomial checkpointing (compiled with --checkpoint=revolve:2; the schedule is in
     libslope_rt.a) against central differences. */
  enum { T = 40 };
  double steps[T];
  for (int t = 0; t < T; ++t)
    steps[t] = 0.5 + 0.01 * t;
  double x0 = 0.7, rate = 0.3, dv0 = 0, drate = 0, dsteps[T];
  CHECK(decay_grad(x0, rate, steps, T, &y, &dv0, &drate, dsteps, &e) == 0, "%s",
        decay_grad__message(&e, msg, sizeof msg));
  double h = 1e-6;
  double fd0 = (decayValue(x0 + h, rate, steps, T) - decayValue(x0 - h, rate, steps, T)) / (2 * h);
  double fdr = (decayValue(x0, rate + h, steps, T) - decayValue(x0, rate - h, steps, T)) / (2 * h);
  CHECK(fabs(dv0 - fd0) < 1e-7 && fabs(drate - fdr) < 1e-7,
        "decay_grad %.17g %.17g, fd %.17g %.17g", dv0, drate, fd0, fdr);
  CHECK(y == decayValue(x0, rate, steps, T), "decay_grad's value %.17g", y);

  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("all AOT checks pass\n");
  return 0;
}
