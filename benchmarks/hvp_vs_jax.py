"""A Hessian-vector product of the mnist loss: ffcompile vs JAX, side by side.

    python -m benchmarks.hvp_vs_jax [--model mnist] [--batch 128] [--steps 10] [--rounds 6]

The HVP with respect to every parameter is forward over reverse in both:
`ff.compile(ff.jvp(ff.grad(loss)))` (one program: the forward pass, its adjoint and
the tangent of both) against `jax.jit(jax.jvp(jax.grad(loss)))`, on the same
parameters, batch and direction; the results must agree before anything is timed.
Timing alternates which contender goes first each round; the table shows the median
ms per call and the ratio ffcompile / JAX, and, for scale, each one's plain gradient
(an HVP costs about two to three gradients). BLAS threads are limited to --threads
for ffcompile; XLA's threads follow XLA_FLAGS (set it before running, see README).
"""
from __future__ import annotations

import argparse

import numpy as np

import ffcompile as ff
from ffcompile import zoo
from ffcompile.bench.numpy_mlp import MLPSpec
from ffcompile.tree import tree_flatten, tree_map

from .llvm_vs_numpy import time_side_by_side


def ffcompile_runners(workload, params, v, x, y):
    def hvp(p, v, x, y):
        return ff.jvp(lambda p: ff.grad(workload.loss)(p, x, y), (p,), (v,))[1]

    hvp_c, grad_c = ff.compile(hvp), ff.compile(ff.grad(workload.loss))
    result = MLPSpec.layers(hvp_c(params, v, x, y))
    return (lambda: hvp_c(params, v, x, y)), (lambda: grad_c(params, x, y)), result


def jax_runners(workload, params, v, x, y):
    import jax
    import jax.numpy as jnp

    spec = MLPSpec.of(workload)
    acts = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
            "gelu_tanh": lambda z: jax.nn.gelu(z, approximate=True), "identity": lambda z: z}

    def loss(params, x, y):
        for (w, b), act in zip(params, spec.activations):
            x = acts[act](x @ w + b)
        if spec.loss == "mse":
            return 0.5 * jnp.mean(jnp.sum(jnp.square(x - y), axis=1))
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x, axis=1), y[:, None], axis=1))

    hvp = jax.jit(lambda p, v, x, y: jax.jvp(lambda p: jax.grad(loss)(p, x, y), (p,), (v,))[1])
    grad = jax.jit(jax.grad(loss))
    p, t = (tree_map(jnp.asarray, MLPSpec.layers(tree)) for tree in (params, v))
    x, y = jnp.asarray(x), jnp.asarray(y)
    result = [(np.asarray(w), np.asarray(b)) for w, b in hvp(p, t, x, y)]
    return (lambda: jax.block_until_ready(hvp(p, t, x, y))), (lambda: jax.block_until_ready(grad(p, x, y))), result


def measure(model: str = "mnist", batch: int | None = None, steps: int = 10, rounds: int = 6,
            warmup: int = 3, threads: int = 2) -> dict:
    """Median seconds per call of each contender's HVP and gradient, and their agreement."""
    from threadpoolctl import threadpool_limits

    from ffcompile.codegen.llvm.blas import blas_threads

    workload = zoo.get(model)
    params, x, y = workload.example_inputs(batch_size=batch)
    rng = np.random.default_rng(1)
    v = tree_map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), params)
    with blas_threads(threads), threadpool_limits(threads):
        ff_hvp, ff_grad, ff_result = ffcompile_runners(workload, params, v, x, y)
        jax_hvp, jax_grad, jax_result = jax_runners(workload, params, v, x, y)
        got, expected = tree_flatten(ff_result)[0], tree_flatten(jax_result)[0]
        deviation = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, expected, strict=True))
        medians = time_side_by_side({"ffcompile hvp": ff_hvp, "jax hvp": jax_hvp,
                                     "ffcompile grad": ff_grad, "jax grad": jax_grad},
                                    (), steps, rounds, warmup)
    return {"model": model, "batch": len(x), "medians": medians, "deviation": deviation}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist", help="a zoo MLP: xor, digits, mnist, wide, deep")
    parser.add_argument("--batch", type=int, default=None, help="default: the zoo's batch size")
    parser.add_argument("--steps", type=int, default=10, help="calls per contender per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads for ffcompile")
    args = parser.parse_args(argv)
    result = measure(args.model, args.batch, args.steps, args.rounds, args.warmup, args.threads)
    m = result["medians"]
    print(f"{result['model']} (batch {result['batch']}): HVP of the loss w.r.t. every parameter; "
          f"ffcompile vs JAX max relative deviation {result['deviation']:.1e}")
    print(f"{'':10} {'hvp ms':>9} {'grad ms':>9} {'hvp/grad':>9}")
    for name in ("ffcompile", "jax"):
        hvp, grad = m[f"{name} hvp"], m[f"{name} grad"]
        print(f"{name:10} {hvp * 1e3:9.3f} {grad * 1e3:9.3f} {hvp / grad:9.2f}")
    print(f"ratio ffcompile / JAX: hvp {m['ffcompile hvp'] / m['jax hvp']:.2f}, "
          f"grad {m['ffcompile grad'] / m['jax grad']:.2f} (median of {args.steps * args.rounds} calls each)")
    return result


if __name__ == "__main__":
    main()
