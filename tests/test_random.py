"""ff.random: Threefry-2x32 against its published answers and JAX, the same bits on every
backend and at every length, sane statistics, traced and eager forms, and clear errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats

import ffcompile as ff
from ffcompile.ir import lang as L
from ffcompile.ir.ops import Threefry2x32

R = ff.random

# Random123's known-answer vectors for threefry2x32_20 (kat_vectors: key, counter ->
# output), as JAX's random_test.testThreefry2x32 also checks them: zeros, all ones, and
# the digits of pi.
KAT = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
       ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
       ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0))]


def i32(*words):
    return np.array(words, dtype=np.uint32).view(np.int32)


def u32(a):
    return np.asarray(a).view(np.uint32)


@pytest.mark.parametrize("key, counter, expected", KAT)
def test_reference_matches_known_answers(key, counter, expected):
    words = [i32(w)[0] for w in key + counter]
    for output, want in zip(("x0", "x1"), expected):
        assert u32(Threefry2x32.reference({"output": output}, *words)) == want
    assert u32(Threefry2x32.reference({"output": "xor"}, *words)) == expected[0] ^ expected[1]


@pytest.mark.usefixtures("backend")
def test_compiled_cipher_matches_known_answers():
    keys, counters = (np.stack([i32(*v[j]) for v in KAT]) for j in (0, 1))

    def cipher(k, c):
        return [L.threefry2x32(k[:, 0], k[:, 1], c[:, 0], c[:, 1], output=out) for out in ("x0", "x1")]

    x0, x1 = ff.compile(cipher)(keys, counters)
    assert [(int(a), int(b)) for a, b in zip(u32(x0), u32(x1))] == [v[2] for v in KAT]


def test_cipher_op_rejects_bad_operands_and_outputs():
    with pytest.raises(ff.ShapeError, match="threefry2x32: key and counter words must be i32"):
        ff.compile(lambda k: L.threefry2x32(k, k, k, k))(np.zeros(3, np.float32))
    with pytest.raises(ff.ShapeError, match="output must be one of"):
        ff.compile(lambda k: L.threefry2x32(k, k, k, k, output="x2"))(np.zeros(3, np.int32))


def test_llvm_runs_the_rounds_in_vector_registers():
    """The cipher is integer adds, rotates and xors per element: the loop vectorizes."""
    from test_llvm_target import host_has_avx2

    if not host_has_avx2():
        pytest.skip("host CPU has no AVX2: no ymm registers to look for")
    asm = ff.compile(lambda k: R.bits(k, (4096,)), backend="llvm").lower(R.key(0)).asm
    assert re.search(r"^\s+vpaddd\s.*%[yz]mm\d+", asm, re.MULTILINE), "no packed i32 adds"


# --------------------------------------------------------------------------- the same stream everywhere

def sampler(fn):
    """Every sampler applied to one key: the bits, keys and floats a program may draw."""
    def draw(key):
        a, b = R.split(key)
        return {"split": R.split(key, 3), "fold_in": R.fold_in(key, 12345), "bits": R.bits(a, fn),
                "uniform": R.uniform(b, fn), "uniform64": R.uniform(b, fn, "float64"),
                "bernoulli": R.bernoulli(a, 0.3, fn), "normal": R.normal(b, fn),
                "normal64": R.normal(a, fn, "float64"), "scaled": R.uniform(a, fn, minval=-2.0, maxval=3.0)}
    return draw


# Bitwise on every backend: integer-only, or exact float arithmetic on the bits.
EXACT = ("split", "fold_in", "bits", "uniform", "uniform64", "bernoulli")


@pytest.mark.parametrize("shape", [(), (1,), (7,), (33,), (5, 13), (2, 3, 67)])
def test_backends_and_eager_draw_the_same_stream(shape):
    """Lengths around every vector width: vector body and scalar tail lanes agree."""
    key = R.key(2026)
    eager = sampler(shape)(key)
    for backend in ("llvm", "numpy"):
        compiled = ff.compile(sampler(shape), backend=backend)(key)
        for name in EXACT:
            assert np.array_equal(compiled[name], eager[name]), (backend, name)
        for name, tol in (("normal", 4e-6), ("normal64", 1e-13), ("scaled", 1e-6)):
            np.testing.assert_allclose(compiled[name], eager[name], rtol=tol, atol=tol, err_msg=name)


@pytest.mark.usefixtures("backend")
def test_element_i_depends_on_the_key_and_i_only():
    """The counter is the row-major index: a longer sample extends a shorter one and a
    reshape keeps every value, so any split of the loop (vector lanes, threads) agrees."""
    key = R.key(5)
    draw = ff.compile(lambda k: (R.bits(k, (1000,)), R.bits(k, (17,)), R.bits(k, (8, 125))))
    long, short, square = draw(key)
    assert np.array_equal(long[:17], short) and np.array_equal(long.reshape(8, 125), square)


def test_streams_equal_jax():
    jax = pytest.importorskip("jax", reason="JAX is the oracle for the stream (pip install jax)")
    jr = jax.random
    jkey = jr.PRNGKey(42)
    assert np.array_equal(R.key(42), u32(jkey).view(np.int32))
    assert np.array_equal(R.split(R.key(42), 4), np.asarray(jr.split(jkey, 4)).view(np.int32))
    assert np.array_equal(R.fold_in(R.key(42), 7), np.asarray(jr.fold_in(jkey, 7)).view(np.int32))
    assert np.array_equal(R.bits(R.key(42), (3, 5)), np.asarray(jr.bits(jkey, (3, 5))).view(np.int32))
    assert np.array_equal(R.bits(np.asarray(jkey), (3, 5)), R.bits(R.key(42), (3, 5)))  # a JAX key as is
    for backend in ("llvm", "numpy"):
        uniform = ff.compile(lambda k: R.uniform(k, (4, 100)), backend=backend)(R.key(42))
        assert np.array_equal(uniform, np.asarray(jr.uniform(jkey, (4, 100))))
        bern = ff.compile(lambda k: R.bernoulli(k, 0.3, (500,)), backend=backend)(R.key(42))
        assert np.array_equal(bern, np.asarray(jr.bernoulli(jkey, 0.3, (500,))))
    np.testing.assert_allclose(R.normal(R.key(42), (1000,)), np.asarray(jr.normal(jkey, (1000,))),
                               rtol=2e-6, atol=2e-6)
    # Scaled: XLA fuses the multiply-add, NumPy rounds twice: equal to a float32 ulp.
    np.testing.assert_allclose(R.uniform(R.key(42), (100,), minval=-2.0, maxval=3.0),
                               np.asarray(jr.uniform(jkey, (100,), minval=-2.0, maxval=3.0)), atol=3e-7)
    for n in (10, 2000):  # one sort round, then two
        assert np.array_equal(R.permutation(R.key(42), n), np.asarray(jr.permutation(jkey, n)))


# --------------------------------------------------------------------------- statistics at fixed seeds

N = 200_000


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_statistics(dtype):
    u = R.uniform(R.key(1), (N,), dtype)
    assert u.dtype == np.dtype(dtype) and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 1e-3
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3
    scaled = R.uniform(R.key(1), (N,), dtype, minval=-3.0, maxval=5.0)
    assert scaled.min() >= -3.0 and scaled.max() < 5.0
    assert scipy.stats.kstest(scaled, "uniform", args=(-3.0, 8.0)).pvalue > 1e-3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_statistics(dtype):
    z = R.normal(R.key(2), (N,), dtype)
    assert z.dtype == np.dtype(dtype) and np.all(np.isfinite(z))
    assert abs(z.mean()) < 4 / np.sqrt(N) and abs(z.var() - 1.0) < 0.01
    assert abs(scipy.stats.skew(z)) < 0.03 and abs(scipy.stats.kurtosis(z)) < 0.06
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3


def test_normal_is_sqrt2_erfinv_of_its_uniform():
    """The tails too. f32: Giles' approximation (4e-7) evaluated in f32, where -log1p(-u*u)
    near |u| = 1 costs up to 6e-6 relative (as in JAX); f64: refined by a Newton step."""
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-12)):
        lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
        u = R.uniform(R.key(3), (N,), dtype, minval=float(lo), maxval=1.0).astype(np.float64)
        z = R.normal(R.key(3), (N,), dtype)
        np.testing.assert_allclose(z, np.sqrt(2) * scipy.special.erfinv(u), rtol=tol, atol=tol)


def test_bernoulli_and_independent_keys():
    for p in (0.1, 0.5, 0.9):
        frequency = R.bernoulli(R.key(4), p, (N,)).mean()
        assert abs(frequency - p) < 4 * np.sqrt(p * (1 - p) / N)
    a, b = R.split(R.key(4))
    assert abs(np.corrcoef(R.uniform(a, (N,)), R.uniform(b, (N,)))[0, 1]) < 4 / np.sqrt(N)
    assert len({R.fold_in(R.key(4), i).tobytes() for i in range(100)}) == 100


def test_a_seed_is_64_bits_as_hi_and_lo_words():
    """As JAX's threefry_seed with x64 on (without it JAX keeps the low 32 bits only)."""
    assert np.array_equal(R.key(2**40 + 7), [256, 7])
    assert np.array_equal(R.key(-1), [-1, -1]) and np.array_equal(R.key(2**64 - 1), [-1, -1])


