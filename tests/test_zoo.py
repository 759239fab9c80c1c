"""The model zoo: every workload traces and runs forward + gradient; shapes match the spec."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import nn, zoo
from ffcompile.tree import tree_flatten, tree_map

# Runs on every backend (conftest.backend); test ids end in [numpy] / [llvm].
pytestmark = pytest.mark.usefixtures("backend")

EXPECTED = {  # name: (default batch, widths of the Linear layers in order, loss)
    "xor": (4, [(2, 8), (8, 1)], nn.mse),
    "digits": (64, [(64, 128), (128, 128), (128, 10)], nn.cross_entropy),
    "mnist": (128, [(784, 512), (512, 512), (512, 10)], nn.cross_entropy),
    "wide": (256, [(1024, 4096), (4096, 4096), (4096, 1024)], nn.mse),
    "deep": (64, [(256, 256)] * 32 + [(256, 10)], nn.cross_entropy),
}


def test_zoo_has_the_measured_workloads():
    assert zoo.names() == ["xor", "digits", "mnist", "wide", "deep", "two_tower"]
    with pytest.raises(KeyError, match="unknown zoo model 'resnet'"):
        zoo.get("resnet")


@pytest.mark.parametrize("name", EXPECTED)
def test_mlp_architectures(name):
    batch, widths, criterion = EXPECTED[name]
    w = zoo.get(name)
    assert w.batch_size == batch and w.criterion is criterion
    types = w.model.param_types()
    assert [tuple(layer["linear"]["w"].shape) for layer in types["layers"]] == widths
    x, y = w.batch()
    assert x.shape == (batch, widths[0][0]) and x.dtype == np.float32
    assert y.dtype == (np.float32 if criterion is nn.mse else np.int32)


def test_activations_of_the_mlps():
    acts = {name: [type(layer.act) for layer in zoo.get(name).model.layers] for name in EXPECTED}
    assert acts["xor"] == [nn.Tanh, nn.Sigmoid]
    assert acts["digits"] == acts["mnist"] == [nn.ReLU, nn.ReLU, type(None)]
    assert acts["deep"] == [nn.Tanh] * 32 + [type(None)]
    wide = zoo.get("wide").model.layers
    assert [getattr(layer.act, "approximate", None) for layer in wide] == ["tanh", "tanh", None]


def test_xor_batch_is_the_truth_table():
    x, y = zoo.get("xor").batch()
    np.testing.assert_array_equal(y[:, 0], np.logical_xor(x[:, 0], x[:, 1]))
    assert {tuple(r) for r in x} == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("name", ["xor", "digits", "mnist", "deep", "two_tower"])
def test_forward_and_gradient_run(name):
    w = zoo.get(name)
    params, x, y = w.example_inputs(seed=1, batch_size=4)
    value, grads = ff.compile(ff.value_and_grad(w.loss))(params, x, y)
    assert value.dtype == np.float32 and value.shape == () and np.isfinite(value)
    np.testing.assert_allclose(value, ff.compile(w.loss)(params, x, y), rtol=1e-6)
    assert tree_map(np.shape, grads) == tree_map(np.shape, params)
    flat = tree_flatten(grads)[0]
    assert all(g.dtype == np.float32 and np.all(np.isfinite(g)) for g in flat)
    assert all(np.any(g != 0) for g in flat), "every parameter should receive a gradient"


def test_predict_is_the_model_output():
    w = zoo.get("digits")
    params, x, _ = w.example_inputs(batch_size=3)
    h = x
    for i, layer in enumerate(params["layers"]):
        h = h @ layer["linear"]["w"] + layer["linear"]["b"]
        h = np.maximum(h, 0) if i < 2 else h
    np.testing.assert_allclose(ff.compile(w.predict)(params, x), h, rtol=1e-5, atol=1e-6)


def test_two_tower_is_a_dag_with_a_shared_projection():
    w = zoo.get("two_tower")
    params, (image, text), y = w.example_inputs(batch_size=2)
    assert set(params) == {"image", "text", "project", "classifier"}
    assert image.shape == (2, 196) and text.shape == (2, 300) and y.shape == (2,)
    ir = ff.compile(w.predict).lower(params, (image, text)).ir
    # one projection weight, read by two matmuls (the image and the text branch)
    weight = next(line.split(":")[0].strip() for line in ir.splitlines() if '"params.project.linear.w"' in line)
    assert sum(f", {weight} " in line or line.rstrip().endswith(f", {weight}") for line in ir.splitlines()
               if "= matmul" in line) == 2
    assert "concat" in ir and "@project.act)" in ir and "@classifier.layers.0.act)" in ir


def test_wide_traces_on_placeholders_without_drawing_weights():
    w = zoo.get("wide")
    params, x, y = w.placeholder_inputs()
    leaves = tree_flatten(params)[0]
    assert sum(p.size for p in leaves) == 1024 * 4096 + 4096 * 4096 + 4096 * 1024 + 4096 * 2 + 1024
    assert all(p.strides == (0,) * p.ndim for p in leaves)  # nothing stored
    lowered = ff.compile(ff.value_and_grad(w.loss)).lower(params, x, y)
    assert lowered.graph.output_types[0] == ff.TensorType((), "f32")
    assert [t.shape for t in lowered.graph.output_types[1:]] == [p.shape for p in leaves]
    assert "tanh" in lowered.ir  # the GELU tanh form
