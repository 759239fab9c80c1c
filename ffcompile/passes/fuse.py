"""Fusion: partition a graph of primitives into kernels (a Schedule).

Greedy and consumer-driven, like XLA's instruction fusion: nodes are visited
last to first, and a node joins the kernel of its readers when that kernel
can evaluate it inside its loop nest; otherwise it starts a kernel of its own
and becomes that kernel's root. What a kernel accepts:

- an elementwise op (or broadcast, iota) of the kernel's iteration space:
  into an elementwise kernel or a GEMM/reduction epilogue; of the reduced
  operand's shape: into a reduction prologue; of rank 0: anywhere (it is
  loop-invariant);
- a matmul or reduce whose only reader is an elementwise kernel over its
  result shape: as that kernel's anchor (the rest becomes its epilogue);
- a transpose of the last two axes whose only use is a GEMM operand: as a
  `trans_a`/`trans_b` flag.

A node read by several kernels still joins the one with the smallest root and
becomes an extra output of it (e.g. the pre-activation a ReLU's gradient
needs, written by the GEMM epilogue that computes the ReLU), unless it is the
only reader of a matmul or reduce: then it roots its own kernel, so that op
gets it as epilogue; or a scalar computed from graph inputs alone (Adam's
bias correction from the step count): then it roots its own kernel too, so
that the updates reading it do not all wait for the one it would join
(kernel_order.py runs each update as soon as its gradient is ready). Afterwards, an elementwise kernel over the result space
of an earlier kernel it reads is merged into that kernel as epilogue (the log
of softmax's row sums, say).

Why no cycle can form: a node only ever joins a kernel that reads it (never
one that reads it through a view: that kernel needs its buffer), so each
kernel's root is its last node; and when a node's readers span several
kernels it joins the one whose root comes first, so every value flows from a
kernel with a smaller root to one with a larger root. A merge moves the
earlier kernel to the later one's root only when no other reader of it runs
in between, which keeps that true. Ordering kernels by root is therefore a
valid execution order, and the one fuse returns.
"""
from __future__ import annotations

from ..ir import Graph
from ..ir import ops as O
from .kernel_order import collectives_first_ready, sinks_first_ready
from .schedule import VIEW_OPS, Kernel, KernelKind, Schedule

PROLOGUE, ANCHOR, EPILOGUE = "prologue", "anchor", "epilogue"
_REDUCES = (O.ReduceSum, O.ReduceMax)
# kernels with an elementwise loop to fuse into
_LOOPS = (KernelKind.ELEMENTWISE, KernelKind.GEMM, KernelKind.REDUCTION)


def fuse(graph: Graph) -> Schedule:
    return _Partition(graph).run()


class _Group:
    """A kernel under construction (mutable; frozen into a Kernel at the end)."""

    def __init__(self, kind: str, root: int, space: tuple[int, ...]):
        self.kind = kind
        self.root = root
        self.space = space  # the result shape: what the elementwise part loops over
        self.anchor = root if kind in (KernelKind.GEMM, KernelKind.REDUCTION) else None
        self.phase: dict[int, str] = {root: ANCHOR if self.anchor is not None else EPILOGUE}
        self.trans_a = self.trans_b = False


