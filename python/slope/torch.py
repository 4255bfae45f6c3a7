"""Slope functions inside PyTorch's autograd.

    import torch, slope, slope.torch
    m = slope.compile_file("samples/autograd_intro.slope")
    bowl = slope.torch.function(m, "bowl")
    x = torch.tensor([[1.0, 2], [3, 4]], dtype=torch.float64, requires_grad=True)
    bowl(x).backward()                     # x.grad: [[4, 6], [8, 10]]

The forward pass calls the compiled function, or, when an input needs a gradient and the
function returns one scalar, the compiled gradient, which gives the value and the gradient in
one call; the backward pass scales that gradient, or calls the VJP with PyTorch's output
gradients. CPU tensors are passed as NumPy views of their own memory (contiguous tensors of
the parameter's dtype are not copied); CUDA tensors are copied to the host (the Python module
does not yet offer Slope's CUDA target).
"""
import numpy as np
import torch

__all__ = ["function"]


def _array(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return t


def _tensor(v, like=None):
    if isinstance(v, np.ndarray):
        t = torch.from_numpy(v)
    else:
        t = torch.tensor(v, dtype=torch.float64 if isinstance(v, float) else None)
    return t.to(like.device) if like is not None else t


def function(module, name, wrt=None):
    """A callable that takes and returns torch tensors and differentiates with Slope's
    gradient (a function with one scalar result) or VJP (otherwise). wrt: the parameters to
    differentiate (default every float parameter); the others get no gradient."""
    f = module.function(name)
    sig = f.signature
    params = sig["params"]
    scalar = len(sig["result_types"]) == 1 and "[" not in sig["result_types"][0]
    back = module.gradient(name, wrt) if scalar else module.vjp(name, wrt)
    places = [params.index(w) for w in back.wrt]
    result_dtypes = [torch.float32 if t.startswith("f32") else torch.float64
                     for t in sig["result_types"]]

    class SlopeFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *xs):
            arrays = [_array(x) for x in xs]
            like = next((x for x in xs if isinstance(x, torch.Tensor)), None)
            ctx.arrays = arrays
            ctx.like = like
            ctx.grads = None
            if scalar and any(ctx.needs_input_grad):
                value, grads = back(*arrays)
                ctx.grads = grads if isinstance(grads, tuple) else (grads,)
                return torch.tensor(value, dtype=result_dtypes[0],
                                    device=like.device if like is not None else None)
            out = f(*arrays)
            if isinstance(out, tuple):
                return tuple(_tensor(o, like) for o in out)
            if not isinstance(out, np.ndarray):
                return torch.tensor(out, dtype=result_dtypes[0],
                                    device=like.device if like is not None else None)
            return _tensor(out, like)

        @staticmethod
        def backward(ctx, *gouts):
            if scalar:
                grads = ctx.grads
                if grads is None:
                    _, g = back(*ctx.arrays)
                    grads = g if isinstance(g, tuple) else (g,)
                grads = [_tensor(g, ctx.like) * gouts[0] for g in grads]
            else:
                cot = [np.ascontiguousarray(_array(g)) for g in gouts]
                g = back(*ctx.arrays, *cot)
                grads = [_tensor(x, ctx.like) for x in (g if isinstance(g, tuple) else (g,))]
            out = [None] * len(ctx.arrays)
            for k, p in enumerate(places):
                out[p] = grads[k]
            return tuple(out)

    def call(*xs):
        return SlopeFunction.apply(*xs)

    call.__name__ = name
    call.__doc__ = f"Slope's {name}{tuple(params)} for torch tensors, with its gradient."
    return call
