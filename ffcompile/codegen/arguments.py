"""The arrays a compiled program is called with, shared by the backends: the overlap
check that guards donation, and bindings (a program tied to fixed arrays, docs/bind.md)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


def overlapping_arguments(arrays, addresses=None) -> set[int]:
    """Arguments that may share memory with another one: a donated one must then be
    copied before it is written. Sorted by address, arguments chain into clusters of
    overlapping ranges; every member of a cluster of two or more is reported (a
    superset, never a miss), in n log n rather than n^2 comparisons. addresses: the
    arrays' data addresses, if the caller has them (else read here)."""
    if addresses is None:
        addresses = [a.__array_interface__["data"][0] for a in arrays]
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


class Binding(NamedTuple):
    """A program tied to fixed arrays, what a backend's `bind` returns.

    run() runs the program over `arrays` and leaves its results in `results`, the
    same arrays after every call; then `after` (target, source) copies are due.
    `arrays` are the given arguments, or the backend's private copies of those it
    cannot use in place (not contiguous or aligned; donated but read-only or
    overlapping another argument): the caller refreshes those before each run.
    `keep` holds whatever the packed addresses point into."""

    run: Callable[[], None]
    arrays: list
    results: list
    after: list
    keep: tuple = ()


def bind_python(fn: Callable, arrays: list, out_types) -> Binding:
    """Bind a backend function that allocates its results (the NumPy backends):
    every run copies them into results preallocated here."""
    used = [np.require(a, requirements="C") for a in arrays]
    results = [np.empty(t.shape, t.np_dtype) for t in out_types]

    def run():
        for result, out in zip(results, fn(*used)):
            if out is not result:
                np.copyto(result, out)

    return Binding(run, used, results, [])
