"""ff.einsum: Einstein summation lowered to transposes, reductions, reshapes and matmuls.

Operands are combined left to right. For each pair, an index is a *batch*
index (in both and still needed), a *contracted* one (in both, needed by
nothing later), or *free* in one of them; indices found in one operand and
needed by nothing later are summed out first. The pair then becomes one
(batched) matmul: [batch, free_a, contracted] @ [batch, contracted, free_b].
No new op is needed, so autodiff, fusion and both backends take it as is.
Not supported (a clear error): '...' and an index repeated within one operand
(a diagonal).
"""
from __future__ import annotations

import math

from .ir import lang as L
from .ir.errors import ShapeError


def einsum(subscripts: str, *operands):
    inputs, output = _parse(subscripts, len(operands))
    values = L._values(*operands)
    sizes: dict[str, int] = {}
    for spec, value in zip(inputs, values):
        if len(spec) != value.ndim:
            raise ShapeError(f"einsum: '{spec}' names {len(spec)} axes of an operand of type {value.type}")
        for index, size in zip(spec, value.shape):
            if sizes.setdefault(index, size) != size:
                raise ShapeError(f"einsum: index '{index}' has sizes {sizes[index]} and {size} "
                                 f"(operands: {', '.join(str(v.type) for v in values)})")
    value, spec = values[0], inputs[0]
    for k in range(1, len(values)):
        later = set(output).union(*inputs[k + 1:])
        value, spec = _pair(value, spec, values[k], inputs[k], later, sizes)
    value, spec = _sum_out(value, spec, set(output))
    return L.transpose(value, tuple(spec.index(i) for i in output))


def _parse(subscripts: str, count: int) -> tuple[list[str], str]:
    text = subscripts.replace(" ", "")
    if "." in text:
        raise ShapeError("einsum: '...' is not supported; name every axis")
    lhs, arrow, rhs = text.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != count:
        raise ShapeError(f"einsum: '{subscripts}' names {len(inputs)} operands, got {count}")
    for spec in inputs + [rhs]:
        if not all(c.isalpha() for c in spec):
            raise ShapeError(f"einsum: indices are letters, got '{spec}' in '{subscripts}'")
        if len(set(spec)) != len(spec):
            raise ShapeError(f"einsum: an index repeated within '{spec}' (a diagonal) is not supported")
    if not arrow:  # NumPy's implicit output: the indices seen once, in alphabetical order
        letters = "".join(inputs)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    missing = set(rhs) - set("".join(inputs))
    if missing:
        raise ShapeError(f"einsum: output indices {sorted(missing)} appear in no operand")
    return inputs, rhs


def _sum_out(value, spec: str, keep: set[str]):
    """value with the axes whose index is not in keep summed out."""
    gone = [k for k, index in enumerate(spec) if index not in keep]
    if not gone:
        return value, spec
    return L.reduce_sum(value, tuple(gone)), "".join(i for i in spec if i in keep)


def _pair(a, sa: str, b, sb: str, later: set[str], sizes: dict[str, int]):
    a, sa = _sum_out(a, sa, set(sb) | later)
    b, sb = _sum_out(b, sb, set(sa) | later)
    batch = [i for i in sa if i in sb and i in later]
    contracted = [i for i in sa if i in sb and i not in later]
    free_a = [i for i in sa if i not in sb]
    free_b = [i for i in sb if i not in sa]
    a = L.transpose(a, tuple(sa.index(i) for i in batch + free_a + contracted))
    b = L.transpose(b, tuple(sb.index(i) for i in batch + contracted + free_b))

    def size(indices):
        return math.prod(sizes[i] for i in indices)

    a = L.reshape(a, (size(batch), size(free_a), size(contracted)))
    b = L.reshape(b, (size(batch), size(contracted), size(free_b)))
    out = L.matmul(a, b)
    spec = batch + free_a + free_b
    return L.reshape(out, tuple(sizes[i] for i in spec)), "".join(spec)
