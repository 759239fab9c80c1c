"""The IR text form: printer/parser round trip, attributes and locations, parse errors, graph views."""
import math

import networkx as nx
import numpy as np
import pytest
from samples import OP_CASES, make_op_case, one_op_graph

import ffcompile as ff
from ffcompile.ir import Builder, IRParseError, Loc, Role, TensorType, VerifyError, parse_ir, verify
from ffcompile.ir import ops as O
from ffcompile.ir.graph import Graph, Node
from ffcompile.trace import scope


def assert_round_trip(graph: Graph) -> Graph:
    text = str(graph)
    parsed = parse_ir(text)
    assert str(parsed) == text
    assert parsed == graph
    verify(parsed)
    return parsed


def mlp(x, w1, b1, w2):
    with scope(x, "layers"):
        with scope(x, "0"):
            h = ff.gelu(x @ w1 + b1, approximate="tanh")
        with scope(x, "1"):
            logits = h @ w2
    return ff.log_softmax(logits)[:, ::2].mean()


@pytest.fixture
def mlp_args():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(5,)), rng.normal(size=(5, 6))


def test_traced_and_differentiated_graphs_round_trip(mlp_args):
    for fn in (mlp, ff.grad(mlp, argnums=(1, 2, 3)), ff.grad(lambda *a: ff.grad(mlp)(*a).sum())):
        lowered = ff.compile(fn).lower(*mlp_args)
        assert_round_trip(lowered.graph)
        assert_round_trip(lowered.optimized)
    text = ff.compile(ff.grad(mlp)).lower(*mlp_args).ir
    assert "@layers.0)" in text and "adjoint loc(" in text


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_every_op_round_trips(name):
    for k in range(len(OP_CASES[name])):
        attrs, operands = make_op_case(name, k)
        if name == "input":
            builder = Builder("input_only")
            graph = builder.finish([builder.add_input(attrs["type"], attrs["name"])])
        else:
            graph = one_op_graph(O.OPS[name], attrs, operands)
        assert_round_trip(graph)


def constant_graph(value, type_: TensorType, loc=None) -> Graph:
    builder = Builder("consts")
    return builder.finish([builder.emit(O.Constant, [], {"value": value, "type": type_}, loc)])


@pytest.mark.parametrize("value, type_", [
    (((1.0, -2.5), (3.25, 1e-300)), TensorType((2, 2), "f64")),
    ((((1, -2),), ((3, 4),)), TensorType((2, 1, 2), "i64")),
    ((True, False, True), TensorType((3,), "bool")),
    (False, TensorType((), "bool")),
    (float("inf"), TensorType((), "f64")),
    ((float("-inf"), 1e300, -0.0, 5e-324), TensorType((4,), "f64")),
    (0.1, TensorType((), "f32")),
    (-7, TensorType((), "i32")),
    ((), TensorType((0,), "f64")),
])
def test_constant_attributes_round_trip(value, type_):
    graph = constant_graph(value, type_)
    parsed = assert_round_trip(graph)
    assert type(parsed.nodes[0].attr("value")) is type(value)


def test_nan_constants_round_trip():
    graph = constant_graph((float("nan"), 1.0, float("-inf")), TensorType((3,), "f64"))
    text = str(graph)
    assert "value=[nan, 1.0, -inf]" in text
    parsed = parse_ir(text)
    assert str(parsed) == text  # nan != nan, so compare the text and the value
    value = parsed.nodes[0].attr("value")
    assert math.isnan(value[0]) and value[1:] == (1.0, -math.inf)


def test_string_attributes_and_locations_round_trip():
    builder = Builder("strings")
    x = builder.add_input(TensorType((2,), "f32"), 'weird "name" \\ with ü and spaces')
    loc = Loc("dir with space/model file.py", 12, "tower.layers.3.act")
    y = builder.emit(O.Exp, [x], {}, loc, Role.ADJOINT)
    z = builder.emit(O.ReduceSum, [y], {"axes": (0,), "keepdims": True}, Loc("<stdin>", 1))
    graph = builder.finish([z, x])
    text = str(graph)
    assert 'adjoint loc("dir with space/model file.py":12 @tower.layers.3.act)' in text
    assert "keepdims=true" in text and "return %2, %0" in text
    parsed = assert_round_trip(graph)
    assert parsed.nodes[1].loc == loc and parsed.nodes[0].attr("name") == 'weird "name" \\ with ü and spaces'


def test_list_attributes_round_trip():
    builder = Builder("lists")
    x = builder.add_input(TensorType((2, 3, 4), "f64"), "x")
    t = builder.emit(O.Transpose, [x], {"perm": (2, 0, 1)})
    p = builder.emit(O.Pad, [t], {"config": ((1, 0, 0), (0, 2, 1), (0, 0, 0))})
    s = builder.emit(O.Slice, [p], {"starts": (0, 1, 0), "stops": (5, 5, 3), "steps": (2, 3, 1)})
    r = builder.emit(O.ReduceMax, [s], {"axes": (), "keepdims": False})
    w = builder.emit(O.Pow, [r], {"exponent": -1.5})
    graph = builder.finish([w])
    assert "config=[[1, 0, 0], [0, 2, 1], [0, 0, 0]]" in str(graph) and "axes=[]" in str(graph)
    assert_round_trip(graph)


def test_comments_and_blank_lines_are_ignored(mlp_args):
    text = ff.compile(mlp).lower(*mlp_args).ir
    noisy = "// a comment\n\n" + text.replace("\n", "\n\n", 3)
    assert str(parse_ir(noisy)) == text


