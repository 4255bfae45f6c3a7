// The C header of an object file (object.hpp): slope/abi.h's declarations, then per function
// its C ABI entry points and a typed entry that checks its arguments and calls them.

#include "compiler/codegen/object.hpp"

#include "slope_abi_text.inc" // kAbiText: include/slope/abi.h, embedded by CMake

#include <cctype>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace slope::codegen {
namespace {

/// A C string literal with s's text.
std::string cString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (c == '\n') {
      o += "\\n";
    } else if (u < 0x20 || u >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", u); // octal: never runs into a following digit
      o += buf;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

const char* cType(DType t) {
  switch (t) {
  case DType::F64: return "double";
  case DType::F32: return "float";
  case DType::I64: return "int64_t";
  case DType::Bool: return "uint8_t";
  }
  return "void";
}

/// Names of the typed entry's parameters: Slope's, unless C reserves them or two would be the
/// same (a trailing underscore, as often as needed).
class CNames {
public:
  /// Whether C (or C++, which includes the header too) reserves n, or the header uses it.
  static bool reserved(const std::string& n) { return kReserved.count(n) > 0; }

  std::string take(std::string n) {
    // The entry's own names end in one underscore (args_, bytes0_, x_byte_): a Slope name that
    // ends in one gets another, so none can be the same.
    if (!n.empty() && n.back() == '_') n += '_';
    while (kReserved.count(n) || taken_.count(n) || n.rfind("slope_", 0) == 0)
      n += "_";
    taken_.insert(n);
    return n;
  }

private:
  static inline const std::set<std::string> kReserved = {
      "auto",     "break",    "case",     "char",    "const",    "continue", "default",
      "do",       "double",   "else",     "enum",    "extern",   "float",    "for",
      "goto",     "if",       "inline",   "int",     "long",     "register", "restrict",
      "return",   "short",    "signed",   "sizeof",  "static",   "struct",   "switch",
      "typedef",  "union",    "unsigned", "void",    "volatile", "while",    "bool",
      "true",     "false",    "class",    "new",     "delete",   "this",     "template",
      "operator", "private",  "public",   "try",     "catch",    "throw",    "namespace",
      "using",    "virtual",  "friend",   "mutable", "export",   "asm",      "typename",
      "err",      "int8_t",   "int16_t",  "int32_t", "int64_t",  "uint8_t",  "uint16_t",
      "uint32_t", "uint64_t", "size_t",   "NULL",    "main"};
  std::set<std::string> taken_;
};

/// A C expression for an extent in the typed entry's size parameters (`c` maps size names to
/// them), computed with overflow checks into `bad`; empty when the extent names a size the
/// compiler derives (it is not a parameter).
std::string cExtent(const Poly& p, const std::map<std::string, std::string>& c) {
  std::string sum;
  for (const auto& [mono, coef] : p.terms()) {
    std::string term = coef == 1 && !mono.empty() ? "" : std::to_string(coef) + "LL";
    for (const std::string& n : mono) {
      auto it = c.find(n);
      if (it == c.end()) return "";
      term = term.empty() ? it->second : "slope_gen_mul_(" + term + ", " + it->second + ", &bad_)";
    }
    sum = sum.empty() ? term : "slope_gen_add_(" + sum + ", " + term + ", &bad_)";
  }
  return sum.empty() ? "0LL" : sum;
}

std::string where(const ir::Function& f, SrcRange loc) {
  return f.file ? f.file->position(loc.begin) : "";
}

/// An entry check for slope_gen_message_: its kind's letter, then its text.
std::string entryText(const ir::EntryCheck& c) {
  if (c.kind == ir::EntryCheck::CheckpointBudget)
    return "bthe checkpoint memory budget is less than one state of this loop (the vars it "
           "carries and their undo logs)";
  return std::string(c.lower ? "l" : "r") + c.what + " needs " + c.needs + " (checked on entry)";
}

std::string guardOf(const std::string& source) {
  std::string base = source.substr(source.find_last_of('/') + 1);
  std::string g = "SLOPE_GENERATED_";
  for (char c : base)
    g += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c)) : '_';
  return g + "_H";
}

