"""GEMMs with a run-time batch size (codegen/llvm/runtime_gemm.py, #18) against NumPy.

One function per product, its sizes holding B (m = B: x @ W and dy @ W.T; k = B: the weight
gradient x.T @ dy; n = B), run at B in 1, 2, 7, 8, 9, 64, 129: the skinny switch (B <= 8),
smallgemm with run-time m or k, and BLAS with run-time sizes, in every transpose, f32 and
f64, at both vector widths (the narrower forced), scaled (alpha, beta) and with a fused
column epilogue. The route taken at run time is proven by counting BLAS calls through the
slot; the 32-bit limit is a compile-time error at max_batch, and without a bound a Python
exception raised after the program refused the call.
"""
import ctypes
import subprocess
import sys

import numpy as np
import pytest
from llvmlite import ir
from symbolic_programs import per_size, symbolic_graph, symbolic_plan, symbolic_schedule
from test_llvm_skinny import vector_width  # noqa: F401 - the fixture: both vector widths
from test_llvm_smallgemm import RTOL, assert_gemm_close

import ffcompile as ff
from ffcompile.codegen.llvm import backend, blas
from ffcompile.codegen.llvm.cgutils import batch_size, for_range
from ffcompile.codegen.llvm.elementwise import I64, ColumnEpilogue
from ffcompile.codegen.llvm.runtime_gemm import GemmTooLarge, skinny_rows
from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm
from ffcompile.ir.symbolic import Sym

B = Sym("B")
SIZES = (1, 2, 7, 8, 9, 64, 129)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
NP = {"f32": np.float32, "f64": np.float64}
NP_INT = {"i32": np.int32, "i64": np.int64}
# (m, n, k): a layer x @ W whose B <= 8 streams its weights (n k >= STREAM_MIN_BYTES), then BLAS
# (past native_max_work() from 118 rows); one that takes smallgemm up to 433 rows; one too
# small for either (smallgemm at every B); the weight gradient (k = B); and B columns.
SHAPES = [(B, 1100, 129), (B, 300, 129), (B, 10, 37), (100, 40, B), (23, B, 19)]
SHAPE_IDS = ["streamed-rows", "rows", "tiny-rows", "inner", "columns"]


@pytest.fixture
def one_blas_thread(monkeypatch):
    """BLAS at one thread (the default): products split across the pool, native_max_work 256^3."""
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", 1)


def operands(gemm, batch, dtype, seed=0):
    rng = np.random.default_rng(seed + batch)
    shape_a, shape_b, shape_c = gemm.shapes(batch)
    return (rng.standard_normal(shape_a).astype(dtype), rng.standard_normal(shape_b).astype(dtype),
            rng.standard_normal(shape_c).astype(dtype))


def ops(gemm, a, b):
    return (a.T if gemm.trans_a else a), (b.T if gemm.trans_b else b)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", SHAPES, ids=SHAPE_IDS)
def test_one_function_matches_numpy_at_every_batch_size(m, n, k, trans_a, trans_b, dtype, vector_width,
                                                       one_blas_thread):
    gemm = StandaloneGemm(m, n, k, dtype, trans_a, trans_b)
    for batch in SIZES:
        a, b, c = operands(gemm, batch, NP[dtype])
        c[...] = np.nan  # an unscaled product never reads C
        gemm(a, b, c, batch=batch)
        assert_gemm_close(c, *ops(gemm, a, b), NP[dtype])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", SHAPES[:2] + SHAPES[3:4], ids=["streamed-rows", "rows", "inner"])
