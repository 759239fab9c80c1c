"""GEMMs whose sizes are known only when the program runs (#18: one program for every batch size).

With a symbolic batch size B, m = B for x @ W and dy @ W.T, and k = B for the weight
gradient x.T @ dy. blas.gemm_route cannot pick a kernel from such sizes, so the program
picks one at run time from the run-time sizes, as gemm_route would for them:

- m in skinny.py's range (the served batches of 1-8): the skinny kernel with a run-time m
  (one kernel for every m: skinny.py);
- else, at most native_max_work() multiply-adds with smallgemm's packed operands within
  PACK_MAX_BYTES: smallgemm with run-time m or k (its row blocks and k loop are loops
  with run-time trip counts);
- else the BLAS call, every size an i32 computed at run time.

Where the reference batch size's product takes the packed GEMM (packed_gemm.py), its
shape-generic function takes the BLAS branch's place, with the run-time sizes and the block
sizes of the reference size's product (blas._blas_or_packed). A symbolic size past BLAS's
32-bit integers is refused at compile time at max_batch when B has a bound (blas.py);
without one, the BLAS branch checks the sizes first and, past the limit, stores the size
in the module's GEMM_ERROR_SYMBOL instead of calling: the runtime reads it after the entry
returns and raises GemmTooLarge (raise_gemm_error), so the product never reaches BLAS
with a wrapped size.
"""
from __future__ import annotations

import ctypes
import math

from llvmlite import ir

from ...ir.symbolic import BatchRange, Sym, substitute
from .cgutils import size_value
from .elementwise import I64
from .skinny import SKINNY_MAX_ROWS, emit_skinny_gemm, skinny_fits
from .smallgemm import PACK_MAX_BYTES, as_i64, product, small_gemm_bytes, small_gemm_fits

# Where the reference batch size is not a skinny one, B bytes (n k itemsize) from which a
# symbolic GEMM builds the skinny kernel for its 1-8 row sizes anyway. Measured at one row
# (fixed kernels, a loaded 2-core machine): smallgemm 1.7-1.9x slower than skinny on mnist's
# 512x512 and 784x512 (1-1.6 MB), 1.0-1.15x on 256x256 and smaller (256 kB and less), where
# the skinny kernel was a quarter of digits' symbolic gradient's code.
STREAM_MIN_BYTES = 512 * 1024
GEMM_ERROR_SYMBOL = "ffc_gemm_error"  # i64: 0, or the size past BLAS's integers a GEMM met
BLAS_INT_MAX = 2 ** 31 - 1  # SciPy's cython_blas takes every dimension as a 32-bit Fortran INTEGER


class GemmTooLarge(ValueError):
    """A matrix product too large for the BLAS interface's integers."""


def symbolic(*dims) -> bool:
    return any(isinstance(d, Sym) for d in dims)


def largest(d, max_batch: int | None) -> int | None:
    """A dimension's largest value for B in 1..max_batch (None: unbounded)."""
    if not isinstance(d, Sym):
        return d
    return None if max_batch is None else d.coef * max_batch


def skinny_rows(m, n, k, trans_a: bool, trans_b: bool, itemsize: int, max_batch: int | None) -> list[int]:
    """The run-time values of a symbolic m (coef * B) for which the product is a skinny one."""
    if not isinstance(m, Sym) or symbolic(n, k):
        return []
    top = SKINNY_MAX_ROWS if max_batch is None else min(SKINNY_MAX_ROWS, m.coef * max_batch)
    return [r for r in range(m.coef, top + 1, m.coef) if skinny_fits(r, n, k, trans_a, trans_b, itemsize)]


def gemm_error_slot(module: ir.Module) -> ir.GlobalVariable:
    """The module's GEMM_ERROR_SYMBOL (defined, zero): the size a GEMM refused to pass to BLAS."""
    slot = module.globals.get(GEMM_ERROR_SYMBOL)
    if slot is None:
        slot = ir.GlobalVariable(module, I64, GEMM_ERROR_SYMBOL)
        slot.initializer = ir.Constant(I64, 0)
    return slot


def raise_gemm_error(address: int, batch: int) -> None:
    """Raise GemmTooLarge if the program whose GEMM_ERROR_SYMBOL is at `address` refused a BLAS
    call during its last run (at batch size `batch`), and clear it."""
    slot = ctypes.c_int64.from_address(address)  # ~0.2 us, made per call: a view kept could outlive the program
    if slot.value:
        size, slot.value = slot.value, 0
        raise GemmTooLarge(f"llvm backend: at batch size {batch}, a matmul has a dimension of {size}, above "
                           f"{BLAS_INT_MAX}, the largest the BLAS (32-bit integers) takes; the program stopped "
                           f"before calling it (give max_batch= to have this checked at compile time)")


