"""One LLVM program for every batch size (#18): each emitter with a B axis, run at B in
1, 2, 7, 64, 129, agrees with the per-size reference (the symbolic graph specialized to B,
run by the interpreter); the runtime reads B from the arguments, checks it, grows the arena
and binds. Schedules come from tests/symbolic_programs.py (the graph stages on a symbolic
trace, the symbolic memory plan)."""
import ctypes
import dataclasses
import json
import os
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest
from symbolic_programs import SIZES, per_size, symbolic_graph, symbolic_plan, symbolic_schedule
from test_llvm_export import C_FILES

import ffcompile as ff
from ffcompile.codegen.llvm import backend, elementwise
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE
from ffcompile.codegen.llvm.export import export
from ffcompile.codegen.llvm.layout import LAYOUT_LOWERINGS
from ffcompile.codegen.llvm.lower import arena_from_json, layout
from ffcompile.codegen.llvm.runtime_gemm import GemmTooLarge
from ffcompile.ir import Builder, TensorType, lang, verify
from ffcompile.ir import ops as O
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import BatchRange, Envelope, bytes_at
from ffcompile.passes.cost import flops_of
from ffcompile.passes.fuse import fuse
from ffcompile.passes.memory import plan_memory
from ffcompile.passes.schedule import KernelKind, verify_schedule
from ffcompile.symbolic_batch import BATCH

TOLERANCE = {"float32": (3e-5, 1e-5), "float64": (1e-11, 1e-12)}
RNG = np.random.default_rng(18)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def program(fn, batch_dim, make_args, max_batch=None):
    """(executable, symbolic graph, schedule) of fn traced at batch size 3."""
    example = make_args(3)
    schedule = symbolic_schedule(fn, batch_dim, *example)
    executable = backend.LLVMExecutable(schedule, symbolic_plan(schedule, max_batch))
    return executable, symbolic_graph(fn, batch_dim, *example), schedule


def agrees(fn, batch_dim, make_args, sizes=SIZES, scale=1.0):
    """fn's one program at every size == the reference at that size (the absolute tolerance
    times `scale`: sums of that many terms); returns the schedule and the executable."""
    executable, graph, schedule = program(fn, batch_dim, make_args)
    for batch in sizes:
        args = make_args(batch)
        got, want = executable(*args), per_size(graph, batch, args)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype, (batch, g.shape, w.shape)
            rtol, atol = TOLERANCE.get(g.dtype.name, (0, 0))
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"at batch size {batch}")
    return schedule, executable


def kinds(schedule) -> set:
    return {kernel.kind for kernel in schedule.kernels}


def layout_ops(schedule) -> set:
    """The ops of the schedule's layout kernels (what emit_layout lowers)."""
    nodes = schedule.graph.nodes
    return {nodes[kernel.body[-1]].op for kernel in schedule.kernels if kernel.kind == KernelKind.LAYOUT}


# ------------------------------------------------------------------------------------ elementwise

def test_elementwise_with_broadcasting_against_the_batch_axis():
    def fn(x, b, s):
        return ff.tanh(x * b + s), x - s, (x > b).astype(np.float32)

    schedule, _ = agrees(fn, (0, None, None), lambda n: [f32(n, 5), f32(5), f32(1, 1)])
    assert kinds(schedule) == {KernelKind.ELEMENTWISE}


def test_elementwise_with_the_batch_axis_inside():
    """B is the middle axis: the outer axis' stride is a run-time 4*B, and axes merge around it."""
    def fn(x, y):
        return ff.exp(x) * y, x + 1.0

    agrees(fn, 1, lambda n: [f32(3, n, 4), f32(3, n, 4)])


def test_elementwise_reading_a_batch_vector_broadcast_over_columns():
    def fn(x, c):
        return x * c

    agrees(fn, 0, lambda n: [f32(n, 6), f32(n, 1)])


