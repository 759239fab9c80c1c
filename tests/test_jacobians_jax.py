"""ff.jvp, jacfwd, jacrev, hessian against JAX's on the same functions, f32 and f64.

Every activation and loss, the lecture's two-layer sigmoid network, softmax (its
Jacobian diag(s) - s s^T), and the zoo models (their loss's Hessian-vector product
with respect to all parameters, and the Jacobian of their outputs with respect to the
input). Runs on both backends (the zoo's larger programs: see ZOO_BACKENDS); skipped,
with the reason shown, where JAX is missing.
"""
from __future__ import annotations

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import nn, zoo
from ffcompile.tree import tree_flatten, tree_map

jax = pytest.importorskip("jax", reason="JAX is the oracle here (pip install jax)")
jnp = jax.numpy


@pytest.fixture(autouse=True)
def jax_float64():
    """JAX computes in float64 here (it would cast f64 arrays to f32), for these tests only:
    the flag is global (test_random compares jax.random's 32-bit streams)."""
    saved = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", saved)


TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]


def _jax_sinc(x):
    return jnp.sinc(x / jnp.pi)


# name -> (ff function, jax function); the points avoid the kinks (see docs/activations.md)
ACTIVATIONS = {
    "relu": (ff.relu, jax.nn.relu),
    "leaky_relu": (ff.leaky_relu, lambda x: jax.nn.leaky_relu(x, 0.01)),
    "elu": (ff.elu, jax.nn.elu),
    "gelu": (ff.gelu, lambda x: jax.nn.gelu(x, approximate=False)),
    "gelu_tanh": (lambda x: ff.gelu(x, approximate="tanh"), lambda x: jax.nn.gelu(x, approximate=True)),
    "sigmoid": (ff.sigmoid, jax.nn.sigmoid),
    "log_sigmoid": (ff.log_sigmoid, jax.nn.log_sigmoid),
    "softplus": (ff.softplus, jax.nn.softplus),
    "softsign": (ff.softsign, jax.nn.soft_sign),
    "silu": (ff.silu, jax.nn.silu),
    "mish": (ff.mish, lambda x: x * jnp.tanh(jax.nn.softplus(x))),
    "tanh": (ff.tanh, jnp.tanh),
    "sinc": (ff.sinc, _jax_sinc),
    "step": (ff.step, lambda x: jnp.where(x > 0, 1.0, 0.0).astype(x.dtype)),
    "softmax": (ff.softmax, jax.nn.softmax),
    "log_softmax": (ff.log_softmax, jax.nn.log_softmax),
}


def _jax_cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))


def _jax_bce(logits, targets):
    return jnp.mean(targets * jax.nn.softplus(-logits) + (1 - targets) * jax.nn.softplus(logits))


LOSSES = {  # name -> (ff loss, jax loss, targets maker)
    "mse": (nn.mse, lambda p, t: jnp.mean(0.5 * jnp.sum((p - t) ** 2, axis=-1)),
            lambda rng, shape, dtype: rng.standard_normal(shape).astype(dtype)),
    "cross_entropy": (nn.cross_entropy, _jax_cross_entropy,
                      lambda rng, shape, dtype: rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)),
    "nll_loss": (nn.nll_loss, lambda lp, y: -jnp.mean(jnp.take_along_axis(lp, y[:, None], axis=-1)),
                 lambda rng, shape, dtype: rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)),
    "binary_cross_entropy_with_logits": (nn.binary_cross_entropy_with_logits, _jax_bce,
                                         lambda rng, shape, dtype: rng.uniform(0, 1, shape).astype(dtype)),
}


def close(got, expected, dtype):
    leaves, expected_leaves = tree_flatten(got)[0], tree_flatten(expected)[0]
    assert len(leaves) == len(expected_leaves)
    for g, e in zip(leaves, expected_leaves):
        e = np.asarray(e)
        assert g.shape == e.shape and g.dtype == dtype, (g.shape, e.shape, g.dtype)
        np.testing.assert_allclose(g, e, **TOL[dtype])


