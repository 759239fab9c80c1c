"""ffcompile/bench/hostload.py: another process's CPU time shows as `others`, this process's
own does not, and a host without /proc/stat gives no figure instead of a wrong one."""
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
