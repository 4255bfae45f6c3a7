#include "compiler/ir/ir.hpp"

#include "compiler/support/checked.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <set>

namespace slope::ir {

// clang-format off
const char* opName(Op op) {
  switch (op) {
#define OP(E, M, K) case Op::E: return M;
#include "compiler/ir/ops.def"
  }
  return "?";
}

OpKind opKind(Op op) {
  switch (op) {
#define OP(E, M, K) case Op::E: return OpKind::K;
#include "compiler/ir/ops.def"
  }
  return OpKind::Leaf;
}
// clang-format on

std::string Type::str() const {
  std::string s = dtypeName(dtype);
  if (shape.empty()) return s;
  s += "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + shape[i].str();
  return s + "]";
}

int64_t DerivedSize::eval(const std::map<std::string, int64_t>& sizes) const {
  int64_t x = a.eval(sizes).value_or(0);
  if (x <= 0) return 0;
  if (kind == FloorDiv) return x / std::max<int64_t>(1, b.eval(sizes).value_or(1));
  if (kind == CeilSqrt) {
    auto r = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(x))));
    auto sq = [](int64_t v) { return static_cast<__int128>(v) * v; }; // (no overflow)
    while (r > 0 && sq(r - 1) >= x)
      --r;
    while (sq(r) < x)
      ++r;
    return r;
  }
  int64_t y = std::max<int64_t>(1, b.eval(sizes).value_or(1));
  if (kind == Clamp) {
    int64_t c = cap.eval(sizes).value_or(0);
    return c <= 0 ? 0 : std::min(c, std::max<int64_t>(1, x / y));
  }
  return x / y + (x % y != 0); // ceil(x / y), with no x + y - 1 to overflow
}

bool EntryCheck::holds(const std::map<std::string, int64_t>& sizes) const {
  for (const Poly& g : guards)
    if (g.eval(sizes).value_or(1) < 1) return true; // the subscript never runs
  return cond.eval(sizes).value_or(0) >= 0;
}

std::string EntryCheck::message(const std::map<std::string, int64_t>& sizes,
                                const std::pair<int64_t, int64_t>* values) const {
  auto val = [&](const Poly& p) {
    if (values && &p == &got) return std::to_string(values->first);
    if (values && &p == &limit) return std::to_string(values->second);
    auto v = p.eval(sizes);
    return v ? std::to_string(*v) : p.str();
  };
  std::string m;
  if (kind == CheckpointBudget)
    m = "the checkpoint memory budget of " + val(limit) +
        " bytes is less than one state of this loop, " + val(got) +
        " bytes (the vars it carries and their undo logs); give at least that much";
  else
    m = what + " needs " + needs + " (checked on entry), but " +
        (lower ? "its smallest value is " + val(got)
               : "it reaches " + val(got) + " and the extent is " + val(limit));
  std::string given;
  std::set<std::string> names;
  for (const Poly* p : {&cond, &got, &limit})
    for (const std::string& n : p->names())
      if (n.find_first_of("#(") == std::string::npos && names.insert(n).second)
        given += (given.empty() ? "" : ", ") + n + " = " + val(Poly::var(n));
  if (!given.empty()) m += " (" + given + ")";
  return m;
}

static int64_t peakIn(const Block& b, const Function& f,
                      const std::map<std::string, int64_t>& sizes) {
  int64_t here = 0, inner = 0;
  const auto& results = f.body.yields;
  for (const Instr& in : b.body) {
    if (in.op == Op::BufZeros &&
        std::find(results.begin(), results.end(), in.result) == results.end()) {
      // Checked, saturating at INT64_MAX: a statistic, not an allocation (those fail).
      int64_t n = static_cast<int64_t>(dtypeSize(f.types[in.result].dtype));
      for (const Poly& p : f.types[in.result].shape) {
        int64_t e = 0;
        try {
          e = p.eval(sizes).value_or(0);
        } catch (const checked::SizeError&) {
          e = INT64_MAX;
        }
        n = checked::mul(n, std::max<int64_t>(e, 0)).value_or(INT64_MAX);
      }
      here = checked::add(here, n).value_or(INT64_MAX);
    }
    for (const Block& r : in.regions)
      inner = checked::add(inner, peakIn(r, f, sizes)).value_or(INT64_MAX);
  }
  return checked::add(here, inner).value_or(INT64_MAX);
}

int64_t peakBufferBytes(const Function& f, const std::map<std::string, int64_t>& sizes) {
  return peakIn(f.body, f, sizes);
}

std::vector<std::string> Function::sizeNames() const {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const Type& t : paramTypes)
    for (const Poly& p : t.shape)
      for (const auto& n : p.names())
        if (seen.insert(n).second) out.push_back(n);
  return out;
}

namespace {

std::string fmtDouble(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eninf") == std::string::npos) s += ".0";
  return s;
}

struct Printer {
  const Function& f;
  std::string out;

  std::string v(int id) const { return "%" + std::to_string(id); }

