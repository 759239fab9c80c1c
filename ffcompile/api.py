"""The user-facing transforms: compile, lower, grad, value_and_grad, vjp.

`compile` traces on the first call per argument signature and caches the
executable. The autodiff transforms are traced functions too: called on
traced Values they trace the function into a nested graph, append its
adjoint and inline the result, so they compose with each other and with
`compile` (grad of grad works); called on arrays they compile themselves.
"""
from __future__ import annotations

import functools
import gc
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from .codegen import numpy_arena, numpy_backend
from .codegen.llvm import backend as llvm_backend
from .codegen.llvm.export import export as export_library
from .codegen.numpy_arena import ArenaProgram, build_program
from .ir import Graph, TensorType
from .ir.lang import Value, _builder_of, lift
from .passes.autodiff import append_adjoint
from .passes.decompose import decompose
from .passes.fuse import fuse
from .passes.manager import Pass, PassRecord, run_pipeline
from .passes.memory import MemoryPlan, plan_memory
from .passes.remat import RematPlan, arena_peak, flops_of, remat
from .passes.schedule import Schedule, verify_schedule
from .passes.simplify import simplify
from .profile import KernelProfile, profile_kernels
from .runtime import ArgumentError, BoundCall, Executable, check_arguments
from .trace import Traced, signature, trace
from .tree import TreeDef, tree_flatten, tree_leaves_like, tree_unflatten

BACKENDS = ("numpy", "llvm")
DEFAULT_BACKEND = "llvm"  # "numpy" runs the same schedule through NumPy (the reference path)


def default_passes(optimize: bool = True) -> list[Pass]:
    if not optimize:  # the reference path: composites expanded, nothing else touched
        return [Pass("decompose", decompose)]
    # simplify after decompose, so composites fold exactly as they will run
    return [Pass("decompose", decompose), Pass("simplify", simplify)]


def arena_measure(backend: str) -> Callable[[Graph], int]:
    """The arena `backend`'s program really allocates for a graph: what remat plans against.
    The LLVM backend fuses each kernel into loops (the planner's arena); the NumPy one
    evaluates kernels node by node and adds their scratch."""
    return arena_peak if backend == "llvm" else numpy_arena.arena_bytes


def executable_for(graph: Graph, backend: str):
    """The optimized program of an already-optimized graph, called with flat arrays."""
    schedule = fuse(graph)
    if backend == "llvm":
        return llvm_backend.build(schedule, plan_memory(schedule))
    return build_program(schedule).run


@dataclass(frozen=True)
class RematOptions:
    strategy: str
    memory_budget: int | float | None
    time_limit: float
    peak_of: Callable[[Graph], int]  # the real arena of the backend's program for a graph

    def as_pass(self, plans: list) -> Pass:
        """The remat pass; it runs last among graph passes, since CSE would undo its copies."""
        def run(graph: Graph) -> Graph:
            graph, plan = remat(graph, self.strategy, self.memory_budget, self.time_limit,
                                peak_of=self.peak_of)
            plans.append(plan)
            return graph

        return Pass("remat", run)


