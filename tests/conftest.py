"""Shared test settings: hypothesis profile sized for a 2-core CI machine, and the backend matrix."""
import os

import pytest
from hypothesis import HealthCheck, settings

from ffcompile.codegen import registry

# function_scoped_fixture: the backend fixture is meant to hold for every example of a test.
settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(params=list(registry.BACKENDS))
def backend(request, monkeypatch):
    """Run the test once per backend: every ff.compile / ff.grad / compile_train_step
    that does not name a backend compiles for this one (the test id shows which).

    Both backends are held to each test's own tolerance. The LLVM backend differs
    from NumPy by its polynomial exp/log/tanh/erf (<= 2-4 ulp), FMA contraction and
    sums in another order, yet on the parametrized float64 tests it used at most 20%
    of any tolerance (gelu's tanh form: 8.9e-16 absolute against atol 1e-15 +
    rtol 1e-12). Direct LLVM-vs-NumPy comparisons use the per-dtype table
    test_llvm_backend.TOLERANCE."""
    monkeypatch.setattr(registry, "DEFAULT_BACKEND", request.param)
    return request.param


@pytest.fixture
def blas_route(monkeypatch):
    """GEMMs above the native range call BLAS on any host, never the packed GEMM (which
    test_llvm_packed_gemm tests); the disk cache's key holds the route."""
    monkeypatch.setenv("FFCOMPILE_GEMM_ROUTE", "blas")


@pytest.fixture
def small_route(monkeypatch):
    """Products of smallgemm's range through smallgemm on any host, never the packed GEMM this
    host may have measured faster (blas.SMALL_MEASURED_MIN_WORK), nor the one the suite forces."""
    monkeypatch.setenv("FFCOMPILE_GEMM_ROUTE", "small")


@pytest.fixture
def threads():
    """ff.set_num_threads, the count restored after the test."""
    import ffcompile as ff

    saved = ff.get_num_threads()
    yield ff.set_num_threads
    ff.set_num_threads(saved)


@pytest.fixture
def packed_route(monkeypatch):
    """Every GEMM above smallgemm's range through the packed kernel, the disk cache off (every
    product emitted). Yields the (m, n, k) of each product emitted so, and whether it fused
    an epilogue."""
    from ffcompile.codegen.llvm import blas, packed_gemm

    monkeypatch.setenv("FFCOMPILE_GEMM_ROUTE", "packed")
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")
    emitted = []

    def emit(b, pa, pb, pc, m, n, k, *rest, epilogue=None, **blocks):
        emitted.append((m, n, k, epilogue is not None))
        packed_gemm.emit_packed_gemm(b, pa, pb, pc, m, n, k, *rest, epilogue=epilogue, **blocks)

    monkeypatch.setattr(blas, "emit_packed_gemm", emit)
    return emitted


@pytest.fixture(autouse=True, scope="session")
def private_compile_cache(tmp_path_factory):
    """Compiled code goes to a fresh cache per run, not the user's ~/.cache: the suite
    exercises cold compiles, and a run never depends on what an earlier one left. GEMMs above
    the native range take the packed GEMM on every host (FFCOMPILE_GEMM_ROUTE), never a
    route measured on this one (test_gemm_calibration.py tests the measured choice)."""
    saved = {name: os.environ.get(name) for name in ("FFCOMPILE_CACHE_DIR", "FFCOMPILE_GEMM_ROUTE")}
    os.environ["FFCOMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("ffcompile-cache"))
    os.environ["FFCOMPILE_GEMM_ROUTE"] = "packed"
    yield
    for name, value in saved.items():
        if value is None:
            del os.environ[name]
        else:
            os.environ[name] = value
