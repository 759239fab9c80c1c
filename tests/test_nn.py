"""ff.nn modules: parameter trees, initializer statistics, traced models against NumPy, module paths."""
import math

import numpy as np
import pytest
from scipy.special import erf, expit

import ffcompile as ff
from ffcompile import nn
from ffcompile.tree import tree_flatten, tree_map

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")


def _softplus(x):
    return np.logaddexp(0.0, x)


# (module, NumPy reference of the same function)
ACTIVATIONS = [
    (nn.Sigmoid(), expit),
    (nn.Tanh(), np.tanh),
    (nn.Step(), lambda x: (x > 0).astype(x.dtype)),
    (nn.Softplus(), _softplus),
    (nn.ReLU(), lambda x: np.maximum(x, 0.0)),
    (nn.Softsign(), lambda x: x / (1 + np.abs(x))),
    (nn.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    (nn.LogSigmoid(), lambda x: -_softplus(-x)),
    (nn.SiLU(), lambda x: x * expit(x)),
    (nn.Swish(), lambda x: x * expit(x)),
    (nn.Sinc(), lambda x: np.sinc(x / np.pi)),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.Mish(), lambda x: x * np.tanh(_softplus(x))),
    (nn.GELU(), lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    (nn.GELU("sigmoid"), lambda x: x * expit(1.702 * x)),
]


def _x(shape, seed=1, scale=2.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


# --------------------------------------------------------------------------- parameter trees


def test_linear_params_tree_and_dtype():
    p = nn.Linear(3, 5).init(0)
    assert set(p) == {"w", "b"}
    assert p["w"].shape == (3, 5) and p["b"].shape == (5,)
    assert p["w"].dtype == np.float32 and not p["b"].any()
    assert set(nn.Linear(3, 5, bias=False).init(0)) == {"w"}
    assert nn.Linear(3, 5).init(0, dtype="float64")["w"].dtype == np.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(3, 5).init(0, dtype="int32")


def test_sequential_and_mlp_trees_follow_paths():
    model = nn.mlp([4, 8, 8, 2], nn.PReLU)
    p = model.init(0)
    assert len(p["layers"]) == 3
    assert p["layers"][0]["linear"]["w"].shape == (4, 8)
    assert p["layers"][1]["act"]["slope"].shape == (1,)
    assert "act" not in p["layers"][2] and model[2].act is None  # no output activation asked for
    types = model.param_types()
    assert tree_map(lambda t: t.shape, types) == tree_map(np.shape, p)


def test_init_is_seeded():
    model = nn.mlp([4, 8, 2], nn.Tanh)
    a, b, c = model.init(3), model.init(3), model.init(4)
    assert all(np.array_equal(x, y) for x, y in zip(tree_flatten(a)[0], tree_flatten(b)[0]))
    assert not np.array_equal(a["layers"][0]["linear"]["w"], c["layers"][0]["linear"]["w"])


@pytest.mark.parametrize("name, variance, uniform_limit", [
    ("he_normal", lambda i, o: 2 / i, None),
    ("he_uniform", lambda i, o: 2 / i, lambda i, o: math.sqrt(6 / i)),
    ("glorot_normal", lambda i, o: 2 / (i + o), None),
    ("glorot_uniform", lambda i, o: 2 / (i + o), lambda i, o: math.sqrt(6 / (i + o))),
])
def test_initializer_statistics(name, variance, uniform_limit):
    fan_in, fan_out = 400, 300
    w = nn.Linear(fan_in, fan_out, init=name).init(0, dtype="float64")["w"]
    want = variance(fan_in, fan_out)
    assert abs(w.var() / want - 1) < 0.03
    assert abs(w.mean()) < 4 * math.sqrt(want / w.size)
    if uniform_limit is not None:
        limit = uniform_limit(fan_in, fan_out)
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit


def test_initializer_lookup():
    assert nn.init.get("kaiming_normal") is nn.init.he_normal
    assert nn.init.get("xavier_uniform") is nn.init.glorot_uniform
    assert not nn.init.zeros(None, (2, 3)).any()
    with pytest.raises(ValueError, match="unknown initializer 'he'"):
        nn.Linear(2, 2, init="he")


def test_bad_structures_are_clear_errors():
    with pytest.raises(ValueError, match="at least one"):
        nn.Sequential()
    with pytest.raises(TypeError, match="item 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")

    class Twice(nn.Module):
        def __init__(self):
            self.a = self.b = nn.Linear(2, 2)

    with pytest.raises(ValueError, match="stored at both 'a' and 'b'"):
        Twice().init(0)


# --------------------------------------------------------------------------- traced models vs NumPy


def _np_linear(p, x):
    return x @ p["w"] + p["b"]


@pytest.mark.parametrize("act, reference", ACTIVATIONS, ids=lambda a: repr(a) if isinstance(a, nn.Module) else "")
def test_sequential_matches_numpy(act, reference):
    model = nn.Sequential(nn.Linear(5, 7), act, nn.Linear(7, 3))
    p = model.init(0, dtype="float64")
    x = _x((6, 5))
    out = ff.compile(model)(p, x)
    layers = p["layers"]
    want = _np_linear(layers[2], reference(_np_linear(layers[0], x)))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-14)


def test_prelu_slope_is_learnable():
    model = nn.Sequential(nn.Linear(3, 4), nn.PReLU(4, init=0.1))
    p = model.init(0, dtype="float64")
    x = _x((5, 3))
    h = _np_linear(p["layers"][0], x)
    np.testing.assert_allclose(model(p, x), np.where(h > 0, h, 0.1 * h), rtol=1e-12)
    grads = ff.grad(lambda p, x: model(p, x).sum())(p, x)
    np.testing.assert_allclose(grads["layers"][1]["slope"], np.where(h > 0, 0.0, h).sum(0), rtol=1e-12)


class Fusion(nn.Module):
    """Two inputs of different widths, a projection shared by both, joined, then a head."""

    def __init__(self):
        self.left = nn.Dense(4, 6, nn.ReLU())
        self.right = nn.Dense(3, 6, nn.Tanh())
        self.shared = nn.Dense(6, 5, nn.Tanh())
        self.head = nn.Sequential(nn.Linear(10, 8), nn.GELU("tanh"), nn.Linear(8, 2))

    def forward(self, params, a, b):
        u = self.shared(params["shared"], self.left(params["left"], a))
        v = self.shared(params["shared"], self.right(params["right"], b))
        return self.head(params["head"], ff.concatenate([u, v * u], axis=-1))


def _np_fusion(p, a, b):
    shared = lambda h: np.tanh(_np_linear(p["shared"]["linear"], h))  # noqa: E731
    u = shared(np.maximum(_np_linear(p["left"]["linear"], a), 0))
    v = shared(np.tanh(_np_linear(p["right"]["linear"], b)))
    head = p["head"]["layers"]
    h = _np_linear(head[0], np.concatenate([u, v * u], axis=-1))
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    return _np_linear(head[2], h)


@pytest.fixture
def fusion():
    model = Fusion()
    return model, model.init(0, dtype="float64"), _x((5, 4), 2), _x((5, 3), 3)


def test_dag_model_has_one_subtree_per_module_and_matches_numpy(fusion):
    model, p, a, b = fusion
    assert set(p) == {"left", "right", "shared", "head"}
    out = ff.compile(model)(p, a, b)
    np.testing.assert_allclose(out, _np_fusion(p, a, b), rtol=1e-12)


def test_dag_gradient_sums_over_both_uses_of_the_shared_module(fusion):
    model, p, a, b = fusion

    def loss(p, a, b):
        return (model(p, a, b) ** 2).sum()

    grads = ff.compile(ff.grad(loss))(p, a, b)
    direction = tree_map(lambda w: np.random.default_rng(w.size).normal(size=w.shape), p)
    step = lambda s: tree_map(lambda w, d: w + s * d, p, direction)  # noqa: E731
    eps = 1e-6
    numeric = ((_np_fusion(step(eps), a, b) ** 2).sum() - (_np_fusion(step(-eps), a, b) ** 2).sum()) / (2 * eps)
    analytic = sum(float((g * d).sum()) for g, d in zip(tree_flatten(grads)[0], tree_flatten(direction)[0]))
    assert analytic == pytest.approx(numeric, rel=1e-6)
    assert np.abs(grads["shared"]["linear"]["w"]).sum() > 0


def test_module_called_on_arrays_compiles_itself(fusion):
    model, p, a, b = fusion
    np.testing.assert_allclose(model(p, a, b), _np_fusion(p, a, b), rtol=1e-12)
    np.testing.assert_allclose(model.apply(p, a, b), _np_fusion(p, a, b), rtol=1e-12)


# --------------------------------------------------------------------------- module paths in locations


def test_module_paths_appear_in_ir_locations(fusion):
    model, p, a, b = fusion
    ir = ff.compile(model).lower(p, a, b).ir
    for path in ("@left.linear", "@left.act", "@right.act", "@shared.linear", "@shared.act",
                 "@head.layers.0", "@head.layers.1", "@head.layers.2"):
        assert path + ")" in ir, path
    concat = next(line for line in ir.splitlines() if "= concat" in line)
    assert "@" not in concat  # composed in Fusion.forward itself, which is the root
    assert str(ff.parse_ir(ir)) == ir


def test_module_paths_survive_autodiff():
    model = nn.mlp([3, 4, 4, 2], nn.Tanh)
    p, x = model.init(0), _x((2, 3)).astype(np.float32)
    ir = ff.compile(ff.value_and_grad(lambda p, x: model(p, x).sum())).lower(p, x).ir
    assert "@layers.1.act)" in ir
    assert any(" adjoint loc(" in line and "@layers.1.act)" in line for line in ir.splitlines())


def test_scope_is_popped_after_an_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))
    p = model.init(0)
    with pytest.raises(ff.ShapeError, match="matmul"):
        ff.compile(model).lower(p, np.zeros((2, 3), np.float32))
    # Called on its own, the first layer is no longer inside the failed Sequential.
    ir = ff.compile(lambda p, x: model[0](p, x)).lower(p["layers"][0], np.zeros((2, 3), np.float32)).ir
    assert "@layers" not in ir and "matmul" in ir
