"""The op registry: one class per op, holding every rule of that op.

Each op declares its name, traits, operand count, its attributes with their
kinds (`attributes.py`: checked before the shape rule reads them), a
shape/dtype rule (`infer`), a NumPy reference (`reference`, the living
definition of its meaning), a cost, and its VJP (`vjp`, which emits IR for the
input cotangents through `lang` Values, so gradients are differentiable again).

Primitive ops are what backends lower. Composite ops (trait COMPOSITE) exist
only where differentiating through the primitives is unstable or wasteful;
they carry their own VJP and a `decompose` into primitives, which the
`decompose` pass applies before code generation.

Conventions of the VJP rules: a returned cotangent may have the *output*
shape of a broadcasting op; autodiff reduces it to the operand's shape
centrally. `None` means "no gradient flows" (no dead zeros are emitted).
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from . import attributes as A
from . import lang as L
# The base, traits and registry live in op.py; re-exported: ops.X is how passes name them.
from . import collectives
from .op import (COLLECTIVE, COMPOSITE, CONTRACTION, ELEMENTWISE, LAYOUT, OPS, REDUCTION, SOURCE, Cost,  # noqa: F401
                 Input, Op, Trait, format_types, register, shown_value)
from .errors import DTypeError
from .symbolic import Sym, broadcast_shapes
from .types import TensorType


def _special(name: str):
    """scipy.special.<name>: importing scipy.special costs ~100 ms, so `import ffcompile`
    leaves it to the first reference evaluation that needs it (tests/test_import_cost.py)."""
    import scipy.special

    return getattr(scipy.special, name)


class _SpecialUfunc:
    """A class attribute that is scipy.special.<name>, imported on first access."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, instance, owner):
        return _special(self.name)


@register
class Constant(Op):
    """A literal; `value` is a Python scalar or nested tuples (hashable, printable)."""

    name = "constant"
    traits = frozenset({SOURCE})
    arity = 0
    attributes = {"value": A.SCALARS, "type": A.TYPE}
    differentiable = False

    @classmethod
    def infer(cls, types, attrs):
        out = attrs["type"]
        shape = A.nested_shape(attrs["value"])
        if shape != out.shape:
            raise cls.error(f"value of shape {shape} does not match {out}")
        bad = next((v for v in A.flat_scalars(attrs["value"]) if not cls._fits(v, out)), None)
        if bad is not None:
            raise cls.error(f"value {shown_value(bad)} does not fit {out.dtype}, which holds {cls._kind(out)}")
        return out

    @staticmethod
    def _kind(out: TensorType) -> str:
        if out.dtype == "bool":
            return "true or false"
        if out.dtype in ("i32", "i64"):
            info = np.iinfo(out.np_dtype)
            return f"ints in [{info.min}, {info.max}]"
        return f"numbers up to {float(np.finfo(out.np_dtype).max):.4g} in magnitude, nan and inf"

    @staticmethod
    def _fits(value, out: TensorType) -> bool:
        """value is the kind of scalar out.dtype holds, within its range (no silent wrap
        or overflow to inf in codegen; nan and inf are float values of their own)."""
        if out.dtype == "bool":
            return isinstance(value, bool)
        if isinstance(value, Sym):  # a size known at call time (a mean's count)
            return True
        if isinstance(value, bool):
            return False
        if out.dtype in ("i32", "i64"):
            info = np.iinfo(out.np_dtype)
            return isinstance(value, int) and info.min <= value <= info.max
        largest = float(np.finfo(out.np_dtype).max)
        if isinstance(value, int):  # int against float compares exactly: a huge int has no float
            return abs(value) <= largest
        return not math.isfinite(value) or abs(value) <= largest

    @classmethod
    def reference(cls, attrs, *args):
        return np.array(attrs["value"], dtype=attrs["type"].np_dtype)

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(0, out.nbytes)


