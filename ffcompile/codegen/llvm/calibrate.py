"""Measure the packed GEMM against the BLAS call and smallgemm, where they compete, on this host
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
from .blas import BLAS_FUNCTIONS, PACKED, SMALL, blas_thread_count, gemm_route, native_max_work, small_competes
from .gemm_calibration import forced_route, measured, record, record_split, representative, route_forced, split_key
from .lower import gemm_dims
from .packed_gemm import route_key
from .smallgemm_split import SPLIT_MIN_WORK_CHOICES, split_axis
from .split_chain import SplitChain
from .standalone_gemm import StandaloneGemm
from .threadpool import get_num_threads

ROUNDS = 5
ROUND_SECONDS = 0.01  # per route and round: calls are repeated to last at least this long
ITEMSIZES = {"f32": 4, "f64": 8}




def either_route(m: int, n: int, k: int, dtype: str, trans_a: bool = False, trans_b: bool = False) -> bool:
    """Whether gemm_route would choose this product's route by its class's measurement (the
    packed GEMM against BLAS, or smallgemm)."""
    with route_forced("packed"):
        return gemm_route(m, n, k, dtype, trans_a, trans_b) == PACKED


def measured_products(shape: tuple[int, int, int]) -> tuple[tuple[int, int, int, bool, bool], ...]:
    """(m, n, k, trans_a, trans_b) of the products timed for the class of representative
    `shape`, each route's seconds their sum. In smallgemm's own range (at most native_max_work()
    multiply-adds), a dense layer's three (the forward product, the input's gradient with B
    transposed, the weight's with A transposed, each of m * n * k): there smallgemm, register-
    tiled without packing, is weaker in the transposes than in the forward product (deep's at
    256 bits on a Xeon: the forward product measured smallgemm and the packed GEMM level, 181
    and 178 GFLOP/s, but the step ran 6.38 ms by smallgemm and 5.55 by the packed GEMM).
    Above it, the forward product."""
    m, n, k = shape
    if m * n * k <= native_max_work():
        return (m, n, k, False, False), (m, k, n, False, True), (k, n, m, True, False)
    return ((m, n, k, False, False),)


def _best_rounds(calls: list, seconds: float, statistic) -> list[float]:
    """For each of `calls`, the least over ROUNDS rounds of statistic(the round's call times):
    the rounds take the calls in turn (each round starting one further), `seconds` of calls
    each, after one call to warm caches and the pool's workers."""
    best = [float("inf")] * len(calls)
    for r in range(ROUNDS):
        for which in ((r + i) % len(calls) for i in range(len(calls))):
            call, times = calls[which], []
            call()
            end = time.perf_counter() + seconds
            while (start := time.perf_counter()) < end:
                call()
                times.append(time.perf_counter() - start)
            best[which] = min(best[which], statistic(times))
    return best


def time_routes(m: int, n: int, k: int, dtype: str) -> tuple[float, float | None, float | None]:
    """(packed, blas, small) seconds of the products measured for the class of an (m x k) @ (k x n)
    product (measured_products), small None where smallgemm does not compete and blas None in
    smallgemm's own range (where a product never calls BLAS): the sum of each product's fastest
    call, over ROUNDS rounds of ROUND_SECONDS a route and product (on a loaded machine some calls
    run while another process has a core; the fastest did not)."""
    rng = np.random.default_rng(0)
    np_dtype = np.float32 if dtype == "f32" else np.float64
    products = measured_products((m, n, k))
    if len(products) > 1:
        routes = ("packed", "small")
    else:
        routes = ("packed", "blas", "small") if small_competes(m, n, k, dtype, False, False) else ("packed", "blas")
    total = dict.fromkeys(routes, 0.0)
    for pm, pn, pk, trans_a, trans_b in products:
        a = rng.standard_normal((pk, pm) if trans_a else (pm, pk)).astype(np_dtype)
        b = rng.standard_normal((pn, pk) if trans_b else (pk, pn)).astype(np_dtype)
        c = np.empty((pm, pn), np_dtype)
        gemms = [StandaloneGemm(pm, pn, pk, dtype, trans_a, trans_b, route=route) for route in routes]
        best = _best_rounds([lambda gemm=gemm: gemm(a, b, c) for gemm in gemms], ROUND_SECONDS, min)
        total = {route: total[route] + x for route, x in zip(routes, best)}
    return total["packed"], total.get("blas"), total.get("small")


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
    ROUNDS rounds of 2 x ROUND_SECONDS a size. A median, not the fastest call: what the split
    costs (reading the other core's lines) varies from call to call, and the fastest call of
    each size came out level where the medians were 74-81 against 84-92 us (Xeon, 2 threads)."""
    best = _best_rounds([SplitChain(size) for size in choices], 2 * ROUND_SECONDS, lambda t: float(np.median(t)))
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
    split = {split_axis(m, n, k, trans_a, trans_b, ITEMSIZES[dtype], size) is not None for size in SPLIT_MIN_WORK_CHOICES}
    return len(split) > 1


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
