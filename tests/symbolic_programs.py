"""Symbolic schedules and memory plans for the codegen tests of #18 (one native program for
every batch size): a function traced with `batch_dim=`, decomposed and fused, its plan
(offsets linear in B), and the per-size reference."""
from __future__ import annotations


import ffcompile as ff
from ffcompile.ir.interpret import interpret
from ffcompile.ir.specialize import specialize
from ffcompile.codegen.llvm.lower import gemm_scratch
from ffcompile.ir.symbolic import BatchRange
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import MemoryPlan, plan_memory
from ffcompile.passes.schedule import verify_schedule

SIZES = (1, 2, 7, 64, 129)


def symbolic_graph(fn, batch_dim, *example):
    """fn traced once with the batch axes of `example` as the symbol B, decomposed (traced for
    the NumPy backend: the trace is the same, and nothing is compiled)."""
    return decompose(ff.compile(fn, batch_dim=batch_dim, backend="numpy").lower(*example).symbolic)


def symbolic_schedule(fn, batch_dim, *example):
    return verify_schedule(fuse(symbolic_graph(fn, batch_dim, *example)))


def symbolic_plan(schedule, max_batch: int | None = None) -> MemoryPlan:
    """The memory plan of a symbolic schedule for B in 1..max_batch, with the LLVM backend's
    GEMM scratch (as the pipeline plans it)."""
    return plan_memory(schedule, lambda protected: gemm_scratch(schedule), batch=BatchRange(max_batch))


def per_size(graph, batch: int, args):
    """The reference results at one batch size: the graph specialized, run by the interpreter."""
    return interpret(specialize(graph, {"B": batch}), args)
