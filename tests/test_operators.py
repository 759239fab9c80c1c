"""Python operators on traced values behave as on NumPy arrays (issue 13's list)."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import ArgumentError

pytestmark = pytest.mark.usefixtures("backend")

Y = np.array([-3.0, -2.5, -0.5, -0.0, 0.0, 1.5, 7.0])


@pytest.mark.parametrize("name, fn", [
    ("rpow", lambda y: 2 ** y), ("floordiv", lambda y: y // 2), ("rfloordiv", lambda y: 7.0 // (y + 9.0)),
    ("mod", lambda y: y % 2), ("mod negative divisor", lambda y: y % -1.5), ("rmod", lambda y: 5.0 % (y + 9.0)),
    ("traced pow", lambda y: y ** (y * 2.0 - (y * 2.0) % 1.0)), ("0 ** 0", lambda y: (y * 0.0) ** (y * 0.0)),
])
def test_operators_match_numpy(name, fn):
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(ff.compile(fn)(Y), fn(Y), rtol=1e-13, atol=1e-15)  # exp(p log x) for p ** x


def test_integer_floor_division_and_remainder_follow_python():
    a = np.array([-7, -3, 0, 5, 9], np.int32)
    got_div, got_mod = ff.compile(lambda a: (a // 2, a % -3))(a)
    assert got_div.dtype == np.int32 and np.array_equal(got_div, a // 2) and np.array_equal(got_mod, a % -3)


def test_step_is_one_at_zero():
    np.testing.assert_array_equal(ff.compile(ff.step)(np.array([-1.0, 0.0, -0.0, 2.0])), [0.0, 1.0, 1.0, 1.0])


def test_vjp_rejects_a_cotangent_of_another_shape_or_dtype():
    x = np.ones(3, np.float32)
    _, pullback = ff.vjp(ff.tanh, x)
    with pytest.raises(ArgumentError, match=r"cotangent 0 has type f32\[2,3\], but .* output 0 is f32\[3\]"):
        pullback(np.ones((2, 3), np.float32))
    with pytest.raises(ArgumentError, match=r"cotangent 0 has type f64\[3\]"):
        pullback(np.ones(3))
    _, pullback = ff.vjp(lambda x: ff.tanh(x).sum(), x)
    assert pullback(1.0)[0].dtype == np.float32  # a Python number takes the output's dtype
