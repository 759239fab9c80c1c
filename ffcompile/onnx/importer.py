"""`ff.onnx.load`: an ONNX model as a traceable ffcompile function.

The model is checked whole at load time (op types, attributes, domains, element
types, opset), so an unsupported model fails before anything is traced. A call
`model(params, *inputs)` then replays the graph through the conversion rules
of `rules.py` on traced values; nodes whose inputs are all known constants are
folded with ONNX's own reference evaluator, so shape arithmetic (Shape,
Gather, Concat, ... feeding a Reshape) never reaches the compiled graph.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from ..ir import ShapeError
from ..ir.lang import Value, builder_of, lift
from ..ir.symbolic import is_symbolic
from ..trace import scope
from .dtypes import SUPPORTED, TO_NUMPY, type_name
from .errors import OnnxError, node_error
from .rules import Node
from .symbolic_shapes import SymInts, fold_symbolic, folds
from .table import RULES

MIN_OPSET = 11
DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxModel:
    """An imported ONNX graph: `model(params, *inputs)` under ff.compile / ff.grad.

    `params` maps the float initializers' names to arrays (the trainable
    weights); integer initializers are constants of the graph."""

    def __init__(self, proto: onnx.ModelProto, params: dict, constants: dict, nodes: list,
                 opset: int, input_names: list[str], output_names: list[str]):
        self.proto = proto
        self.params = params
        self.constants = constants
        self.nodes = nodes
        self.opset = opset
        self.input_names = input_names
        self.output_names = output_names

    @property
    def static_inputs(self) -> list[str]:
        """Graph inputs used as shapes or axes: they must be fixed with `load(..., constants=)`."""
        used = {node.input[i] for node in self.nodes for i in RULES[node.op_type].static
                if i < len(node.input)}
        return [name for name in self.input_names if name in used]

    @property
    def batch_dim(self) -> tuple:
        """`ff.compile(model, batch_dim=model.batch_dim)`: one trace for every batch size. The
        batch is the first symbolic dimension (a dim_param, or no size) of the first input that
        has one; each input's axis of that name (None for params and inputs without it)."""
        declared = {value.name: value.type.tensor_type.shape.dim for value in self.proto.graph.input}
        symbolic = [[d.dim_param if not d.HasField("dim_value") else None for d in declared[name]]
                    for name in self.input_names]
        names = [d for dims in symbolic for d in dims if d is not None]
        if not names:
            raise OnnxError(f"no input of the model has a symbolic dimension: inputs "
                            f"{self.input_names} are all of fixed size")
        batch = names[0]
        return (None, *(dims.index(batch) if batch in dims else None for dims in symbolic))

    def __repr__(self) -> str:
        return (f"OnnxModel(inputs={self.input_names}, outputs={self.output_names}, "
                f"{len(self.nodes)} nodes, {len(self.params)} params, opset {self.opset})")

    def __call__(self, params, *inputs):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the ONNX model takes {len(self.input_names)} inputs "
                            f"{self.input_names}, got {len(inputs)}")
        missing = set(self.params) - set(params)
        if missing:
            raise TypeError(f"params lacks the initializers {sorted(missing)}")
        env = dict(self.constants)
        env.update({name: params[name] for name in self.params})
        env.update(zip(self.input_names, inputs))
        traced = [v for v in env.values() if isinstance(v, Value)]
        builder = builder_of(traced) if traced else None  # None: every output is a constant
        for proto in self.nodes:
            args = [env[name] if name else None for name in proto.input]
            results = _convert(proto, self.opset, builder, args)
            env.update((name, r) for name, r in zip(proto.output, results) if name)
        outs = [_as_value(builder, env[name], name) for name in self.output_names]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _as_value(builder, x, name: str):
    if isinstance(x, SymInts):
        raise OnnxError(f"the output {name!r} is a shape holding the symbolic batch size ({x}); "
                        "compile without batch_dim for this model")
    if isinstance(x, Value) or builder is None:
        return x
    return lift(builder, np.asarray(x), None)


def _convert(proto, opset: int, builder, args) -> list:
    present = [a for a in args if a is not None]
    node = Node(proto, opset, builder)
    symbolic = any(isinstance(a, SymInts) for a in present)
    if not symbolic and all(not isinstance(a, Value) for a in present):
        return _fold(proto, opset, args)
    with scope(builder, proto.name or proto.output[0]):
        # shape arithmetic on the batch size of batch_dim=: folded, or a rule's shape input
        if symbolic and folds(node, args):
            return _outputs(node, fold_symbolic(node, _trim(args)))
        try:
            out = RULES[proto.op_type].fn(node, *_trim(args))
        except ShapeError as exc:  # a symbolic batch size (batch_dim=) where a concrete one is needed
            if not symbolic and not any(is_symbolic(a.shape) for a in present if isinstance(a, Value)):
                raise
            raise node.error(f"{exc}") from None
    return _outputs(node, out)


def _outputs(node, out) -> list:
    outs = list(out) if isinstance(out, tuple) else [out]
    wanted = len(node.proto.output)
    if len(outs) < wanted:
        raise node.error(f"only the first {len(outs)} outputs are supported, the node asks for {wanted}")
    return outs[:wanted]