// Helpers every generated header shares (under one guard: two headers in one file are fine).
const char* kCommon = R"c(#ifndef SLOPE_GENERATED_COMMON_H
#define SLOPE_GENERATED_COMMON_H
static inline int64_t slope_gen_mul_(int64_t a, int64_t b, int* bad) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) *bad = 1;
  return r;
}
static inline int64_t slope_gen_add_(int64_t a, int64_t b, int* bad) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) *bad = 1;
  return r;
}
static inline int slope_gen_overlap_(const void* a, int64_t na, const void* b, int64_t nb) {
  uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  return na > 0 && nb > 0 && pa < pb + (uintptr_t)nb && pb < pa + (uintptr_t)na;
}
static inline int32_t slope_gen_bad_(slope_error* e, int32_t position, int32_t what,
                                     int64_t index) {
  e->code = SLOPE_ERR_ARGUMENT;
  e->site = -1;
  e->dim = position;
  e->unused = what;
  e->index = index;
  e->extent = 0;
  return SLOPE_ERR_ARGUMENT;
}
/* The message of error e from a function whose check sites are `sites` ("FILE:LINE:COL",
   then a tab and the tensor a subscript reads, or the extent), whose entry checks are `entry`
   (a letter, r: the subscript reaches the extent, l: it is negative, b: a checkpoint budget;
   then the check) and whose typed entry's parameters are `args`. Written into buf (n bytes,
   always terminated, cut where it does not fit); returns buf. */
static inline const char* slope_gen_message_(const slope_error* e, const char* const* sites,
                                             int nsites, const char* const* entry, int nentry,
                                             const char* const* args, int nargs, char* buf,
                                             size_t n) {
  const char* site = e->site >= 0 && e->site < nsites ? sites[e->site] : "\t";
  int at = 0;
  while (site[at] && site[at] != '\t') ++at;
  const char* what = site[at] ? site + at + 1 : "";
  long long index = (long long)e->index, extent = (long long)e->extent;
  const char* arg = e->dim >= 0 && e->dim < nargs ? args[e->dim] : "?";
  /* (an unknown check: kind r, then its text) */
  const char* check =
      e->dim >= 0 && e->dim < nentry ? entry[e->dim] : "r" "an entry check failed";
  if (n == 0) return buf;
  switch (e->code) {
  case SLOPE_OK: snprintf(buf, n, "no error"); break;
  case SLOPE_ERR_INDEX:
    snprintf(buf, n, "%.*s: index %lld is out of range for '%s': dimension %d has extent %lld",
             at, site, index, *what ? what : "tensor", (int)e->dim, extent);
    break;
  case SLOPE_ERR_DIV_ZERO: snprintf(buf, n, "%.*s: integer division by zero", at, site); break;
  case SLOPE_ERR_EXTENT:
    snprintf(buf, n, "%.*s: extent %s is negative (%lld)", at, site, what, index);
    break;
  case SLOPE_ERR_NO_MEMORY:
    snprintf(buf, n, "%.*s: out of memory: a temporary could not be allocated", at, site);
    break;
  case SLOPE_ERR_CONVERSION: {
    double v;
    memcpy(&v, &e->index, sizeof v);
    snprintf(buf, n, "%.*s: cannot convert %.17g to i64", at, site, v);
    break;
  }
  case SLOPE_ERR_SIZE:
    if (e->index < 0)
      snprintf(buf, n, "%.*s: a buffer's size overflows i64", at, site);
    else
      snprintf(buf, n, "%.*s: a buffer needs %lld bytes, more than this machine's %lld bytes",
               at, site, index, extent);
    break;
  case SLOPE_ERR_ENTRY:
    if (check[0] == 'b')
      snprintf(buf, n, "%.*s: %s: the budget is %lld bytes, one state %lld", at, site,
               check + 1, extent, index);
    else if (check[0] == 'l')
      snprintf(buf, n, "%.*s: %s, but its smallest value is %lld", at, site, check + 1, index);
    else
      snprintf(buf, n, "%.*s: %s, but it reaches %lld and the extent is %lld", at, site,
               check + 1, index, extent);
    break;
  case SLOPE_ERR_ARGUMENT:
    if (e->unused == SLOPE_ARG_NULL)
      snprintf(buf, n, "argument '%s': the data pointer is null", arg);
    else if (e->unused == SLOPE_ARG_TOO_LARGE)
      snprintf(buf, n, "argument '%s': its size in bytes overflows int64_t", arg);
    else if (e->unused == SLOPE_ARG_OVERLAP)
      snprintf(buf, n,
               "argument '%s' shares memory with '%s': an output must not overlap an input "
               "or another output",
               arg, e->index >= 0 && e->index < nargs ? args[e->index] : "?");
    else
      snprintf(buf, n, "size '%s' must be at least 1, got %lld", arg, index);
    break;
  default: snprintf(buf, n, "compiled code failed with code %d", (int)e->code); break;
  }
  return buf;
}
#endif
)c";

} // namespace