def test_permutation_is_a_permutation():
    perm = R.permutation(R.key(6), 1000)
    assert sorted(perm) == list(range(1000)) and not np.array_equal(perm, np.arange(1000))
    rows = np.arange(12).reshape(6, 2)
    shuffled = R.permutation(R.key(6), rows)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, rows))


# --------------------------------------------------------------------------- traced: compile, grad, keys as inputs

@pytest.mark.usefixtures("backend")
def test_a_fresh_key_per_call_reuses_the_program():
    traces = []

    def noisy(x, key):
        traces.append(1)
        return x + R.normal(key, x.shape)

    f = ff.compile(noisy)
    x = np.zeros((4, 5), np.float32)
    first, second = f(x, R.key(0)), f(x, R.key(1))
    assert len(traces) == 1 and not np.allclose(first, second)
    assert np.array_equal(f(x, R.key(0)), first)


@pytest.mark.usefixtures("backend")
def test_random_numbers_carry_no_gradient():
    """d/dx sum(x * u) = u: the samples are constants of the gradient, also with a traced key."""
    key = R.key(8)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    grad = ff.compile(ff.grad(lambda x, k: (x * R.uniform(k, x.shape)).sum()))(x, key)
    np.testing.assert_array_equal(grad, R.uniform(key, (3, 4)))


