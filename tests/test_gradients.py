"""Gradients of every op and ff. function against finite differences, and autodiff's conventions.

The parametrization is derived from the registry (ffcompile.ir.ops.OPS) and
from ffcompile.functions.__all__, with the sample tables of test_registry, so
a new op or function without a correct VJP (first and second order) fails here.
"""
import inspect
import os

import numpy as np
import pytest
from samples import FUNCTION_CASES, OP_CASES, function_case_params, make_function_case, make_op_case
from test_llvm_backend import TOLERANCE

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile.gradcheck import check_grads
from ffcompile.ir import TensorType
from ffcompile.ir import lang as L
from ffcompile.ir import ops as O
from ffcompile.ir.lang import Value
from ffcompile.ir.ops import OPS
from ffcompile.tree import tree_flatten

# Differentiable ops that finite differences cannot check, and where they are tested instead.
NOT_FD_CHECKABLE = {"stop_gradient": "its gradient is zero by definition: test_stop_gradient_blocks"}


def gradient_op_params():
    return [pytest.param(name, k, id=f"{name}-{k}")
            for name, op in OPS.items() if op.differentiable and name not in NOT_FD_CHECKABLE
            for k in range(len(OP_CASES[name]))]


def apply_op(op, attrs):
    """A function of traced operands that emits one `op` node."""
    def apply(*operands):
        builder = operands[0].builder
        return Value(builder, builder.emit(op, [v.id for v in operands], attrs))

    apply.__name__ = op.name
    return apply


def test_every_differentiable_op_is_gradient_checked():
    differentiable = {name for name, op in OPS.items() if op.differentiable}
    checked = {name for name, _ in (p.values for p in gradient_op_params())}
    assert differentiable - set(NOT_FD_CHECKABLE) == checked
    assert set(NOT_FD_CHECKABLE) <= differentiable


@pytest.mark.parametrize("name, k", gradient_op_params())
def test_op_gradients(name, k):
    attrs, operands = make_op_case(name, k)
    check_grads(apply_op(OPS[name], attrs), operands, order=2)


def pullback_on(backend, fn, args, cotangent):
    pullback = ff.compile(lambda primals, ct: ff.vjp(fn, *primals)[1](ct), backend=backend)
    return tree_flatten(pullback(tuple(args), cotangent))[0]


@pytest.mark.parametrize("name, k", gradient_op_params())
def test_op_gradients_on_llvm_equal_the_checked_numpy_ones(name, k):
    """check_grads (ffcompile.gradcheck) runs on the NumPy backend: the LLVM backend's
    pullback of every op case must equal the one it checked (per-dtype tolerance)."""
    attrs, operands = make_op_case(name, k)
    fn = apply_op(OPS[name], attrs)
    out = ff.compile(fn, backend="numpy")(*operands)
    cotangent = np.random.default_rng(k).standard_normal(out.shape).astype(out.dtype)
    native, reference = (pullback_on(b, fn, operands, cotangent) for b in ("llvm", "numpy"))
    assert len(native) == len(reference)
    for got, expected in zip(native, reference, strict=True):
        rtol, atol = TOLERANCE[TensorType.of(expected).dtype]
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * np.abs(expected).max(initial=1.0))


@pytest.mark.parametrize("name, k", function_case_params(differentiable_only=True))
def test_function_gradients(name, k):
    case, args = make_function_case(name, k)
    check_grads(case.fn, args, order=2)


def test_function_cases_cover_the_activation_table():
    forms = {name: len(cases) for name, cases in FUNCTION_CASES.items()}
    assert forms["gelu"] == 3  # exact, tanh and sigmoid forms
    for name in ("elu", "leaky_relu", "prelu", "sinc", "mish", "softsign", "softmax", "log_softmax",
                 "logsumexp", "maximum", "minimum", "max", "where", "concatenate"):
        assert all(c.differentiable for c in FUNCTION_CASES[name]), name


# --------------------------------------------------------------------------- check_grads itself


def test_check_grads_reports_worst_error_and_argument():
    rng = np.random.default_rng(0)
    result = check_grads(lambda x, w: ff.tanh(x @ w).sum(), (rng.normal(size=(3, 4)), rng.normal(size=(4, 2))),
                         order=2)
    assert {(c.order, c.kind, c.argnum) for c in result.checks} == {
        (1, "vjp", 0), (1, "grad", 0), (1, "vjp", 1), (1, "grad", 1), (2, "vjp", 0), (2, "vjp", 1),
        (1, "jvp", 0), (1, "jvp", 1), (2, "jvp", 0), (2, "jvp", 1)}
    assert result.worst_error == max(c.error for c in result.checks) < 1e-8
    assert result.worst_argnum in (0, 1)


