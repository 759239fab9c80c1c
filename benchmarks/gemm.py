"""GEMM GFLOP/s side by side: ffcompile's packed GEMM, its BLAS route, SciPy's BLAS, NumPy, JAX.

    python -m benchmarks.gemm                       # the default shapes, f32, 2 threads
    python -m benchmarks.gemm --shapes 128x512x784,1024x4096x1024 --dtype f64 --threads 1

Each shape (m x n x k, C = A @ B with A m x k) runs as one compiled `x @ y` per route:
`packed` forces packed_gemm.py, `blas` forces the BLAS call (split over the thread pool,
SciPy's OpenBLAS at one thread per chunk, as programs run it); the route this host's
calibration picks (gemm_calibration.py, measured now if not yet) is marked `*`.
`scipy1` calls sgemm/dgemm from Python (OpenBLAS at the one thread programs give it),
`numpy` np.matmul (NumPy's own OpenBLAS, at --threads), `jax` a jitted jnp.dot (XLA's own GEMM) when JAX is installed. Timing:
--rounds rounds, each round-robin over the contenders, --calls calls each; the best round's
median per call. Ratios are against the `blas` route. The default shapes are the zoo's layer
products at batch 128 and 1024: mnist 784-512-512-10, deep 256-256, wide 1024-4096-4096-1024.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

DEFAULT_SHAPES = ("128x512x784,128x512x512,1024x512x784,1024x512x512,128x256x256,1024x256x256,"
                  "128x4096x1024,128x4096x4096,1024x4096x1024,1024x1024x4096,512x512x512,300x257x299")


def _shape(text: str) -> tuple[int, int, int]:
    m, n, k = (int(x) for x in text.lower().split("x"))
    return m, n, k


def _compiled(route: str, a, b):
    """`a @ b` compiled with the route of products above smallgemm's range forced to `route`
    ("packed", "blas")."""
    import ffcompile as ff
    from ffcompile.codegen.llvm.gemm_calibration import route_forced

    with route_forced(route):
        fn = ff.compile(lambda x, y: x @ y, backend="llvm")
        fn(a, b)  # compiled now, under the forced route
    return lambda: fn(a, b)


def contenders(m, n, k, dtype):
    """name -> zero-argument callable computing the product."""
    from scipy.linalg import blas as scipy_blas

    from ffcompile.codegen.llvm import blas
    from ffcompile.codegen.llvm.calibrate import calibrate_class, either_route

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    name = "f32" if dtype == np.float32 else "f64"
    chosen = None
    if either_route(m, n, k, name):  # the route this host's calibration picks
        record = calibrate_class(m, n, k, name)
        chosen = "packed" if record["packed_seconds"] < record["blas_seconds"] else "blas"
    blas.default_blas_threads()
    out = {}
    for route in ("packed", "blas"):
        out[route + ("*" if route == chosen else "")] = _compiled(route, a, b)
    gemm = scipy_blas.sgemm if dtype == np.float32 else scipy_blas.dgemm
    out["scipy1"] = lambda: gemm(1.0, a, b)
    out["numpy"] = lambda: np.matmul(a, b)
    try:
        import jax
        import jax.numpy as jnp

        if dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        dot = jax.jit(jnp.dot)
        dot(ja, jb).block_until_ready()
        out["jax"] = lambda: dot(ja, jb).block_until_ready()
    except ImportError:
        pass
    return out


def measure(fns: dict, calls: int, rounds: int) -> dict[str, float]:
    """name -> the best round's median seconds per call."""
    best = {name: float("inf") for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fns[name]()
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                fns[name]()
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], float(np.median(times)))
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--dtype", choices=("f32", "f64"), default="f32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vector-bits", type=int, choices=(256, 512),
                        help="the packed GEMM's vector width (default: the host's); FFCOMPILE_VECTOR_BITS=256 "
                             "makes all code an AVX2 host's")
    args = parser.parse_args(argv)
    from threadpoolctl import ThreadpoolController

    import ffcompile as ff
    from ffcompile.codegen.llvm.target import vector_bytes

    ff.set_num_threads(args.threads)
    if args.vector_bits:
        from ffcompile.codegen.llvm import packed_gemm

        packed_gemm.vector_bytes = lambda: args.vector_bits // 8
    dtype = np.float32 if args.dtype == "f32" else np.float64
    print(f"# {args.dtype}, {args.threads} threads, host vectors {vector_bytes() * 8} bit, packed GEMM's "
          f"{args.vector_bits or vector_bytes() * 8} bit; GFLOP/s "
          f"(best round's median of {args.calls} calls, {args.rounds} rounds); x = over the blas route")
    for pool in ThreadpoolController().lib_controllers:
        if pool.user_api == "blas" and "numpy" in pool.filepath:
            pool.set_num_threads(args.threads)
    for text in args.shapes.split(","):
        m, n, k = _shape(text)
        seconds = measure(contenders(m, n, k, dtype), args.calls, args.rounds)
        base = next(seconds[name] for name in seconds if name.startswith("blas"))
        cells = [f"{name} {2 * m * n * k / s / 1e9:6.1f} ({base / s:4.2f}x)" for name, s in seconds.items()]
        print(f"{m}x{n}x{k}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
