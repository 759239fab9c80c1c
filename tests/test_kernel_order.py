"""Updates as soon as gradients are ready (passes/kernel_order.py): in a training step each
parameter's update runs right after its gradient, so remat can shrink the step."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.numpy_arena import build_program
from ffcompile.codegen.registry import BACKENDS
from ffcompile.pipeline import memory_plan
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import assert_no_overlap, plan_memory
from ffcompile.passes.schedule import Schedule
from ffcompile.tree import tree_flatten

OPTIMIZERS = {"sgd": ff.optim.SGD(0.1), "momentum": ff.optim.SGD(0.1, momentum=0.9), "adam": ff.optim.Adam(1e-3)}


def chain_loss(params, x):
    h = x
    for w, b in params:
        h = ff.tanh(h @ w + b)
    return (h * h).mean()


def chain(layers=8, width=32, batch=16):
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(width, width)) / np.sqrt(width), np.zeros(width)) for _ in range(layers)], \
        rng.normal(size=(batch, width))


def step_schedule(optimizer, **options):
    params, x = chain()
    step = ff.compile_train_step(chain_loss, optimizer, backend="numpy", **options)
    state = step.init(params)
    lowered = step.lower(params, state, x)
    return lowered, tree_flatten((params, state, step.hyperparameters(state), x))[0]


def traced_order(schedule):
    """The same kernels in root order (each kernel's root is its last node): as traced."""
    return Schedule(schedule.graph, tuple(sorted(schedule.kernels, key=lambda k: max(k.body))),
                    schedule.views, schedule.literals)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_early_updates_shrink_the_step_and_keep_its_bits(name):
    lowered, leaves = step_schedule(OPTIMIZERS[name])
    early = fuse(lowered.optimized)
    late = traced_order(early)
    assert early.kernels != late.kernels  # the updates moved
    for schedule in (early, late):
        assert_no_overlap(plan_memory(schedule))
    assert plan_memory(early).arena_bytes < plan_memory(late).arena_bytes
    assert memory_plan(BACKENDS["numpy"], early).arena_bytes < memory_plan(BACKENDS["numpy"], late).arena_bytes
    copies = [[a.copy() for a in leaves] for _ in range(2)]
    got = [build_program(s).run(*args) for s, args in zip((early, late), copies)]
    for a, b in zip(*got):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_each_update_runs_before_the_next_layers_gradient():
    """On the chain, the update of layer k's weight runs before the weight gradient of layer k-1
    is computed: no two weight gradients wait for their updates at once. (Layer 0's update and
    layer 1's both wait for the last backward GEMM, which reads layer 1's weight.)"""
    lowered, _ = step_schedule(OPTIMIZERS["sgd"])
    schedule = fuse(lowered.optimized)
    graph = schedule.graph
    n = len(chain()[0])
    new_weights = graph.outputs[3:1 + 2 * n:2]  # (loss, new params..., new state...): layers 1..n-1
    steps = [schedule.producer[schedule.root(j)] for j in new_weights]
    assert steps == sorted(steps, reverse=True)  # the last layer's first, as the backward pass goes
    gemms = [k for k, kernel in enumerate(schedule.kernels) if kernel.kind == "gemm"]
    for lower, upper in zip(steps, steps[1:]):  # layer k's update, then layer k+1's (earlier)
        assert any(upper < g < lower for g in gemms)  # layer k's backward GEMMs run in between


def test_remat_shrinks_a_training_step_under_a_budget():
    """Before, the weight gradients held the peak and every strategy gave store_all's."""
    for name in ("sgd", "adam"):
        store_all = step_schedule(OPTIMIZERS[name], remat="store_all")[0].plan
        sqrt = step_schedule(OPTIMIZERS[name], remat="sqrt")[0].plan
        optimal = step_schedule(OPTIMIZERS[name], memory_budget=0.75)[0].plan
        assert sqrt.peak_bytes < store_all.peak_bytes
        assert optimal.peak_bytes <= 0.75 * store_all.peak_bytes
