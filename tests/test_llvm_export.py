"""AOT export: a C program built against the exported header and library runs the program and
agrees with the Python LLVM backend (the XOR training step; a matmul large enough to call sgemm,
served by a naive C sgemm the program injects)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import zoo
from ffcompile.codegen.llvm import backend, blas
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE
from ffcompile.codegen.llvm.export import ExportError, export
from ffcompile.passes.memory import plan_memory
from ffcompile.tree import tree_flatten

CC = os.environ.get("CC") or shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc or $CC) to build the exported library")


@pytest.fixture(autouse=True)
def private_object_cache(tmp_path, monkeypatch):
    """The Python backend these tests compare with keeps its object code out of the user's cache."""
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

# Generic driver: reads every input from DIR/inK.bin, runs STEPS calls, after each copies
# result R over input I for each "R:I" argument (a training step's new parameters), prints
# result 0's first float per step and writes every output slot to DIR/outK.bin.
# DIR/inK.bin into a new array, an array into DIR/outK.bin (the drivers' files)
C_FILES = r"""
#include <stdio.h>
#include <stdlib.h>

static void *load(const char *dir, int k, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/in%d.bin", dir, k);
    void *data = malloc(bytes ? bytes : 1);
    FILE *f = fopen(path, "rb");
    if (!f || fread(data, 1, bytes, f) != bytes) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fclose(f);
    return data;
}

static void save(const char *dir, int k, const void *data, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/out%d.bin", dir, k);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, bytes, f);
    fclose(f);
}
"""

DRIVER = C_FILES + r"""
#include <string.h>
#include "@name@.h"

static void naive_sgemm(const char *ta, const char *tb, const int *m, const int *n, const int *k,
                        const float *alpha, const float *a, const int *lda, const float *b,
                        const int *ldb, const float *beta, float *c, const int *ldc) {
    for (int j = 0; j < *n; j++)
        for (int i = 0; i < *m; i++) {
            float s = 0.0f;
            for (int p = 0; p < *k; p++) {
                float x = *ta == 'N' ? a[i + p * *lda] : a[p + i * *lda];
                float y = *tb == 'N' ? b[p + j * *ldb] : b[j + p * *ldb];
                s += x * y;
            }
            float *out = &c[i + j * *ldc];
            *out = *beta == 0.0f ? *alpha * s : *alpha * s + *beta * *out;  /* beta 0: C unread */
        }
}


int main(int argc, char **argv) {
    const size_t in_bytes[] = @P@_INPUT_BYTES, out_bytes[] = @P@_OUTPUT_BYTES;
    const int result_output[] = @P@_RESULT_OUTPUT;
    void *args[1 + @P@_NUM_INPUTS + @P@_NUM_OUTPUTS];
    int steps = atoi(argv[2]);
    args[0] = aligned_alloc(@P@_ALIGNMENT, (@P@_ARENA_BYTES + @P@_ALIGNMENT) / @P@_ALIGNMENT * @P@_ALIGNMENT);
    for (int k = 0; k < @P@_NUM_INPUTS; k++) args[1 + k] = load(argv[1], k, in_bytes[k]);
    for (int k = 0; k < @P@_NUM_OUTPUTS; k++) args[1 + @P@_NUM_INPUTS + k] = malloc(out_bytes[k]);
    if (@P@_USES_SGEMM) @name@_set_sgemm((void *)naive_sgemm);
    for (int s = 0; s < steps; s++) {
        @name@_entry(args);
        printf("%.9g\n", (double)*(float *)args[1 + @P@_NUM_INPUTS + result_output[0]]);
        for (int a = 3; a < argc; a++) {
            int r, i;
            sscanf(argv[a], "%d:%d", &r, &i);
            memcpy(args[1 + i], args[1 + @P@_NUM_INPUTS + result_output[r]], in_bytes[i]);
        }
    }
    for (int k = 0; k < @P@_NUM_OUTPUTS; k++) save(argv[1], k, args[1 + @P@_NUM_INPUTS + k], out_bytes[k]);
    return 0;
}
"""