def test_a_large_map_splits_across_the_pool_at_run_time():
    """(B, 1024) has 132,096 points at B = 129, past 2 * PARALLEL_MIN_POINTS; B = 1, 7 run serially:
    one program, the split decided by the run-time count."""
    def fn(x, y):
        return ff.sin(x) + y * 2.0

    schedule, executable = agrees(fn, 0, lambda n: [f32(n, 1024), f32(n, 1024)])
    assert 129 * 1024 >= 2 * elementwise.PARALLEL_MIN_POINTS > 7 * 1024
    assert re.search(r"define internal void @\"map[.\d]*\"\(.*i64 %\"start\", i64 %\"end\", i64 %\"batch\"\)",
                     executable.llvm_ir), "the chunk function takes the batch size"
    assert "ffc_parallel_for" in executable.llvm_ir


def test_a_map_whose_inner_extent_is_symbolic_splits_at_run_time():
    """(4, B*256): the outer loop is fixed, the grain (outer iterations per chunk) is computed at run time."""
    def fn(x):
        return x * 3.0 + 1.0

    agrees(fn, 1, lambda n: [f32(4, n, 256)], sizes=(1, 7, 129, 300))


def test_iota_along_the_batch_axis_argmax():
    """argmax along B: an iota over B and the constant B (where(hit, index, B)) at run time."""
    def fn(x):
        return ff.argmax(x, axis=0), ff.argmax(x, axis=1)

    agrees(fn, 0, lambda n: [f32(n, 5)])


def test_a_constant_holding_the_batch_size_mean():
    """x.mean() divides by the literal 5*B, converted to f32 at run time as NumPy converts it."""
    def fn(x):
        return x.mean(), x.mean(axis=0), x.sum() / x.shape[0]

    agrees(fn, 0, lambda n: [f32(n, 5)])


# ------------------------------------------------------------------------------------ reductions

def test_reductions_over_the_batch_axis_and_others():
    def fn(x):
        return ff.sum(x, axis=0), ff.max(x, axis=0), ff.sum(x, axis=1), ff.max(x, axis=(0, 2)), ff.sum(x)

    schedule, _ = agrees(fn, 0, lambda n: [f32(n, 3, 4)])
    assert KernelKind.REDUCTION in kinds(schedule)


def test_a_reduction_keeping_the_batch_axis_innermost():
    """sum over axis 0 of (4, B): the kept axis B is innermost, its accumulator cannot be on the
    stack (no size at compile time): the reduced axis is looped per kept element instead."""
    def fn(x):
        return ff.sum(x, axis=0), ff.softmax(x, axis=0)

    agrees(fn, 1, lambda n: [f32(4, n)])


def test_softmax_cross_entropy_over_rows():
    def fn(x, y):
        return ff.log_softmax(x, axis=-1) * y, ff.logsumexp(x, axis=-1)

    agrees(fn, 0, lambda n: [f32(n, 10), f32(n, 10)])


# ------------------------------------------------------------------------------------ layout

def test_every_layout_lowering_is_tested_with_a_batch_axis():
    assert set(LAYOUT_LOWERINGS) == {O.Transpose, O.Concat, O.Slice, O.Pad}


def test_transpose_with_a_batch_axis():
    def fn(x, y):
        return x.T, ff.exp(lang.transpose(ff.tanh(y), (2, 0, 1)))

    schedule, _ = agrees(fn, (0, 1), lambda n: [f32(n, 6), f32(3, n, 4)])
    assert layout_ops(schedule) == {O.Transpose}


def test_concat_along_the_batch_axis_and_along_another():
    def fn(x, y):
        return ff.concatenate([ff.exp(x), y], axis=0), ff.concatenate([ff.exp(x), y, x], axis=1)

    schedule, _ = agrees(fn, 0, lambda n: [f32(n, 3), f32(n, 3)])
    assert layout_ops(schedule) == {O.Concat}


