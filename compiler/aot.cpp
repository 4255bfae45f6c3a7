#include "compiler/aot.hpp"

#include <stdexcept>

namespace slope {
namespace {

/// "fn NAME(a: f64[n], b: f64) -> f64" from the IR's signature.
std::string signatureOf(const ir::Function& f) {
  std::string s = "fn " + f.name + "(";
  for (size_t k = 0; k < f.paramTypes.size(); ++k)
    s += (k ? ", " : "") + f.paramNames[k] + ": " + f.paramTypes[k].str();
  s += ") -> ";
  const auto& ys = f.body.yields;
  if (ys.size() != 1) s += "(";
  for (size_t r = 0; r < ys.size(); ++r)
    s += (r ? ", " : "") + f.types[ys[r]].str();
  if (ys.size() != 1) s += ")";
  return s;
}

std::vector<std::string> forwardNames(size_t results) {
  if (results == 1) return {"result"};
  std::vector<std::string> out;
  for (size_t r = 0; r < results; ++r)
    out.push_back("result" + std::to_string(r + 1));
  return out;
}

} // namespace

std::vector<codegen::ObjectFunction>
objectFunctions(const Program& p, const std::vector<std::string>& names, bool gradients,
                const std::vector<std::string>& wrt, const GradOptions& opt) {
  std::vector<codegen::ObjectFunction> out;
  for (const std::string& name : names) {
    ir::Function f = p.forward(name);
    size_t nf = f.body.yields.size();
    codegen::ObjectFunction fo{f, signatureOf(f), forwardNames(nf)};
    out.push_back(std::move(fo));
    if (!gradients) continue;
    bool anyFloat = false;
    for (const auto& t : f.paramTypes)
      anyFloat = anyFloat || isFloat(t.dtype);
    if (!anyFloat) continue;
    std::vector<std::string> w = resolveWrt(f, wrt);
    ir::Function g = p.gradient(name, wrt, opt);
    bool scalarLoss = nf == 1 && f.types[f.body.yields[0]].rank() == 0 &&
                      isFloat(f.types[f.body.yields[0]].dtype);
    std::vector<std::string> results =
        scalarLoss ? std::vector<std::string>{"value"} : forwardNames(nf);
    for (const std::string& p : w)
      results.push_back("grad_" + p);
    if (results.size() != g.body.yields.size())
      throw std::logic_error("the gradient of " + name + " has " +
                             std::to_string(g.body.yields.size()) + " results, not " +
                             std::to_string(results.size()));
    std::string sig = signatureOf(g) + "\n *   the gradient of " + name + " with respect to ";
    for (size_t k = 0; k < w.size(); ++k)
      sig += (k ? ", " : "") + w[k];
    out.push_back({g, sig, results});
  }
  return out;
}

} // namespace slope
