"""Kernel order: updates run as soon as their gradient is ready.

Fusion orders kernels by root, i.e. as the graph was traced; a training step
traces the whole backward pass before the optimizer, so every weight
gradient would stay live until the updates at the end. Like PyTorch's
optimizer-in-backward hooks, a *sink* kernel runs as soon as it can. A sink
writes graph results that only other sinks read (an optimizer update, the
loss), or is a helper computing from graph inputs only, for sinks only (a bias
correction from the step count, Adam's b1 * m, a hyperparameter). A sink writing a result runs
right after the kernels it must follow (its producers, and every kernel
reading a graph input it reads, so a donated parameter is written over only
once nothing else needs the old value); a helper runs right before its
first reader. Moving a sink earlier ends the lifetimes of the buffers it
reads sooner and starts none earlier than it has to.
"""
from __future__ import annotations

from ..ir import Graph
from ..ir.symbolic import is_symbolic
from .schedule import Kernel, KernelKind


def sinks_first_ready(graph: Graph, kernels: list[Kernel], root) -> list[Kernel]:
    """kernels (a valid order) reordered so that each sink runs as early as it may.
    root(v): the buffer a read of v reads (views read their operand's)."""
    producer = {v: k for k, kernel in enumerate(kernels) for v in kernel.outputs}
    inputs = set(graph.inputs)
    results = {root(j) for j in graph.outputs}
    reads = [{root(j) for j in kernel.inputs} for kernel in kernels]
    readers: dict[int, list[int]] = {}
    for k, values in enumerate(reads):
        for v in values:
            readers.setdefault(v, []).append(k)
    # A helper reads graph inputs and literals only (Adam's b1 * m, a hyperparameter read
    # from its array), or is a scalar computed from those through other helpers (a step
    # count's bias correction).
    helper = []
    for k, values in enumerate(reads):
        direct = all(v not in producer for v in values)
        # a B-shaped output is no scalar (it has B elements, one at B == 1 alone)
        scalar = all(not is_symbolic(graph.nodes[v].type.shape) and graph.nodes[v].type.size <= 1
                     for v in kernels[k].outputs)
        helper.append(direct or (scalar and all(v not in producer or helper[producer[v]] for v in values)))
    sink = [False] * len(kernels)
    for k in range(len(kernels) - 1, -1, -1):  # readers come later: their status is known
        sink[k] = all((v in results or helper[k]) and all(sink[r] for r in readers.get(v, ()))
                      for v in kernels[k].outputs)
    writes_result = [sink[k] and any(v in results for v in kernel.outputs) for k, kernel in enumerate(kernels)]
    # A kernel follows its producers (non-sinks keep their order); a sink also every earlier
    # reader of a graph input it reads and may write over (donation needs the result's type:
    # a 0-d hyperparameter stays shared), and every non-sink reader (then nothing needs the
    # old value).
    must_follow = []
    for k, values in enumerate(reads):
        deps = {producer[v] for v in values if v in producer}
        if sink[k]:
            written = {graph.nodes[v].type for v in kernels[k].outputs if v in results}
            for v in values & inputs:
                if graph.nodes[v].type in written:
                    deps |= {r for r in readers[v] if r < k or not sink[r]}
        deps.discard(k)
        must_follow.append(deps)
    # trigger[k]: the last non-sink kernel a sink waits for, through the sinks it waits for.
    trigger = [-1] * len(kernels)
    for k in range(len(kernels)):
        if sink[k]:
            trigger[k] = max((trigger[d] if sink[d] else d for d in must_follow[k]), default=-1)
    due: dict[int, list[int]] = {}
    for k in range(len(kernels)):
        if writes_result[k]:
            due.setdefault(trigger[k], []).append(k)
    placed = [False] * len(kernels)
    order: list[int] = []

    def place(k: int) -> None:  # helper sinks run right before their first reader
        for d in sorted(must_follow[k]):
            if not placed[d]:
                place(d)
        placed[k] = True
        order.append(k)

    for k in [-1, *range(len(kernels))]:
        if k >= 0 and not sink[k]:
            place(k)
        for s in due.get(k, ()):
            if not placed[s]:
                place(s)
    for k in range(len(kernels)):  # a sink no result sink reads (none expected)
        if not placed[k]:
            place(k)
    return [kernels[k] for k in order]


def collectives_first_ready(kernels: list[Kernel], root) -> list[Kernel]:
    """kernels (a valid order) with each collective moved up to right after the last kernel
    it reads from: its communication starts as soon as its bucket is ready and overlaps the
    kernels after it (the rest of the backward pass); its readers stay where they were.
    Collectives keep their order among themselves, which every rank shares."""
    if all(kernel.kind != KernelKind.COLLECTIVE for kernel in kernels):
        return kernels
    order: list[Kernel] = []
    produced: dict[int, int] = {}  # value -> position in order
    for kernel in kernels:
        position = len(order)
        if kernel.kind == KernelKind.COLLECTIVE:
            ready = max((produced[root(j)] for j in kernel.inputs if root(j) in produced), default=-1)
            last_collective = max((p for p, k in enumerate(order) if k.kind == KernelKind.COLLECTIVE), default=-1)
            position = max(ready, last_collective) + 1
        order.insert(position, kernel)
        produced = {v: p for p, k in enumerate(order) for v in k.outputs}
    return order
