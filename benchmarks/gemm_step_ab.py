"""Builds of the packed GEMM library compared inside a zoo model's training step.

    python -m benchmarks.gemm_step_ab --model wide before=/path/to/an/older/checkout now=.
    python -m benchmarks.gemm_step_ab --model mnist now=. padded-last-tile=.:SHORT_ROWS=0

One bound training step is compiled; a program calls the library through slots, plain globals
(packed_gemm.library_slot), so between rounds they are pointed at one build, then the next
(what a round's load costs falls on every build alike). Printed: each build's median step and
its ratio to the first build's; and whether one step from the same start gives the first
build's parameters bit for bit. Products alone can gain what the step does not see: packing
A once for all panels made wide's 256-bit 256x4096x4096 1% faster alone and its step 0.1-0.4%
slower (benchmarks/README.md, "256-bit steps, continued again").

A build is NAME=TREE[:CONSTANT=VALUE,...]: the library as the source tree TREE builds it (in a
subprocess with TREE first on its path: another checkout's code), with constants of its
packed_gemm module set first (one it does not have is an error: a misspelt or removed constant
would build the tree's own library under another name). The step's block sizes are this
tree's (constants of its call).
"""
from __future__ import annotations

import argparse
import ast
import ctypes
import os
import subprocess
import sys
import time

import numpy as np

_LIBRARY_SOURCE = """
import sys
import ffcompile.codegen.llvm.packed_gemm as packed_gemm
from ffcompile.codegen.llvm import gemm_library
for name, value in {constants!r}.items():
    if not hasattr(packed_gemm, name):
        sys.exit(f"packed_gemm has no constant {{name}}")
    setattr(packed_gemm, name, value)
sys.stdout.write(str(gemm_library.library_module(packed_gemm.GemmVariant.of_symbol({symbol!r}))))
"""


def parse_build(text: str) -> tuple[str, str, dict]:
    """NAME=TREE[:CONSTANT=VALUE,...] -> (name, tree, {constant: value})."""
    name, _, rest = text.partition("=")
    tree, _, settings = rest.partition(":")
    if not name or not tree:
        raise ValueError(f"a build is NAME=TREE[:CONSTANT=VALUE,...], not {text!r}")
    constants = {}
    for setting in filter(None, settings.split(",")):
        key, _, value = setting.partition("=")
        constants[key] = ast.literal_eval(value)
    return name, os.path.abspath(tree), constants


def library_addresses(tree: str, constants: dict, symbols, keep: list) -> dict[str, int]:
    """Each library function `symbols` names, built from tree's source and loaded here, its
    pool slot filled: symbol -> address (the loaded code appended to keep)."""
    from ffcompile.codegen.llvm import target, threadpool

    addresses = {}
    for symbol in symbols:
        source = _LIBRARY_SOURCE.format(constants=constants, symbol=symbol)
        env = {**os.environ, "PYTHONPATH": tree}
        done = subprocess.run([sys.executable, "-c", source], env=env, cwd=tree, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tree} did not build {symbol}: {done.stderr[-2000:]}")
        jit = target.jit(done.stdout)
        threadpool.fill_pool_slot(jit)
        keep.append(jit)
        addresses[symbol] = jit.address(symbol)
    return addresses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", help="NAME=TREE[:CONSTANT=VALUE,...]")
    parser.add_argument("--model", default="wide", help="a zoo workload")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per build and round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args(argv)

    import ffcompile as ff
    from ffcompile import zoo
    from ffcompile.bench import contenders
    from ffcompile.codegen.llvm import gemm_library
    from ffcompile.codegen.llvm.packed_gemm import SLOT_SUFFIX

    builds = [parse_build(text) for text in options.builds]
    ff.set_num_threads(options.threads)
    slots = []  # (program's loaded code, library symbol) of every slot the step's programs fill
    fill = gemm_library.fill_slots

    def recording(jit, symbols):
        symbols = list(symbols)
        slots.extend((jit, symbol) for symbol in symbols)
        fill(jit, symbols)

    gemm_library.fill_slots = recording
    try:
        workload = zoo.get(options.model)
        params, x, y = workload.example_inputs()
        runner = contenders.ffcompile_bound(contenders.Problem(workload, "train", params, x, y, 0.01, options.threads))
        runner.run()
    finally:
        gemm_library.fill_slots = fill
    if not slots:
        raise SystemExit(f"{options.model}'s step calls no packed GEMM here (its products take BLAS or smallgemm)")
    symbols = sorted({symbol for _, symbol in slots})
    keep = []
    addresses = {name: library_addresses(tree, constants, symbols, keep) for name, tree, constants in builds}

    def use(name):
        for jit, symbol in slots:
            ctypes.c_void_p.from_address(jit.address(symbol + SLOT_SUFFIX)).value = addresses[name][symbol]

    names = [name for name, _, _ in builds]
    stepped = {}
    for name in names:  # one step from the same start each
        runner.reset()
        use(name)
        runner.run()
        stepped[name] = [array.copy() for layer in runner.layers() for array in layer]
    times = {name: [] for name in names}
    for r in range(options.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            use(name)
            runner.run()
            for _ in range(options.steps):
                start = time.perf_counter()
                runner.run()
                times[name].append(time.perf_counter() - start)
    first = np.median(times[names[0]])
    print(f"# {options.model}'s training step, {options.threads} threads, {options.steps} steps x {options.rounds} "
          f"rounds; the library's {', '.join(symbols)}")
    for name in names:
        same = all(np.array_equal(a, b) for a, b in zip(stepped[name], stepped[names[0]]))
        median = np.median(times[name])
        print(f"{name}: {median * 1e3:.3f} ms, {median / first:.3f}x; "
              f"{'the same bits' if same else 'other bits'} as {names[0]} after one step")


if __name__ == "__main__":
    main()
