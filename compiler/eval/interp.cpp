#include "compiler/eval/interp.hpp"
#include "compiler/support/reduce_order.hpp"

#include "compiler/support/checked.hpp"

#include "compiler/support/power.hpp"
#include "compiler/support/revolve.hpp"
#include "compiler/support/special.hpp"
#include "compiler/support/vmath.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

namespace slope {

using ir::Block;
using ir::Instr;
using ir::Op;

std::string conversionMessage(double v, DType from) {
  if (std::isnan(v)) return "cannot convert NaN to i64";
  char buf[32];
  // The shortest form that reads back as the same value of its dtype.
  auto fmt = std::chars_format::general;
  char* end = from == DType::F32
                  ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(v), fmt).ptr
                  : std::to_chars(buf, buf + sizeof buf, v, fmt).ptr;
  *end = '\0';
  return std::string("cannot convert ") + buf + " to i64: out of range";
}

std::map<std::string, int64_t> bindSizes(const ir::Function& f, const std::vector<Tensor>& ts) {
  std::vector<ArgShape> shapes;
  for (const Tensor& t : ts)
    shapes.push_back({t.dtype(), t.shape()});
  return bindSizes(f, shapes);
}

std::map<std::string, int64_t> bindSizes(const ir::Function& f, const std::vector<ArgShape>& args) {
  auto plural = [](size_t n) { return n == 1 ? " argument" : " arguments"; };
  if (args.size() != f.params.size())
    throw CallError("'" + f.name + "' takes " + std::to_string(f.params.size()) +
                    plural(f.params.size()) + ", got " + std::to_string(args.size()));
  std::map<std::string, int64_t> sizes;
  std::map<std::string, std::string> from;
  // First bind each size name where it stands alone as an extent, then check every extent
  // (cotangent parameters of gradient functions may have computed extents like n - 1).
  for (size_t k = 0; k < args.size(); ++k) {
    const ir::Type& t = f.paramTypes[k];
    const ArgShape& a = args[k];
    const std::string& name = f.paramNames[k];
    if (a.dtype != t.dtype || static_cast<int>(a.shape.size()) != t.rank())
      throw CallError("parameter '" + name + "' must be " + t.str() + ", got " +
                      typeString(a.dtype, a.shape));
    for (int d = 0; d < t.rank(); ++d) {
      int64_t got = a.shape[d];
      if (got < 1)
        throw CallError("parameter '" + name + "' has extent " + std::to_string(got) +
                        " in dimension " + std::to_string(d) + "; extents must be at least 1");
      auto names = t.shape[d].names();
      if (names.size() != 1 || t.shape[d] != Poly::var(names[0])) continue;
      auto it = sizes.find(names[0]);
      if (it == sizes.end()) {
        sizes[names[0]] = got;
        from[names[0]] = name;
      } else if (it->second != got) {
        throw CallError("size '" + names[0] + "' is " + std::to_string(it->second) +
                        " (from parameter '" + from[names[0]] + "') but parameter '" + name +
                        "' has extent " + std::to_string(got) + " in dimension " +
                        std::to_string(d));
      }
    }
  }
  for (size_t k = 0; k < args.size(); ++k) {
    const ir::Type& t = f.paramTypes[k];
    for (int d = 0; d < t.rank(); ++d) {
      auto want = t.shape[d].eval(sizes);
      int64_t got = args[k].shape[d];
      if (want && *want == got) continue;
      throw CallError("parameter '" + f.paramNames[k] + "' must have extent " + t.shape[d].str() +
                      (want && !t.shape[d].isConst() ? " = " + std::to_string(*want) : "") +
                      " in dimension " + std::to_string(d) + ", got " + std::to_string(got));
    }
  }
  return sizes;
}

namespace {

// The operation count (evaluate's opCount, `slopec grad --stats`) counts scalar operations as
// the language spells them: one per instruction run, plus the work an instruction does that
// the language would spell as more operations. Both a compiled gradient and its printed source
// (`--emit slope`) are counted this way, so their counts compare (docs/readable-derivatives.md).

} // namespace

