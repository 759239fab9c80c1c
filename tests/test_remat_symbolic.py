"""Remat of a symbolic graph (passes/remat_symbolic.py): planned at the reference batch
size, the budget holds there and at every smaller size, and the rewrite computes the
same bits as the graph it came from at every size."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.registry import get_backend
from ffcompile.ir import verify
from ffcompile.ir.interpret import interpret
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import BatchRange
from ffcompile.passes.decompose import decompose
from ffcompile.passes.recompute import RematInfeasible
from ffcompile.passes.remat import remat
from ffcompile.passes.remat_symbolic import remat_symbolic, unspecialize
from ffcompile.passes.simplify import simplify
from ffcompile.passes.fuse import fuse
from ffcompile.pipeline import arena_of, memory_plan


def _chain_loss(params, x):
    for w, b in params:
        x = ff.tanh(x @ w + b)
    return (x * x).mean()


def _problem(layers=8, width=24):
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=(width, width)) / 5, rng.normal(size=width)) for _ in range(layers)]
    cf = ff.compile(ff.value_and_grad(_chain_loss), batch_dim=(None, 0), backend="numpy")
    graph = simplify(decompose(cf.lower(params, rng.normal(size=(3, width))).symbolic))
    return graph, params, rng


@pytest.mark.parametrize("strategy,budget", [("sqrt", None), ("chain", 0.6), ("milp", 0.7), ("optimal", 0.5)])
@pytest.mark.parametrize("max_batch", [64, None])
def test_budget_holds_at_the_reference_and_every_smaller_size(strategy, budget, max_batch):
    graph, params, rng = _problem()
    batch = BatchRange(max_batch)
    peak_of = arena_of(get_backend("llvm"), batch)
    result, plan = remat_symbolic(graph, strategy, budget, 10.0, peak_of, batch)
    verify(result)
    assert plan.peak_bytes == peak_of(result)  # the one program's arena at the reference size
    if budget is not None:
        assert plan.peak_bytes <= plan.budget < plan.store_all_peak
        assert plan.recomputed
    arena = memory_plan(get_backend("llvm"), fuse(result), batch=batch).arena_bytes
    for n in (1, 2, 7, 64):
        if n <= batch.reference:  # sizes grow with B: the plan made for the reference fits below it
            assert arena.at(n) <= arena.at(batch.reference) == plan.peak_bytes
        leaves = [*(a for w, b in params for a in (w, b)), rng.normal(size=(n, params[0][0].shape[0]))]
        want = interpret(specialize(graph, {"B": n}), leaves)
        got = interpret(specialize(result, {"B": n}), leaves)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_the_rewrite_taken_back_is_the_symbolic_graph_of_the_sized_rewrite():
    graph, _, _ = _problem()
    sized = specialize(graph, {"B": 32})
    for strategy in ("store_all", "recompute_elementwise", "sqrt"):
        rewritten, _ = remat(sized, strategy)
        assert specialize(unspecialize(rewritten, sized, graph), {"B": 32}) == rewritten


def test_an_infeasible_budget_names_the_reference_peak():
    graph, _, _ = _problem()
    batch = BatchRange(16)
    with pytest.raises(RematInfeasible, match="budget"):
        remat_symbolic(graph, "optimal", 64, 5.0, arena_of(get_backend("llvm"), batch), batch)
