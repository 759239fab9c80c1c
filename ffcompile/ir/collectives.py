"""Communication groups the `all_reduce` op reduces over, by the id its `group` attribute holds.

A group is any object with `size`, `rank`, `start(buffer) -> handle` (begin summing the
buffer in place over the group's ranks, without blocking) and `wait(handle)`. Group 0 is
this process alone (a sum over one rank is the identity), so a graph with collectives
runs, and is tested, without MPI; `ffcompile.distributed` registers an mpi4py
communicator as another. Ids are per process: every rank registers its communicator in
the same order, so the same program names the same group on every rank.
"""
from __future__ import annotations

import numpy as np


class Local:
    """The group of this process alone."""

    size = 1
    rank = 0

    def start(self, buffer: np.ndarray):
        return None

    def wait(self, handle) -> None:
        pass


LOCAL = 0
_GROUPS: list = [Local()]


def register_group(group) -> int:
    """The id of group (registered now if new): what an all_reduce's `group` attribute holds."""
    for gid, known in enumerate(_GROUPS):
        if known is group:
            return gid
    _GROUPS.append(group)
    return len(_GROUPS) - 1


def group_of(gid: int):
    if not 0 <= gid < len(_GROUPS):
        raise LookupError(f"all_reduce: no communication group {gid} in this process (groups 0.."
                          f"{len(_GROUPS) - 1}); a program with collectives runs in the process that traced it")
    return _GROUPS[gid]


class Pending:
    """An all-reduce in flight over buffer: wait() completes it and scales the sum to the mean."""

    def __init__(self, gid: int, buffer: np.ndarray):
        self.group = group_of(gid)
        self.buffer = buffer
        self.handle = self.group.start(buffer)

    def wait(self) -> np.ndarray:
        self.group.wait(self.handle)
        if self.group.size != 1:
            self.buffer /= self.buffer.dtype.type(self.group.size)
        return self.buffer


def all_reduce_mean(gid: int, buffer: np.ndarray) -> np.ndarray:
    """buffer (overwritten) averaged over group gid's ranks, blocking."""
    return Pending(gid, buffer).wait()
