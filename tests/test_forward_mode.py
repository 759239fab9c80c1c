"""Forward mode (passes/forward.py, ir/jvp_rules.py) and the Jacobian transforms built on it.

jvp and vjp agree (<u, J v> both ways) on random programs; the batched tangent rules
(jacfwd's basis, jacrev's batched backward pass) agree with one unbatched JVP per basis
vector on every op case; tangent nodes carry their provenance in the IR dump; remat
plans a Hessian-vector product without changing it; has_aux; errors name the transform.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from samples import make_op_case
from test_expressions_hypothesis import FF, Program, add_random_step, shapes
from test_gradients import apply_op, gradient_op_params

import ffcompile as ff
from ffcompile.ir import Role
from ffcompile.ir.ops import OPS
from ffcompile.tree import tree_flatten


def dot(xs, ys) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(tree_flatten(xs)[0], tree_flatten(ys)[0], strict=True)))


def jacobian_by_columns(fn, args, argnum=0):
    """The oracle: one unbatched JVP per basis vector of args[argnum], stacked as JAX lays
    out a Jacobian (output axes, then the argument's)."""
    pushforward = ff.compile(lambda primals, tangents: ff.jvp(fn, primals, tangents)[1], backend="numpy")
    x = args[argnum]
    columns = []
    for k in range(x.size):
        basis = np.zeros(x.size)
        basis[k] = 1.0
        tangents = tuple(basis.reshape(x.shape) if n == argnum else np.zeros_like(a) for n, a in enumerate(args))
        columns.append(pushforward(tuple(args), tangents))
    out = np.stack(columns, axis=-1)
    return out.reshape(out.shape[:-1] + x.shape)


@pytest.mark.parametrize("name, k", gradient_op_params())
def test_batched_rules_agree_with_one_jvp_per_basis_vector(name, k):
    """jacfwd pushes the whole basis through each rule at once (a leading batch axis);
    jacrev pushes it through the rules of the op's adjoint graph: both must equal the
    Jacobian assembled from unbatched JVPs (which check_grads holds to finite differences)."""
    attrs, operands = make_op_case(name, k)
    fn = apply_op(OPS[name], attrs)
    for argnum, x in enumerate(operands):
        if not np.issubdtype(x.dtype, np.floating):
            continue
        expected = jacobian_by_columns(fn, operands, argnum)
        for transform in (ff.jacfwd, ff.jacrev):
            got = ff.compile(transform(fn, argnums=argnum), backend="numpy")(*operands)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=transform.__name__)


@pytest.mark.usefixtures("backend")
@settings(max_examples=30)
@given(st.data())
def test_jvp_and_vjp_agree_on_random_programs(data):
    """<u, J v> computed by forward mode equals <J^T u, v> by reverse mode; and the one-graph
    Jacobians (jacfwd: batched tangent; jacrev: batched cotangent) are the same matrix."""
    program = Program(data)
    program.new_input(data.draw(shapes(), label="first shape"))
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        add_random_step(program)
    inputs = tuple(program.inputs)

    def traced(*inputs):
        return program.run(FF, inputs)

    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    out = ff.compile(traced)(*inputs)
    u = rng.standard_normal(out.shape)
    v = tuple(rng.standard_normal(x.shape) for x in inputs)
    _, jv = ff.compile(lambda xs, vs: ff.jvp(traced, xs, vs))(inputs, v)
    _, pullback = ff.vjp(traced, *inputs)
    forward, reverse = dot(u, jv), dot(pullback(u), v)
    note(f"<u, Jv> = {forward}, <J^T u, v> = {reverse}")
    assert np.isclose(forward, reverse, rtol=1e-9, atol=1e-9 * (1 + np.abs(u).sum() * sum(np.abs(x).sum() for x in v)))
    np.testing.assert_allclose(ff.compile(ff.jacfwd(traced))(*inputs), ff.compile(ff.jacrev(traced))(*inputs),
                               rtol=1e-9, atol=1e-12)


def tanh_net(params, x):
    h = x
    for w in params:
        h = ff.tanh(h @ w)
    return (h * h).sum()


