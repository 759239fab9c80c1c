"""ONNX ops as compositions of ffcompile ops: one rule per op type.

A rule receives the node (attributes, opset, the trace's builder) and its
inputs, each a traced `Value`, a NumPy array (a constant known at import:
non-float initializers, Constant nodes, folded Shape arithmetic) or None (an
omitted optional input). Values whose meaning is structural (shapes, axes,
slice bounds) must be constants; a rule asks for them through `node.static`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

from .. import functions as F
from ..ir import lang as L
from ..ir.lang import Value
from .dtypes import SUPPORTED, TO_NUMPY, type_name
from .errors import node_error


@dataclass(frozen=True)
class Rule:
    fn: Callable
    attrs: frozenset[str]
    static: frozenset[int]  # positions of the inputs that must be constants (shapes, axes)


RULES: dict[str, Rule] = {}


def rule(*op_types: str, attrs: tuple[str, ...] = (), static: tuple[int, ...] = ()):
    def register(fn):
        for op_type in op_types:
            RULES[op_type] = Rule(fn, frozenset(attrs), frozenset(static))
        return fn
    return register


def _attribute(a):
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims"):  # a TensorProto
        return numpy_helper.to_array(value)
    return value


class Node:
    """One ONNX node while it is converted."""

    def __init__(self, proto, opset: int, builder):
        self.proto = proto
        self.op_type = proto.op_type
        self.opset = opset
        self.builder = builder
        self.attrs = {a.name: _attribute(a) for a in proto.attribute}

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def error(self, message: str):
        return node_error(self.proto, message)

    def static(self, x, what: str) -> np.ndarray:
        if isinstance(x, Value):
            raise self.error(f"{what} must be a constant (an initializer of integer type, a "
                             "Constant or a folded Shape computation), not a value computed at "
                             "run time: ffcompile compiles static shapes")
        return np.asarray(x)

    def value(self, x) -> Value:
        return x if isinstance(x, Value) else L.lift(self.builder, np.asarray(x), None)

    def axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < max(rank, 1):
            raise self.error(f"axis {axis} out of range for rank {rank}")
        return axis % max(rank, 1)

    def float_input(self, x) -> Value:
        x = self.value(x)
        if not x.type.is_float:
            raise self.error(f"needs a float32 or float64 input, got {x.type}")
        return x


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
    # A run-time exponent: exp(y log x), defined for x > 0 (as is ONNX's real-valued Pow).
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


# --------------------------------------------------------------------------- contractions


@rule("MatMul")
def _matmul(n, a, b):
    return L.matmul(n.value(a), n.value(b))


@rule("Gemm", attrs=("alpha", "beta", "transA", "transB"))
def _gemm(n, a, b, c=None):
    a, b = n.value(a), n.value(b)
    if n.attr("transA", 0):
        a = L.transpose(a)
    if n.attr("transB", 0):
        b = L.transpose(b)
    y = L.matmul(a, b)
    if n.attr("alpha", 1.0) != 1.0:
        y = y * n.attr("alpha")
    if c is not None:
        c = n.value(c)
        y = y + (c if n.attr("beta", 1.0) == 1.0 else c * n.attr("beta"))
    return y


# --------------------------------------------------------------------------- normalizations


def _coerced_2d(fn):
    """Softmax family: before opset 13 the input is flattened to 2-D at `axis` (default 1)."""

    def convert(n, x):
        x = n.float_input(x)
        if n.opset >= 13:
            return fn(x, n.axis(n.attr("axis", -1), x.ndim))
        axis = n.axis(n.attr("axis", 1), x.ndim)
        flat = L.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
        return L.reshape(fn(flat, 1), x.shape)
    return convert


rule("Softmax", attrs=("axis",))(_coerced_2d(L.softmax))
rule("LogSoftmax", attrs=("axis",))(_coerced_2d(L.log_softmax))


@rule("LayerNormalization", attrs=("axis", "epsilon", "stash_type"))
def _layer_norm(n, x, scale, bias=None):
    x = n.float_input(x)
    axes = tuple(range(n.axis(n.attr("axis", -1), x.ndim), x.ndim))
    mean = L.mean(x, axes, keepdims=True)
    centered = x - mean
    inv_std = 1.0 / L.sqrt(L.mean(centered * centered, axes, keepdims=True) + n.attr("epsilon", 1e-5))
    y = centered * inv_std * n.value(scale)
    if bias is not None:
        y = y + n.value(bias)
    return y, mean, inv_std


@rule("BatchNormalization", attrs=("epsilon", "momentum", "training_mode", "spatial"))
def _batch_norm(n, x, scale, bias, mean, var):
    if n.attr("training_mode", 0):
        raise n.error("training_mode=1 is not supported; BatchNormalization is imported for inference")
    if len(n.proto.output) > 1 and any(n.proto.output[1:]):
        raise n.error("the running-statistics outputs (training mode) are not supported")
    x = n.float_input(x)
    channels = (x.shape[1],) + (1,) * (x.ndim - 2) if x.ndim > 1 else x.shape

    def per_channel(v):
        return L.reshape(n.value(v), channels)
    inv_std = 1.0 / L.sqrt(per_channel(var) + n.attr("epsilon", 1e-5))
    return (x - per_channel(mean)) * (inv_std * per_channel(scale)) + per_channel(bias)


@rule("Dropout", attrs=("ratio", "seed", "is_test"), static=(1, 2))
def _dropout(n, x, ratio=None, training_mode=None):
    if training_mode is not None and bool(n.static(training_mode, "training_mode")):
        raise n.error("training_mode=true is not supported; Dropout is imported for inference")
    x = n.value(x)
    return x, np.ones(x.shape, dtype=bool)


# --------------------------------------------------------------------------- reductions


def _reduce_axes(n, x, axes_input):
    """The reduced axes (attribute before the opset that made them an input), or None for all."""
    axes = n.attr("axes")
    if axes_input is not None:
        axes = n.static(axes_input, "axes").tolist()
    if axes is None or len(axes) == 0:
        return () if n.attr("noop_with_empty_axes", 0) else tuple(range(x.ndim))
    return tuple(sorted(n.axis(int(a), x.ndim) for a in axes))


def _reduction(fn):
    def convert(n, x, axes=None):
        x = n.value(x)
        axes = _reduce_axes(n, x, axes)
        if not axes:
            return x
        return fn(x, axes, bool(n.attr("keepdims", 1)))
    return convert


_REDUCE_ATTRS = ("axes", "keepdims", "noop_with_empty_axes")
rule("ReduceSum", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(L.reduce_sum))
rule("ReduceMax", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(L.reduce_max))
rule("ReduceMin", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(lambda x, a, k: -L.reduce_max(-x, a, k)))
rule("ReduceMean", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(lambda x, a, k: L.mean(x, a, k)))
rule("ReduceLogSumExp", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(lambda x, a, k: F.logsumexp(x, a, k)))
rule("ReduceSumSquare", attrs=_REDUCE_ATTRS, static=(1,))(_reduction(lambda x, a, k: L.reduce_sum(x * x, a, k)))


# --------------------------------------------------------------------------- layout


def _shape_list(n, shape, what) -> list[int]:
    return [int(d) for d in n.static(shape, what).reshape(-1)]


@rule("Reshape", attrs=("allowzero",), static=(1,))
def _reshape(n, x, shape):
    x, dims = n.value(x), _shape_list(n, shape, "the target shape")
    if not n.attr("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return L.reshape(x, dims)


@rule("Flatten", attrs=("axis",))
def _flatten(n, x):
    x = n.value(x)
    axis = n.attr("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise n.error(f"axis {axis} out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    return L.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@rule("Transpose", attrs=("perm",))
def _transpose(n, x):
    x = n.value(x)
    perm = n.attr("perm")
    return L.transpose(x, None if perm is None else tuple(perm))


def _axes_input(n, axes) -> list[int] | None:
    if axes is not None:
        return _shape_list(n, axes, "axes")
    return n.attr("axes")


@rule("Squeeze", attrs=("axes",), static=(1,))
def _squeeze(n, x, axes=None):
    x = n.value(x)
    axes = _axes_input(n, axes)
    drop = ({n.axis(a, x.ndim) for a in axes} if axes is not None
            else {i for i, d in enumerate(x.shape) if d == 1})
    if any(x.shape[a] != 1 for a in drop):
        raise n.error(f"cannot squeeze axes {sorted(drop)} of {x.type}: they must have size 1")
    return L.reshape(x, [d for i, d in enumerate(x.shape) if i not in drop])


@rule("Unsqueeze", attrs=("axes",), static=(1,))
def _unsqueeze(n, x, axes=None):
    x = n.value(x)
    rank = x.ndim + len(_axes_input(n, axes))
    added = {n.axis(a, rank) for a in _axes_input(n, axes)}
    dims = iter(x.shape)
    return L.reshape(x, [1 if i in added else next(dims) for i in range(rank)])


@rule("Expand", static=(1,))
def _expand(n, x, shape):
    x, dims = n.value(x), _shape_list(n, shape, "the target shape")
    try:
        out = np.broadcast_shapes(x.shape, tuple(dims))
    except ValueError:
        raise n.error(f"cannot expand {x.type} to {dims}") from None
    return L.broadcast_to(x, out)


@rule("Concat", attrs=("axis",))
def _concat(n, *xs):
    xs = [n.value(x) for x in xs]
    return L.concatenate(xs, n.axis(n.attr("axis"), xs[0].ndim))


def take(n, x: Value, indices, axis: int) -> Value:
    """x's entries at constant `indices` along `axis` (np.take), as slices and one concat."""
    indices = np.asarray(indices)
    size = x.shape[axis]
    if indices.size and not np.all((-size <= indices) & (indices < size)):
        raise n.error(f"indices {indices.tolist()} out of range for axis {axis} of size {size}")
    flat = indices.reshape(-1) % max(size, 1)
    parts = [L.getitem(x, (slice(None),) * axis + (slice(int(i), int(i) + 1),)) for i in flat]
    if not parts:
        zero = list(x.shape)
        zero[axis] = 0
        joined = L.slice_(x, (0,) * x.ndim, tuple(zero), (1,) * x.ndim)
    else:
        joined = parts[0] if len(parts) == 1 else L.concatenate(parts, axis)
    return L.reshape(joined, x.shape[:axis] + indices.shape + x.shape[axis + 1:])


