"""The LLVM backend's packed GEMM (codegen/llvm/packed_gemm.py) against NumPy, and its route.

Every shape runs at both vector widths (512-bit code runs on an AVX2 host too: LLVM splits
its vectors), f32 and f64, every transpose, on 1-3 threads. Tiny caches (monkeypatched) cut
small products into many blocks in every dimension, so edge slivers, several k steps and
several blocks a chunk all occur; the host's own caches give its real block sizes.
Operands one element off alignment check the kernel assumes no alignment of its arguments.
"""
import ctypes
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from llvmlite import ir
from test_llvm_backend import build
from test_llvm_smallgemm import RTOL, TRANSPOSES, assert_gemm_close, operands, product, train_on_both_backends

import ffcompile as ff
from ffcompile.codegen.llvm import cgutils, gemm_library, packed_gemm, target, threadpool
from ffcompile.codegen.llvm.packed_gemm import block_sizes
from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm

DTYPES = {"f32": np.float32, "f64": np.float64}
TINY_CACHES = {1: 2048, 2: 16384}


def misaligned(x):
    """A C-contiguous copy of x one element past an aligned address."""
    buffer = np.empty(x.size + 1, x.dtype)
    out = buffer[1:].reshape(x.shape)
    out[...] = x
    return out


def check(m, n, k, trans_a, trans_b, dtype, vbytes, scaled=False, shift=False):
    np_dtype = DTYPES[dtype]
    a, b = operands(m, n, k, trans_a, trans_b, np_dtype)
    gemm = StandaloneGemm(m, n, k, dtype, trans_a, trans_b, scaled=scaled, vbytes=vbytes, route="packed")
    if shift:
        a, b = misaligned(a), misaligned(b)
    old = np.random.default_rng(1).standard_normal((m, n)).astype(np_dtype)
    c = misaligned(old) if shift else old.copy()
    if not scaled:
        c[...] = np.nan  # an unscaled product never reads C
    gemm(a, b, c, 0.5, -2.0)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    if not scaled:
        assert_gemm_close(c, op_a, op_b, np_dtype)
        return
    wide_a, wide_b, wide_old = (x.astype(np.float64) for x in (op_a, op_b, old))
    exact = 0.5 * wide_a @ wide_b - 2.0 * wide_old
    bound = RTOL[np_dtype] * (0.5 * np.abs(wide_a) @ np.abs(wide_b) + 2.0 * np.abs(wide_old))
    assert c.dtype == np_dtype and (np.abs(c - exact) <= bound).all()


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (7, 13, 5), (37, 41, 43), (97, 64, 130)])
def test_tiny_caches_make_many_blocks(monkeypatch, threads, m, n, k, trans_a, trans_b, dtype, vbytes):
    monkeypatch.setattr(packed_gemm, "cache_bytes", TINY_CACHES.get)
    threads(1 + (m + n + k) % 3)
    check(m, n, k, trans_a, trans_b, dtype, vbytes, scaled=(m + k) % 2 == 1)


