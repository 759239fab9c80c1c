"""Executable: one compiled signature of a function, with argument checks.

Arguments are checked against the traced input types before the backend
runs (shape, dtype; anything NumPy can view as an array is accepted and
made contiguous), so bad input is a clear Python error, never a crash.
A program for every batch size (batch_dim=, BatchRange) has input types holding
B: a call binds B from its arguments and checks them against the types at B.
"""
from __future__ import annotations

import numpy as np

from .codegen.arguments import Binding, overlapping_arguments
from .ir import TensorType
from .ir.symbolic import BatchRange, Sym, first_batch_axis, is_symbolic, substitute
from .tree import TreeDef, tree_flatten, tree_unflatten, unflattener


class ArgumentError(TypeError):
    """A call's arguments do not match the compiled signature."""


def as_array(leaf, name: str) -> np.ndarray:
    if isinstance(leaf, np.ndarray):
        return leaf
    try:
        return np.asarray(leaf)
    except Exception as exc:  # noqa: BLE001 - report any conversion failure the same way
        raise ArgumentError(f"argument {name}: cannot convert {type(leaf).__name__} to an array") from exc


def check_arguments(leaves, names, types: list[TensorType], contiguous: bool = True,
                    batch: BatchRange | None = None) -> list[np.ndarray]:
    """The leaves as arrays of the compiled types (C-contiguous copies where needed, unless
    contiguous=False), or an ArgumentError naming the argument. batch: types may hold B,
    bound by the arguments to one size in that range."""
    if len(leaves) != len(types):
        raise ArgumentError(f"expected {len(types)} array arguments, got {len(leaves)}")
    leaves = [as_array(leaf, name) for leaf, name in zip(leaves, names)]
    shown = types
    if batch is not None:
        size, source = batch_size_of(leaves, names, types, batch)
        types = types_at(types, size)
        shown = [f"{t} (B = {size}, from {source})" if is_symbolic(t.shape) else t for t in shown]
    arrays = []
    for array, name, expected, spelled in zip(leaves, names, types, shown):
        got = f"{array.dtype}{list(array.shape)}"
        if array.shape != expected.shape or array.dtype != expected.np_dtype:
            raise ArgumentError(f"argument {name}: expected {spelled}, got {got}")
        # ascontiguousarray would make a 0-d array 1-d
        arrays.append(np.require(array, requirements="C") if contiguous else array)
    return arrays


def batch_size_of(arrays, names, types: list[TensorType], batch: BatchRange) -> tuple[int, str]:
    """(B, the argument it is read from): the first argument whose type holds B sets it,
    which must be in 1..max_batch."""
    for array, name, t in zip(arrays, names, types):
        for axis, d in enumerate(t.shape):
            if isinstance(d, Sym) and len(array.shape) == t.rank:
                size = batch.size_of(array.shape[axis], d.coef)
                if not size:
                    top = batch.max_batch
                    raise ArgumentError(f"argument {name}: axis {axis} has {array.shape[axis]} for {d} in {t}: "
                                        f"B must be in 1..{'' if top is None else top}")
                return size, name
    raise ArgumentError("no argument has the symbolic batch axis: no batch size to read")


def types_at(types: list[TensorType], size: int) -> list[TensorType]:
    return [substitute(t, {"B": size}) for t in types]


