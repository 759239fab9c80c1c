"""The host's peak float throughput, measured: clock x FMA units x vector lanes x 2 x cores.

    python -m benchmarks.peak

- clock: a run of dependent register-to-register integer adds (one cycle each on every x86
  core since the P6; not adds of an immediate, which Golden Cove's renamer folds, five a
  cycle: 22 GHz on a 3.9 GHz Xeon) timed in this thread's CPU time: the core's clock while it runs, boost included (the
  time-stamp counter ticks at a fixed rate and would not show it), and on a loaded machine
  not the time other processes take.
- FMA units: FMA_CHAINS independent chains of vfmadd231ps on ymm (256-bit) or zmm (512-bit,
  if the host has AVX-512 and FFCOMPILE_VECTOR_BITS does not hide it) registers, enough to cover the latency: the fused multiply-adds
  retired per cycle are the units of that width. The registers are zeroed first in every
  iteration (an idiom no unit executes): left as found they may hold subnormals, which cost
  Intel's cores a microcode assist per FMA (0.01 FMA a cycle).
- cores: the ones this process may run on.
Each is the best of ROUNDS runs (a loaded machine only makes a run slower). The inline
assembly is fixed x86-64 code, so this measures an x86 host.
"""
from __future__ import annotations

import ctypes
import os
import time

import llvmlite.binding as llvm
from llvmlite import ir

ROUNDS = 5
ADDS = 200  # dependent adds per loop iteration
FMA_CHAINS = 12  # independent accumulators (registers 0-11; 12 and 13 are the factors)
FMA_REPEATS = 8  # FMA_CHAINS-wide groups per loop iteration
ITERATIONS = 200_000


def _loop(asm: str, clobbers: str):
    """A JIT-compiled `void f(i64 n)` running the inline assembly n times, and its module."""
    from ffcompile.codegen.llvm.target import jit

    llvm.initialize_native_asmparser()  # for the inline assembly (programs need none)
    module = ir.Module("peak")
    i64 = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64]), "run")
    entry, body, done = (fn.append_basic_block(name) for name in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(body)
    b.position_at_end(body)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    b.call(ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), asm, clobbers, side_effect=True), [])
    following = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(following, body)
    b.cbranch(b.icmp_unsigned("<", following, fn.args[0]), body, done)
    b.position_at_end(done)
    b.ret_void()
    program = jit(module)
    return ctypes.CFUNCTYPE(None, ctypes.c_int64)(program.address("run")), program


def _best_seconds(run, iterations: int) -> float:
    run(iterations // 10)  # warm: the core leaves any idle state
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.thread_time()  # CPU time: a loaded machine's other processes do not count
        run(iterations)
        best = min(best, time.thread_time() - start)
    return best


def clock_hz() -> float:
    run, _keep = _loop("addq %rax, %rax\n" * ADDS, "~{rax},~{dirflag},~{fpsr},~{flags}")
    return ITERATIONS * ADDS / _best_seconds(run, ITERATIONS)


def fma_per_cycle(bits: int, hz: float) -> float:
    """Vector fused multiply-adds of `bits` width retired per cycle by one core."""
    reg = {256: "ymm", 512: "zmm"}[bits]
    zeroed = "".join(f"vxorps %{reg}{r}, %{reg}{r}, %{reg}{r}\n" for r in range(FMA_CHAINS + 2))
    group = "".join(f"vfmadd231ps %{reg}12, %{reg}13, %{reg}{r}\n" for r in range(FMA_CHAINS))
    clobbers = ",".join(f"~{{xmm{r}}}" for r in range(FMA_CHAINS + 2)) + ",~{dirflag},~{fpsr},~{flags}"
    run, _keep = _loop(zeroed + group * FMA_REPEATS, clobbers)
    return ITERATIONS * FMA_CHAINS * FMA_REPEATS / _best_seconds(run, ITERATIONS) / hz


def host_peak() -> dict:
    """{"clock_ghz", "cores", "widths": {bits: {"fma_units", "f32_gflops", "f64_gflops"}}}."""
    hz = clock_hz()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from ffcompile.codegen.llvm.target import host_key

    features = host_key().split(" ")[-1].split(",")  # without AVX-512 under FFCOMPILE_VECTOR_BITS=256
    widths = {}
    for bits in (256, 512):
        if bits == 512 and "+avx512f" not in features or bits == 256 and "+fma" not in features:
            continue
        units = round(fma_per_cycle(bits, hz), 1)
        per_lane = 2 * units * hz * cores / 1e9  # a multiply and an add per lane
        widths[bits] = {"fma_units": units, "f32_gflops": per_lane * bits / 32, "f64_gflops": per_lane * bits / 64}
    return {"clock_ghz": hz / 1e9, "cores": cores, "widths": widths}


def describe(peak: dict) -> str:
    parts = [f"clock {peak['clock_ghz']:.2f} GHz (dependent adds), {peak['cores']} cores"]
    for bits, width in peak["widths"].items():
        parts.append(f"{bits}-bit: {width['fma_units']:g} FMA/cycle, peak f32 {width['f32_gflops']:.0f} "
                     f"f64 {width['f64_gflops']:.0f} GFLOP/s")
    return "; ".join(parts)


def main() -> None:
    print(describe(host_peak()))


if __name__ == "__main__":
    main()
