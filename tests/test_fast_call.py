"""The ordinary call's fast path (issue 19 item 4): per-structure generated leaf
extraction and result building (tree.py), and the LLVM backend's native argument checks
(codegen/llvm/fastcall.py). It must accept exactly what the checked path runs unchecked,
refuse everything else without running (the full path then copies, converts or raises),
and be taken on a repeated call: counted, not timed."""
import numpy as np
import pytest
from hypothesis import given

import ffcompile as ff
from ffcompile import api
from ffcompile.codegen.llvm import fastcall
from ffcompile.tree import leaf_extractor, tree_flatten, tree_leaves_like, unflattener

from test_tree import Pair, trees

A = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
B = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)


# --------------------------------------------------------------------------- generated tree code


@given(trees, trees)
def test_generated_extraction_agrees_with_the_matcher(tree, other):
    """On its own structure and on any other tree: the same leaves, or None where the
    matcher says no (container subclasses aside, which the generated code refuses too)."""
    leaves, treedef = tree_flatten(tree)
    extract = leaf_extractor(treedef)
    assert extract(tree) is not None and all(a is b for a, b in zip(extract(tree), leaves))
    expected = tree_leaves_like(other, treedef)
    got = extract(other)
    if expected is None:
        assert got is None or not all(type(x) is np.ndarray for x in got)  # a leaf slot holds a non-array
    else:
        assert got is not None and all(a is b for a, b in zip(got, expected))
    rebuilt = unflattener(treedef)(leaves)
    assert tree_flatten(rebuilt)[1] == treedef
    assert all(a is b for a, b in zip(tree_flatten(rebuilt)[0], leaves))


def test_extraction_refuses_subclasses_and_other_keys():
    _, treedef = tree_flatten({"a": [A, (B,)], "b": None})
    extract = leaf_extractor(treedef)

    class MyList(list):
        pass

    assert extract({"a": [A, (B,)], "b": None}) == (A, B)
    assert extract({"a": MyList([A, (B,)]), "b": None}) is None
    assert extract({"a": [A, (B,)], "c": None}) is None
    assert extract({"a": [A, (B,)], "b": A}) is None
    assert extract({"a": [A, Pair(B, None)], "b": None}) is None


def test_deep_structures_fall_back_to_the_generic_code():
    """A result built as one expression nested deeper than Python's parser takes (200
    levels): the generic builder stands in."""
    tree = A
    for _ in range(250):
        tree = [tree]
    leaves, treedef = tree_flatten(tree)
    assert leaf_extractor(treedef)(tree) == (A,)
    assert tree_flatten(unflattener(treedef)(leaves))[1] == treedef


# --------------------------------------------------------------------------- native checks


def test_native_checks_are_available_on_cpython():
    """The struct offsets were verified on live objects; if this fails, every call takes
    the checked Python path (correct, ~3x slower), so it must not go unnoticed."""
    assert fastcall.available()


def _program(fn, *args, **options):
    cf = ff.compile(fn, backend="llvm", **options)
    cf(*args)
    return cf, cf._recent[4].program


def test_native_checks_refuse_what_the_checked_path_must_handle():
    cf, program = _program(lambda x, y: x * y + 1.0, A, B)
    assert np.array_equal(program.call_objects((A, B))[0], A * B + 1)
    base = np.zeros(2 * A.size * 4 + 1, np.uint8)
    misaligned = np.frombuffer(base.data, np.float32, A.size, offset=1).reshape(2, 2)
    frozen = B.copy()
    frozen.flags.writeable = False

    class Sub(np.ndarray):
        pass

    refused = [A.astype(np.float64), np.ones((2, 3), np.float32), np.ones(4, np.float32),
               np.asfortranarray(B), B[:, :1], misaligned, B.view(Sub), [[1.0, 2.0], [3.0, 4.0]], 2.0, None]
    for other in refused:
        assert program.call_objects((A, other)) is None, other
    assert program.call_objects((A, frozen)) is not None  # read-only is fine where not donated
    for other in refused[3:7]:  # the full path copies these, or compiles their signature
        np.testing.assert_allclose(cf(A, other), A * np.asarray(other, np.float32) + 1)


