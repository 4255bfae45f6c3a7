// bowl and its gradient compiled at run time by the JIT (Slope::slope).
#include <slope/slope.hpp>

#include <cstdio>

int main() {
  slope::Module m = slope::compile_file(BOWL_SLOPE);
  double x[] = {1, 2, 3, 4}, g[4];
  double y = m.gradient("bowl")(slope::View(x, {2, 2}), slope::View(g, {2, 2}));
  std::printf("jit: bowl = %g, gradient = [[%g, %g], [%g, %g]]\n", y, g[0], g[1], g[2], g[3]);
  return y == 54 && g[0] == 4 && g[1] == 6 && g[2] == 8 && g[3] == 10 ? 0 : 1;
}
