"""Vectorizable exp, expm1, log, log1p, tanh, erf, sin, cos, sqrt in LLVM IR (float and double).

`llvm.exp.f32` and friends lower to scalar libm calls that block the loop
vectorizer, so each function is emitted here as branch-free straight-line IR:
range reduction, a polynomial, and `select`s for the special cases (NaN
propagates, ±inf, overflow to inf, underflow through subnormals to 0). Each is
an internal `alwaysinline` function defined on first use, so after inlining
the loop vectorizer turns a loop over it into SIMD code. One exception: sin
and cos of |x| > 2^20 need a Payne-Hanek reduction, too slow to compute for
every lane, so they call it in a branch; the call carries masked vector
variants (vector-function-abi-variant) that test the whole mask first, and
the vectorizer calls those, so ordinary vectors pay one call and one branch.

Fast-math flags are set per instruction: additions and multiplications carry
only `contract` (an FMA is at least as exact everywhere below: the range
reductions multiply by constants with trailing zero bits, so the product is
exact either way). Never `reassoc`/`fast`: the log1p correction and the sin/cos
quadrant arithmetic are exact only in the order written, and never
`nnan`/`ninf`, which would delete the special-case selects.

Polynomial coefficients are Chebyshev fits (mpmath.chebyfit, 60 digits) of the
stated function on the stated interval, rounded to the target precision; the
measured errors are asserted in tests/test_llvm_math.py.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

CONTRACT = ("contract",)


@dataclass(frozen=True)
class _Format:
    name: str
    float: ir.Type
    int: ir.IntType
    mantissa_bits: int
    bias: int
    min_normal: float
    # ln2 = LN2_HI + LN2_LO with LN2_HI short enough that k * LN2_HI is exact
    # for every exponent k the reductions produce (Cody & Waite).
    ln2_hi: float
    ln2_lo: float
    # exp's input is clamped here: beyond, the result is already 0 or inf, and
    # the clamp keeps 2^n representable in the two-step scaling.
    exp_lo: float
    exp_hi: float


_F32 = _Format("f32", ir.FloatType(), ir.IntType(32), 23, 127, 2.0 ** -126,
               0.693145751953125, 1.428606765330187e-06, -110.0, 90.0)
_F64 = _Format("f64", ir.DoubleType(), ir.IntType(64), 52, 1023, 2.0 ** -1022,
               0.6931471806019545, -4.2009150726810846e-11, -750.0, 710.0)


def _format_of(name: str, ty: ir.Type) -> _Format:
    if isinstance(ty, ir.FloatType):
        return _F32
    if isinstance(ty, ir.DoubleType):
        return _F64
    raise ValueError(f"mathlib.{name}: needs a float or double operand, got {ty}")


class _Emitter:
    """Arithmetic on scalars of one format; Python floats become constants."""

    def __init__(self, builder: ir.IRBuilder, fmt: _Format):
        self.b = builder
        self.fmt = fmt

    def val(self, v) -> ir.Value:
        return v if isinstance(v, ir.Value) else ir.Constant(self.fmt.float, v)

    def add(self, x, y, flags=CONTRACT):
        return self.b.fadd(self.val(x), self.val(y), flags=flags)

    def sub(self, x, y, flags=CONTRACT):
        return self.b.fsub(self.val(x), self.val(y), flags=flags)

    def mul(self, x, y, flags=CONTRACT):
        return self.b.fmul(self.val(x), self.val(y), flags=flags)

    def div(self, x, y):
        return self.b.fdiv(self.val(x), self.val(y))

    def poly(self, z, coeffs):
        """c0 + c1 z + c2 z^2 + ... by Horner's rule (each step one FMA)."""
        acc = self.val(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, z), c)
        return acc

    def cmp(self, op, x, y):
        """Ordered comparison: false whenever an operand is NaN."""
        return self.b.fcmp_ordered(op, self.val(x), self.val(y))

    def select(self, cond, x, y):
        return self.b.select(cond, self.val(x), self.val(y))

    def is_nan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    def intrinsic(self, name, *args):
        ty = args[0].type
        fn = self.b.module.declare_intrinsic(name, [ty], ir.FunctionType(ty, [ty] * len(args)))
        return self.b.call(fn, list(args))

    def pow2(self, k):
        """2.0**k for an integer k in the normal exponent range, via the exponent bits."""
        fmt = self.fmt
        biased = self.b.add(k, ir.Constant(fmt.int, fmt.bias))
        return self.b.bitcast(self.b.shl(biased, ir.Constant(fmt.int, fmt.mantissa_bits)), fmt.float)

    def math(self, name, x):
        return call(self.b, name, x)