@dataclass
class Lowered:
    """A traced and optimized program for one signature (ahead-of-time view)."""

    traced: Traced
    names: list[str]
    backend: str
    optimized: Graph
    schedule: Schedule | None  # None when compiled without optimization
    records: list[PassRecord] = field(default_factory=list)
    dumps: list[tuple[str, str]] = field(default_factory=list)
    plan: RematPlan | None = None  # the store/recompute decisions, when remat= was given

    @property
    def graph(self) -> Graph:
        return self.traced.graph

    @property
    def ir(self) -> str:
        return str(self.traced.graph)

    @property
    def optimized_ir(self) -> str:
        return str(self.optimized)

    @cached_property
    def program(self) -> ArenaProgram | None:
        """The NumPy backend's arena program (None without optimization)."""
        return None if self.schedule is None else build_program(self.schedule)

    @property
    def memory(self) -> MemoryPlan | None:
        """The arena plan of the program this backend runs."""
        if self.schedule is None:
            return None
        return plan_memory(self.schedule) if self.backend == "llvm" else self.program.plan

    @cached_property
    def native(self):
        """The LLVM backend's executable (its `.llvm_ir`, `.asm`), built on first use."""
        if self.backend != "llvm":
            raise ValueError(f"this program was lowered for backend {self.backend!r}, not 'llvm'")
        schedule = self.schedule if self.schedule is not None else fuse(self.optimized)
        return llvm_backend.build(schedule, plan_memory(schedule))

    def export(self, out_dir, name: str | None = None):
        """Write name.o, libname.so and name.h for this program (docs/export.md)."""
        schedule = self.schedule if self.schedule is not None else fuse(self.optimized)
        return export_library(schedule, plan_memory(schedule), out_dir,
                              name or re.sub(r"\W", "_", self.graph.name), self.names)

    @property
    def llvm_ir(self) -> str:
        return self.native.llvm_ir

    @property
    def asm(self) -> str:
        return self.native.asm

    @property
    def source(self) -> str:
        """The generated Python of the NumPy backend (readable, like torch.fx's code)."""
        if self.program is None:
            return numpy_backend.generate_source(self.optimized)
        return self.program.source

    def stats(self) -> Stats:
        return Stats.of(self)

    def report(self, path, frontier=None, profile=None) -> str:
        """Write a self-contained HTML report of every stage to path (docs/report.md)."""
        from .report import write_report

        return write_report(self, path, frontier, profile)

    def profile(self, *args, steps: int = 100, donate: dict[int, int] | None = None) -> KernelProfile:
        """The time of each kernel of this program's native code on args (ffcompile/profile.py)."""
        schedule = self.schedule if self.schedule is not None else fuse(self.optimized)
        leaves = check_arguments(tree_flatten(args)[0], self.names, self.optimized.input_types)
        return profile_kernels(schedule, leaves, donate, steps)

    def compile(self, donate: dict[int, int] | None = None) -> Executable:
        """donate: flat result index -> flat argument index whose array may take that result
        (honoured where the schedule reads the argument before writing the result)."""
        if self.backend == "llvm":
            schedule = self.schedule if self.schedule is not None else fuse(self.optimized)
            fn = llvm_backend.build(schedule, plan_memory(schedule), donate)
            return Executable(self.optimized, fn, self.traced.out_tree, self.names, native=True)
        if self.schedule is None:
            fn = numpy_backend.build(self.optimized)[0]
        elif donate:
            fn = build_program(self.schedule, donate).run
        else:
            fn = self.program.run
        return Executable(self.optimized, fn, self.traced.out_tree, self.names)


@dataclass(frozen=True)
class Stats:
    """What the compiler did to one signature: per-pass node counts and time, kernels, memory."""

    passes: tuple[PassRecord, ...]
    kernels: int | None
    flops: int
    arena_bytes: int | None
    lower_bound: int | None

    @staticmethod
    def of(lowered: "Lowered") -> "Stats":
        graph = lowered.optimized
        flops = sum(flops_of(graph, i) for i in range(len(graph.nodes)))
        plan = lowered.memory
        return Stats(tuple(lowered.records), None if lowered.schedule is None else len(lowered.schedule.kernels),
                     flops, plan and plan.arena_bytes, plan and plan.lower_bound)

    def __str__(self) -> str:
        lines = [f"{'pass':<12} {'nodes before':>12} {'after':>8} {'ms':>8}"]
        lines += [f"{r.name:<12} {r.nodes_before:>12} {r.nodes_after:>8} {r.seconds * 1e3:>8.2f}"
                  for r in self.passes]
        lines.append(f"kernels {self.kernels}   flops {self.flops}")
        if self.arena_bytes is not None:
            ratio = self.arena_bytes / self.lower_bound if self.lower_bound else 1.0
            lines.append(f"arena {self.arena_bytes} B   liveness lower bound {self.lower_bound} B   "
                         f"ratio {ratio:.3f}")
        return "\n".join(lines) + "\n"


