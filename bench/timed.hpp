// The options of every module whose calls a benchmark times.
#pragma once

#include "slope/slope.hpp"

/// Each function compiled at opt_level before it is returned (Options::tiered off): what is
/// timed is the code a long-running host gets, not the first tier's.
inline slope::Options timed() {
  slope::Options o;
  o.tiered = false;
  return o;
}
