"""Gradient buckets: the all_reduce ops a data-parallel step's trace gets.

Gradients are grouped in the order the backward pass produces them (the last layer's
first) into buckets of about `bucket_bytes`; each bucket is one all_reduce, which the
schedule starts as soon as its last gradient is computed (passes/kernel_order.py), so
its communication overlaps the rest of the backward pass. Small buckets start sooner,
large ones pay the per-message latency fewer times (PyTorch DDP's default is 25 MB on
networks; the models here are a few MB at most).
"""
from __future__ import annotations

from ..ir import lang as L
from ..tree import tree_flatten, tree_unflatten

DEFAULT_BUCKET_BYTES = 256 * 1024


def buckets_of(grads: list[L.Value], bucket_bytes: int) -> list[list[int]]:
    """Positions of grads, grouped: in production order, each bucket up to bucket_bytes (at least one)."""
    buckets: list[list[int]] = []
    size = bucket_bytes
    for k in sorted(range(len(grads)), key=lambda k: grads[k].id):
        nbytes = grads[k].type.nbytes
        if size + nbytes > bucket_bytes and size:
            buckets.append([])
            size = 0
        buckets[-1].append(k)
        size += nbytes
    return buckets


def reduce_gradients(grads, group: int, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
    """grads (a pytree of traced Values) averaged over communication group `group`'s ranks."""
    leaves, treedef = tree_flatten(grads)
    reduced = list(leaves)
    for b, bucket in enumerate(buckets_of(leaves, bucket_bytes)):
        flat = L.all_reduce([leaves[k] for k in bucket], bucket=b, group=group)
        start = 0
        for k in bucket:
            stop = start + leaves[k].size
            reduced[k] = L.reshape(L.slice_(flat, (start,), (stop,), (1,)), leaves[k].shape)
            start = stop
    return tree_unflatten(treedef, reduced)
