"""The `optimal` remat strategy: fewest extra FLOPs whose real arena peak fits a budget.

A MILP in the spirit of Checkmate (Jain et al. 2020), shrunk to the rewrite
remat.py performs (each value recomputed at most once, right before its
first backward need), solved by HiGHS through scipy.optimize.milp.

Candidates are the forward values that own a buffer in the store_all
schedule and that the backward part may need, directly or through
recomputation; other forward nodes (values fused into a kernel, views) are
recomputed whenever something that needs them is. Time is the kernel steps
of the store_all schedule; an event is the first backward read of a
candidate (the only moments copies appear).

Variables:
  s[v]    binary, candidate v is stored;
  r[x]    node x is recomputed;
  a[v, e] the copy of candidate v exists by event e;
  o[v, k] a stored candidate no backward node reads is still needed at step
          k by copies not yet made.
Only s is integral: r, a, o are bounded below by expressions that are
integral once s is, and minimizing pushes them onto those bounds.
Constraints: r[x] >= 1 - s[x] for a value the backward part reads;
r[x] >= r[y] - s[x] when a recomputed y reads x; a[v, e] >= r[v] from v's
first backward read on; a[v, e] >= a[u, e] + r[v] - 1 when u's copy reads
v's (they are made together); a monotone in e;
o[v, k] >= s[v] + r[u] - 1 - a[u, e(k)]; and at every kernel step
  base + fixed + sum size[v] * (s[v] + a[v, e]) + sum size[v] * o[v, k] <= budget
over candidates between their last forward and last backward read (base:
every other buffer, as store_all places it; fixed: candidates a later
forward kernel still reads). Objective: sum flops[x] * r[x], exactly the
copies' cost.

The model approximates the arena (fusion of the rewritten graph and buffer
placement are not in it), so each solution is built, fused and planned,
and its real arena checked ("iterate"): one over budget is cut off (a
no-good cut on s) and the model re-solved; after NO_GOOD_CUTS of those the
model's budget is also tightened by the observed excess. The named
strategies seed the search and the cheapest verified plan wins (ties go to
the MILP). When nothing fits, a second MILP minimizes the model's peak, and
a descent on the real peak (toggling one candidate at a time, else two) looks further,
and the error states the smallest real peak found (not proven least).
"""
from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from .cost import arena_peak, flops_of
from .fuse import fuse, is_fusable
from .memory import aligned, plan_memory
from .recompute import STORED_SETS, RematInfeasible, insert_recomputation, recomputed_values

NO_GOOD_CUTS = 40  # rejected solutions cut off one by one before the model's budget is tightened


@dataclass(frozen=True)
class SolverReport:
    """What `optimal` can prove about its plan. The MILP's model estimates the real arena (it
    is not a relaxation of it: it can over-estimate a stored set's peak), so its proof is the
    model's, not the plan's: `status` and `gap` speak of the real-arena problem and claim only
    what holds there, `model_status` and `model_gap` of the model."""

    status: str  # "optimal" (proven: no extra FLOPs), "feasible" (a verified plan, minimality unproven)
    gap: float | None  # (extra FLOPs - a valid lower bound) / extra FLOPs; None: no bound but the trivial 0
    seconds: float
    iterations: int  # model solves (a solution over budget is cut off and the model re-solved)
    source: str  # the plan chosen: "milp", "milp (least peak)", or a seed strategy that cost less
    model_status: str = "not run"  # the last HiGHS solve: "optimal", "time limit", "infeasible", "not run"
    model_gap: float | None = None  # (extra FLOPs - the model's dual bound) / extra FLOPs, for the model

    def __str__(self) -> str:
        def share(x):
            return "unknown" if x is None else f"{x:.4f}"
        return (f"status={self.status!r} gap={share(self.gap)} model={self.model_status!r} "
                f"model_gap={share(self.model_gap)} time={self.seconds:.3f}s "
                f"iterations={self.iterations} chosen={self.source}")