@register
class Iota(Op):
    """0, 1, 2, ... along `axis`, broadcast over the other axes of `type`."""

    name = "iota"
    traits = frozenset({SOURCE})
    arity = 0
    attributes = {"axis": A.INDEX, "type": A.TYPE}
    differentiable = False

    @classmethod
    def infer(cls, types, attrs):
        out = attrs["type"]
        if not 0 <= attrs["axis"] < out.rank:
            raise cls.error(f"axis {attrs['axis']} out of range for {out}")
        return out

    @classmethod
    def reference(cls, attrs, *args):
        out = attrs["type"]
        shape = [1] * out.rank
        shape[attrs["axis"]] = out.shape[attrs["axis"]]
        ramp = np.arange(out.shape[attrs["axis"]], dtype=out.np_dtype).reshape(shape)
        return np.array(np.broadcast_to(ramp, out.shape), order="C")


# --------------------------------------------------------------------------- elementwise


def _broadcast(cls, types) -> tuple[int, ...]:
    try:
        return broadcast_shapes(*(t.shape for t in types))
    except ValueError:
        raise cls.error("shapes do not broadcast", types) from None


def _same_dtype(cls, types) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise DTypeError(f"{cls.name}: operand dtypes differ ({format_types(types)}); ffcompile does not "
                         f"promote: convert one with .astype(...)")
    return types[0].dtype


class Unary(Op):
    traits = frozenset({ELEMENTWISE})
    float_only: ClassVar[bool] = True
    numpy_fn: ClassVar = None

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        if cls.float_only and not x.is_float:
            raise cls.error("needs a floating-point operand", types)
        if x.dtype == "bool":
            raise cls.error("does not take bool", types)
        return x

    @classmethod
    def reference(cls, attrs, x):
        return cls.numpy_fn(x)


@register
class Neg(Unary):
    name = "neg"
    float_only = False
    numpy_fn = staticmethod(np.negative)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [-g]


@register
class Exp(Unary):
    name = "exp"
    flops_per_element = 8
    numpy_fn = staticmethod(np.exp)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * out]


@register
class Expm1(Unary):
    """e^x - 1, exact near 0 where exp(x) - 1 cancels (elu's negative branch)."""

    name = "expm1"
    flops_per_element = 8
    numpy_fn = staticmethod(np.expm1)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * L.exp(inputs[0])]  # not out + 1, which cancels for x << 0


@register
class Log(Unary):
    name = "log"
    flops_per_element = 8
    numpy_fn = staticmethod(np.log)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g / inputs[0]]


@register
class Log1p(Unary):
    name = "log1p"
    flops_per_element = 8
    numpy_fn = staticmethod(np.log1p)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g / (inputs[0] + 1.0)]


@register
class Tanh(Unary):
    name = "tanh"
    flops_per_element = 10
    numpy_fn = staticmethod(np.tanh)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * (1.0 - out * out)]


@register
class Erf(Unary):
    name = "erf"
    flops_per_element = 12
    numpy_fn = _SpecialUfunc("erf")

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        return [g * (2.0 / math.sqrt(math.pi)) * L.exp(-(x * x))]


@register
class Sin(Unary):
    name = "sin"
    flops_per_element = 10
    numpy_fn = staticmethod(np.sin)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * L.cos(inputs[0])]


@register
class Cos(Unary):
    name = "cos"
    flops_per_element = 10
    numpy_fn = staticmethod(np.cos)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [-(g * L.sin(inputs[0]))]


@register
class Sqrt(Unary):
    name = "sqrt"
    flops_per_element = 4
    numpy_fn = staticmethod(np.sqrt)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * 0.5 / out]


@register
class Abs(Unary):
    name = "abs"
    float_only = False
    numpy_fn = staticmethod(np.abs)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * L.sign(inputs[0])]


@register
class Sign(Unary):
    name = "sign"
    float_only = False
    numpy_fn = staticmethod(np.sign)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [None]  # zero almost everywhere


@register
class Floor(Unary):
    name = "floor"
    numpy_fn = staticmethod(np.floor)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [None]  # zero almost everywhere (as in JAX and torch)


@register
class StopGradient(Unary):
    name = "stop_gradient"
    float_only = False
    numpy_fn = staticmethod(np.copy)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [None]


