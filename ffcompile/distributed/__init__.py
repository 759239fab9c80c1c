"""Data-parallel training over MPI (docs/distributed.md).

    step = ff.compile_train_step(loss, opt, data_parallel=comm)   # comm: an mpi4py communicator

Every rank runs forward and backward on its shard of the batch; the gradients are
averaged over the ranks by `all_reduce` ops compiled into the step (buckets.py), and
every rank applies the same update. mpi4py is imported only when a communicator is
needed, so ffcompile imports without it.
"""
from .buckets import DEFAULT_BUCKET_BYTES, reduce_gradients
from .data import broadcast_parameters, shard, shard_indices
from .step import DataParallel, ProgramMismatch, world

__all__ = ["DEFAULT_BUCKET_BYTES", "DataParallel", "ProgramMismatch", "broadcast_parameters", "reduce_gradients",
           "shard", "shard_indices", "world"]