def test_check_grads_catches_a_wrong_vjp_and_names_the_argument(monkeypatch):
    def wrong_mul_vjp(inputs, out, g, attrs):
        a, b = inputs
        return [g * b, g * a * 1.001]  # 0.1% off for the second operand only

    monkeypatch.setattr(O.Mul, "vjp", staticmethod(wrong_mul_vjp))
    rng = np.random.default_rng(1)
    args = (rng.normal(size=(3,)), rng.normal(size=(3,)))
    with pytest.raises(AssertionError, match=r"order 1 vjp, argument 1: relative error 9\.99\de-04"):
        check_grads(lambda a, b: (a * b).sum(), args)
    check_grads(lambda a, b: (a * b).sum(), args, argnums=0)


def test_check_grads_order_2_catches_a_vjp_that_is_not_differentiable(monkeypatch):
    def frozen_tanh_vjp(inputs, out, g, attrs):
        return [g * (1.0 - L.stop_gradient(out * out))]  # right value, wrong derivative

    monkeypatch.setattr(O.Tanh, "vjp", staticmethod(frozen_tanh_vjp))
    x = np.random.default_rng(2).normal(size=(4,))
    check_grads(lambda x: ff.tanh(x).sum(), (x,), order=1)
    with pytest.raises(AssertionError, match="order 2 vjp, argument 0"):
        check_grads(lambda x: ff.tanh(x).sum(), (x,), order=2)


def test_check_grads_handles_pytrees_and_integer_arguments():
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
    x, counts = rng.normal(size=(5, 4)), np.array([1, 2, 0], dtype=np.int64)

    def model(params, x, counts):
        logits = x @ params["w"] + params["b"] * ff.convert(counts, "float64")
        return {"loss": ff.logsumexp(logits).mean(), "hidden": [ff.tanh(logits)]}

    result = check_grads(model, (params, x, counts), order=2)
    assert {c.argnum for c in result.checks} == {0, 1}
    assert {c.kind for c in result.checks} == {"vjp", "jvp"}  # pytree output: no scalar grad check
    with pytest.raises(TypeError, match="argument 2 has non-float leaves"):
        check_grads(model, (params, x, counts), argnums=2)


# --------------------------------------------------------------------------- conventions


def grad_of(fn, *args, argnums=0):
    return ff.compile(ff.grad(fn, argnums=argnums))(*args)


@pytest.mark.usefixtures("backend")
def test_relu_and_step_derivatives_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    assert np.array_equal(grad_of(lambda x: ff.relu(x).sum(), x), [0.0, 0.0, 1.0])
    assert np.array_equal(grad_of(lambda x: ff.step(x).sum(), x), [0.0, 0.0, 0.0])
    assert np.array_equal(grad_of(lambda x: ff.leaky_relu(x, 0.1).sum(), x), [0.1, 0.1, 1.0])


@pytest.mark.usefixtures("backend")
def test_sinc_is_smooth_at_zero():
    x = np.array([0.0, 1e-8, -1e-3])
    g = grad_of(lambda x: ff.sinc(x).sum(), x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, -x / 3, atol=1e-15)  # sinc'(x) = -x/3 + O(x^3)
    hessian_diag = grad_of(lambda x: ff.grad(lambda x: ff.sinc(x).sum())(x).sum(), x)
    np.testing.assert_allclose(hessian_diag, -1 / 3, rtol=1e-5)


@pytest.mark.usefixtures("backend")
def test_reduce_max_shares_the_gradient_between_ties():
    g = grad_of(lambda x: ff.max(x), np.array([1.0, 3.0, 3.0, -2.0]))
    assert np.array_equal(g, [0.0, 0.5, 0.5, 0.0])


@pytest.mark.usefixtures("backend")
def test_stop_gradient_blocks():
    x = np.array([1.5, -2.0])
    assert np.array_equal(grad_of(lambda x: (x * ff.stop_gradient(x)).sum(), x), x)
    assert np.array_equal(grad_of(lambda x: ff.stop_gradient(ff.exp(x)).sum(), x), [0.0, 0.0])


