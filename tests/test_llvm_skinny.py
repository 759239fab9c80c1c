"""Skinny GEMMs (codegen/llvm/skinny.py: C = op(A) op(B) with at most 8 rows) against NumPy.

Every column block, vector tail, k remainder and chunk boundary is fixed at compile
time, so the shapes cover: one and eight rows, n not a multiple of either vector width,
k not a multiple of K_BLOCK, several BLOCK_VECTORS blocks, products split across the
thread pool and products too small to split; each in all four transposes, both float
types, both vector widths (AVX-512 hosts also build and run the 256-bit code), and with
operands that are not aligned to a vector. The thread count must not change one bit of
the result (the units a chunk holds are computed by the same code wherever they fall).
"""
import numpy as np
import pytest
from test_llvm_smallgemm import assert_gemm_close, operands, product

import ffcompile as ff
from ffcompile.codegen.llvm import blas, skinny, smallgemm, target
from ffcompile.codegen.llvm.backend import LLVMExecutable
from ffcompile.codegen.llvm.threadpool import POOL_SLOT
from ffcompile.passes.memory import plan_memory

SHAPES = [(1, 1000, 33), (1, 517, 784), (3, 300, 129), (8, 2000, 7), (5, 4099, 21), (4, 3000, 3), (2, 40, 100)]  # (m, n, k)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(params=[64, 32], ids=["host-width", "avx2-width"])
def vector_width(request, monkeypatch):
    """The host's vector width, and 256-bit vectors forced (on a 256-bit host: the same twice)."""
    width = min(request.param, target.vector_bytes())
    for module in (target, skinny, smallgemm):
        monkeypatch.setattr(module, "vector_bytes", lambda: width)
    return width


def misaligned(a: np.ndarray) -> np.ndarray:
    """A copy of `a` whose data starts one element past a 64-byte boundary."""
    raw = np.empty(a.size + 64 // a.itemsize + 1, a.dtype)
    start = (-raw.ctypes.data % 64) // a.itemsize + 1
    out = raw[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_matches_numpy_matmul(m, n, k, trans_a, trans_b, dtype, vector_width):
    a, b = operands(m, n, k, trans_a, trans_b, dtype)
    itemsize = np.dtype(dtype).itemsize
    assert blas.gemm_route(m, n, k, "f32" if dtype == np.float32 else "f64", trans_a, trans_b) == (
        blas.SKINNY if skinny.skinny_fits(m, n, k, trans_a, trans_b, itemsize) else blas.SMALL)
    got = np.asarray(ff.compile(product(trans_a, trans_b), backend="llvm")(misaligned(a), misaligned(b)))
    assert_gemm_close(got, a.T if trans_a else a, b.T if trans_b else b, dtype)


def test_the_shapes_cover_the_cases_they_are_meant_to():
    fits = [skinny.skinny_fits(m, n, k, False, False, 4) for m, n, k in SHAPES]
    assert fits == [True] * 6 + [False]  # the last one: smallgemm's tiles
    for vw in (8, 16):  # float32 lanes of 256- and 512-bit vectors
        assert any(n % vw for _, n, _ in SHAPES) and any(n > skinny.BLOCK_VECTORS * vw * 2 for _, n, _ in SHAPES)
    assert any(k % skinny.K_BLOCK for _, _, k in SHAPES) and any(k < skinny.K_BLOCK for _, _, k in SHAPES)


# (m, n, k, whether the product is split across the pool: B's columns make at least two
# chunks of PARALLEL_MIN_BYTES)
SPLITS = [(1, 512, 784, True), (1, 40, 512, False), (8, 512, 512, True)]


@pytest.mark.parametrize("m, n, k, split", SPLITS)
@pytest.mark.parametrize("trans_b", [False, True])
def test_result_bits_do_not_depend_on_the_thread_count(m, n, k, split, trans_b, vector_width):
    a, b = operands(m, n, k, False, trans_b, np.float32)
    fn = ff.compile(product(False, trans_b), backend="llvm")
    schedule = fn.lower(a, b).schedule
    assert blas.gemm_route(m, n, k, "f32", False, trans_b) == blas.SKINNY
    results = []
    before = ff.get_num_threads()
    try:
        for threads in (1, 2, 3, 1):
            ff.set_num_threads(threads)
            results.append(np.asarray(fn(a, b)).copy())
    finally:
        ff.set_num_threads(before)
    for r in results[1:]:
        assert np.array_equal(r, results[0])
    assert_gemm_close(results[0], a, b.T if trans_b else b, np.float32)
    assert (POOL_SLOT in LLVMExecutable(schedule, plan_memory(schedule)).llvm_ir) == split


def dense(x, w, b, r):
    """A layer's bias, activation and a residual read: the epilogue of the skinny product; two
    of its values are results."""
    z = x @ w + b
    return ff.relu(z) + r, z * 0.5


def dense_transposed(x, w, b, r):  # w held out x in (torch's layout): dot-product tiles
    return dense(x, w.T, b, r)


@pytest.mark.parametrize("layer", [dense, dense_transposed])
@pytest.mark.parametrize("m, n, k", [(1, 512, 784), (5, 300, 129), (8, 2000, 7)])
def test_epilogue_runs_in_the_skinny_function_bitwise_alike_at_any_thread_count(m, n, k, layer, vector_width):
    rng = np.random.default_rng(m + n + k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k) if layer is dense_transposed else (k, n)).astype(np.float32)
    b, r = rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
    fn = ff.compile(layer, backend="llvm")
    skinny_function = fn.lower(x, w, b, r).llvm_ir.split('define internal void @"skinny"')[1].split("\ndefine")[0]
    assert "row.header" in skinny_function  # the epilogue's loop over rows (column_epilogue)
    before, results = ff.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            ff.set_num_threads(threads)
            results.append([np.asarray(v).copy() for v in fn(x, w, b, r)])
    finally:
        ff.set_num_threads(before)
    for other in results[1:]:
        assert all(np.array_equal(u, v) for u, v in zip(other, results[0]))
    want = [np.asarray(v) for v in ff.compile(layer, backend="numpy")(x, w, b, r)]
    for got, expected in zip(results[0], want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
