"""Memory vs recompute: which forward values the backward part stores, which it recomputes.

Runs after decompose and simplify (primitives only) and before fuse; nothing
that merges equal nodes (CSE) may run after it, or the recomputations would
fold back into the originals.

The forward part is what the graph's outputs need without the adjoint: every
node that is neither a `grad` node nor reads one, and that some output needs
through forward nodes only. The rest (adjoint, optimizer update, forward-role
nodes only the adjoint reads) is the backward part. A forward value the
backward part reads is either *stored* (the original stays live until its
last backward use) or *recomputed*: a copy of its node, located
`recompute loc(...)`, is inserted right before the first backward node that
needs it, reading stored values or, recursively, other copies. Each value is
recomputed at most once, so a run of unstored values (a Chen et al. segment)
is recomputed together when the backward part first reaches it. The
original's last use then moves into the forward part, which is what shrinks
liveness; copies compute the same ops on the same operands, so results are
bitwise identical.

Strategies name the stored set; `remat` applies one and measures the real
arena peak of the fused program (plan_memory(fuse(graph)).arena_bytes), so a
plan's numbers are the program's, not an estimate's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph, Role
from .cost import arena_peak, flops_of
from .recompute import STORED_SETS, RematInfeasible, Rewrite, forward_mask, insert_recomputation
from .remat_chain import find_chain, plan_chain
from .remat_solver import SolverReport, solve_optimal

STRATEGIES = (*STORED_SETS, "optimal")  # what every graph accepts
PLANNERS = ("chain", "milp")  # optimal's two planners alone; "chain" takes chains only
MILP_BESIDE_CHAIN_NODES = 2000  # a larger chain is planned by the DP alone: the MILP would take the time limit


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RematPlan:
    strategy: str
    graph_name: str
    budget: int | None  # bytes
    peak_bytes: int  # arena of the fused result: what the program really uses
    store_all_peak: int
    extra_flops: int
    forward_flops: int
    stored: tuple[str, ...]  # "%id op" of the forward values the backward part reads as kept
    recomputed: tuple[str, ...]  # "%original -> %copy op"
    seconds: float
    solver: SolverReport | None = field(default=None)
    copies: int = 0  # recompute nodes: more than len(recomputed) when a value is recomputed again

    def __str__(self) -> str:
        budget = "none" if self.budget is None else str(self.budget)
        share = self.extra_flops / self.forward_flops if self.forward_flops else 0.0
        lines = [f"remat @{self.graph_name} strategy={self.strategy} budget={budget} {{",
                 (f"  peak={self.peak_bytes} store_all_peak={self.store_all_peak} "
                  f"({self.peak_bytes / max(self.store_all_peak, 1):.1%})"),
                 f"  extra_flops={self.extra_flops} ({share:.1%} of the forward's {self.forward_flops})",
                 f"  planned in {self.seconds:.3f}s"]
        if self.solver is not None:
            lines.append(f"  solver: {self.solver}")
        lines.append(f"  stored ({len(self.stored)}): " + ", ".join(self.stored))
        again = f", {self.copies} copies" if self.copies > len(self.recomputed) else ""
        lines.append(f"  recomputed ({len(self.recomputed)}{again}): " + ", ".join(self.recomputed))
        lines.append("}")
        return "\n".join(lines) + "\n"


def remat(graph: Graph, strategy: str = "store_all", memory_budget: int | float | None = None,
          time_limit: float = 10.0, peak_of: Callable[[Graph], int] = arena_peak
          ) -> tuple[Graph, RematPlan]:
    """Apply a store/recompute strategy to a primitive forward+adjoint graph.

    memory_budget: bytes (int) or a fraction of store_all's peak (float);
    `optimal` finds the fewest extra FLOPs whose real arena peak fits it, and
    the other strategies raise RematInfeasible if their peak does not.
    time_limit: seconds for `optimal`'s solver, over all its re-solves.
    peak_of: the real arena of the program a backend builds from a graph
    (a backend that needs kernel scratch passes its own measure)."""
    if strategy not in (*STRATEGIES, *PLANNERS):
        raise ValueError(f"remat: unknown strategy {strategy!r}; choose one of {(*STRATEGIES, *PLANNERS)}")
    start = time.perf_counter()
    forward = forward_mask(graph)
    store_all_peak = peak_of(graph)
    budget = _budget_bytes(memory_budget, store_all_peak)
    solver = None
    if strategy in ("optimal", *PLANNERS):
        rewrite, solver, peak = _plan_optimal(graph, forward, strategy,
                                              budget if budget is not None else store_all_peak,
                                              time_limit, peak_of, store_all_peak)
    else:
        rewrite = insert_recomputation(graph, STORED_SETS[strategy](graph, forward), forward)
        peak = peak_of(rewrite.graph)
    if budget is not None and peak > budget:
        raise RematInfeasible(f"remat: strategy {strategy!r} needs a {peak}-byte arena, over the "
                              f"budget of {budget} bytes (store_all needs {store_all_peak})")
    plan = RematPlan(strategy, graph.name, budget, peak, store_all_peak, rewrite.extra_flops,
                     sum(flops_of(graph, i) for i, f in enumerate(forward) if f),
                     _stored_names(forward, rewrite), _recomputed_names(graph, rewrite),
                     time.perf_counter() - start, solver,
                     sum(node.role is Role.RECOMPUTE for node in rewrite.graph.nodes))
    return rewrite.graph, plan


def _plan_optimal(graph: Graph, forward: list[bool], strategy: str, budget: int, time_limit: float,
                  peak_of, store_all_peak: int) -> tuple[Rewrite, SolverReport, int]:
    """`chain`: the chain DP (multiple recomputation); `milp`: the MILP (one copy per value).
    `optimal`: the cheaper verified plan of the DP (when the forward part is a chain) and the
    MILP (unless the chain is large); a tie goes to the DP."""
    start = time.perf_counter()
    chain = find_chain(graph, forward) if strategy != "milp" else None
    if strategy == "chain" and chain is None:
        raise ValueError(f"remat: strategy 'chain' needs a forward part that is a chain of alike segments; "
                         f"{graph.name} is not one (use 'optimal')")
    best, found, error = None, None, None
    try:
        found = plan_chain(graph, forward, chain, budget, peak_of, store_all_peak) if chain is not None else None
    except RematInfeasible as chain_error:
        error = chain_error
    if found is not None:
        rewrite, peak, slots, probes = found
        proven = rewrite.extra_flops == 0
        best = rewrite, SolverReport("optimal" if proven else "feasible", 0.0 if proven else None,
                                     time.perf_counter() - start, probes, f"chain DP ({slots} slots)",
                                     "optimal", 0.0), peak
    if strategy == "milp" or (strategy == "optimal" and (chain is None or len(graph.nodes) <= MILP_BESIDE_CHAIN_NODES)):
        try:
            stored, report = solve_optimal(graph, forward, budget, max(0.0, time_limit - (time.perf_counter() - start)),
                                           peak_of)
        except RematInfeasible as milp_error:  # the error names the smaller of the two least peaks
            error = milp_error if error is None or milp_error.least_peak < error.least_peak else error
        else:
            rewrite = insert_recomputation(graph, stored, forward)
            if best is None or rewrite.extra_flops < best[0].extra_flops:
                best = rewrite, report, peak_of(rewrite.graph)
    if best is None:
        raise error
    return best


def _budget_bytes(budget, store_all_peak: int) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"remat: memory_budget must be bytes (int) or a fraction (float), got {budget!r}")
    if isinstance(budget, float):
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"remat: a fractional memory_budget must be in (0, 1], got {budget}")
        return int(budget * store_all_peak)
    if budget < 0:
        raise ValueError(f"remat: memory_budget must be non-negative, got {budget}")
    return budget


def _stored_names(forward: list[bool], rewrite: Rewrite) -> tuple[str, ...]:
    """Computed forward values that the backward part or a copy reads as originals (new ids)."""
    result = rewrite.graph
    originals = {rewrite.new_id[i] for i, f in enumerate(forward) if f}
    kept = {j for k, node in enumerate(result.nodes) if k not in originals
            for j in node.inputs if j in originals and result.nodes[j].inputs}
    return tuple(f"%{j} {result.nodes[j].op.name}" for j in sorted(kept))


def _recomputed_names(graph: Graph, rewrite: Rewrite) -> tuple[str, ...]:
    return tuple(f"%{rewrite.new_id[v]} -> %{c} {graph.nodes[v].op.name}" for v, c in rewrite.copies.items())


def frontier(graph: Graph, fractions=(0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2), time_limit: float = 10.0,
             peak_of: Callable[[Graph], int] = arena_peak) -> list[tuple[str, Graph, RematPlan]]:
    """(label, graph, plan) for every named strategy, then `optimal` at each fraction of
    store_all's peak that some schedule fits (peak bytes vs extra FLOPs)."""
    rows = []
    for strategy in STORED_SETS:
        result, plan = remat(graph, strategy, peak_of=peak_of)
        rows.append((strategy, result, plan))
    for fraction in fractions:
        try:
            result, plan = remat(graph, "optimal", fraction, time_limit, peak_of)
        except RematInfeasible:
            continue
        rows.append((f"optimal@{fraction:.0%}", result, plan))
    return rows
