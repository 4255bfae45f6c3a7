#include "compiler/sparsity.hpp"

#include "compiler/eval/interp.hpp"
#include "compiler/simplify/simplify.hpp"

#include <algorithm>
#include <climits>
#include <map>
#include <unordered_map>

namespace slope {
namespace {

using ir::Block;
using ir::Instr;
using ir::Op;
using Set = std::vector<int64_t>; // column indices, sorted, unique

void unite(Set& a, const Set& b) {
  if (b.empty()) return;
  if (a.empty()) {
    a = b;
    return;
  }
  Set out;
  out.reserve(a.size() + b.size());
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  a.swap(out);
}

struct Unsupported {};

bool writesMemory(const Instr& in) {
  bool w = in.op == Op::For || in.op == Op::BufStore || in.op == Op::BufAdd;
  for (const Block& r : in.regions)
    ir::forEachInstr(r, [&](const Instr& i) {
      w = w || i.op == Op::For || i.op == Op::BufStore || i.op == Op::BufAdd || i.op == Op::SizeDef;
    });
  return w;
}

/// Calls fn(v) for every value instruction `in` uses, inside its regions too.
template <class Fn> void forEachUse(const Instr& in, Fn&& fn) {
  for (int a : in.args)
    fn(a);
  for (const Block& r : in.regions) {
    for (const Instr& i : r.body)
      forEachUse(i, fn);
    for (int y : r.yields)
      fn(y);
  }
}

/// Follows f element by element (see jacobianSparsity). Integer values are computed exactly
/// (kUnknown where they come from floats); a float value is the set of columns it may depend on.
class Analysis {
public:
  static constexpr int64_t kUnknown = INT64_MIN;

  Analysis(const ir::Function& f, const std::vector<Tensor>& args,
           const std::vector<std::string>& wrt)
      : f_(f), args_(args) {
    sizes_ = bindSizes(f, args);
    f.deriveSizes(sizes_);
    size_t n = f.types.size();
    def_.assign(n, nullptr);
    top_.assign(n, 0);
    param_.assign(n, -1);
    for (size_t k = 0; k < f.params.size(); ++k) {
      param_[f.params[k]] = static_cast<int>(k);
      bool w = std::find(wrt.begin(), wrt.end(), f.paramNames[k]) != wrt.end() &&
               isFloat(f.paramTypes[k].dtype);
      base_.push_back(w ? cols_ : -1);
      if (w) cols_ += args[k].numel();
    }
    followable_.assign(n, 0);
    for (const Instr& in : f.body.body) {
      if (in.result >= 0) {
        top_[in.result] = 1;
        // A top-level comprehension that writes no memory is followed element by element.
        followable_[in.result] = in.op == Op::Comp && !writesMemory(in);
      }
      index(in);
    }
    coarse();
  }

  int64_t cols() const { return cols_; }

  /// Each row's columns, result after result.
  std::vector<Set> rows() {
    std::vector<Set> out;
    for (int y : f_.body.yields) {
      if (!isFloat(f_.types[y].dtype)) continue;
      int64_t n = numel(f_.types[y]);
      for (int64_t e = 0; e < n; ++e)
        out.push_back(tensorElement(y, e));
    }
    return out;
  }

