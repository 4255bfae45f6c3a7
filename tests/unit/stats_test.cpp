// The cheap-gradient principle on every sample: the gradient executes a small constant times
// the operations of the function, at small and larger sizes (no expression swell).

#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace slope {
namespace {

TEST(CheapGradient, RatioStaysUnderSixForEverySample) {
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(SLOPE_SOURCE_DIR) + "/samples")) {
    if (entry.path().extension() != ".slope") continue;
    auto p = Program::fromFile(entry.path().string());
    ASSERT_TRUE(p->ok()) << p->diagnostics();
    for (const auto& name : p->functionNames()) {
      ir::Function f = p->forward(name);
      ir::Function g = p->gradient(name, {});
      for (int64_t n : {3, 12}) {
        std::map<std::string, int64_t> sizes;
        for (const auto& s : f.sizeNames())
          sizes[s] = n;
        auto args = randomArgs(f, sizes, 1);
        int64_t fops = 0, gops = 0;
        auto value = evaluate(f, args, &fops);
        bool scalarLoss = value.size() == 1 && value[0].rank() == 0 && isFloat(value[0].dtype());
        if (!scalarLoss)
          for (const Tensor& r : value)
            if (isFloat(r.dtype())) args.push_back(r);
        evaluate(g, args, &gops);
        double ratio = static_cast<double>(gops) / static_cast<double>(fops);
        EXPECT_LT(ratio, 6.0) << entry.path().filename() << ":" << name << " at size " << n
                              << ": forward " << fops << " ops, gradient " << gops;
      }
    }
  }
}

} // namespace
} // namespace slope
