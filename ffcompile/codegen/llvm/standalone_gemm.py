"""One GEMM of blas.emit_gemm compiled alone, callable on NumPy arrays: the kernels a program's
GEMM kernel runs, without the program around them (tests, calibrate.py, benchmarks/gemm.py and
symbolic_gemm.py); or one route of it forced: the packed kernel (at a vector width) or BLAS.

Sizes may be Syms (`Sym("B")` rows: x @ W; a Sym k: the weight gradient x.T @ dy): the
function then takes the batch size as its trailing `batch` argument, as a symbolic program's
kernel functions do (#18), and picks its kernel at run time (runtime_gemm.py).
"""
from __future__ import annotations

import contextlib
import ctypes

import numpy as np
from llvmlite import ir

from ...ir import TensorType
from ...ir.symbolic import substitute
from ...ir.types import DTYPES
from .blas import BLAS_FUNCTIONS, blas_address, blas_slot, blas_symbol, default_blas_threads, emit_gemm
from .elementwise import I64, MEMORY_TYPES, Array
from .gemm_calibration import route_forced
from . import gemm_library
from .packed_gemm import emit_packed_gemm, program_variants
from .runtime_gemm import GEMM_ERROR_SYMBOL, gemm_error_slot, raise_gemm_error, symbolic
from .target import jit
from .threadpool import fill_pool_slot, pool_slot


class StandaloneGemm:
    """`gemm(a, b, c, alpha, beta, batch)`: c = op(a) op(b) (scaled: alpha op(a) op(b) + beta c)
    for the arrays as the transposes hold them, C-contiguous. `epilogue(fn_args)`, if given,
    makes the ColumnEpilogue emit_gemm fuses, from the function's arguments (the pointers a,
    b, c, an extra pointer `d`, alpha, beta[, batch]). route: None, emit_gemm's own choice;
    "packed", the packed kernel (vbytes: its vector width, default the host's); "blas", the
    BLAS route forced (a product above smallgemm's range calls BLAS as a program would); "small",
    smallgemm where it competes above its range (blas.small_competes), else BLAS."""

    def __init__(self, m, n, k, dtype: str, trans_a: bool, trans_b: bool, scaled: bool = False,
                 max_batch: int | None = None, epilogue=None, blas: int | None = None,
                 route: str | None = None, vbytes: int | None = None):
        self.m, self.n, self.k, self.dtype = m, n, k, dtype
        self.trans_a, self.trans_b, self.symbolic = trans_a, trans_b, symbolic(m, n, k)
        ty = MEMORY_TYPES[dtype]
        module = ir.Module("standalone_gemm")
        ptr = ty.as_pointer()
        params = [ptr, ptr, ptr, ptr, ty, ty] + ([I64] if self.symbolic else [])
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), params), "gemm")
        if self.symbolic:
            fn.args[-1].name = "batch"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        pa, pb, pc, _, alpha, beta = fn.args[:6]
        shapes = self.shapes()
        arrays = [Array(p, TensorType(shape, dtype)) for p, shape in zip((pa, pb, pc), shapes)]
        scale = (alpha, beta) if scaled else None
        if route == "packed":
            emit_packed_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, vbytes)
        else:
            assert route in (None, "blas", "small") and vbytes is None, (route, vbytes)
            with route_forced(route) if route else contextlib.nullcontext():
                emit_gemm(b, *arrays, trans_a, trans_b, scale, epilogue(fn.args) if epilogue else None, max_batch)
        b.ret_void()
        for name in BLAS_FUNCTIONS.values():  # writable data for RuntimeDyld's stubs (lower.py says why)
            blas_slot(module, name)
        pool_slot(module)
        gemm_error_slot(module)
        self.llvm_ir = str(module)
        self._jit = jit(module)
        default_blas_threads()
        for name in BLAS_FUNCTIONS.values():
            slot = ctypes.c_void_p.from_address(self._jit.address(blas_symbol(name)))
            slot.value = blas if blas is not None else blas_address(name)
        fill_pool_slot(self._jit)
        gemm_library.fill_slots(self._jit, program_variants(module))
        self._error = self._jit.address(GEMM_ERROR_SYMBOL)
        scalar = np.ctypeslib.as_ctypes_type(DTYPES[dtype])
        extra = [ctypes.c_int64] if self.symbolic else []
        self._call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, scalar, scalar, *extra)(self._jit.address("gemm"))

    def shapes(self, batch: int | None = None) -> list[tuple]:
        """The shapes of a, b and c as held in memory (at `batch`, if given)."""
        m, n, k = self.m, self.n, self.k
        shapes = [(k, m) if self.trans_a else (m, k), (n, k) if self.trans_b else (k, n), (m, n)]
        return shapes if batch is None else [substitute(s, {"B": batch}) for s in shapes]

    def __call__(self, a, b, c, alpha: float = 1.0, beta: float = 0.0, batch: int | None = None, d=None) -> None:
        assert (batch is not None) == self.symbolic
        for x, shape in zip((a, b, c), self.shapes(batch)):
            assert x.flags.c_contiguous and x.shape == tuple(shape) and x.dtype == DTYPES[self.dtype]
        self.run([x.ctypes.data if x is not None else None for x in (a, b, c, d)], alpha, beta, batch)

    def run(self, addresses: list, alpha: float = 1.0, beta: float = 0.0, batch: int | None = None) -> None:
        """The call on the addresses of a, b, c and d, unchecked; then GemmTooLarge if the
        program refused a BLAS call."""
        alpha, beta = (DTYPES[self.dtype].type(x).item() for x in (alpha, beta))  # ints for an integer GEMM
        self._call(*addresses, alpha, beta, *([batch] if self.symbolic else []))
        raise_gemm_error(self._error, batch)

