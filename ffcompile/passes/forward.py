"""Forward-mode autodiff as a graph pass: interleave the tangent graph (a JVP).

Each node is copied, then, if a differentiated input reaches it, its tangent is emitted
right after it by the op's rule in ir/jvp_rules.py (located at the node, Role.TANGENT).
Interleaving keeps a tangent next to its primal, so the primal's value dies early and a
tangent of a forward node stays in the forward part (the remat planner reads the parts
from the roles and the order). Tangents may carry a batch of leading axes (`batch`): the
basis of `ff.jacfwd` goes through as one tangent of shape (n, *x.shape), and every
rule's GEMM becomes a batched one instead of n copies of the graph.
"""
from __future__ import annotations

from ..ir import Builder, Graph, Role, ShapeError, TensorType
from ..ir import lang as L
from ..ir.jvp_rules import JVP_RULES, aligned
from ..ir.lang import Value
from .dce import dce


def append_tangent(graph: Graph, wrt: list[int], batch: tuple[int, ...] = (), passthrough: int = 0) -> Graph:
    """Return a graph with one more input per wrt input (its tangent, of type batch + the
    input's type) computing graph's outputs followed by the tangent of each output but the
    last `passthrough` (runtime-check flags, lang.check: kept, never differentiated).
    An output no wrt input reaches has a zero tangent."""
    for i in wrt:
        if not graph.nodes[i].type.is_float:
            raise ShapeError(f"jvp: cannot differentiate with respect to {graph.nodes[i].type} input %{i}")
    builder = Builder(graph.name, None)
    mapping: dict[int, int] = {}
    for i in graph.inputs:  # inputs first, in order: the tangents' inputs come after them all
        mapping[i] = builder.copy(graph.nodes[i], [])
    tangents: dict[int, Value] = {}
    for k, i in enumerate(wrt):
        t_type = TensorType(tuple(batch) + graph.nodes[i].type.shape, graph.nodes[i].type.dtype)
        tangents[i] = Value(builder, builder.add_input(t_type, f"tangent{k}"))
    nb = len(batch)
    for i, node in enumerate(graph.nodes):
        if i in mapping:
            continue
        mapping[i] = builder.copy(node, [mapping[j] for j in node.inputs])
        operand_tangents = [tangents.get(j) for j in node.inputs]
        if not node.op.differentiable or not node.type.is_float or all(t is None for t in operand_tangents):
            continue
        rule = JVP_RULES.get(node.op)
        if rule is None:
            raise ShapeError(f"jvp: op {node.op.name} has no JVP rule (ir/jvp_rules.py)")
        with builder.at(node.loc, Role.TANGENT):
            primals = [Value(builder, mapping[j]) for j in node.inputs]
            t = rule(primals, Value(builder, mapping[i]), operand_tangents, node.attr_dict, nb)
            if t is not None:
                tangents[i] = _full(t, tuple(batch) + node.type.shape, nb)
    outputs = [mapping[j] for j in graph.outputs]
    for j in graph.outputs[:len(graph.outputs) - passthrough]:
        if j in tangents:
            outputs.append(tangents[j].id)
        else:
            with builder.at(graph.nodes[j].loc, Role.TANGENT):
                out = graph.nodes[j].type
                zero = L.constant(builder, 0.0 if out.is_float else 0, out.dtype)
                outputs.append(L.broadcast_to(zero, tuple(batch) + out.shape).id)
    # Rules emit what a tangent needs; a tangent nobody reads goes.
    return dce(builder.finish(outputs))


def _full(t: Value, shape: tuple[int, ...], nb: int) -> Value:
    """A rule's tangent, broadcast to the whole batched output shape."""
    if t.shape == shape:
        return t
    return L.broadcast_to(aligned(t, len(shape) - nb, nb), shape)