  /// The terms a scalar value is a sum of, each as the set of columns it may depend on: its
  /// Hessian is supported on the union of every term's set times itself. A sum over an index
  /// space gives a term per element; + and - join the terms of both sides; a scaling by
  /// something no parameter reaches keeps them; anything else is one term.
  std::vector<Set> terms(int v) {
    auto whole = [&] { return std::vector<Set>{deps(v)}; };
    if (param_[v] >= 0 || !top_[v]) return whole();
    const Instr& in = *def_[v];
    auto constant = [&](int a) { return deps(a).empty(); };
    switch (in.op) {
    case Op::ReduceSum: {
      if (writesMemory(in)) return whole();
      const Block& body = in.regions[0];
      int64_t total = 1;
      for (const Poly& p : in.extents) {
        auto e = p.eval(sizes_);
        if (!e || *e < 0) throw Unsupported{};
        total *= *e;
      }
      std::vector<Set> out;
      for (int64_t e = 0; e < total; ++e) {
        bindIndex(body, in.extents, e);
        block(body);
        out.push_back(deps(body.yields[0]));
      }
      return out;
    }
    case Op::Add:
    case Op::Sub: {
      std::vector<Set> a = terms(in.args[0]), b = terms(in.args[1]);
      a.insert(a.end(), b.begin(), b.end());
      return a;
    }
    case Op::Neg: return terms(in.args[0]);
    case Op::Mul:
      if (constant(in.args[0])) return terms(in.args[1]);
      if (constant(in.args[1])) return terms(in.args[0]);
      return whole();
    case Op::Div:
      if (constant(in.args[1])) return terms(in.args[0]);
      return whole();
    default: return whole();
    }
  }
  int scalarResult() const {
    const auto& ys = f_.body.yields;
    if (ys.size() != 1 || !isFloat(f_.types[ys[0]].dtype) || f_.types[ys[0]].rank() != 0)
      throw Unsupported{};
    return ys[0];
  }

private:
  void index(const Instr& in) {
    if (in.result >= 0) def_[in.result] = &in;
    for (const Block& r : in.regions)
      for (const Instr& i : r.body)
        index(i);
  }

  int64_t numel(const ir::Type& t) const {
    int64_t n = 1;
    for (const Poly& p : t.shape) {
      auto v = p.eval(sizes_);
      if (!v) throw Unsupported{};
      n *= *v;
    }
    return n;
  }
  std::vector<int64_t> shapeOf(const ir::Type& t) const {
    std::vector<int64_t> s;
    for (const Poly& p : t.shape) {
      auto v = p.eval(sizes_);
      if (!v) throw Unsupported{};
      s.push_back(*v);
    }
    return s;
  }

  Set paramColumns(int k) const {
    Set s;
    if (base_[static_cast<size_t>(k)] < 0) return s;
    for (int64_t i = 0; i < args_[static_cast<size_t>(k)].numel(); ++i)
      s.push_back(base_[static_cast<size_t>(k)] + i);
    return s;
  }

  /// What a top-level value may depend on as a whole: everything its instruction reads, and
  /// for a buffer, everything stored into it (a fixpoint: loops store back into what they read).
  void coarse() {
    for (size_t k = 0; k < f_.params.size(); ++k)
      coarse_[f_.params[k]] = paramColumns(static_cast<int>(k));
    for (bool changed = true; changed;) {
      changed = false;
      for (const Instr& in : f_.body.body) {
        Set d;
        forEachUse(in, [&](int u) {
          if (top_[u] || param_[u] >= 0) unite(d, coarse_[u]);
        });
        auto grow = [&](int v) {
          Set& s = coarse_[v];
          size_t before = s.size();
          unite(s, d);
          changed = changed || s.size() != before;
        };
        if (in.result >= 0) grow(in.result);
        if ((in.op == Op::BufStore || in.op == Op::BufAdd) && top_[in.args[0]]) grow(in.args[0]);
        for (const Block& r : in.regions)
          ir::forEachInstr(r, [&](const Instr& i) {
            if ((i.op == Op::BufStore || i.op == Op::BufAdd) && top_[i.args[0]]) grow(i.args[0]);
          });
      }
    }
  }

  /// Element e (row-major) of tensor value t, as a set of columns.
  Set tensorElement(int t, int64_t e) {
    if (param_[t] >= 0) {
      int k = param_[t];
      return base_[static_cast<size_t>(k)] < 0 ? Set{} : Set{base_[static_cast<size_t>(k)] + e};
    }
    auto lt = local_.find(t);
    if (lt != local_.end()) return lt->second.at(static_cast<size_t>(e));
    if (followable_[t]) {
      auto key = std::make_pair(t, e);
      auto m = memo_.find(key);
      if (m != memo_.end()) return m->second;
      const Instr& c = *def_[t];
      const Block& body = c.regions[0];
      bindIndex(body, c.extents, e);
      block(body);
      Set s = deps(body.yields[0]);
      memo_[key] = s;
      return s;
    }
    if (top_[t]) return coarse_[t];
    throw Unsupported{};
  }

