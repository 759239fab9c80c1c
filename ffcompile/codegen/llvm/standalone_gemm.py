"""One GEMM compiled alone, `gemm(a, b, c, alpha, beta)` on NumPy arrays: the packed kernel or
the BLAS call as programs make it (split across the thread pool, or one call), measured
without a program around it (calibrate.py, benchmarks/gemm.py) and tested (the packed one)."""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir

from ...ir import TensorType
from .blas import BLAS_FUNCTIONS, blas_address, blas_slot, blas_symbol, emit_gemm
from .elementwise import Array
from .gemm_calibration import route_forced
from .packed_gemm import emit_packed_gemm
from .target import jit
from .threadpool import POOL_SLOT, parallel_for_address, pool_slot

TYPES = {"f32": ir.FloatType(), "f64": ir.DoubleType()}


class StandaloneGemm:
    """c = op(a) op(b) (alpha op(a) op(b) + beta c if scaled) through `route`: "packed"
    (vbytes: its vector width, default the host's) or "blas" (blas.emit_gemm with the BLAS
    route forced: a product above smallgemm's range calls BLAS as a program would)."""

    def __init__(self, m: int, n: int, k: int, dtype: str, trans_a: bool, trans_b: bool,
                 scaled: bool = False, vbytes: int | None = None, route: str = "packed"):
        ty = TYPES[dtype]
        module = ir.Module(f"{route}_gemm")
        ptr = ty.as_pointer()
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, ty, ty]), "gemm")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        pa, pb, pc, alpha, beta = fn.args
        scale = (alpha, beta) if scaled else None
        if route == "packed":
            emit_packed_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, vbytes)
        else:
            assert route == "blas" and vbytes is None, (route, vbytes)
            a_type = TensorType((k, m) if trans_a else (m, k), dtype)
            b_type = TensorType((n, k) if trans_b else (k, n), dtype)
            with route_forced("blas"):
                emit_gemm(b, Array(pa, a_type), Array(pb, b_type), Array(pc, TensorType((m, n), dtype)),
                          trans_a, trans_b, scale)
        b.ret_void()
        # The pool's and the BLAS's slots even when unused: writable data, which RuntimeDyld
        # needs for the stubs of memset calls (lower.py's BLAS slots say why).
        pool_slot(module)
        name = BLAS_FUNCTIONS[dtype]
        blas_slot(module, name)
        self.shape, self.route, self._jit = (m, n, k), route, jit(module)
        ctypes.c_void_p.from_address(self._jit.address(POOL_SLOT)).value = parallel_for_address()
        ctypes.c_void_p.from_address(self._jit.address(blas_symbol(name))).value = blas_address(name)
        scalar = ctypes.c_float if dtype == "f32" else ctypes.c_double
        self._call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, scalar, scalar)(self._jit.address("gemm"))

    def __call__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> None:
        """c = alpha op(a) op(b) + beta c (alpha, beta only if built scaled), in place; the
        arrays hold the operands as the transposes say, C-contiguous."""
        for x in (a, b, c):
            assert x.flags.c_contiguous
        self._call(a.ctypes.data, b.ctypes.data, c.ctypes.data, alpha, beta)
