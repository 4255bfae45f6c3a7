// Robustness of the slopec command line on bad input (INTERFACE.md: exit status 0 success,
// 1 a check failed, 2 bad usage, bad input file or compile error; diagnostics are
// `FILE:LINE:COL: error: MESSAGE` followed by the source line and a caret line).
//
// Runs the built slopec (SLOPEC_PATH) as a separate process (`check --interp` on every file;
// `grad --emit ir` and, for some, `check` on the LLVM JIT where the file compiles) on
//   (a) 300 files of random bytes (uniform bytes, printable ASCII, and a soup of the
//       language's own tokens), and
//   (b) 300 seeded mutations of the sample files (characters deleted, inserted, replaced,
//       swapped; spans deleted or duplicated),
// and requires every run to end with exit status 0, 1 or 2, never by a signal or a timeout,
// and every exit 2 to explain itself: a located diagnostic (header, source line, caret line)
// or a `slopec: error:` line, never an internal error. A compile error (anything but a
// `slopec: error:` line) must produce at least one `:LINE:COL: error:` line.
//
// Everything is seeded: a failure names the case, and the offending input is kept on disk
// (the path is printed) so that it can be replayed by hand.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;

constexpr int kRandomFiles = 300;
constexpr int kMutatedFiles = 300;
constexpr size_t kJitEvery = 5;
// Per slopec run; normal runs take ms (sanitized builds scale it: tests/CMakeLists.txt).
constexpr auto kTimeout = std::chrono::seconds(20 * SLOPE_TIME_SCALE);

struct RunResult {
  bool signaled = false;
  bool timedOut = false;
  int status = -1; // exit status, or the signal number when signaled
  std::string out, err;
};

std::string readAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeAll(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

/// Runs slopec with `args`, stdout and stderr captured in files under `dir`, with a timeout.
RunResult runSlopec(const std::vector<std::string>& args, const fs::path& dir) {
  RunResult r;
  fs::path outPath = dir / "stdout.txt", errPath = dir / "stderr.txt";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, outPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, errPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> argv{SLOPEC_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv)
    cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, SLOPEC_PATH, &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << SLOPEC_PATH << ": " << std::strerror(rc);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + kTimeout;
  int ws = 0;
  for (auto sleep = std::chrono::microseconds(200);;) {
    pid_t w = waitpid(pid, &ws, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid: " << std::strerror(errno);
      return r;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &ws, 0);
      r.timedOut = true;
      break;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(5000));
  }
  if (WIFSIGNALED(ws)) {
    r.signaled = true;
    r.status = WTERMSIG(ws);
  } else if (WIFEXITED(ws)) {
    r.status = WEXITSTATUS(ws);
  }
  r.out = readAll(outPath);
  r.err = readAll(errPath);
  return r;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '\n') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

/// Line `n` (1-based) of `text` without its line break; empty past the end.
std::string sourceLine(const std::string& text, long n) {
  size_t b = 0;
  for (long k = 1; k < n; ++k) {
    b = text.find('\n', b);
    if (b == std::string::npos) return "";
    ++b;
  }
  size_t e = text.find('\n', b);
  std::string line = text.substr(b, e == std::string::npos ? std::string::npos : e - b);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

bool plainAscii(const std::string& s) {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c >= 0x7F) return false;
  return true;
}

