"""The `ff.` op library: activations and array functions over traced values.

Everything here is a composite of registry ops, so autodiff, fusion and code
generation need nothing new for it. Where the composition through primitives
would overflow or differentiate badly, the registry has a composite op with
its own VJP (sigmoid, log_sigmoid, softplus, gelu, softmax, log_softmax).
"""
from __future__ import annotations

from .ir import lang as L
from .ir.lang import (abs_ as abs, concatenate, convert, cos, erf, exp, expm1, log, log1p,
                      log_sigmoid, log_softmax, maximum, mean, minimum, sigmoid, sign, sin, softmax,
                      softplus, sqrt, stop_gradient, tanh, where)

__all__ = [
    "abs", "concatenate", "convert", "cos", "elu", "erf", "exp", "expm1", "gelu", "leaky_relu",
    "log", "log1p", "log_sigmoid", "log_softmax", "max", "maximum", "mean", "minimum", "mish", "prelu",
    "relu", "sigmoid", "sign", "silu", "sin", "sinc", "softmax", "softplus", "softsign", "sqrt",
    "step", "stop_gradient", "sum", "swish", "tanh", "where", "logsumexp", "square",
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
    """Heaviside step, 1 where x > 0; its derivative is zero."""
    return L.convert(x > 0.0, x.dtype)


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


def logsumexp(x, axis=-1, keepdims=False):
    m = L.stop_gradient(L.reduce_max(x, axis, keepdims=True))
    out = L.log(L.reduce_sum(L.exp(x - m), axis, keepdims=True)) + m
    return out if keepdims else L.reshape(out, [d for i, d in enumerate(out.shape)
                                                  if i not in L._axes(x, axis)])
