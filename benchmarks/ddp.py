"""Data-parallel scaling on one machine: 1 process x 1 thread against N processes x 1 thread
at the same global batch, ffcompile (all_reduce inside the compiled step) side by side with
PyTorch DDP (gloo), on the zoo's MLPs.

    python -m benchmarks.ddp --model mnist,deep,wide --steps 30 --rounds 2 [--json out.json]

Each cell is a fresh `mpiexec -n R` job (torch's ranks read their rank from MPICH's
PMI_RANK and meet over gloo on localhost); cells alternate ffcompile / torch, 1 / N ranks,
round by round. A job times --steps steps after --warmup and reports the slowest rank's
mean step. Printed per model: step times, speedup T1/TN, scaling efficiency speedup/N,
and for ffcompile the share of all-reduce time hidden behind the backward pass:
1 - (time the update waited for the buckets) / (time blocking all-reduces of the same
buckets take, measured right after in the same job).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- workers


def _timed(step, steps: int, warmup: int, comm) -> float:
    for _ in range(warmup):
        step()
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return comm.allreduce((time.perf_counter() - start) / steps, op=_max())


def _max():
    from mpi4py import MPI

    return MPI.MAX


def ffcompile_worker(model: str, steps: int, warmup: int, bucket_bytes: int) -> dict:
    from mpi4py import MPI

    import ffcompile as ff
    from ffcompile import distributed, zoo
    from ffcompile.ir.collectives import group_of

    comm = MPI.COMM_WORLD
    workload = zoo.get(model)
    params, (x, y) = workload.init(0), workload.batch(0)
    x, y = distributed.shard((x, y), comm)
    parallel = distributed.DataParallel(comm, bucket_bytes) if comm.Get_size() > 1 else None
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), data_parallel=parallel)
    state = step.init(params)
    waited = [0.0]
    if parallel is not None:  # time what the update waits for (benchmark instrumentation only)
        group = group_of(parallel.group)
        wait = group.wait

        def timed_wait(request):
            start = time.perf_counter()
            wait(request)
            waited[0] += time.perf_counter() - start

        group.wait = timed_wait
    seconds = _timed(lambda: step(params, state, x, y), steps, warmup, comm)
    result = {"step": seconds}
    if parallel is not None:
        calls = steps + warmup
        result["waited"] = comm.allreduce(waited[0] / calls, op=MPI.MAX)
        graph = step.lower(params, state, x, y).optimized
        buffers = [np.zeros(node.type.shape, node.type.np_dtype) for node in graph.nodes
                   if node.op.name == "all_reduce"]
        result["buckets"] = len(buffers)

        def blocking():
            for buffer in buffers:
                comm.Allreduce(MPI.IN_PLACE, buffer)

        result["blocking"] = _timed(blocking, steps, warmup, comm)
    return result


def torch_worker(model: str, steps: int, warmup: int, port: int) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from mpi4py import MPI

    from ffcompile import zoo
    from ffcompile.bench.numpy_mlp import MLPSpec

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(1)
    workload = zoo.get(model)
    spec = MLPSpec.of(workload)
    params, (x, y) = workload.init(0), workload.batch(0)
    share = len(x) // size
    x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "identity": torch.nn.Identity,
            "gelu_tanh": lambda: torch.nn.GELU(approximate="tanh")}
    layers = []
    for (w, b), act in zip(MLPSpec.layers(params), spec.activations):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, acts[act]()]
    net = torch.nn.Sequential(*layers)
    if size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
        net = torch.nn.parallel.DistributedDataParallel(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    tx = torch.from_numpy(x)
    ty = torch.from_numpy(y).long() if spec.loss == "cross_entropy" else torch.from_numpy(y)

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = net(tx)
        loss = 0.5 * (out - ty).square().sum(dim=1).mean() if spec.loss == "mse" else F.cross_entropy(out, ty)
        loss.backward()
        optimizer.step()

    result = {"step": _timed(step, steps, warmup, comm)}
    if size > 1:
        dist.destroy_process_group()
    return result


# ----------------------------------------------------------------------------- launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(contender: str, model: str, ranks: int, args) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, "-m",
               "benchmarks.ddp", "--worker", contender, "--model", model, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--bucket-bytes", str(args.bucket_bytes), "--port", str(_free_port())]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=args.timeout)
    if done.returncode:
        raise RuntimeError(f"{contender} {model} x{ranks} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(models: list[str], ranks: int, args) -> dict:
    """model -> contender -> ranks -> [job results, one per round]."""
    results: dict = {}
    for _ in range(args.rounds):
        for model in models:
            for contender in ("ffcompile", "torch-ddp"):
                for n in (1, ranks):
                    cell = results.setdefault(model, {}).setdefault(contender, {}).setdefault(n, [])
                    cell.append(run_job(contender, model, n, args))
    return results


def table(results: dict, ranks: int) -> str:
    lines = [f"| model | contender | 1 rank ms | {ranks} ranks ms | speedup | efficiency | all-reduce hidden |",
             "|---|---|---|---|---|---|---|"]
    for model, contenders in results.items():
        for contender, cells in contenders.items():
            one = float(np.median([r["step"] for r in cells[1]]))
            many = float(np.median([r["step"] for r in cells[ranks]]))
            speedup = one / many
            hidden = "n/a"
            if "blocking" in cells[ranks][0]:
                share = np.median([1 - r["waited"] / r["blocking"] for r in cells[ranks]])
                hidden = f"{max(0.0, share):.0%} ({cells[ranks][0]['buckets']} buckets)"
            lines.append(f"| {model} | {contender} | {one * 1e3:.2f} | {many * 1e3:.2f} | {speedup:.2f}x | "
                         f"{speedup / ranks:.0%} | {hidden} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ffcompile.distributed import DEFAULT_BUCKET_BYTES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist,deep,wide")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bucket-bytes", type=int, default=DEFAULT_BUCKET_BYTES)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        from mpi4py import MPI

        result = (ffcompile_worker(args.model, args.steps, args.warmup, args.bucket_bytes)
                  if args.worker == "ffcompile" else torch_worker(args.model, args.steps, args.warmup, args.port))
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(json.dumps(result))
        return 0
    results = measure(args.model.split(","), args.ranks, args)
    print(table(results, args.ranks))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
