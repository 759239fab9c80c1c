"""What an op's attributes may hold: small declarative kinds, one per attribute.

Each op class declares `attributes = {"name": KIND, ...}` next to its other
rules; `Op.check_signature` (run by the Builder, so by the parser, and by the
verifier) checks every value against its kind before the shape rule reads
it. A kind checks type and sign; what needs the operand types (an axis within
rank, a permutation of the rank, a constant's values against its dtype) is
the shape rule's part. Python's bool is an int: every integer kind rejects it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .symbolic import Sym, is_dim
from .types import DTYPES, TensorType


@dataclass(frozen=True)
class Attr:
    """An attribute kind: `accepts(value)` and what a valid value is, for messages."""

    describe: str
    accepts: Callable[[Any], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ints(value, minimum: int) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) and v >= minimum for v in value)


def nested_shape(value) -> tuple[int, ...] | None:
    """The shape of a scalar or of nested equal-length tuples of scalars, None if ragged
    or holding anything else. Iterative: the parser bounds nesting, Python callers need not."""
    shape, level = [], [value]
    while all(isinstance(v, tuple) for v in level):
        lengths = {len(v) for v in level}
        if len(lengths) != 1:
            return None
        shape.append(lengths.pop())
        level = [item for v in level for item in v]
        if not level:  # an empty axis: nothing deeper to look at
            return tuple(shape)
    if any(isinstance(v, tuple) or not isinstance(v, (bool, int, float, Sym)) for v in level):
        return None
    return tuple(shape)


def flat_scalars(value) -> list:
    """The scalars of nested tuples in order (value must have a nested_shape)."""
    level = [value]
    while level and isinstance(level[0], tuple):
        level = [item for v in level for item in v]
    return level


BOOL = Attr("a bool (true or false)", lambda v: isinstance(v, bool))
STRING = Attr("a string", lambda v: isinstance(v, str))
INDEX = Attr("a non-negative int", lambda v: _is_int(v) and v >= 0)
NUMBER = Attr("a finite number", lambda v: _is_number(v) and math.isfinite(v))
INDICES = Attr("a list of non-negative ints", lambda v: _ints(v, 0))
# sizes: 0 is a valid (empty) dimension, and a symbolic size (B) one known at call time
DIMS = Attr("a list of non-negative ints", lambda v: isinstance(v, tuple) and all(map(is_dim, v)))
DTYPE = Attr(f"one of {', '.join(map(repr, DTYPES))}", lambda v: isinstance(v, str) and v in DTYPES)
TYPE = Attr("a tensor type", lambda v: isinstance(v, TensorType))
TRIPLES = Attr("a list of [low, high, interior] lists of non-negative ints",
               lambda v: isinstance(v, tuple) and all(_ints(c, 0) and len(c) == 3 for c in v))
SCALARS = Attr("a number, a bool or nested equal-length lists of them",
               lambda v: nested_shape(v) is not None)


def one_of(*choices: str) -> Attr:
    return Attr(f"one of {', '.join(map(repr, choices))}", lambda v: isinstance(v, str) and v in choices)
