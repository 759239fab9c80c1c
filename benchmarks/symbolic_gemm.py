"""The GEMM kernels of one program for every batch size vs those of a program per size (#18).

    python -m benchmarks.symbolic_gemm                      # zoo layer shapes, B in 1 8 64 128 1024
    python -m benchmarks.symbolic_gemm --batches 1,64 --layers 784x512 --rounds 3

Per layer (k inputs -> n outputs, the zoo's digits, mnist and deep) and batch size B, the
three products of a training step: the forward x @ W and the input gradient dy @ W.T (m = B),
and the weight gradient x.T @ dy (k = B). Each is one emit_gemm compiled alone (standalone_gemm.py): `fixed` with
B a constant (the route blas.gemm_route picks for that size, as a per-size program has it),
`symbolic` with B a Sym, one function for every size, choosing skinny, smallgemm or BLAS at
run time (runtime_gemm.py). Timing: --rounds rounds, each alternating the two, --calls calls
each; the best round's median per call. The ratio symbolic / fixed is the number to read;
build seconds are each function's IR-to-machine-code time (the symbolic one's once for
every size, on its first row; the fixed one's per size).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LAYERS = ("64x128,128x128,128x10,784x512,512x512,512x10,256x256")  # k x n: digits, mnist, deep
BATCHES = "1,8,64,128,1024"


def _timed(call, calls: int) -> float:
    """Median seconds per call over `calls` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


_symbolic_cache: dict = {}  # one symbolic function per product, for every batch size


def _pair(m, n, k, trans_a, trans_b, batch: int):
    """(fixed, symbolic, build seconds of each) for C = op(A) @ op(B) at `batch` (m or k is B)."""
    from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm
    from ffcompile.ir.symbolic import substitute

    fixed_sizes = substitute((m, n, k), {"B": batch})
    start = time.perf_counter()
    fixed = StandaloneGemm(*fixed_sizes, "f32", trans_a, trans_b)
    fixed_build = time.perf_counter() - start
    symbolic = _symbolic_cache.get((m, n, k, trans_a, trans_b))
    symbolic_build = 0.0
    if symbolic is None:
        start = time.perf_counter()
        symbolic = _symbolic_cache[m, n, k, trans_a, trans_b] = StandaloneGemm(m, n, k, "f32", trans_a, trans_b)
        symbolic_build = time.perf_counter() - start
    rng = np.random.default_rng(batch)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in fixed.shapes())
    fixed(a, b, c)  # the arrays checked once; then the calls alone
    symbolic(a, b, c, batch=batch)
    arrays = (a, b, c)
    addresses = [x.ctypes.data for x in arrays] + [None]

    def runner(gemm, size):
        def run():
            gemm.run(addresses, batch=size)
            return arrays  # referenced here: the arrays live as long as the closure that passes their addresses
        return run

    return runner(fixed, None), runner(symbolic, batch), fixed_build, symbolic_build


def main(argv=None) -> list[tuple]:
    from ffcompile.codegen.llvm import blas
    from ffcompile.ir.symbolic import Sym

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default=LAYERS, help="k x n per layer, comma-separated")
    parser.add_argument("--batches", default=BATCHES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    blas.default_blas_threads()
    B = Sym("B")
    rows = []
    print("| product | B | fixed route | fixed us | symbolic us | symbolic / fixed | build s fixed, symbolic |")
    print("|---|---|---|---|---|---|---|")
    for layer in args.layers.split(","):
        k, n = (int(x) for x in layer.split("x"))
        for name, (m_, n_, k_, trans_a, trans_b) in (("x @ W", (B, n, k, False, False)),
                                                      ("dy @ W.T", (B, k, n, False, True)),
                                                      ("x.T @ dy", (k, n, B, True, False))):
            for batch in (int(x) for x in args.batches.split(",")):
                fixed, symbolic, fixed_build, symbolic_build = _pair(m_, n_, k_, trans_a, trans_b, batch)
                best = {"fixed": float("inf"), "symbolic": float("inf")}
                for _ in range(args.rounds):
                    for label, call in (("fixed", fixed), ("symbolic", symbolic)):
                        call()  # warm
                        best[label] = min(best[label], _timed(call, args.calls))
                m, nn, kk = (batch if isinstance(d, Sym) else d for d in (m_, n_, k_))
                route = blas.gemm_route(m, nn, kk, "f32", trans_a, trans_b)
                ratio = best["symbolic"] / best["fixed"]
                rows.append((f"{name} {k}x{n}", batch, route, ratio))
                print(f"| {name} {k}x{n} | {batch} | {route} | {best['fixed'] * 1e6:.1f} | "
                      f"{best['symbolic'] * 1e6:.1f} | {ratio:.2f} | {fixed_build:.2f}, {symbolic_build:.2f} |")
    ratios = [r[-1] for r in rows]
    print(f"\nsymbolic / fixed: geometric mean {float(np.exp(np.mean(np.log(ratios)))):.3f}, "
          f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} products")
    return rows


if __name__ == "__main__":
    main()
