"""Fusion into kernels: golden schedules, the kernel-order invariant, kernel-by-kernel execution."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile.ir.interpret import interpret
from ffcompile.ir import Builder, TensorType, VerifyError
from ffcompile.ir import ops as O
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.schedule import (Kernel, KernelKind, Schedule, print_schedule, run_schedule_reference,
                                       verify_schedule)
from ffcompile.tree import tree_flatten
from samples import broadcastable

# --------------------------------------------------------------------------- graphs under test


def training_graph(loss, args, argnums):
    """The primitive graph of value_and_grad(loss), as the pipeline hands it to fusion."""
    return decompose(ff.compile(ff.value_and_grad(loss, argnums)).lower(*args).graph)


def tanh_mlp_loss(w1, b1, w2, b2, x, y):
    h = ff.tanh(x @ w1 + b1)
    return -(y * ff.log_softmax(h @ w2 + b2, axis=-1)).sum() / x.shape[0]


def tanh_mlp_args(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(4, 8), (8,), (8, 3), (3,), (2, 4)]
    y = np.eye(3, dtype=dtype)[[0, 2]]
    return [rng.normal(size=s).astype(dtype) for s in shapes] + [y]


def relu_mlp_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = ff.relu(h)
    return -(y * ff.log_softmax(h, axis=-1)).sum() / x.shape[0]


def digits_sized_args(seed=0):
    """64-128-128-10, batch 64, float32, one-hot targets: the digits example's shapes."""
    rng = np.random.default_rng(seed)
    sizes = [64, 128, 128, 10]
    params = [((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), np.zeros(b, np.float32))
              for a, b in itertools.pairwise(sizes)]
    x = rng.normal(size=(64, 64)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]
    return params, x, y


# --------------------------------------------------------------------------- golden schedule

TANH_MLP_SCHEDULE = """\
schedule @value_and_grad_tanh_mlp_loss {
  literal %21:f32[] = constant {value=2.0}
  literal %23:f32[] = constant {value=1.0} adjoint
  literal %39:f32[] = constant {value=1.0} adjoint
  kernel 0 gemm (%4, %0, %1) -> (%8) {
    %6:f32[2,8] = matmul %4, %0
    %7:f32[2,8] = add %6, %1
    %8:f32[2,8] = tanh %7
  }
  kernel 1 gemm (%8, %2, %3) -> (%10) {
    %9:f32[2,3] = matmul %8, %2
    %10:f32[2,3] = add %9, %3
  }
  kernel 2 reduction (%10) -> (%11) {
    %11:f32[2,1] = reduce_max %10 {axes=[1], keepdims=true}
  }
  view %12:f32[2,1] = stop_gradient %11
  kernel 3 reduction (%10, %12) -> (%13, %16) {
    %13:f32[2,3] = sub %10, %12
    %14:f32[2,3] = exp %13
    %15:f32[2,1] = reduce_sum %14 {axes=[1], keepdims=true}
    %16:f32[2,1] = log %15
  }
  kernel 4 reduction (%13, %16, %5, %21) -> (%17, %22) {
    %17:f32[2,3] = sub %13, %16
    %18:f32[2,3] = mul %5, %17
    %19:f32[] = reduce_sum %18 {axes=[0, 1], keepdims=false}
    %20:f32[] = neg %19
    %22:f32[] = div %20, %21
  }
  kernel 5 elementwise (%23, %21) -> (%25) {
    %24:f32[] = div %23, %21 adjoint
    %25:f32[] = neg %24 adjoint
  }
  view %26:f32[1,1] = reshape %25 {shape=[1, 1]} adjoint
  kernel 6 reduction (%26, %5) -> (%28, %29) {
    %27:f32[2,3] = broadcast %26 {shape=[2, 3]} adjoint
    %28:f32[2,3] = mul %27, %5 adjoint
    %29:f32[2,1] = reduce_sum %28 {axes=[1], keepdims=true} adjoint
  }
  kernel 7 reduction (%17, %29, %28) -> (%32, %33) {
    %30:f32[2,3] = exp %17 adjoint
    %31:f32[2,3] = mul %30, %29 adjoint
    %32:f32[2,3] = sub %28, %31 adjoint
    %33:f32[3] = reduce_sum %32 {axes=[0], keepdims=false} adjoint
  }
  kernel 8 gemm [trans_a] (%8, %32) -> (%37) {
    %36:f32[8,2] = transpose %8 {perm=[1, 0]} adjoint
    %37:f32[8,3] = matmul %36, %32 adjoint
  }
  kernel 9 gemm [trans_b] (%2, %32, %8, %39) -> (%41) {
    %34:f32[3,8] = transpose %2 {perm=[1, 0]} adjoint
    %35:f32[2,8] = matmul %32, %34 adjoint
    %38:f32[2,8] = mul %8, %8 adjoint
    %40:f32[2,8] = sub %39, %38 adjoint
    %41:f32[2,8] = mul %35, %40 adjoint
  }
  kernel 10 reduction (%41) -> (%42) {
    %42:f32[8] = reduce_sum %41 {axes=[0], keepdims=false} adjoint
  }
  kernel 11 gemm [trans_a] (%4, %41) -> (%44) {
    %43:f32[4,2] = transpose %4 {perm=[1, 0]} adjoint
    %44:f32[4,8] = matmul %43, %41 adjoint
  }
  return %22, %44, %42, %37, %33
}
"""


