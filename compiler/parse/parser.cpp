// The Slope parser: a Boost.Spirit X3 grammar over the raw file text.
//
// Structure
//   * The grammar works directly on characters; the skipper eats white space and `//` comments.
//     Tokens that must not run into the next character (keywords, identifiers, numbers) are
//     lexemes with explicit boundary checks, so `format`, `iffy` and `fnord` are identifiers.
//   * Every rule builds its AST node imperatively in semantic actions on `_val`: a rule whose
//     right-hand side has actions gets no automatic attribute propagation, so every element's
//     attribute is simple (an ExprP, an Ident, a char) and nothing goes through fusion tuples.
//     Source ranges come from `raw[...]` (token begin after skipping, end of the last token) or
//     from the `here` / `pos` primitives below. (`_where` is not used: in Boost 1.74 it spans
//     from the end of the match to the end of the input.)
//   * After the first token of a construct commits to it, the rest is written with expectation
//     points (`>`); a failure throws x3::expectation_failure whose which() is the failing rule's
//     name, so rules are named after what the user should have written ("expression", "type",
//     "'}' to close the block"). Semantic checks inside actions throw SyntaxError.
//   * parseModule drives the grammar one function at a time and recovers from an error by
//     skipping to the next line that starts with `fn `.
//   * Recursion (parentheses, unary operators, blocks, else-if chains) passes through a depth
//     guard, so absurdly deep input is an error ("expression nested too deeply"), not a stack
//     overflow.
//
// Expression precedence, high to low (LANGUAGE.md): primary and postfix subscripts; `^` (right
// associative, binds tighter than unary minus, its exponent may itself be unary: `x^-1`);
// unary `-` `!`; `* / % @`; `+ -`; comparisons (non-associative); `&&`; `||`. Binary operators
// are left associative.
#include "compiler/parse/parser.hpp"

#include <boost/spirit/home/x3.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

// what() of an action or a sequence is what its (first) subject expects, so that `> rule[act]`
// and `> ';' >> here[act]` report "expected <rule name>" / "expected ';'".
namespace boost::spirit::x3 {
template <class Subject, class Action> struct get_info<action<Subject, Action>> {
  typedef std::string result_type;
  std::string operator()(action<Subject, Action> const& p) const { return what(p.subject); }
};
template <class Left, class Right> struct get_info<sequence<Left, Right>> {
  typedef std::string result_type;
  std::string operator()(sequence<Left, Right> const& p) const { return what(p.left); }
};
} // namespace boost::spirit::x3

namespace slope {
namespace {

namespace x3 = boost::spirit::x3;
using ast::Block;
using ast::BlockP;
using ast::Expr;
using ast::ExprKind;
using ast::ExprP;
using ast::StmtKind;
using x3::_attr;
using x3::_pass;
using x3::_val;
using x3::lit;

using Iter = const char*;

/// Nesting limit for the recursive constructs (each parenthesis, unary operator, block and
/// else-if counts one level). Far beyond hand-written code, far below the stack limit.
constexpr int kMaxNesting = 256;

/// The name of the closing-brace rule; an expectation failure on it at the end of the input is
/// reported as an unterminated block.
const char* const kCloseBlockName = "'}' to close the block";

// ---------------------------------------------------------------------------------------------
// Parser state, errors, helpers
// ---------------------------------------------------------------------------------------------

struct ParseState {
  Iter begin = nullptr; // start of the file text: offsets are relative to it
  int depth = 0;        // current nesting depth (see guard)
};
struct state_tag;

/// A located syntax error raised by a semantic action or a guard.
struct SyntaxError {
  uint32_t pos;
  std::string message;
};

struct Ident {
  std::string name;
  SrcRange range;
};

template <class Ctx> ParseState& stateOf(Ctx const& ctx) {
  return x3::get<state_tag>(ctx);
}

template <class Ctx> uint32_t offsetOf(Ctx const& ctx, Iter it) {
  return static_cast<uint32_t>(it - stateOf(ctx).begin);
}

template <class Ctx, class Range> SrcRange rangeOf(Ctx const& ctx, Range const& r) {
  return {offsetOf(ctx, r.begin()), offsetOf(ctx, r.end())};
}

bool isKeyword(std::string_view s) {
  static constexpr std::string_view kKeywords[] = {"fn", "let",  "var",  "for",  "in",
                                                   "if", "else", "true", "false"};
  for (auto k : kKeywords)
    if (s == k) return true;
  return false;
}

bool isIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

bool isDtype(std::string_view s) {
  return s == "f64" || s == "f32" || s == "i64" || s == "bool";
}

ExprP newExpr(ExprKind kind) {
  auto e = std::make_shared<Expr>();
  e->kind = kind;
  return e;
}

/// The decimal order of magnitude of a float literal's value (about log10), for a literal that
/// std::from_chars found out of range: positive means overflow, negative means underflow.
long decimalMagnitude(std::string_view t) {
  size_t i = 0;
  long intDigits = 0, leadingFracZeros = 0;
  bool seenNonZero = false;
  for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i)
    if (seenNonZero || t[i] != '0') seenNonZero = true, ++intDigits;
  if (i < t.size() && t[i] == '.')
    for (++i; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i)
      if (!seenNonZero) {
        if (t[i] == '0')
          ++leadingFracZeros;
        else
          seenNonZero = true;
      }
  long exp = 0;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    bool neg = false;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) neg = t[i++] == '-';
    for (; i < t.size(); ++i)
      exp = std::min<long>(exp * 10 + (t[i] - '0'), 1000000);
    if (neg) exp = -exp;
  }
  return intDigits > 0 ? intDigits - 1 + exp : -(leadingFracZeros + 1) + exp;
}

