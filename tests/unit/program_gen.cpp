// The random program generator, its printer, the checks and the shrinker (program_gen.hpp).

#include "program_gen.hpp"

#include "checkpoint_budget.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/sparsity.hpp"

#include <cstdlib>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

namespace slope::gen {

namespace {

// Language v3 features, each behind a switch so that a failure can be told apart from the
// rest: broadcasting beyond scalars, and reduction extents that use enclosing indices
// (`sum[k: i + 1]`). (`/` is true division, as v3 says: `(1 + x^2)^(1 / 2)` is a square root.)
constexpr bool kRowBroadcast = true;
constexpr bool kTriangularReductions = true;

// ---------------------------------------------------------------------------------------------
// Templates of elementwise functions, each written to stay in its domain and bounded
// ---------------------------------------------------------------------------------------------

struct Tpl {
  const char* text;
  double weight;
};

// `@` is the operand.
const Tpl kUnary[] = {
    {"sin(@)", 2},
    {"cos(@)", 1},
    {"tanh(@)", 2},
    {"sigmoid(@)", 1.5},
    {"atan(@)", 1},
    {"erf(@)", 1},
    {"softplus(@)", 1},
    {"exp(tanh(@))", 1.5},
    {"exp(-@^2)", 0.7},
    {"log(1.5 + @^2)", 1.5},
    {"sqrt(1 + @^2)", 1},
    {"log1p(@^2)", 0.7},
    {"expm1(tanh(@))", 0.5},
    {"asin(0.9 * tanh(@))", 0.7},
    {"acos(0.9 * tanh(@))", 0.5},
    {"lgamma(2 + @^2)", 0.7},
    {"sinh(tanh(@))", 0.5},
    {"cosh(tanh(@))", 0.5},
    {"tan(0.5 * tanh(@))", 0.5},
    {"@^2", 2},
    {"@^3", 0.7},
    {"(1 + @^2)^-1", 0.7},
    {"(1 + @^2)^0.5", 0.5},
    {"(1 + @^2)^(1 / 2)", 0.5},
    {"(0.5 + @^2)^1.5", 0.5},
    {"2 * @", 1},
    {"0.5 * @", 1},
    {"abs(@)", 0.3},
    {"relu(@)", 0.3},
    {"@ * floor(@)", 0.15},
    {"ceil(@)", 0.1},
    {"sign(@) * @", 0.15},
};

// Bounded, for values that loops carry from one iteration to the next.
const Tpl kBounded[] = {
    {"tanh(@)", 3}, {"sin(@)", 2},   {"sigmoid(@)", 1},      {"erf(@)", 1},
    {"atan(@)", 1}, {"cos(@)", 0.5}, {"0.5 * tanh(@)", 1.5},
};

// `@` and `#` are the operands.
const Tpl kBinary[] = {
    {"@ / (1.5 + #^2)", 2},
    {"pow(1 + @^2, tanh(#))", 1},
    {"atan2(@, 1.5 + #^2)", 0.7},
    {"min(@, #)", 0.5},
    {"max(@, #)", 0.5},
    {"@ * sigmoid(#)", 1},
    {"(@ - #) / (2 + sin(#))", 0.5},
};

// Reductions, and how often full reductions use each (prod's operand is kept near 1).
const char* kReduceOps[] = {"sum", "mean", "max", "min", "logsumexp", "prod"};
const double kReduceW[] = {4, 1.2, 1, 1, 2.5, 0.8};

const char* kCmpOps[] = {"<", ">", "<=", ">="};

bool callShaped(const std::string& t) {
  // a single call `name(...)`: the first '(' closes at the end
  if (t.empty() || !std::isalpha(static_cast<unsigned char>(t[0])) || t.back() != ')') return false;
  size_t open = t.find('(');
  int depth = 0;
  for (size_t i = open; i < t.size(); ++i) {
    if (t[i] == '(') ++depth;
    if (t[i] == ')' && --depth == 0) return i + 1 == t.size();
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

class Printer {
public:
  Printer(const Prog& p, const Function& f) : p_(p), f_(f) {}

  std::string size(int id) const {
    if (id == kLit3) return "3";
    return f_.helper ? (id ? "q" : "p") : (id ? "m" : "n");
  }
  std::string ftype() const { return p_.f32 ? "f32" : "f64"; }
  std::string type(const Ty& t) const {
    std::string s = t.boolean ? "bool" : t.integer ? "i64" : ftype();
    if (t.dims.empty()) return s;
    s += "[";
    for (size_t i = 0; i < t.dims.size(); ++i)
      s += (i ? ", " : "") + size(t.dims[i]);
    return s + "]";
  }
  static std::string lit(double v) {
    std::ostringstream os;
    os << v;
    std::string s = os.str();
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
  }
  std::string base(const IExpr& i) const { return i.var.empty() ? std::to_string(i.lit) : i.var; }
  std::string idx(const IExpr& i) const {
    switch (i.k) {
    case IK::Plain: return base(i);
    case IK::Prev: return base(i) + " - 1";
    case IK::Rev:
      return i.var.empty() && i.lit == 0 ? size(i.size) + " - 1"
                                         : size(i.size) + " - 1 - " + base(i);
    case IK::Mod: return "(" + base(i) + " + 1) % " + size(i.size);
    }
    return "?";
  }
  std::string idxList(const std::vector<IExpr>& v) const {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i)
      s += (i ? ", " : "") + idx(v[i]);
    return s;
  }

  static bool atomic(const Expr& e) {
    switch (e.k) {
    case EK::Name:
    case EK::BoolLit:
    case EK::IndexVal:
    case EK::SizeVal:
    case EK::Sub:
    case EK::Transpose:
    case EK::Reduce:
    case EK::IReduce:
    case EK::Select:
    case EK::Call:
    case EK::VecLit: return true;
    case EK::Lit: return e.lit >= 0;
    case EK::Fill: return e.lit == 1 || e.lit == 0;
    case EK::Un:
    case EK::Two: return callShaped(e.op);
    default: return false;
    }
  }
  std::string atom(const Expr& e) const {
    std::string s = expr(e);
    return atomic(e) ? s : "(" + s + ")";
  }

  /// Whether the binder's extent can be inferred from a plain subscript in e.
  bool infers(const Expr& e, const Binder& b) const {
    if (e.k == EK::Sub) {
      const Ty* t = paramOrLocalType(e.op);
      for (size_t d = 0; d < e.idx.size(); ++d)
        if (e.idx[d].k == IK::Plain && e.idx[d].var == b.name && t &&
            e.idx.size() == t->dims.size() && t->dims[d] == b.size)
          return true;
    }
    for (const Expr& k : e.kids)
      if (infers(k, b)) return true;
    return false;
  }
  std::string binder(const Binder& b, const Expr& body) const {
    if (b.tri) return b.name + ": " + base(b.triBase) + " + 1";
    if (!b.explicitExtent && b.size >= 0 && infers(body, b)) return b.name;
    return b.name + ": " + size(b.size);
  }

  std::string expr(const Expr& e) const {
    switch (e.k) {
    case EK::Name: return e.op;
    case EK::Lit: return lit(e.lit);
    case EK::BoolLit: return e.lit != 0 ? "true" : "false";
    case EK::Fill: {
      Ty t = e.ty;
      std::string s = (e.lit == 0 ? "zeros(" : "ones(") + type(t) + ")";
      return e.lit == 0 || e.lit == 1 ? s : lit(e.lit) + " * " + s;
    }
    case EK::IndexVal: return ftype() + "(" + idx(e.idx[0]) + ")";
    case EK::SizeVal: return size(std::stoi(e.op));
    case EK::Sub: return e.op + "[" + idxList(e.idx) + "]";
    case EK::Un: return subst(e.op, e.kids);
    case EK::Two: return subst(e.op, e.kids);
    case EK::Bin: {
      const Expr &a = e.kids[0], &b = e.kids[1];
      bool assocLeft =
          a.k == EK::Bin &&
          ((e.op == "+" || e.op == "-") ? a.op == "+" || a.op == "-" : a.op == "*" && e.op == "*");
      return (assocLeft ? expr(a) : atom(a)) + " " + e.op + " " + atom(b);
    }
    case EK::MatMul: return atom(e.kids[0]) + " @ " + atom(e.kids[1]);
    case EK::Transpose: return "transpose(" + expr(e.kids[0]) + ")";
    case EK::Reduce: return e.op + "(" + expr(e.kids[0]) + ")";
    case EK::IReduce: {
      std::string s = e.op + "[";
      for (size_t i = 0; i < e.binders.size(); ++i)
        s += (i ? ", " : "") + binder(e.binders[i], e.kids[0]);
      return s + "](" + expr(e.kids[0]) + ")";
    }
    case EK::If:
      return "if " + expr(e.kids[0]) + " { " + expr(e.kids[1]) + " } else { " + expr(e.kids[2]) +
             " }";
    case EK::Select:
      return "select(" + expr(e.kids[0]) + ", " + expr(e.kids[1]) + ", " + expr(e.kids[2]) + ")";
    case EK::Call:
    case EK::VecLit: {
      std::string s = e.k == EK::Call ? e.op + "(" : "[";
      for (size_t i = 0; i < e.kids.size(); ++i)
        s += (i ? ", " : "") + expr(e.kids[i]);
      return s + (e.k == EK::Call ? ")" : "]");
    }
    case EK::Cmp:
    case EK::Logic: return atom(e.kids[0]) + " " + e.op + " " + atom(e.kids[1]);
    case EK::Not: return "!" + atom(e.kids[0]);
    }
    return "?";
  }

  std::string subst(const std::string& t, const std::vector<Expr>& kids) const {
    std::string out;
    for (size_t i = 0; i < t.size(); ++i) {
      char c = t[i];
      if (c != '@' && c != '#') {
        out += c;
        continue;
      }
      const Expr& k = kids[c == '@' ? 0 : 1];
      // a whole argument of a call needs no parentheses
      bool whole = i > 0 && i + 1 < t.size() && (t[i - 1] == '(' || t[i - 1] == ' ') &&
                   (t[i + 1] == ')' || t[i + 1] == ',') &&
                   (t[i - 1] == '(' || (i > 1 && t[i - 2] == ','));
      out += whole ? expr(k) : atom(k);
    }
    return out;
  }

  void stmts(const std::vector<Stmt>& b, int depth, std::string& out) {
    std::string in(4 * depth, ' ');
    for (const Stmt& s : b) {
      switch (s.k) {
      case SK::Let:
        locals_.push_back({s.name, s.value.ty});
        out += in + "let " + s.name + " = " + expr(s.value) + ";\n";
        break;
      case SK::LetComp: {
        std::string head = s.name + "[";
        for (size_t i = 0; i < s.binders.size(); ++i)
          head += (i ? ", " : "") + binder(s.binders[i], s.value);
        Ty t;
        for (const Binder& bd : s.binders)
          t.dims.push_back(bd.size);
        locals_.push_back({s.name, t});
        out += in + "let " + head + "] = " + expr(s.value) + ";\n";
        break;
      }
      case SK::LetTuple:
        out += in + "let (" + s.name + ", " + s.name2 + ") = " + expr(s.value) + ";\n";
        break;
      case SK::Var:
        locals_.push_back({s.name, s.value.ty});
        out += in + "var " + s.name + " = " + expr(s.value) + ";\n";
        break;
      case SK::Assign: out += in + s.name + " = " + expr(s.value) + ";\n"; break;
      case SK::Write:
        out += in + s.name + "[" + idxList(s.idx) + "] = " + expr(s.value) + ";\n";
        break;
      case SK::For: {
        const Binder& b = s.binders[0];
        std::string hi = s.hi == LoopHi::Size  ? size(b.size)
                         : s.hi == LoopHi::Tri ? base(b.triBase)
                                               : "k";
        out += in + "for " + b.name + " in " + std::to_string(b.lo) + ".." + hi + " {\n";
        stmts(s.body, depth + 1, out);
        out += in + "}\n";
        break;
      }
      }
    }
  }

  std::string function() {
    std::string s = "fn " + f_.name + "(";
    for (size_t i = 0; i < f_.params.size(); ++i)
      s += (i ? ", " : "") + f_.params[i].first + ": " + type(f_.params[i].second);
    s += ") -> ";
    if (f_.results.size() == 1)
      s += type(f_.results[0].ty);
    else {
      s += "(";
      for (size_t i = 0; i < f_.results.size(); ++i)
        s += (i ? ", " : "") + type(f_.results[i].ty);
      s += ")";
    }
    s += " {\n";
    stmts(f_.body, 1, s);
    if (f_.results.size() == 1)
      s += "    " + expr(f_.results[0]) + "\n";
    else {
      s += "    (";
      for (size_t i = 0; i < f_.results.size(); ++i)
        s += (i ? ", " : "") + expr(f_.results[i]);
      s += ")\n";
    }
    return s + "}\n";
  }

private:
  const Ty* paramOrLocalType(const std::string& name) const {
    for (const auto& [n, t] : f_.params)
      if (n == name) return &t;
    for (const auto& [n, t] : locals_)
      if (n == name) return &t;
    return nullptr;
  }
  const Prog& p_;
  const Function& f_;
  std::vector<std::pair<std::string, Ty>> locals_;
};

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

struct Scope {
  std::vector<std::pair<std::string, Ty>> names; // readable float values
  std::vector<std::pair<std::string, Ty>> vars;  // assignable
  std::vector<Binder> idx;                       // indices in scope
  std::vector<int> sizes;                        // extents the function may use
  bool hasK = false;                             // an i64 parameter k
  bool helper = false;
  int loopDepth = 0;
};

Expr mk(EK k, Ty t, std::string op = {}, std::vector<Expr> kids = {}) {
  Expr e;
  e.k = k;
  e.ty = std::move(t);
  e.op = std::move(op);
  e.kids = std::move(kids);
  return e;
}
Expr lit(double v) {
  Expr e = mk(EK::Lit, Ty{});
  e.lit = v;
  return e;
}
Ty scalarTy() {
  return Ty{};
}
Ty boolOf(Ty t) {
  t.boolean = true;
  return t;
}

class Gen {
public:
  explicit Gen(uint64_t seed) : rng_(seed * 0x9E3779B97F4A7C15ULL + 7) {}

  Prog program(uint64_t seed) {
    Prog p;
    p.seed = seed;
    p.f32 = chance(0.1);
    p.n = pick(1, 4);
    p.m = pick(1, 3);
    if (chance(0.45)) helper_ = helperFn();
    Function f = mainFn();
    p.fns.push_back(std::move(f));
    if (helper_) p.fns.push_back(*helper_);
    return p;
  }

private:
  // ---- randomness ----
  // Plain arithmetic on mt19937_64's output (the standard's distributions differ between
  // standard libraries): the same programs everywhere.
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  int pick(int lo, int hi) {
    return lo + static_cast<int>(rng_() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(double p) { return uniform() < p; }
  size_t weighted(const std::vector<double>& w) {
    double total = 0;
    for (double x : w)
      total += x;
    double r = uniform() * total;
    for (size_t i = 0; i < w.size(); ++i) {
      if (r < w[i]) return i;
      r -= w[i];
    }
    for (size_t i = w.size(); i-- > 0;)
      if (w[i] > 0) return i;
    return 0;
  }
  template <class T, size_t N> const T& from(const T (&table)[N]) {
    std::vector<double> w;
    for (const T& t : table)
      w.push_back(t.weight);
    return table[weighted(w)];
  }
  double litValue() {
    static const double v[] = {0.5, 0.25, 0.7, 1.5, 2.0, -0.5, 0.1, 3.0, -1.0};
    return v[pick(0, 8)];
  }
  std::string fresh(const char* prefix) { return prefix + std::to_string(++counter_); }
  std::string freshIndex() {
    static const char* names[] = {"i", "j", "l", "r", "u"};
    int c = indexCounter_++;
    return c < 5 ? names[c] : std::string(names[c % 5]) + std::to_string(c / 5);
  }
  std::string freshLoopVar() {
    int c = loopCounter_++;
    return c == 0 ? "t" : "t" + std::to_string(c + 1);
  }

  int randSize(const Scope& s) {
    std::vector<double> w;
    for (int id : s.sizes)
      w.push_back(id == kLit3 ? 0.4 : 1.0);
    return s.sizes[weighted(w)];
  }
  Ty randTensorTy(const Scope& s) {
    Ty t;
    t.dims.push_back(randSize(s));
    if (chance(0.45)) t.dims.push_back(randSize(s));
    return t;
  }
  Ty randTy(const Scope& s) { return chance(0.3) ? scalarTy() : randTensorTy(s); }

  // ---- indices ----
  IExpr plain(const Binder& b) {
    IExpr i;
    i.var = b.name;
    return i;
  }
  IExpr genIdx(int size, const Scope& s) {
    std::vector<double> w;
    std::vector<IExpr> c;
    auto add = [&](IExpr e, double wt) {
      c.push_back(std::move(e));
      w.push_back(wt);
    };
    bool have = false;
    for (const Binder& b : s.idx) {
      if (b.size == size) {
        have = true;
        add(plain(b), 4);
        IExpr r = plain(b);
        r.k = IK::Rev;
        r.size = size;
        add(r, 0.6);
        if (b.lo >= 1) {
          IExpr p = plain(b);
          p.k = IK::Prev;
          add(p, 2.5);
        }
      }
      IExpr m = plain(b);
      m.k = IK::Mod;
      m.size = size;
      add(m, b.size == size ? 0.4 : 0.8);
    }
    add(IExpr{}, have ? 0.6 : 2);
    IExpr last;
    last.k = IK::Rev;
    last.size = size;
    add(last, 0.3); // size - 1
    if (size == kLit3) {
      IExpr one;
      one.lit = pick(1, 2);
      add(one, 0.5);
    }
    return c[weighted(w)];
  }

  // ---- expressions ----
  Expr nameRef(const std::string& n, const Ty& t) { return mk(EK::Name, t, n); }

  Expr fill(const Ty& t) {
    Expr e = mk(EK::Fill, t);
    e.lit = chance(0.5) ? 1 : litValue();
    return e;
  }

  Expr leaf(const Ty& t, Scope& s) {
    std::vector<double> w;
    std::vector<std::function<Expr()>> c;
    auto add = [&](double wt, std::function<Expr()> f) {
      w.push_back(wt);
      c.push_back(std::move(f));
    };
    for (const auto& [n, nt] : s.names) {
      if (nt == t) add(3, [&, n = n, nt = nt] { return nameRef(n, nt); });
      if (t.dims.empty() && !nt.dims.empty())
        add(1.5, [&, n = n, nt = nt] {
          Expr e = mk(EK::Sub, scalarTy(), n);
          for (int d : nt.dims)
            e.idx.push_back(genIdx(d, s));
          return e;
        });
      if (!t.dims.empty() && nt.dims.size() == t.dims.size() + 1 &&
          std::equal(t.dims.begin(), t.dims.end(), nt.dims.begin() + 1))
        add(1.5, [&, n = n, nt = nt] {
          Expr e = mk(EK::Sub, t, n);
          e.idx.push_back(genIdx(nt.dims[0], s));
          return e;
        });
      if (t.dims.size() == 2 && nt.dims.size() == 2 && nt.dims[0] == t.dims[1] &&
          nt.dims[1] == t.dims[0] && t.dims[0] != t.dims[1])
        add(0.7, [&, n = n, nt = nt] { return mk(EK::Transpose, t, "", {nameRef(n, nt)}); });
    }
    if (t.dims.empty()) {
      add(0.4, [&] { return lit(litValue()); });
      if (!s.idx.empty())
        add(0.6, [&] {
          const Binder& b = s.idx[pick(0, static_cast<int>(s.idx.size()) - 1)];
          Expr e = mk(EK::IndexVal, scalarTy());
          e.idx.push_back(plain(b));
          return mk(EK::Bin, scalarTy(), "*", {lit(0.25), e});
        });
    } else {
      // ones scaled by a scalar, or a row broadcast over ones
      add(c.empty() ? 1 : 0.2, [&] {
        Expr o = mk(EK::Fill, t);
        o.lit = 1;
        for (const auto& [n, nt] : s.names)
          if (kRowBroadcast && !nt.dims.empty() && nt.dims.size() < t.dims.size() &&
              std::equal(nt.dims.begin(), nt.dims.end(), t.dims.end() - nt.dims.size()) &&
              chance(0.5))
            return mk(EK::Bin, t, "*", {o, nameRef(n, nt)});
        return mk(EK::Bin, t, "*", {o, leaf(scalarTy(), s)});
      });
    }
    return c[weighted(w)]();
  }

  /// Whether the helper can be called for a result of type t; fills sigma.
  bool callable(const Ty& t, const Scope& s, std::vector<int>& sigma) {
    if (!helper_ || s.helper || helper_->results.size() != 1) return false;
    std::vector<std::vector<int>> ok;
    for (int a : s.sizes)
      for (int b : s.sizes) {
        std::vector<int> sg = {a, b, kLit3};
        Ty r = helper_->results[0].ty;
        for (int& d : r.dims)
          d = sg[d];
        if (r == t) ok.push_back(sg);
      }
    if (ok.empty()) return false;
    sigma = ok[pick(0, static_cast<int>(ok.size()) - 1)];
    return true;
  }
  Expr call(const std::vector<int>& sigma, int d, Scope& s) {
    Expr e = mk(EK::Call, Ty{}, "g");
    for (const auto& [n, t] : helper_->params) {
      Ty a = t;
      for (int& x : a.dims)
        x = sigma[x];
      e.kids.push_back(genF(a, d - 1, s));
    }
    if (helper_->results.size() == 1) {
      e.ty = helper_->results[0].ty;
      for (int& x : e.ty.dims)
        x = sigma[x];
    }
    return e;
  }

  Expr un(const Tpl& t, Expr a) {
    Ty ty = a.ty;
    return mk(EK::Un, ty, t.text, {std::move(a)});
  }
  Expr bounded(Expr a) { return un(from(kBounded), std::move(a)); }

  std::vector<Ty> vectorTys(const Scope& s) {
    std::vector<Ty> v;
    for (int id : s.sizes)
      v.push_back(Ty{false, false, {id}});
    return v;
  }

  Expr ireduce(int d, Scope& s) {
    const char* op = kReduceOps[weighted({4, 1, 1, 1, 2.5, 0.6})];
    Expr e = mk(EK::IReduce, scalarTy(), op);
    Scope in = s;
    int nb = chance(0.2) ? 2 : 1;
    for (int k = 0; k < nb; ++k) {
      Binder b;
      b.name = freshIndex();
      b.explicitExtent = chance(0.5);
      std::vector<const Binder*> triCands;
      for (const Binder& o : s.idx)
        if (o.lo == 0 && o.size >= 0) triCands.push_back(&o);
      if (kTriangularReductions && k == 0 && !triCands.empty() && chance(0.2)) {
        const Binder& o = *triCands[pick(0, static_cast<int>(triCands.size()) - 1)];
        b.tri = true;
        b.triBase = plain(o);
        b.size = o.size;
      } else {
        b.size = randSize(s);
      }
      in.idx.push_back(b);
      e.binders.push_back(b);
    }
    Expr body = genF(scalarTy(), d - 1, in);
    if (e.op == "prod") body = un({"1 + 0.5 * tanh(@)", 1}, std::move(body));
    e.kids.push_back(std::move(body));
    return e;
  }

  Expr genCond(const Ty& t, int d, Scope& s) {
    std::vector<double> w = {4, d > 1 ? 0.6 : 0, 0.3, t.dims.empty() && !s.idx.empty() ? 1.0 : 0};
    switch (weighted(w)) {
    case 1:
      return mk(EK::Logic, boolOf(t), chance(0.5) ? "&&" : "||",
                {genCond(t, d - 1, s), genCond(t, d - 1, s)});
    case 2: return mk(EK::Not, boolOf(t), "", {genCond(t, d - 1, s)});
    case 3: {
      const Binder& b = s.idx[pick(0, static_cast<int>(s.idx.size()) - 1)];
      Expr iv = mk(EK::IndexVal, scalarTy());
      iv.idx.push_back(plain(b));
      const char* ops[] = {"<", ">", "==", "!="};
      return mk(EK::Cmp, boolOf(t), ops[pick(0, 3)], {iv, lit(pick(0, 2))});
    }
    default: {
      Expr a = genF(t, d - 1, s);
      Expr b = chance(0.4) ? lit(litValue()) : genF(chance(0.3) ? scalarTy() : t, d - 1, s);
      return mk(EK::Cmp, boolOf(t), kCmpOps[pick(0, 3)], {std::move(a), std::move(b)});
    }
    }
  }

  Expr genF(const Ty& t, int d, Scope& s) {
    if (d <= 0) return leaf(t, s);
    const bool sc = t.dims.empty(), vec = t.dims.size() == 1, mat = t.dims.size() == 2;
    std::vector<int> sigma;
    const bool canCall = callable(t, s, sigma);
    enum {
      kUn,
      kBin,
      kTwo,
      kNeg,
      kIf,
      kSelect,
      kCall,
      kSizeDiv,
      kLeaf,
      kReduce,
      kIReduce,
      kDot,
      kMatVec,
      kVecLit,
      kMatMat,
      kTranspose,
      kCount
    };
    std::vector<double> w(kCount, 0);
    w[kUn] = 4;
    w[kBin] = 4;
    w[kTwo] = 1.5;
    w[kNeg] = 0.4;
    w[kIf] = 0.6;
    w[kSelect] = 0.6;
    w[kCall] = canCall ? 2.5 : 0;
    w[kSizeDiv] = 0.25;
    w[kLeaf] = 1.2;
    if (sc) {
      w[kReduce] = 3;
      w[kIReduce] = 3;
      w[kDot] = 0.8;
    }
    if (vec) {
      w[kMatVec] = 2;
      w[kVecLit] = t.dims[0] == kLit3 ? 0.8 : 0;
    }
    if (mat) {
      w[kMatMat] = 1.2;
      w[kTranspose] = t.dims[0] != t.dims[1] ? 0.8 : 0.3;
    }
    switch (weighted(w)) {
    case kUn: return un(from(kUnary), genF(t, d - 1, s));
    case kBin: {
      const char* ops[] = {"+", "-", "*"};
      std::string op = ops[weighted({3, 1.5, 3})];
      Ty ta = t, tb = t;
      int v = sc ? 0 : static_cast<int>(weighted({3, 1, 1, mat && kRowBroadcast ? 0.7 : 0}));
      if (v == 1) tb = scalarTy();
      if (v == 2) ta = scalarTy();
      if (v == 3) tb = Ty{false, false, {t.dims[1]}}; // a row broadcast over the rows
      Expr a = genF(ta, d - 1, s), b = v == 1 && chance(0.5) ? lit(litValue()) : genF(tb, d - 1, s);
      return mk(EK::Bin, t, op, {std::move(a), std::move(b)});
    }
    case kTwo: {
      const Tpl& tp = from(kBinary);
      Ty tb = !sc && chance(0.25) && std::string(tp.text).find("min") == std::string::npos &&
                      std::string(tp.text).find("max") == std::string::npos
                  ? scalarTy()
                  : t;
      return mk(EK::Two, t, tp.text, {genF(t, d - 1, s), genF(tb, d - 1, s)});
    }
    case kNeg: return mk(EK::Un, t, "-@", {genF(t, d - 1, s)});
    case kIf:
      return mk(EK::If, t, "",
                {genCond(scalarTy(), d - 1, s), genF(t, d - 1, s), genF(t, d - 1, s)});
    case kSelect:
      return mk(EK::Select, t, "", {genCond(t, d - 1, s), genF(t, d - 1, s), genF(t, d - 1, s)});
    case kCall: return call(sigma, d, s);
    case kSizeDiv: {
      std::vector<int> named;
      for (int id : s.sizes)
        if (id != kLit3) named.push_back(id);
      if (named.empty()) break;
      Expr sz = mk(EK::SizeVal, scalarTy(), std::to_string(named[pick(0, (int)named.size() - 1)]));
      return mk(EK::Bin, t, "/", {genF(t, d - 1, s), sz});
    }
    case kLeaf: break;
    case kReduce: {
      const char* op =
          kReduceOps[weighted(std::vector<double>(std::begin(kReduceW), std::end(kReduceW)))];
      Expr a = genF(randTensorTy(s), d - 1, s);
      if (std::string(op) == "prod") a = un({"1 + 0.5 * tanh(@)", 1}, std::move(a));
      return mk(EK::Reduce, t, op, {std::move(a)});
    }
    case kIReduce: return ireduce(d, s);
    case kDot: {
      auto vs = vectorTys(s);
      Ty v = vs[pick(0, static_cast<int>(vs.size()) - 1)];
      return mk(EK::MatMul, t, "", {genF(v, d - 1, s), genF(v, d - 1, s)});
    }
    case kMatVec: {
      int b = randSize(s);
      Ty A{false, false, {t.dims[0], b}}, v{false, false, {b}};
      if (chance(0.7)) return mk(EK::MatMul, t, "", {genF(A, d - 1, s), genF(v, d - 1, s)});
      Ty At{false, false, {b, t.dims[0]}};
      return mk(EK::MatMul, t, "", {genF(v, d - 1, s), genF(At, d - 1, s)});
    }
    case kVecLit: {
      Expr e = mk(EK::VecLit, t);
      for (int i = 0; i < 3; ++i)
        e.kids.push_back(genF(scalarTy(), d - 1, s));
      return e;
    }
    case kMatMat: {
      int c = randSize(s);
      return mk(EK::MatMul, t, "",
                {genF(Ty{false, false, {t.dims[0], c}}, d - 1, s),
                 genF(Ty{false, false, {c, t.dims[1]}}, d - 1, s)});
    }
    case kTranspose:
      return mk(EK::Transpose, t, "", {genF(Ty{false, false, {t.dims[1], t.dims[0]}}, d - 1, s)});
    }
    return leaf(t, s);
  }

  // ---- statements ----

  /// A value a loop may carry into its next iteration: bounded, or a bounded step.
  Expr carried(const Expr& self, const Ty& t, Scope& s) {
    int d = pick(1, 3);
    switch (weighted({3, 2, 1.5, 0.4})) {
    case 1: return mk(EK::Bin, t, "+", {self, bounded(genF(t, d, s))});
    case 2: return mk(EK::Bin, t, "*", {self, bounded(genF(t, d, s))});
    case 3: return t.dims.empty() ? lit(litValue()) : fill(t);
    default: return bounded(genF(t, d, s));
    }
  }

  Stmt genVar(Scope& s) {
    Stmt st;
    st.k = SK::Var;
    st.name = fresh("w");
    Ty t = chance(0.25) ? scalarTy() : randTensorTy(s);
    std::vector<const std::pair<std::string, Ty>*> same;
    for (const auto& nt : s.names)
      if (nt.second == t) same.push_back(&nt);
    if (!same.empty() && chance(0.5))
      st.value = nameRef(same[pick(0, (int)same.size() - 1)]->first, t);
    else if (chance(0.15))
      st.value = t.dims.empty() ? lit(litValue()) : fill(t);
    else
      st.value = genF(t, pick(1, 3), s);
    s.names.push_back({st.name, t});
    s.vars.push_back({st.name, t});
    return st;
  }

  void genStmt(Scope& s, std::vector<Stmt>& out) {
    bool inLoop = s.loopDepth > 0;
    std::vector<const std::pair<std::string, Ty>*> tensorVars;
    for (const auto& v : s.vars)
      if (!v.second.dims.empty()) tensorVars.push_back(&v);
    bool tupleHelper = helper_ && !s.helper && helper_->results.size() == 2;
    std::vector<double> w = {
        2,                                                 // let
        1.5,                                               // comprehension
        inLoop ? 0.6 : 2,                                  // var
        s.loopDepth < 2 ? (s.loopDepth ? 1.2 : 3.0) : 0.0, // for
        s.vars.empty() ? 0.0 : 3.0,                        // assign
        tensorVars.empty() ? 0.0 : 3.0,                    // element or row write
        tupleHelper ? 1.2 : 0,                             // let (a, b) = g(...)
    };
    Stmt st;
    switch (weighted(w)) {
    case 0: {
      st.k = SK::Let;
      st.name = fresh("e");
      st.value = genF(randTy(s), pick(1, 3), s);
      s.names.push_back({st.name, st.value.ty});
      break;
    }
    case 1: {
      st.k = SK::LetComp;
      st.name = fresh("y");
      Scope in = s;
      Ty t;
      int nb = chance(0.3) ? 2 : 1;
      for (int k = 0; k < nb; ++k) {
        Binder b;
        b.name = freshIndex();
        b.size = randSize(s);
        b.explicitExtent = chance(0.4);
        in.idx.push_back(b);
        st.binders.push_back(b);
        t.dims.push_back(b.size);
      }
      st.value = genF(scalarTy(), pick(1, 3), in);
      s.names.push_back({st.name, t});
      break;
    }
    case 2: st = genVar(s); break;
    case 3: {
      if (s.vars.empty()) out.push_back(genVar(s));
      st.k = SK::For;
      Binder b;
      b.name = freshLoopVar();
      std::vector<const Binder*> tri;
      for (const Binder& o : s.idx)
        if (o.name[0] == 't' && o.size >= 0) tri.push_back(&o);
      int mode = static_cast<int>(weighted({4, tri.empty() ? 0 : 1.2, s.hasK ? 0.8 : 0}));
      if (mode == 1) {
        const Binder& o = *tri[pick(0, (int)tri.size() - 1)];
        st.hi = LoopHi::Tri;
        b.tri = true;
        b.triBase = plain(o);
        b.size = o.size;
      } else if (mode == 2) {
        st.hi = LoopHi::K;
        b.size = -1;
      } else {
        b.size = randSize(s);
        b.lo = chance(0.25) ? 1 : 0;
      }
      st.binders.push_back(b);
      Scope in = s;
      in.idx.push_back(b);
      in.loopDepth++;
      int count = pick(1, 3);
      for (int k = 0; k < count; ++k)
        genStmt(in, st.body);
      break;
    }
    case 4: {
      const auto& [n, t] = s.vars[pick(0, (int)s.vars.size() - 1)];
      st.k = SK::Assign;
      st.name = n;
      if (inLoop)
        st.value = carried(nameRef(n, t), t, s);
      else if (chance(0.15))
        st.value = t.dims.empty() ? lit(litValue()) : fill(t);
      else
        st.value = genF(t, pick(1, 3), s);
      break;
    }
    case 5: {
      const auto& [n, t] = *tensorVars[pick(0, (int)tensorVars.size() - 1)];
      st.k = SK::Write;
      st.name = n;
      size_t k = pick(1, static_cast<int>(t.dims.size()));
      for (size_t d = 0; d < k; ++d)
        st.idx.push_back(genIdx(t.dims[d], s));
      Ty vt;
      vt.dims.assign(t.dims.begin() + k, t.dims.end());
      Expr self = mk(EK::Sub, vt, n);
      self.idx = st.idx;
      if (chance(0.25))
        st.value = vt.dims.empty() ? lit(litValue()) : fill(vt);
      else if (inLoop)
        st.value = carried(self, vt, s);
      else
        st.value = genF(vt, pick(1, 3), s);
      break;
    }
    case 6: {
      st.k = SK::LetTuple;
      st.name = fresh("e");
      st.name2 = fresh("e");
      std::vector<int> sigma;
      std::vector<std::vector<int>> all;
      for (int a : s.sizes)
        for (int b : s.sizes)
          all.push_back({a, b, kLit3});
      sigma = all[pick(0, (int)all.size() - 1)];
      st.value = call(sigma, pick(1, 2), s);
      Ty t0 = helper_->results[0].ty, t1 = helper_->results[1].ty;
      for (int& x : t0.dims)
        x = sigma[x];
      for (int& x : t1.dims)
        x = sigma[x];
      s.names.push_back({st.name, t0});
      s.names.push_back({st.name2, t1});
      break;
    }
    }
    out.push_back(std::move(st));
  }

  /// Terms that read what the body computed, so that its statements matter.
  std::vector<Expr> summaries(const Scope& s, size_t firstLocal) {
    std::vector<Expr> terms;
    for (size_t i = firstLocal; i < s.names.size(); ++i) {
      const auto& [n, t] = s.names[i];
      if (!chance(0.75)) continue;
      Expr e = nameRef(n, t);
      if (chance(0.3)) e = un(from(kUnary), std::move(e));
      if (!t.dims.empty()) {
        const char* op = kReduceOps[weighted({5, 1, 0.7, 0.7, 1.5, 0.3})];
        if (std::string(op) == "prod") e = un({"1 + 0.5 * tanh(@)", 1}, std::move(e));
        e = mk(EK::Reduce, scalarTy(), op, {std::move(e)});
      }
      terms.push_back(std::move(e));
    }
    return terms;
  }
  Expr addAll(Expr e, std::vector<Expr> terms) {
    for (Expr& t : terms) {
      Ty ty = e.ty;
      e = mk(EK::Bin, ty, "+", {std::move(e), std::move(t)});
    }
    return e;
  }

  std::vector<std::pair<std::string, Ty>> params(bool helper, Scope& s) {
    std::vector<std::pair<std::string, Ty>> ps;
    int count = pick(1, helper ? 3 : 4);
    int sc = 0, vc = 0, mc = 0;
    const char* scN[] = {"a", "b", "c", "d"};
    const char* vcN[] = {"x", "y", "z", "v"};
    const char* mcN[] = {"A", "B", "C", "D"};
    const char* hN[] = {"g1", "g2", "g3", "g4"}; // not "u1": an index name (freshIndex)
    std::vector<int> pool = {0, 1, 0, 1, kLit3};
    for (int i = 0; i < count; ++i) {
      Ty t;
      if (i == 0 || chance(0.75)) {
        t.dims.push_back(i == 0 ? pick(0, 1) : pool[pick(0, 4)]);
        if (chance(0.45)) t.dims.push_back(pool[pick(0, 4)]);
      }
      std::string name = helper               ? hN[i]
                         : t.dims.empty()     ? scN[sc++]
                         : t.dims.size() == 1 ? vcN[vc++]
                                              : mcN[mc++];
      ps.push_back({name, t});
    }
    std::set<int> sizes = {kLit3};
    for (const auto& [n, t] : ps)
      for (int d : t.dims)
        sizes.insert(d);
    s.sizes.assign(sizes.begin(), sizes.end());
    for (const auto& p : ps)
      s.names.push_back(p);
    return ps;
  }

  Function helperFn() {
    Function f;
    f.name = "g";
    f.helper = true;
    Scope s;
    s.helper = true;
    s.loopDepth = 1; // loops in the helper are not nested
    f.params = params(true, s);
    s.loopDepth = 0;
    size_t firstLocal = s.names.size();
    int count = pick(0, 2);
    Scope body = s;
    body.loopDepth = 1;
    for (int k = 0; k < count; ++k)
      genStmt(body, f.body);
    // result types use the parameters' sizes only
    std::vector<int> sizes;
    for (int id : s.sizes)
      sizes.push_back(id);
    auto resTy = [&](bool allowScalar) {
      Ty t;
      if (allowScalar && chance(0.5)) return t;
      t.dims.push_back(sizes[pick(0, (int)sizes.size() - 1)]);
      if (chance(0.3)) t.dims.push_back(sizes[pick(0, (int)sizes.size() - 1)]);
      return t;
    };
    std::vector<Ty> rts;
    if (chance(0.3)) {
      rts = {scalarTy(), resTy(false)};
      if (chance(0.5)) std::swap(rts[0], rts[1]);
    } else {
      rts = {resTy(true)};
    }
    for (size_t r = 0; r < rts.size(); ++r) {
      Expr e = genF(rts[r], pick(1, 3), body);
      if (r == 0) {
        std::vector<Expr> terms = summaries(body, firstLocal);
        e = addAll(std::move(e), std::move(terms));
      }
      f.results.push_back(std::move(e));
    }
    return f;
  }

  Function mainFn() {
    Function f;
    f.name = "f";
    Scope s;
    f.params = params(false, s);
    if (chance(0.12)) {
      f.params.push_back({"k", Ty{false, true, {}}});
      s.hasK = true;
      Binder kb;
      kb.name = "k";
      kb.size = -1;
      s.idx.push_back(kb); // usable as `(k + 1) % n` and `f64(k)`
    }
    size_t firstLocal = s.names.size();
    int count = pick(1, 5);
    for (int k = 0; k < count; ++k)
      genStmt(s, f.body);
    double r = uniform();
    Expr scalarRes = addAll(genF(scalarTy(), pick(1, 3), s), summaries(s, firstLocal));
    if (r < 0.8) {
      f.results.push_back(std::move(scalarRes));
    } else {
      Ty t = randTensorTy(s);
      Expr te = genF(t, pick(1, 3), s);
      if (r < 0.9) {
        f.results.push_back(mk(EK::Bin, t, "+", {std::move(te), std::move(scalarRes)}));
      } else {
        f.results.push_back(std::move(scalarRes));
        f.results.push_back(std::move(te));
      }
    }
    return f;
  }

  std::mt19937_64 rng_;
  std::optional<Function> helper_;
  int counter_ = 0, indexCounter_ = 0, loopCounter_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Walking the tree (for the shrinker)
// ---------------------------------------------------------------------------------------------

template <class F> void walkExpr(Expr& e, F&& f) {
  f(e);
  for (Expr& k : e.kids)
    walkExpr(k, f);
}
template <class F> void walkStmtsExprs(std::vector<Stmt>& b, F&& f) {
  for (Stmt& s : b) {
    if (s.k != SK::For) walkExpr(s.value, f);
    walkStmtsExprs(s.body, f);
  }
}
/// Every expression of p, in pre-order (statement values first, then results).
template <class F> void walkExprs(Prog& p, F&& f) {
  for (Function& fn : p.fns) {
    walkStmtsExprs(fn.body, f);
    for (Expr& r : fn.results)
      walkExpr(r, f);
  }
}
template <class F> void walkBlocks(std::vector<Stmt>& b, F&& f) {
  f(b);
  for (Stmt& s : b)
    if (s.k == SK::For) walkBlocks(s.body, f);
}
template <class F> void walkIExprs(Expr& e, F&& f) {
  for (IExpr& i : e.idx)
    f(i);
  for (Binder& b : e.binders)
    if (b.tri) f(b.triBase);
  for (Expr& k : e.kids)
    walkIExprs(k, f);
}
template <class F> void walkIExprs(std::vector<Stmt>& b, F&& f) {
  for (Stmt& s : b) {
    walkIExprs(s.value, f);
    for (IExpr& i : s.idx)
      f(i);
    for (Binder& bd : s.binders)
      if (bd.tri) f(bd.triBase);
    walkIExprs(s.body, f);
  }
}
template <class F> void walkIExprs(Prog& p, F&& f) {
  for (Function& fn : p.fns) {
    walkIExprs(fn.body, f);
    for (Expr& r : fn.results)
      walkIExprs(r, f);
  }
}

int measureExpr(const Expr& e) {
  int m = e.k == EK::Name || e.k == EK::Sub || e.k == EK::IndexVal ? 3 : 2;
  if (e.k == EK::Lit || e.k == EK::Fill || e.k == EK::BoolLit) m = 1;
  for (const IExpr& i : e.idx)
    m += i.k != IK::Plain ? 3 : i.var.empty() ? 1 : 2;
  for (const Binder& b : e.binders)
    m += b.tri ? 2 : 1;
  for (const Expr& k : e.kids)
    m += measureExpr(k);
  return m;
}
int measureStmts(const std::vector<Stmt>& b) {
  int m = 0;
  for (const Stmt& s : b) {
    m += 4 + (s.k == SK::For ? 4 : measureExpr(s.value));
    for (const IExpr& i : s.idx)
      m += i.k != IK::Plain ? 3 : i.var.empty() ? 1 : 2;
    m += measureStmts(s.body);
  }
  return m;
}

/// The simplest expression of a type, or none.
std::optional<Expr> leafOf(const Ty& t) {
  if (t.integer) return std::nullopt;
  if (t.boolean) {
    if (!t.dims.empty()) return std::nullopt;
    Expr e = mk(EK::BoolLit, t);
    e.lit = 1;
    return e;
  }
  if (t.dims.empty()) return lit(0.5);
  Expr e = mk(EK::Fill, t);
  e.lit = 1;
  return e;
}

/// Replacements of e that keep its type, simplest first.
std::vector<Expr> exprOptions(const Expr& e) {
  std::vector<Expr> out;
  if (e.k == EK::Lit || e.k == EK::Fill || e.k == EK::BoolLit) return out;
  if (auto l = leafOf(e.ty)) out.push_back(*l);
  for (const Expr& k : e.kids)
    if (k.ty == e.ty && k.k != EK::SizeVal) out.push_back(k);
  // If and select: the condition made a literal
  if ((e.k == EK::If) && e.kids[0].k != EK::BoolLit)
    for (int v : {1, 0}) {
      Expr c = e;
      c.kids[0] = mk(EK::BoolLit, e.kids[0].ty);
      c.kids[0].lit = v;
      out.push_back(c);
    }
  return out;
}

/// Substitutes the literal `value` for the index `name`.
template <class Node> void substitute(Node& n, const std::string& name, int value) {
  walkIExprs(n, [&](IExpr& i) {
    if (i.var == name) {
      i.var.clear();
      i.lit = value;
    }
  });
}

bool usesName(Prog& p, const std::string& name) {
  bool used = false;
  walkExprs(p, [&](Expr& e) {
    if ((e.k == EK::Name || e.k == EK::Sub) && e.op == name) used = true;
  });
  // assignments and writes to a var count as uses of its declaration
  for (Function& fn : p.fns)
    walkBlocks(fn.body, [&](std::vector<Stmt>& b) {
      for (Stmt& s : b)
        if ((s.k == SK::Assign || s.k == SK::Write) && s.name == name) used = true;
    });
  walkIExprs(p, [&](IExpr& i) {
    if (i.var == name) used = true;
  });
  return used;
}

/// One-step reductions of p, the most promising first, generated lazily.
class Candidates {
public:
  explicit Candidates(const Prog& p) : p_(p) {}

  std::optional<Prog> next() {
    while (stage_ < 7) {
      if (auto c = attempt()) return c;
    }
    return std::nullopt;
  }

private:
  std::optional<Prog> attempt() {
    Prog c = p_;
    int i = pos_++;
    switch (stage_) {
    case 0: // drop the helper
      stage_++, pos_ = 0;
      if (c.fns.size() > 1) {
        c.fns.pop_back();
        return c;
      }
      return std::nullopt;
    case 1: { // drop a statement (one whose name is still used would not compile: skipped)
      int k = 0;
      bool exists = false;
      Stmt dropped;
      for (Function& fn : c.fns)
        walkBlocks(fn.body, [&](std::vector<Stmt>& b) {
          for (size_t s = 0; s < b.size(); ++s)
            if (k++ == i && !exists) {
              exists = true;
              dropped = b[s];
              b.erase(b.begin() + s);
              return;
            }
        });
      if (!exists) break;
      bool binds = dropped.k == SK::Let || dropped.k == SK::LetComp || dropped.k == SK::Var ||
                   dropped.k == SK::LetTuple;
      if (binds &&
          (usesName(c, dropped.name) || (!dropped.name2.empty() && usesName(c, dropped.name2))))
        return std::nullopt;
      return c;
    }
    case 2: { // unwrap a loop: its body once, the loop variable at its first value
      int k = 0;
      bool done = false;
      for (Function& fn : c.fns)
        walkBlocks(fn.body, [&](std::vector<Stmt>& b) {
          for (size_t s = 0; s < b.size() && !done; ++s)
            if (b[s].k == SK::For && k++ == i) {
              Stmt loop = b[s];
              substitute(loop.body, loop.binders[0].name, loop.binders[0].lo);
              b.erase(b.begin() + s);
              b.insert(b.begin() + s, loop.body.begin(), loop.body.end());
              done = true;
            }
        });
      if (!done) break;
      return c;
    }
    case 3: { // drop a result of a tuple; drop an unused parameter
      if (i < 2) {
        if (c.fns[0].results.size() != 2) return std::nullopt;
        c.fns[0].results.erase(c.fns[0].results.begin() + i);
        return c;
      }
      size_t pi = i - 2;
      if (pi >= c.fns[0].params.size()) break;
      std::string name = c.fns[0].params[pi].first;
      if (usesName(c, name)) return std::nullopt;
      c.fns[0].params.erase(c.fns[0].params.begin() + pi);
      return c;
    }
    case 4: { // replace an expression
      int node = i / 8, opt = i % 8, k = 0;
      bool exists = false, done = false;
      walkExprs(c, [&](Expr& e) {
        if (k++ != node || done) return;
        exists = true;
        std::vector<Expr> o = exprOptions(e);
        if (opt < static_cast<int>(o.size())) {
          e = o[opt];
          done = true;
        }
      });
      if (!exists) break;
      if (!done) return std::nullopt;
      return c;
    }
    case 5: { // simplify a subscript
      int node = i / 2, opt = i % 2, k = 0;
      bool exists = false, done = false;
      walkIExprs(c, [&](IExpr& x) {
        if (k++ != node || done) return;
        exists = true;
        if (opt == 0 && x.k != IK::Plain) {
          x.k = IK::Plain;
          done = true;
        } else if (opt == 1 && x.k == IK::Plain && !x.var.empty()) {
          x.var.clear();
          x.lit = 0;
          done = true;
        }
      });
      if (!exists) break;
      if (!done) return std::nullopt;
      return c;
    }
    case 6: { // smaller sizes
      if (i >= 4) break;
      int64_t& v = i % 2 ? c.m : c.n;
      int64_t want = i < 2 ? 1 : v - 1;
      if (want < 1 || want >= v) return std::nullopt;
      v = want;
      return c;
    }
    }
    stage_++;
    pos_ = 0;
    return std::nullopt;
  }

  const Prog& p_;
  int stage_ = 0, pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

bool hasTopLoop(const Prog& p) {
  for (const Function& f : p.fns)
    for (const Stmt& s : f.body)
      if (s.k == SK::For) return true;
  return false;
}

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

/// The cotangents of a VJP (fixed, as in jit_test) appended to args.
std::vector<Tensor> withCotangents(std::vector<Tensor> a, const std::vector<Tensor>& fwd) {
  for (const Tensor& r : fwd)
    if (isFloat(r.dtype()) && !(fwd.size() == 1 && r.rank() == 0)) {
      Tensor w(r.dtype(), r.shape());
      for (int64_t i = 0; i < w.numel(); ++i)
        w.setF(i, 0.5 + 0.25 * static_cast<double>(i % 3));
      a.push_back(w);
    }
  return a;
}

/// A second opinion where checkGradient's fixed step fails: central differences at steps
/// h, h/2, h/4, h/8 (h = 2e-5 max(1, |x|)) extrapolated by Richardson (Romberg's table), so
/// that a steep but smooth function (a loop feeding a value back through sin, say) is not
/// reported. True when the gradient g gives for f at args agrees with the extrapolation, to
/// the dtype's tolerance plus twice the table's own error estimate.
bool richardsonAgrees(const ir::Function& f, const ir::Function& g,
                      const std::vector<Tensor>& args) {
  std::vector<Tensor> fwd = evaluate(f, args);
  std::vector<Tensor> gargs = withCotangents(args, fwd);
  std::vector<Tensor> ad = evaluate(g, gargs);
  const bool scalarLoss = fwd.size() == 1 && fwd[0].rank() == 0;
  ir::Function f64 = promoteToF64(f);
  std::vector<Tensor> xs;
  for (const Tensor& t : args) {
    if (t.dtype() != DType::F32) {
      xs.push_back(t);
      continue;
    }
    Tensor o(DType::F64, t.shape());
    for (int64_t i = 0; i < t.numel(); ++i)
      o.setF(i, t.getF(i));
    xs.push_back(o);
  }
  auto objective = [&]() {
    std::vector<Tensor> r = evaluate(f64, xs);
    if (scalarLoss) return r[0].getF(0);
    double s = 0;
    for (size_t k = 0; k < r.size(); ++k)
      for (int64_t i = 0; i < r[k].numel(); ++i)
        s += gargs[args.size() + k].getF(i) * r[k].getF(i);
    return s;
  };
  size_t gi = fwd.size();
  for (size_t p = 0; p < f.params.size(); ++p) {
    DType dt = f.paramTypes[p].dtype;
    if (!isFloat(dt)) continue;
    auto [rtol, atol] = defaultTolerances(dt);
    const Tensor& grad = ad[gi++];
    for (int64_t i = 0; i < xs[p].numel(); ++i) {
      const double x0 = xs[p].getF(i);
      double h = 2e-5 * std::max(1.0, std::fabs(x0));
      double R[4][4];
      for (int k = 0; k < 4; ++k, h /= 2) {
        xs[p].setF(i, x0 + h);
        double up = objective();
        xs[p].setF(i, x0 - h);
        double dn = objective();
        xs[p].setF(i, x0);
        R[k][0] = (up - dn) / (2 * h);
        for (int j = 1; j <= k; ++j)
          R[k][j] = R[k][j - 1] + (R[k][j - 1] - R[k - 1][j - 1]) / (std::pow(4.0, j) - 1);
      }
      const double est = R[3][3], err = std::fabs(R[3][3] - R[2][2]);
      const double a = grad.getF(i);
      if (!(std::fabs(a - est) <= atol + rtol * std::fabs(est) + 2 * err)) return false;
    }
  }
  return true;
}

} // namespace

const char* verdictName(Verdict v) {
  switch (v) {
  case Verdict::Pass: return "pass";
  case Verdict::Rejected: return "rejected by the compiler (generator bug)";
  case Verdict::Domain: return "values out of range (generator bug)";
  case Verdict::Threw: return "threw";
  case Verdict::JitThrew: return "the JIT threw";
  case Verdict::JitForward: return "JIT value differs from the evaluator";
  case Verdict::JitGradient: return "JIT gradient differs from the evaluator";
  case Verdict::FiniteDifferences: return "gradient differs from finite differences";
  case Verdict::Schedule: return "checkpointed gradient differs from the plain one";
  case Verdict::ForwardMode: return "forward mode (JVP or HVP) differs";
  case Verdict::Crashed: return "crashed";
  }
  return "?";
}

Prog generate(uint64_t seed) {
  return Gen(seed).program(seed);
}

std::string print(const Prog& p) {
  std::string s;
  for (const Function& f : p.fns) {
    if (!s.empty()) s += "\n";
    s += Printer(p, f).function();
  }
  return s;
}

int measure(const Prog& p) {
  int m = static_cast<int>(p.n + p.m);
  for (const Function& f : p.fns) {
    m += 10 + 3 * static_cast<int>(f.params.size()) + measureStmts(f.body);
    for (const Expr& r : f.results)
      m += measureExpr(r);
  }
  return m;
}

Checker::Checker(bool isolate) : isolate_(isolate) {}
Checker::~Checker() = default;

Outcome Checker::check(const Prog& p, Verdict focus) {
  if (!isolate_) return checkHere(p, focus);
  int fds[2];
  if (pipe(fds) != 0) return checkHere(p, focus);
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return checkHere(p, focus);
  }
  if (pid == 0) { // the child: check, send the verdict and its detail, leave without cleanup
    close(fds[0]);
    alarm(60 * SLOPE_TIME_SCALE);
    Outcome o = checkHere(p, focus);
    std::string msg = std::to_string(static_cast<int>(o.v)) + "\n" + o.detail;
    for (size_t done = 0; done < msg.size();) {
      ssize_t w = write(fds[1], msg.data() + done, msg.size() - done);
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t r; (r = read(fds[0], buf, sizeof buf)) > 0;)
    msg.append(buf, static_cast<size_t>(r));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status) || msg.empty()) {
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return {Verdict::Crashed,
            sig == SIGALRM
                ? "timed out (" + std::to_string(60 * SLOPE_TIME_SCALE) + " s)"
                : "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")"};
  }
  size_t nl = msg.find('\n');
  return {static_cast<Verdict>(std::stoi(msg.substr(0, nl))), msg.substr(nl + 1)};
}

Outcome Checker::checkHere(const Prog& p, Verdict focus) {
  const std::string src = print(p);
  auto prog = Program::fromString("gen.slope", src);
  if (!prog->ok()) return {Verdict::Rejected, prog->diagnostics()};
  const bool all = focus == Verdict::Pass;
  const bool f32 = p.f32;
  ir::Function f, g;
  try {
    f = prog->forward("f");
    g = prog->gradient("f", {});
  } catch (const std::exception& e) {
    return {Verdict::Threw, std::string("compiling: ") + e.what()};
  }
  std::map<std::string, int64_t> sizes = {{"n", p.n}, {"m", p.m}};
  const uint64_t argSeed = p.seed * 31 + 5;
  std::vector<Tensor> args = randomArgs(f, sizes, argSeed);
  std::vector<Tensor> fwd, grad, gargs;
  try {
    fwd = evaluate(f, args);
    gargs = withCotangents(args, fwd);
    grad = evaluate(g, gargs);
  } catch (const std::exception& e) {
    return {Verdict::Threw, std::string("evaluator: ") + e.what()};
  }
  // Values that overflow or leave a function's domain: the generator's fault.
  for (const Tensor& t : fwd)
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.getF(i)) || std::fabs(t.getF(i)) > 1e12)
        return {Verdict::Domain, "value " + fmt(t.getF(i))};
  // Values so large, or so steep, that finite differences say little (checked only where
  // they disagree with the gradient).
  auto outOfRange = [&]() -> std::optional<Outcome> {
    for (const Tensor& t : fwd)
      for (int64_t i = 0; i < t.numel(); ++i)
        if (std::fabs(t.getF(i)) > 1e6) return Outcome{Verdict::Domain, "value " + fmt(t.getF(i))};
    for (size_t k = fwd.size(); k < grad.size(); ++k)
      for (int64_t i = 0; i < grad[k].numel(); ++i)
        if (std::fabs(grad[k].getF(i)) > 1e5)
          return Outcome{Verdict::Domain, "gradient " + fmt(grad[k].getF(i))};
    return std::nullopt;
  };

  if (all || focus == Verdict::JitThrew || focus == Verdict::JitForward ||
      focus == Verdict::JitGradient) {
    // Programs of odd seeds run on a JIT whose parallel loops (Loop IR) run their iterations
    // last to first: the results must not change, or a loop called parallel is not.
    bool reversed = p.seed % 2 == 1;
    std::unique_ptr<JitRunner>& jit = reversed ? jitReversed_ : jit_;
    if (!jit || ++uses_ > 40) {
      codegen::JitOptions o;
      o.reverseParallel = reversed;
      jit = std::make_unique<JitRunner>(o);
      uses_ = 0;
    }
    std::vector<Tensor> jf, jg;
    try {
      jf = jit->prepare(f)(args);
      jg = jit->prepare(g)(gargs);
    } catch (const std::exception& e) {
      return {Verdict::JitThrew, e.what()};
    }
    const double tol = f32 ? 1e-5 : 1e-12;
    auto compare = [&](const std::vector<Tensor>& a, const std::vector<Tensor>& b, Verdict v,
                       const char* what) -> std::optional<Outcome> {
      if (a.size() != b.size()) return Outcome{v, "different result counts"};
      for (size_t k = 0; k < a.size(); ++k) {
        if (a[k].shape() != b[k].shape()) return Outcome{v, "different shapes"};
        for (int64_t i = 0; i < a[k].numel(); ++i) {
          double x = a[k].getF(i), y = b[k].getF(i);
          if (std::isnan(x) && std::isnan(y)) continue;
          if (!(std::fabs(x - y) <= tol * std::max({1.0, std::fabs(x), std::fabs(y)})))
            return Outcome{v, std::string(what) + " result " + std::to_string(k) + " element " +
                                  std::to_string(i) + ": JIT " + fmt(x) + ", evaluator " + fmt(y)};
        }
      }
      return std::nullopt;
    };
    if (auto o = compare(jf, fwd, Verdict::JitForward, "forward")) return *o;
    if (auto o = compare(jg, grad, Verdict::JitGradient, "gradient")) return *o;
    // f and g run on `r` give the default JIT's bits; `how` says how r runs them differently.
    auto sameOn = [&](JitRunner& r, const std::string& how) -> std::optional<Outcome> {
      std::vector<Tensor> rf, rg;
      try {
        rf = r.prepare(f)(args);
        rg = r.prepare(g)(gargs);
      } catch (const std::exception& e) {
        return Outcome{Verdict::JitThrew, how + ": " + e.what()};
      }
      for (auto [a, b, v] : {std::tuple{&jf, &rf, Verdict::JitForward},
                             std::tuple{&jg, &rg, Verdict::JitGradient}}) {
        for (size_t k = 0; k < a->size() && k < b->size(); ++k)
          for (int64_t i = 0; i < (*a)[k].numel() && i < (*b)[k].numel(); ++i) {
            double x = (*a)[k].getF(i), y = (*b)[k].getF(i);
            if (std::isnan(x) && std::isnan(y)) continue;
            if (std::memcmp(&x, &y, sizeof x) != 0)
              return Outcome{v, "result " + std::to_string(k) + " element " + std::to_string(i) +
                                    ": " + fmt(x) + " as usual, " + fmt(y) + " " + how};
          }
        if (a->size() != b->size()) return Outcome{v, "different result counts " + how};
      }
      return std::nullopt;
    };
    // Seeds 2 mod 4 run on threads too (2, or 16 for seeds 6 mod 8), every parallel loop on
    // the pool however small: the same bits as on one thread (docs/architecture.md, "Threads").
    if (!reversed && p.seed % 4 == 2) {
      const int which = p.seed % 8 == 6 ? 1 : 0;
      std::unique_ptr<JitRunner>& tj = jitThreads_[which];
      if (!tj || uses_ == 0) {
        codegen::JitOptions o;
        o.threads = which ? 16 : 2;
        o.minParallelWork = 0;
        tj = std::make_unique<JitRunner>(o);
      }
      if (auto o = sameOn(*tj, "on " + std::to_string(which ? 16 : 2) + " threads")) return *o;
    }
    // Every program is compiled at opt level 0 too (Options::opt_level; the first tier of
    // Options::tiered, which every host's calls run before the second): the same bits, since
    // Loop IR fixes every order of operations and compiler/support/power.hpp every power.
    // (Level 0 compiles in about a tenth of the time of level 2.)
    {
      if (!jitLevel0_ || uses_ == 0) {
        codegen::JitOptions o;
        o.optLevel = 0;
        jitLevel0_ = std::make_unique<JitRunner>(o);
      }
      if (auto o = sameOn(*jitLevel0_, "at opt level 0")) return *o;
    }
  }

  if (all || focus == Verdict::FiniteDifferences) {
    // A kink or a branch switching between x - h and x + h can fail one point; a wrong
    // gradient fails (almost) every point: fail only when a second point fails too.
    std::string first;
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::vector<Tensor> a = attempt ? randomArgs(f, sizes, argSeed + 1000) : args;
      GradCheckResult r;
      try {
        r = checkGradient(f, a);
      } catch (const std::exception& e) {
        return {Verdict::Threw, std::string("finite differences: ") + e.what()};
      }
      if (r.passed) break;
      try {
        if (richardsonAgrees(f, g, a)) break;
      } catch (const std::exception& e) {
        return {Verdict::Threw, std::string("finite differences: ") + e.what()};
      }
      std::string d;
      for (const auto& pc : r.params)
        if (!pc.passed)
          d += (d.empty() ? "" : "; ") + std::string("parameter ") + pc.name + ": max abs err " +
               fmt(pc.maxAbsErr) + ", max rel err " + fmt(pc.maxRelErr);
      if (attempt == 0) {
        first = d;
      } else {
        if (auto o = outOfRange()) return *o;
        return {Verdict::FiniteDifferences, first + " (and at a second point: " + d + ")"};
      }
    }
  }