def test_two_layer_mlp_training_step_schedule_golden():
    """Forward GEMMs carry bias + tanh; softmax's exp+sum and the bias gradients are reductions;
    the tanh derivative is the epilogue of the GEMM that makes dh; every weight transpose is a
    GEMM flag; reshape and stop_gradient are views."""
    graph = training_graph(tanh_mlp_loss, tanh_mlp_args(), (0, 1, 2, 3))
    schedule = verify_schedule(fuse(graph))
    text = print_schedule(schedule, locs=False)
    print(text)
    assert text == TANH_MLP_SCHEDULE
    assert str(schedule).startswith("schedule @") and " loc(" in str(schedule)


def assert_matches_numpy_backend(graph, args, got, rtol, atol):
    """Same values as the NumPy backend, up to rounding: the backend hands BLAS strided views
    where the reference interpreter holds contiguous buffers."""
    expected = interpret(graph, args)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def test_reference_execution_matches_numpy_backend_on_mlp():
    args = tanh_mlp_args(np.float64)
    graph = training_graph(tanh_mlp_loss, args, (0, 1, 2, 3))
    assert_matches_numpy_backend(graph, args, run_schedule_reference(fuse(graph), args), 1e-12, 1e-14)


def test_digits_sized_training_step_runs_kernel_by_kernel():
    params, x, y = digits_sized_args()
    graph = training_graph(relu_mlp_loss, (params, x, y), 0)
    args = tree_flatten((params, x, y))[0]
    assert_matches_numpy_backend(graph, args, run_schedule_reference(fuse(graph), args), 1e-5, 1e-6)


# --------------------------------------------------------------------------- kernel order


def diamond():
    """e = exp(x) feeds both s = rowsum(e) and d = e / s: fusing e with d (its elementwise
    consumer) while s stays apart would make the kernels read each other."""
    b = Builder("diamond")
    x = b.add_input(TensorType((3, 4), "f64"), "x")
    e = b.emit(O.Exp, [x])
    s = b.emit(O.ReduceSum, [e], {"axes": (1,), "keepdims": True})
    d = b.emit(O.Div, [e, s])
    return b.finish([d]), (x, e, s, d)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_layer_keeps_only_its_input_and_gate_for_the_backward_pass(approximate):
    """gelu's own VJP needs x and the erf/tanh gate: the first layer's GEMM kernel writes those
    two and the activation, where the decomposed formula's VJP kept six intermediates."""
    def loss(w1, b1, w2, x):
        return ((ff.gelu(x @ w1 + b1, approximate) @ w2) ** 2).sum()

    rng = np.random.default_rng(0)
    args = [rng.normal(size=s) for s in ((8, 16), (16,), (16, 3), (4, 8))]
    schedule = ff.compile(ff.value_and_grad(loss, (0, 1, 2))).lower(*args).schedule
    first = schedule.kernels[0]
    assert first.kind == KernelKind.GEMM and schedule.graph.nodes[first.anchor].inputs == (schedule.graph.inputs[3],
                                                                               schedule.graph.inputs[0])
    gate = {"none": O.Erf, "tanh": O.Tanh}[approximate].name
    assert sorted(schedule.graph.nodes[i].op.name for i in first.outputs) == sorted(["add", gate, "mul"])