  /// Element e of an integer tensor: a parameter's, or a top-level comprehension's computed
  /// (the corners of the triangles a hand's points lie on).
  int64_t intElement(int t, int64_t e) {
    if (param_[t] >= 0) return args_[static_cast<size_t>(param_[t])].getI(e);
    if (!followable_[t]) throw Unsupported{};
    auto key = std::make_pair(t, e);
    auto m = intMemo_.find(key);
    if (m != intMemo_.end()) return m->second;
    const Instr& c = *def_[t];
    const Block& body = c.regions[0];
    bindIndex(body, c.extents, e);
    block(body);
    int64_t v = knownInt(body.yields[0]);
    intMemo_[key] = v;
    return v;
  }
  /// Binds a region's index values to the row-major position e of its index space.
  void bindIndex(const Block& body, const std::vector<Poly>& extents, int64_t e) {
    for (size_t k = extents.size(); k-- > 0;) {
      auto v = extents[k].eval(sizes_);
      if (!v || *v <= 0) throw Unsupported{};
      iv_[body.args[k]] = e % *v;
      e /= *v;
    }
  }

  int64_t intOf(int v) {
    auto it = iv_.find(v);
    if (it != iv_.end()) return it->second;
    if (param_[v] >= 0 && f_.types[v].rank() == 0)
      return args_[static_cast<size_t>(param_[v])].getI(0);
    if (top_[v]) {
      instr(*def_[v]);
      it = iv_.find(v);
      if (it != iv_.end()) return it->second;
    }
    throw Unsupported{};
  }
  int64_t knownInt(int v) {
    int64_t x = intOf(v);
    if (x == kUnknown) throw Unsupported{};
    return x;
  }

  Set deps(int v) {
    auto it = fd_.find(v);
    if (it != fd_.end()) return it->second;
    if (param_[v] >= 0) return paramColumns(param_[v]);
    if (top_[v]) {
      if (f_.types[v].rank() == 0 && !writesMemory(*def_[v]) &&
          ir::opKind(def_[v]->op) != ir::OpKind::Region) {
        instr(*def_[v]);
        return fd_.at(v);
      }
      return coarse_[v];
    }
    throw Unsupported{};
  }

  void block(const Block& b) {
    for (const Instr& in : b.body)
      instr(in);
  }