def test_a_product_built_at_one_thread_still_splits_across_the_cores(threads):
    """Block sizes are constants of a program: one built at 1 thread has a block of C for each
    core, so it splits when the count rises (a block for each thread now, 8 before, would have
    left mnist's first layer one block)."""
    threads(1)
    mr, nr, mc, kc, nc = block_sizes(128, 512, 784, 4, 32)
    assert -(-128 // mc) * -(-512 // nc) >= min(threadpool.default_threads(), 512 // (4 * nr))


def test_tiny_caches_do_cut_every_dimension(monkeypatch):
    monkeypatch.setattr(packed_gemm, "cache_bytes", TINY_CACHES.get)
    mr, nr, mc, kc, nc = block_sizes(97, 64, 130, 8, 32)
    assert 97 > mc > mr and 64 > nc >= nr and 130 > kc


def _busiest_thread_share(m, n, mc, nc, threads):
    """_imbalance written out: every block of C listed, panel by panel, cut into the pool's
    chunks (threadpool: [n * i / chunks, n * (i + 1) / chunks)), each chunk to the thread
    that is free first."""
    blocks = [min(mc, m - i) * min(nc, n - j) for j in range(0, n, nc) for i in range(0, m, mc)]
    chunks = threadpool.chunk_count(len(blocks), 1, threads)
    busy = [0] * threads
    for c in range(chunks):
        busy[busy.index(min(busy))] += sum(blocks[len(blocks) * c // chunks:len(blocks) * (c + 1) // chunks])
    return max(busy) * threads / (m * n)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_imbalance_is_the_pools_split(threads):
    rng = np.random.default_rng(threads)
    for _ in range(200):
        m, n = (int(x) for x in rng.integers(1, 3000, 2))
        mc, nc = int(rng.integers(1, m + 1)), int(rng.integers(1, n + 1))
        assert packed_gemm._imbalance(m, n, mc, nc, threads) == pytest.approx(_busiest_thread_share(m, n, mc, nc, threads))


WIDE_STEP_PRODUCTS = [(4096, 4096, 256), (256, 4096, 4096), (1024, 4096, 256), (256, 4096, 1024), (4096, 1024, 256),
                      (256, 1024, 4096)]


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_blocks_give_every_thread_as_much_work(monkeypatch, vbytes, itemsize, threads):
    """The wide step's products split evenly over two threads (within 1%), and they and a few
    others over up to four within 3.5%. Before, 4096 rows made 16 blocks of 252 and one of 64
    (256-bit f32), 4096 columns 5 panels of 768 and one of 256: one of two threads had 12%
    more work than the other."""
    monkeypatch.setattr(packed_gemm, "get_num_threads", lambda: threads)
    for m, n, k in WIDE_STEP_PRODUCTS + [(1024, 512, 784), (2000, 3000, 500)]:
        mr, nr, mc, kc, nc = block_sizes(m, n, k, itemsize, vbytes)
        bound = 1.01 if threads <= 2 and (m, n, k) in WIDE_STEP_PRODUCTS else 1.035
        assert _busiest_thread_share(m, n, mc, nc, threads) <= bound, (m, n, k, mc, nc)
        assert mc % mr == 0 and nc % nr == 0

@pytest.mark.parametrize("l1_bytes, l2_bytes", [(48 << 10, 4 << 20), (48 << 10, 32 << 20), (48 << 10, 256 << 20),
                                                (8 << 20, 1 << 20)])
@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("itemsize", [4, 8])
def test_both_packs_fit_the_stack_bound_whatever_the_caches(monkeypatch, l1_bytes, l2_bytes, vbytes, itemsize):
    """The packs are stack buffers of MC x KC + KC x NC elements in the threads' chunks: a host
    reporting a large L1 or L2 (a VM's made-up cache sizes) must not size the blocks past
    STACK_BYTES (a 64 MiB L2 made a 12000 x 384 @ 384 x 64 product ask 8.8 MiB of an 8 MiB
    stack: a segfault)."""
    monkeypatch.setattr(packed_gemm, "cache_bytes", {1: l1_bytes, 2: l2_bytes}.get)
    for m, n, k in [(100_000, 4096, 4096), (100_000, 1, 100_000), (64, 100_000, 100_000)]:
        mr, nr, mc, kc, nc = block_sizes(m, n, k, itemsize, vbytes)
        assert (mc * kc + kc * nc) * itemsize <= packed_gemm.STACK_BYTES, (m, n, k, mc, kc, nc)
        assert mc >= mr and nc >= nr and mc % mr == 0 and nc % nr == 0


def test_a_thread_with_a_small_stack_runs_a_large_product():
    """The packs (up to 2 MiB a chunk) are on the heap: a caller thread of 256 KiB of stack ran out
    of it and the process died (SIGSEGV) while they were on the stack. In a child process."""
    script = (
        "import threading, numpy as np, ffcompile as ff\n"
        "f = ff.compile(lambda a, b: ff.relu(a @ b))\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.standard_normal((512, 784)).astype(np.float32)\n"
        "b = rng.standard_normal((784, 4096)).astype(np.float32)\n"
        "out = {}\n"
        "threading.stack_size(256 * 1024)\n"
        "t = threading.Thread(target=lambda: out.update(r=f(a, b))); t.start(); t.join()\n"
        "assert f.lower(a, b).program.blas == ()\n"
        "np.testing.assert_allclose(out['r'], np.maximum(a @ b, 0), rtol=1e-4, atol=1e-3)\n"
        "print('ok')\n")
    env = {**os.environ, "FFCOMPILE_GEMM_ROUTE": "packed", "FFCOMPILE_CACHE_DIR": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_repeated_calls_reuse_the_packs_pages():
    """A chunk's packs come back from the thread's arena call after call: no page is faulted in
    anew. With aligned_alloc each call's block landed higher in the worker's arena: 255-510
    pages faulted in and zeroed every call of this product. In a child (its own arenas)."""
    script = (
        "import resource, numpy as np, ffcompile as ff\n"
        "from ffcompile.codegen.llvm.standalone_gemm import StandaloneGemm\n"
        "ff.set_num_threads(2)\n"
        "m, n, k = 1024, 4096, 256\n"
        "gemm = StandaloneGemm(m, n, k, 'f32', True, False, route='packed', vbytes=32)\n"
        "rng = np.random.default_rng(0)\n"
        "a, b = rng.standard_normal((k, m)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)\n"
        "c = np.empty((m, n), np.float32)\n"
        "for _ in range(3):\n"
        "    gemm(a, b, c)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    gemm(a, b, c)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    env = {**os.environ, "FFCOMPILE_CACHE_DIR": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) < 50, f"{done.stdout.strip()} page faults in 10 calls"


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_packs_go_on_the_stack_where_the_heap_refuses(monkeypatch, dtype):
    """Where malloc returns null, the chunk packs on its stack instead: the same bits.
    The library function is built here with a malloc of its own that always fails."""
    def refusing(module, name, returns, parameters):
        found = module.globals.get(name)
        if found is not None:
            return found
        function = ir.Function(module, ir.FunctionType(returns, parameters), name)
        if name == "malloc":
            function.linkage = "internal"
            ir.IRBuilder(function.append_basic_block("entry")).ret(ir.Constant(returns, None))
        return function

    variant = packed_gemm.GemmVariant(dtype, False, True, target.vector_bytes())
    assert 'declare i8* @"malloc"' in str(gemm_library.library_module(variant))
    normal = _library_call(variant)
    monkeypatch.setattr(cgutils, "libc", refusing)  # scratch_scope's malloc
    assert 'define internal i8* @"malloc"' in str(gemm_library.library_module(variant))
    refused = _library_call(variant)
    m, n, k = 97, 130, 300
    np_dtype = DTYPES[dtype]
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)).astype(np_dtype), rng.standard_normal((n, k)).astype(np_dtype)
    results = []
    for call in (normal, refused):
        c = np.full((m, n), np.nan, np_dtype)
        call(a, b, c, block_sizes(m, n, k, np_dtype().itemsize, target.vector_bytes())[2:])
        results.append(c)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], a @ b.T, rtol=RTOL[np_dtype], atol=1e-3)


@pytest.mark.parametrize("vbytes", [32, 64])
def test_a_short_last_row_sliver_gives_the_padded_tiles_bits(monkeypatch, threads, vbytes):
    """A row block's last sliver of SHORT_ROWS rows or fewer runs a tile of that many rows: for
    every remainder (1 to MR - 1 rows, in a block of 3 slivers and more), the same bits as the
    MR-row tile padded with zero rows, and NumPy's product."""
    threads(2)
    variant = packed_gemm.GemmVariant("f32", False, True, vbytes)
    short = _library_call(variant)
    assert len(re.findall(r"\nmicro\.k\.body(\.1)?:", str(gemm_library.library_module(variant)))) == 2  # 2 tiles
    monkeypatch.setattr(packed_gemm, "SHORT_ROWS", 0)
    padded = _library_call(variant)
    mr, nr = packed_gemm.MR_BY_VECTOR_BYTES[vbytes], packed_gemm.SLIVER_VECTORS * vbytes // 4
    rng = np.random.default_rng(5)
    for m in range(3 * mr + 1, 4 * mr):
        n, k = 2 * nr + 3, 70
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
        results = []
        for call in (short, padded):
            c = np.full((m, n), np.nan, np.float32)
            call(a, b, c, (4 * mr, 32, 3 * nr))  # 3 k steps, one block (MC, NC: of whole slivers)
            results.append(c)
        np.testing.assert_array_equal(results[0], results[1])
        assert_gemm_close(results[0], a, b.T, np.float32)


@pytest.mark.parametrize("vbytes", [32, 64])
def test_the_micro_kernel_unrolls_its_k_loop_with_the_same_bits(monkeypatch, threads, vbytes):
    """The MR-row tile's k loop runs MICRO_UNROLL steps an iteration (its body: that many of the
    tile's FMAs; the short tile's, one), then the depth's remainder one at a time: for every
    depth from 1 to 2 x MICRO_UNROLL + 1, the bits of the loop without unrolling and NumPy's
    product."""
    threads(2)
    variant = packed_gemm.GemmVariant("f32", False, False, vbytes)
    mr, sv = packed_gemm.MR_BY_VECTOR_BYTES[vbytes], packed_gemm.SLIVER_VECTORS
    unroll = packed_gemm.MICRO_UNROLL
    assert unroll > 1
    text = str(gemm_library.library_module(variant))
    fmuls, label = [], None  # (loop, fmuls) of each micro-kernel loop's body block
    for line in text.splitlines():
        if re.fullmatch(r"[^\s].*:", line):
            label = re.fullmatch(r'"?micro\.(k|rest)\.body(?:\.\d+)?"?:', line)
            fmuls += [[label.group(1), 0]] if label else []
        elif label and " fmul " in line:
            fmuls[-1][1] += 1
    fmuls = sorted(map(tuple, fmuls))
    assert fmuls == sorted([("k", packed_gemm.SHORT_ROWS * sv), ("k", unroll * mr * sv), ("rest", mr * sv)])
    unrolled = _library_call(variant, trans_b=False)
    monkeypatch.setattr(packed_gemm, "MICRO_UNROLL", 1)
    plain = _library_call(variant, trans_b=False)
    nr = sv * vbytes // 4
    rng = np.random.default_rng(11)
    m, n = 2 * mr + 1, 2 * nr + 3
    for k in range(1, 2 * unroll + 2):
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        results = []
        for call in (unrolled, plain):
            c = np.full((m, n), np.nan, np.float32)
            call(a, b, c, (3 * mr, k, 3 * nr))
            results.append(c)
        np.testing.assert_array_equal(results[0], results[1])
        assert_gemm_close(results[0], a, b, np.float32)


@pytest.mark.parametrize("vbytes", [32, 64])
def test_k_steps_are_of_even_depths(threads, vbytes):
    """The library cuts k into as many steps as KC asks, of even depths (multiples of 8 but the
    last): k = 784 with KC 384 was 384, 384 and 16 (a C pass and the packs' calls for 16
    multiply-adds), now 264, 264 and 256, the bits KC 264 gives; KC 392 (two steps) other
    bits. At run time, so a product whose k is a run-time size is cut for the k it has."""
    threads(2)
    call = _library_call(packed_gemm.GemmVariant("f32", False, True, vbytes))
    mr, nr = packed_gemm.MR_BY_VECTOR_BYTES[vbytes], packed_gemm.SLIVER_VECTORS * vbytes // 4
    m, n, k = 2 * mr, 2 * nr, 784
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    results = {}
    for kc in (384, 264, 392):
        results[kc] = np.full((m, n), np.nan, np.float32)
        call(a, b, results[kc], (m, kc, n))
    np.testing.assert_array_equal(results[384], results[264])
    assert not np.array_equal(results[384], results[392])
    assert_gemm_close(results[384], a, b.T, np.float32)


def _library_call(variant, trans_b=True):
    """variant's library function compiled here (not from the cache), as a Python callable
    (a, b (held transposed if trans_b), c, (MC, KC, NC)) without scale or epilogue."""
    jit = target.jit(gemm_library.library_module(variant))
    threadpool.fill_pool_slot(jit)
    real = ctypes.c_float if variant.dtype == "f32" else ctypes.c_double
    fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 6, real, real,
                          *[ctypes.c_int64] * 4, ctypes.c_void_p, ctypes.c_void_p)(jit.address(variant.symbol))

    def call(a, b, c, blocks):
        (m, k), n = a.shape, c.shape[1]
        fn(a.ctypes.data, b.ctypes.data, c.ctypes.data, m, n, k, k, k if trans_b else n, n, 1.0, 0.0, 0, *blocks,
           None, None)
        return jit  # referenced until the call returns

    return call


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("thread_count", [1, 2, 3])
def test_host_block_sizes_odd_shapes(threads, thread_count, trans_a, trans_b, dtype, vbytes):
    """The host's block sizes on a product past one KC step and one MC block (primes)."""
    threads(thread_count)
    check(347, 257, 389, trans_a, trans_b, dtype, vbytes, scaled=thread_count == 2, shift=thread_count != 1)


