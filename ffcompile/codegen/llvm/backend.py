"""LLVM backend: JIT-compile a Schedule + MemoryPlan into a Python-callable native function.

The calling convention is one argument block (a ctypes array of void*)
packed once; a call only rewrites its slots with each array's data address
and makes one native call. The address is read from the ndarray struct
(`data` follows the object header, checked at import against
`__array_interface__`, which is the fallback): 0.1 us against 0.9 us for
`__array_interface__` or `arr.ctypes.data`, which matters at a dozen arrays
per call. Every argument is checked first (dtype, shape, strides,
alignment) and copied if it is not C-contiguous and aligned, so bad input is
a Python error, never a crash.
The arena is allocated once per executable, 64-byte aligned; a lock makes
concurrent calls from several threads safe (they share the arena and the
argument block). ctypes releases the GIL during the native call.
`bind` packs a private argument block once for fixed arrays, so a bound run
is the lock and the native call alone (docs/bind.md).

A symbolic program (types holding the batch size B, #18: one program for every size)
takes B in one more argument slot, the last: each call reads B from the arguments' batch
axes (all the same size, within 1..max_batch, or a TypeError naming the argument), grows
the arena to the plan's size at B if it is smaller, and allocates the outputs at B. Its
native fast path (call_objects) reads B from the first batch argument and checks the
arguments natively against a call table made for that size (one per recent size); it
holds the GIL at the sizes whose FLOPs are within HOLD_GIL_MAX_FLOPS (gil_batch).

Donation (in-place parameter updates): `donated` maps a result position to
an argument position whose array receives that result; `LLVMBackend.safe_donations`
says which requested ones are safe (`passes/donation.py`).
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading
import time
import weakref
from functools import cached_property

import numpy as np

from ...passes.cost import graph_flops
from ...passes.donation import fused_loop_donations, safe_donations
from ...passes.memory import MemoryPlan
from ...passes.schedule import Schedule, print_schedule
from ...ir.symbolic import Sym, bytes_at, first_batch_axis, substitute
from ..arena import allocate_arena
from ..arguments import Binding, overlapping_arguments
from . import fastcall, gemm_library, target
from .blas import BLAS_FUNCTIONS, blas_address, blas_symbol, default_blas_threads, native_max_work
from .collective import COLLECTIVE_SYMBOL, COLLECTIVES
from ...ir import ops as O
from .cache import ObjectCache, default_cache
from .elementwise import ELEMENTWISE_LOWERINGS, contiguous_strides
from .layout import LAYOUT_LOWERINGS
from .reduction import REDUCTION_LOWERINGS
from .runtime_gemm import GEMM_ERROR_SYMBOL, raise_gemm_error
from .packed_gemm import SLOT_SUFFIX, GemmVariant, program_variants
from .threadpool import POOL_SLOT, parallel_for_address
from .lower import ENTRY, PROFILE, arena_from_json, arena_json, gemm_routes, gemm_scratch, is_symbolic, layout, lower
from .calibrate import calibrate_schedule
from .object_check import Symbol

_ENTRY_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_ENTRY_HOLDING_GIL = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
# FLOPs up to which a program runs with the GIL held: releasing and taking it back, and the
# lock that then keeps two threads off the one arena, cost ~0.2 us, a third of a bound
# xor step (~1,000 FLOPs); this bounds how long other threads wait (~10 us at worst).
HOLD_GIL_MAX_FLOPS = 20_000
# Native call tables a symbolic program keeps (one per batch size): a training loop's two
# sizes, a server's few common ones; another size rewrites the oldest in place (a few us).
CALL_TABLES = 8


def _interface_address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _choose_address_reader():
    """`PyArrayObject.data` sits right after the object header on CPython; use it if it checks out."""
    offset = object.__basicsize__  # ob_refcnt and ob_type (more in debug builds)
    read = ctypes.c_void_p.from_address

    def struct_address(array: np.ndarray) -> int:
        return read(id(array) + offset).value or 0

    samples = [np.empty(3, np.float32), np.zeros((2, 5)), np.empty(0, np.int32), np.arange(6)[1:], np.float64(1.0)]
    samples = [np.asarray(a) for a in samples]
    if platform.python_implementation() == "CPython" and all(
            struct_address(a) == _interface_address(a) for a in samples):
        return struct_address
    return _interface_address


data_address = _choose_address_reader()


def program_description(schedule: Schedule, plan: MemoryPlan, donated_roots: dict[int, int],
                        profile: bool) -> str:
    """Everything lower() builds a program's IR from, as text: the disk cache's key. The
    schedule (nodes with their types and attributes, kernels, views, literals, anchors), the
    inputs, the plan's offsets (and a symbolic plan's max_batch), donation, profiling, the GEMM
    size limit of the BLAS thread setting and each GEMM's route (measured per host: the packed
    GEMM's block sizes too); the host and the code generator's source join it in ObjectCache.key."""
    graph = schedule.graph
    return "\n".join([
        print_schedule(schedule, locs=False),
        "inputs " + " ".join(f"%{i}:{t}" for i, t in zip(graph.inputs, graph.input_types)),
        "anchors " + " ".join(str(kernel.anchor) for kernel in schedule.kernels),
        "plan " + " ".join(f"%{b.value}@{b.offset}" for b in plan.buffers)
        + f" arena={plan.arena_bytes} scratch={list(plan.scratch)}"
        + ("" if plan.batch is None else f" batch={plan.batch.max_batch}"),  # GEMM routes depend on it
        f"donated {sorted(donated_roots.items())} profile {profile} native_max_work {native_max_work()}"
        f" vector_bytes {target.vector_bytes()}",
        "gemms " + " ".join(gemm_routes(schedule, plan.batch)),
    ])


_FOUND_IN_IR = ("parallel", "gemm_error", "packed")  # metadata known once the IR is built, not from the layout


def program_symbols(metadata: dict, schedule: Schedule, plan: MemoryPlan, donated: dict[int, int],
                     profile: bool) -> tuple[Symbol, ...] | None:
    """The symbols the object code of lower(schedule, plan, donated, profile) defines, if a
    cache entry's metadata is that program's own (else None: the entry is not used)."""
    parallel, gemm_error = metadata.get("parallel", False), metadata.get("gemm_error", False)
    packed = metadata.get("packed", [])
    if {k: v for k, v in metadata.items() if k not in _FOUND_IN_IR} != layout(schedule, plan, donated).metadata() \
            or parallel not in (False, True) or gemm_error not in (False, True) \
            or not isinstance(packed, list) or not all(isinstance(v, str) and GemmVariant.of_symbol(v) for v in packed):
        return None
    symbols = [Symbol(ENTRY, function=True)] + [Symbol(blas_symbol(name), False, 8) for name in BLAS_FUNCTIONS.values()]
    if metadata.get("collectives"):
        symbols.append(Symbol(COLLECTIVE_SYMBOL, False, 8))
    if parallel:  # known only once the IR is built (emit_parallel_for decides per kernel)
        symbols.append(Symbol(POOL_SLOT, False, 8))
    if gemm_error:  # likewise (a symbolic GEMM that may reach BLAS past its integers)
        symbols.append(Symbol(GEMM_ERROR_SYMBOL, False, 8))
    symbols += [Symbol(variant + SLOT_SUFFIX, False, 8) for variant in packed]  # the packed GEMMs it calls
    if profile:
        symbols.append(Symbol(PROFILE, False, 8 * (len(schedule.kernels) + 1)))
    return tuple(symbols)


_live_executables: weakref.WeakSet = weakref.WeakSet()


def _release_locks_after_fork() -> None:
    """A forked child has only the forking thread: a lock some other parent thread held inside
    a call is held by no one there, and the child's next call hung on it. The arena it was
    using is scratch, so the child may run over it; the same lock object is released (not
    replaced) because bound calls hold it too."""
    for executable in list(_live_executables):
        if executable._lock.locked():
            executable._lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_locks_after_fork)


class LLVMExecutable:
    """`fn(*arrays) -> tuple of arrays` for one schedule, plus its IR and assembly text."""

    def __init__(self, schedule: Schedule, plan: MemoryPlan, donated: dict[int, int] | None = None,
                 profile: bool = False):
        """donated: result position -> argument position it is written over (safe ones:
        LLVMBackend.safe_donations). profile: count the cycles each kernel takes
        (kernel_cycles), for ffcompile.profile. A symbolic schedule's plan says the batch
        sizes it serves (plan.batch: 1..max_batch)."""
        if plan.schedule is not schedule:
            raise ValueError("llvm backend: the memory plan was made for another schedule")
        start = time.perf_counter()
        graph = schedule.graph
        self.donated = dict(donated or {})
        donated_roots = {schedule.root(graph.outputs[k]): a for k, a in self.donated.items()}
        self._lower_arguments = (schedule, plan, donated_roots, profile)
        self._llvm_ir = None
        program = self._load_or_compile(default_cache())
        self.blas = tuple(program["blas"])  # the BLAS functions the code calls
        # what it allocates: the plan's arena, plus any GEMM scratch (an Envelope: at the call's B)
        self.arena_bytes = arena_from_json(program["arena_bytes"])
        self.symbolic = is_symbolic(schedule)
        self._batch_range = plan.batch  # a symbolic program's
        self.max_batch = plan.batch.max_batch if plan.batch is not None else None
        if self.blas:
            default_blas_threads()
        for name in self.blas:
            slot = self._jit.address(blas_symbol(name))
            ctypes.c_void_p.from_address(slot).value = blas_address(name)
        gemm_library.fill_slots(self._jit, program.get("packed", ()))
        pool = self._jit.address(POOL_SLOT)  # 0: no parallel kernel
        if pool:
            ctypes.c_void_p.from_address(pool).value = parallel_for_address()
        # a symbolic GEMM past BLAS's integers at the call's B stops and leaves its size here
        self._gemm_error = self._jit.address(GEMM_ERROR_SYMBOL) if program.get("gemm_error") else 0
        self._collectives = program.get("collectives", False)
        if self._collectives:
            ctypes.c_void_p.from_address(self._jit.address(COLLECTIVE_SYMBOL)).value = COLLECTIVES.address
        self._may_fail = bool(self._collectives or self._gemm_error)  # a run may leave an error (_raise_errors)
        # then the GIL keeps other runs off the arena (not with collectives: they wait on other ranks);
        # a symbolic program holds it at the batch sizes up to gil_batch, its calls and bindings
        # taking the lock all the same (a run at a larger size releases the GIL)
        self.gil_batch = 0 if self._collectives else _gil_batch(graph) if self.symbolic else None
        self.holds_gil = not self.symbolic and not self._collectives and graph_flops(graph) <= HOLD_GIL_MAX_FLOPS
        address = self._jit.address(ENTRY)
        self._entries = (_ENTRY_TYPE(address), _ENTRY_HOLDING_GIL(address))
        self._entry = self._entries[self.holds_gil]
        self._cycles = None
        if profile:
            counters = self._jit.address(PROFILE)
            self._cycles = (ctypes.c_int64 * (len(schedule.kernels) + 1)).from_address(counters)
        self.compile_seconds = time.perf_counter() - start

        self.name = graph.name
        self._inputs = [(t.np_dtype, t.shape, tuple(s * t.np_dtype.itemsize for s in contiguous_strides(t.shape)))
                        for t in graph.input_types]
        self._input_types = graph.input_types
        self._donated_inputs = sorted(set(self.donated.values()))
        outputs = program["outputs"]
        shapes = self._result_shapes(schedule)
        self._outputs = [(graph.nodes[v].type.np_dtype, shapes.get(v, graph.nodes[v].type.shape)) for v in outputs]
        # Per graph output: (where, index, copy, shape): where "out" is an output slot, "arg" an
        # argument (donated: the program wrote the result there; else an input returned as
        # it is, which is copied); a value returned a second time is copied too, so results
        # are always distinct arrays. shape: the reshape it needs, or None.
        slot_of = {v: k for k, v in enumerate(outputs)}
        input_index = {v: k for k, v in enumerate(graph.inputs)}
        self._results, seen = [], set()
        for j in graph.outputs:
            root, shape = schedule.root(j), graph.nodes[j].type.shape
            if root in slot_of:
                where, k, copy, own_shape = "out", slot_of[root], False, self._outputs[slot_of[root]][1]
            elif root in donated_roots:
                where, k, copy = "arg", donated_roots[root], False
                own_shape = self._inputs[k][1]
            else:
                where, k, copy = "arg", input_index[root], True
                own_shape = self._inputs[k][1]
            self._results.append((where, k, copy or root in seen, None if shape == own_shape else shape))
            seen.add(root)
        self._new_outputs, self._collect = _generated_result_code(self._outputs, self._results)
        self._slots = (ctypes.c_void_p * (1 + len(self._inputs) + len(self._outputs) + self.symbolic))()
        # a symbolic program's arena starts at its size at B = 1 and grows with the calls' B
        self._arena = allocate_arena(max(bytes_at(self.arena_bytes, 1), 1), "llvm", graph.name)
        self._arena_batch = 1  # the largest batch size the arena was sized for
        self._slots[0] = data_address(self._arena)
        self._lock = threading.Lock()
        _live_executables.add(self)
        self._disjoint_addresses = None  # (batch size, argument addresses) of the last call without overlap
        self._last_shapes = (None, None)  # (batch size, input shapes at it): _shapes_at
        # The native checked call (fastcall.py), made at the first call_objects: a first call
        # takes the checked path anyway, and a process that calls once never compiles it.
        self._calls: fastcall.CallTable | None = None
        # a symbolic program's: one per batch size lately called (at most CALL_TABLES), and where
        # a call's batch size is read first: (argument, axis, multiple of B it holds)
        self._tables: dict[int, fastcall.CallTable] = {}
        self._batch_axis = first_batch_axis([shape for _, shape, _ in self._inputs])

    def _load_or_compile(self, cache: ObjectCache | None) -> dict:
        """Set self._jit, from the disk cache's entry for this program or compiled (and then
        stored); return the program's metadata (NativeProgram's outputs, arena_bytes, blas)."""
        calibrate_schedule(self._lower_arguments[0], self._lower_arguments[1].batch)  # the routes the key holds, measured if not yet
        key = cache and cache.key(program_description(*self._lower_arguments), target.host_key())
        found = key and cache.load(key, lambda metadata: program_symbols(metadata, *self._lower_arguments))
        self.from_cache = bool(found)  # loaded from the disk cache: no IR built
        if found:
            metadata, object_code = found
            self._jit = target.load_object(object_code)
            self.phases = self._jit.seconds
            return metadata
        start = time.perf_counter()
        program = lower(*self._lower_arguments)
        self._llvm_ir = str(program.module)
        built = time.perf_counter() - start
        self._jit = target.jit(self._llvm_ir)  # keeps the machine code alive
        self.phases = (("build IR", built), *self._jit.seconds)  # where `lower` went (cf.stats())
        metadata = {"outputs": list(program.outputs), "arena_bytes": arena_json(program.arena_bytes),
                    "blas": list(program.blas)}
        if program.collectives:  # as lower.Layout.metadata has it
            metadata["collectives"] = True
        if program.batch:
            metadata["batch"] = True
        if POOL_SLOT in program.module.globals:  # a kernel splits across the pool: the object defines its slot
            metadata["parallel"] = True
        if GEMM_ERROR_SYMBOL in program.module.globals:
            metadata["gemm_error"] = True
        if program_variants(program.module):  # the packed GEMM functions it calls (gemm_library.py)
            metadata["packed"] = program_variants(program.module)
        if cache is not None and self._jit.object_code:
            cache.store(key, metadata, self._jit.object_code)
        return metadata

    @property
    def llvm_ir(self) -> str:
        """The program's LLVM IR (built again on first use if the code came from the disk cache)."""
        if self._llvm_ir is None:
            self._llvm_ir = str(lower(*self._lower_arguments).module)
        return self._llvm_ir

    @staticmethod
    def _result_shapes(schedule: Schedule) -> dict[int, tuple[int, ...]]:
        """Per buffer root, the shape of the first graph output stored in it: a result is
        allocated in that shape (no reshape)."""
        graph, shapes = schedule.graph, {}
        for j in graph.outputs:
            shapes.setdefault(schedule.root(j), graph.nodes[j].type.shape)
        return shapes

    text = llvm_ir  # the `lower` stage's dump

    @cached_property
    def asm(self) -> str:
        return target.assembly(self.llvm_ir)

    def _conform(self, k: int, arg, batch: int = 0) -> np.ndarray:
        """Argument k as a C-contiguous, aligned array of the compiled type (a symbolic
        program's at the call's batch size), or a TypeError."""
        dtype, shape, _ = self._inputs[k]
        array = np.asarray(arg)
        if array.dtype != dtype or array.shape != (self._shapes_at(batch)[k] if self.symbolic else shape):
            at = f" at batch size {batch}" if self.symbolic else ""
            raise TypeError(f"{self.name}: argument {k}: expected {self._input_types[k]}{at}, "
                            f"got {array.dtype}{list(array.shape)}")
        return np.require(array, requirements="CA")

    def batch_of(self, args) -> int:
        """A symbolic program's batch size in a call's arguments: the one all their batch axes
        give, within 1..max_batch; else a TypeError naming the argument."""
        batch, first = None, None
        for k, ((_, shape, _), arg) in enumerate(zip(self._inputs, args)):
            have = np.shape(arg)
            for axis, d in enumerate(shape):
                if not isinstance(d, Sym):
                    continue
                if len(have) != len(shape):
                    raise TypeError(f"{self.name}: argument {k}: expected {self._input_types[k]}, "
                                    f"got an array of shape {list(have)}")
                size, extra = divmod(have[axis], d.coef)
                if extra or size < 1:
                    raise TypeError(f"{self.name}: argument {k}: axis {axis} of {self._input_types[k]} is "
                                    f"{d} (a positive multiple of {d.coef}), got {have[axis]} in {list(have)}")
                if batch is None:
                    batch, first = size, k
                elif size != batch:
                    raise TypeError(f"{self.name}: argument {k}: batch size {size} ({list(have)}) disagrees "
                                    f"with argument {first}'s {batch}")
        if batch is None:
            raise TypeError(f"{self.name}: no argument has the batch axis: no batch size to run at")
        if self.max_batch is not None and batch > self.max_batch:
            raise TypeError(f"{self.name}: argument {first}: batch size {batch} is past max_batch {self.max_batch}")
        return batch

    def _shapes_at(self, batch: int) -> list[tuple[int, ...]]:
        """The input shapes at a batch size (the last ones asked for are kept)."""
        last = self._last_shapes  # one read: another thread may replace it
        if last[0] != batch:
            last = self._last_shapes = (batch, [substitute(shape, {"B": batch}) for _, shape, _ in self._inputs])
        return last[1]

    def _arguments(self, args, typed: bool = False) -> tuple[list[np.ndarray], list[int], int]:
        """The arrays the program runs on, their addresses and the batch size (0 if not
        symbolic): args, or copies of those that are not C-contiguous and aligned, or are
        donated but read-only or overlap another. typed: args are known C-contiguous arrays
        of the compiled types (Executable.accepts; a symbolic program checks shapes anyway)."""
        if len(args) != len(self._inputs):
            raise TypeError(f"{self.name}: expected {len(self._inputs)} arguments, got {len(args)}")
        batch = self.batch_of(args) if self.symbolic else 0
        shapes = self._shapes_at(batch) if self.symbolic else None
        arrays = list(args)  # referenced until the call returns
        addresses = []
        for k, (array, (dtype, shape, strides)) in enumerate(zip(args, self._inputs)):
            if shapes is not None:
                ok = type(array) is np.ndarray and array.dtype is dtype and array.shape == shapes[k] \
                    and array.flags.c_contiguous
            else:
                ok = typed or (type(array) is np.ndarray and array.dtype is dtype and array.shape == shape
                               and array.strides == strides)
            if not ok:
                array = arrays[k] = self._conform(k, array, batch)
            address = data_address(array)
            if address % dtype.itemsize:
                array = arrays[k] = self._conform(k, array.copy(), batch)
                address = data_address(array)
            addresses.append(address)
        if self._donated_inputs:
            # Every argument's size is fixed (at one batch size), so addresses found disjoint
            # last time still are.
            disjoint = (batch, addresses) == self._disjoint_addresses
            overlapping = () if disjoint else overlapping_arguments(arrays, addresses)
            if not overlapping and not disjoint:
                self._disjoint_addresses = (batch, addresses.copy())
            for k in self._donated_inputs:
                if k in overlapping or not arrays[k].flags.writeable:
                    arrays[k] = arrays[k].copy()
                    addresses[k] = data_address(arrays[k])
        return arrays, addresses, batch

    def __call__(self, *args) -> tuple[np.ndarray, ...]:
        return tuple(self.call(args, typed=False))

    def call(self, args, typed: bool = True) -> list[np.ndarray]:
        """Run on args (see _arguments for typed); the results are distinct, fresh arrays
        but for donated ones, which are the arguments' arrays."""
        arrays, addresses, batch = self._arguments(args, typed)
        outs = self._new_outputs(batch)
        addresses += [data_address(out) for out in outs]
        slots = self._slots
        with self._lock:
            entry = self._entry
            if self.symbolic:
                addresses.append(batch)
                self._grow_arena(batch)
                entry = self._entries[batch <= self.gil_batch]
            slots[1:] = addresses
            entry(slots)
            if self._may_fail:
                self._raise_errors(batch)
        return self._collect(arrays, outs, batch)

    def _grow_arena(self, batch: int) -> None:
        """A symbolic program's arena at least its size at `batch` (the caller holds the lock;
        bindings keep the arena they were packed with). Sizes do not shrink as B grows (no
        Affine of a plan has a negative slope), so an arena that held a larger B holds this one."""
        if batch <= self._arena_batch:
            return
        need = bytes_at(self.arena_bytes, batch)
        if need > self._arena.nbytes:
            self._arena = allocate_arena(need, "llvm", self.name)
            self._slots[0] = data_address(self._arena)
        self._arena_batch = batch

    def call_objects(self, args: tuple) -> list[np.ndarray] | None:
        """call(args) if every argument passes the native checks (fastcall.py: arrays of the
        compiled types, C-contiguous, aligned, donated ones writeable and apart), else None
        without running: then call() checks, copies or raises. A symbolic program reads the
        batch size from its first batch argument here and checks the arguments at that
        size natively (a call table per batch size)."""
        batch = 0
        if self.symbolic:
            batch = self._fast_batch(args)
            if not batch or not fastcall.available():
                return None
        else:
            calls = self._calls
            if calls is None:
                if not fastcall.available():
                    return None
                calls = self._calls = self._call_table()
        outs = self._new_outputs(batch)
        items = args + outs
        with self._lock:  # a table is made or rewritten under it: no other call reads it then
            if batch:
                calls = self._tables.get(batch) or self._size_table(batch)
                self._grow_arena(batch)
                self._slots[-1] = batch
            if calls.call(fastcall.items_address(items), calls.address):
                return None
            if self._may_fail:
                self._raise_errors(batch)
        return self._collect(args, outs, batch)

    def _raise_errors(self, batch: int) -> None:
        """The errors a run left (a collective's, a GEMM's too large at this batch size), raised."""
        if self._collectives:
            COLLECTIVES.raise_error()
        if self._gemm_error:
            raise_gemm_error(self._gemm_error, batch)

    def _fast_batch(self, args: tuple) -> int:
        """The batch size the first batch argument gives, if it is an ndarray and the size is in
        range; else 0 (the checked path says what is wrong). The native checks do the rest."""
        k, axis, coef = self._batch_axis
        array = args[k] if k < len(args) else None
        if type(array) is not np.ndarray or array.ndim <= axis:
            return 0
        return self._batch_range.size_of(array.shape[axis], coef)

    def _call_table(self, batch: int = 0) -> fastcall.CallTable:
        """The native checks' table (of a symbolic program: at one batch size)."""
        return fastcall.CallTable(self._table_items(batch), len(self._inputs), self._slots, self._jit.address(ENTRY),
                                  self._holds_gil_at(batch))

    def _size_table(self, batch: int) -> fastcall.CallTable:
        """A symbolic program's table at a batch size it keeps none for (under the lock): a new
        one while fewer than CALL_TABLES are kept, else the oldest rewritten for this size."""
        if len(self._tables) < CALL_TABLES:
            calls = self._call_table(batch)
        else:
            calls = self._tables.pop(next(iter(self._tables)))  # dicts keep insertion order
            calls.refill(self._table_items(batch), self._holds_gil_at(batch))
        self._tables[batch] = calls
        return calls

    def _table_items(self, batch: int) -> list:
        donated_inputs, at = set(self._donated_inputs), {"B": batch}
        return [(dtype, substitute(shape, at), k in donated_inputs) for k, (dtype, shape, _) in enumerate(self._inputs)] \
            + [(dtype, substitute(shape, at), False) for dtype, shape in self._outputs]

    def _holds_gil_at(self, batch: int) -> bool:
        return self.holds_gil or bool(batch) and batch <= self.gil_batch

    def kernel_cycles(self, reset: bool = False) -> tuple[list[int], int]:
        """Time-stamp-counter cycles spent in each kernel, and in the whole native entry, over
        the calls since the last reset (an executable built with profile=True)."""
        if self._cycles is None:
            raise ValueError(f"{self.name}: built without profile=True, it counts no cycles")
        *kernels, entry = self._cycles
        if reset:
            ctypes.memset(self._cycles, 0, ctypes.sizeof(self._cycles))
        return kernels, entry

    def bind(self, args) -> Binding:
        """The program tied to these arrays (docs/bind.md): the arguments are checked and the
        argument block packed once, so a run is the native call alone. Runs share the arena,
        and take the lock, with every other call of this executable (a program small enough
        to run holding the GIL needs no lock: the GIL keeps the others out)."""
        arrays, addresses, batch = self._arguments(args)
        outs = list(self._new_outputs(batch))
        with self._lock:
            if self.symbolic:
                self._grow_arena(batch)
            arena = self._arena  # kept alive by the binding, should a later call grow the arena
        block = (ctypes.c_void_p * len(self._slots))(
            data_address(arena), *addresses, *[data_address(out) for out in outs], *([batch] if self.symbolic else []))
        results, after = [], []
        for where, k, copy, shape in self._results:
            array = outs[k] if where == "out" else arrays[k]
            view = array if shape is None else array.reshape(substitute(shape, {"B": batch}))
            if copy:  # its own array, refreshed from the program's after every run
                after.append((view.copy(), view))
            results.append(after[-1][0] if copy else view)
        entry, lock, checked = self._entry, self._lock, self._may_fail
        if self.symbolic:
            entry = self._entries[batch <= self.gil_batch]
        if self.holds_gil:
            return Binding(functools.partial(entry, block), arrays, results, after, (self, block, outs, arena))

        def run():
            with lock:
                entry(block)
                if checked:
                    self._raise_errors(batch)

        return Binding(run, arrays, results, after, (self, block, outs, arena))


