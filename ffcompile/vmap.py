"""`ff.vmap`: a function of one example -> the same function over a batch, as a graph transform.

Called on traced Values, the transform traces the function on one example's types in a
nested trace, rewrites that graph over the batch (passes/batching.py) and inlines it, so
it composes with grad, with itself (nested vmap) and with `ff.compile`; called on arrays
it compiles itself (cached) and runs that. The batch is one program: a per-example
gradient is a batched GEMM, not a Python loop.

in_axes and out_axes follow JAX: an int (the batch axis of every leaf), None (not
batched: the same value for every example), or a tuple with one entry per positional
argument, each entry an int, None or a pytree prefix of that argument.
"""
from __future__ import annotations

import inspect
import numbers

from .api import is_weak
from .ir import ShapeError
from .ir import lang as L
from .ir.lang import Value
from .passes.batching import batch_graph
from .trace import signature, trace
from .transforms import name_after, traced_call
from .tree import tree_flatten, tree_leaves, tree_unflatten

__all__ = ["vmap"]


def vmap(fn, in_axes=0, out_axes=0):
    """fn -> a function mapping fn over the axis `in_axes` of its arguments, stacking the
    results along `out_axes` (see the module docstring)."""

    def transform(*args, **kwargs):
        args = _positional(fn, args, kwargs)
        in_tree, _, names, leaves = signature(args, fn)
        parent = L.builder_of(leaves)
        axes = _leaf_axes(in_axes, args, "in_axes")
        values = [L.lift(parent, leaf, None) for leaf in leaves]
        size = _batch_size(values, axes, names)
        # Each mapped argument with its batch axis first; an example is that axis dropped.
        example_values = [v if a is None else _moved(v, _in_axis(a, v, n), 0) for v, a, n in zip(values, axes, names)]
        example_types = [v.type if a is None else v.type.with_shape(v.shape[1:])
                         for v, a in zip(example_values, axes)]
        weak = [axis is None and (is_weak(leaf) or isinstance(leaf, Value) and leaf.weak)
                for leaf, axis in zip(leaves, axes)]  # an unmapped Python scalar stays weakly typed
        traced, captured = trace(fn, in_tree, example_types, names, parent=parent, weak=weak)
        batched = [a is not None for a in axes] + [False] * len(captured)
        graph, out_batched = batch_graph(traced.graph, batched, size)
        outs = [Value(parent, i) for i in parent.inline(graph, [v.id for v in example_values + captured])]
        checks = len(traced.checks)
        results, flags = outs[:len(outs) - checks], outs[len(outs) - checks:]
        for flag, is_batched, message in zip(flags, out_batched[len(results):], traced.checks):
            flag = L.reduce_max(flag, (0,)) if is_batched else flag  # failed for any example
            parent.checks.append((flag.id, message))
        shaped = tree_unflatten(traced.out_tree, list(range(len(results))))
        out_axes_leaves = _prefix_leaves(out_axes, shaped, "out_axes")
        placed = [_placed(v, b, a, size, k) for k, (v, b, a)
                  in enumerate(zip(results, out_batched, out_axes_leaves))]
        return tree_unflatten(traced.out_tree, placed)

    name_after(transform, "vmap", fn)
    return traced_call(transform)


def _positional(fn, args: tuple, kwargs: dict) -> tuple:
    """The arguments by position (in_axes names them so), keywords bound to their places."""
    if not kwargs:
        return args
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"vmap: the arguments do not fit {getattr(fn, '__name__', 'fn')}: {exc}") from None
    if bound.kwargs:
        raise TypeError(f"vmap: keyword-only arguments {sorted(bound.kwargs)} have no place in in_axes; "
                        f"pass them through functools.partial or a closure")
    return bound.args


def _leaf_axes(spec, args: tuple, what: str) -> list:
    """One axis (int or None) per leaf of the arguments."""
    if isinstance(spec, (tuple, list)) and len(spec) != len(args):
        raise ValueError(f"vmap: {what} has {len(spec)} entries for {len(args)} arguments")
    return _prefix_leaves(spec, args, what)


def _prefix_leaves(spec, tree, what: str) -> list:
    """spec (a pytree prefix of tree, an int or None at each of its leaves) broadcast to
    one entry per leaf of tree."""
    if spec is None or (isinstance(spec, numbers.Integral) and not isinstance(spec, bool)):
        return [spec] * len(tree_leaves(tree))
    if isinstance(spec, dict) and isinstance(tree, dict) and set(spec) == set(tree):
        return [axis for key in sorted(tree) for axis in _prefix_leaves(spec[key], tree[key], what)]
    if isinstance(spec, (tuple, list)) and isinstance(tree, (tuple, list)) and len(spec) == len(tree):
        return [axis for s, t in zip(spec, tree) for axis in _prefix_leaves(s, t, what)]
    raise ValueError(f"vmap: {what} {spec!r} is not an int, None, or a prefix of the structure "
                     f"{tree_flatten(tree)[1].kind} it maps")


def _normalized(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"vmap: {what}: axis {axis} out of range for rank {rank}")
    return axis % rank


def _in_axis(axis: int, value: Value, name: str) -> int:
    return _normalized(axis, value.ndim, f"in_axes for argument {name} of type {value.type}")


def _batch_size(values, axes, names) -> int:
    sizes = {name: value.shape[_in_axis(axis, value, name)]
             for value, axis, name in zip(values, axes, names) if axis is not None}
    if not sizes:
        raise ValueError("vmap: in_axes maps no argument: at least one needs a batch axis (not None)")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: {size}" for name, size in sizes.items())
        raise ShapeError(f"vmap: the mapped axes have different sizes ({listed})")
    return next(iter(sizes.values()))


def _moved(value: Value, source: int, destination: int) -> Value:
    """np.moveaxis for one axis."""
    order = [a for a in range(value.ndim) if a != source]
    order.insert(destination, source)
    return L.transpose(value, tuple(order))


def _placed(value: Value, batched: bool, axis, size: int, k: int) -> Value:
    """Result k (batch first when batched) with its batch axis where out_axes puts it."""
    if axis is None:
        if batched:
            raise ShapeError(f"vmap: out_axes is None for result {k}, but it differs between "
                             f"examples ({value.type} over the batch)")
        return value
    if not batched:  # the same for every example: repeated along the batch axis
        value = L.broadcast_to(value, (size,) + value.shape)
    return _moved(value, 0, _normalized(axis, value.ndim, f"out_axes for result {k}"))
