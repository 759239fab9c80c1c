"""The host LLVM target: initialization, target machine, O3 pipeline, MCJIT, assembly.

llvmlite 0.50 wraps LLVM 22: `llvm.initialize()` raises, only the native
target and asm printer are initialized. The target machine is built for the
host CPU name *and* feature string; without the features LLVM assumes a
baseline x86-64 and never emits AVX.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass

import llvmlite.binding as llvm
from llvmlite import ir


# LLVM's global context and pass machinery are not safe to drive from two
# threads at once (e.g. two threads tracing a function for the first time).
_COMPILE_LOCK = threading.Lock()


# LLVM options for ffcompile's own compiles. LLVM's options are process-wide (one LLVM a
# process), so they are set only while ffcompile compiles, under _COMPILE_LOCK, and put back
# to LLVM's defaults after (`_own_options`): code another library builds with llvmlite in this
# process (numba's) gets the defaults, but for a compile of its own that another thread runs
# during one of ours (it does not take our lock: it then runs without LSR, which only costs
# speed), and an option that library set itself is reset to LLVM's default by ours. Loop
# Strength Reduction was the costliest pass of machine-code
# emission (84 ms of a 594 ms mnist step module; 5 of 13 ms of a GEMM epilogue loop) and
# bought no speed (2026-12-05, AVX-512 host; benchmarks/README.md, "Latency", has the
# numbers). Not set: -enable-epilogue-vectorization=false (another ~8% of a compile) changes
# which vector width sums a reduction's remainder, so a symbolic-batch program's sums stop
# being bitwise those of the program built for one size.
LLVM_OPTIONS = {"disable-lsr": ("true", "false")}  # option: (ours, LLVM's default)


@functools.cache
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@contextlib.contextmanager
def _own_options():
    """LLVM_OPTIONS set for the with-body, LLVM's defaults after it (caller holds _COMPILE_LOCK)."""
    for option, (ours, _) in LLVM_OPTIONS.items():
        llvm.set_option("", f"-{option}={ours}")
    try:
        yield
    finally:
        for option, (_, default) in LLVM_OPTIONS.items():
            llvm.set_option("", f"-{option}={default}")


VECTOR_BITS_VARIABLE = "FFCOMPILE_VECTOR_BITS"  # "256": code for an AVX2 host (read once a process)


@functools.cache  # LLVM asks the CPU each time (~1 ms of CPU, several calls per program)
def _host_features() -> str:
    """The host's features; without AVX-512 if FFCOMPILE_VECTOR_BITS=256 (an AVX2 host's code,
    on any host: to test and measure that width where AVX-512 is present)."""
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot query features on some hosts: baseline ISA
        features = ""
    bits = os.environ.get(VECTOR_BITS_VARIABLE, "").strip()
    if bits not in ("", "256"):
        raise ValueError(f"{VECTOR_BITS_VARIABLE}={bits!r}: only 256 (AVX2 code on an AVX-512 host) can be forced")
    if bits == "256":
        features = ",".join("-" + f[1:] if f.startswith("+avx512") else f for f in features.split(",") if f)
    return features


def _new_target_machine(jit: bool) -> llvm.TargetMachine:
    _initialize()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=_host_features(), opt=3,
        reloc="pic", codemodel="default", jit=jit)


@functools.cache
def vector_bytes() -> int:
    """The widest float vector the host's FMA units take: 64 bytes with AVX-512, else 32.
    For register-tiled code (smallgemm): the loop vectorizer chooses its own width."""
    return 64 if "+avx512f" in _host_features().split(",") else 32


@functools.cache
def host_key() -> str:
    """What the host target machine's code depends on: triple, CPU name, features (a cache key part)."""
    return f"{llvm.get_process_triple()} {llvm.get_host_cpu_name()} {_host_features()}"


