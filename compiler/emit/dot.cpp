#include "compiler/emit/dot.hpp"

#include <charconv>
#include <map>

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

class Dot {
public:
  Dot(const ir::Function& f, int firstAdjoint) : f_(f), adj_(firstAdjoint) {}

  std::string run() {
    out_ = "digraph \"" + escape(f_.name) +
           "\" {\n  rankdir=BT;\n  node [shape=box, style=rounded, "
           "fontname=\"Helvetica\", fontsize=11];\n  edge [color=\"#555555\"];\n";
    block(f_.body, "  ");
    for (size_t k = 0; k < f_.body.yields.size(); ++k) {
      std::string r = "result" + std::to_string(k);
      out_ += "  " + r + " [label=\"result " + std::to_string(k) +
              "\", shape=doublecircle, style=solid];\n";
      edge(f_.body.yields[k], r);
    }
    out_ += edges_ + "}\n";
    return out_;
  }

private:
  static std::string node(int v) { return "v" + std::to_string(v); }
  void edge(int from, const std::string& to) {
    if (from < 0) return;
    auto it = source_.find(from);
    edges_ += "  " + (it == source_.end() ? node(from) : it->second) + " -> " + to + ";\n";
  }

  std::string label(const Instr& in) {
    std::string l = ir::opName(in.op);
    switch (in.op) {
    case Op::Param: l = in.name; break;
    case Op::Const: {
      if (isFloat(f_.types[in.result].dtype)) {
        char buf[32];
        auto r = std::to_chars(buf, buf + sizeof buf, in.fval);
        l = std::string(buf, r.ptr);
      } else {
        l = std::to_string(in.ival);
      }
      break;
    }
    case Op::Size: l = in.poly.str(); break;
    case Op::Load: l = "load " + (in.name.empty() ? std::string("") : in.name); break;
    default: break;
    }
    l = escape(l);
    if (in.result >= 0 && f_.types[in.result].rank() > 0)
      l += "\\n" + escape(f_.types[in.result].str());
    return l;
  }

  void block(const Block& b, const std::string& ind) {
    for (const Instr& in : b.body) {
      bool adjoint = adj_ >= 0 && (in.result >= adj_ || (in.result < 0 && in.op == Op::BufAdd));
      std::string style = adjoint ? ", style=\"rounded,filled\", fillcolor=\"#f4c7c3\"" : "";
      std::string id = in.result >= 0 ? node(in.result) : "e" + std::to_string(++effects_);
      if (in.op == Op::Param) style += ", shape=ellipse";
      if (in.op == Op::Const || in.op == Op::Size) style += ", shape=plaintext";
      if (!in.regions.empty()) {
        for (size_t r = 0; r < in.regions.size(); ++r) {
          const Block& reg = in.regions[r];
          std::string idx;
          for (size_t k = 0; k < reg.args.size(); ++k) {
            std::string a = "i" + std::to_string(reg.args[k]);
            source_[reg.args[k]] = node(reg.args[k]);
            idx += (k ? ", " : "") + a + " < " + in.extents[k].str();
          }
          out_ += ind + "subgraph cluster_" + std::to_string(++clusters_) + " {\n" + ind +
                  "  label=\"" +
                  escape(std::string(ir::opName(in.op)) +
                         (in.op == Op::If ? (r ? " (else)" : " (then)") : "") +
                         (idx.empty() ? "" : " [" + idx + "]")) +
                  "\";\n" + ind + "  style=dashed; color=\"" + (adjoint ? "#c0392b" : "#7f8c8d") +
                  "\";\n";
          for (size_t k = 0; k < reg.args.size(); ++k)
            out_ += ind + "  " + node(reg.args[k]) + " [label=\"i" + std::to_string(reg.args[k]) +
                    "\", shape=plaintext];\n";
          block(reg, ind + "  ");
          out_ += ind + "}\n";
          for (int y : reg.yields)
            edge(y, id);
        }
      }
      out_ += ind + id + " [label=\"" + label(in) + "\"" + style + "];\n";
      for (int a : in.args)
        edge(a, id);
    }
  }

  const ir::Function& f_;
  int adj_;
  std::string out_, edges_;
  std::map<int, std::string> source_;
  int clusters_ = 0, effects_ = 0;
};

} // namespace

std::string printDot(const ir::Function& f, int firstAdjoint) {
  if (!ir::hasCustom(f.body)) return Dot(f, firstAdjoint).run();
  // The graph is of what runs: a call with a user rule as its own computation.
  ir::Function plain = f;
  ir::stripCustom(plain);
  return Dot(plain, firstAdjoint).run();
}

} // namespace slope
