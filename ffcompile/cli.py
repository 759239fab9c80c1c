"""The `ffcompile` command.

    ffcompile dump MODEL [--format text|dot|python|optimized|schedule|memory|stats|llvm|asm] [--train]
                   [--batch N] [--after PASS|all]
    ffcompile plan MODEL [--strategy S] [--budget 50%|BYTES] [--sweep] [--plot FILE.png] [--batch N]
    ffcompile bench MODEL [--mode train|infer|both] [--contenders A,B] [--steps N] [--csv FILE] ...
    ffcompile profile MODEL [--train] [--steps N] [--threads N] [--batch N]
    ffcompile report MODEL [--train|--grad] [--budget 50%|BYTES] [--sweep] [--profile] [--batch N] -o FILE.html
    ffcompile list

MODEL is a zoo name (`ffcompile list`), a Python file defining `model`,
`example_inputs()` and, for --train, `loss(params, x, y)` (docs/cli.md), or an
ONNX file (docs/onnx.md).
Subcommands are registered in `build_parser`, one function each.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType

from . import optim, zoo
from .api import compile
from .codegen.registry import get_backend
from .distributed import DEFAULT_BUCKET_BYTES, DataParallel
from .pipeline import arena_of, program_of
from .transforms import value_and_grad
from .codegen.llvm.blas import set_blas_threads
from .codegen.llvm.export import ExportError
from .passes.remat import STRATEGIES, frontier, remat
from .train import compile_train_step

FORMATS = ("text", "dot", "python", "optimized", "schedule", "memory", "stats", "llvm", "asm")


class TargetError(Exception):
    """MODEL names neither a zoo entry nor a usable model file."""


def load_model_file(path: str) -> ModuleType:
    """Import a model file and check it follows the convention of docs/cli.md."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [name for name in ("model", "example_inputs") if not callable(getattr(module, name, None))]
    if missing:
        raise TargetError(f"{path}: a model file must define {' and '.join(missing)} (see docs/cli.md)")
    return module


def resolve(target: str):
    """A zoo workload or a loaded model file: both have model, example_inputs() and loss."""
    if target in zoo.names():
        return zoo.get(target)
    if target.endswith((".py", ".onnx")) and not os.path.isfile(target):
        raise TargetError(f"model file {target!r} does not exist")
    if target.endswith(".py"):
        return load_model_file(target)
    if target.endswith(".onnx"):
        from .onnx.target import OnnxFile  # needs the onnx extra

        return OnnxFile(target)
    raise TargetError(f"unknown model {target!r}: not a zoo entry ({', '.join(zoo.names())}), "
                      "a .py nor an .onnx file")


def _inputs(target, batch: int | None) -> tuple:
    # Zoo entries trace on placeholder weights: dumping `wide` draws no 100 MB of parameters.
    if isinstance(target, zoo.Workload):
        return target.placeholder_inputs(batch)
    if batch is not None:
        return target.example_inputs(batch_size=batch)
    return target.example_inputs()


def _loss(target, model: str, why: str, hint: str = ""):
    """The target's loss(params, x, y), or a TargetError saying what needed it."""
    loss = getattr(target, "loss", None)
    if not callable(loss):
        raise TargetError(f"{model}: {why} needs a loss(params, x, y) function{hint}")
    return loss


def _weighted_inputs(target, batch: int | None) -> tuple:
    """Inputs with real weights, for runs that time the program (zoo placeholders are zeros)."""
    if isinstance(target, zoo.Workload):
        return target.example_inputs(batch_size=batch)
    return _inputs(target, batch)


def _forward(target):
    def forward(params, x):
        return target.model(params, *x) if isinstance(x, tuple) else target.model(params, x)

    return forward


def cmd_dump(args) -> int:
    target = resolve(args.model)
    params, x, y = _inputs(target, args.batch)
    after = None if args.after is None else ("all" if args.after == "all" else args.after.split(","))
    if args.data_parallel is not None:  # the whole step, with its all_reduce buckets
        step = compile_train_step(_loss(target, args.model, "--data-parallel"), optim.SGD(0.01), dump_after=after,
                                  data_parallel=DataParallel(True, args.data_parallel))
        lowered = step.lower(params, step.init(params), x, y)
    elif args.train:
        lowered = compile(value_and_grad(_loss(target, args.model, "--train")), dump_after=after).lower(params, x, y)
    else:
        lowered = compile(_forward(target), dump_after=after).lower(params, x)
    if after is not None:
        # Each graph stage's dump parses back on its own; the `//` headers are IR comments.
        for dump in lowered.dumps:
            sys.stdout.write(f"// ---- after {dump.file_name}\n{dump.text}")
        return 0
    views = {
        "text": lambda: lowered.ir,
        "dot": lambda: lowered.graph.to_dot(),
        "python": lambda: lowered.source,
        "optimized": lambda: lowered.optimized_ir,
        "schedule": lambda: str(lowered.schedule),
        "memory": lambda: str(lowered.memory),
        "stats": lambda: str(lowered.stats()),
        "llvm": lambda: lowered.llvm_ir,
        "asm": lambda: lowered.asm,
    }
    sys.stdout.write(views[args.format]())
    return 0


