"""smallgemm's products split across the thread pool (codegen/llvm/smallgemm_split.py): by panels
of C's columns, or by rows of tiles where C is narrow; a transposed A packed once before the
split. Each case runs at 1, 2 and 3 threads (the same bits) against NumPy, at the host's vector
width here and at 256 bits (an AVX2 host's code) in a child process."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_llvm_packed_epilogue import TOLERANCE, dense, layer_inputs
from test_llvm_smallgemm import TRANSPOSES, assert_gemm_close, operands

import ffcompile as ff
from ffcompile.codegen.llvm import blas, smallgemm
from ffcompile.codegen.llvm.smallgemm_split import split_axis
from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm
from ffcompile.codegen.llvm.target import VECTOR_BITS_VARIABLE, vector_bytes

pytestmark = pytest.mark.usefixtures("small_route")  # deep's sizes: the packed GEMM where measured faster

# (m, n, k, trans_a, trans_b, dtype, by rows): deep's three products, odd sizes with edge panels
# and rows, a narrow C cut by rows (A plain, and transposed but too narrow to be packed).
CASES = [
    (64, 256, 256, False, False, np.float32, False),
    (64, 256, 256, False, True, np.float32, False),  # dot-product tiles
    (256, 256, 64, True, False, np.float32, False),  # A packed once, then panels
    (61, 250, 255, False, True, np.float32, False),
    (67, 131, 300, False, False, np.float32, False),
    (130, 200, 300, True, True, np.float32, False),  # both transposed: A and B packed in each chunk
    (600, 10, 2000, False, False, np.float32, True),
    (128, 10, 512, False, False, np.float32, True),  # mnist's last layer
    (300, 3, 2048, False, True, np.float32, True),  # dot-product tiles, by rows (run-time row counts)
    (500, 10, 1000, True, False, np.float32, True),
    (64, 256, 256, False, True, np.float64, False),
    (97, 200, 256, True, False, np.float64, False),
]


@pytest.fixture
def restore_threads():
    before = ff.get_num_threads()
    yield
    ff.set_num_threads(before)


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("m, n, k, trans_a, trans_b, dtype, by_rows", CASES)
def test_split_product_is_bitwise_the_same_at_any_thread_count(restore_threads, m, n, k, trans_a, trans_b,
                                                               dtype, by_rows, scaled):
    name = "f32" if dtype == np.float32 else "f64"
    itemsize = np.dtype(dtype).itemsize
    assert blas.gemm_route(m, n, k, name, trans_a, trans_b) == blas.SMALL
    assert split_axis(m, n, k, trans_a, trans_b, itemsize) == by_rows, "the case splits, along the axis it names"
    gemm = StandaloneGemm(m, n, k, name, trans_a, trans_b, scaled=scaled)
    assert "ffc_parallel_for" in gemm.llvm_ir
    a, b = operands(m, n, k, trans_a, trans_b, dtype)
    c0 = np.random.default_rng(1).standard_normal((m, n)).astype(dtype)
    alpha, beta = (0.5, -2.0) if scaled else (1.0, 0.0)
    results = []
    for threads in (1, 2, 3):
        ff.set_num_threads(threads)
        c = c0.copy()
        gemm(a, b, c, alpha, beta)
        results.append(c)
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    op_a, op_b = a.T if trans_a else a, b.T if trans_b else b
    if not scaled:
        assert_gemm_close(results[0], op_a, op_b, dtype)
        return
    exact = alpha * (op_a.astype(np.float64) @ op_b.astype(np.float64)) + beta * c0
    bound = 1e-5 * (abs(alpha) * np.abs(op_a.astype(np.float64)) @ np.abs(op_b) + abs(beta * c0)) + 1e-6
    assert (np.abs(results[0] - exact) <= bound).all()

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_a_layers_epilogue_runs_in_the_chunks(restore_threads, monkeypatch, trans_a, trans_b, dtype):
    """A dense layer's bias, GELU, residual and second result run inside the split product's
    function, on the part of C each chunk computed: the NumPy backend's results, the same bits
    at 1, 2 and 3 threads."""
    m, n, k = (64, 250, 256) if dtype == np.float32 else (96, 120, 256)
    assert blas.gemm_route(m, n, k, "f32" if dtype == np.float32 else "f64", trans_a, trans_b) == blas.SMALL
    assert split_axis(m, n, k, trans_a, trans_b, np.dtype(dtype).itemsize) is False
    fused = []
    split = blas.emit_split_small_gemm

    def recording(*args, **kwargs):
        fused.append(kwargs.get("epilogue", args[10] if len(args) > 10 else None) is not None)
        return split(*args, **kwargs)

    monkeypatch.setattr(blas, "emit_split_small_gemm", recording)
    args = layer_inputs(m, n, k, trans_a, trans_b, dtype)
    fn = ff.compile(dense(trans_a, trans_b), backend="llvm")
    results = []
    for threads in (1, 2, 3):
        ff.set_num_threads(threads)
        results.append([np.asarray(v).copy() for v in fn(*args)])
    assert fused == [True]
    assert all(np.array_equal(g, w) for r in results[1:] for g, w in zip(r, results[0], strict=True))
    want = [np.asarray(v) for v in ff.compile(dense(trans_a, trans_b), backend="numpy")(*args)]
    for g, w in zip(results[0], want, strict=True):
        np.testing.assert_allclose(g, w, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * np.abs(w).max())


def test_dot_tiles_fit_the_registers_of_each_width():
    """A dot tile's accumulators, plus one operand's vectors and one of the other's for a k step,
    fit the vector registers: 32 zmm with AVX-512, 16 ymm with AVX2 (6 x 4 at 256 bits spilled)."""
    registers = {64: 32, 32: 16}
    for vbytes, (rows, cols) in smallgemm.DOT_TILES.items():
        assert rows * cols + min(rows, cols) + 1 <= registers[vbytes], (vbytes, rows, cols)


@pytest.mark.skipif(os.environ.get(VECTOR_BITS_VARIABLE) == "256" or vector_bytes() == 32,
                    reason="the host's own width is 256 bits: the cases above ran at it")
def test_the_cases_at_256_bits_in_a_child():
    """The same cases with an AVX2 host's code (FFCOMPILE_VECTOR_BITS=256: other tiles, panels
    half as wide, the 4 x 3 dot tile)."""
    env = {**os.environ, VECTOR_BITS_VARIABLE: "256"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "not 256_bits"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent, timeout=600)
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