/// Checks one run; returns an empty string when it behaved, else what went wrong.
/// `content` is the input file's text: a diagnostic's echoed source line must be its line
/// LINE (compared where that line is plain ASCII, which is echoed unchanged).
std::string judge(const RunResult& r, const std::string& file, const std::string& content) {
  if (r.timedOut) return "timed out (killed after " + std::to_string(kTimeout.count()) + " s)";
  if (r.signaled)
    return std::string("killed by signal ") + std::to_string(r.status) + " (" +
           strsignal(r.status) + ")";
  if (r.status < 0 || r.status > 2) return "exit status " + std::to_string(r.status);
  if (r.err.find("internal error") != std::string::npos) return "internal error reported";
  if (r.status != 2) return "";

  // Exit 2: either bad usage / a call error ("slopec: error: ..."), or located diagnostics,
  // each a header `FILE:LINE:COL: error: MESSAGE`, the source line and a caret line.
  static const std::regex header(R"(^(.*):([0-9]+):([0-9]+): error: .+$)");
  static const std::regex caret(R"(^[ \t]*\^$)");
  auto ls = lines(r.err);
  int located = 0;
  bool usage = false;
  for (size_t i = 0; i < ls.size(); ++i) {
    std::smatch m;
    if (ls[i].rfind("slopec: error: ", 0) == 0) {
      usage = true;
      continue;
    }
    if (!std::regex_match(ls[i], m, header)) continue;
    ++located;
    if (m[1].str() != file) return "diagnostic names '" + m[1].str() + "', not the input file";
    if (std::stol(m[2].str()) < 1 || std::stol(m[3].str()) < 1) return "line/column below 1";
    if (i + 2 >= ls.size()) return "diagnostic without a source line and a caret line";
    std::string want = sourceLine(content, std::stol(m[2].str()));
    // A plain ASCII line is echoed unchanged up to 200 characters; a longer one is cut to 200
    // around the column, with "..." where it was cut (compiler/support/diagnostics.cpp).
    if (plainAscii(want) && want.size() <= 200 && ls[i + 1] != want)
      return "diagnostic at line " + m[2].str() + " echoes '" + ls[i + 1] + "', not '" + want + "'";
    if (plainAscii(want) && want.size() > 200) {
      std::string shown = ls[i + 1];
      size_t b = shown.rfind("...", 0) == 0 ? 3 : 0;
      size_t e = shown.size() >= 3 && shown.compare(shown.size() - 3, 3, "...") == 0 &&
                         shown.size() - 3 >= b
                     ? shown.size() - 3
                     : shown.size();
      std::string piece = shown.substr(b, e - b);
      if (piece.size() != 200 || want.find(piece) == std::string::npos)
        return "diagnostic at line " + m[2].str() + " echoes '" + shown +
               "', not 200 characters of its line";
    }
    if (!std::regex_match(ls[i + 2], caret)) return "no caret line after a diagnostic";
    i += 2;
  }
  if (located == 0 && !usage) return "exit 2 without a ':LINE:COL: error:' diagnostic";
  return "";
}

/// A fresh temporary directory, removed at the end unless a case failed.
struct TempDir {
  fs::path path;
  bool keep = false;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "slope_cli_fuzz_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!keep) fs::remove_all(path, ec);
  }
};

struct Stats {
  std::atomic<int> failures{0}, exit0{0}, exit1{0}, exit2{0};
};

/// Runs `slopec check` (every function: parse, check, lower, differentiate, evaluate at
/// random inputs) on the file and, when it compiled, `slopec grad --emit ir` too; checks all.
/// `work` is a directory of the calling thread for the captured output.
void exercise(const std::string& prefix, size_t index, const std::string& content, TempDir& tmp,
              const fs::path& work, Stats& stats) {
  fs::path file = tmp.path / (prefix + std::to_string(index) + ".slope");
  writeAll(file, content);
  bool failed = false;
  auto one = [&](const std::vector<std::string>& args) {
    RunResult r = runSlopec(args, work);
    std::string why = judge(r, file.string(), content);
    if (!r.signaled && !r.timedOut) {
      if (r.status == 0) ++stats.exit0;
      if (r.status == 1) ++stats.exit1;
      if (r.status == 2) ++stats.exit2;
    }
    if (!why.empty()) {
      failed = true;
      ADD_FAILURE() << "slopec " << args[0] << " " << file.string() << " (kept on disk): " << why
                    << "\n--- stderr (first 2000 bytes) ---\n"
                    << r.err.substr(0, 2000);
    }
    return r;
  };
  // The reference evaluator keeps the run cheap; a program that compiles also goes through
  // `grad --emit ir` and, one in `kJitEvery`, through the default LLVM JIT (compiling the
  // mixture sample there takes most of a second).
  RunResult checked = one({"check", file.string(), "--seed", "1", "--interp"});
  if (!checked.signaled && !checked.timedOut && (checked.status == 0 || checked.status == 1)) {
    one({"grad", file.string(), "--emit", "ir"});
    if (index % kJitEvery == 0) one({"check", file.string(), "--seed", "1"});
  }
  if (failed) {
    tmp.keep = true;
    ++stats.failures;
  } else {
    std::error_code ec;
    fs::remove(file, ec);
  }
}

