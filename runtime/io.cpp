#include "runtime/io.hpp"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>

namespace slope {

namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A piece of user text for an error message: quoted, shortened, non-printables escaped.
std::string quote(std::string_view s) {
  constexpr size_t kMax = 40;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > kMax) out += "...";
  return out + "'";
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

enum class NumStatus { Ok, NotANumber, Overflow };

/// Parses a floating-point token: [+-] (digits [. digits] [e [+-] digits] | nan | inf |
/// infinity), the keywords case-insensitively. Underflow gives the (subnormal or zero) value.
template <class T> NumStatus parseFloating(std::string_view tok, T& out) {
  bool neg = false;
  std::string_view body = tok;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    neg = body[0] == '-';
    body.remove_prefix(1);
  }
  if (iequals(body, "nan")) {
    out = std::numeric_limits<T>::quiet_NaN();
    return NumStatus::Ok;
  }
  if (iequals(body, "inf") || iequals(body, "infinity")) {
    out = neg ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    return NumStatus::Ok;
  }
  // from_chars would also take "nan(...)" and friends; insist on a plain decimal number.
  if (body.empty() ||
      !(isDigit(body[0]) || (body[0] == '.' && body.size() > 1 && isDigit(body[1]))))
    return NumStatus::NotANumber;
  T v{};
  auto [ptr, ec] =
      std::from_chars(body.data(), body.data() + body.size(), v, std::chars_format::general);
  if (ptr != body.data() + body.size()) return NumStatus::NotANumber;
  if (ec == std::errc::result_out_of_range) {
    // Overflow or underflow? strtod tells (the text is a plain decimal number by now).
    std::string copy(body);
    double d = std::strtod(copy.c_str(), nullptr);
    if (std::isinf(d) || std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max()))
      return NumStatus::Overflow;
    v = static_cast<T>(d); // underflow: zero or a subnormal
  } else if (ec != std::errc()) {
    return NumStatus::NotANumber;
  }
  out = neg ? -v : v;
  return NumStatus::Ok;
}

// ---------------------------------------------------------------------------------------------
// Command-line values
// ---------------------------------------------------------------------------------------------

class ValueParser {
public:
  ValueParser(std::string_view text, DType dtype) : text_(text), dtype_(dtype) {}

  Tensor parse() {
    skipWs();
    if (pos_ == text_.size()) throw ValueError("empty value: expected a number or a list");
    parseElement(0);
    skipWs();
    if (pos_ != text_.size())
      fail(pos_, "unexpected " + quote(text_.substr(pos_)) + " after the value");
    Tensor t(dtype_, extents_);
    if (static_cast<size_t>(t.numel()) * dtypeSize(dtype_) != bytes_.size())
      throw ValueError("internal error: element count does not match the shape"); // unreachable
    if (!bytes_.empty()) std::memcpy(t.raw(), bytes_.data(), bytes_.size());
    return t;
  }

private:
  static constexpr int kMaxDepth = 64;

  std::string_view text_;
  DType dtype_;
  size_t pos_ = 0;
  std::vector<int64_t> extents_; // extent per list depth, -1 until the first list there closes
  int leafDepth_ = -1;           // how many lists enclose a number; -1 before the first number
  std::string bytes_;            // the elements so far, in the tensor's layout

  [[noreturn]] void fail(size_t at, const std::string& msg) const {
    throw ValueError(msg + " at column " + std::to_string(at + 1));
  }

