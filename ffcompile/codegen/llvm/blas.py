"""GEMM kernels: SciPy's BLAS through function pointers, or native loops for tiny products.

The BLAS is the one SciPy ships: `scipy.linalg.cython_blas` exports sgemm and
dgemm as PyCapsules, whose pointers are C wrappers with the Fortran
convention (every argument by pointer), as Numba uses them; the OpenBLAS a
SciPy wheel bundles is called directly, without importing SciPy (openblas.py). The module reads
each pointer from an external global (`ffc_sgemm`, `ffc_dgemm`) that the
backend fills in after JIT compilation, so the IR itself names no address.

Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the call
passes B first, and a row-major operand is already its column-major
transpose: an operand held transposed (a folded `transpose`) gets the 'T'
flag. A batched matmul is a loop of calls over the (broadcast) batch axes.

Threads: NumPy and SciPy each bundle an OpenBLAS with its own pool of
spinning worker threads. On a small, shared machine (2 cores here) the two
pools, and any other load, oversubscribe the cores: measured on the mnist
training step under load, SciPy's BLAS at 2 threads had a median step of
196 ms against 7.9 ms at 1 thread (at best 2.6 ms against 3.9 ms when the
cores happened to be free). So the first executable that calls BLAS limits
SciPy's OpenBLAS to DEFAULT_BLAS_THREADS (through OpenBLAS's own function, or
threadpoolctl for another BLAS), unless `set_blas_threads` chose a number before.

Below native_max_work() multiply-adds a call costs more than it computes: such
float products run smallgemm's register-tiled kernel (unless an operand it would pack
exceeds PACK_MAX_BYTES: then BLAS), or, above SMALL_MEASURED_MIN_WORK, the packed GEMM where
this host measured it faster; integer ones (which BLAS has not) and k == 0 an
inner-product-free loop nest: C[i, :] += A[i, p] * B[p, :].
"""
from __future__ import annotations

import ctypes
import importlib
import sys
from contextlib import contextmanager
from functools import cache
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType

from llvmlite import ir

from ...ir.symbolic import BatchRange, Sym
from .cgutils import for_range, size_value
from .elementwise import (
    CONTRACT,
    I8,
    I32,
    I64,
    Array,
    ColumnEpilogue,
    broadcast_strides,
    is_float,
    loop_nest,
)
from .openblas import bundled_gemm_address, bundled_set_threads
from .gemm_calibration import WORK_BANDS, chosen_route
from .packed_gemm import default_block_sizes, emit_packed_gemm, packed_beats_blas, route_key
from .runtime_gemm import BLAS_INT_MAX, GemmTooLarge, emit_runtime_gemm, largest, runtime_kernels, symbolic
from .skinny import emit_skinny_gemm, skinny_fits
from .smallgemm import emit_small_gemm, product, small_gemm_fits
from .smallgemm_split import emit_split_small_gemm
from .threadpool import emit_parallel_for

# m * n * k at or below which generated code beats the BLAS call, by the BLAS thread count
# when the program is built (smallgemm is register-tiled, 512-bit with AVX-512; measured on
# Zen 5 against SciPy's OpenBLAS): against one thread (the default) it is 1.0-1.9x faster up
# to 256^3 (deep's training step: 8.4 -> 5.3 ms); against more, BLAS spreads a product over
# cores where smallgemm uses one, and wins above about 128^3.
NATIVE_MAX_WORK = 256 ** 3
# A BLAS product, with SciPy's OpenBLAS at one thread, is split across the thread pool by
# blocks of SPLIT_ROWS rows of C, at least SPLIT_MIN_WORK multiply-adds a chunk (~50 us).
SPLIT_ROWS = 16
SPLIT_MIN_WORK = 2 ** 21
SPLIT_SMALL_ROWS = 48  # rows of C per block of a smallgemm product split the same way (8 tiles)
THREADED_NATIVE_MAX_WORK = 128 ** 3
# Multiply-adds above which a product in smallgemm's range takes the packed GEMM instead where
# this host measured it faster (its calibration class, gemm_calibration.py). deep's 64x256x256
# products on a Xeon (AVX-512, 2 threads): smallgemm 37-54 us, the packed GEMM 35 in every
# transpose, the step 5.85 -> 4.65 ms; on Zen 5 smallgemm had been 1.0-1.9x BLAS up to 256^3.
SMALL_MEASURED_MIN_WORK = 2 ** 21
BLAS_FUNCTIONS = {"f32": "sgemm", "f64": "dgemm"}
DEFAULT_BLAS_THREADS = 1
_threads_chosen = False
_blas_threads: int | None = None  # what set_blas_threads applied (None: unknown)


