"""Static memory plan of a Schedule: liveness, in-place reuse, offsets in one arena.

Like tinygrad's schedule/memory.py: every kernel output gets a buffer live
from the kernel that writes it to the last kernel that reads it (directly or
through a view), measured in kernel steps. Graph inputs are the caller's
arrays and graph outputs are written straight into the result arrays, so
neither takes arena space. An elementwise kernel may write its output over an
input buffer that dies there (same shape, same size): each output element
depends only on the input element at the same index, which it reads first;
except an operand a backend reads after it has started writing the output
(`READ_AFTER_WRITE`: NumPy's select copies the on-false operand into the
output, then the on-true one where the predicate holds).
Buffers (merged by in-place reuse into blocks) are then placed greedily, each
at the best-fitting gap among the blocks live at the same time (TFLite's
"greedy by size" and a few other orders; the smallest arena wins), with every
offset aligned to 64 bytes. The plan reports the arena size, the liveness
lower bound (the most bytes live at any one kernel step, which no placement
can beat) and the live bytes at every step.
A symbolic schedule (types with the batch size B, planned for a BatchRange) gets
sizes and offsets linear in B (`Affine`), an arena and a lower bound that are the
most of several of them (`Envelope`): one plan for every B (memory_symbolic.py).
"""
from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Mapping

from ..ir import TensorType
from ..ir import ops as O
from ..ir.symbolic import Affine, BatchRange, Envelope, Sym, bytes_at, substitute
from .memory_symbolic import envelope, place_in_order, timeline as symbolic_timeline
from .schedule import KernelKind, Schedule

ALIGNMENT = 64  # a cache line; also enough for AVX-512 aligned loads
# op -> operand positions a multi-step lowering still reads after writing the output:
# the output must never take over those operands' storage.
READ_AFTER_WRITE = {O.Select: (0, 1)}


def aligned(nbytes):
    """nbytes rounded up to ALIGNMENT; a symbolic count (a Sym or an Affine) coefficient by
    coefficient, an Affine aligned at every batch size (a row of 40 bytes takes 64 per row)."""
    if isinstance(nbytes, (Sym, Affine)):
        nbytes = Affine.of(nbytes)
        return Affine(aligned(nbytes.const), aligned(nbytes.per_batch))
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class Buffer:
    value: int  # the kernel output it holds
    type: TensorType
    first: int  # the kernel step that writes it
    last: int  # the last kernel step that reads it (== first if none does)
    offset: int | Affine | None  # byte offset in the arena (Affine in a symbolic plan); None: the output's array
    reuses: int | None = None  # the value whose storage it takes over in place

    @property
    def size(self) -> int | Affine:
        """Bytes it occupies in the arena (aligned; an Affine when its type holds B)."""
        return aligned(self.type.nbytes)

    def __str__(self) -> str:
        live = f"live=[{self.first}, {self.last}]"
        if self.offset is None:
            return f"%{self.value}:{self.type} {{output, {live}}}"
        reuse = f", inplace=%{self.reuses}" if self.reuses is not None else ""
        return f"%{self.value}:{self.type} {{offset={self.offset}, size={self.size}, {live}{reuse}}}"


@dataclass(frozen=True)
class MemoryPlan:
    """A symbolic plan (batch set) holds Affine offsets, sizes and timeline, and Envelopes
    for arena_bytes and lower_bound: `bytes_at(plan.arena_bytes, B)` is the arena at B."""

    schedule: Schedule
    buffers: tuple[Buffer, ...]  # one per kernel output, in the order kernels write them
    arena_bytes: int | Envelope
    lower_bound: int | Envelope  # max over kernel steps of live (aligned) arena bytes: no placement does better
    timeline: tuple[int | Affine, ...]  # live arena bytes at each kernel step
    scratch: tuple[tuple[int, int | Affine, int | Affine], ...] = ()  # (kernel step, offset, size): temporaries
    batch: BatchRange | None = None  # the batch sizes a symbolic plan serves; None: a concrete plan

    @property
    def ratio(self) -> float:
        """arena / lower bound (of a symbolic plan: at its reference batch size)."""
        arena, bound = self.arena_bytes, self.lower_bound
        if self.batch is not None:
            arena, bound = arena.at(self.batch.reference), bound.at(self.batch.reference)
        return arena / bound if bound else 1.0

    def at(self, batch: int) -> "MemoryPlan":
        """A symbolic plan at one batch size, in ints (buffer types too): what the program
        uses at that size, as a per-size plan reads (a report draws it)."""
        if self.batch is None:
            return self
        buffers = tuple(dataclasses.replace(b, type=substitute(b.type, {"B": batch}),
                                            offset=None if b.offset is None else b.offset.at(batch))
                        for b in self.buffers)
        return MemoryPlan(self.schedule, buffers, self.arena_bytes.at(batch), self.lower_bound.at(batch),
                          tuple(live.at(batch) for live in self.timeline),
                          tuple((k, offset.at(batch), size.at(batch)) for k, offset, size in self.scratch))

    def __str__(self) -> str:
        batch = "" if self.batch is None else f" batch=[{self.batch}]"
        header = (f"memory @{self.schedule.graph.name} arena={self.arena_bytes} "
                  f"lower_bound={self.lower_bound} ratio={self.ratio:.3f}{batch} {{")
        lines = [header] + [f"  {b}" for b in self.buffers]
        lines += [f"  scratch kernel {k} {{offset={off}, size={size}, live=[{k}, {k}]}}"
                  for k, off, size in self.scratch]
        lines.append("}")
        return "\n".join(lines) + "\n"


