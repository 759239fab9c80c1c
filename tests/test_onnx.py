"""ff.onnx.load and ff.onnx.export: imported models compile, differentiate and train;
exported models pass onnx.checker and agree under onnxruntime; errors name the node."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")

from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import ffcompile as ff  # noqa: E402
from ffcompile import zoo  # noqa: E402

RNG = np.random.default_rng(0)


def make_model(nodes, inputs, outputs, inits=(), opset=17):
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                         [h.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                         [nh.from_array(a, n) for n, a in inits])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def run_ort(model, *inputs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs)})


def mlp_model(opset=17):
    """Gemm (transB, alpha, beta) -> LayerNorm -> Gelu -> MatMul -> Softmax, batch dim symbolic."""
    w1 = RNG.standard_normal((8, 5)).astype(np.float32)
    b1 = RNG.standard_normal(8).astype(np.float32)
    w2 = RNG.standard_normal((8, 3)).astype(np.float32)
    scale, bias = np.full(8, 1.5, np.float32), np.full(8, 0.1, np.float32)
    nodes = [h.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, alpha=0.5, beta=2.0),
             h.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], epsilon=1e-5),
             h.make_node("Tanh", ["n"], ["a"]),
             h.make_node("MatMul", ["a", "w2"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["y"], axis=-1)]
    return make_model(nodes, [("x", T.FLOAT, ["N", 5])], [("y", T.FLOAT, ["N", 3])],
                      [("w1", w1), ("b1", b1), ("w2", w2), ("scale", scale), ("bias", bias)], opset)


def test_load_compiles_and_matches_onnxruntime(backend):
    proto = mlp_model()
    model = ff.onnx.load(proto)
    assert model.input_names == ["x"] and model.output_names == ["y"]
    assert sorted(model.params) == ["b1", "bias", "scale", "w1", "w2"]
    cf = ff.compile(model)
    for batch in (1, 7):  # one model, a program per batch size
        x = RNG.standard_normal((batch, 5)).astype(np.float32)
        np.testing.assert_allclose(cf(model.params, x), run_ort(proto, x)[0], rtol=1e-5, atol=1e-6)


def test_imported_model_has_gradients_wrt_initializers():
    model = ff.onnx.load(mlp_model())
    params64 = {k: v.astype(np.float64) for k, v in model.params.items()}
    x = RNG.standard_normal((4, 5))

    def loss(params, x):
        return (model(params, x) ** 2).sum()
    # the graph is float32 in ONNX; float64 arrays trace the same rules in float64
    ff.check_grads(loss, (params64, x), argnums=0)


def test_fine_tune_imported_model_with_compile_train_step(backend):
    model = ff.onnx.load(mlp_model())
    params = {k: v.copy() for k, v in model.params.items()}
    x = RNG.standard_normal((16, 5)).astype(np.float32)
    labels = RNG.integers(0, 3, 16).astype(np.int32)

    def loss(params, x, labels):
        return ff.nn.nll_loss(ff.log(model(params, x)), labels)
    step = ff.compile_train_step(loss, ff.optim.Adam(1e-2))
    state = step.init(params)
    first = float(step(params, state, x, labels))
    for _ in range(30):
        last = float(step(params, state, x, labels))
    assert last < 0.7 * first
    assert not np.allclose(params["w1"], model.params["w1"])  # trained in place, the import untouched


def test_imported_model_gradients_under_remat_are_unchanged(backend):
    model = ff.onnx.load(mlp_model())
    x = RNG.standard_normal((6, 5)).astype(np.float32)

    def loss(params, x):
        return (model(params, x) ** 2).sum()
    stored = ff.compile(ff.grad(loss))(model.params, x)
    recomputed = ff.compile(ff.grad(loss), remat="recompute_elementwise")(model.params, x)
    for name in model.params:
        np.testing.assert_allclose(recomputed[name], stored[name], rtol=1e-6, atol=1e-7)


def test_old_opset_softmax_flattens_at_axis():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    proto = make_model([h.make_node("Softmax", ["x"], ["y"])], [("x", T.FLOAT, [2, 3, 4])],
                       [("y", T.FLOAT, [2, 3, 4])], opset=11)
    model = ff.onnx.load(proto)
    got = ff.compile(model)(model.params, x)
    flat = x.reshape(2, 12)
    want = (np.exp(flat) / np.exp(flat).sum(1, keepdims=True)).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gather_embedding_value_and_scatter_add_gradient(backend):
    table = RNG.standard_normal((10, 4)).astype(np.float64)
    ids = np.array([[1, 3, 3], [-1, 0, 9]], dtype=np.int64)
    proto = make_model([h.make_node("Gather", ["table", "ids"], ["e"])], [("ids", T.INT64, [2, 3])],
                       [("e", T.DOUBLE, [2, 3, 4])], [("table", table)])
    model = ff.onnx.load(proto)
    np.testing.assert_array_equal(ff.compile(model)(model.params, ids), table[ids])
    grad = ff.compile(ff.grad(lambda p, i: (model(p, i) * 2.0).sum()))(model.params, ids)["table"]
    want = np.zeros_like(table)
    np.add.at(want, ids, 2.0)
    np.testing.assert_allclose(grad, want)


def test_shape_arithmetic_is_folded_at_import():
    """Shape -> Gather -> Concat -> Reshape (a typical exporter's flatten) leaves one reshape."""
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Constant", [], ["zero"], value=nh.from_array(np.array(0, np.int64))),
             h.make_node("Gather", ["s", "zero"], ["n"]),
             h.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             h.make_node("Reshape", ["x", "shape"], ["y"])]
    proto = make_model(nodes, [("x", T.FLOAT, ["N", 2, 3])], [("y", T.FLOAT, ["N", 6])],
                       [("axes", np.array([0], np.int64)), ("minus1", np.array([-1], np.int64))])
    model = ff.onnx.load(proto)
    x = RNG.standard_normal((4, 2, 3)).astype(np.float32)
    lowered = ff.compile(model).lower(model.params, x)
    assert [n.op.name for n in lowered.graph.nodes] == ["input", "reshape"]
    np.testing.assert_array_equal(ff.compile(model)(model.params, x), x.reshape(4, 6))


