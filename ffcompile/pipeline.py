"""The compilation pipeline of one signature, and its artifacts.

    traced Graph ─decompose─ simplify ─ remat─▶ Graph ─fuse─▶ Schedule ─donation─▶ Donation
                 ─memory─▶ MemoryPlan ─lower─▶ Program (the backend's)

Every step is a named stage (passes/manager.py): verified after it runs,
timed, and printable (`dump_after=` any stage name or "all"). The stages up to
`memory` run when a signature is lowered; `lower` (code generation) runs when
the program is first needed, or at once when its dump is asked for.
Backend-specific rules are the Backend's hooks (codegen/backend.py): kernel
scratch in the memory plan, which donations are safe. `optimize=False` keeps
only `decompose` and runs the graph op by op through the reference
interpreter (ir/interpret.py), whatever the backend.

With batch_dim= on a backend that builds one program for every batch size
(`Backend.symbolic_batch`), the stages run on the symbolic graph (`f32[B,784]`):
the schedule's types hold B, the memory plan is linear in B (`Options.batch`
gives the range), remat plans at the range's reference size, and one Program
serves every size. Otherwise each size is specialized first (`Lowered.per_size`
says why).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from . import stage_cache
from .codegen.arguments import Binding, bind_python
from .codegen.backend import Backend, Program
from .codegen.registry import get_backend
from .ir import Graph, verify
from .ir.interpret import interpret
from .ir.specialize import specialize
from .ir.symbolic import BatchRange, Envelope, bytes_at
from .passes.decompose import decompose
from .passes.fuse import fuse
from .passes.manager import Run, Stage, StageRecord, StageRunner, graph_stage
from .passes.memory import MemoryPlan, plan_memory
from .passes.cost import graph_flops
from .passes.remat import RematPlan, remat
from .passes.remat_symbolic import remat_symbolic
from .passes.schedule import Schedule, verify_schedule
from .passes.simplify import simplify
from .runtime import Executable, batch_size_of, check_arguments
from .trace import Traced
from .tree import tree_flatten

if TYPE_CHECKING:
    from .profile import KernelProfile


@dataclass(frozen=True)
class RematOptions:
    strategy: str
    memory_budget: int | float | None
    time_limit: float


@dataclass(frozen=True)
class Options:
    """What shapes the pipeline of every signature of one compiled function."""

    backend: Backend
    optimize: bool = True
    remat: RematOptions | None = None
    verify: bool = True
    dump_after: object = None
    dump_dir: str | None = None
    batch: BatchRange | None = None  # a symbolic graph's batch sizes: one program for all of them


@dataclass(frozen=True)
class Rematerialized:
    """The remat stage's artifact: the graph with recomputation, and the plan that chose it."""

    graph: Graph
    plan: RematPlan

    def __str__(self) -> str:  # the graph, with the plan as IR comments: it parses back
        plan = "".join(f"// {line}\n" for line in str(self.plan).splitlines())
        return plan + str(self.graph)

    def __len__(self) -> int:
        return len(self.graph)


@dataclass(frozen=True)
class Donation:
    """The donation stage's artifact: which results are written over which arguments."""

    schedule: Schedule
    donated: dict[int, int]  # result position -> argument position

    def __str__(self) -> str:
        graph = self.schedule.graph
        lines = [f"donation @{graph.name} {{"]
        lines += [f"  result {r} (%{graph.outputs[r]}) -> argument {a} (%{graph.inputs[a]})"
                  for r, a in sorted(self.donated.items())]
        return "\n".join(lines + ["}"]) + "\n"

    def __len__(self) -> int:
        return len(self.donated)


def arena_of(backend: Backend, batch: BatchRange | None = None) -> Callable[[Graph], int]:
    """The arena backend's program really allocates for a graph: what remat plans against
    (a symbolic graph's at the reference batch size)."""
    def measure(graph: Graph) -> int:
        plan = memory_plan(backend, fuse(graph), batch=batch)
        return plan.arena_bytes if batch is None else bytes_at(plan.arena_bytes, batch.reference)
    return measure


def program_of(graph: Graph, backend: Backend) -> Program:
    """The backend's program of an already-optimized graph (no donation), called with flat arrays."""
    schedule = fuse(graph)
    return backend.build(schedule, memory_plan(backend, schedule), {})


