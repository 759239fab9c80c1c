"""Losses over traced values. Each takes `reduction` = "mean" (default), "sum" or "none".

Reductions, stated because they differ between libraries:
- mse: 0.5·||y − ŷ||² summed over the features of an example (all axes but
  the first), then averaged over the batch (axis 0). This is the Euclidean
  loss of the lecture notes; PyTorch's MSELoss instead averages over every
  element and has no 0.5.
- cross_entropy, nll_loss: one value per example (the class axis is the
  last), averaged over the examples, as PyTorch does.
- binary_cross_entropy_with_logits: one value per element, averaged over
  every element, as PyTorch does.
"""
from __future__ import annotations

from ..functions import softplus
from ..ir import ShapeError
from ..ir import lang as L
from ..ir.lang import Value


def _reduce(per_item: Value, reduction: str, axes) -> Value:
    if reduction == "mean":
        return L.mean(per_item, axes)
    if reduction == "sum":
        return L.reduce_sum(per_item, axes)
    if reduction == "none":
        return per_item
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(name: str, a: Value, b: Value) -> None:
    # Broadcasting (B,1) against (B,) would silently build a (B,B) loss.
    if a.shape != b.shape:
        raise ShapeError(f"{name}: prediction {a.type} and target {b.type} must have the same shape")


def _lift(like: Value, x) -> Value:
    return L.lift(like.builder, x, None)


def mse(prediction: Value, target, reduction: str = "mean") -> Value:
    """Euclidean loss 0.5·||target − prediction||² per example, averaged over the batch."""
    target = _lift(prediction, target)
    _same_shape("mse", prediction, target)
    d = prediction - target
    squared = d * d
    per_example = 0.5 * squared.sum(tuple(range(1, d.ndim))) if d.ndim > 1 else 0.5 * squared
    return _reduce(per_example, reduction, 0 if d.ndim else ())


def _class_targets(name: str, scores: Value, labels) -> Value:
    """Integer labels of shape scores.shape[:-1] as one-hot rows, or float targets as given."""
    labels = _lift(scores, labels)
    if scores.ndim < 1:
        raise ShapeError(f"{name}: scores must have a class axis, got {scores.type}")
    if not labels.type.is_float:
        if labels.dtype == "bool" or labels.shape != scores.shape[:-1]:
            raise ShapeError(f"{name}: integer labels must have shape {list(scores.shape[:-1])} "
                             f"for scores {scores.type}, got {labels.type}")
        # one_hot[..., c] = (labels[...] == c); an out-of-range label would give a zero row (a
        # finite loss), so the call raises instead, as torch does.
        count = scores.shape[-1]
        L.check(L.where(labels >= 0, labels < count, False),
                f"{name}: a label is outside [0, {count}), the range of the {count} classes")
        classes = L.iota(scores.builder, scores.shape, scores.ndim - 1, labels.dtype)
        return L.convert(classes == labels.reshape(labels.shape + (1,)), scores.dtype)
    if labels.shape != scores.shape:
        raise ShapeError(f"{name}: target probabilities must have the shape of the scores "
                         f"{scores.type}, got {labels.type}")
    return L.convert(labels, scores.dtype) if labels.dtype != scores.dtype else labels


def cross_entropy(logits: Value, labels, reduction: str = "mean") -> Value:
    """Softmax cross-entropy from logits (class axis last).

    labels: integer class indices of shape logits.shape[:-1], or one-hot /
    probability targets of logits' shape. Uses the registry's
    softmax_cross_entropy op, whose VJP is softmax − targets. An integer label outside
    [0, classes) makes the call raise ValueError, as torch does (a runtime check,
    lang.check: it is read after the program ran, so a training step has already
    applied that step's update when it raises)."""
    targets = _class_targets("cross_entropy", logits, labels)
    per_example = L.softmax_cross_entropy(logits, targets)
    return _reduce(per_example, reduction, None)


def nll_loss(log_probs: Value, labels, reduction: str = "mean") -> Value:
    """Negative log-likelihood −log_probs[label] (class axis last); labels as for cross_entropy."""
    targets = _class_targets("nll_loss", log_probs, labels)
    per_example = -(log_probs * targets).sum(-1)
    return _reduce(per_example, reduction, None)


def binary_cross_entropy_with_logits(logits: Value, targets, reduction: str = "mean") -> Value:
    """−t·log σ(z) − (1 − t)·log(1 − σ(z)), written t·softplus(−z) + (1 − t)·softplus(z).

    Both terms are non-negative and softplus is stable, so the value neither
    overflows nor cancels for |z| of 1e4, and the gradient is exactly σ(z) − t
    (also at z = 0, where forms built on |z| or max(z, 0) have a kink)."""
    targets = _lift(logits, targets)
    _same_shape("binary_cross_entropy_with_logits", logits, targets)
    if targets.dtype != logits.dtype:
        targets = L.convert(targets, logits.dtype)
    per_element = targets * softplus(-logits) + (1.0 - targets) * softplus(logits)
    return _reduce(per_element, reduction, None)