ExprP makeNumber(std::string_view text, uint32_t begin) {
  auto e = newExpr(ExprKind::Number);
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (text.find_first_of(".eE") == std::string_view::npos) {
    int64_t v = 0;
    auto res = std::from_chars(first, last, v);
    if (res.ec != std::errc() || res.ptr != last)
      throw SyntaxError{begin, "integer literal is too large for i64 (the largest is "
                               "9223372036854775807)"};
    e->isInt = true;
    e->ival = v;
    e->fval = static_cast<double>(v);
  } else {
    double d = 0;
    auto res = std::from_chars(first, last, d);
    if (res.ec == std::errc::result_out_of_range) {
      if (decimalMagnitude(text) > 0)
        throw SyntaxError{begin, "number literal is too large for f64"};
      d = 0.0; // underflow: the nearest value is zero
    } else if (res.ec != std::errc() || res.ptr != last) {
      throw SyntaxError{begin, "malformed number literal"};
    }
    e->fval = d;
  }
  return e;
}

/// Skips white space and comments (the same language as the grammar's skipper).
size_t skipBlank(std::string_view t, size_t p) {
  while (p < t.size()) {
    char c = t[p];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      ++p;
    } else if (c == '/' && p + 1 < t.size() && t[p + 1] == '/') {
      while (p < t.size() && t[p] != '\n')
        ++p;
    } else if (c == '/' && p + 1 < t.size() && t[p + 1] == '*') {
      size_t end = t.find("*/", p + 2);
      p = end == std::string_view::npos ? t.size() : end + 2;
    } else {
      break;
    }
  }
  return p;
}

/// Whether a token of the language can start at t[p].
bool startsToken(std::string_view t, size_t p) {
  unsigned char c = static_cast<unsigned char>(t[p]);
  unsigned char next = p + 1 < t.size() ? static_cast<unsigned char>(t[p + 1]) : 0;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
    return true;
  if (c == '.') return (next >= '0' && next <= '9') || next == '.';
  if (c == '&' || c == '|') return next == c;
  return c != 0 && std::strchr("+-*/%@^<>=!()[]{},:;", c) != nullptr;
}

/// "'$'", "'é' (U+00E9)" or "U+0007" for the (valid UTF-8) character at t[p].
std::string describeChar(std::string_view t, size_t p) {
  unsigned char c = static_cast<unsigned char>(t[p]);
  char buf[32];
  if (c >= 0x20 && c < 0x7F) return std::string("'") + static_cast<char>(c) + "'";
  if (c < 0x80) {
    std::snprintf(buf, sizeof buf, "U+%04X", c);
    return buf;
  }
  size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
  uint32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  len = std::min(len, t.size() - p);
  for (size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(t[p + k]) & 0x3F);
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  return "'" + std::string(t.substr(p, len)) + "' (" + buf + ")";
}

// ---------------------------------------------------------------------------------------------
// Custom primitives
// ---------------------------------------------------------------------------------------------

/// `pos` skips blanks and yields the offset of the next token; `here` yields the offset right
/// after the previous token (no skipping), i.e. the end of what has been matched so far.
struct offset_parser : x3::parser<offset_parser> {
  using attribute_type = uint32_t;
  static bool const has_attribute = true;
  bool skip;
  constexpr explicit offset_parser(bool s) : skip(s) {}
  template <class It, class Ctx, class RCtx, class Attr>
  bool parse(It& first, It const& last, Ctx const& ctx, RCtx&, Attr& attr) const {
    if (skip) x3::skip_over(first, last, ctx);
    x3::traits::move_to(offsetOf(ctx, first), attr);
    return true;
  }
};
constexpr offset_parser pos{true};
constexpr offset_parser here{false};

/// `guard[p]`: parses p one nesting level deeper; past kMaxNesting levels it is an error.
template <class Subject> struct depth_guard : x3::unary_parser<Subject, depth_guard<Subject>> {
  using base_type = x3::unary_parser<Subject, depth_guard<Subject>>;
  static bool const is_pass_through_unary = true;
  constexpr explicit depth_guard(Subject const& s) : base_type(s) {}
  template <class It, class Ctx, class RCtx, class Attr>
  bool parse(It& first, It const& last, Ctx const& ctx, RCtx& rctx, Attr& attr) const {
    int& depth = stateOf(ctx).depth;
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{++depth};
    if (depth > kMaxNesting) {
      It p = first;
      x3::skip_over(p, last, ctx);
      throw SyntaxError{offsetOf(ctx, p), "expression nested too deeply"};
    }
    return this->subject.parse(first, last, ctx, rctx, attr);
  }
};
struct guard_gen {
  template <class Subject>
  constexpr depth_guard<typename x3::extension::as_parser<Subject>::value_type>
  operator[](Subject const& s) const {
    return depth_guard<typename x3::extension::as_parser<Subject>::value_type>(x3::as_parser(s));
  }
};
constexpr guard_gen guard{};

// skipper = { " " | "\t" | "\r" | "\n" | "\f" | "\v" | "//" { any char but newline }
//             | "/*" { any char } "*/" }   (v3; not nested; an unterminated one is reported
//                                         before parsing)
auto const skipper = x3::char_(" \t\r\n\f\v") | (lit("//") >> *(x3::char_ - '\n')) |
                     (lit("/*") >> *(x3::char_ - lit("*/")) >> lit("*/"));

auto const identStart = x3::char_("A-Za-z_");
auto const identChar = x3::char_("A-Za-z0-9_");
auto const digit = x3::char_("0-9");

/// A keyword: the word not followed by an identifier character.
auto kw(const char* word) {
  return x3::lexeme[lit(word) >> !identChar];
}

// ---------------------------------------------------------------------------------------------
// Semantic actions
// ---------------------------------------------------------------------------------------------

template <class Ctx> [[noreturn]] void fail(Ctx const& ctx, uint32_t at, std::string msg) {
  (void)ctx;
  throw SyntaxError{at, std::move(msg)};
}

void setRangeOn(ExprP& e, SrcRange r) {
  e->range = r;
}
void setRangeOn(ast::Stmt& s, SrcRange r) {
  s.range = r;
}
void setRangeOn(ast::TypeExpr& t, SrcRange r) {
  t.range = r;
}
void setRangeOn(ast::Param& p, SrcRange r) {
  p.range = r;
}
void setRangeOn(ast::Function& f, SrcRange r) {
  f.range = r;
}

