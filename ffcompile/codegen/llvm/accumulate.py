"""GEMM epilogues the GEMM computes itself: R = alpha * (A @ B) + beta * C, with R written over C.

A weight's optimizer update has this form: `w (1 - lr wd) - lr * (xᵀ @ dz)` (SGD, which
writes its weight decay so: as `w - lr (xᵀ @ dz + wd w)` it was not, and wide's step took
72 MiB of arena against 29), `mu * v + xᵀ @ dz` (momentum). When the new value takes over the storage of
the old (a donated parameter), BLAS's alpha and beta do the update while the
product is written: no buffer for the product, no second pass over it
(mnist's first layer: 1.6 MB less arena, and one read and one write of
1.6 MB less per step). The small-GEMM kernel and the loop fallback honour
the same alpha and beta. One difference stays BLAS's own: with a scale that
is 0 at run time, BLAS reads neither the product's operands (alpha = 0) nor C
(beta = 0), so a NaN or Inf there does not reach the result, as it does in
the other kernels and in NumPy.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...ir import ops as O
from ...passes.schedule import Kernel, KernelKind


@dataclass(frozen=True)
class Accumulate:
    result: int  # the epilogue node R, stored over C's storage
    c: int  # the kernel input C
    alpha: tuple[int | None, bool]  # (rank-0 kernel input scaling the product, or None for 1; negated?)
    beta: tuple[int | None, bool]  # the same for C
    replaced: frozenset[int]  # R and the scaling nodes feeding it: the GEMM call computes them


def match_accumulate(nodes, kernel: Kernel, same_storage: Callable[[int, int], bool]) -> Accumulate | None:
    """The accumulate form of a float GEMM kernel's epilogue, if it has one whose result R
    shares C's storage, and nothing else in the kernel reads the product, the scaling
    nodes, or C's storage (BLAS overwrites C before the rest of the epilogue runs)."""
    if kernel.kind != KernelKind.GEMM or not kernel.epilogue or nodes[kernel.anchor].type.dtype not in ("f32", "f64"):
        return None
    product_type = nodes[kernel.anchor].type
    body = set(kernel.body)
    readers: dict[int, list[int]] = {i: [] for i in kernel.body}
    for i in kernel.body:
        for j in nodes[i].inputs:
            if j in readers:
                readers[j].append(i)

    def private(j: int) -> int | None:
        """The one reader of body value j, if nothing outside the kernel reads j either."""
        return readers[j][0] if len(readers[j]) == 1 and j not in kernel.outputs else None

    def scaled(i: int, x: int) -> tuple[int | None, bool] | None:
        """(scale, negated) if node i is -x or x times a rank-0 kernel input."""
        node = nodes[i]
        if node.op is O.Neg:
            return None, True
        if node.op is O.Mul and node.inputs.count(x) == 1:
            (s,) = [j for j in node.inputs if j != x]
            if s not in body and nodes[s].type.rank == 0:
                return s, False
        return None

    term, alpha, replaced = kernel.anchor, (None, False), set()
    user = private(term)
    if user is not None and (factor := scaled(user, term)) is not None:
        term, alpha = user, factor
        replaced.add(term)
        user = private(term)
    if user is None or nodes[user].op not in (O.Add, O.Sub) or nodes[user].inputs.count(term) != 1:
        return None
    result = user
    (other,) = [j for j in nodes[result].inputs if j != term]
    subtracted = nodes[result].op is O.Sub
    alpha = (alpha[0], alpha[1] != (subtracted and nodes[result].inputs[1] == term))  # C - aP
    beta_negated = subtracted and nodes[result].inputs[0] == term  # aP - C
    c, beta = other, (None, beta_negated)
    if other in body:
        if private(other) != result:
            return None
        candidates = [j for j in nodes[other].inputs if j not in body and nodes[j].type == product_type]
        factor = scaled(other, candidates[0]) if len(candidates) == 1 else None
        if factor is None:
            return None
        c, beta = candidates[0], (factor[0], factor[1] != beta_negated)
        replaced.add(other)
    replaced.add(result)
    if nodes[c].type != product_type or nodes[result].type != product_type or not same_storage(result, c):
        return None
    for i in kernel.body:
        if i not in replaced and any(j not in body and same_storage(j, c) for j in nodes[i].inputs):
            return None  # reads C's storage while or after the GEMM overwrites it
    return Accumulate(result, c, alpha, beta, frozenset(replaced))
