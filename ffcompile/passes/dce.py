"""Dead-code elimination: drop nodes no output depends on (inputs always stay)."""
from __future__ import annotations

from ..ir import Builder, Graph
from ..ir.ops import Input


def dce(graph: Graph) -> Graph:
    live = set(graph.outputs)
    for i in range(len(graph.nodes) - 1, -1, -1):
        if i in live or graph.nodes[i].op is Input:
            live.add(i)
            live.update(graph.nodes[i].inputs)
    if len(live) == len(graph.nodes):
        return graph
    builder = Builder(graph.name)
    mapping: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if i in live:
            mapping[i] = builder.copy(node, [mapping[j] for j in node.inputs])
    return builder.finish([mapping[j] for j in graph.outputs])
