"""A BLIS-style packed float GEMM in LLVM IR, for products above smallgemm's range (and in it,
above 2^21 multiply-adds, where measured faster): one shape-generic function per (dtype,
transposes, vector width), built once per host.

Every size is a run-time argument: m, n, k, the leading dimensions lda, ldb, ldc, alpha
and beta (and whether they apply), the block sizes MC, KC, NC (the caller computes them
with block_sizes, the one formula; MR and NR are the vector width's constants), and an
optional epilogue callback with its context. So one function serves every product of its
kind, in every program: gemm_library.py builds it the first time a process needs it and
keeps its machine code in the disk cache as a runtime module of the host (like the thread
pool), and a program calls it through a slot filled after load (library_slot). The
program keeps the block sizes as constants of its call (and in its cache key), and emits
the fused epilogue as a small callback of its own (epilogue_callback). An export defines
the functions its program calls inside itself.

C (m x n) is cut into blocks of MC rows x NC columns, split across the thread
pool panel by panel (a chunk's blocks share column panels). For each of its
panels, a chunk loops over KC steps of k: it packs B's KC x NC panel into
slivers of NR columns (p-major, zero-padded), then, block by block, the A rows
into slivers of MR rows, and runs the MR x NR micro-kernel over every pair of
slivers: MR x NR/vw vector accumulators (registers) over kc broadcast-FMA steps,
reading both packs contiguously whatever the operands' transposes. The first k step writes
alpha * AB + beta * C (AB without a scale: C is not read, it may hold anything),
later ones add. Each tile's rows of C are prefetched before its k loop (_prefetch_tile: a
product of one k step read them from memory unhidden). Edge tiles compute the padded tile (a
last row sliver of SHORT_ROWS rows or fewer, one of that many rows) and copy its valid part. A fused
epilogue (bias, activation, ...: lower.py's column_epilogue) runs on each block of C right
after its last k step, while the block (MC x NC, sized for L2) is still in cache.

Block sizes come from the host's caches (sysfs; a common default otherwise):
a B sliver (KC x NR) fills half of L1 (k is then cut into steps of even depths, none
deeper: _panels), an A block (MC x KC) a quarter of L2,
and both packs of a chunk take STACK_BYTES at most (one heap block per chunk, on the stack
only if the allocation fails: _Kernel._packs), which bounds NC (and MC, KC where a host
reports huge caches). A product
of few row blocks gets narrower panels, so that it makes a block for each thread of the
pool (each thread packs only its panels of B: splitting rows alone made each
thread pack all of B, which cost as much as the product at m = 128). The blocks are
of even sizes, and a few more of them are made where that evens out the threads' work
(_imbalance: the pool's split of the blocks, computed). The vector
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

Slivers of 8 lanes and more (B^T's; A's at 512 bits) are transposed 8 x 8 at a time by three
rounds of shuffles (_transposed), and B's packs prefetch their source ahead (PACK_AHEAD,
TRANS_AHEAD). At 2 threads against the code before (one process, the builds alternately,
2026-12-05): wide's and mnist's products with A untransposed 0-2.2% faster at 256 bits and
0.9-2.3% at 512, the weight gradients within 0.8%; in the step (benchmarks.gemm_step_ab) wide
0.4% faster at 256 bits and 2.1% at 512, mnist 1.3% at 512 (benchmarks/README.md, "256-bit
steps, continued again", with what was tried and dropped: A packed once for all panels).

Shape-generic, against one function per shape with its sizes as constants (benchmarks.latency,
CPU ms, a loaded 2-core Zen 5 at load 2.7-3.9, the host's runtime modules and GEMM calibration
kept; before, the pool was built in each cold run, ~50-90 ms of it): the mnist step's cold
compile 792 -> 289 ms (its module's O3 and machine code ~560 -> ~190 ms), wide's 1282 -> 446
ms; a variant costs ~0.1-0.25 s to build, once per host. GFLOP/s
unchanged within the noise (benchmarks.gemm --cpu-time, f32, one thread, main and this code
alternately, twice each: 1024x512x784 252-260 vs 256, 128x512x784 233 vs 225-230,
128x4096x1024 207-210 vs 210-217). Training steps, the packed route forced in both (benchmarks.mlp
--steps 40 --rounds 3, main and this code alternately, twice, load 1.3-1.6), median ms: mnist
1.13, 1.85 -> 1.03, 1.81; wide 105.9, 103.3 -> 90.8, 91.2.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from llvmlite import ir

from .cgutils import compiled_compact, emit_closure, for_range, scratch_scope
from .elementwise import CONTRACT, I64, ColumnEpilogue
from .gemm_calibration import chosen_route, class_key
from .loop_metadata import mark_loop
from .smallgemm import float_bytes, splat_vector
from .target import vector_bytes
from .threadpool import chunk_count, default_threads, emit_parallel_for, get_num_threads

SLIVER_VECTORS = 2  # vectors per micro-tile row (NR = 2 vw)
MR_BY_VECTOR_BYTES = {32: 6, 64: 8}  # 12 of 16 ymm, 16 of 32 zmm registers hold the tile
# Both packs of one chunk (on the heap; the stack if that fails: the pool's workers have 8 MiB,
# threadpool.WORKER_STACK_BYTES). 2 MiB, not 1:
# panels of 1024 columns, not 512, where B is wide (every panel packs A's blocks again):
# wide's 256-row products 0.3-2% faster at 256 bits, its step 0.6-1% (and 0.7% at 512 bits).
STACK_BYTES = 2 << 20
# A last row sliver of SHORT_ROWS rows or fewer runs a tile of that many rows, not MR padded:
# its 2 x SHORT_ROWS accumulators still keep two FMAs a cycle busy at 4 cycles' latency. m = 128
# at 256 bits leaves 2 rows of 6: mnist's 128-row products 1.5% faster; m = 100 and 260 at 512
# bits 2%.
SHORT_ROWS = 4
MICRO_UNROLL = 4  # k steps an iteration of the micro-kernel's loop (_micro)
MIN_CHUNK_WORK = 2 ** 21  # multiply-adds a thread's chunk at least (~50 us)
DEFAULT_CACHE_BYTES = {1: 32 << 10, 2: 512 << 10}
# B's packs prefetch their source this far ahead: the row pack PACK_AHEAD rows (the next
# PACK_ROWS), the transposed pack TRANS_AHEAD elements along each row. B (the weights) is read
# from memory once a product, in short runs that the hardware prefetchers pick up late: 256-bit
# m = 256 products 0.5-1.5% faster (2 threads, one process, the builds alternately).
PACK_AHEAD = 8
TRANS_AHEAD = 32
PACK_ROWS = 8  # k steps of a sliver copied before the next sliver's (_pack_rows; 4-16 measured alike)
TRANSPOSE_STEPS = 8  # k steps of a sliver transposed in registers at a time, in groups of as many lanes
PACK_ALIGN = 64  # bytes: the packs' alignment (the micro-kernel's aligned vector loads of B's pack)
MIN_PANEL_SLIVERS = 4  # NC shrinks for a block a thread to no fewer slivers (an A block is packed per panel)
BALANCE_STEPS = 4  # row block and panel counts tried, from the caches' (block_sizes: an even split)
FUNCTION_PREFIX = "ffc_packed_gemm_"  # + dtype, transposes, bits: GemmVariant.symbol
SLOT_SUFFIX = ".slot"  # a program's global holding a variant's address
DTYPE_OF_ITEMSIZE = {4: "f32", 8: "f64"}
I8P = ir.IntType(8).as_pointer()
EPILOGUE_TYPE = ir.FunctionType(ir.VoidType(), [I8P, I64, I64, I64, I64])  # ctx, j0, j1, i0, i1


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
    # The stack bounds KC and MC too: a host reporting a huge L1 or L2 (a VM's made-up
    # cache sizes) must leave room for an MR x KC block and a KC x NR sliver.
    stack = STACK_BYTES // itemsize
    kc = min(k, max(16, min(cache_bytes(1) // 2 // (nr * itemsize), stack // (mr + nr)) // 8 * 8))
    mc = min(_round_up(m, mr), max(mr, min(cache_bytes(2) // 4 // (kc * itemsize), stack // kc - nr) // mr * mr))
    nc = min(_round_up(n, nr), max(nr, (STACK_BYTES // itemsize - mc * kc) // kc // nr * nr))
    # Blocks of even sizes, so many that each thread of the pool gets as much work: a last row
    # block of 64 rows beside 252-row ones (m = 4096), a last panel of 256 columns beside
    # 768-column ones, left one of two threads idle for a tenth of a product. Of up to
    # BALANCE_STEPS - 1 more row blocks and panels than the caches ask for, the best balanced
    # (within 1%), then, where B is larger than L2, the fewest of its columns packed (a panel
    # two chunks share is packed by both from memory: 256x1024x4096 at 256 bits, 2 panels of 2
    # row blocks in 4 chunks, ran 2.5% faster as 4 panels of 256), then the fewest panels (each
    # repacks A once more), then rows.
    rows = -(-m // mc)
    threads = get_num_threads()
    # A block of C for each thread the pool may run (the count now, or the cores if more: a
    # program built at 1 thread still splits at 2): as many panels as that takes where rows are
    # few. More, narrower panels (8 blocks at least, as before) repacked A once a panel: at 2
    # threads, mnist's 128x512x784 ran 7% slower at 512 bits with 4 panels of 128 than with 2
    # of 256, its 512x512x128 weight gradient 7%, 784x512x128 5% (2% at 256 bits).
    panels = max(-(-n // nc), -(-max(threads, default_threads()) // rows))
    big_b = k * n * itemsize > cache_bytes(2)
    choices = {}
    for r in range(rows, min(rows + BALANCE_STEPS, -(-m // mr) + 1)):
        for p in range(panels, max(panels + 1, min(panels + BALANCE_STEPS, n // (MIN_PANEL_SLIVERS * nr) + 1))):
            sizes = _round_up(-(-m // r), mr), min(nc, max(MIN_PANEL_SLIVERS * nr, _round_up(-(-n // p), nr)))
            packed = _packed_columns(m, n, *sizes, threads) if big_b else n  # B in L2: packs are cheap
            choices[sizes] = (_imbalance(m, n, *sizes, threads), packed, -(-n // sizes[1]), -(-m // sizes[0]))
    best = min(v[0] for v in choices.values())
    mc, nc = min((v[1:], sizes) for sizes, v in choices.items() if v[0] <= best + 0.01)[1]
    return mr, nr, mc, kc, nc


def _imbalance(m: int, n: int, mc: int, nc: int, threads: int) -> float:
    """The busiest thread's elements of C over an even share (1.0: balanced) when the pool
    splits the blocks of C, panel by panel, into contiguous chunks (threadpool.chunk_count),
    each claimed by whichever thread is free first."""
    rows, panels = -(-m // mc), -(-n // nc)

    def before(unit: int) -> int:  # elements of C in the blocks before `unit`
        panel, row = divmod(unit, rows)
        return min(panel * nc, n) * m + (min(nc, n - panel * nc) * min(row * mc, m) if panel < panels else 0)

    busy = [0] * threads
    for start, end in _chunks(rows * panels, threads):
        busy[busy.index(min(busy))] += before(end) - before(start)
    return max(busy) * threads / (m * n)


def _packed_columns(m: int, n: int, mc: int, nc: int, threads: int) -> int:
    """B's columns packed (at each k step), summed over the pool's chunks (threadpool.chunk_count):
    a chunk packs each panel it has blocks of, so a panel whose row blocks two chunks share
    is packed twice."""
    rows, panels = -(-m // mc), -(-n // nc)
    return sum(min(nc, n - panel * nc) for start, end in _chunks(rows * panels, threads)
               for panel in range(start // rows, -(-end // rows)))


def _chunks(units: int, threads: int) -> list[tuple[int, int]]:
    """The units [start, end) of each chunk the pool cuts units into (threadpool.chunk_count,
    grain 1: contiguous, none empty), in order."""
    chunks = chunk_count(units, 1, threads)
    return [(units * c // chunks, units * (c + 1) // chunks) for c in range(chunks)]


def default_block_sizes(m: int, n: int, k: int, itemsize: int) -> tuple[int, int, int, int, int]:
    """block_sizes at the vector width emit_packed_gemm takes by default."""
    return block_sizes(m, n, k, itemsize, vector_bytes())


def packed_beats_blas(m: int, n: int, k: int, itemsize: int, blas_threads: int | None) -> bool:
    """Whether blas.gemm_route sends a product above smallgemm's range here instead of to BLAS:
    as forced (FFCOMPILE_GEMM_ROUTE, route_forced), else as measured on this host for the
    product's shape class at the pool's and the BLAS's thread counts and this vector width
    (gemm_calibration.py; calibrate.py measures a class a program needs when it is built). An
    unmeasured class keeps BLAS. The choice is part of the disk cache's key (lower.gemm_routes)."""
    return chosen_route(route_key(m, n, k, itemsize, blas_threads), ("blas", "packed")) == "packed"  # a tie: BLAS


