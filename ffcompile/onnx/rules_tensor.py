"""ONNX rules: contractions, normalizations and reductions."""
from __future__ import annotations

import functools
import math
import operator

import numpy as np

from .. import functions as F
from ..ir import lang as L
from .rules import rule


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


def _identity(value: float, dtype: np.dtype):
    """value (-inf, +inf, 0, nan) in dtype; integers saturate to their range, bools to False/True."""
    if dtype.kind == "f":
        return dtype.type(value)
    if dtype.kind == "b":
        return np.bool_(value > 0)
    if np.isinf(value):
        return dtype.type(np.iinfo(dtype).max if value > 0 else np.iinfo(dtype).min)
    return dtype.type(0 if np.isnan(value) else value)


def _reduction(fn, empty: float):
    """A Reduce* rule; over an empty axis the result is the reduction's identity
    (`empty`: ONNX's -inf for max, +inf for min, 0 for sums), known at import."""
    def convert(n, x, axes=None):
        x = n.value(x)
        axes = _reduce_axes(n, x, axes)
        if not axes:
            return x
        keepdims = bool(n.attr("keepdims", 1))
        if any(x.shape[a] == 0 for a in axes):
            shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keepdims or i not in axes]
            return np.full(shape, _identity(empty, x.type.np_dtype))
        if x.dtype == "bool":  # max/min of bools: any/all, through int32
            return L.convert(fn(L.convert(x, np.int32), axes, keepdims), np.bool_)
        return fn(x, axes, keepdims)
    return convert


def _product(x, axes, keepdims):
    """ReduceProd as the product of the slices along each axis: no primitive needed, and its
    gradient comes through mul; it costs one multiply per entry (an axis of size B needs the
    size at trace time: a ShapeError naming the node)."""
    for a in axes:
        x = functools.reduce(operator.mul, [L.getitem(x, (slice(None),) * a + (slice(i, i + 1),))
                                            for i in range(x.shape[a])])
    return x if keepdims else L.reshape(x, [d for i, d in enumerate(x.shape) if i not in axes])


_REDUCE_ATTRS = ("axes", "keepdims", "noop_with_empty_axes")
for _op, _fn, _empty in [
    ("ReduceSum", L.reduce_sum, 0.0),
    ("ReduceMax", L.reduce_max, -np.inf),
    ("ReduceMin", lambda x, a, k: -L.reduce_max(-x, a, k), np.inf),
    ("ReduceMean", lambda x, a, k: L.mean(x, a, k), np.nan),
    ("ReduceLogSumExp", lambda x, a, k: F.logsumexp(x, a, k), -np.inf),
    ("ReduceSumSquare", lambda x, a, k: L.reduce_sum(x * x, a, k), 0.0),
    ("ReduceProd", _product, 1.0),
]:
    rule(_op, attrs=_REDUCE_ATTRS, static=(1,))(_reduction(_fn, _empty))
