"""ffcompile/bench/hostload.py: another process's CPU time shows as `others`, this process's
own does not, and a host without /proc/stat gives no figure instead of a wrong one; the
round trip between two CPUs is a time, and two threads that cannot both run stop, not hang."""
import os
import subprocess
import sys
import time

import pytest

from ffcompile.bench import harness, hostload

pytestmark = pytest.mark.skipif(not os.path.exists(hostload.STAT), reason="no /proc/stat (not Linux)")
SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass\n"


def test_another_processs_cpu_counts_and_our_own_does_not():
    cpus = os.cpu_count() or 1
    with hostload.measured() as child:  # another process busy on one CPU for the window
        subprocess.run([sys.executable, "-c", SPIN], check=True, timeout=60)
    with hostload.measured() as own:  # this one busy, the same time
        start = time.process_time()
        while time.process_time() - start < 0.8:
            pass
    assert child.result.others >= 0.6 / cpus, child.result
    assert own.result.others < child.result.others / 2, (own.result, child.result)
    assert 0 <= own.result.steal <= 1 and str(own.result).startswith("others ")


def test_no_proc_stat_no_figure(monkeypatch, tmp_path):
    monkeypatch.setattr(hostload, "STAT", str(tmp_path / "missing"))
    with hostload.measured() as load:
        pass
    assert load.result is None
    assert harness.host_lines([harness.Cell("xor", "train", "ffcompile-llvm")]) == ""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: no round trip between two")
def test_a_round_trip_between_two_cpus_is_a_time_and_never_hangs(monkeypatch):
    trip = hostload.round_trip_ns()
    assert trip is not None and 1 < trip < 1e6, trip
    # Both threads on one CPU take turns at the scheduler's pace: told to stop, no figure.
    monkeypatch.setattr(hostload, "ROUND_TRIP_TIMEOUT", 0.3)
    cpu = min(os.sched_getaffinity(0))
    start = time.perf_counter()
    assert hostload.round_trip_ns([cpu, cpu]) is None
    assert time.perf_counter() - start < 5

