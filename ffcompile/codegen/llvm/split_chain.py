"""A small layer's training products in a chain, split across the pool at a chosen chunk size:
what calibrate.py times to choose smallgemm_split's chunk size on the host.

Alone, a split product's operands stay in both cores' caches from one call to the next, so it
shows only the handoff; in a step, each product reads what the one before wrote, half of it in
the other core's cache (and the weights the last step's update wrote). How much that costs
depends on how far apart the host's cores are (Zen 5: 55-80 ns a cache line's round trip, or
~350 when the virtual CPUs sat on distant cores; a Xeon here, ~150). So the chain runs digits'
second layer as a step does, each product's output the next one's operand: h = x W1, y = h W2,
the gradient g = y W2^T, and the updates W2 += a h^T g, W1 += a x^T g (a tiny, so the values
stay put over any number of calls).
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir

from .elementwise import MEMORY_TYPES
from .smallgemm_split import emit_split_small_gemm
from .target import jit
from .threadpool import fill_pool_slot, pool_slot

ROWS, WIDTH = 64, 128  # digits' batch and hidden width
STEP = -1e-6  # the updates' scale
BUFFERS = ("x", "w1", "w2", "h", "y", "g")


class SplitChain:
    """`chain()`: one run of the chain over its own f32 buffers, its products split with chunks of
    at least min_work multiply-adds."""

    def __init__(self, min_work: int):
        ty = MEMORY_TYPES["f32"]
        module = ir.Module("split_chain")
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ty.as_pointer()] * len(BUFFERS)), "chain")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        x, w1, w2, h, y, g = fn.args
        update = (ir.Constant(ty, STEP), ir.Constant(ty, 1.0))
        for pa, pb, pc, m, n, k, trans_a, trans_b, scale in (
                (x, w1, h, ROWS, WIDTH, WIDTH, False, False, None),
                (h, w2, y, ROWS, WIDTH, WIDTH, False, False, None),
                (y, w2, g, ROWS, WIDTH, WIDTH, False, True, None),
                (h, g, w2, WIDTH, WIDTH, ROWS, True, False, update),
                (x, g, w1, WIDTH, WIDTH, ROWS, True, False, update)):
            emit_split_small_gemm(b, pa, pb, pc, m, n, k, trans_a, trans_b, scale, min_work=min_work)
        b.ret_void()
        pool_slot(module)
        self._jit = jit(module)
        fill_pool_slot(self._jit)
        rng = np.random.default_rng(0)
        shapes = {"x": (ROWS, WIDTH), "w1": (WIDTH, WIDTH), "w2": (WIDTH, WIDTH), "h": (ROWS, WIDTH),
                  "y": (ROWS, WIDTH), "g": (ROWS, WIDTH)}
        self.arrays = {name: (rng.standard_normal(shapes[name]) / np.sqrt(WIDTH)).astype(np.float32)
                       for name in BUFFERS}
        self._args = [self.arrays[name].ctypes.data for name in BUFFERS]
        self._call = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(BUFFERS))(self._jit.address("chain"))

    def __call__(self) -> None:
        self._call(*self._args)
