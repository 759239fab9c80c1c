"""Memory vs recompute on a deep tanh MLP and a two-tower DAG: the frontier, and sqrt vs optimal.

    python examples/remat_study.py [--layers 32] [--dag-depth 12] [--width 64] [--batch 32]
                                   [--plot remat_study.png] [--time-limit 10]

For each model's training step (value_and_grad of the loss, float64) it
prints every strategy's arena peak (the NumPy backend's real arena) and extra
FLOPs, then `optimal` over a sweep of budgets, then what `sqrt` and `optimal`
each reach at sqrt's peak, and the same as a Markdown table (docs/remat.md
shows it for `--layers 8 --dag-depth 4 --width 16 --batch 8 --plot ""`, and a
test holds it to what this prints). The figure shows the frontiers and the
live arena bytes over the schedule (no figure with --plot "").
"""
from __future__ import annotations

import argparse

import numpy as np

import ffcompile as ff
from ffcompile.cli import format_frontier, plot_study
from ffcompile.codegen.registry import BACKENDS
from ffcompile.pipeline import arena_of
from ffcompile.passes.decompose import decompose
from ffcompile.passes.remat import frontier, remat
from ffcompile.passes.simplify import simplify

NUMPY_ARENA = arena_of(BACKENDS["numpy"])  # the arena the NumPy backend's program really allocates


def mlp_loss(params, x, y):
    h = x
    for w, b in params[:-1]:
        h = ff.tanh(h @ w + b)
    w, b = params[-1]
    return ff.nn.mse(h @ w + b, y)


def mlp_args(layers: int, width: int = 64, batch: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [(rng.normal(size=(width, width)) / np.sqrt(width), np.zeros(width)) for _ in range(layers)]
    params.append((rng.normal(size=(width, 1)) / np.sqrt(width), np.zeros(1)))
    return params, rng.normal(size=(batch, width)), rng.normal(size=(batch, 1))


def towers_loss(params, image, text):
    """Two tanh towers of different depth, joined by a gated product, then a tanh head."""
    a, b = image, text
    for w in params["image"]:
        a = ff.tanh(a @ w)
    for w in params["text"]:
        b = ff.tanh(b @ w)
    joined = a * ff.sigmoid(b) + b
    for w in params["head"]:
        joined = ff.tanh(joined @ w)
    return (joined * joined).mean()


def towers_args(depth: int = 12, width: int = 64, batch: int = 32, seed: int = 1):
    rng = np.random.default_rng(seed)

    def stack(depth):
        return [rng.normal(size=(width, width)) / np.sqrt(width) for _ in range(depth)]

    params = {"image": stack(depth), "text": stack(depth // 2), "head": stack(2 * depth // 3)}
    return params, rng.normal(size=(batch, width)), rng.normal(size=(batch, width))


def training_graph(loss, args):
    return simplify(decompose(ff.compile(ff.value_and_grad(loss)).lower(*args).graph))


def study(name: str, loss, args, time_limit: float):
    graph = training_graph(loss, args)
    rows = frontier(graph, fractions=(0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15), time_limit=time_limit,
                    peak_of=NUMPY_ARENA)
    print(f"== {name}: {len(graph.nodes)} nodes")
    print(format_frontier(rows))
    sqrt_plan = next(plan for label, _, plan in rows if label == "sqrt")
    result, best = remat(graph, "optimal", sqrt_plan.peak_bytes, time_limit, NUMPY_ARENA)
    rows.append(("optimal@sqrt", result, best))
    print(f"at sqrt's peak of {sqrt_plan.peak_bytes} bytes: sqrt recomputes {sqrt_plan.extra_flops} FLOPs, "
          f"optimal {best.extra_flops} ({best.peak_bytes} bytes, solver {best.solver.status}, "
          f"model {best.solver.model_status}, {best.solver.seconds:.2f}s)\n")
    print(markdown(rows) + "\n")
    return rows


def markdown(rows) -> str:
    """The rows as the Markdown table docs/remat.md shows."""
    lines = ["| plan | arena peak | of store_all | extra FLOPs |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {plan.peak_bytes} | {plan.peak_bytes / plan.store_all_peak:.1%} | {plan.extra_flops} |"
              for label, _, plan in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--dag-depth", type=int, default=12, help="image tower depth (text: half, head: 2/3)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--plot", default="remat_study.png", help='the figure\'s path ("": none)')
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args(argv)
    mlp = study(f"{args.layers}-layer tanh MLP", mlp_loss, mlp_args(args.layers, args.width, args.batch),
                args.time_limit)
    dag = study("two-tower DAG", towers_loss, towers_args(args.dag_depth, args.width, args.batch), args.time_limit)
    if not args.plot:
        return mlp, dag
    stem, dot, ext = args.plot.rpartition(".")
    plot_study(mlp, args.plot, f"{args.layers}-layer tanh MLP, training step (float64)")
    dag_path = f"{stem}_dag.{ext}" if dot else f"{args.plot}_dag"
    plot_study(dag, dag_path, "two-tower DAG, training step (float64)")
    print(f"wrote {args.plot} and {dag_path}")
    return mlp, dag


if __name__ == "__main__":
    main()
