"""The disk cache of object code: a program seen before loads its machine code instead of compiling
it; a damaged entry is detected, compiled again and rewritten; another key never hits."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.llvm import backend, blas, target
from ffcompile.codegen.llvm import cache as cache_module
from ffcompile.codegen.llvm.cache import (
    CACHE_DIR_VARIABLE,
    MAGIC,
    ObjectCache,
    default_cache,
)
from ffcompile.passes.memory import plan_memory
from ffcompile.tree import tree_flatten


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path))
    return tmp_path


def xor_step():
    """Build the xor training step's executable (fresh: no in-memory cache across calls)."""
    workload = zoo.get("xor")
    params, x, y = workload.example_inputs(0)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.5), backend="llvm")
    state = step.init(params)
    lowered = step.lower(params, state, x, y)
    return lowered.program, ((params, state, step.hyperparameters(state)), x, y)


def run(executable, inputs):
    """One step on copies: the step writes its new parameters and state over the donated ones."""
    trained, x, y = inputs
    return executable(*[np.copy(a) for a in tree_flatten(trained)[0]], x, y)


def entries(directory):
    return sorted(directory.glob("*.o.ffc"))


def test_second_build_loads_the_object_code_and_computes_the_same(cache_dir):
    cold, inputs = xor_step()
    assert not cold.from_cache
    [entry] = entries(cache_dir)
    warm, _ = xor_step()
    assert warm.from_cache and entries(cache_dir) == [entry]
    for a, b in zip(run(cold, inputs), run(warm, inputs), strict=True):
        np.testing.assert_array_equal(a, b)


