"""Vectorizable LLVM math: measured ulp error against high-precision references.

Every function runs inside a JIT-compiled loop `void f(T* x, T* y, i64 n)`, the
way fused kernels will call it, over a dense sweep of its domain: an even grid
plus inputs uniform in the bit pattern (so every binade, subnormals included).
float32 references are float64 NumPy/SciPy; float64 references are x87 long
double NumPy (64-bit mantissa) or mpmath for erf.
"""
import ctypes
import math
import re
import time

import llvmlite.binding as llvm
import numpy as np
import pytest
import scipy.special
from llvmlite import ir

from ffcompile.codegen.llvm import mathlib, target
from ffcompile.codegen.llvm.cgutils import for_range

DTYPES = {np.float32: ir.FloatType(), np.float64: ir.DoubleType()}
LOOP_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
WIDE_VECTOR_OP = re.compile(r"^\s+v\w+p[sd]\s.*%[yz]mm\d+", re.MULTILINE)
F32_MAX, F64_MAX = float(np.finfo(np.float32).max), float(np.finfo(np.float64).max)


def loop_name(name, dtype):
    return f"{name}_{np.dtype(dtype).name}"


def math_loops_module() -> ir.Module:
    """One elementwise loop per (function, dtype)."""
    module = ir.Module("math_loops")
    for dtype, ty in DTYPES.items():
        for name in mathlib.FUNCTIONS:
            fnty = ir.FunctionType(ir.VoidType(), [ty.as_pointer(), ty.as_pointer(), ir.IntType(64)])
            fn = ir.Function(module, fnty, loop_name(name, dtype))
            x, y, n = fn.args
            b = ir.IRBuilder(fn.append_basic_block("entry"))
            with for_range(b, n) as i:
                b.store(mathlib.call(b, name, b.load(b.gep(x, [i]))), b.gep(y, [i]))
            b.ret_void()
    return module


@pytest.fixture(scope="module")
def compiled():
    return target.jit(math_loops_module())


@pytest.fixture(scope="module")
def asm_by_function():
    asm = target.assembly(math_loops_module())
    bodies = re.findall(r"^(\w+):\n(.*?)^\.Lfunc_end", asm, re.MULTILINE | re.DOTALL)
    return dict(bodies)


def run(compiled, name, x):
    y = np.empty_like(x)
    LOOP_TYPE(compiled.address(loop_name(name, x.dtype)))(x.ctypes.data, y.ctypes.data, x.size)
    return y


def ulp_error(got, ref, dtype):
    """|got - ref| in units in the last place of the exact result `ref` (any precision)."""
    finfo = np.finfo(dtype)
    _, exponent = np.frexp(np.abs(ref))  # |ref| = m 2^exponent, m in [0.5, 1)
    ulp = np.ldexp(ref.dtype.type(1), np.maximum(exponent - 1, finfo.minexp) - finfo.nmant)
    with np.errstate(invalid="ignore"):
        err = np.abs(got.astype(ref.dtype) - ref) / ulp
    err[got == ref] = 0.0
    return err


def sweep(dtype, lo, hi, n, seed=0):
    """An even grid on [lo, hi] plus n inputs uniform in the bit pattern of each sign."""
    rng = np.random.default_rng(seed)
    bits = np.int32 if dtype == np.float32 else np.int64
    with np.errstate(over="ignore"):  # linspace's internal hi * step near the max float
        parts = [np.linspace(lo, hi, n, dtype=dtype)]
    for sign, a, b in ((1, max(lo, 0.0), hi), (-1, max(-hi, 0.0), -lo)):
        if b > a:
            ia, ib = np.array([a, b], dtype).view(bits)
            parts.append(sign * rng.integers(ia, ib, n, dtype=bits, endpoint=True).view(dtype))
    return np.concatenate(parts)


def erf_mpmath(x):
    mpmath = pytest.importorskip("mpmath", reason="mpmath gives the float64 erf reference")
    with mpmath.workdps(40):
        exact = [mpmath.erf(v) for v in x.tolist()]
        hi = np.array([float(v) for v in exact], np.longdouble)
        lo = np.array([float(v - float(v)) for v in exact], np.longdouble)
    return hi + lo


