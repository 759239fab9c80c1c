"""Fuzz: LLVM-compiled functions called with bad or odd arguments never crash the interpreter.

Hypothesis calls a few compiled programs (elementwise, matmul, reductions, a
training step) with wrong shapes, ranks and dtypes, Fortran-ordered, strided,
negatively strided, zero-strided, read-only and misaligned arrays, 0-size
arrays, nested lists, too few or too many arguments, and NaN/Inf data. Every
call either returns what the op-by-op NumPy reference returns for the same call
(NaN and Inf in the same places, values within test_llvm_backend.TOLERANCE for
the dtype, scaled by the inputs' magnitude) or raises the same kind of Python
error, with a message. Three entry points are fuzzed: ff.compile (a new signature is traced,
or refused at trace time), a fixed-signature Executable (the runtime checks),
and the bare native function (its own wrapper checks, no runtime in front).
A watchdog ends the process with tracebacks if a call hangs.
"""
import faulthandler

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_llvm_backend import TOLERANCE

import ffcompile as ff
from ffcompile.ir import TensorType
from ffcompile.tree import tree_flatten, tree_map

HANG_SECONDS = 120  # far above the slowest call here; a native loop that never returns trips it

CASES = {
    "elementwise": (lambda x, y: ff.tanh(x) * y + ff.exp(-x * x) - ff.relu(y),
                    [((5, 7), np.float32), ((7,), np.float32)]),
    "matmul": (lambda x, w: ff.gelu(x @ w) + x[:, :1],
               [((6, 5), np.float64), ((5, 3), np.float64)]),
    "reductions": (lambda x: (x.sum(axis=0), ff.max(x, axis=1), ff.logsumexp(x, axis=1), x.mean()),
                   [((4, 6), np.float32)]),
}
OTHER_DTYPES = [np.float32, np.float64, np.int32, np.int64, np.bool_, np.complex128,
                np.dtype(">f8"), np.dtype(">f4"), object, np.str_]
LAYOUTS = ["C", "F", "strided", "reversed", "broadcast", "readonly", "misaligned", "list"]
# What a bad call may raise: ArgumentError and ShapeError are TypeErrors; NumPy itself
# raises ValueError for what it cannot make an array of (a ragged list); a list is a
# pytree to ff.compile, so the traced function itself fails on it (a list has no .sum).
CLEAR_ERRORS = (TypeError, ValueError, IndexError, AttributeError)


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@st.composite
def shapes_near(draw, shape):
    """The compiled shape, or one a single mistake away: a dimension off by one or zero, a rank off by one."""
    kind = draw(st.sampled_from(["same", "same", "same", "resize", "zero", "extra", "drop"]))
    dims = list(shape)
    if kind in ("resize", "zero") and dims:
        k = draw(st.integers(0, len(dims) - 1))
        dims[k] = 0 if kind == "zero" else max(dims[k] + draw(st.sampled_from([-1, 1])), 1)
    elif kind == "extra":
        dims.insert(0, draw(st.integers(1, 2)))
    elif kind == "drop" and dims:
        dims.pop(draw(st.integers(0, len(dims) - 1)))
    return tuple(dims)


