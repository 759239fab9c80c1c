"""The arena: the one block of memory a compiled program allocates when it is built.

Both backends allocate it here, so a process that cannot hold it gets the same clear
error (what program, how many bytes, what to do) instead of NumPy's bare "Unable to
allocate" from inside a backend's constructor.
"""
from __future__ import annotations

import numpy as np

from ..passes.memory import ALIGNMENT


class ArenaMemoryError(MemoryError):
    """The process cannot allocate a compiled program's arena (e.g. under an RLIMIT_AS cap)."""


def allocate_arena(nbytes: int, backend: str, program: str) -> np.ndarray:
    """nbytes of zeroed uint8, starting on an ALIGNMENT boundary; ArenaMemoryError if the
    allocation fails (the message names the program and the bytes it needs)."""
    try:
        raw = np.zeros(nbytes + ALIGNMENT, np.uint8)  # one extra unit to align the start
    except MemoryError:
        raise ArenaMemoryError(
            f"{backend} backend: cannot allocate the arena of @{program}: it needs {nbytes:,} bytes "
            f"({nbytes / 2**20:,.1f} MiB) and the process has no room for them; compile with "
            f"memory_budget= to plan a smaller arena (docs/remat.md)") from None
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes]
