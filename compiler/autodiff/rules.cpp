#include "compiler/autodiff/rules.hpp"

#include <array>

namespace slope::ad {
namespace {

using ir::Op;

// Small helpers so that each rule reads like its formula.
struct E {
  RuleCtx& c;
  ir::Builder& b;
  DType t;
  explicit E(RuleCtx& ctx) : c(ctx), b(ctx.b()), t(ctx.b().type(ctx.y()).dtype) {}
  int k(double v) { return b.constant(t, v); }
  int add(int p, int q) { return b.binary(Op::Add, p, q); }
  int sub(int p, int q) { return b.binary(Op::Sub, p, q); }
  int mul(int p, int q) { return b.binary(Op::Mul, p, q); }
  int div(int p, int q) { return b.binary(Op::Div, p, q); }
  int neg(int p) { return b.unary(Op::Neg, p); }
  int un(Op op, int p) { return b.unary(op, p); }
  int sq(int p) { return mul(p, p); }
  int zeroIf(int cond, int v) { return b.select(cond, k(0), v); }
};

void dNeg(RuleCtx& c) {
  E e(c);
  c.acc(0, e.neg(c.g()));
}
// Unary rules run only when their operand is active (the pass skips inactive results), so
// they need no needs() test; binary rules compute only the partials that are wanted.
void dCast(RuleCtx& c) {
  // A conversion between float types passes the adjoint back, converted.
  ir::Builder& b = c.b();
  DType from = b.type(c.x(0)).dtype;
  if (isFloat(from)) c.acc(0, b.cast(c.g(), from));
}
void dExp(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), c.y()));
}
void dLog(RuleCtx& c) {
  E e(c);
  c.acc(0, e.div(c.g(), c.x(0)));
}
void dLog1p(RuleCtx& c) {
  E e(c);
  c.acc(0, e.div(c.g(), e.add(e.k(1), c.x(0))));
}
void dExpm1(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.add(c.y(), e.k(1))));
}
void dSqrt(RuleCtx& c) {
  E e(c);
  c.acc(0, e.div(c.g(), e.mul(e.k(2), c.y())));
}
void dAbs(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Sign, c.x(0))));
}
void dSin(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Cos, c.x(0))));
}
void dCos(RuleCtx& c) {
  E e(c);
  c.acc(0, e.neg(e.mul(c.g(), e.un(Op::Sin, c.x(0)))));
}
void dTan(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.add(e.k(1), e.sq(c.y()))));
}
void dAsin(RuleCtx& c) {
  E e(c);
  c.acc(0, e.div(c.g(), e.un(Op::Sqrt, e.sub(e.k(1), e.sq(c.x(0))))));
}
void dAcos(RuleCtx& c) {
  E e(c);
  c.acc(0, e.neg(e.div(c.g(), e.un(Op::Sqrt, e.sub(e.k(1), e.sq(c.x(0)))))));
}
void dAtan(RuleCtx& c) {
  E e(c);
  c.acc(0, e.div(c.g(), e.add(e.k(1), e.sq(c.x(0)))));
}
void dSinh(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Cosh, c.x(0))));
}
void dCosh(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Sinh, c.x(0))));
}
void dTanh(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.sub(e.k(1), e.sq(c.y()))));
}
void dSigmoid(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.mul(c.y(), e.sub(e.k(1), c.y()))));
}
void dRelu(RuleCtx& c) {
  E e(c);
  int pos = c.b().binary(Op::Gt, c.x(0), e.k(0));
  c.acc(0, c.b().select(pos, c.g(), e.k(0)));
}
void dSoftplus(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Sigmoid, c.x(0))));
}
void dErf(RuleCtx& c) {
  E e(c);
  int x = c.x(0);
  int gauss = e.un(Op::Exp, e.neg(e.sq(x)));
  c.acc(0, e.mul(c.g(), e.mul(e.k(1.1283791670955126), gauss))); // 2/sqrt(pi)
}
void dLgamma(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Digamma, c.x(0))));
}
void dDigamma(RuleCtx& c) {
  E e(c);
  c.acc(0, e.mul(c.g(), e.un(Op::Trigamma, c.x(0))));
}