/// On `raw[...]`: the value's range is the matched text.
auto const setRange = [](auto& ctx) { setRangeOn(_val(ctx), rangeOf(ctx, _attr(ctx))); };
auto const assign = [](auto& ctx) { _val(ctx) = std::move(_attr(ctx)); };
auto const pushArg = [](auto& ctx) { _val(ctx)->args.push_back(std::move(_attr(ctx))); };
auto const pushBack = [](auto& ctx) { _val(ctx).push_back(std::move(_attr(ctx))); };

// identifiers and types
auto const makeIdent = [](auto& ctx) {
  auto const& r = _attr(ctx);
  std::string s(r.begin(), r.end());
  if (isKeyword(s)) {
    _pass(ctx) = false;
    return;
  }
  _val(ctx) = Ident{std::move(s), rangeOf(ctx, r)};
};
auto const checkDtype = [](auto& ctx) {
  _pass(ctx) = isDtype(_attr(ctx).name);
  _val(ctx) = std::move(_attr(ctx));
};
auto const unknownType = [](auto& ctx) {
  fail(ctx, _attr(ctx).range.begin,
       "unknown type '" + _attr(ctx).name + "'; expected f64, f32, i64 or bool");
};
auto const setDtype = [](auto& ctx) { _val(ctx).dtype = _attr(ctx).name; };
auto const setHasShape = [](auto& ctx) { _val(ctx).hasShape = true; };
auto const pushDim = [](auto& ctx) { _val(ctx).dims.push_back(std::move(_attr(ctx))); };
auto const pushElement = [](auto& ctx) { _val(ctx).elements.push_back(std::move(_attr(ctx))); };

// expressions
auto const makeNumberAction = [](auto& ctx) {
  auto const& r = _attr(ctx);
  SrcRange range = rangeOf(ctx, r);
  _val(ctx) = makeNumber(std::string_view(r.begin(), r.end() - r.begin()), range.begin);
  _val(ctx)->range = range;
};
auto const makeBool = [](auto& ctx) {
  auto const& r = _attr(ctx);
  auto e = newExpr(ExprKind::Bool);
  e->bval = *r.begin() == 't';
  e->range = rangeOf(ctx, r);
  _val(ctx) = std::move(e);
};
auto const makeName = [](auto& ctx) {
  auto e = newExpr(ExprKind::Name);
  e->name = _attr(ctx).name;
  e->range = _attr(ctx).range;
  _val(ctx) = std::move(e);
};
auto const startCall = [](auto& ctx) { // on the callee's Ident
  auto e = newExpr(ExprKind::Call);
  e->name = _attr(ctx).name;
  e->nameRange = _attr(ctx).range;
  _val(ctx) = std::move(e);
};
auto const startDerivative = [](auto& ctx) { // on raw["grad" | "jvp" | "hvp"]
  auto const& r = _attr(ctx);
  auto e = newExpr(ExprKind::Call);
  e->derivative.assign(r.begin(), r.end());
  e->derivativeRange = rangeOf(ctx, r);
  _val(ctx) = std::move(e);
};
auto const setDerivativeOf = [](auto& ctx) {
  _val(ctx)->name = _attr(ctx).name;
  _val(ctx)->nameRange = _attr(ctx).range;
};
auto const pushWrt = [](auto& ctx) {
  _val(ctx)->wrt.emplace_back(_attr(ctx).name, _attr(ctx).range);
};
auto const startReduce = [](auto& ctx) {
  auto e = newExpr(ExprKind::Reduce);
  e->name = _attr(ctx).name;
  e->nameRange = _attr(ctx).range;
  _val(ctx) = std::move(e);
};
auto const startTypedCall = [](auto& ctx) { // on raw["zeros" | "ones"]
  auto const& r = _attr(ctx);
  auto e = newExpr(ExprKind::Call);
  e->name.assign(r.begin(), r.end());
  e->nameRange = rangeOf(ctx, r);
  _val(ctx) = std::move(e);
};
auto const setTypeArg = [](auto& ctx) { _val(ctx)->typeArg = std::move(_attr(ctx)); };
auto const pushIndex = [](auto& ctx) { _val(ctx)->indices.push_back(std::move(_attr(ctx))); };
auto const startTuple = [](auto& ctx) { _val(ctx) = newExpr(ExprKind::Tuple); };
auto const finishParen = [](auto& ctx) {
  SrcRange r = rangeOf(ctx, _attr(ctx));
  if (_val(ctx)->args.size() == 1) _val(ctx) = _val(ctx)->args[0]; // grouping parentheses
  _val(ctx)->range = r;
};
auto const startTensor = [](auto& ctx) { _val(ctx) = newExpr(ExprKind::TensorLit); };
auto const startIf = [](auto& ctx) { _val(ctx) = newExpr(ExprKind::If); };
auto const setCond = [](auto& ctx) { _val(ctx)->cond = std::move(_attr(ctx)); };
auto const setThen = [](auto& ctx) { _val(ctx)->thenBlock = std::move(_attr(ctx)); };
auto const setElse = [](auto& ctx) { _val(ctx)->elseBlock = std::move(_attr(ctx)); };
auto const wrapIfInBlock = [](auto& ctx) { // `else if`: a block whose result is the nested if
  auto b = std::make_shared<Block>();
  b->range = _attr(ctx)->range;
  b->result = std::move(_attr(ctx));
  _val(ctx) = std::move(b);
};
auto const startSubscript = [](auto& ctx) { // on '[' after an expression
  auto e = newExpr(ExprKind::Subscript);
  e->range.begin = _val(ctx)->range.begin;
  e->base = std::move(_val(ctx));
  _val(ctx) = std::move(e);
};
auto const setArgs = [](auto& ctx) { _val(ctx)->args = std::move(_attr(ctx)); };
auto const setEnd = [](auto& ctx) { _val(ctx)->range.end = _attr(ctx); };
auto const startUnary = [](auto& ctx) { // on pos
  auto e = newExpr(ExprKind::Unary);
  e->range.begin = _attr(ctx);
  _val(ctx) = std::move(e);
};
auto const setOpChar = [](auto& ctx) { _val(ctx)->name.assign(1, _attr(ctx)); };
auto const setOperand = [](auto& ctx) {
  _val(ctx)->range.end = _attr(ctx)->range.end;
  _val(ctx)->args.push_back(std::move(_attr(ctx)));
};
/// On a binary operator: the expression so far becomes the left operand.
auto const startBinary = [](auto& ctx) {
  auto e = newExpr(ExprKind::Binary);
  if constexpr (std::is_same_v<std::decay_t<decltype(_attr(ctx))>, char>)
    e->name.assign(1, _attr(ctx));
  else if constexpr (std::is_same_v<std::decay_t<decltype(_attr(ctx))>, x3::unused_type>)
    e->name = "^";
  else // the raw[] range of a multi-character operator
    e->name.assign(_attr(ctx).begin(), _attr(ctx).end());
  e->range.begin = _val(ctx)->range.begin;
  e->args.push_back(std::move(_val(ctx)));
  _val(ctx) = std::move(e);
};
auto const chainedComparison = [](auto& ctx) {
  fail(ctx, _attr(ctx), "comparison operators cannot be chained; use parentheses and '&&'");
};

