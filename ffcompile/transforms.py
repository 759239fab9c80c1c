"""The autodiff transforms: grad, value_and_grad, vjp.

Each is a traced function: called on traced Values it traces the function into
a nested graph, appends its adjoint (passes/autodiff.py) and inlines the
result, so transforms compose with each other and with `ff.compile` (grad of
grad works); called on arrays it compiles itself (cached) and runs that.
"""
from __future__ import annotations

import functools

from .api import CompiledFunction
from .ir import TensorType
from .ir.lang import Value, builder_of, lift, meet_weak
from .passes.autodiff import append_adjoint
from .runtime import ArgumentError
from .trace import signature, trace
from .tree import tree_flatten, tree_unflatten

__all__ = ["grad", "value_and_grad", "vjp"]



def traced_call(transform):
    """Run `transform(*args, **kwargs)` on Values; on arrays, compile it (cached) and run
    that. Keyword arguments reach the function untouched (no derivative is taken for them)."""
    compiled = None

    @functools.wraps(transform)
    def call(*args, **kwargs):
        nonlocal compiled
        if any(isinstance(leaf, Value) for leaf in tree_flatten((args, kwargs))[0]):
            return transform(*args, **kwargs)
        if compiled is None:
            compiled = CompiledFunction(call)
        return compiled(*args, **kwargs)

    return call


def _with_keywords(fn, kwargs):
    return functools.partial(fn, **kwargs) if kwargs else fn


def _trace_nested(fn, args, context=()):
    """Trace fn inside the current trace (the innermost of args' and context's); returns
    (traced, arg leaves as Values, captured)."""
    leaves = tree_flatten(tuple(args))[0]
    parent = builder_of(leaves + list(context))
    in_tree, types, names, _ = signature(args, fn)
    traced, captured = trace(fn, in_tree, types, names, parent=parent)
    bound = [lift(parent, leaf, None) for leaf in leaves] + captured
    return traced, parent, bound


def _leaf_ranges(args) -> list[range]:
    ranges, start = [], 0
    for arg in args:
        n = len(tree_flatten(arg)[0])
        ranges.append(range(start, start + n))
        start += n
    return ranges


def _argnums(argnums, nargs: int) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not -nargs <= n < nargs:
            raise ValueError(f"argnums {argnums!r} out of range for {nargs} arguments")
    return tuple(n % nargs for n in nums)


def value_and_grad(fn, argnums=0):
    """fn -> (x -> (fn(x), d fn / d args[argnums])); fn must return a float scalar."""

    def transform(*args, **kwargs):
        nums = _argnums(argnums, len(args))
        traced, parent, bound = _trace_nested(_with_keywords(fn, kwargs), args)
        ranges = _leaf_ranges(args)
        inputs = traced.graph.inputs
        wrt = [inputs[k] for n in nums for k in ranges[n]]
        checks = len(traced.checks)
        graph = append_adjoint(traced.graph, wrt, passthrough=checks)
        outs = [Value(parent, i) for i in parent.inline(graph, [v.id for v in bound])]
        value = tree_unflatten(traced.out_tree, outs[:1])
        _pass_checks(parent, outs[1:1 + checks], traced.checks)
        grads, pos = [], 1 + checks
        for n in nums:
            count = len(ranges[n])
            grads.append(tree_unflatten(tree_flatten(args[n])[1], outs[pos:pos + count]))
            pos += count
        return value, (grads[0] if isinstance(argnums, int) else tuple(grads))

    name_after(transform, "value_and_grad", fn)
    return traced_call(transform)


def grad(fn, argnums=0):
    """fn -> (x -> d fn / d args[argnums]); fn must return a float scalar."""
    vg = value_and_grad(fn, argnums)

    def transform(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    name_after(transform, "grad", fn)
    return traced_call(transform)


def vjp(fn, *args):
    """(fn(*args), pullback) where pullback(cotangent) gives one cotangent per argument.

    Cotangents of non-float leaves are None."""

    def pullback_transform(primals, cotangent):
        # A cotangent may come from a trace inside the primals' (vmap over cotangents).
        traced, parent, bound = _trace_nested(fn, primals, tree_flatten(cotangent)[0])
        inputs = traced.graph.inputs
        leaves = tree_flatten(tuple(primals))[0]
        floats = [inputs[k] for k, leaf in enumerate(leaves) if _is_float(leaf)]
        checks = len(traced.checks)
        graph = append_adjoint(traced.graph, floats, cotangents="inputs", passthrough=checks)
        ct_leaves, ct_tree = tree_flatten(cotangent)
        if ct_tree != traced.out_tree:
            raise ArgumentError("vjp: the cotangent's structure differs from the function's output")
        ct_values = [_cotangent(parent, c, traced.graph.nodes[o].type, k).id
                     for k, (c, o) in enumerate(zip(ct_leaves, traced.graph.outputs))]
        outs = parent.inline(graph, [v.id for v in bound] + ct_values)
        first_check = len(traced.graph.outputs) - checks
        _pass_checks(parent, [Value(parent, i) for i in outs[first_check:first_check + checks]], traced.checks)
        grads = iter(Value(parent, i) for i in outs[len(traced.graph.outputs):])
        flat = [next(grads) if _is_float(leaf) else None for leaf in leaves]
        return tree_unflatten(tree_flatten(tuple(primals))[1], flat)

    pullback_fn = traced_call(pullback_transform)
    out = (fn if _has_values(args) else CompiledFunction(fn))(*args)
    return out, lambda cotangent: pullback_fn(args, cotangent)


def _pass_checks(builder, flags: list[Value], messages) -> None:
    """A nested trace's runtime checks (lang.check) become the enclosing trace's."""
    builder.checks += [(flag.id, message) for flag, message in zip(flags, messages)]


def _cotangent(builder, leaf, out: TensorType, k: int) -> Value:
    """The cotangent of output k: exactly the output's type (a Python number for a 0-d one)."""
    value = meet_weak(lift(builder, leaf, out.dtype), out.dtype)
    if value.type != out:
        raise ArgumentError(f"vjp: cotangent {k} has type {value.type}, but the function's output {k} "
                            f"is {out}: a cotangent has the type of its output")
    return value


def name_after(transform, prefix: str, fn) -> None:
    """Name a transform after fn, and let signature() see fn's parameter names."""
    transform.__name__ = f"{prefix}_{getattr(fn, '__name__', 'fn').strip('<>')}"
    transform.__wrapped__ = fn


def _has_values(tree) -> bool:
    return any(isinstance(leaf, Value) for leaf in tree_flatten(tree)[0])


def _is_float(leaf) -> bool:
    if isinstance(leaf, Value):
        return leaf.type.is_float
    return TensorType.of(leaf).is_float
