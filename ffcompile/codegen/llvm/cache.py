"""Disk cache of JIT-compiled programs, so a program seen before skips building its IR, O3
and codegen.

An entry is the object file MCJIT produced for one program and the few facts
about it the runtime needs (`metadata`: result slots, arena size, BLAS
functions), keyed by the SHA-256 of the program's description (everything
the IR is built from: the schedule, the memory plan, donation, code
generation choices; backend.program_description), the host target (triple,
CPU name, features), the source of the code generator and the IR layer, the
ffcompile version and the llvmlite version: any of them changing gives
another key, never a stale hit. (Keying on the IR text instead meant
building and printing the IR on every hit: 28 of the ~57 ms a warm first
call of the mnist training step took.) Entries live in
`$FFCOMPILE_CACHE_DIR` (default `~/.cache/ffcompile`); an empty
FFCOMPILE_CACHE_DIR turns the cache off.

A file is `MAGIC, payload length, SHA-256 of the payload, payload`. A
truncated, corrupted or foreign file fails that check, is deleted and
counts as a miss: the module is compiled again and the entry rewritten.
Writes go to a temporary file renamed over the entry, so a reader in
another process sees the old file or the whole new one, never half of one.
A cache directory that cannot be written only costs the speed-up.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import llvmlite

MAGIC = b"FFCOBJ2\n"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload
_META_LENGTH = struct.Struct("<I")
CACHE_DIR_VARIABLE = "FFCOMPILE_CACHE_DIR"


def _ffcompile_version() -> str:
    from ... import __version__  # the package imports the backend: resolve at call time

    return __version__


class ObjectCache:
    """Object code by key in one directory; counts its hits and misses."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def key(self, description: str, host: str) -> str:
        """host: the target's description (target.host_key())."""
        digest = hashlib.sha256()
        for part in (description, host, code_generator_fingerprint(), _ffcompile_version(), llvmlite.__version__):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.o.ffc"

    def load(self, key: str) -> bytes | None:
        """The stored object code, or None (absent, or invalid and then removed)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        payload = _payload(data)
        if payload is None:
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return payload

    def store(self, key: str, obj: bytes) -> None:
        header = _HEADER.pack(MAGIC, len(obj), hashlib.sha256(obj).digest())
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(header + obj)
                os.replace(tmp, self.path(key))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass  # read-only or full disk: run uncached


def pack_entry(metadata: dict, object_code: bytes) -> bytes:
    """An entry's payload: the metadata as JSON, then the object code."""
    meta = json.dumps(metadata, sort_keys=True).encode()
    return _META_LENGTH.pack(len(meta)) + meta + object_code


def unpack_entry(payload: bytes) -> tuple[dict, bytes] | None:
    """(metadata, object code) of a payload, or None if it is not one."""
    if len(payload) < _META_LENGTH.size:
        return None
    (length,) = _META_LENGTH.unpack_from(payload)
    start = _META_LENGTH.size
    try:
        metadata = json.loads(payload[start:start + length])
    except ValueError:
        return None
    object_code = payload[start + length:]
    return (metadata, object_code) if isinstance(metadata, dict) and object_code else None


@functools.cache
def code_generator_fingerprint() -> str:
    """SHA-256 of the source of the LLVM code generator and the IR layer (what turns a
    program description into machine code): editing either invalidates every entry."""
    package = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted([*Path(__file__).parent.glob("*.py"), *(package / "ir").glob("*.py"),
                        package / "passes" / "schedule.py", package / "passes" / "memory.py"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _payload(data: bytes) -> bytes | None:
    """The payload if `data` is a complete, intact entry."""
    if len(data) < _HEADER.size:
        return None
    magic, length, checksum = _HEADER.unpack_from(data)
    payload = data[_HEADER.size:]
    if magic != MAGIC or length != len(payload) or hashlib.sha256(payload).digest() != checksum:
        return None
    return payload


def default_cache() -> ObjectCache | None:
    """The cache FFCOMPILE_CACHE_DIR names (read per call, so tests can redirect it), or None."""
    directory = os.environ.get(CACHE_DIR_VARIABLE)
    if directory == "":
        return None
    return ObjectCache(directory or Path.home() / ".cache" / "ffcompile")
