"""Matrix-vector and skinny GEMMs (C = op(A) op(B), m <= SKINNY_MAX_ROWS): weight-streaming,
split across the thread pool by columns of C.

With a few rows of A (a served batch of 1-8), C = A @ B reads each weight once for at most
8 multiply-adds: the product runs at the speed B streams from memory. The kernels are
laid out so it streams:

- B held k x n (x @ w, ff.nn's layout): a block of C's columns (BLOCK_VECTORS vectors
  per row) accumulates in a stack buffer in L1 while K_BLOCK rows of B at a time stream
  through, each a contiguous run of the block's columns; every accumulator gets K_BLOCK
  fused multiply-adds per load and store, and C is written once. (Accumulated in C
  itself, two threads' chunks meeting inside one of C's cache lines passed it back and
  forth on every row of B: mnist's first layer at batch 1 took 19 us on 2 threads
  against 16 on one.)
  (smallgemm's register tiles walk B a 64-128 byte panel per row, k rows apart: 0.19 ms
  for mnist's 2.6 MB at batch 1, a quarter of the bandwidth.)
- B held n x k (x @ w.T, torch's and ONNX Gemm's layout): each C element is a dot
  product of two contiguous rows, smallgemm's DotTile over a few columns at a time.

Columns are cut into units (one vector of C, or one dot tile), and the pool's chunks are
runs of whole units of at least PARALLEL_MIN_BYTES of B each: a unit is computed by the
same code in any chunk, so results are bit-identical whatever the thread count.

m may be an i64 value known at run time (a symbolic batch size, runtime_gemm.py; at most
SKINNY_MAX_ROWS): one kernel for every m, where a kernel per m (rows unrolled) built 8 times
the code (a symbolic mnist layer 0.5-1.4 s to compile). The streamed kernel's accumulators
are in its stack block anyway: its rows run in groups (smallgemm.row_blocks: a loop, then a
switch on the rest), each group's A elements splat in registers, a pass over the block's
columns per group; each C element sums in the same order as with m unrolled. Measured
(mnist's 784x512, one thread, against the kernel built for that m): groups of 8, m = 1, 4,
8 1.06x, 1.16x, 1.01x; groups of 4 (10 rows of code, not 36: runtime_gemm takes them where
the reference batch size is not a skinny one) 1.06x, 1.19x, 1.4x (two passes).
Only the column passes are built per row count: the parallel function, the zeroing and
storing of the accumulators are one code for every m (a symbolic x @ W builds in 0.2-0.4 s
against 0.5-1.4 s for eight whole kernels). The dot tiles run in row groups of MR,
DOT_ACCUMULATORS // MR columns a unit.
"""
from __future__ import annotations

from contextlib import nullcontext

from llvmlite import ir

from .cgutils import count_below, for_range, scratch_scope
from .elementwise import CONTRACT, I64, ColumnEpilogue
from .smallgemm import MR, PACK_MAX_BYTES, SCRATCH_ALIGN, DotTile, as_i64, product, row_blocks, splat_vector
from .target import vector_bytes
from .threadpool import emit_parallel_for

SKINNY_MAX_ROWS = 8  # rows of C up to which a product streams B (above: smallgemm or BLAS)
SKINNY_MIN_BYTES = 32 * 1024  # B bytes below which smallgemm's tiles (all in L1) are as fast
K_BLOCK = 4  # rows of B per pass over C: K_BLOCK multiply-adds per accumulator load and store
BLOCK_VECTORS = 16  # vectors of C's columns accumulated at a time, in an L1-resident stack block
DOT_ACCUMULATORS = 12  # vector accumulators of a dot tile: rows x columns
PARALLEL_MIN_BYTES = 64 * 1024  # B bytes per chunk below which waking a thread costs more


def skinny_fits(m: int, n: int, k: int, trans_a: bool, trans_b: bool, itemsize: int) -> bool:
    """Whether a float product of these sizes is a skinny one (streams B); a transposed A
    times a transposed B packs A's rows, at most PACK_MAX_BYTES."""
    packed = m * k * itemsize if trans_a and trans_b else 0
    return (1 <= m <= SKINNY_MAX_ROWS and k >= 1 and n * k * itemsize >= SKINNY_MIN_BYTES
            and packed <= PACK_MAX_BYTES)


