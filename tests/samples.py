"""Sample inputs for every op and every ff. function, shared by the test modules.

OP_CASES and FUNCTION_CASES: per op (per public function) a few generators of
domain-appropriate float64 inputs on random shapes (away from kinks, ties and
poles). test_registry fails when a new op or function has no entry here; the
gradient, IR-text and torch-oracle tests reuse the same tables.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import scipy.special

import ffcompile as ff
from ffcompile import functions
from ffcompile.ir.interpret import interpret
from ffcompile.ir import Builder, TensorType, verify
from ffcompile.ir.ops import OPS
from ffcompile.passes.decompose import decompose


# --------------------------------------------------------------------------- input domains


def rand_shape(rng, min_rank=0, max_rank=3, min_dim=1) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(min_dim, 5, size=rng.integers(min_rank, max_rank + 1)))


def partner_shape(rng, shape) -> tuple[int, ...]:
    """A random shape that broadcasts against `shape` (a suffix, some dims set to 1)."""
    tail = shape[len(shape) - int(rng.integers(0, len(shape) + 1)):]
    return tuple(1 if rng.random() < 0.3 else d for d in tail)


def normal(rng, shape, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=np.float64)


def positive(rng, shape):
    return np.asarray(rng.uniform(0.5, 2.0, shape), dtype=np.float64)


def wide_floats(rng, shape):
    """Integers, halves and values of either sign: where floor rounds, and where it must not."""
    return np.asarray(rng.choice([-3.0, -0.5, 0.0, 1.0, 2.5], shape) + rng.uniform(-1.0, 1.0, shape)
                      * rng.choice([0.0, 1.0], shape), dtype=np.float64)


def off_integers(rng, shape):
    """At least 0.1 from every integer: floor's gradient is 0 there, and finite differences see it."""
    return np.asarray(rng.integers(-3, 3, shape) + rng.uniform(0.1, 0.9, shape), dtype=np.float64)


def nonzero(rng, shape):
    """Away from 0, where relu, abs, sign, step, leaky_relu and elu have kinks."""
    return np.asarray(rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape), dtype=np.float64)


def on_grid(rng, shape, offset):
    """Values k/2 + offset (+ small noise): operands on offset 0 and 0.25 never tie."""
    jitter = rng.uniform(-0.05, 0.05, shape)
    return np.asarray(rng.integers(-4, 4, shape) * 0.5 + offset + jitter, dtype=np.float64)


def distinct(rng, shape):
    """All values at least 0.2 apart: reductions by max have no ties."""
    size = math.prod(shape)
    values = rng.permutation(size) * 0.25 - size * 0.125 + rng.uniform(0, 0.05, size)
    return np.asarray(values.reshape(shape), dtype=np.float64)