def test_slice_of_a_batch_array():
    def fn(x, y):
        return ff.exp(x)[:, 1:4], ff.exp(y)[1:, :, ::2]

    schedule, _ = agrees(fn, (0, 1), lambda n: [f32(n, 6), f32(3, n, 5)])
    assert layout_ops(schedule) == {O.Slice}


def test_pad_of_a_batch_array():
    """Along the other axes (B + 1 has no symbolic size): the offsets are multiples of B, or not."""
    def fn(x):
        return lang.pad(ff.exp(x), ((1, 2, 1), (0, 0, 0))), lang.pad(ff.exp(x).T, ((0, 0, 0), (2, 1, 0)))

    schedule, _ = agrees(fn, 1, lambda n: [f32(3, n)])
    assert O.Pad in layout_ops(schedule)


def test_copy_of_a_batch_array_returned_twice_reshaped():
    def fn(x):
        y = ff.exp(x)
        return y, y.reshape((-1,)), y.reshape((y.shape[0] * 2, 3))

    schedule, _ = agrees(fn, 0, lambda n: [f32(n, 6)])
    assert KernelKind.COPY in kinds(schedule)


# ------------------------------------------------------------------------------------ the program

def test_only_kernels_that_touch_the_batch_take_it():
    def fn(x, w):
        return x * ff.exp(w), ff.exp(w) * 2.0

    executable, _, _ = program(fn, (0, None), lambda n: [f32(n, 4), f32(4)])
    signatures = re.findall(r"define internal void @\"(kernel\d+\.\w+)\"\(([^)]*)\)", executable.llvm_ir)
    with_batch = {name for name, params in signatures if params.endswith('i64 %"batch"')}
    assert signatures and with_batch and with_batch != {name for name, _ in signatures}
    assert re.search(r'%"batch" = ptrtoint i8\* %"?\.?\d*"? to i64', executable.llvm_ir)


def test_the_arena_grows_to_the_plan_at_the_batch_size():
    def fn(x):
        y = ff.exp(x)
        return (y * y).sum(axis=1) + y.sum(axis=1)

    executable, _, _ = program(fn, 0, lambda n: [f32(n, 100)])
    seen = 1
    for batch in (2, 64, 7, 129, 1):
        executable(f32(batch, 100))
        seen = max(seen, batch)
        assert executable._arena.nbytes == bytes_at(executable.arena_bytes, seen) > 0


def test_bad_batches_are_type_errors_naming_the_argument():
    def fn(x, y, w):
        return x * y + w

    executable, _, _ = program(fn, (0, 0, None), lambda n: [f32(n, 4), f32(n, 4), f32(4)], max_batch=100)
    with pytest.raises(TypeError, match=r"argument 1: batch size 5 \(\[5, 4\]\) disagrees with argument 0's 3"):
        executable(f32(3, 4), f32(5, 4), f32(4))
    with pytest.raises(TypeError, match="argument 0: batch size 101 is past max_batch 100"):
        executable(f32(101, 4), f32(101, 4), f32(4))
    with pytest.raises(TypeError, match=r"argument 0: axis 0 of f32\[B,4\] is B .*got 0"):
        executable(f32(0, 4), f32(0, 4), f32(4))
    with pytest.raises(TypeError, match=r"argument 1: expected f32\[B,4\] at batch size 3, got float32\[3, 5\]"):
        executable(f32(3, 4), f32(3, 5), f32(4))
    with pytest.raises(TypeError, match=r"argument 2: expected f32\[4\] at batch size 3, got float64\[4\]"):
        executable(f32(3, 4), f32(3, 4), np.ones(4))
    assert executable(f32(100, 4), f32(100, 4), f32(4))[0].shape == (100, 4)


def test_strided_and_unaligned_arguments_are_copied():
    def fn(x):
        return ff.exp(x)

    executable, _, _ = program(fn, 0, lambda n: [f32(n, 4)])
    x = f32(8, 8)[:, ::2]
    np.testing.assert_allclose(executable(x)[0], np.exp(x), rtol=1e-6)