_STATUS = {0: "optimal", 1: "time limit", 2: "infeasible", 3: "unbounded", 4: "error"}


def solve_optimal(graph: Graph, forward: list[bool], budget: int, time_limit: float,
                  peak_of=arena_peak) -> tuple[set[int], SolverReport]:
    start = time.perf_counter()
    model = _Model(graph, forward)
    tried: dict[frozenset[int], tuple[int, int]] = {}  # stored set -> (real peak, extra flops)

    def evaluate(stored: frozenset[int]) -> tuple[int, int]:
        if stored not in tried:
            rewrite = insert_recomputation(graph, set(stored), forward)
            tried[stored] = (peak_of(rewrite.graph), rewrite.extra_flops)
        return tried[stored]

    # The named strategies (and storing nothing) seed the search and bound what the MILP must beat.
    seeds = {name: frozenset(fn(graph, forward)) for name, fn in STORED_SETS.items()}
    seeds["store_nothing"] = frozenset()
    best_name, best = None, None
    for name, stored in seeds.items():
        peak, flops = evaluate(stored)
        if peak <= budget and (best is None or flops < evaluate(best)[1]):
            best_name, best = name, stored
    # A backend's arena may exceed the planner's (the NumPy backend adds kernel scratch):
    # the model, which knows only the planner's buffers, starts with that excess taken off.
    excess = max(0, evaluate(seeds["store_all"])[0] - arena_peak(graph)) if peak_of is not arena_peak else 0
    status, bound, iterations, model_budget = "not run", None, 0, budget - excess
    cuts: list[frozenset[int]] = []
    if model.n == 0:  # no backward part reads a forward value: nothing to decide
        status, bound = "nothing to decide", 0.0
    while model.n and time.perf_counter() - start < time_limit:
        iterations += 1
        remaining = max(0.05, time_limit - (time.perf_counter() - start))
        result = model.solve(model_budget, cuts, remaining)
        status = _STATUS.get(result.status, str(result.status))
        bound = None if result.x is None else result.mip_dual_bound  # this solve's, never a stale one
        if result.x is None:
            break
        stored = model.stored(result.x)
        peak, flops = evaluate(stored)
        if peak <= budget:
            if best is None or (flops, peak) <= evaluate(best)[::-1]:
                best_name, best = "milp", stored
            break
        cuts.append(stored)
        if len(cuts) > NO_GOOD_CUTS:
            model_budget -= peak - budget
    if best is None and model.n:  # the least memory the model knows how to reach: fits after all, or is reported
        result = model.solve_min_peak(max(1.0, time_limit - (time.perf_counter() - start)))
        if result.x is not None and evaluate(model.stored(result.x[:model.n]))[0] <= budget:
            best_name, best = "milp (least peak)", model.stored(result.x[:model.n])
    if best is None:  # descend on the real peak from the least found: toggle one candidate, else two
        stored = min(tried, key=lambda t: tried[t])
        while best is None and time.perf_counter() - start < time_limit:
            for group in (1, 2):
                moves = (stored ^ set(c) for c in itertools.combinations(model.cands, group))
                step = min(itertools.takewhile(lambda _: time.perf_counter() - start < time_limit, moves),
                           key=evaluate, default=stored)
                if evaluate(step) < evaluate(stored):
                    break
            if evaluate(step) >= evaluate(stored):
                break
            stored = step
            if evaluate(stored)[0] <= budget:
                best_name, best = "least-peak search", stored
    if best is None:
        smallest = min(peak for peak, _ in tried.values())
        raise RematInfeasible(f"remat: no schedule fits the {budget}-byte budget; the smallest real "
                              f"peak found is {smallest} bytes (store_all: {evaluate(seeds['store_all'])[0]}; "
                              f"found by a search, not proven least)", smallest)
    best_flops = evaluate(best)[1]
    # The model's bound holds for the model only; the one bound valid for the real arena is
    # zero extra FLOPs, so only a plan with none is proven optimal.
    model_gap = None if bound is None or status not in ("optimal", "time limit", "nothing to decide") \
        else max(0.0, best_flops - bound) / max(best_flops, 1)
    proven = best_flops == 0
    report = SolverReport("optimal" if proven else "feasible", 0.0 if proven else None,
                          time.perf_counter() - start, iterations, best_name, status, model_gap)
    return set(best), report


