"""slope.torch: Slope functions inside PyTorch's autograd (skipped where torch is absent)."""
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import slope  # noqa: E402
import slope.torch  # noqa: E402


@pytest.fixture
def intro(samples):
    return slope.compile_file(os.path.join(samples, "autograd_intro.slope"))


def test_bowl_backward(intro):
    bowl = slope.torch.function(intro, "bowl")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    y = bowl(x)
    assert y.item() == 54.0
    y.backward()
    assert torch.equal(x.grad, torch.tensor([[4.0, 6.0], [8.0, 10.0]], dtype=torch.float64))


def test_inside_a_larger_graph(intro):
    # d/dx of 3 * bowl(2 x) = 3 * 2 * (2 (2x) + 2) = 24 x + 12, through torch's own ops.
    bowl = slope.torch.function(intro, "bowl")
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (3 * bowl(2 * x)).backward()
    assert torch.allclose(x.grad, 24 * x.detach() + 12)


def test_gradcheck_scalar_and_vjp(intro):
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((3, 2)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(slope.torch.function(intro, "bowl"), (x,))
    A = torch.tensor(rng.standard_normal((3, 4)), dtype=torch.float64, requires_grad=True)
    v = torch.tensor(rng.standard_normal(4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(slope.torch.function(intro, "matvec"), (A, v))


def test_wrt_leaves_the_others_without_gradient(intro):
    matvec = slope.torch.function(intro, "matvec", wrt=["v"])
    A = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    matvec(A, v).sum().backward()
    assert A.grad is None
    assert torch.equal(v.grad, torch.tensor([2.0, 2.0, 2.0], dtype=torch.float64))


def test_cpu_tensors_are_not_copied(intro):
    # The forward pass reads the tensor's own memory (a NumPy view of it): no CopyWarning,
    # which would be an error here. A transposed tensor is copied, and says so.
    bowl = slope.torch.function(intro, "bowl")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", slope.CopyWarning)
        assert bowl(x).item() == 54.0
    with pytest.warns(slope.CopyWarning, match="not C-contiguous"):
        assert bowl(x.t()).item() == 54.0