def test_same_bits_on_any_thread_count(threads):
    a, b = operands(347, 257, 389, False, True, np.float32)
    gemm = StandaloneGemm(347, 257, 389, "f32", False, True, route="packed")
    results = []
    for count in (1, 2, 3):
        threads(count)
        c = np.empty((347, 257), np.float32)
        gemm(a, b, c)
        results.append(c)
    for c in results[1:]:
        np.testing.assert_array_equal(c, results[0])


@pytest.mark.parametrize("m, n, k", [(2, 300, 3), (300, 2, 300), (128, 128, 128), (211, 199, 1)])
@pytest.mark.parametrize("shift", [False, True])
def test_odd_shapes_misaligned(threads, m, n, k, shift):
    threads(2)
    check(m, n, k, False, True, "f32", 32, shift=shift)
    check(m, n, k, True, False, "f64", 64, scaled=True, shift=shift)


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
def test_compiled_product_takes_the_packed_route(packed_route, trans_a, trans_b):
    a, b = operands(300, 280, 290, trans_a, trans_b, np.float32)
    executable, _ = build(ff.compile(product(trans_a, trans_b), backend="llvm").lower(a, b).optimized)
    assert executable.blas == ()
    assert_gemm_close(np.asarray(executable(a, b)[0]), a.T if trans_a else a, b.T if trans_b else b, np.float32)


