"""Activations at their kinks (the table in docs/activations.md) and elu's accuracy near 0.

The table is read from the docs, so the page and the behaviour cannot drift
apart: every row is computed with ff.grad on both backends and with torch
autograd where torch is installed, and every row must have a case here.
"""
from __future__ import annotations

import ast
import pathlib
import re

import numpy as np
import pytest

import ffcompile as ff

pytestmark = pytest.mark.usefixtures("backend")

TABLE = pathlib.Path(__file__).parent.parent / "docs" / "activations.md"
ROW = re.compile(r"^\| `(?P<case>[^`]+)`[^|]*\| (?P<at>[^|]+) \| (?P<ff>[^|]+) \| (?P<torch>[^|]+) \|")


def table_rows() -> dict[str, tuple]:
    """case -> (ffcompile gradients, PyTorch gradients or None), as Python literals."""
    rows = {}
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match and match["case"] != "case":
            torch_text = match["torch"].strip()
            rows[match["case"]] = (_literal(match["ff"]), None if torch_text == "—" else _literal(torch_text))
    return rows


def _literal(text: str) -> tuple:
    value = ast.literal_eval(text.strip())
    return value if isinstance(value, tuple) else (value,)


def _torch_prelu(torch, x, a):
    return torch.where(x > 0, x, a * x)  # F.prelu puts channels on axis 1


# case -> (ff function, torch function (torch, F) -> fn, the kink's arguments)
CASES = {
    "relu(x)": (ff.relu, lambda t, F: F.relu, [0.0]),
    "leaky_relu(x, 0.01)": (ff.leaky_relu, lambda t, F: F.leaky_relu, [0.0]),
    "prelu(x, a)": (ff.prelu, lambda t, F: lambda x, a: _torch_prelu(t, x, a), [0.0, 0.25]),
    "elu(x)": (ff.elu, lambda t, F: F.elu, [0.0]),
    "elu(x, 0.5)": (lambda x: ff.elu(x, 0.5), lambda t, F: lambda x: F.elu(x, 0.5), [0.0]),
    "abs(x)": (ff.abs, lambda t, F: t.abs, [0.0]),
    "sign(x)": (ff.sign, lambda t, F: t.sign, [0.0]),
    "step(x)": (ff.step, None, [0.0]),
    "maximum(a, b)": (ff.maximum, lambda t, F: t.maximum, [1.5, 1.5]),
    "minimum(a, b)": (ff.minimum, lambda t, F: t.minimum, [1.5, 1.5]),
    "max([x0, x1])": (ff.max, lambda t, F: t.amax, [[2.0, 2.0]]),
    "softsign(x)": (ff.softsign, lambda t, F: F.softsign, [0.0]),
    "sinc(x)": (ff.sinc, lambda t, F: lambda x: t.sinc(x / t.pi), [0.0]),
}


def _as_tuple(grads) -> tuple:
    return tuple(np.asarray(g).tolist() for g in (grads if isinstance(grads, tuple) else (grads,)))


def test_every_row_has_a_case():
    assert set(table_rows()) == set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_ffcompile_subgradient_is_the_tables(case):
    fn, _, args = CASES[case]
    arrays = [np.asarray(a, np.float64) for a in args]
    grads = ff.compile(ff.grad(lambda *xs: fn(*xs).sum(), argnums=tuple(range(len(args)))))(*arrays)
    assert _as_tuple(grads) == table_rows()[case][0]


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][1] is not None])
def test_torch_subgradient_is_the_tables(case):
    torch = pytest.importorskip("torch", reason="torch is the optional gradient oracle (extra 'oracles')")
    _, torch_fn, args = CASES[case]
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
    torch_fn(torch, torch.nn.functional)(*tensors).sum().backward()
    assert tuple(t.grad.tolist() for t in tensors) == table_rows()[case][1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_is_accurate_near_zero(dtype):
    """elu(x) = expm1(x) for x <= 0: within 2 ulp of mpmath from -1 down to subnormals,
    where exp(x) - 1 had lost every digit; its gradient e^x likewise."""
    mpmath = pytest.importorskip("mpmath", reason="mpmath gives the exact expm1")
    tiny = np.finfo(dtype).smallest_subnormal
    x = -np.concatenate([np.geomspace(1.0, 1e-30, 400), [1e-7, 1e-5, tiny, 0.0]]).astype(dtype)
    value = ff.compile(ff.elu)(x)
    grad = ff.compile(ff.grad(lambda x: ff.elu(x).sum()))(x)
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.expm1(mpmath.mpf(float(v)))) for v in x])
        exact_grad = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in x])
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(value, exact, rtol=2 * eps, atol=0)
    np.testing.assert_allclose(grad, exact_grad, rtol=2 * eps, atol=0)
    assert value.dtype == dtype and np.signbit(value[-1]) == np.signbit(x[-1])