  void skipWs() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
  }

  /// One element with `depth` enclosing lists.
  void parseElement(int depth) {
    skipWs();
    if (pos_ == text_.size()) fail(pos_, "unexpected end of value: expected a number or a list");
    if (text_[pos_] == '[') {
      if (leafDepth_ >= 0 && depth >= leafDepth_)
        fail(pos_,
             "ragged list at depth " + std::to_string(depth) + ": expected a number, got a list");
      if (depth >= kMaxDepth)
        fail(pos_, "lists nested too deeply (more than " + std::to_string(kMaxDepth) + " levels)");
      parseList(depth);
    } else {
      if (leafDepth_ < 0) leafDepth_ = depth;
      if (depth != leafDepth_) // depth < leafDepth_: the first number was nested deeper
        fail(pos_,
             "ragged list at depth " + std::to_string(depth) + ": expected a list, got a number");
      parseScalar();
    }
  }

  /// A list at text_[pos_] == '[', with `depth` enclosing lists (so it is at depth + 1).
  void parseList(int depth) {
    size_t start = pos_++;
    size_t d = static_cast<size_t>(depth);
    if (extents_.size() <= d) extents_.resize(d + 1, -1);
    skipWs();
    if (pos_ < text_.size() && text_[pos_] == ']') fail(start, "empty list");
    int64_t count = 0;
    for (;;) {
      parseElement(depth + 1);
      ++count;
      if (extents_[d] >= 0 && count > extents_[d])
        fail(start, "ragged list at depth " + std::to_string(depth + 1) + ": expected " +
                        std::to_string(extents_[d]) + " elements, got more");
      skipWs();
      if (pos_ == text_.size()) fail(pos_, "unexpected end of value: missing ']'");
      char c = text_[pos_];
      if (c == ',') {
        ++pos_;
        continue;
      }
      if (c == ']') {
        ++pos_;
        break;
      }
      fail(pos_, "expected ',' or ']', got " + quote(text_.substr(pos_, 1)));
    }
    if (extents_[d] < 0) {
      extents_[d] = count;
    } else if (count != extents_[d]) {
      fail(start, "ragged list at depth " + std::to_string(depth + 1) + ": expected " +
                      std::to_string(extents_[d]) + " elements, got " + std::to_string(count));
    }
  }

  template <class T> void append(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    bytes_.append(buf, sizeof(T));
  }

  void parseScalar() {
    size_t start = pos_;
    if (text_[pos_] == '"') { // "NaN", "Infinity", "-Infinity": what --json writes
      size_t close = text_.find('"', pos_ + 1);
      if (close == std::string_view::npos) fail(start, "unterminated string");
      std::string_view inner = text_.substr(pos_ + 1, close - pos_ - 1);
      pos_ = close + 1;
      if (inner != "NaN" && inner != "Infinity" && inner != "-Infinity")
        fail(start, "expected a number, got the string " +
                        quote(text_.substr(start, pos_ - start)) +
                        " (the only strings accepted are \"NaN\", \"Infinity\" and \"-Infinity\")");
      if (!isFloat(dtype_))
        fail(start, std::string(dtypeName(dtype_)) + " value cannot be " + std::string(inner));
      double v = inner == "NaN"        ? std::numeric_limits<double>::quiet_NaN()
                 : inner == "Infinity" ? std::numeric_limits<double>::infinity()
                                       : -std::numeric_limits<double>::infinity();
      if (dtype_ == DType::F32)
        append(static_cast<float>(v));
      else
        append(v);
      return;
    }
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ',' || c == '[' || c == ']' || std::isspace(static_cast<unsigned char>(c))) break;
      ++pos_;
    }
    std::string_view tok = text_.substr(start, pos_ - start);
    if (tok.empty()) fail(start, "expected a number, got " + quote(text_.substr(start, 1)));

    std::optional<bool> keyword;
    if (iequals(tok, "true")) keyword = true;
    if (iequals(tok, "false")) keyword = false;
    // A bool where a number belongs is a mistake in the data (a label column of true/false
    // for an i64 parameter), not a spelling of 1 and 0.
    if (keyword && dtype_ != DType::Bool)
      fail(start, "expected a number, got the bool " + quote(tok) + " for " + dtypeName(dtype_));

    auto notNumber = [&]() { fail(start, "expected a number, got " + quote(tok)); };
    auto outOfRange = [&]() {
      fail(start, "value " + quote(tok) + " is out of range for " + dtypeName(dtype_));
    };

    switch (dtype_) {
    case DType::F32:
    case DType::F64: {
      if (dtype_ == DType::F32) {
        float f = 0;
        NumStatus s = parseFloating(tok, f);
        if (s == NumStatus::NotANumber) notNumber();
        if (s == NumStatus::Overflow) outOfRange();
        append(f);
        return;
      }
      double v = 0;
      NumStatus s = parseFloating(tok, v);
      if (s == NumStatus::NotANumber) notNumber();
      if (s == NumStatus::Overflow) outOfRange();
      append(v);
      return;
    }
    case DType::I64: {
      std::string_view body = tok;
      if (body.size() > 1 && body[0] == '+' && body[1] != '-') body.remove_prefix(1);
      int64_t iv = 0;
      auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), iv);
      if (ptr == body.data() + body.size()) {
        if (ec == std::errc::result_out_of_range)
          fail(start, "value " + quote(tok) + " does not fit i64");
        if (ec == std::errc()) {
          append(iv);
          return;
        }
      }
      // Not a plain integer: accept a float spelling of an integral value ("2.0", "1e3").
      double v = 0;
      NumStatus s = parseFloating(tok, v);
      if (s == NumStatus::NotANumber) notNumber();
      if (s == NumStatus::Overflow) fail(start, "value " + quote(tok) + " does not fit i64");
      if (std::isnan(v)) fail(start, "i64 value cannot be nan");
      if (std::isinf(v)) fail(start, "i64 value cannot be infinite");
      if (v != std::trunc(v)) fail(start, "fractional value " + quote(tok) + " for i64");
      if (v < -9223372036854775808.0 || v >= 9223372036854775808.0)
        fail(start, "value " + quote(tok) + " does not fit i64");
      append(static_cast<int64_t>(v));
      return;
    }
    case DType::Bool: {
      if (keyword) {
        append<uint8_t>(*keyword ? 1 : 0);
        return;
      }
      double v = 0;
      NumStatus s = parseFloating(tok, v);
      if (s != NumStatus::Ok || !(v == 0 || v == 1))
        fail(start, "bool value must be true, false, 0 or 1, got " + quote(tok));
      append<uint8_t>(v == 1 ? 1 : 0);
      return;
    }
    }
  }
};