# (e^r - 1 - r) / r^2 on |r| <= ln2/2.
_EXP_POLY = {
    "f32": (0.5, 0.16666577756404877, 0.041666556149721146, 0.008363173343241215,
            0.0013926175888627768),
    "f64": (0.5, 0.1666666666666667, 0.04166666666666667, 0.008333333333326141,
            0.0013888888888883883, 0.00019841269874800493, 2.4801587325287148e-05,
            2.7557255425746435e-06, 2.7557273866335e-07, 2.510520637395701e-08,
            2.0914617318073406e-09),
}


def _exp_reduced(e: _Emitter, x):
    """Split finite x = n ln2 + r (Cody-Waite), |r| <= ln2/2: return (integer n, e^r - 1)."""
    fmt = e.fmt
    n = e.intrinsic("llvm.roundeven", e.mul(x, 1.0 / math.log(2.0)))
    r = e.sub(e.sub(x, e.mul(n, fmt.ln2_hi)), e.mul(n, fmt.ln2_lo))
    expm1_r = e.add(r, e.mul(e.mul(r, r), e.poly(r, _EXP_POLY[fmt.name])))
    return e.b.fptosi(n, fmt.int), expm1_r  # n is poison for NaN x: callers select it away


def _exp(e: _Emitter, x):
    """exp(x) = 2^n e^r."""
    fmt = e.fmt
    xc = e.select(e.cmp("<", x, fmt.exp_lo), fmt.exp_lo, x)  # NaN passes both clamps
    xc = e.select(e.cmp(">", xc, fmt.exp_hi), fmt.exp_hi, xc)
    n, expm1_r = _exp_reduced(e, xc)
    # Scale in two steps, 2^n1 * 2^n2 with n1 + n2 = n: each factor stays a
    # normal number while the product may overflow or round into subnormals.
    n1 = e.b.ashr(n, ir.Constant(fmt.int, 1))
    y = e.mul(e.mul(e.add(1.0, expm1_r), e.pow2(n1)), e.pow2(e.b.sub(n, n1)))
    return e.select(e.is_nan(x), x, y)


# Below this expm1 rounds to -1 (e^-18 < 2^-25, e^-38 < 2^-54): the clamp keeps 2^n normal.
_EXPM1_LO = {"f32": -18.0, "f64": -38.0}


def _expm1(e: _Emitter, x):
    """expm1(x) = 2^n (e^r - 1) + (2^n - 1) for x = n ln2 + r.

    At n = 0 (|x| <= ln2/2) this is e^r - 1 itself, with no cancellation; up to
    n = mantissa bits 2^n - 1 is exact and the sum rounds once. Beyond, the -1
    is below half an ulp of e^x, so exp's own two-step scaling gives the
    result (overflowing to inf past the largest float)."""
    fmt = e.fmt
    lo = _EXPM1_LO[fmt.name]
    xc = e.select(e.cmp("<", x, lo), lo, x)  # NaN passes both clamps
    xc = e.select(e.cmp(">", xc, fmt.exp_hi), fmt.exp_hi, xc)
    n, expm1_r = _exp_reduced(e, xc)
    scale = e.pow2(n)  # wraps for n past the exponent range: selected away below
    near = e.add(e.mul(scale, expm1_r), e.sub(scale, 1.0))
    n1 = e.b.ashr(n, ir.Constant(fmt.int, 1))
    far = e.sub(e.mul(e.mul(e.add(1.0, expm1_r), e.pow2(n1)), e.pow2(e.b.sub(n, n1))), 1.0)
    y = e.select(e.b.icmp_signed(">", n, ir.Constant(fmt.int, fmt.mantissa_bits)), far, near)
    y = e.select(e.cmp("==", x, 0.0), x, y)  # keeps the sign of -0
    return e.select(e.is_nan(x), x, y)