  if (all || focus == Verdict::ForwardMode) {
    // The JVP against the VJP (exact: one failure is enough) and against finite differences,
    // the HVP against differences of the gradient (kinks: fail only when a second point fails
    // too). Seeds 1 mod 4 run them on the JIT, the others on the evaluator.
    std::string first;
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::vector<Tensor> a = attempt ? randomArgs(f, sizes, argSeed + 1000) : args;
      ForwardCheckResult r;
      try {
        GradCheckOptions o;
        o.seed = p.seed;
        if (p.seed % 4 == 1) {
          if (!jitReversed_) {
            codegen::JitOptions jo;
            jo.reverseParallel = true;
            jitReversed_ = std::make_unique<JitRunner>(jo);
          }
          r = checkForward(f, a, o, jitReversed_.get());
        } else {
          r = checkForward(f, a, o);
        }
      } catch (const std::exception& e) {
        return {Verdict::Threw, std::string("forward mode: ") + e.what()};
      }
      if (r.passed || !r.notFinite.empty()) break;
      if (r.exactFailed) return {Verdict::ForwardMode, r.failure};
      if (attempt == 0) {
        first = r.failure;
      } else {
        if (auto o = outOfRange()) return *o;
        return {Verdict::ForwardMode, first + " (and at a second point: " + r.failure + ")"};
      }
    }
  }

