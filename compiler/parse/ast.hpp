// The abstract syntax tree of a .slope file.
//
// The AST is what the parser produced, nothing more: names are unresolved and nothing is
// typed. Every node carries the byte range it was parsed from, so every later diagnostic can
// point at the source. Nodes are small structs shared by pointer; the checker reads them and
// builds Tensor IR, it never mutates them.
#pragma once

#include "compiler/support/diagnostics.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace slope::ast {

struct Expr;
struct Block;
using ExprP = std::shared_ptr<Expr>;
using BlockP = std::shared_ptr<Block>;

/// A type as written: `f64`, `f32[n, 3]`, `i64[2 * n]`, or a tuple `(f64, f64[n])`.
struct TypeExpr {
  SrcRange range;
  std::string dtype;              // "f64", "f32", "i64", "bool"; empty for a tuple
  bool hasShape = false;          // `f64[...]` rather than `f64`
  std::vector<ExprP> dims;        // extent expressions (checked later: sizes, literals, + - *)
  std::vector<TypeExpr> elements; // non-empty only for a tuple type
  bool isTuple() const { return !elements.empty(); }
};

/// An index declaration of a comprehension or indexed reduction: `i` or `i: n - 1`.
struct IndexDecl {
  std::string name;
  SrcRange range; // the name
  ExprP extent;   // null when the extent is to be inferred
};

enum class ExprKind {
  Number,    // literal: isInt ? ival : fval
  Bool,      // `true` / `false`
  Name,      // a variable, parameter, size name or index
  Unary,     // op: "-" or "!"
  Binary,    // op: + - * / % @ ^ < <= > >= == != && ||
  Call,      // name(args...); `zeros(f64[n])` / `ones(...)` carry typeArg instead of args;
             // `grad(f, wrt...)(args...)` and jvp/hvp: a Call of f with `derivative` set
  Subscript, // base[args...]
  Reduce,    // name[indices](args[0]): indexed reduction, e.g. sum[j](A[i, j] * v[j])
  TensorLit, // [args...]
  If,        // if cond { thenBlock } else { elseBlock }
  Tuple,     // (args[0], args[1], ...), two or more elements
};

struct Expr {
  ExprKind kind;
  SrcRange range;
  // Number
  bool isInt = false;
  int64_t ival = 0;
  double fval = 0;
  // Bool
  bool bval = false;
  // Name (the identifier), Unary/Binary (the operator), Call/Reduce (the function name)
  std::string name;
  SrcRange nameRange;              // Call/Reduce: the callee name alone
  std::vector<ExprP> args;         // operands, call arguments, subscripts, elements
  ExprP base;                      // Subscript: the subscripted expression
  std::vector<IndexDecl> indices;  // Reduce
  std::optional<TypeExpr> typeArg; // Call of zeros/ones
  // Call of a derivative (v3, LANGUAGE.md "Derivatives in the language"): "grad", "jvp" or
  // "hvp", with `name` the function differentiated and `wrt` the parameters named after it
  // (all float parameters when empty); `nameRange` is then f's name, `derivativeRange` the
  // keyword.
  std::string derivative;
  SrcRange derivativeRange;
  std::vector<std::pair<std::string, SrcRange>> wrt;
  ExprP cond;                  // If
  BlockP thenBlock, elseBlock; // If (`else if` nests an If inside elseBlock)
};

enum class StmtKind {
  Let,           // let name = value;
  LetIndexed,    // let name[indices] = value;         (a comprehension)
  LetTuple,      // let (names...) = value;
  Var,           // var name = value;                  (v2)
  Assign,        // name = value;                      (v2)
  AssignIndexed, // name[subscripts] = value;          (v2)
  For,           // for name in lo..hi { body }        (v2)
};

struct Stmt {
  StmtKind kind;
  SrcRange range;   // the whole statement
  std::string name; // bound / assigned / loop variable name
  SrcRange nameRange;
  std::vector<IndexDecl> indices;                      // LetIndexed
  std::vector<std::pair<std::string, SrcRange>> names; // LetTuple
  std::vector<ExprP> subscripts;                       // AssignIndexed
  ExprP value;                                         // Let*, Var, Assign*
  ExprP lo, hi;                                        // For
  BlockP body;                                         // For (its result is null)
};

/// `{ stmt* expr }`: a function body or an if branch; a for body has no result expression.
struct Block {
  SrcRange range;
  std::vector<Stmt> stmts;
  ExprP result;
};

struct Param {
  std::string name;
  SrcRange range;
  TypeExpr type;
};

struct Function {
  std::string name;
  SrcRange range; // `fn` to the closing brace
  SrcRange nameRange;
  std::vector<Param> params;
  TypeExpr result;
  Block body;
  /// `@derivative(F)` before `fn`: this function is F's reverse-mode rule (README, "User derivative
  /// rules").
  std::string derivativeOf;
  SrcRange derivativeOfRange; // F in the attribute
};

struct Module {
  std::vector<Function> functions;
};

} // namespace slope::ast