def set_blas_threads(threads: int) -> bool:
    """Limit SciPy's OpenBLAS (the BLAS generated code calls) to `threads`, process-wide;
    programs built afterwards choose between BLAS and native GEMMs for that count.
    The bundled OpenBLAS's own function sets it (openblas.py), else threadpoolctl.
    Returns False if neither finds SciPy's BLAS."""
    global _threads_chosen, _blas_threads
    _threads_chosen = True
    _blas_threads = None
    set_threads = bundled_set_threads()
    if set_threads is not None:
        set_threads(threads)
        _blas_threads = threads
        return True
    _cython_blas()  # SciPy's BLAS must be loaded for threadpoolctl to find it
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    pools = [pool for pool in ThreadpoolController().lib_controllers
             if pool.user_api == "blas" and "scipy" in pool.filepath and "numpy" not in pool.filepath]
    for pool in pools:
        pool.set_num_threads(threads)
    _blas_threads = threads if pools else None
    return bool(pools)


@contextmanager
def blas_threads(threads: int):
    """set_blas_threads(threads) for a block, then the previous choice back (none made: the
    default applies again when the next program is built)."""
    global _threads_chosen, _blas_threads
    saved = _threads_chosen, _blas_threads
    set_blas_threads(threads)
    try:
        yield
    finally:
        if saved[1] is not None:
            set_blas_threads(saved[1])
        _threads_chosen, _blas_threads = saved


def native_max_work() -> int:
    """The NATIVE_MAX_WORK that applies to the BLAS's thread count (applied now if not yet)."""
    default_blas_threads()
    return NATIVE_MAX_WORK if _blas_threads == 1 else THREADED_NATIVE_MAX_WORK


def blas_thread_count() -> int | None:
    """SciPy's BLAS threads programs are built for now (the default applied if no choice was
    made; None: unknown), which packed_beats_blas's measurements are keyed by."""
    default_blas_threads()
    return _blas_threads


def default_blas_threads() -> None:
    """Apply DEFAULT_BLAS_THREADS once, unless set_blas_threads was called."""
    if not _threads_chosen:
        set_blas_threads(DEFAULT_BLAS_THREADS)


def blas_symbol(name: str) -> str:
    """The module global holding the address of BLAS function `name`."""
    return f"ffc_{name}"


def _cython_blas() -> ModuleType:
    """scipy.linalg.cython_blas, without importing scipy.linalg when it is not loaded yet.

    The extension module needs nothing from its package, while `scipy.linalg`'s
    __init__ costs 30-60 ms of imports: a third of a warm-cache compile of the mnist
    step. Loaded from its file under its own name, it is the module a later
    `import scipy.linalg` finds (CPython keeps one instance per extension file)."""
    name = "scipy.linalg.cython_blas"
    if name not in sys.modules:
        import scipy

        path = Path(scipy.__file__).parent / "linalg" / f"cython_blas{EXTENSION_SUFFIXES[0]}"
        if path.is_file():
            loader = ExtensionFileLoader(name, str(path))
            module = module_from_spec(spec_from_file_location(name, path, loader=loader))
            loader.exec_module(module)
            return module
    return importlib.import_module(name)


@cache
def blas_address(name: str) -> int:
    """Address of `name` (sgemm, dgemm): in SciPy's bundled OpenBLAS, else in
    scipy.linalg.cython_blas (the same convention)."""
    address = bundled_gemm_address(name)
    if address:
        return address
    capsule = _cython_blas().__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def blas_slot(module: ir.Module, name: str) -> ir.GlobalVariable:
    """The external global holding the address of BLAS function `name` (set by the backend)."""
    symbol = blas_symbol(name)
    slot = module.globals.get(symbol)
    if slot is None:
        slot = ir.GlobalVariable(module, I8.as_pointer(), symbol)
        slot.initializer = ir.Constant(I8.as_pointer(), None)
    return slot


