"""A bound training step timed in batches: per batch its median, the process's CPU time over
wall time, and how busy each CPU was (all processes). A batch whose CPU/wall ratio falls to 1
while every CPU is busy ran with another process on a core; one that falls to 1 while a CPU
idles had the pool's two threads taking turns on one core, the cause of mnist's bimodal step
times at 256 bits, which pinning the workers ended (benchmarks/README.md, "256-bit steps";
docs/threads.md).

    python -m benchmarks.step_batches --model mnist --batches 12 --pause 0.25
    FFCOMPILE_VECTOR_BITS=256 python -m benchmarks.step_batches --model deep
"""
from __future__ import annotations

import argparse
import statistics
import time


def cpu_busy() -> list[int]:
    """Per CPU: jiffies spent running anything (user, nice, system), from /proc/stat."""
    with open("/proc/stat") as f:
        lines = [line.split() for line in f if line.startswith("cpu") and not line.startswith("cpu ")]
    return [sum(int(x) for x in fields[1:4]) for fields in lines]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200, help="timed steps a batch")
    parser.add_argument("--pause", type=float, default=0.25, help="seconds of sleep before each batch")
    args = parser.parse_args(argv)

    from ffcompile import optim, zoo
    from ffcompile.train import compile_train_step

    workload = zoo.get(args.model)
    params, x, y = workload.example_inputs(0)
    step = compile_train_step(workload.loss, optim.SGD(0.01))
    run = step.bind(params, step.init(params), x, y)
    for _ in range(20):
        run()
    print(f"# {args.model}: batch median ms | process CPU / wall | jiffies busy per CPU")
    for _ in range(args.batches):
        time.sleep(args.pause)
        for _ in range(5):
            run()
        busy, cpu, wall = cpu_busy(), time.process_time(), time.perf_counter()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        busy = [after - before for before, after in zip(busy, cpu_busy())]
        print(f"{statistics.median(times) * 1e3:.3f} | {cpu / wall:.2f} | {busy}", flush=True)


if __name__ == "__main__":
    main()
