// Tests of the Slope parser (compiler/parse/parser.cpp).
#include "compiler/parse/parser.hpp"

#include "compiler/pipeline.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace slope {
namespace {

using ast::ExprKind;
using ast::StmtKind;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

std::string sexpr(const ast::ExprP& e);

std::string typeStr(const ast::TypeExpr& t) {
  if (t.isTuple()) {
    std::string s = "(";
    for (size_t i = 0; i < t.elements.size(); ++i) {
      if (i) s += ", ";
      s += typeStr(t.elements[i]);
    }
    return s + ")";
  }
  std::string s = t.dtype;
  if (t.hasShape) {
    s += "[";
    for (size_t i = 0; i < t.dims.size(); ++i) {
      if (i) s += ", ";
      s += sexpr(t.dims[i]);
    }
    s += "]";
  }
  return s;
}

std::string declsStr(const std::vector<ast::IndexDecl>& ds) {
  std::string s = "[";
  for (size_t i = 0; i < ds.size(); ++i) {
    if (i) s += " ";
    s += ds[i].name;
    if (ds[i].extent) {
      s += ":";
      s += sexpr(ds[i].extent);
    }
  }
  return s + "]";
}

std::string blockStr(const ast::Block& b);

std::string stmtStr(const ast::Stmt& s) {
  switch (s.kind) {
  case StmtKind::Let: return "(let " + s.name + " " + sexpr(s.value) + ")";
  case StmtKind::LetIndexed:
    return "(let " + s.name + declsStr(s.indices) + " " + sexpr(s.value) + ")";
  case StmtKind::LetTuple: {
    std::string r = "(let (";
    for (size_t i = 0; i < s.names.size(); ++i) {
      if (i) r += " ";
      r += s.names[i].first;
    }
    return r + ") " + sexpr(s.value) + ")";
  }
  case StmtKind::Var: return "(var " + s.name + " " + sexpr(s.value) + ")";
  case StmtKind::Assign: return "(= " + s.name + " " + sexpr(s.value) + ")";
  case StmtKind::AssignIndexed: {
    std::string r = "(= (index " + s.name;
    for (auto& a : s.subscripts) {
      r += " ";
      r += sexpr(a);
    }
    return r + ") " + sexpr(s.value) + ")";
  }
  case StmtKind::For:
    return "(for " + s.name + " " + sexpr(s.lo) + " " + sexpr(s.hi) + " " + blockStr(*s.body) + ")";
  }
  return "?";
}

std::string blockStr(const ast::Block& b) {
  std::string s = "{";
  for (auto& st : b.stmts)
    s += stmtStr(st) + " ";
  if (b.result) s += sexpr(b.result);
  return s + "}";
}

/// The expression as an s-expression: `(+ a (* b c))`.
std::string sexpr(const ast::ExprP& e) {
  if (!e) return "<null>";
  auto list = [&](const std::string& head, const std::vector<ast::ExprP>& args) {
    std::string s = "(";
    s += head;
    for (auto& a : args) {
      s += " ";
      s += sexpr(a);
    }
    return s + ")";
  };
  switch (e->kind) {
  case ExprKind::Number: {
    if (e->isInt) return std::to_string(e->ival);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%gf", e->fval);
    return buf;
  }
  case ExprKind::Bool: return e->bval ? "true" : "false";
  case ExprKind::Name: return e->name;
  case ExprKind::Unary:
  case ExprKind::Binary: return list(e->name, e->args);
  case ExprKind::Call:
    if (e->typeArg) return "(call " + e->name + " " + typeStr(*e->typeArg) + ")";
    return list("call " + e->name, e->args);
  case ExprKind::Subscript: return list("index " + sexpr(e->base), e->args);
  case ExprKind::Reduce: return list(e->name + declsStr(e->indices), e->args);
  case ExprKind::TensorLit: return list("tensor", e->args);
  case ExprKind::If:
    return "(if " + sexpr(e->cond) + " " + blockStr(*e->thenBlock) + " " + blockStr(*e->elseBlock) +
           ")";
  case ExprKind::Tuple: return list("tuple", e->args);
  }
  return "?";
}

/// A parsed file together with the objects its diagnostics refer to.
struct Parsed {
  std::unique_ptr<SourceFile> file;
  std::unique_ptr<DiagSink> diags;
  ast::Module module;