class _Model:
    """The MILP's matrices for one graph; solve() adds the budget and the no-good cuts."""

    def __init__(self, graph: Graph, forward: list[bool]):
        nodes = graph.nodes
        schedule = fuse(graph)
        self.steps = len(schedule.kernels)
        self.closure = recomputed_values(graph, forward, set())  # all a backward part may recompute
        in_closure = set(self.closure)
        self.made_at = schedule.producer
        self.cands = [v for v in self.closure if v in self.made_at]
        outputs = {schedule.root(j) for j in graph.outputs}
        self.size = {v: 0 if v in outputs else aligned(nodes[v].type.nbytes) for v in self.cands}
        self.fwd_last, bwd_reads = _read_steps(schedule, forward, set(self.cands))
        self.bfirst = {v: min(ks) for v, ks in bwd_reads.items()}
        self.blast = {v: max(ks) for v, ks in bwd_reads.items()}
        # A copy of an elementwise value read by one backward kernel and by no other copy
        # fuses into that kernel: no buffer.
        read_by_copies = {j for x in self.closure for j in nodes[x].inputs}
        self.copy_size = {v: 0 if len(set(bwd_reads.get(v, ()))) == 1 and is_fusable(nodes[v].op)
                          and v not in read_by_copies else self.size[v] for v in self.cands}
        self.feeds = _candidate_inputs(nodes, self.cands, in_closure)
        self.fed_by: dict[int, list[int]] = {v: [] for v in self.cands}
        for u in self.cands:
            for v in self.feeds[u]:
                self.fed_by[v].append(u)
        self.events = sorted(set(self.bfirst.values()))
        self._columns()
        self.static: list[tuple[dict[int, float], float, float]] = []  # (coefficients, lower, upper)
        self._recompute_rows(nodes, forward, in_closure)
        self._copy_rows()
        self._pending_rows()
        self.memory, self.fixed = self._memory_rows(_other_buffers(plan_memory(schedule), set(self.cands),
                                                                    self.steps))
        self.objective = np.zeros(self.n)
        for x in self.closure:
            self.objective[self.col_r[x]] = flops_of(graph, x)

    def _columns(self) -> None:
        """s (candidates), r (closure), a (candidate x the events its copy may appear at or live to)."""
        cands, steps = self.cands, self.steps
        earliest = {v: self.bfirst.get(v, steps) for v in cands}
        latest = {v: self.bfirst.get(v, -1) for v in cands}
        for u in reversed(cands):  # a copy may appear as early or as late as its readers' copies
            for v in self.feeds[u]:
                earliest[v] = min(earliest[v], earliest[u])
                latest[v] = max(latest[v], latest[u])
        self.earliest = earliest
        self.col_s = {v: k for k, v in enumerate(cands)}
        self.col_r = {x: len(cands) + k for k, x in enumerate(self.closure)}
        self.col_a: dict[tuple[int, int], int] = {}
        n = len(cands) + len(self.closure)
        for v in cands:
            for e in self.events:
                if earliest[v] <= e <= max(latest[v], self.blast.get(v, -1)):
                    self.col_a[v, e] = n
                    n += 1
        self.col_o: dict[tuple[int, int], int] = {}
        self.n = n

    def _recompute_rows(self, nodes, forward: list[bool], in_closure: set[int]) -> None:
        """r[x] >= 1 - s[x] if the backward part reads x; r[j] >= r[x] - s[j] if x reads j."""
        col_r, col_s = self.col_r, self.col_s
        direct = {j for i, node in enumerate(nodes) if not forward[i] for j in node.inputs if j in in_closure}
        for x in self.closure:
            if x in direct:
                self.static.append(({col_r[x]: 1.0, **({col_s[x]: 1.0} if x in col_s else {})}, 1.0, np.inf))
            for j in nodes[x].inputs:
                if j in in_closure:
                    coef = {col_r[j]: 1.0, col_r[x]: -1.0}
                    if j in col_s:
                        coef[col_s[j]] = 1.0
                    self.static.append((coef, 0.0, np.inf))

    def _copy_rows(self) -> None:
        """a[v, e] >= r[v] from v's first backward read; >= a[u, e] + r[v] - 1; monotone in e."""
        col_a, col_r = self.col_a, self.col_r
        for v in self.cands:
            window = [e for e in self.events if (v, e) in col_a]
            for prev, e in itertools.pairwise(window):
                self.static.append(({col_a[v, e]: 1.0, col_a[v, prev]: -1.0}, 0.0, np.inf))
            for e in window:
                if v in self.bfirst and e >= self.bfirst[v]:
                    self.static.append(({col_a[v, e]: 1.0, col_r[v]: -1.0}, 0.0, np.inf))
                for u in self.fed_by[v]:
                    if (u, e) in col_a:
                        self.static.append(({col_a[v, e]: 1.0, col_a[u, e]: -1.0, col_r[v]: -1.0}, -1.0, np.inf))

    def _pending_rows(self) -> None:
        """A stored value no backward node reads stays live until the copies reading it exist:
        o[v, k] >= s[v] + r[u] - 1 - a[u, e(k)] for each candidate u whose copy reads it."""
        col_a = self.col_a
        for v in self.cands:
            if v in self.bfirst or not self.fed_by[v] or self.size[v] == 0:
                continue
            ends = [max((e for e in self.events if (u, e) in col_a), default=-1) for u in self.fed_by[v]]
            for k in range(self.fwd_last[v] + 1, max(ends) + 1):
                self.col_o[v, k] = self.n
                self.n += 1
                event = _last_at_or_before(self.events, k)
                for u in self.fed_by[v]:
                    coef = {self.col_o[v, k]: 1.0, self.col_s[v]: -1.0, self.col_r[u]: -1.0}
                    if event is not None and event >= self.earliest[u]:
                        if (u, event) not in col_a:
                            continue  # past u's window: its copy exists by then
                        coef[col_a[u, event]] = 1.0
                    self.static.append((coef, -1.0, np.inf))

    def _memory_rows(self, base: np.ndarray) -> tuple[list[dict[int, float]], np.ndarray]:
        """Per kernel step: the decided bytes (coefficients) and the fixed bytes."""
        rows, fixed = [], np.array(base)
        for k in range(self.steps):
            coef: dict[int, float] = {}
            event = _last_at_or_before(self.events, k)
            for v in self.cands:
                size = self.size[v]
                if (v, k) in self.col_o:
                    coef[self.col_o[v, k]] = size
                if size == 0 or not self.made_at[v] <= k <= max(self.fwd_last[v], self.blast.get(v, -1)):
                    continue
                if k <= self.fwd_last[v] and self.made_at[v] < self.fwd_last[v]:  # a later forward kernel reads it
                    fixed[k] += size
                    continue
                coef[self.col_s[v]] = size
                if event is not None and (v, event) in self.col_a and self.copy_size[v]:
                    coef[self.col_a[v, event]] = self.copy_size[v]
            rows.append(coef)
        return rows, fixed

    def stored(self, x: np.ndarray) -> frozenset[int]:
        return frozenset(v for k, v in enumerate(self.cands) if x[k] > 0.5)

    def solve(self, budget: int, cuts: list[frozenset[int]], time_limit: float):
        """Fewest extra FLOPs within the model's budget, unlike every cut-off solution."""
        rows = list(self.static)
        rows += [(coef, -np.inf, budget - self.fixed[k]) for k, coef in enumerate(self.memory)]
        for stored in cuts:  # differ from a rejected solution in at least one candidate
            coef = {k: (-1.0 if v in stored else 1.0) for k, v in enumerate(self.cands)}
            rows.append((coef, 1.0 - len(stored), np.inf))
        return self._milp(self.objective, rows, time_limit)

    def solve_min_peak(self, time_limit: float):
        """The smallest model peak, whatever it costs: one more column bounds every step."""
        peak = self.n
        rows = list(self.static)
        rows += [({**coef, peak: -1.0}, -np.inf, -self.fixed[k]) for k, coef in enumerate(self.memory)]
        objective = np.zeros(self.n + 1)
        objective[peak] = 1.0
        return self._milp(objective, rows, time_limit)

    def _milp(self, objective: np.ndarray, rows, time_limit: float):
        # Imported here: scipy.optimize loads scipy.linalg (30-60 ms), which only `optimal` needs.
        import scipy.sparse
        from scipy.optimize import Bounds, LinearConstraint, milp

        columns = len(objective)
        data, row_ids, col_ids = [], [], []
        for r, (coef, _, _) in enumerate(rows):
            for c, value in coef.items():
                row_ids.append(r)
                col_ids.append(c)
                data.append(value)
        matrix = scipy.sparse.csr_array((data, (row_ids, col_ids)), shape=(len(rows), columns))
        lower = np.array([lo for _, lo, _ in rows])
        upper = np.array([hi for _, _, hi in rows])
        if np.any(upper < lower) or np.any((np.diff(matrix.indptr) == 0) & (upper < 0)):
            return _Infeasible()
        integrality = np.zeros(columns)
        integrality[:len(self.cands)] = 1
        upper_bounds = np.ones(columns)
        upper_bounds[self.n:] = np.inf
        with _quiet_stdout():
            return milp(objective, integrality=integrality, bounds=Bounds(0, upper_bounds),
                        constraints=LinearConstraint(matrix, lower, upper),
                        options={"time_limit": time_limit, "disp": False, "mip_rel_gap": 0.0})


