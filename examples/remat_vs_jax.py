"""ffcompile's remat plans beside jax.checkpoint's policies on the same deep tanh MLP.

    python examples/remat_vs_jax.py [--layers 64] [--width 256] [--batch 64] [--repeats 20]

The gradient of a deep tanh MLP's loss (float32), in JAX once per checkpoint
policy: no checkpoint, each layer under `jax.checkpoint` with `everything_saveable`,
`dots_saveable` (alias `checkpoint_dots`), `save_only_these_names` (the layer
outputs, named with `checkpoint_name`), `nothing_saveable`, and sqrt(n)-layer
segments under `nothing_saveable` (Chen et al.). For each: XLA's bytes beside
the arguments (`jit(...).lower(...).compile().memory_analysis()`: temp + output
bytes, as XLA may keep temporaries in a result's buffer before the result is
written) and the best step time; then ffcompile's `optimal` plan at that many
bytes (LLVM backend: its arena, which holds every intermediate, plus its
results, which a call allocates beside it), its step time, and ffcompile's
least feasible arena. Times are best of `--repeats` calls, side by side in one run.
PyTorch is not measured: on a CPU it reports no peak of its own memory to set
beside these (torch.utils.checkpoint trades the same way as nothing_saveable
segments).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

import ffcompile as ff
from ffcompile.passes.remat import RematInfeasible


@dataclass
class Row:
    policy: str
    jax_bytes: int  # temp + output
    jax_ms: float
    ff_bytes: int | None  # ffcompile's arena + results for its plan at jax_bytes (None: no plan fits)
    ff_ms: float | None
    ff_extra_flops: int | None


def ff_loss(params, x):
    h = x
    for w, b in params:
        h = ff.tanh(h @ w + b)
    return (h * h).mean()


def init(layers: int, width: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [((rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32), np.zeros(width, np.float32))
              for _ in range(layers)]
    return params, rng.normal(size=(batch, width)).astype(np.float32)


def best_ms(fn, args, repeats: int, wait=lambda out: out) -> float:
    """Best of `repeats` calls after a warm-up; `wait` blocks until an asynchronous result is ready."""
    wait(fn(*args))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        wait(fn(*args))
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def jax_policies(layers: int):
    """name -> the JAX loss under that policy."""
    import jax
    import jax.numpy as jnp
    from jax.ad_checkpoint import checkpoint_name

    policies = jax.checkpoint_policies

    def layer(h, wb):
        w, b = wb
        return checkpoint_name(jnp.tanh(h @ w + b), "layer_out")

    def stack(layer_fn):
        def loss(params, x):
            h = x
            for wb in params:
                h = layer_fn(h, wb)
            return (h * h).mean()
        return loss

    def segments(params, x):
        k = max(1, round(math.sqrt(layers)))

        def run(h, chunk):
            for wb in chunk:
                h = layer(h, wb)
            return h
        h = x
        for start in range(0, len(params), k):
            h = jax.checkpoint(run, policy=policies.nothing_saveable)(h, params[start:start + k])
        return (h * h).mean()

    return {
        "no checkpoint": stack(layer),
        "everything_saveable": stack(jax.checkpoint(layer, policy=policies.everything_saveable)),
        "dots_saveable": stack(jax.checkpoint(layer, policy=policies.dots_saveable)),
        "save_only_these_names": stack(jax.checkpoint(layer, policy=policies.save_only_these_names("layer_out"))),
        "nothing_saveable": stack(jax.checkpoint(layer, policy=policies.nothing_saveable)),
        "sqrt segments (nothing_saveable)": segments,
    }


def measure(layers: int, width: int, batch: int, repeats: int) -> tuple[list[Row], int, float]:
    """The rows, ffcompile's least feasible arena, and ffcompile's store_all step time (ms)."""
    import jax

    params, x = init(layers, width, batch)
    jparams = [(jax.numpy.asarray(w), jax.numpy.asarray(b)) for w, b in params]
    jx = jax.numpy.asarray(x)
    store_all = ff.compile(ff.value_and_grad(ff_loss))
    results = sum(np.asarray(r).nbytes for r in jax.tree_util.tree_leaves(store_all(params, x)))
    rows = []
    for name, loss in jax_policies(layers).items():
        step = jax.jit(jax.value_and_grad(loss))
        analysis = step.lower(jparams, jx).compile().memory_analysis()
        used = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
        jax_ms = best_ms(step, (jparams, jx), repeats, jax.block_until_ready)
        try:
            planned = ff.compile(ff.value_and_grad(ff_loss), memory_budget=max(1, used - results))
            lowered = planned.lower(params, x)
            row = Row(name, used, jax_ms, lowered.program.arena_bytes + results,
                      best_ms(planned, (params, x), repeats), lowered.plan.extra_flops)
        except RematInfeasible:
            row = Row(name, used, jax_ms, None, None, None)
        rows.append(row)
    try:  # one byte fits no plan: the error names the least arena found
        least = ff.compile(ff.value_and_grad(ff_loss), memory_budget=1).lower(params, x).plan.peak_bytes
    except RematInfeasible as error:
        least = error.least_peak
    return rows, least + results, best_ms(store_all, (params, x), repeats)


def markdown(rows: list[Row]) -> str:
    lines = ["| JAX policy | XLA temp + output bytes | JAX ms | ffcompile arena + results at that budget "
             "| ffcompile ms | extra FLOPs |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ff_cells = ("no plan fits", "", "") if r.ff_bytes is None else (r.ff_bytes, f"{r.ff_ms:.2f}", r.ff_extra_flops)
        lines.append(f"| {r.policy} | {r.jax_bytes} | {r.jax_ms:.2f} | {ff_cells[0]} | {ff_cells[1]} | {ff_cells[2]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rows, least, ff_ms = measure(args.layers, args.width, args.batch, args.repeats)
    print(f"{args.layers}-layer tanh MLP, width {args.width}, batch {args.batch}, float32, value_and_grad")
    print(markdown(rows))
    print(f"ffcompile store_all: {ff_ms:.2f} ms; least feasible arena + results: {least} bytes "
          f"(the least of JAX's above: {min(r.jax_bytes for r in rows)})")
    return rows, least


if __name__ == "__main__":
    main()
