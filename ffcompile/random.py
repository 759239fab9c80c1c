"""Random numbers with explicit keys, as in JAX: counter-based Threefry-2x32 (20 rounds).

A key is an i32[2] array: the two 32-bit words (hi, lo) of JAX's raw threefry key, held
as int32 bits (`key(seed)` for a seed below 2**32 is [0, seed]). Nothing is stateful:
the same key gives the same numbers, so pass a fresh key (from `split` or `fold_in`)
wherever you want fresh numbers, e.g. as an argument of a compiled training step.

Element i (row-major flat index) of a sample of any shape is Threefry-2x32 of the key
and the counter (0, i): the bits come from the `threefry2x32` op inside the compiled
program, an integer-only elementwise loop, so they do not depend on the backend, the
vector width or the thread count. The streams are JAX's with jax_threefry_partitionable
(its default): `split`, `fold_in`, `bits`, `uniform` and `bernoulli` on [0, 1) give
JAX's values bit for bit, on both backends. `normal` is sqrt(2) erfinv(u) as in JAX;
it goes through log and sqrt, whose last bits differ between the LLVM math library
and NumPy, so across backends it agrees to float rounding, not bit for bit (on one
backend it is the same for every thread count). A scaled `uniform` (other minval,
maxval) may differ in its last bit where LLVM fuses the multiply-add.

Every function works on arrays (evaluated at once by the reference interpreter) and
on traced values inside `ff.compile`/`ff.grad` (random numbers carry no gradient).
`permutation` alone runs on the host only (it sorts, and the IR has no sort).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .ir import Builder, TensorType
from .ir import lang as L
from .ir.interpret import interpret
from .ir.lang import Value
from .ir.symbolic import Sym, as_dim
from .ir.types import dtype_name

__all__ = ["bernoulli", "bits", "fold_in", "key", "normal", "permutation", "split", "uniform"]

_WORD = 0xFFFFFFFF


def key(seed) -> np.ndarray:
    """The key of an integer seed (-2**63 <= seed < 2**64): its 64 bits as (hi, lo) words."""
    if isinstance(seed, Value):
        if seed.shape != () or seed.dtype != "i32":
            raise TypeError(f"ff.random.key: a traced seed must be an i32 scalar, got {seed.type}")
        return L.concatenate([L.constant(seed.builder, [0], "i32"), L.reshape(seed, (1,))])
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"ff.random.key: the seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"ff.random.key: the seed {seed} does not fit in 64 bits")
    return np.array([(seed >> 32) & _WORD, seed & _WORD], dtype=np.uint32).view(np.int32)


def split(key, num: int = 2):
    """`num` new keys from one, as an i32[num, 2] array (unpack: `a, b = split(key)`)."""
    _check_count("split", num)
    return _dispatch(lambda k: _split(k, num), "split", key)


def fold_in(key, data):
    """A new key from a key and an integer (a step number, a layer index), as JAX's fold_in."""
    if not isinstance(data, Value):
        data = np.asarray(np.uint32(int(data) & _WORD)).view(np.int32)
    return _dispatch(_fold_in, "fold_in", key, data)


def bits(key, shape=()):
    """32 random bits per element, as i32 (JAX's `random.bits` viewed as int32)."""
    shape = _check_shape("bits", shape)
    return _dispatch(lambda k: _bits(k, shape, "xor"), "bits", key)


def uniform(key, shape=(), dtype="float32", minval=0.0, maxval=1.0):
    """Uniform floats in [minval, maxval) (f32: 23 random mantissa bits, f64: 52)."""
    shape, dtype = _check_shape("uniform", shape), _float_dtype("uniform", dtype)
    return _dispatch(lambda k, lo, hi: _uniform(k, shape, dtype, lo, hi), "uniform", key, minval, maxval)


def normal(key, shape=(), dtype="float32"):
    """Standard normal floats: sqrt(2) erfinv(u) for u uniform in (-1, 1), as JAX samples them."""
    shape, dtype = _check_shape("normal", shape), _float_dtype("normal", dtype)
    return _dispatch(lambda k: _normal(k, shape, dtype), "normal", key)


