"""The benchmark harness runs end to end, and its contenders compute the same step.

No timing is asserted: only that the table, CSV and plot are produced and that
every installed contender's loss, outputs and updated parameters agree with
ffcompile's. torch.compile is left out unless FFCOMPILE_SLOW_TESTS is set:
compiling even xor's step takes 10-25 s cold on 2 cores; `python -m
ffcompile.bench` runs it (and checks its agreement in the Δ column).
"""
import csv
import importlib.util
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import nn, zoo
from ffcompile.bench import harness
from ffcompile.bench.contenders import CONTENDERS, Contender, Problem
from ffcompile.bench.numpy_mlp import MLPSpec
from ffcompile.tree import tree_map

FAST = [c for c in CONTENDERS if c.name != "torch.compile"]
INSTALLED = [c for c in FAST if all(importlib.util.find_spec(m) for m in c.requires)]
RTOL = 1e-4
MODES_OF = {c.name: c.modes for c in CONTENDERS}


def test_harness_runs_xor_and_every_contender_agrees(tmp_path, capsys):
    out_csv, out_png = tmp_path / "xor.csv", tmp_path / "xor.png"
    code = harness.main(["--model", "xor", "--steps", "6", "--rounds", "3", "--warmup", "1", "--settle", "0.01",
                     "--contenders", ",".join(c.name for c in FAST),
                     "--csv", str(out_csv), "--plot", str(out_png)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| model | mode | contender | median ms |" in table and "threads:" in table
    assert "host during the timed rounds" in table and "xor/train others " in table
    rows = list(csv.DictReader(out_csv.open()))
    timed = [r for r in rows if r["status"] == "ok"]
    assert all(0 <= float(r["host_others"]) <= 1 and "/" in r["host_round_trip_ns"] for r in timed)
    assert {(r["mode"], r["contender"]) for r in rows} == {
        (mode, name) for mode in harness.MODES for name in [c.name for c in FAST] + ["BLAS floor"]}
    for row in rows:
        installed = row["contender"] in {c.name for c in INSTALLED} | {"BLAS floor"}
        runs_mode = row["contender"] == "BLAS floor" or row["mode"] in MODES_OF[row["contender"]]
        expected = "not installed" if not installed else "ok" if runs_mode else "unsupported"
        assert row["status"].split(":")[0] == expected, row
        assert f"| xor | {row['mode']} | {row['contender']} |" in table
        if row["status"] == "ok":
            assert float(row["min_ms"]) <= float(row["median_ms"])
    for mode in harness.MODES:
        ran = [r for r in rows if r["mode"] == mode and r["status"] == "ok" and r["contender"] != "BLAS floor"]
        names = {r["contender"] for r in ran}
        reference_name = "ffcompile-llvm" if "ffcompile-llvm" in names else "ffcompile-numpy"
        reference = next(r for r in ran if r["contender"] == reference_name)
        assert reference["ratio_to_reference"] == "1"
        for r in ran:
            np.testing.assert_allclose(float(r["first_value"]), float(reference["first_value"]), rtol=RTOL)
            assert float(r["deviation_from_reference"]) < RTOL, r
    assert out_png.stat().st_size > 0


def test_the_bound_step_is_a_default_contender_after_ffcompile_llvm():
    names = [c.name for c in CONTENDERS]
    assert names.index("ffcompile-bound") == names.index("ffcompile-llvm") + 1
    assert "ffcompile-bound" in {c.name for c in FAST}  # so every test below runs it


def _gelu_workload():
    """Covers the activations and loss the zoo's small models do not: GELU (tanh), linear output, MSE."""
    def sample(rng, n):
        return rng.standard_normal((n, 12)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32)

    return zoo.Workload("gelu", "12-16-3 GELU MLP", nn.mlp([12, 16, 3], lambda: nn.GELU("tanh")),
                        nn.mse, 8, sample)


WORKLOADS = {"xor": lambda: zoo.get("xor"), "digits": lambda: zoo.get("digits"), "gelu": _gelu_workload}
SLOW = pytest.mark.skipif(not os.environ.get("FFCOMPILE_SLOW_TESTS"),
                          reason="torch.compile takes 10-25 s to compile cold on 2 cores; set "
                                 "FFCOMPILE_SLOW_TESTS=1 (the full harness run checks it in its Δ column)")


@pytest.mark.parametrize("contender", [*(c.name for c in FAST if "train" in c.modes),
                                       pytest.param("torch.compile", marks=SLOW)])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_contenders_take_the_same_training_steps(workload, contender):
    contender = next(c for c in CONTENDERS if c.name == contender)
    for module in contender.requires:
        pytest.importorskip(module, reason=f"{contender.name} is an optional peer")
    workload = WORKLOADS[workload]()
    params, x, y = workload.example_inputs()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), backend="numpy")
    expected = tree_map(np.copy, params)
    state = step.init(expected)
    losses = [float(step(expected, state, x, y)) for _ in range(3)]
    runner = contender.prepare(Problem(workload, "train", params, x, y, 0.01, 1))
    np.testing.assert_allclose([float(np.asarray(runner.run())) for _ in range(3)], losses, rtol=RTOL)
    for (w, b), (ew, eb) in zip(runner.layers(), MLPSpec.layers(expected), strict=True):
        np.testing.assert_allclose(w, ew, rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(b, eb, rtol=RTOL, atol=1e-6)
    runner.reset()
    np.testing.assert_allclose(float(np.asarray(runner.run())), losses[0], rtol=RTOL)
    # The contender trained its own copy: the workload's initial parameters are untouched.
    np.testing.assert_array_equal(MLPSpec.layers(params)[0][0], MLPSpec.layers(workload.example_inputs()[0])[0][0])


def test_a_diverging_step_is_flagged():
    workload = _gelu_workload()
    huge = zoo.Workload("huge", "targets whose squares overflow float32", workload.model, nn.mse, 8,
                        lambda rng, n: (workload.sample(rng, n)[0], np.full((n, 3), 1e20, np.float32)))
    hand = next(c for c in CONTENDERS if c.name == "numpy-hand")
    with np.errstate(over="ignore", invalid="ignore"):
        cells = harness.run_cell(huge, "train", [hand], harness.Options(steps=2, rounds=1, warmup=0, settle=0))
    assert cells[0].diverged and "non-finite" in harness.markdown(cells)
    assert not harness.run_cell(workload, "train", [hand], harness.Options(steps=2, rounds=1, warmup=0, settle=0))[0].diverged


def test_missing_and_unsupported_contenders_are_rows_not_failures():
    ffcompile_numpy = next(c for c in CONTENDERS if c.name == "ffcompile-numpy")
    absent = Contender("absent", ffcompile_numpy.prepare, requires=("no_such_module_for_ffcompile",))
    hand = next(c for c in CONTENDERS if c.name == "numpy-hand")
    options = harness.Options(steps=2, rounds=1, warmup=0, batch=4, settle=0)
    cells = {c.contender: c for c in harness.run_cell("two_tower", "train", [ffcompile_numpy, hand, absent],
                                                      options)}
    # ffcompile trains the two-input DAG: its loss takes the inputs as one tuple x.
    assert cells["ffcompile-numpy"].ok and np.isfinite(cells["ffcompile-numpy"].value)
    assert cells["absent"].status == "not installed"
    assert cells["numpy-hand"].status.startswith("unsupported: two_tower is not a Sequential")
    assert cells["BLAS floor"].status.startswith("unsupported")
    table = harness.markdown(list(cells.values()))
    assert "| two_tower | train | absent | not installed |" in table


@pytest.mark.parametrize("module, prog", [("benchmarks.mlp", "python -m benchmarks.mlp"),
                                          ("ffcompile.bench", "python -m ffcompile.bench")])
def test_entry_points_run_the_harness(module, prog, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [prog, "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: {prog} ") and "--contenders" in help_text and "--cold-compile" in help_text


def test_import_ffcompile_leaves_the_harness_and_its_peers_unimported():
    heavy = ["ffcompile.bench", "torch", "jax", "matplotlib"]
    code = f"import sys, ffcompile; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_latency_benchmark_prints_its_tables(capsys):
    """benchmarks/latency.py end to end on xor, one fresh interpreter per measurement."""
    from benchmarks import latency

    assert latency.main(["--models", "xor", "--repeats", "1", "--calls", "200"]) == 0
    out = capsys.readouterr().out
    assert "import numpy + ffcompile" in out and "load average before" in out
    # first on host, cold (the host's calibration and runtime modules kept), from cache, setup; walls
    assert re.search(r"^\| xor \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+, \d+, \d+ \| [\d.]+, [\d.]+, [\d.]+ \| "
                     r"[\d.]+, [\d.]+, [\d.]+ \|$", out, re.M)
    assert re.search(r"^\| step \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \| [\d.]+x \|$", out, re.M)


def test_compile_profile_prints_stages_phases_and_functions(capsys):
    """benchmarks/compile_profile.py on xor: the stage table with code generation's phases, and
    the costliest functions of its module (each compiled alone); the cache setting is restored."""
    from benchmarks import compile_profile

    before = os.environ.get("FFCOMPILE_CACHE_DIR")
    assert compile_profile.main(["--models", "xor", "--top", "2"]) == 0
    assert os.environ.get("FFCOMPILE_CACHE_DIR") == before
    out = capsys.readouterr().out
    for phase in ("build IR", "parse", "O3", "machine code", "load"):
        assert re.search(rf"^  {phase} +[\d.]+$", out, re.M), phase
    assert len(re.findall(r"^\| kernel\d+\.\w+ \| \d+ \| [\d.]+ \| [\d.]+ \|$", out, re.M)) == 2


def test_hvp_benchmark_agrees_with_jax_and_prints_ratios(capsys):
    """benchmarks/hvp_vs_jax.py: both HVPs agree before anything is timed; no timing asserted."""
    pytest.importorskip("jax", reason="the HVP benchmark's peer is JAX (pip install jax)")
    from benchmarks import hvp_vs_jax

    result = hvp_vs_jax.main(["--model", "digits", "--batch", "16", "--steps", "2", "--rounds", "2",
                              "--warmup", "1"])
    assert result["deviation"] < 1e-4
    assert set(result["medians"]) == {"ffcompile hvp", "jax hvp", "ffcompile grad", "jax grad"}
    out = capsys.readouterr().out
    assert "ratio ffcompile / JAX: hvp" in out and "hvp/grad" in out


def test_symbolic_batch_benchmark_counts_traces_and_programs(capsys):
    from benchmarks import symbolic_batch

    assert symbolic_batch.main(["--backend", "numpy", "--models", "digits", "--steps", "1", "--rounds", "1",
                                "--epoch", "70"]) == 0
    out = capsys.readouterr().out
    assert "| digits | 64 |" in out and "symbolic / fixed" in out
    assert "| per size | 2 | 2 |" in out and "| batch_dim=0 | 1 | 2 |" in out


def test_step_batches_prints_a_line_per_batch(capsys):
    """benchmarks.step_batches (the bimodal-step diagnosis): a median, the CPU/wall ratio and
    each CPU's busy jiffies per batch."""
    from benchmarks import step_batches

    step_batches.main(["--model", "xor", "--batches", "2", "--steps", "3", "--pause", "0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# xor:") and len(lines) == 3
    for line in lines[1:]:
        median, ratio, busy = line.split(" | ")
        assert float(median) > 0 and float(ratio) >= 0 and busy.startswith("[")