def off_kinks(rng, shape, dtype):
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)).astype(dtype)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivatives_match_jax(name, dtype):
    ff_fn, jax_fn = ACTIVATIONS[name]
    rng = np.random.default_rng(len(name))
    x, v = off_kinks(rng, (3, 4), dtype), rng.standard_normal((3, 4)).astype(dtype)
    out, tangent = ff.jvp(ff_fn, (x,), (v,))
    j_out, j_tangent = jax.jit(lambda x, v: jax.jvp(jax_fn, (x,), (v,)))(x, v)
    close((out, tangent), (j_out, j_tangent), dtype)
    row = x[0]
    close(ff.compile(ff.jacfwd(ff_fn))(row), jax.jit(jax.jacfwd(jax_fn))(row), dtype)
    close(ff.compile(ff.jacrev(ff_fn))(row), jax.jit(jax.jacrev(jax_fn))(row), dtype)
    total = lambda f: lambda x: f(x).sum()  # noqa: E731
    close(ff.compile(ff.hessian(total(ff_fn)))(row), jax.jit(jax.hessian(total(jax_fn)))(row), dtype)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_derivatives_match_jax(name, dtype):
    ff_loss, jax_loss, targets = LOSSES[name]
    rng = np.random.default_rng(len(name))
    scores = rng.standard_normal((4, 3)).astype(dtype)
    if name == "nll_loss":
        scores = np.asarray(jax.nn.log_softmax(scores)).astype(dtype)
    y, v = targets(rng, scores.shape, dtype), rng.standard_normal(scores.shape).astype(dtype)
    close(ff.jvp(lambda s: ff_loss(s, y), (scores,), (v,)), jax.jit(lambda s, v: jax.jvp(lambda s: jax_loss(s, y), (s,), (v,)))(scores, v), dtype)
    for ff_t, jax_t in ((ff.jacfwd, jax.jacfwd), (ff.jacrev, jax.jacrev), (ff.hessian, jax.hessian)):
        close(ff.compile(ff_t(ff_loss))(scores, y), jax.jit(jax_t(jax_loss))(scores, y), dtype)


@pytest.mark.usefixtures("backend")
def test_softmax_jacobian_is_diag_s_minus_s_s_transposed():
    x = np.random.default_rng(0).standard_normal(6)
    s = ff.compile(ff.softmax)(x)
    expected = np.diag(s) - np.outer(s, s)
    for transform in (ff.jacfwd, ff.jacrev, ff.jacobian):
        np.testing.assert_allclose(ff.compile(transform(ff.softmax))(x), expected, rtol=1e-12, atol=1e-15)


def sigmoid_net(params, x):
    """The lecture's two-layer network: sigmoid(W2 sigmoid(W1 x + b1) + b2)."""
    hidden = ff.sigmoid(x @ params["w1"] + params["b1"])
    return ff.sigmoid(hidden @ params["w2"] + params["b2"])


def jax_sigmoid_net(params, x):
    hidden = jax.nn.sigmoid(x @ params["w1"] + params["b1"])
    return jax.nn.sigmoid(hidden @ params["w2"] + params["b2"])


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_two_layer_sigmoid_network_matches_jax(dtype):
    rng = np.random.default_rng(5)
    params = {"w1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4),
              "w2": rng.standard_normal((4, 2)), "b2": rng.standard_normal(2)}
    params = tree_map(lambda a: a.astype(dtype), params)
    x = rng.standard_normal((5, 3)).astype(dtype)
    tangents = tree_map(lambda a: rng.standard_normal(a.shape).astype(dtype), params)
    close(ff.jvp(sigmoid_net, (params, x), (tangents, np.zeros_like(x))),
          jax.jit(lambda p, t: jax.jvp(jax_sigmoid_net, (p, x), (t, np.zeros_like(x))))(params, tangents), dtype)
    for ff_t, jax_t in ((ff.jacfwd, jax.jacfwd), (ff.jacrev, jax.jacrev)):
        close(ff.compile(ff_t(sigmoid_net, argnums=(0, 1)))(params, x),
              jax.jit(jax_t(jax_sigmoid_net, argnums=(0, 1)))(params, x), dtype)
    loss = lambda f: lambda p, x: (f(p, x) ** 2).sum()  # noqa: E731
    close(ff.compile(ff.hessian(loss(sigmoid_net)))(params, x), jax.jit(jax.hessian(loss(jax_sigmoid_net)))(params, x), dtype)


