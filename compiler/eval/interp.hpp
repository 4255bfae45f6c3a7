// The reference evaluator: a plain interpreter of Tensor IR.
//
// It is the oracle that later backends are tested against, so it is written for clarity:
// one switch over the op list, loops over index spaces, f32 arithmetic done in f32. Every
// subscript is range-checked; a bad one is an EvalError naming the tensor and the index.
#pragma once

#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <map>
#include <stdexcept>
#include <vector>

namespace slope {

/// A run-time failure inside the function (a subscript out of range, an integer division by
/// zero, a negative computed extent); `where` points at the source.
struct EvalError : std::runtime_error {
  EvalError(SrcRange w, const std::string& m) : std::runtime_error(m), where(w) {}
  SrcRange where;
};

/// The message of a failed conversion to i64 (NaN, or |v| too large), for both backends.
std::string conversionMessage(double v, DType from);

/// The dtype and extents of an argument, for validation without the data.
struct ArgShape {
  DType dtype;
  std::vector<int64_t> shape;
};

/// Checks the arguments against the parameter types and returns the size bindings.
/// Throws CallError naming the parameter.
std::map<std::string, int64_t> bindSizes(const ir::Function& f, const std::vector<ArgShape>& args);
std::map<std::string, int64_t> bindSizes(const ir::Function& f, const std::vector<Tensor>& args);

/// Runs f on args and returns its results (one per yield). With opCount, also counts the
/// operations executed: every instruction run but constants, sizes and parameters, with the
/// work the language would spell as several operations counted as those (a scatter-add is a
/// load, an add and a store; a reduction adds its combining step per element; digamma, which
/// the language lacks, counts kDigammaOps).
std::vector<Tensor> evaluate(const ir::Function& f, const std::vector<Tensor>& args,
                             int64_t* opCount = nullptr);

/// What one digamma counts: the operations of the Slope definition `--emit slope` prints for
/// it (the runtime's own digamma, compiler/support/special.cpp, runs 60 to 140 floating-point
/// operations). A test evaluates the printed definition and compares.
constexpr int64_t kDigammaOps = 110;
/// Likewise for trigamma (digamma's derivative, in the HVP of a function with lgamma).
constexpr int64_t kTrigammaOps = 120;

/// Operations an instruction counts as beyond one (evaluate's opCount).
int64_t extraOps(ir::Op op);
/// Operations a region instruction counts per point of its index space beyond its body: a
/// reduction's combining step. A comprehension's store and a loop's step count nothing.
int64_t stepOps(ir::Op op);

/// A copy of f computing in f64 wherever it computes in f32: the finite-difference checker
/// uses it as a precise reference for f32 functions.
ir::Function promoteToF64(const ir::Function& f);

/// A scalar value: floats in f, integers and bools in i.
struct Scalar {
  double f = 0;
  int64_t i = 0;
};

/// Folds an elementwise op of f whose operands are the given constants, computing exactly as
/// the evaluator does. False if it would fail at run time (an integer division by zero).
bool foldConstant(const ir::Function& f, const ir::Instr& in, const std::vector<Scalar>& args,
                  Scalar& out);

} // namespace slope