def test_the_accumulate_form_in_every_branch(m, n, k, trans_a, trans_b, dtype, one_blas_thread):
    """C = alpha op(A) op(B) + beta C (accumulate.py's optimizer updates) at every size."""
    gemm = StandaloneGemm(m, n, k, dtype, trans_a, trans_b, scaled=True)
    for batch in SIZES:
        a, b, old = operands(gemm, batch, NP[dtype])
        c = old.copy()
        gemm(a, b, c, 0.5, -2.0, batch=batch)
        wide_a, wide_b = (x.astype(np.float64) for x in ops(gemm, a, b))
        exact = 0.5 * wide_a @ wide_b - 2.0 * old
        bound = RTOL[NP[dtype]] * (0.5 * np.abs(wide_a) @ np.abs(wide_b) + 2.0 * np.abs(old))
        assert (np.abs(c - exact) <= bound).all(), f"at batch size {batch}"


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_a_serving_bound_builds_the_fast_skinny_kernel_alone(trans_a, trans_b, vector_width, one_blas_thread):
    """max_batch <= 8: the reference size is a skinny one, so are all sizes: the skinny kernel
    with rows in groups of 8 and nothing else (no smallgemm, no BLAS call), at every size."""
    gemm = StandaloneGemm(B, 300, 129, "f32", trans_a, trans_b, max_batch=8)
    assert gemm.llvm_ir.count("ffc_sgemm") == 1 and "tile.k" not in gemm.llvm_ir  # the slot's definition only
    for batch in range(1, 9):
        a, b, c = operands(gemm, batch, np.float32)
        gemm(a, b, c, batch=batch)
        assert_gemm_close(c, *ops(gemm, a, b), np.float32)


def test_kernels_are_built_for_the_sizes_that_need_them(one_blas_thread):
    """Decided at the reference size: no BLAS call where max_batch's size takes smallgemm;
    no smallgemm where the reference size takes BLAS; the skinny kernel only for weights of
    STREAM_MIN_BYTES and up unless the reference size is a skinny one."""
    bounded = StandaloneGemm(B, 300, 129, "f32", False, False, max_batch=64)
    assert bounded.llvm_ir.count("ffc_sgemm") == 1 and "tile.k" in bounded.llvm_ir and "skinny" not in bounded.llvm_ir
    large = StandaloneGemm(B, 4096, 512, "f32", False, False)
    past_small = large.llvm_ir.count("ffc_sgemm") > 1 or "ffc_packed_gemm" in large.llvm_ir  # BLAS, or packed
    assert past_small and "tile.k" not in large.llvm_ir and "skinny" in large.llvm_ir
    for gemm, batch in ((bounded, 64), (bounded, 3), (large, 3), (large, 200)):
        a, b, c = operands(gemm, batch, np.float32)
        gemm(a, b, c, batch=batch)
        assert_gemm_close(c, *ops(gemm, a, b), np.float32)


@pytest.mark.parametrize("blas_threads", [1, 2])
@pytest.mark.parametrize("trans_b", [False, True])
def test_sizes_past_smallgemm_take_the_generic_packed_gemm(monkeypatch, trans_b, blas_threads):
    """Where the reference size's product takes the packed GEMM (forced here: it does on 512-bit
    hosts), every run-time size past smallgemm's range calls the packed GEMM's shape-generic
    function with the run-time rows (block sizes of the reference size's product), never
    BLAS, at any BLAS thread count, scaled too."""
    monkeypatch.setattr(blas, "_threads_chosen", True)
    monkeypatch.setattr(blas, "_blas_threads", blas_threads)
    monkeypatch.setattr(blas, "packed_beats_blas", lambda *args: True)
    counter = CountingBlas("sgemm")
    gemm = StandaloneGemm(B, 520, 260, "f32", False, trans_b, scaled=True, blas=counter.address)
    assert blas.gemm_route(128, 520, 260, "f32", False, trans_b) == blas.PACKED and "packed_gemm" in gemm.llvm_ir
    for batch, blas_calls in ((128, False), (256, False), (129, False), (300, False), (127, False), (9, False),
                              (1, False)):
        a, b, old = operands(gemm, batch, np.float32)
        c, before = old.copy(), counter.calls
        gemm(a, b, c, 0.5, 2.0, batch=batch)
        assert (counter.calls > before) == blas_calls, f"at batch size {batch}"
        wide_a, wide_b = (x.astype(np.float64) for x in ops(gemm, a, b))
        exact = 0.5 * wide_a @ wide_b + 2.0 * old
        bound = RTOL[np.float32] * (0.5 * np.abs(wide_a) @ np.abs(wide_b) + 2.0 * np.abs(old))
        assert (np.abs(c - exact) <= bound).all(), f"at batch size {batch}"


