/* bowl and its gradient compiled ahead of time (slope_add_library in CMakeLists.txt). */
#include "bowl.h"

#include <stdio.h>

int main(void) {
  double x[] = {1, 2, 3, 4}, g[4], y = 0, v = 0;
  slope_error err;
  char msg[256];
  if (bowl(x, 2, 2, &v, &err) != 0 || bowl_grad(x, 2, 2, &y, g, &err) != 0) {
    fprintf(stderr, "%s\n", bowl_grad__message(&err, msg, sizeof msg));
    return 1;
  }
  printf("aot: bowl = %g, gradient = [[%g, %g], [%g, %g]]\n", v, g[0], g[1], g[2], g[3]);
  return v == 54 && y == 54 && g[0] == 4 && g[1] == 6 && g[2] == 8 && g[3] == 10 ? 0 : 1;
}
