"""Simplification: constant folding, algebraic identities, CSE and DCE.

simplify is a post-autodiff pass (the pipeline runs it on the forward+adjoint
graph). Every rewrite here keeps results identical on every input, NaN and
Inf included, with one stated exception (the sign of a zero sum, below).

Constant folding (table FOLD)
  * A node whose operands are all constants is evaluated with its op's NumPy
    `reference` and replaced by a constant, when its result and every
    operand have at most FOLD_LIMIT elements. `iota` counts as a constant
    operand but is never folded on its own (it is smaller than its value).
    `input` is never folded; composites are not either (their `reference`
    is not what their decomposition computes bit for bit).
  * A splat (every element equal) is kept in one canonical form whatever its
    size: a 0-d constant broadcast to the shape. An elementwise op on splats,
    and a broadcast/reshape/transpose/slice of a splat, fold to a splat by
    computing on the single value, so big splats never materialize.

Algebraic identities (table ALGEBRA); "c" is a splat constant, seen through
broadcast/reshape/transpose/slice, so all-equal arrays count. When the
constant operand is the larger one, x is broadcast to the result's shape
rather than returned as it is.
  * x*1, 1*x, x/1 -> x; x-0 -> x: exact.
  * x+0, 0+x -> x: exact except that -0.0 + 0.0 is +0.0 and becomes -0.0.
    The two compare equal; as in XLA's simplifier we accept this.
  * x*0 -> 0 only for integer x. For floats it is not rewritten: inf*0 and
    nan*0 are NaN, and -1.0*0 is -0.0. Likewise x-x, x/x are kept.
  * neg(neg x) -> x; pow(x, 1) -> x; pow(x, 2) -> x*x (NumPy's power gives
    the correctly rounded square, as x*x does); pow(x, 0) -> 1 (IEEE pow(x, 0)
    is 1 even for NaN).
  * transpose(transpose x) -> one transpose (or x); reshape(reshape x) -> one
    reshape; reshape, broadcast, transpose and convert that change nothing
    -> x; broadcast(broadcast x) -> one broadcast; broadcast(reshape x) ->
    broadcast(x) when the reshape only prepended unit axes; reshape(broadcast s) ->
    broadcast(s) for a 0-d s; an elementwise op whose operands are all 0-d values, as
    they are or broadcast -> the op on the 0-d values, broadcast.
  * stop_gradient x -> x: it only matters to autodiff, which has already run.
  * select(c, a, b) -> a or b for a constant predicate; select(p, a, a) -> a.

CSE merges nodes with equal (op, operands, attributes, type) once their
operands are merged, with add/mul/eq operands taken in either order;
constants merge when their values are bitwise equal (0.0 and -0.0 do not).
Inputs never merge. DCE (dce.py) then drops what no output reads.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..ir import Builder, Graph, Node, TensorType
from ..ir import lang as L
from ..ir import ops as O
from ..ir.lang import Value
from ..ir.symbolic import is_symbolic, symbol_names
from .dce import dce
from .rewrite import PatternTable, Rule, rewrite

FOLD_LIMIT = 4096  # elements: the largest constant folding materializes
_MAX_ROUNDS = 8  # simplify's rounds of rewrite, CSE and DCE
_VIEWS = (O.Broadcast, O.Reshape, O.Transpose, O.Slice)  # keep a splat a splat

__all__ = ["FOLD_LIMIT", "cse", "dce", "fold_constants", "simplify", "simplify_algebra"]


# --------------------------------------------------------------------------- constants


def splat_value(nodes, i: int):
    """The one value of node i if it is a constant with all elements equal (seen
    through view ops), as a NumPy scalar; else None."""
    node = nodes[i]
    if node.type.size == 0:
        return None
    while node.op in _VIEWS:
        node = nodes[node.inputs[0]]
    if node.op is not O.Constant or not _literal(node):
        return None
    array = O.Constant.reference(node.attr_dict)
    return array.reshape(-1)[0] if _all_equal(array) else None


def _literal(node: Node) -> bool:
    """Whether node's value may become a literal: at most FOLD_LIMIT elements, and no
    symbolic size in its type or attributes (a B-shaped array, or a constant holding B,
    is known only at call time: folded per size, it would fix the program to that size)."""
    return not is_symbolic(node.type.shape) and node.type.size <= FOLD_LIMIT and not symbol_names(node.attrs)


def _all_equal(array: np.ndarray) -> bool:
    """Bitwise, so -0.0 differs from 0.0 and NaNs with one payload are equal."""
    flat = array.reshape(-1)
    return flat.size > 0 and flat.tobytes() == np.full_like(flat, flat[0]).tobytes()


def _is(nodes, i: int, value) -> bool:
    found = splat_value(nodes, i)
    return found is not None and found == value


def _constant_array(nodes, i: int) -> np.ndarray | None:
    """Node i's value if it is known and small: a constant, an iota or a splat."""
    node = nodes[i]
    if not _literal(node):
        return None
    if node.op in (O.Constant, O.Iota):
        return node.op.reference(node.attr_dict)
    value = splat_value(nodes, i)
    return None if value is None else np.full(node.type.shape, value)