@pytest.mark.usefixtures("backend")
def test_convert_between_float_widths_passes_the_cotangent_back():
    x = np.array([1.0, 2.0, 3.0])
    c = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    g = grad_of(lambda x: (ff.convert(x, "float32") * c).sum().astype("float64"), x)
    assert g.dtype == np.float64 and np.array_equal(g, c.astype(np.float64))


@pytest.mark.usefixtures("backend")
def test_cotangents_of_a_value_used_several_times_are_summed():
    x = np.array([0.3, -1.2, 2.0])
    g = grad_of(lambda x: (x * x + ff.sin(x) + x).sum(), x)
    np.testing.assert_allclose(g, 2 * x + np.cos(x) + 1, rtol=1e-15)
    graph = ff.compile(ff.grad(lambda x: (x * x + ff.sin(x) + x).sum())).lower(x).graph
    adds = [n for n in graph.nodes if n.op is O.Add and n.role is Role.ADJOINT]
    assert adds, "the several cotangents of x are accumulated by adds"


@pytest.mark.usefixtures("backend")
def test_unused_inputs_get_zero_gradient_and_no_adjoint_nodes():
    def f(x, y, z):
        ff.tanh(y) * 3.0  # dead: no path to the output
        return (ff.sin(x) * 2.0).sum() + 0.0 * ff.stop_gradient(z).sum()

    x, y, z = np.ones(3), np.ones((2, 2)), np.ones(4)
    gx, gy, gz = grad_of(f, x, y, z, argnums=(0, 1, 2))
    np.testing.assert_allclose(gx, 2 * np.cos(x))
    assert np.array_equal(gy, np.zeros((2, 2))) and np.array_equal(gz, np.zeros(4))
    graph = ff.compile(ff.grad(f, argnums=(0, 1, 2))).lower(x, y, z).graph
    users = graph.users()
    outputs = set(graph.outputs)
    dead = [i for i, n in enumerate(graph.nodes)
            if n.role is Role.ADJOINT and not users[i] and i not in outputs]
    assert not dead, f"dead adjoint nodes: {[graph.nodes[i] for i in dead]}"
    assert not any(n.op is O.Tanh for n in graph.nodes)
    y_input = graph.inputs[1]
    assert not users[y_input]
    adjoint = [n for n in graph.nodes if n.role is Role.ADJOINT]
    assert not any(n.op in (O.Tanh, O.Cos) and n.inputs == (y_input,) for n in adjoint)
    assert sum(n.op is O.Cos for n in graph.nodes) == 1


def loss_with_marked_lines(x, w):
    h = ff.tanh(x @ w)  # line: forward tanh
    return (h * h).sum()  # line: forward loss


def test_adjoint_nodes_point_at_the_forward_line():
    lines, first = inspect.getsourcelines(loss_with_marked_lines)
    tanh_line = first + next(k for k, s in enumerate(lines) if "forward tanh" in s)
    loss_line = first + next(k for k, s in enumerate(lines) if "forward loss" in s)
    rng = np.random.default_rng(4)
    lowered = ff.compile(ff.grad(loss_with_marked_lines, argnums=1)).lower(
        rng.normal(size=(2, 3)), rng.normal(size=(3, 4)))
    adjoint = [n for n in lowered.graph.nodes if n.role is Role.ADJOINT]
    assert adjoint
    this_file = os.path.basename(__file__)
    assert all(os.path.basename(n.loc.file) == this_file for n in adjoint)
    assert {n.loc.line for n in adjoint} == {tanh_line, loss_line}
    tanh_adjoint = [n for n in adjoint if n.loc.line == tanh_line]
    assert {n.op for n in tanh_adjoint} >= {O.Matmul, O.Mul}  # tanh' and the matmul's transpose
    assert f':{tanh_line})' in lowered.ir and 'adjoint loc("' in lowered.ir
    assert str(ff.parse_ir(lowered.ir)) == lowered.ir


def test_check_grads_works_in_float64_whatever_the_input_precision():
    x = np.random.default_rng(5).normal(size=(3, 2)).astype(np.float32)
    assert check_grads(lambda x: ff.softplus(x).sum(), (x,), order=2).worst_error < 1e-8
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        check_grads(lambda x: x.sum(), (x,), order=3)