class Executable:
    """One compiled signature: a backend's Program (codegen/backend.py) behind argument checks.

    closures: arrays the function closed over that are the program's last inputs
    (trace.Traced.closures), passed after the caller's leaves at every call."""

    def __init__(self, program, input_types, out_tree: TreeDef, names: list[str], closures=(), checks=(),
                 batch: BatchRange | None = None):
        """checks: messages of the runtime checks whose flags are the program's last results.
        batch: the program serves every batch size in this range (input types hold B)."""
        self.program = program
        self.batch = batch
        self.checks = tuple(checks)
        self.out_tree = out_tree
        self.closures = list(closures)
        self.names = list(names) + [f"closure{k}" for k in range(len(self.closures))]
        self.input_types = list(input_types)
        self._fast_types = [(t.np_dtype, t.shape) for t in self.input_types]
        # of a symbolic program: (leaf, axis, coef) that binds B, and _fast_types per size seen
        self._batch_axis = first_batch_axis([t.shape for t in self.input_types])
        self._fast_types_at: dict[int, list] = {}
        self._explicit = len(self.input_types) - len(self.closures)
        # on C-contiguous arrays of the compiled types (accepts or check_arguments said so)
        self.run_flat = self._run_and_check if self.checks else (
            program.call if not self.closures else self._run_with_closures)
        self.unflatten = unflattener(out_tree)  # flat results -> the function's result tree
        self._call_objects = getattr(program, "call_objects", None)  # optional (codegen/backend.py)
        self._closure_tuple = tuple(self.closures)
        self._donated_inputs = sorted(set(program.donated.values()))  # written over: must be writeable

    def _run_with_closures(self, leaves) -> list[np.ndarray]:
        return self.program.call([*leaves, *self.closures])

    def _run_and_check(self, leaves) -> list[np.ndarray]:
        return self.without_check_flags(self.program.call([*leaves, *self.closures]))

    def bound_checks(self, results: list) -> tuple[list, list]:
        """(results without the check flags, [(flag, message)]) of a binding."""
        n = len(self.checks)
        return (results[:-n], list(zip(results[-n:], self.checks))) if n else (results, [])

    def without_check_flags(self, results: list[np.ndarray]) -> list[np.ndarray]:
        """results without the runtime checks' flags, or the first failed check's ValueError."""
        n = len(self.checks)
        if n:
            raise_failed(results[-n:], self.checks)
            results = results[:-n]
        return results

    def accepts(self, leaves) -> bool:
        """True if leaves (and the closed-over arrays) are C-contiguous arrays of the
        compiled types: they run unchecked."""
        if len(leaves) != self._explicit:
            return False
        fast_types = self._fast_types if self.batch is None else self._fast_types_of(leaves)
        if fast_types is None:
            return False
        for leaf, (dtype, shape) in zip([*leaves, *self.closures] if self.closures else leaves,
                                        fast_types):
            if not (isinstance(leaf, np.ndarray) and leaf.dtype == dtype and leaf.shape == shape
                    and leaf.flags.c_contiguous):
                return False
        return True

    def _fast_types_of(self, leaves) -> list | None:
        """_fast_types at the batch size the leaves bring (None when it is out of range)."""
        k, axis, coef = self._batch_axis
        leaf = ([*leaves, *self.closures] if self.closures else leaves)[k]
        if not isinstance(leaf, np.ndarray) or leaf.ndim <= axis:
            return None
        size = self.batch.size_of(leaf.shape[axis], coef)
        if not size:
            return None
        found = self._fast_types_at.get(size)
        if found is None:
            found = self._fast_types_at[size] = [(t.np_dtype, t.shape) for t in types_at(self.input_types, size)]
        return found

    def run_objects(self, leaves: tuple) -> list[np.ndarray] | None:
        """run_flat's results if every leaf runs unchecked (as accepts says), else None without
        running: the ordinary call's fast path. The program checks them natively if it can."""
        native = self._call_objects
        if native is None:
            if not self.accepts(leaves) or self._donated_inputs and not self._donatable(leaves):
                return None
            return self.run_flat(list(leaves))
        if len(leaves) != self._explicit:
            return None
        results = native(leaves + self._closure_tuple if self._closure_tuple else leaves)
        if results is None or not self.checks:
            return results
        return self.without_check_flags(results)

    def _donatable(self, leaves) -> bool:
        """Whether the donated leaves are writeable and share memory with no other leaf, as the
        native call's check requires (fastcall.py): else the full path copies them."""
        if not all(leaves[k].flags.writeable for k in self._donated_inputs):
            return False
        arrays = [*leaves, *self.closures]
        shared = overlapping_arguments(arrays)
        return not shared.intersection(self._donated_inputs)

    def call_flat(self, leaves) -> list[np.ndarray]:
        """Run on flat leaves; a C-contiguous array of the compiled type passes unchecked."""
        if self.accepts(leaves):
            return self.run_flat(leaves)
        return self.without_check_flags(self.program.call(self._checked_arguments(leaves)))

    def _checked_arguments(self, leaves, contiguous: bool = True) -> list[np.ndarray]:
        """check_arguments over the leaves and the closed-over arrays after them."""
        if len(leaves) != self._explicit:
            raise ArgumentError(f"expected {self._explicit} array arguments, got {len(leaves)}")
        return check_arguments([*leaves, *self.closures], self.names, self.input_types, contiguous, self.batch)

    def bind_flat(self, leaves) -> tuple[Binding, list[np.ndarray]]:
        """The program tied to these leaves (docs/bind.md), checked as a call checks them, and
        the arrays it reads: views of the leaves (non-array leaves converted once). A view
        keeps the bound shape even if the caller's array object is resized in place, and
        references that array, so its memory can be neither freed nor reallocated."""
        arrays = [a.view() for a in self._checked_arguments(leaves, contiguous=False)]
        return self.program.bind(arrays), arrays

    def __call__(self, *args):
        leaves, _ = tree_flatten(tuple(args))
        return tree_unflatten(self.out_tree, self.call_flat(leaves))


def raise_failed(flags, messages) -> None:
    for flag, message in zip(flags, messages):
        if flag:
            raise ValueError(message)


class BoundCall:
    """A compiled program bound to fixed arrays (`cf.bind(...)`, `step.bind(...)`, docs/bind.md).

    `bound()` runs it over the arrays it was bound to and returns `result`: the
    same arrays every call, overwritten by the next one. Refill the bound inputs in
    place between calls (`x[...] = next_x`); an array put in their place in the
    caller's pytree is not seen. The bound object references every array it
    reads or writes, so none can be freed, and `ndarray.resize` on one raises.
    Calls may run concurrently with other calls of the same program (they take
    turns on its arena); one bound object's arrays are one state, so calling the
    same bound object from two threads at once races like any in-place update."""

    __slots__ = ("_refresh", "_run", "_before", "_after", "_checks", "_plain", "result", "_keep")

    def __init__(self, binding: Binding, given: list[np.ndarray], result, after=(), refresh=None, checks=()):
        """checks: (flag array, message) of the runtime checks, read after every run."""
        self._refresh = refresh  # writes inputs computed per call (a training step's hyperparameters)
        self._checks = tuple(checks)
        self._run = binding.run
        # Arguments the backend could not use in place: its copies are refreshed every call.
        self._before = [(used, array) for used, array in zip(binding.arrays, given) if used is not array]
        self._after = [*binding.after, *after]
        self._plain = not (self._before or self._after or self._checks)  # the run alone
        self.result = result
        self._keep = (binding, given)

    def __call__(self):
        if self._refresh is not None:
            self._refresh()
        if self._plain:
            self._run()
            return self.result
        for target, source in self._before:
            np.copyto(target, source)
        self._run()
        for target, source in self._after:
            np.copyto(target, source)
        if self._checks:
            raise_failed([flag for flag, _ in self._checks], [message for _, message in self._checks])
        return self.result