def emit_runtime_gemm(b: ir.IRBuilder, pa, pb, pc, m, n, k, trans_a: bool, trans_b: bool, scale, epilogue,
                      max_batch: int | None, native_max: int, emit_small, emit_blas) -> None:
    """C = op(A) op(B) for float pointers, sizes ints or Syms (in the function `b` builds, whose
    trailing `batch` parameter gives B), the kernel chosen at run time (module doc). scale
    and epilogue as blas.emit_gemm's; the epilogue runs in the skinny kernel's chunks, or over
    all of C after another kernel. emit_small(b), emit_blas(b): smallgemm's product (split
    across the pool where it can be) and the BLAS call, with these sizes.

    Which kernels are built is decided at the reference batch size (BatchRange: max_batch,
    else a default): the GEMM code is most of a symbolic program's build time (digits'
    gradient: 3.3x the IR of a fixed-size program), and B's every size needs only a correct
    kernel, the reference size a fast one. So smallgemm only where the reference size takes
    it, BLAS only where a size up to max_batch may need it, and the skinny kernel's rows in
    groups of 8 where the reference size is a skinny one, else in groups of 4 (less code,
    1.06-1.4x slower at 1-8 rows) and only for B of at least STREAM_MIN_BYTES."""
    ty = pc.type.pointee
    itemsize = 4 if isinstance(ty, ir.FloatType) else 8
    mv, nv, kv = (d if isinstance(d, int) else size_value(b, d) for d in (m, n, k))  # ints stay ints
    rows, use_small, need_blas = runtime_kernels(m, n, k, trans_a, trans_b, itemsize, max_batch, native_max)
    reference = BatchRange(max_batch).reference

    def blas():
        _checked_blas(b, (mv, nv, kv), (m, n, k), max_batch, emit_blas)

    def small_or_blas():
        if use_small and need_blas:
            with b.if_else(_small_fits(b, mv, nv, kv, trans_a, trans_b, itemsize, native_max)) as (small, other):
                with small:
                    emit_small(b)
                with other:
                    blas()
        elif use_small:
            emit_small(b)
        elif need_blas:
            blas()
        else:
            return  # no size in 1..max_batch (which the runtime checks B against) reaches here
        if epilogue is not None:  # over all of C, after either kernel
            epilogue.emit(b, epilogue.values, ir.Constant(I64, 0), as_i64(nv))

    if not rows:
        small_or_blas()
        return
    group = SKINNY_MAX_ROWS if reference <= SKINNY_MAX_ROWS else SKINNY_MAX_ROWS // 2
    with b.if_else(b.icmp_signed("<=", mv, ir.Constant(I64, rows[-1]))) as (streamed, other):
        with streamed:
            emit_skinny_gemm(b, pa, pb, pc, mv, n, k, trans_a, trans_b, scale, epilogue, group)
        with other:
            small_or_blas()


def runtime_kernels(m, n, k, trans_a: bool, trans_b: bool, itemsize: int, max_batch: int | None,
                    native_max: int) -> tuple[list[int], bool, bool]:
    """(the skinny kernel's run-time row counts, smallgemm?, BLAS?): the kernels
    emit_runtime_gemm builds for a product, decided at the reference batch size (its doc)."""
    reference = BatchRange(max_batch).reference
    rows = skinny_rows(m, n, k, trans_a, trans_b, itemsize, max_batch)
    if rows and reference > SKINNY_MAX_ROWS and n * k * itemsize < STREAM_MIN_BYTES:  # (rows: n, k ints)
        rows = []  # smallgemm is about as fast at these sizes, for less code

    def small_at(batch: int) -> bool:
        sizes = substitute((m, n, k), {"B": batch})
        return (not _never_small(m, n, k, trans_a, trans_b) and math.prod(sizes) <= native_max
                and small_gemm_fits(*sizes, trans_a, trans_b, itemsize))

    all_skinny = bool(rows) and max_batch is not None and rows[-1] >= largest(m, max_batch)
    use_small = not all_skinny and small_at(reference)
    need_blas = not all_skinny and not (max_batch is not None and small_at(max_batch))  # sizes grow with B
    return rows, use_small, need_blas


def _never_small(m, n, k, trans_a, trans_b) -> bool:
    """Whether smallgemm takes no size of this product: n symbolic (its column panels are
    unrolled), or k symbolic with the dot-product tiles (unrolled over k)."""
    return isinstance(n, Sym) or (isinstance(k, Sym) and trans_b and not trans_a)


def _small_fits(b, mv, nv, kv, trans_a, trans_b, itemsize, native_max) -> ir.Value:
    """The run-time condition for smallgemm: at most native_max multiply-adds, packed operands
    within PACK_MAX_BYTES."""
    work = product(b, mv, nv, kv)
    fits = b.icmp_signed("<=", work, ir.Constant(I64, native_max))
    packed = small_gemm_bytes(b, mv, nv, kv, trans_a, trans_b, itemsize)
    return b.and_(fits, b.icmp_signed("<=", packed, ir.Constant(I64, PACK_MAX_BYTES))) if packed is not None else fits


def _checked_blas(b, values, dims, max_batch, emit_blas) -> None:
    """emit_blas(b), behind a check of the symbolic sizes against BLAS's integers when B is unbounded."""
    unbounded = [v for v, d in zip(values, dims) if isinstance(d, Sym) and max_batch is None]
    if not unbounded:
        emit_blas(b)
        return
    size = unbounded[0]  # the largest symbolic size
    for v in unbounded[1:]:
        size = b.select(b.icmp_signed(">", v, size), v, size)
    with b.if_else(b.icmp_signed(">", size, ir.Constant(I64, BLAS_INT_MAX))) as (refused, call):
        with refused:
            b.store(size, gemm_error_slot(b.module))
        with call:
            emit_blas(b)
