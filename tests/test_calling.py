"""How a call reaches the program: keyword and static arguments, weakly typed Python
scalars, closed-over arrays, and errors that point at the user's line (issue 13)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import ArgumentError, DTypeError, ShapeError

pytestmark = pytest.mark.usefixtures("backend")

X = np.arange(6, dtype=np.float32).reshape(2, 3)


def scaled(x, scale=1.0, *, mode="sum"):
    y = x * scale
    return y.sum() if mode == "sum" else y.max()


def test_keyword_arguments_are_bound_like_python():
    cf = ff.compile(scaled, static_argnames="mode")
    assert cf(X, scale=3.0) == cf(X, 3.0) == 45.0
    assert cf(X) == 15.0  # the default
    assert cf(X, scale=2.0, mode="max") == 10.0
    with pytest.raises(ArgumentError, match="scaled: got an unexpected keyword argument 'shift'"):
        cf(X, shift=1.0)
    with pytest.raises(ArgumentError, match="multiple values for argument 'scale'"):
        cf(X, 2.0, scale=3.0)


def test_static_arguments_select_a_program_per_value():
    def pick(x, mode):
        return x.sum() if mode == "sum" else x.max()

    by_name = ff.compile(pick, static_argnames="mode")
    by_number = ff.compile(pick, static_argnums=1)
    for cf in (by_name, by_number):
        assert cf(X, "sum") == 15.0 and cf(X, mode="max") == 5.0 and cf(X, "sum") == 15.0
    assert len(by_number._cache) == 2  # one program per static value, reused
    assert '%0:f32[2,3] = input {name="x"}' in by_name.lower(X, "max").ir
    with pytest.raises(ArgumentError, match="static argument 1 must be hashable, got list"):
        by_number(X, ["sum"])
    with pytest.raises(ValueError, match="names 'nope', which is no parameter"):
        ff.compile(pick, static_argnames="nope")


def test_a_string_argument_that_is_not_static_says_how_to_fix_it():
    with pytest.raises(ArgumentError, match="argument mode: a str is not an array.*static"):
        ff.compile(lambda x, mode: x.sum())(X, "sum")


def test_python_scalars_are_weakly_typed_arguments():
    times = ff.compile(lambda a, s: a * s)
    got = times(X, 2)
    assert got.dtype == np.float32 and np.array_equal(got, X * 2)
    assert times(X, 2.5).dtype == np.float32
    assert times(X.astype(np.float64), 2.5).dtype == np.float64
    ints = np.arange(3, dtype=np.int32)
    assert times(ints, 3).dtype == np.int32
    with pytest.raises(DTypeError, match="a Python float argument .* meets a i32 value"):
        times(ints, 2.5)


def test_mixed_array_dtypes_are_a_dtype_error_naming_both():
    with pytest.raises(DTypeError, match=r"matmul: operand dtypes differ \(i64\[4,2\], f32\[2,8\]\)"):
        ff.compile(lambda a, b: a @ b)(np.ones((4, 2), np.int64), np.ones((2, 8), np.float32))
    assert issubclass(DTypeError, ShapeError)  # code catching ShapeError still sees it


def test_large_closed_over_arrays_are_inputs_read_at_call_time():
    w = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    small = np.float32([1.0, 2.0])  # at most CLOSURE_LITERAL_LIMIT elements: a literal
    cf = ff.compile(lambda x: (x @ w)[:, :2] * small)
    x = np.ones((2, 300), np.float32)
    first = cf(x)
    np.testing.assert_allclose(first, (x @ w)[:, :2] * small, rtol=1e-5)
    ir = cf.last_lowered.ir
    assert 'input {name="closure0"}' in ir and "constant {value=[1.0, 2.0]}" in ir
    w *= 2.0  # edited in place: the next call sees it
    np.testing.assert_allclose(cf(x), 2 * first, rtol=1e-5)
    w.shape = (20, 300)  # a reshaped closure is refused, not misread
    with pytest.raises(ArgumentError, match=r"argument closure0: expected f32\[300,20\]"):
        cf(x)


def test_closures_in_gradients_and_bound_calls():
    w = np.random.default_rng(1).normal(size=(30, 30))
    loss = ff.compile(ff.grad(lambda x: ff.tanh(x @ w).sum()))
    x = np.ones((2, 30))
    expected = (1 - np.tanh(x @ w) ** 2) @ w.T
    np.testing.assert_allclose(loss(x), expected, rtol=1e-10)
    bound = loss.bind(x)
    np.testing.assert_allclose(bound(), expected, rtol=1e-10)


def test_shape_errors_name_the_op_types_module_and_user_line():
    model = ff.nn.Sequential(ff.nn.Linear(3, 4), ff.nn.ReLU(), ff.nn.Linear(5, 2))
    line = sys._getframe().f_lineno - 1
    params = model.init(0)
    with pytest.raises(ShapeError) as info:
        ff.compile(lambda p, x: model(p, x).sum())(params, np.ones((2, 3), np.float32))
    first = str(info.value).splitlines()[0]
    assert first.startswith("matmul: contracting dimensions differ (4 vs 5)")
    assert "f32[2,4], f32[5,2]" in first and f"test_calling.py:{line} @layers.2" in first
    frames = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert all("/ffcompile/" not in f or f.endswith("api.py") for f in frames), frames


def test_errors_in_the_users_own_code_point_at_that_line():
    def f(x):
        return x.reshape(4, 4)  # the line named

    line = sys._getframe().f_lineno - 2
    with pytest.raises(ShapeError, match=f"reshape: .* at (tests/)?test_calling.py:{line}$"):
        ff.compile(f)(X)


def test_dump_of_a_model_file_locates_nodes_in_that_file(tmp_path):
    model_file = tmp_path / "tiny.py"
    model_file.write_text(textwrap.dedent("""\
        import numpy as np
        import ffcompile as ff
        model = ff.nn.Sequential(ff.nn.Linear(3, 4),
                                 ff.nn.Tanh())
        def loss(params, x, y):
            return ff.nn.mse(model(params, x), y)
        def example_inputs(batch_size=4):
            x, y = np.ones((batch_size, 3), np.float32), np.ones((batch_size, 4), np.float32)
            return model.init(0), x, y
    """))
    for extra in ([], ["--train"]):
        out = subprocess.run([sys.executable, "-m", "ffcompile.cli", "dump", str(model_file), *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert 'loc("tiny.py":3 @layers.0)' in out.stdout and 'loc("tiny.py":4 @layers.1)' in out.stdout
        assert "cli.py" not in out.stdout and "bin/ffcompile" not in out.stdout
