"""The native thread pool (codegen/llvm/threadpool.py): its settings, and that it never hangs
or crashes: Python threads calling parallel programs at once, the thread count changed
under them, a forked child, interpreter exit with workers spinning. Those run in a
subprocess under a timeout, so a hang fails the test instead of stopping the suite."""
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import threadpool

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture
def restore_threads():
    before = ff.get_num_threads()
    yield
    ff.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", threadpool.MAX_THREADS + 1])
def test_set_num_threads_refuses_what_is_not_a_thread_count(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        ff.set_num_threads(bad)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_set_num_threads_starts_that_many_minus_the_caller(threads, restore_threads):
    ff.set_num_threads(threads)
    assert ff.get_num_threads() == threads
    assert threadpool.running_workers() == threads - 1


def test_thread_count_from_the_environment_and_its_errors():
    code = """
        import numpy as np, ffcompile as ff
        from ffcompile.codegen.llvm import threadpool
        print(ff.get_num_threads(), threadpool.running_workers())
        x, w = np.ones((1, 784), np.float32), np.ones((784, 512), np.float32)
        assert (ff.compile(lambda x, w: x @ w)(x, w) == 784).all()
        print(threadpool.running_workers())
    """
    result = run_python(code, {threadpool.THREADS_VARIABLE: "3"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "0", "2"]  # started by the first parallel program
    result = run_python(code, {threadpool.THREADS_VARIABLE: "many"})
    assert result.returncode != 0 and f"{threadpool.THREADS_VARIABLE}='many'" in result.stderr


def test_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv(threadpool.THREADS_VARIABLE, raising=False)
    assert threadpool.default_threads() == len(os.sched_getaffinity(0))


def test_concurrent_callers_thread_count_changes_fork_and_exit_neither_hang_nor_crash():
    code = """
        import os, threading
        import numpy as np, ffcompile as ff

        rng = np.random.default_rng(0)
        w = rng.standard_normal((784, 512)).astype(np.float32)
        xs = [rng.standard_normal((m, 784)).astype(np.float32) for m in (1, 3, 8)]
        fns = [ff.compile(lambda x, w: x @ w) for _ in xs]
        expected = [np.asarray(f(x, w)).copy() for f, x in zip(fns, xs)]
        errors = []

        def caller(k):
            for _ in range(300):
                if not np.array_equal(np.asarray(fns[k](xs[k], w)), expected[k]):
                    errors.append(k)

        threads = [threading.Thread(target=caller, args=(k % 3,)) for k in range(6)]
        for t in threads:
            t.start()
        for n in (1, 3, 2, 4, 2):  # changed while the callers run
            ff.set_num_threads(n)
        for t in threads:
            t.join()
        assert not errors, errors

        pid = os.fork()
        if pid == 0:  # the child has none of the parent's workers
            ok = np.array_equal(np.asarray(fns[0](xs[0], w)), expected[0])
            ff.set_num_threads(2)
            ok = ok and np.array_equal(np.asarray(fns[2](xs[2], w)), expected[2])
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, status
        fns[1](xs[1], w)  # workers spinning as the interpreter exits
        print("done")
    """
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr



def fork_while(background: str, child: str, forks: int = 3, setup: str = "") -> subprocess.CompletedProcess:
    """Fork `forks` times while another thread loops over `background`; each child runs
    `child` (which sets ok) and exits 0 if ok. f, a, b, bound and expected are defined."""
    code = f"""
        import os, threading, time, warnings
        import numpy as np, ffcompile as ff

        warnings.simplefilter("ignore")  # fork() of a multi-threaded process: the point here
        {setup}
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
        f = ff.compile(lambda a, b: ff.relu(a @ b))
        expected = np.asarray(f(a, b)).copy()
        bound = f.bind(a, b)
        stop, n = False, 0

        def loop():
            global n
            while not stop:
                {background}
                n += 1

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.2)
        for _ in range({forks}):
            pid = os.fork()
            if pid == 0:
                {child}
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.WEXITSTATUS(status) == 0, status
        stop = True
        thread.join()
        print("done")
    """
    return run_python(code, timeout=60)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_child_forked_while_another_thread_runs_the_program_can_call_it(threads):
    """The parent thread inside the call held the executable's lock at the fork; it does not
    exist in the child, which hung on that lock (the ordinary call and a bound call alike)."""
    result = fork_while("f(a, b); bound()",
                        "ok = np.array_equal(np.asarray(f(a, b)), expected) and "
                        "np.array_equal(np.asarray(bound()), expected)", setup=f"ff.set_num_threads({threads})")
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr


def test_a_child_forked_while_another_thread_sets_the_thread_count_can_set_it():
    """The parent thread inside set_num_threads held its lock at the fork: the child's
    set_num_threads hung on it."""
    result = fork_while("ff.set_num_threads(1 + n % 3)",
                        "ff.set_num_threads(2); ok = np.array_equal(np.asarray(f(a, b)), expected)", forks=5)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr


@pytest.mark.parametrize("n, threads, chunks", [(3, 2, 2), (5, 2, 4), (12, 2, 4), (5, 3, 3), (2, 3, 2), (7, 3, 6), (40, 3, 6), (1, 2, 1)])
def test_chunks_are_a_whole_number_per_thread_where_there_are_more_than_threads(restore_threads, n, threads,
                                                                                chunks):
    """[0, n) in grains of 1 is cut into min(n, CHUNKS_PER_THREAD x threads) chunks, rounded down
    to a multiple of the thread count when above it (3 chunks on 2 threads took as long as 4)."""
    import ctypes
    import threading

    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
    seen, lock = [], threading.Lock()

    def body(ctx, start, end):
        with lock:
            seen.append((start, end))

    ff.set_num_threads(threads)
    parallel_for = ctypes.CFUNCTYPE(None, body_type, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
        threadpool.parallel_for_address())
    callback = body_type(body)
    parallel_for(callback, None, n, 1)
    assert sorted(seen) == [(n * i // chunks, n * (i + 1) // chunks) for i in range(chunks)]
    assert threadpool.chunk_count(n, 1, threads) == chunks  # the Python mirror packed_gemm balances


def _pool_function_ir(name: str) -> str:
    module = str(threadpool._PoolModule().m)
    start = module.index(f'@"{name}"(')
    return module[start:module.index("\n}\n", start)]


def test_a_new_job_takes_the_ticket_before_its_fields_are_written():
    """A worker that read the last job's ticket, then this job's chunk count, must fail to claim:
    the ticket changes first (stored after the fields, the claim succeeded on them, a chunk was
    counted twice and the caller waited forever)."""
    stored = [line.split("@")[-1].split()[0] for line in _pool_function_ir("ffc_pool_parallel_for").splitlines()
              if "store atomic" in line]
    assert stored.index('"pool.ticket"') < min(stored.index(f'"pool.{name}"') for name in ("n", "chunks", "finished"))


def test_a_spinning_thread_yields_the_core_after_a_while():
    """The worker waiting for work and the caller waiting for chunks call sched_yield once they
    have spun YIELD_AFTER_CYCLES: with another process on one of 2 cores, both share the other."""
    for name in ("pool.worker", "ffc_pool_parallel_for"):
        assert "call i32 @\"sched_yield\"()" in _pool_function_ir(name), name


def test_worker_cpus_leave_the_first_to_the_caller_wrap_and_need_every_cpu_taken(monkeypatch):
    monkeypatch.delenv(threadpool.PIN_VARIABLE, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 2, 7})
    assert threadpool.worker_cpus(2) == [4, 7]
    assert threadpool.worker_cpus(4) == [4, 7, 2, 4]
    assert threadpool.worker_cpus(1) == []  # fewer threads than CPUs: every process would pin alike
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert threadpool.worker_cpus(2) == []  # one CPU: nothing to pin apart
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv(threadpool.PIN_VARIABLE, "0")
    assert threadpool.worker_cpus(1) == []


needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 CPUs")

_AFFINITIES = """
    import ctypes, os, numpy as np, ffcompile as ff
    libc = ctypes.CDLL(None)
    def tasks():
        return set(os.listdir("/proc/self/task"))
    cpus = sorted(os.sched_getaffinity(0))
    before = tasks()
    ff.set_num_threads(len(cpus))
    workers = tasks() - before
    print(sorted(sorted(os.sched_getaffinity(int(t))) for t in workers), sorted(os.sched_getaffinity(0)) == cpus)
    f = ff.compile(lambda x, w: x @ w)
    x, w = np.ones((256, 784), np.float32), np.ones((784, 512), np.float32)
    f(x, w)  # compiled now: a compile's own calls would move the caller back and forth
    os.sched_setaffinity(0, {cpus[1]})  # onto the worker's CPU, then free again: it stays there
    os.sched_setaffinity(0, cpus)
    assert libc.sched_getcpu() == cpus[1]
    assert (f(x, w) == 784).all()
    print(libc.sched_getcpu() != cpus[1], sorted(os.sched_getaffinity(0)) == cpus)
    os.sched_setaffinity(0, {cpus[1]})  # pinned there by the user: it stays, and computes
    assert (f(x, w) == 784).all() and os.sched_getaffinity(0) == {cpus[1]}
    print("ok")
"""


@needs_two_cpus
def test_workers_are_pinned_and_a_caller_on_a_workers_cpu_moves_off_it():
    """The worker on the second CPU, the caller's mask untouched; a caller moved onto the
    worker's CPU is off it after a parallel call, its mask as before; one the user pinned
    there stays."""
    result = run_python(_AFFINITIES)
    assert result.returncode == 0, result.stderr
    cpus = sorted(os.sched_getaffinity(0))
    assert result.stdout.split("\n")[:3] == [f"{[[cpu] for cpu in cpus[1:]]} True", "True True", "ok"]


@needs_two_cpus
def test_unpinned_workers_float_and_no_mask_changes():
    """FFCOMPILE_PIN_THREADS=0: the worker may run on every CPU, and no caller's mask changes
    (where the scheduler puts a floating thread is its business, not checked)."""
    result = run_python(_AFFINITIES, {threadpool.PIN_VARIABLE: "0"})
    assert result.returncode == 0, result.stderr
    cpus = sorted(os.sched_getaffinity(0))
    first, second, last = result.stdout.split("\n")[:3]
    assert (first, second.split()[1], last) == (f"{[cpus] * (len(cpus) - 1)} True", "True", "ok")


_WORKER_STACKS = """
import ctypes
import ffcompile as ff
from ffcompile.codegen.llvm import threadpool
ff.set_num_threads(3)
threadpool._load()
libc = ctypes.CDLL(None)
handles = (ctypes.c_uint64 * threadpool.MAX_THREADS).from_address(threadpool._functions["ffc_pool_handles"]())
for worker in range(2):
    attributes, size = ctypes.create_string_buffer(64), ctypes.c_size_t()
    assert libc.pthread_getattr_np(ctypes.c_uint64(handles[worker]), attributes) == 0
    libc.pthread_attr_getstacksize(attributes, ctypes.byref(size))
    print(size.value)
"""


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_STACK)[1] != resource.RLIM_INFINITY,
                    reason="the stack's hard limit is not unlimited: `ulimit -s unlimited` cannot be tried")
def test_workers_have_their_own_stack_size_whatever_the_limit():
    """Under `ulimit -s unlimited` glibc gives a new thread 2 MiB of stack, and a packed GEMM
    chunk whose malloc fails packs on its stack (up to packed_gemm.STACK_BYTES, 2 MiB: a
    segfault). The pool's workers are created with WORKER_STACK_BYTES."""
    # the child lifts its limit and execs the check: glibc reads the limit at a process's start
    result = run_python(f"""
        import os, resource, sys
        resource.setrlimit(resource.RLIMIT_STACK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        os.execv(sys.executable, [sys.executable, "-c", {_WORKER_STACKS!r}])
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(threadpool.WORKER_STACK_BYTES)] * 2

