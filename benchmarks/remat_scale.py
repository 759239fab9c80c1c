"""Planning at scale: time to plan an n-layer tanh MLP training step (SGD) at budgets from
the least feasible peak to store_all's, by the chain DP and by the MILP, and the least peak
each reaches (multiple vs single recomputation).

    python -m benchmarks.remat_scale --layers 32,100,300,1000 --fractions 0.05,0.1,0.3,0.5,0.7,0.9
    python -m benchmarks.remat_scale --layers 1000 --planners chain

Planning times are wall-clock seconds on this machine (say how loaded it was); the DP's
work (table entries) and the number of plans measured are printed beside them. A MILP
row that hits the time limit says so (`model='time limit'`)."""
from __future__ import annotations

import argparse
import time

import numpy as np

import ffcompile as ff
from ffcompile.passes.cost import arena_peak
from ffcompile.passes.recompute import RematInfeasible, forward_mask, insert_rounds
from ffcompile.passes.remat import remat
from ffcompile.passes.remat_chain import ChainDP, chain_rounds, find_chain


def tanh_mlp_loss(params, x):
    h = x
    for w, b in params:
        h = ff.tanh(h @ w + b)
    return (h * h).mean()


def training_step_graph(layers: int, width: int = 64, batch: int = 32):
    """The optimized graph of an SGD training step, before remat (remat's input)."""
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=(width, width)) / np.sqrt(width), np.zeros(width)) for _ in range(layers)]
    x = rng.normal(size=(batch, width))
    step = ff.compile_train_step(tanh_mlp_loss, ff.optim.SGD(0.01), backend="llvm")
    return step.lower(params, step.init(params), x).optimized


def least_chain_peak(graph) -> int:
    """The arena of the DP's plan with no slot: every step recomputed from the input."""
    forward = forward_mask(graph)
    chain = find_chain(graph, forward)
    return arena_peak(insert_rounds(graph, chain_rounds(chain, ChainDP(chain, 0, 0).schedule(0)), forward).graph)


def least_single_peak(graph, time_limit: float) -> str:
    """The least peak the MILP (one copy per value) finds: a search's result, not a proof."""
    try:
        remat(graph, "milp", 1, time_limit)
    except RematInfeasible as error:
        return str(error).split("smallest real peak found is ")[1].split(" bytes")[0]
    return "?"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.remat_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--layers", default="32,100,1000")
    parser.add_argument("--fractions", default="0.05,0.1,0.3,0.5,0.7,0.9")
    parser.add_argument("--planners", default="chain,milp")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--least", action="store_true", help="also the least peak of each planner")
    args = parser.parse_args(argv)
    print(f"{'layers':>6} {'nodes':>6} {'planner':>7} {'budget':>7} {'seconds':>8} {'peak':>10} "
          f"{'of store_all':>12} {'extra FLOPs':>14} solver")
    for layers in (int(n) for n in args.layers.split(",")):
        graph = training_step_graph(layers)
        full = arena_peak(graph)
        if args.least:
            single = least_single_peak(graph, args.time_limit) if "milp" in args.planners else "-"
            print(f"{layers:>6} least peak: store_all {full}, multiple recomputation (DP, no slot) "
                  f"{least_chain_peak(graph)}, single recomputation (MILP search) {single}")
        for planner in args.planners.split(","):
            for fraction in (float(f) for f in args.fractions.split(",")):
                start = time.perf_counter()
                try:
                    _, plan = remat(graph, planner, fraction, args.time_limit)
                except RematInfeasible:
                    print(f"{layers:>6} {len(graph.nodes):>6} {planner:>7} {fraction:>7.0%} "
                          f"{time.perf_counter() - start:>8.2f} {'infeasible':>10}")
                    continue
                print(f"{layers:>6} {len(graph.nodes):>6} {planner:>7} {fraction:>7.0%} {plan.seconds:>8.2f} "
                      f"{plan.peak_bytes:>10} {plan.peak_bytes / full:>12.1%} {plan.extra_flops:>14} {plan.solver}",
                      flush=True)


if __name__ == "__main__":
    main()
