"""The packed GEMM's shape-generic functions as a runtime library (codegen/llvm/gemm_library.py):
run-time sizes and leading dimensions, one build per host shared by every program, and the
disk cache's checks on its entries (a damaged or foreign entry is rebuilt, never run)."""
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_llvm_packed_gemm import DTYPES, TINY_CACHES
from test_llvm_smallgemm import TRANSPOSES

import ffcompile as ff
from ffcompile.codegen.llvm import gemm_library, packed_gemm, target
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE, ObjectCache, host_runtime_entries
from ffcompile.codegen.llvm.packed_gemm import GemmVariant, block_sizes


@pytest.fixture
def fresh_library(tmp_path, monkeypatch):
    """An empty disk cache, and no variant loaded or built in this process yet."""
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setattr(gemm_library, "_loaded", {})
    monkeypatch.setattr(gemm_library, "builds", 0)
    return tmp_path


def call(variant, a, b, c, m, n, k, lda, ldb, ldc, alpha, beta, scaled, blocks):
    scalar = ctypes.c_float if variant.dtype == "f32" else ctypes.c_double
    function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 6, scalar, scalar,
                                *[ctypes.c_int64] * 4, ctypes.c_void_p, ctypes.c_void_p)(
        gemm_library.address(variant.symbol))
    function(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, lda, ldb, ldc, alpha, beta, int(scaled), *blocks,
             None, None)


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_leading_dimensions_wider_than_the_rows(monkeypatch, threads, trans_a, trans_b, dtype, vbytes):
    """Operands and C as parts of wider matrices (lda, ldb, ldc past the row width): only their
    part is read and written; the padding keeps its NaNs. Tiny caches: many blocks and k steps."""
    monkeypatch.setattr(packed_gemm, "cache_bytes", TINY_CACHES.get)
    threads(2)
    np_dtype = DTYPES[dtype]
    m, n, k, pad = 53, 47, 71, 5
    rng = np.random.default_rng(m + vbytes)
    shape_a, shape_b = ((k, m) if trans_a else (m, k)), ((n, k) if trans_b else (k, n))
    wide_a = np.full((shape_a[0], shape_a[1] + pad), np.nan, np_dtype)
    wide_b = np.full((shape_b[0], shape_b[1] + 2 * pad), np.nan, np_dtype)
    wide_c = np.full((m, n + 3 * pad), np.nan, np_dtype)
    a, b, c = wide_a[:, :shape_a[1]], wide_b[:, :shape_b[1]], wide_c[:, :n]
    a[...], b[...] = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    old = rng.standard_normal((m, n)).astype(np_dtype)
    c[...] = old
    variant = GemmVariant(dtype, trans_a, trans_b, vbytes)
    blocks = block_sizes(m, n, k, np_dtype().itemsize, vbytes)[2:]
    call(variant, wide_a, wide_b, wide_c, m, n, k, wide_a.shape[1], wide_b.shape[1], wide_c.shape[1], 0.5, -2.0,
         True, blocks)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    exact = 0.5 * op_a.astype(np.float64) @ op_b.astype(np.float64) - 2.0 * old
    np.testing.assert_allclose(c, exact, rtol=1e-4 if dtype == "f32" else 1e-12, atol=1e-4 if dtype == "f32" else 1e-12)
    assert np.isnan(wide_c[:, n:]).all()


def _packed_program(m, n, k):
    """A compiled (x @ w) of these sizes through the packed GEMM, run once."""
    x = np.ones((m, k), np.float32)
    w = np.ones((k, n), np.float32)
    got = ff.compile(lambda x, w: x @ w, backend="llvm")(x, w)
    np.testing.assert_array_equal(got, np.full((m, n), k, np.float32))


def test_two_programs_share_one_library_build(fresh_library, monkeypatch):
    """Two products of different shapes call one variant, built once; a new process loads it
    from the disk cache (building it there would raise)."""
    monkeypatch.setenv("FFCOMPILE_GEMM_ROUTE", "packed")
    _packed_program(300, 280, 290)
    _packed_program(200, 350, 310)
    assert gemm_library.builds == 1
    _variant_entry(fresh_library, GemmVariant("f32", False, False, target.vector_bytes()))
    code = ("import ffcompile.codegen.llvm.gemm_library as m\nm._build = None  # building would raise\n"
            "from test_gemm_library import _packed_program\n_packed_program(170, 230, 250)\n")
    tests = Path(__file__).parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tests.parent,
                   env={**os.environ, "PYTHONPATH": str(tests)})


