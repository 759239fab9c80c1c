"""Elementwise loops carry `llvm.loop.parallel_accesses` (codegen/llvm/loop_metadata.py): the
loop vectorizer then needs no run-time pointer-overlap checks (a `vector.memcheck` block and a
scalar copy of the loop), which cost the mnist step's GEMM epilogues half their compile time.
Results stay exact: the backend tests compare every kernel with NumPy, in place included.
Also the small GEMM's tiles: not unrolled again by LLVM, one splat of A per row and k step."""
import re

import numpy as np
import pytest
from llvmlite import ir

import ffcompile as ff
from ffcompile.codegen.llvm import blas, target
from ffcompile.codegen.llvm.elementwise import Array, BodyEmitter, Phase, independent, loop_nest
from ffcompile.ir import TensorType


def _optimized(ir_text: str) -> str:
    module = target.parse(ir_text, target.host_target_machine())
    target.optimize(module, target.host_target_machine())
    return str(module)


def _function(text: str, pattern: str) -> str:
    start = re.search(rf"^define .*@\"?{pattern}\"?\(", text, re.M).start()
    return text[start:].split("\n}\n", 1)[0]


def test_a_fused_loop_is_marked_parallel():
    """(Where the kernel's pointers are noalias, as here, the hint is redundant; it is what
    vectorizes loops over captured pointers, the epilogue below, or over storage reused in place.)"""
    x = np.ones((64, 100), np.float32)  # rows and columns not merged: the broadcast b keeps them apart
    b = np.ones(100, np.float32)
    lowered = ff.compile(lambda x, b: ff.tanh(x * 2.0 + b), backend="llvm").lower(x, b)
    assert lowered.llvm_ir.count("llvm.loop.parallel_accesses") == 1


def test_the_packed_gemms_epilogue_is_vectorized_without_overlap_checks(monkeypatch):
    monkeypatch.setattr(blas, "packed_beats_blas", lambda *args: True)  # as on a 512-bit host
    x, w, b = np.ones((128, 784), np.float32), np.ones((784, 512), np.float32), np.ones(512, np.float32)
    lowered = ff.compile(lambda x, w, b: ff.relu(x @ w + b), backend="llvm").lower(x, w, b)
    body = _function(_optimized(lowered.llvm_ir), r"packed_gemm\.epilogue[\w.]*")
    assert "vector.body" in body and "vector.memcheck" not in body


def _nest_hints(output_shape) -> str:
    """The IR of a [4, 64] loop nest storing one output of output_shape, parallel if independent."""
    module = ir.Module()
    f32p = ir.FloatType().as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32p]), "nest")
    b = ir.IRBuilder(fn.append_basic_block())
    emitter = BodyEmitter(b, [], {0: Array(fn.args[0], TensorType(output_shape, "f32"))}, {})
    phase, groups = Phase.whole((4, 64)), [(0,), (1,)]
    with loop_nest(b, (4, 64), groups, parallel=independent(emitter, phase, [0], groups)) as point:
        offset = point.offset(b, phase.strides(output_shape, 2))
        b.store(ir.Constant(ir.FloatType(), 1.0), b.gep(fn.args[0], [offset]))
    b.ret_void()
    return str(module)


@pytest.mark.parametrize("shape, parallel", [((4, 64), True), ((4, 1), False), ((64,), True)])
def test_only_a_loop_writing_a_new_element_each_iteration_is_parallel(shape, parallel):
    """An output broadcast along the innermost loop is written at one address every iteration:
    no hint, whatever the values written."""
    text = _nest_hints(shape)
    assert ("llvm.loop.parallel_accesses" in text) == parallel
    assert ("llvm.access.group" in text) == parallel
    target.parse(text, target.host_target_machine())  # the verifier takes the metadata


_TILES = "smallgemm"  # the function of the product's tiles: split across the pool (smallgemm_split.py)


def test_smallgemm_loops_tiled_by_hand_are_not_unrolled_again():
    """A 128x64 @ 64x64 product's register-tiled kernel: 168 instructions after O3 with its tile
    loops marked `unroll.disable`, 532 when LLVM unrolled them (digits' step compiled 281 -> 207
    ms; its step time unchanged within noise)."""
    x, w = np.ones((128, 64), np.float32), np.ones((64, 64), np.float32)
    lowered = ff.compile(lambda x, w: x @ w, backend="llvm").lower(x, w)
    body = _function(_optimized(lowered.llvm_ir), rf"{_TILES}\.chunk")  # O3 inlines the tiles into the chunk
    assert sum(1 for line in body.splitlines() if line.startswith("  ")) < 300


def test_a_tile_splats_each_element_of_a_once():
    """A k step broadcasts each of its rows' A element once for all of the row's vectors of B
    (16 splats in this kernel's IR when each vector had its own; O3 merged them anyway)."""
    x, w = np.ones((128, 64), np.float32), np.ones((64, 64), np.float32)
    ir_text = ff.compile(lambda x, w: x @ w, backend="llvm").lower(x, w).llvm_ir
    body = _function(ir_text, _TILES)
    assert body.count("shufflevector") == 8