// ---------------------------------------------------------------------------------------------
// .npy files
// ---------------------------------------------------------------------------------------------

enum class NpyType { F8, F4, I8, I4, B1, U1 };

const char* npyTypeName(NpyType t) {
  switch (t) {
  case NpyType::F8: return "f64";
  case NpyType::F4: return "f32";
  case NpyType::I8: return "i64";
  case NpyType::I4: return "i32";
  case NpyType::B1: return "bool";
  case NpyType::U1: return "u8";
  }
  return "?";
}

size_t npyTypeSize(NpyType t) {
  switch (t) {
  case NpyType::F8:
  case NpyType::I8: return 8;
  case NpyType::F4:
  case NpyType::I4: return 4;
  case NpyType::B1:
  case NpyType::U1: return 1;
  }
  return 1;
}

uint64_t loadLE(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i)
    v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void storeLE(std::string& out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    out += static_cast<char>((v >> (8 * i)) & 0xff);
}

/// The parts of an .npy header dictionary that matter.
struct NpyHeader {
  std::string descr;
  bool fortranOrder = false;
  std::vector<int64_t> shape;
};

/// Parses the Python dict literal of an .npy header:
///   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
class NpyHeaderParser {
public:
  NpyHeaderParser(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader h;
    bool haveDescr = false, haveOrder = false, haveShape = false;
    skipWs();
    expect('{');
    for (;;) {
      skipWs();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      std::string key = parseString();
      skipWs();
      expect(':');
      skipWs();
      if (key == "descr") {
        if (peek() == '[') fail("structured (record) arrays are not supported");
        h.descr = parseString();
        haveDescr = true;
      } else if (key == "fortran_order") {
        h.fortranOrder = parseBool();
        haveOrder = true;
      } else if (key == "shape") {
        h.shape = parseShape();
        haveShape = true;
      } else {
        skipValue();
      }
      skipWs();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skipWs();
      if (peek() == '}') {
        ++pos_;
        break;
      }
      fail("expected ',' or '}'");
    }
    skipWs();
    if (pos_ != text_.size()) fail("unexpected text after the header dictionary");
    if (!haveDescr) fail("missing 'descr'");
    if (!haveOrder) fail("missing 'fortran_order'");
    if (!haveShape) fail("missing 'shape'");
    return h;
  }

private:
  std::string_view text_;
  const std::string& path_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    throw ValueError(path_ + ": malformed .npy header: " + msg + " at header offset " +
                     std::to_string(pos_) + " in " + quote(text_));
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skipWs() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }

  std::string parseString() {
    char q = peek();
    if (q != '\'' && q != '"') fail("expected a string");
    ++pos_;
    std::string s;
    while (pos_ < text_.size() && text_[pos_] != q) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
      s += text_[pos_++];
    }
    if (pos_ == text_.size()) fail("unterminated string");
    ++pos_;
    return s;
  }

  std::string_view parseWord() {
    size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_'))
      ++pos_;
    return text_.substr(start, pos_ - start);
  }

  bool parseBool() {
    std::string_view w = parseWord();
    if (w == "True") return true;
    if (w == "False") return false;
    fail("expected True or False");
  }

  int64_t parseInt() {
    size_t start = pos_;
    while (pos_ < text_.size() && isDigit(text_[pos_]))
      ++pos_;
    if (start == pos_) fail(peek() == '-' ? "negative extent in shape" : "expected an integer");
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, v);
    if (ec != std::errc() || ptr != text_.data() + pos_) fail("extent too large");
    if (peek() == 'L' || peek() == 'l') ++pos_; // Python 2 long literal
    return v;
  }

  std::vector<int64_t> parseShape() {
    char open = peek();
    if (open != '(' && open != '[') fail("expected a tuple for 'shape'");
    char close = open == '(' ? ')' : ']';
    ++pos_;
    std::vector<int64_t> shape;
    for (;;) {
      skipWs();
      if (peek() == close) {
        ++pos_;
        break;
      }
      if (shape.size() >= 64) fail("too many dimensions");
      shape.push_back(parseInt());
      skipWs();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == close) {
        ++pos_;
        break;
      }
      fail("expected ',' or ')' in 'shape'");
    }
    return shape;
  }

  /// Skips the value of a key that does not matter (strings, words, numbers, tuples).
  void skipValue(int depth = 0) {
    if (depth > 16) fail("value nested too deeply");
    char c = peek();
    if (c == '\'' || c == '"') {
      parseString();
    } else if (c == '(' || c == '[' || c == '{') {
      char close = c == '(' ? ')' : c == '[' ? ']' : '}';
      ++pos_;
      for (;;) {
        skipWs();
        if (peek() == close) {
          ++pos_;
          return;
        }
        skipValue(depth + 1);
        skipWs();
        if (peek() == ':' && close == '}') {
          ++pos_;
          skipWs();
          skipValue(depth + 1);
          skipWs();
        }
        if (peek() == ',') {
          ++pos_;
        } else if (peek() != close) {
          fail("unexpected character in value");
        }
      }
    } else {
      size_t start = pos_;
      while (pos_ < text_.size() &&
             (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_' ||
              text_[pos_] == '-' || text_[pos_] == '+' || text_[pos_] == '.'))
        ++pos_;
      if (start == pos_) fail("expected a value");
    }
  }
};

