"""The IR text never breaks: a seeded fuzz over real dumps, and printing any location.

Mutations of zoo dumps (forward graphs and whole training steps, traced and
optimized) change characters, swap and drop tokens, put odd values into
attributes and nest brackets thousands deep. Whatever comes out, `parse_ir`
either raises IRParseError or returns a graph the verifier accepts and that
prints to text parsing back to the same graph.
"""
from __future__ import annotations

import functools
import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile import zoo
from ffcompile.ir import Builder, IRParseError, Loc, TensorType, VerifyError, parse_ir, verify
from ffcompile.ir import ops as O
from ffcompile.ir.graph import Graph, Node, freeze_attrs

TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|%\d+|-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[\w.]+|\S')
ODD_VALUES = [
    "1", "-1", "0", "1.5", "-0.0", "1e20", "1e400", "-1e400", "nan", "inf", "true", "false",
    '"abc"', '"f16"', '"f32"', '"none"', '"tanh"', '"\\q"', '"\\u12"', '"\\ud800"', '"é"', "[]",
    "[[]]", "[1]", "[-1, -6]", "[true, 6]", "[true, false]", "[1, 1]", "[0, 1]", "[1, 0]",
    "[[0, 0, 0], [0, 0, 0]]", "[[1, 2], [3]]", "[1.5, 2]", "[2147483648]", "2147483648",
    "9223372036854775808", "1" * 5000, "[" * 5000, "[" * 5000 + "]" * 5000, '"a', "[1, [2]]",
]
ODD_CHARS = list('"\\[]{}(),=:%@-.+e0123456789 \tfx_') + ["é", "\x85", "\u2028", "\n", "\x00"]
ATTRIBUTE = re.compile(r"(\w+)=(\[[^=]*?\](?=[,}])|\"(?:[^\"\\]|\\.)*\"|[^,}\s]+)")


@functools.lru_cache(maxsize=None)
def real_dumps() -> tuple[str, ...]:
    """Traced and optimized IR of zoo models' forward passes and whole training steps."""
    dumps = []
    for name in ("xor", "digits", "two_tower"):
        workload = zoo.get(name)
        params, *batch = workload.example_inputs(batch_size=4)
        forward = ff.compile(workload.predict).lower(params, *batch[:-1])
        step = ff.compile_train_step(workload.loss, ff.optim.Adam(1e-3))
        training = step.lower(params, step.init(params), *batch)
        dumps += [forward.ir, forward.optimized_ir, training.ir, training.optimized_ir]
    return tuple(dumps)


def mutate(text: str, rng: random.Random) -> str:
    """One to three random edits of one kind: characters, tokens, attributes or nesting."""
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        k = rng.randrange(len(lines))
        lines[k] = rng.choice(_EDITS)(lines[k], rng, lines)
    return "".join(lines)


def _edit_char(line, rng, lines):
    i = rng.randrange(len(line) + 1)
    char = rng.choice(ODD_CHARS + [rng.choice(lines[0] + line) if line else "x"])
    return rng.choice([line[:i] + char + line[i:], line[:i] + char + line[i + 1:], line[:i] + line[i + 1:]])


def _edit_token(line, rng, lines):
    tokens = [m.span() for m in TOKEN.finditer(line)]
    if not tokens:
        return line
    lo, hi = rng.choice(tokens)
    donor = rng.choice(lines)
    donors = [m.group() for m in TOKEN.finditer(donor)] or ["%0"]
    replacement = rng.choice([rng.choice(donors), "", line[lo:hi] * 2, rng.choice(ODD_VALUES)])
    return line[:lo] + replacement + line[hi:]


def _edit_attribute(line, rng, lines):
    found = list(ATTRIBUTE.finditer(line))
    if not found:
        return _edit_token(line, rng, lines)
    match = rng.choice(found)
    lo, hi = match.span(2)
    if rng.random() < 0.2:  # an attribute another op has, or a repeated one
        return line[:match.start()] + rng.choice(["axes=[0]", "type=1", "axis=0", match.group()]) \
            + ", " + line[match.start():]
    return line[:lo] + rng.choice(ODD_VALUES) + line[hi:]


def _edit_nesting(line, rng, lines):
    depth = rng.choice([2, 64, 65, 1000, 5000])
    i = rng.randrange(len(line) + 1)
    opener = rng.choice(["[", "{", "(", "loc("])
    return line[:i] + opener * depth + rng.choice(["", "1", "]" * depth]) + line[i:]


def _edit_location(line, rng, lines):
    if "loc(" not in line:
        return _edit_char(line, rng, lines)
    head, _, tail = line.partition("loc(")
    return head + "loc(" + rng.choice(['"a.py":1.5', '"a\\"b.py":2', 'grad "x":-1', '"x":3 @',
                                       '"x":4 @"a b"', '"x":99999999999999999999', '"\\q":1',
                                       'weird "x":1 @s']) + ")" + tail.partition(")")[2]