void dAdd(RuleCtx& c) {
  c.acc(0, c.g());
  c.acc(1, c.g());
}
void dSub(RuleCtx& c) {
  E e(c);
  c.acc(0, c.g());
  if (c.needs(1)) c.acc(1, e.neg(c.g()));
}
void dMul(RuleCtx& c) {
  E e(c);
  if (c.needs(0)) c.acc(0, e.mul(c.g(), c.x(1)));
  if (c.needs(1)) c.acc(1, e.mul(c.g(), c.x(0)));
}
void dDiv(RuleCtx& c) {
  E e(c);
  int gb = e.div(c.g(), c.x(1));
  c.acc(0, gb);
  if (c.needs(1)) c.acc(1, e.neg(e.mul(gb, c.y())));
}
void dPow(RuleCtx& c) {
  // d/da a^b = b a^(b-1) (0 where b = 0); d/db a^b = a^b log a (0 where a = 0).
  E e(c);
  ir::Builder& b = c.b();
  int a = c.x(0), p = c.x(1);
  if (c.needs(0)) {
    int da = e.mul(c.g(), e.mul(p, b.binary(Op::Pow, a, e.sub(p, e.k(1)))));
    c.acc(0, e.zeroIf(b.binary(Op::Eq, p, e.k(0)), da));
  }
  if (c.needs(1)) {
    int db = e.mul(c.g(), e.mul(c.y(), e.un(Op::Log, a)));
    c.acc(1, e.zeroIf(b.binary(Op::Eq, a, e.k(0)), db));
  }
}
void dPowi(RuleCtx& c) {
  // d/dx x^n = n x^(n-1); small constant n are written out (x^2 -> 2x).
  E e(c);
  ir::Builder& b = c.b();
  int x = c.x(0), n = c.x(1);
  const ir::Instr* nc = c.def(1);
  if (nc && nc->op == Op::Const) {
    int64_t v = nc->ival;
    if (v == 0) return;
    if (v == 1) return c.acc(0, c.g());
    if (v == 2) return c.acc(0, e.mul(c.g(), e.mul(e.k(2), x)));
    int nm1 = b.constInt(v - 1);
    return c.acc(0, e.mul(c.g(), e.mul(e.k(static_cast<double>(v)), b.binary(Op::Powi, x, nm1))));
  }
  int nm1 = b.binary(Op::Sub, n, b.constInt(1));
  int d = e.mul(c.g(), e.mul(b.cast(n, e.t), b.binary(Op::Powi, x, nm1)));
  c.acc(0, e.zeroIf(b.binary(Op::Eq, n, b.constInt(0)), d));
}
void dAtan2(RuleCtx& c) {
  // atan2(y, x): d/dy = x / (x^2 + y^2), d/dx = -y / (x^2 + y^2).
  E e(c);
  int y = c.x(0), x = c.x(1);
  int r = e.div(c.g(), e.add(e.sq(x), e.sq(y)));
  if (c.needs(0)) c.acc(0, e.mul(r, x));
  if (c.needs(1)) c.acc(1, e.neg(e.mul(r, y)));
}
void dMinMax(RuleCtx& c) {
  // The adjoint goes to the operand that was chosen, the first one on a tie.
  E e(c);
  ir::Builder& b = c.b();
  Op op = c.instr().op == Op::Max ? Op::Ge : Op::Le;
  int first = b.binary(op, c.x(0), c.x(1));
  if (c.needs(0)) c.acc(0, b.select(first, c.g(), e.k(0)));
  if (c.needs(1)) c.acc(1, b.select(first, e.k(0), c.g()));
}
void dSelect(RuleCtx& c) {
  E e(c);
  ir::Builder& b = c.b();
  if (c.needs(1)) c.acc(1, b.select(c.x(0), c.g(), e.k(0)));
  if (c.needs(2)) c.acc(2, b.select(c.x(0), e.k(0), c.g()));
}

