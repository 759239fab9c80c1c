"""Costs every remat module measures a graph by: a node's FLOPs, the arena of the fused program."""
from __future__ import annotations

from ..ir import Graph
from .fuse import fuse
from .memory import plan_memory


def flops_of(graph: Graph, i: int) -> int:
    node = graph.nodes[i]
    return node.op.cost([graph.nodes[j].type for j in node.inputs], node.type, node.attr_dict).flops


def graph_flops(graph: Graph) -> int:
    """The FLOPs of every node of the graph."""
    return sum(flops_of(graph, i) for i in range(len(graph.nodes)))


def arena_peak(graph: Graph) -> int:
    """The real peak: the arena the memory planner gives the fused program."""
    return plan_memory(fuse(graph)).arena_bytes
