"""Compile latency (issue 19 item 3), held by counts, never by time: the stage table shows
where a compile goes, and the code that made the mnist step slow to emit stays small."""
import re

import numpy as np

import ffcompile as ff
from ffcompile.codegen.llvm import target


def test_stats_show_the_trace_and_the_total():
    f = ff.compile(ff.value_and_grad(lambda w, x: ff.tanh(x @ w).sum()))
    f(np.ones((3, 2), np.float32), np.ones((4, 3), np.float32))
    stats = f.stats()
    assert stats.trace_seconds > 0
    table = str(stats)
    assert re.search(r"^\(trace\)\s+\d+ nodes", table, re.M)
    total = float(re.search(r"^total\s+([\d.]+)$", table, re.M).group(1))
    assert total >= max(r.seconds for r in stats.stages) * 1e3


def _optimized_instructions(ir_text: str, function: str) -> int:
    """Instructions of `function` after the O3 pipeline the JIT runs."""
    module = target.parse(ir_text, target.host_target_machine())
    target.optimize(module, target.host_target_machine())
    body = str(module).split(f"@{function}(", 1)[1].split("\n}\n", 1)[0]
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