def build_driver(library, name, directory):
    source = directory / "driver.c"
    source.write_text(DRIVER.replace("@name@", name).replace("@P@", name.upper()))
    program = directory / "driver"
    subprocess.run([CC, "-std=c11", "-Wall", "-Werror", "-O1", "-I", str(library.header_path.parent),
                    str(source), "-o", str(program), "-L", str(library.library_path.parent), f"-l{name}",
                    f"-Wl,-rpath,{library.library_path.parent}"], check=True, capture_output=True, text=True)
    return program


def run_in_c(program, directory, arrays, steps, updates):
    for k, array in enumerate(arrays):
        np.ascontiguousarray(array).tofile(directory / f"in{k}.bin")
    out = subprocess.run([str(program), str(directory), str(steps), *(f"{r}:{i}" for r, i in updates)],
                         check=True, capture_output=True, text=True, timeout=60)
    return [float(line) for line in out.stdout.split()]


def read_outputs(directory, executable):
    return [np.fromfile(directory / f"out{k}.bin", dtype).reshape(shape)
            for k, (dtype, shape) in enumerate(executable._outputs)]


def run_in_python(schedule, plan, arrays, steps, updates):
    """The Python LLVM backend on the same schedule, updating inputs from results like the driver."""
    executable = backend.build(schedule, plan)
    arrays = [np.array(a) for a in arrays]
    losses = []
    for _ in range(steps):
        results = executable(*arrays)
        losses.append(float(results[0].reshape(-1)[0]))
        for r, i in updates:
            arrays[i] = results[r].copy()
    return losses, results, executable


@needs_cc
def test_xor_training_step_runs_from_c_like_python(tmp_path):
    workload = zoo.get("xor")
    params, x, y = workload.example_inputs(0)
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.5), backend="llvm")
    state = step.init(params)
    lowered = step.lower(params, state, x, y)
    schedule = lowered.schedule
    plan = plan_memory(schedule)
    library = export(schedule, plan, tmp_path, "xor_step", lowered.names)
    assert library.blas == ()  # xor's GEMMs are tiny: native loops, no setter needed
    trained = tree_flatten((params, state))[0]  # the parameters and the step counter
    arrays = trained + tree_flatten(step.hyperparameters(state))[0] + [x, y]
    updates = [(1 + i, i) for i in range(len(trained))]  # new params and counter over old
    steps = 20
    c_losses = run_in_c(build_driver(library, "xor_step", tmp_path), tmp_path, arrays, steps, updates)
    py_losses, py_results, executable = run_in_python(schedule, plan, arrays, steps, updates)
    assert len(c_losses) == steps and c_losses[-1] < c_losses[0]  # it trains
    np.testing.assert_allclose(c_losses, py_losses, rtol=1e-6, atol=1e-7)
    for c, p in zip(read_outputs(tmp_path, executable), py_results, strict=True):
        np.testing.assert_allclose(c, p, rtol=1e-6, atol=1e-7)