# R(z) / z on z = s^2 <= ((sqrt2-1)/(sqrt2+1))^2, where log(1+f) = 2s + s R(z),
# s = f / (2+f) (the fdlibm form: log(1+f) = f - (f^2/2 - s (f^2/2 + R))).
_LOG_POLY = {
    "f32": (0.6666668653488159, 0.3998878002166748, 0.29579949378967285),
    "f64": (0.666666666666667, 0.39999999999899505, 0.28571428625975487,
            0.2222221113479508, 0.18182889125261723, 0.15331721600556042,
            0.14616449685043406),
}


def _log_positive(e: _Emitter, x):
    """log(x) for finite x > 0 (anything else gives garbage, fixed by _log_special)."""
    fmt, b = e.fmt, e.b
    ity = fmt.int
    # Subnormals: scale into the normal range first, take the exponent back below.
    tiny = e.cmp("<", x, fmt.min_normal)
    xs = e.select(tiny, e.mul(x, 2.0 ** fmt.mantissa_bits), x)
    bits = b.bitcast(xs, ity)
    # x = 2^k z with z in [sqrt(1/2), sqrt(2)): subtract the bits of sqrt(1/2),
    # the exponent field of the difference is k (as musl's log does).
    sqrt_half_bits = b.bitcast(ir.Constant(fmt.float, math.sqrt(0.5)), ity)
    shifted = b.sub(bits, sqrt_half_bits)
    k = b.ashr(shifted, ir.Constant(ity, fmt.mantissa_bits))
    z = b.bitcast(b.sub(bits, b.and_(shifted, ir.Constant(ity, -1 << fmt.mantissa_bits))), fmt.float)
    k = b.sub(k, b.select(tiny, ir.Constant(ity, fmt.mantissa_bits), ir.Constant(ity, 0)))
    kf = b.sitofp(k, fmt.float)

    f = e.sub(z, 1.0)  # exact (Sterbenz)
    s = e.div(f, e.add(f, 2.0))
    s2 = e.mul(s, s)
    r = e.mul(s2, e.poly(s2, _LOG_POLY[fmt.name]))
    hfsq = e.mul(e.mul(f, f), 0.5)
    tail = e.sub(e.sub(hfsq, e.add(e.mul(s, e.add(hfsq, r)), e.mul(kf, fmt.ln2_lo))), f)
    return e.sub(e.mul(kf, fmt.ln2_hi), tail)


def _log_special(e: _Emitter, x, y):
    """log's result y for finite x > 0, else: log(inf)=inf, log(0)=-inf, log(<0)=NaN, NaN."""
    y = e.select(e.cmp("==", x, math.inf), math.inf, y)
    y = e.select(e.cmp("==", x, 0.0), -math.inf, y)
    y = e.select(e.cmp("<", x, 0.0), math.nan, y)
    return e.select(e.is_nan(x), x, y)


def _log(e: _Emitter, x):
    return _log_special(e, x, _log_positive(e, x))


def _log1p(e: _Emitter, x):
    """log1p(x) = log(u) + (x - (u - 1)) / u with u = 1 + x rounded.

    The second term is the first-order correction for the rounding of u; both
    subtractions are exact, but only in this order (hence no reassoc).
    """
    u = e.add(1.0, x)
    lost = e.sub(x, e.sub(u, 1.0, flags=()), flags=())
    y = e.add(_log_positive(e, u), e.div(lost, u))
    y = _log_special(e, u, y)
    return e.select(e.cmp("==", x, 0.0), x, y)  # keeps the sign of -0


# Beyond this |x|, tanh rounds to 1: 1 - tanh(10) = 4e-9 < 2^-25 and
# 1 - tanh(22) = 1.6e-19 < 2^-54 (half an ulp below 1).
_TANH_SATURATION = {"f32": 10.0, "f64": 22.0}