@register
class Pow(Unary):
    """x ** exponent for a constant exponent."""

    name = "pow"
    attributes = {"exponent": A.NUMBER}
    flops_per_element = 10

    @classmethod
    def reference(cls, attrs, x):
        return np.power(x, x.dtype.type(attrs["exponent"]))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        p = attrs["exponent"]
        if p == 0:
            return [None]
        if p == 1:
            return [g]
        if p == 2:
            return [g * 2.0 * inputs[0]]
        return [g * p * L.pow(inputs[0], p - 1)]


@register
class Convert(Unary):
    name = "convert"
    attributes = {"dtype": A.DTYPE}
    float_only = False

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        return x.with_dtype(attrs["dtype"])

    @classmethod
    def reference(cls, attrs, x):
        return x.astype(TensorType((), attrs["dtype"]).np_dtype)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        if not (x.type.is_float and out.type.is_float):
            return [None]
        return [L.convert(g, x.dtype)]


class Binary(Op):
    traits = frozenset({ELEMENTWISE})
    arity = 2
    numpy_fn: ClassVar = None
    allow_bool: ClassVar[bool] = False

    @classmethod
    def infer(cls, types, attrs):
        dtype = _same_dtype(cls, types)
        if dtype == "bool" and not cls.allow_bool:
            raise cls.error("does not take bool", types)
        return TensorType(_broadcast(cls, types), dtype)

    @classmethod
    def reference(cls, attrs, a, b):
        return cls.numpy_fn(a, b)


@register
class Add(Binary):
    name = "add"
    numpy_fn = staticmethod(np.add)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g, g]


@register
class Sub(Binary):
    name = "sub"
    numpy_fn = staticmethod(np.subtract)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g, -g]


@register
class Mul(Binary):
    name = "mul"
    numpy_fn = staticmethod(np.multiply)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        a, b = inputs
        return [g * b, g * a]


@register
class Div(Binary):
    name = "div"
    numpy_fn = staticmethod(np.divide)
    flops_per_element = 4

    @classmethod
    def infer(cls, types, attrs):
        out = super().infer(types, attrs)
        if not out.is_float:
            raise cls.error("needs floating-point operands", types)
        return out

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        a, b = inputs
        return [g / b, -(g * out / b)]


@register
class Maximum(Binary):
    """Ties share the gradient evenly, as in PyTorch and JAX (and reduce_max here)."""

    name = "maximum"
    numpy_fn = staticmethod(np.maximum)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        a, b = inputs
        return _tie_shared(a > b, a, b, g)


@register
class Minimum(Binary):
    """Ties share the gradient evenly, as in PyTorch and JAX."""

    name = "minimum"
    numpy_fn = staticmethod(np.minimum)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        a, b = inputs
        return _tie_shared(a < b, a, b, g)


def _tie_shared(first_wins, a, b, g) -> list:
    """The cotangents of an extremum: g to the winner, half each on a tie (with a NaN
    both comparisons are false and b gets g)."""
    to_a = L.where(first_wins, g, L.where(L.equal(a, b), 0.5 * g, 0.0))
    return [to_a, g - to_a]


class Compare(Binary):
    differentiable = False
    allow_bool = True

    @classmethod
    def infer(cls, types, attrs):
        return super().infer(types, attrs).with_dtype("bool")

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [None, None]


@register
class Gt(Compare):
    name = "gt"
    numpy_fn = staticmethod(np.greater)


@register
class Ge(Compare):
    name = "ge"
    numpy_fn = staticmethod(np.greater_equal)


@register
class Lt(Compare):
    name = "lt"
    numpy_fn = staticmethod(np.less)


@register
class Le(Compare):
    name = "le"
    numpy_fn = staticmethod(np.less_equal)


@register
class Eq(Compare):
    name = "eq"
    numpy_fn = staticmethod(np.equal)


@register
class Select(Op):
    """select(pred, a, b): a where pred else b, with broadcasting."""

    name = "select"
    traits = frozenset({ELEMENTWISE})
    arity = 3

    @classmethod
    def infer(cls, types, attrs):
        pred, a, b = types
        if pred.dtype != "bool":
            raise cls.error("predicate must be bool", types)
        dtype = _same_dtype(cls, [a, b])
        return TensorType(_broadcast(cls, types), dtype)

    @classmethod
    def reference(cls, attrs, pred, a, b):
        return np.where(pred, a, b)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        pred = inputs[0]
        return [None, L.where(pred, g, 0.0), L.where(pred, 0.0, g)]