def bernoulli(key, p=0.5, shape=None):
    """Booleans, True with probability p (a float or an array broadcasting to `shape`)."""
    if shape is None:
        shape = np.shape(p) if not isinstance(p, Value) else p.shape
    shape = _check_shape("bernoulli", shape)
    def sample(k, q):
        dtype = q.dtype if isinstance(q, Value) and q.type.is_float else "f32"
        return _uniform(k, shape, dtype, 0.0, 1.0) < q
    return _dispatch(sample, "bernoulli", key, p)


def permutation(key, n) -> np.ndarray:
    """A random permutation of range(n) (or of an array's first axis), computed on the host:
    JAX's shuffle (stable sorts by fresh random bits; more than one round above ~1600
    elements), so it equals jax.random.permutation. It sorts, which the IR cannot, so it
    refuses traced keys: shuffle a data set between epochs outside the compiled step."""
    if isinstance(key, Value) or isinstance(n, Value):
        raise TypeError("ff.random.permutation runs on the host (it sorts): call it outside "
                        "ff.compile, e.g. to shuffle the data set between epochs")
    x = np.arange(n) if isinstance(n, numbers.Integral) else np.asarray(n)
    if x.ndim == 0:
        raise TypeError(f"ff.random.permutation: n must be an integer or an array, got {n!r}")
    rounds = math.ceil(3 * math.log(max(1, len(x))) / math.log(_WORD))
    for _ in range(rounds):
        key, subkey = split(key)
        order = np.argsort(bits(subkey, (len(x),)).view(np.uint32), kind="stable")
        x = x[order]
    return x


# --------------------------------------------------------------------------- traced forms


def _words(key: Value) -> tuple[Value, Value]:
    return L.reshape(key[0:1], ()), L.reshape(key[1:2], ())


def _flat_index(builder: Builder, shape) -> Value:
    """The row-major index of every element of `shape` as i32: the threefry counter."""
    if not shape:
        return L.constant(builder, 0, "i32")
    index = L.iota(builder, shape, 0, "i32") * math.prod(shape[1:])
    for axis in range(1, len(shape)):
        index = index + L.iota(builder, shape, axis, "i32") * math.prod(shape[axis + 1:])
    return index


def _bits(key: Value, shape, output: str) -> Value:
    k0, k1 = _words(key)
    return L.threefry2x32(k0, k1, 0, _flat_index(key.builder, shape), output=output)


def _split(key: Value, num: int) -> Value:
    words = [L.reshape(_bits(key, (num,), out), (num, 1)) for out in ("x0", "x1")]
    return L.concatenate(words, axis=1)


def _fold_in(key: Value, data: Value) -> Value:
    k0, k1 = _words(key)
    if data.shape != () or data.dtype != "i32":
        raise TypeError(f"ff.random.fold_in: data must be an integer scalar, got {data.type}")
    return L.concatenate([L.reshape(L.threefry2x32(k0, k1, 0, data, output=out), (1,))
                          for out in ("x0", "x1")])


def _unsigned(word: Value) -> Value:
    """An i32 word's uint32 value, exactly, as f64."""
    as_float = L.convert(word, "f64")
    return L.where(word < 0, as_float + 2.0**32, as_float)


def _unit_interval(key: Value, shape, dtype: str) -> Value:
    """JAX's uniform on [0, 1): the top mantissa-many bits over 2**mantissa, computed exactly
    in f64 (the IR has no shifts or bitcasts)."""
    if dtype == "f32":
        mantissa = L.floor(_unsigned(_bits(key, shape, "xor")) * 2.0**-9)
        return L.convert(mantissa * 2.0**-23, "f32")
    hi, lo = (_unsigned(_bits(key, shape, out)) for out in ("x0", "x1"))
    return (hi * 2.0**20 + L.floor(lo * 2.0**-12)) * 2.0**-52  # bits (hi << 32 | lo) >> 12


def _uniform(key: Value, shape, dtype: str, minval, maxval) -> Value:
    unit = _unit_interval(key, shape, dtype)
    lo, hi = (L.convert(v, dtype) if isinstance(v, Value) else TensorType((), dtype).np_dtype.type(v)
              for v in (minval, maxval))
    if isinstance(lo, Value) or isinstance(hi, Value):
        scale = hi - lo
    elif (lo, hi) == (0, 1):
        return unit
    else:
        lo, scale = float(lo), float(hi - lo)  # the width rounded to dtype, as JAX computes it
    return L.maximum(unit * scale + lo, lo)


