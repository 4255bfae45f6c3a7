// slopec: the Slope command line (INTERFACE.md).
//
//   slopec eval  FILE [--fn NAME] [ARG=VALUE ...] [--no-grad] [--wrt a,b] [--seed-out S] [--json]
//   slopec check FILE [--fn NAME] [ARG=VALUE ...] [--sizes n=4,m=3] [--seed S] [--rtol R]
//                     [--atol A] [--step H] [--max-elements K] [--json]
//   slopec grad  FILE [--fn NAME] [--wrt a,b] --emit KIND [-o OUT]
//
// Exit status: 0 success, 1 a check failed, 2 bad usage, bad input or compile error.

#include "compiler/aot.hpp"
#include "compiler/autodiff/autodiff.hpp"
#include "compiler/codegen/execute.hpp"
#include "compiler/codegen/offload.hpp"
#include "compiler/codegen/ptx.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/emit/dot.hpp"
#include "compiler/emit/slope_source.hpp"
#include "compiler/eval/interp.hpp"
#include "compiler/gradcheck.hpp"
#include "compiler/lower/loop_ir.hpp"
#include "compiler/pipeline.hpp"
#include "compiler/sparsity.hpp"
#include "compiler/support/checked.hpp"
#include "compiler/support/thread_pool.hpp"
#include "runtime/cuda_driver.hpp"
#include "runtime/io.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace slope;

constexpr int kOk = 0, kCheckFailed = 1, kBad = 2;

const char* kUsage = R"(usage: slopec COMMAND FILE [options]

Slope compiles functions written in the Slope language and their reverse-mode gradients.

commands:
  eval    evaluate a function and its gradient
  check   compare reverse-mode gradients with central finite differences
  grad    print the gradient function (--emit slope | ir | forward | llvm | asm), or --stats
  graph   the computation as a Graphviz DOT graph (--grad: with its adjoint)
  compile functions and their gradients into an object file and its C header
  jvp     forward mode: the function and its derivative along tangents (--tangent x=...)
  hvp     a Hessian-vector product (forward over reverse) of a scalar function
  jacobian the dense Jacobian (forward or reverse mode, whichever needs fewer calls)
  hessian the dense Hessian of a scalar function

options common to all commands:
  --fn NAME        the function (eval/grad: default the first in the file;
                   check: default every function)
  --json           one JSON object on stdout instead of text
  --interp         run on the reference evaluator instead of the LLVM JIT
  --threads N      eval, check: run parallel loops on N threads (default: SLOPE_NUM_THREADS
                   when set, otherwise every core); results are the same for every N
  --device D       eval, check: cpu (the default), cuda or auto (CUDA where a GPU and its
                   driver are, else the CPU, and says which). On cuda, parallel loop nests
                   run as GPU kernels and the rest on this CPU (docs/gpu.md)
  --opt-level N    eval, check, jvp, hvp, jacobian, hessian, compile, grad --emit llvm|asm|obj:
                   LLVM's optimisation level, 0 to 3 (default 2). 0 compiles about ten times
                   faster and runs several times slower; results are the same at every level
  --checkpoint=N   loops with state: keep the state every N iterations and recompute in
                   between, not a tape entry per iteration; also --checkpoint=sqrt (every
                   sqrt(iterations)), revolve:S (Revolve's binomial schedule with at most S
                   states kept) and memory:BYTES (Revolve with as many states as fit in
                   BYTES, an error below one state; suffixes k, M, G are powers of 1024)
  -h, --help       help for a command (slopec COMMAND --help)
  --version        print the version

exit status: 0 success, 1 a check failed, 2 bad usage, bad input or compile error
)";

const char* kEvalHelp =
    R"(usage: slopec eval FILE [--fn NAME] [ARG=VALUE ...] [--no-grad] [--wrt a,b]
                   [--seed-out ones|VALUE] [--json]

Evaluates the function (default: the first in FILE) at the given arguments and, for a scalar
float result, its gradient with respect to every float parameter (or those in --wrt).
VALUE is a number (2.5), a nested list ('[[1,2],[3,4]]'), @PATH.json or @PATH.npy; the
strings "NaN", "Infinity" and "-Infinity" stand for the non-finite numbers (as --json writes
them); true and false only for bool parameters. A file of f32 or integer data for an f64
parameter is converted when every value converts exactly (a note on stderr says so), and
refused otherwise.
A tensor- or tuple-valued function gets a vector-Jacobian product when --seed-out gives the
output cotangent: 'ones', a number (every element), a nested list, @PATH.json or @PATH.npy;
for a tuple with several float elements, a list with one cotangent per float element
('[[1,0,2], 1]'). A scalar function takes no --seed-out (its gradient is seeded with 1).
--json prints strict JSON: non-finite numbers are the strings "NaN", "Infinity", "-Infinity".
)";

const char* kJvpHelp =
    R"(usage: slopec jvp FILE [--fn NAME] ARG=VALUE ... --tangent PARAM=VALUE ... [--json]
                  [--emit slope|ir|loops [--batch K [--lanes PARAM=L,L,...]]]
       slopec hvp FILE [--fn NAME] ARG=VALUE ... --tangent PARAM=VALUE ... [--wrt a,b]
                  [--checkpoint=N] [--json] [--emit slope|ir|loops [--batch K]]

jvp evaluates the function and, by forward mode, the derivative of each float result along
the tangents: J v, where v is the tangent of each float parameter named by --tangent (given
several times; the parameters not named are held fixed). A tangent VALUE is written as an
argument is, and a number stands for that number in every element.
hvp takes a function with one scalar float result and prints its value, its gradient with
respect to every float parameter (or those in --wrt), and H v, the Hessian times the
direction v given by --tangent (zero for the parameters not named), by forward mode over the
reverse-mode gradient.
--emit slope|ir prints the function NAME_jvp or NAME_hvp instead (no ARG=VALUE then): its
parameters are the function's, then a tangent PARAM_dot per differentiated parameter;
--emit loops prints it in Loop IR (the loop nests the backends translate).
With --batch K it prints NAME_jvp_batchK (NAME_hvp_batchK), K directions in one call: each
tangent has its parameter's shape and a last dimension K, direction j at [..., j] (what
jacobian and hessian call, up to 16 directions at a time). With --lanes (given once per
parameter, no --tangent) it prints NAME_jvp_seededK, the JVP a sparse Jacobian runs when each
colour is told by a column's parameter and last index: no tangent parameters, element [..., k]
of PARAM is 1 in lane L_k (-1: none) and 0 in the others, as constants of the code; one lane
stands for every element. A lane no seed reaches is never computed.
)";

const char* kJacobianHelp =
    R"(usage: slopec jacobian FILE [--fn NAME] ARG=VALUE ... [--wrt a,b]
                       [--mode forward|reverse|auto] [--sparse] [--json]
       slopec hessian FILE [--fn NAME] ARG=VALUE ... [--wrt a,b] [--sparse] [--json]

jacobian prints the dense Jacobian of the float results with respect to every float
parameter (or those in --wrt): a row per result element (row-major, result after result), a
column per parameter element (in parameter order). auto (the default) takes forward mode, a
JVP per column, when the inputs are fewer than the outputs, and reverse mode, a VJP per row,
otherwise; the first line (or "mode" and "calls" in --json) says which it took.
--sparse prints only the nonzeros, row by row ([column] value): the pattern is read off the
function's IR at these arguments, and columns that share no row take one JVP together
(colouring), so bundle adjustment's Jacobian takes 14 JVPs however many cameras and points
it has. Where the pattern cannot be read (a loop's state, an index computed from floats), every
entry is kept and it says so.
hessian prints the dense Hessian of a function with one scalar float result, a
Hessian-vector product per column; with --sparse only its nonzeros: the function is read as a
sum of terms (a sum over an index space is a term per element), the Hessian is supported on
what each term depends on, and columns that share no row take one HVP together.
)";

const char* kCheckHelp =
    R"(usage: slopec check FILE [--fn NAME] [ARG=VALUE ...] [--sizes n=4,m=3] [--seed S]
                    [--rtol R] [--atol A] [--step H] [--max-elements K] [--forward] [--json]

Compares the reverse-mode gradient with finite differences for every float parameter, at
random inputs (sizes 3 unless --sizes; floats ~ N(0,1); integers in [0,3)) or at the given
ARG=VALUE arguments. Without --fn, checks every function in FILE.

Each element is differenced at a step scaled by its magnitude (cbrt(eps) max(1, |x|)), at
that step and twice it, extrapolated (Richardson); an element passes when the error is
within rtol |fd| + atol plus the finite difference's own error: its truncation, estimated
from the two steps, and the rounding of the function's value, measured once per check. Where
rounding dominates, steps 10 and 100 times larger are tried too. --step H fixes the step.
A parameter with more than K elements (--max-elements, default 1000; fewer by default when
the inputs are very large) is checked on a random subset; the count is reported.
Where the value or the gradient is not finite at a draw, check draws again (up to 20 times;
the last 10 draws take positive floats) and reports the draws it discarded and why; where no
draw works it fails, printing the inputs, and asks for ARG=VALUE.
Default tolerances: f64 rtol 1e-5 atol 1e-7; f32 rtol 2e-3 atol 1e-4.
--forward checks forward mode too, at the same draw: the JVP against reverse mode
(<u, J v> = <J^T u, v> for random u and v) and against a finite difference along v, and for a
scalar function the Hessian-vector product against differences of the gradient.
Exit status 0 when every parameter passes, 1 otherwise.
)";

const char* kGradHelp =
    R"(usage: slopec grad FILE [--fn NAME] [--wrt a,b] --emit KIND [--arch SM] [-o OUT]
       slopec grad FILE [--fn NAME] [--wrt a,b] --stats [--sizes n=4,m=3] [--json]

Compiles the gradient function NAME_grad (scalar result) or NAME_vjp (otherwise).
KIND: slope    the gradient function as readable, simplified Slope source (it compiles)
      ir       the gradient function in Tensor IR (forward code, then the adjoint)
      forward  the forward function in Tensor IR
      loops    the gradient function in Loop IR: loop nests over buffers, each loop
               parallel, reduction or sequential (what the backends translate)
      forward-loops  the forward function in Loop IR
      llvm     the gradient function as optimised LLVM IR (C ABI: include/slope/abi.h)
      asm      the gradient function as assembly for this machine
      ptx      the CUDA kernels of the gradient function's parallel loop nests (PTX for
               --arch, default sm_80; sm_60 to sm_90), after a comment that says which
               loop nests are kernels and why the others stay on the host
      forward-ptx  the same for the forward function
