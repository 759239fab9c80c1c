"""A layered layout of a DAG on a grid of (layer, slot) cells, in Python (no Graphviz).

Items come in topological order, each with a band and a direction. Forward
items (inputs, the forward pass, recomputations) flow down the layers: an
item's layer is its longest path from the sources, then pulled down to just
above its first forward user (so a label's one-hot sits by the loss, not at
the top). Backward items (the adjoint, the optimizer update) flow back up
beside them: one layer above their earliest backward operand, and no lower
than the deepest forward value they read, so the gradient of a layer sits
next to the activations it reads and a stored activation's edge is short.
Sources (inputs, constants) sit one layer before their first user, in its
band. In each layer of a band, items are ordered by the mean slot of their
operands (one barycenter sweep); bands are placed side by side.

Linear in items plus edges, without recursion: a few thousand nodes take
milliseconds.
"""
from __future__ import annotations

from collections.abc import Sequence


def layered_layout(bands: Sequence[int], backward: Sequence[bool],
                   preds: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(layer, slot) of every item; no two items share a cell. preds[i]: items i reads
    (an index >= i, possible after grouping, is drawn but not used for placement)."""
    n = len(bands)
    preds = [[j for j in ps if j < i] for i, ps in enumerate(preds)]
    users: list[list[int]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for j in ps:
            users[j].append(i)
    band = list(bands)
    layer: list[int | None] = [None] * n
    forward = [i for i in range(n) if preds[i] and not backward[i]]
    for i in forward:  # longest path from the sources ...
        layer[i] = max((layer[j] + 1 for j in preds[i] if layer[j] is not None), default=0)
    for i in reversed(forward):  # ... then down to just above the first forward user
        below = [layer[u] for u in users[i] if not backward[u]]
        if below:
            layer[i] = max(layer[i], min(below) - 1)
    for i in range(n):
        if not backward[i] or not preds[i]:
            continue
        back = [layer[j] for j in preds[i] if backward[j] and layer[j] is not None]
        read = [layer[j] for j in preds[i] if not backward[j] and layer[j] is not None]
        if back:
            layer[i] = min(back) - 1 if not read else min(min(back) - 1, max(read))
        elif read:
            layer[i] = max(read)
    for i in range(n - 1, -1, -1):  # sources, and what reads only sources, next to the first user
        if layer[i] is not None and preds[i]:
            continue
        placed = [u for u in users[i] if layer[u] is not None]
        if placed:
            first = placed[0]
            band[i] = band[first]
            layer[i] = layer[first] + (1 if backward[first] else -1)
        elif layer[i] is None:
            layer[i] = 0  # read by nothing
    shift = min(layer, default=0)
    return _slots(band, [c - shift for c in layer], preds)


def _slots(band: list[int], layer: list[int], preds) -> list[tuple[int, int]]:
    """Order each layer of a band by the mean slot of its placed operands; bands side by side."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(band, layer)):
        cells.setdefault(key, []).append(i)
    slot = [0] * len(band)
    done = [False] * len(band)
    for key in sorted(cells):
        def barycenter(i: int) -> float:
            slots = [slot[j] for j in preds[i] if done[j] and band[j] == band[i]]
            return sum(slots) / len(slots) if slots else float(i)

        for position, i in enumerate(sorted(cells[key], key=lambda i: (barycenter(i), i))):
            slot[i] = position
            done[i] = True
    width: dict[int, int] = {}
    for i, b in enumerate(band):
        width[b] = max(width.get(b, 0), slot[i] + 1)
    left, offset = 0, {}
    for b in sorted(width):
        offset[b] = left
        left += width[b] + 1  # one empty slot between bands
    return [(layer[i], offset[band[i]] + slot[i]) for i in range(len(band))]
