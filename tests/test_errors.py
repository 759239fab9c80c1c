"""Bad input gets a clear Python error naming the op and the shapes; odd but valid input works."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import ArgumentError, ShapeError

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")


def run(fn, *args):
    return ff.compile(fn)(*args)


X = np.ones((3, 4))


@pytest.mark.parametrize("fn, args, pieces", [
    (lambda a, b: a @ b, (X, np.ones((5, 2))), ["matmul", "contracting dimensions differ (4 vs 5)",
                                                "f64[3,4]", "f64[5,2]"]),
    (lambda a, b: a @ b, (np.ones((2, 3, 4)), np.ones((5, 4, 2))), ["matmul", "batch dimensions",
                                                                    "f64[2,3,4]", "f64[5,4,2]"]),
    (lambda a, b: a + b, (X, np.ones(5)), ["add", "do not broadcast", "f64[3,4]", "f64[5]"]),
    (lambda a, b: ff.maximum(a, b), (X, np.ones((2, 4))), ["maximum", "f64[3,4]", "f64[2,4]"]),
    (lambda a, b: ff.concatenate([a, b], axis=0), (X, np.ones((2, 5))),
     ["concat", "shapes differ outside axis 0", "f64[3,4]", "f64[2,5]"]),
    (lambda a: a.reshape(5, 2), (X,), ["reshape", "[5, 2]", "f64[3,4]"]),
    (lambda a: a.sum(axis=2), (X,), ["axis 2 out of range", "f64[3,4]"]),
])
def test_shape_errors_at_trace_time(fn, args, pieces):
    with pytest.raises(ShapeError) as info:
        run(fn, *args)
    for piece in pieces:
        assert piece in str(info.value)


@pytest.mark.parametrize("fn, args, pieces", [
    (lambda a, b: a + b, (X, np.ones(4, np.float32)), ["add", "dtypes differ", "f64[3,4]", "f32[4]"]),
    (lambda a, b: a @ b, (np.ones((3, 4), np.int64), np.ones((4, 2))), ["matmul", "i64[3,4]", "f64[4,2]"]),
    (lambda a: a + 0.5, (np.ones(3, np.int32),), ["cannot mix the float 0.5", "i32"]),
    (lambda a: ff.exp(a), (np.ones(3, np.int64),), ["exp", "floating-point", "i64[3]"]),
    (lambda a, b: a * b, (np.ones(2, bool), np.ones(2, bool)), ["mul", "bool"]),
    (lambda a, b: ff.where(a, b, b), (np.ones(2), np.ones(2)), ["select", "predicate must be bool"]),
])
def test_dtype_mixes_are_rejected(fn, args, pieces):
    with pytest.raises(ShapeError) as info:
        run(fn, *args)
    for piece in pieces:
        assert piece in str(info.value)


def test_a_call_that_differs_from_the_spec():
    cf = ff.compile(lambda x: x.sum(), spec=(ff.spec((4, 3), "float64"),))
    assert cf(np.ones((4, 3))) == 12.0
    with pytest.raises(ArgumentError, match=r"argument x: spec says f64\[4,3\], got f32\[4,3\]"):
        cf(np.ones((4, 3), np.float32))
    with pytest.raises(ArgumentError, match=r"argument x: spec says f64\[4,3\], got f64\[12\]"):
        cf(np.ones(12))
    with pytest.raises(ArgumentError, match="do not match the declared spec structure"):
        cf(np.ones((4, 3)), np.ones(3))


def test_wrong_number_of_arguments():
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'b'"):
        run(lambda a, b: a + b, X)
    executable = ff.compile(lambda a, b: a + b).lower(X, X).compile()
    with pytest.raises(ArgumentError, match="expected 2 array arguments, got 1"):
        executable(X)
    with pytest.raises(ArgumentError, match=r"argument b: expected f64\[3,4\], got float64\[4, 3\]"):
        executable(X, np.ones((4, 3)))


@pytest.mark.parametrize("bad, says", [("hello", "a str is not an array; .* mark it static"),
                                       (object(), "unsupported dtype"),
                                       (np.array(["a", "b"]), "unsupported dtype"),
                                       (np.ones(3, np.float16), "unsupported dtype float16; ffcompile supports")])
def test_non_array_arguments_are_named(bad, says):
    with pytest.raises(ArgumentError, match=f"argument x: {says}"):
        run(lambda x: x * 2.0, bad)


def test_python_control_flow_on_traced_values():
    def branchy(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(TypeError, match="no concrete truth value.*ff.where"):
        run(branchy, X)
    with pytest.raises(TypeError, match="no concrete number"):
        run(lambda x: float(x.sum()), X)
    with pytest.raises(TypeError, match="cannot become a NumPy array"):
        run(lambda x: np.asarray(x), X)
    with pytest.raises(TypeError, match="call them inside ff.compile"):
        ff.relu(X)


def test_unsupported_indexing_and_transforms():
    with pytest.raises(IndexError, match="negative slice steps"):
        run(lambda x: x[::-1], X)
    with pytest.raises(IndexError, match=r"too many indices for a value of type f64\[3,4\]"):
        run(lambda x: x[0, 0, 0], X)
    with pytest.raises(IndexError, match="index 3 out of bounds for axis 0 of size 3"):
        run(lambda x: x[3], X)
    with pytest.raises(ShapeError, match=r"grad needs a scalar float output, got f64\[3,4\]"):
        ff.grad(lambda x: x * 2.0)(X)
    with pytest.raises(ShapeError, match=r"cannot differentiate with respect to i64\[3\]"):
        ff.grad(lambda x: (x * 2).sum())(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        ff.compile(lambda x: x, backend="cuda")


@pytest.mark.parametrize("make", [
    lambda a: a[:, ::2],  # strided view
    lambda a: a.T,  # transposed view
    lambda a: np.asfortranarray(a),
    lambda a: a[::-1],  # negative strides
    lambda a: np.broadcast_to(a[:1], a.shape),  # zero strides, read-only
])
def test_non_contiguous_inputs_work(make):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 6))
    original = base.copy()
    x = make(base)
    assert not x.flags.c_contiguous or not x.flags.writeable
    w = rng.normal(size=(x.shape[1], 2))
    expected = np.tanh(x @ w).sum() + x[1:, :].max()
    got = run(lambda x, w: ff.tanh(x @ w).sum() + x[1:, :].max(), x, w)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    grad = ff.compile(ff.grad(lambda x: (x * x).sum()))(x)
    np.testing.assert_array_equal(grad, 2 * x)
    assert np.array_equal(base, original)  # the caller's arrays are never written


@pytest.mark.parametrize("fn, args, expected", [
    (lambda x, w: ff.tanh(x @ w), (np.ones((0, 5)), np.ones((5, 3))), np.zeros((0, 3))),
    (lambda x: x.sum(axis=0), (np.ones((0, 6)),), np.zeros(6)),
    (lambda x: ff.softmax(x, axis=0), (np.ones((3, 0)),), np.zeros((3, 0))),
], ids=["matmul", "sum", "softmax"])
def test_zero_size_arrays_work(fn, args, expected):
    np.testing.assert_array_equal(run(fn, *args), expected)


def test_zero_size_arrays_through_a_kernel_of_two_transcendentals():
    # The NumPy arena program once had no scratch offset for a kernel whose scratch is 0 bytes.
    np.testing.assert_array_equal(run(lambda x: ff.tanh(x) + ff.exp(x), np.ones((0, 7))), np.ones((0, 7)))


def test_nan_and_inf_propagate():
    x = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(run(lambda x: ff.relu(x) + ff.exp(x * 0.0), x),
                                      np.maximum(x, 0) + np.exp(x * 0.0))
        assert np.isnan(run(lambda x: x.sum(), x))
        assert np.array_equal(run(lambda x: ff.tanh(x), x), np.tanh(x), equal_nan=True)
        assert np.all(np.isnan(run(lambda x: ff.softmax(x, axis=1), x)[0]))
        g = ff.compile(ff.grad(lambda x: (ff.sigmoid(x) * x).sum()))(x)
    assert np.isnan(g[0, 1]) and np.isfinite(g[0, 0])


@pytest.mark.parametrize("where", ["params", "batch"])
def test_nested_python_lists_are_pytrees_not_arrays(where):
    """A nested list of numbers is a pytree of scalar inputs (as in JAX): used as an array
    it fails saying so and naming the fix, not with a misleading NumPy conversion error."""
    nested = [[1.0, 2.0], [3.0, 4.0]]
    x, w = X[:, :2].copy(), np.ones((2, 2), X.dtype)
    args = ({"w": nested}, x) if where == "params" else ({"w": w}, nested)
    with pytest.raises(TypeError, match="Python list of traced values is not an array.*np.asarray"):
        ff.compile(lambda p, x: (x @ p["w"]).sum())(*args)
    got = ff.compile(lambda p, x: (x @ p["w"]).sum())({"w": np.asarray(nested, X.dtype)}, x)
    assert got == pytest.approx(float((x @ np.asarray(nested)).sum()), rel=1e-6)