def parse_budget(text: str) -> int | float:
    """'50%' -> 0.5 (of store_all's peak); '123456' -> bytes."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else int(text)
    except ValueError:
        raise ValueError(f"--budget must be a percentage like 50% or a byte count, got {text!r}") from None


def cmd_plan(args) -> int:
    """The remat plan of a zoo model's training step (value_and_grad of its loss)."""
    target = resolve(args.model)
    loss = _loss(target, args.model, "plan")
    inputs = _weighted_inputs(target, args.batch) if args.sweep else _inputs(target, args.batch)
    graph = compile(value_and_grad(loss)).lower(*inputs).optimized
    if not args.sweep:
        budget = None if args.budget is None else parse_budget(args.budget)
        strategy = args.strategy or ("optimal" if budget is not None else "store_all")
        result, plan = remat(graph, strategy, budget, args.time_limit, arena_of(get_backend(None)))
        sys.stdout.write(str(plan))
        rows = [(strategy, result, plan)]
    else:
        rows = frontier(graph, time_limit=args.time_limit, peak_of=arena_of(get_backend(None)))
        sys.stdout.write(format_frontier(rows, [_seconds_per_step(result, inputs) for _, result, _ in rows]))
    if args.plot:
        plot_study(rows, args.plot, f"{args.model}: training step")
        print(f"wrote {args.plot}")
    return 0


def _seconds_per_step(graph, inputs) -> float:
    """Best of five runs of the default backend's program on the example inputs, after a warm-up."""
    import time

    from .tree import tree_flatten

    program = program_of(graph, get_backend(None))
    leaves = tree_flatten(tuple(inputs))[0]
    program.call(leaves)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        program.call(leaves)
        best = min(best, time.perf_counter() - start)
    return best


def format_frontier(rows, seconds=None) -> str:
    """The frontier as a table: peak bytes vs extra FLOPs (and time per step when measured)."""
    lines = [f"{'plan':<28} {'peak bytes':>12} {'of store_all':>12} {'extra FLOPs':>14} {'recomputed':>10}"
             + (f" {'ms/step':>9}" if seconds else "")]
    for k, (label, _, plan) in enumerate(rows):
        line = (f"{label:<28} {plan.peak_bytes:>12} {plan.peak_bytes / max(plan.store_all_peak, 1):>12.1%} "
                f"{plan.extra_flops:>14} {len(plan.recomputed):>10}")
        lines.append(line + (f" {1e3 * seconds[k]:>9.2f}" if seconds else ""))
    return "\n".join(lines) + "\n"


def plot_study(rows, path: str, title: str) -> None:
    """A PNG with the frontier (peak vs extra FLOPs) and live arena bytes over the kernel steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .passes.fuse import fuse
    from .passes.memory import plan_memory

    fig, (front, time_line) = plt.subplots(1, 2, figsize=(13, 5))
    for label, _, plan in rows:
        front.scatter(plan.extra_flops, plan.peak_bytes / 1024, label=label,
                      marker="o" if label.startswith("optimal") else "s")
    optimal = sorted((p.extra_flops, p.peak_bytes / 1024) for label, _, p in rows if label.startswith("optimal"))
    if optimal:
        front.plot(*zip(*optimal), color="gray", lw=0.8, zorder=0)
    front.set(xlabel="extra FLOPs (recomputation)", ylabel="arena peak (KiB)", title="memory vs recompute frontier")
    front.legend(fontsize=7)
    for label, result, plan in rows:
        if label in ("store_all", "sqrt") or label == _cheapest_optimal_at_most(rows, "sqrt"):
            time_line.plot([b / 1024 for b in plan_memory(fuse(result)).timeline], label=label, lw=1)
    time_line.set(xlabel="kernel step", ylabel="live arena bytes (KiB)", title="live bytes over the schedule")
    time_line.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cheapest_optimal_at_most(rows, reference: str) -> str | None:
    """The optimal plan with the fewest extra FLOPs whose peak is at most the reference strategy's."""
    peaks = {label: plan.peak_bytes for label, _, plan in rows}
    fits = [(plan.extra_flops, label) for label, _, plan in rows
            if label.startswith("optimal") and reference in peaks and plan.peak_bytes <= peaks[reference]]
    return min(fits)[1] if fits else None


