"""Lower a fused, memory-planned Schedule to one LLVM module with one entry point.

    void entry(i8** args)    args = [arena, input 0, ..., input n-1, output 0, ..., output m-1]

A symbolic program (types holding the batch size B: one program for every batch
size, #18) has one more slot, the last, holding B as an integer; its arena offsets
are Affines (`const + per_batch * B` bytes), and every function that touches a
B-dependent type takes a trailing `i64 batch` (cgutils.batch_size).

Every kernel becomes an internal function taking one `noalias` pointer per
distinct buffer it touches (a value and its views, or an input and the
output that takes over its storage in place, share one), so LLVM knows the
buffers do not overlap and vectorizes without runtime alias checks; the
entry calls the kernels in order, through parts of at most PART_CALLS calls
that compute the pointers (arena + planned offset, or an argument). Kernels with the same code (the layers of a deep
network) share one function. Output slots hold the kernel outputs that are
graph results (`NativeProgram.outputs`), written straight into the caller's
result arrays; a donated result (`donated`: its root -> an input position)
is written into that input's array instead; graph results that are inputs
are copied by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ...ir import TensorType
from ...ir import ops as O
from ...ir.symbolic import Affine, BatchRange, Envelope, broadcast_shapes, substitute, symbol_names
from ...passes.memory import MemoryPlan, aligned
from ...passes.schedule import KernelKind, Schedule
from .accumulate import match_accumulate
from .collective import WAIT, collective_slot, emit_all_reduce_start, emit_collective_call
from .blas import BLAS_FUNCTIONS, BLAS_ROUTES, FUSING_ROUTES, PACKED, RUNTIME, SKINNY, SMALL, GemmTooLarge, \
    blas_slot, blas_symbol, emit_gemm, gemm_route, runtime_takes_packed
from .cgutils import affine_value
from .elementwise import I8, I64, MEMORY_TYPES, Array, BodyEmitter, column_epilogue, constant, emit_map, scalar
from .layout import emit_constant, emit_copy, emit_layout
from .packed_gemm import default_block_sizes
from .reduction import emit_reduction
from .smallgemm_split import split_min_work

ENTRY = "entry"


@dataclass(frozen=True)
class NativeProgram:
    module: ir.Module
    input_types: tuple[TensorType, ...]
    outputs: tuple[int, ...]  # kernel outputs written into result arrays, in argument order
    arena_bytes: int | Envelope  # an Envelope for a symbolic program: its .at(B)
    blas: tuple[str, ...]  # BLAS functions the module calls (through blas_symbol globals)
    collectives: bool  # whether it calls collective.COLLECTIVE_SYMBOL
    batch: bool = False  # symbolic: the last argument slot holds the batch size


PROFILE = "ffc_profile"  # lower(profile=True): i64 cycles per kernel, then of the whole entry, summed over calls


@dataclass(frozen=True)
class Layout:
    """Where each buffer lives and what the program asks of its caller, known before any IR is
    built: lower() builds from it, the disk cache checks an entry's metadata against it."""

    outputs: tuple[int, ...]  # kernel outputs written into result arrays, in argument order
    source: dict[int, tuple[str, int | Affine]]  # buffer root -> ("arg", slot) or ("arena", offset)
    scratch: frozenset[int]  # GEMM anchors computed into scratch past the planned arena
    arena_bytes: int | Envelope
    blas: tuple[str, ...]  # BLAS functions the GEMMs call
    collectives: bool = False  # all_reduce kernels, which call back into the process's groups
    batch: bool = False  # a symbolic program: the batch size is its last argument slot

    def metadata(self) -> dict:
        """What the runtime needs besides the code (and a cache entry stores beside it)."""
        metadata = {"outputs": list(self.outputs), "arena_bytes": arena_json(self.arena_bytes),
                    "blas": list(self.blas)}
        if self.collectives:
            metadata["collectives"] = True
        if self.batch:
            metadata["batch"] = True
        return metadata