def test_diamond_never_fuses_into_a_cycle():
    graph, (x, e, s, d) = diamond()
    schedule = verify_schedule(fuse(graph))
    kernel_of = {i: k for k, kern in enumerate(schedule.kernels) for i in kern.body}
    assert kernel_of[e] == kernel_of[s] < kernel_of[d]
    assert schedule.kernels[kernel_of[s]] == Kernel(KernelKind.REDUCTION, (e, s), (x,), (e, s), anchor=s)
    assert schedule.kernels[kernel_of[d]] == Kernel(KernelKind.ELEMENTWISE, (d,), (e, s), (d,))
    x_value = np.arange(12.0).reshape(3, 4)
    (got,) = run_schedule_reference(schedule, [x_value])
    np.testing.assert_allclose(got, np.exp(x_value) / np.exp(x_value).sum(1, keepdims=True))


def test_verifier_rejects_the_cyclic_partition_of_the_diamond():
    graph, (x, e, s, d) = diamond()
    cyclic = Schedule(graph, (Kernel(KernelKind.ELEMENTWISE, (e, d), (x, s), (d,)),
                              Kernel(KernelKind.REDUCTION, (s,), (e,), (s,), anchor=s)), (), ())
    with pytest.raises(VerifyError, match="not produced by an earlier kernel"):
        verify_schedule(cyclic)
    with pytest.raises(VerifyError, match="read before any kernel produced it"):
        run_schedule_reference(cyclic, [np.ones((3, 4))])


def test_verifier_rejects_a_kernel_reading_an_undeclared_value():
    graph, (x, e, s, d) = diamond()
    leaky = Schedule(graph, (Kernel(KernelKind.REDUCTION, (e, s), (x,), (s,), anchor=s),
                             Kernel(KernelKind.ELEMENTWISE, (d,), (s,), (d,))), (), ())
    with pytest.raises(VerifyError, match="neither in the body nor an input"):
        verify_schedule(leaky)


# --------------------------------------------------------------------------- special values


def test_views_literals_copies_and_layout_kernels():
    b = Builder("misc")
    x = b.add_input(TensorType((2, 3), "f32"), "x")
    two = b.emit(O.Constant, [], {"value": 2.0, "type": TensorType((), "f32")})
    table = b.emit(O.Constant, [], {"value": ((1.0, 2.0, 3.0),) * 2, "type": TensorType((2, 3), "f32")})
    y = b.emit(O.Mul, [x, two])
    flat = b.emit(O.Reshape, [y], {"shape": (6,)})
    z = b.emit(O.Add, [flat, flat])
    cat = b.emit(O.Concat, [y, table], {"axis": 0})
    x_view = b.emit(O.Reshape, [x], {"shape": (3, 2)})  # returned: must not alias the input
    graph = b.finish([z, cat, x_view])
    schedule = verify_schedule(fuse(graph))
    assert schedule.literals == (two,) and schedule.views == (flat,)
    kinds = {k.body: k.kind for k in schedule.kernels}
    assert kinds == {(y,): KernelKind.ELEMENTWISE, (table,): KernelKind.SOURCE, (z,): KernelKind.ELEMENTWISE,
                     (cat,): KernelKind.LAYOUT, (x_view,): KernelKind.COPY}
    assert schedule.root(flat) == y
    x_value = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_matches_numpy_backend(graph, [x_value], run_schedule_reference(schedule, [x_value]), 0, 0)


