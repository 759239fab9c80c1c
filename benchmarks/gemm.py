"""GEMM GFLOP/s side by side: ffcompile's packed GEMM, its BLAS route, SciPy's BLAS, NumPy, JAX.

    python -m benchmarks.gemm                       # the default shapes, f32, 2 threads
    python -m benchmarks.gemm --shapes 128x512x784,1024x4096x1024 --dtype f64 --threads 1

Each shape (m x n x k, C = A @ B with A m x k) runs as one compiled `x @ y` per route:
`packed` forces packed_gemm.py, `blas` forces the BLAS call (split over the thread pool,
SciPy's OpenBLAS at one thread per chunk, as programs run it), `small` smallgemm split over the
pool (only in the calibration's lowest work band, A untransposed: blas.small_competes); the route this host's
calibration picks (gemm_calibration.py, measured now if not yet) is marked `*`.
`scipy1` calls sgemm/dgemm from Python (OpenBLAS at the one thread programs give it),
`numpy` np.matmul (NumPy's own OpenBLAS, at --threads), `jax` a jitted jnp.dot (XLA's own GEMM) when JAX is installed. Timing:
--rounds rounds, each round-robin over the contenders, --calls calls each; the best round's
median per call. Ratios are against the `blas` route; percentages of the host's peak
(benchmarks/peak.py: measured clock x FMA units x lanes x 2, at the threads used). The
default shapes are the zoo's layer products at batch 128 and 1024: mnist 784-512-512-10,
deep 256-256, wide 1024-4096-4096-1024.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ffcompile.bench.harness import Options

DEFAULT_SHAPES = ("128x512x784,128x512x512,1024x512x784,1024x512x512,128x256x256,1024x256x256,"
                  "128x4096x1024,128x4096x4096,1024x4096x1024,1024x1024x4096,512x512x512,300x257x299")


def _shape(text: str) -> tuple[int, int, int]:
    m, n, k = (int(x) for x in text.lower().split("x"))
    return m, n, k


def _layer(x, w, bias):
    """The --epilogue workload: a dense layer's bias and GELU (tanh form) after the product."""
    import ffcompile as ff

    return ff.gelu(x @ w + bias, approximate="tanh")


def _compiled(route: str, fn, args, fused: bool = True):
    """`fn` compiled with the route of products above smallgemm's range forced to `route`
    ("packed", "blas", "small"); fused=False keeps its epilogue out of the GEMM (a loop after it)."""
    import ffcompile as ff
    from ffcompile.codegen.llvm import lower
    from ffcompile.codegen.llvm.gemm_calibration import route_forced

    saved = lower._fuses_epilogue
    if not fused:
        lower._fuses_epilogue = lambda *_, **__: False
    try:
        with route_forced(route):
            compiled = ff.compile(fn, backend="llvm")
            compiled(*args)  # compiled now, under the forced route
    finally:
        lower._fuses_epilogue = saved
    return lambda: compiled(*args)


def contenders(m, n, k, dtype, epilogue: bool = False, with_jax: bool = True):
    """name -> zero-argument callable computing the product (epilogue: the layer, _layer)."""
    from scipy.linalg import blas as scipy_blas

    from ffcompile.codegen.llvm import blas
    from ffcompile.codegen.llvm.calibrate import calibrate_class, either_route
    from ffcompile.codegen.llvm.gemm_calibration import fastest

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    args = (a, b, rng.standard_normal(n).astype(dtype)) if epilogue else (a, b)
    fn = _layer if epilogue else (lambda x, y: x @ y)
    name = "f32" if dtype == np.float32 else "f64"
    chosen = None
    if either_route(m, n, k, name):  # the route this host's calibration picks
        record = calibrate_class(m, n, k, name)
        chosen = fastest(record)
    blas.default_blas_threads()
    out = {}
    competes = blas.small_competes(m, n, k, name, False, False)
    for route in ("packed", "blas", "small") if competes else ("packed", "blas"):
        out[route + ("*" if route == chosen else "")] = _compiled(route, fn, args)
    if epilogue:
        out["packed-apart"] = _compiled("packed", fn, args, fused=False)
    else:
        gemm = scipy_blas.sgemm if dtype == np.float32 else scipy_blas.dgemm
        out["scipy1"] = lambda: gemm(1.0, a, b)
        out["numpy"] = lambda: np.matmul(a, b)
    if not with_jax:
        return out
    try:
        import jax
        import jax.numpy as jnp

        if dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        jax_args = [jnp.asarray(x) for x in args]
        if epilogue:
            jitted = jax.jit(lambda x, w, bias: jax.nn.gelu(x @ w + bias, approximate=True))
        else:
            jitted = jax.jit(jnp.dot)
        jitted(*jax_args).block_until_ready()
        out["jax"] = lambda: jitted(*jax_args).block_until_ready()
    except ImportError:
        pass
    return out