# --------------------------------------------------------------------------- reductions


class Reduce(Op):
    traits = frozenset({REDUCTION})
    attributes = {"axes": A.INDICES, "keepdims": A.BOOL}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        axes = attrs["axes"]
        if x.dtype == "bool":
            raise cls.error("does not take bool", types)
        if list(axes) != sorted(set(axes)) or any(not 0 <= a < x.rank for a in axes):
            raise cls.error(f"axes {list(axes)} must be sorted, unique and within rank {x.rank}", types)
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return x.with_shape(shape)

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(types[0].size, types[0].nbytes + out.nbytes)


def _keepdims_shape(x_shape, axes):
    return tuple(1 if i in axes else d for i, d in enumerate(x_shape))


@register
class ReduceSum(Reduce):
    name = "reduce_sum"

    @classmethod
    def reference(cls, attrs, x):
        return np.sum(x, axis=attrs["axes"], keepdims=attrs["keepdims"], dtype=x.dtype)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        kept = L.reshape(g, _keepdims_shape(x.shape, attrs["axes"]))
        return [L.broadcast_to(kept, x.shape)]


@register
class ReduceMax(Reduce):
    """Gradient is shared evenly between tied maxima (as in JAX)."""

    name = "reduce_max"

    @classmethod
    def infer(cls, types, attrs):
        out = super().infer(types, attrs)
        if any(types[0].shape[a] == 0 for a in attrs["axes"]):
            raise cls.error(f"the maximum over an empty axis (axes {list(attrs['axes'])}) has no value", types)
        return out

    @classmethod
    def reference(cls, attrs, x):
        return np.max(x, axis=attrs["axes"], keepdims=attrs["keepdims"])

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        shape = _keepdims_shape(x.shape, attrs["axes"])
        mask = L.convert(L.equal(x, L.reshape(out, shape)), x.dtype)
        count = L.reduce_sum(mask, attrs["axes"], keepdims=True)
        return [mask * (L.reshape(g, shape) / count)]


# --------------------------------------------------------------------------- contraction


@register
class Matmul(Op):
    """[..., m, k] @ [..., k, n] -> [..., m, n]; batch dimensions broadcast."""

    name = "matmul"
    traits = frozenset({CONTRACTION})
    arity = 2

    @classmethod
    def infer(cls, types, attrs):
        a, b = types
        dtype = _same_dtype(cls, types)
        if a.rank < 2 or b.rank < 2:
            raise cls.error("operands must have rank >= 2", types)
        if a.shape[-1] != b.shape[-2]:
            raise cls.error(f"contracting dimensions differ ({a.shape[-1]} vs {b.shape[-2]})", types)
        if dtype == "bool":
            raise cls.error("does not take bool", types)
        try:
            batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise cls.error("batch dimensions do not broadcast", types) from None
        return TensorType(tuple(batch) + (a.shape[-2], b.shape[-1]), dtype)

    @classmethod
    def reference(cls, attrs, a, b):
        return np.matmul(a, b)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        a, b = inputs
        return [L.matmul(g, L.swap_last(b)), L.matmul(L.swap_last(a), g)]

    @classmethod
    def cost(cls, types, out, attrs):
        k = types[0].shape[-1]
        return Cost(2 * out.size * k, sum(t.nbytes for t in types) + out.nbytes)


# --------------------------------------------------------------------------- layout


class Layout(Op):
    traits = frozenset({LAYOUT})

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(0, sum(t.nbytes for t in types) + out.nbytes)


