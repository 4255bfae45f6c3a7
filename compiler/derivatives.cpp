#include "compiler/derivatives.hpp"

#include <algorithm>
#include <memory>
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
    int64_t count, const std::vector<int64_t>& dirOf, size_t first, std::vector<Tensor>* value,
    const std::function<void(int64_t d0, const std::vector<Tensor>& out)>& takeCall,
    DirectionWork* work) {
  const int64_t K = fn.batch > 0 ? fn.batch : 1;
  DirectionWork own;
  DirectionWork& w = work ? *work : own;
  // A tangent per parameter, its shape ++ [K]: kept from an earlier sequence when it was built
  // for the same directions and still has its parameter's type.
  auto tangentShape = [&](size_t q) {
    std::vector<int64_t> shape = args[wrtParams[q]].shape();
    if (fn.batch > 0) shape.push_back(K);
    return shape;
  };
  if (fn.seeded) w.tangents.clear(); // (its tangents are its code's; it takes none)
  bool keep = fn.seeded || (w.tangents.size() == wrtParams.size() && w.dirOf == dirOf);
  for (size_t q = 0; keep && !fn.seeded && q < wrtParams.size(); ++q)
    keep = w.tangents[q].dtype() == args[wrtParams[q]].dtype() &&
           w.tangents[q].shape() == tangentShape(q);
  if (!keep) {
    w.tangents.clear();
    for (size_t q = 0; q < wrtParams.size(); ++q)
      w.tangents.emplace_back(args[wrtParams[q]].dtype(), tangentShape(q));
    w.dirOf = dirOf;
    w.lanesFor = -1;
  }
  // Results written in place need the shapes an earlier call gave them: those of these
  // arguments' sizes. Where the argument shapes differ, the first call allocates them afresh.
  bool sameShapes = w.argShapes.size() == args.size() && w.batch == fn.batch;
  for (size_t k = 0; sameShapes && k < args.size(); ++k)
    sameShapes = w.argShapes[k] == args[k].shape();
  if (!sameShapes) {
    w.out.clear();
    w.argShapes.clear();
    for (const Tensor& t : args)
      w.argShapes.push_back(t.shape());
    w.batch = fn.batch;
  }
  // fn.run takes the arguments and the tangents in one list: the tangents are lent to it (moved,
  // not copied) for as long as calls go through fn.run, and given back however they end.
  struct Lent {
    std::vector<Tensor>& tangents;
    const std::vector<Tensor>& args;
    std::vector<Tensor> all;
    ~Lent() { giveBack(); }
    Tensor& tangent(size_t q) { return all.empty() ? tangents[q] : all[args.size() + q]; }
    const std::vector<Tensor>& lend() {
      if (all.empty()) {
        all = args;
        for (Tensor& t : tangents)
          all.push_back(std::move(t));
      }
      return all;
    }
    void giveBack() {
      for (size_t q = 0; q < tangents.size() && !all.empty(); ++q)
        tangents[q] = std::move(all[args.size() + q]);
      all.clear();
    }
  } lent{w.tangents, args, {}};
  int64_t calls = 0;
  for (int64_t d0 = 0; d0 < count; d0 += K) {
    if (!fn.seeded && w.lanesFor != d0) {
      // Element col, lane j: 1 where the element's direction is d0 + j (in one lane at most);
      // the lane set for the earlier batch goes back to 0.
      const int64_t before = w.lanesFor;
      size_t col = 0;
      for (size_t q = 0; q < wrtParams.size(); ++q) {
        Tensor& t = lent.tangent(q);
        const int64_t n = args[wrtParams[q]].numel();
        for (int64_t i = 0; i < n; ++i, ++col) {
          const int64_t d = dirOf[col], lane = d - d0, was = d - before;
          if (before >= 0 && was >= 0 && was < K) t.setF(i * K + was, 0);
          if (lane >= 0 && lane < K) t.setF(i * K + lane, 1);
        }
      }
      w.lanesFor = d0;
    }
    const std::vector<Tensor>* out = &w.out;
    std::vector<Tensor> fresh;
    if (fn.seeded) {
      fn.seeded(d0, args, w.out);
    } else if (fn.into && !w.out.empty()) {
      fn.into(args, w.tangents, w.out);
    } else {
      fresh = fn.run(lent.lend());
      if (fn.into) { // the first call: its results are the ones the next calls write in place
        lent.giveBack();
        w.out = std::move(fresh);
      } else {
        out = &fresh;
      }
    }
    if (calls++ == 0 && value) value->assign(out->begin(), out->begin() + static_cast<long>(first));
    takeCall(d0, *out);
  }
  return calls;
}

