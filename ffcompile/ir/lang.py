"""Values and the functions that emit ops on them.

A `Value` is a typed handle to a node of a graph under construction. It has
NumPy-like operators (broadcasting, Python scalars as weakly typed constants),
so user code, VJP rules and decompositions all read like array code while
they build IR. This is the Tracer of DESIGN.md.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import ops as O
from .builder import Builder
from .errors import DTypeError, ShapeError
from .symbolic import Sym, as_dim, is_symbolic
from .types import TensorType, dtype_name


class Value:
    __slots__ = ("builder", "id")
    __array_ufunc__ = None  # make `ndarray + Value` call Value.__radd__

    def __init__(self, builder: Builder, id: int):
        self.builder = builder
        self.id = id

    # ---- static information
    @property
    def type(self) -> TensorType:
        return self.builder.nodes[self.id].type

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def weak(self) -> bool:
        """A Python scalar argument: it takes the dtype of the operand it meets."""
        return self.id in self.builder.weak

    @property
    def ndim(self) -> int:
        return self.type.rank

    @property
    def size(self) -> int:
        return self.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced value")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Value(%{self.id}:{self.type})"

    def __bool__(self):
        raise TypeError(
            "a traced value has no concrete truth value: Python `if`/`while` on it cannot be "
            "compiled; use ff.where for data-dependent choices"
        )

    def __float__(self):
        raise TypeError("a traced value has no concrete number: float()/int() on it cannot be compiled")

    __int__ = __float__

    def __array__(self, *args, **kwargs):
        raise TypeError("a traced value cannot become a NumPy array inside a compiled function")

    __hash__ = object.__hash__

    # ---- arithmetic
    def __add__(self, other): return add(self, other)
    def __radd__(self, other): return add(other, self)
    def __sub__(self, other): return sub(self, other)
    def __rsub__(self, other): return sub(other, self)
    def __mul__(self, other): return mul(self, other)
    def __rmul__(self, other): return mul(other, self)
    def __truediv__(self, other): return div(self, other)
    def __rtruediv__(self, other): return div(other, self)
    def __matmul__(self, other): return matmul(self, other)
    def __rmatmul__(self, other): return matmul(other, self)
    def __neg__(self): return neg(self)
    def __pos__(self): return self
    def __abs__(self): return abs_(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Value):
            return power(self, exponent)
        if not isinstance(exponent, numbers.Real):
            return NotImplemented
        return pow(self, float(exponent))

    def __rpow__(self, base): return power(base, self)
    def __floordiv__(self, other): return floor_divide(self, other)
    def __rfloordiv__(self, other): return floor_divide(other, self)
    def __mod__(self, other): return remainder(self, other)
    def __rmod__(self, other): return remainder(other, self)

    def __gt__(self, other): return greater(self, other)
    def __ge__(self, other): return greater_equal(self, other)
    def __lt__(self, other): return less(self, other)
    def __le__(self, other): return less_equal(self, other)
    def __eq__(self, other): return equal(self, other)  # elementwise, like NumPy
    def __ne__(self, other): return equal(self, other) == False  # noqa: E712

    # ---- methods
    @property
    def T(self):
        return transpose(self, tuple(reversed(range(self.ndim))))

    def sum(self, axis=None, keepdims=False):
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return reduce_max(self, axis, keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return reshape(self, shape)

    def astype(self, dtype):
        return convert(self, dtype_name(dtype))

    def __getitem__(self, index):
        return getitem(self, index)


# --------------------------------------------------------------------------- lifting


def builder_of(args) -> Builder:
    """The innermost builder among the Values in args."""
    found = None
    for arg in args:
        if isinstance(arg, Value):
            if found is None or _is_enclosing(found, arg.builder):
                found = arg.builder
    if found is None:
        raise TypeError("ffcompile functions operate on traced values; call them inside ff.compile")
    return found


def _is_enclosing(outer: Builder, inner: Builder) -> bool:
    b = inner.parent
    while b is not None:
        if b is outer:
            return True
        b = b.parent
    return False


def capture(builder: Builder, value: Value) -> Value:
    """A Value of an enclosing trace, as an input of `builder` (closure conversion)."""
    if value.builder is builder:
        return value
    if not _is_enclosing(value.builder, builder):
        raise ValueError(f"{value!r} belongs to a trace that has already finished")
    key = (id(value.builder), value.id)
    if key not in builder.captures:
        outer = value if builder.parent is value.builder else capture(builder.parent, value)
        builder.captures[key] = builder.add_input(value.type, f"capture{len(builder.captures)}")
        builder.captured_values.append(outer)
    return Value(builder, builder.captures[key])


def constant(builder: Builder, value, dtype: str) -> Value:
    array = np.asarray(value, dtype=TensorType((), dtype).np_dtype)
    literal = array.item() if array.ndim == 0 else _to_tuple(array)
    return Value(builder, builder.emit(O.Constant, [], {"value": literal, "type": TensorType.of(array)}))


def _to_tuple(array: np.ndarray):
    if array.ndim == 0:
        return array.item()
    return tuple(_to_tuple(a) for a in array)


def lift(builder: Builder, x, like: str | None) -> Value:
    """Make x a Value of builder: scalars take the dtype `like` (weak typing)."""
    if isinstance(x, Value):
        return capture(builder, x)
    if isinstance(x, (bool, np.bool_)):
        return constant(builder, x, "bool")
    if isinstance(x, Sym):  # a symbolic size (x.shape[0]): an int literal filled in per size
        return Value(builder, builder.emit(O.Constant, [], {"value": x, "type": TensorType((), like or "i32")}))
    if isinstance(x, numbers.Number) and not isinstance(x, np.generic):
        if like is None:
            like = "f32" if isinstance(x, float) else "i32"
        if isinstance(x, float) and like in ("i32", "i64", "bool") and not float(x).is_integer():
            raise ShapeError(f"cannot mix the float {x} with a {like} value")
        return constant(builder, x, like)
    if isinstance(x, (list, tuple)) and _holds_value(x):
        raise TypeError(
            "a Python list of traced values is not an array: lists and tuples in a compiled "
            "function's arguments are pytrees (each number its own scalar input), so a nested "
            "list of numbers must be converted with np.asarray before the call")
    if isinstance(x, np.ndarray) and x.size > CLOSURE_LITERAL_LIMIT:
        root = builder
        while root.parent is not None:
            root = root.parent
        if root.closure_arrays is not None:
            return capture(builder, _closure_input(root, x))
    array = np.asarray(x)
    return constant(builder, array, dtype_name(array.dtype))


# A closed-over array with more elements than this becomes an input of the program,
# read at every call, rather than a literal in the IR (printing, hashing and folding
# a large literal costs seconds, and edits to the array in place would go unseen).
CLOSURE_LITERAL_LIMIT = 256


def _closure_input(root: Builder, array: np.ndarray) -> Value:
    if id(array) not in root.closure_inputs:
        name = f"closure{len(root.closure_arrays)}"
        root.closure_inputs[id(array)] = root.add_input(TensorType.of(array), name)
        root.closure_arrays.append(array)
    return Value(root, root.closure_inputs[id(array)])


def _holds_value(items) -> bool:
    """Whether nested lists/tuples hold a traced Value (iteratively: lists may be deep)."""
    stack = [items]
    while stack:
        for item in stack.pop():
            if isinstance(item, Value):
                return True
            if isinstance(item, (list, tuple)):
                stack.append(item)
    return False


def _values(*args) -> list[Value]:
    """The operands as Values of the innermost trace; Python scalars (and weakly typed
    scalar arguments) take the dtype of the first strongly typed operand."""
    builder = builder_of(args)
    values = [a for a in args if isinstance(a, Value)]
    strong = [v for v in values if not v.weak]
    like = (strong or values)[0].dtype if values else None
    return [meet_weak(lift(builder, a, like), like) for a in args]


def meet_weak(value: Value, like: str | None) -> Value:
    """A weakly typed scalar argument converted to the dtype it meets."""
    if not value.weak or like is None or value.dtype == like:
        return value
    if value.type.is_float and not TensorType((), like).is_float:
        raise DTypeError(f"a Python float argument ({value.type}) meets a {like} value: pass it as "
                         f"an integer, or convert the {like} operand with .astype(...)")
    return convert(value, like)


def _emit(op, values: list[Value], **attrs) -> Value:
    builder = values[0].builder if values else None
    return Value(builder, builder.emit(op, [v.id for v in values], attrs))


def _apply(op, *args, **attrs) -> Value:
    return _emit(op, _values(*args), **attrs)


# --------------------------------------------------------------------------- primitives


def add(a, b): return _apply(O.Add, a, b)
def sub(a, b): return _apply(O.Sub, a, b)
def mul(a, b): return _apply(O.Mul, a, b)
def div(a, b): return _apply(O.Div, a, b)
def maximum(a, b): return _apply(O.Maximum, a, b)
def minimum(a, b): return _apply(O.Minimum, a, b)
def greater(a, b): return _apply(O.Gt, a, b)
def greater_equal(a, b): return _apply(O.Ge, a, b)
def less(a, b): return _apply(O.Lt, a, b)
def less_equal(a, b): return _apply(O.Le, a, b)
def equal(a, b): return _apply(O.Eq, a, b)
def neg(x): return _apply(O.Neg, x)
def exp(x): return _apply(O.Exp, x)
def expm1(x): return _apply(O.Expm1, x)
def log(x): return _apply(O.Log, x)
def log1p(x): return _apply(O.Log1p, x)
def tanh(x): return _apply(O.Tanh, x)
def erf(x): return _apply(O.Erf, x)
def sin(x): return _apply(O.Sin, x)
def cos(x): return _apply(O.Cos, x)
def sqrt(x): return _apply(O.Sqrt, x)
def abs_(x): return _apply(O.Abs, x)
def sign(x): return _apply(O.Sign, x)
def floor(x): return _apply(O.Floor, x)
def stop_gradient(x): return _apply(O.StopGradient, x)
def pow(x, exponent: float): return _apply(O.Pow, x, exponent=float(exponent))
def convert(x, dtype): return _apply(O.Convert, x, dtype=dtype_name(dtype))


def check(ok, message: str) -> None:
    """A runtime check: the compiled function raises ValueError(message) after a call in
    which some element of the bool value ok is false. It becomes a hidden output of the
    graph (an i32 scalar, 1 when failed), carried out of nested traces (grad) and read by
    the runtime after each call (runtime.Executable, BoundCall)."""
    (ok,) = _values(ok)
    if ok.dtype != "bool":
        raise DTypeError(f"check: needs a bool value, got {ok.type}")
    failed = where(ok, 0, 1)
    if failed.ndim:
        failed = reduce_max(failed)
    ok.builder.checks.append((failed.id, message))


def power(base, exponent):
    """base ** exponent with a traced exponent, as NumPy defines it for floats: a negative
    base gives a real result for an integral exponent (sign (-1)**p) and NaN otherwise;
    0 ** 0 is 1. Its gradient is not defined at base 0."""
    base, exponent = _values(base, exponent)
    if not base.type.is_float:
        raise DTypeError(f"power with a traced exponent needs floating-point operands, got {base.type}, "
                         f"{exponent.type}")
    magnitude = where(exponent == 0.0, 1.0, exp(exponent * log(abs_(base))))
    integral = floor(exponent) == exponent
    odd = remainder(exponent, 2.0) == 1.0
    negative = where(integral, where(odd, -magnitude, magnitude), math.nan)
    return where(base < 0.0, negative, magnitude)


def floor_divide(a, b):
    """a // b: floor(a / b), as NumPy and Python round it; integers go through f64 (exact
    for magnitudes below 2**53)."""
    a, b = _values(a, b)
    if a.type.is_float:
        return floor(a / b)
    return convert(floor(convert(a, "f64") / convert(b, "f64")), a.dtype)


def remainder(a, b):
    """a % b with the sign of b (Python's and NumPy's convention): a - floor(a / b) * b."""
    a, b = _values(a, b)
    return a - floor_divide(a, b) * b


def where(pred, a, b):
    """select(pred, a, b); scalar branches take the other branch's dtype."""
    builder = builder_of((pred, a, b))
    like = next((v.dtype for v in (a, b) if isinstance(v, Value)), None)
    return _emit(O.Select, [lift(builder, pred, "bool"), lift(builder, a, like), lift(builder, b, like)])


