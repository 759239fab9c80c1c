"""Graphs far deeper than Python's recursion limit print, parse, verify, run and differentiate.

Each test runs under a recursion limit only a little above the current stack
depth, so any traversal that recursed per node would fail loudly.
"""
import sys

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile.ir import verify

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
def shallow_stack():
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 200)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def wide_deep(x, y):
    """About 5,000 nodes: a long chain whose steps also read values from far back."""
    values = [x, y]
    h = x
    for i in range(1_250):
        h = ff.tanh(h * 0.9 + values[i // 2])  # 4 nodes per step (with a constant)
        values.append(h)
    return h.sum()


def wide_deep_numpy(x, y):
    values = [x, y]
    h = x
    for i in range(1_250):
        h = np.tanh(h * 0.9 + values[i // 2])
        values.append(h)
    return h.sum()


def test_5000_node_graph_prints_parses_verifies_and_runs(shallow_stack):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3,)), rng.normal(size=(3,))
    compiled = ff.compile(wide_deep)
    lowered = compiled.lower(x, y)
    assert len(lowered.graph) >= 5_000
    text = lowered.ir
    parsed = ff.parse_ir(text)
    assert str(parsed) == text and parsed == lowered.graph
    verify(parsed)
    assert lowered.graph.to_networkx().number_of_nodes() == len(lowered.graph)
    np.testing.assert_allclose(compiled(x, y), wide_deep_numpy(x, y), rtol=1e-13)


LAYERS = 2_000


def chain(x, w, b):
    h = x
    for _ in range(LAYERS):
        h = ff.tanh(h @ w + b)
    return h.sum()


def chain_numpy(x, w, b):
    """Forward and hand-written backward of `chain`."""
    hs = [x]
    for _ in range(LAYERS):
        hs.append(np.tanh(hs[-1] @ w + b))
    value = hs[-1].sum()
    g_h, g_w, g_b = np.ones_like(hs[-1]), np.zeros_like(w), np.zeros_like(b)
    for k in range(LAYERS, 0, -1):
        g_z = g_h * (1 - hs[k] ** 2)
        g_w += hs[k - 1].T @ g_z
        g_b += g_z.sum(0)
        g_h = g_z @ w.T
    return value, (g_h, g_w, g_b)


def test_2000_layer_chain_differentiates(shallow_stack):
    rng = np.random.default_rng(1)
    # An orthogonal weight and no bias keep the gradients from vanishing over 2,000 layers.
    w = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    x, b = rng.normal(size=(2, 4)), np.zeros(4)
    lowered = ff.compile(ff.value_and_grad(chain, argnums=(0, 1, 2))).lower(x, w, b)
    assert sum(n.role is Role.ADJOINT for n in lowered.graph.nodes) > 3 * LAYERS
    value, grads = lowered.compile()(x, w, b)
    expected_value, expected_grads = chain_numpy(x, w, b)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    for got, expected in zip(grads, expected_grads):
        scale = np.abs(expected).max()
        assert scale > 1e-3  # a gradient that has not vanished
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * scale)
