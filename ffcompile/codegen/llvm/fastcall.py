"""The ordinary call's native fast path: argument checks and argument block in one native call.

A call of a compiled program must check every argument (an ndarray of the compiled
dtype and shape, C-contiguous and aligned; a donated one writeable and sharing no
memory with another argument) and pass its data address. In Python that is
~0.35 us an array (type, dtype, shape, flags, address reads); here one native
function does it for a whole tuple of arrays by reading the ndarray structs, then
fills the program's argument block and calls its entry: a call with 34 leaves in a
dict costs 1.0 us more than one with 2 (0.03 us a leaf, extraction included).

`call_objects(items, call)`: items points at a tuple's item array (the arguments,
then the fresh result arrays); call at the executable's CallTable. It returns 0
after running the program, or nonzero without touching anything when an argument
does not pass, and the caller takes the checked Python path, which copies,
converts or raises as before. The function is generic (the shapes are in the table),
so it is compiled once per process, never per program.

It reads CPython's tuple and NumPy's ndarray structs at fixed offsets (PyTupleObject,
PyArrayObject_fields: public, unchanged for years); `available()` verifies every
offset against live objects at first use, and without a match the fast path is off.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from . import target
from .cache import runtime_module

OBJECT_ENTRY = "ffc_call_objects"
_TUPLE_ITEMS = 24  # PyTupleObject.ob_item
_TYPE, _DATA, _ND, _DIMS, _DESCR, _FLAGS = 8, 16, 24, 32, 56, 64  # PyArrayObject_fields
C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400  # NPY_ARRAY_* flags
RECORD_WORDS = 6  # per item: descr, flags mask, nd, first dim's index, nbytes, donated

_IR = f"""
define i32 @{OBJECT_ENTRY}(ptr %items, ptr %call) {{
entry:
  %records = load ptr, ptr %call
  %dimtab.p = getelementptr i64, ptr %call, i64 1
  %dimtab = load ptr, ptr %dimtab.p
  %block.p = getelementptr i64, ptr %call, i64 2
  %block = load ptr, ptr %block.p
  %fn.p = getelementptr i64, ptr %call, i64 3
  %fn = load ptr, ptr %fn.p
  %ndarray.p = getelementptr i64, ptr %call, i64 4
  %ndarray = load ptr, ptr %ndarray.p
  %n.p = getelementptr i64, ptr %call, i64 5
  %n = load i64, ptr %n.p
  %inputs.p = getelementptr i64, ptr %call, i64 6
  %inputs = load i64, ptr %inputs.p
  br label %item

item:
  %k = phi i64 [0, %entry], [%k.next, %item.ok]
  %items.done = icmp eq i64 %k, %n
  br i1 %items.done, label %donated, label %item.type

item.type:
  %obj.p = getelementptr ptr, ptr %items, i64 %k
  %obj = load ptr, ptr %obj.p
  %rec = getelementptr [{RECORD_WORDS} x i64], ptr %records, i64 %k
  %type.p = getelementptr i8, ptr %obj, i64 {_TYPE}
  %type = load ptr, ptr %type.p
  %is.ndarray = icmp eq ptr %type, %ndarray
  br i1 %is.ndarray, label %item.fields, label %reject

item.fields:
  %descr.p = getelementptr i8, ptr %obj, i64 {_DESCR}
  %descr = load i64, ptr %descr.p
  %want.descr = load i64, ptr %rec
  %same.descr = icmp eq i64 %descr, %want.descr
  %flags.p = getelementptr i8, ptr %obj, i64 {_FLAGS}
  %flags32 = load i32, ptr %flags.p
  %flags = zext i32 %flags32 to i64
  %mask.p = getelementptr i64, ptr %rec, i64 1
  %mask = load i64, ptr %mask.p
  %has = and i64 %flags, %mask
  %flags.ok = icmp eq i64 %has, %mask
  %nd.p = getelementptr i8, ptr %obj, i64 {_ND}
  %nd32 = load i32, ptr %nd.p
  %nd = sext i32 %nd32 to i64
  %want.nd.p = getelementptr i64, ptr %rec, i64 2
  %want.nd = load i64, ptr %want.nd.p
  %same.nd = icmp eq i64 %nd, %want.nd
  %ok1 = and i1 %same.descr, %flags.ok
  %ok2 = and i1 %ok1, %same.nd
  br i1 %ok2, label %dims.start, label %reject

dims.start:
  %dims.pp = getelementptr i8, ptr %obj, i64 {_DIMS}
  %dims = load ptr, ptr %dims.pp
  %first.p = getelementptr i64, ptr %rec, i64 3
  %first = load i64, ptr %first.p
  br label %dim

dim:
  %d = phi i64 [0, %dims.start], [%d.next, %dim.same]
  %dims.done = icmp eq i64 %d, %nd
  br i1 %dims.done, label %item.ok, label %dim.body

dim.body:
  %dim.p = getelementptr i64, ptr %dims, i64 %d
  %dim.v = load i64, ptr %dim.p
  %want.index = add i64 %first, %d
  %want.dim.p = getelementptr i64, ptr %dimtab, i64 %want.index
  %want.dim = load i64, ptr %want.dim.p
  %d.next = add i64 %d, 1
  %same.dim = icmp eq i64 %dim.v, %want.dim
  br i1 %same.dim, label %dim.same, label %reject

dim.same:
  br label %dim

item.ok:
  %data.p = getelementptr i8, ptr %obj, i64 {_DATA}
  %data = load ptr, ptr %data.p
  %slot.index = add i64 %k, 1
  %slot = getelementptr ptr, ptr %block, i64 %slot.index
  store ptr %data, ptr %slot
  %k.next = add i64 %k, 1
  br label %item

donated:
  %i = phi i64 [0, %item], [%i.next, %others.done]
  %i.done = icmp eq i64 %i, %inputs
  br i1 %i.done, label %run, label %donated.body

donated.body:
  %i.next = add i64 %i, 1
  %irec = getelementptr [{RECORD_WORDS} x i64], ptr %records, i64 %i
  %i.donated.p = getelementptr i64, ptr %irec, i64 5
  %i.donated = load i64, ptr %i.donated.p
  %i.bytes.p = getelementptr i64, ptr %irec, i64 4
  %i.bytes = load i64, ptr %i.bytes.p
  %i.slot = getelementptr ptr, ptr %block, i64 %i.next
  %i.start.ptr = load ptr, ptr %i.slot
  %i.start = ptrtoint ptr %i.start.ptr to i64
  %i.end = add i64 %i.start, %i.bytes
  %i.checked = icmp ne i64 %i.donated, 0
  br i1 %i.checked, label %other, label %others.done

other:
  %j = phi i64 [0, %donated.body], [%j.next, %other.next]
  %j.done = icmp eq i64 %j, %inputs
  br i1 %j.done, label %others.done, label %other.body

other.body:
  %j.next = add i64 %j, 1
  %jrec = getelementptr [{RECORD_WORDS} x i64], ptr %records, i64 %j
  %j.bytes.p = getelementptr i64, ptr %jrec, i64 4
  %j.bytes = load i64, ptr %j.bytes.p
  %j.slot = getelementptr ptr, ptr %block, i64 %j.next
  %j.start.ptr = load ptr, ptr %j.slot
  %j.start = ptrtoint ptr %j.start.ptr to i64
  %j.end = add i64 %j.start, %j.bytes
  %itself = icmp eq i64 %j, %i
  %before = icmp ult i64 %i.start, %j.end
  %after = icmp ult i64 %j.start, %i.end
  %meet = and i1 %before, %after
  %empty.i = icmp eq i64 %i.bytes, 0
  %empty.j = icmp eq i64 %j.bytes, 0
  %empty = or i1 %empty.i, %empty.j
  %apart = or i1 %itself, %empty
  %clear = xor i1 %meet, true
  %fine = or i1 %apart, %clear
  br i1 %fine, label %other.next, label %reject

other.next:
  br label %other

others.done:
  br label %donated

run:
  call void %fn(ptr %block)
  ret i32 0

reject:
  ret i32 1
}}
"""

_CALL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_CALL_HOLDING_GIL = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


@functools.cache
def available() -> bool:
    """Whether the struct offsets hold in this process (checked on live objects, once)."""
    word = ctypes.c_int64.from_address
    samples = [np.ones((3, 5), np.float32), np.zeros(7), np.empty(0, np.int32), np.asarray(2.0),
               np.ones((4, 4))[:, 1], np.frombuffer(b"abcdabcd", np.int32)]
    items = tuple(samples)
    if ctypes.c_void_p.from_address(id(items) + _TUPLE_ITEMS).value != id(items[0]):
        return False
    for a in samples:
        base = id(a)
        flags = ctypes.c_int32.from_address(base + _FLAGS).value
        dims = ctypes.c_void_p.from_address(base + _DIMS).value
        if (ctypes.c_void_p.from_address(base + _TYPE).value != id(np.ndarray)
                or (ctypes.c_void_p.from_address(base + _DATA).value or 0) != a.__array_interface__["data"][0]
                or ctypes.c_int32.from_address(base + _ND).value != a.ndim
                or word(base + _DESCR).value != id(a.dtype)
                or bool(flags & C_CONTIGUOUS) != a.flags.c_contiguous
                or bool(flags & ALIGNED) != a.flags.aligned
                or bool(flags & WRITEABLE) != a.flags.writeable
                or (a.ndim and tuple(word(dims + 8 * d).value for d in range(a.ndim)) != a.shape)):
            return False
    return True


@functools.cache
def _object_entry():
    """The generic checked call, compiled for the host once per process, called releasing
    the GIL and holding it (for programs that run so, backend.HOLD_GIL_MAX_FLOPS). Its IR
    is written as it should run: without the O3 pipeline, 5 ms of CPU rather than 15; and
    its object code comes from the disk cache after the first process."""
    jit = runtime_module("fast call", (OBJECT_ENTRY,), lambda: target.object_code(_IR, passes=False))
    address = jit.address(OBJECT_ENTRY)
    return jit, _CALL(address), _CALL_HOLDING_GIL(address)


def load() -> None:
    """Load (or build and cache) the checked call's module now, ahead of a first call."""
    _object_entry()


