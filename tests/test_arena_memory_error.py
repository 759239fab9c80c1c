"""A program whose arena the process cannot hold fails with a clear MemoryError at build
time (naming the backend, the program and the bytes), on both backends; never a crash.
The example examples/memory_cap.py does the same under a real RLIMIT_AS cap
(tests/test_memory_cap_example.py)."""
import re

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.arena import ArenaMemoryError, allocate_arena
from ffcompile.passes.memory import ALIGNMENT


def test_arena_is_aligned_zeroed_and_sized():
    for nbytes in (0, 1, 100, 4096):
        arena = allocate_arena(nbytes, "numpy", "f")
        assert arena.nbytes == nbytes and arena.dtype == np.uint8 and not arena.any()
        assert nbytes == 0 or arena.ctypes.data % ALIGNMENT == 0  # an empty array has no address


def test_an_arena_too_large_for_the_address_space_is_a_clear_memory_error(backend):
    # x @ x of 2**24 x 2**24 float32 is 2**50 bytes: beyond any x86-64 process's address space.
    lowered = ff.compile(lambda x: ff.tanh(x @ x).sum(), backend=backend).lower(ff.spec((2**24, 2**24)))
    with pytest.raises(MemoryError) as caught:
        lowered.program  # the backend builds the program, then allocates its arena
    assert isinstance(caught.value, ArenaMemoryError)
    message = str(caught.value)
    assert message.startswith(f"{backend} backend: cannot allocate the arena of @lambda: it needs ")
    needed = int(re.search(r"it needs ([\d,]+) bytes", message).group(1).replace(",", ""))
    assert needed >= lowered.memory.arena_bytes >= 2**50  # the plan's arena, plus any kernel scratch
    assert "memory_budget=" in message