  void instr(const Instr& in) {
    const int r = in.result;
    if (r < 0) throw Unsupported{}; // effects: a loop, a store
    const ir::Type& t = f_.types[r];
    const bool fl = isFloat(t.dtype);
    switch (ir::opKind(in.op)) {
    case ir::OpKind::Leaf:
      if (in.op == Op::Const) {
        if (fl)
          fd_[r] = {};
        else
          iv_[r] = in.ival;
      } else if (in.op == Op::Size) {
        auto v = in.poly.eval(sizes_);
        if (!v) throw Unsupported{};
        iv_[r] = *v;
      } else {
        throw Unsupported{};
      }
      return;
    case ir::OpKind::Unary:
    case ir::OpKind::Binary:
    case ir::OpKind::Ternary: {
      if (fl) {
        Set d;
        for (int a : in.args)
          if (isFloat(f_.types[a].dtype)) unite(d, deps(a));
        fd_[r] = std::move(d);
        return;
      }
      // An integer or bool: exact from exact operands, unknown from floats.
      std::vector<Scalar> ops;
      bool unknown = false;
      for (int a : in.args) {
        Scalar s;
        if (isFloat(f_.types[a].dtype)) {
          unknown = true;
        } else {
          s.i = intOf(a);
          unknown = unknown || s.i == kUnknown;
        }
        ops.push_back(s);
      }
      if (unknown) {
        iv_[r] = kUnknown;
        return;
      }
      Scalar out;
      if (!foldConstant(f_, in, ops, out)) throw Unsupported{};
      iv_[r] = out.i;
      return;
    }
    case ir::OpKind::Memory: {
      if (in.op == Op::Load) {
        int tv = in.args[0];
        std::vector<int64_t> shape = shapeOf(f_.types[tv]);
        int64_t e = 0;
        for (size_t k = 0; k + 1 < in.args.size(); ++k) {
          int64_t ix = knownInt(in.args[k + 1]);
          if (ix < 0 || ix >= shape[k]) throw Unsupported{}; // (the call itself would fail)
          e = e * shape[k] + ix;
        }
        if (fl) {
          fd_[r] = tensorElement(tv, e);
        } else {
          iv_[r] = intElement(tv, e);
        }
        return;
      }
      if (in.op == Op::Stack && fl) {
        std::vector<Set> el;
        for (int a : in.args)
          el.push_back(deps(a));
        local_[r] = std::move(el);
        return;
      }
      throw Unsupported{};
    }
    case ir::OpKind::Region: break;
    }
    if (writesMemory(in) || !fl) throw Unsupported{};
    if (in.op == Op::Custom) {
      // A user's rule may read any element of any operand: each element of the result depends
      // on all of them (exact for a scalar call, the usual case; never too few).
      Set d;
      for (int a : in.args) {
        if (f_.types[a].rank() == 0) {
          unite(d, deps(a));
          continue;
        }
        for (int64_t e = 0; e < numel(f_.types[a]); ++e)
          unite(d, tensorElement(a, e));
      }
      if (t.rank() == 0)
        fd_[r] = std::move(d);
      else
        local_[r] = std::vector<Set>(static_cast<size_t>(numel(t)), d);
      return;
    }
    if (in.op == Op::If) {
      int64_t c = intOf(in.args[0]);
      std::vector<const Block*> taken;
      if (c == kUnknown) {
        taken = {&in.regions[0], &in.regions[1]};
      } else {
        taken = {&in.regions[c ? 0 : 1]};
      }
      if (t.rank() == 0) {
        Set d;
        for (const Block* b : taken) {
          block(*b);
          unite(d, deps(b->yields[0]));
        }
        fd_[r] = std::move(d);
      } else {
        std::vector<Set> el(static_cast<size_t>(numel(t)));
        for (const Block* b : taken) {
          block(*b);
          for (size_t e = 0; e < el.size(); ++e)
            unite(el[e], tensorElement(b->yields[0], static_cast<int64_t>(e)));
        }
        local_[r] = std::move(el);
      }
      return;
    }
    // A comprehension (element by element) or a reduction (the union of its elements).
    const Block& body = in.regions[0];
    int64_t total = 1;
    for (const Poly& p : in.extents) {
      auto v = p.eval(sizes_);
      if (!v || *v < 0) throw Unsupported{};
      total *= *v;
    }
    if (in.op == Op::ArgMax || in.op == Op::ArgMin) throw Unsupported{};
    std::vector<Set> el;
    Set all;
    for (int64_t e = 0; e < total; ++e) {
      bindIndex(body, in.extents, e);
      block(body);
      Set d = deps(body.yields[0]);
      if (in.op == Op::Comp)
        el.push_back(std::move(d));
      else
        unite(all, d);
    }
    if (in.op == Op::Comp)
      local_[r] = std::move(el);
    else
      fd_[r] = std::move(all);
  }