def _axes(x: Value, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = []
    for a in axes:
        if not -x.ndim <= a < x.ndim:
            raise ShapeError(f"axis {a} out of range for {x.type}")
        normalized.append(int(a) % x.ndim)  # a Python int: NumPy's ints are no attribute kind
    return tuple(sorted(set(normalized)))


def reduce_sum(x, axis=None, keepdims=False):
    (x,) = _values(x)
    return _emit(O.ReduceSum, [x], axes=_axes(x, axis), keepdims=bool(keepdims))


def reduce_max(x, axis=None, keepdims=False):
    (x,) = _values(x)
    return _emit(O.ReduceMax, [x], axes=_axes(x, axis), keepdims=bool(keepdims))


def mean(x, axis=None, keepdims=False):
    (x,) = _values(x)
    if not x.type.is_float:
        raise ShapeError(f"mean: needs a floating-point operand, got {x.type}; convert it first")
    axes = _axes(x, axis)
    count = math.prod(x.shape[a] for a in axes)
    return reduce_sum(x, axes, keepdims) / (count if isinstance(count, Sym) else float(count))


def matmul(a, b):
    a, b = _values(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: scalar operand (operands: {a.type}, {b.type})")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1,) + a.shape)
    if squeeze_b:
        b = reshape(b, b.shape + (1,))
    out = _emit(O.Matmul, [a, b])
    if squeeze_a or squeeze_b:
        shape = out.shape[:-2] + out.shape[-2:-1] * (not squeeze_a) + out.shape[-1:] * (not squeeze_b)
        out = reshape(out, shape)
    return out


def transpose(x, perm=None):
    (x,) = _values(x)
    perm = tuple(reversed(range(x.ndim))) if perm is None else tuple(int(p) % max(x.ndim, 1) for p in perm)
    if perm == tuple(range(x.ndim)):
        return x
    return _emit(O.Transpose, [x], perm=perm)


def swap_last(x: Value) -> Value:
    perm = list(range(x.ndim))
    perm[-2], perm[-1] = perm[-1], perm[-2]
    return transpose(x, tuple(perm))


def reshape(x, shape):
    (x,) = _values(x)
    shape = tuple(map(as_dim, shape))
    try:
        return _reshape(x, shape)
    except ShapeError as exc:
        if not is_symbolic(x.shape + shape):
            raise
        raise ShapeError(f"reshape: {x.type} to {list(map(str, shape))}: {exc}") from None


def _reshape(x, shape):
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {list(shape)} (operand {x.type})")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or x.size % known:
            raise ShapeError(f"reshape: cannot reshape {x.type} to {list(shape)}")
        shape = tuple(x.size // known if d == -1 else d for d in shape)
    if shape == x.shape:
        return x
    return _emit(O.Reshape, [x], shape=shape)


def broadcast_to(x, shape):
    (x,) = _values(x)
    shape = tuple(map(as_dim, shape))
    if shape == x.shape:
        return x
    return _emit(O.Broadcast, [x], shape=shape)


def threefry2x32(k0, k1, c0, c1, output="xor"):
    return _apply(O.Threefry2x32, k0, k1, c0, c1, output=output)


def concatenate(xs, axis=0):
    xs = _values(*xs)
    return _emit(O.Concat, xs, axis=_axes(xs[0], axis)[0])


def slice_(x, starts, stops, steps):
    (x,) = _values(x)
    return _emit(O.Slice, [x], starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def pad(x, config):
    (x,) = _values(x)
    return _emit(O.Pad, [x], config=tuple(tuple(int(v) for v in c) for c in config))


def all_reduce(xs, bucket: int, group: int) -> Value:
    """xs flattened, concatenated and averaged over communication group `group`'s ranks."""
    return _emit(O.AllReduce, _values(*xs), bucket=bucket, group=group)


def iota(builder: Builder, shape, axis: int, dtype: str) -> Value:
    return Value(builder, builder.emit(O.Iota, [], {"axis": axis, "type": TensorType(tuple(shape), dtype)}))


def take(x, indices, axis=0) -> Value:
    """x's entries at integer `indices` along `axis`, as np.take: the axis is replaced by
    indices' shape. Indices are a NumPy integer array (checked here: out of range is an
    IndexError) or a traced integer Value (wrapped once if negative; entries still out of
    range select a row of zeros, as no run-time error can be raised from here). Built as a
    one-hot matrix times x, so no new primitive is needed and the gradient with respect to
    x is the matmul's: a scatter-add of the cotangent rows."""
    if isinstance(indices, Value):
        x, indices = _values(x, indices)
        if indices.dtype not in ("i32", "i64"):
            raise DTypeError(f"take: indices must be i32 or i64, got {indices.type}")
    else:
        (x,) = _values(x)
    if x.ndim == 0:
        raise ShapeError(f"take: cannot index a scalar ({x.type})")
    if x.dtype == "bool":
        raise DTypeError(f"take: x must be numeric (it is gathered by a one-hot matmul), got {x.type}")
    axis = _axes(x, axis)[0]
    size = x.shape[axis]
    if isinstance(indices, Value):
        indices = where(indices < 0, indices + size, indices)
    else:
        array = _checked_indices(indices, x, axis)
        indices = constant(x.builder, array % max(size, 1), "i64")
    ramp = iota(x.builder, indices.shape + (size,), indices.ndim, indices.dtype)
    one_hot = convert(equal(reshape(indices, indices.shape + (1,)), ramp), x.dtype)
    rest = x.shape[:axis] + x.shape[axis + 1:]
    moved = transpose(x, (axis,) + tuple(i for i in range(x.ndim) if i != axis))
    picked = matmul(reshape(one_hot, (indices.size, size)), reshape(moved, (size, math.prod(rest))))
    picked = reshape(picked, indices.shape + rest)
    k = indices.ndim  # picked is [indices..., before..., after...]: put `before` first
    return transpose(picked, tuple(range(k, k + axis)) + tuple(range(k)) + tuple(range(k + axis, k + len(rest))))


def _checked_indices(indices, x: Value, axis: int) -> np.ndarray:
    """Constant indices as an integer array, every one in range for x's `axis`."""
    array = np.asarray(indices)
    if array.dtype.kind not in "iu":
        raise IndexError(f"take: indices must be integers, got an array of {array.dtype}")
    size = x.shape[axis]
    bad = array[(array < -size) | (array >= size)]
    if bad.size:
        raise IndexError(f"index {int(bad.flat[0])} out of bounds for axis {axis} of size {size} ({x.type})")
    return array


def _is_index_array(item) -> bool:
    return isinstance(item, (Value, np.ndarray, list))


def getitem(x: Value, index) -> Value:
    """NumPy indexing: integers, basic slices, Ellipsis, None and at most one integer
    array (a NumPy array, list or traced integer Value), as a slice and a reshape, then
    `take` for the array. As in NumPy, the array's axes replace the indexed axis when
    the integer and array indices are adjacent, and come first otherwise."""
    if not isinstance(index, tuple):
        index = (index,)
    arrays = [k for k, item in enumerate(index) if _is_index_array(item)]
    if len(arrays) > 1:
        raise IndexError("only one integer array index is supported (use take along one axis at a time)")
    if sum(i is Ellipsis for i in index) > 1:
        raise IndexError("an index can only have a single ellipsis")
    explicit = sum(1 for i in index if i is not None and i is not Ellipsis)
    if explicit > x.ndim:
        raise IndexError(f"too many indices for a value of type {x.type}")
    at = next((k for k, i in enumerate(index) if i is Ellipsis), None)
    if at is not None:
        index = index[:at] + (slice(None),) * (x.ndim - explicit) + index[at + 1:]
    else:
        index = index + (slice(None),) * (x.ndim - explicit)
    if arrays:
        return _getitem_array(x, index)
    starts, stops, steps, shape = [], [], [], []
    axis = 0
    for item in index:
        if item is None:
            shape.append(1)
            continue
        size = x.shape[axis]
        if isinstance(size, Sym):  # a symbolic axis is taken whole, or needs its size
            if item != slice(None):
                raise ShapeError(f"indexing {x.type} with {item!r} along axis {axis}, the symbolic batch "
                                 f"size {size}: only ':' is known at trace time (compile without batch_dim)")
            starts.append(0); stops.append(size); steps.append(1); shape.append(size)
        elif isinstance(item, slice):
            lo, hi, st = item.indices(size)
            if st < 1:
                raise IndexError("negative slice steps are not supported")
            hi = max(hi, lo)
            starts.append(lo); stops.append(hi); steps.append(st)
            shape.append(len(range(lo, hi, st)))
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            i = int(item)
            if not -size <= i < size:
                raise IndexError(f"index {i} out of bounds for axis {axis} of size {size}")
            i %= size
            starts.append(i); stops.append(i + 1); steps.append(1)
        else:
            raise IndexError(f"unsupported index {item!r}: use integers, slices, None or ...")
        axis += 1
    out = x
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        out = slice_(x, starts, stops, steps)
    return reshape(out, shape)


def _getitem_array(x: Value, index: tuple) -> Value:
    """getitem for a full-length index holding one integer array."""
    at = next(k for k, item in enumerate(index) if _is_index_array(item))
    indices = index[at]
    mask = indices.dtype == "bool" if isinstance(indices, Value) else np.asarray(indices).dtype == np.bool_
    if mask:
        raise IndexError("boolean mask indexing is not supported: its result shape depends on the data")
    if not isinstance(indices, Value):  # checked against x's own axis, as the user wrote it
        indices = _checked_indices(indices, x, sum(1 for item in index[:at] if item is not None))
    basic = getitem(x, index[:at] + (slice(None),) + index[at + 1:])
    axis = sum(1 for item in index[:at] if item is None or isinstance(item, slice))
    out = take(basic, indices, axis)
    advanced = [k for k, item in enumerate(index) if k == at or isinstance(item, numbers.Integral)]
    if advanced[-1] - advanced[0] == len(advanced) - 1:
        return out
    k = out.ndim - basic.ndim + 1  # the array's axes, at `axis`, go first (NumPy's rule)
    return transpose(out, tuple(range(axis, axis + k)) + tuple(range(axis)) + tuple(range(axis + k, out.ndim)))


# --------------------------------------------------------------------------- composites with their own VJP


def sigmoid(x): return _apply(O.Sigmoid, x)
def log_sigmoid(x): return _apply(O.LogSigmoid, x)
def softplus(x): return _apply(O.Softplus, x)
def gelu(x, approximate="none"): return _apply(O.Gelu, x, approximate=approximate)


def softmax(x, axis=-1):
    (x,) = _values(x)
    return _emit(O.Softmax, [x], axis=_axes(x, axis)[0])


def log_softmax(x, axis=-1):
    (x,) = _values(x)
    return _emit(O.LogSoftmax, [x], axis=_axes(x, axis)[0])


def softmax_cross_entropy(logits, targets):
    return _apply(O.SoftmaxCrossEntropy, logits, targets)
