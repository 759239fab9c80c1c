"""Fused elementwise loops split across the thread pool (elementwise.emit_map), and what a
bound inference call reads. Results must be bitwise the same at any thread count, and the
same as the unsplit loop's."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.llvm import elementwise
from ffcompile.codegen.llvm.threadpool import POOL_SLOT


@pytest.fixture
def restore_threads():
    before = ff.get_num_threads()
    yield
    ff.set_num_threads(before)


def fused(x, y, i):
    """Broadcast operands, an iota (its axis keeps a loop of its own), transcendental ops."""
    return ff.tanh(x * 2.0 + y) * ff.exp(-x) + i * 0.5


@pytest.mark.parametrize("shape", [(512, 1027), (3, 7, 9000), (200003,)])
def test_split_loops_match_the_unsplit_loop_bitwise_at_any_thread_count(shape, restore_threads, monkeypatch):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape[-1:]).astype(np.float32)
    i = np.arange(shape[-1], dtype=np.float32)
    assert np.prod(shape) >= 2 * elementwise.PARALLEL_MIN_POINTS
    fn = ff.compile(fused, backend="llvm")
    assert POOL_SLOT in fn.lower(x, y, i).llvm_ir
    results = []
    for threads in (1, 2, 3):
        ff.set_num_threads(threads)
        results.append(np.asarray(fn(x, y, i)).copy())
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    monkeypatch.setattr(elementwise, "PARALLEL_MIN_POINTS", 10 ** 12)  # the loop nest unsplit
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")  # (the cache would hand back the split one)
    unsplit = ff.compile(fused, backend="llvm")
    assert POOL_SLOT not in unsplit.lower(x, y, i).llvm_ir
    assert np.array_equal(np.asarray(unsplit(x, y, i)), results[0])
    want = np.asarray(ff.compile(fused, backend="numpy")(x, y, i))
    np.testing.assert_allclose(results[0], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_a_small_loop_is_not_split():
    x = np.ones((100, 100), np.float32)
    assert POOL_SLOT not in ff.compile(lambda x: ff.exp(x) * 2.0, backend="llvm").lower(x).llvm_ir


def test_weights_changed_in_place_are_used_by_the_next_bound_call(restore_threads):
    """Nothing is packed or cached at bind time: the skinny kernels read the weights as they are."""
    workload = zoo.get("mnist")
    params, x, _ = workload.example_inputs(batch_size=1)
    forward = ff.compile(workload.model, backend="llvm")
    infer = forward.bind(params, x)
    ff.set_num_threads(2)
    before = np.asarray(infer()).copy()
    leaves = [a for a in ff.tree.tree_flatten(params)[0] if a.ndim == 2]
    for w in leaves:
        w *= 0.5
    after = np.asarray(infer()).copy()
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, np.asarray(ff.compile(workload.model, backend="numpy")(params, x)),
                               rtol=1e-4, atol=1e-5)