def test_bind_runs_at_the_bound_batch_size_after_the_arena_grew():
    def fn(x, w):
        h = ff.tanh(x * w)
        return (h * h).sum(axis=1)

    executable, graph, _ = program(fn, (0, None), lambda n: [f32(n, 50), f32(50)])
    small = [f32(2, 50), f32(50)]
    bound = executable.bind(small)
    executable(f32(129, 50), small[1])  # grows the arena: the binding keeps its own
    bound.run()
    for copy_to, copy_from in bound.after:
        np.copyto(copy_to, copy_from)
    np.testing.assert_allclose(bound.results[0], per_size(graph, 2, small)[0], rtol=3e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ disk cache

def test_a_symbolic_program_is_stored_and_loaded_from_the_disk_cache(tmp_path, monkeypatch):
    """The key covers the symbolic plan (Affine offsets, the Envelope arena); the metadata is
    JSON (the arena as [const, per_batch] pairs) and checked against the program's layout."""
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path))

    def fn(x, w):
        h = ff.tanh(x * w)
        return (h * h).sum(axis=1), h.T

    make = lambda n: [f32(n, 40), f32(40)]  # noqa: E731
    cold, graph, schedule = program(fn, (0, None), make)
    [entry] = tmp_path.glob("*.o.ffc")
    warm = backend.LLVMExecutable(schedule, symbolic_plan(schedule))
    assert not cold.from_cache and warm.from_cache and list(tmp_path.glob("*.o.ffc")) == [entry]
    assert warm.arena_bytes == cold.arena_bytes and warm.symbolic
    for batch in (1, 7, 129):
        args = make(batch)
        for got, want in zip(warm(*args), cold(*args), strict=True):
            np.testing.assert_array_equal(got, want)
    # the buffers 64 bytes further on: another key, another entry
    plan = symbolic_plan(schedule)
    moved = dataclasses.replace(plan, buffers=tuple(
        b if b.offset is None else dataclasses.replace(b, offset=b.offset + 64) for b in plan.buffers),
        arena_bytes=Envelope(tuple(part + 64 for part in plan.arena_bytes.parts)))
    assert not backend.LLVMExecutable(schedule, moved).from_cache and len(list(tmp_path.glob("*.o.ffc"))) == 2
    # the same offsets planned for 1..4: another key too (GEMM routes depend on max_batch)
    bounded = symbolic_plan(schedule, max_batch=4)
    assert [b.offset for b in bounded.buffers] == [b.offset for b in plan.buffers]
    assert not backend.LLVMExecutable(schedule, bounded).from_cache and len(list(tmp_path.glob("*.o.ffc"))) == 3


def test_the_cache_metadata_of_a_symbolic_program_round_trips_as_json():
    def fn(x):
        return ff.exp(x) * 2.0 + ff.exp(x).sum(axis=1, keepdims=True)

    schedule = symbolic_schedule(fn, 0, f32(3, 5))
    plan = symbolic_plan(schedule)
    metadata = layout(schedule, plan).metadata()
    assert metadata["batch"] is True and json.loads(json.dumps(metadata)) == metadata
    assert arena_from_json(metadata["arena_bytes"]).at(129) == bytes_at(plan.arena_bytes, 129) > 0


# ------------------------------------------------------------------------------------ C export

CC = os.environ.get("CC") or shutil.which("cc")