def _emit_splat(builder: Builder, value, type_: TensorType) -> int:
    scalar = L.constant(builder, value, type_.dtype)
    return L.broadcast_to(scalar, type_.shape).id


def _is_canonical_splat(nodes, node: Node) -> bool:
    return (node.op is O.Broadcast and nodes[node.inputs[0]].op is O.Constant
            and nodes[node.inputs[0]].type.rank == 0)


def _foldable(node: Node) -> bool:
    # a collective would run at compile time, on this rank alone
    return bool(node.inputs) and not node.op.traits & {O.COMPOSITE, O.COLLECTIVE}


def _fold_splat(node: Node, builder: Builder) -> int | None:
    if not _foldable(node) or _is_canonical_splat(builder.nodes, node):
        return None
    if O.ELEMENTWISE not in node.op.traits and node.op not in _VIEWS:
        return None
    values = [splat_value(builder.nodes, j) for j in node.inputs]
    if any(v is None for v in values):
        return None
    if node.op in _VIEWS:
        return _emit_splat(builder, values[0], node.type)
    with np.errstate(all="ignore"):
        result = node.op.reference(node.attr_dict, *(np.asarray(v) for v in values))
    return _emit_splat(builder, result, node.type)


def _fold_constant(node: Node, builder: Builder) -> int | None:
    if not _foldable(node) or _is_canonical_splat(builder.nodes, node) or not _literal(node):
        return None
    arrays = [_constant_array(builder.nodes, j) for j in node.inputs]
    if any(a is None for a in arrays):
        return None
    with np.errstate(all="ignore"):
        result = np.asarray(node.op.reference(node.attr_dict, *arrays))
    if result.size > 1 and _all_equal(result):
        return _emit_splat(builder, result.reshape(-1)[0], node.type)
    return L.constant(builder, result, node.type.dtype).id


FOLD = PatternTable("fold", [
    Rule("splat", (), _fold_splat),
    Rule("constant", (), _fold_constant),
])


# --------------------------------------------------------------------------- algebra


def _as_type(builder: Builder, i: int, type_: TensorType) -> int:
    """Value i stretched to type_'s shape (an identity rule's result must keep the type)."""
    return L.broadcast_to(Value(builder, i), type_.shape).id


def _drop_neutral(value):
    """x op n and n op x -> x, for n the neutral element of a commutative op."""
    def rule(node, b):
        x, y = node.inputs
        if _is(b.nodes, y, value):
            return _as_type(b, x, node.type)
        if _is(b.nodes, x, value):
            return _as_type(b, y, node.type)
        return None
    return rule


def _sub_zero(node, b):
    x, y = node.inputs
    return _as_type(b, x, node.type) if _is(b.nodes, y, 0) else None


def _integer_mul_zero(node, b):
    if node.type.is_float or not any(_is(b.nodes, j, 0) for j in node.inputs):
        return None
    return _emit_splat(b, 0, node.type)


def _div_one(node, b):
    x, y = node.inputs
    return _as_type(b, x, node.type) if _is(b.nodes, y, 1) else None


def _neg_neg(node, b):
    inner = b.nodes[node.inputs[0]]
    return inner.inputs[0] if inner.op is O.Neg else None


def _transpose(node, b):
    (x,) = node.inputs
    perm = node.attr("perm")
    inner = b.nodes[x]
    if inner.op is O.Transpose:
        # out[i] = inner[perm[i]] = x[inner_perm[perm[i]]]
        inner_perm = inner.attr("perm")
        x, perm = inner.inputs[0], tuple(inner_perm[p] for p in perm)
    elif perm != tuple(range(len(perm))):
        return None
    return L.transpose(Value(b, x), perm).id  # lang returns x itself for the identity


def _reshape(node, b):
    (x,) = node.inputs
    inner = b.nodes[x]
    if inner.type.shape == node.type.shape:
        return x
    if inner.op is O.Reshape:
        return L.reshape(Value(b, inner.inputs[0]), node.type.shape).id
    if inner.op is O.Broadcast and b.nodes[inner.inputs[0]].type.rank == 0:
        # a scalar stretched to any shape: a splat whose value only B knows (1 / B) included
        return _as_type(b, inner.inputs[0], node.type)
    return None


def _broadcast(node, b):
    (x,) = node.inputs
    inner = b.nodes[x]
    if inner.type.shape == node.type.shape:
        return x
    if inner.op is O.Broadcast or (inner.op is O.Reshape and _prepends_unit_axes(b.nodes, inner)):
        return _as_type(b, inner.inputs[0], node.type)
    return None


