"""Gradients against PyTorch autograd (float64, 1e-10 relative): functions, losses, models.

Models are written with ff functions and matmuls directly, so this oracle
does not depend on ff.nn.
"""
import numpy as np
import pytest
from samples import FUNCTION_CASES, function_case_params, make_function_case

import ffcompile as ff
from ffcompile.ir import lang as L

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")

torch = pytest.importorskip("torch", reason="torch is the optional gradient oracle (extra 'oracles')")
F = torch.nn.functional

RTOL = 1e-10


def torch_gelu_sigmoid(x):
    return x * torch.sigmoid(1.702 * x)


# TORCH[name][k] computes what FUNCTION_CASES[name][k].fn does (None: not differentiable).
TORCH = {
    "abs": [torch.abs],
    "concatenate": [lambda a, b: torch.cat([a, b], dim=1)],
    "convert": [lambda x: x.to(torch.float64), None],
    "cos": [torch.cos],
    "elu": [F.elu, lambda x: F.elu(x, alpha=0.5)],
    "erf": [torch.erf],
    "exp": [torch.exp],
    "expm1": [torch.expm1],
    "gelu": [F.gelu, lambda x: F.gelu(x, approximate="tanh"), torch_gelu_sigmoid],
    "leaky_relu": [F.leaky_relu, lambda x: F.leaky_relu(x, 0.2)],
    "log": [torch.log],
    "log1p": [torch.log1p],
    "log_sigmoid": [F.logsigmoid],
    "log_softmax": [lambda x: F.log_softmax(x, dim=-1), lambda x: F.log_softmax(x, dim=0)],
    "logsumexp": [lambda x: torch.logsumexp(x, dim=-1), lambda x: torch.logsumexp(x, dim=0, keepdim=True)],
    "max": [torch.max, lambda x: torch.max(x, dim=-1, keepdim=True).values],
    "maximum": [torch.maximum],
    "mean": [torch.mean, lambda x: torch.mean(x, dim=0)],
    "minimum": [torch.minimum],
    "mish": [F.mish],
    "prelu": [lambda x, a: torch.where(x > 0, x, a * x)],  # F.prelu puts channels on axis 1
    "relu": [F.relu],
    "sigmoid": [torch.sigmoid],
    "sign": [torch.sign],
    "floor": [None, torch.floor],
    "silu": [F.silu],
    "sin": [torch.sin],
    "sinc": [lambda x: torch.sinc(x / torch.pi)],
    "softmax": [lambda x: F.softmax(x, dim=-1), lambda x: F.softmax(x, dim=0)],
    "softplus": [F.softplus],
    "softsign": [F.softsign],
    "sqrt": [torch.sqrt],
    "square": [torch.square],
    "step": [lambda x: (x > 0).to(x.dtype) + 0.0 * x],  # torch has no gradient for heaviside
    "stop_gradient": [None],
    "sum": [torch.sum, lambda x: torch.sum(x, dim=(0, -1), keepdim=True)],
    "swish": [F.silu],
    "tanh": [torch.tanh],
    "where": [torch.where],
    "argmax": [None, None],
    "argmin": [None],
    "clip": [lambda x: torch.clamp(x, -0.5, 0.7), lambda x: torch.clamp(x, max=0.2)],
    "einsum": [lambda a, b: torch.einsum("bij,bjk->bik", a, b), lambda a, b: torch.einsum("ij,kj", a, b),
               lambda a: torch.einsum("ijk->ki", a)],
    "floor_divide": [None, None],
    "remainder": [None, None],
    "power": [torch.pow, None],
    "stack": [lambda a, b: torch.stack([a, b]), lambda a, b: torch.stack([a, b], dim=-1)],
    "take": [lambda x, i: x[i], lambda x, i: x[..., i], lambda x, i: x[..., i, :]],
}


def torch_grads(fn, args, argnums):
    """Gradients of fn(*args) (a scalar) with respect to args[argnums], by torch autograd."""
    tensors = [torch.tensor(a) for a in args]
    for n in argnums:
        tensors[n].requires_grad_(True)
    fn(*tensors).backward()
    return [tensors[n].grad.numpy() for n in argnums]


def ff_grads(fn, args, argnums):
    return ff.compile(ff.grad(fn, argnums=tuple(argnums)))(*args)


def assert_close(ours, theirs):
    """Agreement to RTOL relative to the largest entry (entries near 0 are compared absolutely)."""
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * max(np.max(np.abs(b), initial=0.0), 1e-300))


def test_every_differentiable_function_has_a_torch_equivalent():
    for name, cases in FUNCTION_CASES.items():
        assert len(TORCH.get(name, [])) == len(cases), name
        for case, equivalent in zip(cases, TORCH[name]):
            assert (equivalent is None) == (not case.differentiable), name