def route_key(m: int, n: int, k: int, itemsize: int, blas_threads: int | None) -> str:
    """The calibration record that decides this product's route now: its class at the pool's
    and the BLAS's thread counts and this kernel's vector width."""
    return class_key(m, n, k, itemsize, get_num_threads(), blas_threads, vector_bytes())


def emit_packed_gemm(b: ir.IRBuilder, pa, pb, pc, m, n, k, trans_a: bool, trans_b: bool,
                     scale: tuple[ir.Value, ir.Value] | None = None, vbytes: int | None = None,
                     epilogue: ColumnEpilogue | None = None, blocks: tuple[int, int, int] | None = None) -> None:
    """C = op(A) op(B) (C row-major m x n, k >= 1); with scale = (alpha, beta):
    C = alpha op(A) op(B) + beta C, by a call of the shape-generic library function of this
    dtype, transposes and vector width (vbytes, default the host's) through its slot
    (gemm_library.py). Sizes are ints or i64 values (then `blocks`, (MC, KC, NC), must be
    given: block_sizes at a size the caller chooses). An epilogue runs on each block of C as
    soon as its last k step is stored (still in L2), in the chunk that computed it, through a
    callback of the program's own (epilogue_callback): the caller makes sure it writes over
    neither operand (lower._fuses_epilogue), which other chunks may still be reading."""
    ty = pc.type.pointee
    itemsize = float_bytes(ty)
    vbytes = vbytes or vector_bytes()
    if blocks is None:
        blocks = block_sizes(m, n, k, itemsize, vbytes)[2:]
    variant = GemmVariant(DTYPE_OF_ITEMSIZE[itemsize], trans_a, trans_b, vbytes)
    sizes = [d if isinstance(d, ir.Value) else ir.Constant(I64, d) for d in (m, n, k)]
    leading = _leading_dimensions(*sizes, trans_a, trans_b)
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))
    callback, context = (epilogue_callback(b, epilogue) if epilogue is not None
                         else (ir.Constant(EPILOGUE_TYPE.as_pointer(), None), ir.Constant(I8P, None)))
    function = b.bitcast(b.load(library_slot(b.module, variant)), variant.function_type().as_pointer())
    b.call(function, [pa, pb, pc, *sizes, *leading, alpha, beta, ir.Constant(I64, int(scale is not None)),
                      *(ir.Constant(I64, v) for v in blocks), callback, context])


