"""Random array programs: traced and compiled (on every backend) they agree with NumPy itself.

Hypothesis draws a program step by step while evaluating it in NumPy, so each
step knows its operands' shapes: elementwise functions, broadcasting binary
ops (operands drawn to broadcast), reductions, reshape, transpose, basic
indexing, matmul (plain, batched, broadcasting) and concatenation. The same
steps are then traced through ffcompile and run; the results must agree in
float64, and the traced IR must round-trip through the parser.
"""
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import scipy.special
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import ffcompile as ff
from ffcompile.ir import lang as L
from samples import broadcastable

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")

NP = SimpleNamespace(exp=np.exp, tanh=np.tanh, sin=np.sin, cos=np.cos, abs=np.abs, sqrt=np.sqrt,
                     log1p=np.log1p, sigmoid=scipy.special.expit, softplus=lambda x: np.logaddexp(0, x),
                     relu=lambda x: np.maximum(x, 0), maximum=np.maximum, minimum=np.minimum,
                     where=np.where, transpose=np.transpose, concatenate=np.concatenate)
FF = SimpleNamespace(exp=ff.exp, tanh=ff.tanh, sin=ff.sin, cos=ff.cos, abs=ff.abs, sqrt=ff.sqrt,
                     log1p=ff.log1p, sigmoid=ff.sigmoid, softplus=ff.softplus, relu=ff.relu,
                     maximum=ff.maximum, minimum=ff.minimum, where=ff.where, transpose=L.transpose,
                     concatenate=ff.concatenate)

UNARY = {
    "neg": lambda lib, a: -a,
    "tanh": lambda lib, a: lib.tanh(a),
    "sin": lambda lib, a: lib.sin(a),
    "cos": lambda lib, a: lib.cos(a),
    "abs": lambda lib, a: lib.abs(a),
    "sigmoid": lambda lib, a: lib.sigmoid(a),
    "softplus": lambda lib, a: lib.softplus(a),
    "relu": lambda lib, a: lib.relu(a),
    "square": lambda lib, a: a ** 2,
    "cube": lambda lib, a: a ** 3,
    "sqrt_abs": lambda lib, a: lib.sqrt(lib.abs(a) + 1.0),
    "log1p_abs": lambda lib, a: lib.log1p(lib.abs(a)),
    "exp": lambda lib, a: lib.exp(a),  # drawn only for operands below 20 in magnitude
    "scale": lambda lib, a: 2.5 * a - 0.5,
}

BINARY = {
    "add": lambda lib, a, b: a + b,
    "sub": lambda lib, a, b: a - b,
    "mul": lambda lib, a, b: a * b,
    "safe_div": lambda lib, a, b: a / (1.0 + b * b),
    "maximum": lambda lib, a, b: lib.maximum(a, b),
    "minimum": lambda lib, a, b: lib.minimum(a, b),
    "select": lambda lib, a, b: lib.where(a > b, a, b * 0.5),
}


@dataclass
class Step:
    """One program step: fn(lib, *operands) over values `args` (indices) and fresh inputs."""

    text: str
    fn: Callable
    args: tuple[int, ...]


class Program:
    def __init__(self, data):
        self.data = data
        self.inputs: list[np.ndarray] = []
        self.values: list[tuple[str, int]] = []  # ("in", k) or ("step", k)
        self.numpy_values: list = []
        self.steps: list[Step] = []

    def draw(self, strategy, label):
        return self.data.draw(strategy, label=label)

    def new_input(self, shape) -> int:
        elements = st.floats(-3, 3, width=64)
        array = self.draw(arrays(np.float64, shape, elements=elements), f"input{len(self.inputs)}")
        self.inputs.append(array)
        self.values.append(("in", len(self.inputs) - 1))
        self.numpy_values.append(array)
        return len(self.values) - 1

    def add_step(self, text, fn, *args) -> None:
        result = fn(NP, *(self.numpy_values[i] for i in args))
        self.steps.append(Step(text, fn, args))
        self.values.append(("step", len(self.steps) - 1))
        self.numpy_values.append(np.asarray(result))
        note(f"v{len(self.values) - 1} = {text}{list(args)} -> {np.shape(result)}")

    def run(self, lib, inputs):
        values = []
        for kind, k in self.values:
            if kind == "in":
                values.append(inputs[k])
            else:
                step = self.steps[k]
                values.append(step.fn(lib, *(values[i] for i in step.args)))
        return values[-1]


def shapes(min_rank=0, max_rank=3):
    return st.lists(st.integers(1, 4), min_size=min_rank, max_size=max_rank).map(tuple)


@st.composite
def partner(draw, shape):
    """A shape broadcasting against `shape`: a suffix of it with some axes set to 1."""
    keep = draw(st.integers(0, len(shape)))
    tail = shape[len(shape) - keep:]
    return tuple(draw(st.sampled_from([d, 1])) for d in tail)


def operand_for(program: Program, shape) -> int:
    """An existing value broadcasting against `shape`, or a fresh input that does."""
    fits = [i for i, v in enumerate(program.numpy_values) if broadcastable(np.shape(v), shape)]
    if fits and program.draw(st.booleans(), "reuse"):
        return program.draw(st.sampled_from(fits), "operand")
    return program.new_input(program.draw(partner(shape), "partner shape"))