/// Runs exercise() over all inputs on two threads (each slopec run is a separate process;
/// most of the time goes to starting it).
void exerciseAll(const std::string& prefix, const std::vector<std::string>& inputs, TempDir& tmp,
                 Stats& stats) {
  std::atomic<size_t> next{0};
  auto worker = [&](int id) {
    fs::path work = tmp.path / ("worker" + std::to_string(id));
    fs::create_directories(work);
    for (size_t i; (i = next++) < inputs.size() && stats.failures < 10;)
      exercise(prefix, i, inputs[i], tmp, work, stats);
  };
  std::thread t1(worker, 1), t2(worker, 2);
  t1.join();
  t2.join();
}

// ---------------------------------------------------------------------------------------------
// Inputs

std::string randomBytes(std::mt19937& rng, int kind) {
  std::uniform_int_distribution<int> len(0, 400);
  int n = len(rng);
  std::string s;
  if (kind == 0) { // uniform bytes
    std::uniform_int_distribution<int> b(0, 255);
    for (int i = 0; i < n; ++i)
      s += static_cast<char>(b(rng));
  } else if (kind == 1) { // printable ASCII and newlines
    std::uniform_int_distribution<int> b(0x20, 0x7F);
    for (int i = 0; i < n; ++i) {
      int c = b(rng);
      s += c == 0x7F ? '\n' : static_cast<char>(c);
    }
  } else { // a soup of the language's tokens: looks like Slope, rarely is
    static const std::vector<std::string> toks = {
        "fn ",  "f",     "g",      "x",    "y",    "n",    "m",      "i",     "j",         "(",
        ")",    "[",     "]",      "{",    "}",    ",",    ":",      ";",     "->",        "f64",
        "f32",  "i64",   "bool",   "let ", "var ", "for ", " in ",   "..",    "if ",       "else ",
        "true", "false", "+",      "-",    "*",    "/",    "%",      "@",     "^",         "<",
        "<=",   "==",    "!=",     "&&",   "||",   "!",    "=",      "0",     "1",         "2.5",
        ".5",   "1e-3",  "sum",    "exp",  "log",  "max",  "select", "zeros", "transpose", "size",
        "\n",   " ",     "// c\n", "é",    "\xff"};
    std::uniform_int_distribution<size_t> t(0, toks.size() - 1);
    for (int i = 0; i < n / 3; ++i)
      s += toks[t(rng)];
  }
  return s;
}

