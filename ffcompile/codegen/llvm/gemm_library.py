"""The shape-generic packed GEMM functions (packed_gemm.py), built once per host and cached.

A program calls the packed GEMM of its dtype, transposes and vector width through a module
global slot (packed_gemm.library_slot) that the backend fills after loading it, as it fills
the BLAS and thread-pool slots: the function itself is a runtime module of its own
(cache.runtime_module: keyed by the host target, its name and the code generator's
fingerprint, checked like any cached code), compiled the first time a process needs it
and on later runs loaded from the disk cache. Each variant is built alone, when first
asked for: a program needs two or three of the 8 a vector width has, and building them
together saves nothing (f32 at 512 bits, CPU time, a loaded machine: 108-209 ms each, 604
ms for the four apart against 537 ms in one module). Its pool slot is
filled with the thread pool's parallel-for once loaded. An export defines the variants its
program calls inside the exported module instead (define_in): a self-contained library.
"""
from __future__ import annotations

import ctypes
import threading

from llvmlite import ir

from . import fastcall
from .cache import runtime_module
from .packed_gemm import SLOT_SUFFIX, GemmVariant, define_library_function, program_variants
from .target import JitModule, object_code
from .threadpool import POOL_SLOT, fill_pool_slot, pool_slot

_loaded: dict[str, JitModule] = {}
_lock = threading.Lock()
builds = 0  # variants compiled (not loaded from the disk cache) in this process: tests count them


def library_module(variant: GemmVariant) -> ir.Module:
    """The IR of `variant`'s runtime module: its function and the pool slot it calls through."""
    module = ir.Module(f"packed gemm {variant.symbol}")
    pool_slot(module)
    define_library_function(module, variant)
    return module


def address(symbol: str) -> int:
    """The address of library function `symbol` (a GemmVariant's), built or loaded if not
    yet in this process, its pool slot filled."""
    variant = GemmVariant.of_symbol(symbol)
    if variant is None:
        raise ValueError(f"no packed GEMM variant is named {symbol!r}")
    with _lock:
        jit = _loaded.get(symbol)
        if jit is None:
            jit = runtime_module(f"packed gemm {symbol}", (symbol,), lambda: _build(variant), data=(POOL_SLOT,))
            fill_pool_slot(jit)
            _loaded[symbol] = jit
    return jit.address(symbol)


def build_host_runtime(vbytes: int) -> int:
    """Load every variant of one vector width (f32 and f64, every transpose), building (and
    caching) those not in the disk cache, with the thread pool and the fast call's checker:
    `python -m ffcompile.calibrate` does it ahead of a program's first compile. Returns how
    many variants were built."""
    before = builds
    fastcall.load()
    for dtype in ("f32", "f64"):
        for trans_a in (False, True):
            for trans_b in (False, True):
                address(GemmVariant(dtype, trans_a, trans_b, vbytes).symbol)
    return builds - before


def _build(variant: GemmVariant) -> bytes:
    global builds
    builds += 1
    return object_code(library_module(variant))


def fill_slots(jit: JitModule, symbols) -> None:
    """Point a loaded program's slots at the library functions it calls."""
    for symbol in symbols:
        ctypes.c_void_p.from_address(jit.address(symbol + SLOT_SUFFIX)).value = address(symbol)


def define_in(module: ir.Module) -> None:
    """Define, inside `module` (a program to export), every library function it calls, and
    point its slot at it (internal: the export's own)."""
    for symbol in program_variants(module):
        function = define_library_function(module, GemmVariant.of_symbol(symbol))
        function.linkage = "internal"
        slot = module.get_global(symbol + SLOT_SUFFIX)
        slot.initializer = function.bitcast(slot.type.pointee)
        slot.linkage = "internal"
