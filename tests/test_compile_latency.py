"""Compile latency (issue 19 item 3), held by counts, never by time: the stage table shows
where a compile goes, and the code that made the mnist step slow to emit stays small."""
import re

import numpy as np
import pytest

import ffcompile as ff
from ffcompile.codegen.llvm import blas, target


def test_stats_show_the_trace_and_the_total():
    f = ff.compile(ff.value_and_grad(lambda w, x: ff.tanh(x @ w).sum()))
    f(np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    stats = f.stats()
    assert stats.trace_seconds > 0
    table = str(stats)
    assert re.search(r"^\(trace\)\s+\d+ nodes", table, re.M)
    total = float(re.search(r"^total\s+([\d.]+)$", table, re.M).group(1))
    assert total >= max(r.seconds for r in stats.stages) * 1e3


def test_stats_split_code_generation_into_its_phases(tmp_path, monkeypatch):
    """Cold, `lower` is building the IR, parsing it, O3, machine code and loading it; from the
    disk cache, loading alone (and the graph stages' artifacts loaded, not run)."""
    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", str(tmp_path))
    f = lambda w, x: ff.tanh(x @ w).sum()  # noqa: E731
    args = (np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    phases = []
    for _ in range(2):
        cf = ff.compile(f, backend="llvm")
        cf(*args)
        phases.append([name for name, _ in cf.stats().lower_phases])
        table = str(cf.stats())
        assert all(re.search(rf"^  {name} +[\d.]+$", table, re.M) for name in phases[-1])
    assert phases == [["build IR", "parse", "O3", "machine code", "load"], ["load"]]
    assert "(cache)" in table and " cached" in table


def _optimized_instructions(ir_text: str, function: str) -> int:
    """Instructions of `function` after the O3 pipeline the JIT runs."""
    module = target.parse(ir_text, target.host_target_machine())
    target.optimize(module, target.host_target_machine())
    text = str(module)
    definition = re.search(rf"^define .*@\"?{re.escape(function)}\"?\(", text, re.M)
    if definition is None:  # inlined into its caller
        return 0
    body = text[definition.start():].split("\n}\n", 1)[0]
    return sum(1 for line in body.splitlines() if line.startswith("  "))


def test_a_packed_transposed_operand_is_copied_by_a_loop():
    """mnist's dh = dlogits @ W3^T (128x10 @ (512x10)^T): W3 is packed transposed. Copied in
    the destination's order, O3 vectorized the copy into 320 gathers in one block (1,819
    instructions; 87 of the step's 150 ms of machine-code emission); in the source's, a loop."""
    dlogits = np.ones((128, 10), np.float32)
    w3 = np.ones((512, 10), np.float32)
    lowered = ff.compile(lambda d, w: d @ w.T, backend="llvm").lower(dlogits, w3)
    (gemm,) = re.findall(r"define internal .*@\"?(kernel\d+\.gemm)\"?\(", lowered.llvm_ir)
    assert _optimized_instructions(lowered.llvm_ir, gemm) < 1000


# (trans_a, trans_b) -> O3 instructions of the packed GEMM's functions at most: compact they
# were 607, 488 and 1,078 for one shape; without compiled_compact, 1,141, 914 and 1,590. The
# shape-generic functions with their packs on the heap: 787, 621 and 1,305 compact; 3,112,
# 1,577 and 3,510 under O3. With C's tiles prefetched and the row packs' 8 steps unrolled (a
# loop over them gave back 2-3% of the 256-bit m = 256 products): 884, 820 and 1,311. With B's
# packs prefetching ahead and 8 x 8 transposes by shuffles: 916-927, 856-895 and 949-1,217 (512
# and 256 bits). With a 4-row tile for short last row slivers: 951-1,030, 881-998 and 1,059-1,320
# (the four f32 variants' build 425 -> 461 ms of CPU at 256 bits, 487 -> 519 at 512; once a host).
# With the MR-row tile's k loop unrolled 4 times (Intel's FMA ports, packed_gemm._micro): 1,246,
# 1,185 and 1,326 at 256 bits, 1,381, 1,348 and 1,672 at 512 (the four f32 variants' build on a
# Xeon 0.55-0.58 -> 0.59-0.64 s of CPU at 256 bits, 0.62-0.65 -> 0.67-0.72 at 512).
COMPACT_PACKED_GEMM = {(False, False): 1450, (True, False): 1400, (False, True): 1750}


@pytest.mark.parametrize("trans_a, trans_b", list(COMPACT_PACKED_GEMM))
def test_the_packed_gemm_is_compact(monkeypatch, trans_a, trans_b):
    """The packed GEMM's shape-generic functions (mnist's first layer, its weight gradient (A
    transposed), its input gradient (B transposed)): its loops are vectorized by hand, so the
    chunk's body is compiled `optsize` (cgutils.compiled_compact), where O3 had unrolled and
    re-vectorized its packing into gathers and scatters: 2/3 of its compile time, no faster.
    A program holds none of it: it calls the library function through a slot."""
    from ffcompile.codegen.llvm.gemm_library import library_module
    from ffcompile.codegen.llvm.packed_gemm import GemmVariant

    monkeypatch.setattr(blas, "packed_beats_blas", lambda *args: True)  # as on a 512-bit host
    a = np.ones((784, 128) if trans_a else (128, 784), np.float32)
    b = np.ones((512, 784) if trans_b else (784, 512), np.float32)
    lowered = ff.compile(lambda x, w: (x.T if trans_a else x) @ (w.T if trans_b else w), backend="llvm").lower(a, b)
    variant = GemmVariant("f32", trans_a, trans_b, target.vector_bytes())
    assert f"{variant.symbol}.slot" in lowered.llvm_ir and "define internal void @\"packed_gemm" not in lowered.llvm_ir
    library = str(library_module(variant))
    functions = re.findall(r"define internal void @\"?(packed_gemm[\w.]*)\"?\(", library)
    assert len(functions) == 2  # the chunk the pool calls, and the body it calls
    instructions = sum(_optimized_instructions(library, name) for name in functions)
    assert instructions < COMPACT_PACKED_GEMM[trans_a, trans_b]
