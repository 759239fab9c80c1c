"""Tests of passes/simplify.py (folding, identities, CSE, DCE) and passes/rewrite.py.

Golden files in tests/golden/simplify/*.ir hold, filecheck style, a
`// RUN: <pass>` line, the input graph, `// EXPECT:` and the exact expected
text (locations are printed: a golden file without them has none).
"""
from __future__ import annotations

import itertools
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile.ir.interpret import interpret
from ffcompile.ir import Builder, TensorType, parse_ir, print_graph, verify
from ffcompile.ir import lang as L
from ffcompile.ir import ops as O
from ffcompile.ir.lang import Value
from ffcompile.passes import simplify as S
from ffcompile.passes.decompose import decompose
from ffcompile.passes.rewrite import PatternTable, Rule, rewrite
from samples import broadcastable

GOLDEN = sorted((pathlib.Path(__file__).parent / "golden" / "simplify").glob("*.ir"))
PASSES = {"fold_constants": S.fold_constants, "simplify_algebra": S.simplify_algebra,
          "cse": S.cse, "dce": S.dce, "simplify": S.simplify}


def _read_golden(path: pathlib.Path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("// RUN: "), f"{path.name}: first line must be '// RUN: <pass>'"
    source, expected = text.split("// EXPECT:\n")
    return PASSES[first.removeprefix("// RUN: ").strip()], source, expected


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(path):
    run, source, expected = _read_golden(path)
    result = run(parse_ir(source))
    verify(result)
    assert print_graph(result) == expected
    # The expected text is itself a valid graph, and a fixpoint of the pass.
    assert print_graph(run(parse_ir(expected))) == expected


def test_golden_files_cover_every_rule():
    text = "".join(p.read_text() for p in GOLDEN)
    for op in ("add", "sub", "mul", "div", "neg", "transpose", "reshape", "broadcast",
               "stop_gradient", "convert", "pow", "select"):
        assert f"= {op} " in text, f"no golden test exercises {op}"
    assert {"fold_constants", "simplify_algebra", "cse", "dce", "simplify"} <= {
        _read_golden(p)[0].__name__ for p in GOLDEN}


# --------------------------------------------------------------------------- the rewrite driver


def _exp_graph():
    builder = Builder("g")
    x = Value(builder, builder.add_input(TensorType((3,), "f64"), "x"))
    return builder.finish([L.exp(x).id])


def test_rewrite_returns_the_same_graph_when_no_rule_fires():
    graph = _exp_graph()
    never = PatternTable("never", [Rule("never", (O.Exp,), lambda node, b: None)])
    assert rewrite(graph, never) is graph
    assert S.simplify(graph) is graph


def test_rewrite_stops_at_the_sweep_cap():
    sweeps = []

    def always(node, builder):  # re-emits the node: fires forever
        sweeps.append(1)
        return builder.copy(node, node.inputs)

    table = PatternTable("loop", [Rule("always", (O.Exp,), always)])
    result = rewrite(_exp_graph(), table, max_sweeps=3)
    assert len(sweeps) == 3
    verify(result)


def test_rewrite_rejects_a_rule_that_changes_the_type():
    def to_scalar(node, builder):
        return L.reduce_sum(Value(builder, node.inputs[0])).id

    table = PatternTable("bad", [Rule("to_scalar", (O.Exp,), to_scalar)])
    with pytest.raises(TypeError, match=r"bad\.to_scalar replaced a exp of type f64\[3\] by .* f64\[\]"):
        rewrite(_exp_graph(), table)


# --------------------------------------------------------------------------- random graphs


SHAPES = [(), (3,), (2, 3), (1, 3), (2, 1)]
SCALARS = [0.0, -0.0, 1.0, 2.0, -1.0, 0.5]
BINARY = [L.add, L.sub, L.mul, L.div, L.maximum, L.minimum]


def _constant(draw, b, values, like=()):
    """A constant of one of SHAPES that broadcasts with shape `like`."""
    value = draw(st.sampled_from(SCALARS))
    shape = draw(st.sampled_from([s for s in SHAPES if broadcastable(s, like)]))
    form = draw(st.sampled_from(["scalar", "broadcast", "array", "random array"]))
    if form == "scalar":
        return L.constant(b, value, "f64")
    if form == "broadcast":
        return L.broadcast_to(L.constant(b, value, "f64"), shape)
    if form == "array":
        return L.constant(b, np.full(shape, value), "f64")
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    return L.constant(b, rng.normal(size=shape).round(2), "f64")


def _operand(draw, values):
    """Mostly the latest value, so that steps build chains rather than dead branches."""
    return values[-1] if draw(st.booleans()) else draw(st.sampled_from(values))


def _partner(draw, b, values, x):
    """A second operand for x: an earlier value or a fresh constant (0 and 1 included)."""
    if draw(st.booleans()):
        return _constant(draw, b, values, like=x.shape)
    return draw(st.sampled_from([v for v in values if broadcastable(v.shape, x.shape)]))


def _binary(draw, b, values):
    x = _operand(draw, values)
    y = _partner(draw, b, values, x)
    op = draw(st.sampled_from(BINARY))
    return op(*draw(st.permutations([x, y])))


def _unary(draw, b, values):
    op = draw(st.sampled_from([L.neg, L.tanh, L.exp, L.sin, L.abs_, L.stop_gradient,
                               lambda v: L.convert(v, "f64"), lambda v: L.neg(L.neg(v)),
                               lambda v: L.pow(v, 0), lambda v: L.pow(v, 1),
                               lambda v: L.pow(v, 2), lambda v: L.pow(v, 3)]))
    return op(_operand(draw, values))


def _layout(draw, b, values):
    x = _operand(draw, values)
    kind = draw(st.sampled_from(["transpose twice", "transpose", "reshape", "broadcast"]))
    if kind.startswith("transpose") and x.ndim >= 2:
        t = L.transpose(x)
        return L.transpose(t) if kind == "transpose twice" else t
    if kind == "reshape":
        return L.reshape(L.reshape(x, (x.size,)), (1,) + x.shape)
    return L.broadcast_to(x, (2,) + tuple(3 if d == 1 else d for d in x.shape))


def _reduce(draw, b, values):
    x = _operand(draw, values)
    op = draw(st.sampled_from([L.reduce_sum, L.reduce_max]))
    axis = draw(st.sampled_from([None, 0] if x.ndim else [None]))
    return op(x, axis, keepdims=draw(st.booleans()))


def _select(draw, b, values):
    x = _operand(draw, values)
    y = _partner(draw, b, values, x)
    pred = L.greater(x, y) if draw(st.booleans()) else L.constant(b, draw(st.booleans()), "bool")
    return L.where(pred, x, draw(st.sampled_from([x, y])))


def _repeat(draw, b, values):
    """Re-emit an existing node on the same operands: work for CSE."""
    computed = [v for v in values if b.nodes[v.id].op is not O.Input]
    if not computed:
        return values[0]
    node = b.nodes[draw(st.sampled_from(computed)).id]
    return Value(b, b.copy(node, node.inputs))


def _other(draw, b, values):
    x = _operand(draw, values)
    if x.ndim == 2 and draw(st.booleans()):
        return L.matmul(x, L.transpose(x))
    return L.iota(b, (2, 3), draw(st.integers(0, 1)), "f64")


STEPS = [_binary, _binary, _binary, _unary, _unary, _constant, _layout, _reduce, _select, _repeat, _other]


@st.composite
def random_graphs(draw):
    b = Builder("random")
    values = [Value(b, b.add_input(TensorType(draw(st.sampled_from(SHAPES)), "f64"), f"x{k}"))
              for k in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(3, 16))):
        values.append(draw(st.sampled_from(STEPS))(draw, b, values))
    # Every value no later node reads is an output, so that most of the graph is live.
    used = {j for node in b.nodes for j in node.inputs}
    return b.finish(sorted({v.id for v in values} - used))


