"""Where a compiled program's time goes: the time of each kernel of its native code.

The program is built with the CPU's time-stamp counter read around every
kernel call and around the whole entry (`lower(profile=True)`), run `steps`
times after warm-up on copies of the arguments, and the counts are turned
into seconds at the counter's rate, measured against `time.perf_counter`
(the counter ticks at a constant rate, not at the core's clock). The report
separates the kernels, the native entry (the kernels plus the pointer loads
between them) and the whole call from Python (plus the ctypes call).

    lowered.profile(*args)                       # any compiled function
    step.profile(params, opt_state, x, y)        # a training step, donation as in a call
    ffcompile profile MODEL [--train]            # a zoo model or model file
"""
from __future__ import annotations

import ctypes
import functools
import time
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from .codegen.llvm import target
from .passes.remat import flops_of
from .passes.schedule import KernelKind, Schedule


@dataclass(frozen=True)
class KernelTime:
    index: int  # position in the schedule
    kind: str
    what: str  # its anchor (or last) node: op, type, and for a GEMM its k and transposes
    seconds: float  # mean per run
    flops: int  # per run, from the ops' cost rules


@dataclass(frozen=True)
class KernelProfile:
    name: str
    kernels: tuple[KernelTime, ...]  # in schedule order
    entry_seconds: float  # mean per run: the native entry, kernels included
    call_seconds: float  # mean per run: the call from Python (the ctypes call around the entry)
    steps: int

    def __str__(self) -> str:
        kernels = sum(k.seconds for k in self.kernels)
        lines = [f"profile @{self.name}: mean of {self.steps} runs: call {self.call_seconds * 1e6:.2f} us, "
                 f"native entry {self.entry_seconds * 1e6:.2f} us, {len(self.kernels)} kernels "
                 f"{kernels * 1e6:.2f} us",
                 f"{'kernel':>6} {'kind':<11} {'us':>10} {'share':>6} {'GFLOP/s':>8}  what"]
        for k in sorted(self.kernels, key=lambda k: -k.seconds):
            rate = f"{k.flops / k.seconds / 1e9:8.1f}" if k.seconds > 0 and k.flops else f"{'':8}"
            share = k.seconds / self.entry_seconds if self.entry_seconds else 0.0
            lines.append(f"{k.index:>6} {k.kind:<11} {k.seconds * 1e6:>10.2f} {share:>6.1%} {rate}  {k.what}")
        return "\n".join(lines) + "\n"


def profile_kernels(executable, schedule: Schedule, args, steps: int = 100, warmup: int = 3) -> KernelProfile:
    """Per-kernel time of `executable`, a program of `schedule` built with profile=True
    (it counts cycles per kernel), on flat `args` (arrays of its input types; copied, so
    donated ones are not touched)."""
    if steps < 1:
        raise ValueError(f"profile: steps must be at least 1, got {steps}")
    rate = cycles_per_second()
    binding = executable.bind([np.array(a, copy=True) for a in args])  # holds the arrays it runs on
    for _ in range(warmup):
        binding.run()
    executable.kernel_cycles(reset=True)
    start = time.perf_counter()
    for _ in range(steps):
        binding.run()
    call = (time.perf_counter() - start) / steps
    cycles, entry = executable.kernel_cycles()
    kernels = tuple(KernelTime(k, kernel.kind, _describe(schedule, k), cycles[k] / rate / steps, _flops(schedule, k))
                    for k, kernel in enumerate(schedule.kernels))
    return KernelProfile(schedule.graph.name, kernels, entry / rate / steps, call, steps)


@functools.cache
def cycles_per_second() -> float:
    """The time-stamp counter's rate, against perf_counter over 50 ms."""
    module = ir.Module("ffcompile.cycle_counter")
    i64 = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(i64, []), "ffc_cycles")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.ret(b.call(module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, [])), []))
    jit = target.jit(module)
    read = ctypes.CFUNCTYPE(ctypes.c_int64)(jit.address("ffc_cycles"))
    start, first = time.perf_counter(), read()
    time.sleep(0.05)
    last, end = read(), time.perf_counter()
    return (last - first) / (end - start)


def _describe(schedule: Schedule, k: int) -> str:
    kernel, nodes = schedule.kernels[k], schedule.graph.nodes
    node = nodes[kernel.anchor if kernel.anchor is not None else kernel.body[-1]]
    text = f"{node.op.name} {node.type}"
    if kernel.kind == KernelKind.GEMM:
        flags = [flag for flag, on in (("trans_a", kernel.trans_a), ("trans_b", kernel.trans_b)) if on]
        text += f" k={nodes[node.inputs[0]].type.shape[-1]}" + "".join(f" {flag}" for flag in flags)
    if len(kernel.body) > 1:
        text += f" (+{len(kernel.body) - 1} fused)"
    return text


def _flops(schedule: Schedule, k: int) -> int:
    return sum(flops_of(schedule.graph, i) for i in schedule.kernels[k].body)