def test_transpose_read_elsewhere_is_materialized():
    b = Builder("shared_transpose")
    a = b.add_input(TensorType((3, 3), "f64"), "a")
    t = b.emit(O.Transpose, [a], {"perm": (1, 0)})
    m = b.emit(O.Matmul, [t, a])
    n = b.emit(O.Add, [m, t])
    schedule = verify_schedule(fuse(b.finish([n])))
    assert [k.kind for k in schedule.kernels] == [KernelKind.LAYOUT, KernelKind.GEMM]
    assert not schedule.kernels[1].trans_a and schedule.kernels[1].body == (m, n)


def test_composites_must_be_decomposed_first():
    b = Builder("composite")
    x = b.add_input(TensorType((2, 3), "f32"), "x")
    graph = b.finish([b.emit(O.Softmax, [x], {"axis": 1})])
    with pytest.raises(NotImplementedError, match="softmax"):
        fuse(graph)


# --------------------------------------------------------------------------- random graphs

N = 3
_UNARY = [O.Neg, O.Exp, O.Tanh, O.Abs, O.Sin]
_BINARY = [O.Add, O.Sub, O.Mul, O.Maximum]


def _grow(draw, b: Builder, a: int, c: int) -> list[int]:
    """Append one random recipe reading a and c; return the new float values."""
    shape_a, shape_c = b.nodes[a].type.shape, b.nodes[c].type.shape
    recipe = draw(st.sampled_from(["unary", "binary", "select", "reduce", "matmul", "transpose",
                                   "reshape", "stop_gradient", "broadcast", "constant", "iota",
                                   "concat"]))
    f64 = "f64"
    if recipe == "binary" and broadcastable(shape_a, shape_c):
        return [b.emit(draw(st.sampled_from(_BINARY)), [a, c])]
    if recipe == "select" and broadcastable(shape_a, shape_c):
        return [b.emit(O.Select, [b.emit(O.Gt, [a, c]), a, c])]
    if recipe == "reduce":
        axes = draw(st.sampled_from([(), *[(k,) for k in range(len(shape_a))], tuple(range(len(shape_a)))]))
        op = draw(st.sampled_from([O.ReduceSum, O.ReduceMax]))
        return [b.emit(op, [a], {"axes": axes, "keepdims": draw(st.booleans())})]
    if recipe == "matmul" and len(shape_a) == len(shape_c) == 2 and shape_a[1] == shape_c[0]:
        if shape_c[0] == shape_c[1] and draw(st.booleans()):
            c = b.emit(O.Transpose, [c], {"perm": (1, 0)})
        return [b.emit(O.Matmul, [a, c])]
    if recipe == "transpose" and len(shape_a) == 2:
        return [b.emit(O.Transpose, [a], {"perm": (1, 0)})]
    if recipe == "reshape":
        shape = draw(st.sampled_from([(int(np.prod(shape_a)),), shape_a[::-1], (1,) + shape_a]))
        return [b.emit(O.Reshape, [a], {"shape": shape})]
    if recipe == "stop_gradient":
        return [b.emit(O.StopGradient, [a])]
    if recipe == "broadcast" and broadcastable(shape_a, (N, N)) and len(shape_a) <= 2:
        return [b.emit(O.Broadcast, [a], {"shape": (N, N)})]
    if recipe == "constant":
        if draw(st.booleans()):
            value = draw(st.sampled_from([0.0, 0.5, 1.0, -2.0]))
            const = b.emit(O.Constant, [], {"value": value, "type": TensorType((), f64)})
        else:
            const = b.emit(O.Constant, [], {"value": ((0.5, -1.0, 2.0),) * N, "type": TensorType((N, N), f64)})
        if broadcastable(shape_a, b.nodes[const].type.shape):
            return [b.emit(draw(st.sampled_from(_BINARY)), [a, const])]
        return [const]
    if recipe == "iota":
        ramp = b.emit(O.Iota, [], {"axis": draw(st.integers(0, 1)), "type": TensorType((N, N), f64)})
        return [b.emit(O.Add, [a, ramp])] if broadcastable(shape_a, (N, N)) else [ramp]
    if recipe == "concat" and len(shape_a) == 2 and shape_a == shape_c:
        cat = b.emit(O.Concat, [a, c], {"axis": 0})
        stop = shape_a[0] + 1 + draw(st.integers(0, shape_a[0] - 1))
        return [cat, b.emit(O.Slice, [cat], {"starts": (1, 0), "stops": (stop, shape_a[1]), "steps": (1, 1)})]
    return [b.emit(draw(st.sampled_from(_UNARY)), [a])]