def _arguments(graph, seed: int, special: bool):
    rng = np.random.default_rng(seed)
    args = []
    for t in graph.input_types:
        a = rng.normal(size=t.shape)
        if special:  # the values where float identities go wrong
            a = np.where(rng.random(t.shape) < 0.4, rng.choice([np.inf, -np.inf, np.nan, 0.0, -0.0],
                                                                size=t.shape), a)
        args.append(np.asarray(a))
    return args


def _run(graph, args):
    with np.errstate(all="ignore"):
        return interpret(graph, args)


def _assert_same(got, want, sums=False):
    """Bitwise, except that a zero's sign and a NaN's payload may differ (see simplify.py).

    sums=True: the graph reduces, and NumPy's summation order depends on the
    address alignment of the data it is given (it peels for SIMD), so a sum
    folded at compile time may differ from the run-time one in the last bits."""
    assert got.shape == want.shape and got.dtype == want.dtype
    got, want = np.ascontiguousarray(got).reshape(-1), np.ascontiguousarray(want).reshape(-1)
    same_bits = (got.view(np.uint8) == want.view(np.uint8)).reshape(got.size, got.itemsize).all(axis=1)
    ok = same_bits | ((got == 0) & (want == 0)) | (np.isnan(got) & np.isnan(want))
    if sums and got.dtype.kind == "f":
        ok |= np.isclose(got, want, rtol=8 * np.finfo(got.dtype).eps, atol=0)
    assert ok.all(), f"simplified result differs:\n{got}\nvs\n{want}"


