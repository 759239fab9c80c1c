"""Measure the packed GEMM against the BLAS call (and smallgemm, where it competes) on this host
(gemm_calibration.py keeps the result).

When a program is built (backend.py), every product of it that could take either route
and whose shape class is not measured yet under the current thread counts and vector
width gets its class measured: the class's representative shape through every route
(standalone_gemm.py), alternating, ROUNDS rounds of ROUND_SECONDS each a route; the
fastest call of each. About 0.2-0.4 s per class, once per host: the
record outlives the process in the disk cache's directory. Where a product takes smallgemm split
across the pool and the chunk sizes (smallgemm_split.SPLIT_MIN_WORK_CHOICES) cut it differently,
the chunk size is measured too, on split_chain.py's chain (~0.5 s, once per host, threads and
vector width). `python -m ffcompile.calibrate`
measures every class ahead of time (or again, `--force`) and prints the table.
"""
from __future__ import annotations

import time

import numpy as np

from ...ir.symbolic import BatchRange, substitute, symbol_names
from ...passes.schedule import KernelKind, Schedule
from .blas import BLAS_FUNCTIONS, PACKED, SMALL, blas_thread_count, gemm_route, small_competes
from .gemm_calibration import (forced_route, measured, measured_products, record, record_split, representative,
                               route_forced, split_key)
from .lower import gemm_dims
from .packed_gemm import route_key
from .smallgemm_split import SPLIT_MIN_WORK_CHOICES, splits_at
from .split_chain import SplitChain
from .standalone_gemm import StandaloneGemm
from .threadpool import get_num_threads

ROUNDS = 5
ROUND_SECONDS = 0.01  # per route and round: calls are repeated to last at least this long
ITEMSIZES = {"f32": 4, "f64": 8}




def either_route(m: int, n: int, k: int, dtype: str, trans_a: bool = False, trans_b: bool = False) -> bool:
    """Whether gemm_route would choose between the packed GEMM and BLAS for this product."""
    with route_forced("packed"):
        return gemm_route(m, n, k, dtype, trans_a, trans_b) == PACKED


def time_routes(m: int, n: int, k: int, dtype: str) -> tuple[float, float, float | None]:
    """(packed, blas, small) seconds of the products measured for the class of an (m x k) @ (k x n)
    product (gemm_calibration.measured_products: it, or in the lowest band a layer's three),
    small None where smallgemm does not compete: the sum of each product's fastest call, over
    ROUNDS rounds that take the routes in turn (each round starting one further), each
    ROUND_SECONDS of calls a route and product (on a loaded machine some calls run while another
    process has a core; the fastest did not)."""
    rng = np.random.default_rng(0)
    np_dtype = np.float32 if dtype == "f32" else np.float64
    routes = ("packed", "blas", "small") if small_competes(m, n, k, dtype, False, False) else ("packed", "blas")
    total = [0.0] * len(routes)
    for pm, pn, pk, trans_a, trans_b in measured_products((m, n, k)):
        a = rng.standard_normal((pk, pm) if trans_a else (pm, pk)).astype(np_dtype)
        b = rng.standard_normal((pn, pk) if trans_b else (pk, pn)).astype(np_dtype)
        c = np.empty((pm, pn), np_dtype)
        gemms = [StandaloneGemm(pm, pn, pk, dtype, trans_a, trans_b, route=route) for route in routes]
        best = [float("inf")] * len(routes)
        for r in range(ROUNDS):
            for which in ((r + i) % len(routes) for i in range(len(routes))):
                gemm = gemms[which]
                gemm(a, b, c)  # warm: caches, the pool's workers
                end = time.perf_counter() + ROUND_SECONDS
                while (start := time.perf_counter()) < end:
                    gemm(a, b, c)
                    best[which] = min(best[which], time.perf_counter() - start)
        total = [t + x for t, x in zip(total, best)]
    return total[0], total[1], total[2] if len(routes) == 3 else None


def calibrate_class(m: int, n: int, k: int, dtype: str, force: bool = False) -> dict:
    """The record of the class of this product (measured now if it has none, or if forced)."""
    key = route_key(m, n, k, ITEMSIZES[dtype], blas_thread_count())
    found = None if force else measured(key)
    if found is None:
        shape = representative(m, n, k)
        record(key, shape, *time_routes(*shape, dtype))
        found = measured(key)
    return found


def time_split_sizes(choices: tuple[int, ...] = SPLIT_MIN_WORK_CHOICES) -> dict[int, float]:
    """Seconds of split_chain's chain with each chunk size: the best round's median call, over
    ROUNDS rounds that take the sizes in turn, 2 x ROUND_SECONDS of calls a size. A median, not
    the fastest call: what the split costs (reading the other core's lines) varies from call to
    call, and the fastest call of each size came out level where the medians were 74-81 against
    84-92 us (Xeon, 2 threads)."""
    chains = [SplitChain(size) for size in choices]
    best = [float("inf")] * len(choices)
    for r in range(ROUNDS):
        for which in ((r + i) % len(choices) for i in range(len(choices))):
            chain, times = chains[which], []
            chain()
            end = time.perf_counter() + 2 * ROUND_SECONDS
            while (start := time.perf_counter()) < end:
                chain()
                times.append(time.perf_counter() - start)
            best[which] = min(best[which], float(np.median(times)))
    return dict(zip(choices, best))


def calibrate_split(force: bool = False) -> dict:
    """The record of the smallgemm split's chunk size at the pool's threads and the vector
    width (measured now if it has none, or if forced)."""
    found = None if force else measured(split_key())
    if found is None:
        record_split(time_split_sizes())
        found = measured(split_key())
    return found


def split_size_matters(m: int, n: int, k: int, dtype: str, trans_a: bool, trans_b: bool) -> bool:
    """Whether a product takes smallgemm's split and the chunk sizes measured cut it differently."""
    if gemm_route(m, n, k, dtype, trans_a, trans_b) != SMALL or get_num_threads() < 2:
        return False
    cuts = {splits_at(m, n, k, trans_a, trans_b, ITEMSIZES[dtype], size) for size in SPLIT_MIN_WORK_CHOICES}
    return len(cuts) > 1


def calibrate_schedule(schedule: Schedule, batch: BatchRange | None = None) -> None:
    """Measure the classes of the schedule's products that are not measured yet, and the
    smallgemm split's chunk size where it decides how one is cut (none when
    FFCOMPILE_GEMM_ROUTE forces the route). A product with the symbolic batch size B is
    measured at B's reference size: blas.py runs blocks of that size by the packed GEMM
    where a product of that size takes it."""
    if forced_route() is not None:
        return
    nodes = schedule.graph.nodes
    for kernel in schedule.kernels:
        if kernel.kind != KernelKind.GEMM or nodes[kernel.anchor].type.dtype not in BLAS_FUNCTIONS:
            continue
        dims = gemm_dims(nodes, kernel)
        m, n, k = substitute(dims, {"B": (batch or BatchRange()).reference})
        dtype = nodes[kernel.anchor].type.dtype
        if either_route(m, n, k, dtype, kernel.trans_a, kernel.trans_b):
            calibrate_class(m, n, k, dtype)
        if not symbol_names(dims) and split_size_matters(m, n, k, dtype, kernel.trans_a, kernel.trans_b):
            calibrate_split()