def cmd_export(args) -> int:
    target = resolve(args.model)
    params, x, y = _inputs(target, args.batch)
    if args.train:
        step = compile_train_step(_loss(target, args.model, "--train"), optim.SGD(args.lr), backend="llvm")
        lowered = step.lower(params, step.init(params), x, y)
    else:
        lowered = compile(_forward(target), backend="llvm").lower(params, x)
    name = args.name or re.sub(r"\W", "_", os.path.splitext(os.path.basename(args.model))[0])
    library = lowered.export(args.output, name)
    print(f"wrote {library.object_path}, {library.library_path}, {library.header_path}")
    return 0


def cmd_profile(args) -> int:
    """Per-kernel time of a model's native program: its forward pass, or with --train its SGD
    training step (ffcompile/profile.py)."""
    target = resolve(args.model)
    if args.threads is not None:
        set_blas_threads(args.threads)
    params, x, y = _weighted_inputs(target, args.batch)
    if args.train:
        step = compile_train_step(_loss(target, args.model, "--train"), optim.SGD(args.lr), backend="llvm")
        report = step.profile(params, step.init(params), x, y, steps=args.steps)
    else:
        report = compile(_forward(target), backend="llvm").lower(params, x).profile(params, x, steps=args.steps)
    sys.stdout.write(str(report))
    return 0


def cmd_report(args) -> int:
    """A self-contained HTML report of every stage (docs/report.md): the forward pass, with
    --grad value_and_grad of the loss (what `plan` plans), with --train the SGD training
    step; --budget plans its memory, --sweep adds the frontier of its remat plans,
    --profile the time of each kernel."""
    target = resolve(args.model)
    budget = None if args.budget is None else parse_budget(args.budget)
    timed = args.profile or args.sweep
    params, x, y = _weighted_inputs(target, args.batch) if timed else _inputs(target, args.batch)

    def lower(memory_budget):
        if args.train:
            step = compile_train_step(_loss(target, args.model, "--train"), optim.SGD(args.lr),
                                      dump_after="all", memory_budget=memory_budget)
            state = step.init(params)
            return step.lower(params, state, x, y), lambda: step.profile(params, state, x, y, steps=args.steps)
        if args.grad:
            fn, inputs = value_and_grad(_loss(target, args.model, "--grad")), (params, x, y)
        else:
            fn, inputs = _forward(target), (params, x)
        lowered = compile(fn, dump_after="all", memory_budget=memory_budget).lower(*inputs)
        return lowered, lambda: lowered.profile(*inputs, steps=args.steps)

    lowered, profile = lower(budget)
    rows = None
    if args.sweep:
        graph = lowered.optimized if budget is None else lower(None)[0].optimized
        rows = frontier(graph, time_limit=args.time_limit, peak_of=arena_of(get_backend(None)))
    path = lowered.report(args.output, frontier=rows, profile=profile() if args.profile else None)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return 0


@dataclass(frozen=True)
class FileWorkload:
    """A model file where the benchmark harness takes a zoo workload. It names no
    `criterion`, so the peers (which rebuild zoo MLPs) report it unsupported."""

    name: str
    module: ModuleType

    @property
    def model(self):
        return self.module.model

    @property
    def loss(self):
        return self.module.loss

    def example_inputs(self, batch_size: int | None = None) -> tuple:
        return _inputs(self.module, batch_size)


def cmd_bench(args) -> int:
    """The benchmark harness (ffcompile.bench) on one zoo model or model file."""
    from .bench import harness

    contenders, modes, options = harness.configure(args)
    target = resolve(args.model)
    if not isinstance(target, zoo.Workload):
        if "train" in modes:
            _loss(target, args.model, "benchmarking training", " (--mode infer times inference alone)")
        target = FileWorkload(os.path.basename(args.model), target)
    harness.run([target], contenders, modes, options, args.csv, args.plot)
    return 0