def _tanh(e: _Emitter, x):
    """tanh|x| = -t / (t + 2) with t = expm1(-2|x|) in (-1, 0], sign copied from x.

    expm1(-2|x|) = 2^n (e^r - 1) + (2^n - 1) with n <= 0 keeps full relative
    accuracy at small |x| (n = 0, no cancellation), so one formula covers the
    whole range without a separate small-argument polynomial.
    """
    fmt = e.fmt
    ax = e.intrinsic("llvm.fabs", x)
    ax = e.select(e.cmp(">", ax, _TANH_SATURATION[fmt.name]), _TANH_SATURATION[fmt.name], ax)
    n, expm1_r = _exp_reduced(e, e.mul(ax, -2.0))
    scale = e.pow2(n)
    t = e.add(e.mul(scale, expm1_r), e.sub(scale, 1.0))
    y = e.intrinsic("llvm.copysign", e.div(e.b.fneg(t), e.add(t, 2.0)), x)
    return e.select(e.is_nan(x), x, y)


# erf(x)/x - 1 in z = x^2 on |x| <= 1 (the -1 keeps the leading 2/sqrt(pi) exact).
_ERF_POLY = {
    "f32": (0.12837916612625122, -0.3761262595653534, 0.11283594369888306,
            -0.02685421146452427, 0.005189087241888046, -0.000801686430349946,
            7.875874871388078e-05),
    "f64": (0.1283791670955126, -0.3761263890318375, 0.11283791670954879,
            -0.026866170645076792, 0.0052239776248180145, -0.000854832698083379,
            0.0001205533111164271, -1.4925595266831182e-05, 1.6461000484121368e-06,
            -1.6350312701054695e-07, 1.4659775274047436e-08, -1.1372848856791674e-09,
            5.957176147748911e-11),
}
# erfcx(x) = e^{x^2} erfc(x) in w = (x-2)/(x+2) for 1 <= x <= X_MAX; a
# polynomial in w converges far faster than one in x or 1/x. Beyond X_MAX,
# erf rounds to 1 (erfc(4) = 1.5e-8 in float, erfc(6) = 2e-17 in double).
_ERFC_X_MAX = {"f32": 4.0, "f64": 6.0}
_ERFC_POLY = {
    "f32": (0.25539568066596985, -0.4271858334541321, 0.24165821075439453,
            -0.0789785236120224, 0.003732141340151429, 0.006994855590164661,
            -0.0008365899557247758, -0.0009441596339456737),
    "f64": (0.2553956763105057, -0.4271858474139585, 0.24165819424248763,
            -0.07897858101571269, 0.0037328924016564484, 0.006997461739200575,
            -0.0008471431229415333, -0.0009819771114740715, 4.355265359817883e-05,
            0.00017436477257256738, 2.7560352756678313e-05, -2.7640727821912852e-05,
            -1.4166339069117108e-05, 1.859427387429402e-06, 4.146302183268488e-06,
            -2.22812957637235e-07),
}


def _erf(e: _Emitter, x):
    """x + x P(x^2) for |x| < 1, else sign(x) (1 - e^{-x^2} erfcx(|x|))."""
    name = e.fmt.name
    ax = e.intrinsic("llvm.fabs", x)
    small = e.add(x, e.mul(x, e.poly(e.mul(x, x), _ERF_POLY[name])))
    xb = e.select(e.cmp(">", ax, _ERFC_X_MAX[name]), _ERFC_X_MAX[name], ax)  # NaN stays
    w = e.div(e.sub(xb, 2.0), e.add(xb, 2.0))
    erfc = e.mul(e.math("exp", e.b.fneg(e.mul(xb, xb))), e.poly(w, _ERFC_POLY[name]))
    big = e.intrinsic("llvm.copysign", e.sub(1.0, erfc), x)
    return e.select(e.cmp("<", ax, 1.0), small, big)


