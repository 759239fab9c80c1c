"""Tracing: run a Python function on Values to record its graph.

Arguments and results are pytrees. Every node records the user's file:line
(the first stack frame outside ffcompile) and the module path (nn modules
push their names while they run).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import time
import types
from dataclasses import dataclass

import numpy as np

from .ir import Builder, Graph, Loc, TensorType
from .ir.lang import Value, lift
from .ir.symbolic import Sym
from .ir.types import dtype_name
from .runtime import ArgumentError
from .tree import TreeDef, tree_flatten, tree_paths, tree_unflatten

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Model definitions shipped in the package are user code for locations' sake.
_MODEL_FILES = {os.path.join(_PACKAGE_DIR, "zoo.py")}


def _is_internal(path: str) -> bool:
    return path.startswith(_PACKAGE_DIR) and path not in _MODEL_FILES


def user_traceback(exc: BaseException) -> BaseException:
    """exc with ffcompile's own frames cut from its traceback, as JAX filters its tracebacks:
    a user error (a shape, a dtype, an argument) shows the user's lines alone.
    FFCOMPILE_TRACEBACK=full keeps every frame."""
    if os.environ.get("FFCOMPILE_TRACEBACK") == "full":
        return exc
    kept, tb = [], exc.__traceback__
    while tb is not None:
        if not _is_internal(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    filtered = None
    for tb in reversed(kept):
        filtered = types.TracebackType(filtered, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return exc.with_traceback(filtered)


def user_site(depth: int = 1) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of the user's code, from the caller's frame up."""
    frame = sys._getframe(depth + 1)
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    path = frame.f_code.co_filename
    short = os.path.relpath(path) if not path.startswith("<") else path
    if short.startswith(".." + os.sep):
        short = os.path.basename(path)
    return short, frame.f_lineno


def _user_loc_provider(builder: Builder):
    """A node's location: inside a module of ff.nn (whose code is ffcompile's), the line
    where the user built that module; elsewhere the innermost line of the user's code."""
    def provider() -> Loc | None:
        site = builder.sites[-1] if builder.sites and builder.sites[-1] is not None else user_site(2)
        return None if site is None else Loc(site[0], site[1], ".".join(builder.scope))

    return provider


@contextlib.contextmanager
def scope(value_or_builder, name: str, site: tuple[str, int] | None = None):
    """Push a module-path component while a module's code is being traced; site: where
    the user built that module (for a module whose code is not the user's)."""
    builder = value_or_builder.builder if isinstance(value_or_builder, Value) else value_or_builder
    builder.scope.append(name)
    builder.sites.append(site)
    try:
        yield
    finally:
        builder.scope.pop()
        builder.sites.pop()


@dataclass(frozen=True)
class Traced:
    graph: Graph
    in_tree: TreeDef
    out_tree: TreeDef
    # Arrays the function closed over that became the graph's last inputs (lang.lift):
    # the program reads them at every call.
    closures: tuple = ()
    # Messages of the runtime checks (lang.check) whose i32 flags are the graph's last outputs,
    # after the function's own.
    checks: tuple[str, ...] = ()
    seconds: float = 0.0  # the trace took (the transforms' adjoint graphs are built during it)


# The builders whose function is running now, innermost last (per thread): a transform
# called on arrays inside one of them belongs to it (its function may close over its Values).
_RUNNING = threading.local()


def running_trace() -> Builder | None:
    """The innermost trace whose function is being called now, or None outside every trace."""
    stack = getattr(_RUNNING, "stack", None)
    return stack[-1] if stack else None


def trace(fn, in_tree: TreeDef, in_types: list[TensorType], names: list[str],
          parent: Builder | None = None, weak=()) -> tuple[Traced, list[Value]]:
    """Trace fn on fresh inputs of the given types; also return values captured from `parent`.
    weak[k]: input k is a Python scalar (weakly typed). A top-level trace turns large
    closed-over arrays into inputs (Traced.closures)."""
    start = time.perf_counter()
    builder = Builder(getattr(fn, "__name__", "fn").strip("<>") or "fn", parent)
    if parent is None:
        builder.closure_arrays = []
    inputs = [Value(builder, builder.add_input(t, n)) for t, n in zip(in_types, names)]
    builder.weak = {v.id for v, w in zip(inputs, weak) if w}
    builder.loc_provider = _user_loc_provider(builder)
    stack = _RUNNING.__dict__.setdefault("stack", [])
    stack.append(builder)
    try:
        result = fn(*tree_unflatten(in_tree, inputs))
    finally:
        stack.pop()
    leaves, out_tree = tree_flatten(result)
    outputs = []
    for leaf in leaves:
        if isinstance(leaf, Value) and leaf.builder is not builder:
            leaf = lift(builder, leaf, None)
        elif isinstance(leaf, Sym):  # the batch size returned: an int, as np.asarray makes n
            leaf = lift(builder, leaf, dtype_name(np.asarray(0).dtype))
        elif not isinstance(leaf, Value):
            leaf = lift(builder, np.asarray(leaf), None)
        outputs.append(leaf.id)
    outputs += [flag for flag, _ in builder.checks]
    graph = builder.finish(outputs)
    closures = tuple(builder.closure_arrays or ())
    checks = tuple(message for _, message in builder.checks)
    traced = Traced(graph, in_tree, out_tree, closures, checks, time.perf_counter() - start)
    return traced, list(builder.captured_values)


def signature(args, fn=None) -> tuple[TreeDef, list[TensorType], list[str], list]:
    """Flatten call arguments into a tree, their types, their names and the leaves.

    Inputs are named by the function's parameter names and pytree paths,
    e.g. `params.layers.0.w`, so IR dumps read like the user's code."""
    leaves, in_tree = tree_flatten(tuple(args))
    params = _parameter_names(fn, len(args))
    names = []
    for i, arg in enumerate(args):
        names += tree_paths(arg, params[i])
    types = [_leaf_type(leaf, name) for leaf, name in zip(leaves, names)]
    return in_tree, types, names, leaves


def _leaf_type(leaf, name: str) -> TensorType:
    """Arrays, traced Values, or bare TensorTypes (ff.spec) for shape-only lowering."""
    if isinstance(leaf, Value):
        return leaf.type
    if isinstance(leaf, TensorType):
        return leaf
    if isinstance(leaf, (str, bytes)) or callable(leaf):
        raise ArgumentError(f"argument {name}: a {type(leaf).__name__} is not an array; if the function "
                            f"branches on it, mark it static: ff.compile(fn, static_argnames=...)")
    try:
        return TensorType.of(leaf)
    except TypeError as exc:  # e.g. an object or an unsupported dtype: name the argument
        raise ArgumentError(f"argument {name}: {exc}") from None


def _parameter_names(fn, count: int) -> list[str]:
    names = []
    try:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
    except (TypeError, ValueError):
        pass
    return (names + [f"arg{i}" for i in range(len(names), count)])[:count]