int64_t extraOps(Op op) {
  switch (op) {
  case Op::BufAdd: return 2; // b[i] += v is a load, an add and a store: `b[i] = b[i] + v`
  case Op::Digamma: return kDigammaOps - 1;
  case Op::Trigamma: return kTrigammaOps - 1;
  default: return 0;
  }
}

int64_t stepOps(Op op) {
  switch (op) {
  case Op::ReduceSum:
  case Op::ReduceProd:
  case Op::ReduceMax:
  case Op::ReduceMin: return 1; // acc + x, acc * x, max(acc, x), min(acc, x)
  case Op::ReduceLse: return 2; // s + exp(x - m)
  case Op::ArgMax:              // x > best, then a select of the position
  case Op::ArgMin: return 2;
  default: return 0;
  }
}

namespace {

/// A value: scalars inline, tensors shared (buffers are mutated in place by buf.add).
struct V {
  double f = 0;
  int64_t i = 0;
  std::shared_ptr<Tensor> t;
};

template <class T> T applyUnary(Op op, T x) {
  switch (op) {
  case Op::Neg: return -x;
  case Op::Exp: return vmath::exp(x);
  case Op::Log: return vmath::log(x);
  case Op::Log1p: return vmath::log1p(x);
  case Op::Expm1: return vmath::expm1(x);
  case Op::Sqrt: return std::sqrt(x);
  case Op::Abs: return std::fabs(x);
  case Op::Sin: return vmath::sin(x);
  case Op::Cos: return vmath::cos(x);
  case Op::Tan: return vmath::tan(x);
  case Op::Asin: return vmath::asin(x);
  case Op::Acos: return vmath::acos(x);
  case Op::Atan: return vmath::atan(x);
  case Op::Sinh: return vmath::sinh(x);
  case Op::Cosh: return vmath::cosh(x);
  case Op::Tanh: return vmath::tanh(x);
  case Op::Sigmoid: {
    // Written so that neither branch overflows.
    if (x >= 0) return T(1) / (T(1) + vmath::exp(-x));
    T e = vmath::exp(x);
    return e / (T(1) + e);
  }
  case Op::Relu: return x > 0 ? x : T(0);
  case Op::Softplus: return vmath::log1p(vmath::exp(-std::fabs(x))) + (x > 0 ? x : T(0));
  case Op::Erf: return std::erf(x);
  case Op::Lgamma: {
    int sign; // lgamma_r: the reentrant form (lgamma writes the global signgam), as in the JIT
    if constexpr (std::is_same_v<T, float>)
      return lgammaf_r(x, &sign);
    else
      return lgamma_r(x, &sign);
  }
  case Op::Digamma:
    if constexpr (std::is_same_v<T, float>)
      return digammaf(x);
    else
      return digamma(x);
  case Op::Trigamma:
    if constexpr (std::is_same_v<T, float>)
      return trigammaf(x);
    else
      return trigamma(x);
  case Op::Floor: return std::floor(x);
  case Op::Ceil: return std::ceil(x);
  case Op::Sign: return std::isnan(x) ? x : static_cast<T>((x > 0) - (x < 0));
  default: return x;
  }
}

template <class T> bool compare(Op op, T p, T q) {
  switch (op) {
  case Op::Lt: return p < q;
  case Op::Le: return p <= q;
  case Op::Gt: return p > q;
  case Op::Ge: return p >= q;
  case Op::Eq: return p == q;
  default: return p != q; // Ne: true for NaN, as in C
  }
}

template <class T> T applyBinary(Op op, T a, T b) {
  switch (op) {
  case Op::Add: return a + b;
  case Op::Sub: return a - b;
  case Op::Mul: return a * b;
  case Op::Div: return a / b;
  case Op::Pow: return power(a, b); // (support/power.hpp: the JIT's bits)
  case Op::Atan2: return std::atan2(a, b);
  case Op::Min: return std::isnan(a) || std::isnan(b) ? a + b : (b < a ? b : a);
  case Op::Max: return std::isnan(a) || std::isnan(b) ? a + b : (b > a ? b : a);
  default: return a;
  }
}

class Interp {
public:
  Interp(const ir::Function& f, std::map<std::string, int64_t> sizes)
      : f_(f), sizes_(std::move(sizes)), vals_(f.types.size()) {}

