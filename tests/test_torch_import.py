"""ff.from_torch: outputs and input/parameter gradients equal torch's (f32 <= 1e-5 relative,
f64 <= 1e-10), params keyed and laid out like module.state_dict()."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the oracles extra)")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")

import ffcompile as ff  # noqa: E402

TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


class Activations(torch.nn.Module):
    """Every activation; LeakyReLU's slope is exact in float32 because ONNX float
    attributes are float32 (a slope of 0.1 differs from torch's float64 by 1.5e-9)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(4))
        self.acts = [torch.nn.ReLU(), torch.nn.GELU(), torch.nn.GELU("tanh"), torch.nn.Tanh(),
                     torch.nn.Sigmoid(), torch.nn.SiLU(), torch.nn.ELU(), torch.nn.LeakyReLU(0.125),
                     torch.nn.Softplus(), torch.nn.Mish(), torch.nn.Hardswish(), torch.nn.Softsign()]

    def forward(self, x):
        for i, act in enumerate(self.acts):
            x = act(self.layers[i % 4](x))
        return torch.log_softmax(x, dim=-1)


class Residual(torch.nn.Module):
    """Embedding, LayerNorm, Dropout (eval), a residual addition and two inputs."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 8)
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, 3, bias=False)

    def forward(self, ids, features):
        h = self.embed(ids) + features
        h = self.norm(h + self.drop(torch.relu(self.fc(h))))
        return self.head(h).softmax(-1)


def _inputs(name, dtype):
    gen = torch.Generator().manual_seed(1)
    if name == "activations":
        return (torch.randn(5, 6, generator=gen, dtype=dtype),)
    return (torch.tensor([[1, 10, 3], [0, 3, 7]]), torch.randn(2, 3, 8, generator=gen, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["activations", "residual"])
def test_outputs_and_gradients_equal_torch(name, dtype):
    torch.manual_seed(0)
    module = (Activations() if name == "activations" else Residual()).to(dtype).eval()
    inputs = _inputs(name, dtype)
    fn, params = ff.from_torch(module, *inputs)
    state = module.state_dict()
    assert set(params) == set(state)
    for key, value in params.items():
        np.testing.assert_array_equal(value, state[key].numpy())  # torch's layout, e.g. [out, in]

    arrays = [x.numpy() for x in inputs]
    out = ff.compile(fn)(params, *arrays)
    expected = module(*inputs)
    np.testing.assert_allclose(out, expected.detach().numpy(), **TOLERANCE[dtype])

    # gradients of <out, cotangent> with respect to the parameters and the float input
    cotangent = np.random.default_rng(2).standard_normal(out.shape).astype(out.dtype)
    last = len(arrays)  # the float input is the last argument

    def loss(params, *xs):
        return (fn(params, *xs) * cotangent).sum()
    grads = ff.compile(ff.grad(loss, argnums=(0, last)))(params, *arrays)
    float_input = inputs[-1].clone().requires_grad_(True)
    torch_out = module(*inputs[:-1], float_input)
    (torch_out * torch.from_numpy(cotangent)).sum().backward()
    for key, p in module.named_parameters():
        np.testing.assert_allclose(grads[0][key], p.grad.numpy(), **TOLERANCE[dtype], err_msg=key)
    np.testing.assert_allclose(grads[1], float_input.grad.numpy(), **TOLERANCE[dtype])


class Classifier(torch.nn.Module):
    """A classifier's flatten, a batch-shaped constant, the batch size as a float and an
    arange over the batch: shape arithmetic on x.size(0) that batch_dim= folds at import."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(28, 3)

    def forward(self, x):
        logits = self.fc(x.view(x.size(0), -1)) + x.new_ones(x.shape[0], 3)
        return logits - logits.sum(0) / x.shape[0] + torch.arange(x.shape[0]).float()[:, None]


@pytest.mark.parametrize("name", ["classifier", "residual"])
def test_batch_dim_exports_one_trace_for_every_batch_size(name, backend):
    torch.manual_seed(0)
    module = Classifier() if name == "classifier" else Residual().eval()
    examples = {"classifier": lambda n: (torch.randn(n, 4, 7),),
                "residual": lambda n: (torch.randint(0, 11, (n, 3)), torch.randn(n, 3, 8))}[name]
    fn, params = ff.from_torch(module, *examples(2), batch_dim=0)
    axes = (None,) + (0,) * len(examples(2))
    symbolic = ff.compile(fn, batch_dim=axes)
    gradients = ff.compile(ff.grad(lambda p, *xs: (fn(p, *xs) ** 2).sum()), batch_dim=axes)
    for n in (1, 3, 8):
        inputs = examples(n)
        out = symbolic(params, *(x.numpy() for x in inputs))
        np.testing.assert_allclose(out, module(*inputs).detach().numpy(), **TOLERANCE[torch.float32])
        module.zero_grad()
        (module(*inputs) ** 2).sum().backward()
        grads = gradients(params, *(x.numpy() for x in inputs))
        for key, p in module.named_parameters():
            np.testing.assert_allclose(grads[key], p.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=f"{key} B={n}")
    assert symbolic.trace_count == 1 and gradients.trace_count == 1


def test_batch_dim_needs_an_example_batch_of_two_or_more():
    with pytest.raises(ValueError, match=r"batch axis must have size 2 or more .* shape \(1, 4, 7\)"):
        ff.from_torch(Classifier(), torch.randn(1, 4, 7), batch_dim=0)
    with pytest.raises(TypeError, match="batch_dim gives 2 axes for 1 example inputs"):
        ff.from_torch(Classifier(), torch.randn(2, 4, 7), batch_dim=(0, 0))
