"""Lower a fused, memory-planned Schedule to one LLVM module with one entry point.

    void entry(i8** args)    args = [arena, input 0, ..., input n-1, output 0, ..., output m-1]

Every kernel becomes an internal function taking one `noalias` pointer per
distinct buffer it touches (a value and its views, or an input and the
output that takes over its storage in place, share one), so LLVM knows the
buffers do not overlap and vectorizes without runtime alias checks; the
entry computes the pointers (arena + planned offset, or an argument) and
calls the kernels in order. Kernels with the same code (the layers of a deep
network) share one function. Output slots hold the kernel outputs that are
graph results (`NativeProgram.outputs`), written straight into the caller's
result arrays; a donated result (`donated`: its root -> an input position)
is written into that input's array instead; graph results that are inputs
are copied by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ...ir import TensorType
from ...ir import ops as O
from ...passes.memory import MemoryPlan, aligned
from ...passes.schedule import KernelKind, Schedule
from .accumulate import match_accumulate
from .blas import BLAS_FUNCTIONS, blas_slot, blas_symbol, emit_gemm
from .elementwise import I8, MEMORY_TYPES, Array, BodyEmitter, constant, emit_map
from .layout import emit_constant, emit_copy, emit_layout
from .reduction import emit_reduction

ENTRY = "entry"


@dataclass(frozen=True)
class NativeProgram:
    module: ir.Module
    input_types: tuple[TensorType, ...]
    outputs: tuple[int, ...]  # kernel outputs written into result arrays, in argument order
    arena_bytes: int
    blas: tuple[str, ...]  # BLAS functions the module calls (through blas_symbol globals)


PROFILE = "ffc_profile"  # lower(profile=True): i64 cycles per kernel, then of the whole entry, summed over calls


def lower(schedule: Schedule, plan: MemoryPlan, donated: dict[int, int] | None = None,
          profile: bool = False) -> NativeProgram:
    graph = schedule.graph
    nodes = graph.nodes
    donated = donated or {}
    kernel_outputs = {v for kernel in schedule.kernels for v in kernel.outputs} - set(donated)
    outputs = tuple(dict.fromkeys(r for r in (schedule.root(j) for j in graph.outputs) if r in kernel_outputs))
    source: dict[int, tuple[str, int]] = {}  # buffer root -> (argument slot | arena offset)
    for k, i in enumerate(graph.inputs):
        source[i] = ("arg", 1 + k)
    for root, k in donated.items():
        source[root] = ("arg", 1 + k)
    for k, v in enumerate(outputs):
        source[v] = ("arg", 1 + len(graph.inputs) + k)
    for buffer in plan.buffers:
        if buffer.offset is not None:
            source[buffer.value] = ("arena", buffer.offset)

    module = ir.Module(f"ffcompile.{graph.name}")
    pointer = I8.as_pointer()
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer.as_pointer()]), ENTRY)
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    args = entry.args[0]
    args.name = "args"
    arena = b.load(b.gep(args, [ir.Constant(ir.IntType(64), 0)]), name="arena")
    pointers: dict[tuple[str, int], ir.Value] = {}

    def pointer_of(src: tuple[str, int]) -> ir.Value:
        if src not in pointers:
            kind, where = src
            if kind == "arg":
                slot = b.gep(args, [ir.Constant(ir.IntType(64), where)], inbounds=True)
                role = f"in{where - 1}" if where <= len(graph.inputs) else f"out{where - 1 - len(graph.inputs)}"
                pointers[src] = b.load(slot, name=role)
            else:
                pointers[src] = b.gep(arena, [ir.Constant(ir.IntType(64), where)], inbounds=True,
                                      name=f"arena.{where}")
        return pointers[src]

    def same_storage(x: int, y: int) -> bool:
        where = source.get(schedule.root(x))
        return where is not None and where == source.get(schedule.root(y))

    literals = set(schedule.literals)
    # A GEMM whose result goes to a donated argument's array cannot write its product there
    # first (the epilogue still reads the argument): unless BLAS's beta does the epilogue
    # (accumulate.py), it gets scratch past the planned arena.
    scratch, arena_bytes = aligned(plan.arena_bytes), plan.arena_bytes
    functions: dict[tuple, ir.Function] = {}  # one function per distinct kernel code
    counters = _CycleCounters(b, len(schedule.kernels)) if profile else None
    for k, kernel in enumerate(schedule.kernels):
        touched = [j for j in kernel.inputs if j not in literals] + list(kernel.outputs)
        if kernel.kind == KernelKind.GEMM and kernel.anchor not in kernel.outputs and kernel.body[-1] in donated and (
                match_accumulate(nodes, kernel, same_storage) is None):
            source[kernel.anchor] = ("arena", scratch)
            arena_bytes = max(arena_bytes, scratch + nodes[kernel.anchor].type.nbytes)
            touched.append(kernel.anchor)
        sources = list(dict.fromkeys(source[schedule.root(v)] for v in touched))
        param_of = {v: sources.index(source[schedule.root(v)]) for v in touched}
        key = _kernel_key(nodes, kernel, param_of, literals)
        fn = functions.get(key)
        if fn is None:
            fn = functions[key] = _kernel_function(module, f"kernel{k}.{kernel.kind}", nodes, kernel,
                                                   param_of, len(sources), literals)
        call_args = [pointer_of(src) for src in sources]
        start = counters.now() if counters else None
        b.call(fn, call_args)
        if counters:
            counters.add(k, start)
    if counters:
        counters.add(len(schedule.kernels), counters.entry_start)
    b.ret_void()

    used = tuple(name for name in BLAS_FUNCTIONS.values() if blas_symbol(name) in module.globals)
    # Every module gets the BLAS slots, used or not: they are its writable data, and
    # llvmlite's MCJIT memory manager reserves a read-write block only for a module that has
    # some, while RuntimeDyld puts there the GOT entries of the stubs for external calls
    # (the memset/memcpy LLVM makes of fill and copy loops): without one it aborts.
    for name in BLAS_FUNCTIONS.values():
        blas_slot(module, name)
    return NativeProgram(module, graph.input_types, outputs, arena_bytes, used)


class _CycleCounters:
    """The PROFILE global: slot k sums the time-stamp-counter cycles of kernel k's calls, the
    last slot those of the whole entry (from here to its return)."""

    def __init__(self, b: ir.IRBuilder, kernels: int):
        self.b = b
        i64 = ir.IntType(64)
        self.slots = ir.GlobalVariable(b.module, ir.ArrayType(i64, kernels + 1), PROFILE)
        self.slots.initializer = ir.Constant(self.slots.type.pointee, None)
        self.clock = b.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
        self.entry_start = self.now()

    def now(self) -> ir.Value:
        return self.b.call(self.clock, [])

    def add(self, slot: int, start: ir.Value) -> None:
        b, i64 = self.b, ir.IntType(64)
        at = b.gep(self.slots, [ir.Constant(i64, 0), ir.Constant(i64, slot)], inbounds=True)
        b.store(b.add(b.load(at), b.sub(self.now(), start)), at)


def _kernel_key(nodes, kernel, param_of: dict[int, int], literals) -> tuple:
    """Everything a kernel's code depends on: its nodes (ops, attributes, types, operands as body
    positions, parameters or literal values), kind and flags, and which parameter holds each
    value. The layers of a deep network repeat it: their kernels share one function."""
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
            tuple(local[v] for v in kernel.outputs), len(set(param_of.values())))


def _kernel_function(module: ir.Module, name: str, nodes, kernel, param_of: dict[int, int], count: int,
                     literals) -> ir.Function:
    """`void kernel(i8* noalias p0, ...)`: one pointer per distinct buffer the kernel touches.
    Not inlined: kept apart, each kernel is optimized alone, and O3 time stays linear in the
    number of kernels."""
    pointer = I8.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * count), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for k, arg in enumerate(fn.args):
        arg.add_attribute("noalias")
        arg.name = f"p{k}"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    arrays = {v: Array(b.bitcast(fn.args[p], MEMORY_TYPES[nodes[v].type.dtype].as_pointer()), nodes[v].type)
              for v, p in param_of.items()}
    scalars = {j: constant(nodes[j].attr("value"), nodes[j].type.dtype) for j in kernel.inputs if j in literals}

    def same_storage(x: int, y: int) -> bool:
        return x in param_of and param_of.get(x) == param_of.get(y)

    _lower_kernel(BodyEmitter(b, nodes, arrays, scalars), kernel, same_storage)
    b.ret_void()
    return fn


def _lower_kernel(emitter: BodyEmitter, kernel, same_storage) -> None:
    b, nodes, arrays = emitter.b, emitter.nodes, emitter.arrays
    root = nodes[kernel.body[-1]]
    if kernel.kind == KernelKind.ELEMENTWISE or (kernel.kind == KernelKind.SOURCE and root.op is O.Iota):
        space = tuple(np.broadcast_shapes(*(nodes[i].type.shape for i in kernel.body)))
        emit_map(emitter, kernel.body, space, kernel.outputs)
    elif kernel.kind == KernelKind.SOURCE:
        emit_constant(b, root, arrays[kernel.body[-1]])
    elif kernel.kind == KernelKind.REDUCTION:
        emit_reduction(emitter, kernel)
    elif kernel.kind == KernelKind.GEMM:
        _lower_gemm(emitter, kernel, same_storage)
    elif kernel.kind == KernelKind.LAYOUT:
        emit_layout(b, root, arrays[kernel.body[-1]], [arrays[j] for j in root.inputs])
    elif kernel.kind == KernelKind.COPY:
        emit_copy(b, arrays[kernel.body[-1]], arrays[root.inputs[0]])
    else:
        raise NotImplementedError(f"llvm backend: no lowering for {kernel.kind} kernels")


def _lower_gemm(emitter: BodyEmitter, kernel, same_storage) -> None:
    """The GEMM writes into the matmul's buffer if it has one (an output, or scratch), else into
    the kernel root's, which the epilogue then overwrites in place (same type, read before
    written per element). An epilogue in accumulate form is the GEMM's alpha and beta."""
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
    accumulate = match_accumulate(nodes, kernel, same_storage)
    epilogue = kernel.epilogue
    if accumulate is not None:
        result = Array(arrays[accumulate.result].ptr, matmul.type)
        emit_gemm(b, a, b_, result, kernel.trans_a, kernel.trans_b, (factor(accumulate.alpha), factor(accumulate.beta)))
        epilogue = [i for i in epilogue if i not in accumulate.replaced]
    else:
        dest = kernel.anchor if kernel.anchor in arrays else kernel.body[-1]
        result = Array(arrays[dest].ptr, matmul.type)
        emit_gemm(b, a, b_, result, kernel.trans_a, kernel.trans_b)
        arrays.setdefault(kernel.anchor, result)
    if epilogue:
        outputs = [i for i in kernel.outputs if i in epilogue]
        emit_map(emitter, epilogue, matmul.type.shape, outputs)