def memory_plan(backend: Backend, schedule: Schedule, donated_roots: frozenset[int] = frozenset(),
                batch: BatchRange | None = None) -> MemoryPlan:
    return plan_memory(schedule, functools.partial(backend.kernel_scratch, schedule), donated_roots, batch)


def stages(options: Options, donate: Mapping[int, int]) -> list[Stage]:
    """The stage list of one signature; donate: requested result -> argument donations."""
    backend, batch = options.backend, options.batch
    if not options.optimize:  # the reference: composites expanded, run op by op
        return [graph_stage("decompose", decompose),
                Stage("lower", ReferenceProgram, show=lambda p: p.text, size=lambda p: 0, unit="")]
    # simplify after decompose, so composites fold exactly as they will run
    graph_stages = [graph_stage("decompose", decompose), graph_stage("simplify", simplify)]
    graph_of = _identity
    if options.remat is not None:  # last among graph stages: CSE would merge its copies back
        r = options.remat
        peak_of = arena_of(backend, batch)
        plan_remat = remat if batch is None else functools.partial(remat_symbolic, batch=batch)
        graph_stages.append(Stage("remat", lambda g: Rematerialized(*plan_remat(g, r.strategy, r.memory_budget,
                                                                                 r.time_limit, peak_of)),
                                  verify=lambda a: verify(a.graph), parses=True))
        graph_of = _graph_of_remat

    def donation(schedule: Schedule) -> Donation:
        return Donation(schedule, backend.safe_donations(schedule, donate))

    def memory(d: Donation) -> MemoryPlan:
        outputs = d.schedule.graph.outputs
        return memory_plan(backend, d.schedule, frozenset(d.schedule.root(outputs[k]) for k in d.donated), batch)

    def arena(artifact) -> int:  # a symbolic plan's at the reference size, as stats count it
        return bytes_at(artifact.arena_bytes, batch.reference) if batch is not None else artifact.arena_bytes

    def lower(d: Donation, plan: MemoryPlan) -> Program:
        return backend.build(d.schedule, plan, d.donated)

    return [*graph_stages,
            Stage("fuse", lambda g: fuse(graph_of(g)), verify=verify_schedule,
                  size=lambda s: len(s.kernels), unit="kernels"),
            Stage("donation", donation, size=len, unit="donated"),
            Stage("memory", memory, reads=("donation",), size=arena, unit="bytes"),
            Stage("lower", lower, reads=("donation", "memory"), show=lambda p: p.text, size=arena, unit="bytes")]


def _identity(graph: Graph) -> Graph:
    return graph


def _graph_of_remat(artifact: Rematerialized) -> Graph:
    return artifact.graph


class ReferenceProgram:
    """The program of optimize=False: the graph op by op through the reference interpreter."""

    arena_bytes = 0
    donated: dict[int, int] = {}

    def __init__(self, graph: Graph):
        self.graph = graph
        self.text = str(graph)

    def call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return interpret(self.graph, arrays)

    def bind(self, arrays: list[np.ndarray]) -> Binding:
        return bind_python(lambda *a: interpret(self.graph, a), arrays, self.graph.output_types)


