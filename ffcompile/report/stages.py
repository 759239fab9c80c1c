"""The text stages of a report: (name, text) pairs, each the text `ffcompile dump` prints,
and which of their lines define which node and kernel of the drawn graph.

A stage links to the drawn graph only if every node it defines has the type (and op)
of the drawn node with that id: the traced graph, numbered before the passes
renumbered it, does not link; the final IR, the schedule and the memory plan do.
"""
from __future__ import annotations

import re

from ..ir import Graph

_DEFINES = re.compile(r"^\s*(?:literal |view )?%(\d+):(\S+)(?: = ([\w.]+))?")
_KERNEL = re.compile(r"^\s*(?:# )?kernel (\d+) ")


def lowered_stages(lowered, extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Every stage a Lowered exposes, in pipeline order, then `extra` (profile, frontier)."""
    if lowered.dumps:
        stages = [(_pass_name(name), text) for name, text in lowered.dumps]
    else:
        stages = [("traced", lowered.ir), ("optimized", lowered.optimized_ir)]
    if lowered.schedule is not None:
        stages += [("schedule", str(lowered.schedule)), ("memory", str(lowered.memory))]
    if lowered.plan is not None:
        stages.append(("remat plan", str(lowered.plan)))
    stages += [("stats", str(lowered.stats())), ("numpy source", lowered.source)]
    if lowered.backend == "llvm":
        stages += [("llvm ir", lowered.llvm_ir), ("asm", lowered.asm)]
    return stages + list(extra)


def _pass_name(file_name: str) -> str:
    """'01-decompose.ir' -> 'decompose'; the pipeline's input is the traced graph."""
    name = re.sub(r"^\d+-|\.ir$", "", file_name)
    return "traced" if name == "input" else name


def stage_links(text: str, graph: Graph) -> tuple[dict[int, int], dict[int, int]]:
    """({node id: line}, {kernel: line}) of a stage's text; no node links unless all agree."""
    nodes: dict[int, int] = {}
    kernels: dict[int, int] = {}
    agree = True
    for line_no, line in enumerate(text.splitlines()):
        match = _DEFINES.match(line)
        if match:
            i, type_text, op = int(match.group(1)), match.group(2), match.group(3)
            node = graph.nodes[i] if i < len(graph.nodes) else None
            if node is None or str(node.type) != type_text or (op is not None and op != node.op.name):
                agree = False
            nodes.setdefault(i, line_no)
            continue
        match = _KERNEL.match(line)
        if match:
            kernels.setdefault(int(match.group(1)), line_no)
    return (nodes if agree else {}), kernels