def arena_json(arena: int | Envelope) -> int | list[list[int]]:
    """An arena size as JSON (a cache entry's metadata): an int, or an Envelope's Affines as
    [const, per_batch] pairs."""
    return arena if isinstance(arena, int) else [[a.const, a.per_batch] for a in arena.parts]


def arena_from_json(value) -> int | Envelope:
    return value if isinstance(value, int) else Envelope(tuple(Affine(c, p) for c, p in value))


def is_symbolic(schedule: Schedule) -> bool:
    """Whether the schedule's types hold the batch size B: one program for every size."""
    return any(symbol_names(node.type) for node in schedule.graph.nodes)


def _past(arena: int | Envelope) -> int | Affine:
    """An aligned offset at or past the end of the arena at every batch size."""
    if isinstance(arena, int):
        return aligned(arena)
    return aligned(Affine(max((a.const for a in arena.parts), default=0),
                          max((a.per_batch for a in arena.parts), default=0)))


def _furthest(arena: int | Envelope, offset, nbytes) -> int | Envelope:
    """The arena grown to hold `nbytes` at `offset` (ints, or in a symbolic plan an Affine and a Sym)."""
    if isinstance(arena, int) and isinstance(offset, int) and isinstance(nbytes, int):
        return max(arena, offset + nbytes)
    parts = arena.parts if isinstance(arena, Envelope) else (Affine.of(arena),)
    return Envelope(parts + (Affine.of(offset) + nbytes,))


def layout(schedule: Schedule, plan: MemoryPlan, donated: dict[int, int] | None = None) -> Layout:
    """The program's buffers, arena size and BLAS calls; a GEMM the BLAS cannot take (a
    dimension past its 32-bit integers) raises GemmTooLarge here, naming the matmul."""
    graph = schedule.graph
    nodes = graph.nodes
    donated = donated or {}
    kernel_outputs = {v for kernel in schedule.kernels for v in kernel.outputs} - set(donated)
    outputs = tuple(dict.fromkeys(r for r in (schedule.root(j) for j in graph.outputs) if r in kernel_outputs))
    source: dict[int, tuple[str, int]] = {}
    for k, i in enumerate(graph.inputs):
        source[i] = ("arg", 1 + k)
    for root, k in donated.items():
        source[root] = ("arg", 1 + k)
    for k, v in enumerate(outputs):
        source[v] = ("arg", 1 + len(graph.inputs) + k)
    for buffer in plan.buffers:
        if buffer.offset is not None:
            source[buffer.value] = ("arena", buffer.offset)

    def same_storage(x: int, y: int) -> bool:
        where = source.get(schedule.root(x))
        return where is not None and where == source.get(schedule.root(y))

    # A GEMM whose result goes to a donated argument's array cannot write its product there
    # first (the epilogue still reads the argument): unless BLAS's beta does the epilogue
    # (accumulate.py), it gets the scratch the plan holds for it (LLVMBackend.kernel_scratch,
    # gemm_scratch), else, for a plan made without it, scratch past the planned arena.
    planned_scratch = {k: offset for k, offset, _ in plan.scratch}
    scratch, arena_bytes, scratch_anchors, blas = _past(plan.arena_bytes), plan.arena_bytes, set(), set()
    for k, kernel in enumerate(schedule.kernels):
        if kernel.kind != KernelKind.GEMM:
            continue
        if k in planned_scratch:
            source[kernel.anchor] = ("arena", planned_scratch[k])
            scratch_anchors.add(kernel.anchor)
        elif kernel.anchor not in kernel.outputs and kernel.body[-1] in donated and (
                match_accumulate(nodes, kernel, same_storage) is None):
            source[kernel.anchor] = ("arena", scratch)
            arena_bytes = _furthest(arena_bytes, scratch, nodes[kernel.anchor].type.nbytes)
            scratch_anchors.add(kernel.anchor)
        route = _gemm_route(nodes, kernel, plan.batch)
        if route in BLAS_ROUTES and not (route == RUNTIME and runtime_takes_packed(
                *gemm_dims(nodes, kernel), nodes[kernel.anchor].type.dtype, kernel.trans_a, kernel.trans_b,
                plan.batch.max_batch if plan.batch is not None else None)):
            blas.add(BLAS_FUNCTIONS[nodes[kernel.anchor].type.dtype])
    used = tuple(name for name in BLAS_FUNCTIONS.values() if name in blas)
    collectives = any(kernel.kind == KernelKind.COLLECTIVE for kernel in schedule.kernels)
    return Layout(outputs, source, frozenset(scratch_anchors), arena_bytes, used, collectives, is_symbolic(schedule))


