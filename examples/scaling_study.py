"""How a data-parallel step scales past one machine, on paper (ffcompile/distributed/scaling.py).

    python examples/scaling_study.py [--model mnist] [--latency 5e-6] [--bandwidth 12.5e9] [--plot scaling.png]
    mpiexec -n 2 python examples/scaling_study.py --validate [--model mnist]

The first form profiles one rank's step (the zoo model's batch per rank: weak scaling,
the global batch grows with the ranks) with `ffcompile profile`'s per-kernel times, then
predicts the step time, the exposed communication and the scaling efficiency from 2 to
1,024 ranks for a ring all-reduce at the given latency (α, s) and bandwidth (B/s),
printing a table and, with --plot, drawing it. --validate runs under mpiexec at the
zoo's global batch (rounded down to a multiple of the ranks) split over the ranks: it measures this machine's α and β with
blocking all-reduces, predicts the step from each rank's profile, times the real
data-parallel step, and prints prediction against measurement.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import ffcompile as ff
from ffcompile import distributed, zoo
from ffcompile.distributed.scaling import Network, Timeline, predict

RANKS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def profiled_timeline(model: str, batch: int, comm, steps: int = 50) -> Timeline:
    """The data-parallel step's kernels (its all-reduces over comm) timed by ffcompile's profiler,
    and the rest of a call from Python."""
    workload = zoo.get(model)
    params, x, y = workload.example_inputs(0, batch)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), backend="llvm",
                                 data_parallel=distributed.DataParallel(comm))
    state = step.init(params)
    profile = step.profile(params, state, x, y, steps=steps)
    schedule = step.lower(params, state, x, y).schedule
    kernels = [k.seconds for k in profile.kernels]
    return Timeline.of(schedule, kernels, max(0.0, profile.call_seconds - sum(kernels)))


def table(model: str, network: Network, plot: str | None) -> str:
    from mpi4py import MPI

    workload = zoo.get(model)
    timeline = profiled_timeline(model, workload.batch_size, MPI.COMM_SELF)
    lines = [f"{model}: {workload.batch_size} examples per rank, {len(timeline.buckets)} buckets of "
             f"{sum(timeline.buckets.values()) / 1e6:.2f} MB in all; {network.name}: "
             f"α {network.latency * 1e6:.1f} us, {network.bandwidth / 1e9:.1f} GB/s; one rank's step without "
             f"communication {(sum(timeline.seconds) + timeline.overhead) * 1e3:.2f} ms",
             f"{'ranks':>6} {'step ms':>9} {'all-reduce ms':>14} {'exposed ms':>11} {'hidden':>7} {'efficiency':>10}"]
    predictions = [predict(timeline, n, network) for n in RANKS]
    for p in predictions:
        lines.append(f"{p.ranks:>6} {p.step * 1e3:>9.2f} {p.communication * 1e3:>14.2f} {p.exposed * 1e3:>11.2f} "
                     f"{p.hidden:>7.0%} {p.efficiency:>10.0%}")
    if plot:
        draw(predictions, predictions[0].compute, model, network, plot)
    return "\n".join(lines)


def draw(predictions, compute: float, model: str, network: Network, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = [p.ranks for p in predictions]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ranks, [p.step * 1e3 for p in predictions], "o-", label="step")
    left.plot(ranks, [p.communication * 1e3 for p in predictions], "s--", label="all-reduce (back to back)")
    left.axhline(compute * 1e3, color="gray", lw=1, label="compute")
    left.set(xscale="log", xlabel="ranks", ylabel="ms", title=f"{model}: predicted step")
    left.legend()
    right.plot(ranks, [p.efficiency for p in predictions], "o-")
    right.set(xscale="log", xlabel="ranks", ylabel="efficiency", ylim=(0, 1.05),
              title=f"weak scaling, {network.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measured_network(comm) -> Network:
    from mpi4py import MPI

    """α from the time of an 8-byte all-reduce, bandwidth from a 4 MB one (the ring formula
    solved for each), medians of 30."""
    ranks = comm.Get_size()

    def seconds(nbytes: int) -> float:
        buffer = np.zeros(nbytes // 8)
        times = []
        for _ in range(30):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer)
            times.append(time.perf_counter() - start)
        return comm.allreduce(float(np.median(times)), op=MPI.MAX)

    latency = seconds(8) / (2 * (ranks - 1))
    big = 4 << 20
    bandwidth = 2 * (ranks - 1) / ranks * big / max(seconds(big) - 2 * (ranks - 1) * latency, 1e-9)
    return Network("this machine (measured)", latency, bandwidth)


def validate(model: str) -> str | None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    ranks = comm.Get_size()
    workload = zoo.get(model)
    network = measured_network(comm)
    share = workload.batch_size // ranks
    timeline = profiled_timeline(model, share, MPI.COMM_SELF)
    predicted = predict(timeline, ranks, network)
    params, (x, y) = workload.init(0), workload.batch(0, share * ranks)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), backend="llvm", data_parallel=comm)
    state = step.init(params)
    x, y = distributed.shard((x, y), comm)
    for _ in range(3):
        step(params, state, x, y)
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(30):
        step(params, state, x, y)
    measured = comm.allreduce((time.perf_counter() - start) / 30, op=MPI.MAX)
    if comm.Get_rank():
        return None
    return (f"{model} on {ranks} ranks, global batch {share * ranks}: α {network.latency * 1e6:.1f} us, "
            f"{network.bandwidth / 1e9:.2f} GB/s measured; predicted step {predicted.step * 1e3:.2f} ms "
            f"(compute {predicted.compute * 1e3:.2f}, all-reduce {predicted.communication * 1e3:.2f}, "
            f"hidden {predicted.hidden:.0%}), measured {measured * 1e3:.2f} ms: "
            f"measured/predicted {measured / predicted.step:.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--latency", type=float, default=5e-6, help="α in seconds (default: 5 us, RDMA-class)")
    parser.add_argument("--bandwidth", type=float, default=12.5e9, help="bytes/s (default: 100 Gb/s)")
    parser.add_argument("--plot", default=None, help="write the plot here (needs matplotlib)")
    parser.add_argument("--validate", action="store_true", help="under mpiexec: prediction against measurement")
    args = parser.parse_args(argv)
    if args.validate:
        report = validate(args.model)
    else:
        report = table(args.model, Network("ring", args.latency, args.bandwidth), args.plot)
    if report:
        print(report)


if __name__ == "__main__":
    main()
