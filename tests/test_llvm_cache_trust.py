"""The disk cache cannot be tricked into running code that is not the program's own, and never
crashes: each attack of issue 12 (an entry under another key, truncated or garbage object code
with a recomputed checksum, forged metadata, foreign or shared-writable files, a read-only
directory holding a corrupt entry) compiles the program afresh and computes the right result.

Forged entries are written with ObjectCache.store, so their checksums are right: only the
checks behind the checksum stand between them and the loader."""
import errno
import hashlib
import json
import os
import struct
import warnings

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import cache as cache_module
from ffcompile.codegen.llvm import target
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE, MAGIC, ObjectCache
from ffcompile.codegen.llvm.object_check import InvalidObject, Symbol, check_object

OTHER_UID = 12345  # not this user (the tests chown, which needs root)
X = np.linspace(-2, 2, 64, dtype=np.float32)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(directory))
    monkeypatch.setattr(cache_module, "_warned", set())
    return directory


def build(fn, *args):
    """A fresh executable (no in-memory cache) of fn on args, and whether it came from the disk."""
    executable = ff.compile(fn, backend="llvm").lower(*args).compile()
    return executable, executable.program.from_cache


def sin_program(x):
    return ff.sin(x) * 3.0 + 1.0


def tanh_program(x):
    return ff.tanh(x) * 3.0 + 1.0


def two_results(x, w):
    return ff.tanh(x @ w), (x * 2.0).sum()


def blas_and_arena(x, w):
    """A product large enough for BLAS, whose result lives in the arena."""
    h = ff.tanh(x @ w)
    return h.sum(axis=0), (h * h).sum()


def entry_of(directory):
    [path] = directory.glob("*.o.ffc")
    return path


def read_entry(path):
    """(key, metadata, object code) of an entry file, by the format docs/export.md gives."""
    data = path.read_bytes()
    magic, length, checksum = struct.unpack_from("<8sQ32s", data)
    payload = data[48:]
    assert magic == MAGIC and length == len(payload) and hashlib.sha256(payload).digest() == checksum
    key, (meta_length,) = payload[:64].decode(), struct.unpack_from("<I", payload, 64)
    return key, json.loads(payload[68:68 + meta_length]), payload[68 + meta_length:]


def forge(path, metadata=None, object_code=None):
    """Rewrite an entry with other metadata or object code and a correct checksum."""
    key, old_metadata, old_code = read_entry(path)
    ObjectCache(path.parent).store(key, old_metadata if metadata is None else metadata,
                                   old_code if object_code is None else object_code)


def assert_rebuilt_and_right(fn, expected, *args):
    executable, from_cache = build(fn, *args)
    assert not from_cache
    np.testing.assert_allclose(executable(*args), expected, rtol=3e-5, atol=1e-5)


def test_an_entry_stores_its_key_and_one_copied_over_another_key_is_not_loaded(cache_dir):
    build(sin_program, X)
    sin_entry = entry_of(cache_dir)
    sin_bytes = sin_entry.read_bytes()
    sin_entry.unlink()
    build(tanh_program, X)
    tanh_entry = entry_of(cache_dir)
    assert read_entry(tanh_entry)[0] == tanh_entry.name.split(".")[0]
    tanh_entry.write_bytes(sin_bytes)  # same interface, another program: was loaded, gave sin
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)


def test_an_entry_of_another_interface_under_this_key_is_not_loaded(cache_dir):
    x, w = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
    build(two_results, x, w)
    other = entry_of(cache_dir)
    other_bytes = other.read_bytes()
    other.unlink()
    build(tanh_program, X)
    entry_of(cache_dir).write_bytes(other_bytes)  # was KeyError / IndexError
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)


