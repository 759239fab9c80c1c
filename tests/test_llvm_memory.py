"""Releasing a compiled function releases its native code: the engine goes with it, and the
process's memory comes back near where it started (MCJIT used to keep each module's
optimized IR for the engine's lifetime: ~0.9 MB a signature stayed after release)."""
import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np

import ffcompile as ff
from ffcompile.codegen.llvm.backend import LLVMExecutable

ROOT = Path(__file__).resolve().parents[1]


def matmul_tanh(x, w):
    return ff.tanh(x @ w).sum()


def live_executables() -> int:
    gc.collect()
    return sum(type(o) is LLVMExecutable for o in gc.get_objects())  # isinstance wakes lazy modules


def test_releasing_a_compiled_function_releases_its_executables_and_engines(monkeypatch):
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")
    before = live_executables()
    cf = ff.compile(matmul_tanh, backend="llvm")
    for k in (3, 4, 5):
        cf(np.ones((2, k), np.float32), np.ones((k, 3), np.float32))
    lowered = cf.lower(np.ones((2, 6), np.float32), np.ones((6, 3), np.float32))
    engine = weakref.ref(lowered.program._jit.engine)
    assert live_executables() >= before + 4
    del cf, lowered
    assert live_executables() == before and engine() is None  # nothing module-level keeps them


SCRIPT = textwrap.dedent("""
    import gc, os
    import numpy as np, ffcompile as ff

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def matmul_tanh(x, w):
        return ff.tanh(x @ w).sum()

    def compile_signatures(count, first):
        cf = ff.compile(matmul_tanh, backend="llvm")
        for k in range(first, first + count):
            cf(np.ones((4, k), np.float32), np.ones((k, 3), np.float32))
        return cf

    compile_signatures(20, 1)  # imports, LLVM's setup, the allocator's first growth
    gc.collect()
    start = rss_mb()
    cf = compile_signatures(100, 100)
    del cf
    gc.collect()
    print(rss_mb() - start)
""")


def test_compiling_and_dropping_100_signatures_returns_memory_near_its_start():
    """In a fresh process (the suite's own allocations would blur the figure): 100 signatures
    retained 87 MB after release before, 18 MB now (what is left: the allocator's free lists
    and LLVM's own per-compile state)."""
    env = {**os.environ, "FFCOMPILE_CACHE_DIR": "", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    retained = float(result.stdout.split()[-1])
    assert retained < 45, f"100 compiled and released signatures left {retained:.1f} MB"