  /// "LINE:COL: MESSAGE" of every diagnostic, in report order.
  std::vector<std::string> errors() const {
    std::vector<std::string> out;
    for (auto& d : diags->diagnostics()) {
      LineCol lc = file->lineCol(d.range.begin);
      out.push_back(std::to_string(lc.line) + ":" + std::to_string(lc.column) + ": " + d.message);
    }
    return out;
  }
  std::string text(SrcRange r) const { return file->text().substr(r.begin, r.end - r.begin); }
};

Parsed parse(const std::string& text) {
  Parsed p;
  p.file = std::make_unique<SourceFile>("test.slope", text);
  p.diags = std::make_unique<DiagSink>(*p.file);
  p.module = parseModule(*p.file, *p.diags);
  return p;
}

/// Parses `fn f(x: f64) -> f64 { BODY }` and returns the parsed file.
Parsed parseBody(const std::string& body) {
  return parse("fn f(x: f64) -> f64 {\n" + body + "\n}\n");
}

/// The s-expression of a block's result expression; failures are test failures.
std::string exprOf(const std::string& exprText) {
  Parsed p = parseBody(exprText);
  EXPECT_FALSE(p.diags->hasErrors()) << exprText << "\n" << p.diags->render();
  if (p.module.functions.size() != 1) return "<no function>";
  return sexpr(p.module.functions[0].body.result);
}

/// The statements of a body, as s-expressions.
std::vector<std::string> stmtsOf(const std::string& body) {
  Parsed p = parseBody(body);
  EXPECT_FALSE(p.diags->hasErrors()) << body << "\n" << p.diags->render();
  std::vector<std::string> out;
  if (p.module.functions.size() != 1) return out;
  for (auto& s : p.module.functions[0].body.stmts)
    out.push_back(stmtStr(s));
  return out;
}

/// The diagnostics of a whole file.
std::vector<std::string> errorsOf(const std::string& text) {
  return parse(text).errors();
}

using Strings = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

TEST(ParserPrecedence, PowerBindsTighterThanUnaryMinus) {
  EXPECT_EQ(exprOf("-x^2"), "(- (^ x 2))");
  EXPECT_EQ(exprOf("-x * y"), "(* (- x) y)");
  EXPECT_EQ(exprOf("- -x"), "(- (- x))");
  EXPECT_EQ(exprOf("!a && b"), "(&& (! a) b)");
}

TEST(ParserPrecedence, PowerIsRightAssociativeAndTakesUnaryExponent) {
  EXPECT_EQ(exprOf("2^3^2"), "(^ 2 (^ 3 2))");
  EXPECT_EQ(exprOf("x^-1"), "(^ x (- 1))");
  EXPECT_EQ(exprOf("2^-x^2"), "(^ 2 (- (^ x 2)))");
  EXPECT_EQ(exprOf("A[i][j]^2"), "(^ (index (index A i) j) 2)");
  EXPECT_EQ(exprOf("f(x)^2 * 3"), "(* (^ (call f x) 2) 3)");
}

TEST(ParserPrecedence, ArithmeticLevels) {
  EXPECT_EQ(exprOf("a + b * c"), "(+ a (* b c))");
  EXPECT_EQ(exprOf("a * b + c"), "(+ (* a b) c)");
  EXPECT_EQ(exprOf("a - b - c"), "(- (- a b) c)");
  EXPECT_EQ(exprOf("a / b * c % d @ e"), "(@ (% (* (/ a b) c) d) e)");
  EXPECT_EQ(exprOf("(a + b) * c"), "(* (+ a b) c)");
  EXPECT_EQ(exprOf("W @ s + U @ xs[t]"), "(+ (@ W s) (@ U (index xs t)))");
  EXPECT_EQ(exprOf("2 * x^2 + 3 * x + 1"), "(+ (+ (* 2 (^ x 2)) (* 3 x)) 1)");
}

TEST(ParserPrecedence, LogicAndComparisons) {
  EXPECT_EQ(exprOf("a < b && c || d"), "(|| (&& (< a b) c) d)");
  EXPECT_EQ(exprOf("a || b && c"), "(|| a (&& b c))");
  EXPECT_EQ(exprOf("a + 1 <= b * 2"), "(<= (+ a 1) (* b 2))");
  EXPECT_EQ(exprOf("a >= b"), "(>= a b)");
  EXPECT_EQ(exprOf("a > b"), "(> a b)");
  EXPECT_EQ(exprOf("a == b"), "(== a b)");
  EXPECT_EQ(exprOf("a != b"), "(!= a b)");
  EXPECT_EQ(exprOf("!(a < b) || c == d && e"), "(|| (! (< a b)) (&& (== c d) e))");
}

TEST(ParserPrecedence, ComparisonsDoNotChain) {
  EXPECT_EQ(errorsOf("fn f(a: f64) -> bool { a < b < c }"),
            Strings{"1:30: comparison operators cannot be chained; use parentheses and '&&'"});
  EXPECT_EQ(exprOf("(a < b) == c"), "(== (< a b) c)");
}

TEST(ParserNumbers, Forms) {
  EXPECT_EQ(exprOf(".5"), "0.5f");
  EXPECT_EQ(exprOf("1e-3"), "0.001f");
  EXPECT_EQ(exprOf("3.0e8"), "3e+08f");
  EXPECT_EQ(exprOf("2.5"), "2.5f");
  EXPECT_EQ(exprOf("1E+2"), "100f");
  EXPECT_EQ(exprOf("2"), "2");
  EXPECT_EQ(exprOf("1e-999"), "0f"); // underflows to zero
}

TEST(ParserNumbers, IntegerLiteralFields) {
  Parsed p = parseBody("42");
  ASSERT_EQ(p.module.functions.size(), 1u);
  auto e = p.module.functions[0].body.result;
  EXPECT_EQ(e->kind, ExprKind::Number);
  EXPECT_TRUE(e->isInt);
  EXPECT_EQ(e->ival, 42);
  EXPECT_EQ(e->fval, 42.0);

  Parsed q = parseBody("2.0");
  auto f = q.module.functions[0].body.result;
  EXPECT_FALSE(f->isInt);
  EXPECT_EQ(f->fval, 2.0);

  Parsed big = parseBody("9223372036854775807");
  EXPECT_EQ(big.module.functions[0].body.result->ival, INT64_MAX);
}

TEST(ParserNumbers, TooLarge) {
  EXPECT_EQ(errorsOf("fn f() -> i64 {\n  9223372036854775808\n}"),
            Strings{"2:3: integer literal is too large for i64 (the largest is "
                    "9223372036854775807)"});
  EXPECT_EQ(errorsOf("fn f() -> f64 { 1e999 }"),
            Strings{"1:17: number literal is too large for f64"});
}

TEST(ParserNumbers, RangeInForLoopIsNotAFloat) {
  EXPECT_EQ(stmtsOf("var s = 0; for t in 0..T { s = s + t; } s"),
            (Strings{"(var s 0)", "(for t 0 T {(= s (+ s t)) })"}));
  EXPECT_EQ(stmtsOf("for t in 1..n-1 { } x"), Strings{"(for t 1 (- n 1) {})"});
  // `2.` alone is not a number.
  EXPECT_EQ(errorsOf("fn f() -> f64 { 2. }"), Strings{"1:18: unexpected character '.'"});
}

TEST(ParserExpr, NamesAndKeywordBoundaries) {
  EXPECT_EQ(exprOf("format + iffy + fnord + letter + in_ + true_ + elsewhere + variable"),
            "(+ (+ (+ (+ (+ (+ (+ format iffy) fnord) letter) in_) true_) elsewhere) variable)");
  EXPECT_EQ(exprOf("true && !false"), "(&& true (! false))");
  EXPECT_EQ(exprOf("_x1 + B_2"), "(+ _x1 B_2)");
}

TEST(ParserExpr, CallsSubscriptsTuples) {
  EXPECT_EQ(exprOf("f(a, b)"), "(call f a b)");
  EXPECT_EQ(exprOf("g()"), "(call g)");
  EXPECT_EQ(exprOf("x[i, j]"), "(index x i j)");
  EXPECT_EQ(exprOf("A[i][j]"), "(index (index A i) j)");
  EXPECT_EQ(exprOf("x[n - 1 - i]"), "(index x (- (- n 1) i))");
  EXPECT_EQ(exprOf("emb[tok[t], j]"), "(index emb (index tok t) j)");
  EXPECT_EQ(exprOf("(a, b)"), "(tuple a b)");
  EXPECT_EQ(exprOf("(sum(x), 2 * x, y)"), "(tuple (call sum x) (* 2 x) y)");
  EXPECT_EQ(exprOf("(a)"), "a");
  EXPECT_EQ(exprOf("f64(i) * x[i]"), "(* (call f64 i) (index x i))");
  EXPECT_EQ(exprOf("select(c, a, b)"), "(call select c a b)");
}

TEST(ParserExpr, ZerosAndOnesTakeAType) {
  EXPECT_EQ(exprOf("zeros(f64[n])"), "(call zeros f64[n])");
  EXPECT_EQ(exprOf("ones(f32[n, 2 * m])"), "(call ones f32[n, (* 2 m)])");
  EXPECT_EQ(exprOf("zeros(f64)"), "(call zeros f64)");
  EXPECT_EQ(exprOf("zeros(f64[n])[0]"), "(index (call zeros f64[n]) 0)");
  // Not a type: an ordinary call (the checker rejects it).
  EXPECT_EQ(exprOf("zeros(x)"), "(call zeros x)");
  EXPECT_EQ(exprOf("zeros(f64(x))"), "(call zeros (call f64 x))");

  Parsed p = parseBody("zeros(f64[n, 3])");
  auto e = p.module.functions[0].body.result;
  ASSERT_EQ(e->kind, ExprKind::Call);
  EXPECT_TRUE(e->args.empty());
  ASSERT_TRUE(e->typeArg.has_value());
  EXPECT_EQ(e->typeArg->dtype, "f64");
  EXPECT_TRUE(e->typeArg->hasShape);
  EXPECT_EQ(e->typeArg->dims.size(), 2u);
  EXPECT_EQ(p.text(e->nameRange), "zeros");
  EXPECT_EQ(p.text(e->typeArg->range), "f64[n, 3]");
}

TEST(ParserExpr, Reductions) {
  EXPECT_EQ(exprOf("sum[j](A[i, j] * v[j])"), "(sum[j] (* (index A i j) (index v j)))");
  EXPECT_EQ(exprOf("sum[j: m](x[j])"), "(sum[j:m] (index x j))");
  EXPECT_EQ(exprOf("max[i, j](x[i, j])"), "(max[i j] (index x i j))");
  EXPECT_EQ(exprOf("logsumexp[k: n - 1, l](y[k, l])"), "(logsumexp[k:(- n 1) l] (index y k l))");
  EXPECT_EQ(exprOf("sum(x)"), "(call sum x)");
  EXPECT_EQ(exprOf("1 + sum[i](x[i])^2"), "(+ 1 (^ (sum[i] (index x i)) 2))");

  Parsed p = parseBody("mean[t](x[t])");
  auto e = p.module.functions[0].body.result;
  ASSERT_EQ(e->kind, ExprKind::Reduce);
  EXPECT_EQ(e->name, "mean");
  EXPECT_EQ(p.text(e->nameRange), "mean");
  ASSERT_EQ(e->indices.size(), 1u);
  EXPECT_EQ(e->indices[0].name, "t");
  EXPECT_EQ(p.text(e->indices[0].range), "t");
  EXPECT_EQ(e->indices[0].extent, nullptr);
  EXPECT_EQ(e->args.size(), 1u);
}

TEST(ParserExpr, TensorLiterals) {
  EXPECT_EQ(exprOf("[1.0, 2.0]"), "(tensor 1f 2f)");
  EXPECT_EQ(exprOf("[[1, 2], [3, 4]]"), "(tensor (tensor 1 2) (tensor 3 4))");
  EXPECT_EQ(exprOf("[x]"), "(tensor x)");
}

TEST(ParserExpr, IfElse) {
  EXPECT_EQ(exprOf("if c { a } else { b }"), "(if c {a} {b})");
  EXPECT_EQ(exprOf("if x < 0 { let y = -x; y * 2 } else { x }"),
            "(if (< x 0) {(let y (- x)) (* y 2)} {x})");
  EXPECT_EQ(exprOf("1 + if c { 2 } else { 3 }"), "(+ 1 (if c {2} {3}))");
}

TEST(ParserExpr, ElseIfNestsAnIfInTheElseBlock) {
  Parsed p = parseBody("if a { 1 } else if b { 2 } else { 3 }");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  auto e = p.module.functions[0].body.result;
  EXPECT_EQ(sexpr(e), "(if a {1} {(if b {2} {3})})");
  ASSERT_EQ(e->kind, ExprKind::If);
  ASSERT_TRUE(e->elseBlock);
  EXPECT_TRUE(e->elseBlock->stmts.empty());
  ASSERT_TRUE(e->elseBlock->result);
  EXPECT_EQ(e->elseBlock->result->kind, ExprKind::If);
  EXPECT_EQ(p.text(e->elseBlock->range), "if b { 2 } else { 3 }");
  EXPECT_EQ(p.text(e->thenBlock->range), "{ 1 }");
}

// ---------------------------------------------------------------------------------------------
// Statements, types, items
// ---------------------------------------------------------------------------------------------

TEST(ParserStmt, EveryForm) {
  EXPECT_EQ(
      stmtsOf("let y = x + 1;\n"
              "let m[i, j] = A[i, j] * 2;\n"
              "let d[i: n - 1] = x[i + 1] - x[i];\n"
              "let (s, t) = g(x);\n"
              "var acc = 0;\n"
              "acc = acc + 1;\n"
              "buf[i, j] = 2;\n"
              "for t in 0..T { acc = acc + xs[t]; buf[t] = acc; }\n"
              "acc"),
      (Strings{"(let y (+ x 1))", "(let m[i j] (* (index A i j) 2))",
               "(let d[i:(- n 1)] (- (index x (+ i 1)) (index x i)))", "(let (s t) (call g x))",
               "(var acc 0)", "(= acc (+ acc 1))", "(= (index buf i j) 2)",
               "(for t 0 T {(= acc (+ acc (index xs t))) (= (index buf t) acc) })"}));
}

TEST(ParserStmt, Fields) {
  Parsed p = parseBody("let (a, b) = g(x);\n"
                       "let w[i] = f64(i) * x[i];\n"
                       "var s = 1;\n"
                       "for t in 0..n { for u in t..n { s = s * 2; } }\n"
                       "s[t, 1] = 0;\n"
                       "a");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  auto& st = p.module.functions[0].body.stmts;
  ASSERT_EQ(st.size(), 5u);
  EXPECT_EQ(st[0].kind, StmtKind::LetTuple);
  ASSERT_EQ(st[0].names.size(), 2u);
  EXPECT_EQ(st[0].names[1].first, "b");
  EXPECT_EQ(p.text(st[0].names[1].second), "b");
  EXPECT_EQ(st[1].kind, StmtKind::LetIndexed);
  EXPECT_EQ(st[1].name, "w");
  EXPECT_EQ(p.text(st[1].nameRange), "w");
  EXPECT_EQ(st[2].kind, StmtKind::Var);
  EXPECT_EQ(st[3].kind, StmtKind::For);
  EXPECT_EQ(st[3].name, "t");
  ASSERT_TRUE(st[3].body);
  EXPECT_EQ(st[3].body->result, nullptr);
  ASSERT_EQ(st[3].body->stmts.size(), 1u);
  EXPECT_EQ(st[3].body->stmts[0].kind, StmtKind::For);
  EXPECT_EQ(p.text(st[3].range), "for t in 0..n { for u in t..n { s = s * 2; } }");
  EXPECT_EQ(st[4].kind, StmtKind::AssignIndexed);
  EXPECT_EQ(st[4].name, "s");
  EXPECT_EQ(st[4].subscripts.size(), 2u);
  EXPECT_EQ(p.text(st[4].range), "s[t, 1] = 0;");
}

TEST(ParserStmt, Errors) {
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  let y = 1;\n}"),
            Strings{"3:1: expected expression: a block must end with its result"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  for t in 0..3 { x }\n  x\n}"),
            Strings{"2:19: expected a statement: a for loop body has no result value"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  f(x) = 1;\n  x\n}"),
            Strings{"2:3: cannot assign to this expression; expected a name or a subscripted "
                    "name"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  let y = x\n  y\n}"), Strings{"3:3: expected ';'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  x y\n}"),
            Strings{"2:5: expected '}' to close the block"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x let y = 1; y }"),
            Strings{"1:25: expected '}' to close the block"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { for t 0..3 { } x }"), Strings{"1:29: expected 'in'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { for t in 0 3 { } x }"), Strings{"1:34: expected '..'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { let (a) = g(x); a }"), Strings{"1:29: expected ','"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { let = 1; x }"),
            Strings{"1:27: expected identifier or '('"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { if x { 1 } }"), Strings{"1:34: expected 'else'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { if x { 1 } else 2 }"),
            Strings{"1:39: expected '{' or 'if'"});
}

