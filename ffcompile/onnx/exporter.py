"""`ff.onnx.export`: a traced forward function as an ONNX model.

The function is traced for the example arguments' shapes (ONNX shapes are
static, like ffcompile's); the leaves of the arguments in `params_argnums`
become initializers (named by their pytree paths, so an imported model's
params keep their names), the others graph inputs. Each IR node becomes one
ONNX node (a few become two or three); every value gets its type in
`value_info`, and the model is checked with `onnx.checker` and strict shape
inference before it is returned.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ir import ops as O
from ..trace import signature, trace
from .dtypes import FROM_NUMPY
from .errors import OnnxError

OPSET = 20  # Gelu needs 20; onnxruntime >= 1.17 runs it

_SAME = {  # IR op -> ONNX op type, operands in the same order, no attributes
    "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "erf": "Erf", "sin": "Sin",
    "cos": "Cos", "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "stop_gradient": "Identity",
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "maximum": "Max", "minimum": "Min",
    "gt": "Greater", "ge": "GreaterOrEqual", "lt": "Less", "le": "LessOrEqual", "eq": "Equal",
    "select": "Where", "matmul": "MatMul", "sigmoid": "Sigmoid", "floor": "Floor",
}


class _Emitter:
    def __init__(self):
        self.nodes: list = []
        self.count = 0

    def fresh(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self.fresh()
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def constant(self, array, output: str | None = None) -> str:
        return self.node("Constant", [], output, value=numpy_helper.from_array(np.asarray(array)))

    def ints(self, values) -> str:
        return self.constant(np.asarray(list(values), dtype=np.int64))


def _emit(e: _Emitter, node, ins: list[str], out: str, graph) -> None:
    name, attrs, dtype = node.op.name, node.attr_dict, node.type.np_dtype
    if name in _SAME:
        e.node(_SAME[name], ins, out)
    elif name == "constant":
        e.constant(O.Constant.reference(attrs), out)
    elif name == "iota":
        e.constant(O.Iota.reference(attrs), out)
    elif name == "log1p":
        e.node("Log", [e.node("Add", [ins[0], e.constant(np.ones((), dtype))])], out)
    elif name == "expm1":  # ONNX has no expm1: exp(x) - 1 loses its small-x accuracy
        e.node("Sub", [e.node("Exp", ins), e.constant(np.ones((), dtype))], out)
    elif name == "pow":
        e.node("Pow", [ins[0], e.constant(np.asarray(attrs["exponent"], dtype))], out)
    elif name == "convert":
        e.node("Cast", ins, out, to=FROM_NUMPY[dtype])
    elif name in ("reduce_sum", "reduce_max"):
        op_type = "ReduceSum" if name == "reduce_sum" else "ReduceMax"
        e.node(op_type, [ins[0], e.ints(attrs["axes"])], out, keepdims=int(attrs["keepdims"]))
    elif name == "transpose":
        e.node("Transpose", ins, out, perm=list(attrs["perm"]))
    elif name == "reshape":
        e.node("Reshape", [ins[0], e.ints(attrs["shape"])], out)
    elif name == "broadcast":
        e.node("Expand", [ins[0], e.ints(attrs["shape"])], out)
    elif name == "concat":
        e.node("Concat", ins, out, axis=attrs["axis"])
    elif name == "slice":
        axes = range(len(attrs["starts"]))
        e.node("Slice", [ins[0], e.ints(attrs["starts"]), e.ints(attrs["stops"]), e.ints(axes),
                         e.ints(attrs["steps"])], out)
    elif name == "pad" and all(it == 0 for _, _, it in attrs["config"]):
        pads = [lo for lo, _, _ in attrs["config"]] + [hi for _, hi, _ in attrs["config"]]
        e.node("Pad", [ins[0], e.ints(pads)], out)
    elif name in ("softmax", "log_softmax"):
        e.node("Softmax" if name == "softmax" else "LogSoftmax", ins, out, axis=attrs["axis"])
    elif name in ("softplus", "log_sigmoid"):
        # max(x, 0) + log(1 + exp(-|x|)), stable; onnxruntime has no float64 Softplus.
        # log_sigmoid(x) = -softplus(-x)
        x = ins[0] if name == "softplus" else e.node("Neg", ins)
        tail = e.node("Log", [e.node("Add", [e.node("Exp", [e.node("Neg", [e.node("Abs", [x])])]),
                                             e.constant(np.ones((), dtype))])])
        total = e.node("Add", [e.node("Max", [x, e.constant(np.zeros((), dtype))]), tail],
                       out if name == "softplus" else None)
        if name == "log_sigmoid":
            e.node("Neg", [total], out)
    elif name == "gelu":
        e.node("Gelu", ins, out, approximate=attrs["approximate"])
    elif name == "softmax_cross_entropy":
        logits, targets = ins
        picked = e.node("Mul", [targets, e.node("LogSoftmax", [logits], axis=-1)])
        e.node("Neg", [e.node("ReduceSum", [picked, e.ints([-1])], keepdims=0)], out)
    else:
        loc = f" at {node.loc}" if node.loc else ""
        raise OnnxError(f"ff.onnx.export: the IR op {name!r}{loc} ({node.type}) has no ONNX "
                        f"equivalent{' (interior padding)' if name == 'pad' else ''}")


def _value_info(name: str, t) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FROM_NUMPY[t.np_dtype], list(t.shape))


def to_model(graph, names: list[str], leaves: list, param_leaves: set[int], opset: int = OPSET):
    """An ONNX ModelProto for an IR graph; leaves in param_leaves become initializers."""
    e = _Emitter()
    value_names, inputs, initializers, infos = {}, [], [], []
    for k, (i, name) in enumerate(zip(graph.inputs, names)):
        value_names[i] = name
        if k in param_leaves:
            initializers.append(numpy_helper.from_array(np.asarray(leaves[k]), name))
        else:
            inputs.append(_value_info(name, graph.nodes[i].type))
    for i, node in enumerate(graph.nodes):
        if node.op.name == "input":
            continue
        value_names[i] = f"v{i}"
        _emit(e, node, [value_names[j] for j in node.inputs], value_names[i], graph)
        infos.append(_value_info(value_names[i], node.type))
    outputs = []
    for k, i in enumerate(graph.outputs):
        out = f"output{k}"
        e.node("Identity", [value_names[i]], out)
        outputs.append(_value_info(out, graph.nodes[i].type))
    proto = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializers, value_info=infos)
    model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ffcompile")
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def export(fn, *example_args, path=None, params_argnums=(0,)) -> onnx.ModelProto:
    """Trace fn(*example_args) and write it as ONNX (to `path` if given); returns the model.

    The arguments at `params_argnums` (default: the first, the params pytree) are
    stored as initializers, named by their pytree paths; the rest are graph inputs
    with the example arguments' shapes and dtypes. A single output is `output0`."""
    if isinstance(params_argnums, int):
        params_argnums = (params_argnums,)
    in_tree, types, names, leaves = signature(example_args, fn)
    traced, _ = trace(fn, in_tree, types, names)
    param_leaves, first = set(), 0
    for k, arg in enumerate(example_args):
        count = len(signature((arg,))[3])
        if k in params_argnums:
            param_leaves.update(range(first, first + count))
        first += count
    # params.W -> W for initializers, so an imported and re-exported model keeps its names
    names = [n.split(".", 1)[1] if k in param_leaves and "." in n else n for k, n in enumerate(names)]
    model = to_model(traced.graph, names, leaves, param_leaves)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