  const ir::Function& f_;
  const std::vector<Tensor>& args_;
  std::map<std::string, int64_t> sizes_;
  std::vector<const Instr*> def_;
  std::vector<char> top_;
  std::vector<char> followable_; // top-level comprehensions without writes
  std::vector<int> param_;
  std::vector<int64_t> base_; // first column of each parameter (-1: not differentiated)
  int64_t cols_ = 0;
  std::map<int, Set> coarse_;
  std::unordered_map<int, int64_t> iv_;
  std::unordered_map<int, Set> fd_;
  std::unordered_map<int, std::vector<Set>> local_; // tensors made inside a body
  std::map<std::pair<int, int64_t>, Set> memo_;     // elements of top-level comprehensions
  std::map<std::pair<int, int64_t>, int64_t> intMemo_;
};

SparsityPattern patternOf(const std::vector<Set>& rows, int64_t cols) {
  SparsityPattern p;
  p.rows = static_cast<int64_t>(rows.size());
  p.cols = cols;
  p.rowStart.push_back(0);
  for (const Set& r : rows) {
    p.colIndex.insert(p.colIndex.end(), r.begin(), r.end());
    p.rowStart.push_back(static_cast<int64_t>(p.colIndex.size()));
  }
  return p;
}

} // namespace

SparsityPattern densePattern(int64_t rows, int64_t cols) {
  SparsityPattern p;
  p.rows = rows;
  p.cols = cols;
  p.rowStart.push_back(0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      p.colIndex.push_back(c);
    p.rowStart.push_back(static_cast<int64_t>(p.colIndex.size()));
  }
  return p;
}

std::vector<double> toDense(const SparsityPattern& p, const std::vector<double>& values) {
  std::vector<double> d(static_cast<size_t>(p.rows * p.cols), 0.0);
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t z = p.rowStart[static_cast<size_t>(r)]; z < p.rowStart[static_cast<size_t>(r) + 1];
         ++z)
      d[static_cast<size_t>(r * p.cols + p.colIndex[static_cast<size_t>(z)])] =
          values[static_cast<size_t>(z)];
  return d;
}