@pytest.mark.parametrize("scaled", [False, True])
def test_the_weight_gradient_takes_the_generic_packed_gemm(monkeypatch, scaled, one_blas_thread):
    """k = B (x.T @ dy), the packed route forced: the packed GEMM's shape-generic function with
    the run-time k (several k steps past the reference's KC), the unscaled product never
    reading the NaNs in C."""
    monkeypatch.setattr(blas, "packed_beats_blas", lambda *args: True)
    gemm = StandaloneGemm(260, 520, B, "f32", True, False, scaled=scaled)
    assert blas.gemm_route(260, 520, 128, "f32", True, False) == blas.PACKED and "packed_gemm" in gemm.llvm_ir
    for batch in (128, 256, 129, 300, 127, 1):
        a, b, old = operands(gemm, batch, np.float32)
        c = old.copy() if scaled else np.full_like(old, np.nan)
        gemm(a, b, c, 0.5, 2.0, batch=batch)
        wide_a, wide_b = (x.astype(np.float64) for x in ops(gemm, a, b))
        alpha, beta = (0.5, 2.0) if scaled else (1.0, 0.0)
        exact = alpha * wide_a @ wide_b + (beta * old if scaled else 0)
        bound = RTOL[np.float32] * (alpha * np.abs(wide_a) @ np.abs(wide_b) + beta * np.abs(old))
        assert (np.abs(c - exact) <= bound).all(), f"at batch size {batch}"


@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_integer_products_loop_with_run_time_trip_counts(dtype):
    """Integers (which BLAS has not) take the loop nest, its counts and strides at run time."""
    for m, n, k, trans_a, trans_b in ((B, 7, 5, False, False), (6, 3, B, True, False), (B, 4, 3, True, True)):
        assert blas.gemm_route(m, n, k, dtype, trans_a, trans_b) == blas.LOOPS
        gemm = StandaloneGemm(m, n, k, dtype, trans_a, trans_b)
        for batch in SIZES:
            rng = np.random.default_rng(batch)
            a, b = (rng.integers(-50, 50, shape).astype(NP_INT[dtype]) for shape in gemm.shapes(batch)[:2])
            c = np.full(gemm.shapes(batch)[2], -1, NP_INT[dtype])
            gemm(a, b, c, batch=batch)
            np.testing.assert_array_equal(c, np.matmul(*ops(gemm, a, b)), err_msg=f"at batch size {batch}")


class CountingBlas:
    """A BLAS slot value that counts the calls, then makes them with the real function."""

    def __init__(self, name: str):
        signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)
        real = signature(blas.blas_address(name))
        self.calls = 0

        def call(*args):
            self.calls += 1
            real(*args)

        self.callback = signature(call)
        self.address = ctypes.cast(self.callback, ctypes.c_void_p).value


@pytest.mark.parametrize("trans_b", [False, True])
def test_results_do_not_depend_on_the_thread_count(trans_b, one_blas_thread):
    """A unit of C (a skinny column unit, a smallgemm block of rows) is computed by the same code
    in any chunk. (Not so a BLAS product split by rows, fixed or symbolic: OpenBLAS's sums
    depend on the rows a call gets.)"""
    n, k = 400, 100  # skinny up to 8 rows; up to 419 rows smallgemm, split from 4 blocks of 48 rows
    assert 419 * n * k <= blas.native_max_work() < 420 * n * k
    counter = CountingBlas("sgemm")
    gemm = StandaloneGemm(B, n, k, "f32", False, trans_b, blas=counter.address)
    saved = ff.get_num_threads()
    try:
        for batch in (1, 5, 8, 100, 200, 419):
            a, b, _ = operands(gemm, batch, np.float32)
            results = []
            for threads in (1, 2, 3):
                ff.set_num_threads(threads)
                c = np.zeros(gemm.shapes(batch)[2], np.float32)
                gemm(a, b, c, batch=batch)
                results.append(c)
            for c in results[1:]:
                np.testing.assert_array_equal(c, results[0], err_msg=f"at batch size {batch}")
            assert_gemm_close(results[0], *ops(gemm, a, b), np.float32)
    finally:
        ff.set_num_threads(saved)
    assert counter.calls == 0


