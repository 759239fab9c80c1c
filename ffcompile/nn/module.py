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
from ..random import fold_in
from ..trace import scope, user_site
from ..tree import tree_flatten, tree_from_paths, tree_paths
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


@dataclass
class RandomContext:
    """The key and train flag of the innermost model call given either: each random module
    (Dropout) takes `next_key()`, the key folded with its call's ordinal, so every dropout
    call of one forward pass draws its own mask."""

    key: Any
    train: bool
    calls: int = 0

    def next_key(self, who: str):
        if self.key is None:
            raise ValueError(f"{who} in training needs a key: call the model as "
                             f"model(params, x, key=ff.random.key(seed)) or pass train=False")
        self.calls += 1
        return fold_in(self.key, self.calls - 1)


_RANDOM: list[RandomContext] = []


def random_context() -> RandomContext | None:
    """The context of the model call running now (None: no key or train flag given: eval)."""
    return _RANDOM[-1] if _RANDOM else None


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

    def state_dict(self, params) -> dict[str, np.ndarray]:
        """params as one flat dict keyed by dotted paths, as torch names them
        (`layers.0.w`); params must have this module's structure and shapes."""
        checked = tree_from_paths(self.param_types(), _flat(params), f"{type(self).__name__}.state_dict: params")
        return _flat(checked)

    def load_state_dict(self, state_dict: dict) -> dict:
        """The params tree of a flat dict (`state_dict`, `ff.load` of a saved one): every
        key present, none unexpected, each of its parameter's shape and a float dtype;
        the arrays are copied (C-contiguous, writeable: ready to train in place)."""
        source = f"{type(self).__name__}.load_state_dict: the state dict"
        for name, array in state_dict.items():
            if not np.issubdtype(np.asarray(array).dtype, np.floating):
                raise ValueError(f"{source}: {name} has dtype {np.asarray(array).dtype}, parameters are floats")
        return tree_from_paths(self.param_types(), {k: np.array(v, copy=True, order="C")
                                                    for k, v in state_dict.items()}, source)

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
    def __call__(self, params, *inputs, key=None, train: bool | None = None):
        """Run forward under the current trace; on arrays, compile (once) and run.

        `key` (an ff.random key) switches random modules such as Dropout to training:
        `train` defaults to whether a key is given; `train=False` evaluates (dropout is
        the identity) even with a key. Without either, an inner call inherits its caller's."""
        if train is None and key is not None:
            train = True
        values = [v for v in tree_flatten((params, inputs, key))[0] if isinstance(v, Value)]
        if not values:
            if key is None:
                return self._compiled(bool(train), keyed=False)(params, *inputs)
            return self._compiled(train, keyed=True)(params, key, *inputs)
        name = _RUNNING[-1].path_of(self) if _RUNNING else None
        pushed = scope(builder_of(values), name, self._site) if name else contextlib.nullcontext()
        context = train is not None
        if context:
            _RANDOM.append(RandomContext(key, train))
        _RUNNING.append(self)
        try:
            with pushed:
                return self.forward(params, *inputs)
        finally:
            _RUNNING.pop()
            if context:
                _RANDOM.pop()

    apply = __call__

    def _compiled(self, train: bool, keyed: bool):
        """The module compiled for array calls: f(params, *inputs), or with a key
        f(params, key, *inputs), the key a program input (a fresh key needs no retrace)."""
        from ..api import compile  # api sits above nn; imported on use

        cache = vars(self).setdefault("_compiled_fns", {})
        if (train, keyed) not in cache:
            if keyed:
                def run(params, key, *inputs):
                    return self(params, *inputs, key=key, train=train)
            else:
                def run(params, *inputs):
                    return self(params, *inputs, train=train)

            run.__name__ = type(self).__name__
            cache[train, keyed] = compile(run)
        return cache[train, keyed]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.children())
        return f"{type(self).__name__}({inner})"


def _flat(tree) -> dict:
    return dict(zip(tree_paths(tree), tree_flatten(tree)[0]))


def _float_type(dtype) -> TensorType:
    ftype = TensorType((), dtype_name(dtype))
    if not ftype.is_float:
        raise TypeError(f"parameters must be float32 or float64, got {ftype.np_dtype}")
    return ftype
