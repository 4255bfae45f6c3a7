// Tensor input and output for the command line: values written on the command line
// ("2", "[[1,2],[3,4]]"), NumPy .npy files, and JSON / human-readable printing.
#pragma once

#include "slope/tensor.hpp"

#include <stdexcept>
#include <string>
#include <string_view>

namespace slope {

/// Thrown for malformed values; the message says what is wrong (and where in the text / file).
struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Parses a command-line or JSON value: a number ("2", "-1.5e3", "nan", "inf", "-inf", and
/// the strings "\"NaN\"", "\"Infinity\"", "\"-Infinity\"" that --json writes), true / false,
/// or a nested list ("[[1,2],[3,4]]", whitespace allowed) into a tensor of the given dtype.
/// Rank is whatever the nesting gives (a bare number makes a scalar).
/// Errors (ValueError, message with a 1-based column): ragged lists, empty lists, non-numbers,
/// trailing text, fractional / nan / infinite values for i64, values that don't fit i64 or
/// overflow f32 / f64, true / false for a numeric dtype. Bool accepts true/false/0/1.
Tensor parseValue(std::string_view text, DType dtype);

/// Reads a NumPy .npy file (format versions 1.0, 2.0 and 3.0) holding little-endian '<f8',
/// '<f4', '<i8', '<i4', '|b1' or '|u1' (b1 and u1 only for bool, values 0/1) data in C order
/// (fortran_order True with rank >= 2 is an error). Converts to the requested dtype when
/// exact: f32 -> f64, i32 -> i64, integers -> f32/f64 where every element is exactly
/// representable (an element that is not is an error naming it). Narrowing (f64 -> f32,
/// float -> integer, integer -> bool, bool -> a number) is an error such as
/// "x.npy: file holds f64 but parameter is f32". Where the file's type differs from dtype,
/// *converted (if given) says so ("x.npy holds f32 data, converted exactly to f64"), else it
/// is cleared. Unreadable, truncated or malformed files throw ValueError naming the path.
Tensor readNpy(const std::string& path, DType dtype, std::string* converted = nullptr);

/// Reads a JSON file holding one value in parseValue's syntax (a number, a nested list, the
/// strings "NaN", "Infinity", "-Infinity"). Errors name the path.
Tensor readJson(const std::string& path, DType dtype);

/// Writes a tensor as .npy format version 1.0, C order ('<f4', '<f8', '<i8' or '|b1').
/// Throws ValueError if the file cannot be written.
void writeNpy(const std::string& path, const Tensor& t);

/// A tensor as JSON text: a scalar as a number, a tensor as nested lists ("[[1,2],[3,4]]").
/// Floats use the shortest representation that round-trips in the tensor's own dtype
/// (0.1f prints as 0.1), integral values print without a decimal point ("54"); bool as
/// true/false; NaN and the infinities as the strings "NaN", "Infinity", "-Infinity" (strict
/// JSON has no non-finite numbers; this is protobuf's JSON mapping). Zero-size dimensions
/// print as [].
std::string toJson(const Tensor& t);

/// The same formatting for human-readable output: lists get ", " separators
/// ("[[4, 6], [8, 10]]") and nan/inf print as nan, inf, -inf.
std::string toText(const Tensor& t);

/// Formats one value the way toJson (json = true) or toText (json = false) formats an
/// element of the given dtype.
std::string formatNumber(double v, DType dtype, bool json);

} // namespace slope