def test_tangent_nodes_carry_their_provenance_in_the_dump():
    rng = np.random.default_rng(0)
    params, x = [rng.normal(size=(4, 4)) for _ in range(2)], rng.normal(size=(3, 4))
    hvp = ff.compile(lambda p, v: ff.jvp(lambda p: ff.grad(tanh_net)(p, x), (p,), (v,))[1])
    lowered = hvp.lower(params, params)
    roles = {node.role for node in lowered.graph.nodes}
    assert {Role.FORWARD, Role.ADJOINT, Role.TANGENT} <= roles
    tangent_lines = [line for line in lowered.ir.splitlines() if " tangent loc(" in line]
    assert tangent_lines and all('test_forward_mode.py":' in line for line in tangent_lines)
    parsed = ff.parse_ir(lowered.ir)
    assert str(parsed) == lowered.ir and parsed == lowered.graph
    assert str(ff.parse_ir(lowered.optimized_ir)) == lowered.optimized_ir


@pytest.mark.parametrize("strategy,budget", [("store_all", None), ("recompute_elementwise", None),
                                             ("sqrt", None), ("optimal", 0.8)])
def test_remat_plans_a_hessian_vector_product_without_changing_it(strategy, budget):
    """Forward over reverse: the tangents of forward nodes are forward values the planner
    may store or recompute; the tangents of adjoint nodes are backward."""
    rng = np.random.default_rng(1)
    params = [rng.normal(size=(16, 16)) * 0.5 for _ in range(10)]
    v = [rng.normal(size=(16, 16)) for _ in range(10)]
    x = rng.normal(size=(8, 16))

    def hvp(p, v, x):
        return ff.jvp(lambda p: ff.grad(tanh_net)(p, x), (p,), (v,))[1]

    reference = ff.compile(hvp, backend="numpy")(params, v, x)
    compiled = ff.compile(hvp, backend="numpy", remat=strategy, memory_budget=budget)
    got = compiled(params, v, x)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)
    plan = compiled.last_lowered.plan
    assert compiled.last_lowered.program.arena.nbytes == plan.peak_bytes
    if strategy == "optimal":  # (sqrt's segments do not lower this graph's peak: not asserted)
        assert plan.peak_bytes <= 0.8 * plan.store_all_peak
        assert " recompute loc(" in compiled.last_lowered.optimized_ir


@pytest.mark.usefixtures("backend")
def test_second_order_forward_mode_is_v_h_v():
    """jvp of jvp: d/dt f'(x + t v) v = v^T H v, checked against the Hessian."""
    rng = np.random.default_rng(2)
    x, v = rng.normal(size=5), rng.normal(size=5)
    f = lambda x: (ff.tanh(x) ** 3).sum()  # noqa: E731
    inner = lambda x: ff.jvp(f, (x,), (v,))[1]  # noqa: E731
    vhv = ff.compile(lambda x: ff.jvp(inner, (x,), (v,))[1])(x)
    hessian = ff.compile(ff.hessian(f))(x)
    np.testing.assert_allclose(vhv, v @ hessian @ v, rtol=1e-10)


# --------------------------------------------------------------------------- has_aux


def loss_with_aux(w, x):
    h = ff.tanh(x @ w)
    return (h * h).sum(), {"hidden": h, "norm": (w * w).sum()}


