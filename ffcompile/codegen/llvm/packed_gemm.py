"""A BLIS-style packed float GEMM in LLVM IR, for products above smallgemm's range.

C (m x n) is cut into blocks of MC rows x NC columns, split across the thread
pool panel by panel (a chunk's blocks share column panels). For each of its
panels, a chunk loops over KC steps of k: it packs B's KC x NC panel into
slivers of NR columns (p-major, zero-padded), then, block by block, the A rows
into slivers of MR rows, and runs the MR x NR micro-kernel over every pair of
slivers: MR x NR/vw vector accumulators (registers) over kc broadcast-FMA steps,
reading both packs contiguously whatever the operands' transposes. The first k step writes
alpha * AB + beta * C (AB without a scale: C is not read, it may hold anything),
later ones add. Edge tiles compute the full padded tile and copy its valid part. A fused
epilogue (bias, activation, ...: lower.py's column_epilogue) runs on each block of C right
after its last k step, while the block (MC x NC, sized for L2) is still in cache.

Block sizes come from the host's caches (sysfs; a common default otherwise):
a B sliver (KC x NR) fills half of L1, an A block (MC x KC) a quarter of L2,
and the packs live on the stack (STACK_BYTES at most), which bounds NC. A product
of few row blocks gets narrower panels, so that it makes MIN_UNITS blocks for the
pool (each thread packs only its panels of B: splitting rows alone made each
thread pack all of B, which cost as much as the product at m = 128). The vector
width is the host's (target.vector_bytes) unless given: tests force the narrower
one, and LLVM legalizes the wider one on any host. Each block of C is computed
by the same code in any chunk: results do not depend on the thread count.
Whether a product runs here or calls BLAS is measured per host (packed_beats_blas).

The packs copy whole slivers in vectors: a vector a k step where the source runs along the
sliver (B, A^T), else (A, B^T) 8 k steps at a time, transposed in registers. So the function
is compiled compact (cgutils.compiled_compact: `optsize`, where O3 had unrolled the scalar
packing loops and vectorized them into gathers and scatters, 2/3 of its compile time).
Side by side with those scalar packs under O3 (one process, the disk cache off; one thread,
thread CPU time; a loaded 2-core Zen 5): the mnist step's cold compile 1.26 -> 0.66 s and its
step 0.72x (2 threads, wall: 0.70x), wide's 2.17 -> 1.16 s and 0.83x (0.85x).
"""
from __future__ import annotations

import functools
from pathlib import Path

from llvmlite import ir

from .cgutils import accumulate_loop, compiled_compact, for_range
from .elementwise import CONTRACT, I64, ColumnEpilogue
from .gemm_calibration import class_key, forced_route, measured
from .smallgemm import float_bytes, splat_vector
from .target import vector_bytes
from .threadpool import emit_parallel_for, get_num_threads

SLIVER_VECTORS = 2  # vectors per micro-tile row (NR = 2 vw)
MR_BY_VECTOR_BYTES = {32: 6, 64: 8}  # 12 of 16 ymm, 16 of 32 zmm registers hold the tile
STACK_BYTES = 1 << 20  # both packs of one chunk (worker threads have glibc's 8 MiB stacks)
MIN_CHUNK_WORK = 2 ** 21  # multiply-adds a thread's chunk at least (~50 us)
DEFAULT_CACHE_BYTES = {1: 32 << 10, 2: 512 << 10}
MIN_UNITS = 8  # blocks of C (MC x NC) at least, if n allows: 2 chunks for each of 4 threads
TRANSPOSE_STEPS = 8  # k steps of a sliver transposed in registers at a time, in groups of as many lanes
MIN_PANEL_SLIVERS = 4  # NC shrinks for MIN_UNITS to no fewer slivers (an A block is packed per panel)


