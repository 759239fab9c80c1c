"""Golden text of the adjoint graph autodiff appends to a 2-layer MLP with MSE loss.

Regenerate with FFCOMPILE_REGOLD=1 after a deliberate change, and read the diff."""
import os
import pathlib

import numpy as np

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile.ir import parse_ir, print_graph

GOLDEN = pathlib.Path(__file__).parent / "golden" / "autodiff" / "mlp_mse.ir"


def mlp_mse(w1, b1, w2, b2, x, y):
    h = ff.tanh(x @ w1 + b1)
    out = h @ w2 + b2
    return 0.5 * ((out - y) * (out - y)).sum()


def adjoint_graph():
    f32 = np.float32
    args = (np.ones((3, 4), f32), np.ones(4, f32), np.ones((4, 2), f32), np.ones(2, f32),
            np.ones((5, 3), f32), np.ones((5, 2), f32))
    return ff.compile(ff.value_and_grad(mlp_mse, argnums=(0, 1, 2, 3))).lower(*args).graph


def test_adjoint_of_a_two_layer_mlp_matches_golden_text():
    graph = adjoint_graph()
    text = print_graph(graph, locs=False)
    if os.environ.get("FFCOMPILE_REGOLD"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_adjoint_graph_round_trips_and_every_adjoint_node_names_its_forward_line():
    graph = adjoint_graph()
    text = str(graph)
    assert str(parse_ir(text)) == text
    first_adjoint = next(i for i, n in enumerate(graph.nodes) if n.role is Role.ADJOINT)
    forward_lines = {n.loc.line for n in graph.nodes[:first_adjoint] if n.loc}
    for node in graph.nodes[first_adjoint:]:
        assert node.role is Role.ADJOINT and node.loc.line in forward_lines
