"""LLVM backend: every primitive, MLP training steps and random graphs agree with the NumPy reference.

Tolerances per dtype (relative, absolute): the native code differs from NumPy
by its polynomial transcendentals (a few ulp), FMA contraction, and sums
accumulated in another order (vector lanes, BLAS blocking).
"""
import functools
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from samples import OP_CASES, make_op_case, one_op_graph, op_case_params
from test_fuse import (
    digits_sized_args,
    random_graphs,
    relu_mlp_loss,
    tanh_mlp_args,
    tanh_mlp_loss,
)
from test_llvm_target import WIDE_VECTOR_OP, host_has_avx2

import ffcompile as ff
from ffcompile.ir.interpret import interpret
from ffcompile.codegen.llvm import backend, blas
from ffcompile.ir import Builder, TensorType
from ffcompile.ir import ops as O
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory
from ffcompile.passes.schedule import run_schedule_reference, verify_schedule
from ffcompile.tree import tree_flatten
from samples import broadcastable

TOLERANCE = {"f64": (1e-11, 1e-12), "f32": (3e-5, 1e-5), "i32": (0, 0), "i64": (0, 0), "bool": (0, 0)}


def build(graph):
    """The LLVM executable of a primitive graph, and its schedule."""
    schedule = verify_schedule(fuse(graph))
    return backend.build(schedule, plan_memory(schedule)), schedule


def assert_agrees(graph, args, scale=1.0):
    """LLVM output == the kernel-by-kernel NumPy reference and the NumPy backend, per dtype."""
    executable, schedule = build(graph)
    got = executable(*args)
    reference = run_schedule_reference(schedule, args)
    numpy_result = interpret(graph, args)
    assert len(got) == len(reference) == len(graph.outputs)
    for g, r, n, j in zip(got, reference, numpy_result, graph.outputs, strict=True):
        expected_type = graph.nodes[j].type
        assert g.shape == expected_type.shape and g.dtype == expected_type.np_dtype, (g.shape, g.dtype)
        rtol, atol = TOLERANCE[expected_type.dtype]
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale)
        np.testing.assert_allclose(g, n, rtol=rtol, atol=atol * scale)
    return executable


def lowered_graph(fn, *args):
    """The optimized primitive graph the pipeline hands to code generation."""
    return ff.compile(fn).lower(*args).optimized


def training_step(loss, args, argnums):
    graph = lowered_graph(ff.value_and_grad(loss, argnums), *args)
    return graph, tree_flatten(tuple(args))[0]


# --------------------------------------------------------------------------- every op


def _as_f32(operands):
    return [a.astype(np.float32) if a.dtype == np.float64 else a for a in operands]


def _op_params():
    """Every op case as given (f64), and again in f32 unless a type attribute fixes its dtype."""
    params = []
    for p in op_case_params():
        name, k = p.values
        if name == "input":
            continue  # no node to run: its value is the argument
        params.append(pytest.param(name, k, "f64", id=f"{name}-{k}-f64"))
        attrs, _ = make_op_case(name, k)
        if not any(isinstance(v, TensorType) for v in attrs.values()):
            params.append(pytest.param(name, k, "f32", id=f"{name}-{k}-f32"))
    return params


@pytest.mark.parametrize("name, k, dtype", _op_params())
def test_every_op_matches_numpy(name, k, dtype):
    attrs, operands = make_op_case(name, k)
    if dtype == "f32":
        operands = _as_f32(operands)
    graph = decompose(one_op_graph(O.OPS[name], attrs, operands))
    assert_agrees(graph, operands)


def test_every_op_has_cases_that_run_through_this_backend():
    assert set(OP_CASES) == set(O.OPS)  # each op's cases run through the backend above


