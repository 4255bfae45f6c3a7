#include "compiler/support/diagnostics.hpp"

#include <algorithm>

namespace slope {

SourceFile::SourceFile(std::string path, std::string text)
    : path_(std::move(path)), text_(std::move(text)) {
  lineStarts_.push_back(0);
  for (uint32_t i = 0; i < text_.size(); ++i)
    if (text_[i] == '\n') lineStarts_.push_back(i + 1);
}

LineCol SourceFile::lineCol(uint32_t offset) const {
  offset = std::min<uint32_t>(offset, static_cast<uint32_t>(text_.size()));
  auto it = std::upper_bound(lineStarts_.begin(), lineStarts_.end(), offset);
  int line = static_cast<int>(it - lineStarts_.begin());
  uint32_t start = lineStarts_[line - 1];
  int col = 1;
  // Count code points: every byte that is not a UTF-8 continuation byte starts one.
  for (uint32_t i = start; i < offset; ++i)
    if ((static_cast<unsigned char>(text_[i]) & 0xC0) != 0x80) ++col;
  return {line, col};
}

std::string_view SourceFile::lineText(int line) const {
  if (line < 1 || line > static_cast<int>(lineStarts_.size())) return {};
  uint32_t b = lineStarts_[line - 1];
  uint32_t e = line < static_cast<int>(lineStarts_.size()) ? lineStarts_[line] - 1
                                                           : static_cast<uint32_t>(text_.size());
  std::string_view s(text_.data() + b, e - b);
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return s;
}

void DiagSink::error(SrcRange where, std::string message) {
  for (const auto& d : diags_)
    if (d.range.begin == where.begin && d.message == message) return;
  diags_.push_back({where, std::move(message)});
}

std::string renderDiagnostic(const SourceFile& file, const Diag& d) {
  LineCol lc = file.lineCol(d.range.begin);
  std::string out = file.path() + ":" + std::to_string(lc.line) + ":" + std::to_string(lc.column) +
                    ": error: " + d.message + "\n";
  std::string_view line = file.lineText(lc.line);
  // A line with invalid UTF-8 is shown with the bad bytes replaced, so the terminal stays sane.
  std::string shown;
  for (unsigned char c : line) shown += (c < 0x20 && c != '\t') ? ' ' : static_cast<char>(c);
  if (firstInvalidUtf8(shown) >= 0) {
    std::string clean;
    for (unsigned char c : shown) clean += c < 0x80 ? static_cast<char>(c) : '?';
    shown = clean;
  }
  out += shown + "\n";
  std::string caret;
  int col = 1;
  for (size_t i = 0; i < shown.size() && col < lc.column; ++i) {
    unsigned char c = static_cast<unsigned char>(shown[i]);
    if ((c & 0xC0) == 0x80) continue;
    caret += c == '\t' ? '\t' : ' ';
    ++col;
  }
  out += caret + "^\n";
  return out;
}

std::string DiagSink::render() const {
  std::vector<Diag> sorted = diags_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Diag& a, const Diag& b) {
    return a.range.begin < b.range.begin;
  });
  std::string out;
  for (const auto& d : sorted) out += renderDiagnostic(*file_, d);
  return out;
}

long firstInvalidUtf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return static_cast<long>(i);
    }
    if (i + len > n) return static_cast<long>(i);
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return static_cast<long>(i);
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and code points past U+10FFFF.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return static_cast<long>(i);
    i += len;
  }
  return -1;
}

} // namespace slope
