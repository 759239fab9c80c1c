"""Data parallelism inside one process: the all_reduce op through the pipeline (bucketing,
where the schedule starts and waits, folding, the disk cache, export), and the sharding
helpers. The multi-process runs are tests/test_distributed_mpi.py."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile import distributed
from ffcompile.codegen.llvm.cache import CACHE_DIR_VARIABLE
from ffcompile.codegen.llvm.export import ExportError
from ffcompile.distributed.buckets import buckets_of
from ffcompile.ir import lang as L
from ffcompile.passes.schedule import KernelKind
from ffcompile.tree import tree_flatten

from test_kernel_order import chain, chain_loss

MPI = pytest.importorskip("mpi4py.MPI", reason="a data-parallel step needs mpi4py (pip install 'ffcompile[distributed]')")


def parallel_step(backend, bucket_bytes, optimizer=None):
    """The chain's step data-parallel over COMM_SELF (one rank: the mean is the identity)."""
    return ff.compile_train_step(chain_loss, optimizer or ff.optim.SGD(0.1, momentum=0.9), backend=backend,
                                 data_parallel=distributed.DataParallel(MPI.COMM_SELF, bucket_bytes))


def test_one_rank_steps_equal_the_plain_step_bitwise(backend):
    params, x = chain(layers=4)
    plain = ff.compile_train_step(chain_loss, ff.optim.Adam(1e-2))
    parallel = parallel_step(None, 2048, ff.optim.Adam(1e-2))
    runs = []
    for step in (plain, parallel):
        p = [(w.copy(), b.copy()) for w, b in params]
        state = step.init(p)
        runs.append(([float(step(p, state, x)) for _ in range(3)], p))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(tree_flatten(runs[0][1])[0], tree_flatten(runs[1][1])[0]):
        assert a.tobytes() == b.tobytes()


def test_the_reference_interpreter_runs_the_collectives_blocking():
    """optimize=False: the graph op by op, each all_reduce through its group, blocking."""
    params, x = chain(layers=2)
    step = ff.compile_train_step(chain_loss, ff.optim.SGD(0.1), optimize=False,
                                 data_parallel=distributed.DataParallel(MPI.COMM_SELF, 1024))
    plain = ff.compile_train_step(chain_loss, ff.optim.SGD(0.1), optimize=False)
    copies = [[(w.copy(), b.copy()) for w, b in params] for _ in range(2)]
    losses = [float(s(p, s.init(p), x)) for s, p in zip((step, plain), copies)]
    assert losses[0] == losses[1]
    assert "all_reduce" in step.lower(copies[0], step.init(copies[0]), x).optimized_ir


def test_bound_step_runs_the_collectives(backend):
    params, x = chain(layers=2)
    step = parallel_step(None, 1024)
    state = step.init(params)
    bound = step.bind(params, state, x)
    losses = [float(bound()) for _ in range(3)]
    assert losses[0] > losses[1] > losses[2]


def test_buckets_follow_the_backward_pass_and_their_byte_cap():
    params, x = chain(layers=4, width=8)
    step = parallel_step("numpy", 8 * 8 * 8 + 8 * 8)  # one weight and its bias per bucket
    graph = step.lower(params, step.init(params), x).optimized
    reduces = [node for node in graph.nodes if node.op.name == "all_reduce"]
    assert [node.attr("bucket") for node in reduces] == [0, 1, 2, 3]
    assert all(node.type.shape == (8 * 8 + 8,) for node in reduces)


def test_buckets_of_groups_in_production_order():
    values = {}

    def capture(a, b, c):
        values["buckets"] = buckets_of([c, a, b], 100)
        return a.sum()

    ff.compile(capture, backend="numpy")(np.zeros(10), np.zeros(10), np.zeros(10))
    assert values["buckets"] == [[1], [2], [0]]  # a, b, c were produced (as inputs) in that order; 80 B + 80 B > 100
    ff.compile(capture, backend="numpy")(np.zeros(5), np.zeros(5), np.zeros(20))
    assert values["buckets"] == [[1, 2], [0]]