def _normal(key: Value, shape, dtype: str) -> Value:
    np_dtype = TensorType((), dtype).np_dtype
    u = _uniform(key, shape, dtype, float(np.nextafter(np_dtype.type(-1), np_dtype.type(0))), 1.0)
    return math.sqrt(2.0) * _erfinv(u, dtype)


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision:
# the polynomials XLA's ErfInv evaluates, highest coefficient first.
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _erfinv(u: Value, dtype: str) -> Value:
    """erfinv on (-1, 1): Giles' approximation (relative error below 4e-7), refined for f64
    by one Newton step on erf (the error squares)."""
    w = -L.log1p(-u * u)
    central, tail = w - 2.5, L.sqrt(L.maximum(w, 5.0)) - 3.0
    x = u * L.where(w < 5.0, _horner(_ERFINV_CENTRAL, central), _horner(_ERFINV_TAIL, tail))
    if dtype == "f64":
        x = x - (L.erf(x) - u) / (2.0 / math.sqrt(math.pi) * L.exp(-x * x))
    return x


def _horner(coefficients, x: Value) -> Value:
    p = coefficients[0]
    for c in coefficients[1:]:
        p = p * x + c
    return p


# --------------------------------------------------------------------------- dispatch and checks


def _dispatch(fn, what: str, key, *args):
    """fn(key, *args) traced where any argument is a traced value; otherwise evaluated now,
    by the reference interpreter over a graph whose inputs are the array arguments."""
    args = tuple(a if isinstance(a, Value) or (isinstance(a, numbers.Number) and not isinstance(a, np.generic))
                 else np.asarray(a) for a in args)
    if isinstance(key, Value) or any(isinstance(a, Value) for a in args):
        builder = L.builder_of((key, *args))
        key = L.lift(builder, _check_key(what, key), None)
        _check_key_type(what, key.type)
        return fn(key, *(L.lift(builder, a, None) if isinstance(a, np.ndarray) else a for a in args))
    builder = Builder(f"random.{what}")
    arrays = [_check_key(what, key)] + [a for a in args if isinstance(a, np.ndarray)]
    inputs = iter([Value(builder, builder.add_input(TensorType.of(a), f"a{k}")) for k, a in enumerate(arrays)])
    traced = fn(next(inputs), *(next(inputs) if isinstance(a, np.ndarray) else a for a in args))
    return interpret(builder.finish([traced.id]), arrays)[0]


def _check_key(what: str, key):
    if isinstance(key, Value):
        return key
    array = np.asarray(key)
    if array.dtype == np.uint32:
        array = array.view(np.int32)  # a raw JAX key
    _check_key_type(what, TensorType.of(array))
    return array


def _check_key_type(what: str, type_: TensorType) -> None:
    if type_ != TensorType((2,), "i32"):
        raise TypeError(f"ff.random.{what}: a key is an i32[2] array (from ff.random.key, split "
                        f"or fold_in), got {type_}")


def _check_shape(what: str, shape) -> tuple[int | Sym, ...]:
    """The sample's shape; a symbolic batch size (x.shape under batch_dim=) is kept as it is."""
    shape = (shape,) if isinstance(shape, (numbers.Integral, Sym)) else tuple(shape)
    if any(not isinstance(d, Sym) and (not isinstance(d, numbers.Integral) or d < 0) for d in shape):
        raise ValueError(f"ff.random.{what}: shape must be non-negative integers, got {shape}")
    count = math.prod(shape)
    # A symbolic count is not checked here: it passes the counter only for a batch of more
    # than 2**31 / (elements per row) rows (docs/symbolic_batch.md).
    if not isinstance(count, Sym) and count >= 2**31:
        raise ValueError(f"ff.random.{what}: {count} elements exceed the i32 counter "
                         f"(at most 2**31 - 1 per sample; split the key for more)")
    return tuple(as_dim(d) for d in shape)


def _check_count(what: str, num) -> None:
    if not isinstance(num, numbers.Integral) or num < 1:
        raise ValueError(f"ff.random.{what}: num must be a positive integer, got {num!r}")


def _float_dtype(what: str, dtype) -> str:
    name = dtype_name(dtype)
    if name not in ("f32", "f64"):
        raise TypeError(f"ff.random.{what}: dtype must be float32 or float64, got {name}")
    return name