std::optional<SparsityPattern> jacobianSparsity(const ir::Function& fIn,
                                                const std::vector<Tensor>& args,
                                                const std::vector<std::string>& wrt) {
  ir::Function f = fIn;
  copyBufferResults(f); // a var returned in place is read through a comprehension
  try {
    Analysis a(f, args, wrt);
    return patternOf(a.rows(), a.cols());
  } catch (const Unsupported&) {
    return std::nullopt;
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

std::optional<SparsityPattern> hessianSparsity(const ir::Function& fIn,
                                               const std::vector<Tensor>& args,
                                               const std::vector<std::string>& wrt) {
  ir::Function f = fIn;
  copyBufferResults(f);
  try {
    Analysis a(f, args, wrt);
    std::vector<Set> terms = a.terms(a.scalarResult());
    // Row c: every column that shares a term with c.
    std::vector<Set> rows(static_cast<size_t>(a.cols()));
    for (const Set& t : terms)
      for (int64_t c : t)
        unite(rows[static_cast<size_t>(c)], t);
    return patternOf(rows, a.cols());
  } catch (const Unsupported&) {
    return std::nullopt;
  } catch (const std::out_of_range&) {
    return std::nullopt;
  }
}

std::vector<int64_t> colourColumns(const SparsityPattern& p, int64_t* colours) {
  // Column -> rows, then each column takes the smallest colour no column of its rows has.
  std::vector<std::vector<int64_t>> colRows(static_cast<size_t>(p.cols));
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t k = p.rowStart[static_cast<size_t>(r)]; k < p.rowStart[static_cast<size_t>(r) + 1];
         ++k)
      colRows[static_cast<size_t>(p.colIndex[static_cast<size_t>(k)])].push_back(r);
  std::vector<int64_t> colour(static_cast<size_t>(p.cols), -1);
  std::vector<int64_t> mark; // mark[c] == column being coloured: colour c is taken
  int64_t n = 0;
  for (int64_t c = 0; c < p.cols; ++c) {
    for (int64_t r : colRows[static_cast<size_t>(c)])
      for (int64_t k = p.rowStart[static_cast<size_t>(r)];
           k < p.rowStart[static_cast<size_t>(r) + 1]; ++k) {
        int64_t other = colour[static_cast<size_t>(p.colIndex[static_cast<size_t>(k)])];
        if (other >= 0) mark[static_cast<size_t>(other)] = c;
      }
    int64_t k = 0;
    while (k < n && mark[static_cast<size_t>(k)] == c)
      ++k;
    if (k == n) {
      mark.push_back(-1);
      ++n;
    }
    colour[static_cast<size_t>(c)] = k;
  }
  if (colours) *colours = n;
  return colour;
}

void checkRowStarts(const SparsityPattern& p) {
  if (p.rows < 0 || p.cols < 0 || p.rowStart.size() != static_cast<size_t>(p.rows) + 1 ||
      p.rowStart.front() != 0 || p.rowStart.back() != p.nonzeros())
    throw std::invalid_argument("the pattern's row_start is not " + std::to_string(p.rows) +
                                " + 1 offsets from 0 to its " + std::to_string(p.nonzeros()) +
                                " nonzeros");
  for (int64_t r = 0; r < p.rows; ++r)
    if (p.rowStart[static_cast<size_t>(r)] > p.rowStart[static_cast<size_t>(r) + 1])
      throw std::invalid_argument("the pattern's row_start decreases after row " +
                                  std::to_string(r));
}

void checkPattern(const SparsityPattern& p) {
  checkRowStarts(p);
  // One unsigned comparison per entry, no early exit: a loop LLVM and GCC vectorise.
  bool outside = false;
  for (int64_t c : p.colIndex)
    outside |= static_cast<uint64_t>(c) >= static_cast<uint64_t>(p.cols);
  if (outside)
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t z = p.rowStart[static_cast<size_t>(r)];
           z < p.rowStart[static_cast<size_t>(r) + 1]; ++z)
        if (static_cast<uint64_t>(p.colIndex[static_cast<size_t>(z)]) >=
            static_cast<uint64_t>(p.cols))
          throw std::invalid_argument("the pattern's row " + std::to_string(r) + " has column " +
                                      std::to_string(p.colIndex[static_cast<size_t>(z)]) +
                                      ", not one of its " + std::to_string(p.cols) + " columns");
}

namespace {

/// Rows r0 .. r1 - 1 of p from a call's tangent results: row r's K lanes at
/// lanes + (r - r0) * K, direction d0 + j in lane j. Each nonzero takes its column's lane,
/// when its colour is one of the call's. Sets `twice` where a row takes a lane twice (two of
/// its columns share a colour: not a colouring of p) and `outside` where a column index is
/// not one of p's columns (its colour is then not read). The branches are the loops', the
/// colour's test (which a call with every colour always passes) and the column's (never
/// taken in a pattern that is one).
void readRows(const SparsityPattern& p, const int64_t* colour, int64_t d0, int64_t K, int64_t r0,
              int64_t r1, const double* lanes, double* values, bool& twice, bool& outside) {
  const int64_t* rowStart = p.rowStart.data();
  const int64_t* colIndex = p.colIndex.data();
  const auto cols = static_cast<uint64_t>(p.cols);
  uint64_t again = 0;
  for (int64_t r = r0; r < r1; ++r, lanes += K) {
    uint64_t taken = 0;
    for (int64_t z = rowStart[r]; z < rowStart[r + 1]; ++z) {
      const auto c = static_cast<uint64_t>(colIndex[z]);
      if (c >= cols) {
        outside = true;
        continue;
      }
      const auto j = static_cast<uint64_t>(colour[c] - d0);
      if (j >= static_cast<uint64_t>(K)) continue;
      const uint64_t bit = uint64_t{1} << j;
      again |= taken & bit;
      taken |= bit;
      values[z] = lanes[j];
    }
  }
  twice = twice || again != 0;
}

} // namespace

