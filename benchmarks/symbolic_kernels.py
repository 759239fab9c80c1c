"""One native program for every batch size vs the program made for one size, kernel by kernel.

    python -m benchmarks.symbolic_kernels [--sizes 8,128] [--calls 200] [--rounds 7]

Each case (a fused kernel the LLVM emitters build with the batch size B known only at run
time: loops with run-time trip counts, strides and offsets, the parallel split decided
at run time) is compiled once symbolically (planned for B in 1..256) and once per size,
and called through the native checked path (`call_objects`) side by side, in rounds that
alternate which goes first; the table gives the median microseconds a call and their ratio.
Both programs' results are checked equal first. The symbolic call also reads B and picks
the call table of that size (~0.3 us a call: the ratio at small B is mostly that).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ffcompile as ff
from ffcompile.codegen.llvm import backend
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import BatchRange
from ffcompile.passes.decompose import decompose
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory

RNG = np.random.default_rng(0)


def _rows(n, width=512):
    return RNG.standard_normal((n, width)).astype(np.float32)


# name -> (function, arguments at batch size n; the first has the batch axis 0, the others none)
CASES = {
    "softmax over rows": (lambda x: ff.softmax(x, axis=-1), lambda n: [_rows(n)]),
    "bias + tanh": (lambda x, b: ff.tanh(x + b), lambda n: [_rows(n), _rows(1)[0]]),
    "sum over the batch": (lambda x: x.sum(axis=0), lambda n: [_rows(n)]),
    "transpose": (lambda x: ff.exp(x).T, lambda n: [_rows(n)]),
    "large map (pool split)": (lambda x: ff.sin(x) * 2.0, lambda n: [_rows(n, 4096)]),
}


def programs(fn, make, sizes):
    """The symbolic executable and one fixed-size executable per size."""
    example = make(3)
    batch_dim = (0,) + (None,) * (len(example) - 1)
    graph = decompose(ff.compile(fn, batch_dim=batch_dim, backend="numpy").lower(*example).symbolic)
    schedule = fuse(graph)
    symbolic = backend.LLVMExecutable(schedule, plan_memory(schedule, batch=BatchRange(256)))
    fixed = {}
    for n in sizes:
        concrete = fuse(specialize(graph, {"B": n}))
        fixed[n] = backend.LLVMExecutable(concrete, plan_memory(concrete))
    return symbolic, fixed


def time_pair(first, second, args, calls: int, rounds: int) -> tuple[float, float]:
    """Median seconds a call of each, rounds alternating which goes first."""
    times = ([], [])
    for r in range(rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            executable = (first, second)[k]
            start = time.perf_counter()
            for _ in range(calls):
                executable.call_objects(args)
            times[k].append((time.perf_counter() - start) / calls)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.symbolic_kernels", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="8,128")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", default=",".join(CASES))
    options = parser.parse_args(argv)
    sizes = [int(n) for n in options.sizes.split(",")]
    print("backend llvm; one symbolic program vs a program per size, measured side by side in one run")
    print("| kernel | B | symbolic us | fixed us | symbolic / fixed |")
    print("|---|---|---|---|---|")
    for name in options.cases.split(","):
        fn, make = CASES[name]
        symbolic, fixed = programs(fn, make, sizes)
        for n in sizes:
            args = tuple(make(n))
            for got, want in zip(symbolic.call_objects(args), fixed[n].call_objects(args), strict=True):
                np.testing.assert_allclose(got, want, rtol=3e-5, atol=1e-5)
            s, f = time_pair(symbolic, fixed[n], args, options.calls, options.rounds)
            print(f"| {name} | {n} | {s * 1e6:.2f} | {f * 1e6:.2f} | {s / f:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