# name: (float32 domain, float64 domain, reference on float64/longdouble arrays,
#        asserted max ulp error float32, float64).  Measured maxima (znver5 host,
#        AVX-512 + FMA): exp 1.03/0.93, expm1 1.55/1.61, log 0.75/0.73, log1p 1.44/1.44,
#        tanh 2.49/2.49, erf 0.94/0.78, sin 1.52/2.18, cos 1.55/2.12, sqrt 0.5/0.5.
CASES = {
    "exp": ((-104.0, 88.72), (-745.2, 709.78), np.exp, 2.0, 2.0),
    "expm1": ((-104.0, 88.72), (-745.2, 709.78), np.expm1, 2.0, 2.0),
    "log": ((0.0, F32_MAX), (0.0, F64_MAX), np.log, 2.0, 2.0),
    "log1p": ((-0.99999994, F32_MAX), (-0.9999999999999999, F64_MAX), np.log1p, 2.0, 2.0),
    "tanh": ((-12.0, 12.0), (-25.0, 25.0), np.tanh, 4.0, 4.0),
    "erf": ((-5.0, 5.0), (-7.0, 7.0), None, 4.0, 4.0),
    # The Cody-Waite range; test_sin_cos_on_huge_arguments covers 2^20 to the largest float.
    "sin": ((-2.0**20, 2.0**20), (-2.0**20, 2.0**20), np.sin, 2.0, 3.0),
    "cos": ((-2.0**20, 2.0**20), (-2.0**20, 2.0**20), np.cos, 2.0, 3.0),
    "sqrt": ((0.0, F32_MAX), (0.0, F64_MAX), np.sqrt, 0.5, 0.5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_float32_max_ulp_error(compiled, name):
    (lo, hi), _, reference, bound, _ = CASES[name]
    x = sweep(np.float32, lo, hi, 1 << 20)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = scipy.special.erf(x64) if name == "erf" else reference(x64)
    err = ulp_error(run(compiled, name, x), ref, np.float32)
    worst = int(np.argmax(err))
    print(f"{name} float32: max {err[worst]:.3f} ulp at x={x[worst]!r}")
    assert err[worst] <= bound, f"{name}(float32 {x[worst]!r}): {err[worst]:.2f} ulp"


@pytest.mark.parametrize("name", list(CASES))
def test_float64_max_ulp_error(compiled, name):
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is not x87 extended here: no float64 reference")
    _, (lo, hi), reference, _, bound = CASES[name]
    if name == "erf":
        x = sweep(np.float64, lo, hi, 4000)
        ref = erf_mpmath(x)
    else:
        x = sweep(np.float64, lo, hi, 1 << 17)
        with np.errstate(all="ignore"):
            ref = reference(x.astype(np.longdouble))
    err = ulp_error(run(compiled, name, x), ref, np.float64)
    worst = int(np.argmax(err))
    print(f"{name} float64: max {err[worst]:.3f} ulp at x={x[worst]!r}")
    assert err[worst] <= bound, f"{name}(float64 {x[worst]!r}): {err[worst]:.2f} ulp"


INF, NAN = math.inf, math.nan
SPECIAL_VALUES = [
    ("exp", NAN, NAN), ("exp", INF, INF), ("exp", -INF, 0.0), ("exp", 1e30, INF),
    ("exp", -1e30, 0.0), ("exp", 0.0, 1.0), ("exp", -0.0, 1.0),
    ("expm1", NAN, NAN), ("expm1", INF, INF), ("expm1", -INF, -1.0), ("expm1", 1e30, INF),
    ("expm1", -1e30, -1.0), ("expm1", 0.0, 0.0), ("expm1", -0.0, -0.0),
    ("log", NAN, NAN), ("log", INF, INF), ("log", -INF, NAN), ("log", 0.0, -INF),
    ("log", -0.0, -INF), ("log", -1.0, NAN), ("log", 1.0, 0.0),
    ("log1p", NAN, NAN), ("log1p", INF, INF), ("log1p", -1.0, -INF), ("log1p", -2.0, NAN),
    ("log1p", -INF, NAN), ("log1p", 0.0, 0.0), ("log1p", -0.0, -0.0),
    ("tanh", NAN, NAN), ("tanh", INF, 1.0), ("tanh", -INF, -1.0), ("tanh", 1e30, 1.0),
    ("tanh", -1e30, -1.0), ("tanh", 0.0, 0.0), ("tanh", -0.0, -0.0),
    ("erf", NAN, NAN), ("erf", INF, 1.0), ("erf", -INF, -1.0), ("erf", 1e30, 1.0),
    ("erf", -1e30, -1.0), ("erf", 0.0, 0.0), ("erf", -0.0, -0.0),
    ("sin", NAN, NAN), ("sin", INF, NAN), ("sin", -INF, NAN), ("sin", 0.0, 0.0), ("sin", -0.0, -0.0),
    ("cos", NAN, NAN), ("cos", INF, NAN), ("cos", -INF, NAN), ("cos", 0.0, 1.0), ("cos", -0.0, 1.0),
    ("sqrt", NAN, NAN), ("sqrt", INF, INF), ("sqrt", -1.0, NAN), ("sqrt", -0.0, -0.0),
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name, x, expected", SPECIAL_VALUES)
def test_special_values(compiled, dtype, name, x, expected):
    got = run(compiled, name, np.array([x], dtype))[0]
    if math.isnan(expected):
        assert np.isnan(got), f"{name}({x}) = {got}, expected NaN"
    else:
        assert got == expected and np.signbit(got) == (math.copysign(1.0, expected) < 0), \
            f"{name}({x}) = {got!r}, expected {expected!r}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["tanh", "erf"])
def test_saturates_to_exactly_one(compiled, dtype, name):
    """Where 1 - f(x) is below a quarter of the gap under 1, f(x) must be exactly +-1."""
    x = np.linspace(1.0, 40.0, 40000).astype(dtype)
    x64 = x.astype(np.float64)
    gap = scipy.special.erfc(x64) if name == "erf" else 2.0 / (np.exp(2.0 * x64) + 1.0)
    x = x[gap < np.finfo(dtype).epsneg / 4]
    assert x.size > 1000
    np.testing.assert_array_equal(run(compiled, name, x), 1.0)
    np.testing.assert_array_equal(run(compiled, name, -x), -1.0)


# Measured maxima on 2^20 <= |x| <= max float (Payne-Hanek reduction, znver5 host):
# float32 sin 1.51 / cos 1.53 ulp, float64 sin 1.51 / cos 1.50 ulp (the Cody-Waite polynomials).
@pytest.mark.parametrize("dtype, bound", [(np.float32, 2.0), (np.float64, 2.0)])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_on_huge_arguments(compiled, dtype, bound, name):
    if dtype == np.float64 and np.finfo(np.longdouble).nmant < 63:
        pytest.skip("long double is not x87 extended here: no float64 reference")
    hi = F32_MAX if dtype == np.float32 else F64_MAX
    x = sweep(dtype, 2.0**20, hi, 1 << 17)
    x = np.concatenate([x, -x, np.geomspace(2.0**20, 1e30, 20000).astype(dtype)])
    ref = getattr(np, name)(x.astype(np.float64 if dtype == np.float32 else np.longdouble))
    err = ulp_error(run(compiled, name, x), ref, dtype)
    worst = int(np.argmax(err))
    print(f"{name} {np.dtype(dtype).name} on huge arguments: max {err[worst]:.3f} ulp at x={x[worst]!r}")
    assert err[worst] <= bound, f"{name}({np.dtype(dtype).name} {x[worst]!r}): {err[worst]:.2f} ulp"


# The doubles and floats closest to a multiple of pi/2 (r ~ 2^-61 resp. ~2^-30 relative to x):
# a reduction with too few bits of 2/pi gets these wrong in every digit.
HARDEST = [(np.float64, math.ldexp(6381956970095103, 797)), (np.float64, math.ldexp(5261692873635770, 499)),
           (np.float32, math.ldexp(16367173, 72)), (np.float32, math.ldexp(13176795, 1))]


@pytest.mark.parametrize("dtype, value", HARDEST)
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_hardest_arguments_to_reduce(compiled, dtype, value, name):
    mpmath = pytest.importorskip("mpmath", reason="mpmath gives the exact reference")
    x = np.array([value, -value], dtype)
    got = run(compiled, name, x)
    with mpmath.workprec(400):
        exact = [float(getattr(mpmath, name)(mpmath.mpf(float(v)))) for v in x]
    for v, g, ref in zip(x, got, exact):
        ulp = float(np.spacing(dtype(abs(ref))))
        assert abs(float(g) - ref) <= ulp, f"{name}({v!r}) = {g!r}, exact {ref!r}"


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_mixed_lanes_agree_with_separate_runs(compiled, dtype, name):
    """Huge lanes anywhere in a vector (the masked variant), or in the scalar remainder."""
    rng = np.random.default_rng(1)
    for n in (1, 3, 7, 16, 17, 33, 100):
        ordinary = rng.uniform(-100.0, 100.0, n).astype(dtype)
        huge = np.exp(rng.uniform(14.0, 80.0, n)).astype(dtype) * rng.choice([-1, 1], n).astype(dtype)
        for x in (np.where(rng.random(n) < 0.2, huge, ordinary), huge):
            separate = np.array([run(compiled, name, x[i:i + 1])[0] for i in range(n)])
            np.testing.assert_array_equal(run(compiled, name, x), separate)


@pytest.mark.parametrize("function", [loop_name(name, dtype) for dtype in DTYPES
                                      for name in mathlib.FUNCTIONS])
def test_loop_is_vectorized_without_calls(asm_by_function, function):
    if "+avx2" not in llvm.get_host_cpu_features().flatten():
        pytest.skip("host CPU has no AVX2: no ymm registers to look for")
    body = asm_by_function[function]
    assert WIDE_VECTOR_OP.search(body), f"{function} has no packed ymm/zmm arithmetic"
    # The only calls: sin/cos's own huge-argument path (its masked vector variants), no libm.
    calls = re.findall(r"^\s+call\w*\s+(\S+)", body, re.MULTILINE)
    assert all(re.fullmatch(r"ffc\.(sin|cos)\.huge\.f(32|64)(\.m\d+)?", c) for c in calls), \
        f"{function} calls out (libm?): {calls}"


def test_bad_input_names_function_and_type():
    module = ir.Module("bad")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(32), ir.FloatType()]), "f")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with pytest.raises(ValueError, match=r"mathlib\.exp: needs a float or double operand, got i32"):
        mathlib.call(b, "exp", fn.args[0])
    with pytest.raises(ValueError, match="no vectorizable 'lgamma'"):
        mathlib.call(b, "lgamma", fn.args[1])


def median_seconds(fn, repeats=31):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@pytest.mark.parametrize("name", ["exp", "tanh", "sin", "cos"])
def test_float32_throughput_vs_numpy(compiled, name):
    """Printed, not asserted: the machine is shared and timings are noisy."""
    x = np.random.default_rng(0).uniform(-10.0, 10.0, 10**6).astype(np.float32)
    ours, theirs = np.empty_like(x), np.empty_like(x)
    loop = LOOP_TYPE(compiled.address(loop_name(name, np.float32)))
    xp, yp = x.ctypes.data, ours.ctypes.data
    t_ours = median_seconds(lambda: loop(xp, yp, x.size))
    t_numpy = median_seconds(lambda: getattr(np, name)(x, out=theirs))
    print(f"{name} float32 1e6: ours {t_ours * 1e3:.3f} ms, numpy {t_numpy * 1e3:.3f} ms, "
          f"numpy/ours = {t_numpy / t_ours:.2f}x")
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
