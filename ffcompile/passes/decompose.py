"""Expand composite ops (sigmoid, softmax, cross-entropy, ...) into primitives.

Composites stay whole through autodiff, which uses their own VJPs; backends
only ever see primitives. A decomposition may use other composites, so the
expansion repeats until none is left.
"""
from __future__ import annotations

from ..ir import Builder, Graph
from ..ir.lang import Value
from ..ir.ops import COMPOSITE

_MAX_ROUNDS = 8


def decompose(graph: Graph) -> Graph:
    for _ in range(_MAX_ROUNDS):
        if not any(COMPOSITE in n.op.traits for n in graph.nodes):
            return graph
        graph = _expand_once(graph)
    raise RuntimeError("decompose: composites still present after expansion rounds")


def _expand_once(graph: Graph) -> Graph:
    builder = Builder(graph.name)
    mapping: list[int] = []
    for node in graph.nodes:
        inputs = [mapping[j] for j in node.inputs]
        if COMPOSITE in node.op.traits:
            with builder.at(node.loc):
                out = node.op.decompose([Value(builder, j) for j in inputs], node.attr_dict)
            mapping.append(out.id)
        else:
            mapping.append(builder.copy(node, inputs))
    return builder.finish([mapping[j] for j in graph.outputs])
