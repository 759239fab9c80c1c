"""The memory plan of a symbolic schedule (passes/memory_symbolic.py): offsets and sizes
linear in B, one plan for every batch size in range. At every sampled B its buffers are
aligned and apart, and the schedule run in a garbage-filled arena of the planned size at
B, every buffer at its offset at B, gives the per-size results."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile import zoo
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import Affine, BatchRange, Envelope, bytes_at
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import ALIGNMENT, assert_no_overlap, plan_memory
from ffcompile.passes.memory_symbolic import at_most, place_in_order
from ffcompile.passes.schedule import run_schedule_reference
from ffcompile.passes.simplify import simplify

SIZES = (1, 2, 7, 64, 129)


def symbolic_schedule(fn, batch_dim, *args):
    graph = ff.compile(fn, batch_dim=batch_dim, backend="numpy").lower(*args).symbolic
    return fuse(simplify(decompose(graph)))


def run_in_arena_at(plan, batch: int, args):
    """The schedule specialized to batch, run with every arena buffer a view of one
    garbage-filled byte array of the planned size at batch, at its offset at batch."""
    schedule = dataclasses.replace(plan.schedule, graph=specialize(plan.schedule.graph, {"B": batch}))
    arena = np.full(bytes_at(plan.arena_bytes, batch), 0xA5, np.uint8)
    buffers = {}
    for b in plan.buffers:
        if b.offset is not None:
            t = schedule.graph.nodes[b.value].type
            start = bytes_at(b.offset, batch)
            buffers[b.value] = arena[start:start + t.nbytes].view(t.np_dtype).reshape(t.shape)
    return run_schedule_reference(schedule, args, buffers), run_schedule_reference(schedule, args)


@st.composite
def mlps(draw):
    """A value_and_grad of a random MLP and loss over a symbolic batch, with its arguments."""
    widths = draw(st.lists(st.integers(1, 40), min_size=2, max_size=5))
    act = draw(st.sampled_from([ff.relu, ff.tanh, ff.sigmoid]))
    mean = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    params = [(rng.normal(size=(a, b)), rng.normal(size=b)) for a, b in zip(widths, widths[1:])]

    def loss(params, x):
        for w, b in params:
            x = act(x @ w + b)
        return x.mean() if mean else (x * x).sum()

    return ff.value_and_grad(loss), params, widths[0]


@settings(max_examples=25, deadline=None)
@given(mlps(), st.sampled_from([None, 1, 7, 300]), st.integers(0, 2**16))
def test_random_symbolic_plans_never_overlap_and_run_in_their_arena(case, max_batch, seed):
    fn, params, width = case
    rng = np.random.default_rng(seed)
    schedule = symbolic_schedule(fn, (None, 0), params, rng.normal(size=(3, width)))
    plan = plan_memory(schedule, batch=BatchRange(max_batch))
    assert isinstance(plan.arena_bytes, Envelope) and plan.batch == BatchRange(max_batch)
    assert all(isinstance(b.offset, Affine) and b.offset.const % ALIGNMENT == 0
               and b.offset.per_batch % ALIGNMENT == 0 for b in plan.buffers if b.offset is not None)
    assert_no_overlap(plan)
    for n in (1, 2, 7):
        if max_batch is not None and n > max_batch:
            continue
        assert bytes_at(plan.lower_bound, n) <= bytes_at(plan.arena_bytes, n)
        leaves = [*(a for w, b in params for a in (w, b)), rng.normal(size=(n, width))]
        got, want = run_in_arena_at(plan, n, leaves)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 8), st.integers(0, 4), st.integers(0, 3)),
                min_size=1, max_size=30),
       st.sampled_from([None, 1, 5, 64]))
def test_placement_keeps_blocks_live_together_apart_at_every_size(blocks, max_batch):
    """Blocks of fixed, per-row and mixed sizes: any two live at one step share no byte at
    any B in range (checked at sampled sizes, and by the comparison at both range ends)."""
    batch = BatchRange(max_batch)
    span = {k: (lo, lo + length, Affine(64 * c, 64 * p if c or p else 64))
            for k, (lo, length, c, p) in enumerate(blocks)}
    offsets = place_in_order(span, list(span), batch)
    for a in span:
        for b in span:
            (alo, ahi, asize), (blo, bhi, bsize) = span[a], span[b]
            if a >= b or ahi < blo or bhi < alo:
                continue
            assert at_most(offsets[a] + asize, offsets[b], batch) or at_most(offsets[b] + bsize, offsets[a], batch)
            for n in (1, 2, 3, 64, 1000):
                if max_batch is None or n <= max_batch:
                    a0, b0 = offsets[a].at(n), offsets[b].at(n)
                    assert a0 + asize.at(n) <= b0 or b0 + bsize.at(n) <= a0


@pytest.mark.parametrize("name", ["xor", "digits", "mnist", "deep"])
def test_zoo_training_step_plans_at_every_size(name):
    """The symbolic plan of an Adam step: apart at every size, never below the per-size
    plan's lower bound, and its own lower bound at B is the per-size plan's live bytes."""
    w = zoo.get(name)
    params = w.init(0)
    step = ff.compile_train_step(w.loss, ff.optim.Adam(1e-3), batch_dim=0, backend="numpy")
    state = step.init(params)
    step(params, state, *w.batch(0, 3))
    graph = step.compiled.last_lowered.symbolic
    plan = plan_memory(fuse(simplify(decompose(graph))), batch=BatchRange())
    assert_no_overlap(plan)
    for n in SIZES:
        fixed = plan_memory(fuse(simplify(decompose(specialize(graph, {"B": n})))))
        assert bytes_at(plan.arena_bytes, n) >= fixed.lower_bound
        assert bytes_at(plan.lower_bound, n) >= fixed.lower_bound  # rows padded to 64 bytes