TEST(ParserTypes, ScalarsTensorsTuples) {
  Parsed p = parse("fn f(a: f64, b: f32[n, 3], c: i64[2*n], d: bool, e: f64[n - 1, m + 1]) "
                   "-> (f64, f64[n]) { (a, b) }");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  auto& fn = p.module.functions[0];
  ASSERT_EQ(fn.params.size(), 5u);
  EXPECT_EQ(typeStr(fn.params[0].type), "f64");
  EXPECT_FALSE(fn.params[0].type.hasShape);
  EXPECT_EQ(typeStr(fn.params[1].type), "f32[n, 3]");
  EXPECT_EQ(typeStr(fn.params[2].type), "i64[(* 2 n)]");
  EXPECT_EQ(typeStr(fn.params[3].type), "bool");
  EXPECT_EQ(typeStr(fn.params[4].type), "f64[(- n 1), (+ m 1)]");
  EXPECT_TRUE(fn.result.isTuple());
  EXPECT_EQ(fn.result.dtype, "");
  EXPECT_EQ(typeStr(fn.result), "(f64, f64[n])");
  EXPECT_EQ(p.text(fn.result.range), "(f64, f64[n])");
  EXPECT_EQ(p.text(fn.result.elements[1].range), "f64[n]");
  EXPECT_EQ(p.text(fn.params[1].range), "b: f32[n, 3]");
  EXPECT_EQ(p.text(fn.params[1].type.range), "f32[n, 3]");
  EXPECT_EQ(sexpr(fn.body.result), "(tuple a b)");
}