  /// Runs one scalar instruction whose operands are values 0..k-1 (set by the caller).
  bool fold(const Instr& in, const std::vector<Scalar>& args, Scalar& out) {
    for (size_t k = 0; k < args.size(); ++k)
      vals_[k].f = args[k].f, vals_[k].i = args[k].i;
    try {
      step(in);
    } catch (const EvalError&) {
      return false;
    }
    out.f = vals_[in.result].f;
    out.i = vals_[in.result].i;
    return true;
  }

  std::vector<Tensor> run(const std::vector<Tensor>& args) {
    for (size_t k = 0; k < f_.params.size(); ++k)
      vals_[f_.params[k]] = fromTensor(args[k]);
    exec(f_.body);
    std::vector<Tensor> out;
    for (int y : f_.body.yields)
      out.push_back(toTensor(y));
    return out;
  }

private:
  DType dt(int v) const { return f_.types[v].dtype; }

  V fromTensor(const Tensor& t) {
    V v;
    if (t.rank() == 0) {
      v.f = t.getF(0);
      v.i = t.getI(0);
    } else {
      v.t = std::make_shared<Tensor>(t);
    }
    return v;
  }

  Tensor toTensor(int id) {
    const V& v = vals_[id];
    if (v.t) return *v.t;
    Tensor t(dt(id), {});
    if (isFloat(dt(id)))
      t.setF(0, v.f);
    else
      t.setI(0, v.i);
    return t;
  }

  int64_t extent(const Poly& p, SrcRange loc) {
    std::optional<int64_t> e;
    try {
      e = p.eval(sizes_);
    } catch (const checked::SizeError&) {
      throw EvalError(loc, "extent " + p.str() + " overflows i64");
    }
    if (!e) throw EvalError(loc, "internal error: unbound size in " + p.str());
    if (*e < 0 && p.str().find("#trips") != std::string::npos)
      throw EvalError(loc, "the loop's trip count (its upper bound minus its lower bound) "
                           "overflows i64");
    if (*e < 0)
      throw EvalError(loc, "extent " + p.str() + " is negative (" + std::to_string(*e) + ")");
    return *e;
  }
  /// A tensor for instruction `in`, its size checked (compiler/support/checked.hpp).
  std::shared_ptr<Tensor> makeTensor(DType t, const std::vector<int64_t>& shape, const Instr& in) {
    try {
      return std::make_shared<Tensor>(t, shape);
    } catch (const std::length_error& e) {
      throw EvalError(in.loc, (in.name.empty() ? "" : "'" + in.name + "': ") + e.what());
    }
  }

  double roundTo(DType t, double x) const {
    return t == DType::F32 ? static_cast<double>(static_cast<float>(x)) : x;
  }
  static double expT(DType t, double x) {
    return t == DType::F32 ? vmath::exp(static_cast<float>(x)) : vmath::exp(x);
  }
  static double logT(DType t, double x) {
    return t == DType::F32 ? vmath::log(static_cast<float>(x)) : vmath::log(x);
  }

  /// Flat position of a subscript list, range-checked.
  int64_t flat(const Tensor& t, const Instr& in, size_t first, size_t count) {
    int64_t pos = 0;
    for (size_t k = 0; k < count; ++k) {
      int64_t ix = vals_[in.args[first + k]].i;
      int64_t ext = t.shape()[k];
      if (ix < 0 || ix >= ext)
        throw EvalError(in.loc, "index " + std::to_string(ix) + " is out of range for '" +
                                    (in.name.empty() ? std::string("tensor") : in.name) +
                                    "': dimension " + std::to_string(k) + " has extent " +
                                    std::to_string(ext));
      pos = pos * ext + ix;
    }
    return pos;
  }

