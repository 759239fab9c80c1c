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


def _shared_params():
    """Two 2-D parameters that share memory three ways: one array twice, and overlapping views."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((6, 3))
    return [({"p": a, "q": a}, "params.p, params.q"),
            ({"p": a[0:3], "q": a[2:5]}, "params.p, params.q"),
            ({"p": a[0:3], "q": a[3:6], "r": a[1:4]}, "params.p, params.q, params.r")]


def shared_loss(params, x):
    return sum((ff.tanh(v) * x).sum() for v in params.values())


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("optimizer", [lambda: ff.optim.SGD(0.1), lambda: ff.optim.Adam(0.1)])
def test_params_sharing_memory_are_rejected_and_left_alone(case, optimizer):
    """The step writes every update in place: parameters sharing memory would silently keep the
    last one written (the first parameter's update lost). Refused before anything runs, on the
    first call, after a call with separate arrays (the fast path), and by bind."""
    params, names = _shared_params()[case]
    x = np.linspace(0.5, 1.5, 3)
    step = ff.compile_train_step(shared_loss, optimizer())
    separate = {k: v.copy() for k, v in params.items()}
    state = step.init(separate)
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ff.ArgumentError, match=f"^{names} share memory"):
        step(params, step.init(params), x)
    step(separate, state, x)  # compiled, then the same signature through the fast path
    with pytest.raises(ff.ArgumentError, match=f"^{names} share memory"):
        step(params, step.init(params), x)
    with pytest.raises(ff.ArgumentError, match=f"^{names} share memory"):
        step.bind(params, step.init(params), x)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k])


def test_adjacent_params_of_one_buffer_train():
    """Views of one buffer that do not overlap are separate parameters: they train as copies do."""
    rng = np.random.default_rng(6)
    buffer = rng.standard_normal((6, 3))
    views = {"p": buffer[0:3], "q": buffer[3:6]}
    copies = {k: v.copy() for k, v in views.items()}
    x = np.linspace(0.5, 1.5, 3)
    step = ff.compile_train_step(shared_loss, ff.optim.SGD(0.1))
    for params in (views, copies):
        state = step.init(params)
        for _ in range(3):
            step(params, state, x)
    for k in views:
        np.testing.assert_array_equal(views[k], copies[k])


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