def test_each_collective_starts_right_after_its_gradient_and_is_waited_for_by_its_update():
    params, x = chain(layers=4, width=8)
    step = parallel_step("numpy", 1)  # a bucket per gradient
    lowered = step.lower(params, step.init(params), x)
    schedule = lowered.schedule
    kernels = schedule.kernels
    collectives = [k for k, kernel in enumerate(kernels) if kernel.kind == KernelKind.COLLECTIVE]
    assert len(collectives) == 8
    for k in collectives:
        last_input = max(schedule.producer[schedule.root(j)] for j in kernels[k].inputs)
        assert k - 1 in (last_input, *collectives)  # right after its bucket (or the collective before)
    gemms = [k for k, kernel in enumerate(kernels) if kernel.kind == KernelKind.GEMM]
    assert collectives[0] < gemms[-1]  # the first bucket is in flight while the backward pass goes on
    source = lowered.source.splitlines()
    starts = [n for n, line in enumerate(source) if "_all_reduce_start(" in line]
    waits = [n for n, line in enumerate(source) if line.strip().endswith("_pending.wait()")]
    assert len(starts) == len(waits) == 8
    last_gemm = max(n for n, line in enumerate(source) if "np.matmul" in line)
    assert starts[0] < last_gemm < waits[0]


def test_collectives_are_never_folded(backend):
    def f(x):
        return L.all_reduce([L.constant(x.builder, (1.0, 1.0, 1.0), "f64")], bucket=0, group=0) * x

    assert "all_reduce" in ff.compile(f).lower(np.ones(3)).optimized_ir
    np.testing.assert_array_equal(ff.compile(f)(np.full(3, 2.0)), np.full(3, 2.0))


def test_a_group_this_process_lacks_raises_after_the_call(backend):
    def f(x):
        return L.all_reduce([x * 2], bucket=0, group=99) + 1

    with pytest.raises(LookupError, match="no communication group 99"):
        ff.compile(f)(np.ones(4))
    np.testing.assert_array_equal(ff.compile(lambda x: x + 1)(np.ones(2)), np.full(2, 2.0))  # still usable


def test_llvm_program_with_collectives_loads_from_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path))
    params, x = chain(layers=2)
    results = []
    for _ in range(2):
        step = parallel_step("llvm", 1024)
        p = [(w.copy(), b.copy()) for w, b in params]
        state = step.init(p)
        program = step.lower(p, state, x).program
        results.append((program.from_cache, float(step(p, state, x)), tree_flatten(p)[0]))
    assert [r[0] for r in results] == [False, True]
    assert results[0][1] == results[1][1]
    for a, b in zip(results[0][2], results[1][2]):
        assert a.tobytes() == b.tobytes()


def test_export_refuses_collectives(tmp_path):
    params, x = chain(layers=1)
    step = parallel_step("llvm", 1024)
    with pytest.raises(ExportError, match="all_reduce"):
        step.lower(params, step.init(params), x).export(tmp_path)


def test_data_parallel_wants_a_communicator():
    with pytest.raises(TypeError, match="mpi4py communicator"):
        ff.compile_train_step(chain_loss, ff.optim.SGD(0.1), data_parallel="world")


class FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


def test_shard_splits_the_batch_evenly():
    x, y = np.arange(12).reshape(6, 2), np.arange(6)
    parts = [distributed.shard((x, y), FakeComm(r, 3)) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="6 rows does not split evenly over 4 ranks"):
        distributed.shard((x, y), FakeComm(0, 4))
    with pytest.raises(ValueError, match="first .batch. axis"):
        distributed.shard((x, y[:5]), FakeComm(0, 3))


def test_shard_indices_share_one_permutation_per_epoch():
    ranks = [distributed.shard_indices(50, 12, epoch=1, seed=3, comm=FakeComm(r, 2)) for r in range(2)]
    assert len(ranks[0]) == 4 and all(len(i) == 6 for i in ranks[0])  # 4 whole batches of 12; 2 dropped
    together = np.concatenate([np.concatenate(pair) for pair in zip(*ranks)])
    assert len(set(together.tolist())) == 48
    again = distributed.shard_indices(50, 12, epoch=1, seed=3, comm=FakeComm(0, 2))
    other = distributed.shard_indices(50, 12, epoch=2, seed=3, comm=FakeComm(0, 2))
    assert all(np.array_equal(a, b) for a, b in zip(ranks[0], again))
    assert not all(np.array_equal(a, b) for a, b in zip(ranks[0], other))


def test_cli_dump_shows_the_buckets(capsys):
    from ffcompile.cli import main

    assert main(["dump", "xor", "--data-parallel", "--format", "schedule"]) == 0
    out = capsys.readouterr().out
    assert "collective" in out and "all_reduce" in out and "bucket=0" in out