# --------------------------------------------------------------------------- the zoo

JAX_ACTIVATIONS = {nn.ReLU: jax.nn.relu, nn.Tanh: jnp.tanh, nn.Sigmoid: jax.nn.sigmoid,
                   nn.GELU: lambda x: jax.nn.gelu(x, approximate=True), type(None): lambda x: x}


def jax_mlp(model):
    acts = [JAX_ACTIVATIONS[type(layer.act)] for layer in model.layers]

    def forward(params, x):
        for act, layer in zip(acts, params["layers"]):
            x = act(x @ layer["linear"]["w"] + layer["linear"]["b"])
        return x
    return forward


def jax_two_tower(model):
    def dense(act, p, x):
        return act(x @ p["linear"]["w"] + p["linear"]["b"])

    classifier = jax_mlp(model.classifier)

    def forward(params, inputs):
        image, text = inputs
        project = lambda h: dense(jnp.tanh, params["project"], h)  # noqa: E731
        img = project(dense(jax.nn.relu, params["image"], image))
        txt = project(dense(lambda h: jax.nn.gelu(h, approximate=True), params["text"], text))
        return classifier(params["classifier"], jnp.concatenate([img, txt, img * txt], axis=-1))
    return forward


def jax_loss(workload):
    forward = jax_two_tower(workload.model) if workload.name == "two_tower" else jax_mlp(workload.model)
    criterion = {nn.mse: lambda p, t: jnp.mean(0.5 * jnp.sum((p - t) ** 2, axis=-1)),
                 nn.cross_entropy: _jax_cross_entropy}[workload.criterion]
    return lambda params, x, y: criterion(forward(params, x), y), forward


# "wide" (25M parameters) is left out: its Hessian-vector product would hold ~1 GB here.
ZOO = ["xor", "digits", "mnist", "deep", "two_tower"]
# The zoo's programs are large and LLVM compiles each for seconds on 2 cores: float64 and
# the input Jacobians of the larger models run on the NumPy backend only (the same graphs;
# the tangent rules' lowering is covered on LLVM by the tests above and test_forward_mode).
ZOO_BACKENDS = [("numpy", np.float32), ("numpy", np.float64), ("llvm", np.float32)]


@pytest.mark.parametrize("backend_name, dtype", ZOO_BACKENDS, ids=["numpy-f32", "numpy-f64", "llvm-f32"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_hessian_vector_products_match_jax(name, backend_name, dtype):
    """jvp(grad(loss)) over every parameter, one direction (forward over reverse)."""
    w = zoo.get(name)
    params, x, y = w.example_inputs(seed=2, batch_size=4)
    params, x = tree_map(lambda a: a.astype(dtype), (params, x))
    if y.dtype != np.int32:
        y = y.astype(dtype)
    rng = np.random.default_rng(3)
    v = tree_map(lambda a: rng.standard_normal(a.shape).astype(dtype), params)
    loss, _ = jax_loss(w)
    hvp = ff.compile(lambda p, v, x, y: ff.jvp(lambda p: ff.grad(w.loss)(p, x, y), (p,), (v,)), backend=backend_name)
    jax_hvp = jax.jit(lambda p, v: jax.jvp(lambda p: jax.grad(loss)(p, x, y), (p,), (v,))[1])
    close(hvp(params, v, x, y)[1], jax_hvp(params, v), dtype)


@pytest.mark.parametrize("name, backend_name", [("xor", "numpy"), ("digits", "numpy"), ("two_tower", "numpy"),
                                                ("digits", "llvm")])  # mnist, deep: digits' ops, larger
def test_zoo_input_jacobians_match_jax(name, backend_name):
    w = zoo.get(name)
    params, x, _ = w.example_inputs(seed=4, batch_size=2)
    _, forward = jax_loss(w)
    for ff_t, jax_t in ((ff.jacfwd, jax.jacfwd), (ff.jacrev, jax.jacrev)):
        got = ff.compile(ff_t(w.predict, argnums=1), backend=backend_name)(params, x)
        close(got, jax.jit(jax_t(forward, argnums=1))(params, x), np.float32)
