"""Pytrees: nested dicts, lists and tuples of arrays, flattened to leaves and back.

Dict keys are visited in sorted order (as JAX does), so two dicts with the
same keys flatten alike whatever order they were built in.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class TreeDef(NamedTuple):
    """A tuple, so comparing and hashing one (a compiled call's cache key) runs in C."""

    kind: str  # "leaf", "dict", "list", "tuple", "none"
    keys: tuple = ()
    children: tuple["TreeDef", ...] = ()
    num_leaves: int = 0


LEAF = TreeDef("leaf", num_leaves=1)
NONE = TreeDef("none")


def _node(kind: str, keys: tuple, children: tuple) -> TreeDef:
    return TreeDef(kind, keys, children, sum(c.num_leaves for c in children))


def tree_flatten(tree: Any) -> tuple[list, TreeDef]:
    """Leaves in order and the structure (pytrees are shallow; graphs are never walked so)."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves) -> TreeDef:
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return _node("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        kind = "list" if isinstance(tree, list) else "tuple"
        return _node(kind, (), tuple(_flatten(c, leaves) for c in tree))
    if tree is None:
        return NONE
    leaves.append(tree)
    return LEAF


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    it = iter(leaves)
    result = _build(treedef, it)
    if next(it, _END) is not _END:
        raise ValueError("too many leaves for this tree structure")
    return result


_END = object()


def _build(treedef: TreeDef, it):
    if treedef.kind == "leaf":
        leaf = next(it, _END)
        if leaf is _END:
            raise ValueError("too few leaves for this tree structure")
        return leaf
    if treedef.kind == "none":
        return None
    children = [_build(c, it) for c in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children))
    return children if treedef.kind == "list" else tuple(children)


def tree_paths(tree: Any, prefix: str = "") -> list[str]:
    """Dotted path of every leaf, in flattening order (used to name graph inputs)."""
    paths: list[str] = []
    _paths(tree, prefix, paths)
    return paths


def _paths(tree, prefix, paths):
    join = (lambda k: f"{prefix}.{k}" if prefix else str(k))
    if isinstance(tree, dict):
        for k in sorted(tree):
            _paths(tree[k], join(k), paths)
    elif isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        for i, c in enumerate(tree):
            _paths(c, join(i), paths)
    elif tree is not None:
        paths.append(prefix or "arg")


def tree_map(fn, tree, *rest):
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(r)[0] for r in rest]
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