  /// Runs body for every point of the index space of a region instruction.
  template <class Fn> void loop(const Instr& in, Fn&& body) {
    const Block& r = in.regions[0];
    std::vector<int64_t> ext;
    int64_t total = 1;
    for (const Poly& p : in.extents) {
      ext.push_back(extent(p, in.loc));
      total *= ext.back();
    }
    std::vector<int64_t> idx(ext.size(), 0);
    ops_ += total * stepOps(in.op);
    for (int64_t n = 0; n < total; ++n) {
      for (size_t k = 0; k < idx.size(); ++k)
        vals_[r.args[k]].i = idx[k];
      exec(r);
      if constexpr (std::is_invocable_v<Fn, int64_t, const std::vector<int64_t>&>)
        body(n, idx);
      else
        body(n);
      for (size_t k = idx.size(); k-- > 0;) {
        if (++idx[k] < ext[k]) break;
        idx[k] = 0;
      }
    }
  }

  void exec(const Block& b) {
    for (const Instr& in : b.body)
      step(in);
  }

  void step(const Instr& in) {
    if (in.op != Op::Const && in.op != Op::Size && in.op != Op::Param) ops_ += 1 + extraOps(in.op);
    V out;
    DType t = in.result >= 0 ? dt(in.result) : DType::F64;
    auto a = [&](int k) -> const V& { return vals_[in.args[k]]; };
    switch (ir::opKind(in.op)) {
    case ir::OpKind::Leaf:
      if (in.op == Op::Param) return;
      if (in.op == Op::Const)
        out.f = in.fval, out.i = in.ival;
      else
        out.i = extent(in.poly, in.loc), out.f = static_cast<double>(out.i);
      break;
    case ir::OpKind::Unary: out = unary(in, t); break;
    case ir::OpKind::Binary: out = binary(in, t); break;
    case ir::OpKind::Ternary:
      if (in.op == Op::RevolveNext)
        out.i = revolveNext(a(0).i, a(1).i, a(2).i), out.f = static_cast<double>(out.i);
      else
        out = a(0).i ? a(1) : a(2);
      break;
    case ir::OpKind::Memory: memory(in, out); break;
    case ir::OpKind::Region: region(in, out, t); break;
    }
    if (in.result >= 0) vals_[in.result] = std::move(out);
  }

  V unary(const Instr& in, DType t) {
    V out;
    const V& x = vals_[in.args[0]];
    DType from = dt(in.args[0]);
    if (in.op == Op::Not) {
      out.i = !x.i;
      return out;
    }
    if (in.op == Op::Cast) {
      if (isFloat(t))
        out.f = roundTo(t, isFloat(from) ? x.f : static_cast<double>(x.i));
      else if (t == DType::Bool)
        out.i = isFloat(from) ? x.f != 0 : x.i != 0;
      else if (!isFloat(from))
        out.i = x.i;
      else {
        if (!(std::fabs(x.f) < 9.2e18)) throw EvalError(in.loc, conversionMessage(x.f, from));
        out.i = static_cast<int64_t>(x.f);
      }
      return out;
    }
    if (!isFloat(t)) {
      if (in.op == Op::Neg)
        out.i = static_cast<int64_t>(0ULL - static_cast<uint64_t>(x.i));
      else if (in.op == Op::Abs)
        out.i = x.i < 0 ? static_cast<int64_t>(0ULL - static_cast<uint64_t>(x.i)) : x.i;
      else if (in.op == Op::Sign)
        out.i = (x.i > 0) - (x.i < 0);
      else
        out.i = x.i;
      return out;
    }
    if (t == DType::F32)
      out.f = applyUnary<float>(in.op, static_cast<float>(x.f));
    else
      out.f = applyUnary<double>(in.op, x.f);
    return out;
  }

