"""nn.Softmax, nn.LogSoftmax and nn.LayerNorm against torch.nn (forward and gradients, float64),
and the README's claim: a module for every activation of the ff. library."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import functions

pytestmark = pytest.mark.usefixtures("backend")

# The ff. functions that are not activations (array and reduction functions).
NOT_ACTIVATIONS = {"abs", "argmax", "argmin", "clip", "concatenate", "convert", "cos", "einsum", "erf", "exp",
                   "expm1", "floor", "floor_divide", "log", "log1p", "max", "maximum", "mean", "minimum", "power",
                   "remainder", "sign", "sin", "sqrt", "stack", "stop_gradient", "sum", "take", "where", "logsumexp",
                   "square"}


def test_every_activation_function_has_a_module():
    modules = {name.lower() for name in ff.nn.__all__}
    missing = [f for f in functions.__all__
               if f not in NOT_ACTIVATIONS and f.replace("_", "") not in modules]
    assert not missing


def torch_or_skip():
    return pytest.importorskip("torch", reason="torch.nn is the oracle for these modules")


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_softmax_modules_match_torch(name, axis):
    torch = torch_or_skip()
    x = np.random.default_rng(0).normal(size=(3, 5, 4)) * 3
    module = getattr(ff.nn, name)(axis=axis)
    assert module.init() == {} and repr(module) == f"{name}(axis={axis})"
    expected = getattr(torch.nn, name)(dim=axis)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(module({}, x), expected, rtol=1e-12, atol=1e-14)
    weights = np.random.default_rng(1).normal(size=x.shape)
    grad = ff.compile(ff.grad(lambda x: (module({}, x) * weights).sum()))(x)
    tx = torch.tensor(x, requires_grad=True)
    (getattr(torch.nn, name)(dim=axis)(tx) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, normalized, affine", [((4, 6), 6, True), ((2, 3, 4, 5), (4, 5), True),
                                                       ((3, 7), (7,), False)])
def test_layernorm_matches_torch_forward_and_gradients(shape, normalized, affine):
    torch = torch_or_skip()
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape) * 2 + 0.5
    module = ff.nn.LayerNorm(normalized, eps=1e-4, elementwise_affine=affine)
    reference = torch.nn.LayerNorm(normalized, eps=1e-4, elementwise_affine=affine, dtype=torch.float64)
    params = module.init(dtype="float64")
    if affine:  # torch's init: ones and zeros
        np.testing.assert_array_equal(params["weight"], reference.weight.detach().numpy())
        np.testing.assert_array_equal(params["bias"], reference.bias.detach().numpy())
        params = {"weight": rng.normal(size=params["weight"].shape), "bias": rng.normal(size=params["bias"].shape)}
        with torch.no_grad():
            reference.weight.copy_(torch.tensor(params["weight"]))
            reference.bias.copy_(torch.tensor(params["bias"]))
    else:
        assert params == {}
    weights = rng.normal(size=shape)
    tx = torch.tensor(x, requires_grad=True)
    out = reference(tx)
    np.testing.assert_allclose(module(params, x), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    (out * torch.tensor(weights)).sum().backward()
    grads = ff.compile(ff.grad(lambda p, x: (module(p, x) * weights).sum(), argnums=(0, 1)))(params, x)
    np.testing.assert_allclose(grads[1], tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    if affine:
        np.testing.assert_allclose(grads[0]["weight"], reference.weight.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(grads[0]["bias"], reference.bias.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_layernorm_in_a_model_trains_in_float32():
    model = ff.nn.Sequential(ff.nn.Linear(4, 8), ff.nn.LayerNorm(8), ff.nn.ReLU(), ff.nn.Linear(8, 3),
                             ff.nn.LogSoftmax())
    params = model.init(0)
    assert params["layers"][1]["weight"].dtype == np.float32
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(16, 4)).astype(np.float32), rng.integers(0, 3, 16).astype(np.int32)
    step = ff.compile_train_step(lambda p, x, y: ff.nn.nll_loss(model(p, x), y), ff.optim.Adam(0.05))
    state = step.init(params)
    losses = [float(step(params, state, x, labels)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_layernorm_rejects_bad_shapes_clearly():
    with pytest.raises(ValueError, match="normalized_shape must be positive integers"):
        ff.nn.LayerNorm((4, 0))
    with pytest.raises(ValueError, match="eps must be > 0"):
        ff.nn.LayerNorm(4, eps=0.0)
    module = ff.nn.LayerNorm((3, 4))
    with pytest.raises(ValueError, match=r"last axes must be \(3, 4\), got an input of shape \(2, 4, 3\)"):
        module(module.init(), np.ones((2, 4, 3), np.float32))
