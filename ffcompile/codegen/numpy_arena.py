"""NumPy backend over the fused, memory-planned Schedule: one arena, `out=` everywhere.

NumPy runs a fused kernel node by node, so a kernel's temporaries need
storage too. `assign_storage` gives each body node a place: a kernel output
its planned buffer (or the caller's result array); an internal value the
storage of the single consumer it feeds (a chain like matmul -> add -> tanh
runs in the output buffer itself) or a scratch slot of the kernel, reused as
values die. The kernels' scratch bytes enter the memory plan, so the arena
allocated once at build time is everything a call uses besides its inputs
and results: the planned peak is the measured one.

The generated source reads like the schedule (a comment per kernel, one
statement per node) and every buffer view is made once, at build time.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..ir import Graph, Node
from ..ir import ops as O
from ..ir.collectives import Pending
from ..ir.types import DTYPES
from ..passes.memory import MemoryPlan, aligned, plan_memory
from ..passes.schedule import KernelKind, Schedule
from .arena import allocate_arena
from .arguments import Binding, bind_python, overlapping_arguments

# Elements of NumPy's ufunc iterator buffer while a program runs (np.setbufsize). A ufunc
# that broadcasts an operand (a bias) allocates the buffer outside the arena: 8192 elements
# per operand by default (66640 B for an f64 add), 16 here, so a call allocates no data
# beyond its results (tests/test_numpy_arena.py); it is also faster (128x512 f64 bias add:
# 78 -> 13 us).
UFUNC_BUFFER = 16
# Ops whose value NumPy can express as a view of their operand: inside a kernel
# they take no storage unless they are the kernel's output.
_VIEW_EXPRESSIONS = (O.Broadcast, O.Transpose, O.Reshape, O.StopGradient)
# Sources evaluated once at build time; a kernel reads the precomputed array.
_BUILD_TIME = (O.Iota, O.Constant)

def _ufunc(fn: str):
    return lambda node, args, out: f"{fn}({', '.join(args)}, out={out})"


def _reduce(fn: str):
    def lower(node, args, out):
        axes, keep = node.attr("axes"), node.attr("keepdims")
        return f"{fn}({args[0]}, axis={axes!r}, keepdims={keep}, out={out})"
    return lower


def _copy_of(expr: Callable[[Node, list[str]], str]):
    return lambda node, args, out: f"np.copyto({out}, {expr(node, args)})"


def _slice_expr(node, args):
    parts = [f"{a}:{b}" + (f":{s}" if s != 1 else "")
             for a, b, s in zip(node.attr("starts"), node.attr("stops"), node.attr("steps"))]
    return f"{args[0]}[{', '.join(parts) or '()'}]"


def _view_expr(node: Node, args: list[str]) -> str:
    if node.op is O.Broadcast:
        return f"np.broadcast_to({args[0]}, {node.type.shape!r})"
    if node.op is O.Transpose:
        return f"np.transpose({args[0]}, {node.attr('perm')!r})"
    if node.op is O.Reshape:
        return f"np.reshape({args[0]}, {node.type.shape!r})"
    return args[0]  # stop_gradient


def _select(node, args, out):
    # `out` never holds `a` (assign_storage guarantees it), so writing b first is safe.
    p, a, b = args
    return f"np.copyto({out}, {b}); np.copyto({out}, {a}, where={p})"


def _scalar(value, dtype: str) -> str:
    """A typed NumPy scalar as source: np.float32(0.5), np.float64(float('inf'))."""
    name = "bool_" if dtype == "bool" else DTYPES[dtype].name
    text = repr(value) if not isinstance(value, float) or math.isfinite(value) else f"float({str(value)!r})"
    return f"np.{name}({text})"


# The ops whose lowering is not their NumPy function called with `out=`.
IRREGULAR_LOWERINGS: dict[type, Callable[[Node, list[str], str], str]] = {
    O.Pow: lambda n, a, out: f"np.power({a[0]}, {_scalar(n.attr('exponent'), n.type.dtype)}, out={out})",
    O.Convert: lambda n, a, out: f"np.copyto({out}, {a[0]}, casting='unsafe')",
    O.Select: _select,
    O.ReduceSum: _reduce("np.sum"),
    O.ReduceMax: _reduce("np.max"),
    O.Matmul: _ufunc("np.matmul"),
    O.Concat: lambda n, a, out: f"np.concatenate(({', '.join(a)},), axis={n.attr('axis')}, out={out})",
    O.Slice: _copy_of(_slice_expr),
    O.Pad: lambda n, a, out: f"_pad_into({out}, {a[0]}, {n.attr('config')!r})",
    O.Broadcast: _copy_of(_view_expr),
    O.Transpose: _copy_of(_view_expr),
    O.Reshape: _copy_of(_view_expr),
    O.StopGradient: _copy_of(_view_expr),
    # sources: the emitter passes the array precomputed at build time as the operand
    O.Iota: lambda n, a, out: f"np.copyto({out}, {a[0]})",
    O.Constant: lambda n, a, out: f"np.copyto({out}, {a[0]})",
    # started here, waited for before the first kernel reading out (_Emitter.collective_waits)
    O.AllReduce: lambda n, a, out: f"{out}_pending = _all_reduce_start({n.attr('group')}, {out}, ({', '.join(a)},))",
    O.Threefry2x32: lambda n, a, out: f"np.copyto({out}, _threefry2x32({n.attr('output')!r}, {', '.join(a)}))",
}


def out_lowering(op) -> Callable[[Node, list[str], str], str] | None:
    """How the arena program computes op into `out`: an irregular rule, or, for an
    elementwise op whose reference is its `numpy_fn` ufunc, that ufunc with `out=`."""
    if op in IRREGULAR_LOWERINGS:
        return IRREGULAR_LOWERINGS[op]
    fn = getattr(op, "numpy_fn", None)
    if not isinstance(fn, np.ufunc) or op.reference.__func__ not in _UFUNC_REFERENCES:
        return None
    return _ufunc(_ufunc_name(fn))


def _ufunc_name(fn: np.ufunc) -> str:
    """np.exp for NumPy's own ufuncs; others (scipy.special.erf) by their name in _RUNTIME."""
    return f"np.{fn.__name__}" if getattr(np, fn.__name__, None) is fn else f"_{fn.__name__}"


