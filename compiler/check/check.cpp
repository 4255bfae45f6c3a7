#include "compiler/check/check.hpp"

#include "compiler/ir/builder.hpp"
#include "compiler/support/checked.hpp"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

namespace slope {
namespace {

using ast::Expr;
using ast::ExprKind;
using ir::Op;

// ---------------------------------------------------------------------------------------------
// Types as the checker sees them

/// The type of an expression. `weak` marks an untyped numeric literal (or an expression made
/// only of literals): it takes the float type of whatever it meets, as LANGUAGE.md says.
struct TInfo {
  DType dtype = DType::F64;
  std::vector<Poly> shape;
  bool weak = false;
  bool error = false;       // already reported: stay quiet about follow-up problems
  std::vector<TInfo> tuple; // non-empty for a tuple
  int rank() const { return static_cast<int>(shape.size()); }
  bool isTuple() const { return !tuple.empty(); }
  ir::Type ir() const { return {dtype, shape}; }
  std::string str() const {
    if (isTuple()) {
      std::string s = "(";
      for (size_t i = 0; i < tuple.size(); ++i)
        s += (i ? ", " : "") + tuple[i].str();
      return s + ")";
    }
    return ir().str();
  }
};

TInfo errorType() {
  TInfo t;
  t.error = true;
  return t;
}

TInfo scalarT(DType d, bool weak = false) {
  TInfo t;
  t.dtype = d;
  t.weak = weak;
  return t;
}

bool isNumeric(DType d) {
  return d != DType::Bool;
}

/// Affine form c0 + sum(coeff * index) of an integer expression (LANGUAGE.md, Subscripts).
struct Affine {
  Poly c0;
  std::map<int, int64_t> coeff; // indexId -> coefficient
  bool dependsOnIndices() const {
    for (const auto& [k, c] : coeff)
      if (c != 0) return true;
    return false;
  }
};

/// A name in scope.
struct Sym {
  // Var: a mutable variable (LANGUAGE.md, Loops); `value` is its buffer. Expressions never read
  // the buffer directly: each statement first takes a snapshot of the variables it mentions.
  enum Kind { Val, Size, Index, Var } kind = Val;
  TInfo type;
  int value = -1;           // Val / Index: the IR value (for a view: the base tensor)
  std::vector<int> prefix;  // Val: leading subscripts of a row view `A[i]`
  bool prefixProven = true; // those subscripts were proven in range
  Poly poly;                // Size: the extent; Index: the index's extent
  Poly offset;              // Index of a `for` loop: its first value (t = offset + k)
  int indexId = -1;         // Index: identity, for affine subscript analysis
  std::string srcName;      // what the user called the tensor (run-time messages)
  // Index with a triangular domain (v3): its extent (and a `for` loop's first value) as affine
  // forms over enclosing indices; `poly` is then the size name the extent is bound to.
  std::shared_ptr<const Affine> extA, offA;
};

/// One subscript value handed down to an element load, and whether it is known in range.
struct Ix {
  int value;
  bool proven;
};

const std::map<std::string, Op>& unaryFunctions() {
  static const std::map<std::string, Op> m = {
      {"exp", Op::Exp},         {"log", Op::Log},       {"log1p", Op::Log1p},
      {"expm1", Op::Expm1},     {"sqrt", Op::Sqrt},     {"abs", Op::Abs},
      {"sin", Op::Sin},         {"cos", Op::Cos},       {"tan", Op::Tan},
      {"asin", Op::Asin},       {"acos", Op::Acos},     {"atan", Op::Atan},
      {"sinh", Op::Sinh},       {"cosh", Op::Cosh},     {"tanh", Op::Tanh},
      {"sigmoid", Op::Sigmoid}, {"relu", Op::Relu},     {"softplus", Op::Softplus},
      {"erf", Op::Erf},         {"lgamma", Op::Lgamma}, {"floor", Op::Floor},
      {"ceil", Op::Ceil},       {"sign", Op::Sign}};
  // (digamma is lgamma's derivative in the IR, not a function of the language: LANGUAGE.md.)
  return m;
}

const std::map<std::string, Op>& reductions() {
  // mean is a sum divided by the count; it has no op of its own.
  static const std::map<std::string, Op> m = {
      {"sum", Op::ReduceSum}, {"prod", Op::ReduceProd}, {"max", Op::ReduceMax},
      {"min", Op::ReduceMin}, {"mean", Op::ReduceSum},  {"logsumexp", Op::ReduceLse}};
  return m;
}

bool keepsIntegers(Op op) {
  return op == Op::Abs || op == Op::Sign;
}

/// f32 when a function's float parameters are all f32 (and it has one), else f64.
DType floatTypeOf(const ast::Function& fn) {
  bool any = false, all32 = true;
  for (const auto& p : fn.params) {
    if (p.type.dtype == "f32")
      any = true;
    else if (p.type.dtype == "f64")
      any = true, all32 = false;
  }
  return any && all32 ? DType::F32 : DType::F64;
}

/// Whether a dtype as written in the source is a float one.
bool isFloatName(const std::string& d) {
  return d == "f32" || d == "f64";
}

// ---------------------------------------------------------------------------------------------

/// One lowering of one function body: the top-level function, or an inlined callee.
struct Inst {
  int id;
  const ast::Function* fn;
  bool inlined;
  DType floatType = DType::F64; // f32 when every float parameter is f32: for untyped literals
  std::vector<std::map<std::string, Sym>> scopes;
  std::unordered_map<const Expr*, TInfo> types;
};

class Lowerer {
public:
  /// checkOnly: calls are typed from the callee's signature instead of inlined, since every
  /// function is checked on its own anyway; this keeps checking a file linear in its size.
  Lowerer(const ast::Module& m, DiagSink& d, bool checkOnly,
          const DerivativeSource& derivatives = nullptr)
      : mod_(m), diags_(d), derivatives_(derivatives), checkOnly_(checkOnly) {
    for (const auto& f : m.functions) {
      if (fns_.count(f.name))
        diags_.error(f.nameRange, "function '" + f.name + "' is defined twice");
      else
        fns_[f.name] = &f;
    }
    findRecursion();
    for (const auto& f : m.functions)
      if (!f.derivativeOf.empty() && fns_.count(f.derivativeOf) && !rules_.count(f.derivativeOf))
        rules_[f.derivativeOf] = &f;
    if (checkOnly_) checkRules();
  }

  std::optional<ir::Function> lower(const ast::Function& fn);
  bool inCycle(const std::string& name) const { return recursive_.count(name) > 0; }
  void withoutRules(const std::set<std::string>& plain) { inRule_ = plain; }

private:
  // --- recursion -----------------------------------------------------------------------------
  void findRecursion();
  /// `@derivative(F) fn r(...)`: F exists, has one rule, returns one float value, and r's
  /// signature is F's parameters, then the cotangent of F's result, returning one cotangent
  /// per float parameter of F (README, "User derivative rules").
  void checkRules();
  /// A type as written, blanks removed (the rule's types must be spelled as F's are: they
  /// bind the same size names).
  std::string typeText(const ast::TypeExpr& t) const {
    std::string out;
    for (char c : text(t.range))
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') out += c;
    return out;
  }

  // --- scopes --------------------------------------------------------------------------------
  Inst& inst() { return *stack_.back(); }
  const Sym* lookup(const std::string& name) {
    auto& sc = inst().scopes;
    for (auto it = sc.rbegin(); it != sc.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) {
        if (f->second.kind == Sym::Var) {
          auto snap = snapshots_.find(f->second.value);
          if (snap != snapshots_.end()) return &snap->second;
        }
        return &f->second;
      }
    }
    return nullptr;
  }
  void bind(const std::string& name, Sym s) { inst().scopes.back()[name] = std::move(s); }

  void error(SrcRange r, const std::string& msg) { diags_.error(r, msg); }
  std::string text(SrcRange r) const {
    const std::string& t = diags_.file().text();
    if (r.end <= r.begin || r.end > t.size()) return "";
    return t.substr(r.begin, r.end - r.begin);
  }

  // --- types ---------------------------------------------------------------------------------
  std::optional<TInfo> typeFromAst(const ast::TypeExpr& t, bool paramType,
                                   const std::map<std::string, Poly>* sizes);
  std::optional<Poly> extentOf(const Expr& e);
  std::optional<Poly> extentOfUnchecked(const Expr& e);
  std::optional<ir::Function> lowerChecked(const ast::Function& fn);
  TInfo typeOf(const Expr& e);
  TInfo computeType(const Expr& e);
  TInfo typeCall(const Expr& e);
  /// Where an i64 was needed and e is a float because of a `/` between integers (true
  /// division since v3), the hint to write div(a, b); else "".
  std::string divHint(const Expr& e);
  TInfo typeUserCall(const Expr& e, const ast::Function& callee,
                     std::map<std::string, Poly>* bindingsOut);
  /// `grad(f, wrt...)(args...)`, `jvp(...)(...)`, `hvp(...)(...)`: the result tuple, f's size
  /// bindings and the positions of the parameters differentiated.
  TInfo typeDerivative(const Expr& e, std::map<std::string, Poly>* bindingsOut,
                       std::vector<size_t>* wrtOut);
  TInfo typeReduce(const Expr& e);
  bool unifyArith(const TInfo& a, const TInfo& b, SrcRange where, TInfo& out, bool quiet = false);
  bool broadcast(const std::vector<const TInfo*>& ops, SrcRange where, std::vector<Poly>& shape);
  std::vector<Ix> broadcastIdx(const TInfo& xt, const std::vector<Ix>& idx);
  /// The extents of a comprehension's or reduction's indices. `deps`, for a reduction, receives
  /// the triangular ones (affine in enclosing indices; their Poly is a placeholder); without
  /// it such an extent is an error.
  bool declareIndices(const std::vector<ast::IndexDecl>& decls, const Expr& body,
                      std::vector<Poly>& extents,
                      std::vector<std::shared_ptr<const Affine>>* deps = nullptr);
  std::optional<Poly> inferExtent(const std::string& idx, const Expr& body, SrcRange declRange);
  std::optional<Affine> affine(const Expr& e);
  bool proveSubscript(const Expr& sub, const Poly& extent, const std::string& base, int dim);
  /// Poly::provablyNonNegative, with the sizes that `div(e, k)` extents bind eliminated
  /// through k * div(e, k) <= max(e, 0) < k * (div(e, k) + 1).
  bool provable(const Poly& p);
  /// A dependent (triangular) extent: affine in enclosing indices; nullopt with an error when
  /// the expression is not affine.
  std::optional<Affine> dependentExtent(const Expr& e);
  bool mentionsIndex(const Expr& e);

  // --- emission ------------------------------------------------------------------------------
  DType want(const TInfo& t, DType ctx) const {
    if (t.weak && isFloat(ctx)) return ctx;
    return t.dtype;
  }
  int emitScalar(const Expr& e, DType w) { return emitElem(e, {}, w); }
  int emitElem(const Expr& e, const std::vector<Ix>& idx, DType w);
  int emitElemRaw(const Expr& e, const std::vector<Ix>& idx, DType w);
  int emitCall(const Expr& e, const std::vector<Ix>& idx, DType w);
  int emitReduce(Op op, bool mean, const std::vector<Poly>& extents,
                 const std::function<int(const std::vector<int>&)>& body, DType w, SrcRange loc);
  int loadSym(const Sym& s, const std::vector<Ix>& idx, SrcRange loc);
  Sym materialize(const Expr& e);
  Sym materializeComp(const std::vector<Poly>& shape, DType d,
                      const std::function<int(const std::vector<Ix>&)>& elem);
  void prepare(const Expr& e);
  void hoistInvariant(const Expr& e, std::set<std::string> indices);
  /// A value of type t where checking alone (checkOnly) needs a call's result: this IR is
  /// only checked, never run.
  Sym standIn(const TInfo& t) {
    Sym s;
    s.type = t;
    s.value = t.rank() == 0 ? b_->constant(t.dtype, 0) : b_->bufZeros(t.ir());
    return s;
  }
  Sym inlineCall(const Expr& e, const ast::Function& callee, std::vector<Sym>* tupleOut);
  /// The callee's body lowered here with its parameters bound to args (and its size names to
  /// bindings).
  Sym inlineBody(const ast::Function& callee, std::vector<Sym> args,
                 const std::map<std::string, Poly>& bindings, std::vector<Sym>* tupleOut);
  /// A call of a function with a user derivative rule: a `custom` instruction whose first
  /// region is the call and whose second is the rule, inlined with the same arguments and the
  /// result's cotangent (ops.def).
  Sym inlineWithRule(const ast::Function& callee, const ast::Function& rule, std::vector<Sym> args,
                     const std::map<std::string, Poly>& bindings, const TInfo& rt, SrcRange loc);
  Sym inlineDerivative(const Expr& e, const ast::Function& callee, std::vector<Sym>* tupleOut);
  Sym lowerBlock(const ast::Block& b, std::vector<Sym>* tupleOut);
  bool lowerStmt(const ast::Stmt& s);
  bool lowerStmtAt(const ast::Stmt& s);
  bool lowerStateStmt(const ast::Stmt& s);
  void takeSnapshots(const std::vector<const Expr*>& exprs);
  void storeInto(const Sym& var, const std::vector<Ix>& prefix, const Expr& value, SrcRange loc);
  int yieldValue(const Sym& s, DType w);

  using PreKey = std::pair<int, const Expr*>;
  const ast::Module& mod_;
  DiagSink& diags_;
  DerivativeSource derivatives_;
  int splices_ = 0; // derivatives inlined so far: a suffix for the size names each binds
  std::map<std::string, const ast::Function*> fns_;
  std::set<std::string> recursive_;
  std::map<std::string, const ast::Function*> rules_; // F -> its `@derivative(F)` rule
  std::set<std::string> inRule_; // F whose rule is being inlined: F's calls there are plain
  std::vector<std::unique_ptr<Inst>> stack_;
  std::unique_ptr<ir::Builder> b_;
  ir::Function* f_ = nullptr;
  std::map<PreKey, Sym> pre_;           // values computed ahead of a region (hoisted out of it)
  std::map<PreKey, bool> proven_;       // subscripts proven in range at compile time
  std::map<int, Sym> snapshots_;        // var buffer -> its value as of the current statement
  std::map<int, std::string> varNames_; // var buffer -> the variable's name
  int exprNesting_ = 0;                 // > 0 while lowering a statement's expressions
  int conditional_ = 0; // > 0 inside an if branch or a loop with data-dependent bounds: code
                        // that may not run, so its subscripts get no entry checks
  std::map<std::string, std::pair<Poly, int64_t>> divSizes_; // `div(e, k)` extents: e, k
  std::vector<ir::EntryCheck> entryChecks_;