@register
class Transpose(Layout):
    name = "transpose"
    attributes = {"perm": A.INDICES}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        perm = attrs["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise cls.error(f"perm {list(perm)} is not a permutation of rank {x.rank}", types)
        return x.with_shape(tuple(x.shape[p] for p in perm))

    @classmethod
    def reference(cls, attrs, x):
        return np.transpose(x, attrs["perm"])

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [L.transpose(g, tuple(np.argsort(attrs["perm"]).tolist()))]


@register
class Reshape(Layout):
    name = "reshape"
    attributes = {"shape": A.DIMS}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        shape = tuple(attrs["shape"])
        if math.prod(shape) != x.size:
            raise cls.error(f"cannot reshape to {list(shape)}", types)
        return x.with_shape(shape)

    @classmethod
    def reference(cls, attrs, x):
        return np.reshape(x, attrs["shape"])

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [L.reshape(g, inputs[0].shape)]


@register
class Broadcast(Layout):
    """NumPy broadcast_to(x, shape)."""

    name = "broadcast"
    attributes = {"shape": A.DIMS}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        shape = tuple(attrs["shape"])
        try:
            ok = broadcast_shapes(x.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise cls.error(f"cannot broadcast to {list(shape)}", types)
        return x.with_shape(shape)

    @classmethod
    def reference(cls, attrs, x):
        return np.array(np.broadcast_to(x, attrs["shape"]), order="C")

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g]  # autodiff sums over the broadcast axes


@register
class Concat(Layout):
    name = "concat"
    arity = None
    attributes = {"axis": A.INDEX}

    @classmethod
    def infer(cls, types, attrs):
        axis = attrs["axis"]
        if not types:
            raise cls.error("needs at least one operand")
        first = types[0]
        if not 0 <= axis < first.rank:
            raise cls.error(f"axis {axis} out of range", types)
        _same_dtype(cls, types)
        for t in types:
            if t.rank != first.rank or any(
                d != e for i, (d, e) in enumerate(zip(t.shape, first.shape)) if i != axis
            ):
                raise cls.error(f"shapes differ outside axis {axis}", types)
        shape = list(first.shape)
        shape[axis] = sum(t.shape[axis] for t in types)
        return first.with_shape(shape)

    @classmethod
    def reference(cls, attrs, *xs):
        return np.concatenate(xs, axis=attrs["axis"])

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        axis, start, grads = attrs["axis"], 0, []
        for x in inputs:
            stop = start + x.shape[axis]
            starts = tuple(start if i == axis else 0 for i in range(x.ndim))
            stops = tuple(stop if i == axis else d for i, d in enumerate(out.shape))
            grads.append(L.slice_(g, starts, stops, (1,) * x.ndim))
            start = stop
        return grads


@register
class Slice(Layout):
    """Basic slicing with per-axis start, stop and positive step."""

    name = "slice"
    attributes = {"starts": A.INDICES, "stops": A.DIMS, "steps": A.INDICES}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
        if not len(starts) == len(stops) == len(steps) == x.rank:
            raise cls.error("starts/stops/steps must have one entry per axis", types)
        shape = []
        for d, lo, hi, st in zip(x.shape, starts, stops, steps):
            if st < 1 or not 0 <= lo <= hi <= d:
                raise cls.error(f"bad slice {lo}:{hi}:{st} of an axis of size {d}", types)
            whole = (lo, hi, st) == (0, d, 1)  # the one slice of a symbolic axis: all of it
            shape.append(d if whole else len(range(lo, hi, st)))
        return x.with_shape(shape)

    @staticmethod
    def index(attrs) -> tuple[slice, ...]:
        """The NumPy index that takes this slice."""
        return tuple(slice(*s) for s in zip(attrs["starts"], attrs["stops"], attrs["steps"]))

    @classmethod
    def reference(cls, attrs, x):
        return np.array(x[cls.index(attrs)], order="C")

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        config = []
        for d, lo, n, st in zip(x.shape, attrs["starts"], out.shape, attrs["steps"]):
            if (lo, n, st) == (0, d, 1):  # the whole axis (maybe symbolic): no padding
                config.append((0, 0, 0))
                continue
            last = lo + (n - 1) * st if n else lo
            config.append((lo, d - last - 1 if n else d - lo, st - 1))
        return [L.pad(g, tuple(config))]


@register
class Pad(Layout):
    """Zero padding: per axis (low, high, interior) as in XLA's Pad; slice's transpose."""

    name = "pad"
    attributes = {"config": A.TRIPLES}

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        config = attrs["config"]
        if len(config) != x.rank or any(len(c) != 3 or min(c) < 0 for c in config):
            raise cls.error(f"config {config} needs a non-negative (low, high, interior) per axis", types)
        shape = [d if (lo, hi, it) == (0, 0, 0) else lo + hi + d + max(d - 1, 0) * it  # d may be symbolic
                 for d, (lo, hi, it) in zip(x.shape, config)]
        return x.with_shape(shape)

    @staticmethod
    def index(config, shape) -> tuple[slice, ...]:
        """The NumPy index of the padded array that holds the operand (of `shape`)."""
        return tuple(slice(lo, lo + (d - 1) * (it + 1) + 1, it + 1) if d else slice(0, 0)
                     for d, (lo, hi, it) in zip(shape, config))

    @classmethod
    def reference(cls, attrs, x):
        out = np.zeros(cls.infer([TensorType.of(x)], attrs).shape, dtype=x.dtype)
        out[cls.index(attrs["config"], x.shape)] = x
        return out

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        x = inputs[0]
        starts = tuple(lo for lo, _, _ in attrs["config"])
        steps = tuple(it + 1 for _, _, it in attrs["config"])
        stops = tuple(d if (lo, st) == (0, 1) else lo + (d - 1) * st + 1 if d else lo
                      for d, lo, st in zip(x.shape, starts, steps))
        return [L.slice_(g, starts, stops, steps)]


# --------------------------------------------------------------------------- composites


class Composite(Op):
    """An op defined by `decompose`; kept whole until after autodiff for its VJP."""

    traits = frozenset({COMPOSITE, ELEMENTWISE})

    @classmethod
    def decompose(cls, inputs: list, attrs: dict):
        raise NotImplementedError

    @classmethod
    def infer(cls, types, attrs):
        (x,) = types
        if not x.is_float:
            raise cls.error("needs a floating-point operand", types)
        return x


@register
class Sigmoid(Composite):
    name = "sigmoid"
    flops_per_element = 12

    @classmethod
    def reference(cls, attrs, x):
        return _special("expit")(x)

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        e = L.exp(-L.abs_(x))  # in (0, 1]: never overflows
        return L.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * out * (1.0 - out)]


