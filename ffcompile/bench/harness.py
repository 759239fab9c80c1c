"""The MLP benchmark: every contender on zoo workloads, side by side in one process.

    python -m ffcompile.bench --model xor,digits,mnist --steps 200 --csv out.csv --plot out.png
    ffcompile bench MODEL --steps 200      # one zoo model or model file (cli.py)

For each workload and mode (train: forward, loss, backward, SGD update with
lr 0.01; infer: forward only) every contender of ffcompile.bench.contenders gets
the same initial parameters and batch. Its first call (preparation included)
is its compile time; after warm-up, timed steps run in rounds that go
round-robin over the contenders (starting one further each round), so a noisy
machine shows up as spread between round medians instead of as a wrong
winner. The BLAS floor row times the step's GEMMs alone with numpy.matmul at
their shapes, in the same rounds. Every round trains from the initial
parameters, and a row is flagged when a timed step's loss was not finite
(timing NaNs measures the wrong thing). Every result is compared with the
reference contender's (first-step loss, or inference outputs). Under the table, what
else ran on the host during each workload's rounds and how far apart its first two CPUs
were (hostload.py: other processes' CPU time, the hypervisor's steal, a cache line's round
trip), so a run on a busy or a split machine says so.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from .. import zoo
from . import hostload
from .contenders import (
    BLAS_FLOOR,
    CONTENDERS,
    REFERENCES,
    TRACEMALLOC,
    Contender,
    Problem,
    Runner,
    gemm_shapes,
)
from .numpy_mlp import Unsupported

MODES = ("train", "infer")
LEARNING_RATE = 0.01


@dataclass
class Cell:
    """One contender on one workload and mode."""

    model: str
    mode: str
    contender: str
    status: str = "ok"  # "ok", "not installed", "unsupported: ...", "error: ..."
    times: list[float] = field(default_factory=list)  # seconds per step, all rounds
    round_medians: list[float] = field(default_factory=list)
    compile_s: float | None = None
    peak_bytes: int | None = None
    memory_note: str = ""
    value: np.ndarray | None = None  # first-step loss, or the inference outputs
    gemm_flops: int | None = None
    ratio: float | None = None  # median / the reference's median
    deviation: float | None = None  # max |value - reference value| / max |reference value|
    diverged: bool = False  # a timed step returned a non-finite loss or output
    host: hostload.HostLoad | None = None  # what else ran while the cell's rounds were timed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


@dataclass(frozen=True)
class Options:
    steps: int = 200  # timed steps per contender and cell, split over the rounds (at least 1 each)
    rounds: int = 10
    warmup: int = 5
    threads: int = os.cpu_count() or 1
    batch: int | None = None
    reference: str | None = None  # None: the first of REFERENCES that ran
    cold_compile: bool = False  # compile caches emptied for this run (see _cold_caches)
    # Pause before each contender's steps in a round, so the worker threads of the previous
    # one's pool (NumPy's and SciPy's OpenBLAS spin ~2^28 cycles after a call; XLA's, OpenMP's)
    # are idle instead of taking this one's cores. deep on 2 cores, one run: ffcompile's round
    # medians 8.2-16.2 ms with 0.05 s, 6.9-7.8 ms with 0.5 s.
    settle: float = 0.25


# ----------------------------------------------------------------- measuring


def _installed(contender: Contender) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in contender.requires)


def prepare_runner(contender: Contender, cell: Cell, problem: Problem, warmup: int):
    """The contender's runner, after its first (compiling) call and the warm-up;
    None if it cannot run."""
    if not _installed(contender):
        cell.status = "not installed"
        return None
    if problem.mode not in contender.modes:
        cell.status = f"unsupported: {contender.name} runs {' and '.join(contender.modes)} only"
        return None
    try:
        start = time.perf_counter()
        runner = contender.prepare(problem)
        value = runner.run()
        cell.compile_s = time.perf_counter() - start
        # Copied before the next call: a result may be a view of a reused buffer.
        # np.asarray first: torch's __array__ takes no copy keyword, which np.array would pass.
        cell.value = None if value is None else np.asarray(value).astype(np.float64)
        for _ in range(warmup):
            runner.run()
    except Unsupported as e:
        cell.status = f"unsupported: {e}"
        return None
    except Exception as e:  # noqa: BLE001 - a contender's failure is a row of the report, not the end of the run
        cell.status = f"error: {type(e).__name__}: {e}"
        return None
    return runner


def _peak_step_bytes(run) -> int:
    """Peak bytes of new allocations during one step (preallocated buffers are not new)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _time_rounds(runners: dict[str, Runner], cells: dict[str, Cell], options: Options) -> None:
    names = list(runners)
    if not names:
        return
    per_round = max(1, options.steps // options.rounds)
    for r in range(options.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runner, times = runners[name], []
            runner.reset()  # every round trains from the initial parameters
            time.sleep(options.settle)
            for _ in range(per_round):
                start = time.perf_counter()
                value = runner.run()
                times.append(time.perf_counter() - start)
            if value is not None and not np.all(np.isfinite(np.asarray(value))):
                cells[name].diverged = True
            cells[name].times += times
            cells[name].round_medians.append(statistics.median(times))


def _compare(cells: list[Cell], reference: str | None) -> None:
    ran = {c.contender: c for c in cells if c.ok}
    # Without a preferred reference in the cell, results are still checked against the first that ran.
    preferred = [reference] if reference else [*REFERENCES, *(n for n in ran if n != BLAS_FLOOR.name)]
    ref = next((ran[n] for n in preferred if n in ran), None)
    if ref is None:
        return
    for cell in ran.values():
        cell.ratio = cell.median / ref.median
        if cell.value is not None and ref.value is not None:
            scale = max(float(np.max(np.abs(ref.value))), np.finfo(np.float32).tiny)
            cell.deviation = float(np.max(np.abs(cell.value - ref.value))) / scale


def run_cell(model, mode: str, contenders: list[Contender], options: Options) -> list[Cell]:
    """Every contender (and the BLAS floor) on one workload and mode. The workload is a
    zoo name, a zoo.Workload, or anything with its name, model, loss and
    example_inputs(batch_size=None) (a model file: cli.FileWorkload)."""
    workload = zoo.get(model) if isinstance(model, str) else model
    model = workload.name
    params, x, y = workload.example_inputs(batch_size=options.batch)
    problem = Problem(workload, mode, params, x, y, LEARNING_RATE, options.threads)
    try:
        flops = sum(2 * m * k * n for m, k, n in gemm_shapes(problem))
    except Unsupported:
        flops = None
    cells, runners = {}, {}
    for contender in [*contenders, BLAS_FLOOR]:
        cell = cells[contender.name] = Cell(model, mode, contender.name, gemm_flops=flops)
        runner = prepare_runner(contender, cell, problem, options.warmup)
        if runner is None:
            print(f"  {model}/{mode} {contender.name}: {cell.status}", file=sys.stderr)
            continue
        runners[contender.name] = runner
        if contender.memory == TRACEMALLOC:
            cell.peak_bytes = _peak_step_bytes(runner.run)
        else:
            cell.memory_note = contender.memory
    with hostload.measured() as load:
        _time_rounds(runners, cells, options)
    for name in runners:
        cells[name].host = load.result
    result = list(cells.values())
    _compare(result, options.reference)
    return result


# ----------------------------------------------------------------- reporting


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.4g}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _gflops(cell: Cell) -> str:
    return "" if cell.gemm_flops is None or not cell.ok else f"{cell.gemm_flops / cell.median / 1e9:.3g}"


def _threads_line(threads: int) -> str:
    from threadpoolctl import threadpool_info

    # The BLAS's kernels too: an AVX-512 host's OpenBLAS runs SkylakeX's, and OPENBLAS_CORETYPE=Haswell
    # gives it an AVX2 host's (the floor beside FFCOMPILE_VECTOR_BITS=256).
    pools = ", ".join(f"{p['internal_api']}={p['num_threads']}"
                      + (f" ({p['architecture']})" if p.get("architecture") else "") for p in threadpool_info())
    return (f"threads: {threads} (ffcompile's pool: {threads}, SciPy's OpenBLAS under it: 1; "
            f"threadpoolctl: {pools}; torch.set_num_threads({threads}); "
            f"jax: XLA's own CPU pool of {os.cpu_count()}, which JAX offers no reliable way to limit)")


def header(options: Options) -> str:
    """Date, machine, versions and settings: what a table is only comparable under."""
    versions = []
    for module in ("numpy", "torch", "jax"):
        if importlib.util.find_spec(module) is not None:
            versions.append(f"{module} {__import__(module).__version__}")
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"{', '.join(versions)}\n{_threads_line(options.threads)}\n"
            f"{options.steps} timed steps per cell in {options.rounds} interleaved rounds "
            f"after {options.warmup} warm-up steps, {options.settle * 1e3:g} ms pause before each "
            f"contender's steps in a round; times in ms; compile caches: "
            + ("cold (an empty inductor cache for this run)" if options.cold_compile else
               "as found on disk (torch.compile may reuse inductor's cache of earlier runs)"))