constexpr Rule formula(void (*fn)(RuleCtx&), const char* math) {
  return {RuleKind::Formula, fn, math};
}
constexpr Rule zero(const char* why) {
  return {RuleKind::ZeroDerivative, nullptr, why};
}
constexpr Rule none(const char* why) {
  return {RuleKind::NotDifferentiable, nullptr, why};
}
constexpr Rule structural(const char* math) {
  return {RuleKind::Structural, nullptr, math};
}

Rule entry(Op op) {
  switch (op) {
  case Op::Param: return structural("leaf: the adjoint is a result");
  case Op::Const: return none("constant");
  case Op::Size: return none("integer");
  case Op::Neg: return formula(dNeg, "d(-x) = -g");
  case Op::Not: return none("bool");
  case Op::Cast: return formula(dCast, "dx = g converted back to x's type");
  case Op::Exp: return formula(dExp, "dx = g * exp(x)");
  case Op::Log: return formula(dLog, "dx = g / x");
  case Op::Log1p: return formula(dLog1p, "dx = g / (1 + x)");
  case Op::Expm1: return formula(dExpm1, "dx = g * (expm1(x) + 1)");
  case Op::Sqrt: return formula(dSqrt, "dx = g / (2 sqrt(x))");
  case Op::Abs: return formula(dAbs, "dx = g * sign(x); abs'(0) = 0");
  case Op::Sin: return formula(dSin, "dx = g * cos(x)");
  case Op::Cos: return formula(dCos, "dx = -g * sin(x)");
  case Op::Tan: return formula(dTan, "dx = g * (1 + tan(x)^2)");
  case Op::Asin: return formula(dAsin, "dx = g / sqrt(1 - x^2)");
  case Op::Acos: return formula(dAcos, "dx = -g / sqrt(1 - x^2)");
  case Op::Atan: return formula(dAtan, "dx = g / (1 + x^2)");
  case Op::Sinh: return formula(dSinh, "dx = g * cosh(x)");
  case Op::Cosh: return formula(dCosh, "dx = g * sinh(x)");
  case Op::Tanh: return formula(dTanh, "dx = g * (1 - tanh(x)^2)");
  case Op::Sigmoid: return formula(dSigmoid, "dx = g * s (1 - s), s = sigmoid(x)");
  case Op::Relu: return formula(dRelu, "dx = g if x > 0 else 0; relu'(0) = 0");
  case Op::Softplus: return formula(dSoftplus, "dx = g * sigmoid(x)");
  case Op::Erf: return formula(dErf, "dx = g * 2/sqrt(pi) * exp(-x^2)");
  case Op::Lgamma: return formula(dLgamma, "dx = g * digamma(x)");
  case Op::Digamma: return formula(dDigamma, "dx = g * trigamma(x)");
  case Op::Trigamma: return none("its derivative, tetragamma, is not implemented");
  case Op::Floor: return zero("piecewise constant");
  case Op::Ceil: return zero("piecewise constant");
  case Op::Sign: return zero("piecewise constant");
  case Op::Add: return formula(dAdd, "da = g, db = g");
  case Op::Sub: return formula(dSub, "da = g, db = -g");
  case Op::Mul: return formula(dMul, "da = g b, db = g a");
  case Op::Div: return formula(dDiv, "da = g / b, db = -g a / b^2 = -(g / b) (a / b)");
  case Op::Mod: return none("integer");
  case Op::Pow: return formula(dPow, "da = g b a^(b-1), db = g a^b log(a)");
  case Op::Powi: return formula(dPowi, "dx = g n x^(n-1); n is an integer");
  case Op::Atan2: return formula(dAtan2, "dy = g x / (x^2 + y^2), dx = -g y / (x^2 + y^2)");
  case Op::Min: return formula(dMinMax, "g to the smaller operand, the first on a tie");
  case Op::Max: return formula(dMinMax, "g to the larger operand, the first on a tie");
  case Op::Lt:
  case Op::Le:
  case Op::Gt:
  case Op::Ge:
  case Op::Eq:
  case Op::Ne: return none("comparison: bool result");
  case Op::And:
  case Op::Or: return none("bool");
  case Op::RevolveNext: return none("integer: a checkpointing schedule");
  case Op::Select: return formula(dSelect, "da = g where c, db = g where !c");
  case Op::Load: return structural("gather -> scatter-add: dT[i...] += g");
  case Op::Stack: return structural("dx_k = dT[k]");
  case Op::BufZeros: return structural("a var's memory (or an adjoint accumulator): nothing");
  case Op::BufStore: return structural("var[i] = v: dv += dvar[i], then dvar[i] = 0");
  case Op::SizeDef: return none("integer: a loop's trip count");
  case Op::BufAdd: return none("made only by autodiff");
  case Op::Comp: return structural("for each i: recompute the body, seed its yield with dT[i]");
  case Op::ReduceSum: return structural("each element's adjoint is g");
  case Op::ReduceProd:
    return structural("x_j's adjoint is g prod_{k != j} x_k (g P / x_j when x_j != 0)");
  case Op::ReduceMax: return structural("g to the first maximal element only");
  case Op::ReduceMin: return structural("g to the first minimal element only");
  case Op::ReduceLse:
    return structural("x_j's adjoint is g softmax_j = g exp(x_j - lse) (in f32 divided by the sum "
                      "of those exps, 1 but for lse's rounding)");
  case Op::ArgMax: return none("integer");
  case Op::ArgMin: return none("integer");
  case Op::If: return structural("the adjoint of the taken branch, recomputed");
  case Op::Custom: return structural("the user's rule (@derivative): dx_k += rule_k(x, g)");
  case Op::For:
    return structural("element loops: each iteration reversed; loops with state: backwards, "
                      "restoring the vars from a per-iteration tape");
  }
  return none("unknown");
}

} // namespace

