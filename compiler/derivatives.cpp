#include "compiler/derivatives.hpp"

#include <algorithm>
#include <stdexcept>

namespace slope {

std::vector<size_t> wrtParams(const ir::Function& f, const std::vector<std::string>& wrt) {
  std::vector<size_t> out;
  for (size_t p = 0; p < f.params.size(); ++p)
    if (std::find(wrt.begin(), wrt.end(), f.paramNames[p]) != wrt.end()) out.push_back(p);
  return out;
}

int directionBatch(int64_t count) {
  constexpr int64_t kMax = 16;
  if (count <= 1) return 1;
  int64_t calls = (count + kMax - 1) / kMax;
  return static_cast<int>((count + calls - 1) / calls);
}

int64_t alongDirectionBatches(
    const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams, const Directional& fn,
    int64_t count, const std::function<int64_t(int64_t col)>& dirOf, size_t first,
    std::vector<Tensor>* value,
    const std::function<void(int64_t d0, const std::vector<Tensor>& out)>& takeCall) {
  const int64_t K = fn.batch > 0 ? fn.batch : 1;
  // The arguments, then a tangent per parameter: built once, the tangents refilled per call.
  std::vector<Tensor> a = args;
  for (size_t p : wrtParams) {
    std::vector<int64_t> shape = args[p].shape();
    if (fn.batch > 0) shape.push_back(K);
    a.emplace_back(args[p].dtype(), shape);
  }
  int64_t calls = 0;
  for (int64_t d0 = 0; d0 < count; d0 += K) {
    int64_t col = 0;
    for (size_t q = 0; q < wrtParams.size(); ++q) {
      Tensor& t = a[args.size() + q];
      const int64_t n = args[wrtParams[q]].numel();
      for (int64_t i = 0; i < n; ++i, ++col) {
        // Element i, lane j: 1 where the element's direction is d0 + j (in one lane at most);
        // the lane the previous call set goes back to 0.
        const int64_t d = dirOf(col), lane = d - d0, was = d - (d0 - K);
        if (d0 > 0 && was >= 0 && was < K) t.setF(i * K + was, 0);
        if (lane >= 0 && lane < K) t.setF(i * K + lane, 1);
      }
    }
    std::vector<Tensor> out = fn.run(a);
    if (calls++ == 0 && value) value->assign(out.begin(), out.begin() + static_cast<long>(first));
    takeCall(d0, out);
  }
  return calls;
}

int64_t alongDirections(const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams,
                        const Directional& fn, int64_t count,
                        const std::function<int64_t(int64_t col)>& dirOf, size_t first,
                        std::vector<Tensor>* value,
                        const std::function<void(int64_t d, const std::vector<double>& t)>& take) {
  const int64_t K = fn.batch > 0 ? fn.batch : 1;
  std::vector<double> flat;
  return alongDirectionBatches(args, wrtParams, fn, count, dirOf, first, value,
                               [&](int64_t d0, const std::vector<Tensor>& out) {
                                 for (int64_t j = 0; j < K && d0 + j < count; ++j) {
                                   flat.clear();
                                   for (size_t q = first; q < out.size(); ++q) {
                                     const int64_t per =
                                         out[q].numel() / K; // a direction's elements, K apart
                                     if (out[q].dtype() == DType::F64) {
                                       const double* x = out[q].data<double>() + j;
                                       for (int64_t i = 0; i < per; ++i)
                                         flat.push_back(x[i * K]);
                                     } else {
                                       for (int64_t i = 0; i < per; ++i)
                                         flat.push_back(out[q].getF(i * K + j));
                                     }
                                   }
                                   take(d0 + j, flat);
                                 }
                               });
}

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
                              const Directional& jvpFn, const Runnable& vjpFn) {
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
    d.directions = cols;
    d.calls = alongDirections(
        args, ps, jvpFn, cols, [](int64_t col) { return col; }, nres, &d.value,
        [&](int64_t c, const std::vector<double>& t) {
          for (int64_t r = 0; r < rows; ++r)
            d.matrix.setF(r * cols + c, t[static_cast<size_t>(r)]);
        });
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
  d.directions = rows;
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
                             const std::vector<Tensor>& args, const Directional& hvpFn) {
  const std::vector<size_t> ps = wrtParams(f, wrt);
  const int64_t n = inputElements(f, args, wrt);
  if (n == 0)
    throw std::invalid_argument("'" + f.name + "' has no float parameter to differentiate");
  DenseDerivative d;
  d.mode = "forward over reverse";
  d.matrix = Tensor(DType::F64, {n, n});
  // The HVP's results: the value, the gradients, then H e_c per parameter.
  std::vector<Tensor> value;
  d.directions = n;
  d.calls = alongDirections(
      args, ps, hvpFn, n, [](int64_t col) { return col; }, 1 + ps.size(), &value,
      [&](int64_t c, const std::vector<double>& t) {
        for (int64_t r = 0; r < n; ++r)
          d.matrix.setF(r * n + c, t[static_cast<size_t>(r)]);
      });
  d.value.assign(value.begin(), value.begin() + 1);
  return d;
}

} // namespace slope