@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints some debug lines from C++ even with disp=False: silence file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _Infeasible:
    """What milp would say when some step's fixed bytes alone exceed the budget."""

    status = 2
    x = None


def _last_at_or_before(events: list[int], k: int) -> int | None:
    pos = bisect.bisect_right(events, k)
    return events[pos - 1] if pos else None


def _read_steps(schedule, forward: list[bool], cands: set[int]) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Per candidate: the last kernel step a forward node reads it (else the step making it),
    and the kernel steps where backward nodes read it (directly or through views)."""
    nodes = schedule.graph.nodes
    fwd_last = {v: schedule.producer[v] for v in cands}
    bwd_reads: dict[int, list[int]] = {}
    for k, kernel in enumerate(schedule.kernels):
        body = set(kernel.body)
        for i in kernel.body:
            for j in nodes[i].inputs:
                root = schedule.root(j)
                if j in body or root not in cands:
                    continue
                if forward[i]:
                    fwd_last[root] = max(fwd_last[root], k)
                else:
                    bwd_reads.setdefault(root, []).append(k)
    return fwd_last, bwd_reads


def _candidate_inputs(nodes, cands: list[int], in_closure: set[int]) -> dict[int, set[int]]:
    """u -> the candidates u's copy reads: through paths of non-candidates, which it recomputes."""
    is_cand = set(cands)
    feeds: dict[int, set[int]] = {}
    for u in cands:
        feeds[u] = set()
        pending, seen = list(nodes[u].inputs), set()
        while pending:
            x = pending.pop()
            if x in seen or x not in in_closure:
                continue
            seen.add(x)
            if x in is_cand:
                feeds[u].add(x)
            else:
                pending.extend(nodes[x].inputs)
    return feeds


def _other_buffers(plan, cands: set[int], steps: int) -> np.ndarray:
    """Bytes of every non-candidate arena buffer at each step (a reuser starts when its input dies)."""
    base = np.zeros(steps)
    for b in plan.buffers:
        if b.offset is not None and b.value not in cands:
            base[b.first + (b.reuses is not None and b.first < b.last):b.last + 1] += b.size
    return base