def _leading_dimensions(m, n, k, trans_a: bool, trans_b: bool) -> list:
    """lda, ldb, ldc of operands held whole (C-contiguous, as the transposes say)."""
    return [m if trans_a else k, k if trans_b else n, n]


@dataclass(frozen=True)
class GemmVariant:
    """One shape-generic packed GEMM function: dtype, transposes, vector width (bytes)."""

    dtype: str
    trans_a: bool
    trans_b: bool
    vbytes: int

    @property
    def symbol(self) -> str:
        """The library function's name (ffc_packed_gemm_f32_nt_512): its slot in a program is
        the same name with SLOT_SUFFIX."""
        transposes = "".join("t" if t else "n" for t in (self.trans_a, self.trans_b))
        return f"{FUNCTION_PREFIX}{self.dtype}_{transposes}_{8 * self.vbytes}"

    @classmethod
    def of_symbol(cls, symbol: str) -> "GemmVariant | None":
        """The variant named `symbol`, or None if it names none."""
        parts = symbol[len(FUNCTION_PREFIX):].split("_") if symbol.startswith(FUNCTION_PREFIX) else []
        if len(parts) != 3 or parts[0] not in ("f32", "f64") or parts[1] not in ("nn", "nt", "tn", "tt") \
                or parts[2] not in ("256", "512"):
            return None
        return cls(parts[0], parts[1][0] == "t", parts[1][1] == "t", int(parts[2]) // 8)

    def element(self) -> ir.Type:
        return ir.FloatType() if self.dtype == "f32" else ir.DoubleType()

    def function_type(self) -> ir.FunctionType:
        """void (T* a, T* b, T* c, i64 m, n, k, lda, ldb, ldc, T alpha, T beta, i64 scaled,
        i64 mc, kc, nc, epilogue callback, i8* its context)."""
        ty = self.element()
        ptr = ty.as_pointer()
        return ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, *[I64] * 6, ty, ty, *[I64] * 4,
                                               EPILOGUE_TYPE.as_pointer(), I8P])


