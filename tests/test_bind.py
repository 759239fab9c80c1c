"""Bound calls (docs/bind.md): `step.bind(params, opt_state, *batch)` and `cf.bind(*args)`
check everything once; `bound()` then runs over the bound arrays exactly as a call would."""
import gc
import threading
import tracemalloc

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.tree import tree_flatten, tree_map

pytestmark = pytest.mark.usefixtures("backend")

XOR = zoo.get("xor")


def _xor_step():
    return ff.compile_train_step(XOR.loss, ff.optim.SGD(0.1))


def _copies():
    params, x, y = XOR.example_inputs()
    return tree_map(np.copy, params), x.copy(), y.copy()


def _leaves(tree):
    return tree_flatten(tree)[0]


def test_bound_steps_equal_unbound_steps_bitwise():
    step = _xor_step()
    (p1, x, y), (p2, _, _) = _copies(), _copies()
    s1, s2 = step.init(p1), step.init(p2)
    bound = step.bind(p1, s1, x, y)
    for _ in range(4):
        loss = bound()
        expected = step(p2, s2, x, y)
        assert loss.shape == () and loss.tobytes() == np.asarray(expected).tobytes()
        for a, b in zip(_leaves(p1), _leaves(p2)):
            assert a.tobytes() == b.tobytes()
    assert bound() is loss  # the same preallocated loss array every call


def test_refilling_the_batch_in_place_changes_the_step():
    step = _xor_step()
    (p1, x, y), (p2, _, _) = _copies(), _copies()
    s1, s2 = step.init(p1), step.init(p2)
    bound = step.bind(p1, s1, x, y)
    first = float(bound())
    step(p2, s2, x, y)
    next_x = x[::-1].copy() * 2.0
    x[...] = next_x
    second = float(bound())
    assert second != first
    assert second == float(step(p2, s2, next_x, y))


def test_a_non_contiguous_batch_is_read_on_every_call():
    """Bound to a strided view, the step reads the view's current values each call."""
    step = _xor_step()
    (p1, x, y), (p2, _, _) = _copies(), _copies()
    s1, s2 = step.init(p1), step.init(p2)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
    view = wide[:, ::2]
    view[...] = x
    bound = step.bind(p1, s1, view, y)
    assert float(bound()) == float(step(p2, s2, x, y))
    view[...] = x + 1.0
    assert float(bound()) == float(step(p2, s2, x + 1.0, y))


def test_a_batch_aliasing_a_parameter():
    """x is params.w itself: the update must not corrupt the read of x, as in a call."""
    def weighted(params, x):
        return (params["w"] * x).sum()

    step = ff.compile_train_step(weighted, ff.optim.SGD(0.1))
    w1, w2 = np.arange(4, dtype=np.float32).reshape(2, 2), np.arange(4, dtype=np.float32).reshape(2, 2)
    p1, p2 = {"w": w1}, {"w": w2}
    bound = step.bind(p1, step.init(p1), w1)
    for _ in range(3):
        assert float(bound()) == float(step(p2, step.init(p2), w2))
        np.testing.assert_array_equal(w1, w2)


@pytest.mark.parametrize("backend", ["llvm"], indirect=True)  # the NumPy backend allocates inside its program
def test_a_bound_step_allocates_nothing():
    step = _xor_step()
    params, x, y = _copies()
    bound = step.bind(params, step.init(params), x, y)
    bound()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(100):
            bound()
        _, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, ff.__file__.rsplit("/", 1)[0] + "/*")]
    new_blocks = sum(d.count_diff for d in after.filter_traces(ours).compare_to(before.filter_traces(ours), "lineno"))
    assert new_blocks == 0
    # An array would show: a call's transient objects (ctypes' argument conversion) stay below it.
    assert peak - start < 512