  if ((all || focus == Verdict::ForwardMode) && p.seed % 2 == 0) {
    // Sparse Jacobians (even seeds, on the evaluator): every nonzero of the dense Jacobian (a JVP
    // per column) lies in the pattern read off the IR, and the compressed Jacobian (a JVP per
    // colour) has its values.
    try {
      std::vector<std::string> wrt = resolveWrt(f, {});
      std::optional<SparsityPattern> pat =
          wrt.empty() ? std::nullopt : jacobianSparsity(f, args, wrt);
      if (pat && pat->rows > 0 && pat->cols > 0) {
        ir::Function j = jvp(f, wrt);
        simplify(j);
        returnBuffersInPlace(j);
        InterpRunner interp;
        Runnable jvpFn = interp.prepare(j);
        // The compressed one from the batched JVP (3 colours a call), the dense one unbatched.
        ir::Function jb = jvp(f, wrt, 3);
        simplify(jb);
        returnBuffersInPlace(jb);
        DenseDerivative d = denseJacobian(f, wrt, args, "forward", jvpFn, jvpFn);
        SparseJacobian sj = sparseJacobian(f, wrt, args, *pat, Directional(interp.prepare(jb), 3));
        std::vector<double> got = toDense(*pat, sj.values);
        for (int64_t i = 0; i < d.matrix.numel(); ++i) {
          double want = d.matrix.getF(i), have = got[static_cast<size_t>(i)];
          if (std::isnan(want) && std::isnan(have)) continue;
          if (!(std::fabs(want - have) <= 1e-12 * (1 + std::fabs(want))))
            return {Verdict::ForwardMode,
                    "sparse Jacobian entry (" + std::to_string(i / pat->cols) + ", " +
                        std::to_string(i % pat->cols) + "): " + fmt(have) + ", dense " + fmt(want) +
                        " (" + std::to_string(sj.colours) + " colours)"};
        }
        // The same colours through JVPs compiled for them (jvpSeeded, 3 colours a call), where
        // each colour is told by its column's parameter and last index. Structural zeros give
        // 0 where the dense JVP's 0 * inf gives NaN: only finite entries are compared.
        if (std::optional<Seeds> seeds =
                seedsFor(f, wrt, args, sj.colour, static_cast<int>(sj.colours))) {
          Directional sd = seededDirectional(*seeds, sj.colours, 3, [&](const Seeds& s) {
            ir::Function js = jvpSeeded(f, wrt, 3, s);
            simplify(js);
            returnBuffersInPlace(js);
            return [r = interp.prepare(js)](const std::vector<Tensor>& a,
                                            std::vector<Tensor>& out) { out = r(a); };
          });
          SparseJacobian ss = sparseJacobian(f, wrt, args, *pat, sd, false, &sj.colour);
          got = toDense(*pat, ss.values);
          for (int64_t i = 0; i < d.matrix.numel(); ++i) {
            double want = d.matrix.getF(i), have = got[static_cast<size_t>(i)];
            if (!std::isfinite(want)) continue;
            if (!(std::fabs(want - have) <= 1e-12 * (1 + std::fabs(want))))
              return {Verdict::ForwardMode,
                      "sparse Jacobian by seeded JVPs, entry (" + std::to_string(i / pat->cols) +
                          ", " + std::to_string(i % pat->cols) + "): " + fmt(have) + ", dense " +
                          fmt(want) + " (" + std::to_string(sj.colours) + " colours)"};
          }
        }
      }
    } catch (const EvalError&) {
      // (a subscript out of range at these arguments: the checks above report such programs)
    } catch (const std::exception& e) {
      return {Verdict::Threw, std::string("sparse Jacobian: ") + e.what()};
    }
  }

