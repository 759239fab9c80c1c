"""The JVP rule of every differentiable op: one table, `JVP_RULES`, read by passes/forward.py.

A rule is `rule(inputs, out, tangents, attrs, nb) -> tangent or None`: it emits the IR of
the output's tangent from the primal Values and the operands' tangents (None: zero, no
node). Tangents may carry `nb` leading batch axes (0 for `ff.jvp`, 1 for the basis that
`ff.jacfwd` pushes through at once), so a rule shifts its axes by `nb` and aligns an
operand's tangent to the output's rank (`aligned`) before NumPy broadcasting meets it.
A returned tangent may have a broadcast-compatible smaller shape: the pass broadcasts it.

Per-op rules, not VJPs transposed: a transposed VJP needs a linear transpose rule per op
anyway, and a double VJP runs the backward pass twice. Where an op's Jacobian is
symmetric (elementwise unary ops: diagonal; softmax: diag(s) - s s^T) its VJP rule *is*
its JVP rule, exactly, and the table reuses it (`_self_adjoint`).
"""
from __future__ import annotations

from typing import Callable

from . import lang as L
from . import ops as O
from .op import Op

Rule = Callable[..., "L.Value | None"]
JVP_RULES: dict[type[Op], Rule] = {}


def _rule(*ops):
    def register(fn):
        for op in ops:
            JVP_RULES[op] = fn
        return fn
    return register


def aligned(t, rank: int, nb: int):
    """t (nb batch axes + an operand's axes) with 1s inserted after the batch axes up to
    nb + rank axes, so it broadcasts against values of `rank` axes like the operand did."""
    if t is None or t.ndim - nb >= rank:
        return t
    return L.reshape(t, t.shape[:nb] + (1,) * (rank - (t.ndim - nb)) + t.shape[nb:])


def _sum(*terms):
    """The sum of the terms that are not None (None if all are)."""
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for t in present[1:]:
        total = total + t
    return total


def _op_of(out) -> type[Op]:
    """The op that made the Value out."""
    return out.builder.nodes[out.id].op


def _shifted(attrs: dict, key: str, nb: int) -> dict:
    return {**attrs, key: attrs[key] + nb}


# --------------------------------------------------------------------------- elementwise


@_rule(O.Neg, O.Exp, O.Expm1, O.Log, O.Log1p, O.Tanh, O.Erf, O.Sin, O.Cos, O.Sqrt, O.Abs, O.Pow,
       O.Sigmoid, O.LogSigmoid, O.Softplus, O.Gelu)
def _self_adjoint(inputs, out, tangents, attrs, nb):
    """Elementwise: the Jacobian is diagonal, so J t is the VJP rule applied to t."""
    (t,) = tangents
    return None if t is None else _op_of(out).vjp(inputs, out, t, attrs)[0]


@_rule(O.Sign, O.Floor, O.StopGradient)
def _zero(inputs, out, tangents, attrs, nb):
    return None  # zero almost everywhere (sign, floor) or by definition (stop_gradient)


