"""The fast path of a repeated call (same structure and array types as the last one)
must behave exactly like the full path: results, errors, recompiles, donation."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir.errors import ShapeError
from ffcompile.runtime import ArgumentError
from ffcompile.tree import tree_flatten, tree_leaves_like

pytestmark = pytest.mark.usefixtures("backend")

A = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
B = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)


def weighted(params, x):
    return (params["w"] * x).sum() + (params["b"] * 2.0).sum()


# --------------------------------------------------------------------------- the structure matcher


@pytest.mark.parametrize("tree, other", [
    ({"a": A, "b": [B, None]}, {"b": [B, None], "a": A}),  # key order does not matter
    ((A, [B, (A,)]), (B, [A, (B,)])),
    ({"x": {}}, {"x": {}}),
])
def test_matcher_accepts_the_same_structure(tree, other):
    _, treedef = tree_flatten(tree)
    leaves, expected = tree_leaves_like(other, treedef), tree_flatten(other)[0]
    assert len(leaves) == len(expected) and all(a is b for a, b in zip(leaves, expected))


@pytest.mark.parametrize("other", [
    {"a": A},                                   # a key missing
    {"a": A, "b": [B, None], "c": A},           # a key more
    {"a": A, "c": [B, None]},                   # same length, another key
    {"z": A, "b": [B, None]},                   # ... where a leaf was
    {"a": A, "b": (B, None)},                   # tuple where a list was
    {"a": A, "b": [B, B]},                      # a leaf where None was
    {"a": [A], "b": [B, None]},                 # a container where a leaf was
    {"a": None, "b": [B, None]},                # None where a leaf was
    {"a": A, "b": [B]},                         # a shorter list
    [A, [B, None]],                             # a list where a dict was
])
def test_matcher_rejects_another_structure(other):
    _, treedef = tree_flatten({"a": A, "b": [B, None]})
    assert tree_leaves_like(other, treedef) is None


def test_matcher_keeps_namedtuples_as_leaves():
    from collections import namedtuple
    Point = namedtuple("Point", "x y")
    _, treedef = tree_flatten((A, B))
    assert tree_leaves_like(Point(A, B), treedef) is None
    _, leaf_def = tree_flatten([Point(A, B)])
    assert tree_leaves_like([Point(B, A)], leaf_def) is not None


# --------------------------------------------------------------------------- compiled calls


def test_repeated_calls_follow_structure_and_type_changes():
    f = ff.compile(lambda t: t["u"] * 2.0 + t["v"])
    u, v = A.copy(), B.copy()
    np.testing.assert_allclose(f({"u": u, "v": v}), 2 * u + v)
    np.testing.assert_allclose(f({"v": v, "u": u}), 2 * u + v)  # same structure, other key order
    np.testing.assert_allclose(f({"u": v, "v": u}), 2 * v + u)  # new arrays, same types
    u2 = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_allclose(f({"u": u2, "v": u2}), 3 * u2)  # new shape: a new signature
    np.testing.assert_allclose(f({"u": u, "v": v}), 2 * u + v)  # back to the first one
    with pytest.raises(ff.DTypeError, match="dtypes differ"):
        f({"u": u.astype(np.float64), "v": v})  # a dtype mix is still rejected after fast calls
    with pytest.raises(KeyError):
        f({"u": u})  # a key missing falls through to the full path, which traces and fails
    assert len(f._cache) == 2


def test_non_contiguous_and_view_arguments_after_a_fast_call():
    f = ff.compile(lambda x, y: x * y)
    x, y = A.copy(), B.copy()
    np.testing.assert_allclose(f(x, y), x * y)
    np.testing.assert_allclose(f(x.T.copy().T, y), x * y)  # Fortran order: checked and made contiguous
    np.testing.assert_allclose(f(x[::-1][::-1], y), x * y)  # a view of the same type passes
    np.testing.assert_allclose(f(x, y), x * y)
    with pytest.raises(ShapeError, match="broadcast"):
        f(np.ones((2, 3), np.float32), y)  # another shape re-traces, and is checked there


def test_value_and_grad_results_are_fresh_each_call():
    vg = ff.compile(ff.value_and_grad(weighted))
    params = {"w": A.copy(), "b": B.copy()}
    (loss1, g1), (loss2, g2) = vg(params, A), vg(params, A)
    assert g1["w"] is not g2["w"] and not np.shares_memory(g1["w"], g2["w"])
    np.testing.assert_allclose(g1["w"], A)
    np.testing.assert_allclose(g2["b"], np.full_like(B, 2.0))
    assert float(loss1) == float(loss2)


# --------------------------------------------------------------------------- training steps


def _expected_sgd(params, x, lr):
    return {"w": params["w"] - lr * x, "b": params["b"] - lr * 2.0}


def test_training_step_updates_in_place_on_every_call():
    step = ff.compile_train_step(weighted, ff.optim.SGD(0.1))
    params = {"w": A.copy(), "b": B.copy()}
    state = step.init(params)
    w, b = params["w"], params["b"]
    expected = {k: v.copy() for k, v in params.items()}
    for x in (A, B, A):  # new batch arrays of the same type
        step(params, state, x)
        expected = _expected_sgd(expected, x, 0.1)
        assert params["w"] is w and params["b"] is b
        np.testing.assert_allclose(w, expected["w"], rtol=1e-6)
        np.testing.assert_allclose(b, expected["b"], rtol=1e-6)
    # A fresh params dict, keys in another order: updated in place as well.
    other = {"b": B.copy(), "w": A.copy()}
    step(other, state, A)
    np.testing.assert_allclose(other["w"], A - 0.1 * A, rtol=1e-6)
    np.testing.assert_allclose(other["b"], B - 0.2, rtol=1e-6)


def test_training_step_still_rejects_bad_state_after_fast_calls():
    step = ff.compile_train_step(weighted, ff.optim.SGD(0.1))
    params = {"w": A.copy(), "b": B.copy()}
    state = step.init(params)
    step(params, state, A)
    frozen = A.copy()
    frozen.flags.writeable = False
    with pytest.raises(ArgumentError, match="params.w"):
        step({"w": frozen, "b": B.copy()}, state, A)
    with pytest.raises(ArgumentError, match="params.b"):
        step({"w": A.copy(), "b": np.asfortranarray(np.ones((2, 2), np.float32))[:, ::1].T.copy().T}, state, A)
    step(params, state, A)  # and the fast path works again afterwards


def test_training_step_with_aliased_arguments():
    """A batch that is the same array as a parameter: the update must not corrupt the batch read."""
    step = ff.compile_train_step(weighted, ff.optim.SGD(0.1))
    w = A.copy()
    params = {"w": w, "b": B.copy()}
    state = step.init(params)
    step({"w": A.copy(), "b": B.copy()}, state, A)  # prime the fast path with disjoint arrays
    step(params, state, w)  # x is params["w"] itself
    np.testing.assert_allclose(params["w"], A - 0.1 * A, rtol=1e-6)
    step(params, state, A)
    np.testing.assert_allclose(params["w"], A - 0.2 * A, rtol=1e-6)


def test_results_are_distinct_arrays_apart_from_the_arguments():
    """A value returned twice, an input returned as it is, a reshaped result: every result
    is its own array (the LLVM executable guarantees it, so the runtime skips its pass)."""
    f = ff.compile(lambda a, b: (a + b, a + b, a, (a * 2.0).reshape(4)))
    a, b = A.copy(), B.copy()
    for _ in range(2):  # the checked call, then the fast path
        outs = f(a, b)
        assert len({id(o) for o in outs}) == 4
        assert not any(np.shares_memory(o, p) for o in outs for p in (a, b))
        assert not np.shares_memory(outs[0], outs[1])
        np.testing.assert_array_equal(outs[1], a + b)
        np.testing.assert_array_equal(outs[2], a)
        np.testing.assert_array_equal(outs[3], (2 * a).reshape(4))
