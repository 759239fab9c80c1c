"""A layered layout of a DAG on a grid of (layer, slot) cells, in Python (no Graphviz).

Items come in topological order, each with a band: band 0 (inputs, the
forward pass) flows forward along the layers; bands 1 and up (the adjoint,
then the optimizer update) flow back beside it, so the backward pass of a
layer sits next to its forward pass and a stored activation's edge is short,
the way training graphs are usually drawn. An item's layer is its longest
path from the band's start; a backward item with an anchor (the forward item
it differentiates) moves back to its anchor's layer when its operands allow.
An item with no operands (an input, a constant) sits one layer before its
first user, in that user's band. In each layer, items are ordered by the mean
slot of their operands (one barycenter sweep), and bands are placed side by
side.

Linear in items plus edges, without recursion: a few thousand nodes take
milliseconds.
"""
from __future__ import annotations

from collections.abc import Sequence


def layered_layout(bands: Sequence[int], preds: Sequence[Sequence[int]],
                   anchors: Sequence[int | None] | None = None) -> list[tuple[int, int]]:
    """(layer, slot) of every item; no two items share a cell. preds[i]: items i reads
    (an index >= i, possible after grouping, is drawn but not used for placement);
    anchors[i]: an earlier band-0 item whose layer a backward item i should share."""
    n = len(bands)
    users: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for j in ps:
            if j < i:
                users[j].append(i)
    band = list(bands)
    column: list[int | None] = [None] * n
    forward_end = 0  # one past the deepest band-0 layer so far: where a backward pass starts
    for i in range(n):
        anchor = None if anchors is None else anchors[i]
        if anchor is not None and (anchor >= i or column[anchor] is None):
            anchor = None
        placed = [j for j in preds[i] if j < i and column[j] is not None]
        if band[i] == 0:
            column[i] = max((column[j] + 1 for j in placed), default=0)
            forward_end = max(forward_end, column[i] + 1)
            continue
        backward = [j for j in placed if band[j] > 0]
        if backward:
            column[i] = min(column[j] for j in backward) - 1
            if anchor is not None:
                column[i] = min(column[i], column[anchor])
        elif preds[i]:  # a backward pass starts here: under its forward node, or after the forward pass
            column[i] = column[anchor] if anchor is not None else forward_end
    # Sources (inputs, constants) and backward values made from them alone sit next to
    # their first user; users first, so a chain of them stays in order.
    for i in range(n - 1, -1, -1):
        if preds[i] and column[i] is not None:
            continue
        placed = [u for u in users[i] if column[u] is not None]
        if placed:
            first = placed[0]
            band[i] = band[first]
            column[i] = column[first] - 1 if band[first] == 0 else column[first] + 1
        elif column[i] is None:
            column[i] = 0  # read by nothing
    shift = min(column, default=0)
    cols = [c - shift for c in column]
    return _rows(band, cols, preds)


def _rows(band: list[int], cols: list[int], preds) -> list[tuple[int, int]]:
    """Order each layer by the mean slot of already-placed operands, then place the bands side by side."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(band, cols)):
        cells.setdefault(key, []).append(i)
    slot = [0] * len(band)
    done = [False] * len(band)
    # Along each band's flow, so operands are placed before their users.
    for key in sorted(cells, key=lambda k: (k[0], k[1] if k[0] == 0 else -k[1])):
        members = cells[key]

        def barycenter(i: int) -> float:
            rows = [slot[j] for j in preds[i] if done[j] and band[j] == band[i]]
            return sum(rows) / len(rows) if rows else float(i)

        for row, i in enumerate(sorted(members, key=lambda i: (barycenter(i), i))):
            slot[i] = row
            done[i] = True
    height: dict[int, int] = {}
    for i, b in enumerate(band):
        height[b] = max(height.get(b, 0), slot[i] + 1)
    top, offset = 0, {}
    for b in sorted(height):
        offset[b] = top
        top += height[b] + 1  # one empty slot between bands
    return [(cols[i], offset[band[i]] + slot[i]) for i in range(len(band))]