def _gil_batch(graph) -> int:
    """The largest batch size at which a symbolic program's FLOPs are within HOLD_GIL_MAX_FLOPS
    (0: none). They are a polynomial in B with no negative coefficient (linear, or B squared
    for a B x B product): the line through B = 1 and 2 is at or below them past 2, so where it
    reaches the limit is the answer if the FLOPs there are within it, else a bound to bisect below."""
    first = _flops_at(graph, 1)
    if first > HOLD_GIL_MAX_FLOPS:
        return 0
    slope = _flops_at(graph, 2) - first
    if slope <= 0:
        return 1 << 62
    low, high = 1, (HOLD_GIL_MAX_FLOPS - first) // slope + 1
    if _flops_at(graph, high) <= HOLD_GIL_MAX_FLOPS:
        return high
    while high - low > 1:  # FLOPs(low) within the limit, FLOPs(high) past it
        middle = (low + high) // 2
        low, high = (middle, high) if _flops_at(graph, middle) <= HOLD_GIL_MAX_FLOPS else (low, middle)
    return low


def _flops_at(graph, batch: int) -> int:
    """The FLOPs of a symbolic graph at a batch size, summed node by node over the types at
    that size (no graph is built), stopping once past HOLD_GIL_MAX_FLOPS."""
    at, total = {"B": batch}, 0
    for node in graph.nodes:
        attrs = {name: substitute(value, at) for name, value in node.attr_dict.items()}
        total += node.op.cost([substitute(graph.nodes[j].type, at) for j in node.inputs],
                              substitute(node.type, at), attrs).flops
        if total > HOLD_GIL_MAX_FLOPS:
            break
    return total