# Reads inputs DIR/inK.bin at the batch size argv[2], calls the entry twice (at that size, after
# a call at batch size 1 on the same arena: nothing is left over from a size), writes DIR/outK.bin.
DRIVER = C_FILES + r"""
#include "@name@.h"

int main(int argc, char **argv) {
    int64_t batch = atoll(argv[2]);
    const int64_t in_bytes[] = @P@_INPUT_BYTES(batch), out_bytes[] = @P@_OUTPUT_BYTES(batch);
    void *args[1 + @P@_NUM_INPUTS + @P@_NUM_OUTPUTS];
    size_t arena = (size_t)@P@_ARENA_BYTES(batch);
    args[0] = aligned_alloc(@P@_ALIGNMENT, (arena + @P@_ALIGNMENT) / @P@_ALIGNMENT * @P@_ALIGNMENT);
    for (int k = 0; k < @P@_NUM_INPUTS; k++) args[1 + k] = load(argv[1], k, in_bytes[k]);
    for (int k = 0; k < @P@_NUM_OUTPUTS; k++) args[1 + @P@_NUM_INPUTS + k] = malloc(out_bytes[k]);
    @name@_entry(args, 1);  /* reads only batch-1 prefixes of the arrays and arena */
    @name@_entry(args, batch);
    for (int k = 0; k < @P@_NUM_OUTPUTS; k++) save(argv[1], k, args[1 + @P@_NUM_INPUTS + k], out_bytes[k]);
    return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) to build the exported library")
def test_an_exported_symbolic_library_takes_the_batch_size(tmp_path):
    """The header's entry takes `int64_t batch` and its sizes are macros of it; one library,
    run from C at B in 1, 2, 7, 64, 129, gives the Python program's results bit for bit."""
    def fn(x, w, b):
        h = ff.tanh(x * w + b)
        return (h * h).sum(axis=1), h.T, ff.concatenate([h, x], axis=0), x.mean()

    make = lambda n: [f32(n, 24), f32(24), f32(1, 24)]  # noqa: E731
    executable, _, schedule = program(fn, (0, None, None), make, max_batch=200)
    library = export(schedule, executable._lower_arguments[1], tmp_path, "symb", ["x", "w", "b"])
    header = library.header_path.read_text()
    assert "void symb_entry(void **args, int64_t batch);" in header
    assert "#define SYMB_MAX_BATCH 200" in header
    assert "#define SYMB_INPUT0_SHAPE(batch) {(1 * (int64_t)(batch)), 24}" in header
    source = tmp_path / "driver.c"
    source.write_text(DRIVER.replace("@name@", "symb").replace("@P@", "SYMB"))
    driver = tmp_path / "driver"
    subprocess.run([CC, "-std=c11", "-Wall", "-Werror", "-O1", "-I", str(tmp_path), str(source), "-o", str(driver),
                    "-L", str(tmp_path), "-lsymb", f"-Wl,-rpath,{tmp_path}"], check=True, capture_output=True, text=True)
    for batch in SIZES:
        args = make(batch)
        for k, array in enumerate(args):
            array.tofile(tmp_path / f"in{k}.bin")
        subprocess.run([str(driver), str(tmp_path), str(batch)], check=True, timeout=60)
        for k, want in enumerate(executable(*args)):
            got = np.fromfile(tmp_path / f"out{k}.bin", want.dtype).reshape(want.shape)
            np.testing.assert_array_equal(got, want, err_msg=f"output {k} at batch size {batch}")


# ------------------------------------------------------------------------------------ the native fast path

def test_the_native_checked_call_runs_a_symbolic_program_at_each_batch_size():
    """call_objects reads B from the first batch argument and checks every argument natively
    against a call table at that size (kept for the CALL_TABLES latest sizes); anything it
    cannot take is None without running, and the checked path says what is wrong."""
    def fn(x, y, w):
        return ff.tanh(x * w + y), (x * y).sum(axis=1)

    executable, graph, _ = program(fn, (0, 0, None), lambda n: [f32(n, 8), f32(n, 8), f32(8)])
    for batch in (*SIZES, 3, 4, 5, 6, 2):
        args = (f32(batch, 8), f32(batch, 8), f32(8))
        got = executable.call_objects(args)
        assert got is not None
        for g, w in zip(got, per_size(graph, batch, list(args)), strict=True):
            np.testing.assert_allclose(g, w, rtol=3e-5, atol=1e-5)
    assert len(executable._tables) == backend.CALL_TABLES and 2 in executable._tables and 1 not in executable._tables
    x = f32(5, 8)
    for bad in [(x, f32(6, 8), f32(8)), (x, x, np.ones(8)), (x, x[:, ::-1], f32(8)), (x[:0], x[:0], f32(8)),
                ([[1.0] * 8] * 5, x, f32(8))]:
        assert executable.call_objects(bad) is None
    with pytest.raises(TypeError, match="disagrees"):
        executable.call((x, f32(6, 8), f32(8)), typed=False)


