"""A symbolic dimension: `B` in `f32[B,512]`, a size known only when the program is called.

A `Sym` is `coef * name` (the batch size B, or a multiple of it after a reshape that
folds B into a larger axis). It supports the arithmetic shape rules do with sizes
(`==`, `*` by an int, `//` and `%` by an int that divides it, `+` of two multiples of
the same symbol, comparisons that hold for every size >= 1), so shape rules need no
change. Anything that needs a concrete value (`int(B)`, `range(B)`, an index along
B, a product B*B, B // 3) raises a ShapeError that says so, at trace time.
`substitute` replaces symbols by sizes in types and attribute values: the per-size
graph of a symbolic one.
"""
from __future__ import annotations

import numbers
import os
import sys
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError


@dataclass(frozen=True)
class Sym:
    name: str = "B"
    coef: int = 1

    def __post_init__(self):
        if not isinstance(self.coef, int) or isinstance(self.coef, bool) or self.coef < 1:
            raise TypeError(f"a symbolic dimension is a positive multiple of a symbol, got {self.coef}*{self.name}")
        # the IR's attribute words true, false, inf and nan would not parse back as symbols
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name in _WORDS:
            raise TypeError(f"a symbol is named like B (not true, false, inf or nan), got {self.name!r}")

    def __str__(self) -> str:
        return self.name if self.coef == 1 else f"{self.coef}*{self.name}"

    __repr__ = __str__  # as errors show it in a shape: [3*B, 4]

    def at(self, bindings: dict[str, int]) -> int:
        if self.name not in bindings:
            raise ShapeError(f"no size given for the symbolic dimension {self.name}")
        return self.coef * bindings[self.name]

    def _concrete(self, what: str) -> ShapeError:
        return ShapeError(f"{what} needs a concrete value of the symbolic batch size {self} "
                          f"(known only at call time); compile without batch_dim for this shape")

    def __eq__(self, other):
        # ffcompile's shape rules ask whether two sizes are the same symbol: B is not 1.
        # The user's code asks about the size (`if x.shape[0] == 1:`): either answer is
        # wrong for some batch size, one branch traced for all, so it needs the size.
        if isinstance(other, Sym):
            return (self.name, self.coef) == (other.name, other.coef)
        if not isinstance(other, numbers.Real) or isinstance(other, bool):
            return NotImplemented
        if other >= 1 and _asked_by_user():
            raise self._concrete(f"{self} == {other}")
        return False

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        return hash((Sym, self.name, self.coef))

    def _operand(self, other, what: str):
        """other as the arithmetic takes it: any integer (NumPy's too) as an int; a float (or
        another number) needs the size, a ShapeError saying so (`what` spells the operation
        with {}), rather than Python's bare TypeError; anything else (a traced value) as it is."""
        if isinstance(other, numbers.Integral) and not isinstance(other, bool):
            return int(other)
        if isinstance(other, numbers.Number) and not isinstance(other, bool):
            raise self._concrete(what.format(other))
        return other

    # ---- the arithmetic shape rules use
    def __mul__(self, other):
        other = self._operand(other, f"the product {self} * {{}}")
        if isinstance(other, int) and not isinstance(other, bool) and other >= 0:
            return Sym(self.name, self.coef * other) if other else 0
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"the product {self} * {other}")

    __rmul__ = __mul__

    def __add__(self, other):
        other = self._operand(other, f"the sum {self} + {{}}")
        if not _is_size(other):
            return NotImplemented
        if isinstance(other, Sym) and other.name == self.name:
            return Sym(self.name, self.coef + other.coef)
        if other == 0:
            return self
        raise self._concrete(f"the sum {self} + {other}")

    __radd__ = __add__

    def __floordiv__(self, other):
        other = self._operand(other, f"{self} // {{}}")
        if not _is_size(other):
            return NotImplemented
        if isinstance(other, Sym) and other.name == self.name and self.coef % other.coef == 0:
            return self.coef // other.coef
        if isinstance(other, int) and other > 0 and self.coef % other == 0:
            return Sym(self.name, self.coef // other)
        raise self._concrete(f"{self} // {other}")

    def __mod__(self, other):
        other = self._operand(other, f"{self} % {{}}")
        if not _is_size(other):
            return NotImplemented
        if isinstance(other, Sym) and other.name == self.name and self.coef % other.coef == 0:
            return 0
        if isinstance(other, int) and other > 0 and self.coef % other == 0:
            return 0
        raise self._concrete(f"{self} % {other}")

    def __rfloordiv__(self, other):
        other = self._operand(other, f"{{}} // {self}")
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"{other} // {self}")

    def __rmod__(self, other):
        other = self._operand(other, f"{{}} % {self}")
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"{other} % {self}")

    def __truediv__(self, other):
        if not isinstance(other, (int, float, Sym)):
            return NotImplemented
        raise self._concrete(f"{self} / {other}")

    def __rtruediv__(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        raise self._concrete(f"{other} / {self} (divide the traced value by it instead)")

    def __neg__(self):
        raise self._concrete(f"-{self}")

    def __sub__(self, other):
        other = self._operand(other, f"{self} - {{}}")
        if not _is_size(other):
            return NotImplemented
        if other == 0:
            return self
        raise self._concrete(f"{self} - {other}")

    def __rsub__(self, other):
        other = self._operand(other, f"{{}} - {self}")
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"{other} - {self}")

    def __pow__(self, other):
        other = self._operand(other, f"{self} ** {{}}")
        if isinstance(other, int) and other == 1:
            return self
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"{self} ** {other}")

    def __rpow__(self, other):
        other = self._operand(other, f"{{}} ** {self}")
        if not _is_size(other):
            return NotImplemented
        raise self._concrete(f"{other} ** {self}")

    def __divmod__(self, other):
        return self // other, self % other

    def __rdivmod__(self, other):
        return other // self, other % self

    # B >= 1 is a whole number: these are B itself
    def __abs__(self):
        return self

    def __pos__(self):
        return self

    def __round__(self, ndigits=None):
        if ndigits is None or ndigits >= 0:
            return self
        raise self._concrete(f"round({self}, {ndigits})")

    # A comparison with an int is monotone in B >= 1: it is decided when the smallest value,
    # coef, answers as the values past the int do (B < 1 is False, B >= 1 True), else it needs the size.
    def _compare(self, other, holds, op: str) -> bool:
        if not _is_size(other):
            return NotImplemented
        if isinstance(other, Sym) and other.name == self.name:
            return holds(self.coef, other.coef)
        if isinstance(other, int) and holds(self.coef, other) == holds(self.coef * (abs(other) + 1), other):
            return holds(self.coef, other)
        raise self._concrete(f"{self} {op} {other}")

    def __gt__(self, other): return self._compare(other, lambda a, b: a > b, ">")
    def __ge__(self, other): return self._compare(other, lambda a, b: a >= b, ">=")
    def __lt__(self, other): return self._compare(other, lambda a, b: a < b, "<")
    def __le__(self, other): return self._compare(other, lambda a, b: a <= b, "<=")

    def __index__(self):
        raise self._concrete("an index or a count")

    def __int__(self):
        raise self._concrete("int()")

    def __float__(self):
        raise self._concrete("float()")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _asked_by_user() -> bool:
    """Whether the comparison Sym.__eq__ answers is in code outside ffcompile (seen past
    this file and a dataclass's generated __eq__, as TensorType's)."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename == __file__ or (
            frame.f_code.co_filename.startswith("<") and frame.f_code.co_name in ("__eq__", "__ne__"))):
        frame = frame.f_back
    return frame is not None and not frame.f_code.co_filename.startswith(_PACKAGE_DIR)


_WORDS = frozenset({"true", "false", "inf", "nan"})


def _is_size(value) -> bool:
    """What Sym's arithmetic takes; with anything else (a traced value) it defers to it."""
    return isinstance(value, (int, Sym))


