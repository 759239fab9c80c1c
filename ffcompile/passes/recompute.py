"""The remat rewrite and the named stored sets (see remat.py for the whole story).

A forward value the backward part reads is either stored or recomputed: a
copy of its node, located `recompute loc(...)`, inserted right before the
first backward node that needs it. This module holds the rewrites
(`insert_recomputation` for a stored set, one copy per value; `insert_rounds`
for any sequence of copies, which the chain DP's multiple recomputation uses)
and the stored set of each named strategy (`STORED_SETS`); remat.py,
remat_solver.py and remat_chain.py build on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import Graph, Node, Role
from ..ir import ops as O
from .cost import flops_of



class RematInfeasible(ValueError):
    """No plan the planner found fits the memory budget; least_peak: the smallest it found."""

    def __init__(self, message: str, least_peak: int | None = None):
        super().__init__(message)
        self.least_peak = least_peak


# --------------------------------------------------------------------------- the rewrite


def forward_mask(graph: Graph) -> list[bool]:
    """forward[i]: node i belongs to the forward part (graph inputs excluded)."""
    nodes = graph.nodes
    backward = [False] * len(nodes)
    for i, node in enumerate(nodes):
        backward[i] = node.role in (Role.ADJOINT, Role.UPDATE) or any(backward[j] for j in node.inputs)
    live = [False] * len(nodes)  # some output depends on it (grad's outputs are all backward)
    for j in graph.outputs:
        live[j] = True
    for i in range(len(nodes) - 1, -1, -1):
        if live[i]:
            for j in nodes[i].inputs:
                live[j] = True
    forward = [live[i] and not backward[i] and node.op is not O.Input for i, node in enumerate(nodes)]
    # A value read only by the backward part and computed from graph inputs and constants
    # directly, or through scalars computed so (an optimizer's b1 * m, its bias corrections from
    # the step count, a hyperparameter read from its array), is backward too: it needs no activation, and storing or recomputing it
    # is no choice, only a delay to the update that reads it.
    from_inputs = [False] * len(nodes)
    for i, node in enumerate(nodes):
        from_inputs[i] = all(nodes[j].op in (O.Input, O.Constant) or (from_inputs[j] and nodes[j].type.size <= 1)
                             for j in node.inputs)
    users = graph.users()
    outputs = set(graph.outputs)
    for i in range(len(nodes) - 1, -1, -1):
        if forward[i] and from_inputs[i] and i not in outputs and not any(forward[u] for u in users[i]):
            forward[i] = False
    return forward


def copyable(graph: Graph, forward: list[bool], i: int) -> bool:
    """Forward nodes with operands can be recomputed; inputs and constants are always at hand."""
    return forward[i] and bool(graph.nodes[i].inputs)


def recomputed_values(graph: Graph, forward: list[bool], stored: set[int]) -> list[int]:
    """The forward values that get a copy when `stored` are kept: ascending ids."""
    nodes = graph.nodes
    needed = [False] * len(nodes)
    for i, node in enumerate(nodes):
        if not forward[i] and node.op is not O.Input:
            for j in node.inputs:
                needed[j] = needed[j] or (copyable(graph, forward, j) and j not in stored)
    for i in range(len(nodes) - 1, -1, -1):
        if needed[i]:
            for j in nodes[i].inputs:
                needed[j] = needed[j] or (copyable(graph, forward, j) and j not in stored)
    return [i for i, n in enumerate(needed) if n]


@dataclass(frozen=True)
class Rewrite:
    graph: Graph
    new_id: tuple[int, ...]  # original node id -> its id in the rewritten graph
    copies: dict[int, int]  # recomputed original id -> its (last) copy's id in the rewritten graph
    extra_flops: int


def insert_recomputation(graph: Graph, stored: set[int], forward: list[bool] | None = None) -> Rewrite:
    """Recompute every forward value the backward part needs that is not in `stored`."""
    forward = forward_mask(graph) if forward is None else forward
    nodes = graph.nodes
    recompute = recomputed_values(graph, forward, stored)
    if not recompute:
        return Rewrite(graph, tuple(range(len(nodes))), {}, 0)
    wanted = set(recompute)
    # Each copy goes right before the first backward node that reads it or a copy reading it.
    first_need = {v: len(nodes) for v in recompute}
    for i, node in enumerate(nodes):
        if not forward[i]:
            for j in node.inputs:
                if j in wanted:
                    first_need[j] = min(first_need[j], i)
    for v in reversed(recompute):  # users have larger ids: their first need is final
        for j in nodes[v].inputs:
            if j in wanted:
                first_need[j] = min(first_need[j], first_need[v])
    due: dict[int, list[int]] = {}
    for v in recompute:  # ascending: a copy's operands are emitted before it
        due.setdefault(first_need[v], []).append(v)
    return insert_rounds(graph, due, forward)


def insert_rounds(graph: Graph, rounds: dict[int, list[int]], forward: list[bool]) -> Rewrite:
    """Multiple recomputation: before node i, copy the forward nodes rounds[i] in order.

    A copy and every backward node read the latest copy of each operand (else the
    original), so a value may be recomputed many times and a copy kept by a later
    reader is a new checkpoint; copies compute the same ops on the same operands,
    so every version holds the same bits. Then each copy sinks to right before the
    first node needing it (through the copies reading it), so a round made for a
    whole step lives no longer than its readers need, and a copy nothing reads is
    dropped. `copies` maps a value to its last copy; copy n prints `recompute#n`."""
    nodes = graph.nodes
    if not any(rounds.values()):
        return Rewrite(graph, tuple(range(len(nodes))), {}, 0)
    # The sequence of originals and copies: (original id, operand positions, copy number or 0).
    sequence: list[tuple[int, tuple[int, ...], int]] = []
    position = [0] * len(nodes)
    latest: dict[int, int] = {}
    made: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for v in rounds.get(i, ()):
            made[v] = made.get(v, 0) + 1
            latest[v] = len(sequence)
            sequence.append((v, tuple(latest.get(j, position[j]) for j in nodes[v].inputs), made[v]))
        reads_copies = not forward[i] and node.op is not O.Input
        position[i] = len(sequence)
        sequence.append((i, tuple(latest.get(j, position[j]) if reads_copies else position[j]
                                  for j in node.inputs), 0))
    anchor: list[int | None] = list(range(len(sequence)))
    first_need: list[int | None] = [None] * len(sequence)
    for p in range(len(sequence) - 1, -1, -1):
        _, operands, number = sequence[p]
        if number:
            anchor[p] = first_need[p]
        if anchor[p] is not None:
            for q in operands:
                first_need[q] = anchor[p] if first_need[q] is None else min(first_need[q], anchor[p])
    due: dict[int, list[int]] = {}
    for p, (_, _, number) in enumerate(sequence):
        if number and anchor[p] is not None:
            due.setdefault(anchor[p], []).append(p)
    built: list[Node] = []
    new: list[int | None] = [None] * len(sequence)
    for p, (_, _, number) in enumerate(sequence):
        if number:
            continue
        for q in (*due.get(p, ()), p):  # ascending: a copy's operand copies come first
            v, operands, copy = sequence[q]
            node = nodes[v]  # a copy has its original's type: its operands have theirs
            built.append(Node(node.op, tuple(new[o] for o in operands), node.attrs, node.type, node.loc,
                              Role.RECOMPUTE if copy else node.role, copy or node.copy))
            new[q] = len(built) - 1
    extra = sum(flops_of(graph, v) for q, (v, _, copy) in enumerate(sequence) if copy and new[q] is not None)
    return Rewrite(Graph(tuple(built), tuple(new[position[j]] for j in graph.outputs), graph.name),
                   tuple(new[p] for p in position),
                   {v: new[q] for v, q in latest.items() if new[q] is not None}, extra)


# --------------------------------------------------------------------------- strategies


def stored_all(graph: Graph, forward: list[bool]) -> set[int]:
    return {i for i, f in enumerate(forward) if f}


def stored_matmuls(graph: Graph, forward: list[bool]) -> set[int]:
    """JAX's dots_saveable: keep contraction outputs, recompute everything elementwise."""
    return {i for i, node in enumerate(graph.nodes) if forward[i] and node.op is O.Matmul}


def stored_sqrt(graph: Graph, forward: list[bool]) -> set[int]:
    """Chen et al. 2016: a layer is a forward matmul; keep the activation entering every
    k-th layer (k = round(sqrt(layers))) and recompute each segment in between."""
    matmuls = sorted(stored_matmuls(graph, forward))
    k = max(1, round(math.sqrt(len(matmuls))))
    return {j for m in matmuls[::k] for j in graph.nodes[m].inputs if forward[j]}


# The one table of named strategies: strategy -> its stored set (optimal solves for one).
STORED_SETS = {"store_all": stored_all, "recompute_elementwise": stored_matmuls, "sqrt": stored_sqrt}