@contextlib.contextmanager
def _cold_caches(cold: bool):
    """With cold=True, the on-disk compile caches the contenders would reuse start empty."""
    if not cold:
        yield
        return
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as directory:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def markdown(cells: list[Cell]) -> str:
    columns = ["model", "mode", "contender", "median ms", "min ms", "round medians ms",
               "× ref", "compile s", "step peak mem", "GEMM GFLOP/s", "Δ vs ref", "notes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for c in cells:
        if not c.ok:
            row = [c.model, c.mode, c.contender, c.status] + [""] * (len(columns) - 4)
        else:
            spread = f"{_ms(min(c.round_medians))}–{_ms(max(c.round_medians))}"
            row = [c.model, c.mode, c.contender, _ms(c.median), _ms(c.best), spread,
                   "" if c.ratio is None else f"{c.ratio:.3g}",
                   "" if c.compile_s is None else f"{c.compile_s:.3g}",
                   _bytes(c.peak_bytes), _gflops(c),
                   "" if c.deviation is None else f"{c.deviation:.1e}", _notes(c)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def host_lines(cells: list[Cell]) -> str:
    """What else ran on the host during each workload's and mode's timed rounds."""
    seen = {(c.model, c.mode): c.host for c in cells if c.host is not None}
    if not seen:
        return ""
    return (f"host during the timed rounds (/proc/stat: other processes' CPU time and the hypervisor's steal, "
            f"shares of all {os.cpu_count()} CPUs' time; a cache line's round trip between the first two CPUs "
            f"before/after them): "
            + "; ".join(f"{model}/{mode} {load}" for (model, mode), load in seen.items()))


def _notes(cell: Cell) -> str:
    return "non-finite result in timed steps (fewer --steps per round avoids it)" if cell.diverged else ""


CSV_FIELDS = ["model", "mode", "contender", "status", "median_ms", "min_ms", "round_median_min_ms",
              "round_median_max_ms", "ratio_to_reference", "compile_s", "peak_step_bytes",
              "memory_note", "gemm_flops", "first_value", "deviation_from_reference", "host_others",
              "host_steal", "host_round_trip_ns", "notes"]


def write_csv(cells: list[Cell], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        for c in cells:
            timed = c.ok and c.times
            writer.writerow({
                "model": c.model, "mode": c.mode, "contender": c.contender, "status": c.status,
                "median_ms": _ms(c.median) if timed else "", "min_ms": _ms(c.best) if timed else "",
                "round_median_min_ms": _ms(min(c.round_medians)) if timed else "",
                "round_median_max_ms": _ms(max(c.round_medians)) if timed else "",
                "ratio_to_reference": "" if c.ratio is None else f"{c.ratio:.6g}",
                "compile_s": "" if c.compile_s is None else f"{c.compile_s:.6g}",
                "peak_step_bytes": "" if c.peak_bytes is None else c.peak_bytes,
                "memory_note": c.memory_note, "gemm_flops": c.gemm_flops or "",
                # A train step's loss; an inference's outputs are summarized by their sum.
                "first_value": "" if c.value is None else f"{float(np.sum(c.value)):.9g}",
                "deviation_from_reference": "" if c.deviation is None else f"{c.deviation:.3e}",
                "host_others": "" if c.host is None else f"{c.host.others:.4f}",
                "host_steal": "" if c.host is None else f"{c.host.steal:.4f}",
                "host_round_trip_ns": "" if c.host is None else c.host.trips(),
                "notes": _notes(c),
            })


def plot(cells: list[Cell], path: str) -> None:
    """One panel per workload and mode: median step time per contender, whiskers
    from the fastest to the slowest round median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((c.model, c.mode) for c in cells))
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.2 + 0.45 * len(CONTENDERS) * len(groups)),
                             squeeze=False)
    for ax, (model, mode) in zip(axes[:, 0], groups):
        ran = [c for c in cells if (c.model, c.mode) == (model, mode) and c.ok]
        medians = np.array([c.median for c in ran]) * 1e3
        low = medians - np.array([min(c.round_medians) for c in ran]) * 1e3
        high = np.array([max(c.round_medians) for c in ran]) * 1e3 - medians
        ax.barh([c.contender for c in ran], medians, xerr=[np.maximum(low, 0), np.maximum(high, 0)],
                color=["tab:gray" if c.contender == BLAS_FLOOR.name else "tab:blue" for c in ran])
        ax.invert_yaxis()
        ax.set_title(f"{model}: {'training step' if mode == 'train' else 'inference'}")
        ax.set_xlabel("median ms per step (whiskers: range of round medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option but the choice of models: this module's command line and
    `ffcompile bench MODEL` parse the same ones."""
    names = [c.name for c in CONTENDERS]
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--contenders", default=",".join(names),
                        help=f"comma-separated subset of {', '.join(names)}")
    parser.add_argument("--reference", default=None,
                        help=f"contender the ratios and deviations are relative to (default: first of "
                             f"{', '.join(REFERENCES)} that ran)")
    parser.add_argument("--steps", type=int, default=Options.steps, help="timed steps per contender and cell")
    parser.add_argument("--rounds", type=int, default=Options.rounds,
                        help="interleaved rounds the steps are split into")
    parser.add_argument("--warmup", type=int, default=Options.warmup, help="untimed steps after the first call")
    parser.add_argument("--threads", type=int, default=Options.threads, help="threads for every contender")
    parser.add_argument("--settle", type=float, default=Options.settle, metavar="SECONDS",
                        help="pause before each contender's steps in a round, so spinning thread pools idle")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the workload's)")
    parser.add_argument("--cold-compile", action="store_true",
                        help="start compile caches empty, so compile times are cold (torch.compile: slow)")
    parser.add_argument("--csv", metavar="FILE", help="also write the results as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart (matplotlib)")


def _selected(names: str, known: list[str], what: str) -> list[str]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return chosen


def configure(args: argparse.Namespace) -> tuple[list[Contender], tuple[str, ...], Options]:
    """The contenders, modes and options add_arguments parsed; ValueError names a bad one."""
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0 or args.threads < 1 or args.settle < 0:
        raise ValueError("--steps, --rounds and --threads must be positive, --warmup and --settle non-negative")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be positive, got {args.batch}")
    by_name = {c.name: c for c in CONTENDERS}
    contenders = [by_name[n] for n in _selected(args.contenders, list(by_name), "contender")]
    if args.reference and args.reference not in {*by_name, *REFERENCES}:
        raise ValueError(f"unknown reference {args.reference}; choose from {', '.join(by_name)}")
    modes = MODES if args.mode == "both" else (args.mode,)
    options = Options(args.steps, args.rounds, args.warmup, args.threads, args.batch, args.reference,
                      args.cold_compile, args.settle)
    return contenders, modes, options


@contextlib.contextmanager
def thread_limits(threads: int):
    """Every contender gets `threads`, for this block only: OpenBLAS and OpenMP pools through
    threadpoolctl, ffcompile's thread pool (ff.set_num_threads), which owns the cores for
    ffcompile's code, so the SciPy OpenBLAS its generated code calls stays at one thread
    (the pool splits BLAS products itself; the LLVM backend would otherwise pin it to its
    default when it first builds)."""
    from threadpoolctl import threadpool_limits

    from ..codegen.llvm.blas import blas_threads
    from ..codegen.llvm.threadpool import get_num_threads, set_num_threads

    before = get_num_threads()
    set_num_threads(threads)
    try:
        with threadpool_limits(threads), blas_threads(1):
            yield
    finally:
        set_num_threads(before)


def run(models: list, contenders: list[Contender], modes: tuple[str, ...], options: Options,
        csv_path: str | None = None, plot_path: str | None = None) -> list[Cell]:
    """Every model (a zoo name or a workload) in every mode under the same thread
    limits; prints the header and the table, writes the CSV and the plot if asked."""
    cells = []
    with thread_limits(options.threads), _cold_caches(options.cold_compile):
        for model in models:
            for mode in modes:
                print(f"running {getattr(model, 'name', model)}/{mode} ...", file=sys.stderr)
                cells += run_cell(model, mode, contenders, options)
        print(header(options) + "\n\n" + markdown(cells) + "\n\n" + host_lines(cells))
    if csv_path:
        write_csv(cells, csv_path)
    if plot_path:
        plot(cells, plot_path)
    return cells


def main(argv: list[str] | None = None, prog: str = "python -m ffcompile.bench") -> int:
    """Run the benchmark as the command line says; prog names the command in help and errors."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="xor,digits,mnist",
                        help=f"comma-separated zoo workloads ({', '.join(zoo.names())})")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        models = _selected(args.model, zoo.names(), "model")
        contenders, modes, options = configure(args)
    except ValueError as e:
        parser.error(str(e))
    run(models, contenders, modes, options, args.csv, args.plot)
    return 0