@pytest.mark.parametrize("trans_b", [False, True])
def test_the_route_changes_at_run_time_between_8_and_9_rows(trans_b, one_blas_thread, blas_route):
    """B = 8 streams the weights (skinny), B = 9 calls BLAS: the product is past native_max_work()
    at 9 rows; a smaller one takes smallgemm from 9 rows on, and BLAS only past native_max_work()
    (the BLAS route forced: where the packed GEMM takes the reference size's product, it takes
    every size past smallgemm, test_sizes_past_smallgemm_take_the_generic_packed_gemm)."""
    n, k = 4096, 512
    assert 8 * n * k <= blas.native_max_work() < 9 * n * k and skinny_rows(B, n, k, False, trans_b, 4, None) == \
        list(range(1, 9))
    counter = CountingBlas("sgemm")
    gemm = StandaloneGemm(B, n, k, "f32", False, trans_b, blas=counter.address)
    calls = {}
    for batch in (1, 8, 9, 12):
        a, b, c = operands(gemm, batch, np.float32)
        before = counter.calls
        gemm(a, b, c, batch=batch)
        calls[batch] = counter.calls - before
        assert_gemm_close(c, *ops(gemm, a, b), np.float32)
    assert calls[1] == calls[8] == 0 and calls[9] >= 1 and calls[12] >= 1

    n, k = 512, 64  # past native_max_work() from 513 rows
    gemm = StandaloneGemm(B, n, k, "f32", False, trans_b, blas=counter.address)
    for batch, expected in ((8, False), (9, False), (512, False), (513, True)):
        a, b, c = operands(gemm, batch, np.float32)
        before = counter.calls
        gemm(a, b, c, batch=batch)
        assert (counter.calls > before) == expected, f"at batch size {batch}"
        assert_gemm_close(c, *ops(gemm, a, b), np.float32)


N_EPILOGUE = 1100  # skinny at 1-8 rows (n k >= STREAM_MIN_BYTES), then BLAS


def bias_relu_epilogue(args):
    """C[i, j] = max(C[i, j] + d[j], 0) for the rows of C (B of them) and the chunk's columns."""
    pc, pd = args[2], args[3]
    n = N_EPILOGUE

    def emit(b, loaded, j0, j1):
        c, d = loaded
        with for_range(b, batch_size(b), "row") as i, for_range(b, b.sub(j1, j0), "col") as j:
            column = b.add(j0, j)
            at = b.gep(c, [b.add(b.mul(i, ir.Constant(I64, n)), column)])
            total = b.fadd(b.load(at), b.load(b.gep(d, [column])))
            b.store(b.select(b.fcmp_ordered(">", total, ir.Constant(total.type, 0.0)), total,
                             ir.Constant(total.type, 0.0)), at)

    return ColumnEpilogue([pc, pd], emit)


@pytest.mark.parametrize("trans_b", [False, True])
def test_a_fused_column_epilogue_runs_after_every_branch(trans_b, one_blas_thread):
    """In the skinny kernel's chunks at B <= 8, after smallgemm or BLAS above."""
    gemm = StandaloneGemm(B, N_EPILOGUE, 129, "f32", False, trans_b, epilogue=bias_relu_epilogue)
    bias = np.random.default_rng(1).standard_normal(N_EPILOGUE).astype(np.float32)
    for batch in SIZES + (1000,):
        a, b, c = operands(gemm, batch, np.float32)
        gemm(a, b, c, batch=batch, d=bias)
        product = np.matmul(*(x.astype(np.float64) for x in ops(gemm, a, b)))
        np.testing.assert_allclose(c, np.maximum(product + bias, 0), rtol=1e-4, atol=1e-4,
                                   err_msg=f"at batch size {batch}")


def test_past_the_blas_integers_at_max_batch_is_a_compile_error():
    assert blas.gemm_route(B, 10, 10, "f32", False, False, max_batch=blas.BLAS_INT_MAX) == blas.RUNTIME
    with pytest.raises(GemmTooLarge, match=r"dimension of 2147483648 at max_batch=1073741824"):
        blas.gemm_route(Sym("B", 2), 10, 10, "f32", False, False, max_batch=2 ** 30)
    assert blas.gemm_route(Sym("B", 2), 10, 10, "i32", False, False, max_batch=2 ** 30) == blas.LOOPS