std::string mutate(std::string s, std::mt19937& rng) {
  static const std::string alphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \n\t()[]{},:;.+-*/%@^<>=!&|";
  std::uniform_int_distribution<int> nops(1, 8), op(0, 6),
      ch(0, static_cast<int>(alphabet.size()) - 1);
  int k = nops(rng);
  for (int i = 0; i < k; ++i) {
    size_t n = s.size();
    std::uniform_int_distribution<size_t> at(0, n == 0 ? 0 : n - 1);
    size_t p = at(rng);
    switch (op(rng)) {
    case 0: // delete a character
      if (n) s.erase(p, 1);
      break;
    case 1: // insert a character of the language
      s.insert(s.begin() + static_cast<long>(std::min(p, n)),
               alphabet[static_cast<size_t>(ch(rng))]);
      break;
    case 2: // replace a character
      if (n) s[p] = alphabet[static_cast<size_t>(ch(rng))];
      break;
    case 3: // swap two adjacent characters
      if (n > 1 && p + 1 < n) std::swap(s[p], s[p + 1]);
      break;
    case 4: { // delete a span of up to 40 characters
      std::uniform_int_distribution<size_t> len(1, 40);
      if (n) s.erase(p, len(rng));
      break;
    }
    case 5: { // duplicate a span of up to 40 characters somewhere else
      std::uniform_int_distribution<size_t> len(1, 40);
      if (n) {
        std::string span = s.substr(p, len(rng));
        s.insert(at(rng), span);
      }
      break;
    }
    case 6: { // insert an odd byte: NUL, a control character, non-ASCII, invalid UTF-8
      static const std::vector<std::string> odd = {std::string(1, '\0'), "\x01", "\x7f", "é",
                                                   "\xe2\x82\xac",       "\xc3", "\xff", "\r\n"};
      std::uniform_int_distribution<size_t> o(0, odd.size() - 1);
      s.insert(std::min(p, n), odd[o(rng)]);
      break;
    }
    }
  }
  return s;
}

std::vector<std::string> sampleTexts() {
  std::vector<std::string> out;
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(fs::path(SLOPE_SOURCE_DIR) / "samples"))
    if (e.path().extension() == ".slope") paths.push_back(e.path());
  std::sort(paths.begin(), paths.end()); // a fixed order, so the seeds mean the same thing
  for (const auto& p : paths)
    out.push_back(readAll(p));
  return out;
}

// ---------------------------------------------------------------------------------------------

TEST(CliFuzz, SamplesAreValidBaseline) {
  // The unmutated samples compile and pass their gradient checks: the mutations below start
  // from working programs.
  TempDir tmp;
  auto texts = sampleTexts();
  ASSERT_FALSE(texts.empty()) << "no samples/*.slope under " << SLOPE_SOURCE_DIR;
  for (size_t k = 0; k < texts.size(); ++k) {
    fs::path file = tmp.path / ("sample" + std::to_string(k) + ".slope");
    writeAll(file, texts[k]);
    RunResult r = runSlopec({"check", file.string()}, tmp.path);
    EXPECT_FALSE(r.signaled);
    EXPECT_EQ(r.status, 0) << r.err;
  }
}

TEST(CliFuzz, RandomBytesNeverCrash) {
  TempDir tmp;
  std::mt19937 rng(20261126);
  std::vector<std::string> inputs;
  for (int i = 0; i < kRandomFiles; ++i)
    inputs.push_back(randomBytes(rng, i % 3));
  Stats stats;
  exerciseAll("random", inputs, tmp, stats);
  EXPECT_EQ(stats.failures, 0);
  // Random bytes are (almost) never a valid program.
  EXPECT_GT(stats.exit2, kRandomFiles * 9 / 10);
  std::cout << "[ random   ] exit 0: " << stats.exit0 << ", exit 1: " << stats.exit1
            << ", exit 2: " << stats.exit2 << "\n";
}

TEST(CliFuzz, MutatedSamplesNeverCrash) {
  TempDir tmp;
  auto texts = sampleTexts();
  ASSERT_FALSE(texts.empty());
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> pick(0, texts.size() - 1);
  std::vector<std::string> inputs;
  for (int i = 0; i < kMutatedFiles; ++i) {
    size_t k = pick(rng);
    inputs.push_back(mutate(texts[k], rng));
  }
  Stats stats;
  exerciseAll("mutant", inputs, tmp, stats);
  EXPECT_EQ(stats.failures, 0);
  // The mix should reach past the parser: some mutants still compile, most do not.
  EXPECT_GT(stats.exit0, 0);
  EXPECT_GT(stats.exit2, 0);
  std::cout << "[ mutants  ] exit 0: " << stats.exit0 << ", exit 1: " << stats.exit1
            << ", exit 2: " << stats.exit2 << "\n";
}

} // namespace