# (sin r - r) / r^3 and (cos r - 1 + r^2/2) / r^4, in z = r^2 on |r| <= pi/4.
_SIN_POLY = {
    "f32": (-0.1666666716337204, 0.008333331905305386, -0.00019840087043121457,
            2.7249925551586784e-06),
    "f64": (-0.16666666666666666, 0.008333333333333331, -0.00019841269841265065,
            2.7557319219339167e-06, -2.5052106232447578e-08, 1.6058531618986147e-10,
            -7.586697117706918e-13),
}
_COS_POLY = {
    "f32": (0.0416666679084301, -0.00138888880610466, 2.480059993104078e-05,
            -2.730095900460583e-07),
    "f64": (0.041666666666666664, -0.0013888888888887398, 2.480158729876569e-05,
            -2.7557317271729793e-07, 2.08761462684032e-09, -1.1382632425521717e-11),
}
# pi/2 in 33-bit pieces: j * piece is exact for |j| < 2^20.
_PIO2_PARTS = (1.5707963267341256, 6.077100506303966e-11, 2.0222662487959506e-21)
_PIO2_HI, _PIO2_LO = math.pi / 2, 6.123233995736766e-17  # pi/2 = HI + LO to ~2^-107
# Up to here the Cody-Waite reduction above is exact; beyond, the Payne-Hanek one below.
_CODY_WAITE_MAX_ABS = 2.0 ** 20