def test_the_compile_error_names_the_matmul_and_its_line():
    x, w = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    schedule = symbolic_schedule(lambda x, w: x @ w, (0, None), x, w)
    with pytest.raises(GemmTooLarge) as error:
        backend.LLVMExecutable(schedule, symbolic_plan(schedule, max_batch=2 ** 31))
    message = str(error.value)
    assert "f32[B,4] @ f32[4,5]" in message and "test_llvm_runtime_gemm.py" in message and "2147483648" in message


UNBOUNDED = """
import numpy as np
from ffcompile.codegen.llvm.runtime_gemm import GemmTooLarge
from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm
from ffcompile.ir.symbolic import Sym

gemm = StandaloneGemm(Sym("B", 2 ** 20), 10, 10, "f32", False, False)
tiny = [np.zeros(16, np.float32) for _ in range(3)]
try:  # 2**31 rows: refused before BLAS, which would read and write far past these arrays
    gemm.run([x.ctypes.data for x in tiny] + [None], batch=2 ** 11)
except GemmTooLarge as error:
    print("refused:", error)
a, b = np.ones((2 ** 20, 10), np.float32), np.ones((10, 10), np.float32)
c = np.zeros((2 ** 20, 10), np.float32)
gemm(a, b, c, batch=1)  # the next call runs: the error was cleared
print("then", c.min(), c.max())
"""


def test_without_a_bound_a_size_past_the_blas_integers_is_a_python_exception():
    """Run in a child: had the program called BLAS, it would have crashed."""
    result = subprocess.run([sys.executable, "-c", UNBOUNDED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refused: llvm backend: at batch size 2048, a matmul has a dimension of 2147483648" in result.stdout
    assert "then 10.0 10.0" in result.stdout


def test_a_whole_symbolic_program_with_runtime_gemms():
    """x @ W + b and its weight gradient through lower.py: one program, every size."""
    rng = np.random.default_rng(0)
    w, bias = rng.standard_normal((784, 512)).astype(np.float32), rng.standard_normal(512).astype(np.float32)

    def layer(x, w, b, dy):
        return x @ w + b, x.T @ dy

    def make(batch):
        return (rng.standard_normal((batch, 784)).astype(np.float32), w, bias,
                rng.standard_normal((batch, 512)).astype(np.float32))

    schedule = symbolic_schedule(layer, (0, None, None, 0), *make(3))
    executable = backend.LLVMExecutable(schedule, symbolic_plan(schedule))
    graph = symbolic_graph(layer, (0, None, None, 0), *make(3))
    # sizes past smallgemm: BLAS, or the packed GEMM where it takes the reference size's products
    assert executable.blas == (() if blas.gemm_route(128, 512, 784, "f32", False, False) == blas.PACKED else ("sgemm",))
    for batch in SIZES:
        args = make(batch)
        for got, want in zip(executable(*args), per_size(graph, batch, args), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, err_msg=f"at batch size {batch}")


@pytest.mark.parametrize("model", ["digits", "mnist"])
def test_a_zoo_gradient_is_one_program_with_runtime_gemms(model):
    """Through ff.compile: the symbolic gradient builds (a GEMM emitter raising would fall back to a
    program per size), at B = 1, 9 and 64, and agrees with the fixed-size program."""
    from ffcompile import zoo

    workload = zoo.get(model)
    cf = ff.compile(ff.value_and_grad(workload.loss), backend="llvm", batch_dim=(None, 0, 0))
    for batch in (1, 9, 64):
        params, x, y = workload.example_inputs(batch_size=batch)
        fixed = ff.compile(ff.value_and_grad(workload.loss), backend="llvm")(params, x, y)
        got = cf(params, x, y)
        for g, w in zip(ff.tree.tree_flatten(got)[0], ff.tree.tree_flatten(fixed)[0], strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"at batch size {batch}")
    assert cf.signatures == 1 and "i64 %\"batch\"" in cf.last_lowered.llvm_ir


def test_the_benchmark_runs_and_prints_its_ratios(capsys):
    from benchmarks import symbolic_gemm

    rows = symbolic_gemm.main(["--layers", "64x128", "--batches", "1,9", "--rounds", "1", "--calls", "2"])
    out = capsys.readouterr().out
    assert len(rows) == 6 and all(ratio > 0 for *_, ratio in rows)
    assert "| x @ W 64x128 | 9 | smallgemm |" in out and "symbolic / fixed: geometric mean" in out
