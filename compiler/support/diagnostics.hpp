// Source files, source ranges and diagnostics.
//
// Every stage reports problems through a DiagSink; rendering follows INTERFACE.md:
//   FILE:LINE:COL: error: MESSAGE
//   <the source line>
//   <spaces>^
// Columns count Unicode code points (1-based), so the caret lines up under the character.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace slope {

/// A half-open byte range [begin, end) into a SourceFile's text.
struct SrcRange {
  uint32_t begin = 0;
  uint32_t end = 0;
};

struct LineCol {
  int line = 1;   // 1-based
  int column = 1; // 1-based, in code points
};

/// The text of one input file with a line index.
class SourceFile {
public:
  SourceFile(std::string path, std::string text);
  const std::string& path() const { return path_; }
  const std::string& text() const { return text_; }
  LineCol lineCol(uint32_t offset) const;
  /// "PATH:LINE:COL" of an offset, as diagnostics begin.
  std::string position(uint32_t offset) const;
  /// The text of a 1-based line, without its line break (nor, on line 1, a UTF-8 byte-order
  /// mark).
  std::string_view lineText(int line) const;
  bool hasBom() const { return text_.compare(0, 3, "\xEF\xBB\xBF") == 0; }

private:
  std::string path_;
  std::string text_;
  std::vector<uint32_t> lineStarts_;
};

struct Diag {
  SrcRange range;
  std::string message;
};

/// Collects errors for one file. Duplicate (location, message) pairs are dropped, so a
/// function that is checked from several call sites reports each problem once.
class DiagSink {
public:
  explicit DiagSink(const SourceFile& file) : file_(&file) {}
  void error(SrcRange where, std::string message);
  bool hasErrors() const { return !diags_.empty(); }
  const std::vector<Diag>& diagnostics() const { return diags_; }
  const SourceFile& file() const { return *file_; }
  /// All diagnostics, sorted by position, rendered as the CLI prints them.
  std::string render() const;

private:
  const SourceFile* file_;
  std::vector<Diag> diags_;
  // (offset, message) of every diagnostic, so a repeat is found in constant time: a file
  // with 100,000 errors took quadratic time with a scan of diags_.
  std::unordered_set<std::string> seen_;
};

/// Renders one diagnostic: header line, source line, caret line.
std::string renderDiagnostic(const SourceFile& file, const Diag& d);

/// Returns the byte offset of the first invalid UTF-8 sequence in text, or -1 if valid.
long firstInvalidUtf8(std::string_view text);

} // namespace slope
