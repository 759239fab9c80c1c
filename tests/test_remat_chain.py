"""The chain DP (passes/remat_chain.py): multiple recomputation, exact for its model.

Checked against an exhaustive search over every action sequence of the model
(an abstract machine: advance, store, free, restart from a checkpoint, reverse
a step), against exhaustive search over single-recomputation plans on the real
arena, and run: bits, the real arena, the printed provenance."""
import heapq
import itertools

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir import Role, parse_ir
from ffcompile.passes.cost import arena_peak
from ffcompile.passes.recompute import RematInfeasible, forward_mask
from ffcompile.passes.remat import remat
from ffcompile.passes.remat_chain import Chain, ChainDP, find_chain
from remat_models import ISSUE_MODELS, training_graph
from test_remat import assert_bitwise, every_plan, mlp_args, mlp_loss, run


def tanh_mlp(layers):
    return mlp_loss, mlp_args(layers)


# --------------------------------------------------------------------------- the model, exhaustively


def machine_optimum(m: int, slots: int, a: int, tape: int, tape_held: int) -> int:
    """The fewest FLOPs of any action sequence reversing m steps with `slots` slots (Dijkstra).

    State: the next step to reverse, the working boundary (-1: the input; None: none),
    the boundaries held in slots, and whether the working boundary is still the forward
    pass's front (advancing it is free). The tail holds the last boundary."""
    start = (m - 1, -1, frozenset(), True)
    best = {start: 0}
    queue = [(0, 0, start)]
    counter = itertools.count(1)
    while queue:
        cost, _, state = heapq.heappop(queue)
        if cost > best[state]:
            continue
        nxt, w, held, sweep = state
        if nxt == -1:
            return cost
        moves = []
        if w is not None and w + 1 <= nxt - 1:
            moves.append((0 if sweep else a, (nxt, w + 1, held, sweep)))
        if w is not None and w >= 0 and w not in held and len(held) < slots:
            moves.append((0, (nxt, w, held | {w}, sweep)))
        for j in held:
            moves.append((0, (nxt, w, held - {j}, sweep)))
        for j in held | {-1}:
            if j <= nxt - 1:
                moves.append((0, (nxt, j, held, False)))
        if nxt - 1 == -1 or nxt - 1 in held or w == nxt - 1:
            cost_tape = tape_held if (nxt in held or nxt == m - 1) else tape
            moves.append((cost_tape, (nxt - 1, None, frozenset(j for j in held if j <= nxt - 1), False)))
        for step, new in moves:
            if cost + step < best.get(new, float("inf")):
                best[new] = cost + step
                heapq.heappush(queue, (cost + step, next(counter), new))
    raise AssertionError("no sequence reverses the chain")


def abstract_chain(m: int, a: int, tape: int, tape_held: int) -> Chain:
    empty = ((),) * m
    return Chain(empty, empty, empty, tuple(range(m, 0, -1)), 0, (), m + 1, a, tape, tape_held)


@pytest.mark.parametrize("a,tape,tape_held", [(1, 1, 0), (3, 5, 2), (2, 2, 2)])
def test_dp_equals_exhaustive_search_of_its_model(a, tape, tape_held):
    for m in range(1, 6):
        dp = ChainDP(abstract_chain(m, a, tape, tape_held), 0, m)
        for slots in range(m + 1):
            assert dp.cost(slots) == machine_optimum(m, slots, a, tape, tape_held), (m, slots)


def test_schedule_replays_to_the_tables_cost():
    """The emitted actions cost what the table says and reverse every step once, last first."""
    m, a, tape, tape_held = 7, 3, 5, 2
    dp = ChainDP(abstract_chain(m, a, tape, tape_held), 0, m)
    for slots in range(m + 1):
        actions = dp.schedule(slots)
        cost = {"advance": a, "tape": tape, "tape_held": tape_held, "block": 0}
        assert sum(cost[kind] for kind, _ in actions) == dp.cost(slots)
        assert [k for kind, k in actions if kind == "block"] == list(range(m - 1, -1, -1))


def test_dp_work_is_bounded_by_its_window():
    """The tables' entries for a 1,000-step chain are at most 3 x steps^2 x (min(slots, steps -
    slots) + 2): a few slots, or a few short of every boundary, cost little; work, not time,
    so a slow day cannot fail it."""
    m = 1000
    for lo, hi in ((0, 8), (492, 500), (992, 1000)):
        dp = ChainDP(abstract_chain(m, 2, 2, 0), lo, hi)
        assert dp.cells <= 3 * m * m * (min(hi, m - lo) + 2), (lo, hi)
        assert np.isfinite(dp.cost(hi)) and dp.cost(hi) <= dp.cost(lo)
    assert ChainDP(abstract_chain(m, 2, 2, 0), 992, 1000).cells < 3 * 10 ** 7