def _truncated(code):
    return code[:len(code) // 2]


def _garbage(code):
    return np.random.default_rng(0).integers(0, 256, len(code), dtype=np.uint8).tobytes()


def _garbage_after_the_header(code):
    return code[:64] + _garbage(code)[64:]


def _sections_moved_past_the_end(code):
    forged = bytearray(code)
    struct.pack_into("<Q", forged, 0x28, len(code))  # e_shoff
    return bytes(forged)


@pytest.mark.parametrize("damage", [_truncated, _garbage, _garbage_after_the_header, _sections_moved_past_the_end,
                                    lambda code: code[:10]],
                         ids=["truncated", "garbage", "garbage-after-header", "sections-past-end", "ten-bytes"])
def test_object_code_with_a_recomputed_checksum_is_checked_before_llvm_reads_it(cache_dir, damage):
    build(tanh_program, X)
    path = entry_of(cache_dir)
    forge(path, object_code=damage(read_entry(path)[2]))  # each crashed the process in LLVM
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    assert read_entry(path)[2] != damage(read_entry(path)[2])  # rewritten with good code


def test_another_programs_object_code_defining_other_symbols_is_not_loaded(cache_dir):
    profiled = ff.compile(tanh_program, backend="llvm").lower(X)
    profiled.profile(X, steps=1)  # an executable built with profile counters: one symbol more
    [profiled_entry] = [p for p in cache_dir.glob("*.o.ffc") if "ffc_profile".encode() in read_entry(p)[2]]
    profiled_code = read_entry(profiled_entry)[2]
    profiled_entry.unlink()
    build(tanh_program, X)
    forge(entry_of(cache_dir), object_code=profiled_code)
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)


@pytest.mark.parametrize("change", [
    lambda m: {**m, "arena_bytes": 0}, lambda m: {**m, "arena_bytes": -1},
    lambda m: {**m, "arena_bytes": "64"}, lambda m: {**m, "outputs": []},
    lambda m: {**m, "outputs": [10 ** 9]}, lambda m: {**m, "blas": ["sgemm", "dgemm"]}, lambda m: {**m, "blas": []},
    lambda m: {**m, "blas": ["system"]}, lambda m: {k: v for k, v in m.items() if k != "blas"}],
    ids=["arena-0", "arena-negative", "arena-string", "no-outputs", "output-past-graph", "blas-added", "blas-removed",
         "blas-unknown", "blas-missing"])
def test_forged_metadata_is_checked_against_the_program(blas_route, cache_dir, change):
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(256, 256)).astype(np.float32), rng.normal(size=(256, 300)).astype(np.float32)
    reference, _ = build(blas_and_arena, x, w)
    path = entry_of(cache_dir)
    metadata = read_entry(path)[1]
    assert metadata["arena_bytes"] > 0 and metadata["blas"] == ["sgemm"] and len(metadata["outputs"]) == 2
    forge(path, metadata=change(read_entry(path)[1]))  # arena_bytes=0 crashed the process
    executable, from_cache = build(blas_and_arena, x, w)
    assert not from_cache
    for got, want in zip(executable(x, w), reference(x, w), strict=True):
        np.testing.assert_array_equal(got, want)


def test_directories_are_created_owner_only_and_entries_owner_read_write(cache_dir):
    build(tanh_program, X)
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    assert entry_of(cache_dir).stat().st_mode & 0o777 == 0o600
    _, from_cache = build(tanh_program, X)
    assert from_cache


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


@needs_root
def test_an_entry_owned_by_another_user_is_refused_with_one_warning(cache_dir):
    build(tanh_program, X)
    path = entry_of(cache_dir)
    os.chown(path, OTHER_UID, -1)
    with pytest.warns(RuntimeWarning, match=f"belongs to uid {OTHER_UID}"):
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    assert path.stat().st_uid == os.geteuid()  # replaced by this user's own entry
    os.chown(path, OTHER_UID, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once already
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)


@needs_root
def test_a_directory_owned_by_another_user_is_neither_read_nor_written(cache_dir):
    build(tanh_program, X)
    entry = entry_of(cache_dir)
    os.chown(cache_dir, OTHER_UID, -1)
    before = entry.read_bytes()
    with pytest.warns(RuntimeWarning, match="not using the cache directory"):
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    entry.unlink()
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    assert not list(cache_dir.glob("*.o.ffc")) and before  # nothing stored there


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_can_write_is_refused(cache_dir, mode):
    build(tanh_program, X)
    cache_dir.chmod(mode)
    with pytest.warns(RuntimeWarning, match="not using the cache directory"):
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)


