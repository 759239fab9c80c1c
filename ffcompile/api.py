"""`ff.compile`: a function traced and compiled per argument signature, and its call cache.

The first call with a new signature (pytree structure, shapes, dtypes) traces
the function and runs the pipeline (pipeline.py) to a Program; later calls
with the same signature go straight to it. Called on traced Values (inside
another trace), a compiled function is the identity: it traces inline.
With batch_dim=, a backend that builds one program for every batch size gets
one Lowered per symbolic signature, which every batch size's call reaches
(symbolic_batch.py says when a signature falls back to a program per size).
"""
from __future__ import annotations

import dataclasses
import functools
import gc
import os
import threading
from contextlib import contextmanager
from typing import Callable, Mapping, NamedTuple

import numpy as np

from .codegen.registry import BACKENDS, get_backend
from .ir import ShapeError, TensorType
from .ir.lang import Value
from .ir.specialize import specialize
from .calling import CallingConvention
from .pipeline import Lowered, Options, RematOptions, Stats
from .runtime import ArgumentError, BoundCall, Executable
from .symbolic_batch import SYMBOLIC_REFUSALS, BatchSpec, per_size_reason
from .trace import signature, trace, user_traceback
from .tree import TreeDef, leaf_extractor, tree_flatten, tree_unflatten

__all__ = ["BACKENDS", "CompiledFunction", "Prepared", "compile"]

USER_ERRORS = (ShapeError, ArgumentError)  # raised with the user's frames only (trace.user_traceback)


class Prepared(NamedTuple):
    """A call's arguments matched to their executable (CompiledFunction.prepare)."""

    executable: Executable
    in_tree: TreeDef
    leaves: list
    run: Callable  # run(leaves): unchecked when the arrays are known to fit, else checked