--stats counts the operations the forward and the gradient function execute (on random
inputs, every size 3 unless --sizes) and their ratio, the instructions of each in IR, and the
most bytes of buffers (vars, tapes, adjoints; not the gradients) the gradient holds at once.
Without --fn: every function in FILE.
)";

const char* kCompileHelp =
    R"(usage: slopec compile FILE [--fn NAME ...] [--grad] [--gradient NAME ...]
                      [--wrt a,b] [--checkpoint=N] [--cpu CPU] [--target cpu]
                      -o OUT.o [--header OUT.h]

Compiles functions of FILE ahead of time into one object file, and writes the C header that
declares them (default: OUT.h beside OUT.o). The functions: those --fn names (it may be
given several times), or every one unless --gradient names some. Gradients: with --grad,
of each of those functions that has a float parameter; --gradient NAME (several times) adds
NAME's. A gradient is NAME_grad for a float scalar result, NAME_vjp otherwise, with respect
to --wrt (default every float parameter). The code is what the JIT makes for the same CPU,
and computes the same bits.
CPU: native (this machine, the default), x86-64, x86-64-v2, x86-64-v3 or x86-64-v4.

For each function NAME the header declares NAME(...): a typed entry with one parameter per
argument (arrays as const pointers, scalars by value), then one int64_t per size name, then
one pointer per result, then slope_error* (may be NULL). It returns 0, or an error code and
NAME__message(err, buf, n) says what went wrong, with the source location. It checks what C
cannot (sizes below 1, null data, outputs overlapping inputs); the code checks the rest
(subscripts, entry checks) as the JIT does. The object needs no Slope or LLVM library at run
time: link it with -lm, -lmvec where the header says so, and libslope_rt.a where the header
says so (digamma, binomial checkpointing). docs/aot.md has an example.
)";

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command, file, fn, emit, out, seedOut, header, cpu = "native", target = "cpu", arch,
                                                             device = "cpu";
  std::vector<std::string> fns;                              // every --fn (compile takes several)
  std::vector<std::string> gradients;                        // every --gradient (compile)
  std::vector<std::pair<std::string, std::string>> tangents; // every --tangent PARAM=VALUE
  std::string mode;                                          // --mode (jacobian)
  int batch = 0;                                             // --batch (jvp, hvp --emit)
  std::map<std::string, std::vector<int>> lanes;             // --lanes PARAM=L,... (jvp --emit)

  std::vector<std::pair<std::string, std::string>> values; // ARG=VALUE
  std::vector<std::string> wrt;
  std::map<std::string, int64_t> sizes;
  std::optional<double> rtol, atol, step;
  std::optional<int64_t> maxElements;
  uint64_t seed = 0;
  GradOptions checkpoint; // --checkpoint
  int threads = 0;        // --threads (0: defaultThreads())
  int optLevel = 2;       // --opt-level
  bool json = false, noGrad = false, help = false, interp = false, version = false, stats = false,
       grad = false, forward = false, sparse = false;
  std::set<std::string> given; // the options on the command line, for the per-command audit
};

std::vector<std::string> splitComma(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

double parseNumber(const std::string& flag, const std::string& v) {
  try {
    size_t pos = 0;
    double d = std::stod(v, &pos);
    if (pos != v.size()) throw std::invalid_argument(v);
    return d;
  } catch (const std::exception&) {
    throw Usage(flag + " needs a number, got '" + v + "'");
  }
}

/// A tolerance: a finite number >= 0 (a negative one would fail every element, or with
/// rtol pass any error of the opposite sign's scale: never what was meant).
double parseTolerance(const std::string& flag, const std::string& v) {
  double d = parseNumber(flag, v);
  if (!(d >= 0) || !std::isfinite(d))
    throw Usage(flag + " needs a finite number >= 0, got '" + v + "'");
  return d;
}

/// A whole number in [lo, hi] written in decimal, with no sign trickery; `what` names it.
uint64_t parseUnsigned(const std::string& what, const std::string& v, uint64_t lo, uint64_t hi) {
  uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ptr != v.data() + v.size() ||
      (ec != std::errc() && ec != std::errc::result_out_of_range))
    throw Usage(what + " needs an integer from " + std::to_string(lo) + " to " +
                std::to_string(hi) + ", got '" + v + "'");
  if (ec == std::errc::result_out_of_range || n > hi)
    throw Usage(what + " = " + v + " is too large (at most " + std::to_string(hi) + ")");
  if (n < lo)
    throw Usage(what + " needs an integer from " + std::to_string(lo) + " to " +
                std::to_string(hi) + ", got '" + v + "'");
  return n;
}
/// --checkpoint=N | sqrt | revolve:S | memory:BYTES[k|M|G]
GradOptions parseCheckpoint(const std::string& flag, const std::string& v) {
  const char* usage = " takes N (every N iterations), 'sqrt', 'revolve:S' (at most S states) or "
                      "'memory:BYTES' (k, M, G: powers of 1024)";
  GradOptions g;
  auto positive = [&](const std::string& text, double scale) {
    double d = 0;
    try {
      size_t pos = 0;
      d = std::stod(text, &pos);
      if (pos != text.size()) d = 0;
    } catch (const std::exception&) {
    }
    d *= scale;
    if (d < 1 || d != std::floor(d) || d > 1e15) throw Usage(flag + usage + ", got '" + v + "'");
    return static_cast<int64_t>(d);
  };
  if (v == "sqrt") {
    g.checkpoint = -1;
  } else if (v.rfind("revolve:", 0) == 0) {
    g.snapshots = positive(v.substr(8), 1);
  } else if (v.rfind("memory:", 0) == 0) {
    std::string n = v.substr(7);
    double scale = 1;
    if (!n.empty() && std::string("kKMG").find(n.back()) != std::string::npos) {
      char c = n.back();
      scale = c == 'G' ? 1024.0 * 1024 * 1024 : c == 'M' ? 1024.0 * 1024 : 1024.0;
      n.pop_back();
    }
    g.memory = positive(n, scale);
  } else {
    int64_t n = positive(v, 1);
    if (n > 1000000000) throw Usage(flag + usage + ", got '" + v + "'");
    g.checkpoint = static_cast<int>(n);
  }
  return g;
}

Args parseArgs(int argc, char** argv) {
  Args a;
  std::vector<std::string> av(argv + 1, argv + argc);
  size_t i = 0;
  auto value = [&](const std::string& flag, std::string& inlineVal) -> std::string {
    if (!inlineVal.empty()) return inlineVal;
    if (i + 1 >= av.size()) throw Usage(flag + " needs a value");
    return av[++i];
  };
  for (; i < av.size(); ++i) {
    std::string s = av[i], inl;
    if (s.rfind("--", 0) == 0 && s.find('=') != std::string::npos) {
      inl = s.substr(s.find('=') + 1);
      s = s.substr(0, s.find('='));
      if (inl.empty()) throw Usage(s + " needs a value");
    }
    static const std::set<std::string> kOptions = {
        "--stats",   "--checkpoint", "--grad",    "--json",     "--no-grad",      "--interp",
        "--fn",      "--emit",       "-o",        "--seed-out", "--wrt",          "--rtol",
        "--atol",    "--seed",       "--sizes",   "--step",     "--max-elements", "--threads",
        "--header",  "--cpu",        "--target",  "--gradient", "--arch",         "--device",
        "--tangent", "--mode",       "--forward", "--batch",    "--lanes",        "--opt-level"};
    // (compile takes --fn and --gradient several times)
    if (kOptions.count(s) && !a.given.insert(s).second && s != "--fn" && s != "--gradient" &&
        s != "--tangent" && s != "--lanes")
      throw Usage(s + " is given twice");
    if (s == "-h" || s == "--help")
      a.help = true;
    else if (s == "--version")
      a.version = true;
    else if (s == "--stats")
      a.stats = true;
    else if (s == "--checkpoint") {
      a.checkpoint = parseCheckpoint(s, value(s, inl));
    } else if (s == "--grad")
      a.grad = true;
    else if (s == "--json")
      a.json = true;
    else if (s == "--no-grad")
      a.noGrad = true;
    else if (s == "--forward")
      a.forward = true;
    else if (s == "--sparse")
      a.sparse = true;
    else if (s == "--interp")
      a.interp = true;
    else if (s == "--fn") {
      a.fn = value(s, inl);
      a.fns.push_back(a.fn);
    } else if (s == "--gradient") {
      a.gradients.push_back(value(s, inl));
    } else if (s == "--tangent") {
      std::string kv = value(s, inl);
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
        throw Usage("--tangent takes PARAM=VALUE, got '" + kv + "'");
      a.tangents.push_back({kv.substr(0, eq), kv.substr(eq + 1)});
    } else if (s == "--lanes") {
      std::string kv = value(s, inl);
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size())
        throw Usage("--lanes takes PARAM=LANE[,LANE...], got '" + kv + "'");
      std::vector<int>& lanes = a.lanes[kv.substr(0, eq)];
      if (!lanes.empty()) throw Usage("--lanes: '" + kv.substr(0, eq) + "' is given twice");
      std::string list = kv.substr(eq + 1) + ",";
      for (size_t at = 0, comma; (comma = list.find(',', at)) != std::string::npos;
           at = comma + 1) {
        std::string l = list.substr(at, comma - at);
        char* end = nullptr;
        long k = std::strtol(l.c_str(), &end, 10);
        if (l.empty() || *end || k < -1 || k > 63)
          throw Usage("--lanes " + kv.substr(0, eq) + ": a lane is -1 (none) or 0 to 63, got '" +
                      l + "'");
        lanes.push_back(static_cast<int>(k));
      }
    } else if (s == "--batch") {
      std::string v = value(s, inl);
      char* end = nullptr;
      long k = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || k < 1 || k > 64)
        throw Usage("--batch takes a count of directions from 1 to 64, got '" + v + "'");
      a.batch = static_cast<int>(k);
    } else if (s == "--mode") {
      a.mode = value(s, inl);
      if (a.mode != "forward" && a.mode != "reverse" && a.mode != "auto")
        throw Usage("unknown --mode '" + a.mode + "' (forward, reverse, auto)");
    } else if (s == "--header")
      a.header = value(s, inl);
    else if (s == "--cpu")
      a.cpu = value(s, inl);
    else if (s == "--target")
      a.target = value(s, inl);
    else if (s == "--arch")
      a.arch = value(s, inl);
    else if (s == "--device") {
      a.device = value(s, inl);
      if (a.device != "cpu" && a.device != "cuda" && a.device != "auto")
        throw Usage("unknown --device '" + a.device + "' (cpu, cuda, auto)");
    } else if (s == "--emit")
      a.emit = value(s, inl);
    else if (s == "-o")
      a.out = value(s, inl);
    else if (s == "--seed-out")
      a.seedOut = value(s, inl);
    else if (s == "--wrt")
      a.wrt = splitComma(value(s, inl));
    else if (s == "--rtol")
      a.rtol = parseTolerance(s, value(s, inl));
    else if (s == "--atol")
      a.atol = parseTolerance(s, value(s, inl));
    else if (s == "--step") {
      std::string v = value(s, inl);
      double d = parseNumber(s, v);
      if (!(d > 0) || !std::isfinite(d))
        throw Usage("--step needs a finite number > 0, got '" + v + "'");
      a.step = d;
    } else if (s == "--max-elements") {
      a.maxElements = static_cast<int64_t>(parseUnsigned(s, value(s, inl), 1, INT64_MAX));
    } else if (s == "--threads") {
      try {
        a.threads = parseThreads(value(s, inl), "--threads");
      } catch (const std::invalid_argument& e) {
        throw Usage(e.what());
      }
    } else if (s == "--opt-level") {
      a.optLevel = static_cast<int>(parseUnsigned(s, value(s, inl), 0, 3));
    } else if (s == "--seed") {
      a.seed = parseUnsigned(s, value(s, inl), 0, UINT64_MAX);
    } else if (s == "--sizes") {
      for (const auto& kv : splitComma(value(s, inl))) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
          throw Usage("--sizes takes NAME=N,..., got '" + kv + "'");
        std::string name = kv.substr(0, eq), v = kv.substr(eq + 1);
        if (a.sizes.count(name)) throw Usage("--sizes gives size '" + name + "' twice");
        if (!v.empty() && v[0] == '-')
          throw Usage("size '" + name + "' must be a positive integer, got '" + v + "'");
        uint64_t n = parseUnsigned("size '" + name + "'", v, 0, INT64_MAX);
        if (n == 0) throw Usage("size '" + name + "' must be a positive integer, got '" + v + "'");
        a.sizes[name] = static_cast<int64_t>(n);
      }
    } else if (s.size() > 1 && s[0] == '-' &&
               !(s.size() > 1 && (std::isdigit(static_cast<unsigned char>(s[1])) || s[1] == '.'))) {
      throw Usage("unknown option '" + s + "'");
    } else if (a.command.empty()) {
      a.command = s;
    } else if (a.file.empty() && s.find('=') == std::string::npos) {
      a.file = s;
    } else if (s.find('=') != std::string::npos && s.find('=') > 0) {
      a.values.push_back({s.substr(0, s.find('=')), s.substr(s.find('=') + 1)});
    } else {
      throw Usage("unexpected argument '" + s + "'");
    }
  }
  return a;
}