def is_dim(value) -> bool:
    """A dimension: a non-negative int or a Sym."""
    return isinstance(value, Sym) or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def is_symbolic(shape) -> bool:
    return any(isinstance(d, Sym) for d in shape)


def symbol_names(value) -> set[str]:
    """The names of the symbols in a dimension, a tuple of values (a shape, an attribute's
    list, a node's attributes) or a TensorType."""
    if isinstance(value, Sym):
        return {value.name}
    if isinstance(value, tuple):
        return set().union(*map(symbol_names, value))
    return symbol_names(value.shape) if hasattr(value, "with_shape") else set()


def substitute(value, bindings: dict[str, int], dtype: np.dtype | None = None):
    """value with every Sym replaced by its size: a dimension, a shape, a tuple of them,
    a TensorType (anything with `with_shape`), or a constant's scalar of `dtype`
    (converted as a literal of that dtype is, so the per-size graph is the one a
    trace at that size builds)."""
    if isinstance(value, Sym):
        size = value.at(bindings)
        return size if dtype is None else np.asarray(size, dtype=dtype).item()
    if isinstance(value, tuple):
        return tuple(substitute(v, bindings, dtype) for v in value)
    if hasattr(value, "with_shape") and is_symbolic(value.shape):
        return value.with_shape(substitute(value.shape, bindings))
    return value