_UFUNC_REFERENCES = (O.Unary.reference.__func__, O.Binary.reference.__func__)


def _pad_into(out, x, config):
    out.fill(0)
    np.copyto(out[O.Pad.index(config, x.shape)], x)


def _threefry2x32(output, *words):
    return O.Threefry2x32.reference({"output": output}, *words)


def _all_reduce_start(gid: int, out: np.ndarray, xs) -> Pending:
    start = 0
    for x in xs:
        out[start:start + x.size] = x.reshape(-1)
        start += x.size
    return Pending(gid, out)


# What the generated source calls by name.
_RUNTIME: dict[str, object] = {"np": np, "_pad_into": _pad_into, "_threefry2x32": _threefry2x32,
                               "_all_reduce_start": _all_reduce_start, **{
    _ufunc_name(op.numpy_fn): op.numpy_fn for op in O.OPS.values()
    if isinstance(getattr(op, "numpy_fn", None), np.ufunc)}}


# --------------------------------------------------------------------------- storage


@dataclass
class Storage:
    """Where each value of the program lives."""

    owner: dict[int, int] = field(default_factory=dict)  # value -> value whose storage it shares
    slots: dict[int, int] = field(default_factory=dict)  # internal value -> byte offset in its kernel's scratch
    scratch: dict[int, int] = field(default_factory=dict)  # kernel step -> scratch bytes

    def root(self, value: int) -> int:
        while value in self.owner:
            value = self.owner[value]
        return value


def _is_view_expression(node: Node, kernel_outputs: set[int], i: int, users: list[int], nodes) -> bool:
    """A view stays a view only where layout cannot change a result: read by
    elementwise ops, or a transpose read by GEMMs NumPy hands to BLAS's gemm
    with a transpose flag, past OpenBLAS's small-matrix kernels. The reference holds
    every value C-contiguous, and NumPy's reductions and its other matmul kernels
    round by layout."""
    if node.op not in _VIEW_EXPRESSIONS or i in kernel_outputs:
        return False
    if node.op is O.Transpose and all(_gemm_reads_as_flag(nodes, u, i) for u in users):
        return True
    return all(O.ELEMENTWISE in nodes[u].op.traits for u in users)


# m * n * k up to which OpenBLAS's AVX-512 (SkylakeX) builds may run a product by their small-matrix
# kernels (its sgemm/dgemm_small_kernel_permit: 100^3), which sum a transposed operand otherwise than
# its copy: on a Xeon, 40% of a grid of such products of a transposed view were 1 ulp off the
# product of the copy (digits' f64 weight gradient (128 x 64) @ (64 x 10) among them), none above.
OPENBLAS_SMALL_KERNEL_MAX_WORK = 100 ** 3


