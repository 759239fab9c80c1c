"""The autodiff transforms: grad, value_and_grad, vjp, jvp, jacfwd, jacrev (= jacobian), hessian.

Each is a traced function: called on traced Values it traces the function into
a nested graph, appends its adjoint (passes/autodiff.py) and inlines the
result, so transforms compose with each other and with `ff.compile` (grad of
grad works); called on arrays it compiles itself (cached) and runs that, unless a
trace is running: then the arrays are its constants and the transform joins it.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .api import CompiledFunction
from .ir import Graph, ShapeError, TensorType
from .ir import lang as L
from .ir.lang import Value, builder_of, lift, meet_weak
from .passes.autodiff import append_adjoint
from .passes.dce import dce
from .passes.forward import append_tangent
from .runtime import ArgumentError
from .trace import running_trace, signature, trace
from .tree import tree_flatten, tree_map, tree_unflatten

__all__ = ["grad", "hessian", "jacfwd", "jacobian", "jacrev", "jvp", "value_and_grad", "vjp"]



def traced_call(transform):
    """Run `transform(*args, **kwargs)` on Values; on arrays, compile it (cached) and run
    that. Keyword arguments reach the function untouched (no derivative is taken for them)."""
    compiled = None

    @functools.wraps(transform)
    def call(*args, **kwargs):
        nonlocal compiled
        if _has_values((args, kwargs)):
            return transform(*args, **kwargs)
        lifted = _in_running_trace(args)
        if _has_values(lifted):
            return transform(*lifted, **kwargs)
        if compiled is None:
            compiled = CompiledFunction(call)
        return compiled(*args, **kwargs)

    return call


def _in_running_trace(args):
    """Array arguments as constants of the running trace, if any: a transform called on arrays
    inside a trace is part of it, so its function may close over that trace's Values (as in
    JAX). Python scalars stay as they are (weakly typed)."""
    builder = running_trace()
    if builder is None:
        return args
    return tree_map(lambda leaf: lift(builder, leaf, None) if isinstance(leaf, (np.ndarray, np.generic)) else leaf,
                    args)


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


def value_and_grad(fn, argnums=0, has_aux=False):
    """fn -> (x -> (fn(x), d fn / d args[argnums])); fn must return a float scalar.
    has_aux: fn returns (scalar, aux), and the result is ((scalar, aux), gradient)."""

    def transform(*args, **kwargs):
        nums = _argnums(argnums, len(args))
        traced, parent, bound = _trace_nested(_with_keywords(fn, kwargs), args)
        out_tree, aux_tree = _aux_trees(traced.out_tree, has_aux, "value_and_grad")
        ranges = _leaf_ranges(args)
        inputs = traced.graph.inputs
        wrt = [inputs[k] for n in nums for k in ranges[n]]
        checks = len(traced.checks)
        graph = append_adjoint(traced.graph, wrt, passthrough=aux_tree.num_leaves + checks)
        outs = [Value(parent, i) for i in parent.inline(graph, [v.id for v in bound])]
        value = tree_unflatten(out_tree, outs[:1])
        pos = 1 + aux_tree.num_leaves
        if has_aux:
            value = (value, tree_unflatten(aux_tree, outs[1:pos]))
        _pass_checks(parent, outs[pos:pos + checks], traced.checks)
        grads, pos = [], pos + checks
        for n in nums:
            count = len(ranges[n])
            grads.append(tree_unflatten(tree_flatten(args[n])[1], outs[pos:pos + count]))
            pos += count
        return value, (grads[0] if isinstance(argnums, int) else tuple(grads))

    name_after(transform, "value_and_grad", fn)
    return traced_call(transform)


def grad(fn, argnums=0, has_aux=False):
    """fn -> (x -> d fn / d args[argnums]); fn must return a float scalar.
    has_aux: fn returns (scalar, aux), and the result is (gradient, aux)."""
    vg = value_and_grad(fn, argnums, has_aux)

    def transform(*args, **kwargs):
        value, grads = vg(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    name_after(transform, "grad", fn)
    return traced_call(transform)


def vjp(fn, *args, has_aux=False):
    """(fn(*args), pullback) where pullback(cotangent) gives one cotangent per argument;
    has_aux: fn returns (out, aux), and vjp returns (out, pullback, aux).

    Cotangents of non-float leaves are None."""

    def pullback_transform(primals, cotangent):
        # A cotangent may come from a trace inside the primals' (vmap over cotangents).
        traced, parent, bound = _trace_nested(fn, primals, tree_flatten(cotangent)[0])
        out_tree, aux_tree = _aux_trees(traced.out_tree, has_aux, "vjp")
        inputs = traced.graph.inputs
        leaves = tree_flatten(tuple(primals))[0]
        floats = [inputs[k] for k, leaf in enumerate(leaves) if _is_float(leaf)]
        checks = len(traced.checks)
        passthrough = aux_tree.num_leaves + checks
        graph = append_adjoint(traced.graph, floats, cotangents="inputs", passthrough=passthrough)
        ct_leaves, ct_tree = tree_flatten(cotangent)
        if ct_tree != out_tree:
            raise ArgumentError("vjp: the cotangent's structure differs from the function's output")
        differentiated = traced.graph.outputs[:out_tree.num_leaves]
        ct_values = [_typed_like(parent, c, traced.graph.nodes[o].type, "vjp", "cotangent", k, "output").id
                     for k, (c, o) in enumerate(zip(ct_leaves, differentiated))]
        outs = parent.inline(graph, [v.id for v in bound] + ct_values)
        first_check = len(traced.graph.outputs) - checks
        _pass_checks(parent, [Value(parent, i) for i in outs[first_check:first_check + checks]], traced.checks)
        grads = iter(Value(parent, i) for i in outs[len(traced.graph.outputs):])
        flat = [next(grads) if _is_float(leaf) else None for leaf in leaves]
        return tree_unflatten(tree_flatten(tuple(primals))[1], flat)

    pullback_fn = traced_call(pullback_transform)
    if not _has_values(args):
        args = _in_running_trace(args)
    out = (fn if _has_values(args) else CompiledFunction(fn))(*args)
    pullback = lambda cotangent: pullback_fn(args, cotangent)  # noqa: E731
    if has_aux:
        _aux_trees(tree_flatten(out)[1], has_aux, "vjp")
        return out[0], pullback, out[1]
    return out, pullback


def jvp(fn, primals, tangents):
    """(fn(*primals), the JVP: fn's derivative at primals applied to tangents), in one
    forward sweep (passes/forward.py); tangents has primals' structure and types (those of
    non-float leaves are ignored)."""

    def transform(primals, tangents):
        # Tangents may come from a trace inside the primals' (vmap over tangents at a fixed point).
        traced, parent, bound = _trace_nested(fn, primals, tree_flatten(tangents)[0])
        leaves, tree = tree_flatten(tuple(primals))
        t_leaves, t_tree = tree_flatten(tuple(tangents))
        if t_tree != tree:
            raise ArgumentError("jvp: the tangents' structure differs from the primals'")
        inputs = traced.graph.inputs
        float_leaves = [k for k, leaf in enumerate(leaves) if _is_float(leaf)]
        checks = len(traced.checks)
        graph = append_tangent(traced.graph, [inputs[k] for k in float_leaves], passthrough=checks)
        t_values = [_typed_like(parent, t_leaves[k], traced.graph.nodes[inputs[k]].type, "jvp", "tangent", k,
                                "input").id for k in float_leaves]
        outs = [Value(parent, i) for i in parent.inline(graph, [v.id for v in bound] + t_values)]
        n = traced.out_tree.num_leaves
        _pass_checks(parent, outs[n:n + checks], traced.checks)
        return tree_unflatten(traced.out_tree, outs[:n]), tree_unflatten(traced.out_tree, outs[n + checks:])

    name_after(transform, "jvp", fn)
    return traced_call(transform)(tuple(primals), tuple(tangents))


def jacfwd(fn, argnums=0, has_aux=False):
    """fn -> (x -> the Jacobian of fn at x): forward mode, one batched tangent (the basis of
    every input element at once, passes/forward.py) through one graph. Each output leaf of
    shape S gets, per argument leaf of shape A, a block of shape S + A; has_aux: (jacobian, aux)."""

    def transform(*args, **kwargs):
        j = _jacobian_trace(fn, args, kwargs, argnums, has_aux, "jacfwd")
        in_types = [j.traced.graph.nodes[i].type for i in j.wrt]
        n = sum(t.size for t in in_types)
        graph = append_tangent(j.traced.graph, j.wrt, batch=(n,), passthrough=j.passthrough)
        basis = _basis_blocks(j.parent, n, in_types)
        outs = [Value(j.parent, i) for i in j.parent.inline(graph, [v.id for v in j.bound] + [b.id for b in basis])]
        jac = []
        for t in outs[len(j.traced.graph.outputs):]:  # (n, *S): rows split by argument leaf, moved last
            blocks, start = [], 0
            for in_type in in_types:
                rows = L.slice_(t, (start,) + (0,) * (t.ndim - 1), (start + in_type.size,) + t.shape[1:],
                                (1,) * t.ndim)
                cols = L.transpose(L.reshape(rows, (in_type.size, -1)))
                blocks.append(L.reshape(cols, t.shape[1:] + in_type.shape))
                start += in_type.size
            jac.append(blocks)
        return _jacobian_result(j, outs, jac, args, argnums, has_aux)

    name_after(transform, "jacfwd", fn)
    return traced_call(transform)


def jacrev(fn, argnums=0, has_aux=False):
    """fn -> (x -> the Jacobian of fn at x): reverse mode, every row at once in one graph.
    A VJP is linear in its cotangent, so the forward pass applied to the VJP graph with
    respect to the cotangent, over the basis of every output element as one batched
    tangent, computes all of J's rows: a batched backward pass. Same result layout as jacfwd."""

    def transform(*args, **kwargs):
        j = _jacobian_trace(fn, args, kwargs, argnums, has_aux, "jacrev")
        graph = j.traced.graph
        count = len(graph.outputs)
        out_types = [graph.nodes[o].type for o in graph.outputs[:count - j.passthrough]]
        for t in out_types:
            if not t.is_float:
                raise ShapeError(f"jacrev: the function's output of type {t} is not a float array")
        m = sum(t.size for t in out_types)
        pullback = append_adjoint(graph, j.wrt, cotangents="inputs", passthrough=j.passthrough)
        # The gradients first (their tangents are taken), the function's own outputs after.
        grads_first = Graph(pullback.nodes, pullback.outputs[count:] + pullback.outputs[:count], pullback.name)
        batched = append_tangent(grads_first, list(pullback.inputs[len(graph.inputs):]), batch=(m,),
                                 passthrough=count)
        # The pullback of the zero cotangent (the untangented gradients) is not needed.
        n_wrt = len(j.wrt)
        batched = dce(Graph(batched.nodes, batched.outputs[n_wrt:], batched.name))
        zeros = [L.broadcast_to(L.constant(j.parent, 0.0, t.dtype), t.shape) for t in out_types]
        basis = _basis_blocks(j.parent, m, out_types)
        bound = [v.id for v in j.bound] + [z.id for z in zeros] + [b.id for b in basis]
        outs = [Value(j.parent, i) for i in j.parent.inline(batched, bound)]
        jac, start = [], 0
        for t in out_types:  # each gradient is (m, *A): rows split by output leaf
            blocks = []
            for r in outs[count:]:
                part = L.slice_(r, (start,) + (0,) * (r.ndim - 1), (start + t.size,) + r.shape[1:], (1,) * r.ndim)
                blocks.append(L.reshape(part, t.shape + r.shape[1:]))
            jac.append(blocks)
            start += t.size
        return _jacobian_result(j, outs, jac, args, argnums, has_aux)

    name_after(transform, "jacrev", fn)
    return traced_call(transform)