TEST(ParserTypes, Errors) {
  EXPECT_EQ(errorsOf("fn f(x: int) -> f64 { x }"),
            Strings{"1:9: unknown type 'int'; expected f64, f32, i64 or bool"});
  EXPECT_EQ(errorsOf("fn f(x: f64[]) -> f64 { x }"), Strings{"1:13: expected expression"});
  EXPECT_EQ(errorsOf("fn f(x: f64[n) -> f64 { x }"), Strings{"1:14: expected ']'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> (f64) { x }"), Strings{"1:21: expected ','"});
  EXPECT_EQ(errorsOf("fn f(x) -> f64 { x }"), Strings{"1:7: expected ':'"});
  EXPECT_EQ(errorsOf("fn f(x: ) -> f64 { x }"), Strings{"1:9: expected type"});
  EXPECT_EQ(errorsOf("fn f(x: f64) f64 { x }"), Strings{"1:14: expected '->'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 x"), Strings{"1:21: expected '{'"});
  EXPECT_EQ(errorsOf("fn (x: f64) -> f64 { x }"), Strings{"1:4: expected identifier"});
  EXPECT_EQ(errorsOf("fn f(x: f64,) -> f64 { x }"), Strings{"1:13: expected parameter"});
}

TEST(ParserItems, SpecExampleFile) {
  Parsed p = parse(R"(// quadratic.slope
fn quadratic(x: f64) -> f64 {
    2 * x^2 + 3 * x + 1
}

fn bowl(x: f64[n, m]) -> f64 {
    sum(x^2 + 2 * x + 1)
}

fn matvec(A: f64[n, m], v: f64[m]) -> f64[n] {
    let y[i] = sum[j](A[i, j] * v[j]);
    y
}

fn rnn(W: f64[h, h], U: f64[h, d], xs: f64[T, d], h0: f64[h]) -> f64 {
    var s = h0;
    for t in 0..T {
        s = tanh(W @ s + U @ xs[t]);
    }
    sum(s)
}

fn f(x: f64[n]) -> (f64, f64[n]) { (sum(x), 2 * x) }
fn g(x: f64[n]) -> f64 { let (s, y) = f(x); s + sum(y) } // trailing comment
)");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  ASSERT_EQ(p.module.functions.size(), 6u);
  EXPECT_EQ(p.module.functions[0].name, "quadratic");
  EXPECT_EQ(p.module.functions[2].name, "matvec");
  EXPECT_EQ(typeStr(p.module.functions[2].result), "f64[n]");
  EXPECT_EQ(stmtStr(p.module.functions[2].body.stmts[0]),
            "(let y[i] (sum[j] (* (index A i j) (index v j))))");
  EXPECT_EQ(blockStr(p.module.functions[3].body),
            "{(var s h0) (for t 0 T {(= s (call tanh (+ (@ W s) (@ U (index xs t))))) }) "
            "(call sum s)}");
}

