"""What else ran on the host while a benchmark was timed, and how far apart its first two
CPUs are: the CPU time of other processes and the hypervisor's steal, each as a share of all
the CPUs' time over the window (Linux's /proc/stat against this process's own CPU time; None
where there is no /proc/stat), and the round trip of a cache line between two threads pinned
to the first two CPUs, before and after the window.

The machines here are shared and move: deep's step ran at 3.5 ms in some runs and 5.9 in
others (the floor 4.2 and 5.5) with no other process and no steal, the clock and each core's
FMA rate unchanged; the round trip was then 380 ns, the two virtual CPUs on distant cores,
which a step of many small parallel kernels pays at every barrier.

    with hostload.measured() as load:
        ...                      # the timed rounds
    load.result                  # HostLoad(others=0.012, steal=0.0, round_trips_ns=(380.0, 379.0))
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

STAT = "/proc/stat"
ROUND_TRIPS = 20_000  # cache-line round trips timed (~2-8 ms)
ROUND_TRIP_TIMEOUT = 2.0  # seconds before the two threads are told to stop (a CPU refused them)
ROUND_TRIP_REPEATS = 3  # the fastest counts: a thread start or an interrupt only adds
# Before a round trip: NumPy's OpenBLAS workers spin ~0.1 s after a call, and one of the
# pool's, pinned to the second CPU, ~50-100 us; spinning, they doubled it.
SETTLE = 0.25


@dataclass(frozen=True)
class HostLoad:
    others: float  # other processes' CPU time / (CPUs x wall), 0 to 1
    steal: float  # time the hypervisor ran someone else on these CPUs, same share
    round_trips_ns: tuple[float | None, float | None] = (None, None)  # before and after the window

    def __str__(self) -> str:
        return f"others {self.others:.1%}, steal {self.steal:.1%}, round trip {self.trips()} ns"

    def trips(self) -> str:
        """The round trips before/after, in ns ("?": not measured)."""
        return "/".join("?" if t is None else f"{t:.0f}" for t in self.round_trips_ns)


def _sample() -> tuple[int, int, int, float] | None:
    """(busy, steal, all) jiffies of every CPU, and this process's CPU seconds."""
    try:
        with open(STAT) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    own = os.times()
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal, \
        own.user + own.system


class _Window:
    result: HostLoad | None = None


@functools.cache
def _bouncer():
    """Native `void bounce(i64* line, i64 trips, i64 who)`: for each trip, wait until line[0]
    is 2 * trip + who, then store one more (acquire, release); stop early once line[8] is set."""
    from llvmlite import ir

    from ..codegen.llvm.target import jit

    i64 = ir.IntType(64)
    module = ir.Module("ffcompile.bench.bounce")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64.as_pointer(), i64, i64]), "bounce")
    line, trips, who = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    head, wait, check, go, end = (fn.append_basic_block(name) for name in ("head", "wait", "check", "go", "end"))
    b.branch(head)
    b.position_at_end(head)
    trip = b.phi(i64)
    trip.add_incoming(ir.Constant(i64, 0), fn.entry_basic_block)
    b.cbranch(b.icmp_signed("<", trip, trips), wait, end)
    b.position_at_end(wait)
    mine = b.add(b.mul(trip, ir.Constant(i64, 2)), who)
    b.cbranch(b.icmp_signed("==", b.load_atomic(line, "acquire", 8), mine), go, check)
    b.position_at_end(check)
    stop = b.load_atomic(b.gep(line, [ir.Constant(i64, 8)]), "monotonic", 8)
    b.cbranch(b.icmp_signed("!=", stop, ir.Constant(i64, 0)), end, wait)
    b.position_at_end(go)
    b.store_atomic(b.add(mine, ir.Constant(i64, 1)), line, "release", 8)
    trip.add_incoming(b.add(trip, ir.Constant(i64, 1)), go)
    b.branch(head)
    b.position_at_end(end)
    b.ret_void()
    code = jit(str(module))
    return code, ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(code.address("bounce"))


def round_trip_ns(cpus: list[int] | None = None) -> float | None:
    """The round trip of a cache line between threads pinned to the first two CPUs this process
    may use (or `cpus`): the fastest mean of ROUND_TRIP_REPEATS runs; None with one CPU, or
    where the two did not finish in ROUND_TRIP_TIMEOUT (told to stop: they never hang)."""
    cpus = sorted(os.sched_getaffinity(0))[:2] if cpus is None and hasattr(os, "sched_getaffinity") else cpus
    if not cpus or len(cpus) < 2:
        return None
    fastest = None
    for _ in range(ROUND_TRIP_REPEATS):
        run = _bounced(cpus)
        if run is None:
            return None
        fastest = run if fastest is None else min(fastest, run)
    return fastest


def _bounced(cpus: list[int]) -> float | None:
    _, bounce = _bouncer()
    line = (ctypes.c_int64 * 16)()  # [0]: the bounced word; [8], a line away: stop

    def run(who):
        try:
            os.sched_setaffinity(0, {cpus[who]})  # this thread's
        except OSError:
            pass
        bounce(ctypes.addressof(line), ROUND_TRIPS, who)  # ctypes lets go of the GIL

    threads = [threading.Thread(target=run, args=(who,), daemon=True) for who in (0, 1)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    threads[0].join(ROUND_TRIP_TIMEOUT)
    threads[1].join(max(0.0, ROUND_TRIP_TIMEOUT - (time.perf_counter() - start)))
    finished = line[0] == 2 * ROUND_TRIPS
    line[8] = 1
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / ROUND_TRIPS * 1e9 if finished else None


@contextmanager
def measured():
    """A window whose HostLoad is `result` after it closes (None without /proc/stat)."""
    time.sleep(SETTLE)
    window, first = _Window(), round_trip_ns()
    before = _sample()
    try:
        yield window
    finally:
        after = _sample()
        time.sleep(SETTLE)
        if before is not None and after is not None and after[2] > before[2]:
            tick = os.sysconf("SC_CLK_TCK")
            total = (after[2] - before[2]) / tick  # CPU-seconds of every CPU, idle included
            others = (after[0] - before[0]) / tick - (after[3] - before[3])
            window.result = HostLoad(min(1.0, max(0.0, others / total)), (after[1] - before[1]) / tick / total,
                                     (first, round_trip_ns()))