@rule("Slice", attrs=("starts", "ends", "axes"), static=(1, 2, 3, 4))
def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    x = n.value(x)
    if n.opset < 10:
        starts, ends, axes = n.attr("starts"), n.attr("ends"), n.attr("axes")
    else:
        starts, ends = _shape_list(n, starts, "starts"), _shape_list(n, ends, "ends")
        axes = None if axes is None else _shape_list(n, axes, "axes")
    axes = list(range(len(starts))) if axes is None else [n.axis(a, x.ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else _shape_list(n, steps, "steps")
    lo, hi, st = [0] * x.ndim, list(x.shape), [1] * x.ndim
    reversed_axes = []
    for a, s, e, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise n.error("slice steps must not be 0")
        if step < 0:
            reversed_axes.append((a, range(*slice(s, e, step).indices(x.shape[a]))))
            continue
        lo[a], hi[a], _ = slice(s, e, step).indices(x.shape[a])
        hi[a], st[a] = max(hi[a], lo[a]), step
    if (lo, hi, st) != ([0] * x.ndim, list(x.shape), [1] * x.ndim):
        x = L.slice_(x, lo, hi, st)
    for a, picked in reversed_axes:
        x = take(n, x, np.array(list(picked), dtype=np.int64), a)
    return x


@rule("Split", attrs=("axis", "split", "num_outputs"), static=(1,))
def _split(n, x, split=None):
    x = n.value(x)
    axis = n.axis(n.attr("axis", 0), x.ndim)
    size = x.shape[axis]
    sizes = _shape_list(n, split, "split") if split is not None else n.attr("split")
    if sizes is None:
        count = n.attr("num_outputs", len(n.proto.output))
        chunk = -(-size // count)
        sizes = [min(chunk, size - i * chunk) for i in range(count)]
    if sum(sizes) != size or any(s < 0 for s in sizes):
        raise n.error(f"split sizes {list(sizes)} do not add up to axis {axis} of {x.type}")
    outs, start = [], 0
    for s in sizes:
        index = (slice(None),) * axis + (slice(start, start + s),)
        outs.append(L.getitem(x, index))
        start += s
    return tuple(outs)


@rule("Gather", attrs=("axis",))
def _gather(n, data, indices):
    data = n.value(data)
    axis = n.axis(n.attr("axis", 0), data.ndim)
    if not isinstance(indices, Value):
        return take(n, data, n.static(indices, "indices"), axis)
    if indices.dtype not in ("i32", "i64"):
        raise n.error(f"indices must be int32 or int64, got {indices.type}")
    # Run-time indices (embeddings): a one-hot matrix times the table, so the table's
    # gradient is the matmul's (a scatter-add) and no new primitive is needed.
    size = data.shape[axis]
    wrapped = L.where(indices < 0, indices + size, indices)
    ramp = L.iota(n.builder, indices.shape + (size,), indices.ndim, indices.dtype)
    one_hot = L.convert(L.equal(L.reshape(wrapped, indices.shape + (1,)), ramp), data.dtype)
    rest = data.shape[:axis] + data.shape[axis + 1:]
    moved = L.transpose(data, (axis,) + tuple(i for i in range(data.ndim) if i != axis))
    picked = L.matmul(L.reshape(one_hot, (indices.size, size)), L.reshape(moved, (size, math.prod(rest))))
    picked = L.reshape(picked, indices.shape + rest)
    k = indices.ndim  # picked is [indices..., before..., after...]: put `before` first
    perm = tuple(range(k, k + axis)) + tuple(range(k)) + tuple(range(k + axis, k + len(rest)))
    return L.transpose(picked, perm)


# --------------------------------------------------------------------------- shapes and constants


@rule("Shape", attrs=("start", "end"))
def _shape(n, x):
    shape = np.array(n.value(x).shape if isinstance(x, Value) else np.shape(x), dtype=np.int64)
    return shape[slice(n.attr("start", 0), n.attr("end"))]


@rule("Size")
def _size(n, x):
    return np.array(np.size(x) if not isinstance(x, Value) else x.size, dtype=np.int64)


@rule("Constant", attrs=("value", "value_float", "value_floats", "value_int", "value_ints"))
def _constant(n):
    (name, value), = n.attrs.items()
    dtype = {"value_float": np.float32, "value_floats": np.float32,
             "value_int": np.int64, "value_ints": np.int64}.get(name)
    return np.asarray(value, dtype=dtype)


@rule("ConstantOfShape", attrs=("value",), static=(0,))
def _constant_of_shape(n, shape):
    fill = n.attr("value", np.zeros(1, np.float32))
    return np.full(_shape_list(n, shape, "the shape"), fill.reshape(-1)[0], dtype=fill.dtype)
