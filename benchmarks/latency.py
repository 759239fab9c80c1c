"""Latency: `import ffcompile`, compiling the zoo's training steps cold and from the disk
cache, and the ordinary call's overhead over a bound one (issue 19 items 3 and 4).

    python -m benchmarks.latency [--models xor,mnist] [--repeats 5] [--calls 20000]

Each import and compile runs in a fresh interpreter, as a user's first call does: "first on
host" with an empty disk cache; "cold" with no compiled code but what is per host, not per
program (the GEMM calibration, and the runtime modules: the thread pool, the fast call's
checker, the packed GEMM functions); "cache" with the one the cold run filled; the time is the first
call of `compile_train_step(w.loss, SGD)` (tracing, every stage, code generation or the
cache load, imports the call triggers, and one step), as the process's CPU time (all its
threads: on a loaded machine, wall time also counts waiting for a core; it is printed
too), with the `cf.stats()` stage times (wall) of that run. "setup" is what comes before
that call, from cache: `compile_train_step` and `init`, which import the backend (and
llvmlite). Children keep compiled bytecode (in a temporary PYTHONPYCACHEPREFIX), as an
installed package does. The call overhead is measured in this process: the xor step (and forward) called
with its arguments against the same program bound to them (one native call), minimum over
repeats, timed by this thread's CPU time (time.thread_time: a call on a loaded machine
waits for a core, which wall time would count). Compile timings are medians of wall time;
the load average is printed with them, since on a loaded machine they grow.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

_IMPORT = ("import time; t = time.process_time(); import numpy; n = time.process_time(); import ffcompile; "
           "print(n - t, time.process_time() - t)")


def _child_compile(model: str) -> None:
    """The first call of the model's SGD training step, in this fresh interpreter (JSON)."""
    start = time.process_time()
    import ffcompile as ff
    from ffcompile import zoo

    imported = time.process_time()
    workload = zoo.get(model)
    params, x, y = workload.example_inputs()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01))
    state = step.init(params)
    began, began_wall = time.process_time(), time.perf_counter()
    step(params, state, x, y)
    first, wall = time.process_time() - began, time.perf_counter() - began_wall
    stats = step._compiled.stats()
    # a hit's graph stages are the load of their artifacts (stage_cache.py), the stages' own 0
    stages = {"trace": stats.trace_seconds, "cache": stats.cache_seconds or 0.0,
              **{r.name: r.seconds for r in stats.stages}}
    print(json.dumps({"import": imported - start, "setup": began - imported, "first_call": first, "wall": wall,
                      "stages": stages}))


# Children read and write compiled bytecode in this directory, as an installed package's
# imports do (an environment with PYTHONDONTWRITEBYTECODE would compile every module from
# source in every child: `import ffcompile` 3-4x slower); warmed by main() before measuring.
@functools.cache
def _bytecode_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ffcompile-latency-pyc-")


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": _bytecode_dir().name, **extra}


def _run_child(args: list[str], cache_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.latency", *args], env=_child_env(FFCOMPILE_CACHE_DIR=cache_dir),
                         check=True, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    return json.loads(out.stdout.splitlines()[-1])


def measure_imports(repeats: int) -> tuple[float, float]:
    """Median seconds of `import numpy` and of `import numpy; import ffcompile`, fresh each."""
    numpy_s, total_s = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _IMPORT], env=_child_env(), check=True, capture_output=True,
                             text=True)
        numpy_time, total = map(float, out.stdout.split())
        numpy_s.append(numpy_time)
        total_s.append(total)
    return statistics.median(numpy_s), statistics.median(total_s)