TEST(ParserItems, CommentsAndWhitespace) {
  Parsed p = parse("// a comment é ü 😀\n\tfn f(x: f64) // after the header\n-> f64 {\r\n"
                   "  x // the result\n  // x + 1\n}\n// the end");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  ASSERT_EQ(p.module.functions.size(), 1u);
  EXPECT_EQ(sexpr(p.module.functions[0].body.result), "x");
  EXPECT_EQ(exprOf("a //comment\n / b"), "(/ a b)");
}

// ---------------------------------------------------------------------------------------------
// Source ranges
// ---------------------------------------------------------------------------------------------

TEST(ParserRanges, NodesCarryTheirText) {
  Parsed p = parse("// header\n"
                   "fn norm(x: f64[n, 3], k: i64) -> f64 {\n"
                   "  let y = -x^2;\n"
                   "  let q[i: n] = sum[j](y[i, j]);\n"
                   "  (a + b) * g(q, 1.5)\n"
                   "}\n");
  ASSERT_FALSE(p.diags->hasErrors()) << p.diags->render();
  auto& fn = p.module.functions[0];
  const SourceFile& f = *p.file;

  EXPECT_EQ(p.text(fn.range).substr(0, 8), "fn norm(");
  EXPECT_EQ(p.text(fn.range).back(), '}');
  EXPECT_EQ(f.lineCol(fn.range.begin).line, 2);
  EXPECT_EQ(f.lineCol(fn.range.end).line, 6);
  EXPECT_EQ(p.text(fn.nameRange), "norm");
  LineCol nameLc = f.lineCol(fn.nameRange.begin);
  EXPECT_EQ(nameLc.line, 2);
  EXPECT_EQ(nameLc.column, 4);
  EXPECT_EQ(p.text(fn.params[0].range), "x: f64[n, 3]");
  EXPECT_EQ(p.text(fn.params[0].type.range), "f64[n, 3]");
  EXPECT_EQ(p.text(fn.params[0].type.dims[1]->range), "3");
  EXPECT_EQ(p.text(fn.params[1].range), "k: i64");
  EXPECT_EQ(p.text(fn.result.range), "f64");
  EXPECT_EQ(p.text(fn.body.range).front(), '{');
  EXPECT_EQ(p.text(fn.body.range).back(), '}');

  auto& s0 = fn.body.stmts[0];
  EXPECT_EQ(p.text(s0.range), "let y = -x^2;");
  EXPECT_EQ(p.text(s0.nameRange), "y");
  EXPECT_EQ(p.text(s0.value->range), "-x^2");
  EXPECT_EQ(p.text(s0.value->args[0]->range), "x^2");
  LineCol lc = f.lineCol(s0.value->range.begin);
  EXPECT_EQ(lc.line, 3);
  EXPECT_EQ(lc.column, 11);

  auto& s1 = fn.body.stmts[1];
  EXPECT_EQ(p.text(s1.range), "let q[i: n] = sum[j](y[i, j]);");
  EXPECT_EQ(p.text(s1.indices[0].range), "i");
  EXPECT_EQ(p.text(s1.indices[0].extent->range), "n");
  EXPECT_EQ(p.text(s1.value->range), "sum[j](y[i, j])");
  EXPECT_EQ(p.text(s1.value->nameRange), "sum");
  EXPECT_EQ(p.text(s1.value->args[0]->range), "y[i, j]");

  auto r = fn.body.result;
  EXPECT_EQ(p.text(r->range), "(a + b) * g(q, 1.5)");
  EXPECT_EQ(p.text(r->args[0]->range), "(a + b)"); // grouping parentheses widen the range
  EXPECT_EQ(p.text(r->args[1]->range), "g(q, 1.5)");
  EXPECT_EQ(p.text(r->args[1]->nameRange), "g");
  EXPECT_EQ(p.text(r->args[1]->args[1]->range), "1.5");
  LineCol rc = f.lineCol(r->args[1]->range.begin);
  EXPECT_EQ(rc.line, 5);
  EXPECT_EQ(rc.column, 13);
}

