"""LLVM backend vs the NumPy reference on the zoo's MLP training steps, side by side.

    python -m benchmarks.llvm_vs_numpy [--models digits,mnist] [--steps 30] [--rounds 10]

Each model's training step is value_and_grad(workload.loss), lowered once;
the LLVM executable (its build time is the compile time: lowering, O3, JIT)
and the NumPy reference (`ffcompile.ir.interpret`) run the same graph on
the same batch, and must agree. After warm-up, timing runs in rounds that
alternate which backend goes first, so a noisy machine shows up in both;
the result is the median step time of each and their ratio.

BLAS threads matter: the LLVM code calls SciPy's OpenBLAS, the NumPy
reference NumPy's, each with its own thread pool. Every model is measured
under the thread settings of `--threads` (threadpoolctl limits per library).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import ThreadpoolController

import ffcompile as ff
from ffcompile import zoo
from ffcompile.ir.interpret import interpret
from ffcompile.codegen.llvm import backend
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory
from ffcompile.tree import tree_flatten

# name -> threads per BLAS library ("scipy": the LLVM backend's, "numpy": the reference's).
# "default" changes nothing: the backend pinned SciPy's BLAS (blas.DEFAULT_BLAS_THREADS),
# NumPy's has its own default (one thread per core).
THREAD_SETTINGS = {
    "default": {},
    "1+1": {"scipy": 1, "numpy": 1},
    "2+2": {"scipy": 2, "numpy": 2},
}


def _blas_pools(controller: ThreadpoolController) -> dict[str, object]:
    """The OpenBLAS bundled with scipy and the one bundled with numpy, by owner."""
    pools = {}
    for pool in controller.lib_controllers:
        for owner in ("scipy", "numpy"):
            if pool.user_api == "blas" and f"{owner}.libs" in pool.filepath:
                pools[owner] = pool
    return pools


def _limit(setting: dict[str, int]):
    controller = ThreadpoolController()
    pools = _blas_pools(controller)
    originals = {owner: pool.num_threads for owner, pool in pools.items()}
    for owner, threads in setting.items():
        if owner in pools:
            pools[owner].set_num_threads(threads)
    return lambda: [pools[o].set_num_threads(n) for o, n in originals.items()]


def prepare(model: str):
    workload = zoo.get(model)
    params, x, y = workload.example_inputs()
    graph = ff.compile(ff.value_and_grad(workload.loss)).lower(params, x, y).optimized
    args = tree_flatten((params, x, y))[0]
    start = time.perf_counter()
    schedule = fuse(graph)
    executable = backend.build(schedule, plan_memory(schedule))
    compile_seconds = time.perf_counter() - start
    def reference(*arrays):
        return interpret(graph, arrays)

    for got, expected in zip(executable(*args), reference(*args), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    return executable, reference, args, compile_seconds


def time_side_by_side(runners: dict, args, steps: int, rounds: int, warmup: int = 5) -> dict[str, float]:
    """Median seconds per step of each runner, over rounds alternating the order."""
    for run in runners.values():
        for _ in range(warmup):
            run(*args)
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(rounds):
        for name in order[r % 2:] + order[:r % 2]:
            run = runners[name]
            for _ in range(steps):
                start = time.perf_counter()
                run(*args)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mnist")
    parser.add_argument("--steps", type=int, default=30, help="steps per backend per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", default=",".join(THREAD_SETTINGS),
                        help=f"BLAS thread settings to run: {', '.join(THREAD_SETTINGS)}")
    options = parser.parse_args(argv)
    print(f"{'model':8} {'threads':8} {'numpy ms':>9} {'llvm ms':>8} {'llvm/numpy':>10} {'compile s':>9}")
    for model in options.models.split(","):
        executable, reference, args, compile_seconds = prepare(model)
        for setting in options.threads.split(","):
            restore = _limit(THREAD_SETTINGS[setting])
            try:
                medians = time_side_by_side({"numpy": reference, "llvm": executable}, args,
                                            options.steps, options.rounds)
            finally:
                restore()
            ratio = medians["llvm"] / medians["numpy"]
            print(f"{model:8} {setting:8} {medians['numpy'] * 1e3:9.3f} {medians['llvm'] * 1e3:8.3f} "
                  f"{ratio:10.2f} {compile_seconds:9.2f}")


if __name__ == "__main__":
    main()
