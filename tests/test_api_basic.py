"""The public API contract of DESIGN.md, end to end on every backend."""
import numpy as np
import pytest

import ffcompile as ff

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")


def f(x, w, b):
    return ff.tanh(x @ w + b).sum()


@pytest.fixture
def args():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=5)


def test_compile_uses_the_backend_under_test(backend, args):
    """The matrix is real: a compile that names no backend gets the fixture's."""
    compiled = ff.compile(f)
    assert compiled.backend == backend and compiled.lower(*args).backend.name == backend


def test_compile_matches_numpy(args):
    x, w, b = args
    assert np.allclose(ff.compile(f)(x, w, b), np.tanh(x @ w + b).sum(), rtol=1e-14)


def test_value_and_grad_matches_hand_derivation(args):
    x, w, b = args
    v, (gw, gb) = ff.compile(ff.value_and_grad(f, argnums=(1, 2)))(x, w, b)
    d = 1 - np.tanh(x @ w + b) ** 2
    assert np.allclose(v, np.tanh(x @ w + b).sum())
    assert np.allclose(gw, x.T @ d, rtol=1e-12)
    assert np.allclose(gb, d.sum(0), rtol=1e-12)


def test_lowered_ir_round_trips(args):
    lowered = ff.compile(f).lower(*args)
    assert str(ff.parse_ir(lowered.ir)) == lowered.ir
    assert "matmul" in lowered.ir and "def program" in lowered.source


def test_trace_is_cached_per_signature(args):
    calls = []

    def g(x):
        calls.append(1)
        return x * 2.0

    cg = ff.compile(g)
    cg(args[0]); cg(args[0] + 1); cg(args[1])
    assert len(calls) == 2


def test_grad_of_grad_gives_hessian_vector_product(args):
    x, w, b = args
    v = np.random.default_rng(1).normal(size=w.shape)

    def hvp(x, w, b, v):
        return ff.grad(lambda w: (ff.grad(f, argnums=1)(x, w, b) * v).sum())(w)

    eps = 1e-6
    gplus = ff.grad(f, argnums=1)(x, w + eps * v, b)
    gminus = ff.grad(f, argnums=1)(x, w - eps * v, b)
    assert np.allclose(ff.compile(hvp)(x, w, b, v), (gplus - gminus) / (2 * eps), atol=1e-7)


@pytest.mark.parametrize("enabled", [True, False])
def test_compiling_leaves_the_garbage_collector_as_it_found_it(enabled):
    """The collector is paused while a signature compiles (api._collector_paused), even when
    compiling fails, and then restored: on if it was on, off if the caller had turned it off."""
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        f = ff.compile(lambda x: ff.tanh(x) * 2.0)
        f(np.ones(3))
        assert gc.isenabled() == enabled
        with pytest.raises(ff.ShapeError, match="contracting dimensions"):
            ff.compile(lambda x: x @ x)(np.ones((2, 3)))
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
