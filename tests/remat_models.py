"""The models issue 22 checked the planner on, small enough for exhaustive search.

A residual MLP with a skip every 2 layers, a two-branch DAG on a shared trunk,
a GELU MLP with softmax cross-entropy, and the 2-layer sigmoid MLP whose
recomputed `select` exposed the unsafe in-place rule. Each entry builds
(loss, args) for a dtype; `training_graph` gives remat's input."""
import numpy as np

import ffcompile as ff
from ffcompile.passes.decompose import decompose
from ffcompile.passes.simplify import simplify


def res2_loss(params, x):
    h = x
    for k in range(0, len(params), 2):
        (w1, b1), (w2, b2) = params[k], params[k + 1]
        h = h + ff.tanh(ff.tanh(h @ w1 + b1) @ w2 + b2)
    return (h * h).sum()


def branch_loss(params, x):
    trunk = ff.tanh(x @ params["trunk"])
    left = ff.tanh(trunk @ params["left"])
    right = ff.sigmoid(trunk @ params["right"])
    return ((left * right) @ params["head"]).sum()


def gelu_ce_loss(params, x, targets):
    h = x
    for w, b in params[:-1]:
        h = ff.gelu(h @ w + b)
    w, b = params[-1]
    return ff.nn.cross_entropy(h @ w + b, targets)


def sigmoid_loss(params, x):
    h = x
    for w, b in params:
        h = ff.sigmoid(h @ w + b)
    return (h * h).sum()


def _layers(rng, n, width, dtype):
    return [((rng.normal(size=(width, width)) / np.sqrt(width)).astype(dtype),
             (rng.normal(size=width) / 4).astype(dtype)) for _ in range(n)]


def res2(dtype=np.float64, width=4, batch=2, layers=4):
    rng = np.random.default_rng(22)
    return res2_loss, (_layers(rng, layers, width, dtype), rng.normal(size=(batch, width)).astype(dtype))


def branch(dtype=np.float64, width=4, batch=2):
    rng = np.random.default_rng(23)
    params = {k: (rng.normal(size=(width, width)) / 2).astype(dtype) for k in ("trunk", "left", "right", "head")}
    return branch_loss, (params, rng.normal(size=(batch, width)).astype(dtype))


def gelu_ce(dtype=np.float64, width=4, batch=2, layers=2, classes=5):
    rng = np.random.default_rng(24)
    params = _layers(rng, layers, width, dtype)
    params.append(((rng.normal(size=(width, classes)) / 2).astype(dtype), np.zeros(classes, dtype)))
    targets = np.eye(classes, dtype=dtype)[rng.integers(0, classes, size=batch)]
    return gelu_ce_loss, (params, rng.normal(size=(batch, width)).astype(dtype), targets)


def sigmoid2(dtype=np.float64, width=4, batch=2):
    rng = np.random.default_rng(25)
    return sigmoid_loss, (_layers(rng, 2, width, dtype), rng.normal(size=(batch, width)).astype(dtype))


ISSUE_MODELS = {"res2": res2, "branch": branch, "gelu_ce": gelu_ce, "sigmoid2": sigmoid2}


def training_graph(loss, args):
    """value_and_grad of loss w.r.t. its first argument, decomposed and simplified (remat's input)."""
    return simplify(decompose(ff.compile(ff.value_and_grad(loss)).lower(*args).graph))
