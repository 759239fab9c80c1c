"""ff.vmap without an outside oracle: per-example gradients equal the per-example loop, the
batch is one program, it composes (compile, grad of vmap, remat, closures, runtime checks),
the dump shows provenance, and bad axes are refused naming what is wrong.
(tests/test_vmap_jax.py holds the JAX oracle.)"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ffcompile as ff
from ffcompile import zoo
from ffcompile.tree import tree_leaves, tree_map
from test_expressions_hypothesis import FF, NP, Program, add_random_step, shapes

RNG = np.random.default_rng(0)


def _digits(batch: int, dtype=np.float32):
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(batch_size=batch)
    return workload, tree_map(lambda a: a.astype(dtype), params), x.astype(dtype), y


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_per_example_gradients_equal_the_per_example_loop(dtype):
    workload, params, x, y = _digits(8, dtype)
    batched = ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0))(params, x, y)
    one = ff.compile(ff.grad(workload.loss))
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for i in range(len(x)):
        for got, expected in zip(tree_leaves(batched), tree_leaves(one(params, x[i], y[i])), strict=True):
            assert got.dtype == dtype and got.shape == (len(x),) + expected.shape
            np.testing.assert_allclose(got[i], expected, **tolerance)


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("model", [name for name in zoo.names() if name != "wide"])
def test_per_example_gradients_of_every_zoo_model_equal_the_loop(model):
    """Every zoo model but `wide` (its per-example gradients, 25.2M float32 parameters an
    example, would take 302 MB for 3 examples; its layers are Dense layers as mnist's)."""
    workload = zoo.get(model)
    params, x, y = workload.example_inputs(batch_size=3)
    batched = ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0))(params, x, y)
    one = ff.compile(ff.grad(workload.loss))
    for i in range(3):
        example = tuple(a[i] for a in x) if isinstance(x, tuple) else x[i]
        for got, expected in zip(tree_leaves(batched), tree_leaves(one(params, example, y[i])), strict=True):
            np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-6)


def test_per_example_gradients_are_one_program_of_batched_gemms():
    """The program does not grow with the batch (no loop over examples in Python or IR):
    its forward GEMMs take every example's rows at once, its weight gradients are batched
    matmuls (a batch axis on both operands)."""
    workload, params, x, y = _digits(16)
    lowered = {n: ff.compile(ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0))).lower(params, x[:n], y[:n])
               for n in (4, 16)}
    graphs = {n: ff.parse_ir(lowered[n].ir) for n in lowered}
    assert len(graphs[4].nodes) == len(graphs[16].nodes)
    graph = graphs[16]
    gemms = [[graph.nodes[i].type.shape for i in node.inputs] for node in graph.nodes if node.op.name == "matmul"]
    assert [(16, 64), (64, 128)] in gemms  # the first layer: all 16 examples in one GEMM
    batched = [shapes for shapes in gemms if all(len(s) == 3 and s[0] == 16 for s in shapes)]
    assert sorted(s[0][1:2] + s[1][2:] for s in batched) == [(64, 128), (128, 10), (128, 128)]


@pytest.mark.usefixtures("backend")
def test_grad_of_vmap_and_vmap_inside_a_compiled_function_with_a_closure():
    w, x = RNG.standard_normal((3, 2)), RNG.standard_normal((5, 3))

    def total(w, x):  # w is closed over by the mapped function: captured, not batched
        return ff.vmap(lambda xi: ff.tanh(xi @ w).sum())(x).sum()

    def by_loop(w, x):
        return sum(ff.tanh(x[i] @ w).sum() for i in range(len(x)))

    np.testing.assert_allclose(ff.compile(total)(w, x), ff.compile(by_loop)(w, x), rtol=1e-13)
    np.testing.assert_allclose(ff.grad(total)(w, x), ff.grad(by_loop)(w, x), rtol=1e-13)


@pytest.mark.usefixtures("backend")
def test_a_jacobian_as_vmap_of_a_vjp_over_the_basis():
    """The softmax Jacobian, diag(s) - s s^T, one row per cotangent of the identity: the
    cotangents come from vmap's trace, inside the one the primals come from."""
    def jacobian(x, basis):
        _, pullback = ff.vjp(ff.softmax, x)
        return ff.vmap(lambda row: pullback(row)[0])(basis)

    x = RNG.standard_normal(5)
    s = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(ff.compile(jacobian)(x, np.eye(5)), np.diag(s) - np.outer(s, s), atol=1e-15)


@pytest.mark.usefixtures("backend")
def test_composes_with_remat():
    workload, params, x, y = _digits(8)
    per_example = ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0))
    plain = ff.compile(per_example)(params, x, y)
    for strategy in ("recompute_elementwise", "sqrt"):
        rematted = ff.compile(per_example, remat=strategy)(params, x, y)
        for got, expected in zip(tree_leaves(rematted), tree_leaves(plain), strict=True):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.usefixtures("backend")
def test_a_runtime_check_fails_if_any_example_fails():
    logits, labels = np.zeros((3, 4), np.float32), np.array([0, 3, 1], np.int32)
    per_example = ff.vmap(ff.nn.cross_entropy)
    np.testing.assert_allclose(per_example(logits, labels), np.full(3, np.log(4.0)), rtol=1e-6)
    labels[2] = 4
    with pytest.raises(ValueError, match=r"cross_entropy: a label is outside \[0, 4\)"):
        per_example(logits, labels)