def gemm_dims(nodes, kernel) -> tuple[int, int, int]:
    """(m, n, k) of a GEMM kernel's matmul: C (m x n) = op(A) (m x k) op(B)."""
    matmul = nodes[kernel.anchor]
    *_, m, n = matmul.type.shape
    return m, n, nodes[matmul.inputs[0]].type.shape[-1]


def gemm_routes(schedule: Schedule, batch: BatchRange | None = None) -> list[str]:
    """Each GEMM kernel's route, the packed GEMM's with its block sizes, smallgemm's with its
    split's chunk size: choices made by
    measurement (gemm_calibration.py), FFCOMPILE_GEMM_ROUTE and the host's caches, which
    the disk cache's key must hold. A symbolic product's run-time route adds the route of its
    shape at the reference batch size (blas.py runs blocks of that size by the packed GEMM)."""
    nodes, routes = schedule.graph.nodes, []
    for kernel in schedule.kernels:
        if kernel.kind == KernelKind.GEMM:
            route, dims = _gemm_route(nodes, kernel, batch), gemm_dims(nodes, kernel)
            packed = route == PACKED
            if symbol_names(dims):
                dims = substitute(dims, {"B": (batch or BatchRange()).reference})
                try:  # as blas._reference_blocks asks: a run-time product never takes smallgemm past its range
                    at = gemm_route(*dims, nodes[kernel.anchor].type.dtype, kernel.trans_a, kernel.trans_b,
                                    measured_small=False)
                except GemmTooLarge:
                    at = "-"
                route, packed = f"{route}@{at}", at == PACKED
            itemsize = nodes[kernel.anchor].type.np_dtype.itemsize
            blocks = default_block_sizes(*dims, itemsize) if packed else ""
            split = f"/{split_min_work()}" if route == SMALL else ""  # measured on the host
            routes.append(f"{route}{blocks}{split}")
    return routes


def _gemm_route(nodes, kernel, batch: BatchRange | None = None) -> str | None:
    """blas.gemm_route of a GEMM kernel's matmul, its error naming the matmul and its line (a
    symbolic one's sizes checked against BLAS's integers at the plan's max_batch)."""
    matmul = nodes[kernel.anchor]
    a, b = (nodes[j].type for j in matmul.inputs)
    m, n, k = gemm_dims(nodes, kernel)
    try:
        return gemm_route(m, n, k, matmul.type.dtype, kernel.trans_a, kernel.trans_b,
                          batch.max_batch if batch is not None else None)
    except GemmTooLarge as err:
        where = f" {matmul.loc}" if matmul.loc else ""
        raise GemmTooLarge(f"llvm backend: matmul %{kernel.anchor} {a} @ {b} -> {matmul.type}{where}: {err}") from None