TEST(ParserRanges, ColumnsCountCodePoints) {
  // A multi-byte character in a comment before the node on the same line... is impossible on
  // one line, so put it in a preceding comment line and check the byte offset maps correctly.
  Parsed p = parse("// ééé\nfn f(x: f64) -> f64 { x }");
  ASSERT_FALSE(p.diags->hasErrors());
  auto& fn = p.module.functions[0];
  EXPECT_EQ(p.text(fn.body.result->range), "x");
  LineCol lc = p.file->lineCol(fn.body.result->range.begin);
  EXPECT_EQ(lc.line, 2);
  EXPECT_EQ(lc.column, 23);
}

// ---------------------------------------------------------------------------------------------
// Errors and recovery
// ---------------------------------------------------------------------------------------------

TEST(ParserErrors, ExpectedTokens) {
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { g(x x) }"), Strings{"1:27: expected ')'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  x +\n}"), Strings{"3:1: expected expression"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { (x, ) }"), Strings{"1:27: expected expression"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x[1 }"), Strings{"1:27: expected ']'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { sum[j](x[j] }"), Strings{"1:35: expected ')'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { [1, 2 }"), Strings{"1:29: expected ']'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { () }"), Strings{"1:24: expected expression"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x ^ }"), Strings{"1:27: expected expression"});
}

TEST(ParserErrors, UnexpectedCharacters) {
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 {\n  let y = x $ 2;\n  y\n}"),
            Strings{"2:13: unexpected character '$'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x # 1 }"), Strings{"1:25: unexpected character '#'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x & y }"), Strings{"1:25: unexpected character '&'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { é }"),
            Strings{"1:23: unexpected character 'é' (U+00E9)"});
  EXPECT_EQ(errorsOf(std::string("fn f(x: f64) -> f64 { x \x01 }")),
            Strings{"1:25: unexpected character U+0001"});
  EXPECT_EQ(errorsOf("$"), Strings{"1:1: unexpected character '$'"});
}

TEST(ParserErrors, TopLevelMustBeFn) {
  EXPECT_EQ(errorsOf("let x = 1;"), Strings{"1:1: expected 'fn'"});
  EXPECT_EQ(errorsOf("fnord f() -> f64 { 1 }"), Strings{"1:1: expected 'fn'"});
  // The parser recovers at the next `fn` line.
  Parsed p = parse("let x = 1;\nfn f() -> f64 { 1 }\n");
  EXPECT_EQ(p.errors(), Strings{"1:1: expected 'fn'"});
  EXPECT_EQ(p.module.functions.size(), 1u);
}