@pytest.mark.parametrize("name, k", function_case_params(differentiable_only=True))
def test_function_gradients_match_torch(name, k):
    case, args = make_function_case(name, k)
    argnums = [n for n, a in enumerate(args) if np.asarray(a).dtype == np.float64]
    weights = np.random.default_rng(k).normal(size=np.shape(case.reference(*args)))

    def ours(*a):
        return (case.fn(*a) * weights).sum()

    def theirs(*a):
        return (TORCH[name][k](*a) * torch.tensor(weights)).sum()

    assert_close(ff_grads(ours, args, argnums), torch_grads(theirs, args, argnums))


def test_softmax_cross_entropy_matches_torch():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)) * 3
    targets = np.exp(rng.normal(size=(6, 5)))
    targets /= targets.sum(-1, keepdims=True)
    weights = rng.normal(size=6)

    def ours(logits, targets):
        return (L.softmax_cross_entropy(logits, targets) * weights).sum()

    def theirs(logits, targets):
        return (F.cross_entropy(logits, targets, reduction="none") * torch.tensor(weights)).sum()

    assert_close(ff_grads(ours, (logits, targets), [0, 1]), torch_grads(theirs, (logits, targets), [0, 1]))


def test_cross_entropy_with_integer_labels_matches_torch():
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(8, 4)), rng.integers(0, 4, size=8)
    onehot = np.eye(4)[labels]

    def ours(logits):
        return L.softmax_cross_entropy(logits, onehot).mean()

    def theirs(logits):
        return F.cross_entropy(logits, torch.tensor(labels))

    assert_close(ff_grads(ours, (logits,), [0]), torch_grads(theirs, (logits,), [0]))


# --------------------------------------------------------------------------- models


def mlp_params(rng, sizes):
    return [(rng.normal(size=(m, n)) / np.sqrt(m), rng.normal(size=n) * 0.1) for m, n in zip(sizes, sizes[1:])]


def flat(params):
    return [a for layer in params for a in layer]


def test_mlp_gradients_match_torch():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(16, 8)), rng.integers(0, 5, size=16)
    onehot = np.eye(5)[labels]
    params = flat(mlp_params(rng, [8, 32, 32, 5]))

    def ours(x, w1, b1, w2, b2, w3, b3):
        h = ff.tanh(x @ w1 + b1)
        h = ff.gelu(h @ w2 + b2, approximate="tanh")
        return L.softmax_cross_entropy(h @ w3 + b3, onehot).mean()

    def theirs(x, w1, b1, w2, b2, w3, b3):
        h = torch.tanh(x @ w1 + b1)
        h = F.gelu(h @ w2 + b2, approximate="tanh")
        return F.cross_entropy(h @ w3 + b3, torch.tensor(labels))

    args, argnums = (x, *params), list(range(7))
    assert_close(ff_grads(ours, args, argnums), torch_grads(theirs, args, argnums))


def test_dag_of_two_towers_matches_torch():
    rng = np.random.default_rng(4)
    image, text = rng.normal(size=(6, 10)), rng.normal(size=(6, 7))
    target = rng.normal(size=(6, 3))
    wi, wt = rng.normal(size=(10, 8)) / 3, rng.normal(size=(7, 4)) / 3
    wj, shared = rng.normal(size=(12, 3)) / 3, rng.normal(size=(8, 8)) / 3

    def tower_join(image, text, wi, wt, wj, shared, target, act, silu, cat):
        a = act(image @ wi)
        a = a + silu(a @ shared)  # a shared weight used twice: its cotangents sum
        b = silu(text @ wt) @ shared[:4, :4]
        joined = cat([a, b])
        return ((joined @ wj - target) ** 2).sum() * 0.5

    def ours(*args):
        return tower_join(*args, target, act=ff.relu, silu=ff.silu, cat=lambda xs: ff.concatenate(xs, axis=1))

    def theirs(*args):
        return tower_join(*args, torch.tensor(target), act=F.relu, silu=F.silu,
                          cat=lambda xs: torch.cat(xs, dim=1))

    args = (image, text, wi, wt, wj, shared)
    argnums = list(range(6))
    assert_close(ff_grads(ours, args, argnums), torch_grads(theirs, args, argnums))


def test_residual_network_matches_torch():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    blocks = [rng.normal(size=(6, 6)) / 3 for _ in range(4)]
    scale = rng.normal(size=(6,))

    def net(x, scale, *ws, y, act, lsm):
        h = x
        for w in ws:
            h = h + act(h @ w) * scale  # residual connection
        return -(lsm(h) * y).sum() / 5.0

    def ours(x, scale, *ws):
        return net(x, scale, *ws, y=y, act=ff.elu, lsm=ff.log_softmax)

    def theirs(x, scale, *ws):
        return net(x, scale, *ws, y=torch.tensor(y), act=F.elu, lsm=lambda h: F.log_softmax(h, dim=-1))

    args = (x, scale, *blocks)
    argnums = list(range(len(args)))
    assert_close(ff_grads(ours, args, argnums), torch_grads(theirs, args, argnums))