def lower(schedule: Schedule, plan: MemoryPlan, donated: dict[int, int] | None = None,
          profile: bool = False) -> NativeProgram:
    graph = schedule.graph
    nodes = graph.nodes
    at = layout(schedule, plan, donated)
    source = at.source
    module = ir.Module(f"ffcompile.{graph.name}")
    entry = _Entry(module, len(graph.inputs), 1 + len(graph.inputs) + len(at.outputs) if at.batch else None)
    literals = set(schedule.literals)
    functions: dict[tuple, ir.Function] = {}  # one function per distinct kernel code
    counters = _CycleCounters(entry.b, len(schedule.kernels)) if profile else None
    in_flight: list[int] = []  # collective outputs not waited for yet, in start order
    for k, kernel in enumerate(schedule.kernels):
        b = entry.part_for(k)
        _wait_for(entry, in_flight, {schedule.root(j) for j in kernel.inputs}, nodes, source)
        if kernel.kind == KernelKind.COLLECTIVE:
            in_flight.append(kernel.body[-1])
        touched = [j for j in kernel.inputs if j not in literals] + list(kernel.outputs)
        if kernel.anchor in at.scratch:
            touched.append(kernel.anchor)
        sources = list(dict.fromkeys(source[schedule.root(v)] for v in touched))
        param_of = {v: sources.index(source[schedule.root(v)]) for v in touched}
        batch = at.batch and _uses_batch(nodes, kernel, touched, literals)
        key = _kernel_key(nodes, kernel, param_of, literals, batch)
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = _kernel_function(module, f"kernel{k}.{kernel.kind}", nodes, kernel,
                                                   param_of, len(sources), literals, batch, plan.batch)
        call_args = [entry.pointer(src) for src in sources] + ([entry.batch()] if batch else [])
        start = counters.now(b) if counters else None
        b.call(fn, call_args)
        if counters:
            counters.add(b, k, start)
    _wait_for(entry, in_flight, set(in_flight), nodes, source)  # results the program returns
    entry.finish()
    if counters:
        counters.add(entry.b, len(schedule.kernels), counters.entry_start)
    entry.b.ret_void()

    assert at.blas == tuple(name for name in BLAS_FUNCTIONS.values() if blas_symbol(name) in module.globals)
    # Every module gets the BLAS slots, used or not: they are its writable data, and
    # llvmlite's MCJIT memory manager reserves a read-write block only for a module that has
    # some, while RuntimeDyld puts there the GOT entries of the stubs for external calls
    # (the memset/memcpy LLVM makes of fill and copy loops): without one it aborts.
    for name in BLAS_FUNCTIONS.values():
        blas_slot(module, name)
    if at.collectives:
        collective_slot(module)
    return NativeProgram(module, graph.input_types, at.outputs, at.arena_bytes, at.blas, at.collectives, at.batch)


def _wait_for(entry: "_Entry", in_flight: list[int], reads: set[int], nodes, source) -> None:
    """Wait, in the current part, for the collectives in flight whose buffers are about to be read."""
    for v in [v for v in in_flight if v in reads]:
        in_flight.remove(v)
        pointer = entry.pointer(source[v])
        emit_collective_call(entry.part, WAIT, nodes[v].attr("group"),
                             Array(pointer, nodes[v].type))


# Kernel calls per part of the entry. LLVM's code generation is quadratic in the length of a
# function's one basic block: a 2,000-layer chain's 8,000 calls in the entry itself took
# 1.6 s to finalize, 4,000 layers 9.9 s; in parts, the time is linear in the parts.
PART_CALLS = 256


