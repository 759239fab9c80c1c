"""Host target machine, O3 pipeline, MCJIT and the loop helper of the LLVM backend."""
import ctypes
import gc
import re

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from ffcompile.codegen.llvm import target
from ffcompile.codegen.llvm.cgutils import for_range

# A packed SIMD instruction (AT&T syntax) on a 256- or 512-bit register.
WIDE_VECTOR_OP = re.compile(r"^\s+v\w+p[sd]\s.*%[yz]mm\d+", re.MULTILINE)


def host_has_avx2() -> bool:
    try:
        return "+avx2" in llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        return False


def axpb_module(ty: ir.Type) -> ir.Module:
    """`void axpb(T* x, T* y, i64 n)`: y[i] = 2 x[i] + 1, and an internal helper."""
    module = ir.Module("axpb")
    helper = ir.Function(module, ir.FunctionType(ty, [ty]), "twice_plus_one")
    helper.linkage = "internal"
    hb = ir.IRBuilder(helper.append_basic_block("entry"))
    hb.ret(hb.fadd(hb.fmul(helper.args[0], ir.Constant(ty, 2.0)), ir.Constant(ty, 1.0)))

    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ty.as_pointer(), ty.as_pointer(),
                                                             ir.IntType(64)]), "axpb")
    x, y, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with for_range(b, n) as i:
        b.store(b.call(helper, [b.load(b.gep(x, [i]))]), b.gep(y, [i]))
    b.ret_void()
    return module


@pytest.fixture(scope="module")
def axpb64():
    return target.jit(axpb_module(ir.DoubleType()))


def test_target_machine_is_built_for_the_host():
    tm = target.host_target_machine()
    assert tm is target.host_target_machine()  # one per process
    assert tm.triple == llvm.get_process_triple()


def test_freeing_a_jit_module_leaves_the_target_usable():
    """MCJIT owns and frees its target machine: the shared one must not be it."""
    for _ in range(2):
        module = target.jit(axpb_module(ir.FloatType()))
        del module
        gc.collect()
    assert "axpb:" in target.assembly(axpb_module(ir.FloatType()))


@pytest.mark.parametrize("n", [0, 1, 7, 16, 17, 1001])
@pytest.mark.parametrize("loaded", [False, True], ids=["jitted", "from-object-code"])
def test_jitted_loop_covers_exactly_n_elements(axpb64, n, loaded):
    """The same through the object code the JIT produced, loaded back (the disk cache's path)."""
    module = target.load_object(axpb64.object_code) if loaded else axpb64
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(module.address("axpb"))
    x = np.random.default_rng(n).standard_normal(n + 8)
    y = np.full_like(x, -7.0)
    fn(x.ctypes.data, y.ctypes.data, n)
    np.testing.assert_array_equal(y[:n], 2.0 * x[:n] + 1.0)
    np.testing.assert_array_equal(y[n:], -7.0)  # the loop must not run past n


def test_invalid_ir_is_a_value_error():
    with pytest.raises(ValueError, match="LLVM rejected the module"):
        target.jit("define i32 @f() { ret i64 0 }")


def test_loop_is_vectorized_with_host_features():
    if not host_has_avx2():
        pytest.skip("host CPU has no AVX2: no ymm registers to look for")
    asm = target.assembly(axpb_module(ir.FloatType()))
    assert "axpb:" in asm
    assert WIDE_VECTOR_OP.search(asm), "no packed ymm/zmm arithmetic in:\n" + asm


def _row_plus_bias_module() -> ir.Module:
    """`void f(float* x, float* bias, float* y, i64 m, i64 n)`: y[i, j] = x[i, j] + bias[j]."""
    module = ir.Module("rows")
    f32p, i64 = ir.FloatType().as_pointer(), ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32p, f32p, f32p, i64, i64]), "f")
    x, bias, y, m, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with for_range(b, m, "i") as i, for_range(b, n, "j") as j:
        at = b.add(b.mul(i, n), j)
        b.store(b.fadd(b.load(b.gep(x, [at])), b.load(b.gep(bias, [j]))), b.gep(y, [at]))
    b.ret_void()
    return module


def test_loop_strength_reduction_is_off_in_our_compiles_only(monkeypatch):
    """target.LLVM_OPTIONS: LSR off while ffcompile compiles (turned on for one compile, it
    rewrites the loop's addressing: other machine code), and back to LLVM's default after, for
    whatever else in the process compiles with llvmlite (numba)."""
    off = target.assembly(_row_plus_bias_module())
    monkeypatch.setitem(target.LLVM_OPTIONS, "disable-lsr", ("false", "false"))
    on = target.assembly(_row_plus_bias_module())
    monkeypatch.undo()
    assert on != off and target.assembly(_row_plus_bias_module()) == off
    # another llvmlite user, after ours: LLVM's default (LSR on)
    tm = target.host_target_machine()
    module = llvm.parse_assembly(str(_row_plus_bias_module()))
    module.triple, module.data_layout = tm.triple, str(tm.target_data)
    target.optimize(module, tm)
    assert tm.emit_assembly(module) == on