def _gemm_reads_as_flag(nodes, user: int, i: int) -> bool:
    """Whether np.matmul takes transpose i as gemm's flag, the same sums as over its copy.
    Not where a side of the product is a vector (NumPy calls gemv or dot: a (1, 3) row by a
    transposed (3, 3) view is 1 ulp off the product by its copy), nor where the other side
    is the transpose's own buffer (X @ X.T: NumPy calls syrk), nor in the range of OpenBLAS's
    small-matrix kernels."""
    node = nodes[user]
    if node.op is not O.Matmul or 1 in node.type.shape[-2:]:
        return False
    m, n = node.type.shape[-2:]
    k = nodes[node.inputs[0]].type.shape[-1]
    if not all(isinstance(d, int) for d in (m, n, k)) or m * n * k <= OPENBLAS_SMALL_KERNEL_MAX_WORK:
        return False
    other = [j for j in node.inputs if j != i]
    return len(other) == 1 and _view_root(nodes, nodes[i].inputs[0]) != _view_root(nodes, other[0])


def _view_root(nodes, j: int) -> int:
    """The value whose buffer value j views (j itself if it is no view expression)."""
    while nodes[j].op in _VIEW_EXPRESSIONS:
        j = nodes[j].inputs[0]
    return j


def assign_storage(schedule: Schedule, protected) -> Storage:
    """Storage for every body node. protected: buffers that share memory with a value
    still being read (in-place reuse, donation), so no temporary may be written there."""
    graph = schedule.graph
    nodes, users = graph.nodes, graph.users()
    storage = Storage()
    for k, kernel in enumerate(schedule.kernels):
        outputs = set(kernel.outputs)
        body = [i for i in kernel.body if not _is_view_expression(nodes[i], outputs, i, users[i], nodes)
                and not (nodes[i].op in _BUILD_TIME and i not in outputs)]
        position = {i: p for p, i in enumerate(body)}
        # A view expression left out of the body reads its source's storage wherever the
        # view is read: its readers are its source's readers (else the source's slot is
        # freed, and overwritten, while the view is still read).
        viewed = {i: nodes[i].inputs[0] for i in kernel.body if i not in position and nodes[i].op in _VIEW_EXPRESSIONS}

        def source(j: int) -> int:
            while j in viewed:
                j = viewed[j]
            return storage.root(j)

        # A single-use internal value may live in its consumer's storage: the consumer
        # (elementwise, same type) reads each element before writing it back.
        for i in reversed(body):
            if i in outputs or len(users[i]) != 1:
                continue
            consumer = users[i][0]
            node = nodes[consumer]
            if (consumer in position and nodes[i].type == node.type
                    and O.ELEMENTWISE in node.op.traits and node.op is not O.Broadcast
                    and not (node.op is O.Select and node.inputs.index(i) < 2)
                    and storage.root(consumer) not in protected
                    and not any(storage.root(j) == storage.root(consumer) for j in node.inputs if j != i)):
                storage.owner[i] = consumer
        # The rest take scratch slots. A slot is taken where the first value stored
        # in it is computed (a chain's first member) and freed after its last read.
        last_use = {}
        for p, i in enumerate(body):
            for j in nodes[i].inputs:
                last_use[source(j)] = p
        free: dict[int, list[int]] = {}
        end = 0
        for p, i in enumerate(body):
            r = storage.root(i)
            if r not in outputs and r not in storage.slots:
                size = aligned(nodes[r].type.nbytes)
                if free.get(size):
                    storage.slots[r] = free[size].pop()
                else:
                    storage.slots[r], end = end, end + size
            for j in set(nodes[i].inputs):
                rj = source(j)
                if rj in storage.slots and rj in position and last_use.get(rj) == p:
                    free.setdefault(aligned(nodes[rj].type.nbytes), []).append(storage.slots[rj])
        if end:
            storage.scratch[k] = end
    return storage


# --------------------------------------------------------------------------- code generation


@dataclass
class ArenaProgram:
    """The NumPy backend's Program (codegen/backend.py): the schedule as generated Python."""

    plan: MemoryPlan
    source: str
    arena: np.ndarray
    run: Callable  # run(*inputs) -> list of result arrays
    donated: dict[int, int] = field(default_factory=dict)  # result -> the argument array it is written to
    out_types: tuple = ()

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes

    @property
    def text(self) -> str:
        return self.source

    def call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.run(*arrays)

    def bind(self, arrays: list[np.ndarray]) -> Binding:
        return bind_python(self.run, arrays, self.out_types)


