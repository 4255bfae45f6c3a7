// libFuzzer target for the front end: any bytes go through the parser and the checker, and a
// program that checks clean is lowered, simplified and differentiated function by function
// (everything slopec does before code generation). The properties: no crash, no sanitizer
// report, no hang, and every failure is a diagnostic or a documented exception.
// Build and run: scripts/fuzz.sh (docs/testing.md).

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/pipeline.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0; // long inputs add time, not new paths
  std::string text(reinterpret_cast<const char*>(data), size);
  auto prog = slope::Program::fromString("fuzz.slope", text);
  if (!prog->ok()) {
    (void)prog->diagnostics(); // rendering is part of the front end too
    return 0;
  }
  for (const std::string& name : prog->functionNames()) {
    try {
      (void)prog->forward(name);
      (void)prog->gradient(name, {});
    } catch (const slope::GradError&) {
      // a function that cannot be differentiated (say, one with no float parameter)
    }
  }
  return 0;
}