def _prepends_unit_axes(nodes, reshape: Node) -> bool:
    before, after = nodes[reshape.inputs[0]].type.shape, reshape.type.shape
    lead = len(after) - len(before)
    return lead >= 0 and after == (1,) * lead + before


def _drop_stop_gradient(node, b):
    return node.inputs[0]


def _convert_noop(node, b):
    (x,) = node.inputs
    return x if b.nodes[x].type == node.type else None


def _pow(node, b):
    (x,) = node.inputs
    exponent = node.attr("exponent")
    if exponent == 1:
        return x
    if exponent == 2:
        return L.mul(Value(b, x), Value(b, x)).id
    if exponent == 0:
        return _emit_splat(b, 1, node.type)
    return None


def _select(node, b):
    pred, x, y = node.inputs
    choice = splat_value(b.nodes, pred)
    if choice is not None:
        return _as_type(b, x if choice else y, node.type)
    if x == y:
        return _as_type(b, x, node.type)
    return None


def _scalar_operands(node, b):
    """op(broadcast a, c) -> broadcast(op(a, c)) for 0-d a and c (c broadcast or not): an
    elementwise op on stretched scalars computed once (a splat whose value only B knows,
    1 / B, included)."""
    if not _foldable(node) or O.ELEMENTWISE not in node.op.traits or node.type.rank == 0:
        return None
    scalars = []
    for j in node.inputs:  # each a 0-d value, or one broadcast (a shaped result needs one)
        inner = b.nodes[j]
        if inner.type.rank == 0:
            scalars.append(j)
        elif inner.op is O.Broadcast and b.nodes[inner.inputs[0]].type.rank == 0:
            scalars.append(inner.inputs[0])
        else:
            return None
    return _as_type(b, b.emit(node.op, scalars, node.attr_dict, role=node.role), node.type)


ALGEBRA = PatternTable("algebra", [
    Rule("add_zero", (O.Add,), _drop_neutral(0)),
    Rule("sub_zero", (O.Sub,), _sub_zero),
    Rule("mul_one", (O.Mul,), _drop_neutral(1)),
    Rule("integer_mul_zero", (O.Mul,), _integer_mul_zero),
    Rule("div_one", (O.Div,), _div_one),
    Rule("neg_neg", (O.Neg,), _neg_neg),
    Rule("transpose", (O.Transpose,), _transpose),
    Rule("reshape", (O.Reshape,), _reshape),
    Rule("broadcast", (O.Broadcast,), _broadcast),
    Rule("stop_gradient", (O.StopGradient,), _drop_stop_gradient),
    Rule("convert_noop", (O.Convert,), _convert_noop),
    Rule("pow", (O.Pow,), _pow),
    Rule("select", (O.Select,), _select),
    Rule("scalar_operands", (), _scalar_operands),
])


# --------------------------------------------------------------------------- CSE


_COMMUTATIVE = (O.Add, O.Mul, O.Eq)


def _cse_key(node: Node):
    if node.op is O.Constant and not symbol_names(node.attrs):  # by bits: 0.0 == -0.0 and nan != nan in Python
        return (O.Constant, node.type, O.Constant.reference(node.attr_dict).tobytes())
    if node.op in _COMMUTATIVE:
        node = dataclasses.replace(node, inputs=tuple(sorted(node.inputs)))
    return node.key


def cse(graph: Graph) -> Graph:
    """Merge structurally equal nodes; returns graph itself when none merge."""
    builder = Builder(graph.name)
    seen: dict = {}
    mapping: list[int] = []
    for node in graph.nodes:
        inputs = tuple(mapping[j] for j in node.inputs)
        key = None if node.op is O.Input else _cse_key(dataclasses.replace(node, inputs=inputs))
        if key in seen:
            mapping.append(seen[key])
            continue
        mapping.append(builder.copy(node, inputs))
        if key is not None:
            seen[key] = mapping[-1]
    if len(builder.nodes) == len(graph.nodes):
        return graph
    return builder.finish([mapping[j] for j in graph.outputs])


# --------------------------------------------------------------------------- passes


def fold_constants(graph: Graph) -> Graph:
    return dce(rewrite(graph, FOLD))


def simplify_algebra(graph: Graph) -> Graph:
    return dce(rewrite(graph, ALGEBRA))


SIMPLIFY = FOLD + ALGEBRA  # folding first: an identity may need a folded operand


def simplify(graph: Graph, max_rounds: int = _MAX_ROUNDS) -> Graph:
    """Fold, apply identities, CSE and DCE until nothing changes (at most max_rounds)."""
    for _ in range(max_rounds):
        simplified = dce(cse(rewrite(graph, SIMPLIFY)))
        if simplified is graph:
            break
        graph = simplified
    return graph
