"""GEMM epilogues in accumulate form (codegen/llvm/accumulate.py): R = alpha * A@B + beta * C,
written over C's storage by the GEMM itself.

The gradient of `sum((x @ w) * y)` with respect to w is the single GEMM xᵀ @ y
(of `sum((w @ x) * y)`, y @ xᵀ), so a training step of it with an update rule
of our choosing puts exactly that rule in the GEMM's epilogue, with the new w
donated over the old. Each rule is checked against NumPy, in every GEMM path
(BLAS, small-GEMM tiles, dot-product tiles, the loop nest of an empty batch), and for the memory
it should save: the program's arena is the planned one, no scratch for the product.
"""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import blas
from ffcompile.codegen.llvm.accumulate import match_accumulate
from ffcompile.codegen.llvm.backend import LLVMExecutable
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory
from ffcompile.tree import tree_flatten, tree_map

LR = 0.01


class Rule:
    """An 'optimizer' applying new = rule(param, grad, state) to every parameter."""

    def __init__(self, rule):
        self.rule = rule

    def init(self, params):
        return {"lr": np.asarray(LR, tree_flatten(params)[0][0].dtype)}

    def update(self, grads, state, params):
        return tree_map(lambda p, g: self.rule(p, g, state), params, grads), state


# (name, rule, accumulate form?): the form is alpha * P + beta * C in any arrangement.
RULES = [
    ("sgd", lambda p, g, s: p - LR * g, True),
    ("scale on the right", lambda p, g, s: p - g * LR, True),
    ("plain sum", lambda p, g, s: p + g, True),
    ("negated product first", lambda p, g, s: -g + p, True),
    ("decay", lambda p, g, s: 0.9 * p - LR * g, True),
    ("C subtracted", lambda p, g, s: LR * g - p, True),
    ("negated C", lambda p, g, s: g + (-p), True),
    ("scale from the state", lambda p, g, s: p - s["lr"] * g, True),
    ("not linear in the product", lambda p, g, s: p - g * g, False),
    ("scale by a tensor", lambda p, g, s: p - p * g, False),
]
def loss_right(params, x, y):  # dL/dw = xᵀ @ y: a GEMM with trans_a
    return ((x @ params["w"]) * y).sum()


def loss_left(params, x, y):  # dL/dw = y @ xᵀ: a GEMM with trans_b
    return ((params["w"] @ x) * y).sum()


def step_program(loss, rule, w, x, y):
    """The LLVM program of one training step with the new w donated over w (inputs: w, lr,
    x, y; results: loss, w, lr), and its schedule."""
    optimizer = Rule(rule)
    step = ff.compile_train_step(loss, optimizer, backend="llvm")
    schedule = step.lower({"w": w}, optimizer.init({"w": w}), x, y).schedule
    return LLVMExecutable(schedule, plan_memory(schedule), {1: 0}), schedule


def case(loss, m, k, n, dtype):
    """w, x, y for a gradient GEMM of m x n over k (the shape of w), seeded by the sizes."""
    rng = np.random.default_rng(m * 10_000 + k * 100 + n)
    if loss is loss_right:  # x: k x m, w: m x n, y: k x n
        return [rng.standard_normal(s).astype(dtype) for s in ((m, n), (k, m), (k, n))]
    return [rng.standard_normal(s).astype(dtype) for s in ((m, n), (n, k), (m, k))]  # w @ x: m x k


def expected(loss, w, x, y, rule):
    w64, x64, y64 = (a.astype(np.float64) for a in (w, x, y))
    grad = x64.T @ y64 if loss is loss_right else y64 @ x64.T
    return rule(w64, grad, {"lr": LR})


@pytest.mark.parametrize("name, rule, accumulates", RULES, ids=[r[0] for r in RULES])
@pytest.mark.parametrize("loss, m, k, n, dtype", [
    (loss_right, 300, 260, 220, np.float32),  # BLAS
    (loss_right, 64, 64, 128, np.float64),  # small-GEMM tiles, A packed
    (loss_left, 30, 70, 20, np.float32),  # dot-product tiles
    (loss_right, 5, 0, 4, np.float64),  # an empty batch: k = 0, the loop nest (R = beta * C)
    (loss_right, 4, 50, 3000, np.float32),  # skinny, B streamed, split across the thread pool
    (loss_left, 4, 300, 200, np.float64),  # skinny, B^T: dot-product tiles across the pool
    (loss_left, 150, 256, 200, np.float32),  # dot-product tiles, blocks of rows across the pool
], ids=["blas", "tiles", "dot", "empty-batch", "skinny", "skinny-dot", "tiles-split"])
def test_rule_in_every_gemm_path(loss, m, k, n, dtype, name, rule, accumulates):
    w, x, y = case(loss, m, k, n, dtype)
    executable, schedule = step_program(loss, rule, w, x, y)
    assert executable.donated == {1: 0}
    plan = plan_memory(schedule)
    # The product gets scratch past the arena exactly when the rule is not in accumulate form.
    assert (executable.arena_bytes == plan.arena_bytes) == accumulates, (executable.arena_bytes, plan.arena_bytes)
    want = expected(loss, w, x, y, rule)
    donated = w.copy()
    executable(donated, np.asarray(LR, dtype), x, y)
    scale = np.abs(want).max()
    tolerance = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    assert np.abs(donated - want).max() <= tolerance * scale


