"""smallgemm's product of fixed sizes split across the thread pool, by tiles of C.

A unit of work is one panel (tile_shape's columns of C, all its rows) where C has enough of
them to split, else one row of tiles (its rows, all columns). Units are tiles, so a chunk
computes each element of C with the code the whole product would (the same bits at any thread
count). The pool's chunks hold at least split_min_work() multiply-adds (measured on the host,
below). A transposed A
that smallgemm packs is packed once, before the split, not in every chunk (B untransposed: with
both transposed, every chunk packs both, as the whole product did).

Why: the deep step's products (64x256x256, its dX = dY W^T and dW = X^T dY with k = 64) ran on
one core: 7.5 ms a step at 256 bits against 4.1 ms for NumPy's OpenBLAS on two. Panels before
rows: a 64-row C has 11 row tiles of 6 (two chunks of 36 and 28 rows) but 16 panels of 16
columns; and inside the deep step (profile, 512 bits, per product) 64x256x256 split by rows took
35 us against 23 by panels, dW 58 against 26 (each thread's part of W stays in its core's
cache from one step to the next).
"""
from __future__ import annotations

from llvmlite import ir

from .elementwise import I64, ColumnEpilogue
from .cgutils import scratch_scope
from .smallgemm import emit_small_gemm, float_bytes, packed_transpose, packs_a, tile_shape
from .threadpool import emit_parallel_for

# Multiply-adds a chunk at least, the choices the host's calibration measures (calibrate.py,
# split_chain.py). The first, the default: ~4-8 us on one core, against ~1 us to hand a chunk
# to a spinning worker; on Zen 5 mnist's products with 10 columns (128x10x512, its dW 512x10 and
# dX 128x512 with k = 10; scaled, 256 bits) went from 17-20 us to 13.5-14.5 at 2^18 (at 2^19 and
# 2^20 they ran whole). On a Xeon whose cores are ~150 ns apart, each chunk's reads of what the
# other core wrote cost more than it saved: digits' step (64x128x128 products) 0.105 ms at 2^18,
# 0.076 at 2^20, 0.077 on one thread.
SPLIT_MIN_WORK_CHOICES = (2 ** 18, 2 ** 20)


def split_min_work() -> int:
    """The multiply-adds a chunk holds at least on this host: as measured for the pool's thread
    count and the vector width (gemm_calibration.py), the first choice until then."""
    from .gemm_calibration import chosen_split_min_work

    return chosen_split_min_work(SPLIT_MIN_WORK_CHOICES)


def split_units(m: int, n: int, k: int, trans_a: bool, trans_b: bool, itemsize: int,
                min_work: int | None = None) -> tuple[bool, int, int]:
    """(by rows?, units, grain): how emit_split_small_gemm cuts the product (chunks of at least
    min_work multiply-adds, default split_min_work())."""
    min_work = min_work or split_min_work()
    rows, cols = tile_shape(m, n, k, trans_a, trans_b, itemsize)
    col_units, col_grain = -(-n // cols), -(-min_work // (m * cols * k))
    if col_units >= 2 * col_grain:
        return False, col_units, col_grain
    return True, -(-m // rows), -(-min_work // (rows * n * k))


def split_axis(m: int, n: int, k: int, trans_a: bool, trans_b: bool, itemsize: int,
               min_work: int | None = None) -> bool | None:
    """How emit_split_small_gemm runs the product with chunks of min_work (default
    split_min_work()): across the pool by rows (True) or panels (False), or whole (None)."""
    packed_a = trans_a and not trans_b and packs_a(m, n, k, trans_a, trans_b, itemsize)
    by_rows, units, grain = split_units(m, n, k, trans_a and not packed_a, trans_b, itemsize, min_work)
    return by_rows if units >= 2 * grain else None


def emit_split_small_gemm(b: ir.IRBuilder, pa, pb, pc, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                          scale: tuple[ir.Value, ir.Value] | None = None, epilogue: ColumnEpilogue | None = None,
                          min_work: int | None = None) -> None:
    """emit_small_gemm's product (ints m, n, k), across the pool where it has 2 grains of units
    (chunks of at least min_work multiply-adds, default split_min_work()); then the epilogue on
    the part of C each chunk computed, in the chunk (still in its core's cache)."""
    ty = pc.type.pointee
    if trans_a and not trans_b and packs_a(m, n, k, trans_a, trans_b, float_bytes(ty)):
        with scratch_scope(b) as take:
            emit_split_small_gemm(b, packed_transpose(b, take, pa, m, k), pb, pc, m, n, k, False, trans_b, scale,
                                  epilogue, min_work)
        return
    by_rows, units, grain = split_units(m, n, k, trans_a, trans_b, float_bytes(ty), min_work)
    if units < 2 * grain:
        emit_small_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale)
        if epilogue is not None:
            epilogue.emit(b, epilogue.values, ir.Constant(I64, 0), ir.Constant(I64, n))
        return
    rows, cols = tile_shape(m, n, k, trans_a, trans_b, float_bytes(ty))
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))
    head = [pa, pb, pc, alpha, beta]

    def body(bb, values, start, end):
        pa_, pb_, pc_, alpha_, beta_ = values[:len(head)]
        scale_ = (alpha_, beta_) if scale else None
        size = n if not by_rows else m
        first = bb.mul(start, ir.Constant(I64, cols if not by_rows else rows))
        last = bb.mul(end, ir.Constant(I64, cols if not by_rows else rows))
        last = bb.select(bb.icmp_signed("<", last, ir.Constant(I64, size)), last, ir.Constant(I64, size))
        if not by_rows:
            emit_small_gemm(bb, pa_, pb_, pc_, m, n, k, trans_a, trans_b, scale_, panels=(start, end))
        else:
            a_rows = bb.gep(pa_, [first if trans_a else bb.mul(first, ir.Constant(I64, k))], inbounds=True)
            c_rows = bb.gep(pc_, [bb.mul(first, ir.Constant(I64, n))], inbounds=True)
            emit_small_gemm(bb, a_rows, pb_, c_rows, bb.sub(last, first), n, k, trans_a, trans_b, scale_,
                            lda=m if trans_a else None)
        if epilogue is None:
            return
        loaded = values[len(head):]
        if by_rows:
            epilogue.emit(bb, loaded, ir.Constant(I64, 0), ir.Constant(I64, n), rows=(first, last))
        else:
            epilogue.emit(bb, loaded, first, last)

    extra = epilogue.values if epilogue is not None else []
    emit_parallel_for(b, "smallgemm", [*head, *extra], units, grain, body)
