"""Remat of a symbolic graph (`f32[B,784]`): planned at the reference batch size, valid below it.

The planners count bytes and FLOPs in ints, so they plan the graph specialized to
the range's reference size (max_batch when given): a budget is stated for that
size. Each graph they try is taken back to the symbolic one it stands for, and its
peak is the symbolic program's arena at the reference size, so the budget bounds the
arena the one program really allocates there. Every size in the plan is
non-decreasing in B (Affine coefficients are never negative), so the arena at any
smaller batch is at most the budget too; an unbounded range's larger sizes may pass it.

A rewritten graph goes back to symbolic node by node: its originals come in the
specialized graph's order, and each recompute copy is the copy of the one original
with its op, attributes, type, location and (taken back) operands.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..ir import Graph, Role
from ..ir.specialize import specialize
from ..ir.symbolic import BatchRange
from .remat import RematPlan, remat


def remat_symbolic(graph: Graph, strategy: str, memory_budget, time_limit: float,
                   peak_of: Callable[[Graph], int], batch: BatchRange) -> tuple[Graph, RematPlan]:
    """remat (passes/remat.py) of a symbolic graph; peak_of measures a symbolic graph."""
    sized = specialize(graph, {"B": batch.reference})
    result, plan = remat(sized, strategy, memory_budget, time_limit,
                         lambda candidate: peak_of(unspecialize(candidate, sized, graph)))
    return unspecialize(result, sized, graph), plan


def unspecialize(rewritten: Graph, sized: Graph, symbolic: Graph) -> Graph:
    """rewritten (remat of sized, the specialization of symbolic) with symbolic's types
    and attributes: the same rewrite applied to the symbolic graph."""
    if rewritten is sized:
        return symbolic
    by_key = {}
    for i, node in enumerate(sized.nodes):
        by_key.setdefault(_key(node, node.inputs), []).append(i)
    source: list[int] = []  # rewritten id -> the sized (and symbolic) node it copies
    originals = 0
    nodes = []
    for node in rewritten.nodes:
        if node.role is Role.RECOMPUTE:
            found = by_key.get(_key(node, tuple(source[j] for j in node.inputs)), [])
            if len(found) != 1:
                raise ValueError(f"remat: recompute copy of {node.op.name} at {node.loc} matches "
                                 f"{len(found)} nodes of @{sized.name}")
            origin = found[0]
        else:
            origin, originals = originals, originals + 1
            assert sized.nodes[origin].op is node.op, "remat keeps the originals in their order"
        source.append(origin)
        original = symbolic.nodes[origin]
        nodes.append(dataclasses.replace(node, attrs=original.attrs, type=original.type))
    return Graph(tuple(nodes), rewritten.outputs, rewritten.name)


def _key(node, inputs: tuple[int, ...]):
    return node.op, node.attrs, node.type, node.loc, inputs