def measure_compiles(model: str, repeats: int) -> dict[str, dict]:
    """Median first-call seconds and stage times: "first" on this host (an empty disk cache: the
    GEMM calibration and the host's runtime modules built too), "cold" (no compiled code but
    what is per host, not per program: the GEMM calibration and the runtime modules, the
    thread pool, fast call and packed GEMM functions, found by their entries' metadata:
    cache.host_runtime_entries), and from the disk cache the cold run filled."""
    from ffcompile.codegen.llvm.cache import host_runtime_entries

    runs: dict[str, list[dict]] = {"first": [], "cold": [], "cache": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as first_dir, tempfile.TemporaryDirectory() as cache_dir:
            runs["first"].append(_run_child(["--child", model], first_dir))
            for found in [*Path(first_dir).glob("gemm-calibration-*.json"), *host_runtime_entries(first_dir)]:
                shutil.copy(found, cache_dir)
            for kind in ("cold", "cache"):
                runs[kind].append(_run_child(["--child", model], cache_dir))
    result = {}
    for kind, found in runs.items():
        stages = {name: statistics.median(r["stages"][name] for r in found) for name in found[0]["stages"]}
        result[kind] = {"first_call": statistics.median(r["first_call"] for r in found),
                        "setup": statistics.median(r["setup"] for r in found),
                        "wall": statistics.median(r["wall"] for r in found),
                        "import": statistics.median(r["import"] for r in found), "stages": stages}
    return result


def measure_calls(calls: int, repeats: int = 7) -> dict[str, float]:
    """Microseconds per call of the xor step and forward, with arguments and bound."""
    import ffcompile as ff
    from ffcompile import zoo

    workload = zoo.get("xor")
    params, x, y = workload.example_inputs()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01))
    state = step.init(params)
    step(params, state, x, y)
    bound_step = step.bind(params, state, x, y)
    forward = ff.compile(workload.predict)
    forward(params, x)
    bound_forward = forward.bind(params, x)

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=calls, repeat=repeats, timer=time.thread_time)) / calls * 1e6

    timings = {}
    for _ in range(2):  # interleaved: a noisy spell hits both kinds
        for name, fn in [("step", lambda: step(params, state, x, y)), ("step bound", bound_step),
                         ("forward", lambda: forward(params, x)), ("forward bound", bound_forward)]:
            timings[name] = min(timings.get(name, float("inf")), best(fn))
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="xor,digits,mnist,deep,wide,two_tower")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per measurement")
    parser.add_argument("--calls", type=int, default=20000, help="calls per timing of the call overhead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child_compile(args.child)
        return 0
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cpus)")
    with tempfile.TemporaryDirectory() as cache_dir:  # fills the bytecode directory
        _run_child(["--child", "xor"], cache_dir)
    numpy_s, total_s = measure_imports(max(args.repeats, 3))
    print(f"\nimport numpy: {numpy_s * 1e3:.0f} ms; import numpy + ffcompile: {total_s * 1e3:.0f} ms "
          f"(ffcompile's own: {(total_s - numpy_s) * 1e3:.0f} ms; CPU time)\n")
    print("| model | first on host ms | cold first call ms | from cache ms | setup ms | wall: first, cold, cache ms | "
          "cold: trace, graph stages, lower ms | cache: trace, graph stages, lower ms |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        found = measure_compiles(model, args.repeats)
        cells = []
        for kind in ("cold", "cache"):
            stages = found[kind]["stages"]
            graph = sum(v for k, v in stages.items() if k not in ("trace", "lower"))
            cells.append(f"{stages['trace'] * 1e3:.1f}, {graph * 1e3:.1f}, {stages.get('lower', 0) * 1e3:.1f}")
        print(f"| {model} | {found['first']['first_call'] * 1e3:.1f} | {found['cold']['first_call'] * 1e3:.1f} | "
              f"{found['cache']['first_call'] * 1e3:.1f} | {found['cache']['setup'] * 1e3:.1f} | "
              f"{found['first']['wall'] * 1e3:.0f}, {found['cold']['wall'] * 1e3:.0f}, {found['cache']['wall'] * 1e3:.0f} | "
              f"{cells[0]} | {cells[1]} |")
    calls = measure_calls(args.calls)
    print("\n| xor | with arguments us | bound us | overhead us | ratio |")
    print("|---|---|---|---|---|")
    for name in ("step", "forward"):
        plain, bound = calls[name], calls[f"{name} bound"]
        print(f"| {name} | {plain:.2f} | {bound:.2f} | {plain - bound:.2f} | {plain / bound:.1f}x |")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
