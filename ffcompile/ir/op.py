"""What every op is: the Op base class, its traits and cost, the registry, and `input`.

The ops themselves, each with all its rules, are in ops.py; this module holds what the
graph layer needs without them (the builder adds inputs, the printer and parser look
ops up by name), so that neither imports the op library or the Tracer it uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import numpy as np

from . import attributes as A
from .errors import ShapeError
from .printer import format_value
from .types import TensorType


class Trait(Enum):
    """What kind of computation an op is, for the passes that ask (fusion, remat,
    autodiff). Not a kernel kind (passes/schedule.KernelKind): a kernel groups ops."""

    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    LAYOUT = "layout"
    SOURCE = "source"
    COMPOSITE = "composite"
    COLLECTIVE = "collective"  # communicates with other processes: never folded, its own kernel


ELEMENTWISE, REDUCTION, CONTRACTION = Trait.ELEMENTWISE, Trait.REDUCTION, Trait.CONTRACTION
LAYOUT, SOURCE, COMPOSITE, COLLECTIVE = Trait.LAYOUT, Trait.SOURCE, Trait.COMPOSITE, Trait.COLLECTIVE

OPS: dict[str, type["Op"]] = {}


def register(cls):
    if cls.name in OPS:
        raise ValueError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int


def format_types(types) -> str:
    return ", ".join(str(t) for t in types)


def shown_value(value) -> str:
    """An attribute value as IR text (Python repr if it has none), cut short."""
    try:
        text = format_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Op:
    name: ClassVar[str]
    traits: ClassVar[frozenset[Trait]] = frozenset()
    arity: ClassVar[int | None] = 1  # None: variadic
    attributes: ClassVar[dict[str, A.Attr]] = {}  # name -> kind
    differentiable: ClassVar[bool] = True
    flops_per_element: ClassVar[int] = 1

    @classmethod
    def error(cls, message: str, types=()) -> ShapeError:
        suffix = f" (operands: {format_types(types)})" if types else ""
        return ShapeError(f"{cls.name}: {message}{suffix}")

    @classmethod
    def check_signature(cls, types, attrs) -> None:
        if cls.arity is not None and len(types) != cls.arity:
            raise cls.error(f"expects {cls.arity} operands, got {len(types)}", types)
        if set(attrs) != set(cls.attributes):
            raise cls.error(f"attributes must be {sorted(cls.attributes)}, got {sorted(attrs, key=str)}")
        for name, kind in cls.attributes.items():
            if not kind.accepts(attrs[name]):
                raise cls.error(f"{name} must be {kind.describe}, got {shown_value(attrs[name])}")

    @classmethod
    def infer(cls, types: list[TensorType], attrs: dict) -> TensorType:
        raise NotImplementedError

    @classmethod
    def reference(cls, attrs: dict, *args: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def vjp(cls, inputs: list, out, g, attrs: dict) -> list:
        raise NotImplementedError(f"{cls.name} has no VJP")

    @classmethod
    def cost(cls, types: list[TensorType], out: TensorType, attrs: dict) -> Cost:
        moved = sum(t.nbytes for t in types) + out.nbytes
        return Cost(out.size * cls.flops_per_element, moved)


# --------------------------------------------------------------------------- the one op every graph has


@register
class Input(Op):
    name = "input"
    traits = frozenset({SOURCE})
    arity = 0
    attributes = {"name": A.STRING, "type": A.TYPE}
    differentiable = False

    @classmethod
    def infer(cls, types, attrs):
        return attrs["type"]

    @classmethod
    def cost(cls, types, out, attrs):
        return Cost(0, 0)