std::string objectHeader(const std::vector<ObjectFunction>& fns, const ObjectCode& code,
                         const std::string& source) {
  for (const ObjectFunction& of : fns)
    if (CNames::reserved(of.f.name) || of.f.name.rfind("slope_", 0) == 0)
      throw std::invalid_argument("function '" + of.f.name +
                                  "' cannot be a C function: C or the header uses the name "
                                  "(rename it in the .slope file)");
  std::ostringstream h;
  std::string guard = guardOf(source);
  h << "/* Generated by slopec " << SLOPE_VERSION << " from " << source << " for CPU " << code.cpu
    << ": do not edit.\n"
    << " *\n"
    << " * Link the object with" << (code.runtime.empty() ? "" : " libslope_rt.a")
    << (code.vectorMath ? " -lmvec" : "") << " -lm. Every function below returns 0 or an\n"
    << " * error code (slope_error's codes); NAME__message turns the error into text. The C "
       "ABI\n"
    << " * of NAME__abi is described below (slope/abi.h). */\n"
    << "#ifndef " << guard << "\n#define " << guard << "\n\n"
    << "#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n\n"
    << kAbiText << "\n"
    << "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
    << kCommon;
  for (size_t fi = 0; fi < fns.size(); ++fi) {
    const ObjectFunction& of = fns[fi];
    const ir::Function& f = of.f;
    const std::string& name = f.name;
    CNames names;
    std::vector<std::string> argNames; // every typed parameter, in order (SLOPE_ERR_ARGUMENT)
    std::vector<std::string> pnames;
    for (const std::string& p : f.paramNames)
      pnames.push_back(names.take(p));
    std::vector<std::string> sizes = f.sizeNames();
    std::map<std::string, std::string> sizeC;
    for (const std::string& s : sizes)
      sizeC[s] = names.take(s);
    std::vector<std::string> rnames;
    for (const std::string& r : of.resultNames)
      rnames.push_back(names.take(r));

    // The comment: the signature, which extents each size binds, and the outputs.
    h << "\n/* " << of.signature << "\n";
    if (!of.about.empty()) h << " *   " << of.about << "\n";
    h << " *\n";
    for (const std::string& s : sizes) {
      h << " *   " << sizeC[s] << ":";
      std::string binds;
      for (size_t k = 0; k < f.paramTypes.size(); ++k)
        for (size_t d = 0; d < f.paramTypes[k].shape.size(); ++d)
          if (f.paramTypes[k].shape[d] == Poly::var(s))
            binds += (binds.empty() ? " " : ", ") + std::string("extent ") + std::to_string(d) +
                     " of " + pnames[k];
      h << (binds.empty() ? " (appears in extents)" : binds) << "\n";
    }
    for (size_t r = 0; r < rnames.size(); ++r)
      h << " *   " << rnames[r] << ": " << f.types[f.body.yields[r]].str() << " (written)\n";
    h << " * Arrays are dense and row-major; results must not overlap the arguments. */\n";
    h << "int32_t " << name << "__abi(void* const* args, const int64_t* sizes, "
      << "void* const* results, slope_error* err);\n"
      << "void " << name << "__release(void);\n"
      << "void " << name << "__set_parallel(const slope_parallel* p);\n";

    // The typed entry.
    std::vector<std::string> params;
    for (size_t k = 0; k < f.paramTypes.size(); ++k) {
      const ir::Type& t = f.paramTypes[k];
      if (t.rank() == 0)
        params.push_back(std::string(t.dtype == DType::Bool ? "int" : cType(t.dtype)) + " " +
                         pnames[k]);
      else
        params.push_back(std::string("const ") + cType(t.dtype) + "* " + pnames[k]);
      argNames.push_back(pnames[k]);
    }
    for (const std::string& s : sizes) {
      params.push_back("int64_t " + sizeC[s]);
      argNames.push_back(sizeC[s]);
    }
    for (size_t r = 0; r < rnames.size(); ++r) {
      params.push_back(std::string(cType(f.types[f.body.yields[r]].dtype)) + "* " + rnames[r]);
      argNames.push_back(rnames[r]);
    }
    params.push_back("slope_error* err");
    h << "static inline int32_t " << name << "(";
    for (size_t k = 0; k < params.size(); ++k)
      h << (k ? ", " : "") << params[k];
    h << ") {\n"
      << "  slope_error local_;\n"
      << "  int bad_ = 0;\n"
      << "  if (!err) err = &local_;\n";
    // Sizes: at least 1, as the C ABI and the JIT's API require.
    for (size_t s = 0; s < sizes.size(); ++s)
      h << "  if (" << sizeC[sizes[s]] << " < 1) return slope_gen_bad_(err, "
        << f.paramTypes.size() + s << ", SLOPE_ARG_SIZE, " << sizeC[sizes[s]] << ");\n";
    // Bytes of every array (-1 where an extent is the compiler's own: not checked).
    struct Array {
      std::string ptr;
      int position;
      bool output;
    };
    std::vector<Array> arrays;
    auto bytes = [&](const ir::Type& t, const std::string& var, int position) {
      std::string e = std::to_string(dtypeSize(t.dtype)) + "LL";
      bool known = true;
      for (const Poly& p : t.shape) {
        std::string x = cExtent(p, sizeC);
        if (x.empty()) known = false;
        e = "slope_gen_mul_(" + e + ", " + x + ", &bad_)";
      }
      if (!known) {
        h << "  const int64_t " << var << " = -1; /* an extent the function derives */\n";
        return;
      }
      h << "  const int64_t " << var << " = " << e << ";\n"
        << "  if (bad_) return slope_gen_bad_(err, " << position << ", SLOPE_ARG_TOO_LARGE, 0);\n";
    };
    for (size_t k = 0; k < f.paramTypes.size(); ++k) {
      if (f.paramTypes[k].rank() == 0) continue;
      std::string var = "bytes" + std::to_string(k) + "_";
      bytes(f.paramTypes[k], var, static_cast<int>(k));
      arrays.push_back({pnames[k], static_cast<int>(k), false});
    }
    int firstResult = static_cast<int>(f.paramTypes.size() + sizes.size());
    for (size_t r = 0; r < rnames.size(); ++r) {
      int position = firstResult + static_cast<int>(r);
      bytes(f.types[f.body.yields[r]], "bytes" + std::to_string(position) + "_", position);
      arrays.push_back({rnames[r], position, true});
    }
    auto bytesVar = [](const Array& a) { return "bytes" + std::to_string(a.position) + "_"; };
    // No null data (a pointer to no elements may be null).
    for (const Array& a : arrays)
      h << "  if (!" << a.ptr << " && " << bytesVar(a) << " != 0) return slope_gen_bad_(err, "
        << a.position << ", SLOPE_ARG_NULL, 0);\n";
    // No output overlapping an input or an earlier output.
    for (size_t o = 0; o < arrays.size(); ++o) {
      if (!arrays[o].output) continue;
      for (size_t k = 0; k < o; ++k)
        h << "  if (slope_gen_overlap_(" << arrays[o].ptr << ", " << bytesVar(arrays[o]) << ", "
          << arrays[k].ptr << ", " << bytesVar(arrays[k]) << "))\n"
          << "    return slope_gen_bad_(err, " << arrays[o].position << ", SLOPE_ARG_OVERLAP, "
          << arrays[k].position << ");\n";
    }
    // The C ABI's arrays: scalars by address (a bool as one byte of 0 or 1).
    for (size_t k = 0; k < f.paramTypes.size(); ++k)
      if (f.paramTypes[k].rank() == 0 && f.paramTypes[k].dtype == DType::Bool)
        h << "  uint8_t " << pnames[k] << "_byte_ = " << pnames[k] << " ? 1 : 0;\n";
    h << "  void* const args_[] = {";
    for (size_t k = 0; k < f.paramTypes.size(); ++k) {
      const ir::Type& t = f.paramTypes[k];
      std::string a = t.rank() > 0             ? "(void*)" + pnames[k]
                      : t.dtype == DType::Bool ? "(void*)&" + pnames[k] + "_byte_"
                                               : "(void*)&" + pnames[k];
      h << (k ? ", " : "") << a;
    }
    if (f.paramTypes.empty()) h << "0";
    h << "};\n  const int64_t sizes_[] = {";
    for (size_t s = 0; s < sizes.size(); ++s)
      h << (s ? ", " : "") << sizeC[sizes[s]];
    if (sizes.empty()) h << "0";
    h << "};\n  void* const results_[] = {";
    for (size_t r = 0; r < rnames.size(); ++r)
      h << (r ? ", " : "") << "(void*)" << rnames[r];
    if (rnames.empty()) h << "0";
    h << "};\n"
      << "  (void)bad_;\n"
      << "  return " << name << "__abi(args_, sizes_, results_, err);\n}\n";

    // NAME__message: the site and entry check tables, and the shared formatter.
    const std::vector<Site>& sites = code.sites.at(fi); // (emitObject: one table a function)
    h << "static inline const char* " << name
      << "__message(const slope_error* e, char* buf, size_t n) {\n"
      << "  static const char* const sites[] = {";
    for (size_t s = 0; s < sites.size(); ++s)
      h << (s ? ",\n                                     " : "")
        << cString(where(f, sites[s].loc) + "\t" +
                   (!sites[s].extent.empty() ? sites[s].extent : sites[s].tensor));
    if (sites.empty()) h << "\"\"";
    h << "};\n  static const char* const entry[] = {";
    for (size_t k = 0; k < f.entryChecks.size(); ++k)
      h << (k ? ", " : "") << cString(entryText(f.entryChecks[k]));
    if (f.entryChecks.empty()) h << "\"\"";
    h << "};\n  static const char* const args[] = {";
    for (size_t k = 0; k < argNames.size(); ++k)
      h << (k ? ", " : "") << cString(argNames[k]);
    if (argNames.empty()) h << "\"\"";
    h << "};\n"
      << "  return slope_gen_message_(e, sites, " << sites.size() << ", entry, "
      << f.entryChecks.size() << ", args, " << argNames.size() << ", buf, n);\n}\n";
  }
  h << "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n";
  return h.str();
}

} // namespace slope::codegen
