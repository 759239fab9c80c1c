"""Placement of a symbolic schedule's arena: sizes and offsets linear in the batch size B.

One plan serves every B in 1..max_batch (BatchRange). A block's size and offset are
`Affine(const, per_batch)` with both coefficients multiples of ALIGNMENT, so every
offset is aligned at every B. Two blocks live at the same step must be apart at
every B in range: for linear functions that is "one ends below the other starts"
at both ends of the range (B = 1 and B = max_batch), or at B = 1 with a slope that
does not shrink the gap when B is unbounded. So an Affine is compared through two
numbers, (value at 1, value at max_batch or slope): `x <= y` at every B in range
exactly when it holds for both. A block may sit at the end of another only where
that holds against every block live with it.

Why linear in B rather than a plan per power-of-two bucket: one plan means one native
program (the offsets are `arena + const + per_batch * B`, a multiply-add per buffer),
and the arena at B is what the program needs at B, not at the bucket's top (up to 2x
at a bucket's bottom). The cost is placement: a gap that fits at one B but not another
cannot be used, and rows are padded to 64 bytes per batch row (docs/symbolic_batch.md
measures both against the per-size plans).
"""
from __future__ import annotations

from ..ir.symbolic import Affine, BatchRange, Envelope

Span = tuple[int, int, Affine]  # (first step, last step, size)


def _key(value: Affine, batch: BatchRange) -> tuple[int, int]:
    """The two numbers that order Affines over the range (see the module doc)."""
    end = value.per_batch if batch.max_batch is None else value.at(batch.max_batch)
    return value.at(1), end


def at_most(x: Affine, y: Affine, batch: BatchRange) -> bool:
    """x <= y at every batch size in range."""
    (x1, x2), (y1, y2) = _key(x, batch), _key(y, batch)
    return x1 <= y1 and x2 <= y2


def _above_all(values: list[Affine]) -> Affine:
    """An aligned Affine at or above every one of values at every B >= 0."""
    return Affine(max((v.const for v in values), default=0), max((v.per_batch for v in values), default=0))


def place_in_order(span: dict[int, Span], order: list[int], batch: BatchRange) -> dict[int, Affine]:
    """Each block, in turn, at the lowest offset (at the reference size) apart at every B
    from every placed block live with it: 0 or the end of one of them, else above them all."""
    reference = batch.reference
    placed: list[tuple[Affine, Affine, int, int]] = []  # (offset, end, first, last)
    offsets: dict[int, Affine] = {}
    for b in order:
        lo, hi, size = span[b]
        busy = [(off, end) for off, end, f, l in placed if f <= hi and lo <= l]
        chosen = None
        for start in sorted([Affine(0)] + [end for _, end in busy], key=lambda a: a.at(reference)):
            stop = start + size
            if all(at_most(stop, off, batch) or at_most(end, start, batch) for off, end in busy):
                chosen = start
                break
        if chosen is None:
            chosen = _above_all([end for _, end in busy])
        offsets[b] = chosen
        placed.append((chosen, chosen + size, lo, hi))
    return offsets


def envelope(values, batch: BatchRange) -> Envelope:
    """The most of values at each B, keeping only the parts some B in range needs."""
    parts = []
    for v in sorted(set(values), key=lambda a: (-a.at(batch.reference), -a.per_batch, -a.const)):
        if not any(at_most(v, kept, batch) for kept in parts):
            parts.append(v)
    return Envelope(tuple(parts) or (Affine(0),))


def timeline(span: dict[int, Span], steps: int) -> tuple[Affine, ...]:
    """Live arena bytes at each kernel step, as open/close events per coefficient."""
    const, per_batch = [0] * (steps + 1), [0] * (steps + 1)
    for lo, hi, size in span.values():
        const[lo] += size.const
        const[hi + 1] -= size.const
        per_batch[lo] += size.per_batch
        per_batch[hi + 1] -= size.per_batch
    live, c, p = [], 0, 0
    for k in range(steps):
        c, p = c + const[k], p + per_batch[k]
        live.append(Affine(c, p))
    return tuple(live)
