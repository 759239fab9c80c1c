"""Builder: appends typed nodes to a graph under construction.

Tracing, autodiff and every rewriting pass build graphs through this one
class, so type inference and location tracking happen in one place.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

from .errors import ShapeError
from .graph import Graph, Loc, Node, Role, freeze_attrs
from .op import Input
from .types import TensorType

CURRENT = object()  # emit()'s default location: whatever the builder says now


def located(exc: ShapeError, loc: Loc | None) -> ShapeError:
    """The error with the user's file:line and module path at the end of its first line."""
    if loc is None or getattr(exc, "loc", None) is not None:
        return exc
    first, _, rest = str(exc).partition("\n")
    where = f"{loc.file}:{loc.line}" + (f" @{loc.scope}" if loc.scope else "")
    new = type(exc)(f"{first} at {where}" + (f"\n{rest}" if rest else ""))
    new.loc = loc
    return new


class Builder:
    def __init__(self, name: str = "main", parent: "Builder | None" = None):
        self.name = name
        self.nodes: list[Node] = []
        self.parent = parent
        # Values of enclosing builders used here become inputs of this graph.
        self.captures: dict[tuple[int, int], int] = {}
        self.captured_values: list = []
        self.loc_provider: Callable[[], Loc | None] | None = None
        self.fixed_loc: Loc | None = None  # overrides the provider: set it with `at`
        self.role = Role.FORWARD  # of the nodes emitted now: set it with `at` or `playing`
        self.scope: list[str] = []  # module path of the code being traced, e.g. ["layers", "2"]
        self.sites: list = []  # per scope entry: (file, line) where the user built that module, or None
        self.checks: list[tuple[int, str]] = []  # (i32 scalar, 1 when failed; message): lang.check
        self.weak: set[int] = set()  # inputs from Python scalars: they take the dtype they meet
        # Arrays closed over by the traced function that became inputs (read at call time);
        # None: a top-level trace that embeds them as literals (see lang.lift).
        self.closure_arrays: list | None = None
        self.closure_inputs: dict[int, int] = {}  # id(array) -> its input node

    @contextmanager
    def at(self, loc: Loc | None, role: Role | None = None):
        """Nodes emitted inside the block get loc (None: the provider's again) and role (None:
        unchanged), e.g. the adjoint of a node gets the node's location and Role.ADJOINT;
        the previous settings come back after."""
        saved = self.fixed_loc, self.role
        self.fixed_loc, self.role = loc, self.role if role is None else role
        try:
            yield self
        finally:
            self.fixed_loc, self.role = saved

    @contextmanager
    def playing(self, role: Role):
        """Nodes emitted inside the block get role; locations come from the provider as before."""
        with self.at(self.fixed_loc, role):
            yield self

    def current_loc(self) -> Loc | None:
        if self.fixed_loc is not None:
            return self.fixed_loc
        if self.loc_provider is not None:
            return self.loc_provider()
        return None

    def emit(self, op, inputs, attrs: dict | None = None, loc: "Loc | None | object" = CURRENT,
             role: Role | None = None, copy: int = 1) -> int:
        """Append a node; loc and role default to the builder's current ones (copy: Node.copy)."""
        attrs = attrs or {}
        types = [self.nodes[i].type for i in inputs]
        loc = self.current_loc() if loc is CURRENT else loc
        try:
            op.check_signature(types, attrs)
            out = op.infer(types, attrs)
        except ShapeError as exc:
            raise located(exc, loc) from None
        node = Node(op, tuple(inputs), freeze_attrs(attrs), out, loc, self.role if role is None else role, copy)
        self.nodes.append(node)
        return len(self.nodes) - 1

    def add_input(self, type_: TensorType, name: str, loc: Loc | None = None) -> int:
        """Inputs carry no location unless given one: they come from the caller."""
        return self.emit(Input, [], {"name": name, "type": type_}, loc)

    def copy(self, node: Node, inputs) -> int:
        """Append `node` with remapped inputs (type re-inferred, location and role kept)."""
        return self.emit(node.op, inputs, node.attr_dict, node.loc, node.role, node.copy)

    def inline(self, graph: Graph, args) -> list[int]:
        """Append `graph`'s nodes with its inputs bound to node ids `args`; return its outputs."""
        if len(args) != len(graph.inputs):
            raise ValueError(f"inline: {graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
        mapping = dict(zip(graph.inputs, args))
        for i, node in enumerate(graph.nodes):
            if i not in mapping:
                mapping[i] = self.copy(node, [mapping[j] for j in node.inputs])
        return [mapping[j] for j in graph.outputs]

    def finish(self, outputs) -> Graph:
        return Graph(tuple(self.nodes), tuple(outputs), self.name)
