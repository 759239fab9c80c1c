"""What part of the program a node belongs to: forward, adjoint, recompute, optimizer update,
tangent (forward mode) (the node's own Role), or an input."""
from __future__ import annotations

from ..ir import Node
from ..ir.op import Input

ROLES = ("input", "forward", "adjoint", "recompute", "update", "tangent")


def node_role(node: Node) -> str:
    """One of ROLES."""
    return "input" if node.op is Input else node.role.value