def test_sizes_of_the_cases_pick_the_paths_they_are_named_for():
    assert 300 * 260 * 220 > blas.NATIVE_MAX_WORK >= blas.native_max_work()
    assert 64 * 64 * 128 <= blas.THREADED_NATIVE_MAX_WORK and 30 * 70 * 20 <= blas.THREADED_NATIVE_MAX_WORK
    assert blas.gemm_route(4, 3000, 50, "f32", True, False) == blas.SKINNY
    assert blas.gemm_route(4, 200, 300, "f64", False, True) == blas.SKINNY


def test_momentum_accumulates_into_the_velocity_and_updates_the_weight_after():
    """v' = 0.9 v + P is the accumulate form (over v); w' = w - lr v' runs after, reading v'."""
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((300, 200)).astype(np.float32)}
    x, y = rng.standard_normal((150, 300)).astype(np.float32), rng.standard_normal((150, 200)).astype(np.float32)
    reference = {"w": params["w"].copy()}
    results = {}
    for backend, p in (("llvm", params), ("numpy", reference)):
        step = ff.compile_train_step(loss_right, ff.optim.SGD(LR, momentum=0.9), backend=backend)
        state = step.init(p)
        for _ in range(3):
            step(p, state, x, y)
        results[backend] = (p["w"], state["velocity"]["w"])
    for got, want in zip(results["llvm"], results["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("operand, accumulates", [("x", True), ("w", False)])
def test_no_accumulate_when_the_gemm_reads_the_storage_it_would_overwrite(operand, accumulates):
    """w' = w - lr * (opᵀ @ x) written over w: with op = w, BLAS would read w while writing it."""
    def update(w, x):
        return w - LR * ((w if operand == "w" else x).T @ x)

    w = np.ones((8, 8), np.float32)
    graph = ff.compile(update, backend="llvm").lower(w, w).optimized
    (kernel,) = [k for k in fuse(graph).kernels if k.kind == "gemm"]
    storage = {graph.inputs[0], graph.outputs[0]}  # the result takes over w's storage

    def same_storage(a, b):
        return a == b or {a, b} <= storage

    found = match_accumulate(graph.nodes, kernel, same_storage)
    assert (found is not None) == accumulates
    if found:
        assert (found.result, found.c, found.alpha, found.beta) == (graph.outputs[0], graph.inputs[0],
                                                                   (found.alpha[0], True), (None, False))


def loss_two_layers(params, x, y):  # two weight gradients, which share SGD's 1 - lr wd
    return (((x @ params["w1"]) @ params["w2"]) * y).sum()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("k, dtype", [(260, np.float32), (64, np.float64)], ids=["large", "tiles"])
def test_optim_sgd_updates_in_accumulate_form(k, dtype, weight_decay):
    """optim.SGD's update, p (1 - lr wd) - lr g, is the product's alpha and beta with its
    run-time lr and weight decay, so a weight gradient needs no buffer of its own (wide's SGD
    step: arena 72 -> 29 MiB). Written p - lr (g + wd p), it was not. (With one parameter the
    scalar 1 - lr wd is fused into the GEMM's kernel, and the update stays its epilogue.)"""
    rng = np.random.default_rng(k)
    params = {"w1": rng.standard_normal((300, 200)).astype(dtype), "w2": rng.standard_normal((200, 220)).astype(dtype)}
    x, y = rng.standard_normal((k, 300)).astype(dtype), rng.standard_normal((k, 220)).astype(dtype)
    step = ff.compile_train_step(loss_two_layers, ff.optim.SGD(LR, weight_decay=weight_decay), backend="llvm")
    state = step.init(params)
    lowered = step.lower(params, state, x, y)
    plan = plan_memory(lowered.schedule)  # a product gets scratch past it unless accumulated
    assert LLVMExecutable(lowered.schedule, plan, lowered.donation.donated).arena_bytes == plan.arena_bytes
    w1, w2, x64, y64 = (a.astype(np.float64) for a in (params["w1"], params["w2"], x, y))
    keep = 1 - LR * weight_decay
    want = {"w1": w1 * keep - LR * (x64.T @ (y64 @ w2.T)), "w2": w2 * keep - LR * ((x64 @ w1).T @ y64)}
    step(params, state, x, y)
    tolerance = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    for name, value in want.items():
        assert np.abs(params[name] - value).max() <= tolerance * np.abs(value).max()
