#include "compiler/pipeline.hpp"

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/check/check.hpp"
#include "compiler/parse/parser.hpp"
#include "compiler/simplify/factor.hpp"
#include "compiler/simplify/simplify.hpp"
#include "compiler/support/stack.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace slope {

std::unique_ptr<Program> Program::fromFile(const std::string& path) {
  std::unique_ptr<Program> p(new Program);
  std::error_code ec;
  bool dir = std::filesystem::is_directory(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (!in || dir) {
    p->ioError_ = path; // (built in two steps: GCC 12's -Wrestrict misfires on path + "...")
    p->ioError_ += dir ? ": is a directory, not a .slope file" : ": cannot open file";
    p->file_ = std::make_unique<SourceFile>(path, "");
    p->diags_ = std::make_unique<DiagSink>(*p->file_);
    return p;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  p->file_ = std::make_unique<SourceFile>(path, ss.str());
  p->build();
  return p;
}

std::unique_ptr<Program> Program::fromString(const std::string& name, std::string text) {
  std::unique_ptr<Program> p(new Program);
  p->file_ = std::make_unique<SourceFile>(name, std::move(text));
  p->build();
  return p;
}

void Program::build() {
  diags_ = std::make_unique<DiagSink>(*file_);
  withLargeStack([&] {
    module_ = parseModule(*file_, *diags_);
    bool parsed = !diags_->hasErrors();
    bool checked = checkModule(module_, *diags_);
    ok_ = parsed && checked;
    // A derivative the language calls is built now, so that what cannot be differentiated is
    // an error at the call, like any other, before anything runs.
    if (ok_)
      for (const auto& f : module_.functions)
        if (callsDerivative(f)) lower(f.name, *diags_);
    ok_ = ok_ && !diags_->hasErrors();
  });
}

std::optional<ir::Function> Program::lower(const std::string& name, DiagSink& sink,
                                           const std::set<std::string>& plain) const {
  return lowerFunction(
      module_, name, sink,
      [this](const std::string& kind, const std::string& fn, const std::vector<std::string>& wrt,
             const std::set<std::string>& without) {
        return derivativeToInline(kind, fn, wrt, without);
      },
      plain);
}

ir::Function Program::derivativeToInline(const std::string& kind, const std::string& name,
                                         const std::vector<std::string>& wrt,
                                         const std::set<std::string>& plain) const {
  DiagSink sink(*file_);
  std::optional<ir::Function> f = lower(name, sink, plain);
  if (!f) throw GradError(sink.render());
  simplify(*f);
  ir::Function d;
  if (kind == "jvp") {
    d = slope::jvp(*f, wrt);
  } else {
    d = differentiate(*f, wrt);
    if (kind == "hvp") {
      simplify(d);
      d = slope::hvp(d, wrt);
    }
  }
  simplify(d);
  return d;
}

std::string Program::diagnostics() const {
  if (!ioError_.empty()) return ioError_ + "\n";
  return diags_->render();
}

std::vector<std::string> Program::functionNames() const {
  std::vector<std::string> out;
  for (const auto& f : module_.functions)
    out.push_back(f.name);
  return out;
}

bool Program::hasFunction(const std::string& name) const {
  for (const auto& f : module_.functions)
    if (f.name == name) return true;
  return false;
}

ir::Function Program::forward(const std::string& name) const {
  if (!ok_) throw std::logic_error("forward() on a program with errors");
  DiagSink sink(*file_);
  std::optional<ir::Function> f;
  withLargeStack([&] {
    f = lower(name, sink);
    if (f) {
      simplify(*f);
      returnBuffersInPlace(*f);
    }
  });
  if (!f && sink.hasErrors()) throw GradError(sink.render()); // build() reported these
  if (!f) throw std::invalid_argument("no function '" + name + "'");
  return *f;
}

ir::Function Program::gradient(const std::string& name, const std::vector<std::string>& wrt,
                               const GradOptions& opt) const {
  ir::Function f = forward(name), g;
  withLargeStack([&] {
    g = differentiate(f, wrt, opt);
    // The forward sweep's calls with user rules now just compute (their rules are used).
    ir::stripCustom(g);
    simplify(g);
    // (After simplifying: the products it matches are in their final form; again after it,
    // for the products the moved scatters no longer use.)
    if (factorScatters(g)) simplify(g);
    returnBuffersInPlace(g);
  });
  return g;
}

ir::Function Program::jvp(const std::string& name, const std::vector<std::string>& wrt,
                          int batch) const {
  ir::Function f = forward(name), j;
  withLargeStack([&] {
    j = slope::jvp(f, wrt, batch);
    ir::stripCustom(j);
    simplify(j);
    returnBuffersInPlace(j);
  });
  return j;
}

ir::Function Program::jvpSeeded(const std::string& name, const std::vector<std::string>& wrt,
                                int batch, const Seeds& seeds) const {
  ir::Function f = forward(name), j;
  withLargeStack([&] {
    j = slope::jvpSeeded(f, resolveWrt(f, wrt), batch, seeds);
    ir::stripCustom(j);
    simplify(j);
    returnBuffersInPlace(j);
  });
  return j;
}

ir::Function Program::hvp(const std::string& name, const std::vector<std::string>& wrt,
                          const GradOptions& opt, int batch) const {
  ir::Function f = forward(name), h;
  withLargeStack([&] {
    std::vector<std::string> w = resolveWrt(f, wrt);
    const auto& ys = f.body.yields;
    if (ys.size() != 1 || !isFloat(f.types[ys[0]].dtype) || f.types[ys[0]].rank() != 0) {
      std::string types;
      for (int y : ys)
        types += (types.empty() ? "" : ", ") + f.types[y].str();
      if (ys.size() != 1) types = "(" + types + ")";
      throw GradError("a Hessian needs a function with one scalar float result; '" + name +
                      "' returns " + types);
    }
    ir::Function g = differentiate(f, w, opt);
    simplify(g);
    h = slope::hvp(g, w, batch);
    ir::stripCustom(h);
    simplify(h);
    returnBuffersInPlace(h);
  });
  return h;
}

} // namespace slope
