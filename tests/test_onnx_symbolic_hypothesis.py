"""Random chains of shape arithmetic on `Shape` of a [B, 4, 7] value: wherever the fold on
the symbolic batch size (ffcompile/onnx/symbolic_shapes.py) gives a result, that result with
B filled in is what ONNX's reference evaluator computes on the concrete shape, at every B
of SIZES (values, shape and element type); where it cannot (arithmetic that depends on
the size) it is an OnnxError, never another exception or a wrong number."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from ffcompile.ir.symbolic import Sym  # noqa: E402
from ffcompile.onnx import OnnxError  # noqa: E402
from ffcompile.onnx.rules import Node  # noqa: E402
from ffcompile.onnx.symbolic_shapes import SymInts, fold_symbolic, ints  # noqa: E402

SIZES = (1, 2, 3, 6, 12)
OPSET = 17
ARITHMETIC = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal")


def _at(value, b: int) -> np.ndarray:
    """A fold's result at batch size b."""
    if not isinstance(value, SymInts):
        return np.asarray(value)
    filled = [v.at({"B": b}) if isinstance(v, Sym) else v for v in value.values.flat]
    return np.array(filled, dtype=value.dtype).reshape(value.shape)


def _small_ints(draw, shape, dtype=np.int64):
    count = int(np.prod(shape))
    return np.array(draw(st.lists(st.integers(-2, 5), min_size=count, max_size=count)), dtype=dtype).reshape(shape)


@st.composite
def steps(draw, value):
    """One node on `value` (a 1-d or 0-d int64 shape value): (op type, attributes, extra constant inputs)."""
    rank, length = value.ndim, (value.shape[0] if value.shape else 1)
    choices = ["Arithmetic", "Self", "ReduceProd", "Cast", "Reshape", "Shape", "Size", "Where", "Unsqueeze"]
    if rank == 1:
        choices += ["Gather", "Slice", "Concat", "Expand"]
    if rank == 1 and length == 1:
        choices += ["Squeeze"]
    kind = draw(st.sampled_from(choices))
    if kind == "Arithmetic":
        op = draw(st.sampled_from(ARITHMETIC))
        other = _small_ints(draw, draw(st.sampled_from([(), value.shape])), value.dtype)
        if op == "Div":
            other = np.where(other == 0, 1, other)
        return op, {}, [other]
    if kind == "Self":
        return draw(st.sampled_from(("Add", "Sub", "Mul", "Max", "Min", "Equal"))), {}, ["self"]
    if kind == "ReduceProd":
        return "ReduceProd", {"keepdims": draw(st.integers(0, 1))}, []
    if kind == "Cast":
        return "Cast", {"to": draw(st.sampled_from((TensorProto.INT32, TensorProto.INT64)))}, []
    if kind == "Reshape":
        return "Reshape", {}, [np.array([-1], np.int64)]
    if kind in ("Shape", "Size"):
        return kind, {}, []
    if kind == "Where":
        return "Where", {}, [_small_ints(draw, value.shape) > 1, _small_ints(draw, value.shape, value.dtype)]
    if kind == "Unsqueeze":
        return "Unsqueeze", {}, [np.array([draw(st.integers(-rank - 1, rank))], np.int64)]
    if kind == "Squeeze":
        return "Squeeze", {}, [np.array([0], np.int64)]
    if kind == "Gather":
        indices = draw(st.lists(st.integers(-length, length - 1), min_size=0, max_size=3))
        scalar = draw(st.booleans()) and indices
        return "Gather", {"axis": 0}, [np.array(indices[0] if scalar else indices, np.int64)]
    if kind == "Slice":
        bounds = st.integers(-length - 1, length + 1)
        step = draw(st.sampled_from((1, 2, -1)))
        return "Slice", {}, [np.array([draw(bounds)]), np.array([draw(bounds)]), np.array([0]), np.array([step])]
    if kind == "Concat":
        return "Concat", {"axis": 0}, [_small_ints(draw, (draw(st.integers(0, 2)),), value.dtype).clip(0)]
    return "Expand", {}, [np.array([draw(st.sampled_from((1, 2)))], np.int64) if length == 1 else np.array([length])]


def _run(op_type, attrs, value, extra, fold):
    """The node's result on `value` (SymInts or array): by the symbolic fold or by ONNX's evaluator."""
    args = [value] + [value if isinstance(e, str) else e for e in extra]  # "self": the value again
    if op_type == "Where":
        args = [extra[0], extra[1], value]
    names = [f"in{i}" for i in range(len(args))]
    proto = helper.make_node(op_type, names, ["out"], name="step", **attrs)
    if fold:
        return fold_symbolic(Node(proto, OPSET, None), args)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a))
              for n, a in zip(names, args)]
    graph = helper.make_graph([proto], "g", inputs, [helper.make_empty_tensor_value_info("out")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return np.asarray(ReferenceEvaluator(model).run(None, dict(zip(names, args)))[0])


@given(st.data())
def test_folds_on_a_symbolic_shape_equal_the_reference_evaluator_at_every_size(data):
    symbolic = ints((Sym("B"), 4, 7))
    concrete = [np.array([b, 4, 7], np.int64) for b in SIZES]
    for _ in range(data.draw(st.integers(1, 6))):
        if not isinstance(symbolic, SymInts):
            break  # no B left: the importer folds it with the reference evaluator itself
        op_type, attrs, extra = data.draw(steps(_at(symbolic, 1)))
        try:
            symbolic = _run(op_type, attrs, symbolic, extra, fold=True)
        except OnnxError as exc:  # depends on the size: refused, and says so
            assert "needs a concrete value" in str(exc) or "must be known at import" in str(exc), exc
            return
        concrete = [_run(op_type, attrs, c, extra, fold=False) for c in concrete]
        for b, expected in zip(SIZES, concrete):
            got = _at(symbolic, b)
            assert got.dtype == expected.dtype and got.shape == expected.shape, (op_type, b, got, expected)
            np.testing.assert_array_equal(got, expected, err_msg=f"{op_type} {attrs} at B={b}")
