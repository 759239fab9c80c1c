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

A file is `MAGIC, payload length, SHA-256 of the payload, payload`, the
payload `key, metadata, object code`. Loading machine code runs it, so an
entry is used only if (docs/export.md, "Trust"):
- the directory and the file belong to this user and no one else may write
  them (else a warning, once, and the program is compiled without the
  cache); the directory is created 0700, files 0600;
- the file is whole (length, checksum) and stores the key asked for (an
  entry copied over another key's name is not loaded);
- its metadata is the program's own (lower.layout: outputs, arena size,
  BLAS calls; and whether a kernel calls the thread pool: backend.program_symbols),
  and its object code is a well-formed host object defining exactly the
  program's symbols (object_check.py), all checked before LLVM reads the
  object or any of its code runs.
An entry failing the last two is deleted and counts as a miss: the module
is compiled again and the entry rewritten. Writes go to a temporary file
renamed over the entry, so a reader in another process sees the old file
or the whole new one, never half of one. A directory that cannot be
written, or an entry that cannot be deleted, only costs the speed-up.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import struct
import tempfile
import warnings
from pathlib import Path

import llvmlite

from .object_check import InvalidObject, Symbol, check_object
from .target import JitModule, host_key, load_object

MAGIC = b"FFCOBJ3\n"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload
_KEY_BYTES = 64  # the key, as hexadecimal SHA-256, opens the payload
_META_LENGTH = struct.Struct("<I")
CACHE_DIR_VARIABLE = "FFCOMPILE_CACHE_DIR"
_SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH
_warned: set[str] = set()


class ObjectCache:
    """Object code by key in one directory; counts its hits and misses."""

    def __init__(self, directory: str | os.PathLike, base: Path | None = None):
        self.directory = Path(directory)
        self.base = base or self.directory  # the cache's own directory (of a part: its parent's)
        self.hits = 0
        self.misses = 0

    def key(self, description: str, host: str) -> str:
        """host: the target's description (target.host_key())."""
        digest = hashlib.sha256()
        for part in (description, host, code_generator_fingerprint(), llvmlite.__version__):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    def part(self, name: str) -> "ObjectCache":
        """The cache in subdirectory `name`: entries of another kind, apart from the programs'."""
        return ObjectCache(self.directory / name, self.base)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.o.ffc"

    def load(self, key: str, expected_symbols) -> tuple[dict, bytes] | None:
        """(metadata, object code) of the trusted, intact entry for `key` whose object defines
        exactly expected_symbols(metadata) (None: the metadata is not the code's own); else
        None, the entry deleted if there was one."""
        def own_code(metadata: dict, object_code: bytes):
            symbols = expected_symbols(metadata)
            return (metadata, object_code) if symbols is not None and _defines(object_code, symbols) else None

        return self.load_as(key, own_code)

    def load_as(self, key: str, read):
        """read(metadata, data) of the trusted, intact entry for `key`, if that is not None;
        else None, the entry deleted if there was one (read refused it)."""
        data = self._read(key)
        found = None if data is None else _entry(data, key)
        value = None if found is None else read(*found)
        if value is not None:
            self.hits += 1
            return value
        if data is not None:
            _discard(self.path(key))
        self.misses += 1
        return None

    def store(self, key: str, metadata: dict, object_code: bytes) -> None:
        payload = key.encode() + pack_entry(metadata, object_code)
        header = _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
        try:
            self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700, exist_ok=True)
            if not self._trusted_directory():
                return
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # created 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(header + payload)
                os.replace(tmp, self.path(key))
            except BaseException:
                _discard(Path(tmp))
                raise
        except OSError:
            pass  # read-only or full disk: run uncached

    def _read(self, key: str) -> bytes | None:
        """The entry file's bytes, if it exists and is trusted."""
        try:
            if not self._trusted_directory():
                return None
            fd = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None  # no entry (or a symbolic link: not followed)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or not _trusted(status, f"cache entry {self.path(key)}"):
                return None
            with open(fd, "rb", closefd=False) as f:
                return f.read()
        except OSError:
            return None
        finally:
            os.close(fd)

    def _trusted_directory(self) -> bool:
        """Whether the directory (if it exists), and a part's base, are this user's alone to write."""
        for directory in dict.fromkeys((self.base, self.directory)):
            try:
                status = os.stat(directory)
            except FileNotFoundError:
                return False
            if not (_trusted(status, f"cache directory {directory}") and stat.S_ISDIR(status.st_mode)):
                return False
        return True


