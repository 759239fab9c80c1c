"""Donation: which results may be written over an argument's array.

A training step returns new parameters; writing them over the old arrays
saves an allocation and a copy per step, but only where every read of the
old value comes before the write. This is a property of the schedule, shared
by the backends; `fused_loop_donations` adds the rule of a backend that runs
each kernel as one fused loop (the LLVM backend's `safe_donations` hook).
"""
from __future__ import annotations

from ..ir import ops as O
from .schedule import KernelKind, Schedule


def safe_donations(schedule: Schedule, donate: dict[int, int]) -> dict[int, int]:
    """The requested donations (result position -> argument position) that are safe.

    A result may be written over an argument's array when every read of the
    argument happens before that write: in earlier kernels, or earlier in the
    writing kernel's body, or at the writing node itself elementwise at the
    same index. Anything else is left to a copy."""
    graph, nodes = schedule.graph, schedule.graph.nodes
    users, views = graph.users(), set(schedule.views)
    roots = [schedule.root(j) for j in graph.outputs]
    safe = {}
    for out_pos, in_pos in donate.items():
        root, arg = roots[out_pos], graph.inputs[in_pos]
        if (root not in schedule.producer or roots.index(root) != out_pos or arg in roots
                or nodes[graph.outputs[out_pos]].type != nodes[arg].type or in_pos in safe.values()):
            continue
        readers = _readers(views, users, arg)
        writer_kernel = schedule.producer[root]
        body = schedule.kernels[writer_kernel].body
        ok = True
        for r in readers:
            k = next((k for k, kernel in enumerate(schedule.kernels) if r in kernel.body), -1)
            if k > writer_kernel or (k == writer_kernel and (
                    body.index(r) > body.index(root)
                    or (r == root and (O.ELEMENTWISE not in nodes[root].op.traits
                                       or any(nodes[j].type.shape != nodes[root].type.shape
                                              for j in nodes[root].inputs if schedule.root(j) == arg))))):
                ok = False
        if ok:
            safe[out_pos] = in_pos
    return safe


def _readers(views: set[int], users, value: int) -> list[int]:
    """Body nodes that read value, directly or through views of it."""
    found, stack = [], [value]
    while stack:
        v = stack.pop()
        for u in users[v]:
            if u in views:
                stack.append(u)
            else:
                found.append(u)
    return found


def fused_loop_donations(schedule: Schedule, donated: dict[int, int]) -> dict[int, int]:
    """The donations that stay safe when kernels run as fused loops.

    safe_donations lets a kernel write a result over an argument that earlier
    nodes of its body read, which holds when nodes run one after the other
    over whole arrays. In a fused reduction the prologue reads its operand
    across the reduced axes while the epilogue already writes earlier rows,
    so the prologue must not read the argument the epilogue overwrites.
    (A GEMM is safe: its product goes to scratch when its root is donated.)"""
    graph = schedule.graph
    kept = {}
    for out_pos, in_pos in donated.items():
        root, arg = schedule.root(graph.outputs[out_pos]), graph.inputs[in_pos]
        kernel = schedule.kernels[schedule.producer[root]]
        if kernel.kind == KernelKind.REDUCTION and any(schedule.root(j) == arg for i in kernel.prologue + (kernel.anchor,)
                                            for j in graph.nodes[i].inputs):
            continue
        kept[out_pos] = in_pos
    return kept
