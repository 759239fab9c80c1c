"""Hyperparameters are runtime inputs of the compiled step: changed or scheduled without
recompiling; the same update runs eagerly on NumPy arrays; torch.optim (with a schedule)
as the oracle."""
import math

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.optim import schedules

pytestmark = pytest.mark.usefixtures("backend")


def linear_loss(params, x):
    # The gradient is x whatever the parameters: an SGD step moves w by exactly lr · x.
    return (params["w"] * x).sum()


def quadratic_loss(params, x):
    return ((params["w"] * x) ** 2).sum() + (ff.tanh(params["b"]) * x[0]).sum()


@pytest.fixture
def problem():
    rng = np.random.default_rng(1)
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}, rng.normal(size=(3, 4))


def copy(params):
    return {k: v.copy() for k, v in params.items()}


def compiles(step) -> int:
    return len(step._compiled._cache)


@pytest.mark.parametrize("make", [lambda: ff.optim.SGD(0.1, momentum=0.9), lambda: ff.optim.Adam(0.1)])
def test_lr_zero_freezes_the_parameters_without_recompiling(make, problem):
    params, x = problem
    p = copy(params)
    opt = make()
    step = ff.compile_train_step(quadratic_loss, opt)
    state = step.init(p)
    step(p, state, x)
    moved = copy(p)
    opt.lr = 0.0
    for _ in range(3):
        step(p, state, x)
    for k in p:
        np.testing.assert_array_equal(p[k], moved[k])
    opt.lr = 0.1
    step(p, state, x)
    assert not np.array_equal(p["w"], moved["w"])
    assert compiles(step) == 1 and int(state["count"]) == 5


def test_a_bound_step_reads_the_hyperparameters_at_every_call(problem):
    params, x = problem
    p = copy(params)
    opt = ff.optim.SGD(0.5)
    step = ff.compile_train_step(linear_loss, opt)
    bound = step.bind(p, step.init(p), x)
    before = p["w"].copy()
    bound()
    np.testing.assert_allclose(before - p["w"], 0.5 * x, rtol=1e-13, atol=1e-15)
    opt.lr = 0.0
    frozen = p["w"].copy()
    bound()
    np.testing.assert_array_equal(p["w"], frozen)
    opt.lr = schedules.exponential(1.0, 0.5)  # a schedule set later: count is 2 now
    bound()
    np.testing.assert_allclose(frozen - p["w"], 0.25 * x, rtol=1e-13, atol=1e-15)
    assert compiles(step) == 1