std::string jsonString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    switch (c) {
    case '"': o += "\\\""; break;
    case '\\': o += "\\\\"; break;
    case '\n': o += "\\n"; break;
    case '\t': o += "\\t"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        o += buf;
      } else {
        o += c;
      }
    }
  }
  return o + "\"";
}

std::string num(double v, bool json) {
  return formatNumber(v, DType::F64, json);
}

/// --device as pickDevice settled it: "cpu" or "cuda".
std::string gDevice = "cpu";

/// The JIT's options that --opt-level sets: for the runners and for printed LLVM IR and
/// assembly.
codegen::JitOptions jitOptions(const Args& a) {
  codegen::JitOptions o;
  o.optLevel = a.optLevel;
  return o;
}

/// The backend: the LLVM JIT, the GPU (--device cuda, or auto where CUDA starts), or the
/// reference evaluator with --interp.
std::unique_ptr<Runner> makeRunner(const Args& a) {
  if (a.interp) return std::make_unique<InterpRunner>();
  if (gDevice == "cuda") {
    try {
      return std::make_unique<codegen::CudaRunner>(a.optLevel);
    } catch (const std::runtime_error& e) {
      if (a.device == "cuda") throw Usage(std::string("--device cuda: ") + e.what());
      std::cerr << "slopec: --device auto: running on the CPU (" << e.what() << ")\n";
      gDevice = "cpu";
    }
  }
  codegen::JitOptions o = jitOptions(a);
  o.tiered = true; // (a short run never gets to the second tier: Options::tiered)
  try {
    o.threads = a.threads > 0 ? a.threads : defaultThreads();
  } catch (const std::invalid_argument& e) {
    throw Usage(e.what());
  }
  return std::make_unique<JitRunner>(o);
}

/// The program being run; it outlives the command so that a run-time error caught in main
/// can point into its source.
std::unique_ptr<Program> gProgram;

/// Loads and checks FILE; prints diagnostics and returns null on errors.
const Program* load(const Args& a) {
  if (a.file.empty()) throw Usage("missing FILE");
  gProgram = Program::fromFile(a.file);
  if (!gProgram->ioError().empty()) {
    std::cerr << "slopec: error: " << gProgram->ioError() << "\n";
    return nullptr;
  }
  if (!gProgram->ok()) {
    std::cerr << gProgram->diagnostics();
    return nullptr;
  }
  return gProgram.get();
}

/// name, if a.file's program p has it; otherwise a usage error listing what it has.
const std::string& requireFunction(const Args& a, const Program& p, const std::string& name) {
  if (!p.hasFunction(name)) {
    std::string names;
    for (const auto& n : p.functionNames())
      names += (names.empty() ? "" : ", ") + n;
    throw Usage("'" + a.file + "' has no function '" + name + "' (it has: " + names + ")");
  }
  return name;
}

