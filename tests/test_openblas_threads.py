"""SciPy's OpenBLAS stays at one thread once a program calls it (the thread pool owns the
cores), set through OpenBLAS's own function without threadpoolctl; threadpoolctl, which
reads every loaded BLAS's count, is the oracle here. Its GEMMs are reached in the bundled
library without importing SciPy, or through cython_blas: the same results."""
import json
import subprocess
import sys

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import blas, openblas


def _scipy_blas_threads() -> list[int]:
    from threadpoolctl import ThreadpoolController

    return [pool.num_threads for pool in ThreadpoolController().lib_controllers
            if pool.user_api == "blas" and "scipy" in pool.filepath and "numpy" not in pool.filepath]


@pytest.fixture
def scipy_openblas():
    if openblas.bundled_set_threads() is None or openblas.bundled_gemm_address("sgemm") is None:
        pytest.skip("SciPy here bundles no OpenBLAS: cython_blas and threadpoolctl reach its BLAS (the fallbacks)")


@pytest.mark.parametrize("setter", ["bundled", "threadpoolctl"])
def test_the_setter_changes_what_threadpoolctl_reads(scipy_openblas, monkeypatch, setter):
    """OpenBLAS's own function, or threadpoolctl (the fallback for a SciPy without a bundled
    OpenBLAS, forced here)."""
    if setter == "threadpoolctl":
        monkeypatch.setattr(blas, "bundled_set_threads", lambda: None)
    with blas.blas_threads(3):
        assert _scipy_blas_threads() == [3]
        with blas.blas_threads(1):
            assert _scipy_blas_threads() == [1]
        assert _scipy_blas_threads() == [3]


def test_numpy_openblas_is_not_touched(scipy_openblas):
    from threadpoolctl import ThreadpoolController

    def numpy_pools():
        return [p.num_threads for p in ThreadpoolController().lib_controllers if "numpy" in p.filepath]

    before = numpy_pools()
    with blas.blas_threads(1 if before != [1] else 2):
        assert numpy_pools() == before


def test_a_program_calling_blas_leaves_scipy_at_one_thread_without_threadpoolctl(scipy_openblas):
    """In a fresh process (OPENBLAS_NUM_THREADS unset: SciPy's OpenBLAS starts at the core
    count): a GEMM large enough for BLAS, then the counts."""
    script = (
        "import sys, json, numpy as np, ffcompile as ff\n"
        "from ffcompile.codegen.llvm import blas\n"
        "import os; os.environ['FFCOMPILE_GEMM_ROUTE'] = 'blas'\n"  # else the packed GEMM may take it
        "f = ff.compile(lambda a, b: a @ b)\n"
        "a = np.ones((512, 512), np.float32)\n"
        "assert np.allclose(f(a, a), 512.0)\n"
        "assert f.lower(a, a).program.blas == ('sgemm',)\n"
        "loaded = 'threadpoolctl' in sys.modules\n"
        "from threadpoolctl import ThreadpoolController\n"
        "counts = [p.num_threads for p in ThreadpoolController().lib_controllers if p.user_api == 'blas'\n"
        "          and 'scipy' in p.filepath and 'numpy' not in p.filepath]\n"
        "print(json.dumps([loaded, counts]))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    loaded, counts = json.loads(out.stdout.splitlines()[-1])
    assert not loaded and counts == [blas.DEFAULT_BLAS_THREADS]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cython_blas_pointers_compute_what_the_bundled_openblas_does(scipy_openblas, blas_route, monkeypatch, dtype):
    """Both ways to reach SciPy's GEMMs (the bundled library's symbols, or cython_blas's
    capsules for a SciPy without one) give the same bits, against NumPy's product."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 700)).astype(dtype), rng.standard_normal((700, 260)).astype(dtype)

    def product():
        blas.blas_address.cache_clear()
        f = ff.compile(lambda a, b: a @ b, backend="llvm")
        assert f.lower(a, b).program.blas == (blas.BLAS_FUNCTIONS["f32" if dtype == np.float32 else "f64"],)
        return f(a, b)

    bundled = product()
    monkeypatch.setattr(blas, "bundled_gemm_address", lambda name: None)
    through_cython = product()
    monkeypatch.undo()
    blas.blas_address.cache_clear()
    np.testing.assert_array_equal(bundled, through_cython)
    np.testing.assert_allclose(bundled, a @ b, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3)


@pytest.mark.parametrize("variable", [None, "2"])
def test_loading_scipy_openblas_starts_no_worker_unless_the_user_asks(scipy_openblas, variable):
    """A new OpenBLAS worker spins ~0.1 s of a core before it sleeps; ffcompile uses one BLAS
    thread, so it loads SciPy's OpenBLAS with none (OPENBLAS_NUM_THREADS=1 for the load only,
    the process's environment left as it was). A user's own setting is kept (2: one worker)."""
    script = (
        "import os, json, numpy\n"
        "threads = lambda: len(os.listdir('/proc/self/task'))\n"
        "before = threads()\n"
        "from ffcompile.codegen.llvm import openblas\n"
        "assert openblas.bundled_scipy_openblas() is not None\n"
        "print(json.dumps([threads() - before, os.environ.get('OPENBLAS_NUM_THREADS')]))")
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_NUM_THREADS")}
    if variable is not None:
        env["OPENBLAS_NUM_THREADS"] = variable
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    started, left = json.loads(out.stdout.splitlines()[-1])
    assert (started, left) == ((0, None) if variable is None else (1, variable))
