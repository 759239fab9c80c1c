"""Train the digits MLP (examples/digits.py) data-parallel over MPI ranks.

    mpiexec -n 2 python examples/digits_ddp.py [--epochs 30] [--batch 64] [--lr 1e-3] [--backend numpy]

Every rank holds the whole model; rank 0's initial parameters are broadcast to all. Each
global batch of --batch examples (the same shuffle on every rank, from a shared seed) is
split evenly over the ranks; each rank runs forward and backward on its share, the
compiled step averages the gradients over the ranks (all_reduce ops inside the program,
started while the backward pass still runs), and every rank applies the same Adam update.
So N ranks train exactly as one process on the whole batch would (up to float rounding),
and reach the single-process accuracy. Rank 0 prints the report.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_limits

import ffcompile as ff
from ffcompile import distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import load, loss, model  # noqa: E402  (the same network, loss and data split)


def train(epochs: int = 30, batch: int = 64, lr: float = 1e-3, seed: int = 0, backend=None, comm=None) -> dict:
    comm = comm or MPI.COMM_WORLD
    x_train, x_test, y_train, y_test = load(seed)
    params = distributed.broadcast_parameters(model.init(seed + comm.Get_rank()), comm)  # rank 0's
    step = ff.compile_train_step(loss, ff.optim.Adam(lr), backend=backend, data_parallel=comm)
    opt_state = step.init(params)
    losses, start = [], time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # one core per rank
        for epoch in range(epochs):
            for idx in distributed.shard_indices(len(x_train), batch, epoch, seed, comm):
                losses.append(float(step(params, opt_state, x_train[idx], y_train[idx])))
    seconds = time.perf_counter() - start
    predict = ff.compile(model, backend=backend)
    batches = len(x_train) // batch
    return {"ranks": comm.Get_size(), "steps": len(losses), "seconds": seconds,
            "first_loss": comm.allreduce(losses[0]) / comm.Get_size(),
            "last_loss": comm.allreduce(float(np.mean(losses[-batches:]))) / comm.Get_size(),
            "train_accuracy": float(np.mean(predict(params, x_train).argmax(axis=1) == y_train)),
            "test_accuracy": float(np.mean(predict(params, x_test).argmax(axis=1) == y_test))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="global batch, split over the ranks")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backend", default=None)
    args = parser.parse_args(argv)
    report = train(args.epochs, args.batch, args.lr, backend=args.backend)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"{report['ranks']} ranks, {report['steps']} steps of {args.batch // report['ranks']} examples "
              f"each in {report['seconds']:.2f} s (first step compiles)")
        print(f"loss {report['first_loss']:.4f} -> {report['last_loss']:.4f}")
        print(f"train accuracy {report['train_accuracy']:.2%}   test accuracy {report['test_accuracy']:.2%}")


if __name__ == "__main__":
    main()
