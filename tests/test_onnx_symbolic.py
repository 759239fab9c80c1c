"""ONNX import with a symbolic batch size: an exporter's shape arithmetic on `Shape` of a
batch_dim= value folds at import (ffcompile/onnx/symbolic_shapes.py), so a torch export's
`x.view(x.size(0), -1)` is one trace and (LLVM) one program for every batch size, with
onnxruntime's results and the per-size compile's gradients. Arithmetic that depends on the
size, and a shape holding B anywhere but a Reshape's, Expand's or ConstantOfShape's shape
input, are OnnxErrors naming the node."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.registry import get_backend

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ffcompile.ir.symbolic import Sym  # noqa: E402
from ffcompile.onnx.symbolic_shapes import SymInts, ints  # noqa: E402

SIZES = (1, 3, 8, 64)


def _inputs(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 4, 7)).astype(np.float32)


def _onnxruntime(proto_or_path, x) -> np.ndarray:
    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _signatures_as_designed(cf, backend, sizes) -> None:
    """docs/symbolic_batch.md: one trace; one program where the backend builds one for every
    size (LLVM), else one per size (NumPy)."""
    assert cf.trace_count == 1
    one_program = getattr(get_backend(backend), "symbolic_batch", False)  # optional: False when absent
    assert cf.signatures == (1 if one_program else len(sizes)), cf.stats()
    assert (cf.stats().per_size is None) == one_program


def _check_against_onnxruntime(source, backend, sizes=SIZES):
    model = ff.onnx.load(source)
    cf = ff.compile(model, batch_dim=model.batch_dim)
    fixed = ff.compile(model)  # without batch_dim: shapes concrete, folded by ONNX's evaluator
    for n in sizes:
        x = _inputs(n)
        expected = _onnxruntime(source, x)
        for got in (cf(model.params, x), fixed(model.params, x)):
            assert got.shape == expected.shape and got.dtype == expected.dtype, n
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6, err_msg=f"B={n}")
    _signatures_as_designed(cf, backend, sizes)
    return model, cf


# --------------------------------------------------------------------------- torch exports

torch = pytest.importorskip("torch", reason="PyTorch is not installed (the oracles extra)")


class ViewFlatten(torch.nn.Module):
    """The classifier's flatten: `x.view(x.size(0), -1)`."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(28, 16), torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x.view(x.size(0), -1))))


class ReshapeBatch(torch.nn.Module):
    """`x.reshape(x.shape[0], 4, -1)`."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(7, 5)

    def forward(self, x):
        return torch.tanh(self.l1(x.reshape(x.shape[0], 4, -1))).sum(1)


class ShapeConstants(torch.nn.Module):
    """Constants of the batch's shape: `x.new_zeros(x.shape[0], 3)` and an `expand` to it."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(28, 3)

    def forward(self, x):
        scale = x.new_zeros(x.shape[0], 3) + 2.0
        offset = torch.arange(3, dtype=torch.float32).reshape(1, 3).expand(x.shape[0], 3)
        return self.l1(torch.flatten(x, 1)) * scale + offset


