"""The OpenBLAS a SciPy wheel bundles, reached without importing SciPy: its GEMMs and its
thread count.

Loading scipy.linalg.cython_blas (the capsules blas.py otherwise reads the GEMMs from)
imports the scipy package, ~9 ms of CPU; setting the thread count through threadpoolctl
imports it and builds a controller for every library loaded in the process, ~13 ms. The
two were two fifths of a warm-cache first call of the mnist step. A wheel's OpenBLAS
(`scipy.libs/libscipy_openblas-*.so` beside the package: 32-bit integers, as cython_blas
passes them; NumPy's is another library with its own pool) is found through scipy's
import spec, which runs no code, and called directly. Everything returns None for a SciPy
without one (built on a system OpenBLAS, MKL, BLIS): then blas.py uses cython_blas and
threadpoolctl.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from pathlib import Path
from typing import Callable

# What the wheel's build names them (SCIPY_OPENBLAS prefix), then a plain OpenBLAS's names.
_SET_THREADS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")


@functools.cache
def bundled_scipy_openblas() -> ctypes.CDLL | None:
    """The wheel's OpenBLAS, loaded. cython_blas, loaded later, links this same library (the
    dynamic linker matches it by its soname): one library, one thread setting."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).parent.glob("scipy.libs/libscipy_openblas-*.so"))
    if len(found) != 1:
        return None
    # OpenBLAS starts its worker threads as it loads, and each new worker spins about 0.1 s of
    # a core before it sleeps (a cold first call's CPU time: 0.31 s, 0.20 s without). blas.py
    # sets it to DEFAULT_BLAS_THREADS (1) anyway, so it is loaded with that many unless the
    # user chose (its variable read at load; a later set_blas_threads(n) starts workers then).
    # The variable is in the process's environment for the load: a subprocess another thread
    # starts in that instant inherits it.
    chosen = "OPENBLAS_NUM_THREADS" in os.environ
    if not chosen:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        return ctypes.CDLL(str(found[0]))
    finally:
        if not chosen:
            del os.environ["OPENBLAS_NUM_THREADS"]


def bundled_gemm_address(name: str) -> int | None:
    """The address of BLAS function `name` (sgemm, dgemm) in the wheel's OpenBLAS: the
    Fortran-convention symbol cython_blas's `name` calls (`scipy_sgemm_`)."""
    library = bundled_scipy_openblas()
    function = None if library is None else getattr(library, f"scipy_{name}_", None)
    return None if function is None else ctypes.cast(function, ctypes.c_void_p).value


def bundled_set_threads() -> Callable[[int], None] | None:
    """The wheel's OpenBLAS's own set-num-threads function."""
    library = bundled_scipy_openblas()
    for name in _SET_THREADS if library is not None else ():
        function = getattr(library, name, None)
        if function is not None:
            function.argtypes, function.restype = [ctypes.c_int], None
            return function
    return None
