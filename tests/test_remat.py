"""Memory vs recompute: every strategy keeps gradients bitwise, plans the real arena, and
`optimal` is the cheapest plan under a budget (checked against exhaustive search)."""
import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_memory import run_in_arena

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile.ir.interpret import interpret
from ffcompile.codegen.numpy_arena import build_program
from ffcompile.ir import ops as O
from ffcompile.ir import parse_ir, verify
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory
from ffcompile.passes.recompute import forward_mask, insert_recomputation, recomputed_values
from ffcompile.passes.remat import STRATEGIES, RematInfeasible, arena_peak, remat
from ffcompile.passes.simplify import simplify
from ffcompile.tree import tree_flatten

# --------------------------------------------------------------------------- models (float64)


def mlp_loss(params, x):
    h = x
    for w, b in params:
        h = ff.tanh(h @ w + b)
    return (h * h).sum()


def mlp_args(layers, width=4, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    params = [(rng.normal(size=(width, width)) / np.sqrt(width), rng.normal(size=width)) for _ in range(layers)]
    return params, rng.normal(size=(batch, width))


def towers_loss(params, a, b):
    """Two tanh towers joined by a product, then a head: a DAG, not a chain."""
    left, right = a, b
    for w in params["left"]:
        left = ff.tanh(left @ w)
    for w in params["right"]:
        right = ff.sigmoid(right @ w)
    joined = ff.tanh((left * right + left) @ params["head"])
    return (joined * joined).sum()


def towers_args(depth=4, width=4, seed=1):
    rng = np.random.default_rng(seed)
    params = {"left": [rng.normal(size=(width, width)) / 2 for _ in range(depth)],
              "right": [rng.normal(size=(width, width)) / 2 for _ in range(depth)],
              "head": rng.normal(size=(width, width)) / 2}
    return params, rng.normal(size=(2, width)), rng.normal(size=(2, width))


def residual_loss(params, x):
    h = x
    for w, b in params:
        h = h + ff.tanh(h @ w + b)
    return ff.log_softmax(h, axis=-1).sum()


def training_graph(loss, args):
    """value_and_grad of loss w.r.t. its first argument, decomposed and simplified (remat's input)."""
    return simplify(decompose(ff.compile(ff.value_and_grad(loss)).lower(*args).graph))


def run(graph, args):
    return interpret(graph, tree_flatten(tuple(args))[0])


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


MODELS = {
    "mlp12": (mlp_loss, mlp_args(12)),
    "towers": (towers_loss, towers_args()),
    "residual": (residual_loss, mlp_args(8, seed=2)),
}


def smallest_peak(error: RematInfeasible) -> int:
    return int(re.search(r"the smallest real peak found is (\d+) bytes", str(error)).group(1))


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    loss, args = MODELS[request.param]
    return training_graph(loss, args), args


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradients_bitwise_and_peak_is_the_real_arena(model, strategy):
    graph, args = model
    expected = run(graph, args)
    budget = remat(graph, "sqrt")[1].peak_bytes if strategy == "optimal" else None  # known to fit
    result, plan = remat(graph, strategy, budget)
    verify(result)
    assert_bitwise(run(result, args), expected)
    memory = plan_memory(fuse(result))
    assert plan.peak_bytes == memory.arena_bytes
    leaves = tree_flatten(tuple(args))[0]
    in_arena = run_in_arena(memory, leaves)
    assert_bitwise(list(in_arena), expected)
    # The NumPy backend's arena program (kernels node by node, with scratch) agrees bit for bit too.
    assert_bitwise([np.asarray(a) for a in build_program(fuse(result)).run(*leaves)], expected)
    if strategy == "store_all":
        assert result is graph and plan.extra_flops == 0 and not plan.recomputed
    if budget is not None:
        assert plan.peak_bytes <= plan.budget


@pytest.mark.parametrize("fraction", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
def test_optimal_fits_every_budget_bitwise(model, fraction):
    graph, args = model
    try:
        result, plan = remat(graph, "optimal", fraction, time_limit=5.0)
    except RematInfeasible as error:  # the error's least peak is over budget, and reachable
        smallest = smallest_peak(error)
        assert smallest > int(fraction * arena_peak(graph))
        assert remat(graph, "optimal", smallest)[1].peak_bytes <= smallest
        return
    assert plan.peak_bytes <= plan.budget and plan.peak_bytes == arena_peak(result)
    assert plan.solver is not None and plan.solver.gap in (None, 0.0)
    assert_bitwise(run(result, args), run(graph, args))


# --------------------------------------------------------------------------- golden rewrites

TINY = """\
graph @g {
  %0:f64[2,2] = input {name="x"}
  %1:f64[2,2] = input {name="w"}
  %2:f64[2,2] = matmul %0, %1 loc("m.py":1)
  %3:f64[2,2] = tanh %2 loc("m.py":2 @layer)
  %4:f64[] = reduce_sum %3 {axes=[0, 1], keepdims=false} loc("m.py":3)
  %5:f64[] = constant {value=1.0} adjoint loc("m.py":3)
  %6:f64[2,2] = mul %3, %3 adjoint loc("m.py":2 @layer)
  %7:f64[2,2] = sub %5, %6 adjoint loc("m.py":2 @layer)
  %8:f64[2,2] = transpose %0 {perm=[1, 0]} adjoint loc("m.py":1)
  %9:f64[2,2] = matmul %8, %7 adjoint loc("m.py":1)
  return %4, %9
}
"""

# Nothing stored: tanh needs the matmul, both are copied before the first gradient node reading tanh.
TINY_NOTHING_STORED = """\
  %5:f64[] = constant {value=1.0} adjoint loc("m.py":3)
  %6:f64[2,2] = matmul %0, %1 recompute loc("m.py":1)
  %7:f64[2,2] = tanh %6 recompute loc("m.py":2 @layer)
  %8:f64[2,2] = mul %7, %7 adjoint loc("m.py":2 @layer)
  %9:f64[2,2] = sub %5, %8 adjoint loc("m.py":2 @layer)
  %10:f64[2,2] = transpose %0 {perm=[1, 0]} adjoint loc("m.py":1)
  %11:f64[2,2] = matmul %10, %9 adjoint loc("m.py":1)
  return %4, %11
}
"""

# The matmul stored (recompute_elementwise): only tanh is copied, from the kept %2.
TINY_MATMUL_STORED = """\
  %5:f64[] = constant {value=1.0} adjoint loc("m.py":3)
  %6:f64[2,2] = tanh %2 recompute loc("m.py":2 @layer)
  %7:f64[2,2] = mul %6, %6 adjoint loc("m.py":2 @layer)
  %8:f64[2,2] = sub %5, %7 adjoint loc("m.py":2 @layer)
  %9:f64[2,2] = transpose %0 {perm=[1, 0]} adjoint loc("m.py":1)
  %10:f64[2,2] = matmul %9, %8 adjoint loc("m.py":1)
  return %4, %10
}
"""


def test_golden_rewrites():
    graph = parse_ir(TINY)
    forward_part = "".join(TINY.splitlines(keepends=True)[:6])
    nothing = insert_recomputation(graph, set())
    assert str(nothing.graph) == forward_part + TINY_NOTHING_STORED
    assert nothing.copies == {2: 6, 3: 7}
    assert nothing.extra_flops == 2 * 2 * 2 * 2 + 4 * O.Tanh.flops_per_element  # 2x2x2 GEMM + 4 tanh
    _, plan = remat(graph, "recompute_elementwise")
    assert str(remat(graph, "recompute_elementwise")[0]) == forward_part + TINY_MATMUL_STORED
    assert plan.stored == ("%2 matmul",) and plan.recomputed == ("%3 -> %6 tanh",)
    assert remat(graph, "store_all")[0] is graph


def test_recomputation_is_visible_in_the_dump_and_parses_back():
    graph = training_graph(*MODELS["mlp12"])
    result, plan = remat(graph, "sqrt")
    text = str(result)
    copies = [line for line in text.splitlines() if "recompute loc(" in line]
    assert len(copies) == len(plan.recomputed) > 0
    assert str(parse_ir(text)) == text
    # A copy sits after the forward part: its first reader is a gradient node, never a forward one.
    nodes = result.nodes
    for i, node in enumerate(nodes):
        if node.role is Role.RECOMPUTE:
            readers = [n.role for n in nodes if i in n.inputs]
            assert readers and set(readers) <= {Role.ADJOINT, Role.RECOMPUTE}


def test_sqrt_recomputes_segments_on_a_chain():
    graph = training_graph(mlp_loss, mlp_args(16))
    _, plan = remat(graph, "sqrt")
    tanh_stored = [s for s in plan.stored if s.endswith("tanh")]
    assert len(tanh_stored) == 3  # layers 4, 8, 12 (k = 4) start from a kept activation
    assert plan.peak_bytes < remat(graph, "store_all")[1].peak_bytes


def test_recompute_elementwise_keeps_only_matmuls():
    graph = training_graph(mlp_loss, mlp_args(8))
    _, plan = remat(graph, "recompute_elementwise")
    assert plan.stored and all(s.endswith("matmul") for s in plan.stored)
    assert all(not r.endswith("matmul") for r in plan.recomputed)


def test_bad_arguments():
    graph = training_graph(mlp_loss, mlp_args(3))
    with pytest.raises(ValueError, match="unknown strategy 'fastest'"):
        remat(graph, "fastest")
    with pytest.raises(ValueError, match=r"fractional memory_budget must be in \(0, 1\]"):
        remat(graph, "optimal", 1.5)
    with pytest.raises(RematInfeasible, match="over the budget"):
        remat(graph, "store_all", 0.5)


def test_infeasible_budget_names_the_smallest_peak():
    graph = training_graph(mlp_loss, mlp_args(6))
    with pytest.raises(RematInfeasible, match=r"no schedule fits the 64-byte budget; the smallest real "
                                              r"peak found is (\d+) bytes") as info:
        remat(graph, "optimal", 64)
    smallest = smallest_peak(info.value)
    assert smallest > 64
    _, plan = remat(graph, "optimal", smallest)  # and that peak is reachable
    assert plan.peak_bytes <= smallest


# --------------------------------------------------------------------------- optimality


def every_plan(graph):
    """(real arena peak, extra FLOPs) of every subset of stored candidates, by exhaustive search.

    Candidates: forward values with a buffer in store_all's schedule that the backward part
    may need; the rest are recomputed whenever something needing them is."""
    forward = forward_mask(graph)
    made = fuse(graph).producer
    cands = [v for v in recomputed_values(graph, forward, set()) if v in made]
    assert 6 <= len(cands) <= 12
    plans = []
    for bits in itertools.product((False, True), repeat=len(cands)):
        rewrite = insert_recomputation(graph, {v for v, keep in zip(cands, bits) if keep}, forward)
        plans.append((arena_peak(rewrite.graph), rewrite.extra_flops))
    return plans


SMALL_MODELS = {"mlp5": (mlp_loss, mlp_args(5)), "towers": (towers_loss, towers_args(3)),
                "residual": (residual_loss, mlp_args(3, seed=3))}
SMALL = {name: training_graph(loss, args) for name, (loss, args) in SMALL_MODELS.items()}


@pytest.mark.parametrize("name", list(SMALL))
def test_optimal_matches_exhaustive_search(name):
    graph = SMALL[name]
    full = arena_peak(graph)
    plans = every_plan(graph)
    # Every distinct achievable peak (the frontier's corners), a few fractions, and just below the least.
    peaks = sorted({peak for peak, _ in plans})
    sources = set()
    for budget in peaks + [int(f * full) for f in (0.85, 0.7, 0.55)] + [peaks[0] - 1]:
        expected = min((flops for peak, flops in plans if peak <= budget), default=None)
        if expected is None:  # the error names the least peak of all
            with pytest.raises(RematInfeasible, match=f"smallest real peak found is {peaks[0]} bytes"):
                remat(graph, "milp", budget)
            continue
        _, plan = remat(graph, "milp", budget)
        assert plan.peak_bytes <= budget
        assert plan.extra_flops == expected, (name, budget, plan)
        sources.add(plan.solver.source)
    assert sources == {"milp"}  # the solver itself found every optimum


def test_optimal_at_sqrt_memory_is_no_costlier_than_sqrt():
    graph = training_graph(mlp_loss, mlp_args(32))
    _, sqrt_plan = remat(graph, "sqrt")
    _, plan = remat(graph, "optimal", sqrt_plan.peak_bytes)
    assert plan.peak_bytes <= sqrt_plan.peak_bytes
    assert plan.extra_flops <= sqrt_plan.extra_flops
    assert plan.solver.source != "sqrt"  # found by a planner, not by falling back on the sqrt seed


# --------------------------------------------------------------------------- any stored set


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(list(SMALL)), st.data())
def test_any_stored_set_keeps_gradients_bitwise(name, data):
    """The rewrite is sound for every choice, not only the strategies': a random subset of
    forward nodes is kept, the rest recomputed; results are unchanged bit for bit."""
    graph = SMALL[name]
    args = SMALL_MODELS[name][1]
    forward = forward_mask(graph)
    kept = data.draw(st.sets(st.sampled_from([i for i, f in enumerate(forward) if f])))
    rewrite = insert_recomputation(graph, kept, forward)
    verify(rewrite.graph)
    assert_bitwise(run(rewrite.graph, args), run(graph, args))
    copies = [n for n in rewrite.graph.nodes if n.role is Role.RECOMPUTE]
    assert len(copies) == len(rewrite.copies)
    assert all(graph.nodes[v].op is rewrite.graph.nodes[c].op for v, c in rewrite.copies.items())


# --------------------------------------------------------------------------- the CLI and the study


def test_cli_plan_prints_the_plan_and_the_frontier(capsys, tmp_path):
    from ffcompile.cli import main

    assert main(["plan", "xor", "--budget", "90%"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("remat @value_and_grad_loss strategy=optimal budget=") and "solver: status=" in out
    plot = tmp_path / "frontier.png"
    assert main(["plan", "xor", "--sweep", "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert all(s in table for s in ("store_all", "recompute_elementwise", "sqrt", "LLVM ms/step"))
    rows = [line.split() for line in table.splitlines()[1:] if not line.startswith("wrote")]
    assert len(rows) >= 4 and all(row[1] == row[5] for row in rows)  # the LLVM program's arena is the plan's peak
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        main(["plan", "xor", "--budget", "lots"])
    assert "--budget must be a percentage" in capsys.readouterr().err


def test_remat_study_example(tmp_path, capsys):
    from test_examples import load_example

    study = load_example("remat_study")
    plot = tmp_path / "study.png"
    mlp, dag = study.main(["--layers", "8", "--dag-depth", "4", "--plot", str(plot), "--time-limit", "5"])
    assert plot.exists() and (tmp_path / "study_dag.png").exists()
    for rows in (mlp, dag):
        plans = {label: plan for label, _, plan in rows}
        assert plans["optimal@sqrt"].extra_flops <= plans["sqrt"].extra_flops
        assert plans["optimal@sqrt"].peak_bytes <= plans["sqrt"].peak_bytes
    assert "at sqrt's peak" in capsys.readouterr().out


def test_docs_tables_are_what_the_example_prints(capsys):
    """docs/remat.md shows the example's tables for a documented configuration: run it."""
    from pathlib import Path

    from test_examples import load_example

    docs = (Path(__file__).parents[1] / "docs" / "remat.md").read_text()
    command = re.search(r"`python examples/remat_study.py ([^`]*)`", docs).group(1)
    args = [a.strip('"') for a in command.split()]
    mlp, dag = load_example("remat_study").main(args)
    printed = capsys.readouterr().out
    for name, rows in (("mlp", mlp), ("dag", dag)):
        table = re.search(rf"<!-- remat_study {name} -->\n(.*?)\n<!-- end -->", docs, re.S).group(1)
        assert table == load_example("remat_study").markdown(rows) and table in printed


def test_forward_only_graph_has_nothing_to_plan():
    loss, args = MODELS["mlp12"]
    graph = simplify(decompose(ff.compile(loss).lower(*args).graph))
    for strategy in STRATEGIES:
        result, plan = remat(graph, strategy, 1.0 if strategy == "optimal" else None)
        assert result is graph and plan.extra_flops == 0 and not plan.stored and not plan.recomputed
    assert plan.solver.model_status == "nothing to decide" and plan.solver.status == "optimal"


def test_no_time_to_solve_falls_back_on_the_best_seed_that_fits():
    graph = training_graph(mlp_loss, mlp_args(12))
    _, sqrt_plan = remat(graph, "sqrt")
    _, plan = remat(graph, "milp", sqrt_plan.peak_bytes, time_limit=0.0)
    assert plan.solver.iterations == 0 and plan.solver.model_status == "not run" and plan.solver.model_gap is None
    assert plan.solver.status == "feasible" and plan.solver.gap is None  # no bound was computed: none is claimed
    assert plan.solver.source == "sqrt" and plan.extra_flops == sqrt_plan.extra_flops


def test_a_time_limited_solve_claims_no_gap_it_did_not_prove():
    """Whatever the machine's speed, a report is proven (model 'optimal', or a plan with no
    extra FLOPs) or its gaps are unknown or positive: the bound HiGHS gave for that solve."""
    graph = training_graph(mlp_loss, mlp_args(32, width=16, batch=8))
    for time_limit in (0.5, 2.0):
        try:
            _, plan = remat(graph, "milp", 0.3, time_limit=time_limit)
        except RematInfeasible:
            continue
        report = plan.solver
        assert report.status == "optimal" or report.gap is None
        assert report.model_status == "optimal" or report.model_gap is None or report.model_gap > 0, report