class BatchMean(torch.nn.Module):
    """The batch size as a float: `... / x.shape[0]` (a Cast of the shape to float32)."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(7, 5)

    def forward(self, x):
        return torch.tanh(self.l1(x)).sum(0) / x.shape[0]


MODULES = (ViewFlatten, ReshapeBatch, ShapeConstants, BatchMean)
EXPORTERS = ("torchscript", "dynamo")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(module class, exporter) -> the ONNX file, exported once for the module's tests."""
    files = {}

    def export(cls, exporter):
        if (cls, exporter) not in files:
            if exporter == "dynamo":
                pytest.importorskip("onnxscript", reason="the onnx extra is not installed (the dynamo "
                                                         "exporter needs onnxscript)")
            torch.manual_seed(0)
            module, x = cls().eval(), torch.from_numpy(_inputs(2))
            path = tmp_path_factory.mktemp("onnx") / f"{cls.__name__}_{exporter}.onnx"
            if exporter == "dynamo":
                torch.onnx.export(module, (x,), str(path), dynamo=True, verbose=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
            else:
                torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"],
                                  dynamic_axes={"x": {0: "batch"}})
            files[cls, exporter] = path
        return files[cls, exporter]

    return export


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_torch_exports_are_one_trace_with_onnxruntimes_results(cls, exporter, exported, backend):
    path = exported(cls, exporter)
    model, cf = _check_against_onnxruntime(path, backend)
    assert model.batch_dim == (None, 0)
    assert "i64" not in cf.last_lowered.symbolic_ir and "f32[B," in cf.last_lowered.symbolic_ir  # shapes folded


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_torch_exports_gradients_equal_the_per_size_compiles(cls, exporter, exported, backend):
    model = ff.onnx.load(exported(cls, exporter))

    def loss(params, x):
        return (model(params, x) ** 2).sum()

    symbolic = ff.compile(ff.grad(loss), batch_dim=(None, 0))
    for n in SIZES:
        x = _inputs(n)
        fixed = ff.compile(ff.grad(loss))(model.params, x)
        got = symbolic(model.params, x)
        assert set(got) == set(model.params)
        for name in got:
            np.testing.assert_allclose(got[name], fixed[name], rtol=2e-5, atol=2e-5, err_msg=f"{name} B={n}")
    _signatures_as_designed(symbolic, backend, SIZES)


def test_the_view_flatten_traces_to_one_reshape_to_b_rows(exported):
    model = ff.onnx.load(exported(ViewFlatten, "torchscript"))
    lowered = ff.compile(model, batch_dim=model.batch_dim, backend="numpy").lower(model.params, _inputs(3))
    reshapes = [line for line in lowered.symbolic_ir.splitlines() if "= reshape" in line]
    assert len(reshapes) == 1 and "f32[B,28] = reshape" in reshapes[0], lowered.symbolic_ir


# --------------------------------------------------------------------------- folding rules, by hand


def _const(name: str, values, dtype=np.int64):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype=dtype), name))


def _node(op_type: str, inputs: str, output: str, **attrs):
    """helper.make_node with the inputs spelled "a b c"."""
    return helper.make_node(op_type, inputs.split(), [output], **attrs)


