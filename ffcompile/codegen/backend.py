"""The Backend protocol: what the pipeline asks of a code generator, and what it returns.

A backend is one object. The pipeline's stages call its hooks where a rule
depends on how the backend runs a kernel:

- `kernel_scratch(schedule, protected)`: bytes of temporaries each kernel needs
  while it runs (the memory stage adds them to the arena plan), given the values
  whose storage is shared with a value still read (no temporary may go there);
- `safe_donations(schedule, donate)`: which requested donations (result written
  over an argument's array) stay correct the way this backend runs kernels;
- `build(schedule, plan, donated)`: the `Program`;
- `disk_cache()`: where compiled work is kept between processes, if anywhere.

The registry (`codegen/registry.py`) maps names to backends; nothing outside
it tests a backend's name.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from ..passes.memory import MemoryPlan
from ..passes.schedule import Schedule
from .arguments import Binding


class Program(Protocol):
    """One compiled signature, called with flat arrays."""

    arena_bytes: int  # what it allocates once, at build time, besides arguments and results
    donated: dict[int, int]  # result position -> argument position whose array it writes

    def call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run on C-contiguous arrays of the compiled input types. Results are distinct
        fresh arrays, but for donated ones, which are the argument arrays themselves."""

    def bind(self, arrays: list[np.ndarray]) -> Binding:
        """The program tied to these arrays (docs/bind.md)."""

    # Optional: phases, ((name, seconds), ...) of what building it took (cf.stats() prints them
    # under `lower`; the LLVM backend: build IR, parse, O3, machine code, load).
    # Optional: call_objects(args: tuple) -> call(list(args)) if every object in args is an
    # array call could take unchecked (compiled type, C-contiguous, aligned; donated ones
    # writeable and apart), else None without running. The ordinary call's fast path
    # checks natively through it (codegen/llvm/fastcall.py); without it, in Python.

    @property
    def text(self) -> str:
        """The generated code, as the `lower` stage prints it."""


class Backend(Protocol):
    name: str
    # Optional, False when absent: build takes a symbolic schedule and plan (types holding B,
    # MemoryPlan.batch set) and returns one Program for every batch size in plan.batch,
    # whose inputs and outputs take their shapes from the batch size of each call.
    symbolic_batch: bool

    def lowers(self, op) -> bool:
        """True if the backend generates code for this primitive op (the registry test asks)."""

    def kernel_scratch(self, schedule: Schedule, protected: frozenset[int]) -> Mapping[int, int]:
        """Kernel step -> bytes of temporaries it needs while it runs."""

    def safe_donations(self, schedule: Schedule, donate: Mapping[int, int]) -> dict[int, int]:
        """The requested donations (result position -> argument position) this backend keeps."""

    def build(self, schedule: Schedule, plan: MemoryPlan, donated: Mapping[int, int],
              profile: bool = False) -> Program:
        """The program; profile: count each kernel's time (backends without counters refuse)."""

    def export(self, schedule: Schedule, plan: MemoryPlan, out_dir, name: str, input_names):
        """Write a library for C callers (docs/export.md); backends that cannot refuse."""

    def disk_cache(self):
        """The cache of compiled programs on disk (llvm/cache.py's ObjectCache: key, store,
        load_as), where the pipeline keeps the graph stages' artifacts too (stage_cache.py); or
        None, nothing kept."""


class BackendError(ValueError):
    """A backend was asked for something it does not do (unknown name, export, profile)."""