jacobian = jacrev


def hessian(fn, argnums=0):
    """fn -> (x -> the Hessian of the scalar fn at x): forward over reverse,
    jacfwd(jacrev(fn)), one graph (a batched tangent through the gradient's graph)."""
    return jacfwd(jacrev(fn, argnums), argnums)


class _JacobianTrace(NamedTuple):
    traced: object
    parent: object
    bound: list  # the values bound to the graph's inputs
    wrt: list[int]  # input nodes differentiated, argument by argument
    passthrough: int  # trailing outputs not differentiated: aux leaves, check flags
    out_tree: object
    aux_tree: object
    ranges: list[range]  # leaves of each argument


def _jacobian_trace(fn, args, kwargs, argnums, has_aux: bool, who: str) -> _JacobianTrace:
    nums = _argnums(argnums, len(args))
    traced, parent, bound = _trace_nested(_with_keywords(fn, kwargs), args)
    out_tree, aux_tree = _aux_trees(traced.out_tree, has_aux, who)
    ranges = _leaf_ranges(args)
    inputs = traced.graph.inputs
    wrt = [inputs[k] for n in nums for k in ranges[n]]
    for i in wrt:
        if not traced.graph.nodes[i].type.is_float:
            raise ShapeError(f"{who}: cannot differentiate with respect to an argument of type "
                             f"{traced.graph.nodes[i].type}")
    return _JacobianTrace(traced, parent, bound, wrt, aux_tree.num_leaves + len(traced.checks),
                          out_tree, aux_tree, ranges)