def test_outputs_selects_a_subgraph():
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("TopK", ["x", "k"], ["v", "i"])]
    proto = make_model(nodes, [("x", T.FLOAT, [3])],
                       [("r", T.FLOAT, [3]), ("v", T.FLOAT, [1]), ("i", T.INT64, [1])],
                       [("k", np.array([1], np.int64))])
    with pytest.raises(ff.onnx.OnnxError, match="TopK"):
        ff.onnx.load(proto)
    model = ff.onnx.load(proto, outputs=["r"])
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    np.testing.assert_array_equal(ff.compile(model)(model.params, x), np.maximum(x, 0))


def test_constants_turn_an_initializer_exponent_constant():
    proto = make_model([h.make_node("Pow", ["x", "p"], ["y"])], [("x", T.FLOAT, [3])],
                       [("y", T.FLOAT, [3])], [("p", np.array(3.0, np.float32))])
    x = np.array([-2.0, 0.5, 3.0], np.float32)
    model = ff.onnx.load(proto)
    assert list(model.params) == ["p"]  # a param: the exponent is a run-time value, exp(p log x)
    assert np.isnan(ff.compile(model)(model.params, x)[0])
    fixed = ff.onnx.load(proto, constants={"p": 3.0})
    assert fixed.params == {}
    np.testing.assert_allclose(ff.compile(fixed)(fixed.params, x), x ** 3, rtol=1e-6)


# --------------------------------------------------------------------------- errors


def _one_node(op_type, dtype=T.FLOAT, opset=20, **attrs):
    node = h.make_node(op_type, ["x"], ["y"], **attrs)
    graph = h.make_graph([node], "g", [h.make_tensor_value_info("x", dtype, [2])],
                         [h.make_tensor_value_info("y", dtype, [2])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])  # unchecked: may be invalid


def test_unsupported_op_names_node_op_and_supported_set():
    with pytest.raises(ff.onnx.OnnxError) as err:
        ff.onnx.load(_one_node("Round"))
    message = str(err.value)
    assert "ONNX node 'y' (Round)" in message and "supported op types" in message and "Gemm" in message


