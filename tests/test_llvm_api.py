"""ff.compile(..., backend="llvm") end to end: the public API on native code."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.tree import tree_flatten, tree_map


def compare(fn, args, rtol=3e-5, atol=1e-5):
    native = tree_flatten(ff.compile(fn, backend="llvm")(*args))[0]
    reference = tree_flatten(ff.compile(fn, backend="numpy")(*args))[0]
    for a, b in zip(native, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["xor", "digits", "deep", "two_tower"])
def test_zoo_value_and_grad_matches_numpy(name):
    params, x, y = zoo.get(name).example_inputs(0)
    compare(ff.value_and_grad(zoo.get(name).loss), (params, x, y))


def test_float64_gradients_are_tight():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(16, 8)), rng.normal(size=(8, 4)), rng.normal(size=4)

    def f(x, w, b):
        return ff.log_softmax(ff.gelu(x @ w + b, approximate="tanh")).sum()

    compare(ff.grad(f, argnums=(1, 2)), (x, w, b), rtol=1e-11, atol=1e-12)


def test_training_step_updates_in_place_and_matches_numpy():
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(0)
    results = []
    for backend in ("llvm", "numpy"):
        p = tree_map(np.copy, params)
        step = ff.compile_train_step(workload.loss, ff.optim.Adam(1e-3), backend=backend)
        state = step.init(p)
        ids = [id(a) for a in tree_flatten(p)[0]]
        losses = [float(step(p, state, x, y)) for _ in range(5)]
        assert [id(a) for a in tree_flatten(p)[0]] == ids
        results.append((losses, tree_flatten(p)[0]))
    (native_losses, native_params), (numpy_losses, numpy_params) = results
    np.testing.assert_allclose(native_losses, numpy_losses, rtol=1e-4)
    for a, b in zip(native_params, numpy_params):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_remat_plans_against_the_native_arena():
    workload = zoo.get("deep")
    params, x, y = workload.example_inputs(0)
    compiled = ff.compile(ff.value_and_grad(workload.loss), backend="llvm", memory_budget=0.5)
    value, _ = compiled(params, x, y)
    lowered = compiled.last_lowered
    assert lowered.memory.arena_bytes == lowered.plan.peak_bytes <= 0.5 * lowered.plan.store_all_peak
    np.testing.assert_allclose(value, ff.compile(workload.loss)(params, x, y), rtol=1e-4)


def test_lowered_shows_llvm_ir_and_vector_assembly():
    x = np.ones((64, 64), np.float32)
    lowered = ff.compile(lambda x: ff.tanh(x) * 2.0 + 1.0, backend="llvm").lower(x)
    assert "define" in lowered.llvm_ir and "entry" in lowered.llvm_ir
    assert any(reg in lowered.asm for reg in ("ymm", "zmm", "xmm"))


def test_bad_input_is_a_python_error_not_a_crash():
    f = ff.compile(lambda x, w: x @ w, backend="llvm")
    x, w = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
    f(x, w)
    with pytest.raises((TypeError, ValueError)):
        f(x.astype(np.float64), w)
    with pytest.raises((TypeError, ValueError)):
        f(np.ones((4, 5), np.float32), w)
    np.testing.assert_array_equal(f(np.asfortranarray(x), w), x @ w)
    nan = x.copy()
    nan[0, 0] = np.nan
    assert np.isnan(f(nan, w)[0]).all()