def case_rng(*key) -> np.random.Generator:
    """A generator seeded by a case's name: reproducible, different per case."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# --------------------------------------------------------------------------- op cases

# name -> list of rng -> (attrs, operands)
OpCase = Callable[[np.random.Generator], tuple[dict, list[np.ndarray]]]


def unary(domain, **attrs) -> OpCase:
    return lambda rng: (attrs, [domain(rng, rand_shape(rng))])


def binary(domain_a, domain_b=None) -> OpCase:
    def make(rng):
        shape = rand_shape(rng, 1)
        a, b = shape, partner_shape(rng, shape)
        if rng.random() < 0.5:
            a, b = b, a
        return {}, [domain_a(rng, a), (domain_b or domain_a)(rng, b)]
    return make


def no_ties(rng, shape_a, shape_b):
    return [on_grid(rng, shape_a, 0.0), on_grid(rng, shape_b, 0.25)]


def untied_binary(rng):
    shape = rand_shape(rng, 1)
    return {}, no_ties(rng, shape, partner_shape(rng, shape))


def reduce_case(domain, keepdims) -> OpCase:
    def make(rng):
        shape = rand_shape(rng, 1, 3)
        axes = tuple(sorted(set(int(a) for a in rng.integers(0, len(shape), size=2))))
        return {"axes": axes, "keepdims": keepdims}, [domain(rng, shape)]
    return make


def fixed(attrs, *shapes, domain=normal) -> OpCase:
    return lambda rng: (attrs, [domain(rng, s) for s in shapes])


def select_case(rng):
    shape = rand_shape(rng, 1)
    pred = rng.random(partner_shape(rng, shape)) < 0.5
    return {}, [pred, normal(rng, shape), normal(rng, partner_shape(rng, shape))]


def compare_case(rng):
    shape = rand_shape(rng, 1)
    a, b = on_grid(rng, shape, 0.0), on_grid(rng, partner_shape(rng, shape), 0.0)
    return {}, [a, b]  # grid values: some equal, so eq is exercised


def threefry_case(rng):
    """Key words as scalars (how ff.random uses them) or arrays, counters of any i32 bits."""
    shape = rand_shape(rng, 1)
    words = lambda s: rng.integers(-2**31, 2**31, s, dtype=np.int64).astype(np.int32)
    return {"output": str(rng.choice(["x0", "x1", "xor"]))}, \
        [words(()), words(partner_shape(rng, shape)), words(partner_shape(rng, shape)), words(shape)]


def softmax_case(max_rank=3) -> OpCase:
    def make(rng):
        shape = rand_shape(rng, 1, max_rank)
        return {"axis": int(rng.integers(0, len(shape)))}, [normal(rng, shape, 2.0)]
    return make


def cross_entropy_case(rng):
    shape = rand_shape(rng, 1, 2) + (int(rng.integers(2, 6)),)
    targets = scipy.special.softmax(rng.standard_normal(shape), axis=-1)
    return {}, [normal(rng, shape, 2.0), targets]


def slice_case(rng):
    shape = tuple(int(d) for d in rng.integers(3, 8, size=2))
    starts = tuple(int(rng.integers(0, d // 2)) for d in shape)
    steps = tuple(int(s) for s in rng.integers(1, 4, size=2))
    stops = tuple(int(rng.integers(lo + 1, d + 1)) for lo, d in zip(starts, shape))
    return {"starts": starts, "stops": stops, "steps": steps}, [normal(rng, shape)]


def pad_case(rng):
    shape = rand_shape(rng, 1)
    config = tuple(tuple(int(v) for v in rng.integers(0, 3, size=3)) for _ in shape)
    return {"config": config}, [normal(rng, shape)]


def transpose_case(rng):
    shape = rand_shape(rng, 2, 4)
    return {"perm": tuple(int(p) for p in rng.permutation(len(shape)))}, [normal(rng, shape)]


def reshape_case(rng):
    shape = rand_shape(rng, 1, 3)
    target = (math.prod(shape),) if rng.random() < 0.5 else (1,) + shape[::-1]
    return {"shape": target}, [normal(rng, shape)]


def broadcast_case(rng):
    shape = rand_shape(rng, 2, 3, min_dim=2)
    stretched = (1,) + shape[2:]  # one axis added, one stretched
    return {"shape": shape}, [normal(rng, stretched)]


def all_reduce_case(rng):
    """Over group 0, this process alone: the operands flattened and concatenated
    (tests/test_distributed_mpi.py runs it over MPI ranks)."""
    parts = [normal(rng, rand_shape(rng, int(rng.integers(0, 3)))) for _ in range(int(rng.integers(1, 4)))]
    return {"bucket": int(rng.integers(0, 3)), "group": 0}, parts


def concat_case(rng):
    shape = list(rand_shape(rng, 1))
    axis = int(rng.integers(0, len(shape)))
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        shape[axis] = int(rng.integers(1, 4))
        parts.append(normal(rng, tuple(shape)))
    return {"axis": axis}, parts


def matmul_case(batch_a, batch_b) -> OpCase:
    def make(rng):
        m, k, n = (int(d) for d in rng.integers(2, 5, size=3))
        return {}, [normal(rng, batch_a + (m, k)), normal(rng, batch_b + (k, n))]
    return make


OP_CASES: dict[str, list[OpCase]] = {
    "input": [lambda rng: ({"name": "x", "type": TensorType((2, 3), "f64")}, [])],
    "constant": [fixed({"value": ((1.5, -2.0), (float("inf"), 0.25)), "type": TensorType((2, 2), "f64")}),
                 fixed({"value": 3, "type": TensorType((), "i32")})],
    "iota": [fixed({"axis": 1, "type": TensorType((2, 3), "i64")}),
             fixed({"axis": 0, "type": TensorType((4,), "f64")})],
    "neg": [unary(normal)],
    "exp": [unary(normal)],
    "expm1": [unary(normal), unary(lambda rng, s: normal(rng, s, 1e-6))],
    "log": [unary(positive)],
    "log1p": [unary(lambda rng, s: np.asarray(rng.uniform(-0.5, 2.0, s)))],
    "tanh": [unary(normal)],
    "erf": [unary(normal)],
    "sin": [unary(lambda rng, s: normal(rng, s, 3.0))],
    "cos": [unary(lambda rng, s: normal(rng, s, 3.0))],
    "sqrt": [unary(positive)],
    "abs": [unary(nonzero)],
    "sign": [unary(nonzero)],
    "floor": [unary(wide_floats)],
    "stop_gradient": [unary(normal)],
    "pow": [unary(normal, exponent=3.0), unary(normal, exponent=2.0), unary(positive, exponent=0.5),
            unary(positive, exponent=-1.5), unary(normal, exponent=1.0), unary(normal, exponent=0.0)],
    "convert": [unary(normal, dtype="f64")],
    "add": [binary(normal)],
    "sub": [binary(normal)],
    "mul": [binary(normal)],
    "div": [binary(normal, nonzero)],
    "maximum": [untied_binary],
    "minimum": [untied_binary],
    "gt": [compare_case],
    "ge": [compare_case],
    "lt": [compare_case],
    "le": [compare_case],
    "eq": [compare_case],
    "select": [select_case],
    "reduce_sum": [reduce_case(normal, False), reduce_case(normal, True)],
    "reduce_max": [reduce_case(distinct, False), reduce_case(distinct, True)],
    "matmul": [matmul_case((), ()), matmul_case((2,), (2,)), matmul_case((2, 1), (3,)),
               matmul_case((), (2,))],
    "transpose": [transpose_case],
    "reshape": [reshape_case],
    "broadcast": [broadcast_case],
    "concat": [concat_case],
    "all_reduce": [all_reduce_case],
    "slice": [slice_case],
    "pad": [pad_case],
    "sigmoid": [unary(lambda rng, s: normal(rng, s, 4.0))],
    "log_sigmoid": [unary(lambda rng, s: normal(rng, s, 4.0))],
    "softplus": [unary(lambda rng, s: normal(rng, s, 4.0))],
    "gelu": [unary(lambda rng, s: normal(rng, s, 3.0), approximate=form) for form in ("none", "tanh")],
    "softmax": [softmax_case()],
    "log_softmax": [softmax_case()],
    "softmax_cross_entropy": [cross_entropy_case],
    "threefry2x32": [threefry_case, threefry_case, threefry_case],
}


def op_case_params():
    return [pytest.param(name, k, id=f"{name}-{k}")
            for name in OPS for k in range(len(OP_CASES.get(name, [])))]


def make_op_case(name: str, k: int):
    return OP_CASES[name][k](case_rng(name, k))


def one_op_graph(op, attrs, operands):
    """A graph whose inputs are the operands and whose output is one `op` node."""
    builder = Builder(op.name)
    ids = [builder.add_input(TensorType.of(a), f"x{k}") for k, a in enumerate(operands)]
    return builder.finish([builder.emit(op, ids, attrs)])


def run_graph(graph, operands):
    return interpret(verify(decompose(verify(graph))), operands)[0]


# --------------------------------------------------------------------------- ff. function cases


@dataclass(frozen=True)
class FunctionCase:
    fn: Callable  # over traced values
    reference: Callable  # the same over NumPy arrays
    make: Callable[[np.random.Generator], list]  # rng -> arguments
    differentiable: bool = True  # False: check_grads does not apply (see `why`)
    why: str = ""
    rtol: float = 1e-12


def arrays(*domains_and_shapes):
    """make() drawing one random shape shared by all arguments."""
    def make(rng):
        shape = rand_shape(rng)
        return [domain(rng, shape) for domain in domains_and_shapes]
    return make


def axis_args(domain, min_rank=1):
    def make(rng):
        return [domain(rng, rand_shape(rng, min_rank))]
    return make


def ties(rng, shape):
    """Few distinct values, so arg-extremes see ties (the first index wins), and a NaN."""
    x = rng.integers(0, 3, shape).astype(np.float64)
    if x.size > 2:
        x.flat[int(rng.integers(0, x.size))] = np.nan
    return x


def einsum_args(*specs):
    def make(rng):
        sizes = {c: int(rng.integers(1, 5)) for c in "".join(specs)}
        return [normal(rng, tuple(sizes[c] for c in spec)) for spec in specs]
    return make


def int_pairs(rng):
    shape = rand_shape(rng)
    b = rng.integers(1, 6, shape) * rng.choice([-1, 1], shape)
    return [rng.integers(-20, 20, shape).astype(np.int64), b.astype(np.int64)]


def negative_bases(rng):
    shape = rand_shape(rng)
    base = normal(rng, shape) - 1.0
    exponent = rng.integers(-3, 4, shape).astype(np.float64) + rng.choice([0.0, 0.0, 0.5], shape)
    return [base, exponent]


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def np_elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def prelu_args(rng):
    shape = rand_shape(rng, 1)
    return [nonzero(rng, shape), positive(rng, shape[-1:]) * 0.2]


def where_args(rng):
    shape = rand_shape(rng, 1)
    return [rng.random(partner_shape(rng, shape)) < 0.5, normal(rng, shape),
            normal(rng, partner_shape(rng, shape))]


def concat_args(rng):
    shape = rand_shape(rng, 2)
    return [normal(rng, shape), normal(rng, shape[:1] + (3,) + shape[2:])]


def take_args(axis):
    """A table and i64 indices along `axis` (negative ones and repeats included, so the
    gradient's scatter-add sums rows)."""
    def make(rng):
        shape = rand_shape(rng, axis + 1 if axis >= 0 else -axis)
        size = shape[axis]
        return [normal(rng, shape), rng.integers(-size, size, rand_shape(rng, 0, 2)).astype(np.int64)]
    return make


def wide(scale):
    return lambda rng, s: normal(rng, s, scale)


def sinc_points(rng):
    # 0 exactly, points inside the series branch (|x| < 1e-2) and outside it.
    base = np.array([0.0, 1e-3, -5e-3, 0.5, -2.0, 3.7, -np.pi, 20.0])
    return [base]


FUNCTION_CASES: dict[str, list[FunctionCase]] = {
    "abs": [FunctionCase(ff.abs, np.abs, arrays(nonzero))],
    "concatenate": [FunctionCase(lambda a, b: ff.concatenate([a, b], axis=1),
                                 lambda a, b: np.concatenate([a, b], axis=1), concat_args)],
    "convert": [FunctionCase(lambda x: ff.convert(x, "float64"), lambda x: x.astype(np.float64),
                             arrays(normal)),
                FunctionCase(lambda x: ff.convert(x, "float32"), lambda x: x.astype(np.float32),
                             arrays(normal), differentiable=False,
                             why="float32 output: central differences would measure rounding",
                             rtol=0.0)],
    "cos": [FunctionCase(ff.cos, np.cos, arrays(wide(3.0)))],
    "elu": [FunctionCase(ff.elu, lambda x: np_elu(x, 1.0), arrays(nonzero)),
            FunctionCase(lambda x: ff.elu(x, alpha=0.5), lambda x: np_elu(x, 0.5), arrays(nonzero))],
    "erf": [FunctionCase(ff.erf, scipy.special.erf, arrays(normal))],
    "exp": [FunctionCase(ff.exp, np.exp, arrays(normal))],
    "expm1": [FunctionCase(ff.expm1, np.expm1, arrays(normal))],
    "gelu": [FunctionCase(ff.gelu, lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2))),
                          arrays(wide(2.0))),
             FunctionCase(lambda x: ff.gelu(x, approximate="tanh"), np_gelu_tanh, arrays(wide(2.0))),
             FunctionCase(lambda x: ff.gelu(x, approximate="sigmoid"),
                          lambda x: x * scipy.special.expit(1.702 * x), arrays(wide(2.0)))],
    "leaky_relu": [FunctionCase(ff.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), arrays(nonzero)),
                   FunctionCase(lambda x: ff.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                                arrays(nonzero))],
    "log": [FunctionCase(ff.log, np.log, arrays(positive))],
    "log1p": [FunctionCase(ff.log1p, np.log1p, arrays(positive))],
    "log_sigmoid": [FunctionCase(ff.log_sigmoid, lambda x: -np.logaddexp(0, -x), arrays(wide(4.0)))],
    "log_softmax": [FunctionCase(ff.log_softmax, lambda x: scipy.special.log_softmax(x, axis=-1),
                                 axis_args(wide(3.0))),
                    FunctionCase(lambda x: ff.log_softmax(x, axis=0),
                                 lambda x: scipy.special.log_softmax(x, axis=0), axis_args(wide(3.0)))],
    "logsumexp": [FunctionCase(ff.logsumexp, lambda x: scipy.special.logsumexp(x, axis=-1),
                               axis_args(wide(3.0))),
                  FunctionCase(lambda x: ff.logsumexp(x, axis=0, keepdims=True),
                               lambda x: scipy.special.logsumexp(x, axis=0, keepdims=True),
                               axis_args(wide(3.0)))],
    "max": [FunctionCase(ff.max, np.max, axis_args(distinct)),
            FunctionCase(lambda x: ff.max(x, axis=-1, keepdims=True),
                         lambda x: np.max(x, axis=-1, keepdims=True), axis_args(distinct))],
    "maximum": [FunctionCase(ff.maximum, np.maximum, lambda rng: no_ties(rng, (3, 4), (4,)))],
    "mean": [FunctionCase(ff.mean, np.mean, axis_args(normal)),
             FunctionCase(lambda x: ff.mean(x, axis=0), lambda x: np.mean(x, axis=0), axis_args(normal))],
    "minimum": [FunctionCase(ff.minimum, np.minimum, lambda rng: no_ties(rng, (2, 1), (2, 3)))],
    "mish": [FunctionCase(ff.mish, lambda x: x * np.tanh(np.logaddexp(0, x)), arrays(wide(3.0)))],
    "prelu": [FunctionCase(ff.prelu, lambda x, a: np.where(x > 0, x, a * x), prelu_args)],
    "relu": [FunctionCase(ff.relu, lambda x: np.maximum(x, 0), arrays(nonzero))],
    "sigmoid": [FunctionCase(ff.sigmoid, scipy.special.expit, arrays(wide(4.0)))],
    "sign": [FunctionCase(ff.sign, np.sign, arrays(nonzero))],
    "floor": [FunctionCase(ff.floor, np.floor, arrays(wide_floats), differentiable=False,
                           why="integer points: no finite difference there (checked off them below)"),
              FunctionCase(ff.floor, np.floor, arrays(off_integers))],
    "silu": [FunctionCase(ff.silu, lambda x: x * scipy.special.expit(x), arrays(wide(3.0)))],
    "sin": [FunctionCase(ff.sin, np.sin, arrays(wide(3.0)))],
    "sinc": [FunctionCase(ff.sinc, lambda x: np.sinc(x / np.pi), sinc_points)],
    "softmax": [FunctionCase(ff.softmax, lambda x: scipy.special.softmax(x, axis=-1), axis_args(wide(3.0))),
                FunctionCase(lambda x: ff.softmax(x, axis=0), lambda x: scipy.special.softmax(x, axis=0),
                             axis_args(wide(3.0)))],
    "softplus": [FunctionCase(ff.softplus, lambda x: np.logaddexp(0, x), arrays(wide(4.0)))],
    "softsign": [FunctionCase(ff.softsign, lambda x: x / (1 + np.abs(x)), arrays(nonzero))],
    "sqrt": [FunctionCase(ff.sqrt, np.sqrt, arrays(positive))],
    "square": [FunctionCase(ff.square, np.square, arrays(normal))],
    "step": [FunctionCase(ff.step, lambda x: (x > 0).astype(x.dtype), arrays(nonzero))],
    "stop_gradient": [FunctionCase(ff.stop_gradient, np.copy, arrays(normal), differentiable=False,
                                   why="zero gradient by definition (test_gradients checks it blocks)")],
    "sum": [FunctionCase(ff.sum, np.sum, axis_args(normal)),
            FunctionCase(lambda x: ff.sum(x, axis=(0, -1), keepdims=True),
                         lambda x: np.sum(x, axis=(0, -1), keepdims=True), axis_args(normal, 2))],
    "swish": [FunctionCase(ff.swish, lambda x: x * scipy.special.expit(x), arrays(wide(3.0)))],
    "tanh": [FunctionCase(ff.tanh, np.tanh, arrays(normal))],
    "where": [FunctionCase(ff.where, np.where, where_args)],
    "argmax": [FunctionCase(lambda x: ff.argmax(x), lambda x: np.argmax(x, axis=-1), axis_args(normal),
                            differentiable=False, why="an integer index"),
               FunctionCase(lambda x: ff.argmax(x, axis=0, keepdims=True),
                            lambda x: np.argmax(x, axis=0, keepdims=True), axis_args(ties),
                            differentiable=False, why="an integer index")],
    "argmin": [FunctionCase(lambda x: ff.argmin(x, axis=0), lambda x: np.argmin(x, axis=0), axis_args(ties),
                            differentiable=False, why="an integer index")],
    "clip": [FunctionCase(lambda x: ff.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), arrays(normal)),
             FunctionCase(lambda x: ff.clip(x, hi=0.2), lambda x: np.minimum(x, 0.2), arrays(normal))],
    "einsum": [FunctionCase(lambda a, b: ff.einsum("bij,bjk->bik", a, b),
                            lambda a, b: np.einsum("bij,bjk->bik", a, b), einsum_args("bij", "bjk")),
               FunctionCase(lambda a, b: ff.einsum("ij,kj", a, b), lambda a, b: np.einsum("ij,kj", a, b),
                            einsum_args("ij", "kj")),
               FunctionCase(lambda a: ff.einsum("ijk->ki", a), lambda a: np.einsum("ijk->ki", a),
                            einsum_args("ijk"))],
    "floor_divide": [FunctionCase(ff.floor_divide, np.floor_divide, arrays(wide(4.0), nonzero),
                                  differentiable=False, why="piecewise constant: its gradient is zero"),
                     FunctionCase(ff.floor_divide, np.floor_divide, int_pairs,
                                  differentiable=False, why="integers")],
    "remainder": [FunctionCase(ff.remainder, np.remainder, arrays(wide(4.0), nonzero),
                               differentiable=False, why="jumps at every multiple of b: finite "
                                                         "differences straddle them"),
                  FunctionCase(ff.remainder, np.remainder, int_pairs, differentiable=False, why="integers")],
    "power": [FunctionCase(ff.power, np.power, arrays(positive, normal)),
              FunctionCase(ff.power, np.power, negative_bases, differentiable=False,
                           why="a negative base: integral exponents only, the gradient is undefined")],
    "stack": [FunctionCase(lambda a, b: ff.stack([a, b]), lambda a, b: np.stack([a, b]), arrays(normal, normal)),
              FunctionCase(lambda a, b: ff.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], axis=-1),
                           arrays(normal, normal))],
    "take": [FunctionCase(ff.take, lambda x, i: np.take(x, i, axis=0), take_args(0)),
             FunctionCase(lambda x, i: ff.take(x, i, axis=-1), lambda x, i: np.take(x, i, axis=-1), take_args(-1)),
             FunctionCase(lambda x, i: x[..., i, :], lambda x, i: x[..., i, :], take_args(-2))],
}


def function_case_params(differentiable_only=False):
    return [pytest.param(name, k, id=f"{name}-{k}")
            for name in functions.__all__ for k, case in enumerate(FUNCTION_CASES.get(name, []))
            if case.differentiable or not differentiable_only]


def make_function_case(name: str, k: int):
    case = FUNCTION_CASES[name][k]
    return case, case.make(case_rng("function", name, k))


def broadcastable(*shapes) -> bool:
    """Whether NumPy broadcasting accepts these shapes together."""
    try:
        np.broadcast_shapes(*shapes)
        return True
    except ValueError:
        return False