def plan_memory(schedule: Schedule, kernel_scratch: Callable[[frozenset[int]], Mapping[int, int]] | None = None,
                donated: frozenset[int] = frozenset(), batch: BatchRange | None = None) -> MemoryPlan:
    """Plan the arena. kernel_scratch(protected)[k]: bytes of temporaries kernel k needs
    while it runs (a backend hook: NumPy evaluates a kernel node by node), given the
    values whose storage is shared with a value still read (written in place over a
    dying input, or over a donated argument: `donated` lists those output roots).
    batch: plan a symbolic schedule for every batch size in this range (Affine offsets)."""
    graph = schedule.graph
    outputs = {schedule.root(j) for j in graph.outputs}
    first = {v: k for k, kernel in enumerate(schedule.kernels) for v in kernel.outputs}
    last = dict(first)
    for k, kernel in enumerate(schedule.kernels):
        for j in kernel.inputs:
            root = schedule.root(j)
            if root in last:
                last[root] = k
    reuses = _in_place(schedule, first, last, outputs)
    scratch = kernel_scratch(frozenset(reuses) | donated) if kernel_scratch else {}
    # A block is a chain of buffers sharing storage through in-place reuse.
    block_of = {v: v for v in first}
    for v in first:  # kernel order: an input's block is known before its reuser's
        if v in reuses:
            block_of[v] = block_of[reuses[v]]
    span: dict[int, tuple[int, int, int]] = {}  # block -> (first, last, size)
    for v, b in block_of.items():
        if v in outputs:
            continue
        size = _size(graph.nodes[v].type.nbytes, batch)
        lo, hi, _ = span.get(b, (first[v], last[v], size))
        span[b] = (min(lo, first[v]), max(hi, last[v]), size)
    # Scratch blocks get negative keys: kernel k's is -(k + 1), live at step k only.
    for k, nbytes in scratch.items():
        size = _size(nbytes, batch)
        if size != _size(0, batch):
            span[-(k + 1)] = (k, k, size)
    steps = len(schedule.kernels)
    if batch is None:
        offsets = _place(span)
        # Live bytes per step as a running sum of open (+size) and close (-size) events: adding
        # each block over its lifetime was quadratic in a deep chain, where activations live long.
        change = [0] * (steps + 1)
        for lo, hi, size in span.values():
            change[lo] += size
            change[hi + 1] -= size
        timeline = tuple(itertools.accumulate(change[:-1]))
        arena = max((offsets[b] + size for b, (_, _, size) in span.items()), default=0)
        bound = max(timeline, default=0)
    else:
        offsets = _place_symbolic(span, batch)
        timeline = symbolic_timeline(span, steps)
        arena = envelope([offsets[b] + size for b, (_, _, size) in span.items()], batch)
        bound = envelope(timeline, batch)
    buffers = tuple(Buffer(v, graph.nodes[v].type, first[v], last[v],
                           None if v in outputs else offsets[block_of[v]], reuses.get(v))
                    for v in first)
    scratch_blocks = tuple((-b - 1, offsets[b], size) for b, (_, _, size) in sorted(span.items(), reverse=True)
                           if b < 0)
    return MemoryPlan(schedule, buffers, arena, bound, timeline, scratch_blocks, batch)


def _size(nbytes, batch: BatchRange | None):
    """A block's aligned size: an int in a concrete plan, an Affine in a symbolic one."""
    return aligned(nbytes) if batch is None else Affine.of(aligned(nbytes))


