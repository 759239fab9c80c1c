"""ff.nn losses against NumPy (float64) and, where installed, PyTorch; stability for logits of 1e4."""
import numpy as np
import pytest
from scipy.special import expit, log_softmax, softmax

import ffcompile as ff
from ffcompile import nn

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")

B, C = 6, 5


def run(fn, *args):
    return ff.compile(fn)(*args)


def value_and_grad(fn, *args):
    return ff.compile(ff.value_and_grad(fn))(*args)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(B, C))
    labels = rng.integers(0, C, B)
    probs = softmax(rng.normal(size=(B, C)), axis=-1)
    return logits, labels, np.eye(C)[labels], probs


def _np_cross_entropy(logits, targets):
    return -(targets * log_softmax(logits, axis=-1)).sum(-1)


# --------------------------------------------------------------------------- mse


@pytest.mark.parametrize("shape", [(B,), (B, 3), (B, 2, 3)])
def test_mse_is_half_squared_norm_per_example_mean_over_batch(shape):
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=shape), rng.normal(size=shape)
    per_example = 0.5 * ((pred - target) ** 2).reshape(B, -1).sum(-1)
    value, grad = value_and_grad(nn.mse, pred, target)
    np.testing.assert_allclose(value, per_example.mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, (pred - target) / B, rtol=1e-13)
    np.testing.assert_allclose(run(lambda p, t: nn.mse(p, t, "sum"), pred, target), per_example.sum(), rtol=1e-13)
    np.testing.assert_allclose(run(lambda p, t: nn.mse(p, t, "none"), pred, target), per_example, rtol=1e-13)


def test_mse_refuses_to_broadcast():
    with pytest.raises(ff.ShapeError, match=r"mse: .*f64\[6,1\].*f64\[6\]"):
        run(nn.mse, np.zeros((B, 1)), np.zeros(B))


# --------------------------------------------------------------------------- cross-entropy and nll


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_cross_entropy_integer_labels(data, label_dtype):
    logits, labels, onehot, _ = data
    value, grad = value_and_grad(nn.cross_entropy, logits, labels.astype(label_dtype))
    np.testing.assert_allclose(value, _np_cross_entropy(logits, onehot).mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, (softmax(logits, -1) - onehot) / B, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["onehot", "probs"])
def test_cross_entropy_float_targets(data, kind):
    logits, _, onehot, probs = data
    targets = onehot if kind == "onehot" else probs
    value, grad = value_and_grad(nn.cross_entropy, logits, targets)
    np.testing.assert_allclose(value, _np_cross_entropy(logits, targets).mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, (softmax(logits, -1) - targets) / B, rtol=1e-12, atol=1e-15)
    per_example = run(lambda z, t: nn.cross_entropy(z, t, reduction="none"), logits, targets)
    np.testing.assert_allclose(per_example, _np_cross_entropy(logits, targets), rtol=1e-13)


def test_integer_and_onehot_labels_give_the_same_graph_result(data):
    logits, labels, onehot, _ = data
    as_ints = run(nn.cross_entropy, logits.astype(np.float32), labels.astype(np.int32))
    as_onehot = run(nn.cross_entropy, logits.astype(np.float32), onehot.astype(np.float32))
    assert as_ints.dtype == np.float32
    np.testing.assert_allclose(as_ints, as_onehot, rtol=1e-6)


def test_cross_entropy_builds_one_hot_from_iota(data):
    logits, labels, _, _ = data
    ir = ff.compile(nn.cross_entropy).lower(logits, labels.astype(np.int32)).ir
    for op in ("iota", "eq", "convert", "softmax_cross_entropy"):
        assert f"= {op} " in ir or f"= {op}\n" in ir, op


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]])
    labels = np.array([1, 2])
    value, grad = value_and_grad(nn.cross_entropy, logits, labels)
    np.testing.assert_allclose(value, (1e4 + np.log(2)) / 2, rtol=1e-13)
    np.testing.assert_allclose(grad, np.array([[1, -1, 0], [0, 0.5, -0.5]]) / 2, atol=1e-15)
    value32 = run(nn.cross_entropy, logits.astype(np.float32), labels.astype(np.int32))
    assert np.isfinite(value32) and value32 == pytest.approx((1e4 + np.log(2)) / 2, rel=1e-6)


