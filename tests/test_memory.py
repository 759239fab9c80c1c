"""Memory planning: liveness, in-place reuse, arena offsets, and running inside the planned arena."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuse import (digits_sized_args, random_graphs, relu_mlp_loss, tanh_mlp_args, tanh_mlp_loss,
                       training_graph)

import ffcompile as ff
from ffcompile.ir import Builder, TensorType
from ffcompile.ir import ops as O
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import ALIGNMENT, MemoryPlan, assert_no_overlap, plan_memory
from ffcompile.passes.schedule import run_schedule_reference
from ffcompile.tree import tree_flatten


def run_in_arena(plan: MemoryPlan, args):
    """Run the schedule with every arena buffer a view of one byte array at its planned offset;
    the arena starts as garbage, so reading a clobbered or unwritten value shows."""
    arena = np.full(plan.arena_bytes, 0xA5, np.uint8)
    buffers = {b.value: arena[b.offset:b.offset + b.type.nbytes].view(b.type.np_dtype).reshape(b.type.shape)
               for b in plan.buffers if b.offset is not None}
    return run_schedule_reference(plan.schedule, args, buffers)


# --------------------------------------------------------------------------- golden plans

TANH_MLP_PLAN = """\
memory @value_and_grad_tanh_mlp_loss arena=320 lower_bound=320 ratio=1.000 {
  %8:f32[2,8] {offset=0, size=64, live=[0, 9]}
  %10:f32[2,3] {offset=64, size=64, live=[1, 3]}
  %11:f32[2,1] {offset=128, size=64, live=[2, 3]}
  %13:f32[2,3] {offset=192, size=64, live=[3, 4]}
  %16:f32[2,1] {offset=256, size=64, live=[3, 4]}
  %17:f32[2,3] {offset=64, size=64, live=[4, 7]}
  %22:f32[] {output, live=[4, 4]}
  %25:f32[] {offset=128, size=64, live=[5, 6]}
  %28:f32[2,3] {offset=192, size=64, live=[6, 7]}
  %29:f32[2,1] {offset=256, size=64, live=[6, 7]}
  %32:f32[2,3] {offset=128, size=64, live=[7, 9]}
  %33:f32[3] {output, live=[7, 7]}
  %37:f32[8,3] {output, live=[8, 8]}
  %41:f32[2,8] {offset=64, size=64, live=[9, 11]}
  %42:f32[8] {output, live=[10, 10]}
  %44:f32[4,8] {output, live=[11, 11]}
}
"""


def test_two_layer_mlp_training_step_plan_golden():
    """Outputs (loss and gradients) live outside the arena; everything else shares 5 slots."""
    graph = training_graph(tanh_mlp_loss, tanh_mlp_args(), (0, 1, 2, 3))
    plan = plan_memory(fuse(graph))
    print(plan)
    assert str(plan) == TANH_MLP_PLAN
    assert plan.timeline == (64, 128, 192, 320, 256, 192, 320, 320, 128, 192, 64, 64)
    assert_no_overlap(plan)


def in_place_graph():
    """r = x@x dies in the elementwise kernel computing o1 = r + 1 and o2 = r * o1."""
    b = Builder("inplace")
    x = b.add_input(TensorType((4, 4), "f32"), "x")
    r = b.emit(O.Matmul, [x, x])
    s = b.emit(O.ReduceSum, [r], {"axes": (0, 1), "keepdims": False})
    one = b.emit(O.Constant, [], {"value": 1.0, "type": TensorType((), "f32")})
    o1 = b.emit(O.Add, [r, one])
    o2 = b.emit(O.Mul, [r, o1])
    p = b.emit(O.Matmul, [o1, x])
    q = b.emit(O.Matmul, [o2, x])
    return b.finish([s, p, q])


IN_PLACE_PLAN = """\
memory @inplace arena=128 lower_bound=128 ratio=1.000 {
  %1:f32[4,4] {offset=0, size=64, live=[0, 2]}
  %2:f32[] {output, live=[1, 1]}
  %4:f32[4,4] {offset=64, size=64, live=[2, 3]}
  %5:f32[4,4] {offset=0, size=64, live=[2, 4], inplace=%1}
  %6:f32[4,4] {output, live=[3, 3]}
  %7:f32[4,4] {output, live=[4, 4]}
}
"""


def test_in_place_only_where_nothing_reads_the_input_afterwards():
    """o2 may overwrite r; o1 may not, because o2 still reads r after o1 is written."""
    graph = in_place_graph()
    plan = plan_memory(fuse(graph))
    assert str(plan) == IN_PLACE_PLAN
    assert plan.timeline == (64, 64, 128, 128, 64)
    assert_no_overlap(plan)
    x = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    for want, got in zip(run_schedule_reference(plan.schedule, [x]), run_in_arena(plan, [x]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_overlap_checker_catches_two_live_buffers_sharing_bytes():
    plan = plan_memory(fuse(in_place_graph()))
    by_value = {b.value: b for b in plan.buffers}
    moved = dataclasses.replace(by_value[4], offset=by_value[1].offset)  # %4 onto %1, both live at 2
    bad = dataclasses.replace(plan, buffers=tuple(moved if b.value == 4 else b for b in plan.buffers))
    with pytest.raises(AssertionError, match="overlap in time and in the arena"):
        assert_no_overlap(bad)
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(run_in_arena(bad, [np.ones((4, 4), np.float32)])[2],
                                      run_schedule_reference(plan.schedule, [np.ones((4, 4), np.float32)])[2])


# --------------------------------------------------------------------------- the digits MLP step

SMALL_CONSTANT = 6  # the loss: max, exp-sum-log, loss sum, 1/batch scalar, row sums of the seed


def _report(name, graph, schedule, plan):
    matmuls = sum(n.op is O.Matmul for n in graph.nodes)
    print(f"{name}: {len(schedule.kernels)} kernels for {matmuls} matmuls; arena {plan.arena_bytes} B, "
          f"lower bound {plan.lower_bound} B, ratio {plan.ratio:.3f}")
    return matmuls


def test_digits_sized_step_has_few_kernels_and_a_tight_arena():
    """64-128-128-10 ReLU MLP, softmax cross-entropy, batch 64, float32 (value_and_grad)."""
    params, x, y = digits_sized_args()
    graph = training_graph(relu_mlp_loss, (params, x, y), 0)
    schedule = fuse(graph)
    plan = plan_memory(schedule)
    matmuls = _report("digits value_and_grad", graph, schedule, plan)
    assert matmuls == 8  # 3 forward, 3 weight gradients, 2 input gradients
    assert len(schedule.kernels) <= matmuls + len(params) + SMALL_CONSTANT
    assert plan.ratio <= 1.10
    assert_no_overlap(plan)
    args = tree_flatten((params, x, y))[0]
    for want, got in zip(run_schedule_reference(schedule, args), run_in_arena(plan, args), strict=True):
        np.testing.assert_array_equal(got, want)


def test_digits_example_adam_step_has_few_kernels_and_a_tight_arena():
    """The whole Adam training step of examples/digits.py, before simplification: 4 kernels of
    its constant go away with CSE and folding (the cross-entropy VJP recomputes the softmax and
    builds 1/batch through reshapes); 1 increments the step counter (an i64 scalar); the
    hyperparameters are 0-d inputs the updates read as they are. Each Adam update runs in
    its gradient's GEMM or reduction."""
    pytest.importorskip("sklearn", reason="examples/digits.py imports scikit-learn's datasets")
    from test_examples import load_example

    digits = load_example("digits")
    params = digits.model.init(0)
    step = ff.compile_train_step(digits.loss, ff.optim.Adam(1e-3))
    x, labels = np.zeros((64, 64), np.float32), np.zeros(64, np.int32)
    graph = decompose(step.lower(params, step.init(params), x, labels).graph)
    schedule = fuse(graph)
    plan = plan_memory(schedule)
    matmuls = _report("digits Adam step", graph, schedule, plan)
    n_params = len(tree_flatten(params)[0])
    step_scalars = 1  # the step count and bias corrections: a kernel of their own, so no update waits on another
    hyperparameter_scalars = 3  # 1 - b1, 1 - b2, 1 - lr * weight_decay: shared, so a kernel each
    assert len(schedule.kernels) <= (matmuls + n_params // 2 + SMALL_CONSTANT + 4 + step_scalars
                                     + hyperparameter_scalars)
    assert plan.ratio <= 1.10
    assert_no_overlap(plan)
    new_params = graph.outputs[1:1 + n_params]  # the step returns (loss, new params, new state)
    writers = {schedule.kernels[schedule.producer[schedule.root(j)]].kind for j in new_params}
    assert writers == {"gemm", "reduction"}