def _in_place(schedule: Schedule, first, last, outputs) -> dict[int, int]:
    """output value -> dying input buffer it overwrites, for elementwise kernels.

    Safe whether the kernel runs as one fused loop or node by node over whole
    arrays: no body node after the output reads the overwritten buffer, and the
    output's own node reads it only where it reads before it writes."""
    nodes = schedule.graph.nodes
    reuses: dict[int, int] = {}
    for k, kernel in enumerate(schedule.kernels):
        if kernel.kind != KernelKind.ELEMENTWISE:
            continue
        reads: dict[int, list[int]] = {}  # dying root -> the kernel inputs that view it
        for j in kernel.inputs:
            r = schedule.root(j)
            if r in first and r not in outputs and last[r] == k:
                reads.setdefault(r, []).append(j)
        last_read = {r: max(pos for pos, i in enumerate(kernel.body)
                            if any(j in views for j in nodes[i].inputs))
                     for r, views in reads.items()}
        for v in kernel.outputs:
            out = nodes[v].type
            candidates = [r for r in reads if v not in outputs and nodes[r].type.nbytes == out.nbytes
                          and all(nodes[j].type.shape == out.shape for j in reads[r])
                          and last_read[r] <= kernel.body.index(v)
                          and not _read_after_write(nodes[v], reads[r])]
            if candidates:
                reuses[v] = candidates[0]
                del reads[candidates[0]]
    return reuses


def _read_after_write(node, views: list[int]) -> bool:
    """Whether node reads one of views at an operand its lowering reads after writing."""
    return any(node.inputs[p] in views for p in READ_AFTER_WRITE.get(node.op, ()))


# Orders in which blocks are placed: TFLite's greedy-by-size, then by first use, by
# lifetime, by lifetime x size, and by last use (a training step whose updates free the
# gradients early: the digits Adam step reaches its lower bound, 207488 B, from 229504). No one order wins on every schedule; the smallest
# arena is kept (cheap: placement is a fraction of a millisecond per hundred buffers).
_ORDERS = (
    lambda lo, hi, size: (-size, lo),
    lambda lo, hi, size: (lo, -size),
    lambda lo, hi, size: (lo - hi, -size),
    lambda lo, hi, size: ((lo - hi - 1) * size, lo),
    lambda lo, hi, size: (hi, -size),
)


# Above this many blocks only the by-first-use order runs, as a linear scan: the
# general placement compares each block with every placed one (a 2,000-layer
# chain has 8,000 blocks, and all of its activations are live at once).
_LARGE = 512


def _place(span: dict[int, tuple[int, int, int]]) -> dict[int, int]:
    """Offsets of the blocks: the best of the greedy orders."""
    if len(span) > _LARGE:
        return _place_by_first_use(span)
    best: dict[int, int] = {}
    best_end = None
    for order in _ORDERS:
        offsets = _place_in_order(span, sorted(span, key=lambda b: (order(*span[b]), b)))
        end = max((offsets[b] + size for b, (_, _, size) in span.items()), default=0)
        if best_end is None or end < best_end:
            best, best_end = offsets, end
    return best


def _place_symbolic(span: dict[int, tuple[int, int, Affine]], batch: BatchRange) -> dict[int, Affine]:
    """Offsets linear in B: the greedy orders over sizes at the reference batch size, each
    placement apart at every size in range; the smallest arena at the reference wins."""
    at_reference = {b: (lo, hi, size.at(batch.reference)) for b, (lo, hi, size) in span.items()}
    orders = [sorted(span, key=lambda b: (order(*at_reference[b]), b)) for order in _ORDERS]
    # and the blocks whose size is fixed first, each group greedy by size: a weight's
    # gradient then sits below the activations instead of wherever a B-sized gap was
    orders.append(sorted(span, key=lambda b: (span[b][2].per_batch > 0, -at_reference[b][2], b)))
    if len(span) > _LARGE:
        orders = orders[1:2]
    best, best_end = {}, None
    for order in orders:
        offsets = place_in_order(span, order, batch)
        end = max((offsets[b].at(batch.reference) + size for b, (_, _, size) in at_reference.items()), default=0)
        if best_end is None or end < best_end:
            best, best_end = offsets, end
    return best


