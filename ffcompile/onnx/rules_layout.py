"""ONNX rules: shapes, layout, indexing and constants (shapes and axes are static)."""
from __future__ import annotations

import math

import numpy as np

from ..ir import lang as L
from ..ir.lang import Value
from ..ir.symbolic import Sym, broadcast_shapes
from ..ir.types import dtype_name
from .rules import rule
from .symbolic_shapes import SymInts, ints


# --------------------------------------------------------------------------- layout


def _shape_list(n, shape, what) -> list[int]:
    return [int(d) for d in n.static(shape, what).reshape(-1)]


def _dims(n, shape, what) -> list:
    """A shape input's entries: ints, and Syms where it holds the batch size of batch_dim=."""
    return shape.dims() if isinstance(shape, SymInts) else _shape_list(n, shape, what)


@rule("Reshape", attrs=("allowzero",), static=(1,))
def _reshape(n, x, shape):
    x, dims = n.value(x), _dims(n, shape, "the target shape")
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
    x, dims = n.value(x), _dims(n, shape, "the target shape")
    try:
        out = broadcast_shapes(x.shape, tuple(dims))
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


# A slice end that keeps every row of a batch axis: exporters write INT64_MAX (older ones
# INT32_MAX); a batch of 2**31 rows is past what a program's int32 counters take.
TO_THE_END = 2 ** 31 - 1


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
        if isinstance(x.shape[a], Sym) and (s, step) == (0, 1) and e >= TO_THE_END:
            continue  # all of the batch axis (torch's x[:, None]): nothing to cut at any size
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
    return L.take(data, indices, axis)  # run-time indices (embeddings): a one-hot matmul


# --------------------------------------------------------------------------- shapes and constants


# Rules run only for nodes with a traced input: Shape and Size read its static type
# (a SymInts where it holds the batch size of batch_dim=).
@rule("Shape", attrs=("start", "end"))
def _shape(n, x):
    return ints(x.shape[slice(n.attr("start", 0), n.attr("end"))])


@rule("Size")
def _size(n, x):
    return ints(x.size)


@rule("Constant", attrs=("value", "value_float", "value_floats", "value_int", "value_ints"))
def _constant(n):
    raise AssertionError("a Constant has no inputs: the importer always folds it")


@rule("ConstantOfShape", attrs=("value",), static=(0,))
def _constant_of_shape(n, shape):
    fill = n.attr("value", np.zeros(1, np.float32)).reshape(())
    if isinstance(shape, SymInts):  # B rows: a traced broadcast, as no array holds them
        return L.broadcast_to(n.value(fill), _dims(n, shape, "the shape"))
    return np.full(_shape_list(n, shape, "the shape"), fill, dtype=fill.dtype)


@rule("Range", static=(0, 1, 2))
def _range(n, start, limit, delta):
    """Only a limit holding B reaches here (all-constant Ranges fold; a traced bound is refused
    by n.static): `torch.arange(x.shape[0])` is an iota of B entries, where B - start is a
    multiple of delta at every size."""
    start, delta = n.static(start, "start").item(), n.static(delta, "delta").item()
    if not isinstance(limit, SymInts):
        n.static(limit, "limit")
    (bound,) = limit.dims()
    entries = L.iota(n.builder, ((bound - start) // delta,), 0, dtype_name(limit.dtype))
    return entries if (start, delta) == (0, 1) else entries * delta + start
