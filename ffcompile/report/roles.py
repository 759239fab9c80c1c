"""What part of the program a node belongs to: forward, adjoint, recompute, optimizer update.

Read through `node_role` alone: today the role lives in the node's location
(`loc(grad ...)`, `loc(recompute ...)`, the `@optim` scope of a training
step's update); when nodes carry an explicit role, only this function changes.
"""
from __future__ import annotations

from ..ir import Node

ROLES = ("input", "forward", "adjoint", "recompute", "update")

_LOC_ROLES = {"grad": "adjoint", "recompute": "recompute"}


def node_role(node: Node) -> str:
    """One of ROLES."""
    if node.op.name == "input":
        return "input"
    loc = node.loc
    if loc is None:
        return "forward"
    if loc.role in _LOC_ROLES:
        return _LOC_ROLES[loc.role]
    if loc.scope == "optim" or loc.scope.startswith("optim."):
        return "update"
    return "forward"