class _Entry:
    """`void entry(i8** args)`, calling the kernels through parts `entry.partN(args)`, each
    a noinline function making at most PART_CALLS kernel calls; a part computes the
    pointers (arena + offset, or an argument slot) it passes, once each. In a symbolic
    program (batch_slot: the argument slot of the batch size) the entry reads the batch
    size once and passes it to the parts, `entry.partN(args, i64 batch)`."""

    def __init__(self, module: ir.Module, inputs: int, batch_slot: int | None = None):
        self.module, self.inputs = module, inputs
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I8.as_pointer().as_pointer()]), ENTRY)
        fn.args[0].name = "args"
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.args = fn.args[0]
        self.batch_value = None
        self.type = fn.function_type
        if batch_slot is not None:
            slot = self.b.gep(self.args, [ir.Constant(I64, batch_slot)], inbounds=True)
            self.batch_value = self.b.ptrtoint(self.b.load(slot), I64, name="batch")
            self.type = ir.FunctionType(ir.VoidType(), [I8.as_pointer().as_pointer(), I64])
        self.part: ir.IRBuilder | None = None
        self.arena: ir.Value | None = None  # the current part's arena pointer
        self.pointers: dict[tuple[str, int], ir.Value] = {}  # and the pointers it computed

    def part_for(self, k: int) -> ir.IRBuilder:
        """The builder of the part that makes kernel call k (a new part every PART_CALLS)."""
        if k % PART_CALLS == 0:
            self.finish()
            fn = ir.Function(self.module, self.type, f"{ENTRY}.part{k // PART_CALLS}")
            fn.linkage = "internal"
            fn.attributes.add("noinline")  # inlined back, the entry would be one long block again
            fn.args[0].name = "args"
            if self.batch_value is not None:
                fn.args[1].name = "batch"
            self.part = ir.IRBuilder(fn.append_basic_block("entry"))
            self.pointers = {}
            self.arena = self.part.load(self.part.gep(fn.args[0], [ir.Constant(ir.IntType(64), 0)]), name="arena")
            self.b.call(fn, [self.args] + ([self.batch_value] if self.batch_value is not None else []))
        return self.part

    def batch(self) -> ir.Value:
        """The batch size, in the current part."""
        return self.part.function.args[1]

    def pointer(self, src: tuple[str, int]) -> ir.Value:
        """The pointer of an argument slot or arena offset, in the current part."""
        if src not in self.pointers:
            b, (kind, where) = self.part, src
            if kind == "arg":
                slot = b.gep(b.function.args[0], [ir.Constant(ir.IntType(64), where)], inbounds=True)
                role = f"in{where - 1}" if where <= self.inputs else f"out{where - 1 - self.inputs}"
                self.pointers[src] = b.load(slot, name=role)
            else:
                self.pointers[src] = b.gep(self.arena, [affine_value(b, where)], inbounds=True,
                                           name=f"arena.{where}".replace("*", "x").replace("+", "_"))
        return self.pointers[src]

    def finish(self) -> None:
        """Close the current part, if any."""
        if self.part is not None:
            self.part.ret_void()
            self.part = None


def gemm_scratch(schedule: Schedule) -> dict[int, int]:
    """kernel step -> bytes of the GEMM product buffer the kernel needs while it runs.

    A GEMM kernel writes its product into its result's storage and runs the epilogue in
    place, unless that storage may be an argument's array the kernel still reads (a donated
    parameter: Adam's update reads w, m and v after the product of its gradient exists).
    A GEMM kernel whose result is a graph result of the type of a graph input it reads (a
    possible donation) gets the scratch, used whether or not the call donates, so the
    program's arena is the plan's; unless, with its results written over the inputs of
    their type, BLAS's alpha and beta compute the epilogue (accumulate.py): then none."""
    nodes = schedule.graph.nodes
    inputs, results = set(schedule.graph.inputs), {schedule.root(j) for j in schedule.graph.outputs}
    needed = {}
    for k, kernel in enumerate(schedule.kernels):
        root = kernel.body[-1]
        if kernel.kind != KernelKind.GEMM or kernel.anchor in kernel.outputs or root not in results:
            continue
        read = {schedule.root(j) for j in kernel.inputs} & inputs
        pairs = {frozenset((o, a)) for o in kernel.outputs if o in results for a in read
                 if nodes[a].type == nodes[o].type}
        if not any(root in pair for pair in pairs):
            continue

        def may_share(x: int, y: int) -> bool:
            return frozenset((schedule.root(x), schedule.root(y))) in pairs

        if match_accumulate(nodes, kernel, may_share) is None:
            needed[k] = nodes[kernel.anchor].type.nbytes
    return needed


class _CycleCounters:
    """The PROFILE global: slot k sums the time-stamp-counter cycles of kernel k's calls, the
    last slot those of the whole entry (from here to its return)."""

    def __init__(self, b: ir.IRBuilder, kernels: int):
        i64 = ir.IntType(64)
        self.slots = ir.GlobalVariable(b.module, ir.ArrayType(i64, kernels + 1), PROFILE)
        self.slots.initializer = ir.Constant(self.slots.type.pointee, None)
        self.clock = b.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
        self.entry_start = self.now(b)

    def now(self, b: ir.IRBuilder) -> ir.Value:
        return b.call(self.clock, [])

    def add(self, b: ir.IRBuilder, slot: int, start: ir.Value) -> None:
        i64 = ir.IntType(64)
        at = b.gep(self.slots, [ir.Constant(i64, 0), ir.Constant(i64, slot)], inbounds=True)
        b.store(b.add(b.load(at), b.sub(self.now(b), start)), at)