def _variant_entry(directory, variant):
    """The one entry of the disk cache holding `variant`'s function."""
    entries = [path for path in host_runtime_entries(directory) if variant.symbol.encode() in path.read_bytes()]
    assert len(entries) == 1
    return entries[0]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "another variant's entry", "another function"])
def test_a_damaged_library_entry_is_rebuilt(fresh_library, monkeypatch, damage):
    """The entry fails its checks (checksum, length, key, symbols): it is deleted, the variant
    built again, the entry rewritten, and the product right."""
    variant, other = GemmVariant("f32", False, True, 32), GemmVariant("f32", True, False, 32)
    gemm_library.address(variant.symbol)
    gemm_library.address(other.symbol)
    path, other_path = _variant_entry(fresh_library, variant), _variant_entry(fresh_library, other)
    data = path.read_bytes()
    if damage == "flipped byte":
        data = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
    elif damage == "truncated":
        data = data[:len(data) // 2]
    elif damage == "another variant's entry":
        data = other_path.read_bytes()
    else:  # whole and under its key, but the object defines another function
        cache = ObjectCache(fresh_library)
        found = cache.load_as(other_path.name.split(".")[0], lambda metadata, code: (metadata, code))
        cache.store(path.name.split(".")[0], *found)
        data = path.read_bytes()
    path.write_bytes(data)
    monkeypatch.setattr(gemm_library, "_loaded", {})
    builds = gemm_library.builds
    m, n, k = 40, 50, 60
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    call(variant, a, b, c, m, n, k, k, k, n, 1.0, 0.0, False, block_sizes(m, n, k, 4, 32)[2:])
    np.testing.assert_allclose(c, a @ b.T, rtol=1e-4, atol=1e-4)
    assert gemm_library.builds == builds + 1 and _variant_entry(fresh_library, variant).read_bytes() != data


def test_variant_names_round_trip_and_foreign_names_are_refused():
    for dtype in ("f32", "f64"):
        for trans_a, trans_b in TRANSPOSES:
            for vbytes in (32, 64):
                variant = GemmVariant(dtype, trans_a, trans_b, vbytes)
                assert GemmVariant.of_symbol(variant.symbol) == variant
    for name in ("ffc_packed_gemm_f16_nn_512", "ffc_packed_gemm_f32_nx_512", "ffc_packed_gemm_f32_nn_128", "sgemm",
                 "ffc_packed_gemm_f32_nn"):
        assert GemmVariant.of_symbol(name) is None
    with pytest.raises(ValueError, match="no packed GEMM variant"):
        gemm_library.address("ffc_packed_gemm_f32_nn_128")


def test_an_avx2_hosts_code_calls_the_256_bit_variant(tmp_path):
    """FFCOMPILE_VECTOR_BITS=256 (an AVX2 host's code, in a child process): a program's packed
    products call the 256-bit variants, whose code uses no 512-bit register, and are right;
    its cache entry is another than the 512-bit one's (the host key differs)."""
    code = """
import numpy as np
import ffcompile as ff
from ffcompile.codegen.llvm import gemm_library, target
from ffcompile.codegen.llvm.packed_gemm import GemmVariant
rng = np.random.default_rng(0)
x, w = rng.standard_normal((300, 290)).astype(np.float32), rng.standard_normal((280, 290)).astype(np.float32)
lowered = ff.compile(lambda x, w: x @ w.T, backend="llvm").lower(x, w)
assert "ffc_packed_gemm_f32_nt_256.slot" in lowered.llvm_ir, "the 256-bit variant"
np.testing.assert_allclose(lowered.program(x, w)[0], x @ w.T, rtol=1e-4, atol=1e-3)
assert "zmm" not in target.assembly(gemm_library.library_module(GemmVariant("f32", False, True, 32)))
print("ok")
"""
    env = {**os.environ, "FFCOMPILE_VECTOR_BITS": "256", "FFCOMPILE_GEMM_ROUTE": "packed",
           CACHE_DIR_VARIABLE: str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