class CallTable:
    """What call_objects reads for one executable: a record per argument and result (its
    dtype, the flags it must have, shape, size, donated?), its argument block and entry."""

    def __init__(self, items: list[tuple[np.dtype, tuple[int, ...], bool]], inputs: int, block, entry: int,
                 holds_gil: bool = False):
        """items: (dtype, shape, donated) of each argument, then of each result array;
        holds_gil: the program runs holding the GIL."""
        self._jit, self._releasing, self._holding = _object_entry()
        records, dims = _records(items)
        self._records = (ctypes.c_int64 * max(len(records), 1))(*records)
        self._dims = (ctypes.c_int64 * max(len(dims), 1))(*dims)
        self.call = self._holding if holds_gil else self._releasing
        self._block = block  # referenced: the table points into it
        self._dtypes = [dtype for dtype, _, _ in items]  # their ids are in the records
        self.table = (ctypes.c_void_p * 7)(ctypes.addressof(self._records), ctypes.addressof(self._dims),
                                           ctypes.addressof(block), entry, id(np.ndarray), len(items), inputs)
        self.address = ctypes.addressof(self.table)

    def refill(self, items: list[tuple[np.dtype, tuple[int, ...], bool]], holds_gil: bool = False) -> None:
        """The table of items of the same dtypes, ranks and donation at other sizes (a symbolic
        program's at another batch size), rewritten in place: a few us, where a new table
        costs ~50. Not while a call reads it (the executable's lock keeps them apart)."""
        records, dims = _records(items)
        assert len(records) == len(self._records) and len(dims) == len(self._dims) or not dims
        self._records[:len(records)] = records
        self._dims[:len(dims)] = dims
        self.call = self._holding if holds_gil else self._releasing


def _records(items) -> tuple[list[int], list[int]]:
    """A CallTable's records (dtype, flags, rank, first dim, bytes, donated per item) and dims."""
    records, dims = [], []
    for dtype, shape, donated in items:
        mask = C_CONTIGUOUS | ALIGNED | (WRITEABLE if donated else 0)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        records += [id(dtype), mask, len(shape), len(dims), nbytes, int(donated)]
        dims += shape
    return records, dims


def items_address(items: tuple) -> int:
    """The address of a tuple's item array (call_objects' first argument)."""
    return id(items) + _TUPLE_ITEMS
