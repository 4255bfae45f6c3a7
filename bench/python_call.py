#!/usr/bin/env python3
"""The cost of a call from Python into Slope and back (issue 14's target: under 2 us for a
scalar function). Prints the median of 15 rounds of 100,000 calls, per call:
    PYTHONPATH=build/python /usr/bin/python3 bench/python_call.py
"""
import os
import statistics
import sys
import timeit

import numpy as np

import slope

here = os.path.dirname(os.path.abspath(__file__))
m = slope.compile_file(os.path.join(here, "..", "samples", "autograd_intro.slope"))
quadratic = m.function("quadratic")
quadratic_grad = m.gradient("quadratic")
bowl_grad = m.gradient("bowl")
x = np.array([[1.0, 2.0], [3.0, 4.0]])
cases = [
    ("quadratic(2.0)", lambda: quadratic(2.0)),
    ("gradient quadratic(2.0) -> (value, derivative)", lambda: quadratic_grad(2.0)),
    ("gradient bowl(x), x 2x2 ndarray -> (value, array)", lambda: bowl_grad(x)),
    ("for scale: a Python function x*x*2 + 3x + 1", lambda: (lambda v: 2 * v * v + 3 * v + 1)(2.0)),
]
n = 100_000
print(f"Python {sys.version.split()[0]}, NumPy {np.__version__}; median of 15 x {n} calls")
for label, fn in cases:
    times = timeit.repeat(fn, number=n, repeat=15)
    print(f"{statistics.median(times) / n * 1e9:8.0f} ns  {label}")