@register
class LogSigmoid(Composite):
    name = "log_sigmoid"
    flops_per_element = 20

    @classmethod
    def reference(cls, attrs, x):
        return -np.logaddexp(x.dtype.type(0), -x)

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        return L.minimum(x, 0.0) - L.log1p(L.exp(-L.abs_(x)))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * L.sigmoid(-inputs[0])]


@register
class Softplus(Composite):
    name = "softplus"
    flops_per_element = 20

    @classmethod
    def reference(cls, attrs, x):
        return np.logaddexp(x.dtype.type(0), x)

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        return L.maximum(x, 0.0) + L.log1p(L.exp(-L.abs_(x)))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        return [g * L.sigmoid(inputs[0])]


@register
class Gelu(Composite):
    """GELU, exact (erf) or in its tanh approximation. Its own VJP reads x and the
    forward's erf/tanh (shared by CSE): differentiating the decomposed formula instead
    kept six intermediates per element for the backward pass (wide: 28 MB written per
    layer, 40 MB read back)."""

    name = "gelu"
    FORMS = ("none", "tanh")
    attributes = {"approximate": A.one_of(*FORMS)}
    flops_per_element = 25
    TANH_SCALE = math.sqrt(2.0 / math.pi)
    TANH_CUBIC = 0.044715

    @classmethod
    def reference(cls, attrs, x):
        if attrs["approximate"] == "tanh":
            return 0.5 * x * (1.0 + np.tanh(cls.TANH_SCALE * (x + cls.TANH_CUBIC * x * x * x)))
        return 0.5 * x * (1.0 + _special("erf")(x * (1.0 / math.sqrt(2.0))))

    @classmethod
    def _gate(cls, x, attrs):
        """The erf or tanh term: gelu(x) = 0.5 x (1 + gate)."""
        if attrs["approximate"] == "tanh":
            return L.tanh(cls.TANH_SCALE * (x + cls.TANH_CUBIC * x * x * x))
        return L.erf(x * (1.0 / math.sqrt(2.0)))

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        return 0.5 * x * (1.0 + cls._gate(x, attrs))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        (x,) = inputs
        gate = cls._gate(x, attrs)
        if attrs["approximate"] == "tanh":
            slope = (1.0 - gate * gate) * (cls.TANH_SCALE * (1.0 + 3.0 * cls.TANH_CUBIC * x * x))
        else:
            slope = L.exp(-0.5 * x * x) * (2.0 / math.sqrt(2.0 * math.pi))  # 2 d/dx Phi(x)
        # Written so no subexpression but the gate equals one of the forward's (CSE would
        # share it, and the forward kernel would store it for the backward).
        return [g * (0.5 + 0.5 * gate + x * (0.5 * slope))]


