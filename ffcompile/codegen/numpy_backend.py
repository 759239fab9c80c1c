"""The NumPy backend: the schedule as generated Python over one arena (numpy_arena.py).

It is the reference path of code generation: readable source (`lowered.source`),
the same schedule and memory plan as the native backend, results equal to the
op references bit for bit. Kernels run node by node, so their temporaries need
scratch, which the `kernel_scratch` hook hands to the memory planner.
"""
from __future__ import annotations

from ..ir import ops as O
from ..passes.donation import safe_donations
from ..passes.memory import MemoryPlan
from ..passes.schedule import Schedule
from .backend import BackendError
from .numpy_arena import ArenaProgram, build_program, kernel_scratch, out_lowering


class NumpyBackend:
    name = "numpy"

    def lowers(self, op) -> bool:
        return out_lowering(op) is not None or op is O.Input

    def kernel_scratch(self, schedule: Schedule, protected: frozenset[int]) -> dict[int, int]:
        return kernel_scratch(schedule, protected)

    def safe_donations(self, schedule: Schedule, donate) -> dict[int, int]:
        return safe_donations(schedule, donate)

    def build(self, schedule: Schedule, plan: MemoryPlan, donated, profile: bool = False) -> ArenaProgram:
        if profile:
            raise BackendError("the numpy backend has no per-kernel counters: profile with backend='llvm'")
        return build_program(schedule, plan, dict(donated))

    def disk_cache(self) -> None:
        return None  # a build is Python source compiled in milliseconds: nothing kept on disk

    def export(self, schedule, plan, out_dir, name, input_names):
        raise BackendError("the numpy backend cannot export a library: export with backend='llvm'")


NUMPY = NumpyBackend()