def kernel_scratch(schedule: Schedule, protected: frozenset[int]) -> dict[int, int]:
    """Kernel step -> bytes of the temporaries NumPy needs to run it node by node."""
    return assign_storage(schedule, protected | donatable_results(schedule)).scratch


def donatable_results(schedule: Schedule) -> frozenset[int]:
    """Results that a call may write over an argument their kernel still reads (one of their
    type: see safe_donations). They are protected whether or not a call donates, so the
    plan, and the arena remat measures, is the same with and without donation."""
    graph = schedule.graph
    inputs = set(graph.inputs)
    donatable = set()
    for j in graph.outputs:
        root = schedule.root(j)
        if root in schedule.producer:
            kernel = schedule.kernels[schedule.producer[root]]
            if any(schedule.root(i) in inputs and graph.nodes[schedule.root(i)].type == graph.nodes[root].type
                   for i in kernel.inputs):
                donatable.add(root)
    return frozenset(donatable)


def protected_values(plan: MemoryPlan, donated_roots) -> frozenset[int]:
    """Values whose storage is shared with another value's: written in place over a
    dying input, or over a donated (or donatable) argument."""
    return (frozenset(b.value for b in plan.buffers if b.reuses is not None) | frozenset(donated_roots)
            | donatable_results(plan.schedule))


def build_program(schedule: Schedule, plan: MemoryPlan | None = None,
                  donated: dict[int, int] | None = None) -> ArenaProgram:
    """The program of schedule over the arena of plan (planned here if not given).
    donated: result position -> argument position it is written over (already safe)."""
    donated = donated or {}
    roots = frozenset(schedule.root(schedule.graph.outputs[k]) for k in donated)
    if plan is None:
        plan = plan_memory(schedule, lambda protected: kernel_scratch(schedule, protected), roots)
    storage = assign_storage(schedule, protected_values(plan, roots))
    return _Emitter(schedule, plan, storage, donated).build()