NpyType npyTypeFromDescr(const std::string& descr, const std::string& path) {
  if (descr.size() >= 2) {
    char order = descr[0];
    std::string_view code = std::string_view(descr).substr(1);
    bool single = code == "b1" || code == "u1" || code == "i1";
    if (order == '>' && !single)
      throw ValueError(path + ": big-endian data ('" + descr + "') is not supported");
    if (order == '<' || order == '|' || order == '=') {
      if (code == "f8") return NpyType::F8;
      if (code == "f4") return NpyType::F4;
      if (code == "i8") return NpyType::I8;
      if (code == "i4") return NpyType::I4;
      if (code == "b1") return NpyType::B1;
      if (code == "u1") return NpyType::U1;
    }
  } else if (descr == "?") {
    return NpyType::B1;
  }
  throw ValueError(path + ": unsupported .npy dtype '" + descr +
                   "' (supported: <f8, <f4, <i8, <i4, |b1, and |u1 for bool)");
}

bool conversionAllowed(NpyType from, DType to) {
  switch (from) {
  case NpyType::F8: return to == DType::F64;
  case NpyType::F4: return to == DType::F32 || to == DType::F64;
  case NpyType::I8:
  case NpyType::I4: return to != DType::Bool;
  case NpyType::B1: // a bool is not a number, as on the command line ("true" for an i64)
  case NpyType::U1: return to == DType::Bool;
  }
  return false;
}

