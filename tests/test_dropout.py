"""nn.Dropout: identity in evaluation; in training, inverted dropout drawn from the call's key,
a fresh mask per key and per dropout call, one compiled step for every key."""
from __future__ import annotations

import numpy as np
import pytest

import ffcompile as ff

pytestmark = pytest.mark.usefixtures("backend")

R = ff.random


def test_evaluation_is_the_identity():
    model = ff.nn.Sequential(ff.nn.Linear(6, 5), ff.nn.Dropout(0.5), ff.nn.ReLU())
    bare = ff.nn.Sequential(ff.nn.Linear(6, 5), ff.nn.ReLU())
    params = model.init(0)
    bare_params = {"layers": [params["layers"][0], {}]}
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    expected = bare(bare_params, x)
    assert np.array_equal(model(params, x), expected)
    assert np.array_equal(model(params, x, key=R.key(1), train=False), expected)


def test_training_zeroes_p_of_the_values_and_scales_the_rest():
    dropout, p = ff.nn.Dropout(0.3), 0.3
    x = np.random.default_rng(1).uniform(1.0, 2.0, (200, 500)).astype(np.float32)
    y = dropout({}, x, key=R.key(2))
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 4 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    # the mask is bernoulli(1 - p) of the key folded with the call's ordinal 0
    assert np.array_equal(kept, R.bernoulli(R.fold_in(R.key(2), 0), 1 - p, x.shape))


def test_each_key_and_each_dropout_call_draws_its_own_mask():
    twice = ff.nn.Sequential(ff.nn.Dropout(0.5), ff.nn.Dropout(0.5))
    shared = ff.nn.Dropout(0.5)

    class Shared(ff.nn.Module):
        def __init__(self):
            self.drop = shared

        def forward(self, params, x):
            return self.drop(params["drop"], x), self.drop(params["drop"], x)

    ones = np.ones((64, 64), np.float32)
    a, b = Shared()({"drop": {}}, ones, key=R.key(3))
    assert not np.array_equal(a, b)  # one module called twice: two masks
    same = twice({"layers": [{}, {}]}, ones, key=R.key(3))
    assert np.array_equal(same, twice({"layers": [{}, {}]}, ones, key=R.key(3)))
    assert not np.array_equal(same, twice({"layers": [{}, {}]}, ones, key=R.key(4)))
    assert set(np.unique(same)) <= {0.0, 4.0}  # two layers of 1/(1-p) scaling


def test_gradient_flows_through_kept_values_only():
    dropout = ff.nn.Dropout(0.25)
    x = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)
    key = R.key(5)
    grad = ff.grad(lambda x, k: (dropout({}, x, key=k) * x).sum())(x, key)
    mask = R.bernoulli(R.fold_in(key, 0), 0.75, x.shape)
    np.testing.assert_allclose(grad, np.where(mask, 2 * x / 0.75, 0.0), rtol=1e-6)


def test_a_training_step_compiles_once_for_every_key():
    model = ff.nn.Sequential(ff.nn.Linear(4, 16), ff.nn.ReLU(), ff.nn.Dropout(0.2), ff.nn.Linear(16, 3))
    traces = []

    def loss(params, x, labels, key):
        traces.append(1)
        return ff.nn.cross_entropy(model(params, x, key=key), labels)

    rng = np.random.default_rng(3)
    x, labels = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
    params = model.init(0)
    step = ff.compile_train_step(loss, ff.optim.SGD(0.1))
    state = step.init(params)
    losses = [float(step(params, state, x, labels, key)) for key in R.split(R.key(0), 20)]
    assert len(traces) == 1
    assert len(set(losses)) == len(losses)  # every step saw another mask
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_training_without_a_key_says_how_to_pass_one():
    model = ff.nn.Sequential(ff.nn.Linear(2, 2), ff.nn.Dropout(0.1))
    with pytest.raises(ValueError, match=r"Dropout in training needs a key: .*key=ff.random.key"):
        model(model.init(0), np.ones((1, 2), np.float32), train=True)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        ff.nn.Dropout(1.5)


def test_p_zero_and_one():
    x = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(ff.nn.Dropout(0.0)({}, x, key=R.key(0)), x)
    assert np.array_equal(ff.nn.Dropout(1.0)({}, x, key=R.key(0)), np.zeros_like(x))