TEST(ParserErrors, TwoBadFunctionsGiveTwoErrors) {
  Parsed p = parse("fn a(x: f64) -> f64 {\n"
                   "  let y = x +;\n"
                   "  y\n"
                   "}\n"
                   "fn good(x: f64) -> f64 { x }\n"
                   "fn b(x: f64) -> f64 {\n"
                   "  g(x\n"
                   "}\n"
                   "fn good2(x: f64) -> f64 {\n"
                   "  x * 2\n"
                   "}\n");
  EXPECT_EQ(p.errors(), (Strings{"2:14: expected expression", "8:1: expected ')'"}));
  ASSERT_EQ(p.module.functions.size(), 2u);
  EXPECT_EQ(p.module.functions[0].name, "good");
  EXPECT_EQ(p.module.functions[1].name, "good2");
}

TEST(ParserErrors, RecoveryAtFnAfterUnclosedBody) {
  Parsed p = parse("fn a() -> f64 { 1\nfn b() -> f64 { 2 }\n");
  EXPECT_EQ(p.errors(), Strings{"2:1: expected '}' to close the block"});
  ASSERT_EQ(p.module.functions.size(), 1u);
  EXPECT_EQ(p.module.functions[0].name, "b");
}

TEST(ParserErrors, UnterminatedBlock) {
  std::string text = "fn f(x: f64) -> f64 {\n  let y = x;\n";
  Parsed p = parse(text);
  ASSERT_EQ(p.diags->diagnostics().size(), 1u);
  EXPECT_EQ(p.diags->diagnostics()[0].message, "unterminated block: expected '}'");
  EXPECT_EQ(p.diags->diagnostics()[0].range.begin, text.size());
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { x"), Strings{"1:24: unterminated block: expected '}'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { for t in 0..3 { "),
            Strings{"1:39: unterminated block: expected '}'"});
  EXPECT_EQ(errorsOf("fn f(x: f64) -> f64 { g(x, "),
            Strings{"1:28: unexpected end of file: expected expression"});
  EXPECT_EQ(errorsOf("fn f(x: f64"), Strings{"1:12: unexpected end of file: expected ')'"});
}

TEST(ParserErrors, InvalidUtf8) {
  std::string text = "fn f(x: f64) -> f64 { x }\n// caf\xC3\n";
  Parsed p = parse(text);
  ASSERT_EQ(p.diags->diagnostics().size(), 1u);
  EXPECT_EQ(p.diags->diagnostics()[0].message, "invalid UTF-8 byte 0xC3");
  EXPECT_EQ(p.diags->diagnostics()[0].range.begin, text.find('\xC3'));
  EXPECT_TRUE(p.module.functions.empty());
  EXPECT_EQ(errorsOf("\xFF"), Strings{"1:1: invalid UTF-8 byte 0xFF"});
}

TEST(ParserErrors, EmptyFile) {
  EXPECT_EQ(errorsOf(""), Strings{"1:1: file defines no functions"});
  EXPECT_EQ(errorsOf("  \n\t\n"), Strings{"1:1: file defines no functions"});
  EXPECT_EQ(errorsOf("// only a comment\n// and another"),
            Strings{"1:1: file defines no functions"});
}

TEST(ParserErrors, RenderedDiagnostic) {
  Parsed p = parse("fn f(x: f64) -> f64 {\n  x +* 2\n}\n");
  EXPECT_EQ(p.diags->render(), "test.slope:2:6: error: expected expression\n"
                               "  x +* 2\n"
                               "     ^\n");
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

TEST(ParserRobustness, DeepNesting) {
  const int n = 5000;
  auto expectNestingError = [](const std::string& text) {
    Parsed p = parse(text);
    ASSERT_EQ(p.diags->diagnostics().size(), 1u) << text.substr(0, 80);
    EXPECT_EQ(p.diags->diagnostics()[0].message, "expression nested too deeply");
    EXPECT_TRUE(p.module.functions.empty());
  };
  const std::string head = "fn f(x: f64) -> f64 { ";
  expectNestingError(head + std::string(n, '(') + "x" + std::string(n, ')') + " }");
  expectNestingError(head + std::string(n, '-') + "x }");
  expectNestingError(head + std::string(n, '[') + "x" + std::string(n, ']') + " }");
  {
    std::string s;
    for (int i = 0; i < n; ++i)
      s += "x^";
    expectNestingError(head + s + "x }");
  }
  {
    std::string s;
    for (int i = 0; i < n; ++i)
      s += "for t in 0..1 { ";
    expectNestingError(head + s + std::string(n, '}') + " x }");
  }
  {
    std::string s = "if c { 1 }";
    for (int i = 0; i < n; ++i)
      s += " else if c { 1 }";
    expectNestingError(head + s + " else { 2 } }");
  }
  {
    std::string s;
    for (int i = 0; i < n; ++i)
      s += "if c { ";
    expectNestingError(head + s + "x" + std::string(n, '}') + " }");
  }
  {
    std::string s;
    for (int i = 0; i < n; ++i)
      s += "f(";
    expectNestingError(head + s + "x" + std::string(n, ')') + " }");
  }
  // Unclosed deep nesting is reported once too, and reasonable depths are fine.
  expectNestingError(head + std::string(n, '('));
  EXPECT_EQ(exprOf(std::string(100, '(') + "x" + std::string(100, ')')), "x");
  EXPECT_EQ(exprOf(std::string(50, '-') + "x").substr(0, 6), "(- (- ");
}

TEST(ParserRobustness, RandomBytesNeverCrash) {
  std::mt19937 rng(12345);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text(rng() % 200, '\0');
    for (auto& c : text)
      c = static_cast<char>(rng() % 256);
    Parsed p = parse(text);
    // Random bytes are almost never a valid program; whatever they are, every error is located
    // inside the file, and invalid UTF-8 gives exactly one error.
    for (auto& d : p.diags->diagnostics())
      EXPECT_LE(d.range.begin, text.size());
    if (firstInvalidUtf8(text) >= 0) {
      EXPECT_EQ(p.diags->diagnostics().size(), 1u);
      EXPECT_TRUE(p.module.functions.empty());
    }
    EXPECT_TRUE(p.diags->hasErrors() || !p.module.functions.empty());
  }
}

TEST(ParserRobustness, RandomTokenSoupNeverCrashes) {
  const char* tokens[] = {"fn",  "f",     "(",  ")",     "{",      "}",      "[",   "]",   ",",
                          ":",   ";",     "->", "=",     "let",    "var",    "for", "in",  "..",
                          "if",  "else",  "x",  "f64",   "f64[n]", "1",      ".5",  "2e3", "+",
                          "-",   "*",     "^",  "@",     "<",      "==",     "&&",  "||",  "!",
                          "sum", "zeros", "\n", "\nfn ", " ",      "// c\n", "$",   "é"};
  std::mt19937 rng(777);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text;
    int len = static_cast<int>(rng() % 60);
    if (rng() % 2) text = "fn f(x: f64) -> f64 { ";
    for (int i = 0; i < len; ++i)
      text += std::string(tokens[rng() % std::size(tokens)]) + " ";
    Parsed p = parse(text);
    for (auto& d : p.diags->diagnostics())
      EXPECT_LE(d.range.begin, text.size());
    EXPECT_TRUE(p.diags->hasErrors() || !p.module.functions.empty()) << text;
  }
}

TEST(ParserRobustness, MutatedProgramsNeverCrash) {
  const std::string base = "fn matvec(A: f64[n, m], v: f64[m]) -> f64[n] {\n"
                           "    let y[i] = sum[j: m](A[i, j] * v[j]) ^ -2;\n"
                           "    var s = zeros(f64[n]);\n"
                           "    for t in 0..n { s[t] = if y[t] < 0.5 { 1 } else { 2e-3 }; }\n"
                           "    let (a, b) = g([[1, 2], [3, 4]], (s, y));\n"
                           "    y + s\n"
                           "}\n";
  std::mt19937 rng(99);
  const std::string alphabet = "(){}[],;:=.+-*/^<>!&|0123456789 \nefnxy";
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text = base;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % (text.size() + 1);
      switch (rng() % 3) {
      case 0:
        if (at < text.size()) text.erase(at, 1);
        break;
      case 1: text.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
      default:
        if (at < text.size()) text[at] = alphabet[rng() % alphabet.size()];
      }
    }
    Parsed p = parse(text);
    for (auto& d : p.diags->diagnostics())
      EXPECT_LE(d.range.begin, text.size());
  }
}