@_rule(O.Convert)
def _convert(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    if t is None or not out.type.is_float:
        return None
    return L.convert(t, out.dtype)


@_rule(O.Add)
def _add(inputs, out, tangents, attrs, nb):
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    return _sum(ta, tb)


@_rule(O.Sub)
def _sub(inputs, out, tangents, attrs, nb):
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    return _sum(ta, None if tb is None else -tb)


@_rule(O.Mul)
def _mul(inputs, out, tangents, attrs, nb):
    a, b = inputs
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    return _sum(None if ta is None else ta * b, None if tb is None else a * tb)


@_rule(O.Div)
def _div(inputs, out, tangents, attrs, nb):
    a, b = inputs
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    return _sum(None if ta is None else ta / b, None if tb is None else -(tb * out / b))


@_rule(O.Maximum, O.Minimum)
def _extremum(inputs, out, tangents, attrs, nb):
    """The winner's tangent, the mean of both on a tie (the VJP shares a tie evenly)."""
    a, b = inputs
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    first_wins = a > b if _op_of(out) is O.Maximum else a < b
    ta_or_0 = 0.0 if ta is None else ta
    tb_or_0 = 0.0 if tb is None else tb
    tie = 0.5 * _sum(ta, tb)
    return L.where(first_wins, ta_or_0, L.where(L.equal(a, b), tie, tb_or_0))


@_rule(O.Select)
def _select(inputs, out, tangents, attrs, nb):
    _, ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    if ta is None and tb is None:
        return None
    return L.where(inputs[0], 0.0 if ta is None else ta, 0.0 if tb is None else tb)


# --------------------------------------------------------------------------- reductions, contraction


def _batch_axes(axes, nb: int) -> tuple[int, ...]:
    return tuple(a + nb for a in axes)


@_rule(O.ReduceSum)
def _reduce_sum(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    return None if t is None else L.reduce_sum(t, _batch_axes(attrs["axes"], nb), attrs["keepdims"])


@_rule(O.ReduceMax)
def _reduce_max(inputs, out, tangents, attrs, nb):
    """The mean tangent of the tied maxima (the VJP shares the cotangent among them)."""
    (t,) = tangents
    if t is None:
        return None
    x = inputs[0]
    kept = tuple(1 if i in attrs["axes"] else d for i, d in enumerate(x.shape))
    mask = L.convert(L.equal(x, L.reshape(out, kept)), x.dtype)
    axes = _batch_axes(attrs["axes"], nb)
    mean = L.reduce_sum(mask * t, axes, keepdims=True) / L.reduce_sum(mask, attrs["axes"], keepdims=True)
    return L.reshape(mean, t.shape[:nb] + out.shape)


@_rule(O.Matmul)
def _matmul(inputs, out, tangents, attrs, nb):
    a, b = inputs
    ta, tb = (aligned(t, out.ndim, nb) for t in tangents)
    return _sum(None if ta is None else L.matmul(ta, b), None if tb is None else L.matmul(a, tb))


# --------------------------------------------------------------------------- layout


@_rule(O.Transpose)
def _transpose(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    if t is None:
        return None
    return L.transpose(t, tuple(range(nb)) + _batch_axes(attrs["perm"], nb))


@_rule(O.Reshape)
def _reshape(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    return None if t is None else L.reshape(t, t.shape[:nb] + out.shape)


@_rule(O.Broadcast)
def _broadcast(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    return None if t is None else L.broadcast_to(aligned(t, out.ndim, nb), t.shape[:nb] + out.shape)


@_rule(O.Concat)
def _concat(inputs, out, tangents, attrs, nb):
    if all(t is None for t in tangents):
        return None
    batch = next(t for t in tangents if t is not None).shape[:nb]
    parts = [L.broadcast_to(L.constant(out.builder, 0.0, out.dtype), batch + x.shape) if t is None else t
             for x, t in zip(inputs, tangents)]
    return L.concatenate(parts, attrs["axis"] + nb)


@_rule(O.Slice)
def _slice(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    if t is None:
        return None
    return L.slice_(t, (0,) * nb + attrs["starts"], t.shape[:nb] + attrs["stops"], (1,) * nb + attrs["steps"])


@_rule(O.Pad)
def _pad(inputs, out, tangents, attrs, nb):
    (t,) = tangents
    return None if t is None else L.pad(t, ((0, 0, 0),) * nb + attrs["config"])


# --------------------------------------------------------------------------- softmax family


@_rule(O.Softmax)
def _softmax(inputs, out, tangents, attrs, nb):
    """Symmetric Jacobian diag(s) - s s^T: the VJP rule on the (batched) tangent."""
    (t,) = tangents
    return None if t is None else O.Softmax.vjp(inputs, out, t, _shifted(attrs, "axis", nb))[0]


@_rule(O.LogSoftmax)
def _log_softmax(inputs, out, tangents, attrs, nb):
    """J = I - 1 s^T: t - <s, t> along the axis."""
    (t,) = tangents
    if t is None:
        return None
    return t - L.reduce_sum(L.exp(out) * t, (attrs["axis"] + nb,), keepdims=True)


@_rule(O.SoftmaxCrossEntropy)
def _softmax_cross_entropy(inputs, out, tangents, attrs, nb):
    """-sum(targets' log_softmax) - sum(targets (t - <s, t>)), along the last axis."""
    logits, targets = inputs
    t_logits, t_targets = tangents
    last = -1
    terms = []
    if t_targets is not None:
        terms.append(-L.reduce_sum(t_targets * L.log_softmax(logits, last), (t_targets.ndim - 1,)))
    if t_logits is not None:
        axis = (t_logits.ndim - 1,)
        inner = L.reduce_sum(L.softmax(logits, last) * t_logits, axis)
        terms.append(L.reduce_sum(targets, (logits.ndim - 1,)) * inner - L.reduce_sum(targets * t_logits, axis))
    return _sum(*terms)

