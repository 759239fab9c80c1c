"""ONNX ops as compositions of ffcompile ops: one rule per op type.

The rules themselves live in rules_elementwise, rules_tensor and rules_layout;
`table.RULES` is the complete table. A rule receives the node (attributes, opset, the trace's builder) and its
inputs, each a traced `Value`, a NumPy array (a constant known at import:
non-float initializers, Constant nodes, folded Shape arithmetic) or None (an
omitted optional input). Values whose meaning is structural (shapes, axes,
slice bounds) must be constants; a rule asks for them through `node.static`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

from ..ir import lang as L
from ..ir.lang import Value
from .errors import node_error
from .symbolic_shapes import SymInts


@dataclass(frozen=True)
class Rule:
    fn: Callable
    attrs: frozenset[str]
    static: frozenset[int]  # positions of the inputs that must be constants (shapes, axes)


RULES: dict[str, Rule] = {}


def rule(*op_types: str, attrs: tuple[str, ...] = (), static: tuple[int, ...] = ()):
    def register(fn):
        for op_type in op_types:
            RULES[op_type] = Rule(fn, frozenset(attrs), frozenset(static))
        return fn
    return register


def _attribute(a):
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims"):  # a TensorProto
        return numpy_helper.to_array(value)
    return value


class Node:
    """One ONNX node while it is converted."""

    def __init__(self, proto, opset: int, builder):
        self.proto = proto
        self.op_type = proto.op_type
        self.opset = opset
        self.builder = builder
        self.attrs = {a.name: _attribute(a) for a in proto.attribute}

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def error(self, message: str):
        return node_error(self.proto, message)

    def static(self, x, what: str) -> np.ndarray:
        if isinstance(x, SymInts):
            raise self.error(f"{what} holds the symbolic batch size ({x}): it must be known at "
                             "import; compile without batch_dim for this model")
        if isinstance(x, Value):
            raise self.error(f"{what} must be a constant (an initializer of integer type, a "
                             "Constant or a folded Shape computation), not a value computed at "
                             "run time: ffcompile compiles static shapes")
        return np.asarray(x)

    def value(self, x) -> Value:
        return x if isinstance(x, Value) else L.lift(self.builder, np.asarray(x), None)

    def axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < max(rank, 1):
            raise self.error(f"axis {axis} out of range for rank {rank}")
        return axis % max(rank, 1)

    def float_input(self, x) -> Value:
        x = self.value(x)
        if not x.type.is_float:
            raise self.error(f"needs a float32 or float64 input, got {x.type}")
        return x