def _generated_result_code(outputs, results):
    """(new_outputs(batch) -> fresh output arrays, collect(args, outs, batch) -> the results),
    generated for one program: a call's per-result work is straight-line code, no loop over
    tuples. A result is an output array, or an argument (donated; or returned as it is:
    copied), reshaped where the graph's result has another shape than its buffer. A
    symbolic shape's sizes are expressions of the call's batch size."""
    namespace = {"empty": np.empty, **{f"d{k}": dtype for k, (dtype, _) in enumerate(outputs)}}
    new = "".join(f"empty({_shape_code(shape)}, d{k}), " for k, (_, shape) in enumerate(outputs))
    terms = []
    for where, k, copy, shape in results:
        term = f"{'outs' if where == 'out' else 'args'}[{k}]" + (".copy()" if copy else "")
        terms.append(term if shape is None else f"{term}.reshape({_shape_code(shape)})")
    source = (f"def new_outputs(batch):\n    return ({new})\n"
              f"def collect(args, outs, batch):\n    return [{', '.join(terms)}]\n")
    exec(compile(source, "<ffcompile.llvm results>", "exec"), namespace)
    return namespace["new_outputs"], namespace["collect"]


def _shape_code(shape) -> str:
    """A shape as Python source: a Sym's size is `coef * batch`."""
    return "(" + "".join(f"{d.coef} * batch, " if isinstance(d, Sym) else f"{d}, " for d in shape) + ")"


