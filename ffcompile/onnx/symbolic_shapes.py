"""Shape arithmetic on the symbolic batch size at import (`batch_dim=`).

With `ff.compile(model, batch_dim=model.batch_dim)` a traced input's batch axis is the
symbol B, and an exporter's shape arithmetic reads it (`x.view(x.size(0), -1)`:
Shape → Gather → Unsqueeze → Concat → Reshape). `Shape` of such a value is a
`SymInts`: an integer tensor known at import whose entries are ints and `Sym`s. The
nodes exporters put between a Shape and its consumer fold on it here (`FOLDS`), with
the exact arithmetic `Sym` has (B * 4, B + 0, 4*B / 4; B / 3 or B == 3 depend on the
size and are refused); the consumers in `SHAPE_INPUTS` (Reshape, Expand,
ConstantOfShape, Range's limit) take its entries as dimensions, and a Cast to a float makes it a traced
constant holding B (`x / x.shape[0]`). Any other use is an OnnxError naming the node
and the input. A result with no Sym left (the fixed dims of a Gather) is a
plain NumPy array again, folded as every constant is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import ShapeError
from ..ir import lang as L
from ..ir.lang import Value
from ..ir.symbolic import Sym
from ..ir.types import dtype_name
from .dtypes import TO_NUMPY


@dataclass(frozen=True, eq=False)
class SymInts:
    """An integer tensor known at import that holds the symbolic batch size."""

    values: np.ndarray  # an object array of Python ints and Syms
    dtype: np.dtype     # the ONNX element type it stands for: int64 or int32

    @property
    def shape(self) -> tuple:
        return self.values.shape

    def dims(self) -> list:
        return list(self.values.reshape(-1))

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)} {self.values.tolist()}"


def ints(values, dtype=np.int64):
    """A constant of `dtype` from entries that may be Syms (an object array, a shape tuple or
    one size): a SymInts if it holds a Sym, else a plain array."""
    array = _values(values)
    if any(isinstance(v, Sym) for v in array.flat):
        return SymInts(array, np.dtype(dtype))
    return np.array(array.tolist(), dtype=dtype)


def _values(x) -> np.ndarray:
    """Entries of a SymInts, a constant, a shape tuple or one size as an object array of
    Python ints, Syms and bools (filled entry by entry: NumPy would ask a Sym for its int)."""
    if isinstance(x, SymInts):
        return x.values
    if isinstance(x, np.ndarray) and x.dtype == object:
        return x
    if isinstance(x, (list, tuple)):
        array = np.empty(len(x), dtype=object)
        for i, v in enumerate(x):
            array[i] = v if isinstance(v, Sym) else int(v)
        return array
    if isinstance(x, Sym):
        return _scalar(x)
    x = np.asarray(x)
    return np.array(x.tolist(), dtype=object) if x.ndim else _scalar(x.item())


def _scalar(value) -> np.ndarray:
    array = np.empty((), dtype=object)
    array[()] = value
    return array


def _dtype(x) -> np.dtype:
    return x.dtype if isinstance(x, SymInts) else np.asarray(x).dtype


def describe(x) -> str:
    return str(x) if isinstance(x, SymInts) else f"{np.asarray(x).dtype}{list(np.shape(x))}"


# The consumers that take a SymInts' entries as dimensions: op type -> input positions.
SHAPE_INPUTS = {"Reshape": {1}, "Expand": {1}, "ConstantOfShape": {0}, "Range": {1}}

FOLDS: dict = {}


def fold(*op_types: str):
    def register(fn):
        for op_type in op_types:
            FOLDS[op_type] = fn
        return fn
    return register


def folds(node, args) -> bool:
    """Whether `node`, with SymInts inputs, folds here (True) or runs its rule with them as
    its shape (False); an OnnxError naming the input if it can do neither."""
    positions = [i for i, a in enumerate(args) if isinstance(a, SymInts)]
    allowed = SHAPE_INPUTS.get(node.op_type, set())
    if set(positions) <= allowed:
        return False
    if node.op_type in FOLDS and not any(isinstance(a, Value) for a in args):
        return True
    first = next(i for i in positions if i not in allowed)
    consumers = ", ".join(f"{op} (input {sorted(p)[0]})" for op, p in SHAPE_INPUTS.items())
    raise node.error(f"input {first} ({node.proto.input[first]!r}) holds the symbolic batch size "
                     f"({args[first]}), computed from the shape of a value with batch_dim=; "
                     f"ffcompile folds such shapes through {', '.join(sorted(FOLDS))} on "
                     f"constants and takes them as the shape of {consumers}; compile without "
                     "batch_dim for this model")


def fold_symbolic(node, args):
    """The outputs of a FOLDS node, ShapeErrors (arithmetic that needs the size) as OnnxErrors."""
    try:
        return FOLDS[node.op_type](node, *args)
    except ShapeError as exc:
        shown = ", ".join(describe(a) if a is not None else "-" for a in args)
        raise node.error(f"on the symbolic shape inputs ({shown}): {exc}") from None


def _fixed(node, x, what: str) -> np.ndarray:
    if isinstance(x, SymInts):
        raise node.error(f"{what} holds the symbolic batch size ({x}): it must be known at import")
    return np.asarray(x)


def _axes(node, axes_input, rank: int) -> list[int] | None:
    axes = node.attr("axes") if axes_input is None else _fixed(node, axes_input, "axes").tolist()
    return None if axes is None else [node.axis(a, rank) for a in np.ravel(axes)]


# --------------------------------------------------------------------------- data movement


@fold("Identity")
def _identity(n, x):
    return x


@fold("Shape")
def _shape(n, x):
    return np.array(x.shape, dtype=np.int64)[slice(n.attr("start", 0), n.attr("end"))]


@fold("Size")
def _size(n, x):
    return np.array(x.values.size, dtype=np.int64)


@fold("Cast")
def _cast(n, x):
    return _cast_to(n, x, TO_NUMPY.get(n.attr("to")))


@fold("CastLike")
def _cast_like(n, x, like):
    """Only the target's dtype matters (torch's dynamo exporter casts constants like B)."""
    return _cast_to(n, x, _dtype(like)) if isinstance(x, SymInts) else np.asarray(x).astype(_dtype(like))


def _cast_to(n, x: SymInts, to: np.dtype | None):
    if to in (np.dtype(np.int64), np.dtype(np.int32)):
        return SymInts(x.values, to)
    if to is not None and to.kind == "f":  # `x / x.shape[0]`: a traced constant holding B
        return _traced(n, x.values, dtype_name(to))
    raise n.error(f"casts {x} to {to or n.attr('to')}: the batch size is an int64, int32 or "
                  "float value only; compile without batch_dim for this model")


def _traced(n, values: np.ndarray, dtype: str) -> Value:
    """An array of ints and Syms as a traced value: each entry a constant (B one filled in
    per size, as `x.shape[0]` is in a traced function), joined to its shape."""
    entries = [L.reshape(L.lift(n.builder, v if isinstance(v, Sym) else float(v), dtype), (1,))
               for v in values.flat]
    joined = entries[0] if len(entries) == 1 else L.concatenate(entries, 0)
    return L.reshape(joined, values.shape)


@fold("Gather")
def _gather(n, data, indices):
    indices = _fixed(n, indices, "the indices")
    values = _values(data)
    axis = n.axis(n.attr("axis", 0), values.ndim)
    size = values.shape[axis]
    if indices.size and not np.all((-size <= indices) & (indices < size)):
        raise n.error(f"indices {indices.tolist()} out of range for axis {axis} of size {size}")
    return ints(np.take(values, indices, axis=axis), _dtype(data))


@fold("Slice")
def _slice(n, data, starts=None, ends=None, axes=None, steps=None):
    values = _values(data)
    if n.opset < 10:
        starts, ends, axes = n.attr("starts"), n.attr("ends"), n.attr("axes")
    else:
        starts = _fixed(n, starts, "starts").tolist()
        ends = _fixed(n, ends, "ends").tolist()
        axes = None if axes is None else _fixed(n, axes, "axes").tolist()
    steps = [1] * len(starts) if steps is None else _fixed(n, steps, "steps").tolist()
    axes = range(len(starts)) if axes is None else [n.axis(a, values.ndim) for a in axes]
    index = [slice(None)] * values.ndim
    for a, s, e, step in zip(axes, starts, ends, steps):
        if step == 0:
            raise n.error("slice steps must not be 0")
        index[a] = slice(s, e, step)  # Python's clamping is ONNX's
    return ints(values[tuple(index)], _dtype(data))


@fold("Concat")
def _concat(n, *xs):
    values = [_values(x) for x in xs]
    return ints(np.concatenate(values, axis=n.axis(n.attr("axis"), values[0].ndim)), _dtype(xs[0]))


@fold("Unsqueeze")
def _unsqueeze(n, x, axes=None):
    values = _values(x)
    count = len(np.ravel(n.attr("axes") if axes is None else _fixed(n, axes, "axes")))
    return ints(np.expand_dims(values, tuple(_axes(n, axes, values.ndim + count))), _dtype(x))


@fold("Squeeze")
def _squeeze(n, x, axes=None):
    values = _values(x)
    axes = _axes(n, axes, values.ndim)
    if axes is not None and any(values.shape[a] != 1 for a in axes):
        raise n.error(f"cannot squeeze axes {axes} of {describe(x)}: they must have size 1")
    return ints(np.squeeze(values, None if axes is None else tuple(axes)), _dtype(x))


@fold("Reshape")
def _reshape(n, x, shape):
    values = _values(x)
    dims = _fixed(n, shape, "the target shape").tolist()
    if not n.attr("allowzero", 0):
        dims = [values.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    try:
        return ints(values.reshape(dims), _dtype(x))
    except ValueError:
        raise n.error(f"cannot reshape {describe(x)} to {dims}") from None


@fold("Expand")
def _expand(n, x, shape):
    dims = _fixed(n, shape, "the target shape").tolist()
    values = _values(x)
    try:
        return ints(np.broadcast_to(values, np.broadcast_shapes(values.shape, tuple(dims))), _dtype(x))
    except ValueError:
        raise n.error(f"cannot expand {describe(x)} to {dims}") from None


@fold("Where")
def _where(n, condition, x, y):
    condition = _fixed(n, condition, "the condition")
    return ints(np.where(condition, _values(x), _values(y)), _dtype(x))


# --------------------------------------------------------------------------- integer arithmetic


def _sub(a, b):
    if isinstance(a, Sym) and isinstance(b, Sym) and a.name == b.name and a.coef >= b.coef:
        return Sym(a.name, a.coef - b.coef) if a.coef > b.coef else 0
    return a - b


def _div(a, b):
    """ONNX's integer Div, which truncates toward zero; on a Sym only where it is exact."""
    if isinstance(a, Sym) or isinstance(b, Sym):
        return a // b
    if b == 0:
        raise ShapeError(f"the integer division {a} / 0")
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def _equal(a, b) -> bool:
    """a == b where it holds for every batch size; B == 4 depends on it and is refused."""
    if not isinstance(a, Sym):
        a, b = b, a
    if not isinstance(a, Sym):
        return a == b
    if isinstance(b, Sym) and b.name == a.name:
        return a.coef == b.coef
    if not isinstance(b, Sym) and (b < a.coef or b % a.coef):  # no B >= 1 makes coef * B == b
        return False
    raise ShapeError(f"{a} == {b} needs a concrete value of the symbolic batch size (known only "
                     "at call time); compile without batch_dim for this model")


_ELEMENTWISE = {
    "Add": lambda a, b: a + b,
    "Sub": _sub,
    "Mul": lambda a, b: a * b,
    "Div": _div,
    "Max": max,  # the comparison Sym decides where it holds for every size: max(B, 1) is B
    "Min": min,
    "Equal": _equal,
}


@fold(*_ELEMENTWISE)
def _elementwise(n, *xs):
    op = np.frompyfunc(_ELEMENTWISE[n.op_type], 2, 1)
    out = _values(xs[0])
    for x in xs[1:]:
        out = op(out, _values(x))
    out = np.asarray(out, dtype=object)
    return ints(out, np.bool_ if n.op_type == "Equal" else _dtype(xs[0]))


@fold("ReduceProd")
def _reduce_prod(n, x, axes=None):
    values = _values(x)
    axes = _axes(n, axes, values.ndim)
    if axes == [] and n.attr("noop_with_empty_axes", 0):
        return x
    axis = tuple(range(values.ndim)) if not axes else tuple(axes)
    keep = bool(n.attr("keepdims", 1))
    product = np.multiply.reduce(values, axis=axis, keepdims=keep, initial=1)
    return ints(np.asarray(product, dtype=object), _dtype(x))