SCHEDULES = {
    "step": (schedules.step(0.3, step_size=3, gamma=0.5), lambda t: 0.3 * 0.5 ** (t // 3)),
    "exponential": (schedules.exponential(0.3, 0.8), lambda t: 0.3 * 0.8 ** t),
    "cosine": (schedules.cosine(0.3, total_steps=6, final=0.01),
               lambda t: 0.01 + 0.29 * (1 + math.cos(math.pi * min(t, 6) / 6)) / 2),
    "warmup_cosine": (schedules.warmup(schedules.cosine(0.3, total_steps=5), steps=3),
                      lambda t: 0.3 * t / 3 if t < 3 else 0.3 * (1 + math.cos(math.pi * min(t - 3, 5) / 5)) / 2),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_the_compiled_step_follows_the_schedule_formula(name, problem):
    schedule, formula = SCHEDULES[name]
    params, x = problem
    p = copy(params)
    step = ff.compile_train_step(linear_loss, ff.optim.SGD(schedule))
    state = step.init(p)
    for t in range(10):
        assert schedule(t) == pytest.approx(formula(t), rel=1e-15, abs=1e-17)
        before = p["w"].copy()
        step(p, state, x)
        np.testing.assert_allclose((before - p["w"]) / x, formula(t), rtol=1e-12, atol=1e-15)
    assert compiles(step) == 1


OPTIMIZERS = {
    "sgd": lambda: ff.optim.SGD(0.05),
    "nesterov_wd": lambda: ff.optim.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam_l2": lambda: ff.optim.Adam(0.05, weight_decay=0.01, decoupled=False),
    "adamw_scheduled": lambda: ff.optim.AdamW(schedules.warmup(schedules.cosine(0.05, 8), steps=2),
                                              weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_eager_update_on_arrays_equals_the_compiled_step(name, problem):
    params, x = problem
    opt = OPTIMIZERS[name]()
    p_eager, p_compiled = copy(params), copy(params)
    state_eager = opt.init(p_eager)
    step = ff.compile_train_step(quadratic_loss, opt)
    state_compiled = step.init(p_compiled)
    grad = ff.compile(ff.grad(quadratic_loss))
    for _ in range(6):
        p_eager, state_eager = opt.update(grad(p_eager, x), state_eager, p_eager)
        step(p_compiled, state_compiled, x)
    assert int(state_eager["count"]) == 6 and state_eager["count"].dtype == np.int64
    for k in params:
        np.testing.assert_allclose(p_eager[k], p_compiled[k], rtol=1e-13, atol=1e-15)
    flat_eager, tree_eager = ff.tree.tree_flatten(state_eager)
    flat_compiled, tree_compiled = ff.tree.tree_flatten(state_compiled)
    assert tree_eager == tree_compiled
    for a, b in zip(flat_eager, flat_compiled):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_eager_update_keeps_float32():
    opt = ff.optim.Adam(0.1)
    p = {"w": np.ones(3, np.float32)}
    new, state = opt.update({"w": np.full(3, 0.5, np.float32)}, opt.init(p), p)
    assert new["w"].dtype == np.float32 and state["m"]["w"].dtype == np.float32
    np.testing.assert_allclose(new["w"], 0.9, rtol=1e-6)  # Adam's first step is lr · sign(g)


TORCH = {
    "sgd_step": (lambda: ff.optim.SGD(schedules.step(0.05, 2, 0.5)),
                 lambda torch, ps: torch.optim.SGD(ps, lr=0.05),
                 lambda torch, opt: torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)),
    "momentum_nesterov_wd_exponential": (
        lambda: ff.optim.SGD(schedules.exponential(0.05, 0.9), momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda torch, opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)),
    "adam_cosine": (lambda: ff.optim.Adam(schedules.cosine(0.05, 10, final=0.001)),
                    lambda torch, ps: torch.optim.Adam(ps, lr=0.05),
                    lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10, eta_min=0.001)),
    "adam_l2": (lambda: ff.optim.Adam(0.05, weight_decay=0.1, decoupled=False),
                lambda torch, ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.1), None),
    "adamw_warmup_cosine": (
        lambda: ff.optim.AdamW(schedules.warmup(schedules.cosine(0.05, 5), steps=3), weight_decay=0.1),
        lambda torch, ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
        lambda torch, opt: torch.optim.lr_scheduler.LambdaLR(
            opt, schedules.warmup(schedules.cosine(1.0, 5), steps=3))),
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_scheduled_steps_match_torch_optim(name, problem):
    torch = pytest.importorskip("torch", reason="torch is the optional optimizer oracle")
    make_ff, make_torch, make_scheduler = TORCH[name]
    params, x = problem
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_torch(torch, list(tp.values()))
    scheduler = make_scheduler(torch, opt) if make_scheduler else None
    tx = torch.tensor(x)
    p = copy(params)
    step = ff.compile_train_step(quadratic_loss, make_ff())
    state = step.init(p)
    p_eager, optimizer = copy(params), make_ff()
    state_eager = optimizer.init(p_eager)
    grad = ff.compile(ff.grad(quadratic_loss))
    for _ in range(9):
        opt.zero_grad()
        loss = ((tp["w"] * tx) ** 2).sum() + (torch.tanh(tp["b"]) * tx[0]).sum()
        loss.backward()
        opt.step()
        if scheduler:
            scheduler.step()
        step(p, state, x)
        p_eager, state_eager = optimizer.update(grad(p_eager, x), state_eager, p_eager)
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p_eager[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)
    assert compiles(step) == 1


def test_bad_hyperparameters_name_the_optimizer_and_the_value():
    opt = ff.optim.SGD(0.1)
    with pytest.raises(ValueError, match=r"SGD: lr must be a number >= 0 or a schedule, got -1"):
        opt.lr = -1
    with pytest.raises(ValueError, match="no velocity state"):
        opt.momentum = 0.9
    with pytest.raises(ValueError, match=r"Adam: b1 must be a number in \[0, 1\)"):
        ff.optim.Adam(b1=1.0)
    with pytest.raises(ValueError, match=r"Adam: eps must be a number > 0"):
        ff.optim.Adam(eps=0.0)
    bad = ff.optim.SGD(lambda count: 0.1 - 0.05 * count)
    with pytest.raises(ValueError, match=r"lr \(its schedule at step 3\) must be a number >= 0"):
        bad.hyperparameters(3)
    with pytest.raises(AttributeError):
        ff.optim.SGD(0.1, momentum=0.5, nesterov=True).nesterov = False  # fixed: part of the program
    with pytest.raises(ValueError, match="Adam: opt_state is missing 'count'"):
        ff.optim.Adam().update({"w": np.ones(2)}, {"m": {}, "v": {}}, {"w": np.ones(2)})


def test_a_bad_scheduled_value_stops_the_step_before_it_runs(problem):
    params, x = problem
    p = copy(params)
    step = ff.compile_train_step(linear_loss, ff.optim.SGD(lambda count: 0.1 if count < 1 else float("nan")))
    state = step.init(p)
    step(p, state, x)
    after_one = copy(p)
    with pytest.raises(ValueError, match=r"lr \(its schedule at step 1\)"):
        step(p, state, x)
    np.testing.assert_array_equal(p["w"], after_one["w"])
    assert int(state["count"]) == 1


def test_update_inside_a_trace_asks_for_the_hyperparameters(problem):
    params, x = problem
    opt = ff.optim.Adam(0.1)

    def user_step(p, state):
        return opt.update(ff.grad(linear_loss)(p, x), state, p)

    with pytest.raises(TypeError, match="needs hyperparameters="):
        ff.compile(user_step)(copy(params), opt.init(params))

    def explicit(p, state, h):
        return opt.update(ff.grad(linear_loss)(p, x), state, p, h)

    state = opt.init(params)
    h = {k: np.float64(v) * np.ones(()) for k, v in opt.hyperparameters(0).items()}
    new_p, new_state = ff.compile(explicit)(copy(params), state, h)
    eager_p, _ = opt.update({"w": x, "b": np.zeros(4)}, state, copy(params))
    np.testing.assert_allclose(new_p["w"], eager_p["w"], rtol=1e-13)
    assert int(new_state["count"]) == 1


def test_schedules_reject_step_counts_that_are_not_positive_integers():
    with pytest.raises(ValueError, match="cosine schedule: total_steps must be an integer >= 1, got 0"):
        schedules.cosine(0.1, total_steps=0)
    with pytest.raises(ValueError, match="warmup schedule: steps must be an integer >= 1"):
        schedules.warmup(0.1, steps=2.5)
    with pytest.raises(ValueError, match="step schedule: step_size"):
        schedules.step(0.1, step_size=-1)
    assert schedules.warmup(0.1, steps=4)(2) == pytest.approx(0.05) and schedules.warmup(0.1, steps=4)(9) == 0.1


def test_the_hyperparameters_are_inputs_the_updates_read_as_they_are():
    """0-d arrays in the parameters' dtype (issue 19): no slice or convert kernel of their own,
    which took 4 of the xor SGD step's 15 kernels when they came as one float64 array."""
    from ffcompile import zoo

    workload = zoo.get("xor")
    params, x, y = workload.example_inputs()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01))
    state = step.init(params)
    step(params, state, x, y)
    assert {h.dtype for h in step.hyperparameters(state).values()} == {np.dtype(np.float32)}
    schedule = step.lower(params, state, x, y).schedule
    ops = [schedule.graph.nodes[i].op.name for kernel in schedule.kernels for i in kernel.body]
    assert "slice" not in ops and "convert" not in ops
    # the step counter's increment, SGD's 1 - lr wd (the updates' beta: accumulate.py) and the
    # forward and backward's 10
    assert len(schedule.kernels) == 12
