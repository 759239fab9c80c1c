"""The graph IR: an ordered SSA list of immutable, typed nodes (like a jaxpr).

A node's id is its position in `Graph.nodes`; inputs always refer to earlier
nodes, so list order is a topological order and no traversal needs recursion.
Graph inputs are nodes of op `input`; outputs are a tuple of node ids.
"""
from __future__ import annotations

from functools import cached_property
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .op import Input
from .printer import print_graph
from .types import TensorType


class Role(StrEnum):
    """What part of the program a node belongs to: data the passes read (remat tells the
    backward part by it), printed before the location (`%5:f32[] = mul %1, %2 adjoint loc(...)`;
    forward prints nothing; the second and later recomputations of a value print
    `recompute#2 loc(...)`). Locations are debug information only."""

    FORWARD = "forward"
    ADJOINT = "adjoint"  # made by autodiff
    TANGENT = "tangent"  # made by forward mode (passes/forward.py): a JVP's tangent nodes
    RECOMPUTE = "recompute"  # a forward value recomputed for the backward part (remat)
    UPDATE = "update"  # an optimizer's update in a training step


@dataclass(frozen=True)
class Loc:
    """Where a node came from: the user's file:line and the module path; `transforms`
    names the transforms that made it from the user's node, outermost first (a node of
    vmap(vmap(f)) prints `loc(vmap vmap "f.py":3)`)."""

    file: str
    line: int
    scope: str = ""
    transforms: tuple[str, ...] = ()

    def __str__(self) -> str:
        from .printer import format_name, format_string

        parts = list(self.transforms) + [f"{format_string(self.file)}:{self.line}"]
        if self.scope:
            parts.append(f"@{format_name(self.scope)}")
        return f"loc({' '.join(parts)})"


@dataclass(frozen=True)
class Node:
    op: type  # an Op subclass from ops.py
    inputs: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]  # sorted by name; values hashable
    type: TensorType
    loc: Loc | None = field(default=None, compare=True)
    role: Role = Role.FORWARD
    copy: int = 1  # a recompute node's copy number: the n-th recomputation of its value (remat)

    def attr(self, name: str):
        for key, value in self.attrs:
            if key == name:
                return value
        raise KeyError(f"{self.op.name} has no attribute {name!r}")

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def key(self):
        """Structural identity used by CSE: (op, inputs, attrs, type)."""
        return (self.op, self.inputs, self.attrs, self.type)


def freeze_attrs(attrs: dict[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((attrs or {}).items()))


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    outputs: tuple[int, ...]
    name: str = "main"

    # Cached (the graph is immutable): passes and codegen read these inside per-node loops,
    # where recomputing them made compiling a 1,000-layer chain quadratic.
    @cached_property
    def inputs(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.nodes) if n.op is Input)

    @cached_property
    def input_types(self) -> tuple[TensorType, ...]:
        return tuple(self.nodes[i].type for i in self.inputs)

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return tuple(self.nodes[i].type for i in self.outputs)

    def __len__(self) -> int:
        return len(self.nodes)

    def users(self) -> list[list[int]]:
        """users[i] lists the nodes that read node i (with repetition)."""
        result: list[list[int]] = [[] for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                result[j].append(i)
        return result

    def __str__(self) -> str:
        return print_graph(self)

    def to_networkx(self):
        import networkx as nx

        dag = nx.MultiDiGraph(name=self.name)
        for i, node in enumerate(self.nodes):
            dag.add_node(i, op=node.op.name, type=str(node.type), attrs=node.attr_dict)
        for i, node in enumerate(self.nodes):
            for slot, j in enumerate(node.inputs):
                dag.add_edge(j, i, slot=slot)
        return dag

    def to_dot(self) -> str:
        lines = [f'digraph "{self.name}" {{', "  node [shape=box, fontname=monospace];"]
        for i, node in enumerate(self.nodes):
            lines.append(f'  n{i} [label="%{i} {node.op.name}\\n{node.type}"];')
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                lines.append(f"  n{j} -> n{i};")
        for k, j in enumerate(self.outputs):
            lines.append(f'  out{k} [label="out {k}", shape=oval];  n{j} -> out{k};')
        lines.append("}")
        return "\n".join(lines) + "\n"