@functools.cache
def cache_bytes(level: int) -> int:
    """The host's data (or unified) cache of `level` per core, from Linux's sysfs."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            if int((index / "level").read_text()) == level and kind in ("Data", "Unified"):
                size = (index / "size").read_text().strip()
                return int(size[:-1]) << 10 if size.endswith("K") else int(size)
        except (OSError, ValueError):
            break
    return DEFAULT_CACHE_BYTES[level]


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


def block_sizes(m: int, n: int, k: int, itemsize: int, vbytes: int) -> tuple[int, int, int, int, int]:
    """(MR, NR, MC, KC, NC) for this product and vector width."""
    mr, nr = MR_BY_VECTOR_BYTES[vbytes], SLIVER_VECTORS * vbytes // itemsize
    kc = min(k, max(16, cache_bytes(1) // 2 // (nr * itemsize) // 8 * 8))
    mc = min(_round_up(m, mr), max(mr, cache_bytes(2) // 4 // (kc * itemsize) // mr * mr))
    nc = min(_round_up(n, nr), max(nr, (STACK_BYTES // itemsize - mc * kc) // kc // nr * nr))
    panels = -(-MIN_UNITS // -(-m // mc))  # column panels that make MIN_UNITS blocks of C
    nc = min(nc, max(MIN_PANEL_SLIVERS * nr, _round_up(-(-n // panels), nr)))
    return mr, nr, mc, kc, nc


def default_block_sizes(m: int, n: int, k: int, itemsize: int) -> tuple[int, int, int, int, int]:
    """block_sizes at the vector width emit_packed_gemm takes by default."""
    return block_sizes(m, n, k, itemsize, vector_bytes())


def packed_beats_blas(m: int, n: int, k: int, itemsize: int, blas_threads: int | None) -> bool:
    """Whether blas.gemm_route sends a product above smallgemm's range here instead of to BLAS:
    as forced (FFCOMPILE_GEMM_ROUTE, route_forced), else as measured on this host for the
    product's shape class at the pool's and the BLAS's thread counts and this vector width
    (gemm_calibration.py; calibrate.py measures a class a program needs when it is built). An
    unmeasured class keeps BLAS. The choice is part of the disk cache's key (lower.gemm_routes)."""
    forced = forced_route()
    if forced is not None:
        return forced == "packed"
    found = measured(route_key(m, n, k, itemsize, blas_threads))
    return found is not None and found["packed_seconds"] < found["blas_seconds"]


def route_key(m: int, n: int, k: int, itemsize: int, blas_threads: int | None) -> str:
    """The calibration record that decides this product's route now: its class at the pool's
    and the BLAS's thread counts and this kernel's vector width."""
    return class_key(m, n, k, itemsize, get_num_threads(), blas_threads, vector_bytes())


