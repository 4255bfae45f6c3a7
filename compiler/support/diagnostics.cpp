#include "compiler/support/diagnostics.hpp"

#include <algorithm>
#include <cstdio>

namespace slope {

namespace {

/// Length of the valid UTF-8 sequence at s[i], or 0 if the byte there does not start one.
size_t utf8Length(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0)
    len = 2, cp = c & 0x1F;
  else if ((c & 0xF0) == 0xE0)
    len = 3, cp = c & 0x0F;
  else if ((c & 0xF8) == 0xF0)
    len = 4, cp = c & 0x07;
  else
    return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and code points past U+10FFFF are invalid.
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return 0;
  return len;
}

/// Splits a line into display units: each valid UTF-8 character is one unit, and so is each
/// byte that is not part of one (shown as '?'). Columns count units.
struct Unit {
  size_t begin, len;
  bool valid;
};
std::vector<Unit> units(std::string_view line) {
  std::vector<Unit> out;
  for (size_t i = 0; i < line.size();) {
    size_t n = utf8Length(line, i);
    out.push_back({i, n ? n : 1, n != 0});
    i += n ? n : 1;
  }
  return out;
}

} // namespace

SourceFile::SourceFile(std::string path, std::string text)
    : path_(std::move(path)), text_(std::move(text)) {
  lineStarts_.push_back(0);
  for (uint32_t i = 0; i < text_.size(); ++i)
    if (text_[i] == '\n') lineStarts_.push_back(i + 1);
}

LineCol SourceFile::lineCol(uint32_t offset) const {
  offset = std::min<uint32_t>(offset, static_cast<uint32_t>(text_.size()));
  // The end of a file that ends with a newline is shown at the end of its last line, not on
  // an empty line after it.
  if (offset == text_.size() && offset > 0 && text_[offset - 1] == '\n') --offset;
  auto it = std::upper_bound(lineStarts_.begin(), lineStarts_.end(), offset);
  int line = static_cast<int>(it - lineStarts_.begin());
  uint32_t start = lineStarts_[line - 1];
  if (line == 1 && hasBom() && offset >= 3) start = 3; // the byte-order mark is not a column
  int col = 1;
  for (const Unit& u : units(std::string_view(text_).substr(start, offset - start)))
    if (u.begin < offset - start) ++col;
  return {line, col};
}

std::string_view SourceFile::lineText(int line) const {
  if (line < 1 || line > static_cast<int>(lineStarts_.size())) return {};
  uint32_t b = lineStarts_[line - 1];
  uint32_t e = line < static_cast<int>(lineStarts_.size()) ? lineStarts_[line] - 1
                                                           : static_cast<uint32_t>(text_.size());
  std::string_view s(text_.data() + b, e - b);
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  if (line == 1 && hasBom()) s.remove_prefix(3);
  return s;
}

void DiagSink::error(SrcRange where, std::string message) {
  if (!seen_.insert(std::to_string(where.begin) + ":" + message).second) return;
  diags_.push_back({where, std::move(message)});
}

std::string SourceFile::position(uint32_t offset) const {
  LineCol lc = lineCol(offset);
  return path_ + ":" + std::to_string(lc.line) + ":" + std::to_string(lc.column);
}

std::string renderDiagnostic(const SourceFile& file, const Diag& d) {
  LineCol lc = file.lineCol(d.range.begin);
  std::string out = file.position(d.range.begin) + ": error: " + d.message + "\n";
  std::string_view line = file.lineText(lc.line);
  // Each unit is shown as itself, except bytes that are not valid UTF-8 and control
  // characters (tab aside), which are escaped as \xNN so the terminal stays sane and nothing
  // is hidden; the caret counts the shown characters. A long line is cut to kShownUnits units
  // around the column, with "..." where it was cut.
  constexpr size_t kShownUnits = 200;
  std::vector<Unit> us = units(line);
  size_t col = static_cast<size_t>(lc.column) - 1; // the unit the caret points at
  size_t from = 0, to = us.size();
  if (us.size() > kShownUnits) {
    from = col > kShownUnits / 2 ? col - kShownUnits / 2 : 0;
    to = std::min(us.size(), from + kShownUnits);
    from = to - kShownUnits;
  }
  std::string shown, caret;
  if (from > 0) shown += "...", caret += "   ";
  for (size_t k = from; k < to; ++k) {
    const Unit& u = us[k];
    unsigned char c = static_cast<unsigned char>(line[u.begin]);
    std::string piece;
    if (!u.valid || (u.len == 1 && ((c < 0x20 && c != '\t') || c == 0x7F))) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      piece = buf;
    } else {
      piece = std::string(line.substr(u.begin, u.len));
    }
    if (k < col)
      caret +=
          c == '\t' ? std::string("\t") : std::string(u.valid && u.len > 1 ? 1 : piece.size(), ' ');
    shown += piece;
  }
  if (to < us.size()) shown += "...";
  out += shown + "\n" + caret + "^\n";
  return out;
}

std::string DiagSink::render() const {
  std::vector<Diag> sorted = diags_;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Diag& a, const Diag& b) { return a.range.begin < b.range.begin; });
  std::string out;
  for (const auto& d : sorted)
    out += renderDiagnostic(*file_, d);
  return out;
}

long firstInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8Length(s, i);
    if (n == 0) return static_cast<long>(i);
    i += n;
  }
  return -1;
}

} // namespace slope
