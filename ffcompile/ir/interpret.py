"""The one reference evaluator: a graph run node by node with each op's NumPy reference.

It is the meaning every backend is tested against: `ff.compile(...,
optimize=False)` runs it, the schedule check (`passes.schedule.run_schedule_reference`)
evaluates kernels with `evaluate`, and the tests compare against it.

Every value is held C-contiguous: NumPy sums in memory-layout order, so a
reduction over a transposed view would round differently from the same
reduction over a buffer, and every backend materializes values in buffers.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node
from .ops import Input


def evaluate(node: Node, operands: list[np.ndarray]) -> np.ndarray:
    """One node's value from its operands' values, C-contiguous (0-d stays 0-d)."""
    return np.require(node.op.reference(node.attr_dict, *operands), requirements="C")


def interpret(graph: Graph, args) -> list[np.ndarray]:
    """The graph's outputs for input arrays args (in graph.inputs order).

    A value is dropped after its last use, so memory stays at the live set.
    Results never alias the arguments or each other."""
    if len(args) != len(graph.inputs):
        raise ValueError(f"@{graph.name} takes {len(graph.inputs)} arguments, got {len(args)}")
    nodes = graph.nodes
    last_use = {}
    for i, node in enumerate(nodes):
        for j in node.inputs:
            last_use[j] = i
    for j in graph.outputs:
        last_use[j] = len(nodes)
    values: dict[int, np.ndarray] = dict(zip(graph.inputs, (np.asarray(a) for a in args)))
    for i, node in enumerate(nodes):
        if node.op is Input:
            continue
        values[i] = evaluate(node, [values[j] for j in node.inputs])
        for j in set(node.inputs):
            if last_use[j] == i:
                del values[j]
    results, seen, inputs = [], set(), set(graph.inputs)
    for j in graph.outputs:
        value = values[j]
        if j in inputs or id(value) in seen or not value.flags.writeable or value.base is not None:
            value = np.array(value, copy=True)
        seen.add(id(value))
        results.append(value)
    return results
