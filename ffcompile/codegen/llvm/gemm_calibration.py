"""Which of the packed GEMM, the BLAS call and smallgemm is faster on this host: the crossover as measured.

A product above blas.SMALL_MEASURED_MIN_WORK falls in a shape class: its float type, whether
it is thin (its smallest dimension at most THIN_MAX: a batch of 128-256 rows, or a weight
gradient summed over one) and its work band (m * n * k at most 2^24, 2^26, 2^29, or above;
every product of at most 2^24 is thin). Each class has one representative shape; calibrate.py
times the routes that compete on it (in smallgemm's own range, the packed GEMM and smallgemm on
a dense layer's three products of its size: calibrate.measured_products), as programs run them,
at the pool's and the BLAS's thread counts and the packed GEMM's vector width of the moment,
and records the seconds here; in the two lowest bands, smallgemm's too (split across the pool,
it took mnist's 128x512x512 in 249 us at 256 bits where the packed GEMM took 310, but 310
against 176 at 512; deep's 64x256x256, smallgemm's own range, 37-54 us against 35 on a Xeon:
which wins depends on the host's width and kernels, so it is measured). The record is a small
JSON file in the disk cache's
directory, one per host (named by the SHA-256 of target.host_key(), which it also stores,
with the code generator's fingerprint: new kernels are measured again): a missing, damaged,
foreign or outdated file is ignored (and rewritten by the next measurement);
with the disk cache off the records live in this process only.

The same file keeps the chunk size smallgemm's split products take (split_key: the seconds of
split_chain.py's chain at each size).

FFCOMPILE_GEMM_ROUTE=packed|blas|small forces the choice (small: smallgemm where it may
compete, else BLAS; the test suite's conftest forces packed, so no test depends on a measured
value); `route_forced` does for one thread, for a block.

A measurement is the fastest call of each route over alternating rounds (calibrate.py), so
another process taking a core during some calls does not decide it; a record made on a busy
machine can still pick the slower of two close routes: `python -m ffcompile.calibrate --force`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .cache import code_generator_fingerprint, default_cache
from .target import host_key, vector_bytes
from .threadpool import get_num_threads

ROUTE_VARIABLE = "FFCOMPILE_GEMM_ROUTE"
ROUTES = ("packed", "blas", "small")
FORMAT = 3  # the file's layout version: another one is ignored (2: small_seconds; 3: the band below 2^24)
THIN_MAX = 256
SPLIT_KEY_PREFIX = "smallgemm split "  # split_key's records; every other key is a class's
WORK_BANDS = (2 ** 24, 2 ** 26, 2 ** 29)  # upper bounds of the lower bands, inclusive (2^24: blas.NATIVE_MAX_WORK)
REPRESENTATIVE = {  # (thin, band) -> the (m, n, k) measured for the class (a wide one has more than 2^24)
    (True, 0): (64, 256, 256), (True, 1): (128, 512, 784), (True, 2): (256, 1024, 1024),
    (True, 3): (256, 4096, 1024),
    (False, 1): (384, 384, 384), (False, 2): (512, 512, 784), (False, 3): (1024, 1024, 1024),
}
_tables: dict[Path | None, dict[str, dict]] = {}  # file (None: no cache) -> class key -> record
_lock = threading.RLock()
_override = threading.local()


def forced_route() -> str | None:
    """One of ROUTES when forced (route_forced, else FFCOMPILE_GEMM_ROUTE), else None."""
    route = getattr(_override, "route", None)
    if route is not None:
        return route
    value = os.environ.get(ROUTE_VARIABLE, "").strip()
    if value in ("", "measured"):
        return None
    if value not in ROUTES:
        raise ValueError(f"{ROUTE_VARIABLE}={value!r}: expected one of {', '.join(ROUTES)} or 'measured'")
    return value


@contextmanager
def route_forced(route: str):
    """Force the route of the products the calibration decides on this thread, for a block."""
    assert route in ROUTES, route
    saved = getattr(_override, "route", None)
    _override.route = route
    try:
        yield
    finally:
        _override.route = saved


def shape_class(m: int, n: int, k: int) -> tuple[bool, int]:
    """(thin, work band) of an (m x k) @ (k x n) product."""
    work = m * n * k
    return min(m, n, k) <= THIN_MAX, sum(work > bound for bound in WORK_BANDS)


def representative(m: int, n: int, k: int) -> tuple[int, int, int]:
    """The product measured for this one's class."""
    return REPRESENTATIVE[shape_class(m, n, k)]


def class_name(m: int, n: int, k: int, itemsize: int) -> str:
    """The product's class: float type, thin or wide, work band."""
    thin, band = shape_class(m, n, k)
    return f"f{8 * itemsize} {'thin' if thin else 'wide'} band{band}"


def class_key(m: int, n: int, k: int, itemsize: int, threads: int, blas_threads: int | None,
              vector_bytes: int) -> str:
    """The record's name for this product's class under these thread counts and vector width."""
    return (f"{class_name(m, n, k, itemsize)} threads={threads} blas_threads={blas_threads} "
            f"vector_bits={8 * vector_bytes}")