class CompiledFunction:
    """`ff.compile(fn)`: traces per argument signature, runs the compiled program."""

    def __init__(self, fn, backend=None, spec=None, dump_after=None, dump_dir=None, verify=True,
                 optimize=True, remat=None, memory_budget=None, remat_time_limit=10.0):
        backend = backend or DEFAULT_BACKEND
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.fn = fn
        self.backend = backend
        self.spec = None if spec is None else tree_flatten(tuple(spec))
        self.dump_after = dump_after
        self.dump_dir = dump_dir
        self.verify = verify
        self.optimize = optimize
        if (remat is not None or memory_budget is not None) and not optimize:
            raise ValueError("remat plans the optimized program: it needs optimize=True")
        if memory_budget is not None and remat is None:
            remat = "optimal"
        self.remat = None if remat is None else RematOptions(remat, memory_budget, remat_time_limit,
                                                             arena_measure(backend))
        self._cache: dict = {}
        self._last: Lowered | None = None
        self._recent = None  # (in_tree, cache entry) of the last call that passed unchecked
        functools.update_wrapper(self, fn, updated=())

    def _signature(self, args):
        """(in_tree, types, names) of a call, checked against the declared spec if any."""
        in_tree, types, names, _ = signature(args, self.fn)
        if self.spec is not None:
            self._check_spec(in_tree, types, names)
        return in_tree, types, names

    def _check_spec(self, in_tree, types, names):
        spec_leaves, spec_tree = self.spec
        if spec_tree != in_tree:
            raise ArgumentError(f"{self.__name__}: arguments do not match the declared spec structure")
        for name, want, got in zip(names, spec_leaves, types):
            if not isinstance(want, TensorType):
                want = TensorType.of(want)
            if want != got:
                raise ArgumentError(f"{self.__name__}: argument {name}: spec says {want}, got {got}")

    def lower(self, *args) -> Lowered:
        in_tree, types, names = self._signature(args)
        traced, captured = trace(self.fn, in_tree, types, names)
        assert not captured  # a top-level trace has no enclosing trace to capture from
        passes, plans = default_passes(self.optimize), []
        if self.remat is not None:
            passes.append(self.remat.as_pass(plans))
        result = run_pipeline(traced.graph, passes, verify_each=self.verify,
                              dump_after=self.dump_after, dump_dir=self.dump_dir)
        schedule = None
        if self.optimize:
            schedule = fuse(result.graph)
            if self.verify:
                verify_schedule(schedule)
        return Lowered(traced, names, self.backend, result.graph, schedule, result.records, result.dumps,
                       plans[0] if plans else None)

    def export(self, path, *args):
        """cf.export("dir/libmodel.so"[, *args]): the signature of args, or the one compiled last."""
        lowered = self.lower(*args) if args else self._last
        if lowered is None:
            raise RuntimeError(f"{self.__name__}: call it or pass example arguments before export")
        directory, file = os.path.split(os.fspath(path))
        return lowered.export(directory or ".", file.removeprefix("lib").removesuffix(".so"))

    def stats(self) -> Stats:
        """Stats of the signature compiled most recently."""
        if self._last is None:
            raise RuntimeError(f"{self.__name__} has not been called yet: no signature to report on")
        return self._last.stats()

    def __call__(self, *args):
        prepared = self._prepare(args)
        if prepared is None:
            return self.fn(*args)  # inside another trace: compile is the identity
        executable, _, leaves, run = prepared
        return tree_unflatten(executable.out_tree, run(leaves))

    def bind(self, *args) -> BoundCall:
        """`bound = cf.bind(*args)`; `bound()` runs cf over these very arrays and returns
        its results, the same arrays every call, with no argument handling per call
        (docs/bind.md: refill inputs in place between calls; never resize or replace them)."""
        executable, _, leaves = self._binding_target(args)
        binding, given = executable.bind_flat(leaves)
        return BoundCall(binding, given, tree_unflatten(executable.out_tree, binding.results))

    def _binding_target(self, args, donate=None) -> tuple[Executable, TreeDef, list]:
        """(executable, in_tree, leaves) for binding args: compiled on a miss, as a call does."""
        prepared = self._prepare(args, donate)
        if prepared is None:
            raise ArgumentError(f"{self.__name__}: bind takes arrays, not traced values")
        return prepared[:3]

    def _prepare(self, args, donate=None):
        """(executable, in_tree, leaves, run) for a call on arrays, None if args hold traced
        Values. run is the executable's run_flat when the arrays are already known to fit
        (the last call's structure and types), else its checking call_flat."""
        recent = self._match_recent(args)
        if recent is not None:
            executable, in_tree, leaves = recent
            return executable, in_tree, leaves, executable.run_flat
        leaves, in_tree = tree_flatten(args)
        if any(isinstance(leaf, Value) for leaf in leaves):
            return None
        executable = self._executable(args, leaves, in_tree, donate)
        return executable, in_tree, leaves, executable.call_flat

    def _match_recent(self, args):
        """(executable, in_tree, leaves) if args have the structure of the last call whose
        arrays passed unchecked, and arrays that pass unchecked too: then the cache key
        (structure, shapes, dtypes) is the last one, found without building it."""
        recent = self._recent
        if recent is None:
            return None
        in_tree, entry = recent
        leaves = tree_leaves_like(args, in_tree)
        if leaves is None or not entry[1].accepts(leaves):
            return None
        self._last = entry[0]
        return entry[1], in_tree, leaves

    def _executable(self, args, leaves, in_tree, donate=None) -> Executable:
        """The executable for this call's signature; traced and compiled on a miss.

        The hot path keys on (structure, shapes, dtypes) alone: argument names
        and spec checks are only needed when a new signature is compiled.
        donate(in_tree) -> {result index: argument index} (see Lowered.compile)."""
        key = (in_tree, tuple((leaf.shape, leaf.dtype) if isinstance(leaf, np.ndarray)
                              else (np.shape(leaf), type(leaf)) for leaf in leaves))
        entry = self._cache.get(key)
        if entry is None:
            with _collector_paused():
                lowered = self.lower(*args)
                entry = self._cache[key] = (lowered, lowered.compile(donate and donate(in_tree)))
        self._last = entry[0]
        if entry[1].accepts(leaves):
            self._recent = (in_tree, entry)
        return entry[1]