class Lowered:
    """Every artifact of one traced signature (ahead-of-time view: `cf.lower(*args)`)."""

    def __init__(self, traced: Traced, names: list[str], options: Options, donate: Mapping[int, int],
                 symbolic: Graph | None = None, per_size: str | None = None):
        """symbolic: the graph traced with a symbolic batch size (batch_dim=): traced is that
        graph itself when options.batch is set (one program for every size), else traced
        specializes it to one size, and per_size says why."""
        self.traced = traced
        self.symbolic = symbolic
        self.batch = options.batch
        self.per_size = per_size
        self.names = names
        self.backend = options.backend
        self._runner = StageRunner(stages(options, donate), verify_each=options.verify,
                                   dump_after=options.dump_after, dump_dir=options.dump_dir)
        self._run: Run = self._runner.start(traced.graph)
        self._programs: dict[str, Program] = {}
        self.cache_seconds: float | None = None  # loading the graph stages' artifacts, on a disk cache hit
        self._executable: Executable | None = None
        # Code generation waits until the program is needed, unless its dump is asked for.
        lazy = options.optimize and "lower" not in self._runner.wanted
        if lazy and not self._runner.wanted:  # a dump needs the stages run
            cache, names = stage_cache.cache_of(self.backend), [s.name for s in self._runner.stages[:-1]]
            key = stage_cache.description(str(traced.graph), donate, options.remat, self.backend.name,
                                            options.batch)
            self.cache_seconds = stage_cache.restore(cache, key, self._run, names)
            if self.cache_seconds is None:
                self._runner.advance(self._run, until="memory")
                stage_cache.store(cache, key, self._run, names)
        else:
            self._runner.advance(self._run, until="memory" if lazy else None)

    # ---- the artifacts
    @property
    def graph(self) -> Graph:
        """The traced graph."""
        return self.traced.graph

    @property
    def ir(self) -> str:
        return str(self.traced.graph)

    @property
    def symbolic_ir(self) -> str | None:
        """The traced graph with its batch size symbolic (`f32[B,784]`), when compiled with batch_dim."""
        return None if self.symbolic is None else str(self.symbolic)

    @property
    def optimized(self) -> Graph:
        """The graph after the graph stages (what fuse, or the interpreter, takes)."""
        artifacts = self._run.artifacts
        if "remat" in artifacts:
            return artifacts["remat"].graph
        return artifacts.get("simplify", artifacts["decompose"])

    @property
    def optimized_ir(self) -> str:
        return str(self.optimized)

    @property
    def plan(self) -> RematPlan | None:
        """The store/recompute decisions, when remat= was given."""
        remat_artifact = self._run.artifacts.get("remat")
        return None if remat_artifact is None else remat_artifact.plan

    @property
    def schedule(self) -> Schedule | None:
        """The fused kernels (None when compiled with optimize=False)."""
        return self._run.artifacts.get("fuse")

    @property
    def donation(self) -> Donation | None:
        return self._run.artifacts.get("donation")

    @property
    def memory(self) -> MemoryPlan | None:
        """The arena plan of the program this backend runs."""
        return self._run.artifacts.get("memory")

    @property
    def program(self) -> Program:
        """The backend's program (the `lower` stage, run on first use)."""
        return self._runner.advance(self._run).artifacts["lower"]

    @property
    def records(self) -> list[StageRecord]:
        return self._run.records

    @property
    def dumps(self):
        return self._run.dumps

    # ---- views through other backends
    def program_for(self, backend_name: str) -> Program:
        """This schedule's program built by another backend (no donation), e.g. to read its code."""
        backend = get_backend(backend_name)
        if backend is self.backend:
            return self.program
        if backend_name not in self._programs:
            schedule = self._schedule_or_refuse(f"{backend_name} program")
            if self.batch is not None and not getattr(backend, "symbolic_batch", False):
                raise ValueError(f"@{self.graph.name} is one program for every batch size; the {backend_name} "
                                 f"backend builds one per size: lower it with backend={backend_name!r}")
            self._programs[backend_name] = backend.build(schedule, memory_plan(backend, schedule, batch=self.batch),
                                                         {})
        return self._programs[backend_name]

    @property
    def source(self) -> str:
        """The generated Python of the NumPy backend (readable, like torch.fx's code)."""
        return self.program_for("numpy").text

    @property
    def llvm_ir(self) -> str:
        return self.program_for("llvm").llvm_ir

    @property
    def asm(self) -> str:
        return self.program_for("llvm").asm

    def _schedule_or_refuse(self, what: str) -> Schedule:
        if self.schedule is None:
            raise ValueError(f"@{self.graph.name} was compiled with optimize=False (the reference "
                             f"interpreter): it has no schedule, so no {what}")
        return self.schedule

    # ---- uses
    def stats(self) -> "Stats":
        return Stats.of(self)

    def report(self, path, frontier=None, profile=None) -> str:
        """Write a self-contained HTML report of every stage to path (docs/report.md)."""
        from .report import write_report  # the page's assets load on use

        return write_report(self, path, frontier, profile)

    def export(self, out_dir, name: str | None = None):
        """Write name.o, libname.so and name.h for this program (docs/export.md)."""
        schedule = self._schedule_or_refuse("library to export")
        return self.backend.export(schedule, memory_plan(self.backend, schedule, batch=self.batch), out_dir,
                                   name or re.sub(r"\W", "_", self.graph.name), self.names)

    def profile(self, *args, steps: int = 100) -> KernelProfile:
        """The time of each kernel of this program's native code on args (ffcompile/profile.py),
        with this signature's donation (run on copies: the arrays are untouched)."""
        from .profile import profile_kernels  # loads llvmlite: not at `import ffcompile`

        schedule = self._schedule_or_refuse("kernels to profile")
        names = self.names + [f"closure{k}" for k in range(len(self.traced.closures))]
        leaves = check_arguments([*tree_flatten(args)[0], *self.traced.closures], names, self.optimized.input_types,
                                 batch=self.batch)
        program = self.backend.build(schedule, self.memory, self.donation.donated, profile=True)
        if self.batch is not None:  # kernels described, and their FLOPs counted, at the size of args
            size, _ = batch_size_of(leaves, names, self.optimized.input_types, self.batch)
            schedule = dataclasses.replace(schedule, graph=specialize(schedule.graph, {"B": size}))
        return profile_kernels(program, schedule, leaves, steps)

    def compile(self) -> Executable:
        """The executable: this signature's program with its argument checks (made once)."""
        if self._executable is None:
            self._executable = Executable(self.program, self.optimized.input_types, self.traced.out_tree,
                                          self.names, self.traced.closures, self.traced.checks, self.batch)
        return self._executable