def library_slot(module: ir.Module, variant: GemmVariant) -> ir.GlobalVariable:
    """The module global a program calls `variant` through (filled after load by the backend;
    in an export, set to the function defined in the module: gemm_library.define_in)."""
    name = variant.symbol + SLOT_SUFFIX
    slot = module.globals.get(name)
    if slot is None:
        slot = ir.GlobalVariable(module, I8P, name)
        slot.initializer = ir.Constant(I8P, None)
    return slot


def program_variants(module: ir.Module) -> list[str]:
    """The library functions a program's module calls (the symbols of its slots)."""
    return sorted(name[:-len(SLOT_SUFFIX)] for name in module.globals
                  if name.startswith(FUNCTION_PREFIX) and name.endswith(SLOT_SUFFIX))


def epilogue_callback(b: ir.IRBuilder, epilogue: ColumnEpilogue) -> tuple[ir.Value, ir.Value]:
    """(callback, ctx) for the library function: `void packed_gemm.epilogue.callback(i8* ctx,
    i64 j0, i64 j1, i64 i0, i64 i1)` calls `packed_gemm.epilogue(values..., j0, j1, i0, i1)`
    on the epilogue's values (cgutils.emit_closure: its distinct pointers `noalias`), which
    runs the epilogue on that block of C, compiled in full (vectorized)."""
    def body(ib, params, j0, j1, i0, i1):
        epilogue.emit(ib, params, j0, j1, rows=(i0, i1))

    return emit_closure(b, "packed_gemm.epilogue", "packed_gemm.epilogue.callback", epilogue.values,
                        ("j0", "j1", "i0", "i1"), body)


def define_library_function(module: ir.Module, variant: GemmVariant) -> ir.Function:
    """Define `variant`'s function in `module` (external linkage): the units of C's blocks over
    the thread pool (emit_parallel_for, with run-time counts), each chunk _Kernel's code."""
    fn = ir.Function(module, variant.function_type(), variant.symbol)
    names = ("a", "b", "c", "m", "n", "k", "lda", "ldb", "ldc", "alpha", "beta", "scaled", "mc", "kc", "nc",
             "epilogue", "ctx")
    for arg, name in zip(fn.args, names):
        arg.name = name
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    m, n, k, mc, nc = fn.args[3], fn.args[4], fn.args[5], fn.args[12], fn.args[14]
    blocks = b.mul(_ceil_div(b, m, mc), _ceil_div(b, n, nc))
    work = b.mul(b.mul(mc, nc), k)
    grain = _ceil_div(b, ir.Constant(I64, MIN_CHUNK_WORK), work)
    grain = b.select(b.icmp_signed("<", grain, ir.Constant(I64, 1)), ir.Constant(I64, 1), grain)
    kernel = _Kernel(variant)
    # C is not noalias: the epilogue callback reads and writes it through its own pointers
    emit_parallel_for(b, "packed_gemm", list(fn.args), blocks, grain, kernel.emit_blocks, may_alias=(fn.args[2],))
    b.ret_void()
    return fn


