"""A GEMM dimension past the BLAS's 32-bit integers is a clear compile-time error, not a wrapped
constant (lowered from shapes alone: nothing of that size is allocated)."""
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm.blas import BLAS_INT_MAX, GemmTooLarge

LARGE = 2 ** 31 + 8


def matmul(x, w):
    return x @ w


@pytest.mark.parametrize("m, k, n", [(LARGE, 1, 1), (1, LARGE, 1), (1, 1, LARGE)], ids=["m", "k", "n"])
def test_a_dimension_past_the_blas_integers_is_a_compile_error(m, k, n):
    lowered = ff.compile(matmul, backend="llvm").lower(ff.spec((m, k)), ff.spec((k, n)))
    with pytest.raises(GemmTooLarge) as error:
        lowered.compile()
    message = str(error.value)
    assert f"f32[{m},{k}] @ f32[{k},{n}]" in message and str(LARGE) in message
    assert "test_llvm_gemm_limits.py" in message and str(BLAS_INT_MAX) in message


def test_the_largest_blas_dimension_is_passed_as_it_is():
    lowered = ff.compile(matmul, backend="llvm").lower(ff.spec((BLAS_INT_MAX, 1)), ff.spec((1, 1)))
    assert f"i32 {BLAS_INT_MAX}" in lowered.llvm_ir and "i32 -" not in lowered.llvm_ir