def _basis_blocks(builder, n: int, types) -> list[Value]:
    """The rows of the n x n identity, split into one block per type: (n, *type.shape)."""
    eyes, blocks, start = {}, [], 0
    for t in types:
        if t.dtype not in eyes:
            rows, cols = (L.iota(builder, (n, n), axis, "i32") for axis in (0, 1))
            eyes[t.dtype] = L.convert(L.equal(rows, cols), t.dtype)
        cols = L.slice_(eyes[t.dtype], (0, start), (n, start + t.size), (1, 1))
        blocks.append(L.reshape(cols, (n,) + t.shape))
        start += t.size
    return blocks


def _jacobian_result(j: _JacobianTrace, outs: list[Value], jac: list[list[Value]], args, argnums, has_aux: bool):
    """jac[o][k]: the block of output leaf o and differentiated leaf k, arranged as JAX does:
    the output's structure, each leaf holding the argument's (a tuple of them for a tuple
    of argnums); has_aux: (that, aux). outs: the function's outputs (then the blocks')."""
    n_out, n_aux = j.out_tree.num_leaves, j.aux_tree.num_leaves
    _pass_checks(j.parent, outs[n_out + n_aux:n_out + j.passthrough], j.traced.checks)
    nums = _argnums(argnums, len(args))
    per_output = []
    for blocks in jac:
        grouped, pos = [], 0
        for n in nums:
            count = len(j.ranges[n])
            grouped.append(tree_unflatten(tree_flatten(args[n])[1], blocks[pos:pos + count]))
            pos += count
        per_output.append(grouped[0] if isinstance(argnums, int) else tuple(grouped))
    result = tree_unflatten(j.out_tree, per_output)
    return (result, tree_unflatten(j.aux_tree, outs[n_out:n_out + n_aux])) if has_aux else result


