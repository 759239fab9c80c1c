"""`import ffcompile` stays cheap (issue 19: <= 0.15 s): the heavy libraries a backend or a
reference rule needs load on first use, not at import. Counted, never timed: a fresh
interpreter imports ffcompile and reports which modules it loaded."""
import json
import subprocess
import sys

import pytest

# Each costs tens of milliseconds or more to import (python -X importtime, 2026-12-04):
# scipy.special ~100 ms (it pulls numpy.testing and numpy.f2py), llvmlite.binding ~20 ms.
HEAVY = ("scipy", "scipy.special", "llvmlite", "llvmlite.binding", "numpy.testing", "numpy.f2py",
         "torch", "jax", "onnx", "onnxruntime")


def _modules_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_loads_no_heavy_library():
    loaded = _modules_after("import ffcompile")
    assert not loaded & set(HEAVY), f"import ffcompile loaded {sorted(loaded & set(HEAVY))}"


@pytest.mark.parametrize("backend, needs", [("llvm", "llvmlite.binding"), ("numpy", "scipy.special")])
def test_a_backend_loads_what_it_needs_on_first_use(backend, needs):
    """The lazy registry: the first compile with a backend imports it, and it works."""
    loaded = _modules_after(
        "import numpy as np, ffcompile as ff\n"
        f"f = ff.compile(lambda x: ff.erf(x) * 2.0, backend={backend!r})\n"
        "assert np.allclose(f(np.zeros(3, np.float32)), 0.0)")
    assert needs in loaded


# What a program found in the disk cache has no need of: SciPy's package (its bundled
# OpenBLAS is loaded directly: openblas.py), threadpoolctl (OpenBLAS's own set-threads
# function), and what those pull in.
NOT_ON_A_CACHE_HIT = ("scipy", "scipy.linalg", "scipy.linalg.cython_blas", "threadpoolctl", "subprocess")


def test_a_cache_hit_of_a_blas_program_imports_neither_scipy_nor_threadpoolctl(tmp_path, monkeypatch):
    """The mnist step (BLAS GEMMs, parallel kernels) compiled in one interpreter, then
    loaded from the disk cache in a fresh one, whose imports are counted."""
    from ffcompile.codegen.llvm import openblas

    if openblas.bundled_scipy_openblas() is None:
        pytest.skip("SciPy here bundles no OpenBLAS: its BLAS is reached through scipy.linalg.cython_blas")
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path))
    # The BLAS route forced: on a 512-bit host the packed GEMM (packed_gemm.py) takes these products.
    step = ("import ffcompile as ff\nfrom ffcompile import zoo\n"
            "import os\nos.environ['FFCOMPILE_GEMM_ROUTE'] = 'blas'\n"
            "w = zoo.get('mnist'); params, x, y = w.example_inputs(0)\n"
            "step = ff.compile_train_step(w.loss, ff.optim.SGD(0.01), backend='llvm')\n"
            "state = step.init(params)\nprogram = step.lower(params, state, x, y).program\n"
            "assert program.blas and program.from_cache == {hit}\n"
            "step(params, state, x, y)")
    _modules_after(step.format(hit=False))
    loaded = _modules_after(step.format(hit=True))
    assert not loaded & set(NOT_ON_A_CACHE_HIT), f"a cache hit imported {sorted(loaded & set(NOT_ON_A_CACHE_HIT))}"
