#!/usr/bin/env python3
"""PyTorch's autograd tutorial, redone with Slope from Python.

    PYTHONPATH=build/python python3 samples/python/tutorial.py
"""
import os

import numpy as np

import slope

here = os.path.dirname(os.path.abspath(__file__))
samples = os.path.join(here, "..")

# 1. y = 2x^2 + 3x + 1: its derivative 4x + 3 is 11 at x = 2.
intro = slope.compile_file(os.path.join(samples, "autograd_intro.slope"))
y, dy = intro.gradient("quadratic")(2.0)
print(f"quadratic(2) = {y}, derivative {dy}")  # 15.0, 11.0

# 2. bowl(x) = sum(x^2 + 2x + 1) over a matrix: 54, gradient 2x + 2.
x = np.array([[1.0, 2.0], [3.0, 4.0]])
value, grad = intro.gradient("bowl")(x)
print(f"bowl = {value}\ngradient =\n{grad}")  # 54.0, [[4, 6], [8, 10]]

# 3. Linear regression by gradient descent: the line through (1, 5) and (2, 7) is y = 2x + 3.
line = slope.compile_file(os.path.join(samples, "linear_regression", "loss.slope"))
loss = line.gradient("loss", wrt=["k", "b"])
xs, ys = np.array([1.0, 2.0]), np.array([5.0, 7.0])
k = b = 0.0
for step in range(2000):
    value, (dk, db) = loss(k, b, xs, ys)
    k, b = k - 0.05 * dk, b - 0.05 * db
print(f"k = {k:.4f}, b = {b:.4f}, loss = {value:.2e}")  # k = 2.0000, b = 3.0000

# 4. Slope checks its own gradients against finite differences.
report = slope.check(intro, "bowl", x)
print("check:", "passed" if report["passed"] else "FAILED", report["params"])