def _truncate(data):
    return data[:len(data) // 2]


def _flip_payload_byte(data):
    corrupt = bytearray(data)
    corrupt[-100] ^= 0xFF
    return bytes(corrupt)


def _wrong_length(data):
    return data + b"\0"


@pytest.mark.parametrize("damage", [_truncate, _flip_payload_byte, _wrong_length,
                                    lambda data: b"", lambda data: MAGIC,
                                    lambda data: b"\x7fELF" + data[4:]],
                         ids=["truncated", "flipped", "too-long", "empty", "header-only", "bad-magic"])
def test_a_damaged_entry_is_rebuilt_not_loaded(cache_dir, damage):
    reference, inputs = xor_step()
    [entry] = entries(cache_dir)
    intact = entry.read_bytes()
    entry.write_bytes(damage(intact))
    rebuilt, _ = xor_step()
    assert not rebuilt.from_cache
    assert entry.read_bytes() == intact  # rewritten whole
    for a, b in zip(run(reference, inputs), run(rebuilt, inputs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_key_covers_description_host_code_generator_and_llvmlite(monkeypatch):
    """(ffcompile's own version needs no part: the code generator's source is hashed.)"""
    cache = ObjectCache("unused")
    base = cache.key("schedule @f {}", target.host_key())
    assert base == cache.key("schedule @f {}", target.host_key())
    assert base != cache.key("schedule @f { }", target.host_key())
    assert base != cache.key("schedule @f {}", target.host_key() + ",-avx2")
    monkeypatch.setattr(cache_module, "code_generator_fingerprint", lambda: "edited")
    assert base != cache.key("schedule @f {}", target.host_key())
    monkeypatch.undo()
    monkeypatch.setattr("llvmlite.__version__", "0.0.0")
    assert base != cache.key("schedule @f {}", target.host_key())


def test_a_hit_builds_no_ir_and_shows_the_same_ir_on_demand(cache_dir, monkeypatch):
    cold, inputs = xor_step()

    def no_ir(*args):
        raise AssertionError("a cache hit built the IR")

    monkeypatch.setattr(backend, "lower", no_ir)
    warm, _ = xor_step()
    assert warm.from_cache
    for a, b in zip(run(cold, inputs), run(warm, inputs), strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    assert warm.llvm_ir == cold.llvm_ir


def test_the_description_covers_what_the_ir_is_built_from(monkeypatch):
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(0)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.5), backend="llvm")
    schedule = step.lower(params, step.init(params), x, y).schedule
    plan = plan_memory(schedule)
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", 1)
    base = backend.program_description(schedule, plan, {}, False)
    assert base == backend.program_description(schedule, plan, {}, False)
    assert base != backend.program_description(schedule, plan, {schedule.graph.outputs[1]: 0}, False)
    assert base != backend.program_description(schedule, plan, {}, True)
    monkeypatch.setattr(blas, "_blas_threads", 7)  # another BLAS thread count: another GEMM size limit
    assert base != backend.program_description(schedule, plan, {}, False)


def test_different_programs_do_not_share_an_entry(cache_dir):
    xor_step()
    f = ff.compile(lambda x: ff.tanh(x) + 1.0, backend="llvm")
    x = np.linspace(-2, 2, 32, dtype=np.float32)
    np.testing.assert_allclose(f(x), np.tanh(x) + 1.0, rtol=3e-5, atol=1e-5)
    assert len(entries(cache_dir)) == 2


def test_an_unwritable_cache_directory_only_disables_caching(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(blocker / "cache"))
    executable, inputs = xor_step()
    assert not executable.from_cache and np.isfinite(run(executable, inputs)[0])


def test_empty_variable_turns_the_cache_off(monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, "")
    assert default_cache() is None
    executable, inputs = xor_step()
    assert not executable.from_cache and np.isfinite(run(executable, inputs)[0])


def test_a_program_calling_the_packed_gemm_hits(cache_dir):
    """Its object defines the slots of the packed GEMM functions it calls besides the entry and
    BLAS slots (the mnist step's large GEMMs, the packed route forced in the suite): the entry
    records them, the check expects them, and the loaded program's slots are filled."""
    workload = zoo.get("mnist")
    params, x, y = workload.example_inputs(0)

    def build():
        step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), backend="llvm")
        state = step.init(params)
        return step.lower(params, state, x, y).program, ((params, state, step.hyperparameters(state)), x, y)

    cold, inputs = build()
    assert not cold.from_cache and "ffc_packed_gemm_f32_" in cold.llvm_ir
    warm, _ = build()
    assert warm.from_cache
    for a, b in zip(run(cold, inputs), run(warm, inputs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_program_splitting_a_loop_across_the_thread_pool_hits(cache_dir):
    """Its object defines the pool's slot besides the entry and BLAS slots (a large elementwise
    loop splits): the entry records that, and the check expects it."""
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)

    def build():
        return ff.compile(lambda v: ff.tanh(v) * 2.0, backend="llvm").lower(x).program

    cold = build()
    assert not cold.from_cache and "ffc_parallel_for" in cold.llvm_ir
    warm = build()
    assert warm.from_cache
    np.testing.assert_array_equal(cold(x)[0], warm(x)[0])


RUNTIME_MODULES = {  # (module, what breaks building its IR, what loads it and checks it)
    "thread pool": ("threadpool", "_PoolModule = None", "m.set_num_threads(2)\nassert m.running_workers() == 1"),
    "fast call": ("fastcall", "_IR = None", "jit, _, _ = m._object_entry()\nassert jit.address(m.OBJECT_ENTRY)"),
}


@pytest.mark.parametrize("name", RUNTIME_MODULES)
def test_a_runtime_module_loads_from_the_cache_in_a_new_process(cache_dir, name):
    """The runtime's own modules (the pool: IR, O3, codegen, more than the rest of a warm
    first call; the fast call: a second call's) are compiled by the first process and
    loaded by the next: there building them would fail."""
    import subprocess
    import sys

    module, breaks, loads = RUNTIME_MODULES[name]
    start = f"import ffcompile.codegen.llvm.{module} as m\n{{}}\n{loads}\n"
    for prelude in ("", f"m.{breaks}  # building the IR would raise"):
        subprocess.run([sys.executable, "-c", start.format(prelude)], check=True)
        assert len(entries(cache_dir)) == 1
