"""The packed-vs-BLAS choice as measured on the host (gemm_calibration.py, calibrate.py).

No test depends on a measured value: the measurement (calibrate.time_routes) is replaced by
fixed seconds wherever the choice is checked; the real one runs once, on the smallest class,
and is only checked to be a time. The disk cache's key holds each GEMM's route and the
packed GEMM's block sizes.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from test_llvm_backend import build, lowered_graph

import ffcompile as ff
from ffcompile import calibrate as calibrate_cli
from ffcompile.codegen.llvm import backend, blas, calibrate, gemm_calibration, packed_gemm, target
from ffcompile.codegen.llvm.gemm_calibration import REPRESENTATIVE, ROUTE_VARIABLE
from ffcompile.ir.symbolic import BatchRange, Sym
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory

SHAPE = (1024, 512, 784)  # mnist's first layer at batch 1024: either route


@pytest.fixture
def measured_routes(monkeypatch, tmp_path):
    """The route left to the measurement, in a cache directory of its own; time_routes replaced:
    set `fake[0]` to the (packed, blas) seconds it returns. Yields the list of shapes measured."""
    monkeypatch.setenv(ROUTE_VARIABLE, "")
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path))
    gemm_calibration.forget()
    measured, fake = [], [(1.0, 2.0)]

    def time_routes(m, n, k, dtype):
        measured.append((m, n, k, dtype))
        return fake[0]

    monkeypatch.setattr(calibrate, "time_routes", time_routes)
    monkeypatch.setattr(calibrate, "time_split_sizes", lambda: {2 ** 18: 1.0, 2 ** 20: 2.0})  # test_split_calibration's
    yield measured, fake
    gemm_calibration.forget()


def product_program(m=SHAPE[0], n=SHAPE[1], k=SHAPE[2]):
    """The executable of x @ y over ones (m x k, k x n), and the two."""
    a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
    return build(lowered_graph(lambda x, y: x @ y, a, b))[0], a, b


@pytest.mark.parametrize("packed_seconds, route", [(1.0, blas.PACKED), (3.0, blas.BLAS)])
def test_a_program_takes_the_route_measured_faster(measured_routes, packed_seconds, route):
    measured, fake = measured_routes
    fake[0] = (packed_seconds, 2.0)
    executable, a, b = product_program()
    assert measured == [(*REPRESENTATIVE[(False, 2)], "f32")]  # the class of 1024x512x784, once
    assert blas.gemm_route(*SHAPE, "f32", False, False) == route
    assert executable.blas == (("sgemm",) if route == blas.BLAS else ())
    np.testing.assert_array_equal(np.asarray(executable(a, b)[0]), np.full(SHAPE[:2], 784.0, np.float32))
    product_program()
    assert len(measured) == 1  # measured once, then the record


def test_the_record_is_kept_on_disk_for_the_next_process(measured_routes, tmp_path):
    measured, _ = measured_routes
    product_program()
    gemm_calibration.forget()  # a new process: only the file is left
    product_program()
    assert len(measured) == 1
    (path,) = tmp_path.glob("gemm-calibration-*.json")
    assert json.loads(path.read_text())["host"] == gemm_calibration.host_key()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other host", "other code", "other format", "bad record",
                                    "format 1 record"])
def test_a_damaged_file_is_ignored_and_measured_again(measured_routes, damage):
    measured, _ = measured_routes
    product_program()
    path = gemm_calibration.calibration_path()
    data = json.loads(path.read_text())
    (key,) = data["records"]
    text = {"garbage": "\x00{not json", "truncated": path.read_text()[:40],
            "other host": json.dumps({**data, "host": "another cpu"}),
            "other code": json.dumps({**data, "code": "an older code generator"}),
            "other format": json.dumps({**data, "format": 0}),
            "bad record": json.dumps({**data, "records": {key: {**data["records"][key], "blas_seconds": "fast"}}}),
            "format 1 record": json.dumps({**data, "records": {key: {
                name: value for name, value in data["records"][key].items() if name != "small_seconds"}}})}
    path.write_text(text[damage])
    gemm_calibration.forget()
    executable, a, b = product_program()
    assert len(measured) == 2
    assert json.loads(path.read_text())["records"][key] == data["records"][key]  # rewritten whole
    np.testing.assert_array_equal(np.asarray(executable(a, b)[0]), np.full(SHAPE[:2], 784.0, np.float32))


def test_with_the_disk_cache_off_records_live_in_the_process(measured_routes, monkeypatch, tmp_path):
    measured, _ = measured_routes
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")
    product_program()
    product_program()
    assert len(measured) == 1 and not list(tmp_path.iterdir())


def test_records_are_per_thread_count_and_vector_width(measured_routes, monkeypatch, threads):
    measured, _ = measured_routes
    threads(1)
    product_program()
    threads(2)
    product_program()
    host = 8 * target.vector_bytes()
    other = 256 if host == 512 else 512
    monkeypatch.setattr(packed_gemm, "vector_bytes", lambda: other // 8)
    product_program()
    assert len(measured) == 3
    keys = json.loads(gemm_calibration.calibration_path().read_text())["records"]
    blas_threads = blas.blas_thread_count()
    assert {key.split(" ", 3)[3] for key in keys} == {
        f"threads=1 blas_threads={blas_threads} vector_bits={host}",
        f"threads=2 blas_threads={blas_threads} vector_bits={host}",
        f"threads=2 blas_threads={blas_threads} vector_bits={other}"}


def test_a_forced_route_measures_nothing(measured_routes, monkeypatch):
    measured, _ = measured_routes
    for route, expected in (("packed", blas.PACKED), ("blas", blas.BLAS)):
        monkeypatch.setenv(ROUTE_VARIABLE, route)
        product_program()
        assert blas.gemm_route(*SHAPE, "f32", False, False) == expected
    assert measured == []
    monkeypatch.setenv(ROUTE_VARIABLE, "fastest")
    with pytest.raises(ValueError, match="FFCOMPILE_GEMM_ROUTE='fastest'"):
        blas.gemm_route(*SHAPE, "f32", False, False)


def test_an_unmeasured_class_keeps_blas(measured_routes):
    """gemm_route alone (no program built, so nothing measured) keeps the BLAS call."""
    assert blas.gemm_route(*SHAPE, "f32", False, False) == blas.BLAS
    assert blas.gemm_route(64, 64, 64, "f32", False, False) == blas.SMALL  # below the range: as before


def test_a_product_with_a_run_time_size_is_measured_at_the_reference_size(measured_routes):
    """A symbolic program's B x 784 @ 784 x 512 runs blocks of the reference batch size
    (max_batch) by the packed GEMM where that size takes it (#18): that size's class is measured."""
    measured, _ = measured_routes
    x, w = np.ones((1024, 784), np.float32), np.ones((784, 512), np.float32)
    symbolic = ff.compile(lambda x, w: x @ w, batch_dim=(0, None), max_batch=1024).lower(x, w).symbolic
    calibrate.calibrate_schedule(fuse(symbolic), BatchRange(1024))
    assert measured == [gemm_calibration.representative(1024, 512, 784) + ("f32",)]


def test_each_representative_is_in_its_own_class():
    for (thin, band), shape in REPRESENTATIVE.items():
        assert gemm_calibration.shape_class(*shape) == (thin, band)
        assert calibrate.either_route(*shape, "f32") and calibrate.either_route(*shape, "f64")


def test_the_real_measurement_times_every_route_that_competes():
    """smallgemm competes in the two lowest bands only (the classes of deep's and mnist's layers), A
    untransposed; BLAS not in smallgemm's own range (at one BLAS thread), where no product calls it."""
    for thin, band in ((True, 0), (True, 1)):
        packed_seconds, blas_seconds, small_seconds = calibrate.time_routes(*REPRESENTATIVE[(thin, band)], "f32")
        assert 0 < packed_seconds < 1 and 0 < small_seconds < 1
        assert blas_seconds is None if band == 0 else 0 < blas_seconds < 1
    assert blas.small_competes(*REPRESENTATIVE[(False, 1)], "f64", False, True)
    assert not blas.small_competes(*REPRESENTATIVE[(True, 1)], "f32", True, False)
    assert not any(blas.small_competes(*shape, "f32", False, False) for (_, band), shape in REPRESENTATIVE.items()
                   if band > 1)


def test_the_lowest_band_times_a_layers_three_products(monkeypatch):
    """In smallgemm's own range a class is timed on a dense layer's three products (forward,
    the input's gradient, the weight's), each route's seconds their sum; above it, the product."""
    built = []

    class Recorded(calibrate.StandaloneGemm):
        def __init__(self, m, n, k, dtype, trans_a, trans_b, route=None):
            built.append((m, n, k, trans_a, trans_b, route))
            super().__init__(m, n, k, dtype, trans_a, trans_b, route=route)

    monkeypatch.setattr(calibrate, "StandaloneGemm", Recorded)
    monkeypatch.setattr(calibrate, "ROUNDS", 1)
    packed_seconds, blas_seconds, small_seconds = calibrate.time_routes(*DEEP_LAYER, "f32")
    layer = {(64, 256, 256, False, False), (64, 256, 256, False, True), (256, 256, 64, True, False)}
    assert {b[:5] for b in built} == layer and {b[5] for b in built} == {"packed", "small"} and len(built) == 3 * 2
    assert packed_seconds > 0 and small_seconds > 0 and blas_seconds is None
    assert set(calibrate.measured_products(DEEP_LAYER)) == layer
    assert all(m * n * k == 64 * 256 * 256 for m, n, k, _, _ in layer)
    assert calibrate.measured_products(MNIST_LAYER) == ((*MNIST_LAYER, False, False),)
    assert calibrate.measured_products((256, 256, 256)) == \
        ((256, 256, 256, False, False), (256, 256, 256, False, True), (256, 256, 256, True, False))
    assert gemm_calibration.shape_class(256, 256, 256) == (True, 0)  # 2^24: smallgemm's range, the lowest band


MNIST_LAYER = (128, 512, 784)  # the second band, above smallgemm's own range
DEEP_LAYER = (64, 256, 256)  # the lowest band, smallgemm's own range


@pytest.mark.parametrize("seconds, route", [((2.0, 3.0, 1.0), blas.SMALL), ((1.0, 3.0, 2.0), blas.PACKED),
                                            ((3.0, 1.0, 2.0), blas.BLAS)])
def test_smallgemm_takes_a_product_of_the_second_band_where_measured_fastest(measured_routes, seconds, route):
    """In the second band smallgemm (split across the pool) is the third contender: a program's
    product takes the fastest of the three; a transposed A never smallgemm's."""
    measured, fake = measured_routes
    fake[0] = seconds
    m, n, k = MNIST_LAYER
    executable, a, b = product_program(m, n, k)
    assert measured == [(*REPRESENTATIVE[(True, 1)], "f32")]
    assert blas.gemm_route(m, n, k, "f32", False, False) == route
    assert blas.gemm_route(m, n, k, "f32", False, True) == route  # B transposed: the same class
    assert blas.gemm_route(m, n, k, "f32", True, False) in (blas.PACKED, blas.BLAS)
    assert executable.blas == (("sgemm",) if route == blas.BLAS else ())
    np.testing.assert_array_equal(np.asarray(executable(a, b)[0]), np.full((m, n), float(k), np.float32))


@pytest.mark.parametrize("seconds, route", [((2.0, 3.0, 1.0), blas.SMALL), ((1.0, 3.0, 2.0), blas.PACKED),
                                            ((3.0, 1.0, 2.0), blas.SMALL)])
def test_a_product_of_smallgemms_range_takes_the_packed_gemm_where_measured_faster(measured_routes, seconds, route):
    """In the lowest band, smallgemm's own range, the packed GEMM where it was measured faster than
    smallgemm (deep's step on a Xeon: 5.85 -> 4.65 ms), in every transpose; BLAS never (it
    loses to both there). Up to SMALL_MEASURED_MIN_WORK, smallgemm unmeasured."""
    measured, fake = measured_routes
    fake[0] = seconds
    m, n, k = DEEP_LAYER
    executable, a, b = product_program(m, n, k)
    assert measured == [(*REPRESENTATIVE[(True, 0)], "f32")]
    for trans_a, trans_b in ((False, False), (False, True), (True, False)):
        assert blas.gemm_route(m, n, k, "f32", trans_a, trans_b) == route
    assert blas.gemm_route(m, n, k, "f32", False, False, measured_small=False) == blas.SMALL  # a run-time product's
    assert blas.gemm_route(64, 128, 256, "f32", False, False) == blas.SMALL  # 2^21: not measured
    assert executable.blas == ()
    np.testing.assert_array_equal(np.asarray(executable(a, b)[0]), np.full((m, n), float(k), np.float32))


def test_the_small_route_forced_takes_smallgemm_where_it_competes(monkeypatch):
    monkeypatch.setenv(ROUTE_VARIABLE, "small")
    assert blas.gemm_route(*MNIST_LAYER, "f32", False, False) == blas.SMALL
    assert blas.gemm_route(*SHAPE, "f32", False, False) == blas.BLAS  # a higher band: BLAS
    assert blas.gemm_route(*MNIST_LAYER, "f32", True, False) == blas.BLAS  # A transposed: BLAS
    assert blas.gemm_route(*DEEP_LAYER, "f32", True, False) == blas.SMALL  # smallgemm's own range


def test_the_cache_key_holds_the_routes_and_block_sizes(monkeypatch):
    a, b = np.ones((300, 290), np.float32), np.ones((290, 280), np.float32)
    schedule = fuse(lowered_graph(lambda x, y: x @ y, a, b))
    plan = plan_memory(schedule)

    def description(route):
        monkeypatch.setenv(ROUTE_VARIABLE, route)
        return backend.program_description(schedule, plan, {}, False)

    packed, forced_blas, small = description("packed"), description("blas"), description("small")
    assert packed != forced_blas and "gemms blas" in forced_blas
    assert "gemms smallgemm" in small and small not in (packed, forced_blas)  # the second band: smallgemm competes
    monkeypatch.setattr(packed_gemm, "cache_bytes", {1: 2048, 2: 16384}.get)
    assert description("packed") not in (packed, forced_blas)


def test_the_command_builds_the_host_runtime_and_prints_every_class(measured_routes, capsys, monkeypatch):
    """The host's packed GEMM functions built (and cached) first: none the second time."""
    from ffcompile.codegen.llvm import gemm_library

    monkeypatch.setattr(gemm_library, "_loaded", {})
    measured, _ = measured_routes
    calibrate_cli.main(["--dtype", "f64"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(measured) == len(REPRESENTATIVE) and len(lines) == 5 + len(REPRESENTATIVE)
    assert lines[-1] == "# smallgemm split: chunks of at least 2^18 multiply-adds (split_chain.py's chain, " \
                        "2^18: 1000000.0 us, 2^20: 2000000.0 us)"
    assert lines[2] == "# host runtime: 8 packed GEMM functions built (the rest of 8 loaded)"
    assert lines[4].startswith("f64 thin band0: 64x256x256 |") and lines[4].endswith("| 2.00x | packed")
    monkeypatch.setattr(gemm_library, "_loaded", {})  # a new process: loaded from the disk cache
    calibrate_cli.main(["--dtype", "f64"])
    assert capsys.readouterr().out.splitlines()[2] == "# host runtime: 0 packed GEMM functions built (the rest of 8 loaded)"
    assert len(measured) == len(REPRESENTATIVE)  # measured before: printed from the records
    calibrate_cli.main(["--dtype", "f64", "--force"])
    assert len(measured) == 2 * len(REPRESENTATIVE)


def test_avx2_code_on_any_host():
    """FFCOMPILE_VECTOR_BITS=256: the features lose AVX-512, so every kernel is an AVX2 host's."""
    code = ("from ffcompile.codegen.llvm import target\n"
            "assert target.vector_bytes() == 32 and '+avx512f' not in target.host_key()\n"
            "asm = target.assembly(open(0).read())\n"
            "assert 'zmm' not in asm, 'a 512-bit register'\nprint('ok')")
    loop = """
define void @scale(float* noalias %x, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %p = getelementptr inbounds float, float* %x, i64 %i
  %v = load float, float* %p
  %w = fmul float %v, 2.0
  store float %w, float* %p
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""
    env = {**__import__("os").environ, "FFCOMPILE_VECTOR_BITS": "256"}
    out = subprocess.run([sys.executable, "-c", code], input=loop, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    env["FFCOMPILE_VECTOR_BITS"] = "512"
    out = subprocess.run([sys.executable, "-c", code], input=loop, capture_output=True, text=True, env=env)
    assert "only 256" in out.stderr


def test_a_symbolic_programs_key_holds_its_reference_size_route(monkeypatch):
    """A symbolic product runs blocks of the reference batch size by the packed GEMM where
    that size takes it (blas._blas_or_packed): a route measured per host, so the key holds it."""
    x, w = np.ones((1024, 784), np.float32), np.ones((784, 512), np.float32)
    symbolic = ff.compile(lambda x, w: x @ w, batch_dim=(0, None), max_batch=1024).lower(x, w).symbolic
    schedule = fuse(symbolic)
    plan = plan_memory(schedule, batch=BatchRange(1024))

    def description(route):
        monkeypatch.setenv(ROUTE_VARIABLE, route)
        return backend.program_description(schedule, plan, {}, False)

    packed, forced_blas = description("packed"), description("blas")
    assert "@packed" in packed and "@blas" in forced_blas


def test_a_symbolic_programs_key_holds_the_packed_or_blas_choice_when_smallgemm_was_fastest(measured_routes):
    """A symbolic product never runs smallgemm past its range (blas._reference_blocks asks without
    the measured smallgemm), so its key holds the packed-or-BLAS choice of the reference size even
    where smallgemm was measured fastest there (mnist's layer at 128: the second band). Keyed by
    the route with smallgemm, two records that differ in packed against BLAS shared one key while
    the programs differed."""
    _, fake = measured_routes
    max_batch = 128
    x, w = np.ones((max_batch, 784), np.float32), np.ones((784, 512), np.float32)
    symbolic = ff.compile(lambda x, w: x @ w, batch_dim=(0, None), max_batch=max_batch).lower(x, w).symbolic
    schedule = fuse(symbolic)
    plan = plan_memory(schedule, batch=BatchRange(max_batch))
    descriptions, packed = [], []
    for seconds in ((2.0, 3.0, 1.0), (3.0, 2.0, 1.0)):  # smallgemm fastest; packed, then BLAS, second
        fake[0] = seconds
        calibrate.calibrate_class(max_batch, 512, 784, "f32", force=True)
        descriptions.append(backend.program_description(schedule, plan, {}, False))
        packed.append(blas.runtime_takes_packed(Sym("B"), 512, 784, "f32", False, False, max_batch))
    assert packed == [True, False]
    assert descriptions[0] != descriptions[1]
