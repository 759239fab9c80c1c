"""What every rank of a data-parallel job needs besides the step: the same initial
parameters, and its own equal share of each global batch."""
from __future__ import annotations

import numpy as np

from ..tree import tree_flatten, tree_paths, tree_unflatten


def broadcast_parameters(params, comm=None, root: int = 0):
    """Overwrite every array of params (a pytree, in place) with rank root's; returns params."""
    from .step import world

    comm = world() if comm is None else comm
    for leaf, path in zip(tree_flatten(params)[0], tree_paths(params, "params")):
        if not isinstance(leaf, np.ndarray) or not leaf.flags.c_contiguous or not leaf.flags.writeable:
            raise TypeError(f"broadcast_parameters: {path} must be a writeable C-contiguous numpy array "
                            f"(it is overwritten in place), got {type(leaf).__name__}")
        comm.Bcast(leaf, root=root)
    return params


def _rank_range(n: int, comm) -> tuple[int, int]:
    size, rank = comm.Get_size(), comm.Get_rank()
    if n % size:
        raise ValueError(f"shard: a global batch of {n} rows does not split evenly over {size} ranks; "
                         f"every rank's gradient must weigh the same (use a batch size divisible by {size})")
    share = n // size
    return rank * share, (rank + 1) * share


def shard(batch, comm=None):
    """This rank's rows of each array of batch (a pytree; the first axis is the batch axis):
    the rank-th of comm.size equal consecutive parts."""
    from .step import world

    comm = world() if comm is None else comm
    leaves, _ = tree_flatten(batch)
    rows = {np.shape(leaf)[0] for leaf in leaves}
    if len(rows) != 1:
        raise ValueError(f"shard: the arrays of a batch differ in their first (batch) axis: {sorted(rows)}")
    start, stop = _rank_range(rows.pop(), comm)
    _, treedef = tree_flatten(batch)
    return tree_unflatten(treedef, [leaf[start:stop] for leaf in leaves])


def shard_indices(n: int, batch_size: int, epoch: int, seed: int = 0, comm=None) -> list[np.ndarray]:
    """This rank's example indices for each global batch of one epoch: the same permutation
    of range(n) on every rank (from seed and epoch), cut into global batches of batch_size
    (the last partial one dropped), each split evenly over the ranks."""
    from .step import world

    comm = world() if comm is None else comm
    order = np.random.default_rng([seed, epoch]).permutation(n)
    start, stop = _rank_range(batch_size, comm)
    return [order[b:b + batch_size][start:stop] for b in range(0, n - batch_size + 1, batch_size)]
