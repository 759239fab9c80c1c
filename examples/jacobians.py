"""The lecture's Jacobian points, computed: python examples/jacobians.py

1. The Jacobian of softmax is diag(s) - s s^T (ff.jacfwd and ff.jacrev, one graph each).
2. A Jacobian-vector product needs no Jacobian: ff.jvp pushes v forward through the
   network in one sweep and gives exactly J v.
3. Backpropagation never materializes a module's Jacobian: for a layer of the mnist
   MLP the Jacobian alone would take gigabytes, while the compiled VJP program, its
   intermediates, arguments and result together, takes about a megabyte.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

import ffcompile as ff


def softmax_jacobian(z: np.ndarray) -> tuple[np.ndarray, float]:
    """(J of softmax at z, its largest difference from diag(s) - s s^T)."""
    s = ff.compile(ff.softmax)(z)
    formula = np.diag(s) - np.outer(s, s)
    jac = ff.compile(ff.jacfwd(ff.softmax))(z)
    reverse = ff.compile(ff.jacrev(ff.softmax))(z)
    return jac, float(max(np.abs(jac - formula).max(), np.abs(reverse - formula).max()))


def two_layer(params, x):
    return ff.sigmoid(ff.sigmoid(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"])


def jvp_without_jacobian(seed: int = 0, width: int = 64) -> tuple[float, int, int]:
    """(largest |jvp - J v|, bytes of J, bytes of the JVP's result) for the two-layer net."""
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(width, width)) / 8, "b1": np.zeros(width),
              "w2": rng.normal(size=(width, 10)) / 8, "b2": np.zeros(10)}
    x, v = rng.normal(size=(4, width)), rng.normal(size=(4, width))
    _, jv = ff.compile(lambda x, v: ff.jvp(lambda x: two_layer(params, x), (x,), (v,)))(x, v)
    jac = ff.compile(ff.jacfwd(lambda x: two_layer(params, x)))(x)  # (4, 10, 4, width)
    explicit = np.einsum("ijkl,kl->ij", jac, v)
    return float(np.abs(jv - explicit).max()), jac.nbytes, jv.nbytes


@dataclass(frozen=True)
class MemoryReport:
    layer: str
    jacobian_bytes: int  # output size x input size x 4 bytes, were it materialized
    vjp_arena_bytes: int  # the compiled VJP program's arena: its intermediates (measured)
    vjp_io_bytes: int  # its arguments (x, the cotangent) and its result (x's cotangent)
    small_jacobian_bytes: int  # a small batch's Jacobian, really materialized by ff.jacrev
    small_formula_bytes: int  # the formula for that small batch


def materialized_vs_vjp(batch: int = 128) -> MemoryReport:
    """The first layer of the mnist MLP, relu(x W + b) with x: batch x 784, W: 784 x 512."""
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(784, 512)) / 28).astype(np.float32)
    b = np.zeros(512, np.float32)

    def layer(x):
        return ff.relu(x @ w + b)

    x = rng.normal(size=(batch, 784)).astype(np.float32)
    cotangent = np.ones((batch, 512), np.float32)
    vjp = ff.compile(lambda x, ct: ff.vjp(layer, x)[1](ct))
    arena = vjp.lower(x, cotangent).memory.arena_bytes
    small = x[:2]
    jac = ff.compile(ff.jacrev(layer))(small)  # (2, 512, 2, 784)
    return MemoryReport("relu(x @ W + b), W: 784 x 512", batch * 512 * batch * 784 * 4, arena,
                        2 * x.nbytes + cotangent.nbytes, jac.nbytes, 2 * 512 * 2 * 784 * 4)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    z = np.array([1.0, 2.0, 0.5, -1.0])
    jac, error = softmax_jacobian(z)
    print("1. softmax Jacobian at z =", z)
    print(np.array2string(jac, precision=4, suppress_small=True))
    print(f"   largest difference from diag(s) - s s^T (jacfwd, jacrev): {error:.1e}")
    error, jac_bytes, jv_bytes = jvp_without_jacobian()
    print(f"2. J v by ff.jvp, no Jacobian: equals J v (J: {jac_bytes} bytes) to {error:.1e}; "
          f"it computed {jv_bytes} bytes of result")
    report = materialized_vs_vjp(args.batch)
    print(f"3. {report.layer}, batch {args.batch}:")
    print(f"   its Jacobian would take {report.jacobian_bytes / 2**30:.1f} GiB "
          f"(batch 2, materialized by ff.jacrev: {report.small_jacobian_bytes} bytes = the formula's "
          f"{report.small_formula_bytes});")
    vjp_bytes = report.vjp_arena_bytes + report.vjp_io_bytes
    print(f"   the compiled VJP program: {report.vjp_arena_bytes / 2**20:.2f} MiB of intermediates + "
          f"{report.vjp_io_bytes / 2**20:.2f} MiB of arguments and result "
          f"({report.jacobian_bytes / vjp_bytes:,.0f}x less)")


if __name__ == "__main__":
    main()
