"""Reverse-mode autodiff as a graph pass: append the adjoint graph.

The forward nodes are kept as they are; cotangents are accumulated walking
the list backwards (no recursion), each op's `vjp` emitting the IR of its
input cotangents. Only nodes on a path from a differentiated input to an
output get adjoint nodes. Broadcasting is undone here, centrally: a
cotangent of a broadcast shape is summed back to its operand's shape.
"""
from __future__ import annotations

from ..ir import Builder, Graph, Role, ShapeError
from ..ir import lang as L
from ..ir.lang import Value
from .dce import dce



def append_adjoint(graph: Graph, wrt: list[int], cotangents: str = "ones", passthrough: int = 0) -> Graph:
    """Return a graph computing graph's outputs followed by d(outputs)/d(wrt).

    cotangents="ones": the graph must have one scalar float output, seeded with 1.
    cotangents="inputs": one new input per output carries its cotangent (a VJP).
    passthrough: the graph's last outputs that are runtime-check flags (lang.check): kept
    as outputs, never differentiated.
    """
    builder = Builder(graph.name, None)
    builder.nodes = list(graph.nodes)  # forward part, unchanged (nodes are immutable)
    values = [Value(builder, i) for i in range(len(graph.nodes))]
    for i in wrt:
        if not graph.nodes[i].type.is_float:
            raise ShapeError(f"grad: cannot differentiate with respect to {graph.nodes[i].type} input %{i}")
    seeds = _seeds(builder, graph.outputs[:len(graph.outputs) - passthrough], graph, cotangents)
    active = _active_nodes(graph, set(wrt))
    ct: dict[int, Value] = {}
    for out, seed in zip(graph.outputs, seeds):
        _accumulate(ct, out, seed)
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        if i not in ct or i not in active or not node.inputs:
            continue
        with builder.at(node.loc, Role.ADJOINT):
            inputs = [values[j] for j in node.inputs]
            grads = node.op.vjp(inputs, values[i], ct[i], node.attr_dict)
            for j, g in zip(node.inputs, grads):
                if g is None or j not in active or not graph.nodes[j].type.is_float:
                    continue
                _accumulate(ct, j, _unbroadcast(g, graph.nodes[j].type.shape))
    results = []
    for i in wrt:
        if i in ct:
            results.append(ct[i].id)
        else:  # no path to an output: the gradient is zero
            with builder.at(graph.nodes[i].loc, Role.ADJOINT):
                zero = L.constant(builder, 0.0, graph.nodes[i].type.dtype)
                results.append(L.broadcast_to(zero, graph.nodes[i].type.shape).id)
    # VJP rules emit cotangents for every operand; drop those nobody asked for.
    return dce(builder.finish(list(graph.outputs) + results))


def _seeds(builder: Builder, outputs, graph: Graph, cotangents: str) -> list[Value]:
    """The cotangents of outputs (the graph's differentiated outputs)."""
    if cotangents == "ones":
        if len(outputs) != 1:
            raise ShapeError(f"grad needs a function with one output, got {len(outputs)}")
        out = graph.nodes[outputs[0]].type
        if out.shape != () or not out.is_float:
            raise ShapeError(f"grad needs a scalar float output, got {out}; use ff.vjp for others")
        with builder.at(graph.nodes[outputs[0]].loc, Role.ADJOINT):
            return [L.constant(builder, 1.0, out.dtype)]
    if cotangents == "inputs":
        return [Value(builder, builder.add_input(graph.nodes[o].type, f"cotangent{k}"))
                for k, o in enumerate(outputs)]
    raise ValueError(f"cotangents must be 'ones' or 'inputs', got {cotangents!r}")


def _active_nodes(graph: Graph, wrt: set[int]) -> set[int]:
    """Nodes that depend on some wrt input and reach some output."""
    depends = set(wrt)
    for i, node in enumerate(graph.nodes):
        if any(j in depends for j in node.inputs):
            depends.add(i)
    reaches = set(graph.outputs)
    for i in range(len(graph.nodes) - 1, -1, -1):
        if i in reaches:
            reaches.update(graph.nodes[i].inputs)
    return depends & reaches


def _accumulate(ct: dict[int, Value], i: int, g: Value) -> None:
    ct[i] = g if i not in ct else ct[i] + g


def _unbroadcast(g: Value, shape: tuple[int, ...]) -> Value:
    """Sum g over the axes that broadcasting added or stretched to reach g's shape."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = list(range(lead))
    axes += [lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1]
    summed = L.reduce_sum(g, tuple(axes), keepdims=False) if axes else g
    return L.reshape(summed, shape)