def _two_over_pi_bits(bits: int) -> int:
    """floor(2/pi * 2^bits), from pi by Machin's formula in integers (guard bits absorb rounding)."""
    one = 1 << (bits + 64)

    def arctan_inv(n: int) -> int:  # arctan(1/n) * one
        total, term, k = 0, one // n, 0
        while term:
            total += term // (2 * k + 1) if k % 2 == 0 else -(term // (2 * k + 1))
            term //= n * n
            k += 1
        return total

    pi = 16 * arctan_inv(5) - 4 * arctan_inv(239)
    return (2 * one * one // pi) >> 64


@dataclass(frozen=True)
class _PayneHanek:
    """x 2/pi mod 4 for huge x = M 2^u (M the integer significand), exactly enough for sin/cos.

    Bits of 2/pi worth 2^-k with k <= u - 2 only add multiples of 4 to x 2/pi,
    so for each exponent a table holds the next `pieces` chunks of `chunk_bits`
    bits, scaled so that every product of a chunk of M (`significand_chunks`
    bits each) with a table entry is an exact double.
    """
    chunk_bits: int
    pieces: int
    significand_chunks: tuple[int, ...]  # widths, most significant first

    @functools.cache
    def table(self, fmt: _Format) -> list[float]:
        """Row e - e_min for each biased exponent e >= e_min: the scaled chunks of 2/pi."""
        w = self.chunk_bits
        e_min = self.min_biased_exponent(fmt)
        e_max = 2 * fmt.bias + 1
        u_max = e_max - fmt.bias - fmt.mantissa_bits
        shift_total = u_max + w * self.pieces + 2
        bits = _two_over_pi_bits(shift_total)
        rows = []
        for e in range(e_min, e_max + 1):
            u = e - fmt.bias - fmt.mantissa_bits
            for i in range(self.pieces):
                # chunk i holds the bits worth 2^-(u - 1 + w i) .. 2^-(u + w (i + 1) - 2)
                last = u + w * (i + 1) - 2
                chunk = (bits >> (shift_total - last)) & ((1 << w) - 1) if last >= 0 else 0
                rows.append(math.ldexp(chunk, 2 - w * (i + 1)))  # times 2^u: M * entry = x * chunk
        return rows

    @staticmethod
    def min_biased_exponent(fmt: _Format) -> int:
        return fmt.bias + int(math.log2(_CODY_WAITE_MAX_ABS))

    def reduce(self, e: _Emitter, x):
        """(j, hi, lo) in double with x 2/pi = j + hi + lo (mod 4), j an integer, |hi| <~ 1/2.

        Meaningful for |x| > 2^20 only (other lanes index row 0 and are discarded).
        Terms are added largest first; those on a grid of at least 2^-50 are reduced
        mod 4 and their integer part removed after each addition, which keeps every
        such sum exact; the rest is summed in double-double, so even the
        cancellation down to ~2^-61 leaves hi + lo with a relative error near 2^-53.
        """
        fmt, b = e.fmt, e.b
        d = _Emitter(b, _F64)
        bits = b.bitcast(x, fmt.int)
        exponent = b.and_(b.lshr(bits, _int(fmt, fmt.mantissa_bits)), _int(fmt, 2 * fmt.bias + 1))
        significand = b.or_(b.and_(bits, _int(fmt, (1 << fmt.mantissa_bits) - 1)),
                            _int(fmt, 1 << fmt.mantissa_bits))
        e_min = self.min_biased_exponent(fmt)
        row = b.sub(exponent, _int(fmt, e_min))
        row = b.select(b.icmp_signed("<", row, _int(fmt, 0)), _int(fmt, 0), row)
        row = b.mul(b.zext(row, ir.IntType(64)) if fmt is _F32 else row, ir.Constant(ir.IntType(64), self.pieces))
        table = self._global_table(b.module, fmt)
        entries = [b.load(b.gep(table, [ir.Constant(ir.IntType(32), 0),
                                         b.add(row, ir.Constant(ir.IntType(64), i))]))
                   for i in range(self.pieces)]
        terms = []
        shift = fmt.mantissa_bits + 1
        for width in self.significand_chunks:
            shift -= width
            mask = _int(fmt, ((1 << width) - 1) << shift)
            chunk = b.uitofp(b.and_(significand, mask), _F64.float)  # exact: `width` bits
            for i, entry in enumerate(entries):
                grid = shift + 2 - self.chunk_bits * (i + 1)  # log2 of the product's last bit
                if grid < 2:  # else a multiple of 4
                    terms.append((grid, d.mul(chunk, entry, flags=())))
        terms.sort(key=lambda t: -t[0])
        exact = [term for grid, term in terms if grid >= -50]
        acc, j = d.val(0.0), d.val(0.0)
        for term in exact:
            term = d.sub(term, d.mul(d.intrinsic("llvm.floor", d.mul(term, 0.25, flags=())), 4.0,
                                     flags=()), flags=())
            acc = d.add(acc, term, flags=())
            k = d.intrinsic("llvm.roundeven", acc)
            acc, j = d.sub(acc, k, flags=()), d.add(j, k, flags=())
        k = d.intrinsic("llvm.roundeven", d.add(acc, terms[len(exact)][1], flags=()))
        acc, j = d.sub(acc, k, flags=()), d.add(j, k, flags=())
        # The rest in double-double: these terms can cancel acc down to ~2^-61, so
        # each sum's error is kept, until the terms are below 2^-110 * 2^53.
        hi, lo = acc, d.val(0.0)
        for grid, term in terms:
            if grid < -50:
                if grid >= -110:
                    hi, err = _two_sum(d, hi, term)
                    lo = d.add(lo, err, flags=())
                else:
                    lo = d.add(lo, term, flags=())
        negative = b.icmp_signed("<", bits, _int(fmt, 0))
        return tuple(d.select(negative, b.fneg(v), v) for v in (j, hi, lo))

    def _global_table(self, module: ir.Module, fmt: _Format):
        name = f"ffc.two_over_pi.{fmt.name}"
        table = module.globals.get(name)
        if table is None:
            rows = self.table(fmt)
            ty = ir.ArrayType(_F64.float, len(rows))
            table = ir.GlobalVariable(module, ty, name)
            table.linkage = "internal"
            table.global_constant = True
            table.initializer = ir.Constant(ty, rows)
        return table


def _two_sum(d: _Emitter, a, b):
    """(s, err) with s = fl(a + b) and s + err = a + b exactly (Knuth)."""
    s = d.add(a, b, flags=())
    b_part = d.sub(s, a, flags=())
    err = d.add(d.sub(a, d.sub(s, b_part, flags=()), flags=()), d.sub(b, b_part, flags=()), flags=())
    return s, err


def _int(fmt: _Format, value: int) -> ir.Constant:
    return ir.Constant(fmt.int, value)


# float: one 24-bit significand times 29-bit chunks, 87 bits of 2/pi past the
# dropped ones (error below 2^-61 quarter turns); double: 26 + 27 bits times
# 26-bit chunks, 182 bits (below 2^-127: the closest double to a multiple of
# pi/2 is ~2^-61 away from it, Muller's table).
_PAYNE_HANEK = {"f32": _PayneHanek(29, 3, (24,)), "f64": _PayneHanek(26, 7, (26, 27))}


def _sin_or_cos(e: _Emitter, x, quarter_turns: int):
    """sin(x + quarter_turns * pi/2) from x = j pi/2 + r, |r| <= pi/4.

    Cody-Waite reduction for |x| <= 2^20, in double for both formats (for float
    inputs two pieces of pi/2 are enough). Beyond, a call to the Payne-Hanek
    version, which the loop vectorizer replaces by a masked vector variant that
    does nothing unless some lane needs it.
    """
    fmt, b = e.fmt, e.b
    d = _Emitter(b, _F64)
    xd = b.fpext(x, _F64.float) if fmt is _F32 else x
    j = d.intrinsic("llvm.roundeven", d.mul(xd, 2.0 / math.pi))
    parts = _PIO2_PARTS[:2] if fmt is _F32 else _PIO2_PARTS
    rd = xd
    for part in parts:
        rd = d.sub(rd, d.mul(j, part))
    y = _quadrant_polynomial(e, j, rd, quarter_turns)
    ax = e.intrinsic("llvm.fabs", x)
    ordinary_block = b.block
    huge_block = b.append_basic_block("huge")
    join_block = b.append_basic_block("join")
    b.cbranch(e.cmp(">", ax, _CODY_WAITE_MAX_ABS), huge_block, join_block)
    b.position_at_end(huge_block)
    y_huge = b.call(_huge_function(b.module, fmt, quarter_turns), [x])
    b.branch(join_block)
    b.position_at_end(join_block)
    result = b.phi(fmt.float)
    result.add_incoming(y, ordinary_block)
    result.add_incoming(y_huge, huge_block)
    return e.select(e.cmp("==", ax, math.inf), math.nan, result)


def _quadrant_polynomial(e: _Emitter, j, rd, quarter_turns: int):
    """sin(r + (j + quarter_turns) pi/2) for the double j and rd = r."""
    fmt = e.fmt
    d = _Emitter(e.b, _F64)
    r = e.b.fptrunc(rd, fmt.float) if fmt is _F32 else rd
    # The quadrant in float arithmetic: exact, and NaN/inf give NaN, not poison.
    q = d.add(j, float(quarter_turns), flags=())
    q = d.sub(q, d.mul(d.intrinsic("llvm.floor", d.mul(q, 0.25, flags=())), 4.0, flags=()), flags=())
    z = e.mul(r, r)
    sin_r = e.add(r, e.mul(e.mul(r, z), e.poly(z, _SIN_POLY[fmt.name])))
    cos_r = e.add(e.sub(1.0, e.mul(z, 0.5)), e.mul(e.mul(z, z), e.poly(z, _COS_POLY[fmt.name])))
    odd = e.b.or_(d.cmp("==", q, 1.0), d.cmp("==", q, 3.0))
    y = e.select(odd, cos_r, sin_r)
    return e.select(d.cmp(">=", q, 2.0), e.b.fneg(y), y)


# Vector widths the loop vectorizer may pick for the huge-argument call (up to a zmm of floats).
_VECTOR_WIDTHS = (2, 4, 8, 16)


def _huge_function(module: ir.Module, fmt: _Format, quarter_turns: int) -> ir.Function:
    """Scalar `noinline` Payne-Hanek sin/cos, with masked vector variants the loop vectorizer uses."""
    name = f"ffc.{'cos' if quarter_turns else 'sin'}.huge.{fmt.name}"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(fmt.float, [fmt.float]), name)
    fn.linkage = "internal"
    for attr in ("noinline", "nounwind", "readnone"):
        fn.attributes.add(attr)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    e = _Emitter(b, fmt)
    j, hi, lo = _PAYNE_HANEK[fmt.name].reduce(e, fn.args[0])
    d = _Emitter(b, _F64)
    rd = d.intrinsic("llvm.fma", hi, d.val(_PIO2_HI),
                     d.add(d.mul(hi, _PIO2_LO, flags=()), d.mul(lo, _PIO2_HI, flags=()), flags=()))
    b.ret(_quadrant_polynomial(e, j, rd, quarter_turns))
    variants = [_masked_variant(module, fn, width) for width in _VECTOR_WIDTHS]
    mangled = ",".join(f"_ZGV_LLVM_M{w}v_{name}({v.name})" for w, v in zip(_VECTOR_WIDTHS, variants))
    # llvmlite knows no string attributes; the set prints its members verbatim.
    set.add(fn.attributes, f'"vector-function-abi-variant"="{mangled}"')
    _keep(module, variants)
    return fn