_EDITS = [_edit_char, _edit_token, _edit_attribute, _edit_nesting, _edit_location]


def check_text(text: str) -> str:
    """'error' (IRParseError), 'ok' (parsed, verified, round-tripped) or raises."""
    try:
        graph = parse_ir(text)
    except IRParseError as exc:
        assert re.match(r"line \d+, column \d+: |empty IR text", str(exc)), str(exc)
        return "error"
    verify(graph)
    printed = str(graph)
    again = parse_ir(printed)
    assert again == graph and str(again) == printed
    return "ok"


FUZZ_CASES = 3000


def test_mutated_dumps_parse_or_raise_ir_parse_error():
    rng = random.Random(12)
    dumps = real_dumps()
    outcomes = {"ok": 0, "error": 0}
    for case in range(FUZZ_CASES):
        text = mutate(rng.choice(dumps), rng)
        try:
            outcomes[check_text(text)] += 1
        except Exception as exc:  # noqa: BLE001 - the property: nothing else escapes
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}\n{text[:3000]}")
    # Both sides must be reached, or the fuzz tests nothing.
    assert outcomes["ok"] > FUZZ_CASES // 20 and outcomes["error"] > FUZZ_CASES // 2, outcomes


@pytest.mark.parametrize("text, message", [
    ("graph @g {\n  %0:f32[2] = input {name=\"x\"}\n  %1:f32[] = reduce_sum %0 {axes=1, keepdims=false}\n"
     "  return %1\n}\n", "axes must be a list of non-negative ints, got 1"),
    ('graph @g {\n  %0:f32[2] = input {name="x"} loc("a.py":1.5)\n  return %0\n}\n', "line number"),
    ('graph @g {\n  %0:f32[6] = input {name="x"}\n  %1:f32[-1,-6] = reshape %0 {shape=[-1,-6]}\n'
     "  return %1\n}\n", "malformed type"),
    ('graph @g {\n  %0:f32[6] = input {name="x"}\n  %1:f32[6] = reshape %0 {shape=[-1,-6]}\n'
     "  return %1\n}\n", "shape must be a list of non-negative ints, got [-1, -6]"),
    ('graph @g {\n  %0:f32[6] = input {name="x"}\n  %1:f32[6] = convert %0 {dtype="f16"}\n'
     "  return %1\n}\n", "dtype must be one of"),
    ('graph @g {\n  %0:f32[6] = input {name="\\q"}\n  return %0\n}\n', "bad string"),
    ('graph @g {\n  %0:f32[] = constant {value=' + "[" * 5000 + "}\n  return %0\n}\n", "nested deeper"),
    ('graph @g {\n  %0:f32[] = constant {value="abc"}\n  return %0\n}\n', "value must be"),
    ('graph @g {\n  %0:i32[] = constant {value=100000000000000000000}\n  return %0\n}\n',
     "value 100000000000000000000 does not fit i32, which holds ints in [-2147483648"),
    ('graph @g {\n  %0:f32[2] = input {name="x"}\n  %1:f32[2] = pow %0 {exponent="a"}\n  return %1\n}\n',
     "exponent must be a finite number"),
    ('graph @g {\n  %0:f32[2,3] = input {name="x"}\n  %1:f32[3,2] = transpose %0 {perm=[true,false]}\n'
     "  return %1\n}\n", "perm must be a list of non-negative ints"),
    ('graph @g {\n  %0:f32[6] = input {name="x"}\n  %1:f32[1,6] = reshape %0 {shape=[true,6]}\n'
     "  return %1\n}\n", "shape must be a list of non-negative ints, got [true, 6]"),
    ('graph @g {\n  %0:f32[2] = input {name="x", name="y"}\n  return %0\n}\n', "given twice"),
    ('graph @g {\n  %0:f32[2] = input {name="x", type=1}\n  return %0\n}\n', "'type' is the annotation"),
])
def test_reported_inputs_raise_ir_parse_error(text, message):
    """The inputs issue 12 found raising TypeError, ValueError, JSONDecodeError or
    RecursionError, or reaching codegen: each is an IRParseError with line and column."""
    with pytest.raises(IRParseError, match=r"line \d+, column \d+: ") as info:
        parse_ir(text)
    assert message in str(info.value)


# --------------------------------------------------------------------------- any location

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
locations = st.builds(Loc, names, st.integers(0, 2**40), names)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), locations), min_size=1, max_size=4), names, names)
def test_any_location_and_string_round_trips(locs, input_name, graph_name):
    """File names with quotes, backslashes, newlines or any unicode; any scope, role,
    input name and graph name: the printer escapes them, the parser reads them back."""
    builder = Builder(graph_name)
    x = builder.add_input(TensorType((2,), "f32"), input_name, locs[0])
    for k, loc in enumerate(locs[1:]):
        x = builder.emit(O.Tanh, [x], {}, loc, list(Role)[k % len(Role)])
    graph = verify(builder.finish([x]))
    text = str(graph)
    parsed = parse_ir(text)
    assert parsed == graph and str(parsed) == text