def _ceil_div(b: ir.IRBuilder, x, y):
    return b.sdiv(b.add(x, b.sub(y, ir.Constant(I64, 1))), y)


def _transposed(b: ir.IRBuilder, rows: list, steps: int) -> list:
    """The `steps` columns of rows (vectors of `steps` lanes): 8 rows of 8 by the three rounds of
    two-vector shuffles (24; x86's unpack, shufps and 128-bit lane permutes), else lane by lane.
    Lane by lane, LLVM turned an 8 x 8 block into ~60 shuffles and broadcast reloads."""
    if len(rows) == steps == 8:
        def pairs(vectors, masks):
            return [b.shuffle_vector(vectors[i], vectors[i + step], ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))
                    for i, step, mask in masks]
        low, high = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        unpacked = pairs(rows, [(i, 1, mask) for i in range(0, 8, 2) for mask in (low, high)])
        low, high = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        # unpacked: (r0 r1 lo, r0 r1 hi, r2 r3 lo, r2 r3 hi, ...): pair lo with lo, hi with hi
        quads = pairs(unpacked, [(i + half, 2, mask) for i in (0, 4) for half in (0, 1) for mask in (low, high)])
        # quads: rows 0-3 (or 4-7) of columns (0 4), (1 5), (2 6), (3 7)
        low, high = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
        halves = pairs(quads, [(c, 4, mask) for c in range(4) for mask in (low, high)])
        return [halves[2 * (p % 4) + p // 4] for p in range(8)]
    columns = []
    for p in range(steps):
        column = ir.Constant(ir.VectorType(rows[0].type.element, len(rows)), ir.Undefined)
        for w, row in enumerate(rows):
            column = b.insert_element(column, b.extract_element(row, ir.Constant(I64, p)), ir.Constant(I64, w))
        columns.append(column)
    return columns


class _Kernel:
    """The body of one chunk of blocks of C: MR and NR (the micro-tile) constants of the
    variant's vector width, every size and block size a run-time value."""

    def __init__(self, variant: GemmVariant):
        self.ty = variant.element()
        self.trans_a, self.trans_b = variant.trans_a, variant.trans_b
        self.vw = variant.vbytes // float_bytes(self.ty)
        self.mr, self.nr = MR_BY_VECTOR_BYTES[variant.vbytes], SLIVER_VECTORS * self.vw

    def const(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def min(self, b, x, limit):
        """min(x, limit) for i64 values (or an int limit)."""
        limit = limit if isinstance(limit, ir.Value) else self.const(limit)
        return b.select(b.icmp_signed("<", x, limit), x, limit)

    def emit_blocks(self, b: ir.IRBuilder, values, start, end) -> None:
        (pa, pb, pc, m, n, k, lda, ldb, ldc, alpha, beta, scaled, mc, kc, nc, epilogue, ctx) = values
        self.b, self.pa, self.pb, self.pc, self.alpha, self.beta = b, pa, pb, pc, alpha, beta
        self.m, self.n, self.k, self.lda, self.ldb, self.ldc = m, n, k, lda, ldb, ldc
        self.scaled = b.icmp_signed("!=", scaled, self.const(0))
        compiled_compact(b.function)
        with b.goto_entry_block():
            self.tile = b.alloca(self.ty, size=self.const(self.mr * self.nr), name="edge_tile")
            self.tile.align = 64
        with scratch_scope(b) as take:
            self._packs(take, mc, kc, nc)
            self._panels(start, end, mc, kc, nc, epilogue, ctx)

    def _panels(self, start, end, mc, kc, nc, epilogue, ctx) -> None:
        """The chunk's blocks of C (units start to end - 1), panel by panel."""
        b, m, n, k = self.b, self.m, self.n, self.k
        one = self.const(1)
        row_blocks = _ceil_div(b, m, mc)
        last = self.min(b, end, b.mul(row_blocks, _ceil_div(b, n, nc)))
        first_panel = b.sdiv(start, row_blocks)
        panels = b.sub(b.sdiv(b.add(last, b.sub(row_blocks, one)), row_blocks), first_panel)
        panels = b.select(b.icmp_signed("<", start, last), panels, self.const(0))
        # k steps of even depths, at most KC (the packs' size): mnist's k = 784 as 384, 384 and
        # 16 spent on the last a C pass and the packs' calls for 16 multiply-adds a tile (264, 264
        # and 256: 128x512x784 2% faster). Here, not in block_sizes: a product whose k is a
        # run-time size (the batch of a weight gradient) was cut for its reference size.
        k_steps = _ceil_div(b, k, kc)
        eight = self.const(8)
        kc = self.min(b, b.mul(_ceil_div(b, _ceil_div(b, k, k_steps), eight), eight), kc)
        last_step = b.sub(k_steps, one)
        has_epilogue = b.icmp_unsigned("!=", epilogue, ir.Constant(epilogue.type, None))
        with for_range(b, panels, "jc") as j:
            jcb = b.add(first_panel, j)
            jc = b.mul(jcb, nc)
            ncols = self.min(b, b.sub(n, jc), nc)
            panel_start = b.mul(jcb, row_blocks)  # the unit of its first row block
            low = b.sub(b.select(b.icmp_signed(">", start, panel_start), start, panel_start), panel_start)
            panel_end = b.add(panel_start, row_blocks)
            high = b.sub(b.select(b.icmp_signed("<", last, panel_end), last, panel_end), panel_start)
            with for_range(b, k_steps, "pc") as pcb:
                p0 = b.mul(pcb, kc)
                depth = self.min(b, b.sub(k, p0), kc)
                self._pack(self.b_pack, ncols, self.nr, depth, lambda j, p: self._b_at(b.add(p0, p), b.add(jc, j)),
                           lanes_inner=not self.trans_b,
                           ahead=lambda j, p: self._b_at(b.add(p0, p), b.add(jc, j), inbounds=False))
                first = b.icmp_signed("==", pcb, self.const(0))
                with for_range(b, b.sub(high, low), "ic") as i:
                    ic = b.mul(b.add(low, i), mc)
                    nrows = self.min(b, b.sub(m, ic), mc)
                    self._pack(self.a_pack, nrows, self.mr, depth, lambda r, p: self._a_at(b.add(ic, r), b.add(p0, p)),
                               lanes_inner=self.trans_a)
                    self._macro(ic, jc, nrows, ncols, depth, first)
                    # the block of C is final after the last k step
                    with b.if_then(b.and_(has_epilogue, b.icmp_signed("==", pcb, last_step))):
                        b.call(epilogue, [ctx, jc, b.add(jc, ncols), ic, b.add(ic, nrows)])

    def _packs(self, take, mc, kc, nc):
        """Set a_pack (MC x KC) and b_pack (KC x NC), PACK_ALIGN-aligned, in one block of take's
        (cgutils.scratch_scope): up to STACK_BYTES a chunk, which on the stack overflowed the thread
        of a caller with a small one (threading.stack_size(512 KiB) segfaulted)."""
        b, itemsize = self.b, float_bytes(self.ty)
        lanes = self.const(PACK_ALIGN // itemsize)
        a_elements = b.mul(_ceil_div(b, b.mul(mc, kc), lanes), lanes)  # b_pack starts aligned too
        packs = take(b.mul(b.add(a_elements, b.mul(kc, nc)), self.const(itemsize)), PACK_ALIGN)
        self.a_pack = b.bitcast(packs, self.ty.as_pointer())
        self.b_pack = b.gep(self.a_pack, [a_elements], inbounds=True)

    def _a_at(self, i, p):
        b = self.b
        at = b.add(b.mul(p, self.lda), i) if self.trans_a else b.add(b.mul(i, self.lda), p)
        return b.gep(self.pa, [at], inbounds=True)

    def _b_at(self, p, j, inbounds: bool = True):
        b = self.b
        at = b.add(b.mul(j, self.ldb), p) if self.trans_b else b.add(b.mul(p, self.ldb), j)
        return b.gep(self.pb, [at], inbounds=inbounds)

    def _pack(self, pack, extent, width: int, depth, source, lanes_inner: bool, ahead=None) -> None:
        """pack[s][p][w] = source(s * width + w, p), zero where s * width + w >= extent: slivers
        of `width` rows (A) or columns (B), each depth x width, p-major. lanes_inner: w is the
        inner loop (the source contiguous along w), else p. ahead: source's addresses for
        prefetching (PACK_AHEAD, TRANS_AHEAD), which may run past the operand's end."""
        b = self.b
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
        if lanes_inner:
            whole = b.sdiv(extent, self.const(width))
            self._pack_rows(pack, whole, width, depth, source, ahead)
            with b.if_then(b.icmp_signed("<", b.mul(whole, self.const(width)), extent)):
                base = b.mul(whole, self.const(width))
                scalar(base, b.gep(pack, [b.mul(base, depth)], inbounds=True))
            return
        slivers = b.sdiv(b.add(extent, self.const(width - 1)), self.const(width))
        with for_range(b, slivers, "sliver") as s:
            base = b.mul(s, self.const(width))
            out = b.gep(pack, [b.mul(base, depth)], inbounds=True)
            with b.if_else(b.icmp_signed("<=", b.add(base, self.const(width)), extent)) as (whole, edge):
                with whole:
                    self._pack_transposed(out, width, depth, lambda w, p: source(b.add(base, self.const(w)), p),
                                          lambda w, p: copy(base, out, w, p),
                                          ahead and (lambda w, p: ahead(b.add(base, self.const(w)), p)))
                with edge:
                    scalar(base, out)

    def _pack_rows(self, pack, whole, width: int, depth, source, ahead) -> None:
        """pack[s][p][:] = the width values at source(s * width, p) for the first `whole` slivers,
        one vector each: PACK_ROWS steps of a sliver, then of the next (the last depth % PACK_ROWS
        steps likewise, one at a time). Each step's source is a row of B (A^T) that runs on
        across the slivers, a row (ld elements) from the next step's. A sliver's whole depth at
        a time read one line a row (16 KiB apart in a 4096-wide f32 B: one cache set, a line a
        page, no prefetcher follows); a step of every sliver at a time scattered the stores
        depth * width apart instead (one L1 set again). PACK_ROWS rows together keep both the
        reads and the stores in short contiguous runs: 256x4096x4096 3.5% faster at 256 bits and
        5% at 512, the weight gradients 2-3% (2 threads, one process, the two builds alternately)."""
        b, align = self.b, float_bytes(self.ty)
        vty = ir.VectorType(self.ty, width).as_pointer()

        def step(s, p):
            base = b.mul(s, self.const(width))
            at = b.gep(pack, [b.add(b.mul(base, depth), b.mul(p, self.const(width)))], inbounds=True)
            b.store(b.load(b.bitcast(source(base, p), vty), align=align), b.bitcast(at, vty), align=align)
            if ahead:
                later = b.bitcast(ahead(base, b.add(p, self.const(PACK_AHEAD))), I8P)
                for offset in range(0, width * align, 64):
                    self._prefetch(b.gep(later, [self.const(offset)]), write=False)

        blocks = b.sdiv(depth, self.const(PACK_ROWS))
        with for_range(b, blocks, "pblock") as q, for_range(b, whole, "sliver") as s:
            for r in range(PACK_ROWS):
                step(s, b.add(b.mul(q, self.const(PACK_ROWS)), self.const(r)))
        done = b.mul(blocks, self.const(PACK_ROWS))
        with for_range(b, b.sub(depth, done), "ptail") as t, for_range(b, whole, "sliver") as s:
            step(s, b.add(done, t))

    def _pack_transposed(self, out, width: int, depth, row_at, copy, ahead) -> None:
        """out[p][w] = *row_at(w, p) for a whole sliver whose rows are contiguous along p: blocks
        of TRANSPOSE_STEPS steps, per group of as many lanes one vector load per row, transposed
        in registers (_transposed), one vector store per step; the last
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
                if ahead:
                    for w in range(first, min(first + group, width)):
                        self._prefetch(b.bitcast(ahead(w, b.add(p0, self.const(TRANS_AHEAD))), I8P), write=False)
                for p, column in enumerate(_transposed(b, rows, steps)):
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
            i0 = b.add(ic, b.mul(ir_, self.const(self.mr)))
            j0 = b.add(jc, b.mul(jr, self.const(self.nr)))
            self._prefetch_tile(i0, j0)
            rows = self.min(b, b.sub(nrows, b.mul(ir_, self.const(self.mr))), self.mr)
            cols = self.min(b, b.sub(ncols, b.mul(jr, self.const(self.nr))), self.nr)
            with b.if_else(b.icmp_signed("<=", rows, self.const(SHORT_ROWS))) as (few, many):
                with few:
                    self._store_edge(self._micro(a, bs, depth, SHORT_ROWS), i0, j0, rows, cols, first)
                with many:
                    self._tile(a, bs, depth, i0, j0, rows, cols, first)

    def _tile(self, a, bs, depth, i0, j0, rows, cols, first) -> None:
        """An MR-row tile: stored whole, or its rows x cols through the edge copy."""
        b = self.b
        accs = self._micro(a, bs, depth)
        full = b.and_(b.icmp_signed("==", rows, self.const(self.mr)), b.icmp_signed("==", cols, self.const(self.nr)))
        with b.if_else(full) as (whole, edge):
            with whole:
                self._store_tile(accs, i0, j0, first)
            with edge:
                self._store_edge(accs, i0, j0, rows, cols, first)

    def _prefetch_tile(self, i0, j0) -> None:
        """Ask for the tile's rows of C before the k loop, which hides their miss: walking down a
        panel's tiles touches one cache line per row of C, a page apart, which no hardware
        prefetcher follows, and a product of one k step (the weight gradients, beta the SGD
        decay) reads each from memory. A prefetch never faults: rows past m are harmless."""
        b, itemsize = self.b, float_bytes(self.ty)
        row_bytes = self.nr * itemsize
        offsets = sorted({*range(0, row_bytes, 64), row_bytes - 1})  # every line the row spans
        for r in range(self.mr):
            row = b.bitcast(b.gep(self.pc, [b.add(b.mul(b.add(i0, self.const(r)), self.ldc), j0)]), I8P)
            for offset in offsets:
                self._prefetch(b.gep(row, [self.const(offset)]), write=True)

    def _prefetch(self, address, write: bool) -> None:
        """Ask for the cache line at `address` (an i8*: any address, a prefetch never faults)."""
        b, i32 = self.b, ir.IntType(32)
        fn = b.module.declare_intrinsic("llvm.prefetch.p0", fnty=ir.FunctionType(ir.VoidType(), [I8P, i32, i32, i32]))
        b.call(fn, [address, ir.Constant(i32, int(write)), ir.Constant(i32, 3), ir.Constant(i32, 1)])

    def _micro(self, a, bs, depth, rows: int | None = None) -> list:
        """The MR x NR tile's accumulators: MR rows of NR / vw vectors, over depth steps; of its
        first `rows` rows only (the A sliver's others are not read), the others zero. The k loop
        walks the slivers by pointers, and the MR-row tile's is unrolled MICRO_UNROLL times:
        compiled compact and without Loop Strength Reduction, each step had recomputed its
        addresses (a shift and a three-operand lea), and with the loop's count and branch that
        was 5 integer operations to 12 FMAs at 256 bits, which on Intel's cores share the FMAs'
        two ports (the 6 x 16 tile ran at 79-81% of a Xeon core's peak, OpenBLAS's Haswell
        kernel at 86%)."""
        b, vw = self.b, self.vw
        rows = rows or self.mr
        vty = ir.VectorType(self.ty, vw)
        align = vw * float_bytes(self.ty)

        def step(a_at, b_at, accs):
            b_vecs = [b.load(b.bitcast(b.gep(b_at, [self.const(v * vw)], inbounds=True), vty.as_pointer()), align=align)
                      for v in range(self.nr // vw)]
            new = []
            for r in range(rows):
                splat = splat_vector(b, b.load(b.gep(a_at, [self.const(r)], inbounds=True)), vty)
                for v, bv in enumerate(b_vecs):
                    acc = accs[r * len(b_vecs) + v]
                    new.append(b.fadd(acc, b.fmul(splat, bv, flags=CONTRACT), flags=CONTRACT))
            return new

        zero = ir.Constant(vty, [0.0] * vw)
        state = (a, bs, [zero] * (rows * self.nr // vw))
        if rows < self.mr:  # the short tile, once a row block at most: not worth the code
            return self._k_loop(depth, 1, state, step, "micro.k")[2] + [zero] * ((self.mr - rows) * self.nr // vw)
        unrolled = self.const(MICRO_UNROLL)
        state = self._k_loop(b.udiv(depth, unrolled), MICRO_UNROLL, state, step, "micro.k")
        return self._k_loop(b.urem(depth, unrolled), 1, state, step, "micro.rest")[2]

    def _k_loop(self, count, steps: int, state, step, name: str):
        """`for _ in range(count)`: `steps` k steps of `step`, the A and B sliver pointers then
        advanced past them; state = (A pointer, B pointer, accumulators), returned as after."""
        b = self.b
        entry = b.block
        body, end = b.append_basic_block(f"{name}.body"), b.append_basic_block(f"{name}.end")
        b.cbranch(b.icmp_signed(">", count, self.const(0)), body, end)
        b.position_at_end(body)
        index = b.phi(I64, name=name)
        phis = [b.phi(value.type) for value in (state[0], state[1], *state[2])]
        a_at, b_at, accs = phis[0], phis[1], phis[2:]
        for s in range(steps):
            accs = step(b.gep(a_at, [self.const(s * self.mr)], inbounds=True),
                        b.gep(b_at, [self.const(s * self.nr)], inbounds=True), accs)
        after = [b.gep(a_at, [self.const(steps * self.mr)], inbounds=True),
                 b.gep(b_at, [self.const(steps * self.nr)], inbounds=True), *accs]
        following = b.add(index, self.const(1), flags=["nsw"])
        latch = b.block
        index.add_incoming(self.const(0), entry)
        index.add_incoming(following, latch)
        for phi, before, value in zip(phis, (state[0], state[1], *state[2]), after):
            phi.add_incoming(before, entry)
            phi.add_incoming(value, latch)
        b.cbranch(b.icmp_signed("<", following, count), body, end)
        mark_loop(b.module, index, unroll=False)
        b.position_at_end(end)
        out = []
        for before, value in zip((state[0], state[1], *state[2]), after):
            phi = b.phi(value.type)
            phi.add_incoming(before, entry)
            phi.add_incoming(value, latch)
            out.append(phi)
        return out[0], out[1], out[2:]

    def _update(self, total, ptr, first, align=None):
        """What C at ptr becomes: the first k step alpha * total + beta * C (total alone without
        a scale, C unread: it may hold anything), later ones C + alpha * total (alpha is 1
        without a scale: the same bits as C + total)."""
        b = self.b
        vector = isinstance(total.type, ir.VectorType)
        alpha, beta = ((splat_vector(b, s, total.type) if vector else s) for s in (self.alpha, self.beta))
        one = ir.Constant(total.type, [1.0] * total.type.count) if vector else ir.Constant(self.ty, 1.0)
        with b.if_else(b.and_(first, b.not_(self.scaled))) as (plain, update):
            with plain:
                b.store(total, ptr, align=align)
            with update:
                factor = b.select(first, beta, one)
                b.store(b.fadd(b.fmul(alpha, total, flags=CONTRACT),
                               b.fmul(factor, b.load(ptr, align=align), flags=CONTRACT), flags=CONTRACT),
                        ptr, align=align)

    def _store_tile(self, accs, i0, j0, first) -> None:
        b, vw = self.b, self.vw
        vty = ir.VectorType(self.ty, vw)
        per_row = self.nr // vw
        for r in range(self.mr):
            row = b.add(b.mul(b.add(i0, self.const(r)), self.ldc), j0)
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
            at = b.add(b.mul(b.add(i0, r), self.ldc), b.add(j0, c))
            self._update(total, b.gep(self.pc, [at], inbounds=True), first)
