"""`optimal` against exhaustive search on the issue's three models, on both backends' real
arenas: at every achievable peak its plan fits and costs no more than the best stored subset
of candidates (but at one budget: see docs/remat.md), it never claims a proof it does not
have, and below the least peak the error names exactly that peak."""
import itertools
import re

import pytest
from remat_models import ISSUE_MODELS, training_graph

from ffcompile.codegen.registry import BACKENDS
from ffcompile.passes.fuse import fuse
from ffcompile.passes.recompute import forward_mask, insert_recomputation, recomputed_values
from ffcompile.passes.remat import RematInfeasible, remat
from ffcompile.pipeline import arena_of

MEASURE = {"llvm": arena_of(BACKENDS["llvm"]), "numpy": arena_of(BACKENDS["numpy"])}
# Budgets (of the achievable peaks) where optimal may cost more than exhaustive search: none,
# but one on gelu_ce with the NumPy backend's arena (the model misjudges one stored set).
MISSES = {("gelu_ce", "numpy"): 1}


def every_plan(graph, measure):
    forward = forward_mask(graph)
    made = fuse(graph).producer
    cands = [v for v in recomputed_values(graph, forward, set()) if v in made]
    assert len(cands) <= 12
    plans = []
    for bits in itertools.product((False, True), repeat=len(cands)):
        rewrite = insert_recomputation(graph, {v for v, keep in zip(cands, bits) if keep}, forward)
        plans.append((measure(rewrite.graph), rewrite.extra_flops))
    return plans


@pytest.mark.parametrize("backend_name", ["llvm", "numpy"])
@pytest.mark.parametrize("name", ["res2", "branch", "gelu_ce"])
def test_optimal_against_exhaustive_search(name, backend_name):
    graph = training_graph(*ISSUE_MODELS[name]())
    measure = MEASURE[backend_name]
    plans = every_plan(graph, measure)
    peaks = sorted({peak for peak, _ in plans})
    agree = 0
    for budget in peaks:
        least = min(flops for peak, flops in plans if peak <= budget)
        _, plan = remat(graph, "optimal", budget, peak_of=measure)
        assert plan.peak_bytes <= budget
        agree += plan.extra_flops <= least
        # Proven optimal only with no extra FLOPs (the model's bound is not one for the arena).
        assert (plan.solver.status == "optimal") == (plan.extra_flops == 0)
        assert plan.solver.gap == (0.0 if plan.extra_flops == 0 else None)
    assert agree >= len(peaks) - MISSES.get((name, backend_name), 0), (agree, len(peaks))
    with pytest.raises(RematInfeasible) as info:
        remat(graph, "optimal", peaks[0] - 1, peak_of=measure)
    assert int(re.search(r"smallest real peak found is (\d+) bytes", str(info.value)).group(1)) == peaks[0]