def emit_packed_gemm(b: ir.IRBuilder, pa, pb, pc, m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                     scale: tuple[ir.Value, ir.Value] | None = None, vbytes: int | None = None,
                     epilogue: ColumnEpilogue | None = None) -> None:
    """C = op(A) op(B) (C row-major m x n, k >= 1); with scale = (alpha, beta):
    C = alpha op(A) op(B) + beta C. vbytes: the vector width (default: the host's). An
    epilogue runs on each block of C as soon as its last k step is stored (still in L2),
    in the chunk that computed it: the caller makes sure it writes over neither operand
    (lower._fuses_epilogue), which other chunks may still be reading."""
    ty = pc.type.pointee
    itemsize = float_bytes(ty)
    vbytes = vbytes or vector_bytes()
    mr, nr, mc, kc, nc = block_sizes(m, n, k, itemsize, vbytes)
    kernel = _Kernel(ty, m, n, k, trans_a, trans_b, scale is not None, mr, nr, mc, kc, nc, vbytes // itemsize)
    kernel.epilogue = epilogue
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))
    blocks = -(-m // mc) * -(-n // nc)
    grain = max(1, -(-MIN_CHUNK_WORK // (mc * nc * k)))
    extra = epilogue.values if epilogue is not None else []
    emit_parallel_for(b, "packed_gemm", [pa, pb, pc, alpha, beta, *extra], blocks, grain, kernel.emit_blocks)


class _Kernel:
    """The body of one chunk of blocks of C; every size but the chunk's bounds is a constant."""

    def __init__(self, ty, m, n, k, trans_a, trans_b, scaled, mr, nr, mc, kc, nc, vw):
        self.ty, self.m, self.n, self.k = ty, m, n, k
        self.trans_a, self.trans_b, self.scaled = trans_a, trans_b, scaled
        self.mr, self.nr, self.mc, self.kc, self.nc, self.vw = mr, nr, mc, kc, nc, vw
        self.epilogue: ColumnEpilogue | None = None

    def const(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def min(self, b, x, limit: int):
        """min(x, limit) for an i64 x."""
        return b.select(b.icmp_signed("<", x, self.const(limit)), x, self.const(limit))

    def emit_blocks(self, b: ir.IRBuilder, values, start, end) -> None:
        pa, pb, pc, alpha, beta = values[:5]
        self.b, self.pa, self.pb, self.pc, self.alpha, self.beta = b, pa, pb, pc, alpha, beta
        compiled_compact(b.function)
        with b.goto_entry_block():
            self.a_pack = b.alloca(self.ty, size=self.const(self.mc * self.kc), name="a_pack")
            self.b_pack = b.alloca(self.ty, size=self.const(self.kc * self.nc), name="b_pack")
            self.tile = b.alloca(self.ty, size=self.const(self.mr * self.nr), name="edge_tile")
            for buffer in (self.a_pack, self.b_pack, self.tile):
                buffer.align = 64
        row_blocks = -(-self.m // self.mc)
        last = self.min(b, end, row_blocks * -(-self.n // self.nc))
        first_panel = b.sdiv(start, self.const(row_blocks))
        panels = b.sub(b.sdiv(b.add(last, self.const(row_blocks - 1)), self.const(row_blocks)), first_panel)
        panels = b.select(b.icmp_signed("<", start, last), panels, self.const(0))
        k_steps = -(-self.k // self.kc)
        with for_range(b, panels, "jc") as j:
            jcb = b.add(first_panel, j)
            jc = b.mul(jcb, self.const(self.nc))
            ncols = self.min(b, b.sub(self.const(self.n), jc), self.nc)
            panel_start = b.mul(jcb, self.const(row_blocks))  # the unit of its first row block
            low = b.sub(b.select(b.icmp_signed(">", start, panel_start), start, panel_start), panel_start)
            panel_end = b.add(panel_start, self.const(row_blocks))
            high = b.sub(b.select(b.icmp_signed("<", last, panel_end), last, panel_end), panel_start)
            with for_range(b, self.const(k_steps), "pc") as pcb:
                p0 = b.mul(pcb, self.const(self.kc))
                depth = self.min(b, b.sub(self.const(self.k), p0), self.kc)
                self._pack(self.b_pack, ncols, self.nr, depth, lambda j, p: self._b_at(b.add(p0, p), b.add(jc, j)),
                           lanes_inner=not self.trans_b)
                first = b.icmp_signed("==", pcb, self.const(0))
                with for_range(b, b.sub(high, low), "ic") as i:
                    ic = b.mul(b.add(low, i), self.const(self.mc))
                    nrows = self.min(b, b.sub(self.const(self.m), ic), self.mc)
                    self._pack(self.a_pack, nrows, self.mr, depth, lambda r, p: self._a_at(b.add(ic, r), b.add(p0, p)),
                               lanes_inner=self.trans_a)
                    self._macro(ic, jc, nrows, ncols, depth, first)
                    if self.epilogue is not None:  # the block of C is final after the last k step
                        with b.if_then(b.icmp_signed("==", pcb, self.const(k_steps - 1))):
                            self._epilogue(values[5:], jc, b.add(jc, ncols), ic, b.add(ic, nrows))

    def _epilogue(self, values, j0, j1, i0, i1) -> None:
        """Call the fused epilogue on rows [i0, i1) and columns [j0, j1) of C: a function of its
        own, compiled in full, since in this compact one LLVM would not vectorize its loops."""
        module = self.b.module
        types = [v.type for v in values] + [I64] * 4
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), types), module.get_unique_name("packed_gemm.epilogue"))
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        eb = ir.IRBuilder(fn.append_basic_block("entry"))
        *loaded, c0, c1, r0, r1 = fn.args
        self.epilogue.emit(eb, list(loaded), c0, c1, rows=(r0, r1))
        eb.ret_void()
        self.b.call(fn, [*values, j0, j1, i0, i1])

    def _a_at(self, i, p):
        b = self.b
        at = b.add(b.mul(p, self.const(self.m)), i) if self.trans_a else b.add(b.mul(i, self.const(self.k)), p)
        return b.gep(self.pa, [at], inbounds=True)

    def _b_at(self, p, j):
        b = self.b
        at = b.add(b.mul(j, self.const(self.k)), p) if self.trans_b else b.add(b.mul(p, self.const(self.n)), j)
        return b.gep(self.pb, [at], inbounds=True)

    def _pack(self, pack, extent, width: int, depth, source, lanes_inner: bool) -> None:
        """pack[s][p][w] = source(s * width + w, p), zero where s * width + w >= extent: slivers
        of `width` rows (A) or columns (B), each depth x width, p-major. lanes_inner: w is the
        inner loop (the source contiguous along w), else p."""
        b = self.b
        slivers = b.sdiv(b.add(extent, self.const(width - 1)), self.const(width))
        zero = ir.Constant(self.ty, 0.0)

        def copy(base, out, w, p):
            index = b.add(base, w)
            inside = b.icmp_signed("<", index, extent)
            value = b.load(source(b.select(inside, index, self.const(0)), p))
            b.store(b.select(inside, value, zero), b.gep(out, [b.add(b.mul(p, self.const(width)), w)], inbounds=True))

        def scalar(base, out):
            if lanes_inner:
                with for_range(b, depth, "depth") as p, for_range(b, self.const(width), "lane") as w:
                    copy(base, out, w, p)
            else:
                with for_range(b, self.const(width), "lane") as w, for_range(b, depth, "depth") as p:
                    copy(base, out, w, p)

        # Whole slivers are copied in vectors, written so (the function is compact, so LLVM
        # vectorizes no loop of it): a vector a step where the source is contiguous along the
        # lanes, else (A's rows, B^T's columns) transposed in registers; edge slivers by copy.
        with for_range(b, slivers, "sliver") as s:
            base = b.mul(s, self.const(width))
            out = b.gep(pack, [b.mul(base, depth)], inbounds=True)
            with b.if_else(b.icmp_signed("<=", b.add(base, self.const(width)), extent)) as (whole, edge):
                with whole:
                    if lanes_inner:
                        self._pack_rows(out, width, depth, lambda p: source(base, p))
                    else:
                        self._pack_transposed(out, width, depth, lambda w, p: source(b.add(base, self.const(w)), p),
                                              lambda w, p: copy(base, out, w, p))
                with edge:
                    scalar(base, out)

    def _pack_rows(self, out, width: int, depth, row_at) -> None:
        """out[p][:] = the width values at row_at(p), one vector a step."""
        b, align = self.b, float_bytes(self.ty)
        vty = ir.VectorType(self.ty, width).as_pointer()
        with for_range(b, depth, "depth") as p:
            at = b.gep(out, [b.mul(p, self.const(width))], inbounds=True)
            b.store(b.load(b.bitcast(row_at(p), vty), align=align), b.bitcast(at, vty), align=align)

    def _pack_transposed(self, out, width: int, depth, row_at, copy) -> None:
        """out[p][w] = *row_at(w, p) for a whole sliver whose rows are contiguous along p: blocks
        of TRANSPOSE_STEPS steps, per group of as many lanes one vector load per row, transposed
        by lane moves (LLVM makes them shuffles), one vector store per step; the last
        depth % TRANSPOSE_STEPS steps by copy(w, p)."""
        b, steps = self.b, TRANSPOSE_STEPS
        align = float_bytes(self.ty)
        group = min(width, steps)  # lanes transposed together (B^T's slivers: several groups)
        row_type, step_type = ir.VectorType(self.ty, steps), ir.VectorType(self.ty, group)
        blocks = b.sdiv(depth, self.const(steps))
        with for_range(b, blocks, "pblock") as q:
            p0 = b.mul(q, self.const(steps))
            for first in range(0, width, group):
                rows = [b.load(b.bitcast(row_at(w, p0), row_type.as_pointer()), align=align)
                        for w in range(first, min(first + group, width))]
                for p in range(steps):
                    column = ir.Constant(step_type, ir.Undefined)
                    for w, row in enumerate(rows):
                        column = b.insert_element(column, b.extract_element(row, ir.Constant(I64, p)), ir.Constant(I64, w))
                    at = b.gep(out, [b.add(b.mul(b.add(p0, self.const(p)), self.const(width)), self.const(first))],
                               inbounds=True)
                    b.store(column, b.bitcast(at, step_type.as_pointer()), align=align)
        done = b.mul(blocks, self.const(steps))
        with for_range(b, self.const(width), "lane") as w, for_range(b, b.sub(depth, done), "tail") as t:
            copy(w, b.add(done, t))

    def _macro(self, ic, jc, nrows, ncols, depth, first) -> None:
        """Every MR x NR micro-tile of the packed block pair."""
        b = self.b
        row_slivers = b.sdiv(b.add(nrows, self.const(self.mr - 1)), self.const(self.mr))
        col_slivers = b.sdiv(b.add(ncols, self.const(self.nr - 1)), self.const(self.nr))
        with for_range(b, col_slivers, "jr") as jr, for_range(b, row_slivers, "ir") as ir_:
            a = b.gep(self.a_pack, [b.mul(b.mul(ir_, self.const(self.mr)), depth)], inbounds=True)
            bs = b.gep(self.b_pack, [b.mul(b.mul(jr, self.const(self.nr)), depth)], inbounds=True)
            accs = self._micro(a, bs, depth)
            i0 = b.add(ic, b.mul(ir_, self.const(self.mr)))
            j0 = b.add(jc, b.mul(jr, self.const(self.nr)))
            rows = self.min(b, b.sub(nrows, b.mul(ir_, self.const(self.mr))), self.mr)
            cols = self.min(b, b.sub(ncols, b.mul(jr, self.const(self.nr))), self.nr)
            full = b.and_(b.icmp_signed("==", rows, self.const(self.mr)), b.icmp_signed("==", cols, self.const(self.nr)))
            with b.if_else(full) as (whole, edge):
                with whole:
                    self._store_tile(accs, i0, j0, first)
                with edge:
                    self._store_edge(accs, i0, j0, rows, cols, first)

    def _micro(self, a, bs, depth) -> list:
        """The MR x NR tile's accumulators: MR rows of NR / vw vectors, over depth steps."""
        b, vw = self.b, self.vw
        vty = ir.VectorType(self.ty, vw)
        align = vw * float_bytes(self.ty)

        def step(p, accs):
            row = b.gep(bs, [b.mul(p, self.const(self.nr))], inbounds=True)
            b_vecs = [b.load(b.bitcast(b.gep(row, [self.const(v * vw)], inbounds=True), vty.as_pointer()), align=align)
                      for v in range(self.nr // vw)]
            col = b.gep(a, [b.mul(p, self.const(self.mr))], inbounds=True)
            new = []
            for r in range(self.mr):
                splat = splat_vector(b, b.load(b.gep(col, [self.const(r)], inbounds=True)), vty)
                for v, bv in enumerate(b_vecs):
                    acc = accs[r * len(b_vecs) + v]
                    new.append(b.fadd(acc, b.fmul(splat, bv, flags=CONTRACT), flags=CONTRACT))
            return new

        zero = ir.Constant(vty, [0.0] * vw)
        return accumulate_loop(b, depth, [zero] * (self.mr * self.nr // vw), step, "micro.k")

    def _update(self, total, ptr, first, align=None):
        """What C at ptr becomes: the first k step alpha * total + beta * C (total alone without
        a scale, C unread), later ones C + alpha * total."""
        b = self.b
        vector = isinstance(total.type, ir.VectorType)
        alpha, beta = ((splat_vector(b, s, total.type) if vector else s) for s in (self.alpha, self.beta))
        one = ir.Constant(total.type, [1.0] * total.type.count) if vector else ir.Constant(self.ty, 1.0)
        scaled = b.fmul(alpha, total, flags=CONTRACT) if self.scaled else total
        if not self.scaled:
            with b.if_then(b.not_(first)):
                b.store(b.fadd(b.load(ptr, align=align), total, flags=CONTRACT), ptr, align=align)
            with b.if_then(first):
                b.store(total, ptr, align=align)
            return
        factor = b.select(first, beta, one)
        b.store(b.fadd(scaled, b.fmul(factor, b.load(ptr, align=align), flags=CONTRACT), flags=CONTRACT),
                ptr, align=align)

    def _store_tile(self, accs, i0, j0, first) -> None:
        b, vw = self.b, self.vw
        vty = ir.VectorType(self.ty, vw)
        per_row = self.nr // vw
        for r in range(self.mr):
            row = b.add(b.mul(b.add(i0, self.const(r)), self.const(self.n)), j0)
            for v in range(per_row):
                ptr = b.bitcast(b.gep(self.pc, [b.add(row, self.const(v * vw))], inbounds=True), vty.as_pointer())
                self._update(accs[r * per_row + v], ptr, first, align=float_bytes(self.ty))

    def _store_edge(self, accs, i0, j0, rows, cols, first) -> None:
        """The padded tile through a stack copy, its valid rows x cols into C."""
        b, vw = self.b, self.vw
        vty = ir.VectorType(self.ty, vw)
        for index, acc in enumerate(accs):
            b.store(acc, b.bitcast(b.gep(self.tile, [self.const(index * vw)], inbounds=True), vty.as_pointer()))
        with for_range(b, rows, "edge_row") as r, for_range(b, cols, "edge_col") as c:
            total = b.load(b.gep(self.tile, [b.add(b.mul(r, self.const(self.nr)), c)], inbounds=True))
            at = b.add(b.mul(b.add(i0, r), self.const(self.n)), b.add(j0, c))
            self._update(total, b.gep(self.pc, [at], inbounds=True), first)