# --------------------------------------------------------------------------- random graphs


@given(random_graphs())
def test_random_plans_never_overlap_and_run_in_their_arena(case):
    graph, args = case
    schedule = fuse(graph)
    plan = plan_memory(schedule)
    assert_no_overlap(plan)
    assert plan.lower_bound <= plan.arena_bytes and plan.arena_bytes % ALIGNMENT == 0
    assert len(plan.timeline) == len(schedule.kernels) and max(plan.timeline, default=0) == plan.lower_bound
    assert [b.value for b in plan.buffers] == [v for k in schedule.kernels for v in k.outputs]
    returned = {schedule.root(j) for j in graph.outputs}
    assert all((b.offset is None) == (b.value in returned) for b in plan.buffers)
    for want, got in zip(run_schedule_reference(schedule, args), run_in_arena(plan, args), strict=True):
        np.testing.assert_array_equal(got, want)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 12), st.sampled_from([64, 128, 192, 512])),
                min_size=1, max_size=60))
def test_linear_scan_placement_equals_the_general_one_in_first_use_order(blocks):
    from ffcompile.passes.memory import _first_use_order, _place_by_first_use, _place_in_order

    span = {b: (lo, lo + length, size) for b, (lo, length, size) in enumerate(blocks)}
    assert _place_by_first_use(span) == _place_in_order(span, _first_use_order(span))
