"""Verifier: SSA order, attribute names, and every type re-derived from its op."""
from __future__ import annotations

from .errors import ShapeError, VerifyError
from .graph import Graph
from .printer import format_node


def verify(graph: Graph) -> Graph:
    """Raise VerifyError on the first broken invariant; return the graph unchanged."""
    for i, node in enumerate(graph.nodes):
        where = f"%{i} ({format_node(i, node, locs=False)})"
        for j in node.inputs:
            if not 0 <= j < i:
                raise VerifyError(f"{where}: operand %{j} is not defined before use")
        types = [graph.nodes[j].type for j in node.inputs]
        attrs = node.attr_dict
        try:
            node.op.check_signature(types, attrs)
            inferred = node.op.infer(types, attrs)
        except ShapeError as exc:
            raise VerifyError(f"{where}: {exc}") from None
        if inferred != node.type:
            raise VerifyError(f"{where}: annotated {node.type} but {node.op.name} gives {inferred}")
        try:
            hash(node.attrs)
        except TypeError:
            raise VerifyError(f"{where}: attributes must be hashable") from None
    for j in graph.outputs:
        if not 0 <= j < len(graph.nodes):
            raise VerifyError(f"return of undefined %{j}")
    return graph