def calibration_path() -> Path | None:
    """This host's file in the disk cache's directory (None: the cache is off)."""
    cache = default_cache()
    if cache is None:
        return None
    return cache.directory / f"gemm-calibration-{hashlib.sha256(host_key().encode()).hexdigest()[:16]}.json"


def _valid(key: str, record) -> bool:
    if key.startswith(SPLIT_KEY_PREFIX):  # a split_key record
        if not (isinstance(record, dict) and set(record) == {"split_seconds"}):
            return False
        seconds = record["split_seconds"]
        return (isinstance(seconds, dict) and len(seconds) > 0
                and all(re.fullmatch("[0-9]+", size) and isinstance(x, float) and x > 0 for size, x in seconds.items()))
    return (isinstance(record, dict) and set(record) == {"shape", "packed_seconds", "blas_seconds", "small_seconds"}
            and isinstance(record["shape"], list) and len(record["shape"]) == 3
            and all(isinstance(x, int) and x > 0 for x in record["shape"])
            and isinstance(record["packed_seconds"], float) and record["packed_seconds"] > 0
            and all(record[s] is None or isinstance(record[s], float) and record[s] > 0
                    for s in ("blas_seconds", "small_seconds")))


def _read(path: Path) -> dict[str, dict]:
    """The file's records, if it is whole and this host's ({} otherwise)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("host") == host_key()
            and data.get("code") == code_generator_fingerprint() and isinstance(data.get("records"), dict)):
        return {}
    return {key: record for key, record in data["records"].items() if isinstance(key, str) and _valid(key, record)}


def _table(path: Path | None) -> dict[str, dict]:
    """The records of `path` (read once per process), with this process's measurements."""
    if path not in _tables:
        _tables[path] = {} if path is None else _read(path)
    return _tables[path]


def measured(key: str) -> dict | None:
    """The record of class `key` ({"shape", "packed_seconds", "blas_seconds", "small_seconds"}), if
    measured (small_seconds None: smallgemm does not compete in the class; blas_seconds None:
    BLAS does not, smallgemm's own range at one BLAS thread); of split_key(),
    {"split_seconds": {chunk size: seconds}}."""
    with _lock:
        return _table(calibration_path()).get(key)


def fastest(found: dict, among: tuple[str, ...] = ROUTES) -> str:
    """The route of `among` a record measured fastest (on a tie, the first in `among`)."""
    seconds = {route: found[f"{route}_seconds"] for route in among if found[f"{route}_seconds"] is not None}
    return min(seconds, key=seconds.get)


def chosen_route(key: str, among: tuple[str, ...] = ROUTES) -> str | None:
    """The route forced (FFCOMPILE_GEMM_ROUTE, route_forced: it may be none of `among`), else
    the fastest of `among` in class `key`'s record; None if the class is not measured."""
    forced = forced_route()
    if forced is not None:
        return forced
    found = measured(key)
    return None if found is None else fastest(found, among)


def split_key() -> str:
    """The record of the smallgemm split's chunk size (smallgemm_split.split_min_work) at the
    pool's thread count and the vector width."""
    return f"{SPLIT_KEY_PREFIX}threads={get_num_threads()} vector_bits={8 * vector_bytes()}"


def chosen_split_min_work(choices: tuple[int, ...]) -> int:
    """Of `choices`, the chunk size split_key()'s record measured fastest; the first where it
    is not measured, or a route is forced (FFCOMPILE_GEMM_ROUTE: the test suite's code does not
    depend on this host's measurements)."""
    found = None if forced_route() is not None else measured(split_key())
    if found is None:
        return choices[0]
    seconds = {int(key): value for key, value in found["split_seconds"].items()}
    return min((c for c in choices if c in seconds), key=seconds.get, default=choices[0])


def record(key: str, shape: tuple[int, int, int], packed_seconds: float, blas_seconds: float | None,
           small_seconds: float | None = None) -> None:
    """Keep a measurement of class `key`, and write the file."""
    _keep(key, {"shape": list(shape), "packed_seconds": float(packed_seconds),
                "blas_seconds": None if blas_seconds is None else float(blas_seconds),
                "small_seconds": None if small_seconds is None else float(small_seconds)})


def record_split(seconds: dict[int, float]) -> None:
    """Keep the seconds measured for each chunk size of the smallgemm split, and write the file."""
    _keep(split_key(), {"split_seconds": {str(size): float(x) for size, x in seconds.items()}})


def _keep(key: str, value: dict) -> None:
    """Keep a record, and write the file (a temporary file renamed over it: a reader sees
    the old or the new one whole; a directory that cannot be written costs only the reuse)."""
    with _lock:
        path = calibration_path()
        table = _table(path)
        table[key] = value
        if path is None:
            return
        text = json.dumps({"format": FORMAT, "host": host_key(), "code": code_generator_fingerprint(),
                           "records": dict(sorted(table.items()))}, indent=1)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-calibration-")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def forget() -> None:
    """Drop what this process read or measured (the files stay), as a new process would start."""
    with _lock:
        _tables.clear()
