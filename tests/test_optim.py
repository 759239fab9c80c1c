"""Optimizers and the one-program training step, against NumPy and torch.optim."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir import Role

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")


def quadratic_loss(params, x):
    # Different curvature per parameter so every optimizer path is exercised.
    return ((params["w"] * x) ** 2).sum() + (ff.tanh(params["b"]) * x[0]).sum()


def numpy_grads(params, x):
    return {"w": 2 * params["w"] * x * x, "b": (1 - np.tanh(params["b"]) ** 2) * x[0]}


def numpy_reference(name, params, x, steps, lr=0.05, momentum=0.9, wd=0.01,
                    b1=0.9, b2=0.999, eps=1e-8):
    p = {k: v.copy() for k, v in params.items()}
    state = {k: np.zeros_like(v) for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, steps + 1):
        g = numpy_grads(p, x)
        for k in p:
            if name == "sgd":
                p[k] = p[k] - lr * g[k]
            elif name in ("momentum", "nesterov"):
                state[k] = momentum * state[k] + g[k]
                step = g[k] + momentum * state[k] if name == "nesterov" else state[k]
                p[k] = p[k] - lr * step
            else:  # adam / adamw
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
                mhat, vhat = m[k] / (1 - b1 ** t), v2[k] / (1 - b2 ** t)
                decay = lr * wd * p[k] if name == "adamw" else 0.0
                p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + eps) - decay
    return p


OPTIMIZERS = {
    "sgd": lambda: ff.optim.SGD(0.05),
    "momentum": lambda: ff.optim.SGD(0.05, momentum=0.9),
    "nesterov": lambda: ff.optim.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: ff.optim.Adam(0.05),
    "adamw": lambda: ff.optim.AdamW(0.05, weight_decay=0.01),
}


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    return params, rng.normal(size=(3, 4))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_step_matches_numpy_reference(name, problem):
    params, x = problem
    expected = numpy_reference(name, params, x, steps=7)
    p = {k: v.copy() for k, v in params.items()}
    step = ff.compile_train_step(quadratic_loss, OPTIMIZERS[name]())
    state = step.init(p)
    for _ in range(7):
        step(p, state, x)
    for k in p:
        np.testing.assert_allclose(p[k], expected[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_step_matches_torch_optim(name, problem):
    torch = pytest.importorskip("torch", reason="torch is the optional optimizer oracle")
    params, x = problem
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    make = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
        "momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        "nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.01),
    }[name]
    opt = make(list(tp.values()))
    tx = torch.tensor(x)
    p = {k: v.copy() for k, v in params.items()}
    step = ff.compile_train_step(quadratic_loss, OPTIMIZERS[name]())
    state = step.init(p)
    for _ in range(5):
        opt.zero_grad()
        loss = ((tp["w"] * tx) ** 2).sum() + (torch.tanh(tp["b"]) * tx[0]).sum()
        loss.backward()
        opt.step()
        ff_loss = step(p, state, x)
        assert np.isclose(ff_loss, loss.item(), rtol=1e-12)
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_step_updates_callers_arrays_in_place(problem):
    params, x = problem
    p = {k: v.copy() for k, v in params.items()}
    ids = {k: id(v) for k, v in p.items()}
    step = ff.compile_train_step(quadratic_loss, ff.optim.Adam(0.1))
    state = step.init(p)
    count_before = state["count"]
    first = step(p, state, x)
    second = step(p, state, x)
    assert {k: id(v) for k, v in p.items()} == ids
    assert state["count"] is count_before and int(state["count"]) == 2
    assert second < first


def test_whole_step_is_one_graph(problem):
    params, x = problem
    step = ff.compile_train_step(quadratic_loss, ff.optim.SGD(0.1, momentum=0.5))
    p = {k: v.copy() for k, v in params.items()}
    graph = step.lower(p, step.init(p), x).graph
    names = [graph.nodes[i].attr("name") for i in graph.inputs]
    assert names == ["params.b", "params.w", "opt_state.count", "opt_state.velocity.b", "opt_state.velocity.w",
                     "hyperparameters.lr", "hyperparameters.momentum", "hyperparameters.weight_decay", "x"]
    assert len(graph.outputs) == 1 + 2 + 1 + 2  # loss, params, count, velocities
    assert any(n.role is Role.ADJOINT for n in graph.nodes)


def test_non_contiguous_or_readonly_params_are_rejected(problem):
    params, x = problem
    step = ff.compile_train_step(quadratic_loss, ff.optim.SGD(0.1))
    p = {"w": np.asfortranarray(params["w"]), "b": params["b"].copy()}
    p["w"] = params["w"].T.copy().T  # a transposed view: not C-contiguous
    with pytest.raises(ff.ArgumentError, match="params.w.*C-contiguous"):
        step(p, step.init(params), x)
    frozen = params["b"].copy()
    frozen.flags.writeable = False
    with pytest.raises(ff.ArgumentError, match="params.b"):
        step({"w": params["w"].copy(), "b": frozen}, step.init(params), x)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="Nesterov"):
        ff.optim.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError):
        ff.optim.Adam(lr=-1.0)


@pytest.mark.parametrize("optimizer, state, message", [
    (lambda: ff.optim.Adam(0.1), {}, r"Adam: opt_state is missing 'count', 'm', 'v' \(it has no keys\)"),
    (lambda: ff.optim.Adam(0.1), {"m": None, "count": np.zeros((), np.int64)}, "missing 'v'"),
    (lambda: ff.optim.Adam(0.1), [], "Adam: opt_state must be a dict"),
    (lambda: ff.optim.SGD(0.1, momentum=0.5), {}, "SGD: opt_state is missing 'count', 'velocity'"),
    (lambda: ff.optim.SGD(0.1, momentum=0.5),
     {"count": np.zeros((), np.int64), "velocity": {"w": np.zeros(3, np.float32)}},
     r"opt_state\['velocity'\] must have the structure of the parameters"),
])
def test_malformed_optimizer_state_names_what_is_missing(problem, optimizer, state, message):
    """A hand-made or stale opt_state fails with the optimizer, the missing part and the
    fix, not with a bare KeyError from inside the update."""
    params, x = problem
    p = {k: v.copy() for k, v in params.items()}
    step = ff.compile_train_step(quadratic_loss, optimizer())
    with pytest.raises(ValueError, match=message) as info:
        step(p, state, x)
    assert "init(params)" in str(info.value)


def test_tied_parameters_are_never_corrupted_by_donation():
    """Two leaves naming one array: neither backend writes a result over memory another
    argument still reads; each new value is copied back in order, the last one stays."""
    w = np.array([0.3, -0.1, 0.9])
    tied = w.copy()
    step = ff.compile_train_step(lambda p: (p["a"] * p["a"]).sum() + (p["b"] * 2.0).sum(), ff.optim.SGD(0.1))
    step({"a": tied, "b": tied}, {"count": np.zeros((), np.int64)})
    np.testing.assert_allclose(tied, w - 0.1 * 2.0)
