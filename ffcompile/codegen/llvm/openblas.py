"""SciPy's OpenBLAS: its thread count, set through OpenBLAS's own function, and its GEMMs
found without importing SciPy.

threadpoolctl finds the library too, but it imports itself and builds a controller for
every library loaded in the process (each opened and queried): ~13 ms of CPU, a fifth of a
warm-cache first call of the mnist step. Here the loaded libraries' paths come from
dl_iterate_phdr (glibc, the BSDs: microseconds), and the one OpenBLAS SciPy loaded (not
NumPy's, which has its own pool) is called directly; blas.py falls back to threadpoolctl
when none is found (a SciPy built on MKL, BLIS, FlexiBLAS).
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
import os
from pathlib import Path
from typing import Callable

OPENBLAS_FILES = ("libopenblas", "libscipy_openblas", "openblas")  # as threadpoolctl recognizes them
# OpenBLAS builds name their symbols with a prefix (SciPy's wheels: scipy_) and, for 64-bit
# integers, a suffix.
_SYMBOL_AFFIXES = tuple(itertools.product(("", "scipy_"), ("", "64_", "_64")))


class _PhdrInfo(ctypes.Structure):
    _fields_ = [("address", ctypes.c_void_p), ("name", ctypes.c_char_p)]  # the leading fields of dl_phdr_info


_VISIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t, ctypes.c_void_p)


def loaded_libraries() -> list[str]:
    """Paths of the shared libraries loaded in this process ([] without dl_iterate_phdr)."""
    iterate = getattr(ctypes.CDLL(None), "dl_iterate_phdr", None)
    if iterate is None:
        return []
    paths = []

    def visit(info, size, data):
        if info.contents.name:
            paths.append(os.fsdecode(info.contents.name))
        return 0

    iterate(_VISIT(visit), None)
    return paths


def scipy_openblas_setters() -> list[Callable[[int], None]]:
    """The set-num-threads function of each OpenBLAS that SciPy loaded (not NumPy's)."""
    setters = []
    for path in loaded_libraries():
        if ("scipy" not in path or "numpy" in path
                or not os.path.basename(path).startswith(OPENBLAS_FILES)):
            continue
        library = ctypes.CDLL(path)  # loaded already: the same library
        for prefix, suffix in _SYMBOL_AFFIXES:
            function = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if function is not None:
                function.argtypes, function.restype = [ctypes.c_int], None
                setters.append(function)
                break
    return setters


@functools.cache
def bundled_scipy_openblas() -> ctypes.CDLL | None:
    """The OpenBLAS a SciPy wheel bundles (`scipy.libs/libscipy_openblas-*.so` beside the
    package: 32-bit integers, as scipy.linalg.cython_blas passes them), loaded without
    importing SciPy, whose __init__ costs ~9 ms of CPU (its import spec runs no code).
    cython_blas, loaded later, links this same library (the dynamic linker matches it by its
    soname). None for a SciPy built on another BLAS: then cython_blas's pointers serve."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).parent.glob("scipy.libs/libscipy_openblas-*.so"))
    return ctypes.CDLL(str(found[0])) if len(found) == 1 else None


def bundled_gemm_address(name: str) -> int | None:
    """The address of BLAS function `name` (sgemm, dgemm) in SciPy's bundled OpenBLAS: the
    Fortran-convention symbol cython_blas's `name` calls (`scipy_sgemm_`), or None."""
    library = bundled_scipy_openblas()
    function = None if library is None else getattr(library, f"scipy_{name}_", None)
    return None if function is None else ctypes.cast(function, ctypes.c_void_p).value
