"""A generic driver for local rewrites: named rules in tables, applied in sweeps.

In the style of tinygrad's `graph_rewrite`: a rule is a small function
`(node, builder) -> replacement id | None`. It sees the node with its operands
already rewritten (ids into `builder`, the graph being rebuilt), may emit new
nodes through `builder`, and returns the id that replaces the node. The first
rule of the table that answers wins. One sweep walks the node list once, in
order (the list is topologically ordered, so no recursion is needed and every
operand is final before its users are visited); sweeps repeat until none
fires, up to a cap that stops rule sets which would undo each other forever.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..ir import Builder, Graph, Node

RuleFn = Callable[[Node, Builder], int | None]


@dataclass(frozen=True)
class Rule:
    name: str
    ops: tuple[type, ...]  # the ops this rule looks at; () means every op
    apply: RuleFn


class PatternTable:
    """An ordered, named list of rules, indexed by the op each rule matches."""

    def __init__(self, name: str, rules: Iterable[Rule]):
        self.name = name
        self.rules = tuple(rules)
        self._by_op: dict[type, tuple[Rule, ...]] = {}

    def __add__(self, other: PatternTable) -> PatternTable:
        return PatternTable(f"{self.name}+{other.name}", self.rules + other.rules)

    def rules_for(self, op: type) -> tuple[Rule, ...]:
        if op not in self._by_op:
            self._by_op[op] = tuple(r for r in self.rules if not r.ops or op in r.ops)
        return self._by_op[op]


def rewrite(graph: Graph, table: PatternTable, max_sweeps: int = 16) -> Graph:
    """Apply table until no rule fires (at most max_sweeps sweeps).

    Returns `graph` itself when nothing fired, so callers can test `is` for a
    fixpoint. Replaced nodes are not emitted; operands they leave unused are
    for DCE to drop."""
    for _ in range(max_sweeps):
        rebuilt = rewrite_once(graph, table)
        if rebuilt is None:
            break
        graph = rebuilt
    return graph


def rewrite_once(graph: Graph, table: PatternTable) -> Graph | None:
    """One sweep over the node list; None when no rule fired."""
    builder = Builder(graph.name)
    mapping: list[int] = []
    fired = False
    for node in graph.nodes:
        inputs = tuple(mapping[j] for j in node.inputs)
        candidate = dataclasses.replace(node, inputs=inputs)
        replacement = _first_match(table, candidate, builder)
        if replacement is None:
            replacement = builder.copy(node, inputs)
        else:
            fired = True
        mapping.append(replacement)
    return builder.finish([mapping[j] for j in graph.outputs]) if fired else None


def _first_match(table: PatternTable, node: Node, builder: Builder) -> int | None:
    # Nodes a rule creates stand where `node` stood: they take its location.
    with builder.at(node.loc):
        for rule in table.rules_for(node.op):
            replacement = rule.apply(node, builder)
            if replacement is not None:
                got = builder.nodes[replacement].type
                if got != node.type:
                    raise TypeError(f"rewrite rule {table.name}.{rule.name} replaced a {node.op.name} "
                                    f"of type {node.type} by a value of type {got}")
                return replacement
        return None
