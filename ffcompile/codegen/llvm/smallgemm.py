"""A register-tiled float GEMM in LLVM IR, for products too small to pay for a BLAS call.

Shapes are compile-time constants, so every tile and remainder is fixed when
the IR is emitted; but m and k may be i64 values known at run time (a symbolic batch
size, runtime_gemm.py): then the row blocks and the k loop run a run-time number of
times, and the last rows are a switch over the MR - 1 possible remainders. C is cut into MR x NR tiles (NR = PANEL_VECTORS vectors of
target.vector_bytes() each: 512-bit with AVX-512, whose full-width FMA units, as on
Zen 5, double the rate: digits step 94 -> 63 us); a tile's accumulators are phis of the k loop (k
innermost), so they live in registers: per k step, the tile reads one row of
B as vectors and broadcasts MR scalars of A into fused multiply-adds. Edge
tiles use fewer rows and narrower vectors (LLVM legalizes odd widths).

op(A) is read element by element through strides. A transposed A is still
packed row-major into a scratch buffer (O(mk) work against O(mnk)) when C has
several panels: its column stride (a multiple of 512 bytes for 128-wide f64)
maps the k elements a tile reads into a few L1 sets, which every panel
re-reads (measured: 128x128x64 f64 went from 0.66x to 0.96x of the BLAS call).
op(B) = B^T (B held n x k, rows contiguous in p) with A untransposed is a
dot-product tile: one vector accumulator per C element, summed across lanes at
the end; for short k, and when A is transposed too, B is packed instead.

The tile loops (row blocks, panels, k) are marked `llvm.loop.unroll.disable`: they are
tiled by hand, and LLVM's unrolling tripled their code for nothing (a 128x64x64 product: 532
-> 168 instructions after O3; the digits step's module compiled in 207 instead of 281 ms, its
step time unchanged within noise).
"""
from __future__ import annotations

import functools
from contextlib import nullcontext

from llvmlite import ir

from .cgutils import accumulate_loop, count_below, for_range, scratch_scope
from .elementwise import CONTRACT, I64
from .target import vector_bytes

MR = 6  # rows of C per tile: 12 accumulators; the best of 4, 6, 8 x 2, 3 (deep step, 1 thread: 5.4 -> 4.6 ms)
PANEL_VECTORS = 2  # vectors per tile row: MR * PANEL_VECTORS accumulators
# (rows, columns) of C per dot-product tile, by vector bytes: rows x columns vector accumulators
# plus the A and B vectors of a k step must fit the registers (32 zmm with AVX-512, 16 ymm with
# AVX2). 6 x 4 at 256 bits spilled: 64x256x256 with B transposed, 1 thread, 114-187 us; 4 x 3:
# 69-72 us (3 x 4: 102, 2 x 4: 74, 4 x 2: 74).
DOT_TILES = {64: (6, 4), 32: (4, 3)}
DOT_MIN_K = 4  # k (in vectors) below which the lane sums cost more than packing B
PACK_A_MIN_PANELS = 2  # panels of C above which a transposed A is packed (see module doc)
SCRATCH_ALIGN = 64  # bytes: a packed operand's alignment (a cache line)
PACK_MAX_BYTES = 256 * 1024  # a packed operand's most bytes; larger products take another path
PACK_BLOCK_ROWS = 8  # rows of a packed copy written a block at a time (packed_transpose)