def _aux_trees(tree, has_aux: bool, who: str):
    """(out_tree, aux_tree) of a function's result tree: with has_aux it returned (out, aux),
    so the graph's outputs are out's leaves, then aux's (passed through, never
    differentiated), then the check flags. Without, aux_tree is empty."""
    if not has_aux:
        return tree, tree_flatten(())[1]
    if tree.kind != "tuple" or len(tree.children) != 2:
        raise ArgumentError(f"{who}(has_aux=True): the function must return a pair (output, aux)")
    return tree.children[0], tree.children[1]


def _pass_checks(builder, flags: list[Value], messages) -> None:
    """A nested trace's runtime checks (lang.check) become the enclosing trace's."""
    builder.checks += [(flag.id, message) for flag, message in zip(flags, messages)]


def _typed_like(builder, leaf, like: TensorType, who: str, kind: str, k: int, partner: str) -> Value:
    """Leaf k of a cotangent (tangent) as a Value of exactly the type of the function's
    output (input) k, its partner (a Python number for a 0-d one)."""
    value = meet_weak(lift(builder, leaf, like.dtype), like.dtype)
    if value.type != like:
        raise ArgumentError(f"{who}: {kind} {k} has type {value.type}, but the function's {partner} {k} "
                            f"is {like}: a {kind} has the type of its {partner}")
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
