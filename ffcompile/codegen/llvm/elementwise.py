"""Elementwise code: the per-op scalar lowering table and the loop nests that evaluate kernel bodies.

A body node is evaluated at one point of its kernel's loop space with NumPy
broadcasting: an operand of smaller shape is read at the broadcast index,
i.e. with stride 0 along its missing or size-1 axes. Strides are static, so
every load is `base[sum(index_g * stride_g)]` over the emitted loops g.
Adjacent axes along which every array is laid out alike are merged into one
loop (as NumPy's iterator coalesces dimensions), so a fused kernel over
contiguous operands is one flat, vectorizable loop. An axis an iota reads
keeps a loop of its own, whose index is the iota's value.

No fast-math flag spans two ops: every op rounds its result, as NumPy does,
so a value's bits do not depend on which kernel computes it or what that
kernel fuses around it (remat's copies are bitwise the originals). Inside
one op (the math library's polynomials, x**n) `contract` lets LLVM form FMAs.
Nothing assumes away NaN, infinities or signed zeros.
Maximum/minimum propagate NaN like NumPy (`llvm.maximum`/`llvm.minimum`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from llvmlite import ir

from ...ir import Node, TensorType
from ...ir import ops as O
from . import mathlib
from ...ir.symbolic import Sym
from .cgutils import for_range, size_value
from .loop_metadata import access_group, accesses_in, mark_loop
from .threadpool import emit_parallel_for

CONTRACT = ("contract",)
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
REGISTER_TYPES = {"f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I1}
MEMORY_TYPES = {**REGISTER_TYPES, "bool": I8}  # NumPy stores a bool in a byte


def is_float(ty: ir.Type) -> bool:
    return isinstance(ty, (ir.FloatType, ir.DoubleType))


def constant(value, dtype: str) -> ir.Constant:
    """A scalar literal in register type."""
    ty = REGISTER_TYPES[dtype]
    return ir.Constant(ty, float(value) if is_float(ty) else int(value))


def scalar(b: ir.IRBuilder, value, dtype: str) -> ir.Value:
    """A constant's scalar in register type: a literal, or for a size known at call time
    (a Sym: a mean's count) its value converted as NumPy converts the int to `dtype`."""
    if isinstance(value, Sym):
        return convert(b, size_value(b, value), dtype)
    return constant(value, dtype)


def intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    ty = args[0].type
    fn = b.module.declare_intrinsic(name, [ty], ir.FunctionType(ty, [ty] * len(args)))
    return b.call(fn, list(args))


# --------------------------------------------------------------------------- the op table

Lowering = Callable[[ir.IRBuilder, Node, list], ir.Value]


def _arith(float_op: str, int_op: str) -> Lowering:
    def lower(b, node, args):
        x, y = args
        if is_float(x.type):
            return getattr(b, float_op)(x, y)
        return getattr(b, int_op)(x, y)
    return lower


def _math(name: str) -> Lowering:
    return lambda b, node, args: mathlib.call(b, name, args[0])


def _extremum(float_intrinsic: str, int_pred: str) -> Lowering:
    def lower(b, node, args):
        x, y = args
        if is_float(x.type):
            return intrinsic(b, float_intrinsic, x, y)  # NaN in either operand gives NaN
        return b.select(b.icmp_signed(int_pred, x, y), x, y)
    return lower


def _compare(pred: str) -> Lowering:
    def lower(b, node, args):
        x, y = args
        if is_float(x.type):
            return b.fcmp_ordered(pred, x, y)  # any comparison with NaN is false, as in NumPy
        if x.type == I1:
            return b.icmp_unsigned(pred, x, y)  # False < True
        return b.icmp_signed(pred, x, y)
    return lower


def _neg(b, node, args):
    (x,) = args
    return b.fneg(x) if is_float(x.type) else b.sub(ir.Constant(x.type, 0), x)


def _abs(b, node, args):
    (x,) = args
    if is_float(x.type):
        return intrinsic(b, "llvm.fabs", x)
    return b.select(b.icmp_signed("<", x, ir.Constant(x.type, 0)), b.sub(ir.Constant(x.type, 0), x), x)


def _sign(b, node, args):
    """-1, 0 or 1; a float zero keeps its sign and NaN stays NaN (both are `x` itself)."""
    (x,) = args
    one, minus_one = ir.Constant(x.type, 1), ir.Constant(x.type, -1)
    if is_float(x.type):
        zero = ir.Constant(x.type, 0.0)
        inner = b.select(b.fcmp_ordered("<", x, zero), minus_one, x)
        return b.select(b.fcmp_ordered(">", x, zero), one, inner)
    zero = ir.Constant(x.type, 0)
    inner = b.select(b.icmp_signed("<", x, zero), minus_one, zero)
    return b.select(b.icmp_signed(">", x, zero), one, inner)


def _integer_power(b, x, p: int):
    """x**p for an integer p >= 0 by repeated squaring (at most 2 log2 p multiplications)."""
    def mul(u, v):
        return b.fmul(u, v, flags=CONTRACT)

    result, base = None, x
    while p:
        if p & 1:
            result = base if result is None else mul(result, base)
        p >>= 1
        if p:
            base = mul(base, base)
    return result if result is not None else ir.Constant(x.type, 1.0)


def _pow(b, node, args):
    """x**p for a constant p (pow takes floats only)."""
    (x,) = args
    p = node.attr("exponent")
    if p == 0.5:
        return mathlib.call(b, "sqrt", x)
    if p == int(p) and abs(p) <= 64:
        y = _integer_power(b, x, abs(int(p)))
        return b.fdiv(ir.Constant(x.type, 1.0), y) if p < 0 else y
    # x**p = exp(p log x): NaN for x < 0 (a non-integer p), 0 or inf at x = 0, as pow does.
    return mathlib.call(b, "exp", b.fmul(ir.Constant(x.type, float(p)), mathlib.call(b, "log", x)))


def convert(b: ir.IRBuilder, x: ir.Value, dtype: str) -> ir.Value:
    """x (any register type) as `dtype`, with NumPy's astype semantics."""
    src, dst = x.type, REGISTER_TYPES[dtype]
    if src == dst:
        return x
    if dst == I1:  # NaN is truthy, as bool(nan) is
        return b.fcmp_unordered("!=", x, ir.Constant(src, 0.0)) if is_float(src) else \
            b.icmp_unsigned("!=", x, ir.Constant(src, 0))
    if src == I1:
        return b.uitofp(x, dst) if is_float(dst) else b.zext(x, dst)
    if is_float(src) and is_float(dst):
        return b.fpext(x, dst) if dst == F64 else b.fptrunc(x, dst)
    if is_float(src):
        return b.fptosi(x, dst)
    if is_float(dst):
        return b.sitofp(x, dst)
    return b.sext(x, dst) if dst.width > src.width else b.trunc(x, dst)


def _threefry2x32(b, node, args):
    """The cipher's integer rounds on i32 words: add and xor wrap as uint32 does, a rotate is a
    funnel shift; no float anywhere, so every vector width gives the reference's bits."""
    def const(value):
        return ir.Constant(I32, value)

    x0, x1 = O.threefry2x32_rounds(
        *args, add=b.add, xor=b.xor, const=const,
        rotl=lambda x, r: intrinsic(b, "llvm.fshl", x, x, const(r)))
    output = node.attr("output")
    if output == "xor":
        return b.xor(x0, x1)
    return x0 if output == "x0" else x1


ELEMENTWISE_LOWERINGS: dict[type, Lowering] = {
    O.Neg: _neg,
    O.Exp: _math("exp"),
    O.Expm1: _math("expm1"),
    O.Log: _math("log"),
    O.Log1p: _math("log1p"),
    O.Tanh: _math("tanh"),
    O.Erf: _math("erf"),
    O.Sin: _math("sin"),
    O.Cos: _math("cos"),
    O.Sqrt: _math("sqrt"),
    O.Abs: _abs,
    O.Sign: _sign,
    O.Floor: lambda b, node, args: intrinsic(b, "llvm.floor", args[0]),
    O.StopGradient: lambda b, node, args: args[0],
    O.Pow: _pow,
    O.Convert: lambda b, node, args: convert(b, args[0], node.attr("dtype")),
    O.Add: _arith("fadd", "add"),
    O.Sub: _arith("fsub", "sub"),
    O.Mul: _arith("fmul", "mul"),
    O.Div: lambda b, node, args: b.fdiv(*args),
    O.Maximum: _extremum("llvm.maximum", ">"),
    O.Minimum: _extremum("llvm.minimum", "<"),
    O.Gt: _compare(">"),
    O.Ge: _compare(">="),
    O.Lt: _compare("<"),
    O.Le: _compare("<="),
    O.Eq: _compare("=="),
    O.Select: lambda b, node, args: b.select(*args),
    # Index maps, evaluated by the loop nest itself (see BodyEmitter.evaluate).
    O.Broadcast: lambda b, node, args: args[0],
    O.Iota: None,
    O.Threefry2x32: _threefry2x32,
}


# --------------------------------------------------------------------------- arrays and loop spaces


@dataclass(frozen=True)
class Array:
    """A C-contiguous array in memory: a pointer to its first element and the type the graph reads."""

    ptr: ir.Value
    type: TensorType


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def broadcast_strides(shape: tuple[int, ...], space: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a contiguous `shape` read at the indices of `space` (NumPy broadcasting)."""
    lead = len(space) - len(shape)
    own = contiguous_strides(shape)
    return tuple(0 if k < lead or shape[k - lead] == 1 else own[k - lead] for k in range(len(space)))


@dataclass(frozen=True)
class Phase:
    """Nodes evaluated over `shape`, whose axes are the loop-space axes `dims` (a reduction's
    epilogue runs over the kept axes of its prologue's space)."""

    shape: tuple[int, ...]
    dims: tuple[int, ...]

    @staticmethod
    def whole(shape: tuple[int, ...]) -> Phase:
        return Phase(shape, tuple(range(len(shape))))

    def strides(self, shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
        """Strides, per loop-space axis, of a contiguous `shape` read in this phase."""
        out = [0] * rank
        for d, s in zip(self.dims, broadcast_strides(shape, self.shape)):
            out[d] = s
        return tuple(out)

    def space_axis(self, shape: tuple[int, ...], axis: int) -> int | None:
        """The loop-space axis that `axis` of a node of `shape` runs along (None: a size-1 axis)."""
        k = axis + len(self.shape) - len(shape)
        return None if shape[axis] == 1 or self.shape[k] == 1 else self.dims[k]


def loop_groups(space: tuple[int, ...], dims, strides, apart=frozenset()) -> list[tuple[int, ...]]:
    """Split `dims` (space axes, outermost first) into loops: size-1 axes are dropped, and an
    axis merges into the loop before it when every stride vector allows it (the outer stride
    is the inner one times the inner extent) and neither axis is in `apart`."""
    groups: list[list[int]] = []
    for d in dims:
        if space[d] == 1:
            continue
        if groups:
            prev = groups[-1][-1]
            if (prev == d - 1 or all(space[k] == 1 for k in range(prev + 1, d))) and \
                    prev not in apart and d not in apart and \
                    all(s[prev] == s[d] * space[d] for s in strides):
                groups[-1].append(d)
                continue
        groups.append([d])
    return [tuple(g) for g in groups]


@dataclass
class Point:
    """Loop indices (one per group) at the current point of a loop space of `rank` axes."""

    rank: int
    groups: list[tuple[int, ...]]
    indices: list[ir.Value]

    def offset(self, b: ir.IRBuilder, strides: tuple[int, ...]) -> ir.Value:
        """sum(index_g * stride_g) over the loops, in elements."""
        total = None
        for group, index in zip(self.groups, self.indices):
            stride = strides[group[-1]]
            if stride:
                term = index if stride == 1 else b.mul(index, size_value(b, stride), flags=["nsw"])
                total = term if total is None else b.add(total, term, flags=["nsw"])
        return ir.Constant(I64, 0) if total is None else total

    def axis_index(self, axis: int) -> ir.Value:
        for group, index in zip(self.groups, self.indices):
            if group == (axis,):
                return index
        raise AssertionError(f"loop axis {axis} is merged with another; keep it apart")


@contextmanager
def loop_nest(b: ir.IRBuilder, space: tuple[int, ...], groups: list[tuple[int, ...]], outer: Point | None = None,
              parallel: bool = False):
    """Nested counted loops over `groups`; yields the Point (including `outer`'s loops).
    parallel: the innermost loop's iterations touch memory independently (loop_metadata.py)."""
    point = Point(len(space), list(outer.groups) if outer else [], list(outer.indices) if outer else [])
    short = []
    accesses = access_group(b.module) if parallel and groups else None
    with ExitStack() as stack:
        for group in groups:
            count = math.prod(space[d] for d in group)
            index = stack.enter_context(for_range(b, size_value(b, count), name=f"i{len(point.groups)}"))
            # A loop over the batch (a Sym count, known at call time) never gets the hint: it
            # saves compile time on short loops, and a batch is not short at the sizes that matter.
            if not isinstance(count, Sym) and count < SHORT_LOOP:
                short.append(index)
            point.indices.append(index)
            point.groups.append(group)
        with accesses_in(b, accesses):
            yield point
    for index in point.indices[len(point.indices) - len(groups):]:
        mark_loop(b.module, index, vectorize=index not in short,
                  parallel=accesses if index is point.indices[-1] else None)


def independent(emitter: "BodyEmitter", phase: Phase, outputs, groups) -> bool:
    """Whether the innermost loop of `groups` writes each output at a new element every
    iteration (no output broadcast along it), so its iterations are independent."""
    rank = len(phase.shape)
    return bool(groups) and all(phase.strides(emitter.arrays[i].type.shape, rank)[groups[-1][-1]]
                                for i in outputs)


# Points of a loop nest below which splitting it across the thread pool costs more than it
# saves (waking a thread: ~2-5 us; 64 Ki f32 points of a simple body: ~20 us).
PARALLEL_MIN_POINTS = 1 << 16

# Loops shorter than this fill no vector: LLVM is told not to try (on the huge body of a
# long fused chain over a few elements, the loop vectorizer alone took 10 s of 12).
SHORT_LOOP = 8


def load(b: ir.IRBuilder, ptr: ir.Value, dtype: str) -> ir.Value:
    value = b.load(ptr)
    return b.trunc(value, I1) if dtype == "bool" else value


def store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, dtype: str) -> None:
    b.store(b.zext(value, I8) if dtype == "bool" else value, ptr)


# --------------------------------------------------------------------------- evaluating kernel bodies


class BodyEmitter:
    """Evaluates a kernel's body nodes: loop-invariant (rank-0) ones once, the rest per point.

    `arrays` holds the memory of the values read from outside the body and of
    the kernel's outputs; `values` holds scalars already known (literals,
    hoisted nodes, a reduction's result)."""

    def __init__(self, b: ir.IRBuilder, nodes, arrays: dict[int, Array], values: dict[int, ir.Value]):
        self.b = b
        self.nodes = nodes
        self.arrays = arrays
        self.values = dict(values)

    def hoist(self, body, exclude=()) -> list[int]:
        """Evaluate, here, the rank-0 body nodes that depend on nothing computed per point.
        Returns the body nodes left to evaluate per point."""
        rest: list[int] = []
        per_point = set(exclude)
        for i in body:
            node = self.nodes[i]
            if node.type.rank or i in per_point or any(j in per_point for j in node.inputs):
                per_point.add(i)
                rest.append(i)
                continue
            self.values[i] = self.evaluate(node, [self.operand(j, None, None) for j in node.inputs], None, None)
            if i in self.arrays:
                store(self.b, self.values[i], self.arrays[i].ptr, node.type.dtype)
        return rest

    def operand(self, j: int, phase: Phase | None, point: Point | None, local=None) -> ir.Value:
        if local is not None and j in local:
            return local[j]
        if j in self.values:
            return self.values[j]
        array = self.arrays[j]
        if point is None:  # a rank-0 read before any loop
            return load(self.b, array.ptr, array.type.dtype)
        offset = point.offset(self.b, phase.strides(array.type.shape, point.rank))
        value = load(self.b, self.b.gep(array.ptr, [offset], inbounds=True), array.type.dtype)
        local[j] = value  # one load per point, however many nodes read it
        return value

    def at_point(self, body, phase: Phase, point: Point, outputs, local=None) -> dict[int, ir.Value]:
        """Evaluate `body` at `point`; store every node in `outputs` (after all loads: an output
        may take over the storage of an input read at the same index)."""
        local = {} if local is None else local
        for i in body:
            node = self.nodes[i]
            args = [self.operand(j, phase, point, local) for j in node.inputs]
            local[i] = self.evaluate(node, args, phase, point)
        for i in outputs:
            array = self.arrays[i]
            offset = point.offset(self.b, phase.strides(array.type.shape, point.rank))
            store(self.b, local[i], self.b.gep(array.ptr, [offset], inbounds=True), array.type.dtype)
        return local

    def evaluate(self, node: Node, args, phase: Phase | None, point: Point | None) -> ir.Value:
        if node.op is O.Iota:
            axis = phase.space_axis(node.type.shape, node.attr("axis"))
            index = ir.Constant(I64, 0) if axis is None else point.axis_index(axis)
            return convert(self.b, index, node.type.dtype)
        lowering = ELEMENTWISE_LOWERINGS.get(node.op)
        if lowering is None:
            raise NotImplementedError(f"llvm backend: no elementwise lowering for op {node.op.name!r} "
                                      f"({node.type})")
        return lowering(self.b, node, args)

    def captured(self):
        """(values, rebuild): what code emitted in another function needs of this emitter (every
        array's pointer, the computed scalars), and rebuild(b, loaded) -> an emitter there."""
        arrays = list(self.arrays.items())
        known = [(j, v) for j, v in self.values.items() if not isinstance(v, ir.Constant)]

        def rebuild(b: ir.IRBuilder, loaded: list) -> BodyEmitter:
            return BodyEmitter(b, self.nodes, {j: Array(p, a.type) for (j, a), p in zip(arrays, loaded)},
                               {**self.values, **{j: v for (j, _), v in zip(known, loaded[len(arrays):])}})

        return [a.ptr for _, a in arrays] + [v for _, v in known], rebuild

    def iota_axes(self, body, phase: Phase) -> set[int]:
        """Loop-space axes an iota of `body` reads its value from: each needs its own loop."""
        axes = set()
        for i in body:
            node = self.nodes[i]
            if node.op is O.Iota:
                axis = phase.space_axis(node.type.shape, node.attr("axis"))
                if axis is not None:
                    axes.add(axis)
        return axes


def emit_map(emitter: BodyEmitter, body, space: tuple[int, ...], outputs) -> None:
    """An elementwise loop nest: evaluate `body` over `space`, storing `outputs`.
    Rank-0 nodes are evaluated once, before the loops."""
    per_point = emitter.hoist(body)
    outputs = [i for i in outputs if i in per_point]
    if not per_point:
        return
    phase = Phase.whole(space)
    rank = len(space)
    reads = {j for i in per_point for j in emitter.nodes[i].inputs if j in emitter.arrays and j not in per_point}
    strides = [phase.strides(emitter.arrays[j].type.shape, rank) for j in reads | set(outputs)]
    groups = loop_groups(space, range(rank), strides, emitter.iota_axes(per_point, phase))
    points = math.prod(space)
    outer = math.prod(space[d] for d in groups[0]) if groups else 1
    symbolic = isinstance(points, Sym)
    parallel = independent(emitter, phase, outputs, groups)
    if (not symbolic and points < 2 * PARALLEL_MIN_POINTS) or (not isinstance(outer, Sym) and outer < 2):
        with loop_nest(emitter.b, space, groups, parallel=parallel) as point:
            emitter.at_point(per_point, phase, point, outputs)
        return
    # Split across the thread pool by the outermost loop: every point is computed alike in any
    # chunk.
    values, rebuild = emitter.captured()

    def chunk(b, loaded, start, end):
        local = rebuild(b, loaded)
        accesses = access_group(b.module) if parallel and len(groups) == 1 else None  # the chunk loop is innermost
        with for_range(b, b.sub(end, start), "chunk") as i, accesses_in(b, accesses):
            first = Point(rank, [groups[0]], [b.add(start, i, flags=["nsw"])])
            with loop_nest(b, space, groups[1:], first, parallel=parallel) as point:
                local.at_point(per_point, phase, point, outputs)
        mark_loop(b.module, i, parallel=accesses)

    emit_parallel_for(emitter.b, "map", values, size_value(emitter.b, outer),
                      _grain(emitter.b, points // outer), chunk)


def _grain(b: ir.IRBuilder, inner) -> ir.Value | int:
    """Outer iterations per chunk so that a chunk has PARALLEL_MIN_POINTS points, `inner` each:
    for a symbolic inner size, computed at run time (the parallel split is decided there)."""
    if not isinstance(inner, Sym):
        return -(-PARALLEL_MIN_POINTS // inner)
    inner = size_value(b, inner)
    return b.udiv(b.add(ir.Constant(I64, PARALLEL_MIN_POINTS - 1), inner), inner)


@dataclass(frozen=True)
class ColumnEpilogue:
    """A GEMM's epilogue over an m x n space, to run inside the GEMM's own (parallel) function
    on the part of C each chunk computed: `values` are what it reads (passed into the function),
    and emit(b, loaded, j0, j1, rows=None) evaluates it at the columns [j0, j1) of every row,
    or of rows = (i0, i1) (i64 values) only: a block of C (packed_gemm.py)."""

    values: list
    emit: Callable


def column_epilogue(emitter: BodyEmitter, body, space: tuple[int, int], outputs) -> ColumnEpilogue:
    per_point = emitter.hoist(body)
    outputs = [i for i in outputs if i in per_point]
    phase = Phase.whole(space)
    values, rebuild = emitter.captured()

    def emit(b, loaded, j0, j1, rows=None):
        if not per_point:
            return
        local = rebuild(b, loaded)
        i0, i1 = rows or (ir.Constant(I64, 0), size_value(b, space[0]))
        accesses = access_group(b.module) if independent(local, phase, outputs, [(0,), (1,)]) else None
        with for_range(b, b.sub(i1, i0), "row") as i, for_range(b, b.sub(j1, j0), "col") as j, \
                accesses_in(b, accesses):
            point = Point(2, [(0,), (1,)], [b.add(i0, i, flags=["nsw"]), b.add(j0, j, flags=["nsw"])])
            local.at_point(per_point, phase, point, outputs)
        mark_loop(b.module, j, parallel=accesses)

    return ColumnEpilogue(values, emit)