int64_t fillSparse(const ir::Function& f, const std::vector<std::string>& wrt,
                   const std::vector<Tensor>& args, const SparsityPattern& p,
                   const std::vector<int64_t>& colour, const Directional& jvpFn, bool hessian,
                   std::vector<double>& values, std::vector<Tensor>* value, DirectionWork* work) {
  checkRowStarts(p); // (the column indices are checked as the values are read)
  if (colour.size() != static_cast<size_t>(p.cols)) return -1;
  int64_t colours = 0;
  for (int64_t k : colour) {
    if (k < 0 || k >= std::max<int64_t>(p.cols, 1)) return -1;
    colours = std::max(colours, k + 1);
  }
  const std::vector<size_t> ps = wrtParams(f, wrt);
  const size_t nres = f.body.yields.size();
  const size_t first = hessian ? nres + ps.size() : nres; // (an HVP's: value, gradients, H v)
  const int64_t K = jvpFn.batch > 0 ? jvpFn.batch : 1;
  if (K > 64) throw std::logic_error("fillSparse: more than 64 directions per call");
  values.resize(static_cast<size_t>(p.nonzeros())); // every one is written below
  // Direction k: 1 at every column of colour k. Row r of J v_k is J[r, c] for the one column c
  // of colour k in row r. A call's tangent results hold row r's lanes side by side (the
  // compressed Jacobian J S, a row per result element, a column per direction), so each
  // nonzero is read from its row's lanes at its column's colour: one pass over the pattern
  // per call, in the order the values are stored. The same pass checks the colouring: a lane
  // taken twice in a row (two of its columns share a colour) makes the result -1.
  std::vector<double> wide; // a result that is not f64, as doubles
  bool twice = false, outside = false;
  const int64_t calls = alongDirectionBatches(
      args, ps, jvpFn, std::max<int64_t>(colours, 1), colour, first, value,
      [&](int64_t d0, const std::vector<Tensor>& out) {
        int64_t r = 0;
        for (size_t q = first; q < out.size() && r < p.rows; ++q) {
          const Tensor& t = out[q];
          const double* lanes = t.data<double>();
          if (t.dtype() != DType::F64) {
            wide.resize(static_cast<size_t>(t.numel()));
            for (int64_t i = 0; i < t.numel(); ++i)
              wide[static_cast<size_t>(i)] = t.getF(i);
            lanes = wide.data();
          }
          const int64_t r1 = std::min(p.rows, r + t.numel() / K);
          readRows(p, colour.data(), d0, K, r, r1, lanes, values.data(), twice, outside);
          r = r1;
        }
        if (outside) checkPattern(p); // throws, saying which row and column
        if (r != p.rows)
          throw std::logic_error("fillSparse: the tangent results have " + std::to_string(r) +
                                 " rows, the pattern " + std::to_string(p.rows));
      },
      work);
  return twice ? -1 : calls;
}

SparseJacobian sparseJacobian(const ir::Function& f, const std::vector<std::string>& wrt,
                              const std::vector<Tensor>& args, SparsityPattern pattern,
                              const Directional& jvpFn, bool hessian,
                              const std::vector<int64_t>* colouring) {
  SparseJacobian J;
  J.pattern = std::move(pattern);
  checkPattern(J.pattern);
  J.colour = colouring ? *colouring : colourColumns(J.pattern, &J.colours);
  J.calls = fillSparse(f, wrt, args, J.pattern, J.colour, jvpFn, hessian, J.values, &J.value);
  if (J.calls < 0) { // the colouring given is not one of this pattern
    J.colour = colourColumns(J.pattern, &J.colours);
    J.calls = fillSparse(f, wrt, args, J.pattern, J.colour, jvpFn, hessian, J.values, &J.value);
  }
  J.colours = 0;
  for (int64_t k : J.colour)
    J.colours = std::max(J.colours, k + 1);
  J.value.resize(f.body.yields.size());
  return J;
}

} // namespace slope