@st.composite
def values(draw, shape, dtype):
    """Normal data, NaN/Inf sprinkled in when drawn, as `dtype`."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.normal(size=shape) * draw(st.sampled_from([1.0, 10.0, 300.0]))
    if draw(st.booleans()):
        specials = rng.choice([np.nan, np.inf, -np.inf], size=shape)
        data = np.where(rng.random(shape) < draw(st.sampled_from([0.1, 0.5, 1.0])), specials, data)
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        data = np.nan_to_num(data, posinf=7, neginf=-7)
    return np.asarray(data).astype(dtype)  # arithmetic on 0-d arrays gives NumPy scalars


def laid_out(array, layout):
    """The same values (or a broadcast of them) in another memory layout or container."""
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided" and array.ndim:
        wide = np.repeat(array, 2, axis=-1)
        return wide[..., ::2]
    if layout == "reversed" and array.ndim:
        flipped = array[(slice(None, None, -1),) * array.ndim].copy()
        return flipped[(slice(None, None, -1),) * array.ndim]
    if layout == "broadcast" and array.ndim and array.shape[0]:
        return np.broadcast_to(array[:1], array.shape)
    if layout == "readonly":
        array = array.copy()
        array.flags.writeable = False
        return array
    if layout == "misaligned" and array.dtype.kind in "fc":
        raw = np.empty(array.nbytes + 1, np.uint8)[1:]
        view = raw.view(array.dtype).reshape(array.shape)
        view[...] = array
        return view
    if layout == "list":
        return array.tolist()
    return array


@st.composite
def argument(draw, shape, dtype):
    wrong_dtype = draw(st.integers(0, 4)) == 0
    dtype = draw(st.sampled_from(OTHER_DTYPES)) if wrong_dtype else dtype
    array = draw(values(draw(shapes_near(shape)), dtype))
    return laid_out(array, draw(st.sampled_from(LAYOUTS)))


def outcome(call, args):
    """("ok", results) or ("error", exception); anything but a clear error propagates."""
    try:
        return "ok", tree_flatten(call(*args))[0]
    except CLEAR_ERRORS as error:
        assert str(error), f"{type(error).__name__} without a message"
        return "error", error


def magnitude(args) -> float:
    """The largest finite input magnitude (at least 1): float32 results that cancel
    (tanh(x) * y - relu(y)) are only accurate to a few ulp of their operands."""
    finite = [np.abs(a[np.isfinite(a)]).max(initial=1.0) for a in map(np.asarray, tree_flatten(args)[0])
              if a.dtype.kind == "f"]
    return max(finite, default=1.0)


def assert_same_outcome(native, reference, scale=1.0):
    (kind, got), (ref_kind, expected) = native, reference
    assert kind == ref_kind, f"LLVM: {kind} {got!r}; NumPy: {ref_kind} {expected!r}"
    if kind == "error":
        assert type(got) is type(expected), (got, expected)
        return
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
        rtol, atol = TOLERANCE[TensorType.of(e).dtype]
        # equal_nan: NaN where NumPy has NaN, and nowhere else; Infs must match exactly
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol * scale, equal_nan=True)


def reference(fn):
    """The op-by-op NumPy program: the oracle with the fewest moving parts (the NumPy arena
    program fails on some 0-size arrays: see test_errors.test_zero_size_arrays_through_a_kernel_of_...)."""
    return ff.compile(fn, backend="numpy", optimize=False)


def matches_signature(arg, shape, dtype, nested_lists: bool) -> bool:
    """Whether a call may accept arg for a (shape, dtype) input. Executables take pytrees,
    where a list is a container of leaves; the native wrapper reads anything NumPy can."""
    if isinstance(arg, list) and not nested_lists:
        return False
    try:
        array = np.asarray(arg)
    except ValueError:
        return False
    return array.shape == shape and array.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_compiled_calls_agree_with_numpy_or_raise(name, data):
    fn, signature = CASES[name]
    args = [data.draw(argument(shape, dtype), label=f"argument {k}") for k, (shape, dtype) in enumerate(signature)]
    with np.errstate(all="ignore"):
        assert_same_outcome(outcome(ff.compile(fn, backend="llvm"), args), outcome(reference(fn), args),
                            magnitude(args))


@pytest.mark.parametrize("fn", [lambda x: ff.max(x, axis=1), lambda x: x.max(), lambda x: ff.logsumexp(x, axis=1)],
                         ids=["max-axis", "max-all", "logsumexp"])
@pytest.mark.parametrize("backend_name", ["numpy", "llvm"])
def test_max_over_an_empty_axis_is_a_trace_time_error(fn, backend_name):
    """Both backends once disagreed here (LLVM gave -inf, NumPy raised at run time)."""
    with pytest.raises(ff.ShapeError, match="reduce_max: the maximum over an empty axis"):
        ff.compile(fn, backend=backend_name)(np.ones((4, 0), np.float32))


@pytest.fixture(scope="module")
def fixed_signature_programs():
    """Per case: (LLVM Executable, op-by-op NumPy Executable), compiled once for its signature."""
    programs = {}
    for name, (fn, signature) in CASES.items():
        examples = [np.zeros(shape, dtype) for shape, dtype in signature]
        programs[name] = tuple(compiled.lower(*examples).compile()
                               for compiled in (ff.compile(fn, backend="llvm"), reference(fn)))
    return programs


@pytest.mark.parametrize("name", CASES)
@given(data=st.data())
def test_a_fixed_signature_accepts_what_matches_and_rejects_the_rest(fixed_signature_programs, name, data):
    native, op_by_op = fixed_signature_programs[name]
    signature = CASES[name][1]
    args = [data.draw(argument(shape, dtype), label=f"argument {k}") for k, (shape, dtype) in enumerate(signature)]
    count = data.draw(st.sampled_from(["right"] * 4 + ["one fewer", "one more"]), label="argument count")
    if count != "right":
        args = args[:-1] if count == "one fewer" else args + [args[-1]]
    with np.errstate(all="ignore"):
        # through the runtime's checks, and straight to the native wrapper
        for call, nested_lists in ((native, False), (native.program, True)):
            matches = len(args) == len(signature) and all(
                matches_signature(a, shape, dtype, nested_lists) for a, (shape, dtype) in zip(args, signature))
            got = outcome(call, args)
            if matches:
                expected = op_by_op(*map(np.asarray, args))  # lists, too, as the arrays they match
                assert_same_outcome(got, ("ok", tree_flatten(expected)[0]), magnitude(args))
            else:
                assert got[0] == "error", f"{call}: accepted arguments that do not match {signature}"


def mlp_loss(params, x, y):
    h = ff.tanh(x @ params["w1"] + params["b1"])
    return ((h @ params["w2"] - y) ** 2).mean()


def mlp_params(rng, dtype):
    return {"w1": rng.normal(size=(4, 8)).astype(dtype), "b1": np.zeros(8, dtype),
            "w2": rng.normal(size=(8, 2)).astype(dtype)}


@given(data=st.data())
def test_training_step_with_bad_batches_and_nan_data(data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    params = mlp_params(rng, dtype)
    if data.draw(st.booleans(), label="NaN in a weight"):
        params["w1"][0, 0] = np.nan
    x = data.draw(argument((16, 4), dtype), label="x")
    y = data.draw(argument((16, 2), dtype), label="y")
    with np.errstate(all="ignore"):
        native, numpy_ref = (two_steps(params, x, y, options)
                             for options in ({"backend": "llvm"}, {"backend": "numpy", "optimize": False}))
    scale = magnitude((params, x, y)) ** 2
    assert_same_outcome(native[0], numpy_ref[0], scale)
    assert_same_outcome(native[1], numpy_ref[1], scale)  # the in-place update: NaN reaches the same parameters


def two_steps(params, x, y, options):
    """(outcome of two training steps on a copy of params, ("ok", the updated copy))."""
    # SGD, not Adam: Adam's step m / sqrt(v) is scale-free, so a saturated tanh whose
    # gradient is 0 on one backend and 1e-30 on the other takes a full step on one only.
    step = ff.compile_train_step(mlp_loss, ff.optim.SGD(1e-3), **options)
    p = tree_map(np.copy, params)
    state = step.init(p)
    result = outcome(lambda: [step(p, state, x, y) for _ in range(2)], ())
    return result, ("ok", tree_flatten(p)[0])
