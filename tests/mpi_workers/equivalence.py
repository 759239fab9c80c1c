"""Run under mpiexec -n N: N ranks training on batch B/N each must match one process on
batch B (tests/test_distributed_mpi.py). argv: backend optimizer bucket_bytes.
Prints one line "OK <max loss error> <max param error>" on rank 0, or raises."""
import sys

import numpy as np
from mpi4py import MPI

import ffcompile as ff
from ffcompile import distributed

STEPS, BATCH = 20, 24  # divisible by 2 and 3


def loss_fn(params, x, y):
    h = ff.tanh(x @ params["w1"] + params["b1"])
    h = ff.relu(h @ params["w2"] + params["b2"])
    return ((h @ params["w3"] + params["b3"] - y) ** 2).mean()


def init(rng):
    shapes = {"w1": (10, 32), "b1": (32,), "w2": (32, 16), "b2": (16,), "w3": (16, 3), "b3": (3,)}
    return {k: rng.normal(size=s) * 0.3 for k, s in shapes.items()}


def optimizer(name):
    return ff.optim.SGD(lr=0.05, momentum=0.9) if name == "sgd" else ff.optim.Adam(lr=1e-2)


def train(step, params, batches):
    opt_state = step.init(params)
    losses = [float(step(params, opt_state, x, y)) for x, y in batches]
    return np.array(losses), params


def main(backend, opt_name, bucket_bytes):
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.Get_rank() + 100)  # different on every rank: the broadcast fixes it
    params = distributed.broadcast_parameters(init(rng), comm)
    data = np.random.default_rng(7)
    batches = [(data.normal(size=(BATCH, 10)), data.normal(size=(BATCH, 3))) for _ in range(STEPS)]

    single = ff.compile_train_step(loss_fn, optimizer(opt_name), backend=backend)
    ref_losses, ref_params = train(single, {k: v.copy() for k, v in params.items()}, batches)

    parallel = ff.compile_train_step(loss_fn, optimizer(opt_name), backend=backend,
                                     data_parallel=distributed.DataParallel(comm, bucket_bytes))
    local, params = train(parallel, params, [distributed.shard(b, comm) for b in batches])
    losses = comm.allreduce(local) / comm.Get_size()  # the global batch's loss: the mean of the shards'
    loss_error = float(np.max(np.abs(losses - ref_losses) / np.abs(ref_losses)))
    param_error = max(float(np.max(np.abs(params[k] - ref_params[k]))) for k in params)
    for k in params:  # identical on every rank, bit for bit
        assert np.array_equal(comm.bcast(params[k], root=0), params[k]), f"{k} differs between ranks"
    assert loss_error < 1e-12 and param_error < 1e-12, (loss_error, param_error)
    graph = parallel.lower(params, parallel.init(params), *distributed.shard(batches[0], comm)).optimized
    buckets = sum(node.op.name == "all_reduce" for node in graph.nodes)
    if comm.Get_rank() == 0:
        print(f"OK ranks={comm.Get_size()} buckets={buckets} loss_error={loss_error:.2e} "
              f"param_error={param_error:.2e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
