"""Layout and data-movement kernels: transpose, concat, slice, pad, copy, constants.

Each is a strided copy: a loop nest over a shape that reads one array and
writes another at static strides and offsets (in elements), with the axes
both walk alike merged into one loop.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ...ir import Node
from ...ir import ops as O
from ...ir.attributes import flat_scalars
from ...ir.symbolic import Affine, Sym
from .cgutils import affine_value
from .elementwise import (
    I64,
    MEMORY_TYPES,
    Array,
    contiguous_strides,
    loop_groups,
    loop_nest,
    scalar,
    store,
)


def copy_strided(b: ir.IRBuilder, shape, dst: Array, dst_strides, src: ir.Value, src_strides,
                 dst_offset=0, src_offset=0) -> None:
    """dst[dst_offset + i . dst_strides] = src[src_offset + i . src_strides] for every index i of
    shape. Sizes, strides and offsets may be symbolic (a Sym, an offset an Affine in elements):
    their values are computed at run time from the batch size."""
    groups = loop_groups(tuple(shape), range(len(shape)), [tuple(dst_strides), tuple(src_strides)])
    src_at, dst_at = affine_value(b, src_offset), affine_value(b, dst_offset)  # before the loops
    with loop_nest(b, tuple(shape), groups) as point:
        s = b.add(point.offset(b, tuple(src_strides)), src_at)
        d = b.add(point.offset(b, tuple(dst_strides)), dst_at)
        b.store(b.load(b.gep(src, [s], inbounds=True)), b.gep(dst.ptr, [d], inbounds=True))


def _dot(index, strides) -> Affine:
    """sum(index_k * stride_k), in elements, as an Affine (a stride may be a multiple of B)."""
    return sum((Affine.of(i * s) for i, s in zip(index, strides)), Affine(0))


def _fill_zero(b: ir.IRBuilder, out: Array) -> None:
    zero = ir.Constant(MEMORY_TYPES[out.type.dtype], 0.0 if out.type.is_float else 0)
    with loop_nest(b, (out.type.size,), [(0,)]) as point:
        b.store(zero, b.gep(out.ptr, [point.indices[0]], inbounds=True))


def _transpose(b, node, out, operands, out_strides):
    (x,) = operands
    in_strides = contiguous_strides(x.type.shape)
    copy_strided(b, out.type.shape, out, out_strides, x.ptr, [in_strides[p] for p in node.attr("perm")])


def _concat(b, node, out, operands, out_strides):
    axis, start = node.attr("axis"), 0
    for x in operands:  # along B, every size is a multiple of B (a trace refuses B + 1), so start is too
        copy_strided(b, x.type.shape, out, out_strides, x.ptr, contiguous_strides(x.type.shape),
                     dst_offset=start * out_strides[axis])
        start += x.type.shape[axis]


def _slice(b, node, out, operands, out_strides):
    (x,) = operands
    in_strides = contiguous_strides(x.type.shape)
    offset = _dot(node.attr("starts"), in_strides)
    copy_strided(b, out.type.shape, out, out_strides, x.ptr,
                 [s * step for s, step in zip(in_strides, node.attr("steps"))], src_offset=offset)


def _pad(b, node, out, operands, out_strides):
    """Zeros, then the operand at (low + i * (interior + 1)) along each axis."""
    (x,) = operands
    config = node.attr("config")
    _fill_zero(b, out)
    copy_strided(b, x.type.shape, out, [s * (it + 1) for s, (_, _, it) in zip(out_strides, config)],
                 x.ptr, contiguous_strides(x.type.shape),
                 dst_offset=_dot([lo for lo, _, _ in config], out_strides))


LAYOUT_LOWERINGS = {O.Transpose: _transpose, O.Concat: _concat, O.Slice: _slice, O.Pad: _pad}


def emit_layout(b: ir.IRBuilder, node: Node, out: Array, operands: list[Array]) -> None:
    lowering = LAYOUT_LOWERINGS.get(node.op)
    if lowering is None:
        raise NotImplementedError(f"llvm backend: no layout lowering for op {node.op.name!r} ({node.type})")
    lowering(b, node, out, operands, contiguous_strides(out.type.shape))


def emit_copy(b: ir.IRBuilder, out: Array, source: Array) -> None:
    """A flat copy (a view that must not share its storage); LLVM turns the loop into memcpy."""
    copy_strided(b, (out.type.size,), out, (1,), source.ptr, (1,))


def emit_constant(b: ir.IRBuilder, node: Node, out: Array) -> None:
    """Copy the constant's data from an internal global into its buffer; an element that is a
    size known at call time (a Sym, as in a reshape's target shape) is stored after the copy."""
    dtype = node.type.dtype
    if node.type.rank == 0:
        store(b, scalar(b, node.attr("value"), dtype), out.ptr, dtype)
        return
    ty = MEMORY_TYPES[dtype]
    cast = float if node.type.is_float else int
    values = flat_scalars(node.attr("value"))
    known = np.asarray([0 if isinstance(v, Sym) else v for v in values], dtype=node.type.np_dtype)
    flat = [cast(v) for v in known.tolist()]
    data = ir.GlobalVariable(b.module, ir.ArrayType(ty, len(flat)), b.module.get_unique_name("const"))
    data.linkage = "internal"
    data.global_constant = True
    data.initializer = ir.Constant(ir.ArrayType(ty, len(flat)), [ir.Constant(ty, v) for v in flat])
    emit_copy(b, out, Array(b.bitcast(data, ty.as_pointer()), node.type))
    for k, v in enumerate(values):
        if isinstance(v, Sym):
            store(b, scalar(b, v, dtype), b.gep(out.ptr, [ir.Constant(I64, k)], inbounds=True), dtype)