def test_nll_loss(data):
    logits, labels, onehot, probs = data
    log_probs = log_softmax(logits, axis=-1)
    want = -log_probs[np.arange(B), labels]
    value, grad = value_and_grad(nn.nll_loss, log_probs, labels)
    np.testing.assert_allclose(value, want.mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, -onehot / B, rtol=1e-13)
    np.testing.assert_allclose(run(lambda z, t: nn.nll_loss(z, t, "sum"), log_probs, onehot), want.sum(), rtol=1e-13)
    composed = run(lambda z, t: nn.nll_loss(ff.log_softmax(z), t), logits, labels)
    np.testing.assert_allclose(composed, run(nn.cross_entropy, logits, labels), rtol=1e-13)


@pytest.mark.parametrize("labels, match", [
    (np.zeros((B, 1), np.int32), r"integer labels must have shape \[6\]"),
    (np.zeros((B, C + 1)), r"target probabilities must have the shape"),
    (np.zeros(B, bool), r"integer labels"),
])
def test_bad_labels_are_clear_errors(data, labels, match):
    with pytest.raises(ff.ShapeError, match="cross_entropy: " + match):
        run(nn.cross_entropy, data[0], labels)


def test_unknown_reduction(data):
    with pytest.raises(ValueError, match="reduction must be"):
        run(lambda z, t: nn.cross_entropy(z, t, reduction="avg"), data[0], data[1])


# --------------------------------------------------------------------------- binary cross-entropy


def _np_bce(z, t):
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def test_bce_with_logits_matches_numpy_and_gradient_is_sigmoid_minus_target():
    rng = np.random.default_rng(2)
    z, t = rng.normal(scale=4.0, size=(B, 3)), rng.uniform(size=(B, 3))
    z[0, 0] = 0.0  # the kink of max(z, 0) and |z|: the gradient must still be sigma(0) - t
    value, grad = value_and_grad(nn.binary_cross_entropy_with_logits, z, t)
    np.testing.assert_allclose(value, _np_bce(z, t).mean(), rtol=1e-13)
    np.testing.assert_allclose(grad, (expit(z) - t) / z.size, rtol=1e-12, atol=1e-16)
    none = run(lambda z, t: nn.binary_cross_entropy_with_logits(z, t, "none"), z, t)
    np.testing.assert_allclose(none, _np_bce(z, t), rtol=1e-12)


def test_bce_with_logits_is_stable_and_precise_for_huge_logits():
    z = np.array([1e4, -1e4, 1e4, -1e4, 30.0, -30.0])
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    per_element = run(lambda z, t: nn.binary_cross_entropy_with_logits(z, t, "none"), z, t)
    # exp(-30) is far below float64's epsilon relative to 30: the form must not cancel.
    np.testing.assert_allclose(per_element, [0.0, 0.0, 1e4, 1e4, np.exp(-30.0), np.exp(-30.0)], rtol=1e-12)
    _, grad = value_and_grad(nn.binary_cross_entropy_with_logits, z.astype(np.float32), t.astype(np.float32))
    assert np.all(np.isfinite(grad))


def test_bce_refuses_to_broadcast():
    with pytest.raises(ff.ShapeError, match="binary_cross_entropy_with_logits"):
        run(nn.binary_cross_entropy_with_logits, np.zeros((B, 1)), np.zeros(B))


# --------------------------------------------------------------------------- PyTorch oracle


def test_losses_match_torch(data):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional loss oracle")
    F = torch.nn.functional
    logits, labels, onehot, probs = data
    T = torch.from_numpy
    checks = [
        (nn.cross_entropy, (logits, labels), F.cross_entropy(T(logits), T(labels))),
        (nn.cross_entropy, (logits, probs), F.cross_entropy(T(logits), T(probs))),
        (nn.nll_loss, (log_softmax(logits, -1), labels), F.nll_loss(T(log_softmax(logits, -1)), T(labels))),
        (nn.binary_cross_entropy_with_logits, (logits, probs),
         F.binary_cross_entropy_with_logits(T(logits), T(probs))),
        # torch's MSELoss averages every element and has no 0.5
        (nn.mse, (logits, probs), 0.5 * C * F.mse_loss(T(logits), T(probs))),
    ]
    for loss, args, want in checks:
        np.testing.assert_allclose(run(loss, *args), want.item(), rtol=1e-12, err_msg=loss.__name__)
    z = T(logits).requires_grad_()
    F.cross_entropy(z, T(labels)).backward()
    np.testing.assert_allclose(value_and_grad(nn.cross_entropy, logits, labels)[1], z.grad.numpy(), rtol=1e-12,
                               atol=1e-16)