def test_calls_cycling_over_more_sizes_than_it_keeps_tables_for_rewrite_them_in_place():
    """A server's requests at many sizes: past CALL_TABLES sizes, a call rewrites the oldest
    table for its size (no new table: a new one cost ~50 us a call), and every answer and
    every check holds at each size, the GIL choice too."""
    def fn(x, w):
        return (ff.tanh(x * w),)

    executable, graph, _ = program(fn, (0, None), lambda n: [f32(n, 16), f32(16)])
    sizes = list(range(1, 3 * backend.CALL_TABLES)) + [executable.gil_batch, executable.gil_batch + 1]
    tables = set()
    for _ in range(2):
        for batch in sizes:
            args = (f32(batch, 16), f32(16))
            got = executable.call_objects(args)
            assert got is not None
            np.testing.assert_allclose(got[0], per_size(graph, batch, list(args))[0], rtol=3e-5, atol=1e-6)
            assert executable.call_objects((f32(batch + 1, 16)[:batch], f32(15))) is None  # checked at this size
            table = executable._tables[batch]
            tables.add(id(table))
            assert table.call is (table._holding if batch <= executable.gil_batch else table._releasing)
    assert len(executable._tables) == backend.CALL_TABLES and len(tables) == backend.CALL_TABLES


def test_a_symbolic_program_holds_the_gil_up_to_the_batch_size_its_flops_allow():
    def fn(x, w):
        return ff.tanh(x * w)

    executable, graph, _ = program(fn, (0, None), lambda n: [f32(n, 16), f32(16)])
    flops = [sum(flops_of(g, i) for i in range(len(g.nodes)))
             for g in (specialize(graph, {"B": b}) for b in (executable.gil_batch, executable.gil_batch + 1))]
    assert executable.gil_batch > 1 and flops[0] <= backend.HOLD_GIL_MAX_FLOPS < flops[1]
    assert not executable.holds_gil  # as a whole: a larger batch releases it
    small, large = (f32(executable.gil_batch, 16), f32(16)), (f32(executable.gil_batch + 1, 16), f32(16))
    executable.call_objects(small), executable.call_objects(large)
    assert executable._tables[executable.gil_batch].call is not executable._tables[executable.gil_batch + 1].call


def test_a_program_whose_flops_grow_as_b_squared_holds_the_gil_only_while_they_are_small():
    """x @ x.T makes B x B: its FLOPs are not a line through B = 1 and 2 (which put the
    limit at B = 167, 1.1 MFLOPs run holding the GIL, 56x HOLD_GIL_MAX_FLOPS)."""
    executable, graph, _ = program(lambda x: x @ x.T, 0, lambda n: [f32(n, 20)])
    flops = [sum(flops_of(g, i) for i in range(len(g.nodes)))
             for g in (specialize(graph, {"B": b}) for b in (executable.gil_batch, executable.gil_batch + 1))]
    assert executable.gil_batch > 1 and flops[0] <= backend.HOLD_GIL_MAX_FLOPS < flops[1]


# ------------------------------------------------------------------------------------ GEMMs (i18-gemm's emitters)

def gemm_args(n):
    return [f32(n, 300), f32(300, 64), f32(64), f32(n, 64)]


def gemms(x, w, b, dy):
    """m = B (x @ w, dy @ w.T, with a fused epilogue) and k = B (the weight gradient x.T @ dy)."""
    return ff.tanh(x @ w + b), x.T @ dy, dy @ w.T