def add_random_step(program: Program) -> None:
    i = len(program.values) - 1 if program.draw(st.booleans(), "use last") else \
        program.draw(st.integers(0, len(program.values) - 1), "operand")
    a = program.numpy_values[i]
    shape = np.shape(a)
    kinds = ["unary", "binary", "scalar", "reduce", "reshape"]
    if len(shape) >= 1:
        kinds += ["index", "matmul", "concat"]
    if len(shape) >= 2:
        kinds += ["transpose"]
    kind = program.draw(st.sampled_from(kinds), "kind")
    if kind == "unary":
        names = [n for n in UNARY if n != "exp" or np.all(np.abs(a) < 20)]
        name = program.draw(st.sampled_from(names), "unary")
        program.add_step(name, UNARY[name], i)
    elif kind == "binary":
        name = program.draw(st.sampled_from(sorted(BINARY)), "binary")
        j = operand_for(program, shape)
        first, second = (i, j) if program.draw(st.booleans(), "order") else (j, i)
        program.add_step(name, BINARY[name], first, second)
    elif kind == "scalar":
        c = program.draw(st.floats(-2, 2, width=64), "scalar")
        program.add_step(f"({c} - a)", lambda lib, a: c - a, i)
    elif kind == "reduce":
        axes = tuple(sorted(program.draw(st.sets(st.integers(0, max(len(shape) - 1, 0)), max_size=len(shape)),
                                         "axes"))) if shape else None
        keep = program.draw(st.booleans(), "keepdims")
        method = program.draw(st.sampled_from(["sum", "mean", "max"]), "reduction")
        program.add_step(f"{method}(axis={axes}, keepdims={keep})",
                         lambda lib, a: getattr(a, method)(axis=axes, keepdims=keep), i)
    elif kind == "reshape":
        target = program.draw(reshape_target(shape), "target")
        program.add_step(f"reshape{target}", lambda lib, a: a.reshape(target), i)
    elif kind == "transpose":
        perm = tuple(program.draw(st.permutations(range(len(shape))), "perm"))
        program.add_step(f"transpose{perm}", lambda lib, a: lib.transpose(a, perm), i)
    elif kind == "index":
        index = program.draw(basic_index(shape), "index")
        program.add_step(f"getitem{index}", lambda lib, a: a[index], i)
    elif kind == "matmul":
        add_matmul(program, i, shape)
    else:
        axis = program.draw(st.integers(-len(shape), len(shape) - 1), "axis")
        other = list(shape)
        other[axis] = program.draw(st.integers(1, 3), "length")
        j = program.new_input(tuple(other))
        program.add_step(f"concatenate(axis={axis})",
                         lambda lib, a, b: lib.concatenate([a, b], axis=axis), i, j)


def add_matmul(program: Program, i, shape) -> None:
    n = program.draw(st.integers(1, 4), "n")
    if len(shape) >= 2 and program.draw(st.booleans(), "weight on the left"):
        batch = program.draw(partner(shape[:-2]), "batch")
        j = program.new_input(batch + (n, shape[-2]))
        program.add_step("matmul", lambda lib, w, a: w @ a, j, i)
        return
    batch = program.draw(partner(shape[:-2]), "batch") if len(shape) >= 2 else ()
    vector = program.draw(st.booleans(), "vector")
    j = program.new_input(batch + ((shape[-1],) if vector and not batch else (shape[-1], n)))
    program.add_step("matmul", lambda lib, a, w: a @ w, i, j)


@st.composite
def reshape_target(draw, shape):
    size = int(np.prod(shape, dtype=int))
    options = [(size,), tuple(reversed(shape)), (1,) + tuple(shape), tuple(d for d in shape if d != 1)]
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    d = draw(st.sampled_from(divisors))
    options += [(d, -1), (-1, d, 1)]
    return draw(st.sampled_from(options))


@st.composite
def basic_index(draw, shape):
    """Integers (negative too), slices with positive steps (non-empty), None and Ellipsis."""
    count = draw(st.integers(1, len(shape)))
    leading = draw(st.booleans())  # index the leading axes, or the trailing ones after `...`
    items = []
    for size in (shape[:count] if leading else shape[len(shape) - count:]):
        kind = draw(st.sampled_from(["int", "slice", "full", "none"]))
        if kind == "int":
            items.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            lo = draw(st.integers(0, size - 1))
            hi = draw(st.integers(lo + 1, size))
            step = draw(st.integers(1, 3))
            negative = draw(st.booleans())
            items.append(slice(lo - size if negative else lo, hi, step))
        elif kind == "full":
            items.append(slice(None))
        else:
            items.extend([None, slice(None)])
    if not leading:
        items.insert(0, Ellipsis)
    elif draw(st.booleans()):
        items.append(Ellipsis)
    return tuple(items)


@given(st.data())
def test_random_programs_match_numpy_and_round_trip(data):
    program = Program(data)
    program.new_input(data.draw(shapes(), label="first shape"))
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        add_random_step(program)
    expected = program.numpy_values[-1]

    def traced(*inputs):
        return program.run(FF, inputs)

    compiled = ff.compile(traced)
    got = compiled(*program.inputs)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    lowered = compiled.lower(*program.inputs)
    parsed = ff.parse_ir(lowered.ir)
    assert str(parsed) == lowered.ir and parsed == lowered.graph
    assert str(ff.parse_ir(lowered.optimized_ir)) == lowered.optimized_ir