def _masked_variant(module: ir.Module, scalar: ir.Function, width: int) -> ir.Function:
    """<width x T> f(<width x T> x, <width x i1> mask): `scalar` on the masked lanes, after
    one test of the whole mask, so vectors with no huge lane cost a call and a branch."""
    vty = ir.VectorType(scalar.function_type.return_type, width)
    mty = ir.VectorType(ir.IntType(1), width)
    fn = ir.Function(module, ir.FunctionType(vty, [vty, mty]), f"{scalar.name}.m{width}")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    x, mask = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    any_lane = b.icmp_unsigned("!=", b.bitcast(mask, ir.IntType(width)), ir.Constant(ir.IntType(width), 0))
    slow, done = fn.append_basic_block("some_lane"), fn.append_basic_block("no_lane")
    b.cbranch(any_lane, slow, done)
    b.position_at_end(done)
    b.ret(x)  # lanes outside the mask are ignored by the caller
    b.position_at_end(slow)
    y = x
    for lane in range(width):
        index = ir.Constant(ir.IntType(32), lane)
        value = b.call(scalar, [b.extract_element(x, index)])
        y = b.insert_element(y, b.select(b.extract_element(mask, index), value,
                                         b.extract_element(x, index)), index)
    b.ret(y)
    return fn


def _keep(module: ir.Module, functions) -> None:
    """List `functions` in @llvm.compiler.used, so that nothing deletes them before vectorizing."""
    ptr = ir.IntType(8).as_pointer()
    used = module.globals.get("llvm.compiler.used")
    if used is None:
        used = ir.GlobalVariable(module, ir.ArrayType(ptr, 0), "llvm.compiler.used")
        used.linkage = "appending"
        used.section = "llvm.metadata"
        used.initializer = ir.Constant(used.value_type, [])
    members = list(used.initializer.constant) + [f.bitcast(ptr) for f in functions]
    used.value_type = ir.ArrayType(ptr, len(members))  # grows: printed from value_type
    used.type = used.value_type.as_pointer()
    used.initializer = ir.Constant(used.value_type, members)