TEST(ParserRobustness, LargeFile) {
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    text += "fn f";
    text += std::to_string(i);
    text += "(x: f64[n]) -> f64 {\n  let y[i] = x[i] * 2;\n  sum[i](y[i]^2) + ";
    text += std::to_string(i);
    text += "\n}\n";
  }
  Parsed p = parse(text);
  EXPECT_FALSE(p.diags->hasErrors());
  EXPECT_EQ(p.module.functions.size(), 2000u);
}

// A diagnostic at the same offset with the same message is kept once; the same message
// elsewhere, or another message at the same offset, is kept.
TEST(Diagnostics, RepeatsAreDroppedAndNothingElse) {
  SourceFile file("t.slope", "fn f(x: f64) -> f64 { x }\n");
  DiagSink sink(file);
  sink.error({3, 4}, "one");
  sink.error({3, 4}, "one");
  sink.error({5, 9}, "one");
  sink.error({3, 4}, "two");
  sink.error({3, 4}, "one");
  ASSERT_EQ(sink.diagnostics().size(), 3u);
  EXPECT_EQ(sink.diagnostics()[0].message, "one");
  EXPECT_EQ(sink.diagnostics()[1].range.begin, 5u);
  EXPECT_EQ(sink.diagnostics()[2].message, "two");
}

// Every error of a file with many is reported, once each, in source order.
TEST(Diagnostics, ManyErrorsAllReported) {
  std::string src = "fn f(x: f64) -> f64 {\n";
  for (int i = 0; i < 20000; ++i)
    src += "    let a" + std::to_string(i) + " = undefined" + std::to_string(i) + " + x;\n";
  src += "    x\n}\n";
  auto p = Program::fromString("many.slope", src);
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->diags().diagnostics().size(), 20000u);
  std::string r = p->diagnostics();
  EXPECT_NE(r.find("many.slope:2:14: error: unknown name 'undefined0'"), std::string::npos)
      << r.substr(0, 300);
  EXPECT_LT(r.find("'undefined0'"), r.find("'undefined19999'"));
}

} // namespace
} // namespace slope