@needs_cc
def test_large_matmul_calls_the_injected_sgemm(blas_route, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 257)).astype(np.float32)
    w = rng.standard_normal((256, 257)).astype(np.float32)  # used transposed: the 'T' flag path
    lowered = ff.compile(lambda x, w: ff.tanh(x @ w.T) * 0.5, backend="llvm").lower(x, w)
    schedule = lowered.schedule
    plan = plan_memory(schedule)
    assert 256 * 256 * 257 > blas.NATIVE_MAX_WORK >= blas.native_max_work()
    library = export(schedule, plan, tmp_path, "dense", lowered.names)
    assert library.blas == ("sgemm",)
    assert "#define DENSE_USES_SGEMM 1" in library.header_path.read_text()
    run_in_c(build_driver(library, "dense", tmp_path), tmp_path, [x, w], 1, [])
    _, py_results, executable = run_in_python(schedule, plan, [x, w], 1, [])
    [c_result] = read_outputs(tmp_path, executable)
    # Two sgemms (the C driver's naive one, OpenBLAS) sum 129 products in different orders.
    np.testing.assert_allclose(c_result, py_results[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(c_result, np.tanh(x.astype(np.float64) @ w.T) * 0.5, rtol=1e-4, atol=1e-5)


@needs_cc
def test_library_exports_only_its_prefixed_symbols(tmp_path):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm to list the library's symbols")
    x = np.ones((4, 4), np.float32)
    lowered = ff.compile(lambda x: x * 2.0, backend="llvm").lower(x)
    library = export(lowered.schedule, plan_memory(lowered.schedule), tmp_path, "twice")
    listing = subprocess.run([nm, "-D", "--defined-only", str(library.library_path)],
                             capture_output=True, text=True, check=True).stdout
    defined = {line.split()[-1] for line in listing.splitlines() if line.split()[1] in "TDB"}
    assert defined == {"twice_entry", "twice_set_sgemm", "twice_set_dgemm"}


def test_bad_name_and_foreign_plan_are_clear_errors(tmp_path):
    x = np.ones(3, np.float32)
    lowered = ff.compile(lambda x: x + 1.0, backend="llvm").lower(x)
    with pytest.raises(ExportError, match="C identifier"):
        export(lowered.schedule, plan_memory(lowered.schedule), tmp_path, "my-model")
    other = ff.compile(lambda x: x * 3.0, backend="llvm").lower(x).schedule
    with pytest.raises(ExportError, match="another schedule"):
        export(lowered.schedule, plan_memory(other), tmp_path, "model")


@needs_cc
def test_kernels_split_across_the_thread_pool_run_whole_in_a_library(tmp_path):
    """A library has no thread pool (its slot stays null and internal): a skinny GEMM and a
    fused loop long enough to be split run on the caller's thread, with the same results."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 784)).astype(np.float32), rng.standard_normal((784, 512)).astype(np.float32)
    z = rng.standard_normal((512, 300)).astype(np.float32)
    lowered = ff.compile(lambda x, w, z: (ff.tanh(x @ w), ff.exp(z) * 2.0), backend="llvm").lower(x, w, z)
    assert lowered.llvm_ir.count("ffc_parallel_for") >= 2
    schedule = lowered.schedule
    plan = plan_memory(schedule)
    library = export(schedule, plan, tmp_path, "split", lowered.names)
    run_in_c(build_driver(library, "split", tmp_path), tmp_path, [x, w, z], 1, [])
    _, py_results, executable = run_in_python(schedule, plan, [x, w, z], 1, [])
    for c_result, py_result in zip(read_outputs(tmp_path, executable), py_results):
        np.testing.assert_array_equal(c_result, py_result)


@needs_cc
def test_a_packed_gemm_with_its_epilogue_is_defined_inside_the_library(tmp_path):
    """The packed GEMM (the route the suite forces) is a runtime function programs call through
    a slot (gemm_library.py): the export defines the variants it calls inside itself, so the
    library is self-contained (no BLAS setter needed, no undefined ffc_ symbol) and a C driver
    gets Python's bits (both run the same kernel, on one thread in the library)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 300)).astype(np.float32)
    w = rng.standard_normal((310, 300)).astype(np.float32)  # used transposed
    b = rng.standard_normal(310).astype(np.float32)
    lowered = ff.compile(lambda x, w, b: ff.tanh(x @ w.T + b), backend="llvm").lower(x, w, b)
    assert "ffc_packed_gemm_f32_nt_" in lowered.llvm_ir and "packed_gemm.epilogue" in lowered.llvm_ir
    schedule = lowered.schedule
    plan = plan_memory(schedule)
    library = export(schedule, plan, tmp_path, "packed", lowered.names)
    assert library.blas == ()
    nm = shutil.which("nm")
    if nm is not None:
        undefined = subprocess.run([nm, "-u", str(library.library_path)], check=True, capture_output=True,
                                   text=True).stdout
        assert "ffc_" not in undefined
    run_in_c(build_driver(library, "packed", tmp_path), tmp_path, [x, w, b], 1, [])
    _, py_results, executable = run_in_python(schedule, plan, [x, w, b], 1, [])
    [c_result] = read_outputs(tmp_path, executable)
    np.testing.assert_array_equal(c_result, py_results[0])
    np.testing.assert_allclose(c_result, np.tanh(x.astype(np.float64) @ w.T + b), rtol=1e-4, atol=1e-4)
