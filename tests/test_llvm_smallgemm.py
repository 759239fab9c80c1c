"""The LLVM backend's register-tiled small GEMM (codegen/llvm/smallgemm.py) against numpy.matmul.

Every tile and remainder is fixed at compile time, so the shapes cover full
tiles, edge rows (m % 6), edge panels (n % 8 / n % 16, odd vector widths), short
and long k (the dot-product kernel for B^T needs k >= 4 vectors), and primes.
The error bound is the usual GEMM one: |C - C_exact| <= rtol * (|A| @ |B|).
"""
import subprocess
import sys

import numpy as np
import pytest
from test_llvm_backend import build

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.llvm import blas, skinny, smallgemm
from ffcompile.tree import tree_flatten, tree_map

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(1, 1, 1), (1, 7, 3), (3, 1, 200), (4, 16, 8), (5, 17, 9), (13, 31, 37), (64, 128, 10),
          (64, 10, 128), (97, 101, 103), (200, 3, 2), (7, 200, 65), (128, 128, 64)]  # (m, n, k)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]


def operands(m, n, k, trans_a, trans_b, dtype, batch=()):
    rng = np.random.default_rng(m * 1_000_000 + n * 1000 + k)
    a = rng.standard_normal((*batch, k, m) if trans_a else (*batch, m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def assert_gemm_close(got, a, b, dtype):
    """got == a @ b within the GEMM error bound, computed in float64 from the same inputs."""
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == exact.shape and got.dtype == dtype
    bound = RTOL[dtype] * np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    excess = np.abs(got - exact) - bound
    assert excess.max() <= 0, f"worst error exceeds the bound by {excess.max()} at {np.unravel_index(excess.argmax(), excess.shape)}"


def product(trans_a, trans_b):
    return lambda x, y: (x.T if trans_a else x) @ (y.T if trans_b else y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_matches_numpy_matmul(m, n, k, trans_a, trans_b, dtype):
    a, b = operands(m, n, k, trans_a, trans_b, dtype)
    got = np.asarray(ff.compile(product(trans_a, trans_b), backend="llvm")(a, b))
    assert_gemm_close(got, a.T if trans_a else a, b.T if trans_b else b, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_b", [False, True])
def test_batched_operand_times_shared_matrix(trans_b, dtype):
    a, b = operands(9, 21, 35, False, trans_b, dtype, batch=(3, 2))
    got = np.asarray(ff.compile(product(False, trans_b), backend="llvm")(a, b))
    assert_gemm_close(got, a, b.T if trans_b else b, dtype)


@pytest.mark.parametrize("threads, m, n, k, calls_blas", [
    (1, 256, 256, 256, False), (1, 256, 256, 257, True), (2, 128, 128, 128, False), (2, 128, 128, 129, True)])
def test_blas_only_above_the_native_threshold(blas_route, monkeypatch, threads, m, n, k, calls_blas):
    """The size choice in blas.emit_gemm: at or below native_max_work() no BLAS call is
    emitted; the limit is higher against one BLAS thread than against several."""
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", threads)
    assert (m * n * k > blas.native_max_work()) == calls_blas
    a, b = operands(m, n, k, False, False, np.float32)
    fn = ff.compile(lambda x, y: x @ y, backend="llvm")
    graph = fn.lower(a, b).optimized
    executable, _ = build(graph)
    assert executable.blas == (("sgemm",) if calls_blas else ())
    assert_gemm_close(np.asarray(executable(a, b)[0]), a, b, np.float32)


@pytest.mark.parametrize("trans_a", [False, True])
def test_operand_too_large_to_pack_goes_to_blas(blas_route, trans_a):
    """Packing B (320 kB here; short k rules out the dot tiles) would overflow PACK_MAX_BYTES
    of stack: BLAS takes the product even below the native threshold (with more rows than
    a skinny product, which streams B unpacked)."""
    m, n, k = skinny.SKINNY_MAX_ROWS + 1, 4000, 10
    assert m * n * k <= blas.THREADED_NATIVE_MAX_WORK and not smallgemm.small_gemm_fits(m, n, k, trans_a, True, 8)
    a, b = operands(m, n, k, trans_a, True, np.float64)
    fn = ff.compile(product(trans_a, True), backend="llvm")
    executable, _ = build(fn.lower(a, b).optimized)
    assert executable.blas == ("dgemm",)
    assert_gemm_close(np.asarray(executable(a, b)[0]), a.T if trans_a else a, b.T, np.float64)


def train_on_both_backends(model: str, steps: int = 3) -> dict:
    """{backend: (losses, trained parameter leaves)} of `steps` SGD steps of a zoo model."""
    workload = zoo.get(model)
    params, x, y = workload.example_inputs()
    results = {}
    for name in ("numpy", "llvm"):
        step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), backend=name)
        trained = tree_map(np.copy, params)
        state = step.init(trained)
        losses = [float(step(trained, state, x, y)) for _ in range(steps)]
        results[name] = losses, tree_flatten(trained)[0]
    return results


def test_digits_training_step_matches_numpy_backend():
    results = train_on_both_backends("digits")
    (want_losses, want), (got_losses, got) = results["numpy"], results["llvm"]
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_blas_pointers_come_without_importing_scipy_linalg():
    """A BLAS-calling program loads scipy.linalg.cython_blas alone (30-60 ms less per first
    compile), and a later `import scipy.linalg` finds that very module."""
    code = """
import sys
import numpy as np
import ffcompile as ff
from ffcompile.codegen.llvm import blas
from ffcompile.codegen.llvm.blas import blas_address
import os
os.environ["FFCOMPILE_GEMM_ROUTE"] = "blas"  # the BLAS route, on any host
a = np.ones((300, 300), np.float32)
f = ff.compile(lambda x, y: x @ y, backend="llvm")
assert float(np.asarray(f(a, a))[0, 0]) == 300.0
assert f.last_lowered.program.blas == ("sgemm",)
address = blas_address("sgemm")
assert "scipy.linalg" not in sys.modules, "scipy.linalg was imported"
import scipy.linalg.cython_blas
blas_address.cache_clear()  # now found in sys.modules, through the package
assert blas_address("sgemm") == address
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_blas_threads_applies_for_a_block_then_restores_the_choice():
    """What the benchmark harness uses: other programs of the process keep their thresholds."""
    blas.native_max_work()  # the default is applied by the first build
    before = (blas._threads_chosen, blas._blas_threads, blas.native_max_work())
    with blas.blas_threads(3):
        assert blas._blas_threads == 3 and blas.native_max_work() == blas.THREADED_NATIVE_MAX_WORK
    assert (blas._threads_chosen, blas._blas_threads, blas.native_max_work()) == before


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_blas_product_split_by_rows_across_the_thread_pool(blas_route, monkeypatch, trans_a, trans_b):
    """With SciPy's BLAS at one thread, a BLAS product is cut into blocks of SPLIT_ROWS rows
    of C (the last one shorter here), one call each, run on the pool's threads."""
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", 1)
    m, n, k = 301, 257, 263
    assert blas.gemm_route(m, n, k, "f32", trans_a, trans_b) == blas.BLAS and m % blas.SPLIT_ROWS
    assert -(-m // blas.SPLIT_ROWS) >= 2 * -(-blas.SPLIT_MIN_WORK // (blas.SPLIT_ROWS * n * k))  # split
    a, b = operands(m, n, k, trans_a, trans_b, np.float32)
    fn = ff.compile(product(trans_a, trans_b), backend="llvm")
    assert "ffc_parallel_for" in fn.lower(a, b).llvm_ir
    before = ff.get_num_threads()
    try:
        for threads in (1, 2, 3):
            ff.set_num_threads(threads)
            assert_gemm_close(np.asarray(fn(a, b)), a.T if trans_a else a, b.T if trans_b else b, np.float32)
    finally:
        ff.set_num_threads(before)


@pytest.mark.parametrize("m, n, k, trans_b", [(128, 256, 256, False), (130, 256, 256, True), (101, 129, 700, False)])
def test_small_gemm_split_by_row_blocks_is_bitwise_the_same_at_any_thread_count(small_route, m, n, k, trans_b):
    """A smallgemm product with A's rows contiguous runs as blocks of SPLIT_SMALL_ROWS rows
    (the last one shorter) across the pool: each block is the same code at any count."""
    assert blas.gemm_route(m, n, k, "f32", False, trans_b) == blas.SMALL
    a, b = operands(m, n, k, False, trans_b, np.float32)
    fn = ff.compile(product(False, trans_b), backend="llvm")
    assert "ffc_parallel_for" in fn.lower(a, b).llvm_ir
    before, results = ff.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            ff.set_num_threads(threads)
            results.append(np.asarray(fn(a, b)).copy())
    finally:
        ff.set_num_threads(before)
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    assert_gemm_close(results[0], a, b.T if trans_b else b, np.float32)