def test_native_checks_guard_donated_arguments():
    step = ff.compile_train_step(lambda p, x: (p["w"] * x).sum(), ff.optim.SGD(0.5), backend="llvm")
    params = {"w": A.copy()}
    state = step.init(params)
    step(params, state, B)
    program = step._compiled._recent[4].program
    hyper = step.hyperparameters(state)
    frozen = A.copy()
    frozen.flags.writeable = False

    def leaves(w, x):
        return tuple(tree_flatten(({"w": w}, state, hyper, x))[0])

    assert program.call_objects(leaves(params["w"], B)) is not None
    assert program.call_objects(leaves(frozen, B)) is None  # donated: must be writeable
    w = params["w"]
    assert program.call_objects(leaves(w, w)) is None  # donated and read: overlap
    assert program.call_objects(leaves(w, w[::-1].copy())) is not None
    with pytest.raises(ff.ArgumentError, match="params.w"):
        step({"w": frozen}, state, B)


# --------------------------------------------------------------------------- the fast path is taken


@pytest.fixture
def full_path_calls(monkeypatch):
    """How many calls went the full path (CompiledFunction.prepare, which the fast one never calls)."""
    count = [0]
    prepare = api.CompiledFunction.prepare

    def counted(self, *args, **kwargs):
        count[0] += 1
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(api.CompiledFunction, "prepare", counted)
    return count


@pytest.mark.usefixtures("backend")
def test_repeated_calls_take_the_fast_path(full_path_calls):
    f = ff.compile(lambda t: {"sum": t["u"] * 2.0 + t["v"], "pair": Pair(t["u"], None)})
    u, v = A.copy(), B.copy()
    for _ in range(5):
        out = f({"v": v, "u": u})
        np.testing.assert_allclose(out["sum"], 2 * u + v)
        assert isinstance(out["pair"], Pair) and out["pair"].second is None
        assert out["pair"].first is not u and np.array_equal(out["pair"].first, u)
    assert full_path_calls[0] == 1  # the first call, which compiled
    f({"v": v, "u": np.asfortranarray(u)})  # refused by the fast path: the full path runs
    assert full_path_calls[0] == 2


@pytest.mark.usefixtures("backend")
def test_training_steps_take_the_fast_path(full_path_calls):
    step = ff.compile_train_step(lambda p, x: (p["w"] * x).sum() + p["b"].sum(), ff.optim.Adam(0.1))
    params = {"w": A.copy(), "b": B.copy()}
    state = step.init(params)
    reference = ff.compile_train_step(lambda p, x: (p["w"] * x).sum() + p["b"].sum(), ff.optim.Adam(0.1),
                                      backend="numpy")
    expected = {k: v.copy() for k, v in params.items()}
    expected_state = reference.init(expected)
    for _ in range(4):
        loss = step(params, state, B)
        assert float(loss) == pytest.approx(float(reference(expected, expected_state, B)), rel=1e-6)
    np.testing.assert_allclose(params["w"], expected["w"], rtol=1e-5)
    assert full_path_calls[0] == 2  # the first call of each step, which compiled


def test_small_programs_run_holding_the_gil_and_large_ones_release_it():
    """Below HOLD_GIL_MAX_FLOPS the GIL keeps concurrent runs off the arena (no lock, no GIL
    release: a bound xor step 0.69 -> 0.37 us); above, other threads run meanwhile."""
    from ffcompile.codegen.llvm.backend import HOLD_GIL_MAX_FLOPS

    _, small = _program(lambda x, y: x * y + 1.0, A, B)
    big = np.ones((256, 256), np.float32)
    _, large = _program(lambda x, y: x @ y, big, big)
    assert small.holds_gil and not large.holds_gil
    assert 2 * 256 ** 3 > HOLD_GIL_MAX_FLOPS


def test_concurrent_calls_of_a_program_holding_the_gil():
    import threading

    f = ff.compile(lambda x, y: (x * y).sum() + x, backend="llvm")
    x, y = A.copy(), B.copy()
    bound = f.bind(x, y)
    expected = (A * B).sum() + A
    errors = []

    def work(call):
        for _ in range(2000):
            if not np.allclose(call(), expected):
                errors.append(1)

    threads = [threading.Thread(target=work, args=(call,))
               for call in (bound, lambda: f(x, y), bound, lambda: f(x, y))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and f._recent[4].program.holds_gil