def test_gemms_with_the_batch_size_as_rows_or_as_the_contracted_axis():
    """Through lower's GEMM kernels and their epilogues, at sizes that take the skinny, native
    and BLAS routes of the one program."""
    _, executable = agrees(gemms, (0, None, None, 0), gemm_args, sizes=(*SIZES, 700), scale=30)
    assert executable.blas == ("sgemm",)


def test_a_gemm_refused_at_run_time_raises_after_the_call_and_is_cleared(tmp_path):
    """Unbounded, a GEMM's size past BLAS's 32-bit integers is found at run time: the program
    stops short of BLAS and leaves the size in ffc_gemm_error, which the call raises as
    GemmTooLarge (here set by hand: the sizes that reach it need 8 GB arrays). The library
    exports it as name_gemm_error()."""
    executable, _, schedule = program(gemms, (0, None, None, 0), gemm_args)
    assert executable._gemm_error  # the address of the program's ffc_gemm_error
    args = gemm_args(5)
    ctypes.c_int64.from_address(executable._gemm_error).value = 2 ** 31
    with pytest.raises(GemmTooLarge, match="at batch size 5, a matmul has a dimension of 2147483648"):
        executable(*args)
    assert executable.call_objects(tuple(args)) is not None  # cleared
    ctypes.c_int64.from_address(executable._gemm_error).value = 2 ** 31
    with pytest.raises(GemmTooLarge):
        executable.call_objects(tuple(args))
    bounded, _, _ = program(gemms, (0, None, None, 0), gemm_args, max_batch=1000)
    assert not bounded._gemm_error  # checked at compile time, at max_batch
    library = export(schedule, executable._lower_arguments[1], tmp_path, "g", ["x", "w", "b", "dy"])
    assert "int64_t g_gemm_error(void);" in library.header_path.read_text()


# ------------------------------------------------------------------------------------ collectives

def test_an_all_reduce_of_batch_arrays_passes_its_run_time_size():
    """all_reduce of [B,4] arrays over one rank (COMM_SELF: the mean is the identity): the start
    copies 8*B elements, the call and the wait pass that count, computed at run time."""
    mpi = pytest.importorskip("mpi4py.MPI", reason="a communication group needs mpi4py")
    from ffcompile import distributed

    group = distributed.DataParallel(mpi.COMM_SELF).group

    def fn(x, y):
        return lang.all_reduce([x * 2.0, y], bucket=0, group=group) + 1.0

    executable, _, schedule = program(fn, 0, lambda n: [f32(n, 4), f32(n, 4)])
    assert KernelKind.COLLECTIVE in kinds(schedule)
    for batch in SIZES:
        x, y = f32(batch, 4), f32(batch, 4)
        (got,) = executable(x, y)
        np.testing.assert_array_equal(got, np.concatenate([(x * 2).ravel(), y.ravel()]) + 1)


# ------------------------------------------------------------------------------------ donation, profiling

def test_a_donated_batch_argument_receives_its_result_at_each_size():
    def fn(x, w):
        return x * w + 1.0

    example = [f32(3, 6), f32(6)]
    schedule = symbolic_schedule(fn, (0, None), *example)
    executable = backend.build(schedule, symbolic_plan(schedule), donate={0: 0})
    assert executable.donated == {0: 0}
    for batch in (1, 7, 129, 7):
        x, w = f32(batch, 6), f32(6)
        want = x * w + 1.0
        (got,) = executable(x, w)
        assert got is x
        np.testing.assert_allclose(x, want, rtol=1e-6)


def test_a_symbolic_program_counts_its_kernels_cycles():
    def fn(x):
        return ff.exp(x).sum(axis=1)

    schedule = symbolic_schedule(fn, 0, f32(3, 6))
    executable = backend.LLVMExecutable(schedule, symbolic_plan(schedule), profile=True)
    executable(f32(2, 6))
    kernels, entry = executable.kernel_cycles(reset=True)
    assert len(kernels) == len(schedule.kernels) and entry >= sum(kernels) > 0