@functools.cache
def host_target_machine() -> llvm.TargetMachine:
    """Target machine for this CPU at -O3, shared for optimizing and emitting code.

    Never hand it to an execution engine: MCJIT takes ownership of its target
    machine and frees it with the engine (`jit` makes its own).
    """
    return _new_target_machine(jit=False)


def parse(module: ir.Module | str, tm: llvm.TargetMachine) -> llvm.ModuleRef:
    """Parse and verify IR text, stamped with the target's triple and data layout."""
    _initialize()
    try:
        mod = llvm.parse_assembly(str(module))
        mod.verify()
    except RuntimeError as err:
        raise ValueError(f"LLVM rejected the module: {err}") from err
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    return mod


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    """Run the new pass manager's O3 pipeline with loop and SLP vectorization, in place."""
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_interleaving = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


@dataclass(frozen=True)
class JitModule:
    """Machine code of one module; it lives as long as this object does, so callers must
    keep the JitModule referenced while they call through its addresses."""

    engine: llvm.ExecutionEngine
    object_code: bytes  # the relocatable object the engine loaded (for a disk cache)
    # seconds of each phase that made it (PHASES order; `load` alone for cached object code)
    seconds: tuple[tuple[str, float], ...] = ()

    def address(self, name: str) -> int:
        """The address of the function or global `name`."""
        with _COMPILE_LOCK:
            return self.engine.get_global_value_address(name)


def jit(module: ir.Module | str) -> JitModule:
    """Optimize and compile `module` for the host into object code, and load that.

    The engine gets the object code, not the module: MCJIT keeps every module it
    compiles for as long as the engine lives (the optimized IR, ~0.8 MB a signature
    of a small MLP's value_and_grad, held until the compiled function is released).
    The object is the one export writes and the disk cache stores and loads."""
    phases: list[tuple[str, float]] = []
    loaded = load_object(object_code(module, phases=phases))
    return JitModule(loaded.engine, loaded.object_code, (*phases, *loaded.seconds))


# What turning IR text into loaded machine code takes, in order (JitModule.seconds, cf.stats())
PHASES = ("parse", "O3", "machine code", "load")


def load_object(code: bytes) -> JitModule:
    """Machine code from object code produced on this host: no IR, no O3, no codegen."""
    start = time.perf_counter()
    tm = _new_target_machine(jit=True)  # owned, and freed, by the engine
    with _COMPILE_LOCK:
        empty = parse("", tm)
        # llvmlite's memory manager reserves one block for all of a module's sections:
        # LLVM's default one may place code and constants over 2 GiB apart, which a
        # 32-bit PC-relative relocation cannot span (RuntimeDyldELF asserts, the
        # process aborts, at random depending on where the heap happens to be).
        engine = llvm.create_mcjit_compiler(empty, tm, use_lmm=True)
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        engine.finalize_object()
    return JitModule(engine, code, (("load", time.perf_counter() - start),))


def _emit(module: ir.Module | str, emit, passes: bool = True, phases: list | None = None):
    """`module` after the O3 pipeline the JIT runs (unless passes=False: IR written as it
    should run), emitted by the host target machine; each phase's seconds appended to phases."""
    tm = host_target_machine()
    times = [time.perf_counter()]
    with _COMPILE_LOCK, _own_options():
        mod = parse(module, tm)
        times.append(time.perf_counter())
        if passes:
            optimize(mod, tm)
        times.append(time.perf_counter())
        emitted = emit(tm, mod)
        times.append(time.perf_counter())
    if phases is not None:
        phases.extend(zip(PHASES, (after - before for before, after in zip(times, times[1:]))))
    return emitted


def assembly(module: ir.Module | str) -> str:
    """Host assembly text of `module`."""
    return _emit(module, llvm.TargetMachine.emit_assembly)


def object_code(module: ir.Module | str, passes: bool = True, phases: list | None = None) -> bytes:
    """A relocatable (PIC) host object file of `module`, for linking (passes, phases: see _emit)."""
    return _emit(module, llvm.TargetMachine.emit_object, passes, phases)
