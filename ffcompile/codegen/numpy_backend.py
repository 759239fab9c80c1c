"""NumPy backend: generate readable Python source from a graph, exec it once.

Every value is materialized C-contiguous (a transpose or broadcast is copied):
NumPy's summation order follows memory layout, so this keeps results equal
to the ops' references and to the arena program, bit for bit.

The source reads like the graph (one statement per node, the location as a
comment), is a pure function of the graph, and is cached by its fingerprint.
Composite ops are expanded before code generation, so only primitives are
lowered; `LOWERINGS` holds one rule per primitive.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import scipy.special

from ..ir import Graph, Node
from ..ir import ops as O
from ..ir.types import DTYPES


def _np_dtype(name: str) -> str:
    return f"np.{DTYPES[name].name}" if name != "bool" else "np.bool_"


def _scalar(value, dtype: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_np_dtype(dtype)}({str(value)!r})"
    return f"{_np_dtype(dtype)}({value!r})"


def _call(fn: str) -> Callable[[Node, list[str]], str]:
    return lambda node, args: f"{fn}({', '.join(args)})"


def _reduce(fn: str):
    def lower(node, args):
        axes, keep = node.attr("axes"), node.attr("keepdims")
        extra = f", dtype={_np_dtype(node.type.dtype)}" if fn == "np.sum" else ""
        return f"{fn}({args[0]}, axis={axes!r}, keepdims={keep}{extra})"
    return lower


def _constant(node, args):
    value = node.attr("value")
    if node.type.rank == 0:
        return _scalar(value, node.type.dtype)
    return f"np.array({value!r}, dtype={_np_dtype(node.type.dtype)})"


def _slice(node, args):
    parts = [f"{a}:{b}" + (f":{s}" if s != 1 else "")
             for a, b, s in zip(node.attr("starts"), node.attr("stops"), node.attr("steps"))]
    return f"np.array({args[0]}[{', '.join(parts) or '()'}], order='C')"


def _attrs_call(fn: str):
    """Call a helper that takes the node's attributes as keywords."""
    def lower(node, args):
        attrs = ", ".join(f"{k}={v!r}" for k, v in node.attrs if k != "type")
        return f"{fn}({', '.join(args + [attrs] if attrs else args)})"
    return lower


LOWERINGS: dict[type, Callable[[Node, list[str]], str]] = {
    O.Constant: _constant,
    O.Iota: lambda n, a: f"_iota({n.type.shape!r}, {n.attr('axis')}, {_np_dtype(n.type.dtype)})",
    O.Neg: _call("np.negative"),
    O.Exp: _call("np.exp"),
    O.Log: _call("np.log"),
    O.Log1p: _call("np.log1p"),
    O.Tanh: _call("np.tanh"),
    O.Erf: _call("_erf"),
    O.Sin: _call("np.sin"),
    O.Cos: _call("np.cos"),
    O.Sqrt: _call("np.sqrt"),
    O.Abs: _call("np.abs"),
    O.Sign: _call("np.sign"),
    O.StopGradient: lambda n, a: a[0],
    O.Pow: lambda n, a: f"np.power({a[0]}, {_scalar(n.attr('exponent'), n.type.dtype)})",
    O.Convert: lambda n, a: f"{a[0]}.astype({_np_dtype(n.attr('dtype'))})",
    O.Add: _call("np.add"),
    O.Sub: _call("np.subtract"),
    O.Mul: _call("np.multiply"),
    O.Div: _call("np.divide"),
    O.Maximum: _call("np.maximum"),
    O.Minimum: _call("np.minimum"),
    O.Gt: _call("np.greater"),
    O.Ge: _call("np.greater_equal"),
    O.Lt: _call("np.less"),
    O.Le: _call("np.less_equal"),
    O.Eq: _call("np.equal"),
    O.Select: _call("np.where"),
    O.ReduceSum: _reduce("np.sum"),
    O.ReduceMax: _reduce("np.max"),
    O.Matmul: _call("np.matmul"),
    O.Transpose: lambda n, a: f"np.array(np.transpose({a[0]}, {n.attr('perm')!r}), order='C')",
    O.Reshape: lambda n, a: f"np.reshape({a[0]}, {n.attr('shape')!r})",
    O.Broadcast: lambda n, a: f"np.array(np.broadcast_to({a[0]}, {n.attr('shape')!r}), order='C')",
    O.Concat: lambda n, a: f"np.concatenate(({', '.join(a)},), axis={n.attr('axis')})",
    O.Slice: _slice,
    O.Pad: _attrs_call("_pad"),
}


def _iota(shape, axis, dtype):
    ramp_shape = [1] * len(shape)
    ramp_shape[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=dtype).reshape(ramp_shape), shape)


def _pad(x, config):
    return O.Pad.reference({"config": config}, x)


def _erf(x):
    return scipy.special.erf(x)


# Non-finite floats inside a constant tuple print as bare `inf`/`nan`.
_RUNTIME = {"np": np, "inf": math.inf, "nan": math.nan, "_iota": _iota, "_pad": _pad, "_erf": _erf}


def generate_source(graph: Graph) -> str:
    """Python source of a function taking the graph's inputs, returning its outputs as a tuple."""
    params = [f"v{i}" for i in graph.inputs]
    lines = [f"def kernel({', '.join(params)}):"]
    for i, node in enumerate(graph.nodes):
        if node.op is O.Input:
            continue
        if node.op not in LOWERINGS:
            raise NotImplementedError(f"numpy backend: no lowering for op {node.op.name!r}")
        expr = LOWERINGS[node.op](node, [f"v{j}" for j in node.inputs])
        comment = f"  # {node.type}" + (f" {node.loc}" if node.loc else "")
        lines.append(f"    v{i} = {expr}{comment}")
    # A result that is an argument is copied: results never alias the caller's arrays.
    outs = ", ".join(f"v{i}.copy()" if i in graph.inputs else f"v{i}" for i in graph.outputs)
    lines.append(f"    return ({outs}{',' if len(graph.outputs) == 1 else ''})")
    return "\n".join(lines) + "\n"


def build(graph: Graph) -> tuple[Callable, str]:
    """The Python function for graph (cached by fingerprint) and its source."""
    source = generate_source(graph)
    return _kernel(graph.fingerprint(), graph.name, source), source


@functools.lru_cache(maxsize=256)  # bounded: a process compiling ever new signatures keeps only the recent
def _kernel(key: str, name: str, source: str) -> Callable:
    namespace = dict(_RUNTIME)
    exec(compile(source, f"<ffcompile {name} {key}>", "exec"), namespace)
    return namespace["kernel"]