def _gemm_pointer(b: ir.IRBuilder, name: str, fty: ir.FunctionType) -> ir.Value:
    return b.bitcast(b.load(blas_slot(b.module, name)), fty.as_pointer())


def emit_gemm(b: ir.IRBuilder, a: Array, b_: Array, out: Array, trans_a: bool, trans_b: bool,
              scale: tuple[ir.Value, ir.Value] | None = None, epilogue: ColumnEpilogue | None = None,
              max_batch: int | None = None) -> None:
    """out = op(a) @ op(b_); `a`/`b_` are the memory of the operands
    (transposed in memory where trans_a/trans_b says so). With scale = (alpha, beta), float
    scalars: out = alpha * op(a) @ op(b_) + beta * out, BLAS's own form (accumulate.py).
    An epilogue (only for a 2-D SKINNY, RUNTIME, PACKED or SMALL product) runs in that kernel's function.
    Types may hold Sym sizes (a symbolic batch size B in 1..max_batch, None: unbounded): the
    function `b` builds then has a trailing `batch` parameter, and the route is RUNTIME's."""
    shape = out.type.shape
    m, n = shape[-2], shape[-1]
    k = a.type.shape[-2] if trans_a else a.type.shape[-1]
    batch = shape[:-2]
    a_step = [s * m * k for s in broadcast_strides(a.type.shape[:-2], batch)]
    b_step = [s * k * n for s in broadcast_strides(b_.type.shape[:-2], batch)]
    c_step = [s * m * n for s in broadcast_strides(batch, batch)]
    dtype = out.type.dtype
    route = gemm_route(m, n, k, dtype, trans_a, trans_b, max_batch)
    groups = [(d,) for d in range(len(batch)) if batch[d] != 1]
    assert epilogue is None or (route in (*FUSING_ROUTES, PACKED, SMALL) and not batch), \
        "a 2-D skinny, packed or fixed-size smallgemm product fuses"
    if route is None:
        return
    with loop_nest(b, batch, groups) as point:
        pa = b.gep(a.ptr, [point.offset(b, tuple(a_step))], inbounds=True) if batch else a.ptr
        pb = b.gep(b_.ptr, [point.offset(b, tuple(b_step))], inbounds=True) if batch else b_.ptr
        pc = b.gep(out.ptr, [point.offset(b, tuple(c_step))], inbounds=True) if batch else out.ptr
        if route in (RUNTIME, RUNTIME_NATIVE):
            emit_runtime_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, epilogue, max_batch, native_max_work(),
                              lambda bb: _small(bb, pa, pb, pc, m, n, k, trans_a, trans_b, scale),
                              lambda bb: _blas_or_packed(bb, dtype, pa, pb, pc, m, n, k, trans_a, trans_b, scale,
                                                         max_batch))
        elif route == SKINNY:
            emit_skinny_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, epilogue)
        elif route == SMALL:  # fixed sizes (a symbolic product's route is a run-time one)
            emit_split_small_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, epilogue)
        elif route == PACKED:
            emit_packed_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, epilogue=epilogue)
        elif route == LOOPS:
            _native_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale)
        else:
            _blas(b, dtype, pa, pb, pc, m, n, k, trans_a, trans_b, scale)


