"""nn.Embedding against torch.nn.Embedding (init, forward and the weight's gradient in
float64) and in a compiled training step."""
import numpy as np
import pytest

import ffcompile as ff

pytestmark = pytest.mark.usefixtures("backend")


def test_embedding_initializes_like_torch():
    module = ff.nn.Embedding(1000, 16)
    weight = module.init(0)["weight"]
    assert weight.shape == (1000, 16) and weight.dtype == np.float32 and repr(module) == "Embedding(1000, 16)"
    assert abs(weight.mean()) < 0.02 and abs(weight.std() - 1.0) < 0.02  # N(0, 1), as torch's normal_


@pytest.mark.parametrize("ids_shape", [(), (7,), (2, 3)])
def test_embedding_matches_torch_forward_and_weight_gradient(ids_shape):
    torch = pytest.importorskip("torch", reason="torch.nn.Embedding is the oracle")
    rng = np.random.default_rng(3)
    module = ff.nn.Embedding(6, 4)
    params = module.init(1, dtype="float64")
    ids = rng.integers(0, 6, ids_shape)
    weights = rng.normal(size=ids_shape + (4,))
    reference = torch.nn.Embedding(6, 4, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(params["weight"]))
    out = reference(torch.tensor(ids))
    np.testing.assert_allclose(module(params, ids), out.detach().numpy(), rtol=1e-10, atol=0)
    (out * torch.tensor(weights)).sum().backward()
    grad = ff.compile(ff.grad(lambda p, i: (module(p, i) * weights).sum()))(params, ids)
    np.testing.assert_allclose(grad["weight"], reference.weight.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_embedding_trains_in_a_compiled_step():
    # A bag-of-words classifier: the label is whether token 0 occurs; only the looked-up
    # rows of the table receive gradient, so the step exercises the scatter-add.
    model = ff.nn.Embedding(10, 4)
    head = ff.nn.Linear(4, 2)
    params = {"embed": model.init(0), "head": head.init(1)}
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 8, (32, 5)).astype(np.int32)  # rows 8 and 9 are never looked up
    labels = rng.integers(0, 2, 32).astype(np.int32)
    ids[labels == 1, 0] = 0

    def loss(p, ids, labels):
        return ff.nn.cross_entropy(head(p["head"], model(p["embed"], ids).mean(axis=1)), labels)

    step = ff.compile_train_step(loss, ff.optim.Adam(0.05))
    state = step.init(params)
    untouched = params["embed"]["weight"][8:].copy()
    losses = [float(step(params, state, ids, labels)) for _ in range(40)]
    assert losses[-1] < 0.3 * losses[0]
    np.testing.assert_array_equal(params["embed"]["weight"][8:], untouched)


def test_embedding_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_embeddings and dim must be positive integers, got 0 and 3"):
        ff.nn.Embedding(0, 3)
