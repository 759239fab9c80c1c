"""Schedule: a graph partitioned into kernels, the unit code generation emits.

A kernel is one loop nest (or one GEMM call, one layout copy) over the nodes
of its body. Only values that cross kernel boundaries get buffers; values
inside a kernel live in registers or loop temporaries. Three kinds of values
belong to no kernel:

- graph inputs: the caller's arrays;
- views: `reshape` and `stop_gradient` alias their operand's buffer. Every
  buffer is a contiguous row-major array, so a reshape only renames its shape,
  and stop_gradient is the identity once autodiff has run;
- literals: rank-0 constants read only by fused loops, emitted inline.

Kernel kinds and the shape of their bodies:

- elementwise: a loop nest over the shape of its outputs (the iteration
  space); operands of smaller shape are read broadcast.
- reduction: prologue (elementwise over the reduced operand's shape), the
  anchor reduce_sum/reduce_max, epilogue (elementwise over the result shape).
- gemm: prologue of operand transposes folded into `trans_a`/`trans_b` (never
  materialized), the anchor matmul, then an elementwise epilogue over the
  result, evaluated right after the GEMM call. The GEMM writes into the
  buffer of the last body node, which the epilogue then overwrites in place
  (fusion guarantees the same type), or into the matmul's own buffer when
  the matmul is itself an output.
- collective (an all_reduce): copies its operands into its buffer and starts
  the reduction there; a backend waits for it before the first kernel that
  reads its buffer, so the kernels in between overlap the communication.
- layout (transpose, concat, slice, pad), copy (a graph output that would
  otherwise share storage with an input or another output), source
  (constants and iota that need a buffer): one node each.

Inside a loop nest a body node is read at the current index with NumPy
broadcasting, so a node smaller than the iteration space (a broadcast, an
iota, a rank-0 value) is legal there; rank-0 nodes are loop-invariant and a
backend evaluates them once, before the loops. An elementwise kernel must
read every input element before it writes the output element at the same
index: the memory planner may give an output the storage of a dying input.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import numpy as np

from ..ir import Graph, VerifyError
from ..ir import ops as O
from ..ir.interpret import evaluate
from ..ir.printer import format_node

class KernelKind(StrEnum):
    """What a kernel is, as the docstring above describes. (Not an op trait: an
    elementwise kernel holds broadcasts and iotas too.)"""

    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    GEMM = "gemm"
    LAYOUT = "layout"
    COPY = "copy"
    SOURCE = "source"
    COLLECTIVE = "collective"


VIEW_OPS = (O.Reshape, O.StopGradient)


@dataclass(frozen=True)
class Kernel:
    kind: str
    body: tuple[int, ...]  # node ids in evaluation order: prologue, anchor, epilogue
    inputs: tuple[int, ...]  # values read from outside the kernel, in first-use order
    outputs: tuple[int, ...]  # body values read outside the kernel or returned, ascending
    anchor: int | None = None  # the matmul / reduce node of a gemm / reduction kernel
    trans_a: bool = False
    trans_b: bool = False

    def __post_init__(self):
        if not isinstance(self.kind, KernelKind):
            raise ValueError(f"unknown kernel kind {self.kind!r}; kinds are {[k.value for k in KernelKind]}")

    @property
    def prologue(self) -> tuple[int, ...]:
        return self.body[:self.body.index(self.anchor)] if self.anchor is not None else ()

    @property
    def epilogue(self) -> tuple[int, ...]:
        return self.body[self.body.index(self.anchor) + 1:] if self.anchor is not None else self.body

    @property
    def header(self) -> str:
        flags = [name for name, on in (("trans_a", self.trans_a), ("trans_b", self.trans_b)) if on]
        kind = self.kind + (f" [{', '.join(flags)}]" if flags else "")
        ins = ", ".join(f"%{i}" for i in self.inputs)
        outs = ", ".join(f"%{i}" for i in self.outputs)
        return f"{kind} ({ins}) -> ({outs})"


@dataclass(frozen=True)
class Schedule:
    graph: Graph
    kernels: tuple[Kernel, ...]  # in execution order
    views: tuple[int, ...]  # reshape / stop_gradient nodes aliasing their operand, ascending
    literals: tuple[int, ...]  # rank-0 constants emitted inline, ascending

    def root(self, value: int) -> int:
        """The value whose storage `value` uses: itself, or the operand its views alias."""
        views = self._view_set
        while value in views:
            value = self.graph.nodes[value].inputs[0]
        return value

    @cached_property
    def _view_set(self) -> frozenset[int]:
        return frozenset(self.views)

    @cached_property
    def producer(self) -> dict[int, int]:
        """Kernel index of every kernel output."""
        return {v: k for k, kernel in enumerate(self.kernels) for v in kernel.outputs}

    def __str__(self) -> str:
        return print_schedule(self)


def print_schedule(schedule: Schedule, locs: bool = True) -> str:
    """Literals first, then kernels in order; a view prints after the kernel that makes its root."""
    graph = schedule.graph
    nodes = graph.nodes
    views_after: dict[int, list[int]] = {}
    for v in schedule.views:
        views_after.setdefault(schedule.producer.get(schedule.root(v), -1), []).append(v)
    lines = [f"schedule @{graph.name} {{"]
    lines += [f"  literal {format_node(i, nodes[i], locs)}" for i in schedule.literals]
    lines += [f"  view {format_node(i, nodes[i], locs)}" for i in views_after.get(-1, [])]
    for k, kernel in enumerate(schedule.kernels):
        lines.append(f"  kernel {k} {kernel.header} {{")
        lines += [f"    {format_node(i, nodes[i], locs)}" for i in kernel.body]
        lines.append("  }")
        lines += [f"  view {format_node(i, nodes[i], locs)}" for i in views_after.get(k, [])]
    lines.append("  return " + ", ".join(f"%{i}" for i in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def verify_schedule(schedule: Schedule) -> Schedule:
    """Raise VerifyError unless every node is computed once, in order, and read only where defined.

    Kernels must form a valid order: each kernel reads only graph inputs,
    literals, and outputs of earlier kernels (through views or directly), so
    kernels can never form a cycle."""
    graph = schedule.graph
    placed: dict[int, str] = {i: "input" for i in graph.inputs}
    placed.update({i: "view" for i in schedule.views})
    placed.update({i: "literal" for i in schedule.literals})
    available = set(graph.inputs) | set(schedule.literals)
    for k, kernel in enumerate(schedule.kernels):
        where = f"kernel {k} ({kernel.kind})"
        body = set(kernel.body)
        for i in kernel.body:
            if i in placed:
                raise VerifyError(f"{where}: %{i} is already placed ({placed[i]})")
            placed[i] = where
            for j in graph.nodes[i].inputs:
                if j not in body and j not in kernel.inputs:
                    raise VerifyError(f"{where}: %{i} reads %{j}, neither in the body nor an input")
        for j in kernel.inputs:
            if schedule.root(j) not in available:
                raise VerifyError(f"{where}: input %{j} is not produced by an earlier kernel")
        if not set(kernel.outputs) <= body:
            raise VerifyError(f"{where}: outputs {kernel.outputs} are not all in the body")
        available.update(kernel.outputs)
    missing = [i for i in range(len(graph.nodes)) if i not in placed]
    if missing:
        raise VerifyError(f"nodes {missing[:10]} are in no kernel")
    for j in graph.outputs:
        if schedule.root(j) not in available:
            raise VerifyError(f"graph output %{j} is not a kernel output")
    for j in schedule.views:
        if schedule.root(j) not in available:
            raise VerifyError(f"view %{j} aliases %{schedule.root(j)}, which no kernel outputs")
    return schedule


def run_schedule_reference(schedule: Schedule, args, buffers: dict[int, np.ndarray] | None = None
                           ) -> tuple[np.ndarray, ...]:
    """Execute kernel by kernel, node by node, with each op's NumPy reference.

    A kernel sees only its declared inputs, and only its declared outputs
    survive it, so a wrong partition fails here rather than in a backend.
    Every value is held C-contiguous, as in a buffer, so the results do not
    depend on the partition (BLAS and NumPy reductions round differently on
    strided operands): any two schedules of a graph agree bitwise.
    `buffers` may give preallocated arrays (views of a planned arena) for
    kernel outputs: each is written as soon as it is computed, and kernel
    inputs are read from storage at every use, so a memory plan that lets a
    live value be overwritten gives wrong results."""
    graph = schedule.graph
    nodes = graph.nodes
    if len(args) != len(graph.inputs):
        raise ValueError(f"schedule @{graph.name} takes {len(graph.inputs)} arguments, got {len(args)}")
    buffers = buffers or {}
    stored: dict[int, np.ndarray] = {i: np.asarray(a) for i, a in zip(graph.inputs, args)}
    stored.update({i: evaluate(nodes[i], []) for i in schedule.literals})

    def read(value: int) -> np.ndarray:
        chain = []
        while value not in stored:
            if nodes[value].op not in VIEW_OPS:
                raise VerifyError(f"%{value} is read before any kernel produced it")
            chain.append(value)
            value = nodes[value].inputs[0]
        result = stored[value]
        for v in reversed(chain):
            result = evaluate(nodes[v], [result])
        return result

    for k, kernel in enumerate(schedule.kernels):
        local: dict[int, np.ndarray] = {}
        inputs = set(kernel.inputs)
        outputs = set(kernel.outputs)
        for i in kernel.body:
            operands = []
            for j in nodes[i].inputs:
                if j not in local and j not in inputs:
                    raise VerifyError(f"kernel {k}: %{i} reads %{j}, neither in the body nor an input")
                operands.append(local[j] if j in local else read(j))
            value = evaluate(nodes[i], operands)
            if i in buffers:
                np.copyto(buffers[i], value)
                value = buffers[i]
            elif i in outputs:
                value = value.copy()  # its own storage: a reshape's result is a view of its operand
            local[i] = value
            if i in outputs:
                stored[i] = value
    return tuple(read(j) for j in graph.outputs)

