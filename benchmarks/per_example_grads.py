"""Per-example gradients of the digits MLP: ffcompile's vmap(grad) vs JAX's, side by side.

    python -m benchmarks.per_example_grads [--batch 64] [--steps 20] [--rounds 10] [--backend llvm]

Four runners on the same parameters and batch (float32), in one process:
- `ff vmap(grad)`: ff.compile(ff.vmap(ff.grad(loss), in_axes=(None, 0, 0))), one program;
- `jax vmap(grad)`: jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)));
- `ff grad`, `jax grad`: the ordinary gradient of the batch's mean loss, for scale.
The per-example gradients of ffcompile and JAX must agree before anything is timed. Timing
alternates the runners' order over rounds (llvm_vs_numpy.time_side_by_side); the results
are medians per call and their ratios: ff/jax for per-example gradients (goal <= 1) and
per-example over ordinary gradients for each (goal for ffcompile: <= 3).
"""
from __future__ import annotations

import argparse

import numpy as np

import ffcompile as ff
from ffcompile import zoo
from ffcompile.tree import tree_leaves

from .llvm_vs_numpy import time_side_by_side


def ffcompile_runners(batch: int, backend: str | None):
    """(params, x, y) and the two ffcompile runners, each params, x, y -> gradient leaves."""
    workload = zoo.get("digits")
    params, x, y = workload.example_inputs(batch_size=batch)
    per_example = ff.compile(ff.vmap(ff.grad(workload.loss), in_axes=(None, 0, 0)), backend=backend)
    batch_grad = ff.compile(ff.grad(workload.loss), backend=backend)
    return (params, x, y), {"ff vmap(grad)": lambda *a: tree_leaves(per_example(*a)),
                            "ff grad": lambda *a: tree_leaves(batch_grad(*a))}


def jax_runners():
    """The same loss in JAX (the zoo's: ReLU MLP, mean softmax cross-entropy)."""
    import jax
    import jax.numpy as jnp

    def loss(params, x, y):
        layers = params["layers"]
        for k, layer in enumerate(layers):
            x = x @ layer["linear"]["w"] + layer["linear"]["b"]
            x = jax.nn.relu(x) if k < len(layers) - 1 else x
        log_p = jax.nn.log_softmax(x, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, y[..., None], axis=-1))

    per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
    batch_grad = jax.jit(jax.grad(loss))

    def blocked(fn):
        return lambda *a: [leaf.block_until_ready() for leaf in jax.tree_util.tree_leaves(fn(*a))]

    return {"jax vmap(grad)": blocked(per_example), "jax grad": blocked(batch_grad)}


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="calls per runner per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backend", default=None, help="ffcompile backend (default: the default one)")
    options = parser.parse_args(argv)
    args, runners = ffcompile_runners(options.batch, options.backend)
    try:
        runners.update(jax_runners())
    except ImportError:
        print("jax is not installed: ffcompile's runners only (pip install jax)")
    if "jax vmap(grad)" in runners:  # the same per-example gradients, or nothing is timed
        for got, expected in zip(runners["ff vmap(grad)"](*args), runners["jax vmap(grad)"](*args), strict=True):
            np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-4, atol=1e-5)
    medians = time_side_by_side(runners, args, options.steps, options.rounds, warmup=3)
    print(f"digits MLP (64-128-128-10), batch {options.batch}, float32; median per call")
    for name, seconds in medians.items():
        print(f"  {name:16} {seconds * 1e3:8.3f} ms")
    ratios = {"ff vmap(grad) / ff grad": medians["ff vmap(grad)"] / medians["ff grad"]}
    if "jax vmap(grad)" in medians:
        ratios["ff vmap(grad) / jax vmap(grad)"] = medians["ff vmap(grad)"] / medians["jax vmap(grad)"]
        ratios["jax vmap(grad) / jax grad"] = medians["jax vmap(grad)"] / medians["jax grad"]
    for name, ratio in ratios.items():
        print(f"  {name:32} {ratio:6.2f}")
    return ratios


if __name__ == "__main__":
    main()