def _uses_batch(nodes, kernel, touched, literals) -> bool:
    """Whether a kernel of a symbolic program reads the batch size: a type or attribute of its
    nodes, or a literal it reads, holds B. Then its function takes a trailing `i64 batch`."""
    return any(symbol_names(nodes[v].type) for v in (*kernel.body, *touched)) or any(
        symbol_names(nodes[j].attrs) for j in (*kernel.body, *(j for j in kernel.inputs if j in literals)))


def _kernel_key(nodes, kernel, param_of: dict[int, int], literals, batch: bool) -> tuple:
    """Everything a kernel's code depends on: its nodes (ops, attributes, types, operands as body
    positions, parameters or literal values), kind and flags, which parameter holds each
    value, and whether it takes the batch size. The layers of a deep network repeat it: their
    kernels share one function."""
    local = {v: k for k, v in enumerate(kernel.body)}

    def ref(j: int):
        if j in local:
            return "body", local[j]
        if j in literals:
            return "literal", nodes[j].attrs
        return "param", param_of[j], nodes[j].type

    body = tuple((nodes[i].op, nodes[i].attrs, nodes[i].type, tuple(ref(j) for j in nodes[i].inputs))
                 for i in kernel.body)
    stored = tuple(sorted((local[v], param_of[v]) for v in param_of if v in local))
    anchor = None if kernel.anchor is None else local[kernel.anchor]
    return (kernel.kind, anchor, kernel.trans_a, kernel.trans_b, body, stored,
            tuple(local[v] for v in kernel.outputs), len(set(param_of.values())), batch)


def _kernel_function(module: ir.Module, name: str, nodes, kernel, param_of: dict[int, int], count: int,
                     literals, batch: bool = False, batch_range: BatchRange | None = None) -> ir.Function:
    """`void kernel(i8* noalias p0, ...)`: one pointer per distinct buffer the kernel touches,
    then `i64 batch` if it reads the batch size (batch_range: the sizes a symbolic plan
    serves, which GEMM routes depend on). Not inlined: kept apart, each kernel is optimized
    alone, and O3 time stays linear in the number of kernels."""
    pointer = I8.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * count + [I64] * batch), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for k, arg in enumerate(fn.args[:count]):
        arg.add_attribute("noalias")
        arg.name = f"p{k}"
    if batch:
        fn.args[-1].name = "batch"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    arrays = {v: Array(b.bitcast(fn.args[p], MEMORY_TYPES[nodes[v].type.dtype].as_pointer()), nodes[v].type)
              for v, p in param_of.items()}
    scalars = {j: scalar(b, nodes[j].attr("value"), nodes[j].type.dtype) for j in kernel.inputs if j in literals}

    def same_storage(x: int, y: int) -> bool:
        return x in param_of and param_of.get(x) == param_of.get(y)

    _lower_kernel(BodyEmitter(b, nodes, arrays, scalars), kernel, same_storage, batch_range)
    b.ret_void()
    return fn


def _lower_kernel(emitter: BodyEmitter, kernel, same_storage, batch_range: BatchRange | None = None) -> None:
    b, nodes, arrays = emitter.b, emitter.nodes, emitter.arrays
    root = nodes[kernel.body[-1]]
    if kernel.kind == KernelKind.ELEMENTWISE or (kernel.kind == KernelKind.SOURCE and root.op is O.Iota):
        space = broadcast_shapes(*(nodes[i].type.shape for i in kernel.body))
        emit_map(emitter, kernel.body, space, kernel.outputs)
    elif kernel.kind == KernelKind.SOURCE:
        emit_constant(b, root, arrays[kernel.body[-1]])
    elif kernel.kind == KernelKind.REDUCTION:
        emit_reduction(emitter, kernel)
    elif kernel.kind == KernelKind.GEMM:
        _lower_gemm(emitter, kernel, same_storage, batch_range)
    elif kernel.kind == KernelKind.LAYOUT:
        emit_layout(b, root, arrays[kernel.body[-1]], [arrays[j] for j in root.inputs])
    elif kernel.kind == KernelKind.COPY:
        emit_copy(b, arrays[kernel.body[-1]], arrays[root.inputs[0]])
    elif kernel.kind == KernelKind.COLLECTIVE:
        emit_all_reduce_start(b, root, arrays[kernel.body[-1]], [arrays[j] for j in root.inputs])
    else:
        raise NotImplementedError(f"llvm backend: no lowering for {kernel.kind} kernels")


