"""check_grads: compare compiled gradients with the definition of the derivative.

For each differentiated argument a random unit direction u is drawn and the
directional derivative J·u is taken by central differences in float64
(the fourth-order stencil, so the function's own rounding matters little). It is
compared with (a) ⟨grad, u⟩ from `grad` when the function returns one scalar,
(b) the VJP dot-product test: ⟨pullback(v), u⟩ must equal ⟨v, J·u⟩ for a
random output cotangent v, and (c) forward mode: ⟨v, jvp(u)⟩ must equal ⟨v, J·u⟩
too. Order 2 applies the same procedure to the gradient
function of ⟨w, fn⟩ (w random), which differentiates the adjoint graph again:
Hessian-vector products, grad of grad, and (by jvp) forward over reverse.

Everything runs on the NumPy backend, the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .api import compile as ff_compile
from .transforms import grad, jvp, vjp
from .ir.lang import reduce_sum
from .tree import tree_flatten, tree_map, tree_unflatten

DEFAULT_EPS = 1e-3  # central-difference step along a unit direction, in float64
DEFAULT_RTOL = 1e-6


@dataclass(frozen=True)
class Check:
    """One comparison: analytic vs finite-difference directional derivative."""

    order: int
    kind: str  # "grad" (⟨grad, u⟩), "vjp" (⟨pullback(v), u⟩ vs ⟨v, J·u⟩) or "jvp" (⟨v, jvp(u)⟩ vs ⟨v, J·u⟩)
    argnum: int
    analytic: float
    numeric: float
    error: float  # relative, see _relative_error


@dataclass(frozen=True)
class GradCheckResult:
    checks: tuple[Check, ...]

    @property
    def worst(self) -> Check:
        return max(self.checks, key=lambda c: c.error)

    @property
    def worst_error(self) -> float:
        return self.worst.error

    @property
    def worst_argnum(self) -> int:
        return self.worst.argnum


def check_grads(fn, args, order: int = 1, argnums=None, eps: float = DEFAULT_EPS,
                rtol: float = DEFAULT_RTOL, seed: int = 0) -> GradCheckResult:
    """Check fn's gradients up to `order` (order 2 checks orders 1 and 2) at `args`.

    Raises AssertionError listing every check whose relative error exceeds rtol.

    args is a tuple of arguments (pytrees of arrays); float leaves are checked
    in float64. argnums (default: every argument whose leaves are all float)
    selects the arguments to differentiate. Returns the checks made, with the
    worst relative error and the argument it concerns.
    """
    if order not in (1, 2):
        raise ValueError(f"check_grads: order must be 1 or 2, got {order!r}")
    args = tuple(_to_float64(a) for a in args)
    nums = _argnums(args, argnums)
    rng = np.random.default_rng(seed)
    name = getattr(fn, "__name__", "fn")
    checks = _first_order(fn, args, nums, eps, rng, order=1)
    if order == 2:
        checks += _first_order(_gradient_of_projection(fn, args, nums, rng), args, nums, eps, rng, order=2)
    result = GradCheckResult(tuple(checks))
    failed = [c for c in result.checks if not c.error <= rtol]
    if failed:
        lines = [f"check_grads({name}): {len(failed)} of {len(checks)} checks above rtol={rtol:.1e}"]
        lines += [f"  order {c.order} {c.kind}, argument {c.argnum}: relative error {c.error:.3e} "
                  f"(analytic {c.analytic!r}, finite difference {c.numeric!r})"
                  for c in sorted(failed, key=lambda c: -c.error)]
        raise AssertionError("\n".join(lines))
    return result


def _first_order(fn, args, nums, eps, rng, order) -> list[Check]:
    forward = ff_compile(fn, backend="numpy")
    out = forward(*args)
    out_leaves, out_tree = _float_leaves(out), tree_flatten(out)[1]
    cotangent = [rng.standard_normal(o.shape) for o in out_leaves]
    pullback = ff_compile(lambda primals, ct: vjp(fn, *primals)[1](ct), backend="numpy")
    cts = pullback(args, tree_unflatten(out_tree, cotangent))
    pushforward = ff_compile(lambda primals, tangents: jvp(fn, primals, tangents)[1], backend="numpy")
    scalar = len(out_leaves) == 1 and out_leaves[0].shape == ()
    checks = []
    for n in nums:
        u = _unit_direction(args[n], rng)
        ju = _directional_derivative(forward, args, n, u, eps)
        numeric = _dot(cotangent, ju)
        analytic = _dot(tree_flatten(cts[n])[0], tree_flatten(u)[0])
        scale = _norm(cotangent) * _norm(ju)
        checks.append(Check(order, "vjp", n, analytic, numeric, _relative_error(analytic, numeric, scale)))
        tangents = tuple(u if k == n else tree_map(np.zeros_like, a) for k, a in enumerate(args))
        analytic = _dot(cotangent, _float_leaves(pushforward(args, tangents)))
        checks.append(Check(order, "jvp", n, analytic, numeric, _relative_error(analytic, numeric, scale)))
        if scalar:
            g = ff_compile(grad(fn, argnums=n), backend="numpy")(*args)
            analytic = _dot(tree_flatten(g)[0], tree_flatten(u)[0])
            checks.append(Check(order, "grad", n, analytic, ju[0].item(),
                                _relative_error(analytic, ju[0].item(), 0.0)))
    return checks


def _directional_derivative(forward, args, n, u, eps) -> list[np.ndarray]:
    """J·u by the fourth-order central difference (error O(eps⁴)), so eps can be large
    enough that rounding in fn itself is not amplified much."""
    at = {k: _float_leaves(forward(*_shifted(args, n, u, k * eps))) for k in (-2, -1, 1, 2)}
    return [(8 * (p1 - m1) - (p2 - m2)) / (12 * eps)
            for p1, m1, p2, m2 in zip(at[1], at[-1], at[2], at[-2])]


def _gradient_of_projection(fn, args, nums, rng):
    """x -> grad ⟨w, fn(x)⟩ for a fixed random w: its derivative is a Hessian."""
    out = ff_compile(fn, backend="numpy")(*args)
    weights = [rng.standard_normal(o.shape) for o in _float_leaves(out)]

    def projection(*primals):
        leaves = tree_flatten(fn(*primals))[0]
        terms = [reduce_sum(leaf * w) for leaf, w in zip(leaves, weights)]
        return sum(terms[1:], terms[0])

    projection.__name__ = f"projection_{getattr(fn, '__name__', 'fn')}"
    return grad(projection, argnums=tuple(nums))


def _to_float64(tree):
    def cast(leaf):
        array = np.asarray(leaf)
        return array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array

    return tree_map(cast, tree)


def _is_float(leaf) -> bool:
    return np.issubdtype(np.asarray(leaf).dtype, np.floating)


def _argnums(args, argnums) -> tuple[int, ...]:
    if argnums is None:
        nums = tuple(n for n, a in enumerate(args)
                     if tree_flatten(a)[0] and all(_is_float(leaf) for leaf in tree_flatten(a)[0]))
    else:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        nums = tuple(n % len(args) for n in nums)
    if not nums:
        raise ValueError("check_grads: no float argument to differentiate")
    for n in nums:
        if not all(_is_float(leaf) for leaf in tree_flatten(args[n])[0]):
            raise TypeError(f"check_grads: argument {n} has non-float leaves; it cannot be differentiated")
    return nums


def _float_leaves(outputs) -> list[np.ndarray]:
    leaves = [np.asarray(leaf) for leaf in tree_flatten(outputs)[0]]
    for leaf in leaves:
        if not _is_float(leaf):
            raise TypeError(f"check_grads: every output must be a float array, got {leaf.dtype}")
    return leaves


def _unit_direction(arg, rng):
    leaves, treedef = tree_flatten(arg)
    u = [rng.standard_normal(np.shape(leaf)) for leaf in leaves]
    norm = _norm(u)
    return tree_unflatten(treedef, [d / norm if norm else d for d in u])


def _shifted(args, n, u, step):
    leaves, treedef = tree_flatten(args[n])
    moved = [leaf + step * d for leaf, d in zip(leaves, tree_flatten(u)[0])]
    return args[:n] + (tree_unflatten(treedef, moved),) + args[n + 1:]


def _dot(xs, ys) -> float:
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(xs, ys)))


def _norm(xs) -> float:
    return float(np.sqrt(sum(np.vdot(x, x) for x in xs)))


def _relative_error(analytic: float, numeric: float, scale: float) -> float:
    """|a − n| over the larger of |a|, |n| and `scale` (‖v‖·‖J·u‖, which keeps a dot
    product that cancels to ~0 from looking wrong); 0 when all are zero."""
    denominator = max(abs(analytic), abs(numeric), scale)
    if not np.isfinite(analytic) or not np.isfinite(numeric):
        return float("inf")
    return abs(analytic - numeric) / denominator if denominator else 0.0
