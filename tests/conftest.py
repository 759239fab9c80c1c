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
def blas_route(monkeypatch, tmp_path):
    """GEMMs above the native range call BLAS on any host, never the packed GEMM (which
    test_llvm_packed_gemm tests), in a cache of their own: the key does not know a forced route."""
    from ffcompile.codegen.llvm import blas

    monkeypatch.setattr(blas, "packed_beats_blas", lambda *args: False)
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path / "blas-route-cache"))


@pytest.fixture(autouse=True, scope="session")
def private_compile_cache(tmp_path_factory):
    """Compiled code goes to a fresh cache per run, not the user's ~/.cache: the suite
    exercises cold compiles, and a run never depends on what an earlier one left."""
    saved = os.environ.get("FFCOMPILE_CACHE_DIR")
    os.environ["FFCOMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("ffcompile-cache"))
    yield
    if saved is None:
        del os.environ["FFCOMPILE_CACHE_DIR"]
    else:
        os.environ["FFCOMPILE_CACHE_DIR"] = saved