def test_batched_nodes_carry_vmap_provenance_in_the_dump():
    def pairs(x, y):
        return ff.vmap(ff.vmap(lambda a, b: a * b, (0, None)), (None, 0))(x, y)

    text = ff.compile(pairs).lower(np.ones(3), np.ones(2)).ir
    mul = next(line for line in text.splitlines() if " = mul " in line)
    assert 'loc(vmap vmap "' in mul and "test_vmap.py" in mul
    assert str(ff.parse_ir(text)) == text


def test_python_scalars_and_unmapped_arguments():
    x = RNG.standard_normal((4, 3))
    got = ff.vmap(lambda x, s: x * s + 1.0, in_axes=(0, None))(x, 2.0)
    np.testing.assert_allclose(got, x * 2.0 + 1.0, rtol=1e-15)
    inside = ff.compile(lambda x: ff.vmap(lambda x, s: x * s, in_axes=(0, None))(x, 2.0))
    for dtype in (np.float32, np.float64):  # the scalar takes the dtype it meets
        np.testing.assert_allclose(inside(x.astype(dtype)), x.astype(dtype) * 2.0, rtol=1e-7)


@pytest.mark.parametrize("fn, in_axes, out_axes, args, error, message", [
    (lambda a, b: a + b, 0, 0, (np.ones((3, 2)), np.ones((4, 2))), ff.ShapeError,
     r"vmap: the mapped axes have different sizes \(a: 3, b: 4\)"),
    (lambda a, b: a + b, (0,), 0, (np.ones(3), np.ones(3)), ValueError, r"in_axes has 1 entries for 2 arguments"),
    (lambda a: a, 2, 0, (np.ones((3, 2)),), ff.ShapeError, r"in_axes for argument a of type f64\[3,2\]: axis 2"),
    (lambda a: a, None, 0, (np.ones(3),), ValueError, r"in_axes maps no argument"),
    (lambda a: a * 2.0, 0, None, (np.ones(3),), ff.ShapeError, r"out_axes is None for result 0, but it differs"),
    (lambda a: a, 0, 1, (np.ones(3),), ff.ShapeError, r"out_axes for result 0: axis 1 out of range for rank 1"),
    (lambda a: a, {"a": 0}, 0, (np.ones(3),), ValueError, r"in_axes \{'a': 0\} is not an int, None, or a prefix"),
    (lambda a: a @ a, 0, 0, (np.ones((4, 3, 2)),), ff.ShapeError, r"matmul: contracting dimensions differ"),
])
def test_bad_axes_and_shapes_are_refused(fn, in_axes, out_axes, args, error, message):
    with pytest.raises(error, match=message):
        ff.vmap(fn, in_axes, out_axes)(*args)


def test_keyword_arguments_take_their_positions():
    x, w = RNG.standard_normal((4, 3)), RNG.standard_normal(3)
    mapped = ff.vmap(lambda x, w: x * w, in_axes=(0, None))
    np.testing.assert_array_equal(mapped(w=w, x=x), x * w)
    np.testing.assert_array_equal(ff.compile(lambda x, w: mapped(x, w=w))(x, w), x * w)
    with pytest.raises(TypeError, match="keyword-only arguments \\['s'\\] have no place in in_axes"):
        ff.compile(lambda x: ff.vmap(lambda x, *, s: x * s)(x, s=2.0))(x)


@pytest.mark.usefixtures("backend")
@given(st.data())
def test_vmap_of_random_programs_equals_the_per_example_loop(data):
    """Random array programs (test_expressions_hypothesis's generator), each input mapped
    over a new axis anywhere or not at all, the result's batch axis anywhere: the batch
    equals NumPy run example by example."""
    program = Program(data)
    program.new_input(data.draw(shapes(), label="first shape"))
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        add_random_step(program)
    in_axes = tuple(data.draw(st.integers(0, x.ndim) if k == 0 else st.none() | st.integers(0, x.ndim),
                              label=f"in_axes[{k}]") for k, x in enumerate(program.inputs))
    examples = [[x if a is None else x * (1 + 0.25 * j) for x, a in zip(program.inputs, in_axes)] for j in range(3)]
    batch = [x if a is None else np.stack([e[k] for e in examples], axis=a)
             for k, (x, a) in enumerate(zip(program.inputs, in_axes))]
    out_axis = data.draw(st.integers(0, program.numpy_values[-1].ndim), label="out_axes")
    expected = np.stack([program.run(NP, example) for example in examples], axis=out_axis)
    got = ff.vmap(lambda *xs: program.run(FF, xs), in_axes, out_axis)(*batch)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_the_per_example_gradient_benchmark_runs_and_agrees(capsys):
    """benchmarks/per_example_grads.py: it checks ffcompile's per-example gradients against
    JAX's before timing (when JAX is installed) and prints the ratios (not timed here)."""
    from benchmarks import per_example_grads

    ratios = per_example_grads.main(["--batch", "8", "--steps", "1", "--rounds", "1"])
    assert "ff vmap(grad) / ff grad" in ratios and all(r > 0 for r in ratios.values())
    assert "digits MLP (64-128-128-10), batch 8" in capsys.readouterr().out