def _sin(e: _Emitter, x):
    return e.select(e.cmp("==", x, 0.0), x, _sin_or_cos(e, x, 0))  # keeps the sign of -0


def _cos(e: _Emitter, x):
    return _sin_or_cos(e, x, 1)


def _sqrt(e: _Emitter, x):
    return e.intrinsic("llvm.sqrt", x)  # one correctly rounded instruction, vectorizes as is


_BODIES: dict[str, Callable] = {
    "exp": _exp, "expm1": _expm1, "log": _log, "log1p": _log1p, "tanh": _tanh, "erf": _erf,
    "sin": _sin, "cos": _cos, "sqrt": _sqrt,
}
FUNCTIONS = tuple(_BODIES)


def call(builder: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """Emit `name(x)` for a float or double scalar, defining the function on first use."""
    if name not in _BODIES:
        raise ValueError(f"mathlib: no vectorizable '{name}'; available: {', '.join(FUNCTIONS)}")
    fmt = _format_of(name, x.type)
    module = builder.module
    symbol = f"ffc.{name}.{fmt.name}"
    fn = module.globals.get(symbol)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(fmt.float, [fmt.float]), symbol)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        fn.attributes.add("nounwind")
        body = ir.IRBuilder(fn.append_basic_block("entry"))
        body.ret(_BODIES[name](_Emitter(body, fmt), fn.args[0]))
    return builder.call(fn, [x])