// index declarations
auto const setDeclName = [](auto& ctx) {
  _val(ctx).name = _attr(ctx).name;
  _val(ctx).range = _attr(ctx).range;
};
auto const setExtent = [](auto& ctx) { _val(ctx).extent = std::move(_attr(ctx)); };

// statements
template <StmtKind K> struct StartStmt {
  template <class Ctx> void operator()(Ctx& ctx) const {
    _val(ctx) = ast::Stmt{};
    _val(ctx).kind = K;
  }
};
auto const setStmtName = [](auto& ctx) {
  _val(ctx).name = _attr(ctx).name;
  _val(ctx).nameRange = _attr(ctx).range;
};
auto const pushTupleName = [](auto& ctx) {
  _val(ctx).kind = StmtKind::LetTuple;
  _val(ctx).names.emplace_back(_attr(ctx).name, _attr(ctx).range);
};
auto const pushStmtIndex = [](auto& ctx) {
  _val(ctx).kind = StmtKind::LetIndexed;
  _val(ctx).indices.push_back(std::move(_attr(ctx)));
};
auto const mergeLetTarget = [](auto& ctx) {
  auto& s = _val(ctx);
  auto& t = _attr(ctx);
  s.kind = t.kind;
  s.name = std::move(t.name);
  s.nameRange = t.nameRange;
  s.names = std::move(t.names);
  s.indices = std::move(t.indices);
};
auto const setValue = [](auto& ctx) { _val(ctx).value = std::move(_attr(ctx)); };
auto const setLo = [](auto& ctx) { _val(ctx).lo = std::move(_attr(ctx)); };
auto const setHi = [](auto& ctx) { _val(ctx).hi = std::move(_attr(ctx)); };
auto const setBody = [](auto& ctx) { _val(ctx).body = std::move(_attr(ctx)); };

// blocks
auto const startBlock = [](auto& ctx) { _val(ctx) = std::make_shared<Block>(); };
auto const addStmt = [](auto& ctx) {
  if (_val(ctx)->result)
    fail(ctx, _attr(ctx).range.begin, std::string("expected ") + kCloseBlockName);
  _val(ctx)->stmts.push_back(std::move(_attr(ctx)));
};
/// An expression in a block is its result, unless `=` follows (then makeAssign takes it).
auto const addExpr = [](auto& ctx) {
  if (_val(ctx)->result)
    fail(ctx, _attr(ctx)->range.begin, std::string("expected ") + kCloseBlockName);
  _val(ctx)->result = std::move(_attr(ctx));
};
auto const makeAssign = [](auto& ctx) { // on the value after '='
  auto& block = *_val(ctx);
  ExprP target = std::move(block.result);
  ast::Stmt s{};
  s.range.begin = target->range.begin;
  if (target->kind == ExprKind::Name) {
    s.kind = StmtKind::Assign;
    s.name = target->name;
    s.nameRange = target->range;
  } else if (target->kind == ExprKind::Subscript && target->base->kind == ExprKind::Name) {
    s.kind = StmtKind::AssignIndexed;
    s.name = target->base->name;
    s.nameRange = target->base->range;
    s.subscripts = target->args;
  } else {
    fail(ctx, target->range.begin,
         "cannot assign to this expression; expected a name or a subscripted name");
  }
  s.value = std::move(_attr(ctx));
  block.stmts.push_back(std::move(s));
};
auto const endAssign = [](auto& ctx) { _val(ctx)->stmts.back().range.end = _attr(ctx); };
auto const finishValueBlock = [](auto& ctx) {
  SrcRange r = rangeOf(ctx, _attr(ctx));
  _val(ctx)->range = r;
  if (!_val(ctx)->result)
    fail(ctx, r.end - 1, "expected expression: a block must end with its result");
};
auto const finishForBlock = [](auto& ctx) {
  _val(ctx)->range = rangeOf(ctx, _attr(ctx));
  if (_val(ctx)->result)
    fail(ctx, _val(ctx)->result->range.begin,
         "expected a statement: a for loop body has no result value");
};

// functions
auto const setParamName = [](auto& ctx) { _val(ctx).name = _attr(ctx).name; };
auto const setParamType = [](auto& ctx) { _val(ctx).type = std::move(_attr(ctx)); };
auto const setFnName = [](auto& ctx) {
  _val(ctx).name = _attr(ctx).name;
  _val(ctx).nameRange = _attr(ctx).range;
};
auto const pushParam = [](auto& ctx) { _val(ctx).params.push_back(std::move(_attr(ctx))); };
auto const setResultType = [](auto& ctx) { _val(ctx).result = std::move(_attr(ctx)); };
auto const setFnBody = [](auto& ctx) { _val(ctx).body = std::move(*_attr(ctx)); };

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

