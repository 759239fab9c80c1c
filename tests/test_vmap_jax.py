"""ff.vmap against jax.vmap on the same functions, both backends, float32 and float64:
activations, losses, softmax, matmul with every in_axes combination, reductions,
reshape/transpose, indexing, out_axes, pytrees, nested vmap, and vmap(grad)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.ir import lang as L

jax = pytest.importorskip("jax", reason="JAX is the oracle for vmap (pip install jax)")
jnp = jax.numpy

B = 4  # examples in a batch
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


@dataclass(frozen=True)
class Case:
    ff_fn: Callable
    jax_fn: Callable
    shapes: tuple  # full (batched) argument shapes; an "int:N" entry is an i32 array below N
    in_axes: object = 0
    out_axes: object = 0


def _args(case: Case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    args = []
    for shape in case.shapes:
        if isinstance(shape, tuple) and shape and isinstance(shape[0], str):
            high, shape = int(shape[0].split(":")[1]), shape[1:]
            args.append(rng.integers(0, high, shape).astype(np.int32))
        else:
            args.append(rng.standard_normal(shape).astype(dtype))
    return args


def _unary(ff_fn, jax_fn):
    return Case(ff_fn, jax_fn, ((B, 5),))


ACTIVATIONS = {
    "relu": _unary(ff.relu, jax.nn.relu),
    "sigmoid": _unary(ff.sigmoid, jax.nn.sigmoid),
    "tanh": _unary(ff.tanh, jnp.tanh),
    "softplus": _unary(ff.softplus, jax.nn.softplus),
    "log_sigmoid": _unary(ff.log_sigmoid, jax.nn.log_sigmoid),
    "silu": _unary(ff.silu, jax.nn.silu),
    "elu": _unary(ff.elu, jax.nn.elu),
    "leaky_relu": _unary(ff.leaky_relu, jax.nn.leaky_relu),
    "gelu": _unary(ff.gelu, lambda x: jax.nn.gelu(x, approximate=False)),
    "gelu_tanh": _unary(lambda x: ff.gelu(x, approximate="tanh"), lambda x: jax.nn.gelu(x, approximate=True)),
    "softsign": _unary(ff.softsign, jax.nn.soft_sign),
    "mish": _unary(ff.mish, lambda x: x * jnp.tanh(jax.nn.softplus(x))),
    "sinc": _unary(ff.sinc, lambda x: jnp.sinc(x / jnp.pi)),
    "exp_log1p": _unary(lambda x: ff.log1p(ff.exp(x)), lambda x: jnp.log1p(jnp.exp(x))),
}

LOSSES = {
    "mse": Case(ff.nn.mse, lambda p, t: 0.5 * jnp.mean(jnp.square(p - t)), ((B, 6), (B, 6))),
    "cross_entropy": Case(ff.nn.cross_entropy, lambda z, y: -jax.nn.log_softmax(z)[y], ((B, 10), ("int:10", B))),
    "cross_entropy_rows": Case(ff.nn.cross_entropy,
                               lambda z, y: -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)),
                               ((B, 3, 10), ("int:10", B, 3))),
    "nll_loss": Case(ff.nn.nll_loss, lambda p, y: -p[y], ((B, 7), ("int:7", B))),
    "bce_logits": Case(ff.nn.binary_cross_entropy_with_logits,
                       lambda z, t: jnp.mean(t * jax.nn.softplus(-z) + (1 - t) * jax.nn.softplus(z)), ((B, 5), (B, 5))),
}

SOFTMAX = {
    "softmax_last": Case(ff.softmax, jax.nn.softmax, ((B, 3, 5),)),
    "softmax_first": Case(lambda x: ff.softmax(x, axis=0), lambda x: jax.nn.softmax(x, axis=0), ((B, 3, 5),)),
    "log_softmax": Case(ff.log_softmax, jax.nn.log_softmax, ((3, B, 5),), in_axes=1),
    "logsumexp": Case(ff.logsumexp, jax.nn.logsumexp, ((B, 5),)),
}

REDUCTIONS = {
    "sum_all": Case(lambda x: x.sum(), jnp.sum, ((B, 3, 5),)),
    "sum_axis0": Case(lambda x: x.sum(axis=0), lambda x: x.sum(axis=0), ((B, 3, 5),)),
    "max_keepdims": Case(lambda x: x.max(axis=1, keepdims=True), lambda x: x.max(axis=1, keepdims=True),
                         ((3, 5, B),), in_axes=2),
    "mean_last": Case(lambda x: x.mean(axis=-1), lambda x: x.mean(axis=-1), ((B, 3, 5),)),
    "argmax": Case(ff.argmax, jnp.argmax, ((B, 7),)),
}

LAYOUT = {
    "reshape_T": Case(lambda x: x.reshape(6, 4).T, lambda x: x.reshape(6, 4).T, ((B, 2, 3, 4),)),
    "transpose": Case(lambda x: L.transpose(x, (2, 0, 1)), lambda x: jnp.transpose(x, (2, 0, 1)),
                      ((2, B, 3, 4),), in_axes=1),
    "broadcast": Case(lambda x, y: x + y, lambda x, y: x + y, ((B, 3), (2, 3)), in_axes=(0, None)),
    "broadcast_both": Case(lambda x, y: x * y, lambda x, y: x * y, ((B, 3), (B, 2, 1))),
    "concatenate": Case(lambda x, y: ff.concatenate([x, y], axis=0), lambda x, y: jnp.concatenate([x, y], axis=0),
                        ((B, 2, 3), (4, 3)), in_axes=(0, None)),
    "stack": Case(lambda x, y: ff.stack([x, y], axis=1), lambda x, y: jnp.stack([x, y], axis=1), ((B, 3), (B, 3))),
    "where": Case(lambda x, y: ff.where(x > y, x, y * 2.0), lambda x, y: jnp.where(x > y, x, y * 2.0),
                  ((B, 5), (5,)), in_axes=(0, None)),
    "clip": Case(lambda x: ff.clip(x, -0.5, 0.5), lambda x: jnp.clip(x, -0.5, 0.5), ((B, 5),)),
}

INDEXING = {
    "slice": Case(lambda x: x[1:, ::2], lambda x: x[1:, ::2], ((B, 4, 5),)),
    "integer": Case(lambda x: x[2], lambda x: x[2], ((B, 4, 5),)),
    "new_axis": Case(lambda x: x[:, None] * 2.0, lambda x: x[:, None] * 2.0, ((B, 4),)),
    "index_array": Case(lambda x: x[np.array([3, 0, 1])], lambda x: x[np.array([3, 0, 1])], ((B, 4, 2),)),
    "traced_index": Case(lambda x, i: x[i], lambda x, i: x[i], ((B, 6, 2), ("int:6", B))),
    "take_axis1": Case(lambda x, i: ff.take(x, i, axis=1), lambda x, i: jnp.take(x, i, axis=1),
                       ((3, 5), ("int:5", B, 2)), in_axes=(None, 0)),
}

OUT_AXES = {
    "out_axes_1": Case(lambda x: x * 2.0, lambda x: x * 2.0, ((B, 3, 5),), out_axes=1),
    "out_axes_last": Case(lambda x: ff.tanh(x), jnp.tanh, ((B, 3, 5),), out_axes=-1),
    "out_axes_none": Case(lambda x, w: (x.sum(), w * 3.0), lambda x, w: (x.sum(), w * 3.0),
                          ((B, 3), (2,)), in_axes=(0, None), out_axes=(0, None)),
    "unbatched_result_repeated": Case(lambda x, w: (x * 1.0, w + 1.0), lambda x, w: (x * 1.0, w + 1.0),
                                      ((B, 3), (2,)), in_axes=(0, None), out_axes=(0, 1)),
    "negative_in_axis": Case(lambda x: x.sum(axis=0), lambda x: x.sum(axis=0), ((3, 5, B),), in_axes=-1),
}


def _matmul_cases():
    """a [3, 4] @ b [4, 2] (and a vector [4] @ b) with the batch axis at every place of
    each operand, or absent from one of them."""
    cases = {}
    for a_shape in ((3, 4), (4,)):
        for a_axis, b_axis in itertools.product([None, *range(len(a_shape) + 1)], [None, 0, 1, 2]):
            if a_axis is None and b_axis is None:
                continue
            shapes = []
            for shape, axis in ((a_shape, a_axis), ((4, 2), b_axis)):
                shapes.append(shape if axis is None else shape[:axis] + (B,) + shape[axis:])
            name = f"matmul_{'x'.join(map(str, a_shape))}_{a_axis}_{b_axis}"
            cases[name] = Case(lambda a, b: a @ b, lambda a, b: a @ b, tuple(shapes), in_axes=(a_axis, b_axis))
    return cases


CASES = {**ACTIVATIONS, **LOSSES, **SOFTMAX, **REDUCTIONS, **LAYOUT, **INDEXING, **OUT_AXES, **_matmul_cases()}


def _check(ff_fn, jax_fn, args, dtype):
    got = ff_fn(*args)
    with jax.enable_x64(dtype == np.float64):
        expected = jax_fn(*jax.tree_util.tree_map(jnp.asarray, tuple(args)))
    got_leaves, expected_leaves = ff.tree.tree_leaves(got), jax.tree_util.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves)
    for g, e in zip(got_leaves, expected_leaves):
        e = np.asarray(e)
        assert g.shape == e.shape, (g.shape, e.shape)
        if e.dtype.kind == "f":
            assert g.dtype == dtype
            np.testing.assert_allclose(g, e, **TOLERANCE[dtype])
        else:
            np.testing.assert_array_equal(g, e)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CASES))
def test_vmap_matches_jax(name, dtype):
    case = CASES[name]
    _check(ff.vmap(case.ff_fn, case.in_axes, case.out_axes),
           jax.vmap(case.jax_fn, case.in_axes, case.out_axes), _args(case, dtype), dtype)


NESTED = {
    # every pair (x_i, y_j): the inner vmap maps x, the outer y
    "outer_pairs": (lambda f: f(f(lambda x, y: ff.tanh(x * y).sum(), (0, None)), (None, 0)),
                    lambda f: f(f(lambda x, y: jnp.tanh(x * y).sum(), (0, None)), (None, 0)),
                    ((B, 3), (5, 3))),
    # a batch of batches of matmuls, mapped over different axes at each level
    "matmul_two_levels": (lambda f: f(f(lambda a, b: a @ b, (0, 0)), (1, None)),
                          lambda f: f(f(lambda a, b: a @ b, (0, 0)), (1, None)),
                          ((2, B, 3, 4), (2, 4, 5))),
    "softmax_three_levels": (lambda f: f(f(f(lambda x: x.max() - x.mean(), 0), 1), 2),
                             lambda f: f(f(f(lambda x: x.max() - x.mean(), 0), 1), 2),
                             ((2, 3, B, 5),)),
}


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(NESTED))
def test_nested_vmap_matches_jax(name, dtype):
    build_ff, build_jax, shapes = NESTED[name]
    args = _args(Case(None, None, shapes), dtype)
    _check(build_ff(lambda f, axes: ff.vmap(f, axes)), build_jax(lambda f, axes: jax.vmap(f, axes)), args, dtype)


@pytest.mark.usefixtures("backend")
def test_pytree_in_axes_match_jax():
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal((B, 2))}
    x = rng.standard_normal((3, B))
    in_axes = ({"w": None, "b": 0}, 1)

    def ff_fn(p, x):
        return {"y": ff.tanh(x @ p["w"] + p["b"]), "n": (x * x).sum()}

    def jax_fn(p, x):
        return {"y": jnp.tanh(x @ p["w"] + p["b"]), "n": (x * x).sum()}

    with jax.enable_x64(True):
        _check(ff.vmap(ff_fn, in_axes), jax.vmap(jax_fn, in_axes), (params, x), np.float64)


def _mlp_loss_jax(params, x, y):
    layers = params["layers"]
    for k, layer in enumerate(layers):
        x = x @ layer["linear"]["w"] + layer["linear"]["b"]
        x = jax.nn.relu(x) if k < len(layers) - 1 else x
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), y[..., None], axis=-1))


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_per_example_gradients_of_the_digits_mlp_match_jax(dtype):
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(batch_size=16)
    params = ff.tree.tree_map(lambda a: a.astype(dtype), params)
    x = x.astype(dtype)
    per_example = ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0))
    _check(per_example, jax.vmap(jax.grad(_mlp_loss_jax), in_axes=(None, 0, 0)), (params, x, y), dtype)
