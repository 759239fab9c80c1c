"""Symbolic schedules and memory plans for the codegen tests of #18 (one native program for
every batch size): a function traced with `batch_dim=`, decomposed and fused, and a plan
giving every arena buffer its own region (offsets linear in B), and the per-size reference."""
from __future__ import annotations

import numpy as np

import ffcompile as ff
from ffcompile.ir.interpret import interpret
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import Affine, Envelope
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import ALIGNMENT, Buffer, MemoryPlan
from ffcompile.passes.schedule import verify_schedule

SIZES = (1, 2, 7, 64, 129)


def symbolic_graph(fn, batch_dim, *example):
    """fn traced once with the batch axes of `example` as the symbol B, decomposed."""
    return decompose(ff.compile(fn, batch_dim=batch_dim).lower(*example).symbolic)


def symbolic_schedule(fn, batch_dim, *example):
    return verify_schedule(fuse(symbolic_graph(fn, batch_dim, *example)))


def own_regions(schedule) -> MemoryPlan:
    """Each arena buffer (a kernel output that is not a graph result) in a region of its own,
    one after another: offsets `const + per_batch * B`, both multiples of ALIGNMENT."""
    graph = schedule.graph
    results = {schedule.root(j) for j in graph.outputs}
    end, buffers = Affine(0), []
    for k, kernel in enumerate(schedule.kernels):
        for v in kernel.outputs:
            t = graph.nodes[v].type
            if v in results:
                buffers.append(Buffer(v, t, k, k, None))
                continue
            buffers.append(Buffer(v, t, k, k, end))
            size = Affine.of(t.nbytes)
            end = end + Affine(_aligned(size.const), _aligned(size.per_batch))
    return MemoryPlan(schedule, tuple(buffers), Envelope((end,)), 0, ())


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def per_size(graph, batch: int, args):
    """The reference results at one batch size: the graph specialized, run by the interpreter."""
    return interpret(specialize(graph, {"B": batch}), args)
