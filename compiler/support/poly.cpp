#include "compiler/support/poly.hpp"

#include "compiler/support/checked.hpp"

#include <algorithm>
#include <cctype>
#include <set>

namespace slope {
namespace {
// Extents are checked like every other size (compiler/support/checked.hpp): a coefficient
// that overflows is an error, never a wrapped extent.
int64_t coef(std::optional<int64_t> v) {
  if (!v) throw checked::SizeError("extent arithmetic overflows i64");
  return *v;
}
} // namespace

Poly::Poly(int64_t c) {
  if (c != 0) terms_[{}] = c;
}

Poly Poly::var(const std::string& name) {
  Poly p;
  p.terms_[{name}] = 1;
  return p;
}

void Poly::normalize() {
  for (auto it = terms_.begin(); it != terms_.end();)
    it = it->second == 0 ? terms_.erase(it) : std::next(it);
}

Poly Poly::operator+(const Poly& o) const {
  Poly r = *this;
  for (const auto& [m, c] : o.terms_)
    r.terms_[m] = coef(checked::add(r.terms_[m], c));
  r.normalize();
  return r;
}

Poly Poly::operator-() const {
  Poly r = *this;
  for (auto& [m, c] : r.terms_)
    c = coef(checked::sub(0, c));
  return r;
}

Poly Poly::operator-(const Poly& o) const {
  return *this + (-o);
}

Poly Poly::operator*(const Poly& o) const {
  Poly r;
  for (const auto& [m1, c1] : terms_)
    for (const auto& [m2, c2] : o.terms_) {
      Monomial m = m1;
      m.insert(m.end(), m2.begin(), m2.end());
      std::sort(m.begin(), m.end());
      r.terms_[m] = coef(checked::add(r.terms_[m], coef(checked::mul(c1, c2))));
    }
  r.normalize();
  return r;
}

bool Poly::isConst() const {
  return terms_.empty() || (terms_.size() == 1 && terms_.begin()->first.empty());
}

std::optional<int64_t> Poly::constValue() const {
  if (terms_.empty()) return 0;
  if (isConst()) return terms_.begin()->second;
  return std::nullopt;
}

std::vector<std::string> Poly::names() const {
  std::set<std::string> s;
  for (const auto& [m, c] : terms_)
    s.insert(m.begin(), m.end());
  return {s.begin(), s.end()};
}

std::optional<int64_t> Poly::eval(const std::map<std::string, int64_t>& sizes) const {
  int64_t total = 0;
  for (const auto& [m, c] : terms_) {
    int64_t v = c;
    for (const auto& n : m) {
      auto it = sizes.find(n);
      if (it == sizes.end()) return std::nullopt;
      v = coef(checked::mul(v, it->second));
    }
    total = coef(checked::add(total, v));
  }
  return total;
}

Poly Poly::substitute(const std::map<std::string, Poly>& by) const {
  Poly r;
  for (const auto& [m, c] : terms_) {
    Poly term(c);
    for (const auto& n : m) {
      auto it = by.find(n);
      term = term * (it == by.end() ? var(n) : it->second);
    }
    r = r + term;
  }
  return r;
}

bool Poly::provablyNonNegative() const {
  // A size the user named is at least 1; a name the compiler made (`#trips3`, `#extent5`,
  // `div(n, 2)`, checkpoint counts) is a count that may be 0.
  std::map<std::string, Poly> shift;
  for (const auto& n : names())
    if (isUserSize(n)) shift[n] = var(n) + Poly(1);
  Poly q;
  try {
    q = substitute(shift);
  } catch (const checked::SizeError&) {
    return false; // too large to expand: not proven
  }
  for (const auto& [m, c] : q.terms_)
    if (c < 0) return false;
  return true;
}

bool Poly::isUserSize(const std::string& name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_'))
    return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::string Poly::str() const {
  if (terms_.empty()) return "0";
  // Highest degree first, the constant last: "2*n*m + n - 1".
  std::vector<std::pair<Monomial, int64_t>> ts(terms_.begin(), terms_.end());
  std::stable_sort(ts.begin(), ts.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  std::string s;
  bool first = true;
  for (const auto& [m, c] : ts) {
    uint64_t mag = c < 0 ? 0 - static_cast<uint64_t>(c) : static_cast<uint64_t>(c);
    if (first)
      s += c < 0 ? "-" : "";
    else
      s += c < 0 ? " - " : " + ";
    first = false;
    std::string body;
    for (const auto& n : m)
      body += (body.empty() ? "" : "*") + n;
    if (body.empty())
      s += std::to_string(mag);
    else if (mag == 1)
      s += body;
    else
      s += std::to_string(mag) + "*" + body;
  }
  return s;
}

} // namespace slope