  V binary(const Instr& in, DType t) {
    V out;
    const V& x = vals_[in.args[0]];
    const V& y = vals_[in.args[1]];
    DType ot = dt(in.args[0]);
    switch (in.op) {
    case Op::Lt:
    case Op::Le:
    case Op::Gt:
    case Op::Ge:
    case Op::Eq:
    case Op::Ne: {
      out.i = isFloat(ot) ? compare(in.op, x.f, y.f) : compare(in.op, x.i, y.i);
      return out;
    }
    case Op::And: out.i = x.i && y.i; return out;
    case Op::Or: out.i = x.i || y.i; return out;
    default: break;
    }
    if (in.op == Op::Powi) {
      if (isFloat(t)) {
        out.f = roundTo(t, power(x.f, static_cast<double>(y.i)));
        return out;
      }
      int64_t base = x.i, e = y.i;
      if (e < 0) {
        if (base == 0) throw EvalError(in.loc, "integer division by zero (0 to a negative power)");
        out.i = base == 1 ? 1 : base == -1 ? (e % 2 ? -1 : 1) : 0;
        return out;
      }
      uint64_t r = 1, bb = static_cast<uint64_t>(base);
      while (e) {
        if (e & 1) r *= bb;
        bb *= bb;
        e >>= 1;
      }
      out.i = static_cast<int64_t>(r);
      return out;
    }
    if (isFloat(t)) {
      if (t == DType::F32)
        out.f = applyBinary<float>(in.op, static_cast<float>(x.f), static_cast<float>(y.f));
      else
        out.f = applyBinary<double>(in.op, x.f, y.f);
      return out;
    }
    // Integers wrap around (two's complement) instead of invoking undefined behaviour.
    uint64_t p = static_cast<uint64_t>(x.i), q = static_cast<uint64_t>(y.i);
    switch (in.op) {
    case Op::Add: out.i = static_cast<int64_t>(p + q); break;
    case Op::Sub: out.i = static_cast<int64_t>(p - q); break;
    case Op::Mul: out.i = static_cast<int64_t>(p * q); break;
    case Op::Div:
    case Op::Mod:
      if (y.i == 0) throw EvalError(in.loc, "integer division by zero");
      if (y.i == -1) {
        out.i = in.op == Op::Div ? static_cast<int64_t>(0 - p) : 0;
      } else {
        // Floor division and the remainder with the divisor's sign (as Python's // and %).
        int64_t d = x.i / y.i, r = x.i % y.i;
        if (r != 0 && (r < 0) != (y.i < 0)) --d, r += y.i;
        out.i = in.op == Op::Div ? d : r;
      }
      break;
    case Op::Min: out.i = std::min(x.i, y.i); break;
    case Op::Max: out.i = std::max(x.i, y.i); break;
    default: out.i = 0;
    }
    return out;
  }

  void memory(const Instr& in, V& out) {
    switch (in.op) {
    case Op::Load: {
      const Tensor& t = *vals_[in.args[0]].t;
      int64_t pos = flat(t, in, 1, in.args.size() - 1);
      out.f = t.getF(pos);
      out.i = t.getI(pos);
      return;
    }
    case Op::Stack: {
      std::vector<int64_t> shape;
      for (const Poly& p : f_.types[in.result].shape)
        shape.push_back(extent(p, in.loc));
      auto t = makeTensor(f_.types[in.result].dtype, shape, in);
      for (size_t k = 0; k < in.args.size(); ++k) {
        if (isFloat(t->dtype()))
          t->setF(static_cast<int64_t>(k), vals_[in.args[k]].f);
        else
          t->setI(static_cast<int64_t>(k), vals_[in.args[k]].i);
      }
      out.t = t;
      return;
    }
    case Op::BufZeros: {
      const ir::Type& ty = f_.types[in.result];
      if (ty.rank() == 0) {
        out.t = std::make_shared<Tensor>(ty.dtype, std::vector<int64_t>{});
        return;
      }
      std::vector<int64_t> shape;
      for (const Poly& p : ty.shape)
        shape.push_back(extent(p, in.loc));
      out.t = makeTensor(ty.dtype, shape, in);
      return;
    }
    case Op::SizeDef: sizes_[in.name] = vals_[in.args[0]].i; return;
    case Op::BufStore: {
      Tensor& t = *vals_[in.args[0]].t;
      int64_t pos = flat(t, in, 1, in.args.size() - 2);
      const V& v = vals_[in.args.back()];
      if (isFloat(t.dtype()))
        t.setF(pos, v.f);
      else
        t.setI(pos, v.i);
      return;
    }
    case Op::BufAdd: {
      Tensor& t = *vals_[in.args[0]].t;
      int64_t pos = flat(t, in, 1, in.args.size() - 2);
      const V& v = vals_[in.args.back()];
      if (t.dtype() == DType::F32)
        t.data<float>()[pos] += static_cast<float>(v.f);
      else
        t.setF(pos, t.getF(pos) + v.f);
      return;
    }
    default: return;
    }
  }