@settings(max_examples=300)  # small graphs run in milliseconds; rare rewrites need many draws
@given(random_graphs(), st.integers(0, 2**31), st.booleans())
def test_simplify_preserves_results_on_random_graphs(graph, seed, special):
    simplified = S.simplify(graph)
    verify(simplified)
    assert print_graph(parse_ir(str(simplified))) == str(simplified)
    assert S.simplify(simplified) is simplified, "simplify did not reach a fixpoint"
    args = _arguments(graph, seed, special)
    sums = any(n.op is O.ReduceSum for n in graph.nodes)
    for got, want in zip(_run(simplified, args), _run(graph, args)):
        _assert_same(got, want, sums)


SPECIAL = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1.5, -2.0])


@pytest.mark.parametrize("op", BINARY, ids=lambda f: f.__name__)
def test_binary_op_with_a_constant_is_exact_on_special_values(op):
    """Every op, constant, constant form and operand order, on inf, nan and signed zeros."""
    for value in SCALARS:
        for form in ("scalar", "array", "wider"):
            for constant_first in (False, True):
                b = Builder("case")
                x = Value(b, b.add_input(TensorType(SPECIAL.shape, "f64"), "x"))
                shape = {"scalar": (), "array": SPECIAL.shape, "wider": (2,) + SPECIAL.shape}[form]
                c = L.constant(b, np.full(shape, value), "f64")
                graph = b.finish([(op(c, x) if constant_first else op(x, c)).id])
                (got,), (want,) = _run(S.simplify(graph), [SPECIAL]), _run(graph, [SPECIAL])
                _assert_same(got, want)


@pytest.mark.parametrize("exponent", [0, 1, 2, 3, 0.5])
def test_pow_is_exact_on_special_values(exponent):
    b = Builder("case")
    x = Value(b, b.add_input(TensorType(SPECIAL.shape, "f64"), "x"))
    graph = b.finish([L.pow(x, exponent).id])
    (got,), (want,) = _run(S.simplify(graph), [SPECIAL]), _run(graph, [SPECIAL])
    _assert_same(got, want)


# --------------------------------------------------------------------------- a real training graph


def _mlp_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = ff.tanh(h)
    return ((h - y) ** 2).mean()


def test_mlp_value_and_grad_shrinks_and_keeps_results():
    rng = np.random.default_rng(0)
    sizes = [8, 16, 16, 4]
    params = [(rng.normal(size=(m, n)), rng.normal(size=n)) for m, n in itertools.pairwise(sizes)]
    x, y = rng.normal(size=(32, 8)), rng.normal(size=(32, 4))
    graph = decompose(ff.compile(ff.value_and_grad(_mlp_loss)).lower(params, x, y).graph)
    simplified = S.simplify(graph)
    print(f"\n3-layer tanh MLP, value_and_grad of MSE: {len(graph)} nodes -> {len(simplified)} "
          f"after simplify")
    assert len(simplified) < len(graph)
    assert not any(n.op in (O.Pow, O.Reshape) for n in simplified.nodes)
    assert sum(n.op is O.Constant for n in simplified.nodes) < sum(n.op is O.Constant for n in graph.nodes)
    args = [a for pair in params for a in pair] + [x, y]
    for got, want in zip(_run(simplified, args), _run(graph, args)):
        _assert_same(got, want)
