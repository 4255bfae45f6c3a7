"""Slope from Python: compile .slope functions, call them and their gradients on NumPy arrays.

    import numpy as np, slope
    m = slope.compile_file("samples/autograd_intro.slope")
    m.function("quadratic")(2.0)                  # 15.0
    value, dx = m.gradient("quadratic")(2.0)      # 15.0, 11.0
    value, g = m.gradient("bowl")(np.array([[1.0, 2], [3, 4]]))   # 54.0, [[4, 6], [8, 10]]

Arguments: Python numbers, and NumPy arrays. A C-contiguous array of the parameter's dtype is
used in place (no copy); any other array is copied to the parameter's dtype with a
slope.CopyWarning; lists and NumPy scalars are converted silently. Results: a float (or int,
bool) for a scalar, an array for a tensor, a tuple for several. A gradient returns
(value, gradient) with one gradient per differentiated parameter (a tuple when there are
several); a VJP (`m.vjp`, for functions that do not return one scalar) takes the output
cotangents after the arguments and returns the parameter cotangents. Compile errors raise
slope.CompileError with the located diagnostic; errors in a call raise slope.CallError. The GIL
is released while compiled code runs. docs/python.md has more; slope.torch wraps a function
for PyTorch's autograd.
"""
from ._slope import CallError, CompileError, CopyWarning, Function, Gradient, Module
from . import _slope

__all__ = ["compile", "compile_file", "check", "Module", "Function", "Gradient",
           "CompileError", "CallError", "CopyWarning"]


def compile(source, name="<string>", *, threads=0, checkpoint=None, opt_level=2,
            interpret=False, tiered=True):
    """Compiles Slope source text into a Module. threads: per parallel loop (0: every core);
    checkpoint: None, an int N (keep the state every N iterations) or "sqrt"; interpret: run on
    the reference evaluator instead of the JIT; tiered: functions start on code compiled at
    level 0 and switch to opt_level's once their calls have taken about as long as that
    compile (the same results; f.optimize() switches now, f.optimized says which runs)."""
    return _slope.compile_string(source, name, threads, checkpoint, opt_level, interpret,
                                 tiered)


def compile_file(path, *, threads=0, checkpoint=None, opt_level=2, interpret=False,
                 tiered=True):
    """Compiles a .slope file into a Module (options as for compile)."""
    return _slope.compile_file(str(path), threads, checkpoint, opt_level, interpret, tiered)


def check(module, name, *args, rtol=None, atol=None):
    """Compares the gradient of `name` at args with central finite differences (what
    `slopec check` does) and returns the report: {"passed", "not_finite", "params": [{"name",
    "max_abs_err", "max_rel_err", "passed", "elements", "checked"}]}. rtol and atol default to
    the dtype's (f64: 1e-5 and 1e-7; f32: 2e-3 and 1e-4)."""
    return _slope.check(module, name, *args, rtol=-1.0 if rtol is None else rtol,
                        atol=-1.0 if atol is None else atol)