class _Emitter:
    def __init__(self, schedule: Schedule, plan: MemoryPlan, storage: Storage, donated: dict[int, int]):
        self.schedule, self.plan, self.storage = schedule, plan, storage
        self.donated = donated
        self.graph: Graph = schedule.graph
        self.nodes = self.graph.nodes
        self.users = self.graph.users()
        self.arena = allocate_arena(plan.arena_bytes, "numpy", self.graph.name)
        self.globals: dict[str, object] = dict(_RUNTIME)
        self.names: dict[int, str] = {}
        self.offsets = {b.value: b.offset for b in plan.buffers if b.offset is not None}
        self.scratch_offset = {k: off for k, off, _ in plan.scratch}
        self.output_index = {}
        for position, j in enumerate(self.graph.outputs):  # results a kernel writes directly
            if schedule.root(j) in schedule.producer:
                self.output_index.setdefault(schedule.root(j), (position, j))

    def view(self, offset: int, node: Node):
        t = node.type
        return self.arena[offset:offset + t.nbytes].view(t.np_dtype).reshape(t.shape)

    def name(self, i: int) -> str:
        return self.names[i]

    def build(self) -> ArenaProgram:
        graph, nodes = self.graph, self.nodes
        params = [f"v{i}" for i in graph.inputs]
        outs = [f"out{k}" for k in range(len(graph.outputs))]
        lines = [f"def program({', '.join(params + outs)}):"]
        for i in graph.inputs:
            self.names[i] = f"v{i}"
        for i in self.schedule.literals:
            self.names[i] = f"c{i}"
            self.globals[f"c{i}"] = nodes[i].op.reference(nodes[i].attr_dict)
        for root, (position, j) in self.output_index.items():
            if nodes[j].type.shape == nodes[root].type.shape:
                self.names[root] = f"out{position}"
            else:
                self.names[root] = f"r{root}"
                lines.append(f"    r{root} = out{position}.reshape({nodes[root].type.shape!r})")
        lines += self.view_lines(set(graph.inputs) | set(self.schedule.literals))
        in_flight: list[int] = []  # collective outputs not yet waited for
        for k, kernel in enumerate(self.schedule.kernels):
            lines += self.collective_waits(in_flight, {self.schedule.root(j) for j in kernel.inputs})
            lines.append(f"    # kernel {k} {kernel.header}")
            lines += self.kernel_lines(k, kernel)
            lines += self.view_lines(set(kernel.outputs))
            if kernel.kind == KernelKind.COLLECTIVE:
                in_flight.append(kernel.body[-1])
        lines += self.collective_waits(in_flight, set(in_flight))
        lines += self.result_copies()
        if len(lines) == 1 or lines[-1].startswith("    #"):
            lines.append("    pass")
        source = "\n".join(lines) + "\n"
        namespace = self.globals
        exec(compile(source, f"<ffcompile arena {graph.name}>", "exec"), namespace)
        program = namespace["program"]
        out_types = [nodes[j].type for j in graph.outputs]
        lock = threading.Lock()  # one arena per program: calls run one at a time

        donated = self.donated

        def run(*arrays):
            # A donated array that shares memory with another argument is not written over.
            shared = overlapping_arguments(arrays) if donated else ()
            results = [arrays[donated[k]] if k in donated and donated[k] not in shared
                       else np.empty(t.shape, t.np_dtype) for k, t in enumerate(out_types)]
            with lock:
                bufsize = np.setbufsize(UFUNC_BUFFER)
                try:
                    program(*arrays, *results)
                finally:
                    np.setbufsize(bufsize)
            return results

        return ArenaProgram(self.plan, source, self.arena, run, dict(donated), tuple(out_types))

    def collective_waits(self, in_flight: list[int], reads: set[int]) -> list[str]:
        """Wait for the collectives in flight whose buffers are about to be read (in start order)."""
        done = [i for i in in_flight if i in reads]
        for i in done:
            in_flight.remove(i)
        return [f"    {self.name(i)}_pending.wait()" for i in done]

    def storage_name(self, i: int, k: int) -> str:
        """Name of the storage value i (computed in kernel k) is written to."""
        root = self.storage.root(i)
        if i != root:
            base = self.storage_name(root, k)
            self.names.setdefault(i, base)
            return base
        if i in self.names:
            return self.names[i]
        if i in self.offsets:
            offset = self.offsets[i]
            prefix = "b"
        else:
            offset = self.scratch_offset.get(k, 0) + self.storage.slots[i]  # no entry: 0 bytes
            prefix = "s"
        self.names[i] = f"{prefix}{i}"
        self.globals[f"{prefix}{i}"] = self.view(offset, self.nodes[i])
        return self.names[i]

    def kernel_lines(self, k: int, kernel) -> list[str]:
        lines = []
        outputs = set(kernel.outputs)
        users = self.users
        for i in kernel.body:
            node = self.nodes[i]
            args = [self.name(j) for j in node.inputs]
            comment = f"  # {node.type}" + (f" {node.loc}" if node.loc else "")
            if node.op in _BUILD_TIME:
                self.globals[f"k{i}"] = node.op.reference(node.attr_dict)
                args = [f"k{i}"]
                if i not in outputs:
                    self.names[i] = f"k{i}"
                    continue
            if _is_view_expression(node, outputs, i, users[i], self.nodes):
                self.names[i] = f"t{i}"
                lines.append(f"    t{i} = {_view_expr(node, args)}{comment}")
                continue
            lowering = out_lowering(node.op)
            if lowering is None:
                raise NotImplementedError(f"numpy arena backend: no lowering for op {node.op.name!r}")
            lines.append(f"    {lowering(node, args, self.storage_name(i, k))}{comment}")
        return lines

    def view_lines(self, roots: set[int]) -> list[str]:
        """Name the schedule's views (reshape/stop_gradient) of the values in roots."""
        lines = []
        for v in self.schedule.views:
            if v in self.names or self.schedule.root(v) not in roots:
                continue
            self.names[v] = f"w{v}"
            lines.append(f"    w{v} = {self.name(self.nodes[v].inputs[0])}.reshape({self.nodes[v].type.shape!r})")
        return lines

    def result_copies(self) -> list[str]:
        """Results no kernel wrote into their array: inputs, literals, a value returned twice."""
        lines = []
        for position, j in enumerate(self.graph.outputs):
            root = self.schedule.root(j)
            if self.output_index.get(root, (None,))[0] == position:
                continue
            lines.append(f"    np.copyto(out{position}, np.reshape({self.name(j)}, "
                         f"{self.nodes[j].type.shape!r}))")
        return lines
