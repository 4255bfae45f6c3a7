#include "compiler/aot.hpp"

#include <algorithm>
#include <set>
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

bool hasGradient(const Program& p, const std::string& name) {
  for (const auto& t : p.forward(name).paramTypes)
    if (isFloat(t.dtype)) return true;
  return false;
}

std::vector<codegen::ObjectFunction> objectFunctions(const Program& p,
                                                     const std::vector<std::string>& functions,
                                                     const std::vector<std::string>& gradients,
                                                     const std::vector<std::string>& wrt,
                                                     const GradOptions& opt) {
  auto gradientOf = [&](const std::string& name) {
    ir::Function f = p.forward(name);
    if (!hasGradient(p, name))
      throw std::invalid_argument("'" + name + "' has no float parameter: it has no gradient");
    size_t nf = f.body.yields.size();
    std::vector<std::string> w = resolveWrt(f, wrt);
    ir::Function g = p.gradient(name, wrt, opt);
    bool scalarLoss = nf == 1 && f.types[f.body.yields[0]].rank() == 0 &&
                      isFloat(f.types[f.body.yields[0]].dtype);
    std::vector<std::string> results =
        scalarLoss ? std::vector<std::string>{"value"} : forwardNames(nf);
    for (const std::string& q : w)
      results.push_back("grad_" + q);
    if (results.size() != g.body.yields.size())
      throw std::logic_error("the gradient of " + name + " has " +
                             std::to_string(g.body.yields.size()) + " results, not " +
                             std::to_string(results.size()));
    std::string about = "the gradient of " + name + " with respect to ";
    for (size_t k = 0; k < w.size(); ++k)
      about += (k ? ", " : "") + w[k];
    return codegen::ObjectFunction{g, signatureOf(g), results, about};
  };
  std::vector<codegen::ObjectFunction> out;
  std::set<std::string> done;
  for (const std::string& name : functions) {
    ir::Function f = p.forward(name);
    size_t nf = f.body.yields.size();
    out.push_back({f, signatureOf(f), forwardNames(nf), ""});
    if (std::find(gradients.begin(), gradients.end(), name) != gradients.end()) {
      out.push_back(gradientOf(name));
      done.insert(name);
    }
  }
  for (const std::string& name : gradients)
    if (done.insert(name).second) out.push_back(gradientOf(name));
  return out;
}

} // namespace slope