def small_gemm_fits(m: int, n: int, k: int, trans_a: bool, trans_b: bool, itemsize: int) -> bool:
    """Whether the operands emit_small_gemm would pack fit in PACK_MAX_BYTES."""
    _, pack_a, pack_b = _plan(m, n, k, trans_a, trans_b, vector_bytes() // itemsize)
    return max(pack_a * m * k, pack_b * k * n) * itemsize <= PACK_MAX_BYTES


def small_gemm_bytes(b: ir.IRBuilder, m, n: int, k, trans_a: bool, trans_b: bool, itemsize: int) -> ir.Value | None:
    """The bytes emit_small_gemm packs for run-time m or k (i64 values), or None if it packs nothing."""
    _, pack_a, pack_b = _plan(m, n, k, trans_a, trans_b, vector_bytes() // itemsize)
    sizes = [product(b, rows, cols, itemsize) for packed, rows, cols in ((pack_a, m, k), (pack_b, k, n)) if packed]
    if not sizes:
        return None
    return sizes[0] if len(sizes) == 1 else b.select(b.icmp_signed(">", sizes[0], sizes[1]), *sizes)


def as_i64(x) -> ir.Value:
    """An int as an i64 constant; an i64 value as it is."""
    return x if isinstance(x, ir.Value) else ir.Constant(I64, x)


def product(b: ir.IRBuilder, *factors) -> ir.Value:
    """The i64 product of ints and i64 values (the ints folded first)."""
    const, values = 1, []
    for f in factors:
        if isinstance(f, ir.Value):
            values.append(f)
        else:
            const *= f
    total = values[0] if values else ir.Constant(I64, const)
    for v in values[1:]:
        total = b.mul(total, v, flags=["nsw"])
    return total if const == 1 or not values else b.mul(total, ir.Constant(I64, const), flags=["nsw"])


def _plan(m, n, k, trans_a, trans_b, vw) -> tuple[bool, bool, bool]:
    """(dot-product tiles?, pack A?, pack B?) for vectors of vw elements (a run-time k: no dot
    tiles, whose k loop is unrolled by vectors)."""
    if trans_b and not trans_a and isinstance(k, int) and k >= DOT_MIN_K * vw:
        return True, False, False
    return False, trans_a and n > PACK_A_MIN_PANELS * vw * PANEL_VECTORS, trans_b


def tile_shape(m, n: int, k, trans_a: bool, trans_b: bool, itemsize: int) -> tuple[int, int]:
    """(rows, columns) of C per tile of emit_small_gemm's product (the columns: a panel)."""
    vw = vector_bytes() // itemsize
    if _plan(m, n, k, trans_a, trans_b, vw)[0]:
        return DOT_TILES[vector_bytes()]
    return MR, vw * PANEL_VECTORS


def emit_small_gemm(b: ir.IRBuilder, pa, pb, pc, m, n: int, k, trans_a: bool, trans_b: bool,
                    scale: tuple[ir.Value, ir.Value] | None = None, lda=None,
                    panels: tuple[ir.Value, ir.Value] | None = None) -> None:
    """C = op(A) op(B) for float pointers pa, pb, pc (row-major, C is m x n, k >= 1);
    with scale = (alpha, beta): C = alpha * op(A) op(B) + beta * C. m and k: ints, or i64
    values (>= 1) known at run time. lda: a transposed A's row stride when its m columns are
    part of a wider matrix (default m). panels = (start, end), i64 values: only C's columns
    of panels start to end - 1 (tile_shape's columns each; the last one may be narrower)."""
    ty = pc.type.pointee
    vw = vector_bytes() // float_bytes(ty)
    dot, pack_a, pack_b = _plan(m, n, k, trans_a, trans_b, vw)
    if dot:
        _tile_loops(b, m, n, *DOT_TILES[vector_bytes()], DotTile(b, ty, pa, pb, pc, n, k, vw, scale).emit, panels)
        return
    with scratch_scope(b) if pack_a or pack_b else nullcontext() as take:
        if pack_a:
            pa, trans_a = packed_transpose(b, take, pa, m, k, lda), False
        if pack_b:
            pb = packed_transpose(b, take, pb, k, n)
        a_i, a_p = (1, lda or m) if trans_a else (k, 1)
        tile = _Tile(b, ty, pa, pb, pc, n, k, a_i, a_p, scale)

        def emit(i0, j0, rows, cols, live):
            tile.emit(i0, j0, rows, [vw] * (cols // vw) + ([cols % vw] if cols % vw else []), live)

        _tile_loops(b, m, n, MR, vw * PANEL_VECTORS, emit, panels)


def packs_a(m, n: int, k, trans_a: bool, trans_b: bool, itemsize: int) -> bool:
    """Whether emit_small_gemm packs a transposed A (row-major) before its tiles."""
    return _plan(m, n, k, trans_a, trans_b, vector_bytes() // itemsize)[1]


def _tile_loops(b: ir.IRBuilder, m, n: int, mr: int, nr: int, emit, panels=None) -> None:
    """Call emit(i0, j0, rows, cols, live) over mr x nr tiles of an m x n C, then its edge tiles
    (m an int, or an i64 value: row_blocks, padded); panels = (start, end): only those of C's
    n / nr panels (the narrower last one counted)."""
    full = ir.Constant(I64, n // nr)
    if panels is None:
        first, count, edge = ir.Constant(I64, 0), full, bool(n % nr)
    else:
        first, end = panels
        count = count_below(b, first, end, full)
        edge = b.icmp_signed(">", end, full) if n % nr else False

    def row_block(i0: ir.Value, rows: int, live=None) -> None:
        with for_range(b, count, "panel", unroll=False) as panel:
            emit(i0, b.mul(b.add(first, panel) if panels else panel, ir.Constant(I64, nr), flags=["nsw"]), rows, nr, live)
        if edge is True:
            emit(i0, ir.Constant(I64, n // nr * nr), rows, n % nr, live)
        elif edge is not False:
            with b.if_then(edge):
                emit(i0, ir.Constant(I64, n // nr * nr), rows, n % nr, live)

    row_blocks(b, m, mr, row_block, padded=True)


def row_blocks(b: ir.IRBuilder, m, mr: int, row_block, padded: bool = False) -> None:
    """Call row_block(i0, rows) over blocks of mr rows of m (i0 an i64 value, rows an int), the
    last one shorter. m an int, or an i64 value: then the short block is a switch on m % mr,
    or, padded, row_block(i0, mr, live) with `live` (an i64 value) of its mr rows real: one
    block's code where a switch builds 1 + ... + (mr - 1) rows of it (smallgemm's tiles: a
    third of the code, the whole GEMM's build time about halved)."""
    if isinstance(m, int):
        with for_range(b, ir.Constant(I64, m // mr), "rowblock", unroll=False) as block:
            row_block(b.mul(block, ir.Constant(I64, mr), flags=["nsw"]), mr)
        if m % mr:
            row_block(ir.Constant(I64, m // mr * mr), m % mr)
        return
    mr_ = ir.Constant(I64, mr)
    with for_range(b, b.udiv(m, mr_), "rowblock", unroll=False) as block:
        row_block(b.mul(block, mr_, flags=["nsw"]), mr)
    first = b.mul(b.udiv(m, mr_), mr_, flags=["nsw"])
    if padded:
        live = b.urem(m, mr_)
        with b.if_then(b.icmp_signed(">", live, ir.Constant(I64, 0))):
            row_block(first, mr, live)
        return
    end = b.append_basic_block("rowblock.edge.end")
    switch = b.switch(b.urem(m, mr_), end)
    for rows in range(1, mr):
        case = b.append_basic_block(f"rowblock.edge{rows}")
        switch.add_case(ir.Constant(I64, rows), case)
        b.position_at_end(case)
        row_block(first, rows)
        b.branch(end)
    b.position_at_end(end)


def padded_rows(b: ir.IRBuilder, i0: ir.Value, rows: int, live: ir.Value | None):
    """(row indices, stored) of a tile of `rows` rows at i0 of which the first `live` are real
    (None: all): rows past them read row i0 (computed, never stored); `with stored(r):` wraps
    row r's stores (a branch on live for the padded rows)."""
    at = [i0 if r == 0 else b.add(i0, ir.Constant(I64, r), flags=["nsw"]) for r in range(rows)]
    if live is None:
        return at, lambda r: nullcontext()
    real = [None] + [b.icmp_signed("<", ir.Constant(I64, r), live) for r in range(1, rows)]
    return ([i if r == 0 else b.select(real[r], i, i0) for r, i in enumerate(at)],
            lambda r: nullcontext() if r == 0 else b.if_then(real[r]))


def float_bytes(ty: ir.Type) -> int:
    return {ir.FloatType: 4, ir.DoubleType: 8}[type(ty)]


@functools.cache  # built (and formatted) once: a constant's lanes are one Python object each
def _lane_zero_mask(count: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(ir.IntType(32), count), [0] * count)


def splat_vector(b: ir.IRBuilder, x: ir.Value, vty: ir.VectorType) -> ir.Value:
    """A vector of vty with x in every lane."""
    return b.shuffle_vector(b.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(I64, 0)),
                            ir.Constant(vty, ir.Undefined), _lane_zero_mask(vty.count))


def _scaled(b: ir.IRBuilder, total: ir.Value, ptr: ir.Value, scale, align: int | None = None) -> ir.Value:
    """alpha * total + beta * *ptr for scale = (alpha, beta) (scalars, splat to total's type);
    total itself without scale."""
    if scale is None:
        return total
    alpha, beta = (splat_vector(b, s, total.type) if isinstance(total.type, ir.VectorType) else s for s in scale)
    old = b.load(ptr, align=align)
    return b.fadd(b.fmul(alpha, total, flags=CONTRACT), b.fmul(beta, old, flags=CONTRACT), flags=CONTRACT)


def packed_transpose(b: ir.IRBuilder, take, ptr, rows, cols, stride=None):
    """A copy of an operand held cols x rows (row stride `stride`, default rows), laid out
    rows x cols (row-major), in a buffer of take's (cgutils.scratch_scope); rows, cols and
    stride ints or i64 values."""
    ty = ptr.type.pointee
    buffer = b.bitcast(take(product(b, rows, cols, float_bytes(ty)), SCRATCH_ALIGN), ty.as_pointer())
    rows, cols, stride = as_i64(rows), as_i64(cols), as_i64(stride or rows)
    # By blocks of PACK_BLOCK_ROWS rows, each in source order (contiguous reads) across all
    # columns, so a block's stores fall in PACK_BLOCK_ROWS lines of the buffer, which stay in
    # L1. Over all rows at once, every store of a column was to another line (64x256's A^T,
    # 256 lines a column: a store missed L1 each time, 32 of deep's dW's 108 us at 256 bits).
    # The other order vectorized into gathers that O3 unrolled whole (512x10: 320 gathers, 87
    # of the mnist step's 150 ms of machine code emission).
    block = ir.Constant(I64, PACK_BLOCK_ROWS)
    blocks = b.udiv(b.add(rows, ir.Constant(I64, PACK_BLOCK_ROWS - 1)), block)
    with for_range(b, blocks, "pack_block", unroll=False) as blk:
        first = b.mul(blk, block, flags=["nsw"])
        left = b.sub(rows, first)
        count = b.select(b.icmp_signed("<", left, block), left, block)
        with for_range(b, cols, "pack_col") as c, for_range(b, count, "pack_row") as i:
            r = b.add(first, i, flags=["nsw"])
            src = b.gep(ptr, [b.add(b.mul(c, stride, flags=["nsw"]), r, flags=["nsw"])], inbounds=True)
            dst = b.gep(buffer, [b.add(b.mul(r, cols, flags=["nsw"]), c, flags=["nsw"])], inbounds=True)
            b.store(b.load(src), dst)
    return buffer


class _Tile:
    """Emits one rows x sum(widths) tile of C at (i0, j0)."""

    def __init__(self, b, ty, pa, pb, pc, n, k, a_i, a_p, scale):
        self.b, self.ty, self.pa, self.pb, self.pc = b, ty, pa, pb, pc
        self.n, self.k, self.a_i, self.a_p, self.scale = n, k, a_i, a_p, scale

    def _at(self, ptr, *terms):
        """&ptr[sum(index * stride)] (a stride: an int or an i64 value)"""
        b = self.b
        offset = None
        for index, stride in terms:
            term = index if isinstance(stride, int) and stride == 1 else b.mul(index, as_i64(stride), flags=["nsw"])
            offset = term if offset is None else b.add(offset, term, flags=["nsw"])
        return b.gep(ptr, [offset], inbounds=True)

    def _vector_at(self, ptr, row, row_stride, col, width):
        vty = ir.VectorType(self.ty, width)
        return self.b.bitcast(self._at(ptr, (row, row_stride), (col, 1)), vty.as_pointer())

    def emit(self, i0: ir.Value, j0: ir.Value, rows: int, widths: list[int], live: ir.Value | None = None) -> None:
        """The tile; with `live` (an i64 value >= 1), only its first `live` rows are C's (padded_rows)."""
        b, ty = self.b, self.ty
        align = float_bytes(ty)
        cols = []  # (column index, width) of each vector of a tile row
        offset = 0
        for width in widths:
            cols.append((j0 if offset == 0 else b.add(j0, ir.Constant(I64, offset), flags=["nsw"]), width))
            offset += width
        rows_at, stored = padded_rows(b, i0, rows, live)

        def k_step(p, accs):
            """accs (row-major over rows_at x cols) += A[rows, p] * B[p, cols]"""
            b_rows = [b.load(self._vector_at(self.pb, p, self.n, col, width), align=align) for col, width in cols]
            new = []
            for r, i in enumerate(rows_at):
                a_ip = b.load(self._at(self.pa, (i, self.a_i), (p, self.a_p)))
                splats = {}  # one per vector width of the row (the emitted IR is as O3 leaves it)
                for acc, b_row in zip(accs[r * len(cols):(r + 1) * len(cols)], b_rows):
                    if b_row.type not in splats:
                        splats[b_row.type] = splat_vector(b, a_ip, b_row.type)
                    new.append(b.fadd(acc, b.fmul(splats[b_row.type], b_row, flags=CONTRACT), flags=CONTRACT))
            return new

        zeros = [ir.Constant(ir.VectorType(ty, width), None) for _ in rows_at for _, width in cols]  # zeroinitializer
        totals = accumulate_loop(b, self.k, zeros, k_step, "tile.k", unroll=False)
        for r, i in enumerate(rows_at):
            with stored(r):
                for (col, width), total in zip(cols, totals[r * len(cols):(r + 1) * len(cols)]):
                    at = self._vector_at(self.pc, i, self.n, col, width)
                    b.store(_scaled(b, total, at, self.scale, align), at, align=align)


class DotTile:
    """Emits one rows x cols tile of C = A B^T (A m x k, B n x k, both rows contiguous in p):
    each C element is a vector accumulator over p, reduced across lanes at the end."""

    def __init__(self, b, ty, pa, pb, pc, n, k, vw, scale):
        self.b, self.ty, self.pa, self.pb, self.pc = b, ty, pa, pb, pc
        self.n, self.k, self.vw, self.scale = n, k, vw, scale

    def _load(self, ptr, row, p, width):
        b = self.b
        at = b.add(b.mul(row, ir.Constant(I64, self.k), flags=["nsw"]), p, flags=["nsw"])
        vty = ir.VectorType(self.ty, width)
        return b.load(b.bitcast(b.gep(ptr, [at], inbounds=True), vty.as_pointer()), align=float_bytes(self.ty))

    def _products(self, a_rows, b_rows, p, width, accs=None):
        """accs[r][c] + A[r, p:p+width] * B[c, p:p+width] (lanewise) for the whole tile."""
        b = self.b
        a_vecs = [self._load(self.pa, i, p, width) for i in a_rows]
        b_vecs = [self._load(self.pb, j, p, width) for j in b_rows]
        out = []
        for r, av in enumerate(a_vecs):
            row = []
            for c, bv in enumerate(b_vecs):
                product = b.fmul(av, bv, flags=CONTRACT)
                row.append(product if accs is None else b.fadd(accs[r][c], product, flags=CONTRACT))
            out.append(row)
        return out

    def _lane_sum(self, v):
        """The sum of v's lanes as a tree of halving vector adds (log2 steps, not a scalar chain)."""
        b, odd = self.b, None
        width = v.type.count
        while width > 1:
            half = width // 2
            if width % 2:
                last = b.extract_element(v, ir.Constant(I64, width - 1))
                odd = last if odd is None else b.fadd(odd, last)
            lanes = [ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(start, start + half)))
                     for start in (0, half)]
            undef = ir.Constant(v.type, ir.Undefined)
            v = b.fadd(b.shuffle_vector(v, undef, lanes[0]), b.shuffle_vector(v, undef, lanes[1]))
            width = half
        total = b.extract_element(v, ir.Constant(I64, 0))
        return total if odd is None else b.fadd(total, odd)

    def emit(self, i0: ir.Value, j0: ir.Value, rows: int, cols: int, live: ir.Value | None = None) -> None:
        """The tile; with `live` (an i64 value >= 1), only its first `live` rows are C's (padded_rows)."""
        b, ty, vw = self.b, self.ty, self.vw
        a_rows, stored = padded_rows(b, i0, rows, live)
        b_rows = [b.add(j0, ir.Constant(I64, c), flags=["nsw"]) for c in range(cols)]
        sums = [[None] * cols for _ in range(rows)]
        steps, tail = divmod(self.k, vw)
        if steps:
            def k_step(s, accs):
                p = b.mul(s, ir.Constant(I64, vw), flags=["nsw"])
                tile = [accs[r * cols:(r + 1) * cols] for r in range(rows)]
                return [v for row in self._products(a_rows, b_rows, p, vw, tile) for v in row]

            zero = ir.Constant(ir.VectorType(ty, vw), None)  # zeroinitializer
            totals = accumulate_loop(b, steps, [zero] * (rows * cols), k_step, "dot.k", unroll=False)
            sums = [[self._lane_sum(v) for v in totals[r * cols:(r + 1) * cols]] for r in range(rows)]
        if tail:
            rest = self._products(a_rows, b_rows, ir.Constant(I64, steps * vw), tail)
            sums = [[self._lane_sum(v) if total is None else b.fadd(total, self._lane_sum(v))
                     for total, v in zip(total_row, row)] for total_row, row in zip(sums, rest)]
        for r, (i, row) in enumerate(zip(a_rows, sums)):
            with stored(r):
                for j, total in zip(b_rows, row):
                    at = b.add(b.mul(i, ir.Constant(I64, self.n), flags=["nsw"]), j, flags=["nsw"])
                    ptr = b.gep(self.pc, [at], inbounds=True)
                    b.store(_scaled(b, total, ptr, self.scale), ptr)