  void region(const Instr& in, V& out, DType t) {
    const Block& r = in.regions.empty() ? f_.body : in.regions[0];
    auto yv = [&]() -> const V& { return vals_[r.yields[0]]; };
    bool fl = isFloat(t);
    switch (in.op) {
    case Op::Comp: {
      std::vector<int64_t> shape;
      for (const Poly& p : in.extents)
        shape.push_back(extent(p, in.loc));
      auto res = makeTensor(t, shape, in);
      loop(in, [&](int64_t n) {
        if (fl)
          res->setF(n, yv().f);
        else
          res->setI(n, yv().i);
      });
      out.t = res;
      return;
    }
    case Op::ReduceSum:
    case Op::ReduceProd: {
      bool sum = in.op == Op::ReduceSum;
      int64_t iacc = sum ? 0 : 1;
      if (!fl) {
        loop(in, [&](int64_t) {
          iacc = static_cast<int64_t>(
              sum ? static_cast<uint64_t>(iacc) + static_cast<uint64_t>(yv().i)
                  : static_cast<uint64_t>(iacc) * static_cast<uint64_t>(yv().i));
        });
        out.i = iacc;
        return;
      }
      // Groups of lanes, in the order compiler/support/reduce_order.hpp defines.
      namespace ro = reduce_order;
      const double id = sum ? 0 : 1;
      auto op = [&](double a, double b) { return roundTo(t, sum ? a + b : a * b); };
      double acc = id, tail = id, lane[ro::kLanes];
      std::fill(lane, lane + ro::kLanes, id);
      int64_t cur = -1; // the group the lanes hold
      const size_t rank = in.extents.size();
      int64_t inner = 1; // the innermost extent
      if (rank > 0) inner = extent(in.extents.back(), in.loc);
      auto flush = [&] {
        if (cur >= 0) acc = op(acc, ro::combineGroup(lane, tail, op));
        std::fill(lane, lane + ro::kLanes, id);
        tail = id;
      };
      loop(in, [&](int64_t, const std::vector<int64_t>& idx) {
        if (rank == 0) {
          acc = op(acc, yv().f);
          return;
        }
        int64_t g = ro::group(idx.front(), rank == 1);
        if (g != cur) flush(), cur = g;
        // The row: for rank 1 the group's elements, else the innermost index's run.
        int64_t j = idx.back(), e = inner;
        if (rank == 1) {
          j -= g * ro::kGroupElems;
          e = std::min(ro::kGroupElems, inner - g * ro::kGroupElems);
        }
        double& l = j >= ro::chunked(e) ? tail : lane[j % ro::kLanes];
        l = op(l, yv().f);
      });
      flush();
      out.f = acc;
      return;
    }
    case Op::ReduceMax:
    case Op::ReduceMin:
    case Op::ArgMax:
    case Op::ArgMin: {
      bool mx = in.op == Op::ReduceMax || in.op == Op::ArgMax;
      double best = mx ? -INFINITY : INFINITY;
      int64_t ibest =
          mx ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
      int64_t at = -1;
      bool nan = false;
      DType bt = dt(r.yields[0]);
      loop(in, [&](int64_t n) {
        if (nan) return;
        if (isFloat(bt)) {
          double v = yv().f;
          if (std::isnan(v)) { // NaN wins, so it is never hidden
            best = v, at = n, nan = true;
          } else if (at < 0 || (mx ? v > best : v < best)) {
            best = v, at = n;
          }
        } else {
          int64_t v = yv().i;
          if (at < 0 || (mx ? v > ibest : v < ibest)) ibest = v, at = n;
        }
      });
      if (in.op == Op::ArgMax || in.op == Op::ArgMin)
        out.i = at;
      else if (fl)
        out.f = best;
      else
        out.i = ibest;
      return;
    }
    case Op::ReduceLse: {
      if (ir::runBodyOnce(r)) {
        // One pass (the JIT's, op for op): a running maximum m and the running sum s of
        // exp(x - m), rescaled by exp(m_old - m_new) when m grows. NaN wins and stays.
        double m = -INFINITY, s = 0;
        loop(in, [&](int64_t) {
          double x = yv().f;
          if (std::isnan(m)) return;
          if (std::isnan(x)) {
            m = x;
          } else if (x > m) {
            s = roundTo(t, roundTo(t, s * roundTo(t, expT(t, roundTo(t, m - x)))) + 1);
            m = x;
          } else if (m != -INFINITY) {
            s = roundTo(t, s + expT(t, roundTo(t, x - m)));
          }
        });
        out.f = std::isfinite(m) ? roundTo(t, m + logT(t, s)) : m;
        return;
      }
      // log(sum(exp(x))) = m + log(sum(exp(x - m))) with m the largest element.
      std::vector<double> xs;
      loop(in, [&](int64_t) { xs.push_back(yv().f); });
      double m = -INFINITY;
      for (double x : xs)
        m = std::max(m, x);
      if (std::isinf(m)) {
        out.f = m;
        for (double x : xs)
          if (std::isnan(x)) out.f = x;
        return;
      }
      if (t == DType::F32) {
        float s = 0, mf = static_cast<float>(m);
        for (double x : xs)
          s += vmath::exp(static_cast<float>(x) - mf);
        out.f = mf + vmath::log(s);
      } else {
        double s = 0;
        for (double x : xs)
          s += vmath::exp(x - m);
        out.f = m + vmath::log(s);
      }
      return;
    }
    case Op::If: {
      const Block& br = vals_[in.args[0]].i ? in.regions[0] : in.regions[1];
      exec(br);
      if (in.result >= 0) out = vals_[br.yields[0]];
      return;
    }
    case Op::For: loop(in, [](int64_t) {}); return;
    case Op::Custom: // the call's own computation; the rule is for autodiff only
      exec(in.regions[0]);
      out = vals_[in.regions[0].yields[0]];
      return;
    default: return;
    }
  }