  /// A statement reads the vars as they are when it starts: fresh snapshots at statement
  /// level, the enclosing statement's inside an expression's blocks.
  struct StatementScope {
    Lowerer& l;
    bool outer;
    std::map<int, Sym> saved;
    explicit StatementScope(Lowerer& lw)
        : l(lw), outer(lw.exprNesting_ == 0), saved(lw.snapshots_) {
      if (outer) l.snapshots_.clear();
      ++l.exprNesting_;
    }
    ~StatementScope() {
      --l.exprNesting_;
      if (outer)
        l.snapshots_.clear();
      else
        l.snapshots_ = saved;
    }
  };
  int nextInst_ = 0;
  int nextIndex_ = 0;
  int64_t nextStore_ = 0; // tags each var write (Instr::ival) for reverse mode
  bool checkOnly_ = false;
};

// ---------------------------------------------------------------------------------------------
// Recursion: a depth-first search over the call graph; the call that closes a cycle is
// reported with the whole cycle.

void collectCalls(const ast::Block& b, std::vector<const Expr*>& out);
void collectCalls(const Expr* e, std::vector<const Expr*>& out) {
  if (!e) return;
  if (e->kind == ExprKind::Call) out.push_back(e);
  for (const auto& a : e->args)
    collectCalls(a.get(), out);
  collectCalls(e->base.get(), out);
  collectCalls(e->cond.get(), out);
  if (e->thenBlock) collectCalls(*e->thenBlock, out);
  if (e->elseBlock) collectCalls(*e->elseBlock, out);
  for (const auto& d : e->indices)
    collectCalls(d.extent.get(), out);
}
void collectCalls(const ast::Block& b, std::vector<const Expr*>& out) {
  for (const auto& s : b.stmts) {
    collectCalls(s.value.get(), out);
    collectCalls(s.lo.get(), out);
    collectCalls(s.hi.get(), out);
    for (const auto& x : s.subscripts)
      collectCalls(x.get(), out);
    for (const auto& d : s.indices)
      collectCalls(d.extent.get(), out);
    if (s.body) collectCalls(*s.body, out);
  }
  collectCalls(b.result.get(), out);
}

void Lowerer::findRecursion() {
  std::map<std::string, int> state; // 0 new, 1 on stack, 2 done
  std::vector<std::string> path;
  std::function<void(const std::string&)> dfs = [&](const std::string& name) {
    state[name] = 1;
    path.push_back(name);
    std::vector<const Expr*> calls;
    collectCalls(fns_[name]->body, calls);
    for (const Expr* c : calls) {
      if (!fns_.count(c->name)) continue;
      if (state[c->name] == 1) {
        std::string cycle;
        bool on = false;
        for (const auto& p : path) {
          if (p == c->name) on = true;
          if (on) {
            cycle += p + " -> ";
            recursive_.insert(p);
          }
        }
        error(c->nameRange, "recursive call: " + cycle + c->name + " (recursion is not allowed)");
      } else if (state[c->name] == 0) {
        dfs(c->name);
      }
    }
    path.pop_back();
    state[name] = 2;
  };
  for (const auto& f : mod_.functions)
    if (fns_.count(f.name) && fns_[f.name] == &f && state[f.name] == 0) dfs(f.name);
}

void Lowerer::checkRules() {
  std::map<std::string, const ast::Function*> first;
  for (const auto& r : mod_.functions) {
    if (r.derivativeOf.empty()) continue;
    const std::string& of = r.derivativeOf;
    const SrcRange at = r.derivativeOfRange;
    auto found = fns_.find(of);
    if (found == fns_.end()) {
      error(at, "@derivative: there is no function '" + of + "' in this file");
      continue;
    }
    if (of == r.name) {
      error(at, "@derivative: '" + of + "' cannot be its own derivative rule");
      continue;
    }
    if (!first.emplace(of, &r).second) {
      error(at, "'" + of + "' already has a derivative rule, '" + first[of]->name +
                    "'; a function has at most one");
      continue;
    }
    const ast::Function& f = *found->second;
    if (f.result.isTuple() || !isFloatName(f.result.dtype)) {
      error(at, "@derivative needs '" + of +
                    "' to return one float value (a scalar or a tensor); "
                    "it returns " +
                    typeText(f.result));
      continue;
    }
    std::vector<size_t> floats;
    std::string want; // the rule's result type, as it must be written
    for (size_t k = 0; k < f.params.size(); ++k)
      if (isFloatName(f.params[k].type.dtype)) {
        floats.push_back(k);
        want += (want.empty() ? "" : ", ") + typeText(f.params[k].type);
      }
    if (floats.empty()) {
      error(at, "@derivative: '" + of + "' has no float parameter to differentiate");
      continue;
    }
    if (floats.size() > 1) want = "(" + want + ")";
    std::string sig = "a rule of '" + of + "' takes its " + std::to_string(f.params.size()) +
                      " parameter" + (f.params.size() == 1 ? "" : "s") +
                      ", then the cotangent of its result (" + typeText(f.result) + ")";
    if (r.params.size() != f.params.size() + 1) {
      error(r.nameRange, sig + ": " + std::to_string(f.params.size() + 1) + " parameters, '" +
                             r.name + "' has " + std::to_string(r.params.size()));
      continue;
    }
    bool ok = true;
    for (size_t k = 0; k < f.params.size() && ok; ++k)
      if (typeText(r.params[k].type) != typeText(f.params[k].type)) {
        error(r.params[k].type.range,
              "parameter " + std::to_string(k + 1) + " of rule '" + r.name + "' must be " +
                  typeText(f.params[k].type) + ", as '" + f.params[k].name + "' of '" + of +
                  "' is (written the same way: it binds the same sizes), got " +
                  typeText(r.params[k].type));
        ok = false;
      }
    if (!ok) continue;
    if (typeText(r.params.back().type) != typeText(f.result)) {
      error(r.params.back().type.range, "the last parameter of rule '" + r.name +
                                            "' is the cotangent of '" + of +
                                            "''s result: it must be " + typeText(f.result) +
                                            ", got " + typeText(r.params.back().type));
      continue;
    }
    std::string got = typeText(r.result), wantBare = want;
    wantBare.erase(std::remove(wantBare.begin(), wantBare.end(), ' '), wantBare.end());
    if (got != wantBare) {
      std::string names;
      for (size_t k : floats)
        names += (names.empty() ? "" : ", ") + f.params[k].name;
      error(r.result.range, "rule '" + r.name +
                                "' must return one cotangent per float parameter of '" + of +
                                "' (" + names + "): " + want + ", got " + got);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Types written in the source

std::optional<Poly> Lowerer::extentOf(const Expr& e) {
  try {
    return extentOfUnchecked(e);
  } catch (const checked::SizeError&) {
    error(e.range, "this extent overflows i64");
    return std::nullopt;
  }
}

std::optional<Poly> Lowerer::extentOfUnchecked(const Expr& e) {
  switch (e.kind) {
  case ExprKind::Number:
    if (!e.isInt) break;
    return Poly(e.ival);
  case ExprKind::Name: {
    const Sym* s = lookup(e.name);
    if (s && s->kind == Sym::Size) return s->poly;
    if (!s)
      error(e.range, "unknown size '" + e.name + "'");
    else
      error(e.range, "'" + e.name +
                         "' is not a size: an extent is built from sizes, integer "
                         "literals, + - * and div(e, k) by a positive literal");
    return std::nullopt;
  }
  case ExprKind::Binary: {
    if (e.name != "+" && e.name != "-" && e.name != "*") break;
    auto a = extentOf(*e.args[0]);
    auto b = extentOf(*e.args[1]);
    if (!a || !b) return std::nullopt;
    return e.name == "+" ? *a + *b : e.name == "-" ? *a - *b : *a * *b;
  }
  case ExprKind::Unary:
    if (e.name == "-")
      if (auto a = extentOf(*e.args[0])) return -*a;
    return std::nullopt;
  case ExprKind::Call: {
    // div(e, k) by a positive literal (v3): a size computed on entry, max(e, 0) / k rounded
    // down, named by its own text so that equal extents compare equal.
    if (e.name != "div" || e.args.size() != 2) break;
    const Expr& k = *e.args[1];
    if (k.kind != ExprKind::Number || !k.isInt || k.ival < 1) {
      error(k.range, "div in an extent divides by a positive integer literal");
      return std::nullopt;
    }
    auto a = extentOf(*e.args[0]);
    if (!a) return std::nullopt;
    for (const std::string& n : a->names())
      if (n.find('#') != std::string::npos) {
        error(e.args[0]->range,
              "div in an extent takes sizes, not values computed in the function");
        return std::nullopt;
      }
    if (a->isConst()) return Poly(std::max<int64_t>(*a->constValue(), 0) / k.ival);
    std::string name = "div(" + a->str() + ", " + std::to_string(k.ival) + ")";
    if (!divSizes_.count(name)) {
      divSizes_[name] = {*a, k.ival};
      if (f_) f_->derived.push_back({ir::DerivedSize::FloorDiv, name, *a, Poly(k.ival), Poly(0)});
    }
    return Poly::var(name);
  }
  default: break;
  }
  error(e.range, "an extent is built from sizes, integer literals, + - * and div(e, k) by a "
                 "positive literal");
  return std::nullopt;
}

std::optional<TInfo> Lowerer::typeFromAst(const ast::TypeExpr& t, bool paramType,
                                          const std::map<std::string, Poly>* sizes) {
  if (t.isTuple()) {
    TInfo out;
    for (const auto& el : t.elements) {
      if (el.isTuple()) {
        error(el.range, "tuples cannot be nested");
        return std::nullopt;
      }
      auto e = typeFromAst(el, paramType, sizes);
      if (!e) return std::nullopt;
      out.tuple.push_back(*e);
    }
    return out;
  }
  TInfo out;
  if (t.dtype == "f64")
    out.dtype = DType::F64;
  else if (t.dtype == "f32")
    out.dtype = DType::F32;
  else if (t.dtype == "i64")
    out.dtype = DType::I64;
  else if (t.dtype == "bool")
    out.dtype = DType::Bool;
  else {
    error(t.range, "unknown type '" + t.dtype + "' (expected f64, f32, i64 or bool)");
    return std::nullopt;
  }
  if (t.hasShape && t.dims.empty()) {
    error(t.range, "a tensor type needs at least one extent");
    return std::nullopt;
  }
  for (const auto& d : t.dims) {
    if (paramType) {
      if (d->kind == ExprKind::Number && d->isInt) {
        if (d->ival < 1) {
          error(d->range, "a parameter extent must be at least 1");
          return std::nullopt;
        }
        out.shape.push_back(Poly(d->ival));
      } else if (d->kind == ExprKind::Name) {
        out.shape.push_back(Poly::var(d->name));
      } else {
        error(d->range, "a parameter extent is an integer literal or a size name");
        return std::nullopt;
      }
      continue;
    }
    // Result types and zeros/ones: sizes bound by parameters, literals, + - *.
    if (sizes) {
      std::function<std::optional<Poly>(const Expr&)> ev =
          [&](const Expr& x) -> std::optional<Poly> {
        if (x.kind == ExprKind::Number && x.isInt) return Poly(x.ival);
        if (x.kind == ExprKind::Name) {
          auto it = sizes->find(x.name);
          if (it != sizes->end()) return it->second;
          error(x.range, "size '" + x.name + "' in the result type is not bound by any parameter");
          return std::nullopt;
        }
        if (x.kind == ExprKind::Binary && (x.name == "+" || x.name == "-" || x.name == "*")) {
          auto a = ev(*x.args[0]), b = ev(*x.args[1]);
          if (!a || !b) return std::nullopt;
          try {
            return x.name == "+" ? *a + *b : x.name == "-" ? *a - *b : *a * *b;
          } catch (const checked::SizeError&) {
            error(x.range, "this extent overflows i64");
            return std::nullopt;
          }
        }
        error(x.range, "an extent is built from sizes, integer literals and + - *");
        return std::nullopt;
      };
      auto p = ev(*d);
      if (!p) return std::nullopt;
      out.shape.push_back(*p);
    } else {
      auto p = extentOf(*d);
      if (!p) return std::nullopt;
      out.shape.push_back(*p);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Expression types

TInfo Lowerer::typeOf(const Expr& e) {
  auto it = inst().types.find(&e);
  if (it != inst().types.end()) return it->second;
  TInfo t = computeType(e);
  inst().types[&e] = t;
  return t;
}

bool Lowerer::unifyArith(const TInfo& a, const TInfo& b, SrcRange where, TInfo& out, bool quiet) {
  out = TInfo{};
  if (a.dtype == b.dtype) {
    out.dtype = a.dtype;
    out.weak = a.weak && b.weak;
    return true;
  }
  if (a.dtype == DType::Bool || b.dtype == DType::Bool) {
    if (!quiet) error(where, "cannot combine " + a.str() + " and " + b.str() + " here");
    return false;
  }
  bool fa = isFloat(a.dtype), fb = isFloat(b.dtype);
  if (fa && fb) {
    // f32 with f64: only a literal may adapt.
    if (a.weak)
      out.dtype = b.dtype, out.weak = b.weak;
    else if (b.weak)
      out.dtype = a.dtype, out.weak = false;
    else {
      if (!quiet)
        error(where, "cannot mix f32 and f64 (" + a.str() + " and " + b.str() +
                         "); convert one with f32(...) or f64(...)");
      return false;
    }
    return true;
  }
  // One float, one i64: the integer promotes to the float type, and an untyped float (a
  // literal, an integer quotient) stays untyped: `0.5 / n` meets f32 as f32.
  const TInfo& fl = fa ? a : b;
  out.dtype = fl.dtype;
  out.weak = fl.weak;
  return true;
}

std::string Lowerer::divHint(const Expr& e) {
  bool found = false;
  std::function<void(const Expr&)> walk = [&](const Expr& x) {
    if (found) return;
    if (x.kind == ExprKind::Binary && x.name == "/" && typeOf(*x.args[0]).dtype == DType::I64 &&
        typeOf(*x.args[1]).dtype == DType::I64)
      found = true;
    if (x.kind == ExprKind::Binary || x.kind == ExprKind::Unary)
      for (const auto& a : x.args)
        walk(*a);
  };
  walk(e);
  return found ? " ('/' is true division, as in Python 3; for integer division write div(a, b))"
               : "";
}

/// NumPy broadcasting (LANGUAGE.md v3): shapes align from the right; a missing leading
/// dimension or a literal extent 1 stretches to the other operand's extent. Extents compare
/// symbolically, so f64[n] and f64[m] do not broadcast even when n == m at run time.
bool Lowerer::broadcast(const std::vector<const TInfo*>& ops, SrcRange where,
                        std::vector<Poly>& shape) {
  const Poly one(1);
  std::vector<Poly> out;
  const TInfo* first = nullptr; // the operand that set the result so far, for the message
  for (const TInfo* t : ops) {
    if (t->rank() == 0) continue;
    if (!first) {
      first = t;
      out = t->shape;
      continue;
    }
    size_t r = std::max(out.size(), t->shape.size());
    std::vector<Poly> next(r);
    for (size_t k = 0; k < r; ++k) {
      // Dimension k of the result, counted from the left; each operand's own dimension (or
      // none, when it has fewer) is found by counting from the right.
      const Poly* a = k + out.size() >= r ? &out[k + out.size() - r] : nullptr;
      const Poly* b = k + t->shape.size() >= r ? &t->shape[k + t->shape.size() - r] : nullptr;
      if (!a || *a == one)
        next[k] = b ? *b : *a;
      else if (!b || *b == one || *a == *b)
        next[k] = *a;
      else {
        error(where, "shapes " + first->ir().str() + " and " + t->ir().str() +
                         " do not broadcast: extents " + a->str() + " and " + b->str() +
                         " differ (broadcasting stretches only missing leading dimensions and "
                         "extent 1; for anything else use a comprehension)");
        return false;
      }
    }
    out = std::move(next);
  }
  shape = out;
  return true;
}

/// The element of operand x that goes with element idx of a broadcast result: missing
/// leading dimensions drop their index, a literal extent 1 reads its only element.
std::vector<Ix> Lowerer::broadcastIdx(const TInfo& xt, const std::vector<Ix>& idx) {
  if (xt.rank() == 0) return {};
  size_t r = xt.rank();
  if (idx.size() < r) return idx; // a prefix view: the caller asks for whole rows
  std::vector<Ix> out(idx.end() - static_cast<long>(r), idx.end());
  for (size_t k = 0; k < r; ++k)
    if (xt.shape[k] == Poly(1)) out[k] = {b_->constInt(0), true};
  return out;
}

TInfo Lowerer::computeType(const Expr& e) {
  switch (e.kind) {
  case ExprKind::Number: return scalarT(e.isInt ? DType::I64 : DType::F64, true);
  case ExprKind::Bool: return scalarT(DType::Bool);
  case ExprKind::Name: {
    const Sym* s = lookup(e.name);
    if (!s) {
      if (fns_.count(e.name))
        error(e.range, "'" + e.name + "' is a function; call it as " + e.name + "(...)");
      else
        error(e.range, "unknown name '" + e.name + "'");
      return errorType();
    }
    if (s->kind == Sym::Size || s->kind == Sym::Index) return scalarT(DType::I64);
    return s->type;
  }
  case ExprKind::Unary: {
    TInfo a = typeOf(*e.args[0]);
    if (a.error) return a;
    if (a.isTuple()) {
      error(e.range, "a tuple cannot be used in arithmetic; unpack it with let (a, b) = ...");
      return errorType();
    }
    if (e.name == "!") {
      if (a.dtype != DType::Bool) {
        error(e.range, "'!' needs a bool operand, got " + a.str());
        return errorType();
      }
      return a;
    }
    if (!isNumeric(a.dtype)) {
      error(e.range, "'-' needs a number, got " + a.str());
      return errorType();
    }
    return a;
  }
  case ExprKind::Binary: {
    TInfo a = typeOf(*e.args[0]);
    TInfo b = typeOf(*e.args[1]);
    if (a.error || b.error) return errorType();
    if (a.isTuple() || b.isTuple()) {
      error(e.range, "a tuple cannot be used in arithmetic; unpack it with let (a, b) = ...");
      return errorType();
    }
    const std::string& op = e.name;
    if (op == "&&" || op == "||") {
      if (a.dtype != DType::Bool || b.dtype != DType::Bool) {
        error(e.range, "'" + op + "' needs bool operands, got " + a.str() + " and " + b.str());
        return errorType();
      }
      TInfo t = scalarT(DType::Bool);
      if (!broadcast({&a, &b}, e.range, t.shape)) return errorType();
      return t;
    }
    if (op == "@") {
      TInfo u;
      if (!isFloat(a.dtype) && !a.weak) {
        error(e.args[0]->range, "'@' needs float tensors, got " + a.str());
        return errorType();
      }
      if (!unifyArith(a, b, e.range, u)) return errorType();
      if (a.rank() < 1 || a.rank() > 2 || b.rank() < 1 || b.rank() > 2) {
        error(e.range, "'@' multiplies matrices and vectors, got " + a.str() + " @ " + b.str());
        return errorType();
      }
      const Poly& ka = a.shape.back();
      const Poly& kb = b.shape.front();
      if (ka != kb) {
        error(e.range, "'@' inner extents differ: " + a.str() + " @ " + b.str());
        return errorType();
      }
      TInfo t = scalarT(u.dtype);
      if (a.rank() == 2) t.shape.push_back(a.shape[0]);
      if (b.rank() == 2) t.shape.push_back(b.shape[1]);
      return t;
    }
    if (op == "^") {
      if (!isNumeric(a.dtype) || !isNumeric(b.dtype)) {
        error(e.range, "'^' needs numbers, got " + a.str() + " and " + b.str());
        return errorType();
      }
      TInfo t;
      if (b.dtype == DType::I64)
        t = a; // x^n keeps x's type
      else if (!unifyArith(a, b, e.range, t))
        return errorType();
      if (!broadcast({&a, &b}, e.range, t.shape)) return errorType();
      return t;
    }
    TInfo u;
    if (!unifyArith(a, b, e.range, u)) return errorType();
    if (op == "%" && u.dtype != DType::I64) {
      error(e.range, "'%' is for integers only, got " + a.str() + " and " + b.str() +
                         divHint(*e.args[0]) + divHint(*e.args[1]));
      return errorType();
    }
    if (op == "/" && u.dtype == DType::I64) {
      // True division (v3, as Python 3): an untyped float that takes the float type it meets.
      u.dtype = DType::F64;
      u.weak = true;
    }
    bool cmp = op == "<" || op == "<=" || op == ">" || op == ">=" || op == "==" || op == "!=";
    if (!cmp && u.dtype == DType::Bool) {
      error(e.range, "'" + op + "' needs numbers, got bool");
      return errorType();
    }
    if (cmp && u.dtype == DType::Bool && op != "==" && op != "!=") {
      error(e.range, "'" + op + "' compares numbers, got bool");
      return errorType();
    }
    TInfo t = cmp ? scalarT(DType::Bool) : u;
    if (!broadcast({&a, &b}, e.range, t.shape)) return errorType();
    return t;
  }
  case ExprKind::Call: return typeCall(e);
  case ExprKind::Reduce: return typeReduce(e);
  case ExprKind::Subscript: {
    TInfo base = typeOf(*e.base);
    if (base.error) return base;
    if (base.isTuple() || base.rank() == 0) {
      error(e.range, "cannot subscript " + base.str() + ": it is not a tensor");
      return errorType();
    }
    if (static_cast<int>(e.args.size()) > base.rank()) {
      error(e.range,
            "too many subscripts: " + std::to_string(e.args.size()) + " for " + base.str());
      return errorType();
    }
    bool ok = true;
    for (size_t k = 0; k < e.args.size(); ++k) {
      TInfo s = typeOf(*e.args[k]);
      if (s.error) {
        ok = false;
        continue;
      }
      if (s.dtype != DType::I64 || s.rank() != 0) {
        error(e.args[k]->range,
              "a subscript must be an i64 scalar, got " + s.str() + divHint(*e.args[k]));
        ok = false;
        continue;
      }
      std::string baseName = e.base->kind == ExprKind::Name ? e.base->name : text(e.base->range);
      if (!proveSubscript(*e.args[k], base.shape[k], baseName, static_cast<int>(k))) ok = false;
    }
    if (!ok) return errorType();
    TInfo t = base;
    t.shape.erase(t.shape.begin(), t.shape.begin() + static_cast<long>(e.args.size()));
    return t;
  }
  case ExprKind::TensorLit: {
    if (e.args.empty()) {
      error(e.range, "an empty tensor literal has no type; use zeros(...)");
      return errorType();
    }
    TInfo el = typeOf(*e.args[0]);
    if (el.error) return el;
    for (size_t k = 1; k < e.args.size(); ++k) {
      TInfo o = typeOf(*e.args[k]);
      if (o.error) return o;
      TInfo u;
      if (o.shape != el.shape) {
        error(e.args[k]->range,
              "tensor literal elements differ in shape: " + el.str() + " and " + o.str());
        return errorType();
      }
      if (!unifyArith(el, o, e.args[k]->range, u)) return errorType();
      el.dtype = u.dtype;
      el.weak = u.weak;
    }
    if (el.isTuple()) {
      error(e.range, "tuples cannot be stored in tensors");
      return errorType();
    }
    el.shape.insert(el.shape.begin(), Poly(static_cast<int64_t>(e.args.size())));
    return el;
  }
  case ExprKind::If: {
    TInfo c = typeOf(*e.cond);
    if (c.error) return c;
    if (c.dtype != DType::Bool || c.rank() != 0) {
      error(e.cond->range, "the condition of 'if' must be a bool scalar, got " + c.str() +
                               " (for elementwise choice use select(c, a, b))");
      return errorType();
    }
    // Branches with statements are typed as they are lowered, in their own scope.
    auto branch = [&](const ast::Block& blk) -> TInfo {
      inst().scopes.emplace_back();
      ++conditional_; // a branch may not run: its subscripts get no entry checks
      bool ok = true;
      for (const auto& s : blk.stmts) {
        if (s.kind != ast::StmtKind::Let && s.kind != ast::StmtKind::LetIndexed &&
            s.kind != ast::StmtKind::LetTuple) {
          error(s.range, "only 'let' statements are allowed in an if branch");
          ok = false;
          continue;
        }
        // Type the bound value; bind a typed placeholder so later statements see the name.
        if (s.kind == ast::StmtKind::LetIndexed) {
          std::vector<Poly> extents;
          TInfo vt = errorType();
          if (declareIndices(s.indices, *s.value, extents)) {
            inst().scopes.emplace_back();
            for (size_t k = 0; k < s.indices.size(); ++k) {
              Sym x;
              x.kind = Sym::Index;
              x.poly = extents[k];
              x.indexId = nextIndex_++;
              bind(s.indices[k].name, x);
            }
            vt = typeOf(*s.value);
            inst().scopes.pop_back();
            vt.shape.insert(vt.shape.begin(), extents.begin(), extents.end());
          }
          if (vt.error) ok = false;
          Sym sym;
          sym.type = vt;
          bind(s.name, sym);
          continue;
        }
        TInfo vt = typeOf(*s.value);
        if (vt.error) ok = false;
        if (s.kind == ast::StmtKind::Let) {
          Sym sym;
          sym.type = vt;
          bind(s.name, sym);
        } else {
          for (size_t k = 0; k < s.names.size(); ++k) {
            Sym sym;
            sym.type = vt.isTuple() && k < vt.tuple.size() ? vt.tuple[k] : errorType();
            bind(s.names[k].first, sym);
          }
        }
      }
      TInfo r = ok ? typeOf(*blk.result) : errorType();
      --conditional_;
      inst().scopes.pop_back();
      return r;
    };
    TInfo a = branch(*e.thenBlock);
    TInfo b = branch(*e.elseBlock);
    if (a.error || b.error) return errorType();
    if (a.isTuple() || b.isTuple()) {
      error(e.range, "an if expression cannot give a tuple");
      return errorType();
    }
    TInfo u;
    if (a.shape != b.shape || (a.dtype != b.dtype && !a.weak && !b.weak) ||
        !unifyArith(a, b, e.range, u, true)) {
      error(e.range, "the branches of 'if' have different types: " + a.str() + " and " + b.str());
      return errorType();
    }
    u.shape = a.shape;
    return u;
  }
  case ExprKind::Tuple: {
    TInfo t;
    for (const auto& a : e.args) {
      TInfo x = typeOf(*a);
      if (x.error) return x;
      if (x.isTuple()) {
        error(a->range, "tuples cannot be nested");
        return errorType();
      }
      t.tuple.push_back(x);
    }
    return t;
  }
  }
  return errorType();
}

TInfo Lowerer::typeCall(const Expr& e) {
  if (!e.derivative.empty()) return typeDerivative(e, nullptr, nullptr);
  const std::string& n = e.name;
  auto argTypes = [&](size_t want, const char* what) -> std::optional<std::vector<TInfo>> {
    if (e.args.size() != want) {
      error(e.range, std::string(what) + " '" + n + "' takes " + std::to_string(want) +
                         (want == 1 ? " argument" : " arguments") + ", got " +
                         std::to_string(e.args.size()));
      return std::nullopt;
    }
    std::vector<TInfo> ts;
    for (const auto& a : e.args) {
      TInfo t = typeOf(*a);
      if (t.error) return std::nullopt;
      if (t.isTuple()) {
        error(a->range, "a tuple cannot be passed here; unpack it with let (a, b) = ...");
        return std::nullopt;
      }
      ts.push_back(t);
    }
    return ts;
  };
  if (fns_.count(n)) {
    if (lookup(n)) {
      error(e.nameRange, "'" + n + "' is a variable here, not a function");
      return errorType();
    }
    return typeUserCall(e, *fns_[n], nullptr);
  }
  if (e.typeArg) { // zeros / ones
    if (n != "zeros" && n != "ones") {
      error(e.range, "only zeros(...) and ones(...) take a type");
      return errorType();
    }
    auto t = typeFromAst(*e.typeArg, false, nullptr);
    if (!t) return errorType();
    if (t->isTuple()) {
      error(e.typeArg->range, "zeros and ones make tensors, not tuples");
      return errorType();
    }
    return *t;
  }
  if (n == "zeros" || n == "ones") {
    error(e.range, "'" + n + "' takes a type, as in " + n + "(f64[n])");
    return errorType();
  }
  if (unaryFunctions().count(n)) {
    auto ts = argTypes(1, "function");
    if (!ts) return errorType();
    TInfo t = (*ts)[0];
    if (!isNumeric(t.dtype)) {
      error(e.args[0]->range, "'" + n + "' needs a number, got " + t.str());
      return errorType();
    }
    if (t.dtype == DType::I64 && !keepsIntegers(unaryFunctions().at(n))) t.dtype = DType::F64;
    return t;
  }
  if (n == "f64" || n == "f32" || n == "i64") {
    auto ts = argTypes(1, "conversion");
    if (!ts) return errorType();
    TInfo t = (*ts)[0];
    t.dtype = n == "f64" ? DType::F64 : n == "f32" ? DType::F32 : DType::I64;
    t.weak = false;
    return t;
  }
  if (n == "div") {
    // Integer floor division (v3): div(-7, 2) is -4, as Python's -7 // 2.
    auto ts = argTypes(2, "function");
    if (!ts) return errorType();
    for (size_t k = 0; k < 2; ++k)
      if ((*ts)[k].dtype != DType::I64) {
        error(e.args[k]->range, "'div' divides integers, got " + (*ts)[k].str() +
                                    "; for float division use '/'" + divHint(*e.args[k]));
        return errorType();
      }
    TInfo u = scalarT(DType::I64);
    if (!broadcast({&(*ts)[0], &(*ts)[1]}, e.range, u.shape)) return errorType();
    return u;
  }
  if ((n == "min" || n == "max") && e.args.size() == 2) goto binaryFn;
  if (n == "pow" || n == "atan2") {
  binaryFn:
    auto ts = argTypes(2, "function");
    if (!ts) return errorType();
    TInfo u;
    if (!isNumeric((*ts)[0].dtype) || !isNumeric((*ts)[1].dtype)) {
      error(e.range, "'" + n + "' needs numbers, got " + (*ts)[0].str() + " and " + (*ts)[1].str());
      return errorType();
    }
    if (n == "pow" && (*ts)[1].dtype == DType::I64)
      u = (*ts)[0];
    else if (!unifyArith((*ts)[0], (*ts)[1], e.range, u))
      return errorType();
    if ((n == "pow" || n == "atan2") && u.dtype == DType::I64) u.dtype = DType::F64;
    if (!broadcast({&(*ts)[0], &(*ts)[1]}, e.range, u.shape)) return errorType();
    return u;
  }
  if (n == "select") {
    auto ts = argTypes(3, "function");
    if (!ts) return errorType();
    if ((*ts)[0].dtype != DType::Bool) {
      error(e.args[0]->range, "select's condition must be bool, got " + (*ts)[0].str());
      return errorType();
    }
    TInfo u;
    if (!unifyArith((*ts)[1], (*ts)[2], e.range, u)) return errorType();
    if (!broadcast({&(*ts)[0], &(*ts)[1], &(*ts)[2]}, e.range, u.shape)) return errorType();
    return u;
  }
  if (reductions().count(n)) {
    auto ts = argTypes(1, "reduction");
    if (!ts) return errorType();
    TInfo t = (*ts)[0];
    if (!isNumeric(t.dtype)) {
      error(e.args[0]->range, "'" + n + "' needs numbers, got " + t.str());
      return errorType();
    }
    t.shape.clear();
    if ((n == "mean" || n == "logsumexp") && t.dtype == DType::I64) t.dtype = DType::F64;
    return t;
  }
  if (n == "transpose") {
    auto ts = argTypes(1, "function");
    if (!ts) return errorType();
    TInfo t = (*ts)[0];
    if (t.rank() != 2) {
      error(e.args[0]->range, "transpose needs a matrix, got " + t.str());
      return errorType();
    }
    std::swap(t.shape[0], t.shape[1]);
    return t;
  }
  if (n == "size") {
    if (e.args.size() != 2) {
      error(e.range, "'size' takes 2 arguments (a tensor and a dimension), got " +
                         std::to_string(e.args.size()));
      return errorType();
    }
    TInfo t = typeOf(*e.args[0]);
    if (t.error) return t;
    const Expr& k = *e.args[1];
    if (k.kind != ExprKind::Number || !k.isInt) {
      error(k.range, "the dimension of size(x, k) must be an integer literal");
      return errorType();
    }
    if (k.ival < 0 || k.ival >= t.rank()) {
      error(k.range, "dimension " + std::to_string(k.ival) + " is out of range for " + t.str());
      return errorType();
    }
    return scalarT(DType::I64);
  }
  if ((n == "grad" || n == "jvp" || n == "hvp") && e.args.size() == 1 &&
      e.args[0]->kind == ExprKind::Name && fns_.count(e.args[0]->name)) {
    error(e.range, n + "(" + e.args[0]->name +
                       ") is a function: call it with a second argument list, " + n + "(" +
                       e.args[0]->name + ")(...)");
    return errorType();
  }
  error(e.nameRange, "unknown function '" + n + "'");
  return errorType();
}

TInfo Lowerer::typeUserCall(const Expr& e, const ast::Function& callee,
                            std::map<std::string, Poly>* bindingsOut) {
  if (recursive_.count(callee.name)) return errorType();
  if (e.args.size() != callee.params.size()) {
    error(e.range, "function '" + callee.name + "' takes " + std::to_string(callee.params.size()) +
                       (callee.params.size() == 1 ? " argument" : " arguments") + ", got " +
                       std::to_string(e.args.size()));
    return errorType();
  }
  std::map<std::string, Poly> bindings;
  for (size_t k = 0; k < e.args.size(); ++k) {
    TInfo a = typeOf(*e.args[k]);
    if (a.error) return a;
    auto p = typeFromAst(callee.params[k].type, true, nullptr);
    if (!p) return errorType(); // reported where the callee is checked
    std::string want = p->str();
    if (a.isTuple() || p->isTuple() || a.rank() != p->rank()) {
      error(e.args[k]->range, "argument " + std::to_string(k + 1) + " of '" + callee.name + "' (" +
                                  callee.params[k].name + ") must be " + want + ", got " + a.str());
      return errorType();
    }
    bool dtypeOk = a.dtype == p->dtype || (a.weak && isFloat(p->dtype)) ||
                   (a.rank() == 0 && a.dtype == DType::I64 && isFloat(p->dtype));
    if (!dtypeOk) {
      error(e.args[k]->range, "argument " + std::to_string(k + 1) + " of '" + callee.name + "' (" +
                                  callee.params[k].name + ") must be " + want + ", got " + a.str());
      return errorType();
    }
    for (int d = 0; d < a.rank(); ++d) {
      const Poly& pd = p->shape[d];
      if (auto c = pd.constValue()) {
        if (a.shape[d] != pd) {
          error(e.args[k]->range, "argument " + std::to_string(k + 1) + " of '" + callee.name +
                                      "' must have extent " + pd.str() + " in dimension " +
                                      std::to_string(d) + ", got " + a.str());
          return errorType();
        }
        continue;
      }
      std::string sz = pd.names()[0];
      auto it = bindings.find(sz);
      if (it == bindings.end())
        bindings[sz] = a.shape[d];
      else if (it->second != a.shape[d]) {
        error(e.args[k]->range, "size '" + sz + "' of '" + callee.name + "' is " +
                                    it->second.str() + " from an earlier argument but " +
                                    a.shape[d].str() + " here (" + a.str() + ")");
        return errorType();
      }
    }
  }
  // Result type in the caller's terms.
  std::map<std::string, Poly> sizes;
  for (const auto& [k, v] : bindings)
    sizes[k] = v;
  // Sizes of the callee that no tensor argument binds cannot occur: every size name comes
  // from a parameter type.
  auto r = typeFromAst(callee.result, false, &sizes);
  if (!r) return errorType();
  if (bindingsOut) *bindingsOut = bindings;
  return *r;
}

bool Lowerer::declareIndices(const std::vector<ast::IndexDecl>& decls, const Expr& body,
                             std::vector<Poly>& extents,
                             std::vector<std::shared_ptr<const Affine>>* deps) {
  bool ok = true;
  std::set<std::string> seen;
  for (const auto& d : decls) {
    if (!seen.insert(d.name).second) {
      error(d.range, "index '" + d.name + "' is declared twice");
      ok = false;
      continue;
    }
    if (d.extent) {
      // An extent that uses an index of the same declaration list cannot be a region's.
      std::function<const Expr*(const Expr&)> sibling = [&](const Expr& x) -> const Expr* {
        if (x.kind == ExprKind::Name && seen.count(x.name) && x.name != d.name) return &x;
        for (const auto& a : x.args)
          if (a)
            if (const Expr* f = sibling(*a)) return f;
        return nullptr;
      };
      if (!deps && (mentionsIndex(*d.extent) || sibling(*d.extent))) {
        error(d.extent->range, "a comprehension's extent cannot use an enclosing index (its "
                               "result is rectangular); triangular domains are for "
                               "reductions and for loops");
        ok = false;
        continue;
      }
      if (const Expr* sib = sibling(*d.extent)) {
        error(sib->range, "the extent of '" + d.name + "' uses '" + sib->name +
                              "', an index of the same reduction: nest them, as in sum[" +
                              sib->name + "](sum[" + d.name + ": " + text(d.extent->range) +
                              "](...))");
        ok = false;
        continue;
      }
      if (mentionsIndex(*d.extent)) {
        auto a = dependentExtent(*d.extent);
        if (!a) {
          ok = false;
          continue;
        }
        deps->resize(extents.size());
        deps->push_back(std::make_shared<const Affine>(*a));
        extents.push_back(Poly::var("#extent"));
        continue;
      }
      auto p = extentOf(*d.extent);
      if (!p)
        ok = false;
      else
        extents.push_back(*p);
    } else {
      auto p = inferExtent(d.name, body, d.range);
      if (!p)
        ok = false;
      else
        extents.push_back(*p);
    }
  }
  if (deps) deps->resize(extents.size());
  return ok;
}

std::optional<Poly> Lowerer::inferExtent(const std::string& idx, const Expr& body,
                                         SrcRange declRange) {
  std::vector<std::pair<Poly, std::string>> found;
  bool bad = false;
  std::function<void(const Expr*)> walk = [&](const Expr* e) {
    if (!e) return;
    if (e->kind == ExprKind::Reduce)
      for (const auto& d : e->indices)
        if (d.name == idx) return; // shadowed
    if (e->kind == ExprKind::Subscript && e->base->kind == ExprKind::Name) {
      const Sym* s = lookup(e->base->name);
      if (s && (s->kind == Sym::Val || s->kind == Sym::Var) && !s->type.error)
        for (size_t k = 0; k < e->args.size() && k < s->type.shape.size(); ++k)
          if (e->args[k]->kind == ExprKind::Name && e->args[k]->name == idx)
            found.push_back({s->type.shape[k], e->base->name + "[" + text(e->args[k]->range) +
                                                   "] (dimension " + std::to_string(k) + ")"});
    }
    for (const auto& a : e->args)
      walk(a.get());
    walk(e->base.get());
    walk(e->cond.get());
    if (e->thenBlock) walk(e->thenBlock->result.get());
    if (e->elseBlock) walk(e->elseBlock->result.get());
  };
  walk(&body);
  if (bad) return std::nullopt;
  if (found.empty()) {
    error(declRange, "cannot infer the extent of index '" + idx +
                         "': use it as a plain subscript of a tensor, or give it as [" + idx +
                         ": EXTENT]");
    return std::nullopt;
  }
  for (const auto& [p, where] : found)
    if (p != found[0].first) {
      error(declRange, "index '" + idx + "' has extent " + found[0].first.str() + " from " +
                           found[0].second + " but " + p.str() + " from " + where);
      return std::nullopt;
    }
  return found[0].first;
}

TInfo Lowerer::typeReduce(const Expr& e) {
  if (!reductions().count(e.name)) {
    error(e.nameRange,
          "'" + e.name + "' is not a reduction (sum, prod, max, min, mean, logsumexp)");
    return errorType();
  }
  if (e.args.size() != 1) {
    error(e.range, "an indexed reduction takes one expression");
    return errorType();
  }
  std::vector<Poly> extents;
  std::vector<std::shared_ptr<const Affine>> deps;
  if (!declareIndices(e.indices, *e.args[0], extents, &deps)) return errorType();
  inst().scopes.emplace_back();
  for (size_t k = 0; k < e.indices.size(); ++k) {
    Sym s;
    s.kind = Sym::Index;
    s.poly = extents[k];
    s.extA = deps[k];
    s.indexId = nextIndex_++;
    bind(e.indices[k].name, s);
  }
  TInfo t = typeOf(*e.args[0]);
  inst().scopes.pop_back();
  if (t.error) return t;
  if (t.isTuple() || !isNumeric(t.dtype)) {
    error(e.args[0]->range, "'" + e.name + "' needs numbers, got " + t.str());
    return errorType();
  }
  if ((e.name == "mean" || e.name == "logsumexp") && t.dtype == DType::I64) t.dtype = DType::F64;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Subscript proofs

std::optional<Affine> Lowerer::affine(const Expr& e) {
  switch (e.kind) {
  case ExprKind::Number:
    if (!e.isInt) return std::nullopt;
    return Affine{Poly(e.ival), {}};
  case ExprKind::Name: {
    const Sym* s = lookup(e.name);
    if (!s) return std::nullopt;
    if (s->kind == Sym::Size) return Affine{s->poly, {}};
    if (s->kind == Sym::Index) {
      Affine a = s->offA ? *s->offA : Affine{s->offset, {}};
      a.coeff[s->indexId] += 1;
      return a;
    }
    return std::nullopt;
  }
  case ExprKind::Unary:
    if (e.name == "-")
      if (auto a = affine(*e.args[0])) {
        a->c0 = -a->c0;
        for (auto& [k, c] : a->coeff)
          c = -c;
        return a;
      }
    return std::nullopt;
  case ExprKind::Call:
    if (e.name == "size" && e.args.size() == 2) {
      TInfo t = typeOf(*e.args[0]);
      const Expr& k = *e.args[1];
      if (!t.error && k.kind == ExprKind::Number && k.ival >= 0 && k.ival < t.rank())
        return Affine{t.shape[k.ival], {}};
    }
    return std::nullopt;
  case ExprKind::Binary: {
    if (e.name != "+" && e.name != "-" && e.name != "*") return std::nullopt;
    auto a = affine(*e.args[0]);
    auto b = affine(*e.args[1]);
    if (!a || !b) return std::nullopt;
    if (e.name == "*") {
      // Affine only when one side is a constant integer, or neither mentions an index.
      auto scale = [](Affine x, int64_t c) {
        x.c0 = x.c0 * Poly(c);
        for (auto& [k, v] : x.coeff)
          v *= c;
        return x;
      };
      if (a->coeff.empty() && b->coeff.empty()) return Affine{a->c0 * b->c0, {}};
      if (a->coeff.empty() && a->c0.isConst()) return scale(*b, *a->c0.constValue());
      if (b->coeff.empty() && b->c0.isConst()) return scale(*a, *b->c0.constValue());
      return std::nullopt;
    }
    int64_t sgn = e.name == "+" ? 1 : -1;
    Affine r = *a;
    r.c0 = sgn > 0 ? r.c0 + b->c0 : r.c0 - b->c0;
    for (const auto& [k, c] : b->coeff)
      r.coeff[k] += sgn * c;
    return r;
  }
  default: return std::nullopt;
  }
}

/// "D <= T" for the condition T - D >= 0: negative terms to the left, positive to the right.
static std::string inequality(const Poly& p) {
  Poly l, r;
  for (const auto& [mono, c] : p.terms()) {
    Poly m(c < 0 ? -c : c);
    for (const std::string& n : mono)
      m = m * Poly::var(n);
    (c < 0 ? l : r) = (c < 0 ? l : r) + m;
  }
  return l.str() + " <= " + r.str();
}

bool Lowerer::provable(const Poly& p) {
  for (const auto& [mono, c] : p.terms())
    for (const std::string& name : mono) {
      auto d = divSizes_.find(name);
      if (d == divSizes_.end()) continue;
      // p = p0 + a d, linear in d, with d = div(max(e, 0), k).
      Poly p0;
      int64_t a = 0;
      for (const auto& [m2, c2] : p.terms()) {
        size_t uses = static_cast<size_t>(std::count(m2.begin(), m2.end(), name));
        if (uses == 0) {
          Poly t(c2);
          for (const std::string& n : m2)
            t = t * Poly::var(n);
          p0 = p0 + t;
        } else if (uses == 1 && m2.size() == 1) {
          a = c2;
        } else {
          return false; // d in a product: beyond this prover
        }
      }
      const Poly& e = d->second.first;
      Poly k(d->second.second);
      if (a > 0) // d >= 0, and k d >= e - k + 1
        return provable(p0) || provable(k * p0 + Poly(a) * (e - k + Poly(1)));
      // k d <= max(e, 0)
      return provable(k * p0 + Poly(a) * e) && (provable(e) || provable(p0));
    }
  return p.provablyNonNegative();
}

bool Lowerer::mentionsIndex(const Expr& e) {
  if (e.kind == ExprKind::Name) {
    const Sym* s = lookup(e.name);
    return s && s->kind == Sym::Index;
  }
  for (const auto& a : e.args)
    if (a && mentionsIndex(*a)) return true;
  return false;
}

std::optional<Affine> Lowerer::dependentExtent(const Expr& e) {
  TInfo t = typeOf(e);
  if (t.error) return std::nullopt;
  if (t.dtype != DType::I64 || t.rank() != 0) {
    error(e.range, "an extent must be an i64 scalar, got " + t.str() + divHint(e));
    return std::nullopt;
  }
  auto a = affine(e);
  if (!a)
    error(e.range, "an extent that uses enclosing indices must be affine in them (indices, "
                   "sizes, integer literals, + and -, * by a literal): '" +
                       text(e.range) + "'");
  return a;
}

bool Lowerer::proveSubscript(const Expr& sub, const Poly& extent, const std::string& base,
                             int dim) {
  PreKey key{inst().id, &sub};
  proven_[key] = false;
  auto a = affine(sub);
  if (!a) return true; // data-dependent or non-affine: checked at run time
  // The indices in scope, with their extents.
  struct IndexInfo {
    Poly ext;
    std::shared_ptr<const Affine> dep;
  };
  std::map<int, IndexInfo> ix;
  bool anyDependent = false;
  for (const auto& scope : inst().scopes)
    for (const auto& [n, s] : scope)
      if (s.kind == Sym::Index) {
        ix[s.indexId] = {s.poly, s.extA};
        anyDependent = anyDependent || s.extA || s.offA;
      }
  // The smallest and largest value over the index domain: eliminate indices innermost first
  // (a triangular extent uses only indices declared before it), each at 0 or at its extent
  // minus 1, whichever makes the form smaller (lo) or larger (hi). Exact over a box whose
  // ranges are not empty; over a triangular domain it is a bound.
  Poly lo, hi;
  try {
    auto extreme = [&](Affine f, bool upper) -> std::optional<Poly> {
      while (!f.coeff.empty()) {
        auto last = std::prev(f.coeff.end());
        int id = last->first;
        int64_t c = last->second;
        f.coeff.erase(last);
        if (c == 0) continue;
        auto it = ix.find(id);
        if (it == ix.end()) return std::nullopt; // an index of an outer instantiation
        if ((c > 0) != upper) continue;          // at 0
        if (it->second.dep) {
          f.c0 = f.c0 + (it->second.dep->c0 - Poly(1)) * Poly(c);
          for (const auto& [k, v] : it->second.dep->coeff)
            f.coeff[k] += c * v;
        } else {
          f.c0 = f.c0 + (it->second.ext - Poly(1)) * Poly(c);
        }
      }
      return f.c0;
    };
    auto l = extreme(*a, false), h = extreme(*a, true);
    if (!l || !h) return true; // checked at run time
    lo = *l;
    hi = *h;
  } catch (const checked::SizeError&) {
    return true; // coefficients beyond i64: checked at run time
  }
  Poly room = extent - Poly(1) - hi;
  bool loOk = provable(lo);
  bool hiOk = provable(room);
  if (loOk && hiOk) {
    proven_[key] = true;
    return true;
  }
  if (inst().inlined) return true; // proven or refuted where the callee was checked on its own
  std::string s = text(sub.range);
  // Out of range for every size (over a box the bounds are exact): a compile error.
  if (!anyDependent) {
    if (!loOk && provable(-lo - Poly(1))) {
      error(sub.range, "subscript '" + s + "' of '" + base +
                           "' is negative: its smallest value is " + lo.str());
      return false;
    }
    if (!hiOk && provable(-room - Poly(1))) {
      error(sub.range, "subscript '" + s + "' of '" + base + "' is out of range: it reaches " +
                           hi.str() + " but dimension " + std::to_string(dim) + " of '" + base +
                           "' has extent " + extent.str());
      return false;
    }
  }
  // Neither proven nor refuted. Where the condition is on the parameters' sizes alone and the
  // subscript runs whenever its index ranges are not empty, it is checked once on entry (v3);
  // otherwise at run time, on every access.
  auto dynamicName = [](const Poly& p) {
    for (const std::string& n : p.names())
      if (n.find('#') != std::string::npos) return true;
    return false;
  };
  if (anyDependent || conditional_ > 0 || dynamicName(lo) || dynamicName(room)) return true;
  std::vector<Poly> guards;
  for (const auto& [id, info] : ix)
    if (!provable(info.ext - Poly(1))) {
      if (dynamicName(info.ext)) return true;
      guards.push_back(info.ext);
    }
  auto add = [&](const Poly& cond, bool lower) {
    for (const ir::EntryCheck& c : entryChecks_)
      if (c.loc.begin == sub.range.begin && c.lower == lower) return;
    ir::EntryCheck c;
    c.cond = cond;
    c.guards = guards;
    c.what = "subscript '" + s + "' of '" + base + "' (dimension " + std::to_string(dim) + ")";
    c.needs = inequality(cond);
    c.lower = lower;
    c.got = lower ? lo : hi;
    c.limit = extent;
    c.loc = sub.range;
    entryChecks_.push_back(std::move(c));
  };
  if (!loOk) add(lo, true);
  if (!hiOk) add(room, false);
  proven_[key] = true; // in range whenever the call gets past its entry checks
  return true;
}

// ---------------------------------------------------------------------------------------------
// Emission

int Lowerer::loadSym(const Sym& s, const std::vector<Ix>& idx, SrcRange loc) {
  if (s.type.rank() == 0 && idx.empty()) return s.value;
  std::vector<int> all = s.prefix;
  bool proven = s.prefixProven;
  for (const Ix& i : idx) {
    all.push_back(i.value);
    proven = proven && i.proven;
  }
  return b_->load(s.value, all, s.srcName, loc, proven);
}

int Lowerer::emitElem(const Expr& e, const std::vector<Ix>& idx, DType w) {
  auto it = pre_.find({inst().id, &e});
  int v;
  if (it != pre_.end())
    v = loadSym(it->second, idx, e.range);
  else
    v = emitElemRaw(e, idx, w);
  if (b_->type(v).dtype != w) v = b_->cast(v, w);
  return v;
}

/// Elements of the tensor expression e at idx; scalars when e has rank 0.
int Lowerer::emitElemRaw(const Expr& e, const std::vector<Ix>& idx, DType w) {
  TInfo t = typeOf(e);
  auto sub = [&](const Expr& x, DType d) { return emitElem(x, broadcastIdx(typeOf(x), idx), d); };
  switch (e.kind) {
  case ExprKind::Number:
    if (isFloat(w)) return b_->constant(w, e.isInt ? static_cast<double>(e.ival) : e.fval);
    if (w == DType::I64 && e.isInt) return b_->constInt(e.ival);
    return b_->constant(w, e.isInt ? static_cast<double>(e.ival) : e.fval);
  case ExprKind::Bool: return b_->constBool(e.bval);
  case ExprKind::Name: {
    const Sym* s = lookup(e.name);
    if (s->kind == Sym::Size) return b_->size(s->poly);
    return loadSym(*s, idx, e.range);
  }
  case ExprKind::Unary: {
    DType d = want(t, w);
    int a = sub(*e.args[0], d);
    return b_->unary(e.name == "!" ? Op::Not : Op::Neg, a, e.range);
  }
  case ExprKind::Binary: {
    const std::string& op = e.name;
    TInfo ta = typeOf(*e.args[0]), tb = typeOf(*e.args[1]);
    if (op == "@") {
      DType d = want(t, w);
      prepare(*e.args[0]);
      prepare(*e.args[1]);
      // (A @ B)[i, k] = sum_j A[i, j] B[j, k]; vectors drop the missing index.
      Poly inner = ta.shape.back();
      std::vector<Ix> ai, bi;
      size_t p = 0;
      if (ta.rank() == 2) ai.push_back(idx[p++]);
      std::vector<Ix> rest(idx.begin() + static_cast<long>(p), idx.end());
      return emitReduce(
          Op::ReduceSum, false, {inner},
          [&](const std::vector<int>& j) {
            std::vector<Ix> a2 = ai, b2{{j[0], true}};
            a2.push_back({j[0], true});
            b2.insert(b2.end(), rest.begin(), rest.end());
            int x = emitElem(*e.args[0], a2, d);
            int y = emitElem(*e.args[1], b2, d);
            return b_->binary(Op::Mul, x, y);
          },
          d, e.range);
    }
    if (op == "^") {
      DType d = want(t, w);
      if (tb.dtype == DType::I64) {
        int x = sub(*e.args[0], d);
        int n = sub(*e.args[1], DType::I64);
        return b_->binary(Op::Powi, x, n, e.range);
      }
      return b_->binary(Op::Pow, sub(*e.args[0], d), sub(*e.args[1], d), e.range);
    }
    static const std::map<std::string, Op> ops = {
        {"+", Op::Add}, {"-", Op::Sub},  {"*", Op::Mul}, {"/", Op::Div}, {"%", Op::Mod},
        {"<", Op::Lt},  {"<=", Op::Le},  {">", Op::Gt},  {">=", Op::Ge}, {"==", Op::Eq},
        {"!=", Op::Ne}, {"&&", Op::And}, {"||", Op::Or}};
    Op o = ops.at(op);
    DType d;
    if (t.dtype == DType::Bool && o != Op::And && o != Op::Or) {
      // A comparison: operands meet at their unified type.
      TInfo u;
      unifyArith(ta, tb, e.range, u, true);
      d = u.weak ? DType::F64 : u.dtype;
      if (u.weak && ta.dtype == DType::I64 && tb.dtype == DType::I64) d = DType::I64;
    } else {
      d = want(t, w);
    }
    return b_->binary(o, sub(*e.args[0], d), sub(*e.args[1], d), e.range);
  }
  case ExprKind::Call: return emitCall(e, idx, w);
  case ExprKind::Reduce: {
    Op op = reductions().at(e.name);
    bool mean = e.name == "mean";
    std::vector<Poly> extents;
    std::vector<std::shared_ptr<const Affine>> deps;
    // Extents were established by typeOf; recompute quietly in the same scope.
    for (const auto& d : e.indices) {
      deps.emplace_back();
      if (d.extent && mentionsIndex(*d.extent)) {
        // A triangular extent (v3): computed where the reduction runs, an empty range when
        // below 0 (as a for loop's), and bound to a fresh size name for the region.
        deps.back() = std::make_shared<const Affine>(*affine(*d.extent));
        int v = emitScalar(*d.extent, DType::I64);
        int zero = b_->constInt(0);
        v = b_->select(b_->binary(Op::Gt, v, zero), v, zero);
        std::string name = "#extent" + std::to_string(nextIndex_++);
        ir::Instr def;
        def.op = Op::SizeDef;
        def.name = name;
        def.args = {v};
        def.loc = d.extent->range;
        b_->emitEffect(std::move(def));
        extents.push_back(Poly::var(name));
      } else if (d.extent) {
        extents.push_back(*extentOf(*d.extent));
      } else {
        extents.push_back(*inferExtent(d.name, *e.args[0], d.range));
      }
    }
    DType d = want(t, w);
    std::set<std::string> names;
    for (const auto& x : e.indices)
      names.insert(x.name);
    hoistInvariant(*e.args[0], names);
    return emitReduce(
        op, mean, extents,
        [&](const std::vector<int>& j) {
          inst().scopes.emplace_back();
          for (size_t k = 0; k < e.indices.size(); ++k) {
            Sym s;
            s.kind = Sym::Index;
            s.value = j[k];
            s.poly = extents[k];
            s.extA = deps[k];
            s.indexId = nextIndex_++;
            bind(e.indices[k].name, s);
          }
          int v = emitElem(*e.args[0], idx, d);
          inst().scopes.pop_back();
          return v;
        },
        d, e.range);
  }
  case ExprKind::Subscript: {
    TInfo bt = typeOf(*e.base);
    std::vector<Ix> all;
    for (size_t k = 0; k < e.args.size(); ++k) {
      int v = emitScalar(*e.args[k], DType::I64);
      auto pv = proven_.find({inst().id, e.args[k].get()});
      all.push_back({v, pv != proven_.end() && pv->second});
    }
    all.insert(all.end(), idx.begin(), idx.end());
    (void)bt;
    return emitElem(*e.base, all, want(t, w));
  }
  case ExprKind::TensorLit:
  case ExprKind::If: {
    Sym s = materialize(e);
    return loadSym(s, idx, e.range);
  }
  case ExprKind::Tuple: break;
  }
  return b_->constant(w, 0);
}

int Lowerer::emitReduce(Op op, bool mean, const std::vector<Poly>& extents,
                        const std::function<int(const std::vector<int>&)>& body, DType w,
                        SrcRange loc) {
  auto saved = pre_;
  int r = b_->region(op, extents, ir::Type{w, {}}, body, loc);
  pre_ = saved;
  if (mean) {
    Poly count(1);
    for (const Poly& p : extents)
      count = count * p;
    int c = b_->cast(b_->size(count), w);
    r = b_->binary(Op::Div, r, c);
  }
  return r;
}

int Lowerer::emitCall(const Expr& e, const std::vector<Ix>& idx, DType w) {
  const std::string& n = e.name;
  TInfo t = typeOf(e);
  auto sub = [&](const Expr& x, DType d) { return emitElem(x, broadcastIdx(typeOf(x), idx), d); };
  if (fns_.count(n)) {
    Sym s = materialize(e);
    return loadSym(s, idx, e.range);
  }
  if (e.typeArg) return b_->constant(w, n == "ones" ? 1.0 : 0.0);
  if (unaryFunctions().count(n)) {
    Op op = unaryFunctions().at(n);
    DType d = want(t, w);
    return b_->unary(op, sub(*e.args[0], d), e.range);
  }
  if (n == "f64" || n == "f32" || n == "i64") {
    TInfo a = typeOf(*e.args[0]);
    DType from = a.weak && isFloat(t.dtype) ? t.dtype : a.dtype;
    return b_->cast(sub(*e.args[0], from), t.dtype, e.range);
  }
  if (n == "div")
    return b_->binary(Op::Div, sub(*e.args[0], DType::I64), sub(*e.args[1], DType::I64), e.range);
  if (n == "min" || n == "max" || n == "pow" || n == "atan2") {
    if (e.args.size() == 2) {
      DType d = want(t, w);
      TInfo tb = typeOf(*e.args[1]);
      if (n == "pow" && tb.dtype == DType::I64)
        return b_->binary(Op::Powi, sub(*e.args[0], d), sub(*e.args[1], DType::I64), e.range);
      Op op = n == "min" ? Op::Min : n == "max" ? Op::Max : n == "pow" ? Op::Pow : Op::Atan2;
      return b_->binary(op, sub(*e.args[0], d), sub(*e.args[1], d), e.range);
    }
  }
  if (n == "select") {
    DType d = want(t, w);
    int c = sub(*e.args[0], DType::Bool);
    return b_->select(c, sub(*e.args[1], d), sub(*e.args[2], d));
  }
  if (reductions().count(n)) {
    TInfo a = typeOf(*e.args[0]);
    DType d = want(t, w);
    if (a.rank() == 0) {
      int v = emitScalar(*e.args[0], d);
      return v; // the sum, max, ... of one element is that element
    }
    prepare(*e.args[0]);
    return emitReduce(
        reductions().at(n), n == "mean", a.shape,
        [&](const std::vector<int>& j) {
          std::vector<Ix> ix;
          for (int v : j)
            ix.push_back({v, true});
          return emitElem(*e.args[0], ix, d);
        },
        d, e.range);
  }
  if (n == "transpose") {
    std::vector<Ix> sw = {idx[1], idx[0]};
    return emitElem(*e.args[0], sw, want(t, w));
  }
  if (n == "size") {
    TInfo a = typeOf(*e.args[0]);
    return b_->size(a.shape[e.args[1]->ival]);
  }
  return b_->constant(w, 0);
}

/// Computes ahead of a region what does not depend on the region's indices: scalar
/// subexpressions of a tensor expression, and tensor parts that cannot be fused (calls, if,
/// literals, operands of '@'). Stored in pre_ and picked up by emitElem.
void Lowerer::prepare(const Expr& e) {
  TInfo t = typeOf(e);
  PreKey key{inst().id, &e};
  if (pre_.count(key)) return;
  auto cheap = [&](const Expr& x) {
    return x.kind == ExprKind::Name || x.kind == ExprKind::Number || x.kind == ExprKind::Bool;
  };
  if (t.rank() == 0) {
    if (cheap(e) || t.weak) return; // literal arithmetic stays in context, to take its type
    Sym s;
    s.type = t;
    s.value = emitScalar(e, t.dtype);
    pre_[key] = s;
    return;
  }
  switch (e.kind) {
  case ExprKind::Unary:
  case ExprKind::Binary:
    if (e.kind == ExprKind::Binary && e.name == "@") {
      for (const auto& a : e.args) {
        const Expr& x = *a;
        bool fusible = cheap(x) || (x.kind == ExprKind::Subscript && cheap(*x.base)) ||
                       (x.kind == ExprKind::Call && x.name == "transpose" && cheap(*x.args[0]));
        if (!fusible && !pre_.count({inst().id, &x})) pre_[{inst().id, &x}] = materialize(x);
      }
      return;
    }
    for (const auto& a : e.args)
      prepare(*a);
    return;
  case ExprKind::Call:
    if (fns_.count(e.name)) {
      pre_[key] = materialize(e);
      return;
    }
    for (const auto& a : e.args)
      prepare(*a);
    return;
  case ExprKind::Subscript:
    for (const auto& a : e.args)
      prepare(*a);
    prepare(*e.base);
    return;
  case ExprKind::TensorLit:
  case ExprKind::If: pre_[key] = materialize(e); return;
  default: return;
  }
}

/// Loop-invariant code motion at the source level: inside the body of a comprehension or an
/// indexed reduction over `indices`, computes ahead of the region every costly scalar
/// subexpression that mentions none of them (`x[i] / sum(x)` sums once, not n times).
/// If branches are left alone: only the taken branch may run.
void Lowerer::hoistInvariant(const Expr& e, std::set<std::string> indices) {
  std::function<bool(const Expr*, const std::set<std::string>&)> mentions =
      [&](const Expr* x, const std::set<std::string>& idx) -> bool {
    if (!x) return false;
    if (x->kind == ExprKind::Name) return idx.count(x->name) > 0;
    if (x->kind == ExprKind::If) return true; // not hoisted, see above
    std::set<std::string> inner = idx;
    if (x->kind == ExprKind::Reduce)
      for (const auto& d : x->indices) {
        if (d.extent && mentions(d.extent.get(), idx)) return true; // a triangular extent
        inner.erase(d.name);
      }
    for (const auto& a : x->args)
      if (mentions(a.get(), inner)) return true;
    return mentions(x->base.get(), inner);
  };
  auto costly = [](const Expr& x) {
    return x.kind == ExprKind::Reduce || x.kind == ExprKind::Call ||
           (x.kind == ExprKind::Binary && x.name == "@");
  };
  if (e.kind == ExprKind::If) return;
  TInfo t = typeOf(e);
  if (t.rank() == 0 && !t.weak && costly(e) && !mentions(&e, indices)) {
    prepare(e);
    return;
  }
  if (e.kind == ExprKind::Reduce) {
    for (const auto& d : e.indices)
      indices.insert(d.name);
  }
  for (const auto& a : e.args)
    hoistInvariant(*a, indices);
  if (e.base) hoistInvariant(*e.base, indices);
}

Sym Lowerer::materializeComp(const std::vector<Poly>& shape, DType d,
                             const std::function<int(const std::vector<Ix>&)>& elem) {
  auto saved = pre_;
  int v = b_->region(Op::Comp, shape, ir::Type{d, shape}, [&](const std::vector<int>& j) {
    std::vector<Ix> ix;
    for (int x : j)
      ix.push_back({x, true});
    return elem(ix);
  });
  pre_ = saved;
  Sym s;
  s.type.dtype = d;
  s.type.shape = shape;
  s.value = v;
  return s; // the caller restores weakness where the element type was a literal
}

/// A tensor (or scalar) value for e, without copying where e already names one.
Sym Lowerer::materialize(const Expr& e) {
  TInfo t = typeOf(e);
  auto it = pre_.find({inst().id, &e});
  if (it != pre_.end()) return it->second;
  // A literal keeps its natural type (and stays weak): `let c = 2.5;` still meets f32 values.
  DType d = t.dtype;
  if (e.kind == ExprKind::Name) {
    const Sym* s = lookup(e.name);
    if (s->kind == Sym::Val) return *s;
  }
  if (e.kind == ExprKind::Subscript && e.base->kind == ExprKind::Name && t.rank() > 0) {
    // A row view A[i]: no copy, loads go through the base.
    Sym base = *lookup(e.base->name);
    if (base.kind == Sym::Val) {
      for (const auto& a : e.args) {
        base.prefix.push_back(emitScalar(*a, DType::I64));
        auto pv = proven_.find({inst().id, a.get()});
        if (pv == proven_.end() || !pv->second) base.prefixProven = false;
      }
      base.type = t;
      return base;
    }
  }
  if (e.kind == ExprKind::Call && fns_.count(e.name)) return inlineCall(e, *fns_[e.name], nullptr);
  if (t.rank() == 0 && e.kind != ExprKind::If) {
    Sym s;
    s.type = t;
    s.value = emitScalar(e, d);
    return s;
  }
  if (e.kind == ExprKind::If) {
    Sym s;
    s.type = t;
    int c = emitScalar(*e.cond, DType::Bool);
    auto saved = pre_;
    s.value = b_->ifElse(
        c, s.type.ir(), [&] { return yieldValue(lowerBlock(*e.thenBlock, nullptr), d); },
        [&] { return yieldValue(lowerBlock(*e.elseBlock, nullptr), d); });
    pre_ = saved;
    return s;
  }
  if (e.kind == ExprKind::TensorLit) {
    TInfo el = typeOf(*e.args[0]);
    if (el.rank() == 0 || e.args[0]->kind == ExprKind::TensorLit) {
      // Flatten nested literals of scalars into one stack.
      std::vector<int> leaves;
      std::function<bool(const Expr&)> flat = [&](const Expr& x) {
        if (x.kind == ExprKind::TensorLit) {
          for (const auto& a : x.args)
            if (!flat(*a)) return false;
          return true;
        }
        if (typeOf(x).rank() != 0) return false;
        leaves.push_back(emitScalar(x, d));
        return true;
      };
      if (flat(e)) {
        ir::Instr i;
        i.op = Op::Stack;
        i.args = leaves;
        Sym s;
        s.type = t;
        s.value = b_->emit(std::move(i), s.type.ir());
        return s;
      }
    }
    // Tensor elements: [x, y][k, ...] = select(k == 0, x[...], select(k == 1, y[...], ...)).
    std::vector<Sym> parts;
    for (const auto& a : e.args)
      parts.push_back(materialize(*a));
    return materializeComp(t.shape, d, [&](const std::vector<Ix>& ix) {
      std::vector<Ix> rest(ix.begin() + 1, ix.end());
      int v = loadSym(parts.back(), rest, e.range);
      for (int k = static_cast<int>(parts.size()) - 2; k >= 0; --k) {
        int c = b_->binary(Op::Eq, ix[0].value, b_->constInt(k));
        v = b_->select(c, loadSym(parts[k], rest, e.range), v);
      }
      return v;
    });
  }
  prepare(e);
  Sym s =
      materializeComp(t.shape, d, [&](const std::vector<Ix>& ix) { return emitElem(e, ix, d); });
  s.type.weak = t.weak;
  return s;
}

int Lowerer::yieldValue(const Sym& s, DType w) {
  if (s.type.rank() == 0) return b_->cast(s.value, w);
  if (s.prefix.empty() && s.type.dtype == w) return s.value;
  return materializeComp(s.type.shape, w,
                         [&](const std::vector<Ix>& ix) { return b_->cast(loadSym(s, ix, {}), w); })
      .value;
}

Sym Lowerer::inlineCall(const Expr& e, const ast::Function& callee, std::vector<Sym>* tupleOut) {
  if (!e.derivative.empty()) return inlineDerivative(e, callee, tupleOut);
  std::map<std::string, Poly> bindings;
  TInfo rt = typeUserCall(e, callee, &bindings);
  if (checkOnly_) {
    if (!rt.isTuple()) return standIn(rt);
    for (const TInfo& t : rt.tuple)
      if (tupleOut) tupleOut->push_back(standIn(t));
    Sym r;
    r.type = rt;
    return r;
  }
  std::vector<Sym> args;
  for (size_t k = 0; k < e.args.size(); ++k) {
    auto pt = typeFromAst(callee.params[k].type, true, nullptr);
    Sym a = materialize(*e.args[k]);
    if (a.type.dtype != pt->dtype) { // a literal or an i64 scalar taking the parameter's type
      a.value = yieldValue(a, pt->dtype);
      a.prefix.clear();
      a.type.dtype = pt->dtype;
    }
    a.type.weak = false;
    a.srcName = callee.params[k].name;
    args.push_back(a);
  }
  auto rule = rules_.find(callee.name);
  if (rule != rules_.end() && !inRule_.count(callee.name))
    return inlineWithRule(callee, *rule->second, std::move(args), bindings, rt, e.range);
  return inlineBody(callee, std::move(args), bindings, tupleOut);
}

Sym Lowerer::inlineBody(const ast::Function& callee, std::vector<Sym> args,
                        const std::map<std::string, Poly>& bindings, std::vector<Sym>* tupleOut) {
  auto in = std::make_unique<Inst>();
  in->id = nextInst_++;
  in->fn = &callee;
  in->inlined = true;
  in->floatType = floatTypeOf(callee);
  in->scopes.emplace_back();
  for (const auto& [n, p] : bindings) {
    Sym s;
    s.kind = Sym::Size;
    s.poly = p;
    in->scopes.back()[n] = s;
  }
  for (size_t k = 0; k < args.size(); ++k) {
    auto pt = typeFromAst(callee.params[k].type, true, nullptr);
    args[k].type.shape = pt->shape;
    for (auto& p : args[k].type.shape)
      p = p.substitute(bindings);
    in->scopes.back()[callee.params[k].name] = args[k];
  }
  stack_.push_back(std::move(in));
  auto savedSnapshots = snapshots_;
  int nesting = exprNesting_;
  exprNesting_ = 0;
  Sym r = lowerBlock(callee.body, tupleOut);
  exprNesting_ = nesting;
  snapshots_ = savedSnapshots;
  stack_.pop_back();
  return r;
}

Sym Lowerer::inlineWithRule(const ast::Function& callee, const ast::Function& rule,
                            std::vector<Sym> args, const std::map<std::string, Poly>& bindings,
                            const TInfo& rt, SrcRange loc) {
  // The operands are the float arguments as whole values (a row view is copied), so that the
  // rule's cotangents have somewhere to go.
  ir::Instr c;
  c.op = Op::Custom;
  c.loc = loc;
  c.name = rule.name; // (what `slopec check` reports the gradient comes from)
  for (size_t k = 0; k < args.size(); ++k) {
    if (!isFloat(args[k].type.dtype)) continue;
    if (!args[k].prefix.empty()) {
      args[k].value = yieldValue(args[k], args[k].type.dtype);
      args[k].prefix.clear();
      args[k].prefixProven = true;
    }
    c.args.push_back(args[k].value);
  }
  DType rd = rt.dtype;
  auto savedPre = pre_;
  c.regions.push_back(b_->buildBlock(
      {}, [&] { return yieldValue(inlineBody(callee, args, bindings, nullptr), rd); }));
  pre_ = savedPre;
  // The rule runs only in derivatives, so its subscripts get no entry checks (conditional_),
  // and a call of the callee inside it is the plain computation (else it would never end).
  int g = f_->newValue(rt.ir());
  Sym gs;
  gs.type = rt;
  gs.type.weak = false;
  gs.value = g;
  gs.srcName = rule.params.back().name;
  args.push_back(gs);
  ++conditional_;
  inRule_.insert(callee.name);
  std::vector<Sym> parts;
  ir::Block ruleBlock = b_->buildBlock({g}, [&] {
    Sym one = inlineBody(rule, args, bindings, &parts);
    if (!one.type.isTuple()) parts = {one};
    size_t p = 0;
    std::vector<int> ys;
    for (size_t k = 0; k < callee.params.size(); ++k) {
      if (!isFloat(args[k].type.dtype)) continue;
      ys.push_back(yieldValue(parts[p++], args[k].type.dtype));
    }
    b_->current().yields = ys;
    return -1;
  });
  inRule_.erase(callee.name);
  --conditional_;
  pre_ = savedPre;
  c.regions.push_back(std::move(ruleBlock));
  Sym out;
  out.type = rt;
  out.type.weak = false;
  out.value = b_->emit(std::move(c), rt.ir());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Derivatives in the language (v3): grad(f, wrt...)(args), jvp(f, wrt...)(args, tangents),
// hvp(f, wrt...)(args, directions). The pipeline builds f's derivative function (the one
// `slopec grad|jvp|hvp` prints) and it is inlined here at the IR level, with f's sizes bound
// to the caller's extents, as a call of f would be at the source level.

TInfo Lowerer::typeDerivative(const Expr& e, std::map<std::string, Poly>* bindingsOut,
                              std::vector<size_t>* wrtOut) {
  const std::string& kind = e.derivative;
  const std::string head = kind + "(" + e.name + ")";
  auto found = fns_.find(e.name);
  if (found == fns_.end()) {
    error(e.nameRange, kind + " takes a function of this file; '" + e.name + "' is not one");
    return errorType();
  }
  if (lookup(e.name)) {
    error(e.nameRange, "'" + e.name + "' is a variable here, not a function");
    return errorType();
  }
  const ast::Function& callee = *found->second;
  if (recursive_.count(callee.name)) return errorType();
  std::vector<size_t> wrt;
  if (e.wrt.empty()) {
    for (size_t k = 0; k < callee.params.size(); ++k)
      if (isFloatName(callee.params[k].type.dtype)) wrt.push_back(k);
    if (wrt.empty()) {
      error(e.nameRange, "'" + e.name + "' has no float parameter to differentiate");
      return errorType();
    }
  }
  for (const auto& [w, range] : e.wrt) {
    size_t k = 0;
    while (k < callee.params.size() && callee.params[k].name != w)
      ++k;
    if (k == callee.params.size()) {
      error(range, "'" + e.name + "' has no parameter '" + w + "'");
      return errorType();
    }
    if (std::find(wrt.begin(), wrt.end(), k) != wrt.end()) {
      error(range, "'" + w + "' is named twice");
      return errorType();
    }
    if (!isFloatName(callee.params[k].type.dtype)) {
      error(range, "parameter '" + w + "' of '" + e.name +
                       "' is not a float; only float parameters can be differentiated");
      return errorType();
    }
    wrt.push_back(k);
  }
  const size_t n = callee.params.size();
  const size_t want = n + (kind == "grad" ? 0 : wrt.size());
  if (e.args.size() != want) {
    std::string msg = head + " takes " + std::to_string(want) +
                      (want == 1 ? " argument" : " arguments") + ", got " +
                      std::to_string(e.args.size());
    if (kind != "grad")
      msg += std::string(": the ") + std::to_string(n) + " of '" + e.name + "', then a " +
             (kind == "jvp" ? "tangent" : "direction") + " for each parameter differentiated";
    error(e.range, msg);
    return errorType();
  }
  Expr primal = e;
  primal.args.resize(n);
  primal.derivative.clear();
  std::map<std::string, Poly> bindings;
  TInfo r = typeUserCall(primal, callee, &bindings);
  if (r.error) return r;
  std::vector<TInfo> results = r.isTuple() ? r.tuple : std::vector<TInfo>{r};
  std::vector<TInfo> floats;
  for (const TInfo& t : results)
    if (isFloat(t.dtype)) floats.push_back(t);
  if (kind != "jvp" && (results.size() != 1 || floats.size() != 1 || r.rank() != 0)) {
    error(e.derivativeRange, head + " needs '" + e.name +
                                 "' to return one float scalar; it returns " + r.str() +
                                 (kind == "grad" ? " (jvp gives a Jacobian-vector product)" : ""));
    return errorType();
  }
  if (floats.empty()) {
    error(e.derivativeRange,
          head + " needs '" + e.name + "' to return a float; it returns " + r.str());
    return errorType();
  }
  std::vector<TInfo> wrtTypes;
  for (size_t j = 0; j < wrt.size(); ++j) {
    auto pt = typeFromAst(callee.params[wrt[j]].type, true, nullptr);
    if (!pt) return errorType();
    for (Poly& d : pt->shape)
      d = d.substitute(bindings);
    pt->weak = false;
    wrtTypes.push_back(*pt);
    if (kind == "grad") continue;
    const Expr& arg = *e.args[n + j];
    TInfo a = typeOf(arg);
    if (a.error) return a;
    bool ok = !a.isTuple() && a.rank() == pt->rank() &&
              (a.dtype == pt->dtype || (a.weak && isFloat(pt->dtype)) ||
               (a.rank() == 0 && a.dtype == DType::I64));
    for (int d = 0; ok && d < a.rank(); ++d)
      ok = a.shape[d] == pt->shape[d];
    if (!ok) {
      error(arg.range, std::string(kind == "jvp" ? "the tangent" : "the direction") + " of '" +
                           callee.params[wrt[j]].name + "' (argument " + std::to_string(n + j + 1) +
                           " of " + head + ") must be " + pt->str() + ", got " + a.str());
      return errorType();
    }
  }
  TInfo out;
  out.tuple.push_back(results[0]);
  if (kind == "jvp") {
    out.tuple = results;
    for (const TInfo& t : floats)
      out.tuple.push_back(t);
  } else {
    for (const TInfo& t : wrtTypes)
      out.tuple.push_back(t);
    if (kind == "hvp")
      for (const TInfo& t : wrtTypes)
        out.tuple.push_back(t);
  }
  for (TInfo& t : out.tuple)
    t.weak = false;
  if (bindingsOut) *bindingsOut = bindings;
  if (wrtOut) *wrtOut = wrt;
  return out;
}

Sym Lowerer::inlineDerivative(const Expr& e, const ast::Function& callee,
                              std::vector<Sym>* tupleOut) {
  std::map<std::string, Poly> bindings;
  std::vector<size_t> wrt;
  TInfo rt = typeDerivative(e, &bindings, &wrt);
  Sym r;
  r.type = rt;
  if (rt.error) return r;
  if (checkOnly_) { // stand-ins of the right types, as for a call
    for (const TInfo& t : rt.tuple)
      if (tupleOut) tupleOut->push_back(standIn(t));
    return r;
  }
  const size_t n = callee.params.size();
  std::vector<int> args;
  for (size_t k = 0; k < e.args.size(); ++k) {
    const ast::Param& p = callee.params[k < n ? k : wrt[k - n]];
    auto pt = typeFromAst(p.type, true, nullptr);
    Sym a = materialize(*e.args[k]);
    if (a.type.error) {
      r.type = errorType();
      return r;
    }
    args.push_back(yieldValue(a, pt->dtype)); // a view or a literal made a tensor of p's type
  }
  std::vector<std::string> names;
  for (size_t k : wrt)
    names.push_back(callee.params[k].name);
  ir::Function d;
  try {
    if (!derivatives_) throw std::logic_error("no derivatives here");
    d = derivatives_(e.derivative, callee.name, names, inRule_);
  } catch (const std::exception& x) {
    error(e.derivativeRange, "cannot build " + e.derivative + "(" + callee.name + "): " + x.what());
    r.type = errorType();
    return r;
  }
  // Sizes computed on entry (`div(n, 2)` extents) are the caller's, in its terms.
  for (const ir::DerivedSize& ds : d.derived) {
    Poly a = ds.a.substitute(bindings);
    if (ds.kind != ir::DerivedSize::FloorDiv || !ds.b.constValue()) {
      error(e.derivativeRange,
            "cannot inline " + e.derivative + "(" + callee.name + "): it computes sizes on entry");
      r.type = errorType();
      return r;
    }
    int64_t k = *ds.b.constValue();
    if (auto c = a.constValue()) {
      bindings[ds.name] = Poly(std::max<int64_t>(*c, 0) / k);
      continue;
    }
    std::string name = "div(" + a.str() + ", " + std::to_string(k) + ")";
    if (!divSizes_.count(name)) {
      divSizes_[name] = {a, k};
      f_->derived.push_back({ir::DerivedSize::FloorDiv, name, a, Poly(k), Poly(0)});
    }
    bindings[ds.name] = Poly::var(name);
  }
  // Every var write its own tag, as the checker's are: f's derivative holds copies of one
  // write (the forward sweep's and the recomputation's) under one tag, and reverse mode keys
  // overwritten values by tag.
  auto tag = [&](int64_t) { return ++nextStore_; };
  // f's entry checks proved some of its subscripts in range for its own sizes; here they are
  // checked where they run instead (the checks' conditions need not hold in the caller's
  // terms where the call does not run).
  std::vector<int> ys =
      b_->splice(d, args, bindings, "@" + std::to_string(++splices_), tag, d.entryChecks.empty());
  std::set<int> buffers; // d's results that are accumulators (a gradient), not values
  for (const ir::Instr& i : d.body.body)
    if (i.op == Op::BufZeros) buffers.insert(i.result);
  for (size_t k = 0; k < ys.size() && k < rt.tuple.size(); ++k) {
    Sym s;
    s.type = rt.tuple[k];
    s.value = ys[k];
    // A scalar accumulator is read into a value; a tensor one is read element by element
    // wherever it is used, as a var's buffer is.
    if (rt.tuple[k].rank() == 0 && buffers.count(d.body.yields[k])) s.value = b_->load(ys[k], {});
    if (tupleOut) tupleOut->push_back(s);
  }
  return r;
}

/// Snapshots of the variables the expressions mention, so that they read values, not memory.
void Lowerer::takeSnapshots(const std::vector<const Expr*>& exprs) {
  // Additive: inside an expression (an if branch), the statement's snapshots stay in force.
  std::set<int> vars;
  std::function<void(const Expr*)> walk = [&](const Expr* e) {
    if (!e) return;
    if (e->kind == ExprKind::Name) {
      const Sym* s = lookup(e->name);
      if (s && s->kind == Sym::Var && !s->type.error) vars.insert(s->value);
    }
    for (const auto& a : e->args)
      walk(a.get());
    walk(e->base.get());
    walk(e->cond.get());
    for (const ast::BlockP& b : {e->thenBlock, e->elseBlock}) {
      if (!b) continue;
      for (const auto& st : b->stmts)
        walk(st.value.get());
      walk(b->result.get());
    }
  };
  for (const Expr* e : exprs)
    walk(e);
  for (int buf : vars) {
    if (snapshots_.count(buf)) continue;
    const ir::Type t = f_->types[buf]; // a copy: emitting new values may reallocate types
    Sym snap;
    snap.type.dtype = t.dtype;
    snap.type.shape = t.shape;
    snap.srcName = varNames_[buf];
    if (t.rank() == 0) {
      snap.value = b_->load(buf, {}, snap.srcName, {}, true);
    } else {
      snap.value = materializeComp(t.shape, t.dtype, [&](const std::vector<Ix>& ix) {
                     std::vector<int> idx;
                     for (const Ix& i : ix)
                       idx.push_back(i.value);
                     return b_->load(buf, idx, snap.srcName, {}, true);
                   }).value;
    }
    snapshots_[buf] = snap;
  }
}

/// var[prefix..., rest...] = value[rest...], element by element (the value was computed from
/// snapshots, so writing in place is safe).
void Lowerer::storeInto(const Sym& var, const std::vector<Ix>& prefix, const Expr& value,
                        SrcRange loc) {
  const ir::Type t = f_->types[var.value]; // a copy: emitting new values may reallocate types
  std::vector<Poly> rest(t.shape.begin() + static_cast<long>(prefix.size()), t.shape.end());
  TInfo vt = typeOf(value);
  auto store = [&](const std::vector<Ix>& idx) {
    ir::Instr st;
    st.op = Op::BufStore;
    st.ival = ++nextStore_;
    st.args.push_back(var.value);
    bool proven = true;
    for (const Ix& i : prefix) {
      st.args.push_back(i.value);
      proven = proven && i.proven;
    }
    for (const Ix& i : idx)
      st.args.push_back(i.value);
    st.args.push_back(emitElem(value, vt.rank() == 0 ? std::vector<Ix>{} : idx, t.dtype));
    st.name = var.srcName;
    st.loc = loc;
    st.checked = proven;
    b_->emitEffect(std::move(st));
    return -1;
  };
  if (rest.empty()) {
    store({});
    return;
  }
  prepare(value);
  auto saved = pre_;
  b_->forLoop(rest, [&](const std::vector<int>& j) {
    std::vector<Ix> ix;
    for (int v : j)
      ix.push_back({v, true});
    return store(ix);
  });
  pre_ = saved;
}

/// var, assignment, element writes and for loops (LANGUAGE.md, Loops (v2)).
bool Lowerer::lowerStateStmt(const ast::Stmt& s) {
  using ast::StmtKind;
  auto poison = [&] {
    Sym p;
    p.type = errorType();
    bind(s.name, p);
    return false;
  };
  switch (s.kind) {
  case StmtKind::Var: {
    TInfo t = typeOf(*s.value);
    if (t.error) return poison();
    if (t.isTuple()) {
      error(s.value->range, "a var cannot hold a tuple");
      return poison();
    }
    Sym v;
    {
      StatementScope scope(*this);
      takeSnapshots({s.value.get()});
      v.kind = Sym::Var;
      v.type = t;
      // A var is typed by its first value; an untyped float literal takes the function's
      // float type (f32 in a function whose float parameters are all f32).
      if (t.weak && isFloat(t.dtype)) v.type.dtype = inst().floatType;
      v.type.weak = false;
      v.value = b_->bufZeros(v.type.ir());
      v.srcName = s.name;
      varNames_[v.value] = s.name;
      storeInto(v, {}, *s.value, s.range);
    }
    bind(s.name, v);
    return true;
  }
  case StmtKind::Assign:
  case StmtKind::AssignIndexed: {
    const Sym* found = lookup(s.name);
    if (!found) {
      error(s.nameRange, "unknown name '" + s.name + "'");
      return false;
    }
    if (found->type.error) return false;
    if (found->kind != Sym::Var) {
      error(s.nameRange,
            "cannot assign to '" + s.name + "': it is not a var (declare it with var)");
      return false;
    }
    Sym var = *found;
    TInfo want = var.type;
    std::vector<const Expr*> exprs{s.value.get()};
    for (const auto& x : s.subscripts)
      exprs.push_back(x.get());
    bool ok = true;
    if (static_cast<int>(s.subscripts.size()) > want.rank()) {
      error(s.range,
            "too many subscripts: " + std::to_string(s.subscripts.size()) + " for " + want.str());
      return false;
    }
    for (size_t k = 0; k < s.subscripts.size(); ++k) {
      TInfo st = typeOf(*s.subscripts[k]);
      if (st.error) {
        ok = false;
        continue;
      }
      if (st.dtype != DType::I64 || st.rank() != 0) {
        error(s.subscripts[k]->range,
              "a subscript must be an i64 scalar, got " + st.str() + divHint(*s.subscripts[k]));
        ok = false;
        continue;
      }
      if (!proveSubscript(*s.subscripts[k], want.shape[k], s.name, static_cast<int>(k))) ok = false;
    }
    TInfo vt = typeOf(*s.value);
    if (!ok || vt.error) return false;
    want.shape.erase(want.shape.begin(),
                     want.shape.begin() + static_cast<long>(s.subscripts.size()));
    bool dtypeOk = vt.dtype == want.dtype || (vt.weak && isFloat(want.dtype)) ||
                   (vt.dtype == DType::I64 && isFloat(want.dtype));
    if (vt.isTuple() || !dtypeOk || (vt.rank() != 0 && vt.shape != want.shape)) {
      error(s.value->range, "'" + s.name + (s.subscripts.empty() ? "" : "[...]") + "' is " +
                                want.str() + " but the value is " + vt.str() +
                                (vt.weak ? "" : " (a var keeps the type of its first value)") +
                                divHint(*s.value));
      return false;
    }
    StatementScope scope(*this);
    takeSnapshots(exprs);
    std::vector<Ix> prefix;
    for (const auto& x : s.subscripts) {
      auto pv = proven_.find({inst().id, x.get()});
      prefix.push_back({emitScalar(*x, DType::I64), pv != proven_.end() && pv->second});
    }
    storeInto(var, prefix, *s.value, s.range);
    return true;
  }
  case StmtKind::For: {
    // Bounds built from sizes are symbolic (subscripts with t can be proven in range); any
    // other i64 bounds are computed on entry and bound to a fresh size name (`size.def`), and
    // subscripts with t are then checked at run time.
    std::function<bool(const Expr&)> symbolic = [&](const Expr& e) -> bool {
      if (e.kind == ExprKind::Number) return e.isInt;
      if (e.kind == ExprKind::Name) {
        const Sym* sym = lookup(e.name);
        return sym && sym->kind == Sym::Size;
      }
      if (e.kind == ExprKind::Binary && (e.name == "+" || e.name == "-" || e.name == "*"))
        return symbolic(*e.args[0]) && symbolic(*e.args[1]);
      if (e.kind == ExprKind::Unary && e.name == "-") return symbolic(*e.args[0]);
      if (e.kind == ExprKind::Call && e.name == "div" && e.args.size() == 2)
        return symbolic(*e.args[0]) && e.args[1]->kind == ExprKind::Number;
      return false;
    };
    std::optional<Poly> lo, hi;
    int loValue = -1;
    Poly count;
    // Bounds affine in enclosing indices (v3, triangular domains): the trip count is computed
    // where the loop starts, as for data-dependent bounds, but subscripts with t are proven
    // from the bounds' affine forms.
    std::shared_ptr<const Affine> depLo, depCount;
    if (symbolic(*s.lo) && symbolic(*s.hi)) {
      lo = extentOf(*s.lo);
      hi = extentOf(*s.hi);
      if (!lo || !hi) return false;
      count = *hi - *lo;
    } else {
      TInfo lt = typeOf(*s.lo), ht = typeOf(*s.hi);
      if (lt.error || ht.error) return false;
      for (const auto& [b, t] : {std::pair{s.lo.get(), lt}, std::pair{s.hi.get(), ht}})
        if (t.dtype != DType::I64 || t.rank() != 0 || t.isTuple()) {
          error(b->range, "a loop bound must be an i64 scalar, got " + t.str() + divHint(*b));
          return false;
        }
      if (mentionsIndex(*s.lo) || mentionsIndex(*s.hi)) {
        auto al = affine(*s.lo), ah = affine(*s.hi);
        if (al && ah) {
          Affine c = *ah;
          c.c0 = c.c0 - al->c0;
          for (const auto& [id, v] : al->coeff)
            c.coeff[id] -= v;
          depLo = std::make_shared<const Affine>(*al);
          depCount = std::make_shared<const Affine>(c);
        }
      }
      StatementScope scope(*this);
      takeSnapshots({s.lo.get(), s.hi.get()});
      loValue = emitScalar(*s.lo, DType::I64);
      int hiValue = emitScalar(*s.hi, DType::I64);
      // The trip count: hi - lo when hi > lo, else 0, fixed on entry. When hi - lo overflows
      // it is negative, and the loop fails on entry (never runs zero times).
      int diff = b_->binary(Op::Sub, hiValue, loValue);
      int n = b_->select(b_->binary(Op::Gt, hiValue, loValue), diff, b_->constInt(0));
      std::string name = "#trips" + std::to_string(nextIndex_++);
      ir::Instr def;
      def.op = Op::SizeDef;
      def.name = name;
      def.args = {n};
      b_->emitEffect(std::move(def));
      count = Poly::var(name);
    }
    bool ok = true;
    ir::Instr loop;
    loop.op = Op::For;
    loop.ival = 1; // sequential: iterations carry state
    loop.loc = s.range;
    loop.extents = {count};
    int k = f_->newValue(ir::Type{DType::I64, {}});
    auto saved = pre_;
    loop.regions.push_back(b_->buildBlock({k}, [&] {
      int nesting = exprNesting_;
      exprNesting_ = 0; // the body's statements are statements
      inst().scopes.emplace_back();
      Sym t;
      if (lo) {
        t.kind = Sym::Index;
        t.poly = count;
        t.offset = *lo;
        t.indexId = nextIndex_++;
        t.value =
            lo->isConst() && *lo->constValue() == 0 ? k : b_->binary(Op::Add, k, b_->size(*lo));
      } else if (depCount) {
        t.kind = Sym::Index;
        t.poly = count;
        t.offA = depLo;
        t.extA = depCount;
        t.indexId = nextIndex_++;
        t.value = b_->binary(Op::Add, k, loValue);
      } else {
        t.kind = Sym::Val; // a plain i64: subscripts with it are checked at run time
        t.type = scalarT(DType::I64);
        t.value = b_->binary(Op::Add, k, loValue);
      }
      bind(s.name, t);
      bool mayNotRun = !lo && !depCount; // data-dependent bounds: no entry checks inside
      conditional_ += mayNotRun;
      for (const auto& st : s.body->stmts)
        ok = lowerStmt(st) && ok;
      conditional_ -= mayNotRun;
      inst().scopes.pop_back();
      exprNesting_ = nesting;
      return -1;
    }));
    pre_ = saved;
    b_->emitEffect(std::move(loop));
    return ok;
  }
  default: return false;
  }
}

bool Lowerer::lowerStmt(const ast::Stmt& s) {
  SrcRange outer = b_->defaultLoc; // (statements nest: a loop's body)
  b_->defaultLoc = s.range;
  bool ok = lowerStmtAt(s);
  b_->defaultLoc = outer;
  return ok;
}

bool Lowerer::lowerStmtAt(const ast::Stmt& s) {
  using ast::StmtKind;
  switch (s.kind) {
  case StmtKind::Var:
  case StmtKind::Assign:
  case StmtKind::AssignIndexed:
  case StmtKind::For: return lowerStateStmt(s);
  case StmtKind::Let: {
    StatementScope scope(*this);
    takeSnapshots({s.value.get()});
    TInfo t = typeOf(*s.value);
    if (t.error) {
      Sym p;
      p.type = errorType();
      bind(s.name, p);
      return false;
    }
    if (t.isTuple()) {
      error(s.range, "this gives a tuple " + t.str() + "; unpack it with let (a, b) = ...");
      Sym p;
      p.type = errorType();
      bind(s.name, p);
      return false;
    }
    Sym v = materialize(*s.value);
    if (v.srcName.empty() || s.value->kind != ExprKind::Name) v.srcName = s.name;
    bind(s.name, v);
    return true;
  }
  case StmtKind::LetTuple: {
    StatementScope scope(*this);
    takeSnapshots({s.value.get()});
    TInfo t = typeOf(*s.value);
    bool ok = !t.error;
    if (ok && (!t.isTuple() || t.tuple.size() != s.names.size())) {
      error(s.range,
            "cannot unpack " + t.str() + " into " + std::to_string(s.names.size()) + " names");
      ok = false;
    }
    if (ok && !(s.value->kind == ExprKind::Call && fns_.count(s.value->name))) {
      error(s.value->range, "only a call's results can be unpacked");
      ok = false;
    }
    std::vector<Sym> parts;
    if (ok) inlineCall(*s.value, *fns_[s.value->name], &parts);
    // (A derivative that could not be built gives no parts; the error is reported.)
    ok = ok && parts.size() == s.names.size();
    for (size_t k = 0; k < s.names.size(); ++k) {
      Sym p;
      if (ok) {
        p = parts[k];
        p.srcName = s.names[k].first;
      } else {
        p.type = errorType();
      }
      if (s.names[k].first != "_") bind(s.names[k].first, p);
    }
    return ok;
  }
  case StmtKind::LetIndexed: {
    StatementScope scope(*this);
    takeSnapshots({s.value.get()});
    std::vector<Poly> extents;
    if (!declareIndices(s.indices, *s.value, extents)) {
      Sym p;
      p.type = errorType();
      bind(s.name, p);
      return false;
    }
    inst().scopes.emplace_back();
    std::vector<int> ids;
    for (size_t k = 0; k < s.indices.size(); ++k) {
      Sym x;
      x.kind = Sym::Index;
      x.poly = extents[k];
      x.indexId = nextIndex_++;
      ids.push_back(x.indexId);
      bind(s.indices[k].name, x);
    }
    TInfo t = typeOf(*s.value);
    bool ok = !t.error;
    if (ok && t.isTuple()) {
      error(s.value->range, "a comprehension element cannot be a tuple");
      ok = false;
    }
    Sym result;
    if (ok) {
      std::set<std::string> names;
      for (const auto& d : s.indices)
        names.insert(d.name);
      hoistInvariant(*s.value, names);
      DType d = t.dtype;
      std::vector<Poly> shape = extents;
      shape.insert(shape.end(), t.shape.begin(), t.shape.end());
      size_t nu = s.indices.size();
      result = materializeComp(shape, d, [&](const std::vector<Ix>& ix) {
        for (size_t k = 0; k < nu; ++k) {
          Sym& x = inst().scopes.back()[s.indices[k].name];
          x.value = ix[k].value;
        }
        std::vector<Ix> rest(ix.begin() + static_cast<long>(nu), ix.end());
        if (!rest.empty()) prepare(*s.value);
        return emitElem(*s.value, rest, d);
      });
      result.srcName = s.name;
      result.type.weak = t.weak;
      // A computed extent that may be negative fails the call at the extent, not the statement.
      for (size_t k = 0; k < nu; ++k)
        if (s.indices[k].extent && !provable(extents[k]))
          for (auto it = b_->current().body.rbegin(); it != b_->current().body.rend(); ++it)
            if (it->result == result.value && it->op == Op::Comp) {
              it->loc = s.indices[k].extent->range;
              break;
            }
    } else {
      result.type = errorType();
    }
    inst().scopes.pop_back();
    bind(s.name, result);
    return ok;
  }
  }
  return false;
}

Sym Lowerer::lowerBlock(const ast::Block& b, std::vector<Sym>* tupleOut) {
  SrcRange outerLoc = b_->defaultLoc; // (an if's block sits inside a statement)
  inst().scopes.emplace_back();
  bool ok = true;
  for (const auto& s : b.stmts)
    ok = lowerStmt(s) && ok;
  Sym r;
  std::optional<StatementScope> scope;
  if (b.result) {
    b_->defaultLoc = b.result->range;
    scope.emplace(*this);
    takeSnapshots({b.result.get()});
  }
  if (!b.result) {
    r.type = errorType();
  } else {
    TInfo t = typeOf(*b.result);
    if (!ok || t.error) {
      r.type = errorType();
    } else if (t.isTuple()) {
      if (b.result->kind == ExprKind::Tuple) {
        for (const auto& a : b.result->args) {
          Sym p = materialize(*a);
          if (tupleOut) tupleOut->push_back(p);
        }
      } else if (b.result->kind == ExprKind::Call && fns_.count(b.result->name)) {
        inlineCall(*b.result, *fns_[b.result->name], tupleOut);
      } else {
        error(b.result->range, "a tuple can only be returned or unpacked");
      }
      r.type = t;
    } else {
      r = materialize(*b.result);
    }
  }
  scope.reset();
  inst().scopes.pop_back();
  b_->defaultLoc = outerLoc;
  return r;
}

std::optional<ir::Function> Lowerer::lower(const ast::Function& fn) {
  // Extent arithmetic is checked (compiler/support/checked.hpp); where an overflow was not
  // caught at its own expression, it is reported at the function.
  try {
    return lowerChecked(fn);
  } catch (const checked::SizeError& e) {
    error(fn.nameRange, std::string(e.what()) + " in the extents of '" + fn.name + "'");
    return std::nullopt;
  }
}

std::optional<ir::Function> Lowerer::lowerChecked(const ast::Function& fn) {
  ir::Function f;
  f.name = fn.name;
  f.file = &diags_.file();
  f_ = &f;
  b_ = std::make_unique<ir::Builder>(f);
  pre_.clear();
  divSizes_.clear();
  entryChecks_.clear();
  conditional_ = 0;
  auto in = std::make_unique<Inst>();
  in->id = nextInst_++;
  in->fn = &fn;
  in->inlined = false;
  in->floatType = floatTypeOf(fn);
  in->scopes.emplace_back();
  stack_.clear();
  stack_.push_back(std::move(in));
  size_t errorsBefore = diags_.diagnostics().size();
  bool ok = true;

  // Parameters and the size names their types bind.
  std::map<std::string, Poly> sizes;
  std::set<std::string> names;
  for (size_t k = 0; k < fn.params.size(); ++k) {
    const auto& p = fn.params[k];
    if (!names.insert(p.name).second) {
      error(p.range, "parameter '" + p.name + "' is declared twice");
      ok = false;
    }
    auto t = typeFromAst(p.type, true, nullptr);
    if (!t) {
      ok = false;
      continue;
    }
    if (t->isTuple()) {
      error(p.type.range, "a parameter cannot be a tuple");
      ok = false;
      continue;
    }
    for (const auto& d : t->shape)
      for (const auto& n : d.names())
        sizes[n] = Poly::var(n);
    ir::Instr i;
    i.op = Op::Param;
    i.name = p.name;
    i.ival = static_cast<int64_t>(k);
    int v = b_->emit(std::move(i), t->ir());
    f.params.push_back(v);
    f.paramNames.push_back(p.name);
    f.paramTypes.push_back(t->ir());
    Sym s;
    s.type = *t;
    s.value = v;
    s.srcName = p.name;
    bind(p.name, s);
  }
  for (const auto& [n, p] : sizes) {
    if (names.count(n)) {
      for (const auto& prm : fn.params)
        if (prm.name == n) error(prm.range, "'" + n + "' is both a parameter and a size name");
      ok = false;
      continue;
    }
    Sym s;
    s.kind = Sym::Size;
    s.poly = p;
    bind(n, s);
  }
  auto rt = typeFromAst(fn.result, false, &sizes);
  if (!rt) ok = false;
  if (!ok) return std::nullopt;

  std::vector<Sym> tuple;
  Sym r;
  auto rule = rules_.find(fn.name);
  if (!checkOnly_ && rule != rules_.end() && !inRule_.count(fn.name)) {
    // A function with a rule is differentiated by its rule, called or not (`slopec grad f`,
    // `slopec check f`): its body is lowered as a call of itself.
    std::vector<Sym> args;
    for (const auto& p : fn.params)
      args.push_back(*lookup(p.name));
    r = inlineWithRule(fn, *rule->second, args, sizes, *rt, fn.nameRange);
  } else {
    r = lowerBlock(fn.body, &tuple);
  }
  if (r.type.error || diags_.diagnostics().size() != errorsBefore) return std::nullopt;

  // The result must match the declared type (a literal adapts to the declared float type).
  auto same = [&](const TInfo& got, const TInfo& want) {
    if (got.shape != want.shape) return false;
    if (got.dtype == want.dtype) return true;
    return got.weak &&
           (isFloat(want.dtype) || (got.dtype == DType::I64 && want.dtype == DType::I64));
  };
  const ast::Expr& re = *fn.body.result;
  if (rt->isTuple() != r.type.isTuple() ||
      (rt->isTuple() && rt->tuple.size() != r.type.tuple.size())) {
    error(re.range, "function '" + fn.name + "' returns " + rt->str() + " but its body gives " +
                        r.type.str());
    return std::nullopt;
  }
  std::vector<Sym> outs = rt->isTuple() ? tuple : std::vector<Sym>{r};
  std::vector<TInfo> wants = rt->isTuple() ? rt->tuple : std::vector<TInfo>{*rt};
  std::vector<TInfo> gots = rt->isTuple() ? r.type.tuple : std::vector<TInfo>{r.type};
  for (size_t k = 0; k < wants.size(); ++k) {
    if (!same(gots[k], wants[k])) {
      error(re.range, "function '" + fn.name + "' returns " + rt->str() + " but its body gives " +
                          r.type.str());
      return std::nullopt;
    }
  }
  for (size_t k = 0; k < outs.size(); ++k)
    f.body.yields.push_back(yieldValue(outs[k], wants[k].dtype));
  f.entryChecks = entryChecks_;
  return f;
}

} // namespace

namespace {

// ---------------------------------------------------------------------------------------------
// Inlined size. Calls are inlined, so a function's lowered size is its own plus that of
// everything it calls, once per call site: a chain of functions that each call the next twice
// doubles per level (40 levels: 2^40 copies), which would hang and then run out of memory.
// Counted on the AST (nodes: expressions and statements), in doubles so that nothing
// overflows, before anything is lowered.

/// Nodes of one expression or block, and the calls in them to functions of the file.
struct OwnSize {
  double nodes = 0;
  std::vector<const Expr*> calls;
};
void ownSize(const Expr* e, const std::map<std::string, const ast::Function*>& fns, OwnSize& out);
void ownSize(const ast::Block& b, const std::map<std::string, const ast::Function*>& fns,
             OwnSize& out) {
  for (const auto& st : b.stmts) {
    out.nodes += 1;
    ownSize(st.value.get(), fns, out);
    ownSize(st.lo.get(), fns, out);
    ownSize(st.hi.get(), fns, out);
    for (const auto& x : st.subscripts)
      ownSize(x.get(), fns, out);
    if (st.body) ownSize(*st.body, fns, out);
  }
  ownSize(b.result.get(), fns, out);
}
void ownSize(const Expr* e, const std::map<std::string, const ast::Function*>& fns, OwnSize& out) {
  if (!e) return;
  out.nodes += 1;
  if (e->kind == ExprKind::Call && fns.count(e->name)) out.calls.push_back(e);
  for (const auto& a : e->args)
    ownSize(a.get(), fns, out);
  ownSize(e->base.get(), fns, out);
  ownSize(e->cond.get(), fns, out);
  if (e->thenBlock) ownSize(*e->thenBlock, fns, out);
  if (e->elseBlock) ownSize(*e->elseBlock, fns, out);
}

/// 1,234,567 (with separators) up to a quadrillion, 1.23e+18 past it.
std::string roughCount(double n) {
  char buf[64];
  if (n >= 1e15) {
    std::snprintf(buf, sizeof buf, "%.3g", n);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%.0f", n);
  std::string digits = buf, out;
  for (size_t k = 0; k < digits.size(); ++k) {
    if (k > 0 && (digits.size() - k) % 3 == 0) out += ',';
    out += digits[k];
  }
  return out;
}

/// Reports each function whose calls, inlined, make it larger than kMaxInlinedNodes, at the
/// call that adds the most; only where the callees are within the limit themselves (their
/// callers are then too large as well, and one error at the cause is clearer than a cascade).
void checkInlinedSize(const ast::Module& m, DiagSink& diags) {
  std::map<std::string, const ast::Function*> fns;
  for (const auto& f : m.functions)
    fns.emplace(f.name, &f);
  std::map<std::string, std::string> ruleOf; // F -> its `@derivative(F)` rule
  for (const auto& f : m.functions)
    if (!f.derivativeOf.empty() && f.derivativeOf != f.name && fns.count(f.derivativeOf))
      ruleOf.emplace(f.derivativeOf, f.name);
  std::map<std::string, double> total; // inlined size, per function
  std::set<std::string> open;          // being counted (a cycle is reported elsewhere)
  std::function<double(const std::string&)> size = [&](const std::string& name) -> double {
    auto it = total.find(name);
    if (it != total.end()) return it->second;
    if (!open.insert(name).second) return 0;
    OwnSize own;
    ownSize(fns.at(name)->body, fns, own);
    double t = own.nodes;
    auto rule = ruleOf.find(name); // a call of a function with a rule inlines the rule too
    if (rule != ruleOf.end()) t += size(rule->second);
    const Expr* biggest = nullptr;
    double biggestSize = -1;
    bool calleeTooLarge = false;
    for (const Expr* c : own.calls) {
      double cs = size(c->name);
      t += cs;
      calleeTooLarge = calleeTooLarge || cs > kMaxInlinedNodes;
      if (cs > biggestSize) biggest = c, biggestSize = cs;
    }
    if (t > kMaxInlinedNodes && biggest && !calleeTooLarge)
      diags.error(
          biggest->nameRange,
          "function '" + name + "' is too large once its calls are inlined: " + roughCount(t) +
              " operations, more than the limit of " + roughCount(kMaxInlinedNodes) +
              "; this call to '" + biggest->name + "' alone adds " + roughCount(biggestSize) +
              " (every call is inlined: call once and reuse the value with let)");
    open.erase(name);
    total[name] = t;
    return t;
  };
  for (const auto& f : m.functions)
    if (fns.at(f.name) == &f) size(f.name);
}

} // namespace

bool checkModule(const ast::Module& m, DiagSink& diags) {
  Lowerer l(m, diags, true);
  for (const auto& f : m.functions)
    l.lower(f);
  if (!diags.hasErrors()) checkInlinedSize(m, diags);
  return !diags.hasErrors();
}

std::optional<ir::Function> lowerFunction(const ast::Module& m, const std::string& name,
                                          DiagSink& diags, const DerivativeSource& derivatives,
                                          const std::set<std::string>& plain) {
  Lowerer l(m, diags, false, derivatives);
  l.withoutRules(plain);
  for (const auto& f : m.functions)
    if (f.name == name) return l.lower(f);
  return std::nullopt;
}

bool callsDerivative(const ast::Function& fn) {
  std::vector<const Expr*> calls;
  collectCalls(fn.body, calls);
  for (const Expr* c : calls)
    if (!c->derivative.empty()) return true;
  return false;
}

} // namespace slope
