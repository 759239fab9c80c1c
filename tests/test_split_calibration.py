"""The chunk size of smallgemm's products split across the pool, as measured on the host
(smallgemm_split.split_min_work, calibrate.time_split_sizes, split_chain.py).

No test depends on a measured value: the measurement is replaced by fixed seconds wherever the
choice is checked; the real one runs once and is only checked to be a time per size.
"""
import json

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import calibrate, gemm_calibration, smallgemm_split
from ffcompile.codegen.llvm.gemm_calibration import ROUTE_VARIABLE
from ffcompile.codegen.llvm.smallgemm_split import SPLIT_MIN_WORK_CHOICES, split_axis, split_min_work
from ffcompile.codegen.llvm.split_chain import SplitChain

SMALL, LARGE = SPLIT_MIN_WORK_CHOICES
DIGITS_LAYER = (64, 128, 128)  # split at the small chunk size only


@pytest.fixture
def measured_split(monkeypatch, tmp_path, threads):
    """The chunk size left to the measurement, in a cache directory of its own, on 2 threads;
    time_split_sizes replaced: set `fake[0]` to the seconds it returns. Yields the calls made."""
    monkeypatch.setenv(ROUTE_VARIABLE, "")
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path))
    gemm_calibration.forget()
    threads(2)
    calls, fake = [], [{SMALL: 1.0, LARGE: 2.0}]

    def time_split_sizes(choices=SPLIT_MIN_WORK_CHOICES):
        calls.append(choices)
        return dict(fake[0])

    monkeypatch.setattr(calibrate, "time_split_sizes", time_split_sizes)
    monkeypatch.setattr(calibrate, "time_routes", lambda m, n, k, dtype: (2.0, None, 1.0))  # smallgemm's products
    yield calls, fake
    gemm_calibration.forget()


def product(m, n, k):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n)))
    return ff.compile(lambda x, y: x @ y, backend="llvm"), a, b


@pytest.mark.parametrize("seconds, size", [({SMALL: 2.0, LARGE: 1.0}, LARGE), ({SMALL: 1.0, LARGE: 2.0}, SMALL)])
def test_a_programs_small_products_split_at_the_size_measured_fastest(measured_split, seconds, size):
    calls, fake = measured_split
    fake[0] = seconds
    assert split_axis(*DIGITS_LAYER, False, False, 4, SMALL) is False  # by panels
    assert split_axis(*DIGITS_LAYER, False, False, 4, LARGE) is None  # whole
    fn, a, b = product(*DIGITS_LAYER)
    lowered = fn.lower(a, b)
    np.testing.assert_allclose(fn(a, b), a @ b, rtol=1e-5, atol=1e-4)
    assert calls == [SPLIT_MIN_WORK_CHOICES] and split_min_work() == size
    assert ("ffc_parallel_for" in lowered.llvm_ir) == (size == SMALL)
    product(*DIGITS_LAYER)[0](a, b)
    assert len(calls) == 1  # recorded: measured once
    gemm_calibration.forget()  # a new process reads the record from the file
    assert split_min_work() == size and len(calls) == 1


def test_the_chunk_size_is_measured_only_where_it_decides_a_cut(measured_split, threads):
    calls, _ = measured_split
    fn, a, b = product(64, 256, 512)  # 2^23: split at either size
    assert "ffc_parallel_for" in fn.lower(a, b).llvm_ir and split_axis(64, 256, 512, False, False, 4, LARGE) is not None
    threads(1)
    fn, a, b = product(*DIGITS_LAYER)  # one thread: no split at all
    fn(a, b)
    assert calls == []


def test_a_forced_route_takes_the_first_size_unmeasured(measured_split, monkeypatch):
    calls, fake = measured_split
    fake[0] = {SMALL: 2.0, LARGE: 1.0}
    monkeypatch.setenv(ROUTE_VARIABLE, "packed")
    fn, a, b = product(*DIGITS_LAYER)
    assert "ffc_parallel_for" in fn.lower(a, b).llvm_ir and split_min_work() == SMALL and calls == []


def test_the_cache_key_holds_the_chunk_size(measured_split):
    calls, fake = measured_split
    from ffcompile.codegen.llvm.lower import gemm_routes

    fn, a, b = product(*DIGITS_LAYER)
    schedule = fn.lower(a, b).schedule
    fake[0] = {SMALL: 2.0, LARGE: 1.0}
    calibrate.calibrate_schedule(schedule)
    assert gemm_routes(schedule) == [f"smallgemm/{LARGE}"]


@pytest.mark.parametrize("record", [{"split_seconds": {}}, {"split_seconds": {"x": 1.0}}, {"split_seconds": {"²": 1.0}},
                                    {"split_seconds": {str(SMALL): -1.0}}, {"split_seconds": 3},
                                    {"shape": [64, 128, 128], "packed_seconds": 1.0, "blas_seconds": 1.0,
                                     "small_seconds": None}])
def test_a_damaged_record_is_measured_again(measured_split, record):
    """And a class's record under the split's key, or the split's under a class's, is ignored
    (a class's route read from a split record had no seconds to compare)."""
    calls, _ = measured_split
    path = gemm_calibration.calibration_path()
    from ffcompile.codegen.llvm.cache import code_generator_fingerprint
    from ffcompile.codegen.llvm.packed_gemm import route_key
    from ffcompile.codegen.llvm.target import host_key

    class_key = route_key(64, 256, 256, 4, 1)
    path.write_text(json.dumps({"format": gemm_calibration.FORMAT, "host": host_key(),
                                "code": code_generator_fingerprint(),
                                "records": {gemm_calibration.split_key(): record,
                                            class_key: {"split_seconds": {str(SMALL): 1.0}}}}))
    gemm_calibration.forget()
    assert gemm_calibration.measured(gemm_calibration.split_key()) is None
    assert gemm_calibration.measured(class_key) is None and gemm_calibration.chosen_route(class_key) is None
    calibrate.calibrate_split()
    assert len(calls) == 1


def test_the_chain_computes_a_layers_products_the_same_at_every_size(threads):
    """The measured chain is the products it says (against NumPy), and the split changes no bit."""
    threads(2)
    chains = [SplitChain(size) for size in SPLIT_MIN_WORK_CHOICES]
    x, w1, w2 = (chains[0].arrays[name].copy() for name in ("x", "w1", "w2"))
    for chain in chains:
        chain()
    h = x.astype(np.float64) @ w1
    y = h @ w2
    g = y @ w2.T
    for name, value in {"h": h, "y": y, "g": g}.items():
        np.testing.assert_allclose(chains[0].arrays[name], value, rtol=1e-4, atol=1e-5)
    # the updates, ~1e-6 on weights of ~0.1: compared as the change they made
    for name, before, gradient in (("w2", w2, h.T @ g), ("w1", w1, x.T @ g)):
        np.testing.assert_allclose(chains[0].arrays[name] - before, -1e-6 * gradient, rtol=0.02, atol=2e-8)
    for name in chains[0].arrays:
        assert np.array_equal(chains[0].arrays[name], chains[1].arrays[name])


def test_the_real_measurement_is_a_time_per_size():
    seconds = calibrate.time_split_sizes()
    assert set(seconds) == set(SPLIT_MIN_WORK_CHOICES) and all(0 < s < 0.01 for s in seconds.values())
    assert smallgemm_split.SPLIT_MIN_WORK_CHOICES[0] == 2 ** 18  # the default, unmeasured
