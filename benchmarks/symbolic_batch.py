"""A symbolic batch size (batch_dim=) vs one program per size, side by side in one run.

    python -m benchmarks.symbolic_batch [--backend llvm] [--models digits,mnist,deep]
                                        [--steps 20] [--rounds 5] [--epoch 1797]
                                        [--arena-models xor,digits,mnist,deep]

1. Step time: each model's training step (SGD with momentum) compiled with
   batch_dim=0 and without, at the zoo's batch size, timed in rounds that
   alternate which goes first; the median step time of each and their ratio.
2. An epoch of digits whose last batch is ragged (1797 samples, batches of 64:
   28 full batches and one of 5), each variant compiled afresh (the on-disk
   LLVM cache is off for this run): traces, programs built, and total time,
   after an untimed warm-up epoch of each (else the one-time costs of the
   first compile in the process, LLVM's start-up, fall on whichever runs first).
3. Cold compile: the first call of each model's step (trace, stages, code
   generation) with batch_dim=0 and without, rounds alternating; median seconds.
4. Arena: the planned arena of each model's step at B = 1, 7, 64, 129, the one
   program's plan (linear in B) over the per-size plan of that size.

On a backend with one program for every batch size (LLVM), batch_dim= builds one;
on the others (NumPy), one per size that shares the trace.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.registry import BACKENDS
from ffcompile.ir.symbolic import bytes_at


def _step(model: str, backend: str, symbolic: bool):
    w = zoo.get(model)
    options = dict(batch_dim=0) if symbolic else {}
    return w, ff.compile_train_step(w.loss, ff.optim.SGD(0.01, momentum=0.9), backend=backend, **options)


def step_times(model: str, backend: str, steps: int, rounds: int) -> tuple[float, float]:
    """Median seconds per step of the symbolic and the fixed-size step, rounds alternating."""
    runs = {}
    for symbolic in (True, False):
        w, step = _step(model, backend, symbolic)
        params, x, y = w.example_inputs()
        state = step.init(params)
        step(params, state, x, y)  # compile and warm up
        runs[symbolic] = (step, params, state, x, y)
    times = {True: [], False: []}
    for r in range(rounds):
        for symbolic in ((True, False) if r % 2 == 0 else (False, True)):
            step, params, state, x, y = runs[symbolic]
            start = time.perf_counter()
            for _ in range(steps):
                step(params, state, x, y)
            times[symbolic].append((time.perf_counter() - start) / steps)
    return statistics.median(times[True]), statistics.median(times[False])


def ragged_epoch(backend: str, samples: int, symbolic: bool) -> tuple[int, int, float]:
    """(traces, programs, seconds) of one epoch of digits from a fresh compile."""
    w, step = _step("digits", backend, symbolic)
    params = w.init(0)
    state = step.init(params)
    x, y = w.batch(0, samples)
    start = time.perf_counter()
    for lo in range(0, samples, w.batch_size):
        step(params, state, x[lo:lo + w.batch_size], y[lo:lo + w.batch_size])
    seconds = time.perf_counter() - start
    return step.compiled.trace_count, step.compiled.signatures, seconds


def cold_compiles(model: str, backend: str, rounds: int) -> tuple[float, float]:
    """Median seconds of the first call of a fresh symbolic and fixed-size step, rounds alternating."""
    times = {True: [], False: []}
    for r in range(rounds):
        for symbolic in ((True, False) if r % 2 == 0 else (False, True)):
            w, step = _step(model, backend, symbolic)
            params, x, y = w.example_inputs()
            state = step.init(params)
            start = time.perf_counter()
            step(params, state, x, y)
            times[symbolic].append(time.perf_counter() - start)
    return statistics.median(times[True]), statistics.median(times[False])


ARENA_SIZES = (1, 7, 64, 129)


def arena_ratios(model: str, backend: str) -> list[float] | str:
    """The symbolic step's planned arena at each of ARENA_SIZES over the per-size plan's
    (or why the step is a program per size)."""
    w, symbolic = _step(model, backend, True)
    _, fixed = _step(model, backend, False)
    params = w.init(0)
    state = symbolic.init(params)
    lowered = symbolic.lower(params, state, *w.batch(0, 3))
    if lowered.per_size is not None:
        return lowered.per_size
    plan = lowered.memory
    ratios = []
    for n in ARENA_SIZES:
        per_size = fixed.lower(params, state, *w.batch(0, n)).memory.arena_bytes
        ratios.append(bytes_at(plan.arena_bytes, n) / max(per_size, 1))
    return ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.symbolic_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="llvm", choices=sorted(BACKENDS))
    parser.add_argument("--models", default="digits,mnist,deep")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epoch", type=int, default=1797, help="samples in the ragged epoch of digits")
    parser.add_argument("--arena-models", default="xor,digits,mnist,deep")
    args = parser.parse_args(argv)
    cache = os.environ.get("FFCOMPILE_CACHE_DIR")
    os.environ["FFCOMPILE_CACHE_DIR"] = ""  # every compile is cold: the epoch counts real compiles
    try:
        _report(args)
    finally:  # a caller's process (the smoke test's) keeps its cache
        if cache is None:
            del os.environ["FFCOMPILE_CACHE_DIR"]
        else:
            os.environ["FFCOMPILE_CACHE_DIR"] = cache
    return 0


def _report(args) -> None:
    print(f"backend {args.backend}; ratios measured side by side in one run")
    print("| model | batch | symbolic ms | fixed ms | symbolic / fixed |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        symbolic, fixed = step_times(model, args.backend, args.steps, args.rounds)
        print(f"| {model} | {zoo.get(model).batch_size} | {symbolic * 1e3:.3f} | {fixed * 1e3:.3f} | "
              f"{symbolic / fixed:.3f} |")
    print(f"\nragged epoch of digits: {args.epoch} samples in batches of {zoo.get('digits').batch_size}")
    print("| variant | traces | programs | epoch s |")
    print("|---|---|---|---|")
    for symbolic in (False, True):  # warm-up, untimed
        ragged_epoch(args.backend, zoo.get("digits").batch_size + 1, symbolic)
    epochs = {}
    for symbolic in (False, True):
        traces, programs, seconds = epochs[symbolic] = ragged_epoch(args.backend, args.epoch, symbolic)
        print(f"| {'batch_dim=0' if symbolic else 'per size'} | {traces} | {programs} | {seconds:.3f} |")
    print(f"epoch time symbolic / per size: {epochs[True][2] / epochs[False][2]:.3f}")
    print("\ncold compile (first call of a fresh step, disk cache off), median of rounds")
    print("| model | symbolic s | fixed s | symbolic / fixed |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        symbolic, fixed = cold_compiles(model, args.backend, args.rounds)
        print(f"| {model} | {symbolic:.3f} | {fixed:.3f} | {symbolic / fixed:.3f} |")
    print("\nplanned arena of the step: symbolic plan at B / per-size plan")
    print("| model | " + " | ".join(f"B={n}" for n in ARENA_SIZES) + " |")
    print("|---|" + "---|" * len(ARENA_SIZES))
    for model in filter(None, args.arena_models.split(",")):
        ratios = arena_ratios(model, args.backend)
        shown = [f"per size: {ratios}"] if isinstance(ratios, str) else [f"{r:.3f}" for r in ratios]
        print(f"| {model} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
