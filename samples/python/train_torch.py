#!/usr/bin/env python3
"""A small PyTorch model trained with a loss written in Slope.

The model is torch's own (a two-layer MLP fitting sin(x) from noisy samples with outliers);
its loss is Slope's `cauchy` (robust_loss.slope), called through slope.torch, so autograd runs
through Slope's gradient into the model's parameters. Writes the loss curve as a PNG.

    PYTHONPATH=build/python python3 samples/python/train_torch.py [OUT.png]
"""
import os
import sys

import numpy as np
import torch

import slope
import slope.torch

here = os.path.dirname(os.path.abspath(__file__))
loss_fn = slope.torch.function(slope.compile_file(os.path.join(here, "robust_loss.slope")),
                               "cauchy", wrt=["pred"])

torch.manual_seed(0)
rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-3, 3, 256))
y = np.sin(x) + 0.05 * rng.standard_normal(x.size)
y[rng.choice(x.size, 20, replace=False)] += rng.choice([-3.0, 3.0], 20)  # outliers
X = torch.tensor(x[:, None])
Y = torch.tensor(y)

model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
model.double()
opt = torch.optim.Adam(model.parameters(), lr=0.01)
losses = []
for step in range(600):
    opt.zero_grad()
    loss = loss_fn(model(X).squeeze(1), Y, 0.2)
    loss.backward()
    opt.step()
    losses.append(loss.item())

with torch.no_grad():
    fit = model(X).squeeze(1).numpy()
inliers = np.abs(y - np.sin(x)) < 1
err = np.sqrt(np.mean((fit[inliers] - np.sin(x[inliers])) ** 2))
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps; "
      f"RMS error against sin(x) at the inliers: {err:.3f}")

out = sys.argv[1] if len(sys.argv) > 1 else None
if out:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(losses)
    a.set_xlabel("Adam step")
    a.set_ylabel("Cauchy loss (Slope)")
    a.set_yscale("log")
    a.set_title("training loss")
    b.scatter(x, y, s=6, color="0.6", label="data (20 outliers)")
    b.plot(x, fit, color="C1", label="model")
    b.set_ylim(-4.5, 4.5)
    b.legend(loc="lower right", fontsize=8)
    b.set_title("fit")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print("wrote", out)
