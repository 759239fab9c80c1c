"""The graph stages' artifacts in the disk cache (stage_cache.py): a signature compiled before
runs none of decompose, simplify, fuse, donation or the memory plan, counted (never timed);
a damaged, foreign or mismatched entry is refused and the stages run again."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import pipeline, stage_cache, zoo
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE, default_cache
from ffcompile.codegen.registry import get_backend

GRAPH_STAGES = ["decompose", "simplify", "fuse", "donation", "memory"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path))
    return tmp_path


@pytest.fixture
def stage_calls(monkeypatch):
    """How often each graph stage's pass ran (the stage list reads these names when built)."""
    calls = dict.fromkeys(["decompose", "simplify", "fuse", "plan_memory"], 0)
    for name in calls:
        def counted(*args, _name=name, _run=getattr(pipeline, name)):
            calls[_name] += 1
            return _run(*args)
        monkeypatch.setattr(pipeline, name, counted)
    return calls


def mnist_step(backend="llvm"):
    """A fresh compiled step (no in-memory cache) run once, and lowered (the call's line is in
    the traced graph's locations: two signatures, two entries); its Lowered and results."""
    workload = zoo.get("mnist")
    params, x, y = workload.example_inputs(0, batch_size=16)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.1), backend=backend)
    state = step.init(params)
    loss = step(params, state, x, y)
    lowered = step.lower(params, state, x, y)
    lowered.program  # code generation, or the program's own cache entry
    return lowered, (float(loss), [np.copy(a) for a in ff.tree.tree_leaves(params)])


def stage_entries(directory):
    return sorted((directory / "stages").glob("*.o.ffc"))