def _graph_model(nodes, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _batch(out="b"):
    """out = [s[0]] (Shape -> Gather -> Unsqueeze, as the TorchScript exporter writes it)."""
    return [_const("zero", 0), _node("Gather", "s zero", "b0", axis=0),
            _const("axis0", [0]), _node("Unsqueeze", "b0 axis0", out)]


SHAPE = _node("Shape", "x", "s")
FLAT = [_const("c28", [28]), _node("Concat", "b c28", "t", axis=0), _node("Reshape", "x t", "y")]  # y = x.view(b, 28)
W = np.random.default_rng(0).standard_normal((28, 3)).astype(np.float32)


def _tensor(values, dtype):
    return numpy_helper.from_array(np.array(values, dtype))


CASES = {
    "gather_unsqueeze_concat": [SHAPE, *_batch(), *FLAT],
    "shape_start_end": [_node("Shape", "x", "b", start=0, end=1), *FLAT],
    "slice": [SHAPE, _const("lo", [0]), _const("hi", [1]), _node("Slice", "s lo hi", "b"), *FLAT],
    "squeeze_unsqueeze": [SHAPE, _const("lo", [0]), _const("hi", [1]), _node("Slice", "s lo hi", "b1"),
                          _const("axis0", [0]), _node("Squeeze", "b1 axis0", "b0"),
                          _node("Unsqueeze", "b0 axis0", "b"), *FLAT],
    "cast_identity": [SHAPE, *_batch(out="b64"), _node("Cast", "b64", "b32", to=TensorProto.INT32),
                      _node("Identity", "b32", "i"), _node("Cast", "i", "b", to=TensorProto.INT64), *FLAT],
    "mul_then_div": [SHAPE, *_batch(out="b1"), _const("four", [4]), _node("Mul", "b1 four", "b4"),
                     _const("c7", [7]), _node("Concat", "b4 c7", "t4", axis=0), _node("Reshape", "x t4", "x4"),
                     _node("Div", "b4 four", "b"), _const("c28", [28]), _node("Concat", "b c28", "t", axis=0),
                     _node("Reshape", "x4 t", "y")],
    "add_sub": [SHAPE, *_batch(out="b1"), _const("nought", [0]), _node("Add", "b1 nought", "b2"),
                _node("Add", "b2 b2", "twice"), _node("Sub", "twice b1", "b3"), _node("Sub", "b3 nought", "b"), *FLAT],
    "reduce_prod_size": [SHAPE, _node("ReduceProd", "s", "p", keepdims=1), _node("Reshape", "x p", "flat"),
                         _node("Size", "x", "n"), _const("c28", 28), _node("Div", "n c28", "b0"),
                         _const("axis0", [0]), _node("Unsqueeze", "b0 axis0", "b"), _const("c28u", [28]),
                         _node("Concat", "b c28u", "t", axis=0), _node("Reshape", "flat t", "y")],
    "max_min": [SHAPE, _const("ones", [1, 1, 1]), _node("Max", "s ones", "m"),
                _const("twice", [2, 1, 1]), _node("Mul", "s twice", "s2"),
                _node("Min", "m s2", "t"),  # min(B, 2*B) is B at every size
                _node("Reshape", "x t", "y")],
    "reshape_of_a_shape_zero_and_minus_one": [SHAPE, _const("flat", [-1]), _node("Reshape", "s flat", "f"),
                                              _node("Reshape", "x f", "y0"),
                                              _const("keep", [0, 0, -1]), _node("Reshape", "y0 keep", "y1"),
                                              _const("c0m", [0, -1]), _node("Reshape", "y1 c0m", "y")],
    # the TorchScript exporter's expand(x.shape[0], 3): Where(shape == -1, 1, shape)
    "expand_where_equal": [SHAPE, *_batch(), _const("c3", [3]), _node("Concat", "b c3", "bs", axis=0),
                           _const("flat", [-1]), _node("Reshape", "bs flat", "r"), _node("Shape", "r", "rs"),
                           _node("ConstantOfShape", "rs", "ones", value=_tensor([1], np.int64)),
                           _const("minus", -1), _node("Mul", "ones minus", "m1"), _node("Equal", "r m1", "eq"),
                           _node("Where", "eq ones r", "shape"), _const("row", [[0.5, -1.0, 2.0]], np.float32),
                           _node("Expand", "row shape", "e"), _node("Flatten", "x", "fx", axis=1),
                           _node("MatMul", "fx w", "h"), _node("Add", "h e", "y")],
    "constant_of_shape": [SHAPE, *_batch(), _const("c28", [28]), _node("Concat", "b c28", "t", axis=0),
                          _node("ConstantOfShape", "t", "twos", value=_tensor([2.0], np.float32)),
                          _node("Reshape", "x t", "fx"), _node("Mul", "fx twos", "y")],
    "expand_and_size_of_a_shape": [SHAPE, *_batch(out="b1"), _const("two", [2]), _node("Expand", "b1 two", "bb"),
                                   _const("one", [1]), _node("Slice", "bb one two", "b2"), _node("Size", "bb", "size"),
                                   _node("Sub", "size one", "unit"), _node("Mul", "b2 unit", "b"), *FLAT],
    "float_of_the_batch_size": [SHAPE, *_batch(), _node("Cast", "b", "bf", to=TensorProto.FLOAT),
                                _node("ReduceSum", "x axis0", "total", keepdims=0), _node("Div", "total bf", "y")],
    "reduce_prod_of_a_traced_value": [_node("ReduceProd", "x", "y", axes=[2], keepdims=0)],
    # torch's x[:, None] on a [B] value: a Slice of all of the batch axis
    "slice_all_of_the_batch_axis": [_const("lo", [0]), _const("end", [2 ** 63 - 1]), _const("axis0", [0]),
                                    _node("Slice", "x lo end axis0", "y")],
    # torch.arange(x.shape[0]): an iota of B entries
    "range_of_the_batch_size": [SHAPE, _const("zero", 0), _node("Gather", "s zero", "b0", axis=0), _const("one", 1),
                                _node("Range", "zero b0 one", "rows"), _node("Cast", "rows", "f", to=TensorProto.FLOAT),
                                _const("axes12", [1, 2]), _node("Unsqueeze", "f axes12", "column"),
                                _node("Mul", "x column", "y")],
}


@pytest.mark.parametrize("case", CASES)
def test_folding_rules_on_a_symbolic_shape(case, backend):
    nodes = CASES[case]
    uses_w = any("w" in node.input for node in nodes)
    model, cf = _check_against_onnxruntime(_graph_model(nodes, [("w", W)] if uses_w else []), backend, sizes=(1, 3, 8))
    integers = [line for line in cf.last_lowered.symbolic_ir.splitlines() if ":i64" in line]
    assert all("= iota" in line for line in integers), integers  # the shape arithmetic folded away


def test_symints_hold_syms_and_plain_arrays_do_not():
    held = ints([Sym("B"), 4])
    assert isinstance(held, SymInts) and held.dims() == [Sym("B"), 4] and held.dtype == np.int64
    plain = ints((3, 4), np.int32)
    assert isinstance(plain, np.ndarray) and plain.dtype == np.int32 and plain.tolist() == [3, 4]
    assert str(held) == "int64[2] [B, 4]"


# --------------------------------------------------------------------------- refusals


def _refused(nodes, match: str, backend="numpy"):
    model = ff.onnx.load(_graph_model(nodes))
    with pytest.raises(ff.onnx.OnnxError, match=match):
        ff.compile(model, batch_dim=model.batch_dim, backend=backend)(model.params, _inputs(3))
    fixed = ff.compile(model, backend=backend)  # without batch_dim the same graph has concrete sizes
    return fixed, model


def test_a_division_not_exact_for_every_size_is_refused():
    nodes = [SHAPE, *_batch(out="b1"), _const("three", [3]), _node("Div", "b1 three", "b", name="div"),
             _const("c84", [84]), _node("Concat", "b c84", "t", axis=0), _node("Reshape", "x t", "y")]
    fixed, model = _refused(nodes, r"ONNX node 'div' \(Div\): on the symbolic shape inputs "
                                   r"\(int64\[1\] \[B\], int64\[1\]\): B // 3 needs a concrete value")
    assert fixed(model.params, _inputs(3)).shape == (1, 84)  # at a fixed size it folds as before


def test_an_op_without_a_symbolic_fold_names_the_node_and_its_input():
    nodes = [SHAPE, _node("Neg", "s", "negative", name="neg"), _node("Abs", "negative", "t"),
             _node("Reshape", "x t", "y")]
    fixed, model = _refused(nodes, r"ONNX node 'neg' \(Neg\): input 0 \('s'\) holds the symbolic batch size "
                                   r"\(int64\[3\] \[B, 4, 7\]\).*Gather.*Reshape \(input 1\)")
    assert fixed(model.params, _inputs(3)).shape == (3, 4, 7)


def test_a_symbolic_shape_at_a_traced_ops_operand_is_refused():
    nodes = [SHAPE, *_batch(), _const("lo", [0]), _node("Slice", "x lo b", "y", name="cut")]
    fixed, model = _refused(nodes, r"ONNX node 'cut' \(Slice\): input 2 \('b'\) holds the symbolic batch size")
    assert fixed(model.params, _inputs(3)).shape == (3, 4, 7)


@pytest.mark.parametrize("nodes, match", [
    ([SHAPE, *_batch(out="b1"), _const("three", [3]), _node("Equal", "b1 three", "eq", name="eq"),
      _node("Where", "eq b1 b1", "b"), *FLAT], r"'eq' \(Equal\): .*B == 3 needs a concrete value"),
    ([SHAPE, *_batch(out="b1"), _node("Concat", "b1 b1", "bb", axis=0),
      _node("ReduceProd", "bb", "b", keepdims=1, name="prod"), *FLAT],
     r"'prod' \(ReduceProd\): .*the product B \* B needs a concrete value"),
    ([SHAPE, *_batch(out="b1"), _const("one", [1]), _node("Max", "b1 one", "b2"),
      _const("two", [2]), _node("Max", "b2 two", "b", name="max2"), *FLAT],
     r"'max2' \(Max\): .*B < 2 needs a concrete value"),
    ([SHAPE, *_batch(out="b1"), _const("one", [1]), _node("Sub", "b1 one", "b", name="less"), *FLAT],
     r"'less' \(Sub\): .*B - 1 needs a concrete value"),
], ids=["equal_to_a_size", "product_of_b_and_b", "max_with_two", "b_minus_one"])
def test_arithmetic_that_depends_on_the_size_is_refused(nodes, match):
    _refused(nodes, match)


def test_a_shape_as_the_models_output_is_refused():
    graph = helper.make_graph([SHAPE], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7])],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, [3])])
    model = ff.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ff.onnx.OnnxError, match=r"the output 's' is a shape holding the symbolic batch size"):
        ff.compile(model, batch_dim=model.batch_dim, backend="numpy")({}, _inputs(3))


