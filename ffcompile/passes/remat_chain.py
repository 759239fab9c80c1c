"""Remat for chains: an exact dynamic program with multiple recomputation (Revolve-style).

A training step whose forward part is a chain of segments, cut at articulation
points (a value after which no forward node reads anything computed before
it: an MLP's activations, a residual stack's sums), is planned as in
Griewank's Revolve and Checkmate for linear graphs: a value may be
recomputed several times, a copy of a boundary made while advancing may be
kept as a new checkpoint, and the extra FLOPs are minimal for the DP's
memory model at every number of checkpoint slots.

The model. Body steps 1..m are the segments before the tail (the segment
holding the loss, taped by the forward pass itself). Step k maps boundary
x_{k-1} to x_k; reversing it (running its backward nodes) needs x_{k-1} and
its *tape* (the values of the segment the backward part reads), recomputed
from x_{k-1} (`tape` FLOPs, or `tape_held` when x_k is still held and need
not be recomputed). A slot holds one boundary. R(L, c, h): the fewest FLOPs
to reverse L steps with their first input held, c free slots, and the last
step's output held (h) or not:

    R(1, c, h)  = tape_h
    R(L, c, h)  = min( (L-1)a + tape_h + R(L-1, c, no),                   # advance, reverse the last
                       min over l of  l*a + R(L-l, c-1, h)                  # keep x_l in a slot
                                      + min(R(l, c-1, yes), R(l, c, no)) )  # still held, or freed

The forward pass advances for free, and the tail holds the last boundary:
top(L, c) = min(tape_held + R(L-1, c, no), min over l of top(L-l, c-1) +
min(R(l, c-1, yes), R(l, c, no))). `tests/test_remat_chain.py` checks the
tables against an exhaustive search over every action sequence of the model. The DP is
exact when the body's steps are alike (same FLOPs, sizes), which is what it
requires; its tables are (slots x steps), filled one step count at a time
with numpy. The model counts slots, not bytes, so `remat` measures each
plan's real arena and searches the slot count whose plan fits the budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from ..ir import ops as O
from .cost import flops_of
from .memory import aligned
from .recompute import RematInfeasible, Rewrite, insert_rounds


@dataclass(frozen=True)
class Chain:
    """The forward part cut at articulation points: body steps 1..m, then the tail."""

    advance: tuple[tuple[int, ...], ...]  # per body step: the nodes computing its boundary from the last
    tape: tuple[tuple[int, ...], ...]  # per body step: the nodes computing what its backward reads
    tape_held: tuple[tuple[int, ...], ...]  # the same, its boundary being held
    position: tuple[int, ...]  # per body step: the node before which its recomputation goes
    boundary: int  # the first step's boundary (every step's has its type)
    tail: tuple[int, ...]  # the tail's nodes computing what the backward part reads (from the last boundary)
    tail_position: int  # the first backward node reading the tail
    advance_flops: int
    tape_flops: int
    tape_held_flops: int

    @property
    def steps(self) -> int:
        return len(self.advance)


def find_chain(graph: Graph, forward: list[bool]) -> Chain | None:
    """The chain of alike body steps the DP plans, or None when the forward part is not one."""
    nodes = graph.nodes
    order = [i for i, f in enumerate(forward) if f and nodes[i].inputs]
    if not order:
        return None
    computed = set(order)
    # A boundary: no later forward node reads a forward value computed before it.
    earliest_read_after: dict[int, float] = {}
    low = float("inf")
    for i in reversed(order):
        earliest_read_after[i] = low
        low = min([low] + [j for j in nodes[i].inputs if j in computed])
    cuts = {i for i in order[:-1] if earliest_read_after[i] >= i}
    readers: dict[int, int] = {}  # forward value -> first backward node reading it
    for i, node in enumerate(nodes):
        if not forward[i] and node.op is not O.Input:
            for j in node.inputs:
                if j in computed:
                    readers.setdefault(j, i)
    if not readers:
        return None  # the backward part reads no forward value: nothing to plan
    # Steps: the longest run of alike chunks of the forward order from its start, each
    # ending at an articulation point (a repeating layer or block).
    signature = [(nodes[v].op.name, str(nodes[v].type), v in readers) for v in order]
    period, repeats = _period(signature, {k for k, v in enumerate(order) if v in cuts})
    if repeats < 2:
        return None
    segments = [order[k * period:(k + 1) * period] for k in range(repeats)]
    boundaries = [segment[-1] for segment in segments]
    advance, tape, tape_held, need = [], [], [], []
    for segment, b in zip(segments, boundaries):
        inside = set(segment)
        read = [v for v in segment if v in readers]
        advance.append(_closure(nodes, [b], inside))
        tape.append(_closure(nodes, read, inside))
        tape_held.append(_closure(nodes, [v for v in read if v != b], inside - {b}))
        need.append(min((readers[v] for v in read), default=len(nodes)))
    position = [min(need[:k + 1]) for k in range(len(need))]  # rounds go in reverse step order
    costs = [tuple(sum(flops_of(graph, v) for v in part[k]) for part in (advance, tape, tape_held))
             for k in range(len(segments))]
    if len(set(costs)) != 1:
        return None
    rest = set(order[order.index(boundaries[-1]) + 1:])
    tail_read = [v for v in rest if v in readers]
    return Chain(tuple(advance), tuple(tape), tuple(tape_held), tuple(position), boundaries[0],
                 _closure(nodes, tail_read, rest), min((readers[v] for v in tail_read), default=len(nodes)),
                 *costs[0])


def _period(signature: list, cut_at: set[int]) -> tuple[int, int]:
    """(chunk length, chunks): the chunks equal the first and end at cuts; most nodes covered."""
    best = (1, 1)
    for p in range(1, len(signature) // 2 + 1):
        k = 0
        while (k + 1) * p <= len(signature) and signature[k * p:(k + 1) * p] == signature[:p] \
                and (k + 1) * p - 1 in cut_at:
            k += 1
        if k >= 2 and k * p > best[0] * best[1]:
            best = (p, k)
    return best


def _closure(nodes, wanted: list[int], inside: set[int]) -> tuple[int, ...]:
    """The nodes of `inside` that `wanted` needs (itself included), ascending."""
    seen, pending = set(), [v for v in wanted if v in inside]
    while pending:
        v = pending.pop()
        if v not in seen:
            seen.add(v)
            pending.extend(j for j in nodes[v].inputs if j in inside)
    return tuple(sorted(seen))


# --------------------------------------------------------------------------- the tables


class ChainDP:
    """R and top for a uniform chain of m steps, for slot counts lo..hi."""

    def __init__(self, chain: Chain, lo: int, hi: int):
        m, a = chain.steps, float(chain.advance_flops)
        self.chain, self.lo, self.hi = chain, min(lo, m), min(hi, m)
        C, inf = self.hi, np.inf
        # R[h, c, L] and top[c, L], filled by ascending L. At most L-1 boundaries of L steps are
        # held at once, so rows c > L repeat row L. Every term of a state (L, c) has at most its
        # deficit L - c + 1, so top(m, lo..hi) needs no state whose deficit exceeds m - lo + 1.
        R = np.full((2, C + 1, m + 1), inf)
        R[:, :, 0] = 0.0
        top = np.full((C + 1, m + 1), inf)
        top[:, 0] = 0.0
        tapes = (float(chain.tape_flops), float(chain.tape_held_flops))
        self.cells = 0  # table entries compared: the DP's work, which tests bound (not its time)
        for L in range(1, m + 1):
            first, last = max(0, L - (m - self.lo) - 1), min(C, L)
            c0 = max(first, 1)  # rows c0..last may keep a boundary (c >= 1)
            # (c, l) for l = 1..L-1, as views: min(R(l, c-1, held), R(l, c, freed)), and l*a + it
            hold_or_free = np.minimum(R[1, c0 - 1:last, 1:L], R[0, c0:last + 1, 1:L])
            advance_and_rest = np.arange(1, L) * a + hold_or_free
            for h in (0, 1):
                best = np.full(last + 1 - first, tapes[h])
                if L > 1:  # advance to the last step and reverse it, or keep a boundary in a slot
                    best = (L - 1) * a + tapes[h] + R[0, first:last + 1, L - 1]
                    split = (advance_and_rest + R[h, c0 - 1:last, L - 1:0:-1]).min(axis=1, initial=inf)
                    best[c0 - first:] = np.minimum(best[c0 - first:], split)
                    self.cells += advance_and_rest.size
                R[h, first:last + 1, L], R[h, last + 1:, L] = best, best[-1]
            t = tapes[1] + R[0, first:last + 1, L - 1]  # the forward pass reached the last step's input
            if L > 1:
                split = (top[c0 - 1:last, L - 1:0:-1] + hold_or_free).min(axis=1, initial=inf)
                t[c0 - first:] = np.minimum(t[c0 - first:], split)
                self.cells += hold_or_free.size
            top[first:last + 1, L], top[last + 1:, L] = t, t[-1]
        self.R, self.top = R, top

    def cost(self, slots: int) -> float:
        return float(self.top[min(slots, self.hi), self.chain.steps])

    def schedule(self, slots: int) -> list[tuple[str, int]]:
        """The optimal actions with `slots` free slots, in execution order: ("advance", k),
        ("tape", k), ("tape_held", k), ("block", k) (step k's backward nodes run); k from 0."""
        actions: list[tuple[str, int]] = []
        # An explicit stack (chains are deeper than Python's recursion limit): tasks run in order.
        stack: list[tuple] = [("top", 0, self.chain.steps, min(slots, self.hi))]
        while stack:
            task = stack.pop()
            if task[0] == "emit":
                actions.append(task[1])
                continue
            kind, s, L, c = task[:4]
            if kind == "top":
                stack.extend(reversed(self._top_choice(s, L, c)))
            else:
                stack.extend(reversed(self._r_choice(s, L, c, task[4])))
        return actions

    def _top_choice(self, s: int, L: int, c: int) -> list[tuple]:
        if L == 0:
            return []
        R, top = self.R, self.top
        target = top[c, L]
        if float(self.chain.tape_held_flops) + R[0, c, L - 1] == target:
            return [("emit", ("tape_held", s + L - 1)), ("emit", ("block", s + L - 1)), ("r", s, L - 1, c, 0)]
        for ell in range(L - 1, 0, -1):  # ties: the latest checkpoint (the arena peaks early in the backward)
            held, freed = R[1, c - 1, ell], R[0, c, ell]
            if top[c - 1, L - ell] + min(held, freed) == target:
                rest = ("r", s, ell, c - 1, 1) if held <= freed else ("r", s, ell, c, 0)
                return [("top", s + ell, L - ell, c - 1), rest]
        raise AssertionError("remat chain DP: no choice reproduces the table")

    def _r_choice(self, s: int, L: int, c: int, h: int) -> list[tuple]:
        if L == 0:
            return []
        tape = ("emit", ("tape_held" if h else "tape", s + L - 1))
        block = ("emit", ("block", s + L - 1))
        if L == 1:
            return [tape, block]
        R, a = self.R, float(self.chain.advance_flops)
        target = R[h, c, L]
        advances = [("emit", ("advance", k)) for k in range(s, s + L - 1)]
        if c >= 1:
            for ell in range(L - 1, 0, -1):  # ties: the latest checkpoint (the arena peaks early in the backward)
                held, freed = R[1, c - 1, ell], R[0, c, ell]
                if ell * a + R[h, c - 1, L - ell] + min(held, freed) == target:
                    rest = ("r", s, ell, c - 1, 1) if held <= freed else ("r", s, ell, c, 0)
                    return [*advances[:ell], ("r", s + ell, L - ell, c - 1, h), rest]
        return [*advances, tape, block, ("r", s, L - 1, c, 0)]


def chain_rounds(chain: Chain, actions: list[tuple[str, int]]) -> dict[int, list[int]]:
    """Node id -> the forward nodes to copy before it: the actions before step k's block
    go before the first backward node that reads step k's segment (or an earlier one's)."""
    rounds: dict[int, list[int]] = {}
    pending: list[int] = []
    parts = {"advance": chain.advance, "tape": chain.tape, "tape_held": chain.tape_held}
    for kind, k in actions:
        if kind == "block":
            if pending:
                rounds.setdefault(chain.position[k], []).extend(pending)
            pending = []
        else:
            pending.extend(parts[kind][k])
    return rounds


WINDOW = 8  # slot counts below the first guess one table covers; a lower guess builds another


def plan_chain(graph: Graph, forward: list[bool], chain: Chain, budget: int, peak_of, store_all_peak: int
               ) -> tuple[Rewrite, int, int, int]:
    """The DP plan with the most slots whose real arena fits `budget`: (rewrite, its peak,
    slots, probes); RematInfeasible if none does, not even with no slot. A slot holds one boundary:
    the search starts at `budget // slot bytes` slots and steps down by the excess in
    slots (each probe builds the plan and measures its arena), then up while one more fits;
    the first guess takes off what store_all's arena holds beside its boundaries.
    Then, with the tail's values recomputed, one slot more while it fits and the table says
    it costs less."""
    slot = aligned(graph.nodes[chain.boundary].type.nbytes)
    tail_flops = sum(flops_of(graph, v) for v in chain.tail)
    top = min(chain.steps, budget // slot)
    beside = max(0, store_all_peak - chain.steps * slot)
    tables: list[ChainDP] = []
    measured: dict[tuple[int, bool], tuple[int, Rewrite]] = {}

    def table(slots: int) -> ChainDP:
        """One covering `slots`: a new one spans WINDOW counts below it, or above when going up."""
        for t in tables:
            if t.lo <= slots <= t.hi:
                return t
        up = bool(tables) and slots > tables[-1].hi
        tables.append(ChainDP(chain, slots, min(top, slots + WINDOW)) if up
                      else ChainDP(chain, max(0, slots - WINDOW), slots))
        return tables[-1]

    def measure(slots: int, again: bool = False) -> int:
        if (slots, again) not in measured:
            rounds = chain_rounds(chain, table(slots).schedule(slots))
            if again:  # each copy then sinks to right before its first reader
                rounds.setdefault(chain.tail_position, [])[:0] = chain.tail
            rewrite = insert_rounds(graph, rounds, forward)
            measured[slots, again] = peak_of(rewrite.graph), rewrite
        return measured[slots, again][0]

    slots = min(top, max(0, (budget - beside) // slot))
    while measure(slots) > budget:
        if slots == 0:
            raise RematInfeasible(f"remat: no schedule fits the {budget}-byte budget; the smallest real "
                                  f"peak found is {measure(0)} bytes (the chain DP's plan with no checkpoint: every "
                                  f"step recomputed from the input; store_all: {store_all_peak})", measure(0))
        slots = max(0, slots - max(1, -(-(measure(slots) - budget) // slot)))
    while slots < top and measure(slots + 1) <= budget:
        slots += 1
    best = (slots, False)
    # Recomputing the tail frees its bytes for more slots: cheaper, while one more slot fits.
    more = slots + 1
    while chain.tail and more <= min(top, slots + WINDOW) \
            and table(more).cost(more) + tail_flops < table(slots).cost(slots) and measure(more, True) <= budget:
        best = (more, True)
        more += 1
    peak, rewrite = measured[best]
    return rewrite, peak, best[0], len(measured)
