"""The pass pipeline: named Graph -> Graph passes, verified and dumpable.

Each pass is a plain function; the pipeline verifies after every pass (on by
default), times it, counts nodes, and can write the IR after any pass.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph, verify


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], Graph]


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    seconds: float


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord] = field(default_factory=list)
    dumps: list[tuple[str, str]] = field(default_factory=list)  # (file name, IR text)


def run_pipeline(graph: Graph, passes: list[Pass], *, verify_each: bool = True,
                 dump_after=None, dump_dir: str | None = None) -> PipelineResult:
    """Run passes in order. dump_after: None, "all", or a list of pass names."""
    known = {p.name for p in passes}
    wanted = _wanted(dump_after, known)
    result = PipelineResult(graph)
    if verify_each:
        verify(graph)
    _dump(result, 0, "input", graph, wanted, dump_dir)
    for number, p in enumerate(passes, 1):
        start = time.perf_counter()
        after = p.run(result.graph)
        seconds = time.perf_counter() - start
        if verify_each:
            verify(after)
        result.records.append(PassRecord(p.name, len(result.graph), len(after), seconds))
        result.graph = after
        _dump(result, number, p.name, after, wanted, dump_dir)
    return result


def _wanted(dump_after, known: set[str]) -> set[str]:
    if dump_after is None:
        return set()
    if dump_after == "all":
        return known | {"input"}
    names = {dump_after} if isinstance(dump_after, str) else set(dump_after)
    unknown = names - known - {"input"}
    if unknown:
        raise ValueError(f"dump_after names unknown passes {sorted(unknown)}; passes are {sorted(known)}")
    return names


def _dump(result: PipelineResult, number: int, name: str, graph: Graph, wanted, dump_dir) -> None:
    if name not in wanted:
        return
    file_name = f"{number:02d}-{name}.ir"
    text = str(graph)
    result.dumps.append((file_name, text))
    if dump_dir is not None:
        os.makedirs(dump_dir, exist_ok=True)
        with open(os.path.join(dump_dir, file_name), "w") as f:
            f.write(text)
