"""Pytrees (`ff.tree`): nested containers of arrays, flattened to leaves and back.

The nodes are dicts, lists, tuples, NamedTuples, dataclass instances and None
(an empty node); everything else is a leaf (arrays, scalars, and
`ff.TensorType`, which stands for an array). Dict keys are visited in sorted
order (as JAX does), so two dicts with the same keys flatten alike whatever
order they were built in; NamedTuple and dataclass fields in declaration order
(a dataclass's fields with init=False are not part of the tree: its
constructor recomputes them).

    leaves, treedef = tree_flatten(tree)     tree_unflatten(treedef, leaves) == tree
    tree_leaves(tree)                        tree_map(fn, tree, *more_trees)
    tree_paths(tree)                         dotted leaf paths: "layers.0.w", "state.m.b"
    tree_from_paths(like, flat, source)      like's structure from a path -> array dict
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

from .ir.symbolic import Sym
from .ir.types import TensorType

__all__ = ["TreeDef", "tree_flatten", "tree_from_paths", "tree_leaves", "tree_map", "tree_paths", "tree_unflatten"]


class TreeDef(NamedTuple):
    """A tuple, so comparing and hashing one (a compiled call's cache key) runs in C."""

    kind: str  # "leaf", "dict", "list", "tuple", "none", "namedtuple", "dataclass"
    keys: tuple = ()  # dict keys; field names of a NamedTuple or dataclass
    children: tuple["TreeDef", ...] = ()
    num_leaves: int = 0
    node_type: type | None = None  # the class of a NamedTuple or dataclass node


LEAF = TreeDef("leaf", num_leaves=1)
_END = object()  # no such key
NONE = TreeDef("none")


def _node(kind: str, keys: tuple, children: tuple, node_type: type | None = None) -> TreeDef:
    return TreeDef(kind, keys, children, sum(c.num_leaves for c in children), node_type)


def _is_namedtuple(tree) -> bool:
    return isinstance(tree, tuple) and hasattr(tree, "_fields")


def _is_dataclass_node(tree) -> bool:
    return dataclasses.is_dataclass(tree) and not isinstance(tree, (type, TensorType, Sym))  # Sym: a size, a leaf


def _field_names(tree) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(tree) if f.init)