class CompiledFunction:
    """`ff.compile(fn)`: traces per argument signature, runs the compiled program.

    donate: in_tree -> {result position: argument position} whose array may take that
    result (honoured where the schedule reads the argument before writing the result;
    training steps use it for parameters and optimizer state)."""

    def __init__(self, fn, backend=None, spec=None, dump_after=None, dump_dir=None, verify=True,
                 optimize=True, remat=None, memory_budget=None, remat_time_limit=10.0,
                 donate: Callable[[TreeDef], Mapping[int, int]] | None = None,
                 static_argnums=(), static_argnames=(), batch_dim=None, max_batch=None):
        if max_batch is not None and batch_dim is None:
            raise ValueError("max_batch bounds the symbolic batch size: it needs batch_dim")
        if (remat is not None or memory_budget is not None) and not optimize:
            raise ValueError("remat plans the optimized program: it needs optimize=True")
        if memory_budget is not None and remat is None:
            remat = "optimal"
        self.fn = fn
        self.backend_name = backend
        self.spec = None if spec is None else tree_flatten(tuple(spec))
        self.donate = donate
        self._options = dict(optimize=optimize, verify=verify, dump_after=dump_after, dump_dir=dump_dir,
                             remat=None if remat is None else RematOptions(remat, memory_budget, remat_time_limit))
        get_backend(backend)  # an unknown name fails here, not at the first call
        self.convention = CallingConvention(fn, static_argnums, static_argnames)
        self._cache: dict = {}
        # batch_dim: one trace for every batch size (symbolic_batch.py), kept per symbolic signature
        self.batch = batch_dim if isinstance(batch_dim, BatchSpec) or batch_dim is None else BatchSpec(
            batch_dim, max_batch)
        self._symbolic: dict = {}  # symbolic signature -> its trace
        self._one_program: dict = {}  # symbolic signature -> the Lowered of every batch size, or why not
        self._symbolic_lock = threading.RLock()  # held while a symbolic signature is traced and built
        self.trace_count = 0  # how many times fn was traced (once per signature, or per symbolic one)
        self.last_lowered: Lowered | None = None  # the signature called (or lowered) most recently
        # (variant, in_tree, leaf extractor, lowered, executable) of the last call that passed unchecked
        self._recent = None
        self._extractors: dict[TreeDef, Callable] = {}  # per argument structure, generated once
        functools.update_wrapper(self, fn, updated=())

    @property
    def backend(self) -> str:
        """The backend's name (resolved at each new signature: the default may change)."""
        return get_backend(self.backend_name).name

    def _signature(self, args, fn):
        """(in_tree, types, names) of a call, checked against the declared spec if any."""
        in_tree, types, names, _ = signature(args, fn)
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

    def lower(self, *args, **kwargs) -> Lowered:
        """Trace args' signature and run the pipeline up to the memory plan (AOT)."""
        try:
            return self._lower(*self._split(args, kwargs))
        except USER_ERRORS as exc:
            raise user_traceback(exc) from None

    def _lower(self, args, variant) -> Lowered:
        fn = self.convention.traced_function(variant)
        in_tree, types, names = self._signature(args, fn)
        weak = [is_weak(a) for a in tree_flatten(args)[0]]
        symbolic = None
        if self.batch is None:
            traced = self._trace(fn, in_tree, types, names, weak)
        else:  # the symbolic trace of this signature, specialized to the call's batch size
            axes = self.batch.axes(args, *self.convention.positions(args, variant))
            size = self.batch.size(types, names, axes)
            symbolic_types = self.batch.symbolic(types, axes)
            key = (variant, in_tree, tuple(symbolic_types), tuple(weak))  # weak: a trace's dtypes depend on it
            with self._symbolic_lock:  # threads first calling at several sizes: one trace, one program
                if key not in self._symbolic:
                    self._symbolic[key] = self._trace(fn, in_tree, symbolic_types, names, weak)
                lowered = self._lower_symbolic(key, names, in_tree)
            symbolic = self._symbolic[key].graph
            if lowered is not None:
                self.last_lowered = lowered
                return lowered
            traced = dataclasses.replace(self._symbolic[key], graph=specialize(symbolic, {"B": size}))
        options = Options(get_backend(self.backend_name), **self._options)
        lowered = Lowered(traced, names, options, self.donate(in_tree) if self.donate else {}, symbolic,
                          self._one_program.get(key) if self.batch is not None else None)
        self.last_lowered = lowered
        return lowered

    def _lower_symbolic(self, key, names, in_tree) -> Lowered | None:
        """The one Lowered of every batch size of this symbolic signature, made on its first
        call; None (with the reason kept for the per-size Lowered) where it cannot be."""
        found = self._one_program.get(key)
        if isinstance(found, Lowered):
            return found
        if found is None:
            options = Options(get_backend(self.backend_name), **self._options, batch=self.batch.range)
            found = per_size_reason(options)
            if found is None:
                try:
                    found = Lowered(self._symbolic[key], names, options, self.donate(in_tree) if self.donate else {},
                                    self._symbolic[key].graph)
                    found.compile()  # code generation too: where it refuses a symbolic size, per size
                except SYMBOLIC_REFUSALS as exc:  # the graph needs a concrete size somewhere
                    found = f"{type(exc).__name__}: {exc}"
            self._one_program[key] = found
        return found if isinstance(found, Lowered) else None

    def _trace(self, fn, in_tree, types, names, weak):
        traced, captured = trace(fn, in_tree, types, names, weak=weak)
        assert not captured  # a top-level trace has no enclosing trace to capture from
        self.trace_count += 1
        return traced

    def export(self, path, *args):
        """cf.export("dir/libmodel.so"[, *args]): the signature of args, or the one compiled last."""
        lowered = self.lower(*args) if args else self.last_lowered
        if lowered is None:
            raise RuntimeError(f"{self.__name__}: call it or pass example arguments before export")
        directory, file = os.path.split(os.fspath(path))
        return lowered.export(directory or ".", file.removeprefix("lib").removesuffix(".so"))

    @property
    def signatures(self) -> int:
        """How many programs the calls so far have (per argument signature; with batch_dim:
        one for every batch size, or one per size where that falls back, Stats.per_size)."""
        return len({id(executable) for _, executable in self._cache.values()})

    def stats(self) -> Stats:
        """Stats of the signature compiled most recently."""
        if self.last_lowered is None:
            raise RuntimeError(f"{self.__name__} has not been called yet: no signature to report on")
        return self.last_lowered.stats()

    def __call__(self, *args, **kwargs):
        if not kwargs:
            hit = self.run_fast(args)
            if hit is not None:
                return hit[2].unflatten(hit[1])
        try:
            prepared = self.prepare(args, kwargs)
        except USER_ERRORS as exc:
            raise user_traceback(exc) from None
        if prepared is None:
            return self.fn(*args, **kwargs)  # inside another trace: compile is the identity
        return tree_unflatten(prepared.executable.out_tree, prepared.run(prepared.leaves))

    def bind(self, *args, **kwargs) -> BoundCall:
        """`bound = cf.bind(*args)`; `bound()` runs cf over these very arrays and returns
        its results, the same arrays every call, with no argument handling per call
        (docs/bind.md: refill inputs in place between calls; never resize or replace them)."""
        try:
            prepared = self.prepare_arrays(args, kwargs)
            binding, given = prepared.executable.bind_flat(prepared.leaves)
        except USER_ERRORS as exc:
            raise user_traceback(exc) from None
        results, checks = prepared.executable.bound_checks(binding.results)
        return BoundCall(binding, given, tree_unflatten(prepared.executable.out_tree, results), checks=checks)

    def prepare_arrays(self, args, kwargs=None) -> Prepared:
        """prepare(args) for arguments that must be arrays (bind, training steps)."""
        prepared = self.prepare(args, kwargs)
        if prepared is None:
            raise ArgumentError(f"{self.__name__}: takes arrays, not traced values")
        return prepared

    def prepare(self, args, kwargs=None) -> Prepared | None:
        """The executable for args (traced and compiled on a new signature), or None if
        args hold traced Values. Its run is the executable's run_flat when the arrays are
        already known to fit (the last call's structure and types), else its checking
        call_flat. Keyword and static arguments are resolved first (CallingConvention)."""
        args, variant = self._split(args, kwargs)
        recent = self._match_recent(args, variant)
        if recent is not None:
            return recent
        leaves, in_tree = tree_flatten(args)
        if any(isinstance(leaf, Value) for leaf in leaves):
            return None
        executable = self._executable(args, leaves, in_tree, variant)
        return Prepared(executable, in_tree, leaves, executable.call_flat)

    def run_fast(self, args: tuple):
        """(leaves, flat results, executable, in_tree) of a call with the last call's structure whose
        arrays all pass unchecked (no keyword arguments: they are resolved on the full path);
        None, with nothing run, for anything else."""
        recent = self._recent
        if recent is None or recent[0] is not None:  # variant None: no static argument to split off
            return None
        _, in_tree, extract, lowered, executable = recent
        leaves = extract(args)
        if leaves is None:
            return None
        results = executable.run_objects(leaves)
        if results is None:
            return None
        self.last_lowered = lowered
        return leaves, results, executable, in_tree

    def _split(self, args, kwargs) -> tuple:
        """(dynamic arguments, variant): the variant None when there are neither keyword nor
        static arguments (the same key for a call and a lower of the same arguments)."""
        if kwargs or self.convention.statics:
            return self.convention.split(args, kwargs or {})
        return args, None

    def _match_recent(self, args, variant) -> Prepared | None:
        """The last call's executable if args have the structure of the last call whose
        arrays passed unchecked, and arrays that pass unchecked too: then the cache key
        (structure, shapes, dtypes) is the last one, found without building it."""
        recent = self._recent
        if recent is None or recent[0] != variant:
            return None
        _, in_tree, extract, lowered, executable = recent
        leaves = extract(args)
        if leaves is None or not executable.accepts(leaves):
            return None
        self.last_lowered = lowered
        return Prepared(executable, in_tree, leaves, executable.run_flat)

    def _executable(self, args, leaves, in_tree, variant) -> Executable:
        """The executable for this call's signature; traced and compiled on a miss.

        The hot path keys on (structure, shapes, dtypes) alone: argument names
        and spec checks are only needed when a new signature is compiled."""
        key = (variant, in_tree, tuple((leaf.shape, leaf.dtype) if isinstance(leaf, np.ndarray)
                                       else (np.shape(leaf), type(leaf)) for leaf in leaves))
        entry = self._cache.get(key)
        if entry is None:
            with _collector_paused():
                lowered = self._lower(args, variant)
                entry = self._cache[key] = (lowered, lowered.compile())  # a symbolic one's: shared by every size
        self.last_lowered = entry[0]
        if entry[1].accepts(leaves):
            extract = self._extractors.get(in_tree)
            if extract is None:
                extract = self._extractors[in_tree] = leaf_extractor(in_tree)
            self._recent = (variant, in_tree, extract, *entry)
        return entry[1]