def test_batched_product_takes_the_packed_route(packed_route):
    a, b = operands(150, 260, 270, False, False, np.float64, batch=(3,))
    executable, _ = build(ff.compile(lambda x, y: x @ y, backend="llvm").lower(a, b).optimized)
    assert executable.blas == ()
    assert_gemm_close(np.asarray(executable(a, b)[0]), a, b, np.float64)


def test_mnist_training_step_matches_numpy_backend(packed_route, threads):
    """Forward, backward (transposed operands) and the update through the packed kernel."""
    threads(2)
    results = train_on_both_backends("mnist")
    # the forward's, the weight gradients' (A^T B) and the input gradients' (A B^T) products
    assert {(128, 512, 784), (784, 512, 128), (128, 512, 512)} <= {shape[:3] for shape in packed_route}
    (want_losses, want), (got_losses, got) = results["numpy"], results["llvm"]
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_gemm_benchmark_prints_every_contender(capsys, monkeypatch, threads):
    """benchmarks/gemm.py, one small shape, one call: a row with both routes and the peers
    (what main changes for the process, restored after: the cache setting, the packed
    GEMM's width, the thread counts)."""
    from threadpoolctl import threadpool_limits

    from benchmarks import gemm

    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")
    monkeypatch.setattr(packed_gemm, "vector_bytes", packed_gemm.vector_bytes)
    with threadpool_limits(None):
        gemm.main(["--shapes", "200x300x310", "--calls", "1", "--rounds", "1", "--vector-bits", "256"])
        row = capsys.readouterr().out.strip().splitlines()[-1]
        assert row.startswith("200x300x310:") and "packed" in row and "blas" in row and "scipy1" in row
        gemm.main(["--shapes", "200x300x310", "--calls", "1", "--rounds", "1", "--epilogue"])
        header, host, row = capsys.readouterr().out.strip().splitlines()[-3:]
        assert "packed-apart" in row and "scipy1" not in row and "% = of the peak" in header and "FMA/cycle" in host
        gemm.main(["--shapes", "200x300x310", "--calls", "1", "--rounds", "1", "--cpu-time"])
        header, _, row = capsys.readouterr().out.strip().splitlines()[-3:]
    assert "1 threads" in header and "CPU time" in header and "numpy" in row and "jax" not in row


