// Symbolic extents: integer polynomials over size names, such as `n`, `n - 1`, `2*n*m + 3`.
//
// Shapes in Slope are symbolic (LANGUAGE.md: `x + y` with x: f64[n] and y: f64[m] is an error
// even if n == m at run time), so every extent the checker sees is one of these. Equality is
// equality of polynomials in canonical form. Substitution maps a callee's size names to the
// caller's extents when a call is inlined; evaluation binds them to numbers at call time.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace slope {

class Poly {
public:
  using Monomial = std::vector<std::string>; // sorted size names; empty = the constant term

  Poly() = default;
  Poly(int64_t c); // NOLINT: implicit on purpose, extents are often literals
  static Poly var(const std::string& name);

  Poly operator+(const Poly& o) const;
  Poly operator-(const Poly& o) const;
  Poly operator*(const Poly& o) const;
  Poly operator-() const;
  bool operator==(const Poly& o) const { return terms_ == o.terms_; }
  bool operator!=(const Poly& o) const { return terms_ != o.terms_; }

  bool isConst() const;
  std::optional<int64_t> constValue() const;
  /// The size names this polynomial mentions.
  std::vector<std::string> names() const;
  /// Evaluates with the given bindings; nullopt if a name is unbound. Arithmetic on
  /// polynomials and their evaluation throw checked::SizeError when a coefficient or the
  /// value overflows i64.
  std::optional<int64_t> eval(const std::map<std::string, int64_t>& sizes) const;
  Poly substitute(const std::map<std::string, Poly>& by) const;
  /// True when the polynomial is >= 0 for every assignment of its names to integers >= 1
  /// (sizes the user named: isUserSize) or >= 0 (names the compiler made, which count things
  /// that may be none). Sound, not complete: substitutes s = 1 + s' for the former and asks
  /// for all coefficients to be >= 0.
  bool provablyNonNegative() const;
  /// Whether a size name is an identifier, as the sizes of parameter types are.
  static bool isUserSize(const std::string& name);
  std::string str() const;
  const std::map<Monomial, int64_t>& terms() const { return terms_; }

private:
  void normalize();
  std::map<Monomial, int64_t> terms_; // no zero coefficients
};

} // namespace slope