def _place_in_order(span: dict[int, tuple[int, int, int]], order: list[int]) -> dict[int, int]:
    """Each block, in turn, at the smallest gap free for its whole lifetime (else on top)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets: dict[int, int] = {}
    for b in order:
        lo, hi, size = span[b]
        busy = sorted((off, end) for off, end, f, l in placed if f <= hi and lo <= l)
        best, best_gap, cursor = None, None, 0
        for off, end in busy:
            gap = off - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, end)
        offsets[b] = cursor if best is None else best
        placed.append((offsets[b], offsets[b] + size, lo, hi))
    return offsets


def _first_use_order(span: dict[int, tuple[int, int, int]]) -> list[int]:
    return sorted(span, key=lambda b: (span[b][0], -span[b][2], b))


def _place_by_first_use(span: dict[int, tuple[int, int, int]]) -> dict[int, int]:
    """`_place_in_order` in first-use order, as a linear scan over free holes.

    Every block placed before starts no later, so the blocks a new one must
    avoid are exactly those still live: release the dead ones into holes, take
    the smallest hole that fits (the lowest of equals), else the top."""
    offsets: dict[int, int] = {}
    live: list[tuple[int, int]] = []  # heap of (last step, block)
    holes: list[list[int]] = []  # free [start, end) below top, sorted, never adjacent
    top = 0
    for b in _first_use_order(span):
        lo, hi, size = span[b]
        while live and live[0][0] < lo:
            _, dead = heapq.heappop(live)
            top = _release(holes, offsets[dead], offsets[dead] + span[dead][2], top)
        fitting = [h for h in holes if h[1] - h[0] >= size]
        if fitting:
            hole = min(fitting, key=lambda h: (h[1] - h[0], h[0]))
            offsets[b] = hole[0]
            hole[0] += size
            if hole[0] == hole[1]:
                holes.remove(hole)
        else:
            offsets[b], top = top, top + size
        heapq.heappush(live, (hi, b))
    return offsets


def _release(holes: list[list[int]], start: int, end: int, top: int) -> int:
    """Free [start, end); merge with neighbouring holes; lower the top if it ends there."""
    i = bisect.bisect(holes, [start, end])
    if i < len(holes) and holes[i][0] == end:
        end = holes.pop(i)[1]
    if i > 0 and holes[i - 1][1] == start:
        start = holes.pop(i - 1)[0]
        i -= 1
    if end == top:
        return start
    holes.insert(i, [start, end])
    return top


def assert_no_overlap(plan: MemoryPlan, sizes=(1, 2, 7, 64, 129)) -> None:
    """Raise AssertionError if two arena buffers live at the same step share bytes (a
    symbolic plan: at each of sizes in its range, its reference size and max_batch).

    The one exception is an in-place pair: the reuser starts exactly where the
    buffer it overwrites dies, at the same offset."""
    if plan.batch is None:
        return _assert_no_overlap_at(plan, None)
    top = plan.batch.max_batch
    for size in sorted({*sizes, plan.batch.reference, top or 1}):
        if top is None or size <= top:
            _assert_no_overlap_at(plan, size)


def _assert_no_overlap_at(plan: MemoryPlan, batch: int | None) -> None:
    def at(value):
        return value if batch is None else bytes_at(value, batch)

    where = "" if batch is None else f" at B={batch}"
    arena_bytes = at(plan.arena_bytes)
    arena = [(b, at(b.offset), at(b.size)) for b in plan.buffers if b.offset is not None]
    for b, offset, size in arena:
        assert offset % ALIGNMENT == 0, f"%{b.value}: offset {offset}{where} is not {ALIGNMENT}-aligned"
        assert offset + size <= arena_bytes, f"%{b.value} ends past the arena ({arena_bytes}){where}"
    for i, (a, a_offset, a_size) in enumerate(arena):
        for b, b_offset, b_size in arena[i + 1:]:
            live_together = a.first <= b.last and b.first <= a.last
            share_bytes = a_offset < b_offset + b_size and b_offset < a_offset + a_size
            if not (live_together and share_bytes):
                continue
            in_place = ((b.reuses == a.value and a.last == b.first) or
                        (a.reuses == b.value and b.last == a.first)) and a_offset == b_offset
            assert in_place, (f"%{a.value} [{a.first}, {a.last}] at {a_offset} and %{b.value} "
                              f"[{b.first}, {b.last}] at {b_offset} overlap in time and in the arena{where}")
    for k, offset, size in plan.scratch:
        offset, size = at(offset), at(size)
        assert offset % ALIGNMENT == 0 and offset + size <= arena_bytes, f"scratch of kernel {k} misplaced{where}"
        for b, b_offset, b_size in arena:
            clash = b.first <= k <= b.last and b_offset < offset + size and offset < b_offset + b_size
            assert not clash, (f"scratch of kernel {k} at {offset} overlaps %{b.value} live at "
                               f"[{b.first}, {b.last}]{where}")