def test_a_hit_runs_no_graph_stage_and_computes_the_same(cache_dir, stage_calls):
    cold, cold_results = mnist_step()
    assert stage_calls["simplify"] > 0 and stage_calls["fuse"] > 0 and stage_calls["plan_memory"] > 0
    entries = stage_entries(cache_dir)
    assert len(entries) == 2
    assert [r.name for r in cold.records if not r.cached] == GRAPH_STAGES + ["lower"]
    for name in stage_calls:
        stage_calls[name] = 0
    warm, warm_results = mnist_step()
    assert stage_calls == dict.fromkeys(stage_calls, 0), stage_calls
    assert stage_entries(cache_dir) == entries
    assert [r.name for r in warm.records] == GRAPH_STAGES + ["lower"]
    assert [r.name for r in warm.records if r.cached] == GRAPH_STAGES
    assert [(r.size_before, r.size_after) for r in warm.records] == [(r.size_before, r.size_after) for r in cold.records]
    assert warm.program.from_cache and warm.cache_seconds is not None
    assert str(warm.schedule) == str(cold.schedule) and warm.memory.arena_bytes == cold.memory.arena_bytes
    assert warm.optimized_ir == cold.optimized_ir
    stats = str(warm.stats())
    assert "(cache)" in stats and stats.count(" cached") == len(GRAPH_STAGES)
    assert warm_results[0] == cold_results[0]
    for a, b in zip(warm_results[1], cold_results[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_another_graph_or_donation_or_remat_misses(cache_dir):
    f = lambda w, x: ff.tanh(x @ w).sum()  # noqa: E731
    args = (np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    ff.compile(f).lower(*args)
    assert len(stage_entries(cache_dir)) == 1
    assert ff.compile(f).lower(*args).cache_seconds is not None
    assert ff.compile(f).lower(np.ones((3, 5), np.float32), np.ones((4, 3), np.float32)).cache_seconds is None
    assert ff.compile(f, remat="store_all").lower(*args).cache_seconds is None
    assert ff.compile(lambda w, x: ff.tanh(x @ w).sum() * 2.0).lower(*args).cache_seconds is None
    assert len(stage_entries(cache_dir)) == 4


def test_dumps_and_the_numpy_backend_run_the_stages(cache_dir, stage_calls):
    f = lambda x: ff.exp(x).sum()  # noqa: E731
    x = np.ones(4, np.float32)
    ff.compile(f).lower(x)
    assert ff.compile(f, dump_after="fuse").lower(x).cache_seconds is None
    assert ff.compile(f, backend="numpy").lower(x).cache_seconds is None
    assert stage_calls["fuse"] == 3


def _rewrite(path, metadata, data):
    """Store `data` as the entry at path, with a correct checksum and key (as its writer could)."""
    stage_cache.cache_of(get_backend("llvm")).store(path.name.removesuffix(".o.ffc"), metadata, data)


def _damaged(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class Marker:
    """A class outside the artifacts' modules: unpickling it would construct it."""
    made = 0

    def __reduce__(self):
        return (Marker, ())

    def __init__(self):
        Marker.made += 1


@pytest.mark.parametrize("spoil", ["damaged", "foreign class", "other stages", "other inputs", "not a pickle"])
def test_a_spoiled_entry_is_refused_and_the_stages_run_again(cache_dir, stage_calls, spoil):
    f = lambda w, x: ff.relu(x @ w).sum()  # noqa: E731
    args = (np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    cold = ff.compile(f).lower(*args)
    names = [r.name for r in cold.records]
    artifacts = {name: cold._run.artifacts[name] for name in names}
    [path] = stage_entries(cache_dir)
    if spoil == "damaged":
        _damaged(path)
    elif spoil == "foreign class":
        _rewrite(path, {"stages": names}, pickle.dumps((Marker(), list(cold.records))))
    elif spoil == "other stages":
        _rewrite(path, {"stages": names[:-1]}, pickle.dumps((artifacts, list(cold.records))))
    elif spoil == "other inputs":
        other = ff.compile(f).lower(np.ones((3, 7), np.float32), args[1])
        swapped = {name: other._run.artifacts[name] for name in names}
        _rewrite(path, {"stages": names}, pickle.dumps((swapped, list(other.records))))
    else:
        _rewrite(path, {"stages": names}, b"\x80\x05not a pickle")
    Marker.made = 0
    calls_before = stage_calls["fuse"]
    again = ff.compile(f)
    lowered = again.lower(*args)
    assert lowered.cache_seconds is None and Marker.made == 0
    assert stage_calls["fuse"] == calls_before + 1
    assert str(lowered.schedule) == str(cold.schedule)
    np.testing.assert_allclose(again(*args), np.maximum(args[1] @ args[0], 0).sum())
    assert ff.compile(f).lower(*args).cache_seconds is not None  # rewritten whole


def test_an_untrusted_cache_directory_keeps_no_stages(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(shared))
    with pytest.warns(RuntimeWarning, match="not using the cache directory"):
        ff.compile(lambda x: ff.exp(x).sum()).lower(np.ones(3, np.float32))
    assert not stage_entries(shared)
    assert default_cache() is not None


def test_a_hit_of_a_remat_plan_imports_no_solver(tmp_path):
    """The MILP remat plan of the mnist step, compiled in one interpreter, then found in the disk
    cache by a fresh one: that one solves nothing, so it never imports SciPy's optimizer (HiGHS),
    and runs no graph stage; counted, not timed."""
    script = ("import sys, json\nimport ffcompile as ff\nfrom ffcompile import zoo\n"
              "w = zoo.get('mnist'); params, x, y = w.example_inputs(0, batch_size=16)\n"
              "value_and_grad = ff.compile(ff.value_and_grad(w.loss), remat='milp', backend='llvm')\n"
              "lowered = value_and_grad.lower(params, x, y)\n"
              "print(json.dumps([sorted(sys.modules), [r.name for r in lowered.records if not r.cached],"
              " lowered.plan is not None]))")
    env = {**os.environ, CACHE_DIR_VARIABLE: str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1]) for _ in range(2)]
    (cold_modules, cold_stages, cold_plan), (warm_modules, warm_stages, warm_plan) = runs
    assert "scipy.optimize" in cold_modules and "remat" in cold_stages and cold_plan
    assert "scipy.optimize" not in warm_modules and warm_stages == [] and warm_plan


def test_the_key_covers_the_backends_hooks():
    """The LLVM backend's GEMM scratch (codegen/llvm/lower.py) shapes the memory plan: an edit
    there must not load artifacts planned by the old code."""
    from ffcompile.stage_cache import stage_source_paths

    names = {(p.parent.name, p.name) for p in stage_source_paths()}
    assert {("llvm", "lower.py"), ("llvm", "accumulate.py"), ("passes", "memory.py"), ("ir", "ops.py")} <= names