@contextmanager
def _collector_paused():
    """Tracing, passes and IR emission allocate many objects that live until the compile
    ends: the cyclic collector's passes over them (and over everything else alive) took
    24 of the 66 ms of a warm-cache compile of the mnist step. It resumes afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile(fn=None, *, backend=None, spec=None, dump_after=None, dump_dir=None, verify=True,
            optimize=True, remat=None, memory_budget=None, remat_time_limit=10.0):
    """Compile fn (usable as @ff.compile or ff.compile(fn, backend=...)).

    optimize=False skips simplification, fusion and memory planning: the
    graph runs op by op, the reference the optimized program is tested against.
    remat: "store_all" | "recompute_elementwise" | "sqrt" | "optimal" (the default
    when memory_budget, in bytes or as a fraction of store_all's peak, is given)."""
    options = dict(backend=backend, spec=spec, dump_after=dump_after, dump_dir=dump_dir, verify=verify,
                   optimize=optimize, remat=remat, memory_budget=memory_budget,
                   remat_time_limit=remat_time_limit)
    if fn is None:
        return functools.partial(compile, **options)
    return CompiledFunction(fn, **options)


# --------------------------------------------------------------------------- autodiff transforms


def _traced_call(transform):
    """Run `transform(*args)` on Values; on arrays, compile it (cached) and run that."""
    compiled = None

    @functools.wraps(transform)
    def call(*args):
        nonlocal compiled
        if any(isinstance(leaf, Value) for leaf in tree_flatten(tuple(args))[0]):
            return transform(*args)
        if compiled is None:
            compiled = CompiledFunction(call)
        return compiled(*args)

    return call


def _trace_nested(fn, args):
    """Trace fn inside the current trace; returns (traced, arg leaves as Values, captured)."""
    leaves = tree_flatten(tuple(args))[0]
    parent = _builder_of(leaves)
    in_tree, types, names, _ = signature(args, fn)
    traced, captured = trace(fn, in_tree, types, names, parent=parent)
    bound = [lift(parent, leaf, None) for leaf in leaves] + captured
    return traced, parent, bound


def _leaf_ranges(args) -> list[range]:
    ranges, start = [], 0
    for arg in args:
        n = len(tree_flatten(arg)[0])
        ranges.append(range(start, start + n))
        start += n
    return ranges


def _argnums(argnums, nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise ValueError(f"argnums {argnums!r} out of range for {nargs} arguments")
    return tuple(n % nargs for n in nums)


def value_and_grad(fn, argnums=0):
    """fn -> (x -> (fn(x), d fn / d args[argnums])); fn must return a float scalar."""

    def transform(*args):
        nums = _argnums(argnums, len(args))
        traced, parent, bound = _trace_nested(fn, args)
        ranges = _leaf_ranges(args)
        inputs = traced.graph.inputs
        wrt = [inputs[k] for n in nums for k in ranges[n]]
        graph = append_adjoint(traced.graph, wrt)
        outs = [Value(parent, i) for i in parent.inline(graph, [v.id for v in bound])]
        value = tree_unflatten(traced.out_tree, outs[:1])
        grads, pos = [], 1
        for n in nums:
            count = len(ranges[n])
            grads.append(tree_unflatten(tree_flatten(args[n])[1], outs[pos:pos + count]))
            pos += count
        return value, (grads[0] if isinstance(argnums, int) else tuple(grads))

    _name_after(transform, "value_and_grad", fn)
    return _traced_call(transform)


def grad(fn, argnums=0):
    """fn -> (x -> d fn / d args[argnums]); fn must return a float scalar."""
    vg = value_and_grad(fn, argnums)

    def transform(*args):
        return vg(*args)[1]

    _name_after(transform, "grad", fn)
    return _traced_call(transform)


def vjp(fn, *args):
    """(fn(*args), pullback) where pullback(cotangent) gives one cotangent per argument.

    Cotangents of non-float leaves are None."""

    def pullback_transform(primals, cotangent):
        traced, parent, bound = _trace_nested(fn, primals)
        inputs = traced.graph.inputs
        leaves = tree_flatten(tuple(primals))[0]
        floats = [inputs[k] for k, leaf in enumerate(leaves) if _is_float(leaf)]
        graph = append_adjoint(traced.graph, floats, cotangents="inputs")
        ct_leaves, ct_tree = tree_flatten(cotangent)
        if ct_tree != traced.out_tree:
            raise ArgumentError("vjp: the cotangent's structure differs from the function's output")
        ct_values = [lift(parent, c, None).id for c in ct_leaves]
        outs = parent.inline(graph, [v.id for v in bound] + ct_values)
        grads = iter(Value(parent, i) for i in outs[len(traced.graph.outputs):])
        flat = [next(grads) if _is_float(leaf) else None for leaf in leaves]
        return tree_unflatten(tree_flatten(tuple(primals))[1], flat)

    pullback_fn = _traced_call(pullback_transform)
    out = (fn if _has_values(args) else CompiledFunction(fn))(*args)
    return out, lambda cotangent: pullback_fn(args, cotangent)


def _name_after(transform, prefix: str, fn) -> None:
    """Name a transform after fn, and let signature() see fn's parameter names."""
    transform.__name__ = f"{prefix}_{getattr(fn, '__name__', 'fn').strip('<>')}"
    transform.__wrapped__ = fn


def _has_values(tree) -> bool:
    return any(isinstance(leaf, Value) for leaf in tree_flatten(tree)[0])


def _is_float(leaf) -> bool:
    if isinstance(leaf, Value):
        return leaf.type.is_float
    return TensorType.of(leaf).is_float
