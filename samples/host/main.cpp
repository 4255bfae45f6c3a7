// The smallest host program: JIT-compile a .slope file and call a function and its gradient.
//
//   build/samples/host/slope_host samples/autograd_intro.slope
#include <slope/slope.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "samples/autograd_intro.slope";
  try {
    slope::Module m = slope::compile_file(path);

    // Scalars: call as plainly as a C++ function.
    double y = m.function("quadratic")(2.0);
    double dydx = 0;
    double y2 = m.gradient("quadratic")(2.0, slope::View(dydx));
    std::printf("quadratic(2) = %g, d/dx = %g\n", y, dydx);
    if (y2 != y) return 1;

    // Tensors: views over our own memory, no copies; the gradient is written into g.
    double x[] = {1, 2, 3, 4};
    double g[4];
    auto bowl = m.gradient("bowl");
    double v = bowl(slope::View(x, {2, 2}), slope::View(g, {2, 2}));
    std::printf("bowl([[1,2],[3,4]]) = %g, gradient = [[%g, %g], [%g, %g]]\n", v, g[0], g[1], g[2],
                g[3]);
  } catch (const slope::CompileError& e) {
    std::fprintf(stderr, "%s", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