def test_threads_calling_at_different_batch_sizes_share_one_program():
    """Each call takes the lock with its batch size, grows the arena under it and runs there:
    threads at sizes 1..129 at once all get their own size's results."""
    def fn(x, w):
        h = ff.tanh(x * w)
        return (h * h).sum(axis=1) + h.sum(axis=1)

    executable, graph, _ = program(fn, (0, None), lambda n: [f32(n, 64), f32(64)])
    sizes = [1, 129, 7, 64, 2, 100, 3, 129]
    inputs = [(f32(n, 64), f32(64)) for n in sizes]
    wants = [per_size(graph, n, list(args))[0] for n, args in zip(sizes, inputs)]
    failures = []

    def worker(k):
        for _ in range(20):
            call = executable.call_objects if k % 2 else (lambda args: executable(*args))
            (got,) = call(inputs[k])
            if not np.allclose(got, wants[k], rtol=3e-5, atol=1e-5):
                failures.append(sizes[k])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(sizes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_the_kernel_benchmark_runs_and_checks_its_programs_agree(capsys):
    """benchmarks/symbolic_kernels.py (timings are not asserted: only that it runs, checks both
    programs' results equal and prints a row per case and size)."""
    from benchmarks import symbolic_kernels

    assert symbolic_kernels.main(["--sizes", "2,7", "--calls", "2", "--rounds", "2"]) == 0
    table = capsys.readouterr().out
    for name in symbolic_kernels.CASES:
        assert f"| {name} | 2 |" in table and f"| {name} | 7 |" in table


def test_a_constant_array_holding_the_batch_size():
    """A constant [B, 3, 2*B] (as a shape computed at trace time would be): copied from its
    global, then the elements that are sizes stored at run time; and one of B-row floats."""
    builder = Builder("sizes")
    x = builder.add_input(TensorType((BATCH, 4), "f32"), "x")
    sizes = builder.emit(O.Constant, [], {"value": (BATCH, 3, BATCH * 2), "type": TensorType((3,), "i64")})
    scale = builder.emit(O.Constant, [], {"value": ((1.5, BATCH),), "type": TensorType((1, 2), "f32")})
    graph = verify(builder.finish([sizes, builder.emit(O.Mul, [sizes, sizes]), scale, x]))
    schedule = verify_schedule(fuse(graph))
    assert sum(kernel.kind == KernelKind.SOURCE for kernel in schedule.kernels) == 2
    executable = backend.LLVMExecutable(schedule, symbolic_plan(schedule))
    for batch in SIZES:
        x_at = f32(batch, 4)
        for got, want in zip(executable(x_at), per_size(graph, batch, [x_at]), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_gemm_product_past_a_plan_made_without_its_scratch():
    """A donated result computed from a GEMM (w = tanh(w + x.T @ dy), k = B) needs the product
    apart from w; with a plan made without the backend's scratch, lower puts it past the
    arena at every B (an Affine past the Envelope's parts) and the arena grows by it."""
    def fn(w, x, dy):
        return ff.tanh(w + x.T @ dy)

    make = lambda n: [f32(300, 64), f32(n, 300), f32(n, 64)]  # noqa: E731
    example = make(3)
    schedule = symbolic_schedule(fn, (None, 0, 0), *example)
    graph = symbolic_graph(fn, (None, 0, 0), *example)
    plan = plan_memory(schedule, batch=BatchRange())
    executable = backend.build(schedule, plan, donate={0: 0})
    assert executable.donated == {0: 0} and layout(schedule, plan, {schedule.root(schedule.graph.outputs[0]): 0}).scratch
    for batch in (1, 7, 129, 700):
        args = make(batch)
        want = per_size(graph, batch, args)[0]
        (got,) = executable(*args)
        assert got is args[0]
        np.testing.assert_allclose(got, want, rtol=3e-5, atol=1e-4)
        assert executable._arena.nbytes >= bytes_at(plan.arena_bytes, batch) + 300 * 64 * 4
