// Sparse Jacobians: the sparsity pattern read off the IR at the given arguments, columns
// grouped by colouring (columns that share no row take one JVP together: Curtis, Powell and
// Reid's compression, as CasADi and ColPack do it), and the compressed Jacobian in CSR form.
#pragma once

#include "compiler/codegen/execute.hpp"
#include "compiler/derivatives.hpp"
#include "compiler/ir/ir.hpp"
#include "slope/tensor.hpp"

#include <optional>
#include <string>
#include <vector>

namespace slope {

/// Rows: the elements of f's float results (row-major, result after result); columns: the
/// elements of the differentiated parameters, in parameter order (as DenseDerivative).
struct SparsityPattern {
  int64_t rows = 0, cols = 0;
  std::vector<int64_t> rowStart; // rows + 1 offsets into colIndex (CSR)
  std::vector<int64_t> colIndex; // sorted within a row
  int64_t nonzeros() const { return static_cast<int64_t>(colIndex.size()); }
};

/// The parameter elements each result element can depend on at args, read off f's IR: a
/// result that is a comprehension is followed element by element through its body (integer
/// subscripts, gathers through integer parameters and the comprehensions it reads computed
/// exactly; a float condition takes both branches); whatever it cannot follow (loops with
/// state, vars, other results) counts as depending on everything that flows into it, so the
/// pattern never misses a nonzero. nullopt where it cannot tell (an integer computed from
/// floats, a subscript it cannot evaluate): then a dense Jacobian.
std::optional<SparsityPattern> jacobianSparsity(const ir::Function& f,
                                                const std::vector<Tensor>& args,
                                                const std::vector<std::string>& wrt);

/// The Hessian's pattern for a function with one scalar float result (rows and columns: the
/// differentiated parameters' elements): the result is read as a sum of terms (a sum over an
/// index space gives one per element; + and - join, a constant factor keeps them), each term
/// depending on a set of elements as jacobianSparsity reads them; the Hessian is supported on
/// the union of every set times itself. nullopt where the analysis cannot tell (then dense).
std::optional<SparsityPattern> hessianSparsity(const ir::Function& f,
                                               const std::vector<Tensor>& args,
                                               const std::vector<std::string>& wrt);

/// Every entry of a rows x cols matrix: the pattern where none can be read off the IR.
SparsityPattern densePattern(int64_t rows, int64_t cols);

/// The dense row-major matrix of a pattern and its values (zeros elsewhere).
std::vector<double> toDense(const SparsityPattern& p, const std::vector<double>& values);

/// Greedy colouring of the columns: two columns that share a row get different colours.
/// Returns each column's colour; `colours` receives how many there are.
std::vector<int64_t> colourColumns(const SparsityPattern& p, int64_t* colours);

/// Throws std::invalid_argument where p is not CSR of its rows and columns: checkRowStarts,
/// row offsets from 0 to its nonzeros, never decreasing; checkPattern, that and every column
/// index one of its columns.
void checkRowStarts(const SparsityPattern& p);
void checkPattern(const SparsityPattern& p);

struct SparseJacobian {
  SparsityPattern pattern;
  std::vector<double> values;  // per nonzero of the pattern
  std::vector<Tensor> value;   // f's results
  std::vector<int64_t> colour; // per column: its colour
  int64_t colours = 0;         // column colours: a JVP direction each
  int64_t calls = 0;           // compiled calls: the colours, batch at a time
};

/// The nonzeros of f's Jacobian (with `hessian`, of its Hessian; jvpFn as sparseJacobian's)
/// at args, for pattern p and colouring `colour` (a colour per column), into `values` (resized
/// to p.nonzeros(), every one written: its storage is reused), and the first call's leading
/// results (f's results; an HVP's gradients after them) into value when not null. work: the
/// tangents and results kept from an earlier call (null: none). Throws checkPattern's error
/// where p is not CSR of its size (found before anything outside it is read). Returns the calls it
/// took, or -1 where `colour` is not a colouring of p (an entry out of range, or two columns of a
/// row with one colour: found while the values are read, which are then not all right).
int64_t fillSparse(const ir::Function& f, const std::vector<std::string>& wrt,
                   const std::vector<Tensor>& args, const SparsityPattern& p,
                   const std::vector<int64_t>& colour, const Directional& jvpFn, bool hessian,
                   std::vector<double>& values, std::vector<Tensor>* value,
                   DirectionWork* work = nullptr);

/// The Jacobian in the pattern's CSR form, one JVP direction per colour (jvpFn runs jvp(f,
/// wrt[, batch])); with `hessian`, the Hessian, one HVP direction per colour (jvpFn runs
/// hvp(f's gradient, wrt[, batch])). colouring: the caller's (to pick the batch), computed
/// here when null or not one of the pattern.
SparseJacobian sparseJacobian(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, SparsityPattern pattern,
                              const Directional& jvpFn, bool hessian = false,
                              const std::vector<int64_t>* colouring = nullptr);

} // namespace slope
