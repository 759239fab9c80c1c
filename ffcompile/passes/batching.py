"""Batching (vmap) as a graph pass: the graph of one example -> the graph of a batch.

`batch_graph` walks the nodes in order (no recursion). A node none of whose operands is
batched is copied as it is (weights stay unbatched: one copy, not B). A node with a
batched operand is rewritten by its op's rule in `BATCHING_RULES`, the one table of
batching rules: every rule receives its operands (a batched one carries the batch as a
new leading axis), which of them are batched, the node's attributes and the batch size,
and returns the node's value for every example, batch first. A matmul of a batched
operand by a matrix is one GEMM over the batch's rows; two batched operands make one
batched matmul, which the backends lower as a loop of GEMMs.

Every node a rule emits keeps the original node's role and location, with `vmap` added
to the location's transforms, so the dump says which line each batched node computes.
An op whose operands never exist (sources: input, constant, iota) has no rule; any
other op without one fails tests/test_batching.py's completeness test.
"""
from __future__ import annotations

import dataclasses

from ..ir import Builder, Graph, Loc
from ..ir import lang as L
from ..ir import ops as O
from ..ir.lang import Value


def batch_graph(graph: Graph, batched: list[bool], size: int) -> tuple[Graph, list[bool]]:
    """The graph over a batch of `size` examples: an input k with batched[k] gets a new
    leading axis of `size` (the others stay as they are). Returns the new graph (same
    inputs and outputs, in order) and, per output, whether it is batched (leading axis)."""
    if len(batched) != len(graph.inputs):
        raise ValueError(f"batch_graph: {len(graph.inputs)} inputs, {len(batched)} batched flags")
    builder = Builder(graph.name, None)
    values: list[Value | None] = [None] * len(graph.nodes)
    is_batched = [False] * len(graph.nodes)
    for k, i in enumerate(graph.inputs):
        node = graph.nodes[i]
        type_ = node.type.with_shape((size,) + node.type.shape) if batched[k] else node.type
        values[i] = Value(builder, builder.add_input(type_, node.attr("name"), node.loc))
        is_batched[i] = batched[k]
    for i, node in enumerate(graph.nodes):
        if values[i] is not None:
            continue
        operands = [values[j] for j in node.inputs]
        flags = [is_batched[j] for j in node.inputs]
        if not any(flags):
            values[i] = Value(builder, builder.copy(node, [v.id for v in operands]))
            continue
        with builder.at(_batched_loc(node.loc), node.role):
            out = BATCHING_RULES[node.op](operands, flags, node.attr_dict, size)
        expected = (size,) + node.type.shape
        if out.shape != expected or out.dtype != node.type.dtype:  # a broken rule, not a user error
            raise AssertionError(f"the batching rule of {node.op.name} made {out.type}, "
                                 f"not {node.type.dtype}{list(expected)}")
        values[i], is_batched[i] = out, True
    outputs = [values[i].id for i in graph.outputs]
    return builder.finish(outputs), [is_batched[i] for i in graph.outputs]


def _batched_loc(loc: Loc | None) -> Loc | None:
    return None if loc is None else dataclasses.replace(loc, transforms=("vmap",) + loc.transforms)


def _emit(op, operands: list[Value], attrs: dict) -> Value:
    builder = operands[0].builder
    return Value(builder, builder.emit(op, [v.id for v in operands], attrs))


def _materialized(operands, batched, size) -> list[Value]:
    """Every operand batched: an unbatched one broadcast over the batch (for ops whose
    operands must share one shape)."""
    return [v if b else L.broadcast_to(v, (size,) + v.shape) for v, b in zip(operands, batched)]


def _rank_aligned(value: Value, rank: int) -> Value:
    """A batched value of per-example rank < rank with 1s inserted after the batch axis, so
    that NumPy broadcasting (which aligns trailing axes) pairs its axes with the others'."""
    missing = rank - (value.ndim - 1)
    return L.reshape(value, value.shape[:1] + (1,) * missing + value.shape[1:]) if missing > 0 else value


# --------------------------------------------------------------------------- the rules


def _broadcasting(op):
    """Broadcasting ops: a batched operand's batch axis goes before the output's axes;
    unbatched operands broadcast over it by NumPy's rule."""
    def rule(operands, batched, attrs, size):
        rank = max(v.ndim - b for v, b in zip(operands, batched))
        aligned = [_rank_aligned(v, rank) if b else v for v, b in zip(operands, batched)]
        return _emit(op, aligned, attrs)

    return rule


