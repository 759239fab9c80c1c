"""Checks on the arrays a compiled program is called with, shared by the backends."""
from __future__ import annotations


def overlapping_arguments(arrays, addresses) -> set[int]:
    """Arguments that may share memory with another one: a donated one must then be
    copied before it is written. Sorted by address, arguments chain into clusters of
    overlapping ranges; every member of a cluster of two or more is reported (a
    superset, never a miss), in n log n rather than n^2 comparisons."""
    spans = sorted((a, a + arrays[k].nbytes, k) for k, a in enumerate(addresses) if arrays[k].nbytes)
    found, cluster, reach = set(), [], -1
    for start, end, k in spans:
        if start >= reach:
            if len(cluster) > 1:
                found.update(cluster)
            cluster = []
        cluster.append(k)
        reach = max(reach, end)
    if len(cluster) > 1:
        found.update(cluster)
    return found
