"""The backends by name: the one place that maps `backend="..."` to a Backend object.

A backend's module is imported when the backend is first asked for: the LLVM
backend loads llvmlite (~20 ms) and the NumPy one SciPy's special functions
(~100 ms), which `import ffcompile` should not pay for (tests/test_import_cost.py)."""
from __future__ import annotations

import importlib
from collections.abc import Mapping

from .backend import Backend, BackendError


class _Registry(Mapping):
    """name -> Backend, each imported from its module on first access."""

    def __init__(self, where: dict[str, tuple[str, str]]):
        self._where = where  # name -> (module, attribute)
        self._loaded: dict[str, Backend] = {}

    def __getitem__(self, name: str) -> Backend:
        backend = self._loaded.get(name)
        if backend is None:
            module, attribute = self._where[name]
            backend = self._loaded[name] = getattr(importlib.import_module(module, __package__), attribute)
        return backend

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


BACKENDS: Mapping[str, Backend] = _Registry({"llvm": (".llvm.backend", "LLVM"),
                                             "numpy": (".numpy_backend", "NUMPY")})
DEFAULT_BACKEND = "llvm"  # "numpy" runs the same schedule through NumPy (the reference path)


def get_backend(name: str | None) -> Backend:
    if name is None:
        name = DEFAULT_BACKEND
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {tuple(BACKENDS)}")
    return BACKENDS[name]
