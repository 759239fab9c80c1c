"""A GEMM dimension past the BLAS's 32-bit integers is a clear compile-time error, not a wrapped
constant (lowered from shapes alone: nothing of that size is allocated)."""
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import blas
from ffcompile.codegen.llvm.blas import BLAS_INT_MAX, SKINNY, GemmTooLarge, gemm_route
from ffcompile.codegen.llvm.skinny import K_BLOCK, SKINNY_MAX_ROWS

LARGE = 2 ** 31 + 8


def matmul(x, w):
    return x @ w


ROWS = SKINNY_MAX_ROWS + 1  # fewer rows: a skinny product, native code with 64-bit indices


@pytest.mark.parametrize("m, k, n", [(LARGE, 1, 1), (ROWS, LARGE, 1), (ROWS, 1, LARGE)], ids=["m", "k", "n"])
def test_a_dimension_past_the_blas_integers_is_a_compile_error(m, k, n):
    lowered = ff.compile(matmul, backend="llvm").lower(ff.spec((m, k)), ff.spec((k, n)))
    with pytest.raises(GemmTooLarge) as error:
        lowered.compile()
    message = str(error.value)
    assert f"f32[{m},{k}] @ f32[{k},{n}]" in message and str(LARGE) in message
    assert "test_llvm_gemm_limits.py" in message and str(BLAS_INT_MAX) in message


@pytest.mark.parametrize("threads, passed", [(2, "i32"), (1, "i64")], ids=["one-call", "split-by-rows"])
def test_the_largest_blas_dimension_is_passed_as_it_is(blas_route, monkeypatch, threads, passed):
    """One BLAS call (BLAS threads > 1) takes m as a constant; split across the thread pool
    (BLAS at one thread), the blocks' rows are clamped to m, then passed."""
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", threads)
    lowered = ff.compile(matmul, backend="llvm").lower(ff.spec((BLAS_INT_MAX, 1)), ff.spec((1, 1)))
    assert f"{passed} {BLAS_INT_MAX}" in lowered.llvm_ir and "i32 -" not in lowered.llvm_ir


@pytest.mark.parametrize("k, n", [(LARGE, 1), (1, LARGE)], ids=["k", "n"])
def test_a_skinny_product_takes_dimensions_past_the_blas_integers(k, n):
    assert gemm_route(1, n, k, "f32", False, False) == SKINNY
    lowered = ff.compile(matmul, backend="llvm").lower(ff.spec((1, k)), ff.spec((k, n)))
    lowered.compile()  # no GemmTooLarge
    assert f", {LARGE // K_BLOCK}" in lowered.llvm_ir if k == LARGE else f", {LARGE}" in lowered.llvm_ir