std::string pickFunction(const Args& a, const Program& p) {
  if (!a.fn.empty()) return requireFunction(a, p, a.fn);
  return p.functionNames().front();
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// A value as given on the command line: a number, a nested list, @PATH.json or @PATH.npy.
/// A file whose data converts to the parameter's type (f32 or integers for f64) is converted
/// exactly, and a note on stderr says so.
Tensor readValue(const std::string& what, const std::string& text, DType dt) {
  if (!text.empty() && text[0] == '@') {
    std::string path = text.substr(1);
    if (endsWith(path, ".json")) return readJson(path, dt);
    std::string note;
    Tensor t = readNpy(path, dt, &note);
    if (!note.empty()) std::cerr << "slopec: note: " << what << ": " << note << "\n";
    return t;
  }
  return parseValue(text, dt);
}

/// ARG=VALUE arguments in parameter order; missing ones are an error unless `partial`, and
/// names f does not have are an error unless `ignoreUnknown`.
std::vector<std::optional<Tensor>> bindArgs(const Args& a, const ir::Function& f, bool partial,
                                            bool ignoreUnknown = false) {
  std::vector<std::optional<Tensor>> out(f.params.size());
  for (const auto& [name, text] : a.values) {
    size_t k = 0;
    while (k < f.paramNames.size() && f.paramNames[k] != name)
      ++k;
    if (k == f.paramNames.size()) {
      if (ignoreUnknown) continue;
      throw Usage("'" + f.name + "' has no parameter '" + name + "'");
    }
    if (out[k]) throw Usage("argument '" + name + "' is given twice");
    try {
      out[k] = readValue("argument '" + name + "'", text, f.paramTypes[k].dtype);
    } catch (const ValueError& e) {
      throw Usage("argument '" + name + "': " + e.what());
    }
  }
  if (!partial)
    for (size_t k = 0; k < out.size(); ++k)
      if (!out[k])
        throw Usage("missing argument '" + f.paramNames[k] + "' (" + f.paramTypes[k].str() + ")");
  return out;
}

/// Every --sizes name must be a size of one of the functions (a typo must not pass silently).
void checkSizeNames(const Args& a, const Program& p, const std::vector<std::string>& names) {
  std::set<std::string> known;
  for (const auto& n : names)
    for (const auto& s : p.forward(n).sizeNames())
      known.insert(s);
  for (const auto& [n, v] : a.sizes)
    if (!known.count(n)) {
      std::string list;
      for (const auto& k : known)
        list += (list.empty() ? "" : ", ") + k;
      throw Usage("--sizes: " +
                  (names.size() == 1 ? "'" + names[0] + "' has no size '" + n + "'"
                                     : "no function in '" + a.file + "' has a size '" + n + "'") +
                  (list.empty() ? std::string(" (it has no sizes)") : " (sizes: " + list + ")"));
    }
}

/// The items of a top-level JSON list, as text ("[[1,2], 3]" -> "[1,2]", "3"); nullopt
/// when text is not a list.
std::optional<std::vector<std::string>> splitList(const std::string& text) {
  size_t b = text.find_first_not_of(" \t\r\n"), e = text.find_last_not_of(" \t\r\n");
  if (b == std::string::npos || text[b] != '[' || text[e] != ']') return std::nullopt;
  std::vector<std::string> items;
  int depth = 0;
  bool inString = false;
  size_t start = b + 1;
  for (size_t i = b + 1; i < e; ++i) {
    char c = text[i];
    if (c == '"') inString = !inString;
    if (inString) continue;
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) {
      items.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  items.push_back(text.substr(start, e - start));
  return items;
}

/// Fails before anything large is allocated when `bytes` exceed the machine's memory.
void checkMemory(int64_t bytes, const std::string& what, const std::string& detail) {
  if (bytes > checked::physicalMemory())
    throw checked::SizeError(what + " is too large: it needs about " + std::to_string(bytes) +
                             " bytes (" + detail + "), more than this machine's " +
                             std::to_string(checked::physicalMemory()) + " bytes of memory");
}

int64_t tensorBytes(const ir::Type& t, const std::map<std::string, int64_t>& sizes) {
  int64_t n = static_cast<int64_t>(dtypeSize(t.dtype));
  for (const Poly& p : t.shape) {
    auto v = p.eval(sizes);
    if (!v || *v < 0) return 0;
    auto r = checked::mul(n, *v);
    n = r ? *r : INT64_MAX;
  }
  return n;
}

int64_t addSat(int64_t a, int64_t b) {
  auto r = checked::add(a, b);
  return r ? *r : INT64_MAX;
}

/// Fails before anything is allocated when calling f on args would need more memory than the
/// machine has: its results and its peak buffers, named in the message as given.
void checkCallMemory(const ir::Function& f, const std::vector<Tensor>& args,
                     const std::string& what, const std::string& resultsAre,
                     const std::string& buffersAre) {
  auto sizes = bindSizes(f, args);
  f.deriveSizes(sizes);
  int64_t res = 0;
  for (int y : f.body.yields)
    res = addSat(res, tensorBytes(f.types[y], sizes));
  int64_t buf = ir::peakBufferBytes(f, sizes);
  checkMemory(addSat(res, buf), what,
              std::to_string(res) + " for " + resultsAre + ", " + std::to_string(buf) + " for " +
                  buffersAre);
}

/// The output cotangents for a tensor or tuple result from --seed-out: 'ones', a number
/// (every element of every float result), or a value per float result (a list with one
/// entry per float element of a tuple; for a single float result, its value).
std::vector<Tensor> seedsFor(const Args& a, const std::string& name,
                             const std::vector<Tensor>& value) {
  std::vector<size_t> fl;
  for (size_t r = 0; r < value.size(); ++r)
    if (isFloat(value[r].dtype())) fl.push_back(r);
  if (fl.empty()) throw Usage("--seed-out: '" + name + "' has no float result to seed");
  std::vector<Tensor> given(fl.size());
  try {
    if (a.seedOut == "ones") {
      for (size_t k = 0; k < fl.size(); ++k)
        given[k] = Tensor::scalar(value[fl[k]].dtype(), 1);
    } else if (fl.size() == 1) {
      given[0] = readValue("--seed-out", a.seedOut, value[fl[0]].dtype());
    } else {
      std::string text = a.seedOut;
      if (!text.empty() && text[0] == '@') {
        if (!endsWith(text, ".json"))
          throw Usage("--seed-out: '" + name + "' returns " + std::to_string(fl.size()) +
                      " float results; an .npy file holds one array: give a .json file or a "
                      "list with one cotangent per result");
        std::ifstream in(a.seedOut.substr(1), std::ios::binary);
        if (!in) throw ValueError(a.seedOut.substr(1) + ": cannot open file");
        text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
      auto items = splitList(text);
      if (!items) {
        for (size_t k = 0; k < fl.size(); ++k) {
          given[k] = parseValue(text, value[fl[k]].dtype());
          if (given[k].rank() != 0)
            throw Usage("--seed-out: '" + name + "' returns " + std::to_string(fl.size()) +
                        " float results: give a number, 'ones' or a list of one cotangent per "
                        "result");
        }
      } else {
        if (items->size() != fl.size())
          throw Usage("--seed-out: '" + name + "' returns " + std::to_string(fl.size()) +
                      " float results, so the list needs one cotangent per result, got " +
                      std::to_string(items->size()));
        for (size_t k = 0; k < fl.size(); ++k)
          given[k] = parseValue((*items)[k], value[fl[k]].dtype());
      }
    }
  } catch (const ValueError& e) {
    throw Usage(std::string("--seed-out: ") + e.what());
  }
  std::vector<Tensor> seeds;
  for (size_t k = 0; k < fl.size(); ++k) {
    const Tensor& r = value[fl[k]];
    if (given[k].rank() == 0) { // a number seeds every element with it
      Tensor s(r.dtype(), r.shape());
      for (int64_t i = 0; i < s.numel(); ++i)
        s.setF(i, given[k].getF(0));
      seeds.push_back(s);
    } else if (given[k].shape() != r.shape()) {
      throw Usage("--seed-out: " +
                  (fl.size() > 1 ? "the cotangent of result " + std::to_string(fl[k] + 1)
                                 : std::string("the cotangent")) +
                  " must be " + typeString(r.dtype(), r.shape()) + " (or a number), got " +
                  given[k].typeString());
    } else {
      seeds.push_back(given[k]);
    }
  }
  return seeds;
}

/// --device: cuda runs on device 0, or stops with what is missing; auto runs there where CUDA
/// is usable, else on the CPU, and says which on stderr.
void pickDevice(const Args& a) {
  gDevice = "cpu";
  if (a.device == "cpu") return;
  if (a.interp) throw Usage("--interp runs on the reference evaluator; it takes no --device");
  const cuda::Probe& p = cuda::probe();
  if (a.device == "cuda" && !p.ok())
    throw Usage("--device cuda: CUDA is not available: " + p.problem);
  if (p.ok()) {
    gDevice = "cuda";
    if (a.device == "auto")
      std::cerr << "slopec: --device auto: running on " << p.devices[0].name << " ("
                << p.devices[0].arch() << ")\n";
    return;
  }
  std::cerr << "slopec: --device auto: running on the CPU (CUDA: " << p.problem << ")\n";
}

int runEval(const Args& a) {
  pickDevice(a);
  const Program* p = load(a);
  if (!p) return kBad;
  std::string name = pickFunction(a, *p);
  ir::Function f = p->forward(name);
  auto opt = bindArgs(a, f, false);
  std::vector<Tensor> args;
  for (auto& t : opt)
    args.push_back(*t);

  checkCallMemory(f, args, "evaluating '" + name + "' at these arguments", "the results",
                  "its buffers");

  auto runner = makeRunner(a);
  std::vector<Tensor> value = runner->prepare(f)(args);
  bool scalarLoss = value.size() == 1 && isFloat(value[0].dtype()) && value[0].rank() == 0;
  if (scalarLoss && !a.seedOut.empty())
    throw Usage("--seed-out is for tensor- and tuple-valued functions; '" + name +
                "' returns a float scalar, whose gradient is seeded with 1");
  bool wantGrad = !a.noGrad && (scalarLoss || !a.seedOut.empty());
  bool anyFloat = false;
  for (const auto& t : f.paramTypes)
    anyFloat = anyFloat || isFloat(t.dtype);
  if (!a.wrt.empty() && !wantGrad)
    throw Usage("'" + name + "' does not return a float scalar; give --seed-out for a gradient");
  if (!a.wrt.empty() && !anyFloat)
    throw Usage("--wrt: '" + name + "' has no float parameter to differentiate");

  std::vector<std::string> wrtNames;
  std::vector<Tensor> grads;
  if (wantGrad && anyFloat) {
    wrtNames = resolveWrt(f, a.wrt);
    ir::Function gf = p->gradient(name, a.wrt, a.checkpoint);
    std::vector<Tensor> gargs = args;
    if (!scalarLoss)
      for (Tensor& s : seedsFor(a, name, value))
        gargs.push_back(std::move(s));
    checkCallMemory(gf, gargs, "the gradient of '" + name + "' at these arguments",
                    "the value and gradients", "its buffers and tape");
    Runnable g = runner->prepare(gf);
    std::vector<Tensor> out;
    try {
      out = g(gargs);
    } catch (const CallError& e) {
      throw Usage(std::string("--seed-out: ") + e.what());
    }
    grads.assign(out.begin() + static_cast<long>(value.size()), out.end());
  } else if (!a.seedOut.empty() && !a.noGrad) {
    seedsFor(a, name, value); // a malformed --seed-out is an error even with nothing to seed
  }

  auto valueText = [&](bool json) {
    if (value.size() == 1) return json ? toJson(value[0]) : toText(value[0]);
    std::string s = "[";
    for (size_t k = 0; k < value.size(); ++k)
      s += (k ? ", " : "") + (json ? toJson(value[k]) : toText(value[k]));
    return s + "]";
  };
  if (a.json) {
    std::string s = "{\"function\": " + jsonString(name) + ", \"value\": " + valueText(true);
    if (wantGrad) {
      s += ", \"gradient\": {";
      for (size_t k = 0; k < grads.size(); ++k)
        s += (k ? ", " : "") + jsonString(wrtNames[k]) + ": " + toJson(grads[k]);
      s += "}";
    }
    std::cout << s << "}\n";
  } else {
    std::cout << name << " = " << valueText(false) << "\n";
    for (size_t k = 0; k < grads.size(); ++k)
      std::cout << "d(" << (scalarLoss ? name : "<seed, " + name + ">") << ")/d" << wrtNames[k]
                << " = " << toText(grads[k]) << "\n";
  }
  return kOk;
}

/// The shape of parameter k at these sizes (3 for any not given), as randomArgs draws it.
std::vector<int64_t> drawnShape(const ir::Type& t, const std::map<std::string, int64_t>& sizes) {
  std::vector<int64_t> shape;
  for (const Poly& p : t.shape) {
    std::map<std::string, int64_t> all = sizes;
    for (const auto& n : p.names())
      if (!all.count(n)) all[n] = 3;
    auto v = p.eval(all);
    shape.push_back(v ? *v : 0);
  }
  return shape;
}

/// An argument for a message: the whole tensor when small, else its type and first elements.
std::string describeArg(const Tensor& t) {
  if (t.numel() <= 12) return toText(t);
  std::string s = t.typeString() + " starting ";
  for (int64_t i = 0; i < 6; ++i)
    s += (i ? ", " : "") + formatNumber(t.getF(i), t.dtype(), false);
  return s + ", ...";
}

int runCheck(const Args& a) {
  pickDevice(a);
  const Program* p = load(a);
  if (!p) return kBad;
  std::vector<std::string> names =
      a.fn.empty() ? p->functionNames() : std::vector<std::string>{pickFunction(a, *p)};
  bool all = true;
  std::vector<std::string> jsonParts;
  auto runner = makeRunner(a);
  // Checking every function: an ARG=VALUE applies to each function that has that parameter,
  // and must fit at least one; so must a --sizes name.
  if (a.fn.empty())
    for (const auto& [arg, text] : a.values) {
      bool used = false;
      for (const auto& name : names)
        for (const auto& pn : p->forward(name).paramNames)
          used = used || pn == arg;
      if (!used) throw Usage("no function in '" + a.file + "' has a parameter '" + arg + "'");
    }
  checkSizeNames(a, *p, names);
  for (const auto& name : names) {
    ir::Function f = p->forward(name);
    auto given = bindArgs(a, f, true, a.fn.empty());
    // Sizes: --sizes, then whatever the given arguments fix, then 3. A given argument that
    // contradicts --sizes is an error, not a silent override.
    std::map<std::string, int64_t> sizes;
    for (const auto& n : f.sizeNames())
      if (a.sizes.count(n)) sizes[n] = a.sizes.at(n);
    for (size_t k = 0; k < given.size(); ++k) {
      if (!given[k]) continue;
      const ir::Type& t = f.paramTypes[k];
      for (int d = 0; d < t.rank() && d < given[k]->rank(); ++d) {
        auto ns = t.shape[d].names();
        if (ns.size() != 1 || !(t.shape[d] == Poly::var(ns[0]))) continue;
        int64_t e = given[k]->shape()[d];
        if (a.sizes.count(ns[0]) && a.sizes.at(ns[0]) != e)
          throw Usage("--sizes " + ns[0] + "=" + std::to_string(a.sizes.at(ns[0])) +
                      " contradicts argument '" + f.paramNames[k] + "': its dimension " +
                      std::to_string(d + 1) + " (size '" + ns[0] + "') has extent " +
                      std::to_string(e));
        if (!sizes.count(ns[0])) sizes[ns[0]] = e;
      }
    }
    bool anyFloat = false;
    for (const auto& t : f.paramTypes)
      anyFloat = anyFloat || isFloat(t.dtype);
    if (!anyFloat) {
      if (a.json)
        jsonParts.push_back(
            "{\"function\": " + jsonString(name) +
            ", \"passed\": true, \"skipped\": \"no float parameters\", \"params\": {}}");
      else
        std::cout << name << ": skipped (no float parameters)\n";
      continue;
    }
    // Memory, before anything is drawn: the arguments and their f64 copies (5 in all, with
    // the copies the differences perturb), the gradients, and the gradient's buffers.
    {
      std::map<std::string, int64_t> all = sizes;
      int64_t argBytes = 0;
      for (size_t k = 0; k < f.params.size(); ++k) {
        std::vector<int64_t> shape = drawnShape(f.paramTypes[k], sizes);
        ir::Type t = f.paramTypes[k];
        int64_t n = static_cast<int64_t>(isFloat(t.dtype) ? 8 : dtypeSize(t.dtype));
        for (int64_t e : shape) {
          auto r = checked::mul(n, e);
          n = r ? *r : INT64_MAX;
        }
        argBytes = addSat(argBytes, n);
        for (size_t d = 0; d < shape.size(); ++d) {
          auto ns = t.shape[d].names();
          if (ns.size() == 1 && t.shape[d] == Poly::var(ns[0])) all[ns[0]] = shape[d];
        }
      }
      int64_t buf = 0;
      try {
        ir::Function g = p->gradient(name, {}, a.checkpoint);
        f.deriveSizes(all);
        buf = ir::peakBufferBytes(g, all);
      } catch (const std::exception&) {
      }
      int64_t total = addSat(addSat(argBytes, argBytes),
                             addSat(addSat(argBytes, argBytes), addSat(argBytes, argBytes)));
      std::string at;
      for (const auto& [n, v] : sizes)
        at += (at.empty() ? " at " : ", ") + n + "=" + std::to_string(v);
      checkMemory(addSat(total, buf), "checking '" + name + "'" + at,
                  std::to_string(argBytes) + " for the arguments, 6 copies of them, and " +
                      std::to_string(buf) + " for the gradient's buffers");
    }
    GradCheckOptions o;
    o.rtol = a.rtol;
    o.atol = a.atol;
    o.seed = a.seed;
    o.grad = a.checkpoint;
    o.step = a.step;
    o.maxElements = a.maxElements;
    DrawnCheck dc = checkDrawn(f, given, sizes, o, runner.get());
    const GradCheckResult& r = dc.result;
    all = all && r.passed;
    // --forward: forward mode and the HVP at the same draw (gradcheck.hpp, checkForward).
    std::optional<ForwardCheckResult> fc;
    if (a.forward && r.notFinite.empty()) {
      fc = checkForward(f, dc.args, o, runner.get());
      all = all && fc->passed;
    }
    std::string forwardJson, forwardText;
    if (fc) {
      forwardJson =
          ", \"forward\": {\"passed\": " + std::string(fc->passed ? "true" : "false") +
          ", \"u_Jv\": " + num(fc->uJv, true) + ", \"JTu_v\": " + num(fc->JTuv, true) +
          ", \"finite_differences\": " + num(fc->fd, true) +
          ", \"hvp_checked\": " + (fc->hvpChecked ? "true" : "false") +
          (fc->hvpChecked ? ", \"hvp_max_abs_err\": " + num(fc->hvpMaxAbsErr, true) : "") +
          (fc->hvpSkipped.empty() ? "" : ", \"hvp_skipped\": " + jsonString(fc->hvpSkipped)) +
          (fc->failure.empty() ? "" : ", \"failure\": " + jsonString(fc->failure)) + "}";
      char buf[256];
      if (!fc->notFinite.empty()) {
        forwardText = "  forward mode not checked: " + fc->notFinite + "\n";
      } else {
        std::snprintf(buf, sizeof buf,
                      "  %-12s <u, J v> %-10.6g <J^T u, v> %-10.6g finite differences %.6g\n",
                      "forward", fc->uJv, fc->JTuv, fc->fd);
        forwardText = buf;
        if (fc->hvpChecked) {
          std::snprintf(buf, sizeof buf,
                        "  %-12s max_abs_err %-10.3g against differences of the gradient\n", "hvp",
                        fc->hvpMaxAbsErr);
          forwardText += buf;
        } else if (!fc->hvpSkipped.empty()) {
          forwardText += "  hvp          not built: " + fc->hvpSkipped + "\n";
        }
        forwardText +=
            std::string("  forward mode ") + (fc->passed ? "pass" : "FAIL: " + fc->failure) + "\n";
      }
    }
    int discardedTotal = 0;
    std::string discardedText, discardedJson;
    for (const auto& [why, n] : dc.discarded) {
      discardedTotal += n;
      discardedText +=
          std::string(discardedText.empty() ? "" : "; ") + why + " (" + std::to_string(n) + ")";
      discardedJson += std::string(discardedJson.empty() ? "" : ", ") + jsonString(why) + ": " +
                       std::to_string(n);
    }
    // The user rules (@derivative) the gradient checked here comes from.
    std::set<std::string> rules;
    ir::forEachInstr(f.body, [&](const ir::Instr& i) {
      if (i.op == ir::Op::Custom) rules.insert(i.name);
    });
    std::string rulesText, rulesJson;
    for (const auto& rn : rules) {
      rulesText += (rulesText.empty() ? "" : ", ") + rn;
      rulesJson += (rulesJson.empty() ? "" : ", ") + jsonString(rn);
    }
    std::string inputs, inputsJson;
    if (!r.notFinite.empty())
      for (size_t k = 0; k < f.params.size(); ++k) {
        inputs += "    " + f.paramNames[k] + " = " + describeArg(dc.args[k]) +
                  (given[k] ? " (given)" : "") + "\n";
        inputsJson +=
            std::string(inputsJson.empty() ? "" : ", ") + jsonString(f.paramNames[k]) + ": " +
            (dc.args[k].numel() <= 12 ? toJson(dc.args[k]) : jsonString(describeArg(dc.args[k])));
      }
    if (a.json) {
      std::string s =
          "{\"function\": " + jsonString(name) + ", \"passed\": " + (r.passed ? "true" : "false") +
          ", \"draws\": " + std::to_string(dc.draws) + ", \"discarded\": {" + discardedJson + "}";
      if (!r.notFinite.empty())
        s += ", \"error\": " +
             jsonString((dc.draws > 1 ? "not finite at any of " + std::to_string(dc.draws) +
                                            " random draws; the last: "
                                      : std::string("not finite at the given arguments: ")) +
                        r.notFinite) +
             ", \"inputs\": {" + inputsJson + "}";
      s += ", \"params\": {";
      for (size_t k = 0; k < r.params.size(); ++k) {
        const auto& pc = r.params[k];
        s += (k ? ", " : "") + jsonString(pc.name) +
             ": {\"max_abs_err\": " + num(pc.maxAbsErr, true) +
             ", \"max_rel_err\": " + num(pc.maxRelErr, true) +
             ", \"checked\": " + std::to_string(pc.checked) +
             ", \"elements\": " + std::to_string(pc.elements) +
             ", \"passed\": " + (pc.passed ? "true" : "false") + "}";
      }
      if (!rules.empty())
        s += "}, \"rules\": [" + rulesJson + "]";
      else
        s += "}";
      jsonParts.push_back(s + forwardJson + "}");
    } else {
      std::cout << name << ": " << (r.passed && (!fc || fc->passed) ? "pass" : "FAIL") << "\n";
      if (!rules.empty())
        std::cout << "  derivative   from the rule" << (rules.size() > 1 ? "s " : " ") << rulesText
                  << " (@derivative): this checks " << (rules.size() > 1 ? "them" : "it") << "\n";
      if (r.notFinite.empty() && discardedTotal)
        std::cout << "  discarded " << discardedTotal << " of " << dc.draws
                  << " random draws where the function is not finite: " << discardedText
                  << (dc.positive ? "; the draw used has positive floats (|N(0,1)| + 0.1)" : "")
                  << "\n";
      if (!r.notFinite.empty()) {
        if (dc.draws > 1)
          std::cout << "  not finite at any of " << dc.draws << " random draws (" << discardedText
                    << "; and the last: " << r.notFinite << "); the last draw was:\n";
        else
          std::cout << "  not finite at the given arguments: " << r.notFinite << ":\n";
        std::cout << inputs << "  give the arguments as ARG=VALUE where '" << name
                  << "' and its gradient are finite\n";
      }
      for (size_t q = 0; q < r.params.size(); ++q) {
        const auto& pc = r.params[q];
        char buf[256];
        std::snprintf(buf, sizeof buf, "  %-12s max_abs_err %-10.3g max_rel_err %-10.3g %s",
                      pc.name.c_str(), pc.maxAbsErr, pc.maxRelErr, pc.passed ? "pass" : "FAIL");
        std::cout << buf;
        if (pc.checked < pc.elements)
          std::cout << "  (" << pc.checked << " of " << pc.elements << " elements)";
        std::cout << "\n";
        if (!pc.passed) {
          // The parameter's position among f's: params lists the float ones in order.
          size_t k = 0;
          for (size_t seen = 0; k < f.params.size(); ++k)
            if (isFloat(f.paramTypes[k].dtype) && seen++ == q) break;
          std::string at = pc.name;
          if (k < dc.args.size() && dc.args[k].rank() > 0) {
            std::vector<int64_t> idx(dc.args[k].shape().size());
            int64_t i = pc.worst;
            for (size_t d = idx.size(); d-- > 0;) {
              idx[d] = i % dc.args[k].shape()[d];
              i /= dc.args[k].shape()[d];
            }
            for (size_t d = 0; d < idx.size(); ++d)
              at += (d ? ", " : "[") + std::to_string(idx[d]);
            at += "]";
          }
          std::snprintf(buf, sizeof buf,
                        "    worst at %s: reverse mode %.17g, finite differences %.17g "
                        "(+/- %.3g)\n",
                        at.c_str(), pc.worstAd, pc.worstFd, pc.worstBound);
          std::cout << buf;
        }
      }
      std::cout << forwardText;
    }
  }
  if (a.json) {
    if (!a.fn.empty())
      std::cout << jsonParts[0] << "\n";
    else {
      std::string s = "{\"file\": " + jsonString(a.file) +
                      ", \"passed\": " + (all ? "true" : "false") + ", \"functions\": [";
      for (size_t k = 0; k < jsonParts.size(); ++k)
        s += (k ? ", " : "") + jsonParts[k];
      std::cout << s << "]}\n";
    }
  }
  return all ? kOk : kCheckFailed;
}

/// Operation counts: the cheap-gradient principle says the gradient costs a small constant
/// times the function; expression swell (the classic failure of symbolic differentiation)
/// would show here as a ratio that grows.
int runStats(const Args& a) {
  const Program* p = load(a);
  if (!p) return kBad;
  std::vector<std::string> names =
      a.fn.empty() ? p->functionNames() : std::vector<std::string>{pickFunction(a, *p)};
  checkSizeNames(a, *p, names);
  std::vector<std::string> parts;
  for (const auto& name : names) {
    ir::Function f = p->forward(name);
    ir::stripCustom(f); // (what runs: a user rule's region is the gradient's)
    bool anyFloat = false;
    for (const auto& t : f.paramTypes)
      anyFloat = anyFloat || isFloat(t.dtype);
    if (!anyFloat) continue;
    ir::Function g = p->gradient(name, a.wrt, a.checkpoint);
    std::vector<Tensor> args = randomArgs(f, a.sizes, a.seed);
    int64_t fops = 0, gops = 0;
    std::vector<Tensor> value = evaluate(f, args, &fops);
    std::vector<Tensor> gargs = args;
    bool scalarLoss = value.size() == 1 && isFloat(value[0].dtype()) && value[0].rank() == 0;
    if (!scalarLoss)
      for (const Tensor& r : value)
        if (isFloat(r.dtype())) {
          Tensor s(r.dtype(), r.shape());
          for (int64_t i = 0; i < s.numel(); ++i)
            s.setF(i, 1);
          gargs.push_back(s);
        }
    evaluate(g, gargs, &gops);
    std::map<std::string, int64_t> sizes = bindSizes(g, gargs);
    g.deriveSizes(sizes);
    int64_t peak = ir::peakBufferBytes(g, sizes);
    int64_t fi = 0, gi = 0;
    ir::forEachInstr(f.body, [&](const ir::Instr&) { ++fi; });
    ir::forEachInstr(g.body, [&](const ir::Instr&) { ++gi; });
    double ratio = fops ? static_cast<double>(gops) / static_cast<double>(fops) : 0;
    char buf[512];
    if (a.json) {
      std::snprintf(
          buf, sizeof buf,
          "{\"function\": %s, \"forward_ops\": %lld, \"gradient_ops\": %lld, \"ratio\": %s, "
          "\"forward_instructions\": %lld, \"gradient_instructions\": %lld, "
          "\"gradient_buffer_bytes\": %lld}",
          jsonString(name).c_str(), static_cast<long long>(fops), static_cast<long long>(gops),
          num(ratio, true).c_str(), static_cast<long long>(fi), static_cast<long long>(gi),
          static_cast<long long>(peak));
    } else {
      std::snprintf(buf, sizeof buf,
                    "%s: forward %lld ops, gradient %lld ops, ratio %.2f (IR instructions: %lld "
                    "forward, %lld gradient; gradient buffers at most %lld bytes)",
                    name.c_str(), static_cast<long long>(fops), static_cast<long long>(gops), ratio,
                    static_cast<long long>(fi), static_cast<long long>(gi),
                    static_cast<long long>(peak));
    }
    parts.push_back(buf);
  }
  if (a.json) {
    std::string s = "{\"file\": " + jsonString(a.file) + ", \"functions\": [";
    for (size_t k = 0; k < parts.size(); ++k)
      s += (k ? ", " : "") + parts[k];
    std::cout << s << "]}\n";
  } else {
    for (const auto& l : parts)
      std::cout << l << "\n";
  }
  return kOk;
}

/// Compiles fns into an object for --cpu and writes it to objPath and its header to
/// headerPath ("-": stdout); either may be empty (not written).
int writeObject(const Args& a, const std::vector<codegen::ObjectFunction>& fns,
                const std::string& objPath, const std::string& headerPath) {
  codegen::ObjectOptions o;
  o.cpu = a.cpu;
  o.optLevel = a.optLevel;
  codegen::ObjectCode code;
  try {
    code = codegen::emitObject(fns, o);
  } catch (const std::invalid_argument& e) {
    throw Usage(std::string("--cpu: ") + e.what());
  }
  std::string header;
  if (!headerPath.empty()) {
    try {
      header = codegen::objectHeader(fns, code, a.file);
    } catch (const std::invalid_argument& e) {
      throw Usage(e.what());
    }
  }
  auto write = [&](const std::string& path, const std::string& bytes) {
    if (path == "-") {
      std::cout << bytes;
      return;
    }
    std::ofstream out(path, std::ios::binary);
    if (!(out << bytes) || !out.flush()) throw Usage("cannot write '" + path + "'");
  };
  if (!objPath.empty()) write(objPath, code.bytes);
  if (!headerPath.empty()) write(headerPath, header);
  return kOk;
}

int runGrad(const Args& a) {
  if (a.stats) return runStats(a);
  if (a.emit.empty())
    throw Usage("grad needs --emit KIND (slope, ir, forward, loops, forward-loops, llvm or "
                "asm) or --stats");
  static const std::set<std::string> kinds{"ir",     "forward", "llvm",          "asm",
                                           "slope",  "loops",   "forward-loops", "obj",
                                           "header", "ptx",     "forward-ptx"};
  if (!kinds.count(a.emit))
    throw Usage("unknown --emit kind '" + a.emit +
                "' (slope, ir, forward, loops, forward-loops, llvm, asm, obj, header, ptx, "
                "forward-ptx)");
  if (a.given.count("--arch") && a.emit != "ptx" && a.emit != "forward-ptx")
    throw Usage("--arch is for --emit ptx and forward-ptx");
  if (a.emit == "obj" && (a.out.empty() || a.out == "-"))
    throw Usage("--emit obj writes a binary object file: give it -o FILE");
  const Program* p = load(a);
  if (!p) return kBad;
  std::string name = pickFunction(a, *p);
  if (a.emit == "obj" || a.emit == "header") {
    // The gradient function alone, as the other kinds print it (compile: several functions).
    std::vector<codegen::ObjectFunction> fns;
    try {
      fns = objectFunctions(*p, {}, {name}, a.wrt, a.checkpoint);
    } catch (const std::invalid_argument& e) {
      throw Usage(e.what());
    }
    if (a.emit == "obj") return writeObject(a, fns, a.out, "");
    return writeObject(a, fns, "", a.out.empty() ? "-" : a.out);
  }
  ir::Function f = p->forward(name), g;
  std::string text;
  if (a.emit == "forward")
    text = ir::print(f);
  else if (a.emit == "ir")
    text = ir::print(p->gradient(name, a.wrt, a.checkpoint));
  else if (a.emit == "slope")
    text = printSlope(p->gradient(name, a.wrt, a.checkpoint));
  else if (a.emit == "loops")
    text = lower::print(lower::lower(g = p->gradient(name, a.wrt, a.checkpoint)));
  else if (a.emit == "forward-loops")
    text = lower::print(lower::lower(f));
  else if (a.emit == "llvm")
    text = codegen::emitLLVM(p->gradient(name, a.wrt, a.checkpoint), jitOptions(a));
  else if (a.emit == "ptx" || a.emit == "forward-ptx") {
    codegen::PtxOptions po;
    if (!a.arch.empty()) po.arch = a.arch;
    ir::Function h = a.emit == "ptx" ? p->gradient(name, a.wrt, a.checkpoint) : f;
    try {
      text = codegen::printPtx(codegen::emitPtx(h, po), h.name);
    } catch (const std::invalid_argument& e) {
      throw Usage(e.what());
    }
  } else
    text = codegen::emitAsm(p->gradient(name, a.wrt, a.checkpoint), jitOptions(a));
  if (a.out.empty() || a.out == "-") {
    std::cout << text;
  } else {
    std::ofstream o(a.out, std::ios::binary);
    if (!(o << text)) throw Usage("cannot write '" + a.out + "'");
  }
  return kOk;
}

/// The --tangent values of f's parameters, in parameter order (unset where not given).
std::vector<std::optional<Tensor>> bindTangents(const Args& a, const ir::Function& f,
                                                const std::vector<Tensor>& args) {
  std::vector<std::optional<Tensor>> out(f.params.size());
  for (const auto& [name, text] : a.tangents) {
    size_t k = 0;
    while (k < f.paramNames.size() && f.paramNames[k] != name)
      ++k;
    if (k == f.paramNames.size())
      throw Usage("--tangent: '" + f.name + "' has no parameter '" + name + "'");
    if (!isFloat(f.paramTypes[k].dtype))
      throw Usage("--tangent: parameter '" + name + "' is " + f.paramTypes[k].str() +
                  "; only float parameters have tangents");
    if (out[k]) throw Usage("--tangent: '" + name + "' is given twice");
    Tensor t;
    try {
      t = readValue("--tangent " + name, text, f.paramTypes[k].dtype);
    } catch (const ValueError& e) {
      throw Usage("--tangent " + name + ": " + e.what());
    }
    const Tensor& x = args[k];
    if (t.rank() == 0 && x.rank() > 0) { // a number: every element
      Tensor full(x.dtype(), x.shape());
      for (int64_t i = 0; i < full.numel(); ++i)
        full.setF(i, t.getF(0));
      t = std::move(full);
    } else if (t.shape() != x.shape()) {
      throw Usage("--tangent " + name + ": must be " + typeString(x.dtype(), x.shape()) +
                  " (as the argument), or a number, got " + t.typeString());
    }
    out[k] = std::move(t);
  }
  return out;
}

/// --emit slope | ir | loops for the jvp and hvp commands.
int emitDerivative(const Args& a, const ir::Function& h) {
  if (a.emit != "slope" && a.emit != "ir" && a.emit != "loops")
    throw Usage("unknown --emit kind '" + a.emit + "' for " + a.command + " (slope, ir, loops)");
  std::string text = a.emit == "ir"      ? ir::print(h)
                     : a.emit == "loops" ? lower::print(lower::lower(h))
                                         : printSlope(h);
  if (a.out.empty() || a.out == "-") {
    std::cout << text;
  } else {
    std::ofstream o(a.out, std::ios::binary);
    if (!(o << text)) throw Usage("cannot write '" + a.out + "'");
  }
  return kOk;
}

std::string resultsText(const std::vector<Tensor>& r, bool json) {
  if (r.size() == 1) return json ? toJson(r[0]) : toText(r[0]);
  std::string s = "[";
  for (size_t k = 0; k < r.size(); ++k)
    s += (k ? ", " : "") + (json ? toJson(r[k]) : toText(r[k]));
  return s + "]";
}

/// slopec jvp and slopec hvp.
int runJvp(const Args& a) {
  const bool hvp = a.command == "hvp";
  pickDevice(a);
  const Program* p = load(a);
  if (!p) return kBad;
  std::string name = pickFunction(a, *p);
  ir::Function f = p->forward(name);
  if (!a.emit.empty()) {
    if (!a.values.empty()) throw Usage("--emit prints the function; it takes no ARG=VALUE");
    std::vector<std::string> wrt = a.wrt;
    for (const auto& [n, v] : a.tangents)
      if (!hvp) wrt.push_back(n);
    if (!a.lanes.empty()) { // the JVP compiled for constant one-hot tangents (jvpSeeded)
      if (!a.batch) throw Usage("--lanes needs --batch K (the lanes are 0 to K - 1)");
      if (!a.tangents.empty()) throw Usage("--lanes and --tangent: give one or the other");
      for (const auto& [n, l] : a.lanes)
        wrt.push_back(n);
      return emitDerivative(a, p->jvpSeeded(name, wrt, a.batch, a.lanes));
    }
    return emitDerivative(a, hvp ? p->hvp(name, wrt, a.checkpoint, a.batch)
                                 : p->jvp(name, wrt, a.batch));
  }
  if (a.batch) throw Usage("--batch prints the batched function: it needs --emit");
  if (!a.lanes.empty()) throw Usage("--lanes prints the seeded function: it needs --emit");
  if (a.tangents.empty())
    throw Usage(a.command + " needs --tangent PARAM=VALUE for at least one float parameter");
  auto bound = bindArgs(a, f, false);
  std::vector<Tensor> args;
  for (auto& t : bound)
    args.push_back(*t);
  std::vector<std::optional<Tensor>> tangents = bindTangents(a, f, args);
  std::vector<std::string> wrt;
  if (hvp) {
    wrt = resolveWrt(f, a.wrt);
    for (size_t k = 0; k < f.params.size(); ++k)
      if (tangents[k] && std::find(wrt.begin(), wrt.end(), f.paramNames[k]) == wrt.end())
        throw Usage("--tangent " + f.paramNames[k] +
                    ": not among the parameters differentiated (--wrt)");
  } else {
    for (size_t k = 0; k < f.params.size(); ++k)
      if (tangents[k]) wrt.push_back(f.paramNames[k]);
  }
  ir::Function h = hvp ? p->hvp(name, wrt, a.checkpoint) : p->jvp(name, wrt);
  std::vector<Tensor> hargs = args;
  for (size_t k = 0; k < f.params.size(); ++k)
    if (std::find(wrt.begin(), wrt.end(), f.paramNames[k]) != wrt.end())
      hargs.push_back(tangents[k] ? *tangents[k] : Tensor(args[k].dtype(), args[k].shape()));
  checkCallMemory(h, hargs, "'" + h.name + "' at these arguments", "the results", "its buffers");
  auto runner = makeRunner(a);
  std::vector<Tensor> out = runner->prepare(h)(hargs);
  const size_t nres = f.body.yields.size();
  std::vector<Tensor> value(out.begin(), out.begin() + static_cast<long>(nres));
  if (!hvp) {
    std::vector<Tensor> tan(out.begin() + static_cast<long>(nres), out.end());
    if (a.json)
      std::cout << "{\"function\": " << jsonString(name)
                << ", \"value\": " << resultsText(value, true)
                << ", \"tangent\": " << resultsText(tan, true) << "}\n";
    else
      std::cout << name << " = " << resultsText(value, false) << "\nd" << name << " = "
                << resultsText(tan, false) << "\n";
    return kOk;
  }
  const size_t nw = wrt.size();
  if (a.json) {
    std::string g, hv;
    for (size_t k = 0; k < nw; ++k) {
      g += (k ? ", " : "") + jsonString(wrt[k]) + ": " + toJson(out[1 + k]);
      hv += (k ? ", " : "") + jsonString(wrt[k]) + ": " + toJson(out[1 + nw + k]);
    }
    std::cout << "{\"function\": " << jsonString(name) << ", \"value\": " << toJson(out[0])
              << ", \"gradient\": {" << g << "}, \"hvp\": {" << hv << "}}\n";
  } else {
    std::cout << name << " = " << toText(out[0]) << "\n";
    for (size_t k = 0; k < nw; ++k)
      std::cout << "d(" << name << ")/d" << wrt[k] << " = " << toText(out[1 + k]) << "\n";
    for (size_t k = 0; k < nw; ++k)
      std::cout << "(H v)[" << wrt[k] << "] = " << toText(out[1 + nw + k]) << "\n";
  }
  return kOk;
}

/// slopec jacobian and slopec hessian.
/// " in N calls" where directions were batched (nothing where each took its own call).
std::string callsText(int64_t directions, int64_t calls) {
  if (calls == directions) return "";
  return " in " + std::to_string(calls) + (calls == 1 ? " call" : " calls");
}

int runJacobian(const Args& a) {
  const bool hessian = a.command == "hessian";
  pickDevice(a);
  const Program* p = load(a);
  if (!p) return kBad;
  std::string name = pickFunction(a, *p);
  ir::Function f = p->forward(name);
  auto bound = bindArgs(a, f, false);
  std::vector<Tensor> args;
  for (auto& t : bound)
    args.push_back(*t);
  std::vector<std::string> wrt = resolveWrt(f, a.wrt);
  if (wrt.empty()) throw Usage("'" + name + "' has no float parameter to differentiate");
  const int64_t cols = inputElements(f, args, wrt);
  const int64_t rows = hessian ? cols : outputElements(f, args);
  if (rows == 0) throw Usage("'" + name + "' has no float result");
  auto m = checked::mul(rows, cols);
  checkMemory(m && *m < INT64_MAX / 8 ? *m * 8 : INT64_MAX, "the matrix",
              std::to_string(rows) + " x " + std::to_string(cols) + " f64");
  auto runner = makeRunner(a);
  if (a.sparse) {
    if (!a.mode.empty() && a.mode != "forward")
      throw Usage("--sparse takes forward mode (a JVP per group of columns); --mode " + a.mode +
                  " contradicts it");
    std::optional<SparsityPattern> pat =
        hessian ? hessianSparsity(f, args, wrt) : jacobianSparsity(f, args, wrt);
    bool found = pat.has_value();
    if (!pat) {
      pat = densePattern(rows, cols);
    }
    // The colours, a batch of them per call.
    int64_t colours = 0;
    const std::vector<int64_t> colour = colourColumns(*pat, &colours);
    const int batch = directionBatch(std::max<int64_t>(colours, 1));
    // As Jacobian::evaluate_sparse: the JVP compiled for the colours where each is told by
    // its column's parameter and last index (one function per call), else the batched one.
    Directional fn(nullptr, batch);
    std::optional<Seeds> seeds;
    if (!hessian) seeds = seedsFor(f, wrt, args, colour, static_cast<int>(colours));
    if (seeds)
      fn = seededDirectional(*seeds, colours, batch, [&](const Seeds& s) {
        return [r = runner->prepare(p->jvpSeeded(name, wrt, batch, s))](
                   const std::vector<Tensor>& in, std::vector<Tensor>& out) { out = r(in); };
      });
    else
      fn.run = runner->prepare(hessian ? p->hvp(name, wrt, a.checkpoint, batch)
                                       : p->jvp(name, wrt, batch));
    SparseJacobian J = sparseJacobian(f, wrt, args, std::move(*pat), fn, hessian, &colour);
    const SparsityPattern& q = J.pattern;
    if (a.json) {
      auto list = [](const auto& v) {
        std::string s = "[";
        for (size_t k = 0; k < v.size(); ++k)
          s += (k ? "," : "") + std::to_string(v[k]);
        return s + "]";
      };
      std::string vals = "[";
      for (size_t k = 0; k < J.values.size(); ++k)
        vals += (k ? "," : "") + num(J.values[k], true);
      vals += "]";
      std::cout << "{\"function\": " << jsonString(name)
                << ", \"value\": " << resultsText(J.value, true) << ", \"rows\": " << q.rows
                << ", \"cols\": " << q.cols << ", \"pattern_found\": " << (found ? "true" : "false")
                << ", \"colours\": " << J.colours << ", \"calls\": " << J.calls
                << ", \"row_start\": " << list(q.rowStart)
                << ", \"col_index\": " << list(q.colIndex) << ", \"values\": " << vals << "}\n";
    } else {
      std::cout << name << " = " << resultsText(J.value, false) << "\n"
                << (hessian ? "hessian (" : "jacobian (") << q.rows << " x " << q.cols << ", "
                << q.nonzeros() << " nonzeros, " << J.colours << " colours: " << J.colours
                << (hessian ? " HVPs" : " JVPs") << callsText(J.colours, J.calls)
                << (found ? "" : "; the pattern could not be read off the IR: dense") << ") =\n";
      for (int64_t r = 0; r < q.rows; ++r) {
        std::cout << "row " << r << ":";
        for (int64_t z = q.rowStart[static_cast<size_t>(r)];
             z < q.rowStart[static_cast<size_t>(r) + 1]; ++z)
          std::cout << (z > q.rowStart[static_cast<size_t>(r)] ? ", " : " ") << "["
                    << q.colIndex[static_cast<size_t>(z)] << "] "
                    << num(J.values[static_cast<size_t>(z)], false);
        std::cout << "\n";
      }
    }
    return kOk;
  }
  DenseDerivative d;
  if (hessian) {
    const int batch = directionBatch(cols);
    d = denseHessian(f, wrt, args,
                     Directional(runner->prepare(p->hvp(name, wrt, a.checkpoint, batch)), batch));
  } else {
    std::string mode = a.mode.empty() ? "auto" : a.mode;
    if (mode == "auto") mode = cols < rows ? "forward" : "reverse";
    Runnable none = [](const std::vector<Tensor>&) -> std::vector<Tensor> {
      throw std::logic_error("unused");
    };
    const int batch = directionBatch(cols);
    d = mode == "forward"
            ? denseJacobian(f, wrt, args, mode,
                            Directional(runner->prepare(p->jvp(name, wrt, batch)), batch), none)
            : denseJacobian(f, wrt, args, mode, none,
                            runner->prepare(p->gradient(name, wrt, a.checkpoint)));
  }
  std::string what = hessian ? "hessian" : "jacobian";
  if (a.json) {
    std::cout << "{\"function\": " << jsonString(name)
              << ", \"value\": " << resultsText(d.value, true)
              << ", \"mode\": " << jsonString(d.mode) << ", \"directions\": " << d.directions
              << ", \"calls\": " << d.calls << ", \"" << what << "\": " << toJson(d.matrix)
              << "}\n";
  } else {
    std::cout << name << " = " << resultsText(d.value, false) << "\n"
              << what << " (" << rows << " x " << cols << ", " << d.mode
              << " mode: " << d.directions
              << (hessian               ? " HVPs"
                  : d.mode == "forward" ? " JVPs"
                                        : " VJPs")
              << callsText(d.directions, d.calls) << ") =\n"
              << toText(d.matrix) << "\n";
  }
  return kOk;
}

const char* kGraphHelp = R"(usage: slopec graph FILE [--fn NAME] [--grad] [--wrt a,b] [-o OUT]

The function's IR as a Graphviz DOT graph: a node per operation, an edge per operand, a dashed
cluster per comprehension, reduction or loop. With --grad, the gradient function: forward
nodes as they are, adjoint nodes filled in red. Render with: dot -Tsvg -o f.svg
)";

int runGraph(const Args& a) {
  const Program* p = load(a);
  if (!p) return kBad;
  std::string name = pickFunction(a, *p);
  ir::Function f = p->forward(name);
  std::string text;
  if (a.grad) {
    ir::Function g = p->gradient(name, a.wrt, a.checkpoint);
    text = printDot(g, static_cast<int>(f.types.size()));
  } else {
    text = printDot(f);
  }
  if (a.out.empty() || a.out == "-")
    std::cout << text;
  else {
    std::ofstream o(a.out, std::ios::binary);
    if (!(o << text)) throw Usage("cannot write '" + a.out + "'");
  }
  return kOk;
}

int runCompile(const Args& a) {
  if (a.target == "cuda")
    throw Usage("--target cuda is not available in this version: objects for the GPU are not "
                "built (slopec eval --device cuda runs on it; slopec grad --emit ptx prints the "
                "kernels)");
  if (a.target != "cpu") throw Usage("unknown --target '" + a.target + "' (cpu, cuda)");
  if (a.out.empty()) throw Usage("compile needs -o OUT.o (and --header OUT.h for its header)");
  if (a.out == "-") throw Usage("compile writes a binary object file: -o needs a file name");
  const Program* p = load(a);
  if (!p) return kBad;
  // The functions (--fn, or every one unless --gradient names some) and the gradients
  // (--grad: of each of those with a float parameter; --gradient: of the ones it names).
  auto pick = [&](const std::vector<std::string>& given, const char* flag) {
    std::vector<std::string> out;
    for (const std::string& n : given) {
      if (std::find(out.begin(), out.end(), n) != out.end())
        throw Usage(std::string(flag) + " " + n + " is given twice");
      out.push_back(requireFunction(a, *p, n));
    }
    return out;
  };
  std::vector<std::string> names = pick(a.fns, "--fn");
  std::vector<std::string> grads = pick(a.gradients, "--gradient");
  if (names.empty() && grads.empty()) names = p->functionNames();
  if (a.grad)
    for (const std::string& n : names)
      if (hasGradient(*p, n) && std::find(grads.begin(), grads.end(), n) == grads.end())
        grads.push_back(n);
  if (!a.wrt.empty() && grads.size() != 1)
    throw Usage("--wrt names parameters of one function: give it one gradient");
  std::string header = a.header;
  if (header.empty()) {
    // OUT.o -> OUT.h beside it.
    std::string base = a.out;
    size_t dot = base.find_last_of('.'), slash = base.find_last_of('/');
    if (dot != std::string::npos && (slash == std::string::npos || dot > slash))
      base = base.substr(0, dot);
    header = base + ".h";
  }
  std::vector<codegen::ObjectFunction> fns;
  try {
    fns = objectFunctions(*p, names, grads, a.wrt, a.checkpoint);
  } catch (const GradError& e) {
    throw Usage(e.what());
  } catch (const std::invalid_argument& e) {
    throw Usage(e.what());
  }
  return writeObject(a, fns, a.out, header);
}

/// INTERFACE.md: an option a command does not use is an error, never silently ignored.
void audit(const Args& a) {
  static const std::map<std::string, std::set<std::string>> kAllowed = {
      {"eval",
       {"--fn", "--no-grad", "--wrt", "--seed-out", "--json", "--interp", "--checkpoint",
        "--threads", "--device", "--opt-level"}},
      {"check",
       {"--fn", "--sizes", "--seed", "--rtol", "--atol", "--step", "--max-elements", "--json",
        "--interp", "--checkpoint", "--threads", "--device", "--forward", "--opt-level"}},
      {"grad",
       {"--fn", "--wrt", "--emit", "-o", "--stats", "--sizes", "--seed", "--json", "--checkpoint",
        "--arch", "--opt-level"}},
      {"graph", {"--fn", "--grad", "--wrt", "--checkpoint", "-o"}},
      {"jvp",
       {"--fn", "--tangent", "--json", "--interp", "--threads", "--device", "--emit", "-o",
        "--batch", "--lanes", "--opt-level"}},
      {"hvp",
       {"--fn", "--tangent", "--wrt", "--checkpoint", "--json", "--interp", "--threads", "--device",
        "--emit", "-o", "--batch", "--opt-level"}},
      {"jacobian",
       {"--fn", "--wrt", "--mode", "--sparse", "--checkpoint", "--json", "--interp", "--threads",
        "--device", "--opt-level"}},
      {"hessian",
       {"--fn", "--wrt", "--sparse", "--checkpoint", "--json", "--interp", "--threads", "--device",
        "--opt-level"}},
      {"compile",
       {"--fn", "--gradient", "--grad", "--wrt", "--checkpoint", "--cpu", "--target", "-o",
        "--header", "--opt-level"}},
  };
  auto it = kAllowed.find(a.command);
  if (it == kAllowed.end()) return; // an unknown command is reported by run()
  const std::string& c = a.command;
  for (const auto& o : a.given)
    if (!it->second.count(o)) {
      std::string why;
      if (o == "-o") why = " (it writes to stdout: redirect it, e.g. > out.json)";
      if (o == "--no-grad" && c == "check") why = " (check compares gradients)";
      if (o == "--json" && c == "graph") why = " (it prints Graphviz DOT)";
      if (o == "--interp" && c == "grad")
        why = " (it runs nothing; --stats counts on the evaluator)";
      throw Usage("'" + c + "' does not take " + o + why);
    }
  auto has = [&](const char* o) { return a.given.count(o) > 0; };
  if (a.fns.size() > 1 && c != "compile") throw Usage("--fn is given twice");
  if ((c == "grad" || c == "graph" || c == "compile") && !a.values.empty())
    throw Usage("'" + c + "' takes no ARG=VALUE arguments, got '" + a.values[0].first + "=" +
                a.values[0].second + "'");
  if (has("--threads") && has("--interp"))
    throw Usage("--threads is for the JIT's loops; --interp runs the evaluator on one thread");
  if (has("--opt-level") && has("--interp"))
    throw Usage("--opt-level is for the JIT; --interp runs the evaluator");
  if (c == "grad" && has("--opt-level") && a.emit != "llvm" && a.emit != "asm" && a.emit != "obj")
    throw Usage("--opt-level is for --emit llvm, asm and obj (what LLVM optimises)");
  if ((c == "jvp" || c == "hvp") && has("--opt-level") && has("--emit"))
    throw Usage("--opt-level is for running; --emit prints what comes before LLVM");
  if (c == "eval" && has("--no-grad"))
    for (const char* o : {"--wrt", "--seed-out", "--checkpoint"})
      if (has(o)) throw Usage(std::string("--no-grad contradicts ") + o);
  if (c == "grad") {
    if (has("--stats"))
      for (const char* o : {"--emit", "-o"})
        if (has(o)) throw Usage(std::string("--stats prints counts; it does not take ") + o);
    if (!has("--stats"))
      for (const char* o : {"--sizes", "--seed", "--json"})
        if (has(o)) throw Usage(std::string(o) + " is used only with --stats");
  }
  if (c == "compile" && !has("--grad") && !has("--gradient"))
    for (const char* o : {"--wrt", "--checkpoint"})
      if (has(o))
        throw Usage(std::string(o) + " needs --grad or --gradient (it concerns the gradients)");
  if ((c == "jvp" || c == "hvp") && has("-o") && !has("--emit"))
    throw Usage("-o is for --emit (the results go to stdout)");
  if (c == "graph" && !has("--grad"))
    for (const char* o : {"--wrt", "--checkpoint"})
      if (has(o)) throw Usage(std::string(o) + " needs --grad (it concerns the gradient)");
}

int run(int argc, char** argv) {
  Args a = parseArgs(argc, argv);
  if (!a.help && !a.version) audit(a);
  if (a.version) {
    std::cout << "slopec " << SLOPE_VERSION << "\n";
    return kOk;
  }
  if (a.command.empty()) {
    if (a.help) {
      std::cout << kUsage;
      return kOk;
    }
    std::cerr << kUsage;
    return kBad;
  }
  if (a.command == "eval") {
    if (a.help) return std::cout << kEvalHelp, kOk;
    return runEval(a);
  }
  if (a.command == "check") {
    if (a.help) return std::cout << kCheckHelp, kOk;
    return runCheck(a);
  }
  if (a.command == "grad") {
    if (a.help) return std::cout << kGradHelp, kOk;
    return runGrad(a);
  }
  if (a.command == "graph") {
    if (a.help) return std::cout << kGraphHelp, kOk;
    return runGraph(a);
  }
  if (a.command == "compile") {
    if (a.help) return std::cout << kCompileHelp, kOk;
    return runCompile(a);
  }
  if (a.command == "jvp" || a.command == "hvp") {
    if (a.help) return std::cout << kJvpHelp, kOk;
    return runJvp(a);
  }
  if (a.command == "jacobian" || a.command == "hessian") {
    if (a.help) return std::cout << kJacobianHelp, kOk;
    return runJacobian(a);
  }
  throw Usage("unknown command '" + a.command +
              "' (eval, check, grad, graph, compile, jvp, hvp, jacobian, hessian)");
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Usage& e) {
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const CallError& e) {
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const SlopePrintError& e) {
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const GradError& e) {
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const EvalError& e) {
    // A run-time error points into the source, like a compile error.
    if (gProgram)
      std::cerr << renderDiagnostic(gProgram->diags().file(), {e.where, e.what()});
    else
      std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const std::length_error& e) { // a size that overflows or does not fit in memory
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const std::invalid_argument& e) { // an option of the user's (SLOPE_LLVM_ARGS)
    std::cerr << "slopec: error: " << e.what() << "\n";
    return kBad;
  } catch (const std::bad_alloc&) { // what the size checks did not foresee
    std::cerr << "slopec: error: out of memory: the inputs or the buffers of this function do "
                 "not fit in this machine's "
              << checked::physicalMemory() << " bytes of memory (try smaller sizes)\n";
    return kBad;
  } catch (const std::exception& e) {
    std::cerr << "slopec: internal error: " << e.what() << "\n";
    return kBad;
  }
}
