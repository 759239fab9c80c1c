"""`batch_dim=`: one trace for every batch size (docs/symbolic_batch.md).

`ff.compile(fn, batch_dim=(None, 0, 0), max_batch=4096)` marks, per positional
argument, the axis that is the batch (None: the argument has none; an int alone:
every argument has it there). The function is traced once with that axis as the
symbol B (`f32[B,784]`); the traced graph is printed, parsed and verified like any
other, and a shape that needs a concrete B fails at trace time with a ShapeError
naming the op and the user's line. Each batch size a call brings gets the symbolic
graph specialized to it (ir/specialize.py): node for node what a trace at that
size builds, so the results are those of the per-size program, bit for bit.
"""
from __future__ import annotations

import operator

import numpy as np

from .codegen.backend import BackendError
from .ir import ShapeError, TensorType
from .ir.symbolic import DEFAULT_REFERENCE_BATCH, BatchRange, Sym
from .runtime import ArgumentError
from .tree import tree_flatten

BATCH = Sym("B")
# The size an unbounded program's size-dependent choices are made for (a bounded one's is
# max_batch): BatchRange.reference, which the memory plan carries to code generation.
REFERENCE_BATCH = DEFAULT_REFERENCE_BATCH


class BatchSpec:
    """Which axis of which argument is the symbolic batch size, and its bound.

    first: how many leading positional arguments never have one (a training step's
    params, optimizer state and hyperparameters); batch_dim speaks of those after."""

    def __init__(self, batch_dim, max_batch: int | None = None, first: int = 0):
        if not (_is_axis(batch_dim) or (
                isinstance(batch_dim, (tuple, list)) and all(d is None or _is_axis(d) for d in batch_dim))):
            raise ValueError(f"batch_dim must be an axis (a non-negative int) or a tuple of one axis "
                             f"or None per positional argument, got {batch_dim!r}")
        if max_batch is not None and (_integer(max_batch) is None or max_batch < 1):
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        self.batch_dim = (tuple(None if d is None else _integer(d) for d in batch_dim)
                          if isinstance(batch_dim, (tuple, list)) else _integer(batch_dim))
        self.max_batch = None if max_batch is None else _integer(max_batch)
        self.first = first

    def axes(self, args: tuple, positions: list[int | None], positional: int) -> list[int | None]:
        """The batch axis of every leaf of args, the dynamic arguments of a call with
        `positional` positional arguments (static ones among them, CallingConvention.positions):
        a tuple batch_dim speaks of those, static ones included, so an entry keeps its
        argument when static ones are taken out; a keyword-only argument has none."""
        dims = self.batch_dim
        if isinstance(dims, tuple) and len(dims) != positional - self.first:
            raise ArgumentError(f"batch_dim gives {len(dims)} entries for {positional - self.first} "
                                f"positional batch arguments")
        axes = []
        for arg, k in zip(args, positions):
            if k is not None and k < self.first:
                axis = None
            elif isinstance(dims, tuple):
                axis = None if k is None else dims[k - self.first]
            else:
                axis = dims
            axes += [axis] * len(tree_flatten(arg)[0])
        return axes

    def size(self, types: list[TensorType], names: list[str], axes: list[int | None]) -> int:
        """The call's batch size: the one length all batch axes share, within max_batch."""
        sizes = {}
        for t, name, axis in zip(types, names, axes):
            if axis is None:
                continue
            if axis >= t.rank:
                raise ArgumentError(f"argument {name}: batch_dim {axis} is out of range for {t}")
            sizes.setdefault(t.shape[axis], name)
        if not sizes:
            raise ArgumentError("batch_dim marks no array argument: no batch size to read")
        if len(sizes) > 1:
            shown = ", ".join(f"{name} has {size}" for size, name in sizes.items())
            raise ArgumentError(f"the batch arguments disagree on the batch size: {shown}")
        size = next(iter(sizes))
        if size < 1 or (self.max_batch is not None and size > self.max_batch):
            if self.max_batch is None:  # B >= 1 is what lets `B > 0` be decided at trace time
                raise ArgumentError(f"batch size 0 ({sizes[size]}): a symbolic batch is never empty")
            raise ArgumentError(f"batch size {size} ({sizes[size]}) is outside max_batch's range 1..{self.max_batch}")
        return size

    @property
    def range(self) -> BatchRange:
        return BatchRange(self.max_batch)

    @staticmethod
    def symbolic(types: list[TensorType], axes: list[int | None]) -> list[TensorType]:
        """The types with every batch axis made the symbol B."""
        return [t if axis is None else t.with_shape(t.shape[:axis] + (BATCH,) + t.shape[axis + 1:])
                for t, axis in zip(types, axes)]


def _integer(value) -> int | None:
    """value as a Python int if it is an integer, NumPy's included (a size read off an array);
    None for anything else, bools too."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _is_axis(value) -> bool:
    return _integer(value) is not None and value >= 0


# What a symbolic graph's stages or code generation raise where they need a concrete size:
# that signature then gets a program per batch size, with the message as the reason.
SYMBOLIC_REFUSALS = (ShapeError, BackendError, NotImplementedError)


def per_size_reason(options) -> str | None:
    """Why a compile with these pipeline options (pipeline.Options) cannot build one program
    for every batch size, or None when it can."""
    if not options.optimize:
        return "optimize=False runs the traced graph op by op at each batch size"
    if not getattr(options.backend, "symbolic_batch", False):
        return f"the {options.backend.name} backend builds a program per batch size"
    return None