def _blas_or_packed(b, dtype, pa, pb, pc, m, n, k, trans_a, trans_b, scale, max_batch) -> None:
    """A symbolic product past smallgemm: where a fixed program of the reference batch size
    would take the packed GEMM (packed_beats_blas: 1.5-2x the BLAS route on AVX-512), the
    packed GEMM's shape-generic function with the run-time sizes and the block sizes of the
    reference size's product (what the disk cache's key holds: lower.gemm_routes); else the
    BLAS product. Against the blocks of the reference size's rows by a per-shape packed GEMM
    and the rest of the rows by BLAS, it had before (benchmarks.symbolic_gemm, packed route
    forced, mnist's 784x512 and 512x512 layers, symbolic / fixed time, one run each, load ~1.3):
    B = 129 and 300 1.41-1.74 -> 0.89-1.05 (the weight gradient at 129: 1.21-1.32, its second
    k step of depth 1), B = 1024 1.07-1.25 -> 0.89-1.19, B = 128 unchanged (1.00)."""
    blocks = _reference_blocks((m, n, k), dtype, trans_a, trans_b, max_batch)
    if blocks is None:
        _blas(b, dtype, pa, pb, pc, m, n, k, trans_a, trans_b, scale)
        return
    emit_packed_gemm(b, pa, pb, pc, *(size_value(b, d) for d in (m, n, k)), trans_a, trans_b, scale, blocks=blocks)


def runtime_takes_packed(m, n, k, dtype, trans_a, trans_b, max_batch) -> bool:
    """Whether a RUNTIME product past smallgemm takes the packed GEMM, not BLAS (_blas_or_packed)."""
    return _reference_blocks((m, n, k), dtype, trans_a, trans_b, max_batch) is not None


def _reference_blocks(shape: tuple, dtype, trans_a, trans_b, max_batch) -> tuple[int, int, int] | None:
    """The packed GEMM's (MC, KC, NC) for `shape` (Sym sizes) at the reference batch size, if
    the product of that size takes the packed GEMM; else None."""
    reference = BatchRange(max_batch).reference
    at = [d.coef * reference if isinstance(d, Sym) else d for d in shape]
    try:
        if gemm_route(*at, dtype, trans_a, trans_b, measured_small=False) != PACKED:
            return None
    except GemmTooLarge:
        return None
    return default_block_sizes(*at, 4 if dtype == "f32" else 8)[2:]


def _blas(b, dtype, pa, pb, pc, m, n, k, trans_a, trans_b, scale) -> None:
    """The BLAS product (sizes: ints or Syms), split by rows across the pool
    when BLAS runs at one thread (the pool owns the cores)."""
    if _blas_threads == 1:
        _split_blas_call(b, BLAS_FUNCTIONS[dtype], pa, pb, pc, m, n, k, trans_a, trans_b, scale)
    else:
        _blas_call(b, BLAS_FUNCTIONS[dtype], pa, pb, pc, m, n, k, trans_a, trans_b, scale)


SKINNY, SMALL, PACKED, LOOPS, BLAS = "skinny", "smallgemm", "packed", "loops", "blas"
RUNTIME = "runtime"  # symbolic sizes: skinny, smallgemm or BLAS, chosen by the program at run time (runtime_gemm.py)
RUNTIME_NATIVE = "runtime-native"  # the same where no size in 1..max_batch needs BLAS
BLAS_ROUTES = (BLAS, RUNTIME)  # the routes that may call BLAS
FUSING_ROUTES = (SKINNY, RUNTIME, RUNTIME_NATIVE)  # the routes that take a ColumnEpilogue