def test_an_entry_others_can_write_is_refused(cache_dir):
    build(tanh_program, X)
    entry_of(cache_dir).chmod(0o666)
    with pytest.warns(RuntimeWarning, match="not using the cache entry"):
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    assert entry_of(cache_dir).stat().st_mode & 0o777 == 0o600


def test_a_symbolic_link_entry_is_not_followed(cache_dir, tmp_path):
    build(tanh_program, X)
    path = entry_of(cache_dir)
    target = tmp_path / "elsewhere"
    path.rename(target)
    path.symlink_to(target)
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
    assert not path.is_symlink()


@pytest.fixture
def read_only(monkeypatch):
    """Make a directory read-only. Root writes through permission bits, so as root the calls
    that would write in it fail as they do for any other user (EACCES)."""
    def apply(directory):
        directory.chmod(0o500)
        if os.geteuid() != 0:
            return
        inside = str(directory) + os.sep

        def refuse(call, write=lambda *args: True):
            def guarded(path, *args, **kwargs):
                if str(path).startswith(inside) and write(*args):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return call(path, *args, **kwargs)
            return guarded

        monkeypatch.setattr(os, "unlink", refuse(os.unlink))
        monkeypatch.setattr(os, "replace", refuse(os.replace))
        creating = os.O_CREAT | os.O_WRONLY | os.O_RDWR
        monkeypatch.setattr(os, "open", refuse(os.open, lambda flags, *rest: flags & creating))

    return apply


def test_a_read_only_directory_with_a_corrupt_entry_only_costs_speed(cache_dir, read_only):
    build(tanh_program, X)
    path = entry_of(cache_dir)
    corrupt = path.read_bytes()[:-7]
    path.write_bytes(corrupt)
    read_only(cache_dir)
    try:
        assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)  # was PermissionError
        assert path.read_bytes() == corrupt  # could be neither deleted nor replaced
    finally:
        cache_dir.chmod(0o700)


PROGRAM_SYMBOLS = (Symbol("entry", function=True), Symbol("ffc_sgemm", False, 8), Symbol("ffc_dgemm", False, 8))


def object_calling(external: str) -> bytes:
    """A host object with a program's symbols whose entry calls `external`."""
    return target.object_code(f"""
        @ffc_sgemm = global i8* null
        @ffc_dgemm = global i8* null
        declare void @{external}(i8*, i8, i64)
        define void @entry(i8** %args) {{
          %arena = load i8*, i8** %args
          call void @{external}(i8* %arena, i8 0, i64 64)
          ret void
        }}""")


def test_an_object_whose_external_symbols_resolve_in_this_process_passes():
    check_object(object_calling("memset"), PROGRAM_SYMBOLS)


def test_an_object_calling_a_symbol_this_process_lacks_is_refused():
    with pytest.raises(InvalidObject, match="ffc_no_such_function"):
        check_object(object_calling("ffc_no_such_function"), PROGRAM_SYMBOLS)


def test_an_object_defining_other_symbols_is_refused():
    code = object_calling("memset")
    with pytest.raises(InvalidObject, match="expected"):
        check_object(code, PROGRAM_SYMBOLS[:2])
    with pytest.raises(InvalidObject, match="16 bytes"):
        check_object(code, PROGRAM_SYMBOLS[:2] + (Symbol("ffc_dgemm", False, 16),))
    with pytest.raises(InvalidObject, match="not a function"):
        check_object(code, (Symbol("entry", True), Symbol("ffc_sgemm", True), Symbol("ffc_dgemm", False, 8)))


def test_every_truncation_of_an_object_is_refused():
    code = object_calling("memset")
    for end in range(len(code)):
        with pytest.raises(InvalidObject):
            check_object(code[:end], PROGRAM_SYMBOLS)


def test_a_directory_in_place_of_an_entry_is_a_miss(cache_dir):
    build(tanh_program, X)
    path = entry_of(cache_dir)
    path.unlink()
    path.mkdir()
    assert_rebuilt_and_right(tanh_program, np.tanh(X) * 3 + 1, X)
