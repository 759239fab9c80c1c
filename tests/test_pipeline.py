"""The staged pipeline (pipeline.py) and the backend registry (codegen/registry.py)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.backend import BackendError
from ffcompile.codegen.registry import BACKENDS, get_backend
from ffcompile.passes.memory import MemoryPlan
from ffcompile.passes.schedule import Schedule
from ffcompile.pipeline import Donation, Rematerialized

PACKAGE = Path(ff.__file__).parent
STAGES = ["decompose", "simplify", "fuse", "donation", "memory", "lower"]


def mlp_loss(w1, w2, x):
    return (ff.tanh(x @ w1) @ w2).sum()


def mlp_args():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32),
            rng.normal(size=(4, 5)).astype(np.float32))


@pytest.mark.usefixtures("backend")
def test_every_stage_runs_in_order_and_is_recorded():
    cf = ff.compile(ff.value_and_grad(mlp_loss))
    cf(*mlp_args())
    records = cf.stats().stages
    assert [r.name for r in records] == STAGES
    assert all(r.seconds >= 0 for r in records)
    stats = str(cf.stats())
    for name in STAGES:
        assert re.search(rf"^{name}\s", stats, re.M), stats


@pytest.mark.parametrize("stage", ["input", *STAGES])
def test_dump_after_any_stage(backend, stage):
    lowered = ff.compile(mlp_loss, dump_after=stage).lower(*mlp_args())
    (dump,) = lowered.dumps
    assert dump.stage == stage and dump.file_name.endswith(f"-{stage}.ir")
    if dump.parses:
        assert str(ff.parse_ir(dump.text)) == dump.text
    artifact = {"fuse": lowered.schedule, "memory": lowered.memory, "donation": lowered.donation}.get(stage)
    if artifact is not None:
        assert dump.text == str(artifact)
    if stage == "lower":
        assert dump.text == lowered.program.text
        assert (lowered.program.text == lowered.source) == (backend == "numpy")


def test_stage_artifacts_have_their_types():
    lowered = ff.compile(mlp_loss).lower(*mlp_args())
    assert isinstance(lowered.schedule, Schedule)
    assert isinstance(lowered.donation, Donation) and lowered.donation.donated == {}
    assert isinstance(lowered.memory, MemoryPlan) and lowered.memory.schedule is lowered.schedule


def test_code_generation_waits_until_the_program_is_needed(tmp_path):
    lowered = ff.compile(mlp_loss).lower(*mlp_args())
    assert [r.name for r in lowered.records] == STAGES[:-1]
    lowered.compile()
    assert [r.name for r in lowered.records] == STAGES


def test_dumps_are_written_numbered_to_dump_dir(tmp_path):
    ff.compile(mlp_loss, dump_after="all", dump_dir=str(tmp_path)).lower(*mlp_args())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{k:02d}-{name}.ir" for k, name in
                                                          enumerate(["input", *STAGES])]


def test_remat_is_a_stage_whose_artifact_is_the_plan_and_the_graph():
    lowered = ff.compile(ff.value_and_grad(mlp_loss), remat="sqrt", dump_after="remat").lower(*mlp_args())
    (dump,) = lowered.dumps
    assert dump.text.startswith("// remat @") and str(ff.parse_ir(dump.text)) in dump.text
    assert lowered.plan.strategy == "sqrt"
    assert [r.name for r in lowered.records][:3] == ["decompose", "simplify", "remat"]


def test_unknown_stage_names_say_which_exist():
    with pytest.raises(ValueError, match=r"unknown stages \['fusion'\].*'fuse'"):
        ff.compile(mlp_loss, dump_after="fusion").lower(*mlp_args())


def test_optimize_false_runs_the_reference_interpreter_on_any_backend():
    for name in BACKENDS:
        lowered = ff.compile(mlp_loss, backend=name, optimize=False).lower(*mlp_args())
        assert [r.name for r in lowered.records] == ["decompose", "lower"]
        assert lowered.schedule is None and lowered.memory is None
        with pytest.raises(ValueError, match="optimize=False"):
            lowered.export("unused")
        got = lowered.compile()(*mlp_args())
        assert np.asarray(got) == np.asarray(ff.compile(mlp_loss, backend="numpy")(*mlp_args()))


def test_unknown_backend_is_refused_at_compile():
    with pytest.raises(BackendError, match="unknown backend 'cuda'.*'llvm', 'numpy'"):
        ff.compile(mlp_loss, backend="cuda")
    assert get_backend(None) is BACKENDS["llvm"]


def test_the_numpy_backend_refuses_profiling_and_export_clearly(tmp_path):
    lowered = ff.compile(mlp_loss, backend="numpy").lower(*mlp_args())
    with pytest.raises(BackendError, match="backend='llvm'"):
        lowered.profile(*mlp_args())
    with pytest.raises(BackendError, match="backend='llvm'"):
        lowered.export(tmp_path)


def test_no_module_outside_the_registry_tests_a_backend_name():
    pattern = re.compile(r"""(==|!=)\s*["'](llvm|numpy)["']|["'](llvm|numpy)["']\s*(==|!=)|\.native\b""")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