def measure(fns: dict, calls: int, rounds: int, timer=time.perf_counter, settle: float = Options.settle
            ) -> dict[str, float]:
    """name -> the best round's median seconds per call (by `timer`). Each contender's calls
    start `settle` seconds after the last one's: NumPy's OpenBLAS workers spin ~0.1 s after a
    call (2^28 time-stamp cycles), holding a core from whatever runs next (the packed GEMM's
    256x4096x4096 at 2 threads: 155 GFLOP/s in the two calls after NumPy's, 235 otherwise)."""
    best = {name: float("inf") for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(settle)
            fns[name]()
            times = []
            for _ in range(calls):
                start = timer()
                fns[name]()
                times.append(timer() - start)
            best[name] = min(best[name], float(np.median(times)))
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, timed in the calling thread's CPU time (what a loaded machine's "
                             "other processes take is not counted); JAX, whose own threads compute, left out")
    parser.add_argument("--epilogue", action="store_true",
                        help="time a layer, GELU(x @ w + b): its epilogue fused into the packed GEMM "
                             "(packed), or a loop after it (packed-apart; blas)")
    parser.add_argument("--vector-bits", type=int, choices=(256, 512),
                        help="the packed GEMM's vector width (default: the host's); FFCOMPILE_VECTOR_BITS=256 "
                             "makes all code an AVX2 host's")
    args = parser.parse_args(argv)
    from threadpoolctl import ThreadpoolController

    import ffcompile as ff
    from ffcompile.codegen.llvm.target import vector_bytes

    from .peak import describe, host_peak

    if args.cpu_time:
        args.threads = 1
    ff.set_num_threads(args.threads)
    if args.vector_bits:
        from ffcompile.codegen.llvm import packed_gemm

        packed_gemm.vector_bytes = lambda: args.vector_bits // 8
    dtype = np.float32 if args.dtype == "f32" else np.float64
    peak = host_peak()
    widest = peak["widths"][max(peak["widths"])][f"{args.dtype}_gflops"] * args.threads / peak["cores"]
    print(f"# {args.dtype}, {args.threads} threads, host vectors {vector_bytes() * 8} bit, packed GEMM's "
          f"{args.vector_bits or vector_bytes() * 8} bit; GFLOP/s "
          f"(best round's median of {args.calls} calls, {args.rounds} rounds, "
          f"{'CPU time' if args.cpu_time else 'wall time'}); x = over the blas route; "
          f"% = of the peak at the widest vectors and {args.threads} threads, {widest:.0f} GFLOP/s")
    print(f"# host: {describe(peak)}")
    for pool in ThreadpoolController().lib_controllers:
        if pool.user_api == "blas" and "numpy" in pool.filepath:
            pool.set_num_threads(args.threads)
    for text in args.shapes.split(","):
        m, n, k = _shape(text)
        fns = contenders(m, n, k, dtype, args.epilogue, with_jax=not args.cpu_time)
        seconds = measure(fns, args.calls, args.rounds, time.thread_time if args.cpu_time else time.perf_counter)
        base = next(seconds[name] for name in seconds if name.startswith("blas"))
        cells = [f"{name} {2 * m * n * k / s / 1e9:6.1f} ({base / s:4.2f}x {200 * m * n * k / s / 1e9 / widest:3.0f}%)"
                 for name, s in seconds.items()]
        print(f"{m}x{n}x{k}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