def test_integer_and_bool_values():
    b = Builder("ints")
    x = b.add_input(TensorType((3, 4), "i32"), "x")
    y = b.add_input(TensorType((4,), "i32"), "y")
    m = b.add_input(TensorType((4, 2), "i64"), "m")
    s = b.emit(O.Add, [b.emit(O.Mul, [x, y]), b.emit(O.Neg, [b.emit(O.Abs, [y])])])
    big = b.emit(O.Gt, [s, y])
    flipped = b.emit(O.Select, [big, b.emit(O.Sign, [s]), s])
    as_i64 = b.emit(O.Convert, [flipped], {"dtype": "i64"})
    outputs = [flipped, big, b.emit(O.ReduceMax, [s], {"axes": (1,), "keepdims": False}),
               b.emit(O.ReduceSum, [s], {"axes": (0,), "keepdims": True}),
               b.emit(O.Matmul, [as_i64, m]), b.emit(O.Convert, [big], {"dtype": "f32"}),
               b.emit(O.Minimum, [x, b.emit(O.Convert, [b.emit(O.Convert, [x], {"dtype": "f64"})],
                                            {"dtype": "i32"})])]
    rng = np.random.default_rng(0)
    args = [rng.integers(-5, 5, (3, 4)).astype(np.int32), rng.integers(-5, 5, 4).astype(np.int32),
            rng.integers(-5, 5, (4, 2))]
    assert_agrees(b.finish(outputs), args)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(2, 3, 4), (33, 70, 65), (1, 129, 1), (129, 128, 130)])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_with_transposes_and_epilogue(m, k, n, trans_a, trans_b, dtype):
    """Tiny products take the native loops, larger ones BLAS; both with every transpose flag."""
    def f(a, b_, bias):
        a = a.T if trans_a else a
        b_ = b_.T if trans_b else b_
        return ff.tanh(a @ b_ + bias)

    rng = np.random.default_rng(m * n * k)
    a = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    b_ = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
    bias = rng.normal(size=n).astype(dtype)
    graph = lowered_graph(f, a, b_, bias)
    executable = assert_agrees(graph, [a, b_, bias], scale=k)
    expected = ("sgemm" if dtype == np.float32 else "dgemm",) if m * n * k > blas.native_max_work() else ()
    assert executable.blas == expected


def test_batched_matmul_with_broadcast_batch():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 1, 20, 30))
    b_ = rng.normal(size=(2, 30, 40))
    c = rng.normal(size=(2, 5, 4))
    assert_agrees(lowered_graph(lambda a, b_: (a @ b_) * 2.0, a, b_), [a, b_], scale=30)
    builder = Builder("small_batched")
    x = builder.add_input(TensorType((2, 5, 4), "f64"), "x")
    t = builder.emit(O.Transpose, [x], {"perm": (0, 2, 1)})
    assert_agrees(builder.finish([builder.emit(O.Matmul, [x, t])]), [c])


