#!/usr/bin/env python3
"""Writes the Slope programs that measure how compile time scales with program size.

    bench/gen_compile_cases.py KIND N > FILE.slope

KIND is one of
  params  a function of N scalar parameters (x0..x{N-1}), a sum of products of neighbours
  terms   one expression of N terms over two scalars
  chain   N `let`s, each computed from the one before
  nested  one expression nested N deep (sin(x * 0.5 + sin(...)))
  comps   N chained comprehensions over a vector
  calls   a call tree N deep where each function calls the next twice
  errors  a file with N undefined names (N compile errors)
  rank    a tensor parameter of rank N
The matching C++ generators are in bench/compile_time.cpp; this script is for slopec.
"""
import sys


def params(n):
    args = ", ".join(f"x{i}: f64" for i in range(n))
    terms = " + ".join(f"x{i} * x{(i + 1) % n}" for i in range(n))
    return f"fn f({args}) -> f64 {{\n    {terms}\n}}\n"


def terms(n):
    ops = ["x * y", "sin(x)", "x * x", "y * 0.5", "exp(y) * x"]
    body = " + ".join(f"{ops[i % len(ops)]} * {i % 7 + 1}" for i in range(n))
    return f"fn f(x: f64, y: f64) -> f64 {{\n    {body}\n}}\n"


def chain(n):
    lines = ["fn f(x: f64) -> f64 {", "    let a0 = x;"]
    for i in range(1, n + 1):
        lines.append(f"    let a{i} = a{i - 1} * 0.5 + sin(a{i - 1}) * x;")
    lines.append(f"    a{n}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def nested(n):
    e = "x"
    for _ in range(n):
        e = f"sin(x * 0.5 + {e})"
    return f"fn f(x: f64) -> f64 {{\n    {e}\n}}\n"


def comps(n):
    lines = ["fn f(x: f64[n]) -> f64 {", "    let y0[i] = x[i];"]
    for k in range(1, n + 1):
        lines.append(f"    let y{k}[i] = y{k - 1}[i] * 0.5 + sin(x[i]);")
    lines.append(f"    sum(y{n})")
    lines.append("}")
    return "\n".join(lines) + "\n"


def calls(n):
    out = ["fn f0(x: f64) -> f64 {\n    sin(x)\n}"]
    for k in range(1, n + 1):
        out.append(f"fn f{k}(x: f64) -> f64 {{\n    f{k - 1}(x) + f{k - 1}(x * 0.5)\n}}")
    # The entry point comes first: slopec takes the first function by default.
    return "\n".join([out[-1]] + out[:-1]) + "\n"


def errors(n):
    lines = ["fn f(x: f64) -> f64 {"]
    for i in range(n):
        lines.append(f"    let a{i} = undefined{i} + x;")
    lines.append("    x")
    lines.append("}")
    return "\n".join(lines) + "\n"


def rank(n):
    dims = ", ".join(f"n{i}" for i in range(n))
    return f"fn f(x: f64[{dims}]) -> f64 {{\n    sum(x * x)\n}}\n"


KINDS = dict(params=params, terms=terms, chain=chain, nested=nested, comps=comps, calls=calls,
             errors=errors, rank=rank)

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        sys.exit(__doc__)
    sys.stdout.write(KINDS[sys.argv[1]](int(sys.argv[2])))