/// Whether the integer v survives a round trip through the float type T.
template <class T> bool exactIn(int64_t v) {
  T f = static_cast<T>(v);
  if (!(f >= static_cast<T>(-9223372036854775808.0) && f < static_cast<T>(9223372036854775808.0)))
    return false;
  return static_cast<int64_t>(f) == v;
}

std::string readFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw ValueError(path + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ValueError(path + ": cannot open file");
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw ValueError(path + ": read error");
  return data;
}

// ---------------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------------

/// Shortest round-trip digits of x (in T's own precision), laid out as Python's repr does:
/// positional for decimal exponents in [-4, 16), scientific otherwise ("1e-05", "1.5e+300"),
/// but with no ".0" on integral values ("54").
template <class T> std::string formatFloating(T x, bool json) {
  // Strict JSON (RFC 8259) has no non-finite numbers: they are strings, as protobuf's JSON
  // mapping writes them, so that jq and JSON.parse read every output.
  if (std::isnan(x)) return json ? "\"NaN\"" : "nan";
  if (std::isinf(x)) {
    if (json) return x < 0 ? "\"-Infinity\"" : "\"Infinity\"";
    return x < 0 ? "-inf" : "inf";
  }
  if (x == 0) return std::signbit(x) ? "-0" : "0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string_view s(buf, static_cast<size_t>(res.ptr - buf)); // "-d.ddde+XX"
  std::string out;
  if (!s.empty() && s[0] == '-') {
    out = "-";
    s.remove_prefix(1);
  }
  size_t e = s.find('e');
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.') digits += c;
  int exp10 = 0;
  {
    std::string_view es = s.substr(e + 1);
    if (!es.empty() && es[0] == '+') es.remove_prefix(1);
    std::from_chars(es.data(), es.data() + es.size(), exp10);
  }
  while (digits.size() > 1 && digits.back() == '0')
    digits.pop_back();
  const int nd = static_cast<int>(digits.size());
  if (exp10 >= -4 && exp10 < 16) {
    if (exp10 < 0) {
      out += "0.";
      out.append(static_cast<size_t>(-exp10 - 1), '0');
      out += digits;
    } else if (nd <= exp10 + 1) {
      out += digits;
      out.append(static_cast<size_t>(exp10 + 1 - nd), '0');
    } else {
      out += digits.substr(0, static_cast<size_t>(exp10 + 1));
      out += '.';
      out += digits.substr(static_cast<size_t>(exp10 + 1));
    }
  } else {
    out += digits[0];
    if (nd > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += exp10 < 0 ? "e-" : "e+";
    int a = exp10 < 0 ? -exp10 : exp10;
    if (a < 10) out += '0';
    out += std::to_string(a);
  }
  return out;
}

std::string formatElement(const Tensor& t, int64_t i, bool json) {
  switch (t.dtype()) {
  case DType::F32: return formatFloating(t.data<float>()[i], json);
  case DType::F64: return formatFloating(t.data<double>()[i], json);
  case DType::I64: return std::to_string(t.data<int64_t>()[i]);
  case DType::Bool: return t.data<uint8_t>()[i] ? "true" : "false";
  }
  return "?";
}

void formatRec(const Tensor& t, size_t dim, int64_t& flat, const char* sep, bool json,
               std::string& out) {
  if (dim == t.shape().size()) {
    out += formatElement(t, flat++, json);
    return;
  }
  out += '[';
  for (int64_t k = 0; k < t.shape()[dim]; ++k) {
    if (k) out += sep;
    formatRec(t, dim + 1, flat, sep, json, out);
  }
  out += ']';
}

std::string format(const Tensor& t, bool json) {
  std::string out;
  int64_t flat = 0;
  formatRec(t, 0, flat, json ? "," : ", ", json, out);
  return out;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

Tensor parseValue(std::string_view text, DType dtype) {
  return ValueParser(text, dtype).parse();
}

Tensor readNpy(const std::string& path, DType dtype, std::string* converted) {
  const std::string file = readFile(path);
  const auto* bytes = reinterpret_cast<const unsigned char*>(file.data());
  static const char kMagic[] = "\x93NUMPY";
  if (file.size() < 6 || std::memcmp(file.data(), kMagic, 6) != 0)
    throw ValueError(path + ": not a .npy file (bad magic)");
  if (file.size() < 10) throw ValueError(path + ": truncated .npy file (incomplete preamble)");
  const int major = bytes[6], minor = bytes[7];
  size_t headerLen = 0, headerStart = 0;
  if (major == 1) {
    headerLen = static_cast<size_t>(loadLE(bytes + 8, 2));
    headerStart = 10;
  } else if (major == 2 || major == 3) {
    if (file.size() < 12) throw ValueError(path + ": truncated .npy file (incomplete preamble)");
    headerLen = static_cast<size_t>(loadLE(bytes + 8, 4));
    headerStart = 12;
  } else {
    throw ValueError(path + ": unsupported .npy format version " + std::to_string(major) + "." +
                     std::to_string(minor));
  }
  if (headerLen > file.size() - headerStart)
    throw ValueError(path + ": truncated .npy file (header claims " + std::to_string(headerLen) +
                     " bytes, file has " + std::to_string(file.size() - headerStart) + ")");
  const std::string_view headerText(file.data() + headerStart, headerLen);
  const NpyHeader header = NpyHeaderParser(headerText, path).parse();
  const NpyType type = npyTypeFromDescr(header.descr, path);

  if (header.fortranOrder && header.shape.size() >= 2)
    throw ValueError(path + ": array is stored in Fortran order (fortran_order: True); only "
                            "C order is supported (save np.ascontiguousarray(a) instead)");
  if (!conversionAllowed(type, dtype)) {
    std::string msg =
        path + ": file holds " + npyTypeName(type) + " but parameter is " + dtypeName(dtype);
    if (type == NpyType::U1) msg += " (u8 data is accepted only for bool parameters)";
    throw ValueError(msg);
  }

  if (converted) {
    converted->clear();
    if (npyTypeName(type) != std::string(dtypeName(dtype)))
      *converted =
          path + " holds " + npyTypeName(type) + " data, converted exactly to " + dtypeName(dtype);
  }

  const size_t itemSize = npyTypeSize(type);
  const size_t dataStart = headerStart + headerLen;
  const size_t available = file.size() - dataStart;
  int64_t numel = 1;
  for (int64_t e : header.shape) {
    if (e != 0 && numel > std::numeric_limits<int64_t>::max() / e)
      throw ValueError(path + ": shape is too large");
    numel *= e;
  }
  // Check against the bytes present before allocating anything.
  if (static_cast<uint64_t>(numel) > available / itemSize) {
    std::string need = static_cast<uint64_t>(numel) > SIZE_MAX / itemSize
                           ? "more than " + std::to_string(SIZE_MAX)
                           : std::to_string(static_cast<size_t>(numel) * itemSize);
    throw ValueError(path + ": truncated .npy file (shape needs " + need +
                     " data bytes, file has " + std::to_string(available) + ")");
  }
  const size_t needed = static_cast<size_t>(numel) * itemSize;
  if (available != needed)
    throw ValueError(path + ": " + std::to_string(available - needed) +
                     " unexpected bytes after the array data");

  Tensor t(dtype, header.shape);
  const unsigned char* p = bytes + dataStart;
  for (int64_t i = 0; i < numel; ++i, p += itemSize) {
    switch (type) {
    case NpyType::F8: t.setF(i, std::bit_cast<double>(loadLE(p, 8))); break;
    case NpyType::F4: t.setF(i, std::bit_cast<float>(static_cast<uint32_t>(loadLE(p, 4)))); break;
    case NpyType::I8:
    case NpyType::I4: {
      int64_t v = type == NpyType::I8 ? static_cast<int64_t>(loadLE(p, 8))
                                      : static_cast<int32_t>(static_cast<uint32_t>(loadLE(p, 4)));
      // Integers convert to a float parameter only where the float holds them exactly, so a
      // converted file never differs from the data it came from.
      bool exact = dtype == DType::F64   ? exactIn<double>(v)
                   : dtype == DType::F32 ? exactIn<float>(v)
                                         : true;
      if (!exact)
        throw ValueError(path + ": element " + std::to_string(i) + " (" + std::to_string(v) +
                         ") is not exactly representable in " + dtypeName(dtype));
      t.setI(i, v);
      break;
    }
    case NpyType::B1: t.setI(i, *p != 0); break;
    case NpyType::U1:
      if (*p > 1)
        throw ValueError(path + ": u8 element " + std::to_string(i) + " is " + std::to_string(*p) +
                         ", not a bool (0 or 1)");
      t.setI(i, *p);
      break;
    }
  }
  return t;
}

Tensor readJson(const std::string& path, DType dtype) {
  const std::string text = readFile(path);
  try {
    return parseValue(text, dtype);
  } catch (const ValueError& e) {
    throw ValueError(path + ": " + e.what());
  }
}

void writeNpy(const std::string& path, const Tensor& t) {
  const char* descr = "<f8";
  switch (t.dtype()) {
  case DType::F32: descr = "<f4"; break;
  case DType::F64: descr = "<f8"; break;
  case DType::I64: descr = "<i8"; break;
  case DType::Bool: descr = "|b1"; break;
  }
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape().size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(t.shape()[i]);
  }
  if (t.shape().size() == 1) dict += ',';
  dict += "), }";
  // Pad with spaces and a final newline so the data starts on a 64-byte boundary; version 2.0
  // only if the header does not fit version 1.0's 16-bit length (never for sane ranks).
  auto paddedLen = [&](size_t preamble) {
    size_t total = preamble + dict.size() + 1;
    return (total + 63) / 64 * 64 - preamble;
  };
  const bool v1 = paddedLen(10) <= 65535;
  const size_t headerLen = paddedLen(v1 ? 10 : 12);
  dict.append(headerLen - dict.size() - 1, ' ');
  dict += '\n';

  std::string out = "\x93NUMPY";
  out += static_cast<char>(v1 ? 1 : 2);
  out += '\0';
  storeLE(out, headerLen, v1 ? 2 : 4);
  out += dict;
  const size_t item = dtypeSize(t.dtype());
  out.reserve(out.size() + static_cast<size_t>(t.numel()) * item);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
    case DType::F32: storeLE(out, std::bit_cast<uint32_t>(t.data<float>()[i]), 4); break;
    case DType::F64: storeLE(out, std::bit_cast<uint64_t>(t.data<double>()[i]), 8); break;
    case DType::I64: storeLE(out, static_cast<uint64_t>(t.data<int64_t>()[i]), 8); break;
    case DType::Bool: out += static_cast<char>(t.data<uint8_t>()[i] ? 1 : 0); break;
    }
  }

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw ValueError(path + ": cannot open file for writing");
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) throw ValueError(path + ": write error");
}

std::string toJson(const Tensor& t) {
  return format(t, true);
}

std::string toText(const Tensor& t) {
  return format(t, false);
}

std::string formatNumber(double v, DType dtype, bool json) {
  switch (dtype) {
  case DType::Bool: return v != 0 ? "true" : "false";
  case DType::I64:
    if (v == std::trunc(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0)
      return std::to_string(static_cast<int64_t>(v));
    return formatFloating(v, json);
  case DType::F32:
    if (std::isfinite(v) && std::fabs(v) > static_cast<double>(FLT_MAX))
      return formatFloating(v, json); // not representable as f32; keep the double's digits
    return formatFloating(static_cast<float>(v), json);
  case DType::F64: return formatFloating(v, json);
  }
  return formatFloating(v, json);
}

} // namespace slope