def test_unsupported_attribute_names_it():
    with pytest.raises(ff.onnx.OnnxError, match=r"\(Gelu\): the attribute 'flavour' is not supported"):
        ff.onnx.load(_one_node("Gelu", flavour="fast"))


def test_unsupported_dtype_and_opset():
    with pytest.raises(ff.onnx.OnnxError, match="graph input 'x' has element type float16"):
        ff.onnx.load(_one_node("Relu", dtype=T.FLOAT16))
    future = _one_node("Relu", opset=onnx.defs.onnx_opset_version() + 1)
    with pytest.raises(ff.onnx.OnnxError, match="opset is .*; ffcompile imports opsets 11 to"):
        ff.onnx.load(future)


def test_old_opset_is_upgraded_by_the_version_converter():
    model = ff.onnx.load(_one_node("Relu", opset=9))
    assert model.opset == 11
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(ff.compile(model)(model.params, x), [0.0, 2.0])


def test_run_time_shape_is_a_clear_error():
    proto = make_model([h.make_node("Reshape", ["x", "s"], ["y"])],
                       [("x", T.FLOAT, [6]), ("s", T.INT64, [2])], [("y", T.FLOAT, [2, 3])])
    model = ff.onnx.load(proto)
    assert model.static_inputs == ["s"]
    with pytest.raises(ff.onnx.OnnxError, match=r"'y' \(Reshape\): the target shape must be a constant"):
        ff.compile(model)(model.params, np.zeros(6, np.float32), np.array([2, 3]))
    fixed = ff.onnx.load(proto, constants={"s": np.array([2, 3])})
    assert fixed.input_names == ["x"]
    assert ff.compile(fixed)(fixed.params, np.zeros(6, np.float32)).shape == (2, 3)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("name", ["digits", "two_tower"])
def test_export_zoo_model_runs_in_onnxruntime(name, tmp_path):
    w = zoo.get(name)
    params, x, _ = w.example_inputs(batch_size=5)
    xs = x if isinstance(x, tuple) else (x,)

    def predict(params, *xs):
        return w.predict(params, xs if len(xs) > 1 else xs[0])
    path = tmp_path / "model.onnx"
    proto = ff.onnx.export(predict, params, *xs, path=path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert all(v.type.tensor_type.HasField("shape") for v in proto.graph.value_info)
    np.testing.assert_allclose(run_ort(proto, *xs)[0], ff.compile(w.predict)(params, x), rtol=1e-5, atol=1e-5)


def test_export_covers_composites_and_layout_ops():
    def fn(p, x):
        y = ff.gelu(x @ p["w"], approximate="tanh") + ff.log_sigmoid(x[:, :3]).sum(1, keepdims=True)
        z = ff.concatenate([ff.softmax(y), ff.log1p(ff.exp(y)) ** 3, y.T.reshape(4, 2),
                            ff.elu(y), ff.ir.lang.floor(y * 4.0)], axis=1)
        return ff.where(z > 0.1, z, ff.log_softmax(z, axis=0)).max(axis=0)
    p = {"w": RNG.standard_normal((5, 2))}
    x = RNG.standard_normal((4, 5))
    proto = ff.onnx.export(fn, p, x)
    # onnxruntime's float64 kernels (tanh, erf) are accurate to ~1e-9 relative
    np.testing.assert_allclose(run_ort(proto, x)[0], ff.compile(fn)(p, x), rtol=1e-7)


def test_round_trip_onnx_ffcompile_onnx():
    proto = mlp_model()
    model = ff.onnx.load(proto)
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    again = ff.onnx.export(model, model.params, x)
    assert {i.name for i in again.graph.initializer} == set(model.params)
    np.testing.assert_allclose(run_ort(again, x)[0], run_ort(proto, x)[0], rtol=1e-5, atol=1e-6)


def test_export_error_names_the_op():
    with pytest.raises(ff.onnx.OnnxError, match="'pad'.*interior"):
        ff.onnx.export(lambda x: ff.ir.lang.pad(x, ((0, 0, 1),)), np.ones(3, np.float32))