@pytest.mark.usefixtures("backend")
def test_traced_seed_and_traced_fold_in():
    f = ff.compile(lambda seed, step: R.fold_in(R.key(seed), step))
    assert np.array_equal(f(np.int32(9), np.int32(3)), R.fold_in(R.key(9), 3))


# --------------------------------------------------------------------------- errors

def test_errors_name_the_function_and_the_problem():
    with pytest.raises(TypeError, match=r"ff.random.uniform: a key is an i32\[2\] array .* got f32\[2\]"):
        R.uniform(np.zeros(2, np.float32))
    with pytest.raises(TypeError, match=r"ff.random.normal: dtype must be float32 or float64, got i32"):
        R.normal(R.key(0), (3,), "int32")
    with pytest.raises(ValueError, match="exceed the i32 counter"):
        R.bits(R.key(0), (2**16, 2**15))
    with pytest.raises(TypeError, match="the seed must be an integer"):
        R.key(1.5)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        R.split(R.key(0), 0)
    with pytest.raises(TypeError, match="runs on the host"):
        ff.compile(lambda k: R.permutation(k, 5))(R.key(0))
    with pytest.raises(TypeError, match=r"ff.random.bits: a key is an i32\[2\] array .* got i32\[3\]"):
        ff.compile(lambda k: R.bits(k, (2,)))(np.zeros(3, np.int32))