const Rule& ruleFor(ir::Op op) {
  static const auto table = [] {
    std::array<Rule, ir::kNumOps> t{};
    for (int i = 0; i < ir::kNumOps; ++i)
      t[i] = entry(static_cast<Op>(i));
    return t;
  }();
  return table[static_cast<int>(op)];
}

int productOfOthers(ir::Builder& b, int P, int xj, const std::vector<int>& idx,
                    const std::vector<Poly>& extents, DType dt,
                    const std::function<int(const std::vector<int>&)>& elementAt) {
  int nz = b.binary(Op::Ne, xj, b.constant(dt, 0));
  return b.ifElse(
      nz, ir::Type{dt, {}}, [&] { return b.binary(Op::Div, P, xj); },
      [&] {
        int self = b.linearIndex(idx, extents);
        return b.region(Op::ReduceProd, extents, ir::Type{dt, {}}, [&](const std::vector<int>& k) {
          int xk = elementAt(k);
          int same = b.binary(Op::Eq, b.linearIndex(k, extents), self);
          return b.select(same, b.constant(dt, 1), xk);
        });
      });
}

int softmaxNormaliser(ir::Builder& b, int lse, const std::vector<Poly>& extents, DType dt,
                      const std::function<int(const std::vector<int>&)>& elementAt) {
  if (dt != DType::F32) return -1;
  return b.region(Op::ReduceSum, extents, ir::Type{dt, {}}, [&](const std::vector<int>& k) {
    return b.unary(Op::Exp, b.binary(Op::Sub, elementAt(k), lse));
  });
}

} // namespace slope::ad
