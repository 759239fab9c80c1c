"""Verifier: SSA order, attribute names, and every type re-derived from its op."""
from __future__ import annotations

from .errors import ShapeError, VerifyError
from .graph import Graph
from .op import Input
from .printer import format_node
from .symbolic import symbol_names


def verify(graph: Graph) -> Graph:
    """Raise VerifyError on the first broken invariant; return the graph unchanged."""
    bound: set[str] = set()  # the symbols (B) of inputs' shapes: the sizes a call gives
    for i, node in enumerate(graph.nodes):
        where = f"%{i} ({format_node(i, node, locs=False)})"
        unbound = unbound_symbols(node, bound)
        if unbound:
            raise VerifyError(f"{where}: {unbound}")
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


def unbound_symbols(node, bound: set[str]) -> str | None:
    """An input's symbols join bound; another node's symbols must be among them (a typo,
    `{value=Bx}`, would otherwise be a size no call gives): else what is wrong, said."""
    named = symbol_names((node.type, node.attrs))
    if node.op is Input:
        bound |= named
    elif named - bound:
        return f"symbol {', '.join(sorted(named - bound))} is no dimension of an input, so no call gives it a size"
    return None