  if ((all || focus == Verdict::Schedule) && hasTopLoop(p)) {
    GradOptions o;
    switch (p.seed % 4) {
    case 0: o.checkpoint = 1; break;
    case 1: o.checkpoint = -1; break;
    case 2: o.snapshots = 2; break;
    default: o.memory = 64; break;
    }
    std::vector<Tensor> r;
    try {
      // (A budget below one state of a loop is an error that states the state's size: then
      // exactly one state.)
      if (o.memory) o = budgetOfAtLeastOneState(*prog, "f", gargs, o.memory);
      r = evaluate(prog->gradient("f", {}, o), gargs);
    } catch (const std::exception& e) {
      return {Verdict::Threw, std::string("checkpointed gradient: ") + e.what()};
    }
    std::string name = o.snapshots ? "revolve:2"
                       : o.memory  ? "memory:" + std::to_string(o.memory)
                                   : "checkpoint " + std::to_string(o.checkpoint);
    for (size_t k = 0; k < grad.size() && k < r.size(); ++k)
      for (int64_t i = 0; i < grad[k].numel(); ++i) {
        double x = grad[k].getF(i), y = r[k].getF(i);
        if (!(x == y || (std::isnan(x) && std::isnan(y))))
          return {Verdict::Schedule, name + ": result " + std::to_string(k) + " element " +
                                         std::to_string(i) + ": " + fmt(y) + ", plain " + fmt(x)};
      }
  }
  return {};
}