def cmd_list(args) -> int:
    width = max(len(n) for n in zoo.names())
    for name in zoo.names():
        w = zoo.get(name)
        print(f"{name:<{width}}  batch {w.batch_size:<4} {w.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffcompile", description="A compiler for deep feedforward networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dump = commands.add_parser("dump", help="print the IR (or DOT, or generated NumPy code) of a model")
    dump.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    dump.add_argument("--format", choices=FORMATS, default="text",
                      help="text: the traced IR; dot: Graphviz; python: the NumPy backend's code; "
                           "optimized: the IR after the passes; schedule: the fused kernels; "
                           "memory: the arena plan; stats: per-pass node counts, kernels, bytes; "
                           "llvm, asm: the LLVM backend's IR and host assembly")
    dump.add_argument("--train", action="store_true", help="dump value_and_grad of the loss (forward + adjoint)")
    dump.add_argument("--data-parallel", type=int, nargs="?", const=DEFAULT_BUCKET_BYTES, default=None,
                      metavar="BUCKET_BYTES", help="dump the SGD training step data-parallel over MPI's COMM_WORLD "
                      "(needs mpi4py), with its all_reduce buckets (default %(const)s bytes each)")
    dump.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    dump.add_argument("--after", metavar="PASS", default=None,
                      help="print the IR after each named pass (comma-separated) or 'all', numbered in order")
    dump.set_defaults(run=cmd_dump)

    plan = commands.add_parser("plan", help="plan memory vs recompute for a model's training step")
    plan.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    plan.add_argument("--strategy", choices=STRATEGIES, default=None,
                      help="default: optimal with --budget, else store_all")
    plan.add_argument("--budget", default=None, metavar="B", help="arena budget: 50%% of store_all's peak, or bytes")
    plan.add_argument("--sweep", action="store_true",
                      help="the whole frontier: every strategy and a sweep of budgets, with time per step")
    plan.add_argument("--plot", default=None, metavar="FILE.png", help="write the frontier and memory timeline")
    plan.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    plan.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="solver time limit (seconds)")
    plan.set_defaults(run=cmd_plan)

    export = commands.add_parser("export", help="write an object file, a shared library and a C header")
    export.add_argument("model", metavar="MODEL", help="a zoo name or a model .py file")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into")
    export.add_argument("--name", default=None, help="library name (default: the model's)")
    export.add_argument("--train", action="store_true", help="export the SGD training step, not inference")
    export.add_argument("--lr", type=float, default=0.1, help="learning rate of the exported step")
    export.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    export.set_defaults(run=cmd_export)

    profile = commands.add_parser("profile", help="time each kernel of a model's native program")
    profile.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    profile.add_argument("--train", action="store_true", help="profile the SGD training step instead of inference")
    profile.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the --train step")
    profile.add_argument("--steps", type=int, default=100, metavar="N", help="timed runs (default 100)")
    profile.add_argument("--threads", type=int, default=None, metavar="N",
                         help="BLAS threads (default: the backend's, 1)")
    profile.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    profile.set_defaults(run=cmd_profile)

    report = commands.add_parser("report", help="write a self-contained HTML report of every compiler stage")
    report.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    report.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the report to write")
    what = report.add_mutually_exclusive_group()
    what.add_argument("--train", action="store_true", help="the SGD training step instead of inference")
    what.add_argument("--grad", action="store_true",
                      help="value_and_grad of the loss (forward + adjoint, the graph `plan` plans)")
    report.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the --train step")
    report.add_argument("--budget", default=None, metavar="B",
                        help="plan memory vs recompute: 50%% of store_all's peak, or bytes")
    report.add_argument("--sweep", action="store_true", help="add the frontier of every remat strategy and budget")
    report.add_argument("--profile", action="store_true", help="add the time of each kernel (native code)")
    report.add_argument("--steps", type=int, default=100, metavar="N", help="timed runs with --profile")
    report.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="remat solver time limit")
    report.add_argument("--batch", type=int, default=None, metavar="N", help="batch size (default: the model's)")
    report.set_defaults(run=cmd_report)

    # Imported here, not by `import ffcompile`: the harness is a tool on top of the library.
    from .bench.harness import add_arguments as add_bench_arguments

    bench = commands.add_parser("bench", help="time ffcompile against hand NumPy, PyTorch and JAX on a model",
                                description="The benchmark harness of benchmarks/README.md on one model.")
    bench.add_argument("model", metavar="MODEL", help="a zoo name (see `ffcompile list`) or a model .py file")
    add_bench_arguments(bench)
    bench.set_defaults(run=cmd_bench)

    listing = commands.add_parser("list", help="list the zoo models")
    listing.set_defaults(run=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch", None) is not None and args.batch < 1:
        parser.error(f"--batch must be positive, got {args.batch}")
    try:
        return args.run(args)
    except (TargetError, ExportError, ValueError) as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