def test_packed_kernel_benchmark_prints_the_micro_kernel_and_each_block_size(capsys, monkeypatch, threads):
    """benchmarks/packed_kernel.py: the micro-kernel alone against a core's peak, and a product
    (B transposed, odd sizes) at given and the host's block sizes, checked against NumPy."""
    from benchmarks import packed_kernel

    monkeypatch.setenv("FFCOMPILE_CACHE_DIR", "")
    packed_kernel.main(["--micro", "--kc", "16", "--mc", "12", "--vector-bits", "256"])
    assert "micro-kernel 256 bit, compact, KC 16, MC 12:" in capsys.readouterr().out
    packed_kernel.main(["--shapes", "70x90x50nt", "--blocks", "24,16,64", "--blocks", "host", "--threads", "1",
                        "--calls", "1", "--rounds", "1"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    host = ",".join(map(str, block_sizes(70, 90, 50, 4, target.vector_bytes())[2:]))
    assert row.startswith("70x90x50nt") and "MC,KC,NC 24,16,64 " in row and f"MC,KC,NC {host} " in row
    with pytest.raises(SystemExit):  # MC of 20 rows: not whole slivers at either width
        packed_kernel.main(["--shapes", "70x90x50nt", "--blocks", "20,16,64", "--threads", "1"])


def test_peak_benchmark_measures_the_clock_and_each_vector_width(monkeypatch):
    """benchmarks/peak.py on this host (fewer rounds): a clock, and FMA units per width the
    host has (AVX2: 256 bits; AVX-512: both). No value is asserted but that they are ones."""
    from benchmarks import peak
    from ffcompile.codegen.llvm.target import host_key

    monkeypatch.setattr(peak, "ROUNDS", 1)
    monkeypatch.setattr(peak, "ITERATIONS", 20_000)
    found = peak.host_peak()
    features = host_key().split(" ")[-1].split(",")
    assert 0.2 < found["clock_ghz"] < 10 and found["cores"] >= 1
    assert set(found["widths"]) == {bits for bits, flag in ((256, "+fma"), (512, "+avx512f")) if flag in features}
    for width in found["widths"].values():
        assert 0.5 <= width["fma_units"] <= 8 and width["f32_gflops"] == 2 * width["f64_gflops"]
    assert "GHz" in peak.describe(found)


@pytest.mark.parametrize("vbytes", [32, 64])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_each_tile_of_c_is_prefetched_before_its_k_loop(dtype, vbytes):
    """The macro-kernel asks for every line of the tile's MR rows of C (for writing) before the
    micro-kernel's k loop: a weight gradient's one k step read each row from memory, a page
    apart, unprefetched (4096x1024x256 with the SGD's beta: 5-7% slower than without it)."""
    variant = packed_gemm.GemmVariant(dtype, True, False, vbytes)
    text = str(gemm_library.library_module(variant))
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    mr, nr = packed_gemm.MR_BY_VECTOR_BYTES[vbytes], packed_gemm.SLIVER_VECTORS * vbytes // itemsize
    lines = len({*range(0, nr * itemsize, 64), nr * itemsize - 1})
    calls = [line for line in text.splitlines() if 'call void @"llvm.prefetch.p0"' in line]
    writes = [call for call in calls if call.endswith("i32 1, i32 3, i32 1)")]
    assert len(writes) == mr * lines  # the rest are B's pack's reads ahead
    assert all(call.endswith("i32 0, i32 3, i32 1)") for call in calls if call not in writes)
    tile = text[text.index("\nir.body:"):]  # the macro-kernel's loop over row slivers
    assert tile.index("i32 1, i32 3, i32 1)") < tile.index("\nmicro.k")


@pytest.mark.parametrize("trans_b", [False, True])
def test_b_packs_prefetch_their_source_ahead(trans_b):
    """Both of B's packs ask for the source ahead of the rows they copy (B is read from memory
    once a product, in runs too short for the hardware prefetchers); A's packs do not."""
    variant = packed_gemm.GemmVariant("f32", False, trans_b, 32)
    text = str(gemm_library.library_module(variant))
    body = text[text.index('define internal void @"packed_gemm"'):]
    body = body[:body.index("\n}\n")]
    b_pack = body[:body.index("\nic.")]  # B's pack comes first in a k step, before the row blocks' loop
    assert "i32 0, i32 3, i32 1)" in b_pack
    assert "i32 0, i32 3, i32 1)" not in body[body.index("\nic."):]


@pytest.mark.parametrize("rows", [8, 6, 3])
def test_transposed_gives_the_columns(rows):
    """_transposed's shuffles (8 rows of 8) and its lane-by-lane moves (fewer rows): column p of
    rows is lane p of each, against NumPy's transpose."""
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vector = ir.VectorType(f32, 8)
    module = ir.Module("transposed")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer(), f32.as_pointer()]), "transposed")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    source, out = fn.args
    loaded = [b.load(b.bitcast(b.gep(source, [ir.Constant(i64, 8 * r)]), vector.as_pointer()), align=4)
              for r in range(rows)]
    for p, column in enumerate(packed_gemm._transposed(b, loaded, 8)):
        b.store(column, b.bitcast(b.gep(out, [ir.Constant(i64, rows * p)]), column.type.as_pointer()), align=4)
    b.ret_void()
    jit = target.jit(module)
    x = np.arange(rows * 8, dtype=np.float32).reshape(rows, 8)
    y = np.full((8, rows), np.nan, np.float32)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(jit.address("transposed"))(x.ctypes.data, y.ctypes.data)
    np.testing.assert_array_equal(y, x.T)
    assert ("insertelement" in str(module)) == (rows != 8)


