#include "compiler/derivatives.hpp"

#include <algorithm>
#include <stdexcept>

namespace slope {
namespace {

/// The indices of the parameters named in wrt.
std::vector<size_t> wrtParams(const ir::Function& f, const std::vector<std::string>& wrt) {
  std::vector<size_t> out;
  for (size_t p = 0; p < f.params.size(); ++p)
    if (std::find(wrt.begin(), wrt.end(), f.paramNames[p]) != wrt.end()) out.push_back(p);
  return out;
}

/// Zero tensors shaped as the wrt parameters, with element `col` (counted across them) set
/// to 1: the col-th unit vector of the input space.
std::vector<Tensor> unitInputs(const std::vector<Tensor>& args, const std::vector<size_t>& ps,
                               int64_t col) {
  std::vector<Tensor> out;
  for (size_t p : ps) {
    Tensor t(args[p].dtype(), args[p].shape());
    if (col >= 0 && col < t.numel()) t.setF(col, 1);
    col -= t.numel();
    out.push_back(std::move(t));
  }
  return out;
}

} // namespace

int64_t outputElements(const ir::Function& f, const std::vector<Tensor>& args) {
  auto sizes = bindSizes(f, args);
  f.deriveSizes(sizes);
  int64_t n = 0;
  for (int y : f.body.yields) {
    if (!isFloat(f.types[y].dtype)) continue;
    int64_t e = 1;
    for (const Poly& p : f.types[y].shape)
      e *= *p.eval(sizes);
    n += e;
  }
  return n;
}

int64_t inputElements(const ir::Function& f, const std::vector<Tensor>& args,
                      const std::vector<std::string>& wrt) {
  int64_t n = 0;
  for (size_t p : wrtParams(f, wrt))
    n += args[p].numel();
  return n;
}

DenseDerivative denseJacobian(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, const std::string& mode,
                              const Runnable& jvpFn, const Runnable& vjpFn) {
  const std::vector<size_t> ps = wrtParams(f, wrt);
  const int64_t rows = outputElements(f, args), cols = inputElements(f, args, wrt);
  if (rows == 0) throw std::invalid_argument("'" + f.name + "' has no float result");
  if (cols == 0)
    throw std::invalid_argument("'" + f.name + "' has no float parameter to differentiate");
  DenseDerivative d;
  d.mode = mode == "auto" ? (cols < rows ? "forward" : "reverse") : mode;
  if (d.mode != "forward" && d.mode != "reverse")
    throw std::invalid_argument("unknown Jacobian mode '" + mode + "' (forward, reverse, auto)");
  d.matrix = Tensor(DType::F64, {rows, cols});
  const size_t nres = f.body.yields.size();
  if (d.mode == "forward") {
    for (int64_t c = 0; c < cols; ++c) {
      std::vector<Tensor> a = args, e = unitInputs(args, ps, c);
      a.insert(a.end(), e.begin(), e.end());
      std::vector<Tensor> out = jvpFn(a);
      ++d.calls;
      if (c == 0) d.value.assign(out.begin(), out.begin() + static_cast<long>(nres));
      int64_t r = 0;
      for (size_t k = nres; k < out.size(); ++k)
        for (int64_t i = 0; i < out[k].numel(); ++i)
          d.matrix.setF(r++ * cols + c, out[k].getF(i));
    }
    return d;
  }
  // Reverse: a VJP per row, seeded with the row's unit vector of the output space. A function
  // with one scalar float result has no seed parameter (its gradient is seeded with 1).
  const bool scalarLoss = nres == 1 && isFloat(f.types[f.body.yields[0]].dtype) &&
                          f.types[f.body.yields[0]].rank() == 0;
  auto sizes = bindSizes(f, args);
  f.deriveSizes(sizes);
  std::vector<Tensor> seeds;
  for (int y : f.body.yields) {
    if (!isFloat(f.types[y].dtype)) continue;
    std::vector<int64_t> shape;
    for (const Poly& p : f.types[y].shape)
      shape.push_back(*p.eval(sizes));
    seeds.emplace_back(f.types[y].dtype, shape);
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<Tensor> a = args;
    if (!scalarLoss) {
      std::vector<Tensor> s = seeds;
      int64_t at = r;
      for (Tensor& t : s) {
        if (at >= 0 && at < t.numel()) t.setF(at, 1);
        at -= t.numel();
      }
      a.insert(a.end(), s.begin(), s.end());
    }
    std::vector<Tensor> out = vjpFn(a);
    ++d.calls;
    if (r == 0) d.value.assign(out.begin(), out.begin() + static_cast<long>(nres));
    int64_t c = 0;
    for (size_t k = nres; k < out.size(); ++k)
      for (int64_t i = 0; i < out[k].numel(); ++i)
        d.matrix.setF(r * cols + c++, out[k].getF(i));
  }
  return d;
}

DenseDerivative denseHessian(const ir::Function& f, const std::vector<std::string>& wrt,
                             const std::vector<Tensor>& args, const Runnable& hvpFn) {
  const std::vector<size_t> ps = wrtParams(f, wrt);
  const int64_t n = inputElements(f, args, wrt);
  if (n == 0)
    throw std::invalid_argument("'" + f.name + "' has no float parameter to differentiate");
  DenseDerivative d;
  d.mode = "forward over reverse";
  d.matrix = Tensor(DType::F64, {n, n});
  for (int64_t c = 0; c < n; ++c) {
    std::vector<Tensor> a = args, e = unitInputs(args, ps, c);
    a.insert(a.end(), e.begin(), e.end());
    std::vector<Tensor> out = hvpFn(a);
    ++d.calls;
    if (c == 0) d.value.assign(out.begin(), out.begin() + 1);
    // out: the value, the gradients, then H e_c per parameter.
    int64_t r = 0;
    for (size_t k = 1 + ps.size(); k < out.size(); ++k)
      for (int64_t i = 0; i < out[k].numel(); ++i)
        d.matrix.setF(r++ * n + c, out[k].getF(i));
  }
  return d;
}

} // namespace slope