def broadcast_shapes(*shapes) -> tuple:
    """np.broadcast_shapes over dimensions that may be symbolic: a symbolic size meets
    itself or 1 (it is >= 1, and equal to another size only when it is that size).
    Raises ValueError where the shapes do not broadcast, as NumPy does."""
    if not any(map(is_symbolic, shapes)):
        return tuple(np.broadcast_shapes(*shapes))
    rank = max(map(len, shapes))
    out = []
    for k in range(rank):
        dims = {s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def as_dim(d) -> int | Sym:
    """A dimension the user gave: a Sym as it is, anything else as an int (np.int64, ...)."""
    return d if isinstance(d, Sym) else int(d)


@dataclass(frozen=True)
class Affine:
    """A byte count or offset of a plan made for every batch size: `const + per_batch * B`."""

    const: int
    per_batch: int = 0

    @staticmethod
    def of(size) -> "Affine":
        """An int or a Sym (a multiple of the batch size) as an Affine."""
        if isinstance(size, Affine):
            return size
        if isinstance(size, Sym):
            return Affine(0, size.coef)
        return Affine(int(size))

    def at(self, batch: int) -> int:
        return self.const + self.per_batch * batch

    def __add__(self, other) -> "Affine":
        other = Affine.of(other)
        return Affine(self.const + other.const, self.per_batch + other.per_batch)

    __radd__ = __add__

    def __str__(self) -> str:
        if not self.per_batch:
            return str(self.const)
        return f"{self.const}+{self.per_batch}*B" if self.const else f"{self.per_batch}*B"


@dataclass(frozen=True)
class Envelope:
    """The most of several Affines at a batch size (a symbolic plan's arena: the end of the
    buffer that reaches furthest, which may be another buffer at another size)."""

    parts: tuple[Affine, ...]

    def at(self, batch: int) -> int:
        return max((part.at(batch) for part in self.parts), default=0)

    def __str__(self) -> str:
        return "max(" + ", ".join(map(str, self.parts)) + ")"


def bytes_at(value, batch: int) -> int:
    """An int, Sym, Affine or Envelope at a batch size (an int as it is)."""
    if isinstance(value, (Affine, Envelope)):
        return value.at(batch)
    if isinstance(value, Sym):
        return value.coef * batch
    return int(value)


# The size a symbolic program's size-dependent choices are made for when nothing bounds
# the batch: the middle of the zoo's training batches (64 to 256), where a training loop
# spends its steps (remat budgets, short-loop hints and parallel splits are sized for it).
DEFAULT_REFERENCE_BATCH = 128


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes one symbolic program serves, 1..max_batch (None: unbounded), and the
    size its size-dependent choices are made for: max_batch when given (the size the
    program must hold, and in a training loop every batch's size but a ragged last one),
    else DEFAULT_REFERENCE_BATCH. Correct at every size in range; fastest at the reference."""

    max_batch: int | None = None

    @property
    def reference(self) -> int:
        return DEFAULT_REFERENCE_BATCH if self.max_batch is None else self.max_batch

    def __str__(self) -> str:
        return f"B in 1..{'inf' if self.max_batch is None else self.max_batch}, reference {self.reference}"

    def size_of(self, length: int, coef: int) -> int:
        """The batch size an axis of `length` gives, where its type says coef * B: 0 if it
        gives none in range (not a positive multiple of coef, or past max_batch)."""
        size, rest = divmod(length, coef)
        return 0 if rest or size < 1 or (self.max_batch is not None and size > self.max_batch) else size


def first_batch_axis(shapes) -> tuple[int, int, int] | None:
    """(argument, axis, coef) of the first axis of shapes sized coef * B, where a call's batch
    size is read first; None if no shape holds B."""
    return next(((k, axis, d.coef) for k, shape in enumerate(shapes)
                 for axis, d in enumerate(shape) if isinstance(d, Sym)), None)
