"""Integer-array indexing (`x[idx]`, `ff.take`): NumPy's results and shapes, the
scatter-add gradient, clear errors, and torch as the oracle where installed."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir import DTypeError

pytestmark = pytest.mark.usefixtures("backend")

X = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)

# Index forms and where NumPy puts the array's axes: in place of the indexed axis when the
# integer and array indices are adjacent, first when a slice or None separates them.
INDEXES = [
    np.array([0, -1, 1, 1]),
    [1, 0],
    np.array(1),
    (slice(None), np.array([[2, -1], [0, 0]])),
    (0, slice(None), [1, 3]),
    (slice(None), 0, [1, 3]),
    (1, [2, 0], 3),
    (0, None, [0, 2]),
    (None, 1, [0, 2]),
    (Ellipsis, [0, 4, 4]),
    ([1, 0], Ellipsis, 2),
    (slice(1, None), [2], slice(None, None, 2), None),
]


@pytest.mark.parametrize("index", INDEXES, ids=repr)
def test_constant_integer_array_indexing_matches_numpy(index):
    got = ff.compile(lambda x: x[index])(X)
    expected = X[index]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_the_issue_example_no_longer_asks_for_a_truth_value():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(ff.compile(lambda x: x[np.array([0, 2])])(x), x[[0, 2]])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_traced_indices_match_numpy_and_wrap_negatives(dtype):
    idx = np.array([[3, -1], [0, -4]], dtype=dtype)
    f = ff.compile(lambda x, i: (x[i], x[:, i], ff.take(x, i, axis=-1)))
    rows, columns, last = f(X[0, 0], idx)
    np.testing.assert_array_equal(rows, X[0, 0][idx])
    np.testing.assert_array_equal(columns, X[0, 0][:, idx])
    np.testing.assert_array_equal(last, np.take(X[0, 0], idx, axis=-1))


def test_traced_indices_out_of_range_select_zeros():
    # No run-time error can be raised from inside the program: the one-hot row is empty.
    got = ff.compile(lambda x, i: x[i])(X[0, 0], np.array([4, -5, 1]))
    np.testing.assert_array_equal(got, [np.zeros(5), np.zeros(5), X[0, 0, 1]])


def test_integer_tables_are_gathered_exactly():
    table = np.arange(12, dtype=np.int64).reshape(4, 3) * 1_000_003
    np.testing.assert_array_equal(ff.compile(lambda t, i: t[i])(table, np.array([3, 0, 3])), table[[3, 0, 3]])


def test_gradient_is_a_scatter_add_of_repeated_rows():
    table = np.random.default_rng(0).normal(size=(5, 3))
    idx = np.array([[4, 1], [4, -1], [0, 2]])
    weights = np.random.default_rng(1).normal(size=(3, 2, 3))
    grad = ff.compile(ff.grad(lambda t, i: (t[i] * weights).sum()))(table, idx)
    expected = np.zeros_like(table)
    np.add.at(expected, idx % 5, weights)
    np.testing.assert_allclose(grad, expected, rtol=1e-14, atol=1e-15)
    ff.check_grads(lambda t: (ff.take(t, idx, axis=0) * weights).sum(), [table], order=2)


def test_gradient_matches_torch_index_select():
    torch = pytest.importorskip("torch", reason="torch.index_select is the oracle")
    rng = np.random.default_rng(2)
    x, idx, weights = rng.normal(size=(3, 6, 2)), np.array([5, 0, 5, 2]), rng.normal(size=(3, 4, 2))
    grad = ff.compile(ff.grad(lambda x, i: (ff.take(x, i, axis=1) * weights).sum()))(x, idx)
    tx = torch.tensor(x, requires_grad=True)
    (torch.index_select(tx, 1, torch.tensor(idx)) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("index, error, message", [
    (np.array([0, 3]), IndexError, r"index 3 out of bounds for axis 0 of size 3 \(f64\[3,4\]\)"),
    ((slice(None), [-5]), IndexError, r"index -5 out of bounds for axis 1 of size 4"),
    ((0, [4]), IndexError, r"index 4 out of bounds for axis 1 of size 4 \(f64\[3,4\]\)"),
    (np.array([True, False, True]), IndexError, "boolean mask indexing is not supported"),
    ([True, False, True], IndexError, "boolean mask indexing is not supported"),
    (([0], [1]), IndexError, "only one integer array index is supported"),
    (np.array([0.5]), IndexError, "take: indices must be integers, got an array of float64"),
])
def test_bad_constant_indices_fail_at_trace_time(index, error, message):
    with pytest.raises(error, match=message):
        ff.compile(lambda x: x[index])(np.zeros((3, 4)))


def test_bad_traced_indices_and_tables_are_refused_clearly():
    with pytest.raises(DTypeError, match=r"take: indices must be i32 or i64, got f64\[2\]"):
        ff.compile(lambda x, i: ff.take(x, i))(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(DTypeError, match=r"take: x must be numeric .* got bool\[3\]"):
        ff.compile(lambda x, i: ff.take(x > 0, i))(np.zeros(3), np.zeros(2, np.int64))
    with pytest.raises(IndexError, match="boolean mask indexing is not supported"):
        ff.compile(lambda x: x[x > 0])(np.zeros(3))
    with pytest.raises(ff.ShapeError, match=r"take: cannot index a scalar \(f64\[\]\)"):
        ff.compile(lambda x: ff.take(x, [0]))(np.float64(1.0))