# --------------------------------------------------------------------------- on real graphs


def test_chains_are_found_and_dags_are_not():
    mlp = training_graph(*tanh_mlp(6))
    chain = find_chain(mlp, forward_mask(mlp))
    assert chain is not None and chain.steps == 6
    res = training_graph(*ISSUE_MODELS["res2"](layers=6))
    assert find_chain(res, forward_mask(res)).steps == 3  # a residual block of two layers is a step
    branch = training_graph(*ISSUE_MODELS["branch"]())
    assert find_chain(branch, forward_mask(branch)) is None
    with pytest.raises(ValueError, match="strategy 'chain' needs a forward part that is a chain"):
        remat(branch, "chain", 0.9)


@pytest.mark.parametrize("layers", [4, 5])
def test_dp_equals_the_milp_and_reaches_below_every_single_copy_plan(layers):
    """At every peak a stored subset reaches (exhaustive search), `optimal` costs what the best
    subset costs, the DP alone the same at all but at most one (its slot model misses a plan
    there that the MILP's per-step model finds), and the DP reaches peaks no subset reaches."""
    loss, args = tanh_mlp(layers)
    graph = training_graph(loss, args)
    plans = every_plan(graph)
    peaks = sorted({peak for peak, _ in plans})
    equal = 0
    for budget in peaks:
        best = min(flops for peak, flops in plans if peak <= budget)
        _, chain_plan = remat(graph, "chain", budget)
        _, milp_plan = remat(graph, "milp", budget)
        _, plan = remat(graph, "optimal", budget)
        assert chain_plan.peak_bytes <= budget and milp_plan.extra_flops == plan.extra_flops == best
        equal += chain_plan.extra_flops == best
    assert equal >= len(peaks) - 1
    result, plan = remat(graph, "optimal", peaks[0] - 1)
    assert plan.peak_bytes < peaks[0] and plan.solver.source.startswith("chain DP")
    assert_bitwise(run(result, args), run(graph, args))


def test_copies_print_their_number_and_parse_back():
    loss, args = tanh_mlp(6)
    graph = training_graph(loss, args)
    result, plan = remat(graph, "chain", arena_peak(graph) * 6 // 10)
    text = str(result)
    assert "recompute#2 loc(" in text and plan.copies > len(plan.recomputed)
    assert parse_ir(text) == result
    numbers = [node.copy for node in result.nodes if node.role is Role.RECOMPUTE]
    assert all(numbers.count(k) <= numbers.count(k - 1) for k in range(2, max(numbers) + 1))


@pytest.mark.parametrize("name", ["res2", "mlp"])
def test_arena_is_the_planned_peak_and_bits_are_store_alls_on_both_backends(backend, name):
    loss, args = tanh_mlp(8) if name == "mlp" else ISSUE_MODELS["res2"](layers=16)
    expected = ff.compile(ff.value_and_grad(loss), backend=backend)(*args)
    store_all = ff.compile(ff.value_and_grad(loss), backend=backend).lower(*args).program.arena_bytes
    fitted = 0
    for fraction in (0.3, 0.5, 0.7, 0.9):
        budget = int(fraction * store_all)
        compiled = ff.compile(ff.value_and_grad(loss), backend=backend, remat="chain", memory_budget=budget)
        try:
            lowered = compiled.lower(*args)
        except RematInfeasible:
            continue
        fitted += 1
        assert lowered.program.arena_bytes == lowered.plan.peak_bytes <= budget
        assert lowered.plan.copies > 0
        for got, want in zip(ff.tree.tree_flatten(compiled(*args))[0], ff.tree.tree_flatten(expected)[0]):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert fitted >= 2


def test_remat_vs_jax_example_plans_within_every_policys_bytes(capsys):
    """At the bytes each jax.checkpoint policy needs (when ffcompile's least arena fits in
    them), ffcompile's plan fits: its arena plus results are at most JAX's temp plus output."""
    pytest.importorskip("jax", reason="jax is not installed: the JAX side of the comparison cannot run")
    from test_examples import load_example

    rows, least = load_example("remat_vs_jax").main(["--layers", "8", "--width", "32", "--batch", "8",
                                                     "--repeats", "2"])
    assert len(rows) == 6 and "| JAX policy |" in capsys.readouterr().out
    for row in rows:
        if row.jax_bytes >= least:
            assert row.ff_bytes is not None and row.ff_bytes <= row.jax_bytes, row
        else:
            assert row.ff_bytes is None
