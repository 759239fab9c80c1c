"""Costs every remat module measures a graph by: a node's FLOPs, the arena of the fused program."""
from __future__ import annotations

from ..ir import Graph
from .fuse import fuse
from .memory import plan_memory


def flops_of(graph: Graph, i: int) -> int:
    node = graph.nodes[i]
    return node.op.cost([graph.nodes[j].type for j in node.inputs], node.type, node.attr_dict).flops


def arena_peak(graph: Graph) -> int:
    """The real peak: the arena the memory planner gives the fused program."""
    return plan_memory(fuse(graph)).arena_bytes
