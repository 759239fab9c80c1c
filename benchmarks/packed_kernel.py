"""The packed GEMM's parts alone: its micro-kernel on packed data, and its library function on
given shapes, transposes and block sizes (GFLOP/s, f32).

    python -m benchmarks.packed_kernel --micro                   # micro-kernel, one thread
    python -m benchmarks.packed_kernel --shapes 4096x4096x256tn --blocks 252,256,768 --blocks host

--micro: MR x NR tiles over an A block (MC x KC, in L2) and one B sliver (KC x NR, in L1),
the loop as the library compiles it (compact), or under O3 (--o3), timed in this thread's CPU
time, against one core's peak at that width (benchmarks/peak.py). Otherwise each shape (m x n
x k, then the transposes of A and B: nn, nt, tn, tt) calls the library variant directly, once
per --blocks (MC,KC,NC, or `host`: block_sizes now), the block sizes alternately in each round
(what one round's load costs falls on all of them): the best round's median of --calls.
--vector-bits 256 builds 256-bit variants (run with FFCOMPILE_VECTOR_BITS=256 for an AVX2
host's code, 16 registers).
"""
from __future__ import annotations

import argparse
import ctypes
import time

import numpy as np
from llvmlite import ir


def micro(vbytes: int, kc: int, mc: int, o3: bool) -> float:
    """GFLOP/s of the micro-kernel over an mc x kc A block and one B sliver, one thread."""
    from ffcompile.codegen.llvm.cgutils import compiled_compact, for_range
    from ffcompile.codegen.llvm.elementwise import I64
    from ffcompile.codegen.llvm.packed_gemm import PACK_ALIGN, GemmVariant, _Kernel
    from ffcompile.codegen.llvm.target import jit

    kernel = _Kernel(GemmVariant("f32", False, False, vbytes))
    module = ir.Module("micro")
    ptr = ir.FloatType().as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, I64, I64, I64]), "run")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if not o3:
        compiled_compact(fn)
    a_pack, b_pack, c, depth, slivers, repeats = fn.args
    kernel.b = b
    vector = ir.VectorType(kernel.ty, kernel.vw).as_pointer()
    with for_range(b, repeats, "repeat"), for_range(b, slivers, "ir") as i:
        accs = kernel._micro(b.gep(a_pack, [b.mul(b.mul(i, kernel.const(kernel.mr)), depth)]), b_pack, depth)
        tile = b.gep(c, [b.mul(i, kernel.const(kernel.mr * kernel.nr))])
        for index, acc in enumerate(accs):
            b.store(acc, b.bitcast(b.gep(tile, [kernel.const(index * kernel.vw)]), vector), align=4)
    b.ret_void()
    program = jit(module)
    run = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 3)(program.address("run"))
    rows = mc // kernel.mr

    def aligned(size):  # the packs' alignment: B's pack is read with aligned vector loads
        raw = np.random.default_rng(0).random(size + PACK_ALIGN).astype(np.float32)
        start = (-raw.ctypes.data % PACK_ALIGN) // 4
        return raw[start:start + size]

    a, bs, out = aligned(rows * kernel.mr * kc), aligned(kernel.nr * kc), aligned(rows * kernel.mr * kernel.nr)
    repeats = max(1, int(3e8 // (rows * kernel.mr * kernel.nr * kc)))
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        run(a.ctypes.data, bs.ctypes.data, out.ctypes.data, kc, rows, repeats)
        best = min(best, time.thread_time() - start)
    return 2 * repeats * rows * kernel.mr * kernel.nr * kc / best / 1e9


def library_call(m, n, k, trans_a, trans_b, vbytes, blocks):
    """A zero-argument callable running the library variant on random operands with these
    block sizes (MC, KC, NC), C checked against NumPy once."""
    from ffcompile.codegen.llvm import gemm_library
    from ffcompile.codegen.llvm.packed_gemm import GemmVariant

    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    variant = GemmVariant("f32", trans_a, trans_b, vbytes)
    sizes = [ctypes.c_int64] * 6
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *sizes, ctypes.c_float, ctypes.c_float,
                          *[ctypes.c_int64] * 4, ctypes.c_void_p, ctypes.c_void_p)(gemm_library.address(variant.symbol))
    args = (a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, m if trans_a else k, k if trans_b else n, n,
            1.0, 0.0, 0, *blocks, None, None)

    def call(keep=(a, b, c)):  # the arrays live as long as the callable
        fn(*args)

    call()
    exact = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    assert np.abs(c - exact).max() <= 1e-4 * np.abs(exact).max(), "the packed GEMM's result is wrong"
    return call


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--o3", action="store_true", help="--micro: the loop under O3 instead of compact")
    parser.add_argument("--kc", type=int, default=384)
    parser.add_argument("--mc", type=int, default=168)
    parser.add_argument("--shapes", default="4096x4096x256tn,256x4096x4096nn,256x4096x4096nt")
    parser.add_argument("--blocks", action="append", help="MC,KC,NC or `host` (repeatable; default host)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vector-bits", type=int, choices=(256, 512))
    args = parser.parse_args(argv)
    import ffcompile as ff
    from ffcompile.codegen.llvm.packed_gemm import block_sizes
    from ffcompile.codegen.llvm.target import vector_bytes

    from .peak import host_peak

    vbytes = args.vector_bits // 8 if args.vector_bits else vector_bytes()
    if args.micro:
        peak = host_peak()["widths"][8 * vbytes]["f32_gflops"] / host_peak()["cores"]
        gflops = micro(vbytes, args.kc, args.mc, args.o3)
        print(f"micro-kernel {8 * vbytes} bit, {'O3' if args.o3 else 'compact'}, KC {args.kc}, MC {args.mc}: "
              f"{gflops:.1f} GFLOP/s, {100 * gflops / peak:.0f}% of a core's {peak:.0f}")
        return
    ff.set_num_threads(args.threads)
    timer = time.thread_time if args.threads == 1 else time.perf_counter
    for text in args.shapes.split(","):
        (m, n, k), (ta, tb) = (int(x) for x in text[:-2].split("x")), (t == "t" for t in text[-2:])
        mr, nr, *host = block_sizes(m, n, k, 4, vbytes)
        choices = [tuple(host) if spec == "host" else tuple(int(x) for x in spec.split(","))
                   for spec in args.blocks or ["host"]]
        for mc, _, nc in choices:  # the packs are sized for whole slivers of MR rows, NR columns
            if mc % mr or nc % nr:
                parser.error(f"--blocks {mc},{_},{nc}: MC must be a multiple of {mr} and NC of {nr} at {8 * vbytes} bits")
        calls = {blocks: library_call(m, n, k, ta, tb, vbytes, blocks) for blocks in choices}
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(args.rounds):
            for blocks, call in calls.items():
                times = []
                for _ in range(args.calls):
                    start = timer()
                    call()
                    times.append(timer() - start)
                best[blocks] = min(best[blocks], float(np.median(times)))
        print(f"{text} {8 * vbytes} bit, {args.threads} threads: " + "  ".join(
            f"MC,KC,NC {','.join(map(str, blocks))} {2 * m * n * k / seconds / 1e9:.1f}" for blocks, seconds in best.items()),
            flush=True)


if __name__ == "__main__":
    main()