// tokens
x3::rule<class ident_id, Ident> const ident = "identifier";
x3::rule<class dtype_id, Ident> const dtype = "type";
x3::rule<class kw_in_id> const kw_in = "'in'";
x3::rule<class kw_else_id> const kw_else = "'else'";
x3::rule<class arrow_id> const arrow = "'->'";
x3::rule<class dotdot_id> const dotdot = "'..'";
x3::rule<class close_brace_id> const close_brace = kCloseBlockName;
// types
x3::rule<class type_id, ast::TypeExpr> const type = "type";
x3::rule<class tensor_type_id, ast::TypeExpr> const tensor_type = "type";
x3::rule<class tuple_type_id, ast::TypeExpr> const tuple_type = "type";
// expressions
x3::rule<class expr_id, ExprP> const expr = "expression";
x3::rule<class and_expr_id, ExprP> const and_expr = "expression";
x3::rule<class cmp_expr_id, ExprP> const cmp_expr = "expression";
x3::rule<class add_expr_id, ExprP> const add_expr = "expression";
x3::rule<class mul_expr_id, ExprP> const mul_expr = "expression";
x3::rule<class unary_id, ExprP> const unary = "expression";
x3::rule<class power_id, ExprP> const power = "expression";
x3::rule<class postfix_id, ExprP> const postfix = "expression";
x3::rule<class primary_id, ExprP> const primary = "expression";
x3::rule<class number_id, ExprP> const number = "number";
x3::rule<class bool_lit_id, ExprP> const bool_lit = "'true' or 'false'";
x3::rule<class name_id, ExprP> const name = "identifier";
x3::rule<class call_id, ExprP> const call = "call";
x3::rule<class typed_call_id, ExprP> const typed_call = "call";
x3::rule<class derivative_call_id, ExprP> const derivative_call = "call";
x3::rule<class reduce_id, ExprP> const reduce = "reduction";
x3::rule<class paren_id, ExprP> const paren = "'('";
x3::rule<class tensor_lit_id, ExprP> const tensor_lit = "'['";
x3::rule<class if_expr_id, ExprP> const if_expr = "'if'";
x3::rule<class expr_list_id, std::vector<ExprP>> const expr_list = "expression";
x3::rule<class index_decl_id, ast::IndexDecl> const index_decl = "index name";
// statements and blocks
x3::rule<class let_target_id, ast::Stmt> const let_target = "identifier or '('";
x3::rule<class let_stmt_id, ast::Stmt> const let_stmt = "'let'";
x3::rule<class var_stmt_id, ast::Stmt> const var_stmt = "'var'";
x3::rule<class for_stmt_id, ast::Stmt> const for_stmt = "'for'";
x3::rule<class stmt_id, ast::Stmt> const stmt = "statement";
x3::rule<class block_id, BlockP> const block = "'{'";
x3::rule<class for_block_id, BlockP> const for_block = "'{'";
x3::rule<class else_branch_id, BlockP> const else_branch = "'{' or 'if'";
// items
x3::rule<class param_id, ast::Param> const param = "parameter";
x3::rule<class function_id, ast::Function> const function = "'fn'";

// ---- tokens ----

// IDENT = [A-Za-z_] [A-Za-z0-9_]*   -- not a keyword: fn let var for in if else true false
auto const ident_def = x3::raw[x3::lexeme[identStart >> *identChar]][makeIdent];
// DTYPE = "f64" | "f32" | "i64" | "bool"   -- identifiers, not keywords
auto const dtype_def = ident[checkDtype];
auto const kw_in_def = kw("in");
auto const kw_else_def = kw("else");
auto const arrow_def = lit("->");
auto const dotdot_def = lit("..");
auto const close_brace_def = lit('}');

// ---- types ----

// type        = tuple_type | tensor_type            -- any other identifier: "unknown type"
auto const type_def = tuple_type[assign] | tensor_type[assign] | ident[unknownType];
// tensor_type = DTYPE [ "[" expr { "," expr } "]" ]
auto const tensor_type_def = x3::raw[dtype[setDtype] >> -(lit('[')[setHasShape] > expr[pushDim] >>
                                                          *(',' > expr[pushDim]) > ']')][setRange];
// tuple_type  = "(" type "," type { "," type } ")"
auto const tuple_type_def = x3::raw[lit('(') > type[pushElement] > ',' > type[pushElement] >>
                                    *(',' > type[pushElement]) > ')'][setRange];

// ---- expressions ----

// expr     = and_expr { "||" and_expr }
auto const expr_def = and_expr[assign] >> *(x3::raw[lit("||")][startBinary] > and_expr[setOperand]);
// and_expr = cmp_expr { "&&" cmp_expr }
auto const and_expr_def = cmp_expr[assign] >>
                          *(x3::raw[lit("&&")][startBinary] > cmp_expr[setOperand]);
// cmp_expr = add_expr [ cmp_op add_expr ]          -- non-associative: `a < b < c` is an error
// cmp_op   = "<=" | ">=" | "==" | "!=" | "<" | ">"
auto const cmp_op = x3::raw[lit("<=") | ">=" | "==" | "!=" | '<' | '>'];
auto const cmp_expr_def = add_expr[assign] >> -(cmp_op[startBinary] > add_expr[setOperand] >>
                                                -(&cmp_op >> pos)[chainedComparison]);
// add_expr = mul_expr { ("+" | "-") mul_expr }
auto const add_expr_def = mul_expr[assign] >>
                          *(x3::char_("+-")[startBinary] > mul_expr[setOperand]);
// mul_expr = unary { ("*" | "/" | "%" | "@") unary }
auto const mul_expr_def = unary[assign] >> *(x3::char_("*/%@")[startBinary] > unary[setOperand]);
// unary    = ("-" | "!") unary | power
auto const unary_def =
    guard[(&(lit('-') | '!') >> pos[startUnary] >> x3::char_("-!")[setOpChar] > unary[setOperand]) |
          power[assign]];
// power    = postfix [ "^" unary ]                -- right associative via unary: 2^3^2 = 2^(3^2)
auto const power_def = postfix[assign] >> -(lit('^')[startBinary] > unary[setOperand]);
// postfix  = primary { "[" expr_list "]" }
auto const postfix_def = primary[assign] >>
                         *(lit('[')[startSubscript] > expr_list[setArgs] > ']' >> here[setEnd]);
