"""`python -m ffcompile.calibrate`: build this host's runtime and measure, ahead of time, where
ffcompile's packed GEMM beats the BLAS call on this host (and smallgemm both, in the two lowest
bands), and the chunk size smallgemm's products split across the pool at, and print the table
(codegen/llvm/gemm_calibration.py).

The host's runtime is what every program on it calls and the disk cache keeps once per host:
the thread pool, the fast call's checker, and the packed GEMM's shape-generic functions of
the host's vector width (codegen/llvm/gemm_library.py; about 0.1-0.2 s each to build, 8 of
them). Built here, a program's first compile on this host only compiles the program.

    python -m ffcompile.calibrate                     # the classes not measured yet, f32 and f64
    python -m ffcompile.calibrate --force --threads 1 # measure again, for 1 pool thread
    FFCOMPILE_VECTOR_BITS=256 python -m ffcompile.calibrate   # an AVX2 host's code

Programs measure the classes they need when they are built; this only does it earlier (or
again, on a quieter machine) for the thread count given (default: ff.get_num_threads()).
"""
from __future__ import annotations

import argparse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="f32,f64", help="comma-separated: f32, f64")
    parser.add_argument("--threads", type=int, help="the pool's threads (default: ff.get_num_threads())")
    parser.add_argument("--force", action="store_true", help="measure again the classes measured before")
    args = parser.parse_args(argv)

    import ffcompile as ff
    from ffcompile.codegen.llvm.calibrate import calibrate_class, calibrate_split, measured_products
    from ffcompile.codegen.llvm.smallgemm_split import split_min_work
    from ffcompile.codegen.llvm.gemm_library import build_host_runtime
    from ffcompile.codegen.llvm.packed_gemm import vector_bytes
    from ffcompile.codegen.llvm.gemm_calibration import REPRESENTATIVE, calibration_path, class_name, fastest

    if args.threads:
        ff.set_num_threads(args.threads)
    print(f"# {calibration_path() or 'the disk cache is off: kept in this process only'}")
    print(f"# {ff.get_num_threads()} threads, vectors of {8 * vector_bytes()} bits")
    built = build_host_runtime(vector_bytes())
    print(f"# host runtime: {built} packed GEMM functions built (the rest of 8 loaded)", flush=True)
    print("# class: shape | packed GFLOP/s | blas GFLOP/s | small GFLOP/s | packed over blas | route")
    for dtype in args.dtype.split(","):
        for shape in REPRESENTATIVE.values():
            found = calibrate_class(*shape, dtype, force=args.force)
            m, n, k = found["shape"]
            flops = 2 * m * n * k * len(measured_products((m, n, k)))
            rates = {route: None if found[f"{route}_seconds"] is None else flops / found[f"{route}_seconds"] / 1e9
                     for route in ("packed", "blas", "small")}
            packed, blas, small = ("     -" if x is None else f"{x:6.1f}" for x in rates.values())
            ratio = "-" if rates["blas"] is None else f"{rates['packed'] / rates['blas']:4.2f}x"
            print(f"{class_name(*shape, 4 if dtype == 'f32' else 8)}: {m}x{n}x{k} | {packed} | {blas} | {small} | "
                  f"{ratio} | {fastest(found)}", flush=True)
    seconds = {int(size): x for size, x in calibrate_split(force=args.force)["split_seconds"].items()}
    chain = ", ".join(f"2^{size.bit_length() - 1}: {1e6 * x:.1f} us" for size, x in sorted(seconds.items()))
    print(f"# smallgemm split: chunks of at least 2^{split_min_work().bit_length() - 1} multiply-adds "
          f"(split_chain.py's chain, {chain})")


if __name__ == "__main__":
    main()
