"""Remat through ff.compile: the plan is visible, gradients do not change, and the
program's real arena is the planned peak, within the budget. On the NumPy backend,
where recomputation keeps each op's arithmetic: gradients are bitwise equal."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.tree import tree_flatten, tree_map


def deep_loss(params, x):
    h = x
    for w in params:
        h = ff.tanh(h @ w)
    return (h * h).sum()


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(16, 16)) * 0.5 for _ in range(12)]
    return params, rng.normal(size=(8, 16))


@pytest.mark.parametrize("strategy,budget", [("store_all", None), ("recompute_elementwise", None),
                                             ("sqrt", None), ("optimal", 0.6), ("optimal", 0.5)])
def test_gradients_bitwise_and_peak_as_planned(problem, strategy, budget):
    params, x = problem
    reference = ff.compile(ff.grad(deep_loss), backend="numpy")(params, x)
    compiled = ff.compile(ff.grad(deep_loss), backend="numpy", remat=strategy, memory_budget=budget)
    got = compiled(params, x)
    for a, b in zip(tree_flatten(got)[0], tree_flatten(reference)[0], strict=True):
        np.testing.assert_array_equal(a, b)
    lowered = compiled.last_lowered
    plan = lowered.plan
    assert plan.strategy == strategy
    assert lowered.program.arena.nbytes == lowered.memory.arena_bytes == plan.peak_bytes
    if budget is not None:
        assert plan.peak_bytes <= budget * plan.store_all_peak
    if strategy in ("sqrt", "optimal"):  # (tanh nets keep activations either way: not elementwise)
        assert plan.peak_bytes < plan.store_all_peak and plan.extra_flops > 0
        assert " recompute loc(" in lowered.optimized_ir
    print(f"\n{strategy} {budget}: peak {plan.peak_bytes} of {plan.store_all_peak} B, "
          f"+{plan.extra_flops} flops")


def test_infeasible_budget_names_the_smallest_peak(problem):
    params, x = problem
    with pytest.raises(ValueError, match="smallest"):
        ff.compile(ff.grad(deep_loss), memory_budget=64)(params, x)


def test_train_step_with_remat_learns_the_same(problem):
    params, x = problem
    p1 = tree_map(np.copy, params)
    p2 = tree_map(np.copy, params)
    plain = ff.compile_train_step(deep_loss, ff.optim.SGD(0.01), backend="numpy")
    budgeted = ff.compile_train_step(deep_loss, ff.optim.SGD(0.01), backend="numpy", remat="sqrt")
    s1, s2 = plain.init(p1), budgeted.init(p2)
    for _ in range(3):
        assert plain(p1, s1, x) == budgeted(p2, s2, x)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


def test_remat_needs_the_optimizing_pipeline():
    with pytest.raises(ValueError, match="optimize"):
        ff.compile(deep_loss, remat="sqrt", optimize=False)
