"""The per-size graph of a symbolic one: every `B` in types and attributes replaced by a size.

A symbolic graph (`f32[B,512]`, ir/symbolic.py) is traced once; each batch size the
program is called with gets this graph specialized to it, which is node for node the
graph a trace at that size builds (a constant holding B, a mean's count, becomes the
literal that trace would hold, converted to the constant's dtype the same way).
"""
from __future__ import annotations

import dataclasses

from .graph import Graph, Node
from .op import OPS
from .symbolic import substitute, symbol_names
from .verify import verify

_CONSTANT = OPS["constant"]


def specialize(graph: Graph, bindings: dict[str, int]) -> Graph:
    """graph with its symbols bound (verified: the shape rules agree at this size)."""
    for name, size in bindings.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"size of {name} must be a non-negative int, got {size!r}")
    nodes = tuple(_node(node, bindings) for node in graph.nodes)
    return verify(Graph(nodes, graph.outputs, graph.name))


def _node(node: Node, bindings: dict[str, int]) -> Node:
    if not symbol_names((node.type, node.attrs)):
        return node
    dtype = node.type.np_dtype if node.op is _CONSTANT else None
    attrs = tuple((k, substitute(v, bindings, dtype if k == "value" else None)) for k, v in node.attrs)
    return dataclasses.replace(node, attrs=attrs, type=substitute(node.type, bindings))