def tree_flatten(tree: Any) -> tuple[list, TreeDef]:
    """Leaves in order and the structure (pytrees are shallow; graphs are never walked so)."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves) -> TreeDef:
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return _node("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if _is_namedtuple(tree):
        return _node("namedtuple", tree._fields, tuple(_flatten(c, leaves) for c in tree), type(tree))
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        return _node(kind, (), tuple(_flatten(c, leaves) for c in tree))
    if tree is None:
        return NONE
    if _is_dataclass_node(tree):
        names = _field_names(tree)
        return _node("dataclass", names, tuple(_flatten(getattr(tree, n), leaves) for n in names), type(tree))
    leaves.append(tree)
    return LEAF


def tree_leaves(tree: Any) -> list:
    """The leaves of tree, in flattening order."""
    return tree_flatten(tree)[0]


def tree_leaves_like(tree: Any, treedef: TreeDef) -> list | None:
    """tree's leaves if it has exactly treedef's structure, else None.

    The hot path of a compiled call: matching a known structure reads the
    tree without building a TreeDef, about 3x cheaper than tree_flatten."""
    leaves: list = []
    return leaves if _match(tree, treedef, leaves) else None


def _match(tree, treedef: TreeDef, leaves) -> bool:
    kind = treedef.kind
    if kind == "leaf":
        if type(tree) is not np.ndarray and _flatten(tree, []) is not LEAF:
            return False  # a container or None where a leaf was
        leaves.append(tree)
        return True
    if kind == "none":
        return tree is None
    if kind == "dict":
        # Same length and every key present means the same key set, in any order.
        if not isinstance(tree, dict) or len(tree) != len(treedef.keys):
            return False
        for key, child in zip(treedef.keys, treedef.children):
            item = tree.get(key, _END)
            if child is LEAF and type(item) is np.ndarray:
                leaves.append(item)  # the common leaf, without a call
            elif item is _END or not _match(item, child, leaves):
                return False
        return True
    if kind == "dataclass":
        if type(tree) is not treedef.node_type:
            return False
        tree = [getattr(tree, name) for name in treedef.keys]
    elif kind == "namedtuple":
        if type(tree) is not treedef.node_type:
            return False
    elif not isinstance(tree, list if kind == "list" else tuple) or hasattr(tree, "_fields") \
            or len(tree) != len(treedef.children):
        return False
    for item, child in zip(tree, treedef.children):
        if child is LEAF and type(item) is np.ndarray:
            leaves.append(item)
        elif not _match(item, child, leaves):
            return False
    return True


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    leaves = leaves if isinstance(leaves, list) else list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"too {'many' if len(leaves) > treedef.num_leaves else 'few'} leaves "
                         f"for this tree structure")
    return _build(treedef, iter(leaves))


def _build(treedef: TreeDef, it):
    """Counted first, so every next(it) finds a leaf."""
    kind = treedef.kind
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    children = [next(it) if c is LEAF else _build(c, it) for c in treedef.children]
    if kind == "dict":
        return dict(zip(treedef.keys, children))
    if kind == "namedtuple":
        return treedef.node_type(*children)
    if kind == "dataclass":
        return treedef.node_type(**dict(zip(treedef.keys, children)))
    return children if kind == "list" else tuple(children)


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
    elif _is_namedtuple(tree):
        for name, c in zip(tree._fields, tree):
            _paths(c, join(name), paths)
    elif isinstance(tree, (list, tuple)):
        for i, c in enumerate(tree):
            _paths(c, join(i), paths)
    elif _is_dataclass_node(tree):
        for name in _field_names(tree):
            _paths(getattr(tree, name), join(name), paths)
    elif tree is not None:
        paths.append(prefix or "arg")


def tree_map(fn, tree, *rest):
    """fn applied leaf by leaf (over the same leaves of rest's trees), in tree's structure."""
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(r)[0] for r in rest]
    return tree_unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])


def tree_from_paths(like: Any, flat: dict, source: str) -> Any:
    """like's structure with the arrays of flat (dotted path -> array, as tree_paths names
    like's leaves), each of its leaf's shape; missing or unexpected names and shape
    mismatches raise one ValueError naming source and every bad name."""
    leaves, treedef = tree_flatten(like)
    names = tree_paths(like)
    missing = [n for n in names if n not in flat]
    unexpected = sorted(set(flat) - set(names))
    shapes = [f"{n}: {tuple(np.shape(flat[n]))} in {source}, {_shape(leaf)} expected"
              for n, leaf in zip(names, leaves) if n in flat and tuple(np.shape(flat[n])) != _shape(leaf)]
    if missing or unexpected or shapes:
        problems = ([f"missing keys {missing}"] if missing else []) + \
                   ([f"unexpected keys {unexpected}"] if unexpected else []) + \
                   ([f"shape mismatch for {'; '.join(shapes)}"] if shapes else [])
        raise ValueError(f"{source} does not fit: " + "; ".join(problems))
    return tree_unflatten(treedef, [flat[n] for n in names])


def _shape(leaf) -> tuple:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


# --------------------------------------------------------------------------- compiled per structure


def leaf_extractor(treedef: TreeDef) -> Callable[[Any], tuple | None]:
    """A function of a tree returning its leaves as a tuple if its containers are exactly
    treedef's (same types, lengths and keys), else None: tree_leaves_like for one
    structure, generated as straight-line Python once, ~5x cheaper per call. It accepts
    no tree that tree_leaves_like rejects (container subclasses get None); the leaves
    themselves are not checked (a leaf may be any object, or a container where treedef
    has a leaf: the caller checks them)."""
    emit = _Emitter()
    leaves: list[str] = []

    def visit(var: str, node: TreeDef) -> None:
        kind = node.kind
        if kind == "leaf":
            leaves.append(var)
        elif kind == "none":
            emit.line(f"if {var} is not None: return None")
        elif kind == "dict":
            emit.line(f"if type({var}) is not dict or len({var}) != {len(node.keys)}: return None")
            for key, child in zip(node.keys, node.children):
                visit(emit.assign(f"{var}.get({emit.constant(key)}, _END)"), child)
        elif kind == "dataclass":
            emit.line(f"if type({var}) is not {emit.constant(node.node_type)}: return None")
            for name, child in zip(node.keys, node.children):
                visit(emit.assign(f"getattr({var}, {emit.constant(name)})"), child)
        else:  # list, tuple, namedtuple: indexed
            kind_type = {"list": "list", "tuple": "tuple"}.get(kind) or emit.constant(node.node_type)
            emit.line(f"if type({var}) is not {kind_type} or len({var}) != {len(node.children)}: return None")
            for i, child in enumerate(node.children):
                visit(emit.assign(f"{var}[{i}]"), child)

    visit("tree", treedef)
    emit.line(f"return ({''.join(f'{v}, ' for v in leaves)})")
    return emit.function("tree", fallback=lambda tree: _tuple_or_none(tree_leaves_like(tree, treedef)))


def unflattener(treedef: TreeDef) -> Callable[[Any], Any]:
    """tree_unflatten(treedef, leaves) for one structure, generated once (leaves: a
    sequence of exactly treedef.num_leaves)."""
    emit = _Emitter()
    count = iter(range(treedef.num_leaves))

    def build(node: TreeDef) -> str:
        kind = node.kind
        if kind == "leaf":
            return f"leaves[{next(count)}]"
        if kind == "none":
            return "None"
        children = [build(c) for c in node.children]
        if kind == "dict":
            return "{" + "".join(f"{emit.constant(k)}: {c}, " for k, c in zip(node.keys, children)) + "}"
        if kind == "list":
            return f"[{', '.join(children)}]"
        if kind == "tuple":
            return f"({''.join(f'{c}, ' for c in children)})"
        if kind == "namedtuple":
            return f"{emit.constant(node.node_type)}({', '.join(children)})"
        return f"{emit.constant(node.node_type)}(**{{{''.join(f'{emit.constant(k)}: {c}, ' for k, c in zip(node.keys, children))}}})"

    emit.line(f"return {build(treedef)}")
    return emit.function("leaves", fallback=lambda leaves: tree_unflatten(treedef, list(leaves)))


def _tuple_or_none(leaves: list | None) -> tuple | None:
    return None if leaves is None else tuple(leaves)


class _Emitter:
    """Straight-line Python source of one function, with its constants by name."""

    def __init__(self):
        self.lines: list[str] = []
        self.namespace: dict[str, object] = {"_END": _END}
        self.count = 0

    def line(self, text: str) -> None:
        self.lines.append("    " + text)

    def assign(self, expression: str) -> str:
        self.count += 1
        name = f"v{self.count}"
        self.line(f"{name} = {expression}")
        return name

    def constant(self, value) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def function(self, argument: str, fallback: Callable) -> Callable:
        """The function compiled; the fallback where the source is too deeply nested to compile."""
        source = f"def generated({argument}):\n" + "\n".join(self.lines) + "\n"
        try:
            exec(compile(source, "<ffcompile.tree generated>", "exec"), self.namespace)
        except (RecursionError, MemoryError, SyntaxError):
            return fallback
        return self.namespace["generated"]