@pytest.mark.parametrize("bad", ["shape", "dtype", "non_contiguous", "read_only", "scalar", "list"])
def test_bind_rejects_what_a_call_rejects_with_the_same_error(bad):
    step = _xor_step()
    params, x, y = _copies()
    state = step.init(params)
    w = params["layers"][0]["linear"]["w"]
    if bad == "shape":
        params["layers"][0]["linear"]["w"] = np.zeros((3, w.shape[1]), w.dtype)
    elif bad == "dtype":
        x = x.astype(np.float64)
    elif bad == "non_contiguous":
        params["layers"][0]["linear"]["w"] = np.asfortranarray(w)
    elif bad == "read_only":
        w.flags.writeable = False
    elif bad == "scalar":
        params["layers"][1]["linear"]["b"] = 0.0
    else:
        params["layers"][0]["linear"]["w"] = w.tolist()
    with pytest.raises(Exception) as call_error:
        step(params, state, x, y)
    with pytest.raises(type(call_error.value)) as bind_error:
        step.bind(params, state, x, y)
    assert str(bind_error.value) == str(call_error.value)


def test_compiled_function_bind_checks_like_a_call():
    f = ff.compile(lambda a, b: a @ b, spec=(ff.spec((2, 3)), ff.spec((3, 2))))
    a, b = np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)
    with pytest.raises(ff.ArgumentError) as call_error:
        f(a, b.T.copy())
    with pytest.raises(ff.ArgumentError) as bind_error:
        f.bind(a, b.T.copy())
    assert str(bind_error.value) == str(call_error.value)
    assert f.bind(a, b)()[0, 0] == 3.0


def test_a_bound_step_outlives_the_callers_references():
    step = _xor_step()
    params, x, y = _copies()
    expected_params, _, _ = _copies()
    expected_state = step.init(expected_params)
    bound = step.bind(params, step.init(params), x, y)
    w = params["layers"][0]["linear"]["w"]
    with pytest.raises(ValueError, match="cannot resize"):
        w.resize((w.size + 1,))  # the bound step references it: it cannot be reallocated
    w.resize((w.size,))  # the same size reshapes the caller's array object only
    del params, x, w
    gc.collect()
    for _ in range(3):
        assert float(bound()) == float(step(expected_params, expected_state, *_copies()[1:]))


def test_compiled_function_bind_returns_the_same_distinct_results():
    """Inputs returned as they are and values returned twice are distinct arrays, refreshed each call."""
    f = ff.compile(lambda a, b: {"sum": a + b, "again": a + b, "a": a, "scaled": (a * 2.0).reshape(6)})
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    bound = f.bind(a, b)
    out = bound()
    ids = {id(v) for v in out.values()}
    assert len(ids) == 4 and not any(np.shares_memory(v, a) for v in out.values())
    for _ in range(2):
        a[...] += 1.0
        assert bound() is out
        expected = f(a, b)
        for key in expected:
            np.testing.assert_array_equal(out[key], expected[key])
    assert not np.shares_memory(out["sum"], out["again"])


def test_bound_steps_run_concurrently_from_two_threads():
    """Two threads, each with its own bound step of one compiled program (one shared arena)."""
    step = _xor_step()
    runs = [_copies() for _ in range(2)]
    serial = [_copies() for _ in range(2)]
    steps = 200
    expected = []
    for params, x, y in serial:
        state = step.init(params)
        expected.append([float(step(params, state, x * (k + 1), y)) for k in range(2) for _ in range(steps)])
    bounds = [step.bind(params, step.init(params), x, y) for params, x, y in runs]
    losses = [[], []]

    def train(i):
        params, x, y = runs[i]
        base = x.copy()
        for k in range(2):
            x[...] = base * (k + 1)
            losses[i] += [float(bounds[i]()) for _ in range(steps)]

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert losses == expected
    for (params, _, _), (expected_params, _, _) in zip(runs, serial):
        for a, b in zip(_leaves(params), _leaves(expected_params)):
            assert a.tobytes() == b.tobytes()