def _lower_gemm(emitter: BodyEmitter, kernel, same_storage, batch_range: BatchRange | None) -> None:
    """The GEMM writes into the matmul's buffer if it has one (an output, or scratch), else into
    the kernel root's, which the epilogue then overwrites in place (same type, read before
    written per element). An epilogue in accumulate form is the GEMM's alpha and beta; the rest
    of it (reading the accumulated result: momentum's `w - lr * v`) may be fused as any other."""
    b, nodes, arrays = emitter.b, emitter.nodes, emitter.arrays
    matmul = nodes[kernel.anchor]

    def operand(j: int, transposed: bool) -> Array:
        return arrays[nodes[j].inputs[0]] if transposed else arrays[j]

    def factor(scale: tuple[int | None, bool]) -> ir.Value:
        j, negated = scale
        value = constant(1.0, matmul.type.dtype) if j is None else emitter.operand(j, None, None)
        return b.fneg(value) if negated else value

    a = operand(matmul.inputs[0], kernel.trans_a)
    b_ = operand(matmul.inputs[1], kernel.trans_b)
    max_batch = batch_range.max_batch if batch_range is not None else None
    accumulate = match_accumulate(nodes, kernel, same_storage)
    epilogue, scale = kernel.epilogue, None
    if accumulate is not None:
        result = Array(arrays[accumulate.result].ptr, matmul.type)
        scale = (factor(accumulate.alpha), factor(accumulate.beta))
        epilogue = [i for i in epilogue if i not in accumulate.replaced]
    else:
        dest = kernel.anchor if kernel.anchor in arrays else kernel.body[-1]
        result = Array(arrays[dest].ptr, matmul.type)
        arrays.setdefault(kernel.anchor, result)
    outputs = [i for i in kernel.outputs if i in epilogue]
    if epilogue and _fuses_epilogue(nodes, kernel, epilogue, same_storage, batch_range, scaled=scale is not None):
        fused = column_epilogue(emitter, epilogue, matmul.type.shape, outputs)
        emit_gemm(b, a, b_, result, kernel.trans_a, kernel.trans_b, scale, epilogue=fused, max_batch=max_batch)
        return
    emit_gemm(b, a, b_, result, kernel.trans_a, kernel.trans_b, scale, max_batch=max_batch)
    if epilogue:
        emit_map(emitter, epilogue, matmul.type.shape, outputs)


def _fuses_epilogue(nodes, kernel, epilogue, same_storage, batch_range: BatchRange | None = None,
                    scaled: bool = False) -> bool:
    """Whether the epilogue runs inside the GEMM's function, per chunk of columns (a 2-D skinny
    product, skinny.py, or a run-time route's: runtime_gemm.py), per chunk of panels or rows (a
    fixed-size smallgemm one, smallgemm_split.py) or per block of C (a 2-D packed one,
    packed_gemm.py), when it writes over neither operand (a chunk still reading an operand
    would see another chunk's results). After an accumulate-form product (scaled: alpha, beta),
    only on the skinny, smallgemm and packed routes, whose kernels fuse both."""
    matmul = nodes[kernel.anchor]
    fusing = (SKINNY, PACKED, SMALL) if scaled else (*FUSING_ROUTES, PACKED, SMALL)
    if matmul.type.rank != 2 or _gemm_route(nodes, kernel, batch_range) not in fusing:
        return False
    transposed = (kernel.trans_a, kernel.trans_b)
    operands = [nodes[j].inputs[0] if t else j for j, t in zip(matmul.inputs, transposed)]
    return not any(same_storage(o, j) for o in kernel.outputs if o in epilogue for j in operands)