def test_a_range_whose_length_depends_on_the_size_is_refused():
    nodes = [SHAPE, _const("zero", 0), _node("Gather", "s zero", "b0", axis=0), _const("one", 1),
             _node("Range", "one b0 one", "rows", name="range"), _node("Cast", "rows", "y", to=TensorProto.FLOAT)]
    fixed, model = _refused(nodes, r"ONNX node 'range' \(Range\): B - 1 needs a concrete value")
    assert fixed(model.params, _inputs(3)).tolist() == [1.0, 2.0]


def test_a_slice_of_part_of_the_batch_axis_is_refused():
    nodes = [_const("lo", [1]), _const("end", [2 ** 63 - 1]), _const("axis0", [0]),
             _node("Slice", "x lo end axis0", "y", name="rows")]
    fixed, model = _refused(nodes, r"ONNX node 'rows' \(Slice\): an index or a count needs a concrete value")
    assert fixed(model.params, _inputs(3)).shape == (2, 4, 7)


def test_reduce_prod_over_the_symbolic_batch_axis_is_refused():
    _refused([_node("ReduceProd", "x", "y", axes=[0], name="prod")],
             r"ONNX node 'prod' \(ReduceProd\): an index or a count needs a concrete value")


def test_a_range_with_a_run_time_bound_is_refused_with_or_without_batch_dim():
    nodes = [_node("ReduceMax", "x", "top", keepdims=0), _node("Cast", "top", "limit", to=TensorProto.INT64),
             _const("zero", 0), _const("one", 1), _node("Range", "zero limit one", "rows", name="range"),
             _node("Cast", "rows", "y", to=TensorProto.FLOAT)]
    model = ff.onnx.load(_graph_model(nodes))
    for batch_dim in (model.batch_dim, None):
        with pytest.raises(ff.onnx.OnnxError, match=r"'range' \(Range\): limit must be a constant"):
            ff.compile(model, batch_dim=batch_dim, backend="numpy")(model.params, _inputs(3))
