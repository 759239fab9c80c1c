"""ONNX rules: elementwise ops, activations, comparisons and casts."""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..ir import lang as L
from ..ir.lang import Value
from .dtypes import SUPPORTED, TO_NUMPY, type_name
from .rules import rule


# --------------------------------------------------------------------------- elementwise


def _unary(fn):
    return lambda n, x: fn(n.float_input(x))


for _op, _fn in {
    "Exp": L.exp, "Log": L.log, "Sqrt": L.sqrt, "Erf": L.erf, "Tanh": L.tanh, "Sin": L.sin,
    "Cos": L.cos, "Sigmoid": L.sigmoid, "Relu": F.relu, "Softplus": L.softplus,
    "Softsign": F.softsign, "Mish": F.mish, "Reciprocal": lambda x: 1.0 / x,
}.items():
    rule(_op)(_unary(_fn))


@rule("Neg")
def _neg(n, x):
    return -n.value(x)


@rule("Abs")
def _abs(n, x):
    return L.abs_(n.value(x))


@rule("Sign")
def _sign(n, x):
    return L.sign(n.value(x))


@rule("Floor")
def _floor(n, x):
    return L.floor(n.float_input(x))


@rule("Ceil")
def _ceil(n, x):
    return -L.floor(-n.float_input(x))


@rule("Identity")
def _identity(n, x):
    return x


@rule("Add")
def _add(n, a, b):
    return n.value(a) + b


@rule("Sub")
def _sub(n, a, b):
    return n.value(a) - b


@rule("Mul")
def _mul(n, a, b):
    return n.value(a) * b


@rule("Div")
def _div(n, a, b):
    a = n.value(a)
    if not a.type.is_float:
        raise n.error(f"integer division is not supported (operands {a.type}); "
                      "Div takes float32 or float64")
    return a / b


@rule("Pow")
def _pow(n, x, y):
    x = n.float_input(x)
    if not isinstance(y, Value):
        y = np.asarray(y)
        if y.size and np.all(y == y.flat[0]) and np.broadcast_shapes(x.shape, y.shape) == x.shape:
            return L.pow(x, float(y.flat[0]))
    # A run-time exponent (a graph input, or a float initializer, which is a param):
    # exp(y log x), defined for x > 0; load(..., constants=) makes an initializer constant.
    return L.exp(L.log(x) * L.convert(n.value(y), x.dtype))


@rule("LeakyRelu", attrs=("alpha",))
def _leaky_relu(n, x):
    return F.leaky_relu(n.float_input(x), n.attr("alpha", 0.01))


@rule("PRelu")
def _prelu(n, x, slope):
    return F.prelu(n.float_input(x), n.value(slope))


@rule("Elu", attrs=("alpha",))
def _elu(n, x):
    return F.elu(n.float_input(x), n.attr("alpha", 1.0))


@rule("Selu", attrs=("alpha", "gamma"))
def _selu(n, x):
    alpha = n.attr("alpha", 1.67326319217681884765625)
    return n.attr("gamma", 1.05070102214813232421875) * F.elu(n.float_input(x), alpha)


@rule("Celu", attrs=("alpha",))
def _celu(n, x):
    x, alpha = n.float_input(x), n.attr("alpha", 1.0)
    return L.where(x > 0.0, x, alpha * (L.exp(L.minimum(x, 0.0) / alpha) - 1.0))


@rule("HardSigmoid", attrs=("alpha", "beta"))
def _hard_sigmoid(n, x):
    x = n.float_input(x)
    return L.maximum(L.minimum(n.attr("alpha", 0.2) * x + n.attr("beta", 0.5), 1.0), 0.0)


@rule("HardSwish")
def _hard_swish(n, x):
    x = n.float_input(x)
    return x * L.maximum(L.minimum(x * (1.0 / 6.0) + 0.5, 1.0), 0.0)


@rule("Gelu", attrs=("approximate",))
def _gelu(n, x):
    return L.gelu(n.float_input(x), n.attr("approximate", "none"))


@rule("Clip", attrs=("min", "max"))
def _clip(n, x, lo=None, hi=None):
    x = n.value(x)
    if n.opset < 11:
        lo, hi = n.attr("min"), n.attr("max")
    if lo is not None:
        x = L.maximum(x, n.value(lo) if isinstance(lo, Value) else np.asarray(lo, x.type.np_dtype))
    if hi is not None:
        x = L.minimum(x, n.value(hi) if isinstance(hi, Value) else np.asarray(hi, x.type.np_dtype))
    return x


def _variadic(fn):
    def convert(n, *xs):
        out = n.value(xs[0])
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return convert


rule("Max")(_variadic(L.maximum))
rule("Min")(_variadic(L.minimum))
rule("Sum")(_variadic(L.add))


@rule("Mean")
def _mean(n, *xs):
    return _variadic(L.add)(n, *xs) / float(len(xs))


@rule("Where")
def _where(n, cond, a, b):
    return L.where(n.value(cond), n.value(a), b)


for _op, _fn in {"Equal": L.equal, "Greater": L.greater, "Less": L.less,
                 "GreaterOrEqual": L.greater_equal, "LessOrEqual": L.less_equal}.items():
    rule(_op)(lambda n, a, b, _fn=_fn: _fn(n.value(a), b))


@rule("Cast", attrs=("to", "saturate", "round_mode"))
def _cast(n, x):
    to = n.attr("to")
    if to not in TO_NUMPY:
        raise n.error(f"cannot cast to {type_name(to)}; supported: {SUPPORTED}")
    return L.convert(n.value(x), TO_NUMPY[to])


@rule("CastLike", attrs=("saturate", "round_mode"))
def _cast_like(n, x, like):
    """Only the target's dtype matters: a constant stays a constant (a Pow exponent must)."""
    dtype = like.type.np_dtype if isinstance(like, Value) else like.dtype
    return np.asarray(x).astype(dtype) if not isinstance(x, Value) else L.convert(x, dtype)