def _axes_shifted(op, *names):
    """Ops over axes given by attributes `names`: the same op, one axis further right."""
    def rule(operands, batched, attrs, size):
        shifted = dict(attrs)
        for name in names:
            value = attrs[name]
            shifted[name] = tuple(a + 1 for a in value) if isinstance(value, tuple) else value + 1
        return _emit(op, _materialized(operands, batched, size), shifted)

    return rule


def _same_shapes(op):
    """Ops whose operands share one shape, working along the last axis."""
    def rule(operands, batched, attrs, size):
        return _emit(op, _materialized(operands, batched, size), attrs)

    return rule


def _matmul(operands, batched, attrs, size):
    a, b = operands
    a_batched, b_batched = batched
    if a_batched and not b_batched and b.ndim == 2:
        # Every row of every example times one matrix: one GEMM of (size * rows, k).
        rows = L.reshape(a, (-1, a.shape[-1]))
        return L.reshape(_emit(O.Matmul, [rows, b], {}), a.shape[:-1] + b.shape[-1:])
    rank = max(a.ndim - a_batched, b.ndim - b_batched)
    a = _rank_aligned(a, rank) if a_batched else a
    b = _rank_aligned(b, rank) if b_batched else b
    return _emit(O.Matmul, [a, b], {})  # batch axes broadcast: a batched matmul


def _transpose(operands, batched, attrs, size):
    (x,) = operands
    return _emit(O.Transpose, [x], {"perm": (0,) + tuple(p + 1 for p in attrs["perm"])})


def _reshape(operands, batched, attrs, size):
    (x,) = operands
    return _emit(O.Reshape, [x], {"shape": (size,) + tuple(attrs["shape"])})


def _broadcast(operands, batched, attrs, size):
    (x,) = operands
    shape = tuple(attrs["shape"])
    return L.broadcast_to(_rank_aligned(x, len(shape)), (size,) + shape)


def _slice(operands, batched, attrs, size):
    (x,) = operands
    return _emit(O.Slice, [x], {"starts": (0,) + attrs["starts"], "stops": (size,) + attrs["stops"],
                                "steps": (1,) + attrs["steps"]})


def _pad(operands, batched, attrs, size):
    (x,) = operands
    return _emit(O.Pad, [x], {"config": ((0, 0, 0),) + attrs["config"]})


def _all_reduce(operands, batched, attrs, size):
    """The mean over the ranks is elementwise: one all_reduce of every example's flattened
    operands, side by side, then split back into examples (the same layout on every rank)."""
    rows = [L.reshape(v, (size, -1)) for v in _materialized(operands, batched, size)]
    reduced = _emit(O.AllReduce, [L.concatenate(rows, axis=1)], attrs)
    return L.reshape(reduced, (size, -1))


_ELEMENTWISE = (O.Neg, O.Exp, O.Expm1, O.Log, O.Log1p, O.Tanh, O.Erf, O.Sin, O.Cos, O.Sqrt, O.Abs,
                O.Sign, O.Floor, O.StopGradient, O.Pow, O.Convert, O.Add, O.Sub, O.Mul, O.Div,
                O.Maximum, O.Minimum, O.Gt, O.Ge, O.Lt, O.Le, O.Eq, O.Select, O.Threefry2x32,
                O.Sigmoid, O.LogSigmoid, O.Softplus, O.Gelu)

# op class -> rule(operands, batched, attrs, size) -> the batched value (batch axis first).
BATCHING_RULES = {
    **{op: _broadcasting(op) for op in _ELEMENTWISE},
    O.ReduceSum: _axes_shifted(O.ReduceSum, "axes"),
    O.ReduceMax: _axes_shifted(O.ReduceMax, "axes"),
    O.Softmax: _axes_shifted(O.Softmax, "axis"),
    O.LogSoftmax: _axes_shifted(O.LogSoftmax, "axis"),
    O.Concat: _axes_shifted(O.Concat, "axis"),
    O.SoftmaxCrossEntropy: _same_shapes(O.SoftmaxCrossEntropy),
    O.Matmul: _matmul,
    O.Transpose: _transpose,
    O.Reshape: _reshape,
    O.Broadcast: _broadcast,
    O.Slice: _slice,
    O.Pad: _pad,
    O.AllReduce: _all_reduce,
}