  void indent(int depth) { out.append(static_cast<size_t>(depth) * 2, ' '); }

  void block(const Block& b, int depth) {
    for (const Instr& i : b.body)
      instr(i, depth);
    indent(depth);
    out += "yield";
    for (size_t k = 0; k < b.yields.size(); ++k)
      out += (k ? ", " : " ") + v(b.yields[k]);
    out += "\n";
  }

  void instr(const Instr& i, int depth) {
    indent(depth);
    if (i.result >= 0) out += v(i.result) + " = ";
    out += opName(i.op);
    switch (i.op) {
    case Op::Param: out += " " + i.name; break;
    case Op::Const:
      out +=
          " " + (isFloat(f.types[i.result].dtype)         ? fmtDouble(i.fval)
                 : f.types[i.result].dtype == DType::Bool ? std::string(i.ival ? "true" : "false")
                                                          : std::to_string(i.ival));
      break;
    case Op::Size: out += " " + i.poly.str(); break;
    case Op::SizeDef: out += " " + i.name + " = " + v(i.args[0]); break;
    case Op::Load:
    case Op::BufAdd:
    case Op::BufStore: {
      out += " " + v(i.args[0]) + "[";
      size_t nidx = i.op == Op::Load ? i.args.size() - 1 : i.args.size() - 2;
      for (size_t k = 0; k < nidx; ++k)
        out += (k ? ", " : "") + v(i.args[1 + k]);
      out += "]";
      if (i.op != Op::Load) out += ", " + v(i.args.back());
      if (i.op == Op::Load && !i.checked && nidx > 0) out += " checked";
      break;
    }
    default:
      for (size_t k = 0; k < i.args.size(); ++k)
        out += (k ? ", " : " ") + v(i.args[k]);
    }
    if (i.op == Op::For && i.ival == 1) out += " sequential";
    if (i.op == Op::BufZeros && i.ival == kFilledWhole) out += " filled";
    if (!i.extents.empty()) {
      out += " [";
      const Block& r = i.regions[0];
      for (size_t k = 0; k < i.extents.size(); ++k)
        out += (k ? ", " : "") + v(r.args[k]) + " < " + i.extents[k].str();
      out += "]";
    }
    if (i.result >= 0) out += " : " + f.types[i.result].str();
    if (i.regions.empty()) {
      out += "\n";
      return;
    }
    for (size_t r = 0; r < i.regions.size(); ++r) {
      if (r == 0)
        out += " {\n";
      else if (i.op == Op::Custom) // the user's rule, of the result's cotangent
        out += " rule(" + v(i.regions[r].args[0]) + " : " + f.types[i.regions[r].args[0]].str() +
               ") {\n";
      else
        out += " else {\n";
      block(i.regions[r], depth + 1);
      indent(depth);
      out += "}";
    }
    out += "\n";
  }
};

} // namespace

std::string printInstr(const Function& f, const Instr& i) {
  Printer p{f, {}};
  Instr flat = i;
  flat.regions.clear();
  flat.extents.clear();
  p.instr(flat, 0);
  if (!p.out.empty() && p.out.back() == '\n') p.out.pop_back();
  return p.out;
}

std::string printEntry(const Function& f) {
  std::string out;
  for (const DerivedSize& d : f.derived)
    if (d.kind == DerivedSize::FloorDiv)
      out += "  size " + d.name + " = max(" + d.a.str() + ", 0) / " + d.b.str() + "\n";
  for (const EntryCheck& c : f.entryChecks) {
    out += "  entry.check " + c.needs + ": " + c.what;
    std::string when;
    for (const Poly& g : c.guards)
      if (!g.isConst()) when += (when.empty() ? "" : ", ") + g.str() + " >= 1";
    if (!when.empty()) out += " (when " + when + ")";
    out += "\n";
  }
  return out;
}

std::string print(const Function& f) {
  Printer p{f, {}};
  p.out = "fn @" + f.name + "(";
  for (size_t k = 0; k < f.params.size(); ++k)
    p.out +=
        (k ? ", " : "") + p.v(f.params[k]) + " " + f.paramNames[k] + ": " + f.paramTypes[k].str();
  p.out += ") -> (";
  for (size_t k = 0; k < f.body.yields.size(); ++k)
    p.out += (k ? ", " : "") + f.types[f.body.yields[k]].str();
  p.out += ") {\n";
  p.out += printEntry(f);
  for (const Instr& i : f.body.body)
    if (i.op != Op::Param) p.instr(i, 1);
  p.out += "  return";
  for (size_t k = 0; k < f.body.yields.size(); ++k)
    p.out += (k ? ", " : " ") + p.v(f.body.yields[k]);
  p.out += "\n}\n";
  return p.out;
}

static int mapped(std::vector<int>& map, int id) {
  if (id >= 0 && id < static_cast<int>(map.size()) && map[id] >= 0) return map[id];
  return id;
}

static int fresh(Function& f, std::vector<int>& map, int old) {
  int n = f.newValue(f.types[old]);
  if (static_cast<int>(map.size()) <= old) map.resize(old + 1, -1);
  map[old] = n;
  return n;
}

