"""Executable: one compiled signature of a function, with argument checks.

Arguments are checked against the traced input types before the backend
runs (shape, dtype; anything NumPy can view as an array is accepted and
made contiguous), so bad input is a clear Python error, never a crash.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ir import Graph, TensorType
from .tree import TreeDef, tree_flatten, tree_unflatten


class ArgumentError(TypeError):
    """A call's arguments do not match the compiled signature."""


def as_array(leaf, name: str) -> np.ndarray:
    if isinstance(leaf, np.ndarray):
        return leaf
    try:
        return np.asarray(leaf)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise ArgumentError(f"argument {name}: cannot convert {type(leaf).__name__} to an array") from exc


def check_arguments(leaves, names, types: list[TensorType]) -> list[np.ndarray]:
    if len(leaves) != len(types):
        raise ArgumentError(f"expected {len(types)} array arguments, got {len(leaves)}")
    arrays = []
    for leaf, name, expected in zip(leaves, names, types):
        array = as_array(leaf, name)
        got = f"{array.dtype}{list(array.shape)}"
        if array.shape != expected.shape or array.dtype != expected.np_dtype:
            raise ArgumentError(f"argument {name}: expected {expected}, got {got}")
        arrays.append(np.require(array, requirements="C"))  # ascontiguousarray makes 0-d 1-d
    return arrays


class Executable:
    """A backend function for one graph, called with NumPy arrays."""

    def __init__(self, graph: Graph, fn: Callable, out_tree: TreeDef, names: list[str]):
        self.graph = graph
        self.fn = fn
        self.out_tree = out_tree
        self.names = names
        self.input_types = list(graph.input_types)
        self._fast_types = [(t.np_dtype, t.shape) for t in self.input_types]

    def run_flat(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.fn(*arrays)
        result, seen = [], set()
        for out in outs:
            if type(out) is not np.ndarray:
                out = np.asarray(out)
            # Results never alias inputs, each other, or read-only views.
            if out.base is not None or not out.flags.writeable or id(out) in seen:
                out = np.array(out, copy=True)
            seen.add(id(out))
            result.append(out)
        return result

    def accepts(self, leaves) -> bool:
        """True if leaves are C-contiguous arrays of the compiled types: they run unchecked."""
        if len(leaves) != len(self.input_types):
            return False
        for leaf, (dtype, shape) in zip(leaves, self._fast_types):
            if not (isinstance(leaf, np.ndarray) and leaf.dtype == dtype and leaf.shape == shape
                    and leaf.flags.c_contiguous):
                return False
        return True

    def call_flat(self, leaves) -> list[np.ndarray]:
        """Run on flat leaves; a C-contiguous array of the compiled type passes unchecked."""
        if not self.accepts(leaves):
            leaves = check_arguments(leaves, self.names, self.input_types)
        return self.run_flat(leaves)

    def __call__(self, *args):
        leaves, _ = tree_flatten(tuple(args))
        return tree_unflatten(self.out_tree, self.call_flat(leaves))
