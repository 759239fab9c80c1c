"""Run under mpiexec -n 2 (tests/test_distributed_mpi.py). argv[1]:
- raise: rank 1 raises inside its loss function while rank 0 waits in a collective;
  the job must end non-zero with rank 1's error, not hang.
- mismatch: rank 1's model is wider; every rank must get ProgramMismatch before
  the first all-reduce (printed as "MISMATCH <rank>: <message>").
- loss: same arguments, but rank 1's loss takes tanh first: ProgramMismatch names the
  first IR line where the programs part.
- late: the ranks agree for 3 steps, then rank 1 alone passes a smaller batch: every
  rank must get ProgramMismatch at that step, not hang."""
import sys

import numpy as np
from mpi4py import MPI

import ffcompile as ff
from ffcompile import distributed


def main(case, backend):
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    hidden = 8 + (4 if case == "mismatch" and rank == 1 else 0)
    params = {"w": np.ones((5, hidden)), "v": np.ones((hidden, 1))}

    def loss_fn(params, x):
        if case == "raise" and rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        h = x @ params["w"]
        if case == "loss" and rank == 1:
            h = ff.tanh(h)
        return (h @ params["v"]).mean()

    step = ff.compile_train_step(loss_fn, ff.optim.SGD(lr=0.1), backend=backend, data_parallel=comm)
    state = step.init(params)
    batches = [np.ones((4, 5))] * 3 + [np.ones((3 if rank == 1 else 4, 5))] if case == "late" else [np.ones((4, 5))]
    try:
        for x in batches:
            step(params, state, x)
    except distributed.ProgramMismatch as exc:
        print(f"MISMATCH {rank}: {exc}", flush=True)
        return
    if case != "raise":
        raise AssertionError("the ranks ran different programs without an error")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
