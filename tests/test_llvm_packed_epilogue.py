"""A GEMM's epilogue fused into the packed GEMM (packed_gemm.py): run on each finished block of C.

Every product here takes the packed route (the packed_route fixture records whether each one
fused its epilogue). The results are checked against the NumPy backend on odd shapes, every
transpose, f32 and f64, at both vector widths; tiny caches make many blocks and k steps, so
an epilogue run before a block's last k step would be caught; a donated result that would
overwrite an operand other chunks still read keeps its epilogue out of the kernel.
"""
import numpy as np
import pytest
from test_llvm_backend import lowered_graph
from test_llvm_packed_gemm import TINY_CACHES
from test_llvm_smallgemm import TRANSPOSES

import ffcompile as ff
from ffcompile.codegen.llvm import backend, packed_gemm
from ffcompile.ir.interpret import interpret
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def dense(trans_a, trans_b):
    """A layer: bias, GELU, a residual read, and two results (the activation and z / 2)."""
    def layer(x, w, b, r):
        z = (x.T if trans_a else x) @ (w.T if trans_b else w) + b
        return ff.gelu(z, approximate="tanh") + r, z * 0.5
    return layer


def layer_inputs(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m + n + k)
    x = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    w = (rng.standard_normal((n, k) if trans_b else (k, n)) / np.sqrt(k)).astype(dtype)
    return x, w, rng.standard_normal(n).astype(dtype), rng.standard_normal((m, n)).astype(dtype)


def assert_close_to_numpy_backend(fn, args, dtype):
    got = [np.asarray(v) for v in ff.compile(fn, backend="llvm")(*args)]
    want = [np.asarray(v) for v in ff.compile(fn, backend="numpy")(*args)]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * np.abs(w).max())
    return got


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_layer_epilogue_fused_matches_numpy(packed_route, threads, monkeypatch, trans_a, trans_b, dtype, vbytes):
    monkeypatch.setattr(packed_gemm, "vector_bytes", lambda: vbytes)
    threads(2)
    m, n, k = 301, 263, 389  # past one KC step and, at 256-bit f64, one NC panel
    assert_close_to_numpy_backend(dense(trans_a, trans_b), layer_inputs(m, n, k, trans_a, trans_b, dtype), dtype)
    assert packed_route == [(m, n, k, True)]


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, True)])
def test_many_blocks_and_k_steps(packed_route, threads, monkeypatch, trans_a, trans_b, vbytes):
    """Tiny caches: blocks in every dimension and several k steps, chunks of several blocks."""
    monkeypatch.setattr(packed_gemm, "cache_bytes", TINY_CACHES.get)
    monkeypatch.setattr(packed_gemm, "vector_bytes", lambda: vbytes)
    mr, nr, mc, kc, nc = packed_gemm.block_sizes(40, 700, 700, 8, vbytes)
    assert 40 > mc and 700 > nc and 700 > 2 * kc
    threads(3)
    assert_close_to_numpy_backend(dense(trans_a, trans_b), layer_inputs(40, 700, 700, trans_a, trans_b, np.float64),
                                  np.float64)
    assert packed_route == [(40, 700, 700, True)]


def test_fused_epilogue_is_in_the_packed_function_and_bitwise_alike_at_any_thread_count(packed_route, threads):
    args = layer_inputs(300, 520, 290, False, False, np.float32)
    fn = ff.compile(dense(False, False), backend="llvm")
    callback = fn.lower(*args).llvm_ir.split('define internal void @"packed_gemm.epilogue"')[1].split("\ndefine")[0]
    assert "row.header" in callback  # the epilogue's loop over a block's rows (column_epilogue), the GEMM's callback
    results = []
    for count in (1, 2, 3):
        threads(count)
        results.append([np.asarray(v).copy() for v in fn(*args)])
    for other in results[1:]:
        assert all(np.array_equal(u, v) for u, v in zip(other, results[0]))


def _square_layer():
    """tanh(x @ w + 1), of the type of both operands (square)."""
    def layer(x, w):
        return (ff.tanh(x @ w + 1.0),)
    return layer


@pytest.mark.parametrize("donated", [0, 1])
def test_an_epilogue_writing_over_an_operand_stays_out_of_the_kernel(packed_route, threads, donated):
    """Donated into x (A) or w (B), the epilogue's result would overwrite an operand that later
    column panels (A: repacked per panel) or other chunks still read: the epilogue runs after
    the product instead, and the result is right."""
    threads(2)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((280, 280)) / 17, rng.standard_normal((280, 280))
    graph = lowered_graph(_square_layer(), x, w)
    schedule = fuse(graph)
    executable = backend.build(schedule, plan_memory(schedule), donate={0: donated})
    assert executable.donated == {0: donated}
    expected = interpret(graph, [x, w])[0]
    args = [x.copy(), w.copy()]
    (got,) = executable(*args)
    assert got is args[donated]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert packed_route == [(280, 280, 280, False)]


def _momentum(w, v, x, dz):
    """A momentum step on a weight: v' = 0.9 v + xᵀ dz, w' = w - 0.01 v'."""
    velocity = 0.9 * v + x.T @ dz
    return w - 0.01 * velocity, velocity


@pytest.mark.parametrize("m, n, k", [(300, 290, 280), (4, 1000, 310)], ids=["packed", "skinny"])
def test_the_update_after_an_accumulated_product_is_fused(packed_route, threads, m, n, k):
    """Donated v' is the product's alpha and beta (accumulate.py); w' = w - 0.01 v', the rest of
    the epilogue, runs inside the packed (or skinny) kernel too, on the finished v'."""
    threads(2)
    rng = np.random.default_rng(4)
    w, v = rng.standard_normal((m, n)), rng.standard_normal((m, n))
    x, dz = rng.standard_normal((k, m)), rng.standard_normal((k, n))
    graph = lowered_graph(_momentum, w, v, x, dz)
    schedule = fuse(graph)
    executable = backend.build(schedule, plan_memory(schedule), donate={0: 0, 1: 1})
    assert executable.donated == {0: 0, 1: 1}
    expected = interpret(graph, [w, v, x, dz])
    args = [w.copy(), v.copy(), x, dz]
    got = executable(*args)
    assert got[0] is args[0] and got[1] is args[1]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    assert packed_route == ([(m, n, k, True)] if m > 8 else [])
    kernel_ir = executable.llvm_ir.split('define internal void @"packed_gemm.epilogue"' if m > 8 else
                                         'define internal void @"skinny"')[1].split("\ndefine")[0]
    assert "row.header" in kernel_ir  # the epilogue's loop, in the GEMM's own function (packed: its callback)