@st.composite
def random_graphs(draw, max_steps=14):
    """Float64 graphs of every primitive family (reshapes of returned values and inputs,
    shared values, dead values, duplicate outputs included), with their argument arrays."""
    b = Builder("random")
    types = [TensorType((N, N), "f64"), TensorType((N, N), "f64"), TensorType((N, 1), "f64")]
    values = [b.add_input(t, f"x{k}") for k, t in enumerate(types)]
    for _ in range(draw(st.integers(1, max_steps))):
        pick = st.integers(0, len(values) - 1)
        values += _grow(draw, b, values[draw(pick)], values[draw(pick)])
    extra = draw(st.lists(st.integers(0, len(values) - 1), max_size=3))
    graph = b.finish([values[-1]] + [values[k] for k in extra])
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return graph, [rng.normal(size=t.shape) for t in types]


def _check_kernel_structure(schedule: Schedule) -> None:
    nodes = schedule.graph.nodes
    for kernel in schedule.kernels:
        ops = [nodes[i].op for i in kernel.body]
        anchors = [i for i in kernel.body if nodes[i].op in (O.Matmul, O.ReduceSum, O.ReduceMax)]
        if kernel.kind in (KernelKind.GEMM, KernelKind.REDUCTION):
            assert anchors == [kernel.anchor]
            assert (nodes[kernel.anchor].op is O.Matmul) == (kernel.kind == KernelKind.GEMM)
        else:
            assert not anchors and kernel.anchor is None
        if kernel.kind == KernelKind.GEMM:
            assert all(nodes[i].op is O.Transpose for i in kernel.prologue)
            folded = {nodes[i].inputs[0] for i in kernel.prologue}
            assert folded <= set(kernel.inputs)
        if kernel.kind in (KernelKind.LAYOUT, KernelKind.SOURCE, KernelKind.COPY):
            assert len(kernel.body) == 1, kernel
        if kernel.kind == KernelKind.ELEMENTWISE:
            assert all(op is O.Iota or op is O.Broadcast or O.ELEMENTWISE in op.traits for op in ops)
        assert kernel.outputs and kernel.body[-1] in kernel.outputs


def unfused(graph) -> Schedule:
    """One kernel per node: the graph evaluated op by op, the oracle for any partition.
    (Kinds only label kernels; the reference interpreter does not read them.)"""
    kinds = {O.Matmul: KernelKind.GEMM, O.ReduceSum: KernelKind.REDUCTION, O.ReduceMax: KernelKind.REDUCTION}
    kernels = tuple(Kernel(kinds.get(n.op, KernelKind.ELEMENTWISE), (i,), tuple(dict.fromkeys(n.inputs)), (i,),
                           anchor=i if n.op in kinds else None)
                    for i, n in enumerate(graph.nodes) if n.op is not O.Input)
    return verify_schedule(Schedule(graph, kernels, (), ()))


@given(random_graphs())
def test_random_graphs_schedule_in_order_and_compute_the_graph(case):
    """Kernels only read what earlier kernels wrote, and the fused schedule computes exactly
    (bitwise) what the graph does op by op."""
    graph, args = case
    schedule = verify_schedule(fuse(graph))
    _check_kernel_structure(schedule)
    got = run_schedule_reference(schedule, args)
    for e, g in zip(run_schedule_reference(unfused(graph), args), got, strict=True):
        np.testing.assert_array_equal(g, e)