// expr_list = expr { "," expr }
auto const expr_list_def = expr[pushBack] >> *(',' > expr[pushBack]);
// primary  = number | bool_lit | if_expr | typed_call | derivative_call | reduce | call | name
//          | paren | tensor_lit
auto const primary_def = number[assign] | bool_lit[assign] | if_expr[assign] | typed_call[assign] |
                         derivative_call[assign] | reduce[assign] | call[assign] | name[assign] |
                         paren[assign] | tensor_lit[assign];
// number   = ( DIGITS [ "." DIGITS ] | "." DIGITS ) [ ("e" | "E") [ "+" | "-" ] DIGITS ]
//            -- "2." is not a number, so `0..T` is 0, "..", T
auto const number_def =
    x3::raw[x3::lexeme[(+digit >> -('.' >> +digit) | '.' >> +digit) >>
                       -(x3::char_("eE") >> -x3::char_("+-") >> +digit)]][makeNumberAction];
// bool_lit = "true" | "false"
auto const bool_lit_def = x3::raw[kw("true") | kw("false")][makeBool];
// name     = IDENT
auto const name_def = ident[makeName];
// call     = IDENT "(" [ expr_list ] ")"
auto const call_def =
    x3::raw[ident[startCall] >> '(' > -(expr[pushArg] >> *(',' > expr[pushArg])) > ')'][setRange];
// typed_call = ("zeros" | "ones") "(" type ")"   -- when the argument starts with `DTYPE[` or
//                                                    is `DTYPE)`; otherwise it is a plain call
auto const typed_call_def =
    x3::raw[x3::raw[kw("zeros") | kw("ones")][startTypedCall] >> '(' >>
            &(dtype >> (lit('[') | ')')) > type[setTypeArg] > ')'][setRange];
// derivative_call = ("grad" | "jvp" | "hvp") "(" IDENT { "," IDENT } ")" "(" [ expr_list ] ")"
//                   -- v3: a derivative of function IDENT with respect to the parameters named
//                      after it; without the second argument list it is a plain call (of a
//                      function of the user's called grad, say)
auto const derivative_call_def =
    x3::raw[x3::raw[kw("grad") | kw("jvp") | kw("hvp")][startDerivative] >> '(' >>
            ident[setDerivativeOf] >> *(',' >> ident[pushWrt]) >> ')' >> '(' >
            -(expr[pushArg] >> *(',' > expr[pushArg])) > ')'][setRange];
// reduce   = IDENT "[" index_decl { "," index_decl } "]" "(" expr ")"
auto const reduce_def = x3::raw[ident[startReduce] >> '[' >> index_decl[pushIndex] % ',' >> ']' >>
                                '(' > expr[pushArg] > ')'][setRange];
// index_decl = IDENT [ ":" expr ]
auto const index_decl_def = ident[setDeclName] >> -(':' > expr[setExtent]);
// paren    = "(" expr { "," expr } ")"          -- one element: grouping; several: a tuple
auto const paren_def =
    x3::raw[lit('(')[startTuple] > expr[pushArg] >> *(',' > expr[pushArg]) > ')'][finishParen];
// tensor_lit = "[" expr { "," expr } "]"
auto const tensor_lit_def =
    x3::raw[lit('[')[startTensor] > expr[pushArg] >> *(',' > expr[pushArg]) > ']'][setRange];
// if_expr  = "if" expr block "else" else_branch
auto const if_expr_def = guard[x3::raw[kw("if")[startIf] > expr[setCond] > block[setThen] >
                                       kw_else > else_branch[setElse]][setRange]];
// else_branch = if_expr | block                 -- `else if` nests an if inside a block
auto const else_branch_def = if_expr[wrapIfInBlock] | block[assign];

// ---- statements and blocks ----

// let_stmt   = "let" let_target "=" expr ";"
auto const let_stmt_def =
    x3::raw[kw("let")[StartStmt<StmtKind::Let>{}] > let_target[mergeLetTarget] > '=' >
            expr[setValue] > ';'][setRange];
// let_target = "(" IDENT "," IDENT { "," IDENT } ")"
//            | IDENT [ "[" index_decl { "," index_decl } "]" ]
auto const let_target_def = (lit('(')[StartStmt<StmtKind::LetTuple>{}] > ident[pushTupleName] >
                             ',' > ident[pushTupleName] >> *(',' > ident[pushTupleName]) > ')') |
                            (ident[setStmtName] >> -(lit('[') > index_decl[pushStmtIndex] >>
                                                     *(',' > index_decl[pushStmtIndex]) > ']'));
// var_stmt   = "var" IDENT "=" expr ";"
auto const var_stmt_def = x3::raw[kw("var")[StartStmt<StmtKind::Var>{}] > ident[setStmtName] > '=' >
                                  expr[setValue] > ';'][setRange];
// for_stmt   = "for" IDENT "in" expr ".." expr for_block
auto const for_stmt_def =
    x3::raw[kw("for")[StartStmt<StmtKind::For>{}] > ident[setStmtName] > kw_in > expr[setLo] >
            dotdot > expr[setHi] > for_block[setBody]][setRange];
// stmt       = let_stmt | var_stmt | for_stmt
auto const stmt_def = let_stmt[assign] | var_stmt[assign] | for_stmt[assign];

// block_items = { stmt | expr [ "=" expr ";" ] }
//   An expression followed by "=" is an assignment (`x = e;`, `x[i, j] = e;`: the target must
//   be a name or a subscripted name); otherwise it is the block's result and must come last.
auto const block_items =
    *(stmt[addStmt] | (expr[addExpr] >> -(lit('=') > expr[makeAssign] > ';' >> here[endAssign])));
// block      = "{" block_items "}"               -- ends with a result expression
auto const block_def =
    guard[x3::raw[lit('{')[startBlock] >> block_items > close_brace][finishValueBlock]];
// for_block  = "{" block_items "}"               -- statements only
auto const for_block_def =
    guard[x3::raw[lit('{')[startBlock] >> block_items > close_brace][finishForBlock]];