class AxisComposite(Composite):
    """A composite normalizing along one axis (softmax family)."""

    traits = frozenset({COMPOSITE, REDUCTION})
    attributes = {"axis": A.INDEX}

    @classmethod
    def infer(cls, types, attrs):
        out = super().infer(types, attrs)
        if not 0 <= attrs["axis"] < out.rank:
            raise cls.error(f"axis {attrs['axis']} out of range", types)
        return out


def _np_log_softmax(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@register
class Softmax(AxisComposite):
    name = "softmax"
    flops_per_element = 12

    @classmethod
    def reference(cls, attrs, x):
        e = np.exp(x - np.max(x, axis=attrs["axis"], keepdims=True))
        return e / np.sum(e, axis=attrs["axis"], keepdims=True)

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        axis = attrs["axis"]
        e = L.exp(x - L.stop_gradient(L.reduce_max(x, (axis,), keepdims=True)))
        return e / L.reduce_sum(e, (axis,), keepdims=True)

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        inner = L.reduce_sum(g * out, (attrs["axis"],), keepdims=True)
        return [out * (g - inner)]


@register
class LogSoftmax(AxisComposite):
    name = "log_softmax"
    flops_per_element = 12

    @classmethod
    def reference(cls, attrs, x):
        return _np_log_softmax(x, attrs["axis"])

    @classmethod
    def decompose(cls, inputs, attrs):
        (x,) = inputs
        axis = attrs["axis"]
        shifted = x - L.stop_gradient(L.reduce_max(x, (axis,), keepdims=True))
        return shifted - L.log(L.reduce_sum(L.exp(shifted), (axis,), keepdims=True))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        total = L.reduce_sum(g, (attrs["axis"],), keepdims=True)
        return [g - L.exp(out) * total]


@register
class SoftmaxCrossEntropy(Composite):
    """Per-example -sum(targets * log_softmax(logits)) over the last axis."""

    name = "softmax_cross_entropy"
    traits = frozenset({COMPOSITE, REDUCTION})
    arity = 2
    flops_per_element = 16

    @classmethod
    def infer(cls, types, attrs):
        logits, targets = types
        if logits != targets or not logits.is_float or logits.rank < 1:
            raise cls.error("logits and targets must share one float type of rank >= 1", types)
        return logits.with_shape(logits.shape[:-1])

    @classmethod
    def reference(cls, attrs, logits, targets):
        return -np.sum(targets * _np_log_softmax(logits, -1), axis=-1)

    @classmethod
    def decompose(cls, inputs, attrs):
        logits, targets = inputs
        axis = logits.ndim - 1
        return -L.reduce_sum(targets * L.log_softmax(logits, axis), (axis,))

    @classmethod
    def vjp(cls, inputs, out, g, attrs):
        logits, targets = inputs
        axis = logits.ndim - 1
        g_col = L.reshape(g, out.shape + (1,))
        total = L.reduce_sum(targets, (axis,), keepdims=True)
        grad_logits = g_col * (L.softmax(logits, axis) * total - targets)
        grad_targets = -(g_col * L.log_softmax(logits, axis))
        return [grad_logits, grad_targets]

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(types[0].size * cls.flops_per_element, 2 * types[0].nbytes + out.nbytes)


# --------------------------------------------------------------------------- random bits


THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
THREEFRY_PARITY = 0x1BD11BDA  # Skein's key-schedule constant, as Random123 and JAX use


def threefry2x32_rounds(k0, k1, x0, x1, *, add, xor, rotl, const):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011): the one round schedule the NumPy
    reference and the LLVM lowering both run, over whatever uint32 arithmetic they pass in
    (`const` makes a word from a Python int). Returns the two output words."""
    keys = (k0, k1, xor(xor(k0, k1), const(THREEFRY_PARITY)))
    x0, x1 = add(x0, keys[0]), add(x1, keys[1])
    for block in range(5):
        for r in THREEFRY_ROTATIONS[block % 2]:
            x0 = add(x0, x1)
            x1 = xor(rotl(x1, r), x0)
        x0 = add(x0, keys[(block + 1) % 3])
        x1 = add(add(x1, keys[(block + 2) % 3]), const(block + 1))
    return x0, x1


def _as_uint32(a: np.ndarray, shape) -> np.ndarray:
    """An i32 operand's bits as a writable uint32 array of `shape` (array arithmetic wraps
    silently; NumPy scalars would warn on overflow)."""
    return np.array(np.broadcast_to(np.asarray(a, np.int32), shape)).view(np.uint32)


@register
class Threefry2x32(Op):
    """The Threefry-2x32 block cipher, elementwise: key words k0, k1 and counter words c0, c1
    (i32 holding uint32 bits, with broadcasting) to one i32 word of ciphertext: `x0`, `x1`,
    or `xor` (x0 ^ x1, JAX's 32 random bits per counter). Non-differentiable: random bits
    are a function of integers only."""

    name = "threefry2x32"
    traits = frozenset({ELEMENTWISE})
    arity = 4
    OUTPUTS = ("x0", "x1", "xor")
    attributes = {"output": A.one_of(*OUTPUTS)}
    differentiable = False
    flops_per_element = 120  # 20 rounds of add, rotate, xor + 6 key injections

    @classmethod
    def infer(cls, types, attrs):
        if any(t.dtype != "i32" for t in types):
            raise cls.error("key and counter words must be i32", types)
        return TensorType(_broadcast(cls, types), "i32")

    @classmethod
    def reference(cls, attrs, k0, k1, c0, c1):
        shape = np.broadcast_shapes(*(np.shape(a) for a in (k0, k1, c0, c1)))
        words = [_as_uint32(a, shape) for a in (k0, k1, c0, c1)]
        x0, x1 = threefry2x32_rounds(
            *words, add=np.add, xor=np.bitwise_xor, const=np.uint32,
            rotl=lambda x, r: (x << np.uint32(r)) | (x >> np.uint32(32 - r)))
        if attrs["output"] == "xor":
            return (x0 ^ x1).view(np.int32)
        return (x0 if attrs["output"] == "x0" else x1).view(np.int32)


@register
class AllReduce(Op):
    """The mean over the ranks of communication group `group` (ir/collectives.py) of its
    operands, flattened and concatenated: one gradient bucket of data-parallel training.
    Every rank runs the same all_reduces, with operands of the same types, in the same order."""

    name = "all_reduce"
    traits = frozenset({COLLECTIVE})
    arity = None
    attributes = {"bucket": A.INDEX, "group": A.INDEX}
    differentiable = False

    @classmethod
    def infer(cls, types, attrs):
        if not types:
            raise cls.error("needs at least one operand")
        _same_dtype(cls, types)
        if not types[0].is_float:
            raise cls.error("averages floating-point operands only", types)
        return types[0].with_shape((sum(t.size for t in types),))

    @classmethod
    def reference(cls, attrs, *xs):
        flat = np.concatenate([np.ravel(x) for x in xs])
        return collectives.all_reduce_mean(attrs["group"], flat)

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(out.size, 2 * out.nbytes)


PRIMITIVES = {name: op for name, op in OPS.items() if COMPOSITE not in op.traits}
COMPOSITES = {name: op for name, op in OPS.items() if COMPOSITE in op.traits}