@dataclass(frozen=True)
class Stats:
    """What the compiler did to one signature: every stage's size and time, kernels, memory."""

    stages: tuple[StageRecord, ...]
    trace_seconds: float  # the Python function traced into the graph, adjoints included
    kernels: int | None
    flops: int  # of one program for every batch size: at its reference size
    arena_bytes: int | Envelope | None  # an Envelope of B for one program serving every batch size
    lower_bound: int | Envelope | None
    batch: BatchRange | None = None  # the batch sizes one symbolic program serves
    per_size: str | None = None  # with batch_dim=: why this signature's program is one batch size's
    cache_seconds: float | None = None  # the graph stages' artifacts loaded from disk (records say cached)
    lower_phases: tuple[tuple[str, float], ...] = ()  # the program's own account of `lower`, if it keeps one

    @staticmethod
    def of(lowered: Lowered) -> "Stats":
        graph = lowered.optimized
        if lowered.batch is not None:  # FLOPs of one program for every size: at the reference size
            graph = specialize(graph, {"B": lowered.batch.reference})
        flops = graph_flops(graph)
        plan = lowered.memory
        return Stats(tuple(lowered.records), lowered.traced.seconds,
                     None if lowered.schedule is None else len(lowered.schedule.kernels),
                     flops, plan and plan.arena_bytes, plan and plan.lower_bound, lowered.batch, lowered.per_size,
                     lowered.cache_seconds, getattr(lowered._run.artifacts.get("lower"), "phases", ()))

    def __str__(self) -> str:
        lines = [f"{'stage':<10} {'before':>9} {'after':>9} {'unit':<8} {'ms':>8}",
                 f"{'(trace)':<10} {'':>9} {self.stages[0].size_before if self.stages else '':>9} "
                 f"{'nodes':<8} {self.trace_seconds * 1e3:>8.2f}"]
        if self.cache_seconds is not None:
            lines.append(f"{'(cache)':<10} {'':>9} {'':>9} {'':<8} {self.cache_seconds * 1e3:>8.2f}")
        lines += [f"{r.name:<10} {r.size_before:>9} {r.size_after:>9} {r.unit:<8} {r.seconds * 1e3:>8.2f}"
                  + (" cached" if r.cached else "") for r in self.stages]
        lines += [f"  {name:<37} {seconds * 1e3:>8.2f}" for name, seconds in self.lower_phases]
        total = self.trace_seconds + (self.cache_seconds or 0.0) + sum(r.seconds for r in self.stages)
        lines.append(f"{'total':<10} {'':>9} {'':>9} {'':<8} {total * 1e3:>8.2f}")
        lines.append(f"kernels {self.kernels}   flops {self.flops}")
        if self.arena_bytes is not None:
            at = "" if self.batch is None else f" at B={self.batch.reference}"
            arena, bound = (bytes_at(v, self.batch.reference) if self.batch else v
                            for v in (self.arena_bytes, self.lower_bound))
            ratio = arena / bound if bound else 1.0
            lines.append(f"arena {self.arena_bytes} B   liveness lower bound {self.lower_bound} B   "
                         f"ratio{at} {ratio:.3f}")
        if self.batch is not None:
            lines.append(f"one program for every batch size: {self.batch}")
        if self.per_size is not None:
            lines.append(f"a program per batch size: {self.per_size}")
        return "\n".join(lines) + "\n"