# --------------------------------------------------------------------------- malformed text

GOOD = """graph @g {
  %0:f64[2,3] = input {name="x"}
  %1:f64[3] = input {name="b"}
  %2:f64[2,3] = add %0, %1 loc("m.py":4)
  %3:f64[3,2] = transpose %2 {perm=[1, 0]}
  return %3
}
"""


def test_good_text_parses():
    graph = parse_ir(GOOD)
    assert str(graph) == GOOD and len(graph) == 4


@pytest.mark.parametrize("old, new, line, message", [
    ("add %0, %1", "addd %0, %1", 4, "unknown op 'addd'"),
    ("add %0, %1", "add %0, %7", 4, "%7 is not defined"),
    ("transpose %2", "transpose %5", 5, "%5 is not defined"),
    ("%2:f64[2,3] = add", "%2:f32[2,3] = add", 4, "declared f32[2,3] but add gives f64[2,3]"),
    ("%2:f64[2,3] = add", "%2:f64[3,2] = add", 4, "declared f64[3,2] but add gives f64[2,3]"),
    ("%2:f64[2,3] = add", "%2:f65[2,3] = add", 4, "malformed type 'f65[2,3]'"),
    ("%1:f64[3] = input", "%0:f64[3] = input", 3, "%0 is defined twice"),
    ("{perm=[1, 0]}", "{perm=[1, 1]}", 5, "transpose: perm [1, 1] is not a permutation"),
    ("{perm=[1, 0]}", "{perm=[1, 0], axis=2}", 5, "transpose: attributes must be ['perm']"),
    ("{perm=[1, 0]}", "{perm=}", 5, "expected an attribute value"),
    ("{perm=[1, 0]}", "{perm=[1, 0]", 5, "expected '}' closing the attributes"),
    ("{perm=[1, 0]}", "{perm=[1, 0}", 5, "expected an attribute value, found '}'"),
    ("{perm=[1, 0]}", "{perm=[1, 0", 5, "expected an attribute value, found end of line"),
    ("{perm=[1, 0]}", "{perm=[1, 0]} junk", 5, "unexpected 'junk'"),
    ("{perm=[1, 0]}", "{perm=[1, 0]} $", 5, "cannot read ' $'"),
    ('loc("m.py":4)', 'loc("m.py")', 4, "expected :"),
    ("add %0, %1", "add %0", 4, "add: expects 2 operands, got 1"),
    ("  return %3\n", "", 6, "missing 'return'"),
    ("  return %3\n", "  return %3\n  %4:f64[] = constant {value=1.0}\n", 7, "nothing may follow 'return'"),
    ("  return %3\n", "  return %9\n", 6, "%9 is not defined"),
    ("graph @g {", "graf @g {", 1, "expected 'graph @name {'"),
    ("  %2:f64", "  2:f64", 4, "expected '%N:type = op ...'"),
])
def test_malformed_ir_names_the_line(old, new, line, message):
    assert old in GOOD
    with pytest.raises(IRParseError) as info:
        parse_ir(GOOD.replace(old, new))
    assert str(info.value).startswith(f"line {line}, column ") and info.value.line == line
    assert message in str(info.value)


def test_unclosed_graph_and_empty_text():
    with pytest.raises(IRParseError, match="line 6, column 3: expected '}' closing the graph"):
        parse_ir(GOOD[:GOOD.rindex("}")])
    with pytest.raises(IRParseError, match="empty IR text"):
        parse_ir("  \n// only a comment\n")


def test_verifier_rejects_broken_graphs():
    good = parse_ir(GOOD)
    nodes = list(good.nodes)
    nodes[2] = Node(O.Add, (0, 3), (), nodes[2].type)  # uses a later node
    with pytest.raises(VerifyError, match=r"%2 .*operand %3 is not defined before use"):
        verify(Graph(tuple(nodes), good.outputs))
    nodes = list(good.nodes)
    nodes[3] = Node(O.Transpose, (2,), (("perm", (1, 0)),), TensorType((2, 3), "f64"))
    with pytest.raises(VerifyError, match=r"annotated f64\[2,3\] but transpose gives f64\[3,2\]"):
        verify(Graph(tuple(nodes), good.outputs))
    with pytest.raises(VerifyError, match="return of undefined %9"):
        verify(Graph(good.nodes, (9,)))


# --------------------------------------------------------------------------- graph views


def test_networkx_view(mlp_args):
    graph = ff.compile(mlp).lower(*mlp_args).graph
    dag = graph.to_networkx()
    assert dag.number_of_nodes() == len(graph)
    assert dag.number_of_edges() == sum(len(n.inputs) for n in graph.nodes)
    assert nx.is_directed_acyclic_graph(dag)
    for i, node in enumerate(graph.nodes):
        assert dag.nodes[i]["op"] == node.op.name and dag.nodes[i]["type"] == str(node.type)
        assert [j for j, _, _ in sorted(dag.in_edges(i, data="slot"), key=lambda e: e[2])] == list(node.inputs)
    assert dag.nodes[graph.inputs[0]]["attrs"]["name"] == "x"


def test_dot_export():
    graph = parse_ir(GOOD)
    dot = graph.to_dot()
    assert dot.startswith('digraph "g" {') and dot.rstrip().endswith("}")
    assert 'n2 [label="%2 add\\nf64[2,3]"];' in dot
    for edge in ("n0 -> n2;", "n1 -> n2;", "n2 -> n3;", "n3 -> out0;"):
        assert edge in dot
    assert dot.count("->") == 4