def emit_skinny_gemm(b: ir.IRBuilder, pa, pb, pc, m, n: int, k: int, trans_a: bool, trans_b: bool,
                     scale: tuple[ir.Value, ir.Value] | None = None, epilogue: ColumnEpilogue | None = None,
                     row_group: int = SKINNY_MAX_ROWS) -> None:
    """C = op(A) op(B) (with scale = (alpha, beta): alpha op(A) op(B) + beta C) for float
    pointers pa, pb, pc, row-major, C m x n (m an int, or an i64 value: module doc, its rows
    in groups of row_group); then the epilogue, in the same function, on the columns each
    chunk computed (still in cache: at most 8 rows of them)."""
    ty = pc.type.pointee
    itemsize = _bytes(ty)
    vw = vector_bytes() // itemsize
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))
    rows = m if isinstance(m, int) else MR  # the rows a dot tile holds
    columns = max(1, min(8, DOT_ACCUMULATORS // rows)) if trans_b else vw  # per unit
    units, unit_bytes = -(-n // columns), k * columns * itemsize
    head = [pa, pb, pc, alpha, beta] + ([] if isinstance(m, int) else [m])

    def body(bb, values, start, end):
        pa_, pb_, pc_, alpha_, beta_ = values[:5]
        m_ = m if isinstance(m, int) else values[5]
        if trans_b:
            _dot_columns(bb, pa_, pb_, pc_, m_, n, k, trans_a, columns, start, end,
                         (alpha_, beta_) if scale else None, vw)
        else:
            _streamed_columns(bb, pa_, pb_, pc_, m_, n, k, trans_a, vw, start, end, alpha_, beta_, scale is not None,
                              row_group)
        if epilogue is not None:
            last = bb.mul(end, ir.Constant(I64, columns), flags=["nsw"])
            last = bb.select(bb.icmp_signed("<", last, ir.Constant(I64, n)), last, ir.Constant(I64, n))
            epilogue.emit(bb, values[len(head):], bb.mul(start, ir.Constant(I64, columns), flags=["nsw"]), last)

    grain = -(-PARALLEL_MIN_BYTES // unit_bytes)
    extra = epilogue.values if epilogue is not None else []
    emit_parallel_for(b, "skinny", [*head, *extra], units, grain, body)


def _bytes(ty: ir.Type) -> int:
    return 4 if isinstance(ty, ir.FloatType) else 8


def _index(b, *terms):
    """sum(index * stride) for (index, stride) terms (ints or i64 values), as i64."""
    total = None
    for index, stride in terms:
        index = as_i64(index)
        term = index if isinstance(stride, int) and stride == 1 else b.mul(index, as_i64(stride), flags=["nsw"])
        total = term if total is None else b.add(total, term, flags=["nsw"])
    return total


def _streamed_columns(b, pa, pb, pc, m, n, k, trans_a, vw, start, end, alpha, beta, scaled_form, row_group):
    """C[:, units start..end) for B k x n: unit u is columns [u vw, u vw + vw) (the last
    one narrower when vw does not divide n), BLOCK_VECTORS units at a time. m: an int (rows
    unrolled), or an i64 value (a run-time row loop)."""
    ty = pc.type.pointee
    full, tail = divmod(n, vw)
    most = m if isinstance(m, int) else SKINNY_MAX_ROWS
    with b.goto_entry_block():
        local = b.alloca(ty, size=ir.Constant(I64, most * BLOCK_VECTORS * vw), name="acc")
        local.align = vw * _bytes(ty)  # every vector of it is aligned: its offsets are multiples of vw

    def vector(ptr, offset, width):
        vty = ir.VectorType(ty, width)
        return b.bitcast(b.gep(ptr, [offset], inbounds=True), vty.as_pointer())

    def a_at(i, p):
        return b.gep(pa, [_index(b, (p, m), (i, 1)) if trans_a else _index(b, (i, k), (p, 1))], inbounds=True)

    def each_row(emit):
        """emit(i) for every row: unrolled for an int m, else a loop."""
        if isinstance(m, int):
            for i in range(m):
                emit(ir.Constant(I64, i))
            return
        with for_range(b, m, "row") as i:
            emit(i)

    def block(first, count, width):
        """C[:, vectors first..first+count) (count: an IR i64 <= BLOCK_VECTORS) of `width` columns."""
        vty = ir.VectorType(ty, width)

        def local_at(i, u):
            return vector(local, _index(b, (i, BLOCK_VECTORS * vw), (u, vw)), width)

        def c_at(i, u):
            column = b.mul(b.add(first, u, flags=["nsw"]), ir.Constant(I64, vw), flags=["nsw"])
            return vector(pc, _index(b, (i, n), (column, 1)), width)

        with for_range(b, count, "zero") as u:
            each_row(lambda i: b.store(ir.Constant(vty, None), local_at(i, u), align=vw * _bytes(ty)))

        def a_vector(i, p):
            """alpha A[i, p] (A[i, p] in the unscaled form) in every lane."""
            return splat_vector(b, b.fmul(alpha, b.load(a_at(i, p))) if scaled_form else b.load(a_at(i, p)), vty)

        def rows_of_b(p0, rows):
            """local += alpha A[:, p0:p0+rows] B[p0:p0+rows, these columns]"""
            def group(i0, count_rows):
                """for rows i0..i0+count_rows: their A elements splat once, then every column"""
                at_rows = [b.add(i0, ir.Constant(I64, i), flags=["nsw"]) for i in range(count_rows)]
                a = [[a_vector(i, b.add(p0, ir.Constant(I64, r))) for r in range(rows)] for i in at_rows]
                with for_range(b, count, "col") as u:
                    column = b.mul(b.add(first, u, flags=["nsw"]), ir.Constant(I64, vw), flags=["nsw"])
                    weights = [b.load(vector(pb, _index(b, (b.add(p0, ir.Constant(I64, r)), n), (column, 1)), width),
                                      align=1) for r in range(rows)]
                    for i, a_i in zip(at_rows, a):
                        at = local_at(i, u)
                        acc = b.load(at, align=vw * _bytes(ty))
                        for r in range(rows):
                            acc = b.fadd(acc, b.fmul(a_i[r], weights[r], flags=CONTRACT), flags=CONTRACT)
                        b.store(acc, at, align=vw * _bytes(ty))

            if isinstance(m, int):
                group(ir.Constant(I64, 0), m)
            else:
                row_blocks(b, m, row_group, group)

        blocks, rest = divmod(k, K_BLOCK)
        if blocks:
            with for_range(b, ir.Constant(I64, blocks), "kblock") as kb:
                rows_of_b(b.mul(kb, ir.Constant(I64, K_BLOCK), flags=["nsw"]), K_BLOCK)
        if rest:
            rows_of_b(ir.Constant(I64, blocks * K_BLOCK), rest)

        def store(i, u):
            total, at = b.load(local_at(i, u), align=vw * _bytes(ty)), c_at(i, u)
            if scaled_form:
                old = b.fmul(splat_vector(b, beta, vty), b.load(at, align=1), flags=CONTRACT)
                total = b.fadd(total, old, flags=CONTRACT)
            b.store(total, at, align=1)

        with for_range(b, count, "store") as u:
            each_row(lambda i: store(i, u))

    count = count_below(b, start, end, ir.Constant(I64, full))
    blocks = b.udiv(b.add(count, ir.Constant(I64, BLOCK_VECTORS - 1)), ir.Constant(I64, BLOCK_VECTORS))
    with for_range(b, blocks, "block") as j:
        done = b.mul(j, ir.Constant(I64, BLOCK_VECTORS), flags=["nsw"])
        left = b.sub(count, done)
        width = b.select(b.icmp_signed("<", left, ir.Constant(I64, BLOCK_VECTORS)), left,
                         ir.Constant(I64, BLOCK_VECTORS))
        block(b.add(start, done, flags=["nsw"]), width, vw)
    if tail:
        with b.if_then(b.icmp_signed(">", end, ir.Constant(I64, full))):
            block(ir.Constant(I64, full), ir.Constant(I64, 1), tail)


def _dot_columns(b, pa, pb, pc, m, n, k, trans_a, columns, start, end, scale, vw):
    """C[:, tiles start..end) for B n x k: tile t is columns [t c, t c + c) for c = columns
    (the last one narrower when c does not divide n), row groups of at most MR."""
    with scratch_scope(b) if trans_a else nullcontext() as take:
        if trans_a:  # the dot tiles read A's rows contiguous: transpose the (m <= 8 rows) A once
            pa = _packed_rows(b, take, pa, m, k)
        _dot_tiles(b, DotTile(b, pc.type.pointee, pa, pb, pc, n, k, vw, scale), m, n, columns, start, end)


def _dot_tiles(b, tile, m, n, columns, start, end):
    """The dot tiles of C[:, tiles start..end) (_dot_columns)."""
    full, tail = divmod(n, columns)
    count = count_below(b, start, end, ir.Constant(I64, full))

    def row_groups(j0, cols):
        row_blocks(b, m, MR, lambda i0, rows, live=None: tile.emit(i0, j0, rows, cols, live), padded=True)

    with for_range(b, count, "tile") as t:
        row_groups(b.mul(b.add(start, t, flags=["nsw"]), ir.Constant(I64, columns), flags=["nsw"]), columns)
    if tail:
        with b.if_then(b.icmp_signed(">", end, ir.Constant(I64, full))):
            row_groups(ir.Constant(I64, full * columns), tail)


def _packed_rows(b, take, pa, m, k):
    """A copy of an operand held k x m, laid out m x k (m an int or an i64 value), in a buffer of
    take's (cgutils.scratch_scope)."""
    ty = pa.type.pointee
    buffer = b.bitcast(take(product(b, m, k, _bytes(ty)), SCRATCH_ALIGN), ty.as_pointer())

    def row(p, i):
        value = b.load(b.gep(pa, [_index(b, (p, m), (i, 1))], inbounds=True))
        b.store(value, b.gep(buffer, [_index(b, (i, k), (p, 1))], inbounds=True))

    with for_range(b, ir.Constant(I64, k), "pack_p") as p:
        if isinstance(m, int):
            for i in range(m):
                row(p, i)
        else:
            with for_range(b, m, "pack_i") as i:
                row(p, i)
    return buffer