  const ir::Function& f_;
  std::map<std::string, int64_t> sizes_;
  std::vector<V> vals_;
  int64_t ops_ = 0;

public:
  int64_t ops() const { return ops_; }
};

} // namespace

std::vector<Tensor> evaluate(const ir::Function& f, const std::vector<Tensor>& args,
                             int64_t* opCount) {
  auto sizes = bindSizes(f, args);
  f.deriveSizes(sizes);
  for (const ir::EntryCheck& c : f.entryChecks)
    if (!c.holds(sizes)) throw EvalError(c.loc, c.message(sizes));
  Interp in(f, sizes);
  auto out = in.run(args);
  if (opCount) *opCount = in.ops();
  return out;
}

bool foldConstant(const ir::Function& f, const ir::Instr& in, const std::vector<Scalar>& args,
                  Scalar& out) {
  ir::Function mini;
  ir::Instr c = in;
  c.regions.clear();
  for (size_t k = 0; k < in.args.size(); ++k) {
    mini.types.push_back(f.types[in.args[k]]);
    c.args[k] = static_cast<int>(k);
  }
  mini.types.push_back(f.types[in.result]);
  c.result = static_cast<int>(in.args.size());
  Interp interp(mini, {});
  return interp.fold(c, args, out);
}

ir::Function promoteToF64(const ir::Function& f) {
  ir::Function g = f;
  for (auto& t : g.types)
    if (t.dtype == DType::F32) t.dtype = DType::F64;
  for (auto& t : g.paramTypes)
    if (t.dtype == DType::F32) t.dtype = DType::F64;
  return g;
}

} // namespace slope
