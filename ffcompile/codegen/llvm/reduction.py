"""Reduction kernels: prologue, reduce_sum/reduce_max, epilogue, in one loop nest.

The loop space is the reduced operand's shape. Two loop orders:

- reduced axes innermost (softmax's row sums, the loss): outer loops over
  the kept axes, a scalar accumulator over the reduced ones, the epilogue
  right after. The accumulating add carries `reassoc` (that one
  instruction only), so the vectorizer may split the sum into lanes: LLVM
  picks their number per kernel, so the same sum fused with other work can
  round differently (docs/remat.md).
- a kept axis innermost (bias gradients, sums over the batch): the loops run
  in memory order and add each element into an accumulator array over the
  result (the result buffer when it is a kernel output, else a stack array),
  then a second loop applies the epilogue. Every inner step is then a
  contiguous vector update instead of a strided scalar walk.

No `contract`: a prologue's product is rounded before it is added, as in a
kernel of its own. Maximum propagates NaN (`llvm.maximum`), as NumPy's max does.
"""
from __future__ import annotations

import math

from llvmlite import ir

from ...ir import ops as O
from ...ir.symbolic import Sym
from .elementwise import (
    REGISTER_TYPES,
    Array,
    BodyEmitter,
    Phase,
    intrinsic,
    is_float,
    load,
    loop_groups,
    loop_nest,
    store,
)

_SCRATCH_LIMIT = 1 << 16  # bytes of stack an accumulator array may take


def _sum_identity(ty: ir.Type) -> ir.Constant:
    return ir.Constant(ty, 0.0 if is_float(ty) else 0)


def _sum(b: ir.IRBuilder, acc: ir.Value, x: ir.Value, reorder: bool) -> ir.Value:
    if is_float(x.type):
        return b.fadd(acc, x, flags=("reassoc",) if reorder else ())
    return b.add(acc, x)


def _max_identity(ty: ir.Type) -> ir.Constant:
    return ir.Constant(ty, -math.inf if is_float(ty) else -(1 << (ty.width - 1)))


def _max(b: ir.IRBuilder, acc: ir.Value, x: ir.Value, reorder: bool) -> ir.Value:
    if is_float(x.type):
        return intrinsic(b, "llvm.maximum", acc, x)
    return b.select(b.icmp_signed(">", x, acc), x, acc)


# op -> (identity of the accumulator, combine(b, acc, x, reorder)); `reorder`
# allows reassociation (vector lanes) where the accumulator is a scalar.
REDUCTION_LOWERINGS = {O.ReduceSum: (_sum_identity, _sum), O.ReduceMax: (_max_identity, _max)}


def emit_reduction(emitter: BodyEmitter, kernel) -> None:
    b, nodes = emitter.b, emitter.nodes
    anchor_id = kernel.anchor
    anchor = nodes[anchor_id]
    operand = anchor.inputs[0]
    space = nodes[operand].type.shape
    axes, keep = anchor.attr("axes"), anchor.attr("keepdims")
    kept = [d for d in range(len(space)) if d not in axes]
    prologue = emitter.hoist(kernel.prologue)
    epilogue = emitter.hoist(kernel.epilogue, exclude=(anchor_id,))
    pro_phase = Phase.whole(space)
    epi_phase = Phase(anchor.type.shape, tuple(range(len(space))) if keep else tuple(kept))
    pro_out = [i for i in kernel.outputs if i in prologue]
    epi_out = [i for i in kernel.outputs if i in epilogue or i == anchor_id]

    def reads(body, extra=()):
        return {j for i in body for j in nodes[i].inputs if j in emitter.arrays} | set(extra)

    pro_arrays = reads(prologue, [operand] if operand in emitter.arrays else ()) | set(pro_out)
    epi_arrays = reads(epilogue) | set(epi_out)
    rank = len(space)
    strides = [pro_phase.strides(emitter.arrays[j].type.shape, rank) for j in pro_arrays] + \
              [epi_phase.strides(emitter.arrays[j].type.shape, rank) for j in epi_arrays if j != anchor_id]
    result_strides = epi_phase.strides(anchor.type.shape, rank)
    apart = emitter.iota_axes(prologue, pro_phase) | emitter.iota_axes(epilogue, epi_phase)
    kept_groups = loop_groups(space, kept, strides + [result_strides], apart)
    reduced_groups = loop_groups(space, axes, strides, apart)
    ty = REGISTER_TYPES[anchor.type.dtype]
    identity, combine = REDUCTION_LOWERINGS[anchor.op]

    inner_reduction = not kept_groups or not reduced_groups or reduced_groups[-1][-1] > kept_groups[-1][-1]
    scratch = None if inner_reduction else _accumulator(emitter, anchor_id, anchor)
    if scratch is None:
        acc = _entry_alloca(b, ty)
        with loop_nest(b, space, kept_groups) as outer:
            b.store(identity(ty), acc)
            with loop_nest(b, space, reduced_groups, outer) as point:
                local = emitter.at_point(prologue, pro_phase, point, pro_out)
                x = emitter.operand(operand, pro_phase, point, local)
                b.store(combine(b, b.load(acc), x, reorder=True), acc)
            emitter.at_point(epilogue, epi_phase, outer, epi_out, local={anchor_id: b.load(acc)})
        return

    # A kept axis innermost: accumulate in memory order into an array over the result.
    with loop_nest(b, space, kept_groups) as point:
        store(b, identity(ty), b.gep(scratch.ptr, [point.offset(b, result_strides)]), anchor.type.dtype)
    groups = loop_groups(space, range(rank), strides + [result_strides], apart)
    with loop_nest(b, space, groups) as point:
        local = emitter.at_point(prologue, pro_phase, point, pro_out)
        x = emitter.operand(operand, pro_phase, point, local)
        slot = b.gep(scratch.ptr, [point.offset(b, result_strides)])
        store(b, combine(b, load(b, slot, anchor.type.dtype), x, reorder=False), slot, anchor.type.dtype)
    if epilogue or anchor_id not in kernel.outputs:
        outputs = [i for i in epi_out if i != anchor_id]
        emitter.arrays.setdefault(anchor_id, scratch)
        with loop_nest(b, space, kept_groups) as point:
            emitter.at_point(epilogue, epi_phase, point, outputs)


def _accumulator(emitter: BodyEmitter, anchor_id: int, anchor) -> Array | None:
    """The result buffer, or a stack array when the result is not a kernel output (None if too big)."""
    if anchor_id in emitter.arrays:
        return emitter.arrays[anchor_id]
    if isinstance(anchor.type.nbytes, Sym) or anchor.type.nbytes > _SCRATCH_LIMIT:
        return None  # a result over the batch has no size fixed at compile time for the stack
    ty = REGISTER_TYPES[anchor.type.dtype]
    array = _entry_alloca(emitter.b, ir.ArrayType(ty, anchor.type.size))
    return Array(emitter.b.bitcast(array, ty.as_pointer()), anchor.type)


def _entry_alloca(b: ir.IRBuilder, ty: ir.Type) -> ir.Value:
    """A stack slot allocated once in the function's entry block (so SROA promotes scalars)."""
    with b.goto_entry_block():
        return b.alloca(ty)