def is_weak(leaf) -> bool:
    """A Python scalar argument is weakly typed: it takes the dtype of what it meets."""
    return isinstance(leaf, (int, float)) and not isinstance(leaf, (bool, np.generic))


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
            optimize=True, remat=None, memory_budget=None, remat_time_limit=10.0,
            static_argnums=(), static_argnames=(), batch_dim=None, max_batch=None):
    """Compile fn (usable as @ff.compile or ff.compile(fn, backend=...)).

    backend: "llvm" (the default: native code) or "numpy" (the same schedule as
    generated NumPy code). optimize=False runs the traced graph op by op through the
    reference interpreter (composites expanded, nothing else), whatever the backend:
    the reference the optimized programs are tested against.
    remat: "store_all" | "recompute_elementwise" | "sqrt" | "optimal" (the default
    when memory_budget, in bytes or as a fraction of store_all's peak, is given) |
    "chain" | "milp" (optimal's two planners alone; see docs/remat.md).
    dump_after: a stage name, a list of them, or "all" (see pipeline.py).
    static_argnums / static_argnames: arguments that are not arrays but Python values
    the function branches on (hashable; one program per value, as in jax.jit).
    batch_dim: the batch axis per positional argument (None: none; an int: every
    argument's), traced once as the symbol B for every batch size up to max_batch
    (docs/symbolic_batch.md)."""
    options = dict(backend=backend, spec=spec, dump_after=dump_after, dump_dir=dump_dir, verify=verify,
                   optimize=optimize, remat=remat, memory_budget=memory_budget,
                   remat_time_limit=remat_time_limit, static_argnums=static_argnums,
                   static_argnames=static_argnames, batch_dim=batch_dim, max_batch=max_batch)
    if fn is None:
        return functools.partial(compile, **options)
    return CompiledFunction(fn, **options)
