"""Text form of a graph: one node a line, e.g. `%3:f32[64,128] = matmul %1, %2`.

Attributes print as `{name=value, ...}` (lists in brackets, strings quoted,
floats as Python's shortest round-tripping repr); a location prints last as
`loc(transforms "file":line @scope)` (transforms: those that made the node, e.g. `vmap`).
The `type` attribute of source ops is the node's own annotation, so it is not repeated. Every string is escaped (JSON
rules, non-ASCII as \\u escapes); names (graph, scope, role) print bare when
they are plain words, else quoted. `parser.parse_ir` reads this text back exactly.
"""
from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

from .symbolic import Sym

if TYPE_CHECKING:  # graph.py prints through this module
    from .graph import Graph, Node

PLAIN_NAME = re.compile(r"[A-Za-z_][\w.]*", re.ASCII)  # printed bare: the parser's word token


def format_string(text: str) -> str:
    return json.dumps(text)


def format_name(name: str) -> str:
    """A graph name, scope or role: bare if a plain word, else a quoted string."""
    return name if PLAIN_NAME.fullmatch(name) else format_string(name)


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return format_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Sym):  # a symbolic size: B, 2*B
        return str(value)
    raise TypeError(f"attribute value {value!r} has no text form")


def format_attrs(node: Node) -> str:
    shown = [(k, v) for k, v in node.attrs if k != "type"]
    if not shown:
        return ""
    return " {" + ", ".join(f"{k}={format_value(v)}" for k, v in shown) + "}"


def format_node(index: int, node: Node, locs: bool = True) -> str:
    text = f"%{index}:{node.type} = {node.op.name}"
    if node.inputs:
        text += " " + ", ".join(f"%{i}" for i in node.inputs)
    text += format_attrs(node)
    if node.role != "forward":
        text += f" {node.role}" + (f"#{node.copy}" if node.copy > 1 else "")
    if locs and node.loc is not None:
        text += f" {node.loc}"
    return text


def print_graph(graph: Graph, locs: bool = True) -> str:
    lines = [f"graph @{format_name(graph.name)} {{"]
    lines += ["  " + format_node(i, n, locs) for i, n in enumerate(graph.nodes)]
    lines.append("  return " + ", ".join(f"%{i}" for i in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