// ---- items ----

// param    = IDENT ":" type
auto const param_def = x3::raw[ident[setParamName] > ':' > type[setParamType]][setRange];
// function = "fn" IDENT "(" [ param { "," param } ] ")" "->" type block
auto const function_def =
    x3::raw[kw("fn") > ident[setFnName] > '(' > -(param[pushParam] >> *(',' > param[pushParam])) >
            ')' > arrow > type[setResultType] > block[setFnBody]][setRange];

BOOST_SPIRIT_DEFINE(ident, dtype, kw_in, kw_else, arrow, dotdot, close_brace, type, tensor_type,
                    tuple_type, expr, and_expr, cmp_expr, add_expr, mul_expr, unary, power, postfix,
                    primary, number, bool_lit, name, call, typed_call, derivative_call, reduce,
                    paren, tensor_lit, if_expr, expr_list, index_decl, let_target, let_stmt,
                    var_stmt, for_stmt, stmt, block, for_block, else_branch, param, function)

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Whether t[p..] is the keyword `fn` followed by a space or tab, or `@derivative` (a recovery
/// point when at the start of a line).
bool isFnLine(std::string_view t, size_t p) {
  return (t.substr(p, 2) == "fn" && p + 2 < t.size() && (t[p + 2] == ' ' || t[p + 2] == '\t')) ||
         t.substr(p, 11) == "@derivative";
}

/// `@derivative(NAME)` at t[p], blanks and comments allowed between its tokens: the name and
/// its range, and in `p` where the attribute ends. A SyntaxError says what is wrong.
std::pair<std::string, SrcRange> parseAttribute(std::string_view t, size_t& p) {
  size_t q = p + 1;
  size_t e = q;
  while (e < t.size() && isIdentChar(t[e]))
    ++e;
  std::string word(t.substr(q, e - q));
  if (word != "derivative")
    throw SyntaxError{uint32_t(p), word.empty()
                                       ? std::string("expected an attribute after '@': "
                                                     "'@derivative(FUNCTION)'")
                                       : "unknown attribute '@" + word +
                                             "': the one attribute is '@derivative(FUNCTION)'"};
  q = skipBlank(t, e);
  if (q >= t.size() || t[q] != '(')
    throw SyntaxError{uint32_t(q), "expected '(' after '@derivative': '@derivative(FUNCTION)'"};
  q = skipBlank(t, q + 1);
  e = q;
  while (e < t.size() && isIdentChar(t[e]))
    ++e;
  if (e == q || (t[q] >= '0' && t[q] <= '9') || isKeyword(t.substr(q, e - q)))
    throw SyntaxError{uint32_t(q), "expected the name of the function this rule differentiates"};
  std::pair<std::string, SrcRange> out{std::string(t.substr(q, e - q)),
                                       SrcRange{uint32_t(q), uint32_t(e)}};
  q = skipBlank(t, e);
  if (q >= t.size() || t[q] != ')')
    throw SyntaxError{uint32_t(q), "expected ')' after the function's name"};
  q = skipBlank(t, q + 1);
  bool isFn = t.substr(q, 2) == "fn" && (q + 2 >= t.size() || !isIdentChar(t[q + 2]));
  if (!isFn) throw SyntaxError{uint32_t(q), "expected 'fn' after '@derivative(" + out.first + ")'"};
  p = q;
  return out;
}

/// The first line start after `after` and not before the line holding `errorPos` that begins
/// with `fn `; the end of the text if there is none.
size_t recoveryPoint(std::string_view t, size_t after, size_t errorPos) {
  size_t lineStart = errorPos;
  while (lineStart > 0 && t[lineStart - 1] != '\n')
    --lineStart;
  for (size_t p = lineStart;;) {
    if (p > after && isFnLine(t, p)) return p;
    size_t nl = t.find('\n', p);
    if (nl == std::string_view::npos) return t.size();
    p = nl + 1;
  }
}

/// Turns an expectation failure at `where` (which names what was expected) into a message.
/// Words of other languages that users type out of habit, and what Slope has instead. They are
/// ordinary identifiers in Slope; the hint is given only where one stops the parse.
const char* foreignWord(std::string_view w) {
  static const std::pair<const char*, const char*> words[] = {
      {"while", "loops run a fixed range: use 'for t in A..B { ... }'"},
      {"loop", "loops run a fixed range: use 'for t in A..B { ... }'"},
      {"foreach", "use 'for t in A..B { ... }'"},
      {"do", "use 'for t in A..B { ... }'"},
      {"until", "use 'for t in A..B { ... }'"},
      {"break", "loops run their whole range: choose with 'if' or select(c, a, b) in the body"},
      {"continue", "loops run their whole range: choose with 'if' or select(c, a, b) in the body"},
      {"return", "a block's result is its last expression, written without ';'"},
      {"def", "functions are written 'fn NAME(PARAM: TYPE, ...) -> TYPE { ... }'"},
      {"function", "functions are written 'fn NAME(PARAM: TYPE, ...) -> TYPE { ... }'"},
      {"func", "functions are written 'fn NAME(PARAM: TYPE, ...) -> TYPE { ... }'"},
      {"fun", "functions are written 'fn NAME(PARAM: TYPE, ...) -> TYPE { ... }'"},
      {"lambda", "functions are written 'fn NAME(PARAM: TYPE, ...) -> TYPE { ... }' at the top "
                 "level"},
      {"elif", "write 'else if'"},
      {"elsif", "write 'else if'"},
      {"elseif", "write 'else if'"},
      {"then", "write 'if c { a } else { b }'"},
      {"switch", "use 'if c { a } else if d { b } else { c }'"},
      {"match", "use 'if c { a } else if d { b } else { c }'"},
      {"const", "use 'let NAME = EXPR;' (immutable) or 'var NAME = EXPR;'"},
      {"auto", "use 'let NAME = EXPR;' (immutable) or 'var NAME = EXPR;'"},
      {"mut", "use 'var NAME = EXPR;'"},
      {"import", "a file is self-contained: define the functions it calls in it"},
      {"include", "a file is self-contained: define the functions it calls in it"},
      {"struct", "Slope has scalars, tensors and tuples: pass the fields as parameters"},
      {"class", "Slope has scalars, tensors and tuples: pass the fields as parameters"},
  };
  for (const auto& [word, hint] : words)
    if (w == word) return hint;
  return nullptr;
}

/// The identifier that ends right before t[p] (blanks between allowed), and where it starts.
std::pair<size_t, std::string_view> wordBefore(std::string_view t, size_t p) {
  size_t e = std::min(p, t.size());
  while (e > 0 && (t[e - 1] == ' ' || t[e - 1] == '\t' || t[e - 1] == '\n' || t[e - 1] == '\r'))
    --e;
  size_t b = e;
  while (b > 0 && isIdentChar(t[b - 1]))
    --b;
  if (b == e || (t[b] >= '0' && t[b] <= '9')) return {e, {}};
  return {b, t.substr(b, e - b)};
}

/// "'while' is not in Slope: ..." where the parse stopped right after such a word (`while x > 0
/// {`, `return x;`) or at it; else nullopt.
std::optional<std::pair<uint32_t, std::string>> foreignHint(std::string_view t, size_t where) {
  size_t p = skipBlank(t, std::min(where, t.size()));
  for (size_t at : {p, std::min(where, t.size())}) {
    auto [b, w] = wordBefore(t, at);
    if (const char* hint = foreignWord(w))
      return std::pair{uint32_t(b), "'" + std::string(w) + "' is not in Slope: " + hint};
  }
  size_t e = p;
  while (e < t.size() && isIdentChar(t[e]))
    ++e;
  if (const char* hint = foreignWord(t.substr(p, e - p)))
    return std::pair{uint32_t(p),
                     "'" + std::string(t.substr(p, e - p)) + "' is not in Slope: " + hint};
  return std::nullopt;
}

std::pair<uint32_t, std::string> describeFailure(std::string_view t, size_t where,
                                                 const std::string& which) {
  size_t p = skipBlank(t, std::min(where, t.size()));
  if (auto h = foreignHint(t, where)) return *h;
  if (p >= t.size()) {
    if (which == kCloseBlockName) return {uint32_t(p), "unterminated block: expected '}'"};
    return {uint32_t(p), "unexpected end of file: expected " + which};
  }
  if (!startsToken(t, p)) return {uint32_t(p), "unexpected character " + describeChar(t, p)};
  return {uint32_t(p), "expected " + which};
}

} // namespace

