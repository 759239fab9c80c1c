"""A transform called on arrays inside a trace, closing over that trace's Values, is part of
that trace (as in JAX): it used to compile itself separately and fail with "belongs to a
trace that has already finished"."""
import numpy as np
import pytest

import ffcompile as ff

RNG = np.random.default_rng(0)
X, W = RNG.normal(size=(4, 5)), RNG.normal(size=(3, 5))


def test_vmap_on_an_array_closing_over_the_outer_example(backend):
    # every example x against every row of the constant W: x is the outer vmap's Value
    pairs = ff.compile(ff.vmap(lambda x: ff.vmap(lambda w: (x * w).sum())(W)), backend=backend)
    np.testing.assert_allclose(pairs(X), X @ W.T, rtol=1e-12)


def test_jacfwd_through_a_vmap_on_a_constant_batch(backend):
    # d/dv sum_j sin(v * X[i, j]) = X[i] * cos(v * X[i])
    jac = ff.compile(ff.jacfwd(lambda v: ff.vmap(lambda row: ff.sin(v * row).sum())(X)), backend=backend)
    v = RNG.normal(size=5)
    np.testing.assert_allclose(jac(v), X * np.cos(v * X), rtol=1e-12)


def test_grad_at_a_constant_point_closing_over_a_traced_scale(backend):
    # d/dy sum(s * y^2) at y = W[0] is 2 s W[0]; s comes from the outer trace
    fn = ff.compile(lambda s: ff.grad(lambda y: (s * y * y).sum())(W[0]), backend=backend)
    np.testing.assert_allclose(fn(np.float64(1.5)), 3.0 * W[0], rtol=1e-12)


def test_jvp_on_constants_inside_a_trace(backend):
    fn = ff.compile(lambda s: ff.jvp(lambda y: ff.tanh(s * y), (W[0],), (W[1],))[1], backend=backend)
    np.testing.assert_allclose(fn(np.float64(0.5)), 0.5 * W[1] * (1 - np.tanh(0.5 * W[0]) ** 2), rtol=1e-12)


def test_a_python_scalar_point_still_compiles_separately():
    # Only arrays join the running trace: a Python scalar keeps its weak type by compiling
    # the transform on its own, where a closure over the outer trace cannot reach.
    with pytest.raises(ValueError, match="belongs to a trace that has already finished"):
        ff.compile(lambda s: ff.grad(lambda y: s * y * y)(2.0))(np.float64(1.0))
    fn = ff.compile(lambda s: ff.grad(lambda y: y * y * 3.0)(2.0) * s)
    np.testing.assert_allclose(fn(np.float64(2.0)), 24.0)


def test_jvp_at_a_constant_point_with_traced_tangents(backend):
    # vmap over tangents only: the primal is an array, every tangent a Value of the vmap
    tangents = RNG.normal(size=(4, 3))
    fn = ff.compile(ff.vmap(lambda t: ff.jvp(lambda x: ff.exp(x) * x, (W[0, :3],), (t,))[1]), backend=backend)
    x = W[0, :3]
    np.testing.assert_allclose(fn(tangents), tangents * np.exp(x) * (1 + x), rtol=1e-12)
