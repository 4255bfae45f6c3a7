#include "compiler/ir/builder.hpp"

#include <stdexcept>

namespace slope::ir {

int Builder::emit(Instr i, const Type& t) {
  if (i.loc.begin == 0 && i.loc.end == 0) i.loc = defaultLoc;
  i.result = f_.newValue(t);
  int r = i.result;
  stack_.back()->body.push_back(std::move(i));
  return r;
}

void Builder::emitEffect(Instr i) {
  if (i.loc.begin == 0 && i.loc.end == 0) i.loc = defaultLoc;
  i.result = -1;
  stack_.back()->body.push_back(std::move(i));
}

int Builder::constant(DType t, double v) {
  Instr i;
  i.op = Op::Const;
  if (isFloat(t))
    i.fval = v;
  else
    i.ival = static_cast<int64_t>(v), i.fval = v;
  return emit(std::move(i), Type{t, {}});
}

int Builder::constInt(int64_t v) {
  Instr i;
  i.op = Op::Const;
  i.ival = v;
  i.fval = static_cast<double>(v);
  return emit(std::move(i), Type{DType::I64, {}});
}

int Builder::constBool(bool v) {
  Instr i;
  i.op = Op::Const;
  i.ival = v;
  i.fval = v;
  return emit(std::move(i), Type{DType::Bool, {}});
}

int Builder::size(const Poly& p) {
  if (auto c = p.constValue()) return constInt(*c);
  Instr i;
  i.op = Op::Size;
  i.poly = p;
  return emit(std::move(i), Type{DType::I64, {}});
}

int Builder::unary(Op op, int a, SrcRange loc) {
  Instr i;
  i.op = op;
  i.args = {a};
  i.loc = loc;
  DType t = op == Op::Not ? DType::Bool : type(a).dtype;
  return emit(std::move(i), Type{t, {}});
}

int Builder::cast(int a, DType to, SrcRange loc) {
  if (type(a).dtype == to) return a;
  Instr i;
  i.op = Op::Cast;
  i.args = {a};
  i.loc = loc; // a conversion to i64 fails at run time on NaN or out of range
  return emit(std::move(i), Type{to, {}});
}

int Builder::binary(Op op, int a, int b, SrcRange loc) {
  Instr i;
  i.op = op;
  i.args = {a, b};
  i.loc = loc;
  DType t = type(a).dtype;
  switch (op) {
  case Op::Lt:
  case Op::Le:
  case Op::Gt:
  case Op::Ge:
  case Op::Eq:
  case Op::Ne:
  case Op::And:
  case Op::Or: t = DType::Bool; break;
  default: break;
  }
  return emit(std::move(i), Type{t, {}});
}

int Builder::select(int c, int a, int b) {
  Instr i;
  i.op = Op::Select;
  i.args = {c, a, b};
  return emit(std::move(i), Type{type(a).dtype, {}});
}

int Builder::load(int tensor, std::vector<int> idx, const std::string& name, SrcRange loc,
                  bool checked) {
  Instr i;
  i.op = Op::Load;
  i.args.push_back(tensor);
  i.args.insert(i.args.end(), idx.begin(), idx.end());
  i.name = name;
  i.loc = loc;
  i.checked = checked;
  const Type& t = type(tensor);
  Type rt{t.dtype,
          std::vector<Poly>(t.shape.begin() + static_cast<long>(idx.size()), t.shape.end())};
  return emit(std::move(i), rt);
}

int Builder::bufZeros(const Type& t, bool filledWhole) {
  Instr i;
  i.op = Op::BufZeros;
  if (filledWhole && t.rank() > 0) i.ival = kFilledWhole;
  return emit(std::move(i), t);
}

void Builder::bufAdd(int buf, std::vector<int> idx, int value) {
  Instr i;
  i.op = Op::BufAdd;
  i.args.push_back(buf);
  i.args.insert(i.args.end(), idx.begin(), idx.end());
  i.args.push_back(value);
  emitEffect(std::move(i));
}

Block Builder::buildBlock(const std::vector<int>& args, const std::function<int()>& body) {
  Block b;
  b.args = args;
  stack_.push_back(&b);
  int y = body();
  stack_.pop_back();
  if (y >= 0) b.yields.push_back(y);
  return b;
}

int Builder::linearIndex(const std::vector<int>& idx, const std::vector<Poly>& ext) {
  int lin = constInt(0);
  for (size_t k = 0; k < idx.size(); ++k)
    lin = binary(Op::Add, binary(Op::Mul, lin, size(ext[k])), idx[k]);
  return lin;
}

std::vector<int> Builder::unflatten(int lin, const std::vector<Poly>& ext) {
  std::vector<int> idx(ext.size());
  for (size_t k = ext.size(); k-- > 0;) {
    int e = size(ext[k]);
    idx[k] = binary(Op::Mod, lin, e);
    lin = binary(Op::Div, lin, e);
  }
  return idx;
}

int Builder::region(Op op, const std::vector<Poly>& extents, const Type& t, const BodyFn& body,
                    SrcRange loc) {
  std::vector<int> idx;
  for (size_t k = 0; k < extents.size(); ++k)
    idx.push_back(f_.newValue(Type{DType::I64, {}}));
  Instr i;
  i.op = op;
  i.extents = extents;
  i.loc = loc;
  i.regions.push_back(buildBlock(idx, [&] { return body(idx); }));
  return emit(std::move(i), t);
}

void Builder::forLoop(const std::vector<Poly>& extents, const BodyFn& body) {
  std::vector<int> idx;
  for (size_t k = 0; k < extents.size(); ++k)
    idx.push_back(f_.newValue(Type{DType::I64, {}}));
  Instr i;
  i.op = Op::For;
  i.extents = extents;
  i.regions.push_back(buildBlock(idx, [&] { return body(idx); }));
  emitEffect(std::move(i));
}

int Builder::ifElse(int c, const Type& t, const std::function<int()>& then,
                    const std::function<int()>& els) {
  Instr i;
  i.op = Op::If;
  i.args = {c};
  i.regions.push_back(buildBlock({}, then));
  i.regions.push_back(buildBlock({}, els));
  return emit(std::move(i), t);
}

void Builder::ifEffect(int c, const std::function<void()>& then, const std::function<void()>& els) {
  Instr i;
  i.op = Op::If;
  i.args = {c};
  i.regions.push_back(buildBlock({}, [&] {
    then();
    return -1;
  }));
  i.regions.push_back(buildBlock({}, [&] {
    els();
    return -1;
  }));
  emitEffect(std::move(i));
}

std::vector<int> Builder::splice(const Function& from, const std::vector<int>& args,
                                 std::map<std::string, Poly> sizes, const std::string& suffix,
                                 const std::function<int64_t(int64_t)>& tag, bool keepProofs) {
  forEachInstr(from.body, [&](const Instr& i) {
    if (i.op == Op::SizeDef) sizes[i.name] = Poly::var(i.name + suffix);
  });
  auto poly = [&](const Poly& p) { return p.substitute(sizes); };
  auto type = [&](int old) {
    Type t = from.types[old];
    for (Poly& d : t.shape)
      d = poly(d);
    return t;
  };
  std::vector<int> map(from.types.size(), -1);
  for (size_t k = 0; k < from.params.size(); ++k)
    map[from.params[k]] = args[k];
  auto get = [&](int old) {
    if (old < 0 || map[old] < 0)
      throw std::logic_error("splice: a value used before it is defined");
    return map[old];
  };
  std::function<Block(const Block&)> copyBlock;
  auto copyInstr = [&](const Instr& i) {
    Instr c = i;
    c.regions.clear();
    for (int& a : c.args)
      a = get(a);
    c.poly = poly(i.poly);
    for (Poly& e : c.extents)
      e = poly(e);
    if (i.op == Op::SizeDef) c.name = i.name + suffix;
    if (i.op == Op::BufStore && i.ival > 0) c.ival = tag(i.ival);
    if (i.op == Op::Load && !keepProofs) c.checked = false;
    for (const Block& r : i.regions)
      c.regions.push_back(copyBlock(r));
    if (i.result >= 0) c.result = map[i.result] = f_.newValue(type(i.result));
    return c;
  };
  copyBlock = [&](const Block& b) {
    Block out;
    for (int a : b.args)
      out.args.push_back(map[a] = f_.newValue(type(a)));
    for (const Instr& i : b.body)
      out.body.push_back(copyInstr(i));
    for (int y : b.yields)
      out.yields.push_back(get(y));
    return out;
  };
  for (const Instr& i : from.body.body) {
    if (i.op == Op::Param) continue;
    stack_.back()->body.push_back(copyInstr(i));
  }
  std::vector<int> out;
  for (int y : from.body.yields)
    out.push_back(get(y));
  return out;
}

} // namespace slope::ir