std::set<int> definedIn(const Block& b) {
  std::set<int> out(b.args.begin(), b.args.end());
  forEachInstr(b, [&](const Instr& i) {
    if (i.result >= 0) out.insert(i.result);
  });
  return out;
}

Block cloneBlock(Function& f, const Block& b, std::vector<int>& map) {
  Block out;
  for (int a : b.args)
    out.args.push_back(fresh(f, map, a));
  out.body.reserve(b.body.size());
  for (const Instr& i : b.body) {
    Instr c = i;
    c.regions.clear();
    for (int& a : c.args)
      a = mapped(map, a);
    for (const Block& r : i.regions)
      c.regions.push_back(cloneBlock(f, r, map));
    if (i.result >= 0) c.result = fresh(f, map, i.result);
    out.body.push_back(std::move(c));
  }
  for (int y : b.yields)
    out.yields.push_back(mapped(map, y));
  return out;
}

std::string scopeError(const Function& f) {
  std::vector<char> seen(f.types.size(), 0);
  std::string err;
  std::function<void(const Block&)> walk = [&](const Block& b) {
    std::vector<int> mine(b.args.begin(), b.args.end());
    for (int a : b.args)
      seen[a] = 1;
    auto use = [&](int v, const Instr* at) {
      if (!err.empty() || (v >= 0 && static_cast<size_t>(v) < seen.size() && seen[v])) return;
      err = "value %" + std::to_string(v) + " used out of scope" +
            (at ? " in: " + printInstr(f, *at) : std::string(" as a yield"));
    };
    for (const Instr& i : b.body) {
      for (int a : i.args)
        use(a, &i);
      for (const Block& r : i.regions)
        walk(r);
      if (i.result >= 0) {
        seen[i.result] = 1;
        mine.push_back(i.result);
      }
    }
    for (int y : b.yields)
      use(y, nullptr);
    for (int v : mine)
      seen[v] = 0;
  };
  for (int p : f.params)
    seen[p] = 1;
  walk(f.body);
  return err;
}

bool runBodyOnce(const Block& body) {
  std::set<int> read;
  for (const Instr& i : body.body)
    if (i.op == Op::Load) read.insert(i.args[0]);
  for (const Instr& i : body.body) {
    if (!i.regions.empty() || i.op == Op::BufAdd || i.op == Op::SizeDef) return true;
    // A store to memory the body does not read (a tape, say) writes the same value to the same
    // place on a second run, so it changes nothing: counting it would give the gradient's
    // forward pass, which tapes the body, another logsumexp than the function's own.
    if (i.op == Op::BufStore && read.count(i.args[0])) return true;
  }
  return false;
}

bool isTranscendental(Op op) {
  switch (op) {
  case Op::Exp:
  case Op::Log:
  case Op::Log1p:
  case Op::Expm1:
  case Op::Sqrt:
  case Op::Sin:
  case Op::Cos:
  case Op::Tan:
  case Op::Asin:
  case Op::Acos:
  case Op::Atan:
  case Op::Sinh:
  case Op::Cosh:
  case Op::Tanh:
  case Op::Sigmoid:
  case Op::Softplus:
  case Op::Erf:
  case Op::Lgamma:
  case Op::Digamma:
  case Op::Trigamma:
  case Op::Pow:
  case Op::Atan2: return true;
  default: return false;
  }
}

} // namespace slope::ir

namespace slope::ir {

bool hasCustom(const Block& b) {
  bool any = false;
  forEachInstr(b, [&](const Instr& i) { any = any || i.op == Op::Custom; });
  return any;
}

bool stripCustom(Function& f) {
  if (!hasCustom(f.body)) return false;
  // First splice each call's computation where the call stood, noting what its result is now.
  std::map<int, int> rename;
  std::function<void(Block&)> splice = [&](Block& b) {
    std::vector<Instr> out;
    out.reserve(b.body.size());
    for (Instr& in : b.body) {
      for (Block& r : in.regions)
        splice(r);
      if (in.op != Op::Custom) {
        out.push_back(std::move(in));
        continue;
      }
      Block& computed = in.regions[0];
      for (Instr& c : computed.body)
        out.push_back(std::move(c));
      rename[in.result] = computed.yields[0];
    }
    b.body = std::move(out);
  };
  splice(f.body);
  // Then every use of a call's result reads what computed it (a chain where one call's
  // computation ends in another's result).
  auto resolve = [&](int v) {
    for (auto it = rename.find(v); it != rename.end(); it = rename.find(v))
      v = it->second;
    return v;
  };
  std::function<void(Block&)> use = [&](Block& b) {
    for (Instr& in : b.body) {
      for (int& a : in.args)
        a = resolve(a);
      for (Block& r : in.regions)
        use(r);
    }
    for (int& y : b.yields)
      y = resolve(y);
  };
  use(f.body);
  return true;
}

} // namespace slope::ir
