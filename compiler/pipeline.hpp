// The compiler pipeline, top to bottom: read -> parse -> check/lower -> differentiate.
// Each stage's output can be printed from slopec.
#pragma once

#include "compiler/autodiff/autodiff.hpp"
#include "compiler/autodiff/forward.hpp"
#include "compiler/ir/ir.hpp"
#include "compiler/parse/ast.hpp"

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace slope {

class Program {
public:
  /// Reads a file; a missing or unreadable file is reported as a diagnostic-free error
  /// (ioError()).
  static std::unique_ptr<Program> fromFile(const std::string& path);
  static std::unique_ptr<Program> fromString(const std::string& name, std::string text);

  /// Parses and checks every function. False when there are diagnostics.
  bool ok() const { return ok_; }
  const std::string& ioError() const { return ioError_; }
  /// Rendered diagnostics (FILE:LINE:COL: error: ...), empty when ok().
  std::string diagnostics() const;
  const DiagSink& diags() const { return *diags_; }

  std::vector<std::string> functionNames() const;
  bool hasFunction(const std::string& name) const;
  /// Forward IR of one function (all calls inlined), simplified.
  ir::Function forward(const std::string& name) const;
  /// Gradient / VJP IR (see differentiate()).
  ir::Function gradient(const std::string& name, const std::vector<std::string>& wrt,
                        const GradOptions& opt = {}) const;
  /// The same with uniform checkpointing (GradOptions::checkpoint).
  ir::Function gradient(const std::string& name, const std::vector<std::string>& wrt,
                        int checkpoint) const {
    GradOptions o;
    o.checkpoint = checkpoint;
    return gradient(name, wrt, o);
  }

  /// Forward mode: NAME_jvp, or with batch K > 0 K tangents per call (see jvp() in
  /// compiler/autodiff/forward.hpp).
  ir::Function jvp(const std::string& name, const std::vector<std::string>& wrt,
                   int batch = 0) const;
  /// Forward mode with the tangents constants of the code: NAME_jvp_seededK (see jvpSeeded()).
  ir::Function jvpSeeded(const std::string& name, const std::vector<std::string>& wrt, int batch,
                         const Seeds& seeds) const;
  /// Hessian-vector product of a scalar function: NAME_hvp (see hvp()), batched as jvp().
  ir::Function hvp(const std::string& name, const std::vector<std::string>& wrt,
                   const GradOptions& opt = {}, int batch = 0) const;

private:
  Program() = default;
  void build();
  /// f lowered with every call inlined, the derivatives it calls included.
  std::optional<ir::Function> lower(const std::string& name, DiagSink& sink,
                                    const std::set<std::string>& plain = {}) const;
  /// What `grad(f)(...)`, `jvp(f)(...)` and `hvp(f)(...)` inline (check.hpp, DerivativeSource).
  ir::Function derivativeToInline(const std::string& kind, const std::string& name,
                                  const std::vector<std::string>& wrt,
                                  const std::set<std::string>& plain) const;
  std::unique_ptr<SourceFile> file_;
  std::unique_ptr<DiagSink> diags_;
  ast::Module module_;
  std::string ioError_;
  bool ok_ = false;
};

} // namespace slope