Shrunk shrink(const Prog& p, const std::function<bool(const Prog&)>& fails, int maxTries) {
  Shrunk s{p, 0, 0};
  bool progress = true;
  while (progress && s.tries < maxTries) {
    progress = false;
    Candidates cands(s.prog);
    const int size = measure(s.prog);
    while (auto c = cands.next()) {
      if (measure(*c) >= size) continue;
      if (++s.tries > maxTries) break;
      if (fails(*c)) {
        s.prog = std::move(*c);
        s.steps++;
        progress = true;
        break;
      }
    }
  }
  return s;
}

std::string checkSeed(Checker& c, uint64_t seed, Verdict* verdict, bool doShrink) {
  Prog p = generate(seed);
  Outcome o = c.check(p);
  if (verdict) *verdict = o.v;
  if (o.v == Verdict::Pass) return "";
  std::ostringstream os;
  os << "seed " << seed << ": " << verdictName(o.v) << "\n  " << o.detail << "\n";
  if (doShrink && o.v != Verdict::Domain) {
    auto start = std::chrono::steady_clock::now();
    Outcome last = o;
    Shrunk s = shrink(
        p,
        [&](const Prog& q) {
          if (std::chrono::steady_clock::now() - start > std::chrono::seconds(120)) return false;
          Outcome r = c.check(q, o.v);
          if (r.v != o.v) return false;
          last = r;
          return true;
        },
        3000);
    Outcome fin = c.check(s.prog, o.v);
    os << "shrunk in " << s.steps << " steps (" << s.tries << " tries), sizes n = " << s.prog.n
       << ", m = " << s.prog.m << "; it fails with: " << fin.detail << "\n"
       << print(s.prog) << "\n";
  }
  os << "original program (n = " << p.n << ", m = " << p.m << "):\n" << print(p);
  return os.str();
}

int64_t envInt(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoll(v, nullptr, 10) : dflt;
}

} // namespace slope::gen