class _Partition:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = graph.nodes
        self.users = graph.users()
        self.outputs = set(graph.outputs)
        self.copies = _copied_outputs(graph)
        self.views = {i for i, n in enumerate(self.nodes) if n.op in VIEW_OPS and i not in self.copies}
        self.literals = {i for i in range(len(self.nodes)) if self._is_literal(i)}
        self.group_of: list[_Group | None] = [None] * len(self.nodes)
        self.from_inputs = [False] * len(self.nodes)  # computed from graph inputs and constants alone
        for i, node in enumerate(self.nodes):
            self.from_inputs[i] = all(self.from_inputs[j] for j in node.inputs)

    def run(self) -> Schedule:
        groups = []
        for i in range(len(self.nodes) - 1, -1, -1):
            if self.nodes[i].op is O.Input or i in self.views or i in self.literals:
                continue
            group = self._join(i)
            if group is None:
                group = _Group(_kind_of(self.nodes[i].op, i in self.copies), i, self.nodes[i].type.shape)
                groups.append(group)
            self.group_of[i] = group
        groups = self._absorb_epilogues(groups)
        kernels = sinks_first_ready(self.graph, [self._kernel(g) for g in groups], self._root)
        kernels = collectives_first_ready(kernels, self._root)
        return Schedule(self.graph, tuple(kernels), tuple(sorted(self.views)), tuple(sorted(self.literals)))

    def _root(self, v: int) -> int:
        """The value whose buffer a read of v reads (views read their operand's)."""
        while v in self.views:
            v = self.nodes[v].inputs[0]
        return v

    # ---- the walk

    def _join(self, i: int) -> _Group | None:
        """The kernel node i joins (after recording it there), or None to start its own."""
        node, users = self.nodes[i], self.users[i]
        through_views = [self.group_of[u] for u in self._read_through_views(i)]
        readers = {id(g): g for g in [self.group_of[u] for u in users if u not in self.views] + through_views}
        if not readers or i in self.copies:
            return None
        first = min(readers.values(), key=lambda g: g.root)
        if any(g is first for g in through_views):
            return None  # that kernel reads i through a view: i needs a buffer before it runs
        phases = {first.phase[u] for u in users if self.group_of[u] is first}
        alone = len(readers) == 1 and i not in self.outputs and not through_views
        if is_fusable(node.op):
            if not alone and self._only_reader_of_anchor(i):
                return None  # an output anyway: better the epilogue of its GEMM than another's prologue
            if not alone and self.from_inputs[i] and not node.type.shape:
                return None  # a scalar several kernels share (an optimizer's step count): no update waits on another
            phase = self._elementwise_phase(node, first, phases, alone)
            if phase is not None:
                first.phase[i] = phase
                return first
        elif node.op is O.Matmul or node.op in _REDUCES:
            # A matmul's epilogue runs in place over the GEMM result, hence the same type.
            if alone and first.kind == KernelKind.ELEMENTWISE and node.type.shape == first.space and (
                    node.op is not O.Matmul or node.type == self.nodes[first.root].type):
                first.kind = KernelKind.GEMM if node.op is O.Matmul else KernelKind.REDUCTION
                first.anchor = i
                first.phase[i] = ANCHOR
                return first
        elif node.op is O.Transpose and alone and first.kind == KernelKind.GEMM and phases == {ANCHOR}:
            matmul = self.nodes[first.anchor]
            if len(users) == 1 and _swaps_last_two(node.attr("perm")):
                first.trans_a |= matmul.inputs[0] == i
                first.trans_b |= matmul.inputs[1] == i
                first.phase[i] = PROLOGUE
                return first
        return None

    def _elementwise_phase(self, node, group: _Group, phases: set[str], alone: bool) -> str | None:
        """Where an elementwise node can run inside group, given the phases of its readers there.

        Broadcast and iota are index maps, free to evaluate at every point of a
        larger space, but only when no other kernel reads them (an output has
        the shape of the loop that writes it)."""
        if group.kind not in _LOOPS:
            return None
        shape = node.type.shape
        if not shape:  # loop-invariant: fits any phase; before the loop if a prologue reads it
            return PROLOGUE if group.kind == KernelKind.REDUCTION and phases & {PROLOGUE, ANCHOR} else EPILOGUE
        fits = _broadcasts_into if alone and node.op in (O.Broadcast, O.Iota) else tuple.__eq__
        if phases == {EPILOGUE} and fits(shape, group.space):
            return EPILOGUE
        if group.kind == KernelKind.REDUCTION and phases <= {PROLOGUE, ANCHOR}:
            reduced = self.nodes[self.nodes[group.anchor].inputs[0]]
            if fits(shape, reduced.type.shape):
                return PROLOGUE
        return None

    def _only_reader_of_anchor(self, i: int) -> bool:
        """Whether node i is the only reader of a matmul or reduce that would anchor its kernel."""
        node = self.nodes[i]
        for j in node.inputs:
            op, out = self.nodes[j].op, self.nodes[j].type
            if (op is O.Matmul or op in _REDUCES) and set(self.users[j]) == {i} and j not in self.outputs and (
                    out == node.type if op is O.Matmul else out.shape == node.type.shape):
                return True
        return False

    def _read_through_views(self, i: int) -> list[int]:
        """The non-view nodes that read node i through one or more views."""
        found, pending = [], [u for u in self.users[i] if u in self.views]
        while pending:
            v = pending.pop()
            for u in self.users[v]:
                (pending if u in self.views else found).append(u)
        return found

    # ---- merging epilogues into earlier kernels

    def _absorb_epilogues(self, groups: list[_Group]) -> list[_Group]:
        """Merge each elementwise kernel into the earlier kernel whose results it maps over.

        The walk cannot do this when the earlier kernel's result has other
        readers. The merged kernel runs where the elementwise one did, so no
        other reader of the earlier kernel may run in between. Returns the
        surviving groups in root order."""
        kept: list[_Group] = []
        for group in sorted(groups, key=lambda g: g.root):
            host = self._epilogue_host(group) if group.kind == KernelKind.ELEMENTWISE else None
            if host is None:
                kept.append(group)
                continue
            for i in group.phase:
                host.phase[i] = EPILOGUE
                self.group_of[i] = host
            host.root = group.root
        return sorted(kept, key=lambda g: g.root)

    def _epilogue_host(self, group: _Group) -> _Group | None:
        nodes, group_of = self.nodes, self.group_of
        reads = [j for i in group.phase for j in nodes[i].inputs]
        hosts = [g for g in (group_of[j] for j in reads if group_of[j] is not None)
                 if g is not group and g.kind in _LOOPS and g.space == group.space]
        if not hosts:
            return None
        host = max(hosts, key=lambda g: g.root)
        if any(group_of[j] is host and host.phase[j] == PROLOGUE for j in reads):
            return None  # a prologue value has the reduced operand's shape, not this space
        if host.kind == KernelKind.GEMM and nodes[group.root].type != nodes[host.anchor].type:
            return None  # the epilogue runs in place over the GEMM result
        for i in host.phase:
            through_views = self._read_through_views(i)
            if any(group_of[u] is group for u in through_views):
                return None  # it reads the host's output through a view: that needs the buffer
            for u in self.users[i] + through_views:
                reader = group_of[u]
                if reader not in (None, host, group) and reader.root < group.root:
                    return None  # it runs before the merged kernel would
        return host

    # ---- results

    def _kernel(self, group: _Group) -> Kernel:
        order = {PROLOGUE: 0, ANCHOR: 1, EPILOGUE: 2}
        members = group.phase
        body = tuple(sorted(members, key=lambda i: (order[members[i]], i)))
        inputs: dict[int, None] = {}  # ordered set
        for i in body:
            inputs.update((j, None) for j in self.nodes[i].inputs if j not in members)
        outputs = tuple(i for i in sorted(members) if i == group.root or i in self.outputs
                        or any(self.group_of[u] is not group for u in self.users[i]))
        return Kernel(group.kind, body, tuple(inputs), outputs, group.anchor, group.trans_a, group.trans_b)

    def _is_literal(self, i: int) -> bool:
        """A rank-0 constant read only by fused loops needs no buffer."""
        node = self.nodes[i]
        if node.op is not O.Constant or node.type.rank or i in self.outputs:
            return False
        return all(u not in self.views and (is_fusable(self.nodes[u].op) or self.nodes[u].op in _REDUCES)
                   for u in self.users[i])