def build(schedule: Schedule, plan: MemoryPlan, donate: dict[int, int] | None = None,
          profile: bool = False) -> LLVMExecutable:
    """donate: result position -> argument position whose array may receive it (where safe)."""
    return LLVMExecutable(schedule, plan, LLVM.safe_donations(schedule, donate or {}), profile)


class LLVMBackend:
    """The default backend: the schedule as one native function (codegen/backend.py)."""

    name = "llvm"
    symbolic_batch = True  # one program for every batch size (codegen/backend.py)

    def lowers(self, op) -> bool:
        # Per-op tables, plus the ops a kernel kind handles whole: matmul (GEMM), constant
        # (source), reshape (a view, or a copy kernel), all_reduce (collective) and input (an argument).
        return (op in ELEMENTWISE_LOWERINGS or op in LAYOUT_LOWERINGS or op in REDUCTION_LOWERINGS
                or op in (O.Matmul, O.Constant, O.Reshape, O.AllReduce, O.Input))

    def kernel_scratch(self, schedule: Schedule, protected: frozenset[int]) -> dict[int, int]:
        # Kernels are fused loop nests; a GEMM that may write over an argument it still
        # reads (a donated parameter's update) computes its product in scratch.
        return gemm_scratch(schedule)

    def safe_donations(self, schedule: Schedule, donate) -> dict[int, int]:
        return fused_loop_donations(schedule, safe_donations(schedule, donate))

    def build(self, schedule: Schedule, plan: MemoryPlan, donated, profile: bool = False) -> LLVMExecutable:
        return LLVMExecutable(schedule, plan, donated, profile)

    def disk_cache(self) -> ObjectCache | None:
        return default_cache()

    def export(self, schedule: Schedule, plan: MemoryPlan, out_dir, name: str, input_names):
        from .export import export  # links with the system C compiler: loaded on use

        calibrate_schedule(schedule, plan.batch)
        return export(schedule, plan, out_dir, name, input_names)


LLVM = LLVMBackend()