def _trim(args: list) -> list:
    """Drop trailing omitted optional inputs; inner ones stay None."""
    while args and args[-1] is None:
        args = args[:-1]
    return args


def _fold(proto, opset: int, args) -> list:
    """Evaluate a node on constants with ONNX's reference evaluator."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    node = onnx.NodeProto()
    node.CopyFrom(proto)
    del node.input[:]
    node.input.extend(names)
    del node.output[:]
    node.output.extend(f"out{i}" for i in range(len(proto.output)))
    inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, args) if a is not None]
    outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: np.asarray(a) for n, a in zip(names, args) if a is not None}
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:  # the evaluator's own message says what is wrong
        raise node_error(proto, f"folding it on constant inputs failed: {exc}") from None
    for r in results:
        if np.asarray(r).dtype not in TO_NUMPY.values():
            raise node_error(proto, f"produces {np.asarray(r).dtype}; supported: {SUPPORTED}")
    return [np.asarray(r) for r in results]


def load(model, outputs: list[str] | None = None, constants: dict | None = None) -> OnnxModel:
    """Import an ONNX model (a path or a ModelProto).

    `outputs` picks the values to return (default: the graph outputs; any
    intermediate value may be named, e.g. the logits before a Softmax); nodes that feed none
    of them are dropped before checking, so a model whose unused outputs need
    unsupported ops (scikit-learn's label via ArgMax) still loads. `constants`
    fixes graph inputs to values (needed for inputs that are shapes or axes,
    `model.static_inputs`, since ffcompile compiles static shapes), or turns
    float initializers from params into constants (a Pow exponent)."""
    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(proto, onnx.ModelProto):
        raise TypeError(f"ff.onnx.load takes a path or an onnx.ModelProto, got {type(proto).__name__}")
    proto = upgraded(proto)
    opset = _default_opset(proto)
    graph = proto.graph
    output_names = [o.name for o in graph.output]
    if outputs is not None:
        produced = {o for node in graph.node for o in node.output} | {i.name for i in graph.input}
        unknown = set(outputs) - produced
        if unknown:
            raise OnnxError(f"no values named {sorted(unknown)}; the graph outputs are {output_names}")
        output_names = list(outputs)
    nodes = _needed_nodes(graph, output_names)
    for node in nodes:
        _check_node(node)
    params, fixed = {}, {}
    for init in graph.initializer:
        array = _initializer(init)
        (params if array.dtype.kind == "f" else fixed)[init.name] = array
    for name, value in (constants or {}).items():
        if name not in {i.name for i in graph.input} | set(params):
            raise OnnxError(f"constants: the model has no graph input or float initializer {name!r}")
        declared = params.pop(name).dtype if name in params else _declared_dtype(graph, name)
        fixed[name] = np.asarray(value, dtype=declared)
    input_names = [i.name for i in graph.input if i.name not in params and i.name not in fixed]
    for value in graph.input:
        if value.name in input_names:
            _check_input_type(value)
    return OnnxModel(proto, params, fixed, nodes, opset, input_names, output_names)


def upgraded(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A model of an opset older than MIN_OPSET, converted by ONNX's version converter."""
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None or opset >= MIN_OPSET:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # the converter's message names the op it could not convert
        raise OnnxError(f"the model's opset {opset} is older than {MIN_OPSET} and ONNX's version "
                        f"converter could not upgrade it: {exc}") from None


def _declared_dtype(graph, name: str):
    """The element type a graph input declares (None: not a supported tensor type; keep the value's)."""
    (value,) = [i for i in graph.input if i.name == name]
    return TO_NUMPY.get(value.type.tensor_type.elem_type)


def _default_opset(proto) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    newest = onnx.defs.onnx_opset_version()
    if opset is None or not MIN_OPSET <= opset <= newest:
        raise OnnxError(f"the model's default-domain opset is {opset}; ffcompile imports opsets "
                        f"{MIN_OPSET} to {newest}")
    return opset


def _needed_nodes(graph, outputs: list[str]) -> list:
    needed, kept = set(outputs), []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1]


def _check_node(node) -> None:
    if node.domain not in DEFAULT_DOMAINS:
        raise node_error(node, f"the domain {node.domain!r} is not supported; only the default "
                               "ONNX domain is")
    rule = RULES.get(node.op_type)
    if rule is None:
        raise node_error(node, f"the op type is not supported; supported op types: "
                               f"{', '.join(sorted(RULES))}")
    for attr in node.attribute:
        if attr.name not in rule.attrs:
            allowed = ", ".join(sorted(rule.attrs)) or "none"
            raise node_error(node, f"the attribute {attr.name!r} is not supported; supported "
                                   f"attributes: {allowed}")


def _initializer(init) -> np.ndarray:
    if init.data_type not in TO_NUMPY:
        raise OnnxError(f"initializer {init.name!r} has element type {type_name(init.data_type)}; "
                        f"supported: {SUPPORTED}")
    return np.array(numpy_helper.to_array(init))


def _check_input_type(value) -> None:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise OnnxError(f"graph input {value.name!r} is a {kind}; only tensors are supported")
    elem = value.type.tensor_type.elem_type
    if elem not in TO_NUMPY:
        raise OnnxError(f"graph input {value.name!r} has element type {type_name(elem)}; "
                        f"supported: {SUPPORTED}")