def gemm_route(m, n, k, dtype: str, trans_a: bool, trans_b: bool, max_batch: int | None = None,
               measured_small: bool = True) -> str | None:
    """How emit_gemm computes an (m x k) @ (k x n) product: SKINNY, SMALL, PACKED, LOOPS, BLAS, or
    None when the result is empty. A float product of at most skinny.SKINNY_MAX_ROWS rows
    streams its B (skinny.py), across the thread pool. A float product whose packed operand would pass
    smallgemm's PACK_MAX_BYTES goes to BLAS (1.35-1.5x faster than the loop nest); the loop
    nest is for integers, and k == 0. Within smallgemm's range above SMALL_MEASURED_MIN_WORK, the
    packed GEMM where it was measured faster (unless measured_small is False). Above
    native_max_work(), smallgemm where it competes and was measured faster than both
    (small_competes; unless measured_small is False), else packed_gemm's kernel where it beats
    the BLAS call (packed_beats_blas), else BLAS. Raises GemmTooLarge for a BLAS product with a
    dimension past BLAS_INT_MAX (it would be passed wrapped).

    Sizes may be Syms (multiples of the batch size B in 1..max_batch; None: unbounded): a float
    product is then RUNTIME's (RUNTIME_NATIVE's where no size up to max_batch needs BLAS), an
    integer one LOOPS; GemmTooLarge when a size past BLAS_INT_MAX is within max_batch (without a
    bound, the program checks before it calls BLAS)."""
    if symbolic(m, n, k):
        return _symbolic_route(m, n, k, dtype, trans_a, trans_b, max_batch)
    if m * n == 0:
        return None
    work = m * n * k
    native = dtype not in BLAS_FUNCTIONS or work <= THREADED_NATIVE_MAX_WORK or work <= native_max_work()
    itemsize = 4 if dtype == "f32" else 8
    if dtype in BLAS_FUNCTIONS and skinny_fits(m, n, k, trans_a, trans_b, itemsize):
        return SKINNY
    if native and k > 0 and dtype in BLAS_FUNCTIONS and small_gemm_fits(m, n, k, trans_a, trans_b, itemsize):
        if measured_small and work > SMALL_MEASURED_MIN_WORK and _packed_measured_faster(m, n, k, itemsize):
            return PACKED
        return SMALL
    if dtype not in BLAS_FUNCTIONS or k == 0:
        return LOOPS
    if measured_small and small_competes(m, n, k, dtype, trans_a, trans_b) and _small_measured_fastest(m, n, k, itemsize):
        return SMALL
    if max(m, n, k) > BLAS_INT_MAX:
        raise GemmTooLarge(f"a {dtype} product of ({m} x {k}) @ ({k} x {n}) has a dimension above "
                           f"{BLAS_INT_MAX}, the largest the BLAS (32-bit integers) takes")
    return PACKED if not native and packed_beats_blas(m, n, k, itemsize, _blas_threads) else BLAS


def small_competes(m: int, n: int, k: int, dtype: str, trans_a: bool, trans_b: bool) -> bool:
    """Whether smallgemm is measured against the packed GEMM and BLAS for a product above
    native_max_work(): a float product in the calibration's two lowest work bands, A untransposed (a
    transposed A is packed before the tiles: 512x512x128 at 256 bits ran at half the packed
    GEMM's rate), whose packed operands fit smallgemm's PACK_MAX_BYTES."""
    return (dtype in BLAS_FUNCTIONS and not trans_a and 0 < m * n * k <= WORK_BANDS[1]
            and small_gemm_fits(m, n, k, trans_a, trans_b, 4 if dtype == "f32" else 8))


def _small_measured_fastest(m: int, n: int, k: int, itemsize: int) -> bool:
    """smallgemm for this product: as forced (FFCOMPILE_GEMM_ROUTE=small), else as its class was
    measured on this host (gemm_calibration.py; unmeasured: not)."""
    return chosen_route(route_key(m, n, k, itemsize, _blas_threads)) == "small"


def _packed_measured_faster(m: int, n: int, k: int, itemsize: int) -> bool:
    """The packed GEMM for this product in smallgemm's range: as forced (FFCOMPILE_GEMM_ROUTE=
    packed), else as its class was measured on this host (unmeasured: smallgemm)."""
    return chosen_route(route_key(m, n, k, itemsize, _blas_threads), ("small", "packed")) == "packed"


def _symbolic_route(m, n, k, dtype, trans_a, trans_b, max_batch) -> str | None:
    if 0 in (m, n):  # a Sym is never 0
        return None
    if dtype not in BLAS_FUNCTIONS:
        return LOOPS
    itemsize = 4 if dtype == "f32" else 8
    if not runtime_kernels(m, n, k, trans_a, trans_b, itemsize, max_batch, native_max_work())[2]:
        return RUNTIME_NATIVE
    sizes = [largest(d, max_batch) for d in (m, n, k)]
    if None not in sizes and max(sizes) > BLAS_INT_MAX:
        raise GemmTooLarge(f"a {dtype} product of ({m} x {k}) @ ({k} x {n}) has a dimension of {max(sizes)} "
                           f"at max_batch={max_batch}, above {BLAS_INT_MAX}, the largest the BLAS (32-bit "
                           f"integers) takes")
    return RUNTIME