std::optional<Seeds> seedsFor(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, const std::vector<int64_t>& dirOf,
                              int lanes) {
  Seeds seeds;
  size_t col = 0;
  for (size_t p : wrtParams(f, wrt)) {
    const int64_t n = args[p].numel();
    if (col + static_cast<size_t>(n) > dirOf.size()) return std::nullopt;
    const int64_t* d = dirOf.data() + col;
    col += static_cast<size_t>(n);
    for (int64_t i = 0; i < n; ++i)
      if (d[i] < 0 || d[i] >= lanes) return std::nullopt;
    std::vector<int>& s = seeds[f.paramNames[p]];
    if (n == 0) { // (no element: no lane)
      s = {-1};
      continue;
    }
    if (std::all_of(d, d + n, [&](int64_t x) { return x == d[0]; })) {
      s = {static_cast<int>(d[0])};
      continue;
    }
    const ir::Type& t = f.paramTypes[p];
    std::optional<int64_t> last = t.rank() > 0 ? t.shape.back().constValue() : std::nullopt;
    if (!last || *last < 2 || n % *last != 0) return std::nullopt;
    s.assign(static_cast<size_t>(*last), -1);
    for (int64_t i = 0; i < n; ++i) {
      int& lane = s[static_cast<size_t>(i % *last)];
      if (i < *last)
        lane = static_cast<int>(d[i]);
      else if (lane != d[i])
        return std::nullopt;
    }
  }
  if (col != dirOf.size()) return std::nullopt;
  return seeds;
}

Seeds seedsOfBatch(const Seeds& all, int64_t d0, int64_t batch) {
  Seeds out = all;
  for (auto& [param, lanes] : out)
    for (int& l : lanes)
      l = l >= d0 && l < d0 + batch ? static_cast<int>(l - d0) : -1;
  return out;
}

Directional seededDirectional(const Seeds& all, int64_t count, int64_t batch,
                              const std::function<Directional::SeededRun(const Seeds&)>& compile) {
  auto per = std::make_shared<std::vector<Directional::SeededRun>>();
  for (int64_t d0 = 0; d0 < std::max<int64_t>(count, 1); d0 += batch)
    per->push_back(compile(seedsOfBatch(all, d0, batch)));
  Directional fn(nullptr, batch);
  fn.seeded = [per, batch](int64_t d0, const std::vector<Tensor>& args, std::vector<Tensor>& out) {
    per->at(static_cast<size_t>(d0 / batch))(args, out);
  };
  return fn;
}

int64_t alongDirections(const std::vector<Tensor>& args, const std::vector<size_t>& wrtParams,
                        const Directional& fn, size_t first, std::vector<Tensor>* value,
                        const std::function<void(int64_t c, const std::vector<double>& t)>& take) {
  const int64_t K = fn.batch > 0 ? fn.batch : 1;
  std::vector<int64_t> unit; // column c: direction c
  for (size_t p : wrtParams)
    for (int64_t i = 0; i < args[p].numel(); ++i)
      unit.push_back(static_cast<int64_t>(unit.size()));
  const auto count = static_cast<int64_t>(unit.size());
  std::vector<double> flat;
  // Direction d0 + j's tangents, K apart in each tangent result, flattened.
  auto flatten = [&](int64_t j, const std::vector<Tensor>& out) {
    flat.clear();
    for (size_t q = first; q < out.size(); ++q) {
      const int64_t per = out[q].numel() / K;
      if (out[q].dtype() == DType::F64) {
        const double* x = out[q].data<double>() + j;
        for (int64_t i = 0; i < per; ++i)
          flat.push_back(x[i * K]);
      } else {
        for (int64_t i = 0; i < per; ++i)
          flat.push_back(out[q].getF(i * K + j));
      }
    }
  };
  return alongDirectionBatches(args, wrtParams, fn, count, unit, first, value,
                               [&](int64_t d0, const std::vector<Tensor>& out) {
                                 for (int64_t j = 0; j < K && d0 + j < count; ++j) {
                                   flatten(j, out);
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
    d.calls = alongDirections(args, ps, jvpFn, nres, &d.value,
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
  d.calls = alongDirections(args, ps, hvpFn, 1 + ps.size(), &value,
                            [&](int64_t c, const std::vector<double>& t) {
                              for (int64_t r = 0; r < n; ++r)
                                d.matrix.setF(r * n + c, t[static_cast<size_t>(r)]);
                            });
  d.value.assign(value.begin(), value.begin() + 1);
  return d;
}

} // namespace slope
