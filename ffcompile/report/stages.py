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
    """Every stage a Lowered shows, in pipeline order, then `extra` (profile, frontier).
    A text an earlier stage already shows is not repeated (a dumped schedule, or the
    backend's program, is also one of the views below)."""
    stages = [_named(dump) for dump in lowered.dumps]
    if not stages:
        stages = [("traced", lowered.ir), ("optimized", lowered.optimized_ir)]
    views = []
    if lowered.schedule is not None:
        views += [("schedule", lambda: str(lowered.schedule)), ("memory", lambda: str(lowered.memory))]
    if lowered.plan is not None:
        views.append(("remat plan", lambda: str(lowered.plan)))
    views += [("stats", lambda: str(lowered.stats())), ("numpy source", lambda: lowered.source),
              ("llvm ir", lambda: lowered.llvm_ir), ("asm", lambda: lowered.asm)]
    shown = {text for _, text in stages}
    for name, view in views:
        try:
            text = view()
        except ValueError:
            continue  # a view this program has not (LLVM code of a program lowered for NumPy)
        if text not in shown:
            stages.append((name, text))
            shown.add(text)
    return stages + list(extra)


def _named(dump) -> tuple[str, str]:
    """(stage name, text) of a pipeline dump (passes.manager.Dump); the input is 'traced'."""
    return ("traced" if dump.stage == "input" else dump.stage), dump.text


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
