"""The `ff.` op library: activations and array functions over traced values.

Everything here is a composite of registry ops, so autodiff, fusion and code
generation need nothing new for it. Where the composition through primitives
would overflow or differentiate badly, the registry has a composite op with
its own VJP (sigmoid, log_sigmoid, softplus, gelu, softmax, log_softmax).
"""
from __future__ import annotations

import numpy as np

from .ir import lang as L
from .einsum import einsum
from .ir.lang import (abs_ as abs, concatenate, convert, cos, erf, exp, expm1, floor, floor_divide, log, log1p,
                      log_sigmoid, log_softmax, maximum, mean, minimum, power, remainder, sigmoid, sign,
                      sin, softmax, softplus, sqrt, stop_gradient, take, tanh, where)

__all__ = [
    "abs", "argmax", "argmin", "clip", "concatenate", "convert", "cos", "einsum", "elu", "erf", "exp", "expm1",
    "floor", "floor_divide", "gelu", "leaky_relu", "log", "log1p", "log_sigmoid", "log_softmax",
    "logsumexp", "max", "maximum", "mean", "minimum", "mish", "power", "prelu", "relu", "remainder",
    "sigmoid", "sign", "silu", "sin", "sinc", "softmax", "softplus", "softsign", "sqrt", "square",
    "stack", "step", "stop_gradient", "sum", "swish", "take", "tanh", "where",
]


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy's name
    return L.reduce_sum(x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return L.reduce_max(x, axis, keepdims)


def square(x):
    return x * x


def relu(x):
    """max(x, 0) with relu'(0) = 0 and relu(NaN) = NaN (as PyTorch): a select, since
    maximum shares the gradient of a tie (x = 0) with the constant."""
    return L.where(x <= 0.0, 0.0, x)


def leaky_relu(x, slope=0.01):
    return L.where(x > 0.0, x, x * slope)


def prelu(x, slope):
    """Leaky ReLU with a learnable slope (an argument, broadcast against x)."""
    return L.where(x > 0.0, x, x * slope)


def elu(x, alpha=1.0):
    """x above 0, alpha (e^x - 1) at and below, by expm1 (exp(x) - 1 loses all digits
    near 0). elu'(0) = alpha, as in PyTorch: the negative branch owns 0 and reads x
    there (through a select, not minimum(x, 0), whose tie would take the gradient);
    positive x never reach the exponential, so it cannot overflow."""
    negative = x <= 0.0
    return L.where(negative, alpha * L.expm1(L.where(negative, x, 0.0)), x)


def step(x):
    """Heaviside step: 1 where x >= 0 (so step(0) = 1, as the lecture's table has it), else
    0; its derivative is zero."""
    return L.convert(x >= 0.0, x.dtype)


def softsign(x):
    return x / (1.0 + L.abs_(x))


def silu(x):
    return x * L.sigmoid(x)


swish = silu


def mish(x):
    return x * L.tanh(L.softplus(x))


def sinc(x):
    """sin(x)/x with sinc(0) = 1 and a finite gradient there.

    Near 0 the Taylor series 1 - x^2/6 + x^4/120 replaces the quotient (its
    error below |x| = 1e-2 is under 1e-12); the quotient's operand is made safe
    so neither branch produces NaN in the value or the gradient."""
    small = L.abs_(x) < 1e-2
    safe = L.where(small, 1.0, x)
    x2 = x * x
    return L.where(small, 1.0 - x2 / 6.0 + x2 * x2 / 120.0, L.sin(safe) / safe)


def gelu(x, approximate="none"):
    """GELU: exact (erf), approximate="tanh" (Hendrycks & Gimpel), or "sigmoid" (x·σ(1.702x))."""
    if approximate in ("none", False, None):
        return L.gelu(x, "none")
    if approximate in ("tanh", True):
        return L.gelu(x, "tanh")
    if approximate == "sigmoid":
        return x * L.sigmoid(1.702 * x)
    raise ValueError(f"gelu: approximate must be 'none', 'tanh' or 'sigmoid', got {approximate!r}")


def clip(x, lo=None, hi=None):
    """x limited to [lo, hi] (either may be None); the gradient is 1 inside the closed
    interval and 0 outside, as torch.clamp's."""
    if lo is not None:
        x = L.where(x < lo, lo, x)
    if hi is not None:
        x = L.where(x > hi, hi, x)
    return x


def argmax(x, axis=-1, keepdims=False):
    """The index (i64) of the first largest element along axis, as NumPy's (a NaN counts
    as the largest); not differentiable."""
    return _arg_extreme(x, axis, keepdims, L.reduce_max)


def argmin(x, axis=-1, keepdims=False):
    """The index (i64) of the first smallest element along axis (a NaN counts as the smallest)."""
    return _arg_extreme(-x, axis, keepdims, L.reduce_max)


def _arg_extreme(x, axis, keepdims, reduce):
    (ax,) = L._axes(x, axis)
    best = L.stop_gradient(reduce(x, ax, keepdims=True))
    index = L.iota(x.builder, x.shape, ax, "i64")
    hit = L.where(x == best, True, x != x)  # NumPy returns the first NaN
    # where, then negate: x.shape[ax] may be the symbolic batch size, which has no negative
    first = -L.reduce_max(-L.where(hit, index, x.shape[ax]), ax, keepdims=keepdims)
    return first


def stack(xs, axis=0):
    """xs (same shape) joined along a new axis."""
    xs = list(xs)
    if not xs:
        raise ValueError("stack needs at least one value")
    rank = np.ndim(xs[0]) if not isinstance(xs[0], L.Value) else xs[0].ndim
    if not -rank - 1 <= axis <= rank:
        raise ValueError(f"stack: axis {axis} out of range for rank {rank}")
    axis %= rank + 1
    expanded = [x[(slice(None),) * axis + (None,)] for x in L._values(*xs)]
    return L.concatenate(expanded, axis)


def logsumexp(x, axis=-1, keepdims=False):
    m = L.stop_gradient(L.reduce_max(x, axis, keepdims=True))
    out = L.log(L.reduce_sum(L.exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else L.reshape(out, [d for i, d in enumerate(out.shape)
                                                  if i not in L._axes(x, axis)])
