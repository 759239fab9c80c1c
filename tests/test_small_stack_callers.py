"""A program called from a thread with a small stack: the GEMM kernels' packed copies of an
operand come from the heap (cgutils.scratch_scope), so products whose copies outgrow such a
stack run there too (on the stack, a 256 KiB thread's process died)."""
import os
import subprocess
import sys

import pytest

SCRIPT = """
import threading
import numpy as np
import ffcompile as ff
f = ff.compile(lambda a, b: {expr})
rng = np.random.default_rng(0)
a = rng.standard_normal({a_shape}).astype(np.float32)
b = rng.standard_normal({b_shape}).astype(np.float32)
out = {{}}
threading.stack_size(256 * 1024)
t = threading.Thread(target=lambda: out.update(r=f(a, b))); t.start(); t.join()
assert f.lower(a, b).program.blas == ()
np.testing.assert_allclose(out['r'], {expr}, rtol=1e-4, atol=1e-3)
print('ok')
"""

CASES = {  # each packs 256,000 bytes (a transposed operand): all but the caller's stack
    "smallgemm": ("a.T @ b", (500, 128), (500, 64), "small"),  # packed before the pool's split
    "smallgemm, B packed": ("a.T @ b.T", (500, 64), (128, 500), "small"),  # packed in each chunk
    "skinny": ("a.T @ b.T", (8000, 8), (64, 8000), None),
}


@pytest.mark.parametrize("bits", ["", "256"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_256_kib_thread_runs_a_product_that_packs_250_kb(case, bits):
    expr, a_shape, b_shape, route = CASES[case]
    env = {**os.environ, "FFCOMPILE_CACHE_DIR": "", "FFCOMPILE_VECTOR_BITS": bits}
    if route:
        env["FFCOMPILE_GEMM_ROUTE"] = route
    script = SCRIPT.format(expr=expr, a_shape=a_shape, b_shape=b_shape)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