def _split_symbolic_small_gemm(b, pa, pb, pc, m: Sym, n: int, k: int, trans_b, scale) -> None:
    """smallgemm's product of B-dependent rows over blocks of SPLIT_SMALL_ROWS rows of C (A
    untransposed, so a block's rows of A are contiguous), split across the thread pool in
    chunks of at least SPLIT_MIN_WORK multiply-adds: the blocks counted at run time, each one
    smallgemm's code with run-time rows (fixed sizes: smallgemm_split.py)."""
    grain = -(-SPLIT_MIN_WORK // (SPLIT_SMALL_ROWS * n * k))
    rows_per_block = ir.Constant(I64, SPLIT_SMALL_ROWS)
    units = b.udiv(b.add(size_value(b, m), ir.Constant(I64, SPLIT_SMALL_ROWS - 1)), rows_per_block)
    ty = pc.type.pointee
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))

    def block_at(bb, values, first, rows):
        pa_, pb_, pc_, alpha_, beta_ = values
        a_rows = bb.gep(pa_, [bb.mul(first, ir.Constant(I64, k))], inbounds=True)
        c_rows = bb.gep(pc_, [bb.mul(first, ir.Constant(I64, n))], inbounds=True)
        emit_small_gemm(bb, a_rows, pb_, c_rows, rows, n, k, False, trans_b, (alpha_, beta_) if scale else None)

    def body(bb, values, start, end):  # every block's rows known at run time (the last one fewer): one code for all
        rows = size_value(bb, m)
        with for_range(bb, bb.sub(end, start), "rowblock") as i:
            first = bb.mul(bb.add(start, i), rows_per_block)
            left = bb.sub(rows, first)
            block_at(bb, values, first, bb.select(bb.icmp_signed("<", left, rows_per_block), left, rows_per_block))

    emit_parallel_for(b, "smallgemm", [pa, pb, pc, alpha, beta], units, grain, body)


def _small(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale) -> None:
    """smallgemm's product in a run-time route (a Sym m or k): split by blocks of rows across the
    pool where A's rows are contiguous and only m holds B (fixed sizes: smallgemm_split.py)."""
    if not trans_a and not symbolic(n, k):
        _split_symbolic_small_gemm(b, pa, pb, pc, m, n, k, trans_b, scale)
    else:
        emit_small_gemm(b, pa, pb, pc, *(d if isinstance(d, int) else size_value(b, d) for d in (m, n, k)),
                        trans_a, trans_b, scale)


