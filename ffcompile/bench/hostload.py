"""What else ran on the host while a benchmark was timed: the CPU time of other processes
and the hypervisor's steal, each as a share of all the CPUs' time over the window (Linux's
/proc/stat against this process's own CPU time; None where there is no /proc/stat).

The machines here are shared: a run whose floor and contenders all slowed by a third (deep,
2026-12-05) is one to discount, and this says so in the table instead of in a guess.

    with hostload.measured() as load:
        ...                      # the timed rounds
    load.result                  # HostLoad(others=0.012, steal=0.0), or None
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

STAT = "/proc/stat"


@dataclass(frozen=True)
class HostLoad:
    others: float  # other processes' CPU time / (CPUs x wall), 0 to 1
    steal: float  # time the hypervisor ran someone else on these CPUs, same share

    def __str__(self) -> str:
        return f"others {self.others:.1%}, steal {self.steal:.1%}"


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


@contextmanager
def measured():
    """A window whose HostLoad is `result` after it closes (None without /proc/stat)."""
    window, before = _Window(), _sample()
    try:
        yield window
    finally:
        after = _sample()
        if before is not None and after is not None and after[2] > before[2]:
            tick = os.sysconf("SC_CLK_TCK")
            total = (after[2] - before[2]) / tick  # CPU-seconds of every CPU, idle included
            others = (after[0] - before[0]) / tick - (after[3] - before[3])
            window.result = HostLoad(min(1.0, max(0.0, others / total)), (after[1] - before[1]) / tick / total)
