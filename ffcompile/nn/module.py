"""Module: a model as a Python object whose parameters are a pytree.

A module declares its own parameters (`param_specs`: name -> shape and
initializer) and holds its sub-modules as attributes (a module, or a list of
modules). `init(seed)` draws every parameter into nested dicts keyed by
attribute name (lists of modules give lists of dicts); `model(params, *inputs)`
runs `forward` on that tree. Modules hold no arrays, so a model is a pure
function of (params, inputs) and composes with ff.compile and ff.grad.

While a child runs, its attribute name is pushed onto the trace scope, so IR
locations name the module path, e.g. `@layers.2.act`. A module shared by
several branches of a DAG is stored once and called more than once: its
parameters are one subtree and its nodes carry one path.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..ir import TensorType
from ..ir.lang import Value, builder_of
from ..ir.types import dtype_name
from ..trace import scope, user_site
from ..tree import tree_flatten
from . import init as initializers


@dataclass(frozen=True)
class Param:
    """One parameter of a module: its shape and how to draw it."""

    shape: tuple[int, ...]
    init: Callable


_PACKAGE = __name__.split(".")[0] + "."

# The modules whose forward is running, innermost last: a module's path
# component is the name its running parent stores it under.
_RUNNING: list["Module"] = []


class Module:
    def __new__(cls, *args, **kwargs):
        module = super().__new__(cls)
        # Where the user built it: the location of its nodes when its code is ffcompile's.
        module._site = user_site() if cls.__module__.startswith(_PACKAGE) else None
        return module

    def param_specs(self) -> dict[str, Param]:
        """This module's own parameters (not its children's)."""
        return {}

    def forward(self, params, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward(params, *inputs)")

    # ---- structure
    def children(self) -> list[tuple[str, "Module | list[Module]"]]:
        """Sub-modules by attribute name, in assignment order (lists of modules included)."""
        found = []
        for name, value in vars(self).items():
            if isinstance(value, Module):
                found.append((name, value))
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                found.append((name, list(value)))
        return found

    def path_of(self, child: "Module") -> str | None:
        """The path component of a direct child (`image`, `layers.2`), None if not one."""
        for name, value in self.children():
            if value is child:
                return name
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is child:
                        return f"{name}.{i}"
        return None

    # ---- parameters
    def init(self, seed: int = 0, dtype="float32") -> dict:
        """Draw all parameters with numpy.random.default_rng(seed), as nested dicts of arrays."""
        rng = np.random.default_rng(seed)
        np_dtype = _float_type(dtype).np_dtype
        return self._tree(lambda p: initializers.get(p.init)(rng, p.shape, np_dtype))

    def param_types(self, dtype="float32") -> dict:
        """The parameter tree with TensorTypes for leaves (no arrays drawn)."""
        ftype = _float_type(dtype)
        return self._tree(lambda p: ftype.with_shape(p.shape))

    def _tree(self, leaf: Callable[[Param], Any], seen: dict | None = None, path: str = "") -> dict:
        seen = {} if seen is None else seen
        if id(self) in seen:
            raise ValueError(
                f"{type(self).__name__} is stored at both {seen[id(self)] or '<root>'!r} and "
                f"{path!r}: store a shared module once and call it more than once")
        seen[id(self)] = path
        specs = self.param_specs()
        tree = {name: leaf(spec) for name, spec in specs.items()}
        for name, child in self.children():
            if name in specs:
                raise ValueError(f"{type(self).__name__}: {name!r} is both a parameter and a sub-module")
            sub = f"{path}.{name}" if path else name
            if isinstance(child, list):
                tree[name] = [c._tree(leaf, seen, f"{sub}.{i}") for i, c in enumerate(child)]
            else:
                tree[name] = child._tree(leaf, seen, sub)
        return tree

    # ---- calling
    def __call__(self, params, *inputs):
        """Run forward under the current trace; on arrays, compile (once) and run."""
        values = [v for v in tree_flatten((params, inputs))[0] if isinstance(v, Value)]
        if not values:
            return self._compiled()(params, *inputs)
        name = _RUNNING[-1].path_of(self) if _RUNNING else None
        pushed = scope(builder_of(values), name, self._site) if name else contextlib.nullcontext()
        _RUNNING.append(self)
        try:
            with pushed:
                return self.forward(params, *inputs)
        finally:
            _RUNNING.pop()

    apply = __call__

    def _compiled(self):
        from ..api import compile  # api sits above nn; imported on use

        if "_compiled_fn" not in vars(self):
            def run(params, *inputs):
                return self(params, *inputs)

            run.__name__ = type(self).__name__
            self._compiled_fn = compile(run)
        return self._compiled_fn

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.children())
        return f"{type(self).__name__}({inner})"


def _float_type(dtype) -> TensorType:
    ftype = TensorType((), dtype_name(dtype))
    if not ftype.is_float:
        raise TypeError(f"parameters must be float32 or float64, got {ftype.np_dtype}")
    return ftype