def _split_blas_call(b, name, pa, pb, pc, m, n, k, trans_a, trans_b, scale, skipped=None) -> None:
    """The BLAS call, over blocks of SPLIT_ROWS rows of C split across the thread pool
    (chunks of at least SPLIT_MIN_WORK multiply-adds), each block a call on its thread.
    skipped(builder): the i64 count of C's first rows left out (computed in each function), or None."""
    ty = pc.type.pointee
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))

    def body(bb, values, start, end):
        pa_, pb_, pc_, alpha_, beta_ = values
        rows, columns, inner = (size_value(bb, d) for d in (m, n, k))
        first = bb.mul(start, ir.Constant(I64, SPLIT_ROWS))
        last = bb.mul(end, ir.Constant(I64, SPLIT_ROWS))
        if skipped is not None:
            base = skipped(bb)
            first, last = bb.add(first, base), bb.add(last, base)
        last = bb.select(bb.icmp_signed("<", last, rows), last, rows)
        a_rows = bb.gep(pa_, [first if trans_a else bb.mul(first, inner)], inbounds=True)
        c_rows = bb.gep(pc_, [bb.mul(first, columns)], inbounds=True)
        _blas_call(bb, name, a_rows, pb_, c_rows, bb.sub(last, first), n, k, trans_a, trans_b, (alpha_, beta_),
                   lda=m if trans_a else k)

    if symbolic(m, n, k):  # units and grain at run time (a run-time count: threadpool.emit_parallel_for)
        rows, work = size_value(b, m), product(b, SPLIT_ROWS, *(size_value(b, d) for d in (n, k)))
        if skipped is not None:
            rows = b.sub(rows, skipped(b))
        units = b.udiv(b.add(rows, ir.Constant(I64, SPLIT_ROWS - 1)), ir.Constant(I64, SPLIT_ROWS))
        grain = b.udiv(b.add(work, ir.Constant(I64, SPLIT_MIN_WORK - 1)), work)
    else:
        units, grain = -(-m // SPLIT_ROWS), -(-SPLIT_MIN_WORK // (SPLIT_ROWS * n * k))
    emit_parallel_for(b, "blas", [pa, pb, pc, alpha, beta], units, grain, body)


def _blas_call(b, name, pa, pb, pc, m, n, k, trans_a, trans_b, scale, lda: int | None = None) -> None:
    """The BLAS call for C = op(A) op(B) (sizes: ints, Syms, or i64 values); lda: A's
    leading dimension when A is part of a larger matrix."""
    ty = pc.type.pointee
    ptr = ty.as_pointer()
    i32p, chp = I32.as_pointer(), I8.as_pointer()
    fty = ir.FunctionType(ir.VoidType(), [chp, chp, i32p, i32p, i32p, ptr, ptr, i32p, ptr, i32p, ptr, ptr, i32p])

    def by_pointer(value: ir.Value) -> ir.Value:
        with b.goto_entry_block():
            slot = b.alloca(value.type)
        b.store(value, slot)
        return slot

    def flag(transposed: bool):
        return by_pointer(ir.Constant(I8, ord("T" if transposed else "N")))

    def i32(v):  # the size checked against BLAS_INT_MAX before (gemm_route, runtime_gemm)
        return by_pointer(ir.Constant(I32, v) if isinstance(v, int) else b.trunc(v if isinstance(v, ir.Value) else size_value(b, v), I32))

    def leading(v):  # at least 1, as BLAS requires of an empty matrix's (a run-time size is >= 1)
        return max(1, v) if isinstance(v, int) else v

    lda = lda or (m if trans_a else k)
    ldb = k if trans_b else n
    alpha, beta = scale or (ir.Constant(ty, 1.0), ir.Constant(ty, 0.0))
    b.call(_gemm_pointer(b, name, fty), [
        flag(trans_b), flag(trans_a), i32(n), i32(m), i32(k), by_pointer(alpha),
        pb, i32(leading(ldb)), pa, i32(leading(lda)), by_pointer(beta), pc, i32(leading(n))])


def _native_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale) -> None:
    """C[i, :] = 0; C[i, :] += A[i, p] * B[p, :] for p in order (the order BLAS sums in).
    Floats come here only with k == 0, where alpha * A @ B + beta * C is beta * C. Sizes: ints
    or Syms (run-time trip counts and strides)."""
    assert scale is None or k == 0, "a scaled float GEMM with k > 0 goes to smallgemm or BLAS"
    m, n, k = (size_value(b, d) for d in (m, n, k))
    ty = pc.type.pointee
    mul = (lambda x, y: b.fmul(x, y, flags=CONTRACT)) if is_float(ty) else b.mul
    add = (lambda x, y: b.fadd(x, y, flags=CONTRACT)) if is_float(ty) else b.add
    zero = ir.Constant(ty, 0.0 if is_float(ty) else 0)
    one = ir.Constant(I64, 1)
    a_i, a_p = (one, m) if trans_a else (k, one)
    b_p, b_j = (one, k) if trans_b else (n, one)

    def at(ptr, *terms):
        """&ptr[sum(index * stride)]"""
        offset = None
        for index, stride in terms:
            term = index if stride is one else b.mul(index, stride, flags=["nsw"])
            offset = term if offset is None else b.add(offset, term, flags=["nsw"])
        return b.gep(ptr, [offset], inbounds=True)

    with for_range(b, m, "row") as i:
        with for_range(b, n, "col") as j:
            c = at(pc, (i, n), (j, one))
            b.store(zero if scale is None else mul(scale[1], b.load(c)), c)
        with for_range(b, k, "inner") as p:
            a_ip = b.load(at(pa, (i, a_i), (p, a_p)))
            with for_range(b, n, "col") as j:
                c = at(pc, (i, n), (j, one))
                b.store(add(b.load(c), mul(a_ip, b.load(at(pb, (p, b_p), (j, b_j))))), c)