@pytest.mark.parametrize("axes", [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_over_any_axes_with_prologue_and_epilogue(axes, keepdims):
    """exp(x - 1) summed and maxed over the axes, then log / scaled: both loop orders."""
    rng = np.random.default_rng(len(axes))
    x = rng.normal(size=(5, 6, 7))
    b = Builder("reduce")
    xi = b.add_input(TensorType(x.shape, "f64"), "x")
    one = b.emit(O.Constant, [], {"value": 1.0, "type": TensorType((), "f64")})
    e = b.emit(O.Exp, [b.emit(O.Sub, [xi, one])])
    attrs = {"axes": axes, "keepdims": keepdims}
    total = b.emit(O.ReduceSum, [e], attrs)
    peak = b.emit(O.ReduceMax, [xi], attrs)
    graph = b.finish([b.emit(O.Log, [total]), b.emit(O.Mul, [peak, b.emit(O.Exp, [peak])]), e])
    assert_agrees(graph, [x], scale=100)


def test_layout_kernels():
    b = Builder("layout")
    x = b.add_input(TensorType((4, 5, 6), "f32"), "x")
    y = b.add_input(TensorType((4, 2, 6), "f32"), "y")
    t = b.emit(O.Transpose, [x], {"perm": (2, 0, 1)})
    cat = b.emit(O.Concat, [x, y, x], {"axis": 1})
    sl = b.emit(O.Slice, [cat], {"starts": (1, 2, 0), "stops": (4, 11, 6), "steps": (2, 3, 1)})
    pad = b.emit(O.Pad, [sl], {"config": ((1, 0, 2), (0, 2, 1), (1, 1, 0))})
    view = b.emit(O.Reshape, [x], {"shape": (20, 6)})
    table = b.emit(O.Constant, [], {"value": ((1.0, float("inf")), (-0.5, 2.0)), "type": TensorType((2, 2), "f32")})
    ramp = b.emit(O.Iota, [], {"axis": 1, "type": TensorType((3, 4), "i32")})
    graph = b.finish([t, pad, view, table, ramp, x])
    rng = np.random.default_rng(2)
    args = [rng.normal(size=(4, 5, 6)).astype(np.float32), rng.normal(size=(4, 2, 6)).astype(np.float32)]
    executable = assert_agrees(graph, args)
    result = executable(*args)[-1]
    assert result is not args[0] and np.array_equal(result, args[0])  # an input returned is a copy


def test_zero_size_arrays():
    b = Builder("empty")
    x = b.add_input(TensorType((0, 3), "f64"), "x")
    w = b.add_input(TensorType((3, 4), "f64"), "w")
    y = b.emit(O.Matmul, [x, w])
    graph = b.finish([y, b.emit(O.ReduceSum, [y], {"axes": (0,), "keepdims": False})])
    assert_agrees(graph, [np.zeros((0, 3)), np.ones((3, 4))])


# --------------------------------------------------------------------------- whole programs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_mlp_training_step(dtype):
    args = tanh_mlp_args(dtype)
    graph, flat = training_step(tanh_mlp_loss, args, (0, 1, 2, 3))
    assert_agrees(graph, flat)


def test_digits_sized_relu_mlp_training_step():
    params, x, y = digits_sized_args()
    graph, flat = training_step(relu_mlp_loss, (params, x, y), 0)
    assert_agrees(graph, flat, scale=10)


def test_zoo_training_step_with_integer_labels():
    from ffcompile import zoo
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(batch_size=16)
    graph, flat = training_step(workload.loss, (params, x, y), 0)
    assert_agrees(graph, flat, scale=10)


@given(random_graphs())
def test_random_graphs_agree_with_the_reference(case):
    graph, args = case
    assert_agrees(graph, args, scale=10)


_SQUASH = [O.Tanh, O.Sin, O.Neg, O.Abs]
_COMBINE = [O.Add, O.Sub, O.Mul, O.Maximum, O.Minimum]


@st.composite
def wide_graphs(draw):
    """Random float32/float64 graphs on shapes wide enough for vector loops with remainders and
    for BLAS: broadcasting, reductions over either axis, matmuls (transposed too), selects."""
    dtype = draw(st.sampled_from(["f32", "f64"]))
    m, n = draw(st.sampled_from([(17, 40), (64, 33), (5, 130), (1, 70)]))
    b = Builder("wide")
    shapes = [(m, n), (n,), (m, 1), (n, n)]
    values = [b.add_input(TensorType(s, dtype), f"x{k}") for k, s in enumerate(shapes)]
    scale = b.emit(O.Constant, [], {"value": 1.0 / n, "type": TensorType((), dtype)})

    def pick(pred=lambda shape: True):
        return draw(st.sampled_from([v for v in values if pred(b.nodes[v].type.shape)]))

    for _ in range(draw(st.integers(1, 10))):
        recipe = draw(st.sampled_from(["squash", "exp", "combine", "select", "reduce", "matmul", "gemm_t"]))
        if recipe == "squash":
            values.append(b.emit(draw(st.sampled_from(_SQUASH)), [pick()]))
        elif recipe == "exp":
            values.append(b.emit(O.Exp, [b.emit(O.Tanh, [pick()])]))
        elif recipe in ("combine", "select"):
            x = pick()
            y = draw(st.sampled_from([v for v in values
                                      if broadcastable(b.nodes[v].type.shape, b.nodes[x].type.shape)]))
            if recipe == "combine":
                values.append(b.emit(draw(st.sampled_from(_COMBINE)), [x, y]))
            else:
                values.append(b.emit(O.Select, [b.emit(O.Gt, [x, y]), y, x]))
        elif recipe == "reduce":
            x = pick(lambda shape: len(shape) == 2)
            axes = draw(st.sampled_from([(0,), (1,), (0, 1)]))
            op = draw(st.sampled_from([O.ReduceSum, O.ReduceMax]))
            values.append(b.emit(op, [x], {"axes": axes, "keepdims": draw(st.booleans())}))
        else:
            x = pick(lambda shape: len(shape) == 2 and shape[-1] == n)
            w = pick(lambda shape: shape == (n, n))
            if recipe == "gemm_t":
                w = b.emit(O.Transpose, [w], {"perm": (1, 0)})
            values.append(b.emit(O.Mul, [b.emit(O.Matmul, [x, w]), scale]))
    extra = draw(st.lists(st.sampled_from(values[len(shapes):] or values), max_size=2))
    graph = b.finish([values[-1], *extra])
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return graph, [rng.normal(size=s).astype(TensorType(s, dtype).np_dtype) for s in shapes]


@given(wide_graphs())
def test_wide_random_graphs_agree_with_the_reference(case):
    graph, args = case
    assert_agrees(graph, args, scale=10)


# --------------------------------------------------------------------------- special values


def test_nan_propagates_through_max_min_relu_and_reductions():
    def f(x, y):
        return (ff.maximum(x, y), ff.minimum(x, y), ff.relu(x), x.max(axis=1), x.max(axis=0),
                x.sum(axis=1), ff.exp(x), ff.tanh(x))

    x = np.array([[1.0, np.nan, -2.0], [np.inf, -np.inf, 0.5]], np.float32)
    y = np.array([np.nan, 0.0, -3.0], np.float32)
    graph = lowered_graph(f, x, y)
    executable, _ = build(graph)
    with np.errstate(invalid="ignore"):
        expected_values = interpret(graph, [x, y])
    for got, expected in zip(executable(x, y), expected_values, strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-6)


# --------------------------------------------------------------------------- machine code


@pytest.mark.skipif(not host_has_avx2(), reason="the host has no AVX2")
def test_fused_elementwise_kernel_uses_vector_registers():
    def f(x, y):
        return ff.tanh(x * y + 1.0) * ff.exp(-x)

    x = np.ones((64, 256), np.float32)
    executable, schedule = build(lowered_graph(f, x, x))
    assert [k.kind for k in schedule.kernels] == ["elementwise"]
    assert len(WIDE_VECTOR_OP.findall(executable.asm)) > 10


# --------------------------------------------------------------------------- calling convention


@functools.cache
def _small_executable():
    def f(x, w):
        return ff.relu(x @ w).sum(axis=0)
    x, w = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    executable, _ = build(lowered_graph(f, x, w))
    return executable, x, w


def test_bad_arguments_raise_and_strided_arguments_are_copied():
    executable, x, w = _small_executable()
    with pytest.raises(TypeError, match=r"expected 2 arguments"):
        executable(x)
    with pytest.raises(TypeError, match=r"argument 0: expected f32\[4,3\], got float64\[4, 3\]"):
        executable(x.astype(np.float64), w)
    with pytest.raises(TypeError, match=r"argument 1: expected f32\[3,5\], got float32\[5, 3\]"):
        executable(x, w.T.copy())
    rng = np.random.default_rng(3)
    big = rng.normal(size=(8, 6)).astype(np.float32)
    strided, transposed = big[::2, ::2], rng.normal(size=(5, 3)).astype(np.float32).T
    (got,) = executable(strided, transposed)
    np.testing.assert_allclose(got, np.maximum(strided @ transposed, 0).sum(0), rtol=1e-5)
    unaligned = np.frombuffer(np.zeros(4 * 12 + 1, np.uint8).tobytes()[1:], np.float32).reshape(4, 3)
    (got,) = executable(unaligned, w)
    np.testing.assert_array_equal(got, np.zeros(5, np.float32))


def test_concurrent_calls_from_threads_agree():
    executable, _, w = _small_executable()
    rng = np.random.default_rng(4)
    inputs = [(rng.normal(size=(4, 3)).astype(np.float32), w) for _ in range(8)]
    expected = [executable(*args)[0] for args in inputs]
    failures = []

    def worker(k):
        for _ in range(200):
            if not np.array_equal(executable(*inputs[k])[0], expected[k]):
                failures.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


_MUTATIONS = ["same", "float64", "int32", "transposed", "wider", "strided", "fortran", "nan_inf", "list", "scalar"]


def _mutate(rng, kind: str, array: np.ndarray):
    """(argument, whether it keeps the compiled dtype and shape)."""
    if kind == "float64":
        return array.astype(np.float64), False
    if kind == "int32":
        return array.astype(np.int32), False
    if kind == "transposed":
        return array.T, array.shape[0] == array.shape[1]
    if kind == "wider":
        return np.concatenate([array, array], axis=1), False
    if kind == "strided":
        bigger = np.repeat(np.repeat(array, 2, axis=0), 3, axis=1)
        return bigger[::2, ::3], True
    if kind == "fortran":
        return np.asfortranarray(array), True
    if kind == "nan_inf":
        spoiled = array.copy()
        spoiled.flat[rng.integers(0, spoiled.size, 3)] = rng.choice([np.nan, np.inf, -np.inf], 3)
        return spoiled, True
    if kind == "list":
        return array.tolist(), False  # Python floats make a float64 array
    if kind == "scalar":
        return np.float32(1.0), False
    return array, True


@given(st.lists(st.sampled_from(_MUTATIONS), min_size=2, max_size=2), st.integers(0, 2**16))
def test_fuzzed_arguments_raise_a_type_error_or_compute_the_right_values(kinds, seed):
    """Wrong dtypes and shapes raise TypeError; strided, Fortran-ordered and NaN/Inf arguments
    compute what NumPy does (NaN propagates); nothing crashes the interpreter."""
    executable, x, w = _small_executable()
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=x.shape).astype(np.float32), rng.normal(size=w.shape).astype(np.float32)]
    mutated = [_mutate(rng, kind, a) for kind, a in zip(kinds, base)]
    args = [a for a, _ in mutated]
    if not all(ok for _, ok in mutated):
        with pytest.raises(TypeError, match="argument"):
            executable(*args)
        return
    (got,) = executable(*args)
    with np.errstate(invalid="ignore"):
        expected = np.maximum(np.asarray(args[0]) @ np.asarray(args[1]), 0).sum(axis=0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- donation


def _sgd_step(w, b, x, y):
    def loss(w, b):
        return ((ff.tanh(x @ w + b) - y) ** 2).sum()
    value, (gw, gb) = ff.value_and_grad(loss, argnums=(0, 1))(w, b)
    return w - 0.1 * gw, b - 0.1 * gb, value


def _planned(graph):
    schedule = fuse(graph)
    return schedule, plan_memory(schedule)


def _sgd_step_numpy(*args):
    return interpret(lowered_graph(_sgd_step, *args), args)


def test_donated_parameters_are_updated_in_place():
    """The updated weights and bias are written into the callers' arrays (a GEMM epilogue
    and a reduction epilogue), with the values of the NumPy reference."""
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(30, 20)), rng.normal(size=20)
    x, y = rng.normal(size=(50, 30)), rng.normal(size=(50, 20))
    graph = lowered_graph(_sgd_step, w, b, x, y)
    schedule = fuse(graph)
    executable = backend.build(schedule, plan_memory(schedule), donate={0: 0, 1: 1})
    assert executable.donated == {0: 0, 1: 1}
    expected = interpret(graph, [w, b, x, y])
    w_arg, b_arg = w.copy(), b.copy()
    new_w, new_b, value = executable(w_arg, b_arg, x, y)
    assert new_w is w_arg and new_b is b_arg
    for got, e in zip((new_w, new_b, value), expected, strict=True):
        np.testing.assert_allclose(got, e, rtol=1e-11)
    read_only = w.copy()
    read_only.flags.writeable = False
    new_w, _, _ = executable(read_only, b.copy(), x, y)  # a read-only or shared array is copied
    assert new_w is not read_only and np.array_equal(read_only, w)
    np.testing.assert_allclose(new_w, expected[0], rtol=1e-11)
    square, target = rng.normal(size=(20, 20)), rng.normal(size=(20, 20))
    step = backend.build(*_planned(lowered_graph(_sgd_step, square, b, square, target)), donate={0: 0})
    shared = square.copy()
    new_w, _, _ = step(shared, b, shared, target)  # w is also x: writing it would change x
    np.testing.assert_array_equal(shared, square)
    np.testing.assert_allclose(new_w, _sgd_step_numpy(square, b, square, target)[0], rtol=1e-11)


