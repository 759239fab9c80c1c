"""Collectives in native code: an all_reduce kernel calls back into the process's group.

The kernel copies its operands into its buffer and calls the function in the external
global COLLECTIVE_SYMBOL with (START, group, buffer, elements, dtype code); the entry
calls it with WAIT before the first kernel that reads the buffer, so the kernels in
between run while the reduction is in flight. The backend fills the global with a
ctypes callback into ir/collectives.py (after JIT compilation, as the BLAS slots are
filled), which starts and completes the reduction through the group's own library
(mpi4py for an MPI communicator): any MPI that mpi4py links against works, its handle
types never enter generated code, and the code names no address, so the disk cache
holds it like any other program. ctypes holds the GIL only inside the callback.
An error in the callback cannot unwind native code: it is kept, later calls of the
same program see no collective work, and the executable raises it once the entry returns.
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir

from ...ir.collectives import Pending
from ...ir.symbolic import Affine
from ...ir.types import DTYPES
from .cgutils import size_value
from .elementwise import I8, I64, Array
from .layout import copy_strided

COLLECTIVE_SYMBOL = "ffc_collective"
START, WAIT = 0, 1
MAX_BUFFERS = 1024  # buffer views kept for reuse
_DTYPE_CODES = {name: k for k, name in enumerate(DTYPES)}
_CALL_TYPE = ir.FunctionType(ir.VoidType(), [I64, I64, I8.as_pointer(), I64, I64])


def collective_slot(module: ir.Module) -> ir.GlobalVariable:
    slot = module.globals.get(COLLECTIVE_SYMBOL)
    if slot is None:
        slot = ir.GlobalVariable(module, I8.as_pointer(), COLLECTIVE_SYMBOL)
        slot.initializer = ir.Constant(I8.as_pointer(), None)
    return slot


def emit_collective_call(b: ir.IRBuilder, phase: int, group: int, out: Array) -> None:
    fn = b.bitcast(b.load(collective_slot(b.module)), _CALL_TYPE.as_pointer())
    b.call(fn, [ir.Constant(I64, phase), ir.Constant(I64, group), b.bitcast(out.ptr, I8.as_pointer()),
                size_value(b, out.type.size), ir.Constant(I64, _DTYPE_CODES[out.type.dtype])])


def emit_all_reduce_start(b: ir.IRBuilder, node, out: Array, operands: list[Array]) -> None:
    """Copy the operands, flattened, one after another into out; start the reduction there."""
    start = Affine(0)  # elements; B-sized operands and others may be mixed
    for x in operands:
        copy_strided(b, (x.type.size,), out, (1,), x.ptr, (1,), dst_offset=start)
        start += x.type.size
    emit_collective_call(b, START, node.attr("group"), out)


class _Collectives:
    """The callback native code calls, with the reductions in flight and the first error."""

    def __init__(self):
        self.in_flight: dict[int, Pending] = {}  # buffer address -> its reduction
        # (address, elements, dtype code) -> the buffer as an array: a program's buffers
        # are the same arena memory at every call, and making the view is most of a call's cost
        self.buffers: dict[tuple[int, int, int], np.ndarray] = {}
        self.error: BaseException | None = None
        self.callback = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64)(self._call)
        self.address = ctypes.cast(self.callback, ctypes.c_void_p).value

    def _call(self, phase: int, group: int, address: int, size: int, code: int) -> None:
        if self.error is not None:
            return
        try:
            if phase == START:
                buffer = self.buffers.get((address, size, code))
                if buffer is None:
                    if len(self.buffers) >= MAX_BUFFERS:  # programs come and go: their arenas too
                        self.buffers.clear()
                    buffer = self.buffers[address, size, code] = _array_at(address, size, code)
                self.in_flight[address] = Pending(group, buffer)
            else:
                self.in_flight.pop(address).wait()
        except BaseException as exc:  # noqa: BLE001 - kept for the caller: it cannot cross native frames
            self.error = exc

    def raise_error(self) -> None:
        """Raise the error a callback kept during the last entry call, if any."""
        error, self.error = self.error, None
        if error is not None:
            self.in_flight.clear()
            raise error


def _array_at(address: int, size: int, code: int) -> np.ndarray:
    dtype = DTYPES[list(DTYPES)[code]]
    return np.ctypeslib.as_array((ctypes.c_char * (size * dtype.itemsize)).from_address(address)).view(dtype)


COLLECTIVES = _Collectives()
