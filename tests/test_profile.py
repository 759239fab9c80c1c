"""Per-kernel profiles of the native program (ffcompile/profile.py, `ffcompile profile`).

No timing is asserted: only what holds by construction (kernel intervals nest in
the entry's, the entry's in the call's; one row per kernel; FLOPs from the cost
rules), and that profiling leaves the caller's arrays alone."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.llvm import backend
from ffcompile.passes.memory import plan_memory
from ffcompile.profile import cycles_per_second
from ffcompile.tree import tree_flatten, tree_map


def test_a_training_step_profile_has_a_row_per_kernel_nested_in_the_entry_and_the_call():
    workload = zoo.get("digits")
    params, (x, y) = workload.init(), workload.batch()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01))
    before = tree_map(np.copy, params)
    report = step.profile(params, step.init(params), x, y, steps=20)
    schedule = step.lower(params, step.init(params), x, y).schedule
    assert [k.index for k in report.kernels] == list(range(len(schedule.kernels)))
    assert [k.kind for k in report.kernels] == [k.kind for k in schedule.kernels]
    assert all(k.seconds > 0 for k in report.kernels)
    assert sum(k.seconds for k in report.kernels) <= report.entry_seconds <= report.call_seconds * 1.01
    for got, want in zip(tree_flatten(params)[0], tree_flatten(before)[0]):  # ran on copies
        np.testing.assert_array_equal(got, want)
    text = str(report)
    assert text.startswith("profile @train_step: mean of 20 runs")
    assert "matmul f32[128,128] k=64 trans_a" in text and len(text.splitlines()) == 2 + len(schedule.kernels)


def test_gemm_rows_count_the_products_flops():
    a, b = np.ones((40, 30), np.float32), np.ones((30, 20), np.float32)
    report = ff.compile(lambda a, b: ff.relu(a @ b)).lower(a, b).profile(a, b, steps=5)
    (gemm,) = report.kernels
    # relu fuses as two epilogue ops (le, select), one flop per element each
    assert gemm.kind == "gemm" and 2 * 40 * 30 * 20 <= gemm.flops <= 2 * 40 * 30 * 20 + 2 * 40 * 20 and gemm.what == "matmul f32[40,20] k=30 (+2 fused)"


def test_cycle_counter_rate_is_plausible():
    assert 1e8 < cycles_per_second() < 1e10  # a time-stamp counter ticks at GHz rates


def test_an_executable_built_without_profiling_counts_nothing():
    schedule = ff.compile(lambda x: x + 1.0).lower(np.ones(3)).schedule
    with pytest.raises(ValueError, match="profile=True"):
        backend.build(schedule, plan_memory(schedule)).kernel_cycles()


def test_profile_needs_a_step():
    x = np.ones(3)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        ff.compile(lambda x: x * 2.0).lower(x).profile(x, steps=0)
