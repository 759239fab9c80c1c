"""Every byte a program allocates is in the plan: for every strategy and budget, on both
backends, for ff.compile and for training steps with SGD, momentum and Adam, the program's
real arena is the planned peak and fits the budget, and a NumPy call allocates nothing
beyond its results (no ufunc buffer of note)."""
import tracemalloc

import numpy as np
import pytest
from remat_models import ISSUE_MODELS

import ffcompile as ff
from ffcompile.codegen.llvm import backend as llvm_backend
from ffcompile.codegen.registry import BACKENDS
from ffcompile.ir.symbolic import bytes_at
from ffcompile.pipeline import arena_of, memory_plan
from ffcompile.passes.fuse import fuse
from ffcompile.passes.remat import RematInfeasible, remat
from ffcompile.tree import tree_flatten

OPTIMIZERS = {"sgd": ff.optim.SGD(0.1), "momentum": ff.optim.SGD(0.1, momentum=0.9), "adam": ff.optim.Adam(1e-3)}
PLANS = [("store_all", None), ("recompute_elementwise", None), ("sqrt", None),
         ("optimal", 1.0), ("optimal", 0.8), ("optimal", 0.6)]
MEASURE = {"llvm": arena_of(BACKENDS["llvm"]), "numpy": arena_of(BACKENDS["numpy"])}


def step_graph(name, optimizer):
    """A training step's optimized graph (before remat), its flat arguments and donations."""
    loss, (params, *batch) = ISSUE_MODELS[name](np.float64, width=8, batch=4)
    step = ff.compile_train_step(loss, optimizer, backend="numpy")
    state = step.init(params)
    leaves = tree_flatten((params, state, step.hyperparameters(state), *batch))[0]
    n = len(tree_flatten((params, state))[0])
    return step.lower(params, state, *batch).optimized, leaves, {1 + i: i for i in range(n)}


def grad_graph(name):
    loss, args = ISSUE_MODELS[name](np.float64, width=8, batch=4)
    lowered = ff.compile(ff.value_and_grad(loss), backend="numpy").lower(*args)
    return lowered.optimized, tree_flatten(tuple(args))[0], {}


def planned(graph, backend, strategy, budget):
    try:
        return remat(graph, strategy, budget, time_limit=5.0, peak_of=MEASURE[backend])
    except RematInfeasible:
        assert strategy == "optimal" and budget < 1.0
        return None


def numpy_call_allocations(program, leaves) -> int:
    results = sum(np.asarray(r).nbytes for r in program.run(*[a.copy() for a in leaves]))
    copies = [a.copy() for a in leaves]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        program.run(*copies)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - results


def check(graph, leaves, donate, backend):
    for strategy, budget in PLANS:
        result = planned(graph, backend, strategy, budget)
        if result is None:
            continue
        rewritten, plan = result
        schedule = fuse(rewritten)
        chosen = BACKENDS[backend]
        donated = chosen.safe_donations(schedule, donate)
        memory = memory_plan(chosen, schedule, frozenset(schedule.root(schedule.graph.outputs[k]) for k in donated))
        program = chosen.build(schedule, memory, donated)
        real = program.arena_bytes
        if backend == "numpy":
            assert program.arena.nbytes == real  # really allocated
            assert numpy_call_allocations(program, leaves) <= 16_384, (strategy, budget)  # Python objects only
        assert real == memory.arena_bytes == plan.peak_bytes, (strategy, budget)
        if plan.budget is not None:
            assert plan.peak_bytes <= plan.budget


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", ["res2", "branch", "gelu_ce"])
@pytest.mark.parametrize("backend_name", ["llvm", "numpy"])
def test_training_step_arena_is_the_plan(backend_name, name, optimizer):
    check(*step_graph(name, OPTIMIZERS[optimizer]), backend_name)


@pytest.mark.parametrize("name", ["res2", "branch", "gelu_ce"])
@pytest.mark.parametrize("backend_name", ["llvm", "numpy"])
def test_value_and_grad_arena_is_the_plan(backend_name, name):
    check(*grad_graph(name), backend_name)


def test_adam_gemm_scratch_is_planned():
    """The case the issue found: an Adam update in a GEMM epilogue writes over w, m and v, so
    the GEMM's product needs a buffer of its own; it used to sit past the planned arena."""
    graph, _, donate = step_graph("res2", OPTIMIZERS["adam"])
    schedule = fuse(graph)
    memory = memory_plan(BACKENDS["llvm"], schedule)
    assert memory.scratch  # the products' buffers, in the plan
    assert llvm_backend.build(schedule, memory, donate).arena_bytes == memory.arena_bytes


@pytest.mark.parametrize("name", ["res2", "gelu_ce"])
def test_one_program_for_every_batch_size_allocates_its_plan_at_each_size(name):
    """batch_dim= on LLVM, every strategy and budget: one program whose arena is the plan's
    (an Envelope of B), the budget met at the reference size (max_batch), and a call at
    B = 1, 2, 7, 64 (ascending: each grows the arena) allocating exactly the plan's bytes at B."""
    loss, (params, *batch) = ISSUE_MODELS[name](np.float64, width=8, batch=4)
    for strategy, budget in PLANS:
        cf = ff.compile(ff.value_and_grad(loss), batch_dim=(None,) + (0,) * len(batch), max_batch=64,
                        remat=strategy, memory_budget=budget, backend="llvm")
        try:
            lowered = cf.lower(params, *batch)
        except RematInfeasible:
            assert strategy == "optimal" and budget < 1.0
            continue
        memory, program, plan = lowered.memory, lowered.program, lowered.plan
        assert lowered.per_size is None and program.arena_bytes == memory.arena_bytes
        assert bytes_at(memory.arena_bytes, 64) == plan.peak_bytes, (strategy, budget)
        if plan.budget is not None:
            assert plan.peak_bytes <= plan.budget
        for n in (1, 2, 7, 64):
            cf(params, *(np.resize(a, (n, *a.shape[1:])) for a in batch))
            assert cf.last_lowered is lowered
            assert program._arena.nbytes == max(bytes_at(memory.arena_bytes, n), 1), (strategy, budget, n)