def pack_entry(metadata: dict, object_code: bytes) -> bytes:
    """An entry's payload after the key: the metadata as JSON, then the object code."""
    meta = json.dumps(metadata, sort_keys=True).encode()
    return _META_LENGTH.pack(len(meta)) + meta + object_code


def _entry(data: bytes, key: str) -> tuple[dict, bytes] | None:
    """(metadata, object code) of a whole, intact entry file that stores `key`."""
    payload = _payload(data)
    if payload is None or payload[:_KEY_BYTES] != key.encode():
        return None
    payload = payload[_KEY_BYTES:]
    if len(payload) < _META_LENGTH.size:
        return None
    (length,) = _META_LENGTH.unpack_from(payload)
    start = _META_LENGTH.size
    try:
        metadata = json.loads(payload[start:start + length])
    except (ValueError, RecursionError):
        return None
    object_code = payload[start + length:]
    return (metadata, object_code) if isinstance(metadata, dict) and object_code else None


def _defines(object_code: bytes, symbols: tuple[Symbol, ...]) -> bool:
    """Whether the object code is a well-formed host object defining exactly `symbols`
    (checked without LLVM)."""
    try:
        check_object(object_code, symbols)
    except InvalidObject:
        return False
    return True


RUNTIME_MODULE_KIND = "runtime module"  # the metadata of the host's runtime modules' entries


def runtime_module(name: str, functions: tuple[str, ...], build_object, data: tuple[str, ...] = ()) -> JitModule:
    """One of the runtime's own fixed modules (the thread pool, the fast call's checker, a
    packed GEMM function), defining exactly these functions and 8-byte `data` globals: its
    object code from the disk cache (keyed, and checked, like a program's), else
    build_object() (IR, O3 and codegen: ~50-90 ms of CPU for the pool) and stored. Its
    entry's metadata says it is one (benchmarks/latency.py keeps these for a "cold" compile)."""
    cache = default_cache()
    key = cache and cache.key(f"runtime module {name}", host_key())
    symbols = tuple(Symbol(function, function=True) for function in functions) + tuple(
        Symbol(global_, False, 8) for global_ in data)
    metadata = {"kind": RUNTIME_MODULE_KIND}
    found = key and cache.load(key, lambda stored: symbols if stored == metadata else None)
    if found:
        return load_object(found[1])
    code = build_object()
    if cache is not None:
        cache.store(key, metadata, code)
    return load_object(code)


def host_runtime_entries(directory: str | os.PathLike) -> list[Path]:
    """The entries in a cache directory that hold the host's runtime modules (runtime_module:
    the thread pool, the fast call's checker, the packed GEMM functions), by their metadata:
    what any program on this host uses, as opposed to one program's code."""
    found = []
    for path in sorted(Path(directory).glob("*.o.ffc")):
        data = path.read_bytes()
        entry = _entry(data, data[_HEADER.size:_HEADER.size + _KEY_BYTES].decode(errors="replace"))
        if entry is not None and entry[0] == {"kind": RUNTIME_MODULE_KIND}:
            found.append(path)
    return found


def _trusted(status: os.stat_result, what: str) -> bool:
    """Whether a file or directory belongs to this user and no one else may write it; if
    not, a warning (once per path): its code would run as this user."""
    if status.st_uid == os.geteuid() and not status.st_mode & _SHARED_WRITE:
        return True
    if what not in _warned:
        _warned.add(what)
        warnings.warn(f"ffcompile: not using the {what}: it belongs to uid {status.st_uid} (you are "
                      f"{os.geteuid()}), mode {stat.filemode(status.st_mode)}; cached code is run only "
                      f"from files you own and no one else can write. Compiling without it (delete "
                      f"it, or set {CACHE_DIR_VARIABLE} to a directory of your own).",
                      RuntimeWarning, stacklevel=2)
    return False


def _discard(path: Path) -> None:
    """Delete a file if possible: a read-only directory keeps it, and only costs speed."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


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
