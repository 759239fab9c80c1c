"""The backends by name: the one place that maps `backend="..."` to a Backend object."""
from __future__ import annotations

from .backend import Backend, BackendError
from .llvm.backend import LLVM
from .numpy_backend import NUMPY

BACKENDS: dict[str, Backend] = {"llvm": LLVM, "numpy": NUMPY}
DEFAULT_BACKEND = "llvm"  # "numpy" runs the same schedule through NumPy (the reference path)


def get_backend(name: str | None) -> Backend:
    if name is None:
        name = DEFAULT_BACKEND
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {tuple(BACKENDS)}")
    return BACKENDS[name]
