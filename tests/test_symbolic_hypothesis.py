"""Random programs with a batch axis (#18): the one LLVM program for every batch size gives
the answers of the per-size NumPy programs at sizes around the kernels' block edges.

Hypothesis draws a program as test_expressions_hypothesis does, its first input with a
batch axis of a size no other axis can take (BATCH_AT_DRAW); every input whose shape holds
that size there has its batch axis at that position. Traced with `batch_dim=`, steps that
need a concrete batch size (indexing or concatenating along it, a reshape splitting it)
are ShapeErrors, and such programs are rejected. The rest is compiled once, on LLVM, and
run at every size of SIZES on fresh inputs of that size, forward and gradients, against
a program compiled for that size on the NumPy backend.
"""
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from test_expressions_hypothesis import FF, Program, add_random_step, shapes

import ffcompile as ff
from ffcompile.ir.errors import ShapeError
from ffcompile.tree import tree_flatten

BATCH_AT_DRAW = 29  # above any axis the steps make from sizes 1..4 (concat adds at most 3 a step)
SIZES = (1, 2, 3, 8, 9, 63, 65, 129)


def batch_axes(program: Program) -> tuple:
    """Each input's batch axis: where its shape holds BATCH_AT_DRAW (None: nowhere)."""
    axes = []
    for array in program.inputs:
        found = [axis for axis, d in enumerate(array.shape) if d == BATCH_AT_DRAW]
        assume(len(found) <= 1)
        axes.append(found[0] if found else None)
    return tuple(axes)


def inputs_at(program: Program, axes, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for array, axis in zip(program.inputs, axes):
        shape = list(array.shape)
        if axis is not None:
            shape[axis] = batch
        arrays.append(rng.uniform(-3, 3, shape))
    return arrays


def assert_close(got, want) -> None:
    got, want = tree_flatten(got)[0], tree_flatten(want)[0]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@given(st.data())
def test_random_batch_programs_match_the_per_size_programs(data):
    program = Program(data)
    program.new_input((BATCH_AT_DRAW,) + data.draw(shapes(0, 2), label="first shape"))
    for _ in range(data.draw(st.integers(1, 5), label="steps")):
        add_random_step(program)
    axes = batch_axes(program)

    def traced(*inputs):
        return program.run(FF, inputs)

    def loss(*inputs):  # every input's gradient, through a sum weighted by position
        out = traced(*inputs)
        return (out * out).sum() * 0.5

    symbolic = ff.compile(traced, batch_dim=axes)
    try:
        symbolic.lower(*program.inputs)
    except ShapeError:
        assume(False)  # a step needs a concrete batch size: refused at trace time, as it must be
    # Or refused when the one program is lowered, kept per size with the reason: a size it cannot
    # hold (x[..., None, :] + x is (B, B, 1): B * B bytes), which the trace does not see.
    assume(not (symbolic.stats().per_size or "").startswith("ShapeError: "))
    gradient = ff.compile(ff.grad(loss, argnums=tuple(range(len(axes)))), batch_dim=axes)
    assert symbolic.stats().per_size is None, symbolic.stats()
    for batch in SIZES:
        arrays = inputs_at(program, axes, batch, seed=batch)
        assert_close(symbolic(*arrays), ff.compile(traced, backend="numpy")(*arrays))
        assert_close(gradient(*arrays),
                     ff.compile(ff.grad(loss, argnums=tuple(range(len(axes)))), backend="numpy")(*arrays))
    assert symbolic.signatures == 1 and gradient.signatures == 1


def test_a_size_quadratic_in_the_batch_falls_back_per_size_with_its_reason():
    """The case hypothesis found: x[..., None, :] + x traces with the symbolic B, but its (B, B, 1)
    result needs B * B elements, which one program for every size cannot plan: it runs per size
    (Stats.per_size says why), each size's program right."""
    def f(x):
        return x[..., None, :] + x

    symbolic = ff.compile(f, batch_dim=(0,))
    for batch in (1, 3, 29):
        x = np.arange(batch, dtype=np.float32)[:, None]
        np.testing.assert_array_equal(symbolic(x), x[..., None, :] + x)
    assert symbolic.stats().per_size.startswith("ShapeError: the product B * B needs a concrete value")