ast::Module parseModule(const SourceFile& file, DiagSink& diags) {
  ast::Module module;
  const std::string& text = file.text();
  std::string_view t(text);

  if (long bad = firstInvalidUtf8(t); bad >= 0) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "invalid UTF-8 byte 0x%02X",
                  static_cast<unsigned>(static_cast<unsigned char>(t[bad])));
    diags.error(SrcRange{uint32_t(bad), uint32_t(bad)}, buf);
    return module;
  }
  if (t.size() > std::numeric_limits<uint32_t>::max() - 1) {
    diags.error(SrcRange{0, 0}, "file too large");
    return module;
  }

  bool anyError = false;
  auto report = [&](size_t at, std::string msg) {
    anyError = true;
    diags.error(SrcRange{uint32_t(at), uint32_t(at)}, std::move(msg));
  };

  // An unterminated `/*` would swallow the rest of the file: report where it opens.
  for (size_t q = 0; q + 1 < t.size(); ++q) {
    if (t[q] == '/' && t[q + 1] == '/') {
      q = t.find('\n', q);
      if (q == std::string_view::npos) break;
    } else if (t[q] == '/' && t[q + 1] == '*') {
      size_t end = t.find("*/", q + 2);
      if (end == std::string_view::npos) {
        report(q, "unterminated comment: '/*' has no '*/' (comments do not nest)");
        return module;
      }
      q = end + 1;
    }
  }

  // A UTF-8 byte-order mark at the start is accepted (and not part of the first line).
  size_t p = t.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
  while (true) {
    p = skipBlank(t, p);
    if (p >= t.size()) break;
    ast::Function fn;
    if (t[p] == '@') {
      try {
        auto [of, range] = parseAttribute(t, p);
        fn.derivativeOf = of;
        fn.derivativeOfRange = range;
      } catch (const SyntaxError& e) {
        report(e.pos, e.message);
        p = recoveryPoint(t, p, e.pos);
        continue;
      }
    }
    bool isFn = t.substr(p, 2) == "fn" && (p + 2 >= t.size() || !isIdentChar(t[p + 2]));
    if (!isFn) {
      if (auto h = foreignHint(t, p))
        report(h->first, h->second);
      else
        report(p,
               startsToken(t, p) ? "expected 'fn'" : "unexpected character " + describeChar(t, p));
      p = recoveryPoint(t, p, p);
      continue;
    }
    ParseState state;
    state.begin = text.data();
    Iter first = text.data() + p;
    Iter const last = text.data() + text.size();
    size_t errorPos = p;
    try {
      bool ok = x3::phrase_parse(first, last, x3::with<state_tag>(state)[function], skipper, fn);
      if (ok) {
        module.functions.push_back(std::move(fn));
        p = static_cast<size_t>(first - text.data());
        continue;
      }
      // Only reachable if `fn` itself did not match, which the check above rules out.
      report(p, "expected 'fn'");
    } catch (const x3::expectation_failure<Iter>& e) {
      auto [at, msg] = describeFailure(t, static_cast<size_t>(e.where() - text.data()), e.which());
      report(at, std::move(msg));
      errorPos = at;
    } catch (const SyntaxError& e) {
      auto h = e.message.rfind("expected ", 0) == 0 ? foreignHint(t, e.pos) : std::nullopt;
      report(h ? h->first : e.pos, h ? h->second : e.message);
      errorPos = e.pos;
    } catch (const std::exception& e) {
      report(p, std::string("internal parser error: ") + e.what());
    }
    p = recoveryPoint(t, p, errorPos);
  }

  if (!anyError && module.functions.empty()) report(0, "file defines no functions");
  return module;
}

} // namespace slope