def _broadcasts_into(shape: tuple[int, ...], space: tuple[int, ...]) -> bool:
    """Whether a value of shape can be read at every index of space (NumPy broadcasting)."""
    if len(shape) > len(space):
        return False
    return all(d in (1, s) for d, s in zip(reversed(shape), reversed(space)))


def is_fusable(op) -> bool:
    """Ops a loop nest evaluates per element: elementwise ones, and broadcast and iota (index maps)."""
    return (O.ELEMENTWISE in op.traits and O.COMPOSITE not in op.traits) or op in (O.Broadcast, O.Iota)


def _swaps_last_two(perm: tuple[int, ...]) -> bool:
    n = len(perm)
    return n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)


def _kind_of(op, copied: bool) -> str:
    if copied:
        return KernelKind.COPY
    if op is O.Matmul:
        return KernelKind.GEMM
    if op in _REDUCES:
        return KernelKind.REDUCTION
    if op in (O.Constant, O.Iota):
        return KernelKind.SOURCE
    if O.COLLECTIVE in op.traits:
        return KernelKind.COLLECTIVE
    if is_fusable(op):
        return KernelKind.ELEMENTWISE
    if O.LAYOUT in op.traits:
        return KernelKind.LAYOUT
    raise NotImplementedError(f"fuse: no kernel kind for op {op.name!r} (composites must be decomposed first)")


def _copied_outputs(graph: Graph) -> set[int]:
    """View outputs that must be copied: their storage is an input's or another output's."""
    nodes = graph.nodes
    claimed = {j for j in graph.outputs if nodes[j].op not in VIEW_OPS}
    copies: set[int] = set()
    for j in graph.outputs:
        if j in claimed:
            continue
        root = j
        while nodes[root].op in VIEW_OPS:
            root = nodes[root].inputs[0]
        if nodes[root].op is O.Input or root in claimed:
            copies.add(j)
        claimed.add(root)
    return copies