@pytest.mark.parametrize("file", ['a"b.py', "C:\\work\\m.py", "dir\\", "new\nline.py", "ü.py", ""])
def test_windows_and_quoted_file_names_round_trip(file):
    builder = Builder("g")
    x = builder.add_input(TensorType((2,), "f64"), "x")
    y = builder.emit(O.Exp, [x], {}, Loc(file, 3, "layers.0"), Role.ADJOINT)
    graph = builder.finish([y])
    assert parse_ir(str(graph)) == graph


@pytest.mark.parametrize("op, attrs, operand, message", [
    (O.Constant, {"value": "abc", "type": TensorType((), "f32")}, None, "value must be a number"),
    (O.Constant, {"value": 10**20, "type": TensorType((), "i32")}, None, "value 100000000000000000000 does not fit i32"),
    (O.Constant, {"value": 1.5, "type": TensorType((), "i64")}, None, "value 1.5 does not fit i64"),
    (O.Constant, {"value": ((1.0,), (2.0, 3.0)), "type": TensorType((2, 1), "f32")}, None, "value must be"),
    (O.Pow, {"exponent": "a"}, TensorType((2,), "f32"), "exponent must be a finite number"),
    (O.Pow, {"exponent": True}, TensorType((2,), "f32"), "exponent must be a finite number"),
    (O.Transpose, {"perm": (True, False)}, TensorType((2, 3), "f32"), "perm must be a list of non-negative ints"),
    (O.Reshape, {"shape": (True, 6)}, TensorType((6,), "f32"), "shape must be a list of non-negative ints"),
    (O.ReduceSum, {"axes": 1, "keepdims": False}, TensorType((2,), "f32"), "axes must be a list"),
    (O.ReduceSum, {"axes": (0,), "keepdims": 0}, TensorType((2,), "f32"), "keepdims must be a bool"),
    (O.Convert, {"dtype": "f16"}, TensorType((2,), "f32"), "dtype must be one of"),
    (O.Gelu, {"approximate": "sigmoid"}, TensorType((2,), "f32"), "approximate must be one of 'none', 'tanh'"),
])
def test_verifier_rejects_attributes_of_the_wrong_kind(op, attrs, operand, message):
    """Graphs built in Python (not parsed) with the attributes issue 12 found reaching
    codegen: the verifier names the node and the attribute."""
    builder = Builder("g")
    inputs = [] if operand is None else [builder.add_input(operand, "x")]
    nodes = list(builder.nodes)
    out = attrs["type"] if "type" in attrs else (operand if op is not O.Transpose else TensorType((3, 2), "f32"))
    nodes.append(Node(op, tuple(inputs), freeze_attrs(attrs), out))
    with pytest.raises(VerifyError, match=rf"%{len(inputs)} .*{op.name}: {message}"):
        verify(Graph(tuple(nodes), (len(nodes) - 1,)))


def test_numpy_integer_axes_become_python_ints():
    """Attribute kinds take Python ints only, so the tracer converts NumPy's (axis=np.int64(0))."""
    def f(x):
        return (x.sum(axis=np.int64(0)), ff.softmax(x, axis=np.int32(1)),
                ff.concatenate([x, x], axis=np.int64(1)), x.max(axis=(np.int64(0), np.int64(1))))

    x = np.arange(6.0).reshape(2, 3)
    lowered = ff.compile(f).lower(x)
    assert parse_ir(lowered.ir) == lowered.graph
    total, _, joined, largest = ff.compile(f)(x)
    np.testing.assert_array_equal(total, x.sum(0))
    assert joined.shape == (2, 6) and largest == 5.0


def test_a_hostile_file_name_stays_inside_generated_comments():
    """Generated NumPy source shows each node's loc in a comment: escaped, a newline in a
    file name cannot start a line of code."""
    from ffcompile.pipeline import program_of
    from ffcompile.codegen.registry import BACKENDS

    builder = Builder("g")
    x = builder.add_input(TensorType((2,), "f64"), "x")
    hostile = Loc('m.py\nraise SystemExit("injected")  # ', 1, "a\nb")
    graph = builder.finish([builder.emit(O.Exp, [x], {}, hostile)])
    program = program_of(graph, BACKENDS["numpy"])
    assert "m.py" in program.source and not any(line.strip().startswith("raise")
                                                 for line in program.source.splitlines())
    np.testing.assert_allclose(program.call([np.zeros(2)])[0], np.ones(2))