def test_packed_columns_count_a_panel_each_chunk_packs():
    """A panel whose row blocks two chunks share is packed by both: 2 panels of 2 row blocks in
    the 4 chunks of 2 threads pack each panel twice; 4 panels, one a chunk, once."""
    assert packed_gemm._packed_columns(256, 1024, 132, 512, 2) == 2 * 1024
    assert packed_gemm._packed_columns(256, 1024, 132, 256, 2) == 1024
    assert packed_gemm._packed_columns(256, 1000, 256, 256, 1) == 1000


def test_blocks_keep_a_large_b_panel_in_one_chunk(monkeypatch):
    """With B larger than L2, the blocks are chosen (as balanced) so that no two chunks pack one
    panel; a B that fits L2 keeps the fewest panels."""
    monkeypatch.setattr(packed_gemm, "cache_bytes", {1: 48 << 10, 2: 1 << 20}.get)
    monkeypatch.setattr(packed_gemm, "get_num_threads", lambda: 2)
    monkeypatch.setattr(packed_gemm, "default_threads", lambda: 2)  # the host's cores count too
    mr, nr, mc, kc, nc = block_sizes(256, 1024, 4096, 4, 32)
    assert packed_gemm._packed_columns(256, 1024, mc, nc, 2) == 1024 and -(-256 // mc) == 2
    mr, nr, mc, kc, nc = block_sizes(256, 1024, 128, 4, 32)  # B: 512 KiB
    assert -(-1024 // nc) == 2


def test_wide_b_gets_panels_of_a_whole_chunk(monkeypatch):
    """Every panel packs its row blocks of A again, so a wide B gets panels as wide as both packs
    of a chunk allow (STACK_BYTES), one a chunk: wide's 256x4096 products on a 48 KiB L1, 1 MiB
    L2 host (Zen 5) at 2 threads, 4 panels of 1024 columns at 256 bits and 2 of 2048 at 512, each
    packed once; half of that with half the bytes."""
    monkeypatch.setattr(packed_gemm, "cache_bytes", {1: 48 << 10, 2: 1 << 20}.get)
    monkeypatch.setattr(packed_gemm, "get_num_threads", lambda: 2)
    monkeypatch.setattr(packed_gemm, "default_threads", lambda: 2)  # the host's cores count too
    for vbytes, nc in [(32, 1024), (64, 2048)]:
        mr, nr, mc, kc, got = block_sizes(256, 4096, 4096, 4, vbytes)
        assert got == nc and packed_gemm._packed_columns(256, 4096, mc, got, 2) == 4096, (vbytes, got)
        assert (mc * kc + kc * got) * 4 <= packed_gemm.STACK_BYTES
    monkeypatch.setattr(packed_gemm, "STACK_BYTES", packed_gemm.STACK_BYTES // 2)
    assert [block_sizes(256, 4096, 4096, 4, vbytes)[4] for vbytes in (32, 64)] == [512, 1024]


def test_gemm_step_ab_benchmark_compares_builds_inside_a_step(capsys, packed_route, threads):
    """benchmarks/gemm_step_ab.py on mnist's step (every product through the packed GEMM): two
    builds of this tree's library, one with B's pack prefetching nothing; the same bits."""
    from benchmarks import gemm_step_ab

    assert gemm_step_ab.parse_build("x=.:PACK_AHEAD=0,TRANS_AHEAD=4") == ("x", os.path.abspath("."),
                                                                           {"PACK_AHEAD": 0, "TRANS_AHEAD": 4})
    with pytest.raises(ValueError, match="NAME=TREE"):
        gemm_step_ab.parse_build("no-tree")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with pytest.raises(RuntimeError, match="no constant PREPACK_BYTES"):  # removed: not silently the same build
        gemm_step_ab.library_addresses(root, {"PREPACK_BYTES": 0}, ["ffc_packed_gemm_f32_nn_256"], [])
    gemm_step_ab.main(["--model", "mnist", "--steps", "1", "--rounds", "2", f"now={root}",
                       f"no-prefetch={root}:PACK_AHEAD=0,TRANS_AHEAD=0"])
    header, now, other = capsys.readouterr().out.strip().splitlines()[-3:]
    assert header.startswith("# mnist's training step") and "ffc_packed_gemm_f32_nn_" in header
    assert now.startswith("now: ") and "1.000x; the same bits as now" in now
    assert other.startswith("no-prefetch: ") and "the same bits as now" in other