def test_has_aux_returns_the_auxiliary_output_undifferentiated():
    rng = np.random.default_rng(3)
    w, x = rng.normal(size=(3, 2)), rng.normal(size=(4, 3))
    plain = lambda w, x: loss_with_aux(w, x)[0]  # noqa: E731
    expected_grad = ff.compile(ff.grad(plain))(w, x)
    hidden = np.tanh(x @ w)
    g, aux = ff.compile(ff.grad(loss_with_aux, has_aux=True))(w, x)
    np.testing.assert_allclose(g, expected_grad, rtol=1e-12)
    np.testing.assert_allclose(aux["hidden"], hidden, rtol=1e-12)
    (value, aux), g = ff.value_and_grad(loss_with_aux, has_aux=True)(w, x)
    np.testing.assert_allclose(value, (hidden ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(aux["norm"], (w * w).sum(), rtol=1e-12)
    np.testing.assert_allclose(g, expected_grad, rtol=1e-12)
    out, pullback, aux = ff.vjp(loss_with_aux, w, x, has_aux=True)
    np.testing.assert_allclose(pullback(1.0)[0], expected_grad, rtol=1e-12)
    np.testing.assert_allclose(aux["hidden"], hidden, rtol=1e-12)
    for transform in (ff.jacrev, ff.jacfwd):
        jac, aux = ff.compile(transform(loss_with_aux, has_aux=True))(w, x)
        np.testing.assert_allclose(jac, expected_grad, rtol=1e-12)
        np.testing.assert_allclose(aux["norm"], (w * w).sum(), rtol=1e-12)


@pytest.mark.parametrize("transform", [ff.grad, ff.value_and_grad, ff.jacrev, ff.jacfwd])
def test_has_aux_needs_a_pair(transform):
    with pytest.raises(ff.ArgumentError, match=r"has_aux=True\): the function must return a pair"):
        ff.compile(transform(lambda w: (w * w).sum(), has_aux=True))(np.ones(3))


def test_has_aux_vjp_needs_a_pair():
    with pytest.raises(ff.ArgumentError, match=r"vjp\(has_aux=True\)"):
        ff.vjp(lambda w: (w * w).sum(), np.ones(3), has_aux=True)


# --------------------------------------------------------------------------- API and errors


def test_jacobians_follow_argnums_and_pytrees():
    rng = np.random.default_rng(4)
    params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    x = rng.normal(size=(4, 3))

    def f(params, x):
        return {"y": ff.tanh(x @ params["w"] + params["b"])}

    for transform in (ff.jacfwd, ff.jacrev):
        jac = ff.compile(transform(f, argnums=(0, 1)))(params, x)
        assert jac["y"][0]["w"].shape == (4, 2, 3, 2) and jac["y"][0]["b"].shape == (4, 2, 2)
        assert jac["y"][1].shape == (4, 2, 4, 3)
        np.testing.assert_allclose(jac["y"][0]["w"], jacobian_by_columns(lambda w, b, x: f({"w": w, "b": b}, x)["y"],
                                                                         (params["w"], params["b"], x)), rtol=1e-12, atol=1e-14)
    assert ff.jacobian is ff.jacrev


def test_jvp_on_arrays_and_tangents_of_integer_arguments():
    x, n = np.array([0.5, -1.0]), np.array([2, 3], dtype=np.int32)
    out, tangent = ff.jvp(lambda x, n: x * ff.convert(n, "float64"), (x, n), (np.ones(2), n))
    np.testing.assert_array_equal(out, x * n)
    np.testing.assert_array_equal(tangent, n.astype(np.float64))  # the int argument has no tangent


def test_jvp_errors_name_the_tangent():
    x = np.ones((2, 3))
    with pytest.raises(ff.ArgumentError, match=r"jvp: tangent 0 has type f64\[3\], but the function's input 0 "
                                               r"is f64\[2,3\]: a tangent has the type of its input"):
        ff.jvp(ff.tanh, (x,), (np.ones(3),))
    with pytest.raises(ff.ArgumentError, match="jvp: the tangents' structure differs from the primals'"):
        ff.jvp(ff.tanh, (x,), ((x, x),))


def test_jacobians_refuse_integer_arguments_and_outputs():
    with pytest.raises(ff.ShapeError, match="jacfwd: cannot differentiate with respect to an argument of type i32"):
        ff.compile(ff.jacfwd(lambda n: ff.convert(n, "float32")))(np.arange(3, dtype=np.int32))
    with pytest.raises(ff.ShapeError, match=r"jacrev: the function's output of type i64\[\] is not a float array"):
        ff.compile(ff.jacrev(lambda x: ff.argmax(x)))(np.ones(3))


def test_runtime_checks_pass_through_jvp():
    logits, labels = np.zeros((2, 3)), np.array([0, 7], dtype=np.int32)
    with pytest.raises(ValueError, match="a label is outside"):
        ff.jvp(lambda z: ff.nn.cross_entropy(z, labels), (logits,), (logits,))
