// Appends Tensor IR to a function: the one way passes create instructions.
#pragma once

#include "compiler/ir/ir.hpp"

#include <functional>

namespace slope::ir {

class Builder {
public:
  explicit Builder(Function& f) : f_(f) { stack_.push_back(&f.body); }
  Function& function() { return f_; }
  const Type& type(int v) const { return f_.types[v]; }

  /// Where instructions made without a location of their own come from (the checker sets the
  /// statement being lowered): a run-time error in them (a buffer too large, a conversion)
  /// then points at that statement rather than at 1:1.
  SrcRange defaultLoc;

  /// Appends an instruction with a result of type t; returns the result id.
  int emit(Instr i, const Type& t);
  /// Appends an instruction without a result (buf.add, for).
  void emitEffect(Instr i);

  int constant(DType t, double v);
  int constInt(int64_t v);
  int constBool(bool v);
  int size(const Poly& p);
  /// Elementwise ops on scalars; the result dtype follows the op (comparisons give bool).
  int unary(Op op, int a, SrcRange loc = {});
  int cast(int a, DType to, SrcRange loc = {});
  int binary(Op op, int a, int b, SrcRange loc = {});
  int select(int c, int a, int b);
  int load(int tensor, std::vector<int> idx, const std::string& name = {}, SrcRange loc = {},
           bool checked = false);
  /// A fresh zero tensor; filledWhole: one whose every element is stored before any is read
  /// (ival kFilledWhole: a backend need not write the zeros).
  int bufZeros(const Type& t, bool filledWhole = false);
  void bufAdd(int buf, std::vector<int> idx, int value);

  using BodyFn = std::function<int(const std::vector<int>& idx)>;
  /// A region op over `extents` (Comp, reductions): body(idx) emits the body and returns its
  /// yield. A Comp's type is extents ++ []: the body yields a scalar.
  int region(Op op, const std::vector<Poly>& extents, const Type& t, const BodyFn& body,
             SrcRange loc = {});
  /// `for` over extents; body(idx) emits effects and returns -1.
  void forLoop(const std::vector<Poly>& extents, const BodyFn& body);
  /// if c { then() } else { els() }, each returning the value to yield.
  int ifElse(int c, const Type& t, const std::function<int()>& then,
             const std::function<int()>& els);

  /// if c { then() } else { els() } for effects only (the adjoint of an if).
  void ifEffect(int c, const std::function<void()>& then, const std::function<void()>& els);

  /// The row-major position of index values idx in a space of extents ext, and back.
  int linearIndex(const std::vector<int>& idx, const std::vector<Poly>& ext);
  std::vector<int> unflatten(int lin, const std::vector<Poly>& ext);

  /// The block being appended to, for passes that splice instructions themselves.
  Block& current() { return *stack_.back(); }

  /// Builds a block without appending it anywhere (used for region bodies).
  Block buildBlock(const std::vector<int>& args, const std::function<int()>& body);

  /// Appends a copy of `from`'s body (an inlined call at the IR level: the derivatives the
  /// language calls, LANGUAGE.md v3). `args` stand for from's parameters. Every type, extent
  /// and size is rewritten by `sizes` (from's size names in this function's terms); the size
  /// names from's body binds itself (size.def) get `suffix`, so two copies do not collide.
  /// `tag` renumbers var writes (buf.store's positive ival), `keepProofs` false makes every
  /// load check its subscripts at run time (the proofs from's entry checks gave do not carry
  /// over). Returns the values from's body yields.
  std::vector<int> splice(const Function& from, const std::vector<int>& args,
                          std::map<std::string, Poly> sizes, const std::string& suffix,
                          const std::function<int64_t(int64_t)>& tag, bool keepProofs);

private:
  Function& f_;
  std::vector<Block*> stack_;
};

} // namespace slope::ir