def test_donation_a_fused_reduction_would_break_is_declined():
    """out[i] = sum_j (m[i, j] + v[j]) over v's storage: the row loop would overwrite v[i]
    before later rows read it, so the donation is declined and the result stays right."""
    rng = np.random.default_rng(6)
    v, m = rng.normal(size=8), rng.normal(size=(8, 8))
    graph = lowered_graph(lambda v, m: (m + v).sum(axis=1), v, m)
    schedule = fuse(graph)
    executable = backend.build(schedule, plan_memory(schedule), donate={0: 0})
    assert executable.donated == {}
    v_arg = v.copy()
    (got,) = executable(v_arg, m)
    np.testing.assert_allclose(got, (m + v).sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(v_arg, v)


def test_modules_without_blas_calling_memset_jit():
    """A zero fill becomes a memset call; llvmlite's MCJIT memory manager needs a writable
    section for its stub (the module always has the BLAS slots)."""
    x = np.ones((300, 300), np.float32)
    b = Builder("pad")
    xi = b.add_input(TensorType(x.shape, "f32"), "x")
    graph = b.finish([b.emit(O.Pad, [xi], {"config": ((0, 0, 1), (0, 0, 1))})])
    executable = assert_agrees(graph, [x])
    assert executable.blas == () and "memset" in executable.asm
