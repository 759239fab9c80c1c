"""The batching pass (passes/batching.py): every op has a rule, and every rule computes,
for a batch, what the op computes for each example alone."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ffcompile.ir import Builder, Loc, TensorType, parse_ir
from ffcompile.ir import lang as L
from ffcompile.ir.ops import OPS
from ffcompile.passes.batching import BATCHING_RULES, batch_graph
from samples import OP_CASES, make_op_case, one_op_graph, run_graph

SIZE = 3


def test_every_op_with_operands_has_a_batching_rule():
    """A new op without a rule fails here, not in a user's vmap; sources (no operands) need none."""
    with_operands = {op for op in OPS.values() if op.arity != 0}
    missing = sorted(op.name for op in with_operands - set(BATCHING_RULES))
    assert not missing, f"ops without a batching rule in passes/batching.py: {missing}"
    assert set(BATCHING_RULES) <= with_operands


def _example(operand: np.ndarray, j: int) -> np.ndarray:
    """Example j of a batch built from one sample operand: a different value of the same
    kind (positive scaling keeps every sample's domain: logs of positives, and so on)."""
    if operand.dtype == np.bool_:
        return operand ^ bool(j % 2)
    if operand.dtype.kind in "iu":
        return operand + operand.dtype.type(j)
    return operand * operand.dtype.type(1 + 0.25 * j)


def _rule_cases():
    for name, op in OPS.items():
        if op.arity == 0:
            continue
        for k in range(len(OP_CASES[name])):
            count = len(make_op_case(name, k)[1])
            for batched in itertools.product((False, True), repeat=count):
                if any(batched):
                    yield pytest.param(name, k, batched, id=f"{name}-{k}-{''.join('bu'[not b] for b in batched)}")


@pytest.mark.parametrize("name, k, batched", list(_rule_cases()))
def test_batching_rule_matches_the_op_per_example(name, k, batched):
    op = OPS[name]
    attrs, operands = make_op_case(name, k)
    examples = [[_example(a, j) if b else a for a, b in zip(operands, batched)] for j in range(SIZE)]
    expected = np.stack([run_graph(one_op_graph(op, attrs, ex), ex) for ex in examples])
    stacked = [np.stack([ex[m] for ex in examples]) if b else a for m, (a, b) in enumerate(zip(operands, batched))]
    graph, out_batched = batch_graph(one_op_graph(op, attrs, operands), list(batched), SIZE)
    assert out_batched == [True]
    got = run_graph(graph, stacked)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_unbatched_nodes_are_copied_and_batched_ones_say_vmap():
    """Only what depends on a batched input is rewritten; the rest (here the weight's
    transpose) stays one unbatched node without provenance added."""
    builder = Builder("f")
    x = L.Value(builder, builder.add_input(TensorType((3,), "f32"), "x"))
    w = L.Value(builder, builder.add_input(TensorType((3, 2), "f32"), "w"))
    with builder.at(Loc("f.py", 7)):
        out = L.tanh(L.matmul(x, L.transpose(L.transpose(w))))
    graph, batched = batch_graph(builder.finish([out.id]), [True, False], 5)
    assert batched == [True]
    assert str(graph) == """graph @f {
  %0:f32[5,3] = input {name="x"}
  %1:f32[3,2] = input {name="w"}
  %2:f32[2,3] = transpose %1 {perm=[1, 0]} loc("f.py":7)
  %3:f32[3,2] = transpose %2 {perm=[1, 0]} loc("f.py":7)
  %4:f32[5,1,3] = reshape %0 {shape=[5, 1, 3]} loc(vmap "f.py":7)
  %5:f32[5,3] = reshape %4 {shape=[5, 3]} loc(vmap "f.py":7)
  %6:f32[5,2] = matmul %5, %3 loc(vmap "f.py":7)
  %7:f32[5,1,2] = reshape %6 {shape=[5, 1, 2]} loc(vmap "f.py":7)
  %8:f32[5,2] = reshape %7 {shape=[5, 2]} loc(vmap "f.py":7)
  %9:f32[5,2] = tanh %8 loc(vmap "f.py":7)
  return %9
}
"""
    assert parse_ir(str(graph)) == graph


def test_a_batched_matmul_by_a_matrix_is_one_gemm_and_two_batched_operands_one_batched_matmul():
    builder = Builder("f")
    a = L.Value(builder, builder.add_input(TensorType((4, 3), "f64"), "a"))
    b = L.Value(builder, builder.add_input(TensorType((3, 2), "f64"), "b"))
    graph = builder.finish([L.matmul(a, b).id])
    one_gemm, _ = batch_graph(graph, [True, False], 8)
    (gemm,) = [n for n in one_gemm.nodes if n.op.name == "matmul"]
    assert [one_gemm.nodes[i].type.shape for i in gemm.inputs] == [(32, 3), (3, 2)]
    batched, _ = batch_graph(graph, [True, True], 8)
    (gemm,) = [n for n in batched.nodes if n.op.name == "matmul"]
    assert [batched.nodes[i].type.shape for i in gemm.inputs] == [(8, 4, 3), (8, 3, 2)]
