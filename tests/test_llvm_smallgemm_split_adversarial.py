"""smallgemm's split products (smallgemm_split.py) and the thread pool under them, adversarially:
odd and prime sizes drawn by hypothesis against NumPy at 1 to 4 threads (the same bits), C full of
NaN before an unscaled product (its first write must not read C), at the host's vector width and
at 256 bits in a child; several Python threads calling split products at once while the thread
count changes; and more threads than cores on one core (a spinning, yielding pool must still
finish). The concurrent and one-core cases run in a subprocess under a timeout: a hang fails."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_threadpool import ROOT, run_python

import ffcompile as ff
from ffcompile.codegen.llvm import blas
from ffcompile.codegen.llvm.smallgemm_split import split_axis
from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm
from ffcompile.codegen.llvm.target import VECTOR_BITS_VARIABLE, vector_bytes

PRIMES = [2, 3, 5, 7, 11, 13, 31, 37, 61, 67, 97, 101, 127, 131, 151, 173, 193, 197, 199]
SIZES = st.one_of(st.sampled_from(PRIMES), st.integers(1, 300))
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
pytestmark = pytest.mark.usefixtures("small_route")  # sizes past 128^3: the packed GEMM where measured faster


@pytest.fixture
def restore_threads():
    before = ff.get_num_threads()
    yield
    ff.set_num_threads(before)


@settings(max_examples=30, deadline=None)
@given(m=SIZES, n=SIZES, k=SIZES, trans_a=st.booleans(), trans_b=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), scaled=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_split_products_match_numpy_with_the_same_bits_at_1_to_4_threads(restore_threads, m, n, k, trans_a, trans_b,
                                                                          dtype, scaled, seed):
    name = "f32" if dtype == np.float32 else "f64"
    assume(blas.gemm_route(m, n, k, name, trans_a, trans_b) == blas.SMALL)
    assume(split_axis(m, n, k, trans_a, trans_b, np.dtype(dtype).itemsize) is not None)  # across the pool
    gemm = StandaloneGemm(m, n, k, name, trans_a, trans_b, scaled=scaled)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype) if scaled else np.full((m, n), np.nan, dtype)
    alpha, beta = (0.5, -2.0) if scaled else (1.0, 0.0)
    results = []
    for threads in (1, 2, 3, 4):
        ff.set_num_threads(threads)
        c = c0.copy()
        gemm(a, b, c, alpha, beta)
        results.append(c)
    assert all(np.array_equal(r, results[0]) for r in results[1:]), "the bits depend on the thread count"
    op_a, op_b = (a.T if trans_a else a).astype(np.float64), (b.T if trans_b else b).astype(np.float64)
    exact = alpha * op_a @ op_b + (beta * c0 if scaled else 0.0)
    bound = RTOL[dtype] * (abs(alpha) * np.abs(op_a) @ np.abs(op_b) + (abs(beta * c0) if scaled else 0.0)) + 1e-6
    assert (np.abs(results[0] - exact) <= bound).all()  # NaN (C read by an unscaled product) fails too


SPLIT_CALLERS = """
    import threading
    import numpy as np, ffcompile as ff

    rng = np.random.default_rng(0)
    layer = lambda x, w, b: ff.tanh(x @ w + b)
    shapes = [(64, 256, 256), (128, 10, 512), (61, 250, 255)]  # panels; rows; edge panels
    fns, args, expected = [], [], []
    for m, n, k in shapes:
        x, w, b = rng.standard_normal((m, k)), rng.standard_normal((k, n)) / 16, rng.standard_normal(n)
        args.append([v.astype(np.float32) for v in (x, w, b)])
        fns.append(ff.compile(layer))
        expected.append(np.asarray(fns[-1](*args[-1])).copy())
    errors = []

    def caller(j):  # two callers per program, each program its own
        for _ in range(400):
            if not np.array_equal(np.asarray(fns[j](*args[j])), expected[j]):
                errors.append(j)

    callers = [threading.Thread(target=caller, args=(j % 3,)) for j in range(6)]
    for t in callers:
        t.start()
    for count in (1, 3, 2, 4, 2, 1, 2):  # changed while the callers run
        ff.set_num_threads(count)
    for t in callers:
        t.join()
    assert not errors, errors
    print("done")
"""


def test_split_products_from_several_python_threads_while_the_thread_count_changes():
    result = run_python(SPLIT_CALLERS)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity to pin to one core")
def test_more_threads_than_cores_on_one_core_finish():
    """4 threads pinned to one core: the workers and the caller spin (yielding after ~5 us), then
    sleep; each call must still finish, with the bits of one thread."""
    code = """
        import os
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        import numpy as np, ffcompile as ff
        from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm

        gemm = StandaloneGemm(64, 256, 256, "f32", False, False)
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((64, 256)).astype(np.float32), rng.standard_normal((256, 256)).astype(np.float32)
        ff.set_num_threads(1)
        one, c = np.empty((64, 256), np.float32), np.empty((64, 256), np.float32)
        gemm(a, b, one, 1.0, 0.0)
        ff.set_num_threads(4)
        for _ in range(500):
            gemm(a, b, c, 1.0, 0.0)
        assert np.array_equal(c, one)
        print("done")
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]


@pytest.mark.skipif(os.environ.get(VECTOR_BITS_VARIABLE) == "256" or vector_bytes() == 32,
                    reason="the host's own width is 256 bits: the property above ran at it")
def test_the_property_at_256_bits_in_a_child():
    env = {**os.environ, VECTOR_BITS_VARIABLE: "256"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                          "-k", "match_numpy"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
