"""The stage runner: named stages from one artifact to the next, verified, timed, dumpable.

A stage is a plain function from its input artifact (a Graph, a Schedule, …;
the previous stage's, or those of the earlier stages it names in `reads`) to
its output artifact, with a verifier and a printer for what it returns.
The runner verifies after every stage (on by default), times it, records the
artifact's size before and after (nodes, kernels, buffers), and keeps the
text of the artifact after any stage asked for, numbered in pipeline order
(`dump_after="all"`, a name, or a list of names; `input` is the traced graph).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..ir import Graph, verify


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    reads: tuple[str, ...] = ()  # the earlier stages whose artifacts it takes; () the previous one
    verify: Callable[[Any], Any] | None = None  # raises on an ill-formed artifact
    show: Callable[[Any], str] = str  # the artifact as text (what a dump holds)
    size: Callable[[Any], int] = len  # its size, in its own unit
    unit: str = "nodes"
    parses: bool = False  # its text is IR that parse_ir reads back


def graph_stage(name: str, run: Callable[[Graph], Graph]) -> Stage:
    """A Graph -> Graph pass: verified by the IR verifier, printed as IR text."""
    return Stage(name, run, verify=verify, parses=True)


@dataclass(frozen=True)
class StageRecord:
    name: str
    size_before: int
    size_after: int
    unit: str  # of size_after
    seconds: float
    cached: bool = False  # the artifact came from the disk cache (stage_cache.py): not run


@dataclass(frozen=True)
class Dump:
    file_name: str  # NN-stage.ir, numbered in pipeline order
    stage: str
    text: str
    parses: bool  # IR text (a Graph) rather than a schedule, plan or program


@dataclass
class Run:
    """What running stages produced: the last artifact, every stage's artifact by name
    (`input` is the first one), the records and the dumps asked for."""

    artifact: Any
    size: int  # of the last artifact, in its stage's unit
    artifacts: dict[str, Any] = field(default_factory=dict)
    records: list[StageRecord] = field(default_factory=list)
    dumps: list[Dump] = field(default_factory=list)


class StageRunner:
    """Runs a fixed list of stages, possibly in several calls (the last ones on demand)."""

    def __init__(self, stages: list[Stage], *, verify_each: bool = True, dump_after=None,
                 dump_dir: str | None = None):
        self.stages = stages
        self.verify_each = verify_each
        self.dump_dir = dump_dir
        self.wanted = wanted_stages(dump_after, [s.name for s in stages])

    def start(self, graph: Graph) -> Run:
        if self.verify_each:
            verify(graph)
        run = Run(graph, len(graph), {"input": graph})
        self._dump(run, 0, graph_stage("input", lambda g: g), graph)
        return run

    def advance(self, run: Run, until: str | None = None) -> Run:
        """Run the stages after the last one done, up to and including `until` (all: None)."""
        for number, stage in enumerate(self.stages, 1):
            if stage.name in run.artifacts:
                continue
            start = time.perf_counter()
            after = stage.run(*[run.artifacts[name] for name in stage.reads] or [run.artifact])
            seconds = time.perf_counter() - start
            if self.verify_each and stage.verify is not None:
                stage.verify(after)
            size = stage.size(after)
            run.records.append(StageRecord(stage.name, run.size, size, stage.unit, seconds))
            run.artifact = run.artifacts[stage.name] = after
            run.size = size
            self._dump(run, number, stage, after)
            if stage.name == until:
                break
        return run

    def _dump(self, run: Run, number: int, stage: Stage, artifact) -> None:
        if stage.name not in self.wanted:
            return
        dump = Dump(f"{number:02d}-{stage.name}.ir", stage.name, stage.show(artifact), stage.parses)
        run.dumps.append(dump)
        if self.dump_dir is not None:
            os.makedirs(self.dump_dir, exist_ok=True)
            with open(os.path.join(self.dump_dir, dump.file_name), "w") as f:
                f.write(dump.text)


def wanted_stages(dump_after, names: list[str]) -> set[str]:
    """The stage names dump_after asks for: None, "all", a name or a list of names."""
    known = set(names) | {"input"}
    if dump_after is None:
        return set()
    if dump_after == "all":
        return known
    asked = {dump_after} if isinstance(dump_after, str) else set(dump_after)
    unknown = asked - known
    if unknown:
        raise ValueError(f"dump_after names unknown stages {sorted(unknown)}; "
                         f"stages are {['input', *names]} (or 'all')")
    return asked
