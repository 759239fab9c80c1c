"""The graph stages' artifacts of a signature in the backend's disk cache, keyed by the traced
graph, so a signature compiled before skips decompose, simplify, remat, fuse, donation and
the memory plan (issue 19: they were ~10 of the mnist step's ~34 ms warm first call on an
idle machine, ~150 ms of the deep step's on a loaded one).

The key is the SHA-256 of the traced graph's text (which parses back to the same graph,
locations included: they reach error messages and dumps), the requested donations, the remat
options and the source of every module the stages run (`passes/`, the IR, the pipeline, the
backend's hooks), beside what the backend's own key adds (ObjectCache.key). The entry holds
the artifacts pickled, with their stage records. Its file is the backend's cache entry
format, so it is used only on the same terms as cached machine code (cache.py: this user's
own file, whole, storing the key it was looked up by); unpickling is restricted to
ffcompile's IR, pass and pipeline classes besides NumPy's arrays and a few builtins, and what
it yields must be the artifacts of these stages for this graph's inputs, else the entry is
deleted and the stages run again. The `lower` stage is not cached here: the backend keeps
its program (machine code) under a key of its own, checked on its own terms.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pickle
import time
from pathlib import Path
from typing import Mapping

from .ir import Graph
from .passes.manager import Run

_FORMAT = "ffcompile stage artifacts 1"
_MODULES = ("ffcompile.ir.", "ffcompile.passes.", "ffcompile.pipeline")
_NUMPY = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
          ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
          ("numpy._core.multiarray", "scalar")}
_BUILTINS = {"slice", "complex", "frozenset", "set", "range"}


def description(graph_text: str, donate: Mapping[int, int], remat, backend_name: str, batch=None) -> str:
    """What the stages' artifacts depend on, as text (the cache key's description); batch: the
    batch sizes one symbolic program serves (its plan holds them all, remat plans at its reference)."""
    return "\n".join([_FORMAT, f"backend {backend_name}", f"donate {sorted(donate.items())}",
                      f"remat {remat!r}", f"batch {batch!r}", f"source {_stage_source_fingerprint()}", graph_text])


def cache_of(backend):
    """Where the artifacts are kept: a part of the backend's disk cache, if it has one."""
    cache = backend.disk_cache()
    return None if cache is None else cache.part("stages")


def restore(cache, key_text: str, run: Run, stage_names: list[str]) -> float | None:
    """Fill run with the cached artifacts and records of stage_names (seconds taken), or None."""
    if cache is None:
        return None
    start = time.perf_counter()
    found = cache.load_as(cache.key(key_text, ""), functools.partial(_artifacts, run.artifacts["input"], stage_names))
    if found is None:
        return None
    artifacts, records = found
    run.artifacts.update(artifacts)
    run.records.extend(dataclasses.replace(r, seconds=0.0, cached=True) for r in records)
    run.artifact, run.size = artifacts[stage_names[-1]], records[-1].size_after
    return time.perf_counter() - start


def store(cache, key_text: str, run: Run, stage_names: list[str]) -> None:
    """Keep run's artifacts of stage_names; only if they load back (a class outside those
    allowed, e.g. a user's attribute, is not stored)."""
    if cache is None:
        return
    artifacts = {name: run.artifacts[name] for name in stage_names}
    records = [r for r in run.records if r.name in artifacts]
    try:
        data = pickle.dumps((artifacts, records), protocol=5)
        _restricted_loads(data)
    except Exception:  # artifacts that do not pickle and load back whole only cost the speed-up
        return
    cache.store(cache.key(key_text, ""), {"stages": stage_names}, data)


def _artifacts(graph, stage_names: list[str], metadata: dict, data: bytes):
    """(artifacts, records) of an entry, if they are those of stage_names for this graph's inputs."""
    if metadata != {"stages": stage_names}:
        return None
    try:
        artifacts, records = _restricted_loads(data)
    except Exception:  # any malformed pickle: a refused entry, never a failed compile
        return None
    if not (isinstance(artifacts, dict) and list(artifacts) == stage_names and isinstance(records, list)
            and [r.name for r in records] == stage_names):
        return None
    graphs = [a for a in artifacts.values() if isinstance(a, Graph)]
    if not graphs or any(g.input_types != graph.input_types for g in graphs):
        return None
    return artifacts, records


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = (module.startswith(_MODULES) or (module, name) in _NUMPY
                   or (module == "builtins" and name in _BUILTINS))
        if not allowed:
            raise pickle.UnpicklingError(f"stage cache: {module}.{name} is not an artifact class")
        return super().find_class(module, name)


def _restricted_loads(data: bytes):
    return _Unpickler(io.BytesIO(data)).load()


def stage_source_paths() -> list[Path]:
    """The source the stages run: passes, the IR, the pipeline, and the backends, subpackages
    included (a backend's hooks shape the plan: the LLVM backend's GEMM scratch)."""
    package = Path(__file__).resolve().parent
    return sorted([*(package / "passes").glob("*.py"), *(package / "ir").glob("*.py"),
                   *(package / "codegen").rglob("*.py"), package / "pipeline.py", Path(__file__).resolve()])


@functools.cache
def _stage_source_fingerprint() -> str:
    """SHA-256 of stage_source_paths()."""
    digest = hashlib.sha256()
    for path in stage_source_paths():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
