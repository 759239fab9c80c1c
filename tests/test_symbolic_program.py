"""One native program for every batch size (issue 18): on the LLVM backend, a batch_dim=
compile runs the graph stages once on the symbolic graph and builds one program that
serves B in 1..max_batch. At B in 1, 2, 7, 64, 129 it gives the per-size program's results
within float tolerance (the NumPy backend keeps a program per size, bit for bit:
test_symbolic_batch.py), gradients and training steps too; the arena it allocates at B
is the plan's at B; `cf.signatures == 1` after calls at all those sizes. Where a signature
cannot be one program it falls back to a program per size, and says why."""
import threading

import numpy as np
import pytest

import ffcompile as ff
from ffcompile import ArgumentError, zoo
from ffcompile.codegen.backend import BackendError
from ffcompile.codegen.registry import get_backend
from ffcompile.ir.symbolic import BatchRange, Envelope, bytes_at
from ffcompile.passes.memory import assert_no_overlap
from ffcompile.tree import tree_flatten, tree_map

SIZES = (1, 2, 7, 64, 129)
MODELS = ("xor", "digits", "mnist", "deep")


def _close(a, b, rtol=2e-5, atol=1e-6) -> None:
    a, b = tree_flatten(a)[0], tree_flatten(b)[0]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _one_program(cf) -> None:
    assert cf.signatures == 1, cf.stats()
    stats = cf.stats()
    assert stats.per_size is None and isinstance(stats.batch, BatchRange)
    assert "one program for every batch size" in str(stats)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_the_per_size_programs_at_every_size(name):
    w = zoo.get(name)
    params = w.init(0)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    fixed = ff.compile(ff.value_and_grad(w.loss))
    for n in SIZES:
        _, x, y = w.example_inputs(seed=n, batch_size=n)
        _close(symbolic(params, x, y), fixed(params, x, y))
    _one_program(symbolic)
    assert symbolic.trace_count == 1 and fixed.signatures == len(SIZES)
    assert "f32[B," in symbolic.last_lowered.optimized_ir and symbolic.last_lowered.per_size is None


def test_forward_reductions_over_the_batch_and_the_batch_size_as_a_value():
    def f(x, s):
        h = ff.tanh(x * s)
        return h.mean(axis=0), (h * h).sum(), h, x.shape[0] * h.sum(axis=1)

    symbolic = ff.compile(f, batch_dim=(0, None), max_batch=200)
    s = np.linspace(0.5, 1.5, 5).astype(np.float32)
    for n in SIZES:
        x = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
        _close(symbolic(x, s), ff.compile(f)(x, s))
    _one_program(symbolic)
    # the mean's count stays the symbol: constant folding never makes B a literal
    assert "value=B" in symbolic.last_lowered.optimized_ir


def test_bind_at_several_sizes_shares_one_program():
    w = zoo.get("mnist")
    params = w.init(0)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    fixed = ff.compile(ff.value_and_grad(w.loss))
    bound = {}
    for n in (7, 129, 1):
        _, x, y = w.example_inputs(seed=n, batch_size=n)
        bound[n] = (symbolic.bind(params, x, y), x, y)
    for n, (call, x, y) in bound.items():  # a binding keeps its size after others grew the arena
        _close(call(), fixed(params, x, y))
    _one_program(symbolic)


def test_train_step_bind():
    w = zoo.get("digits")
    step = ff.compile_train_step(w.loss, ff.optim.SGD(0.1), batch_dim=0)
    ref = ff.compile_train_step(w.loss, ff.optim.SGD(0.1))
    params_a = w.init(0)
    params_b = tree_map(np.copy, params_a)
    state_a, state_b = step.init(params_a), ref.init(params_b)
    _, x, y = w.example_inputs(batch_size=9)
    bound = step.bind(params_a, state_a, x, y)
    for _ in range(3):
        _close(bound(), ref(params_b, state_b, x, y), rtol=1e-4)
    _close(params_a, params_b, rtol=1e-4)
    _one_program(step.compiled)


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_allocated_arena_is_the_planned_one_at_every_size(name):
    w = zoo.get(name)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), max_batch=200)
    lowered = symbolic.lower(*w.placeholder_inputs(3))
    plan, program = lowered.memory, lowered.program
    assert isinstance(plan.arena_bytes, Envelope) and program.arena_bytes == plan.arena_bytes
    assert_no_overlap(plan)
    for n in SIZES:  # ascending: each call grows the arena to the plan's at n
        symbolic(*w.placeholder_inputs(n))
        assert symbolic.last_lowered is lowered
        assert program._arena.nbytes == max(bytes_at(plan.arena_bytes, n), 1)
    _one_program(symbolic)


def test_calls_outside_the_range_are_argument_errors():
    w = zoo.get("digits")
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), max_batch=64)
    symbolic(*w.placeholder_inputs(8))
    params, x, y = w.placeholder_inputs(65)
    with pytest.raises(ArgumentError, match="outside max_batch's range 1..64"):
        symbolic(params, x, y)
    with pytest.raises(ArgumentError, match="disagree on the batch size"):
        symbolic(params, x[:5], y[:6])
    lowered = symbolic.last_lowered
    with pytest.raises(ArgumentError, match=r"B = 5, from x"):
        lowered.compile().call_flat([*tree_flatten(params)[0], x[:5], y[:6]])
    _one_program(symbolic)


def test_remat_budget_at_the_reference_size_holds_below_it():
    w = zoo.get("deep")
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), max_batch=64, memory_budget=0.5)
    fixed = ff.compile(ff.value_and_grad(w.loss))
    params = w.init(0)
    for n in (1, 7, 64):
        _, x, y = w.example_inputs(seed=n, batch_size=n)
        _close(symbolic(params, x, y), fixed(params, x, y), rtol=1e-4)
    plan, memory = symbolic.last_lowered.plan, symbolic.last_lowered.memory
    assert plan.recomputed and plan.peak_bytes <= plan.budget
    assert all(bytes_at(memory.arena_bytes, n) <= plan.budget for n in (1, 7, 64))
    _one_program(symbolic)


def test_a_refused_program_falls_back_to_one_per_size_and_says_why(monkeypatch):
    """Code generation that cannot take a symbolic size (here made to refuse) leaves that
    signature a program per batch size, with the refusal in the stats."""
    llvm = get_backend("llvm")
    build = type(llvm).build

    def refuse(self, schedule, plan, donated, profile=False):
        if plan.batch is not None:
            raise BackendError("no symbolic kernels today")
        return build(self, schedule, plan, donated, profile)

    monkeypatch.setattr(type(llvm), "build", refuse)
    w = zoo.get("xor")
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    fixed = ff.compile(ff.value_and_grad(w.loss))
    for n in (3, 5):
        params, x, y = w.placeholder_inputs(n)
        _close(symbolic(params, x, y), fixed(params, x, y))
    assert symbolic.signatures == 2 and symbolic.trace_count == 1
    assert symbolic.stats().per_size == "BackendError: no symbolic kernels today"
    assert "a program per batch size: BackendError: no symbolic kernels today" in str(symbolic.stats())


def test_the_numpy_backend_keeps_a_program_per_size():
    w = zoo.get("xor")
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), backend="numpy")
    for n in (3, 5):
        symbolic(*w.placeholder_inputs(n))
    assert symbolic.signatures == 2
    assert symbolic.stats().per_size == "the numpy backend builds a program per batch size"


@pytest.mark.parametrize("name", ["xor", "digits", "mnist", "deep", "two_tower"])
def test_the_symbolic_schedule_has_the_per_size_kernels(name):
    """Simplify on the symbolic graph leaves what it leaves per size but for 1 / B, which
    stays a scalar division (and the scalar products with it): the same kernels."""
    w = zoo.get(name)
    symbolic = ff.compile_train_step(w.loss, ff.optim.Adam(1e-3), batch_dim=0)
    fixed = ff.compile_train_step(w.loss, ff.optim.Adam(1e-3))
    params, x, y = w.example_inputs()
    state = symbolic.init(params)
    one, per_size = symbolic.lower(params, state, x, y), fixed.lower(params, state, x, y)
    assert one.per_size is None
    assert len(one.schedule.kernels) == len(per_size.schedule.kernels)
    assert [k.kind for k in one.schedule.kernels] == [k.kind for k in per_size.schedule.kernels]


def test_the_report_draws_the_one_plan_at_the_reference_size(tmp_path):
    w = zoo.get("digits")
    lowered = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), max_batch=100).lower(
        *w.placeholder_inputs(8))
    at = lowered.memory.at(100)
    assert at.batch is None and at.arena_bytes == bytes_at(lowered.memory.arena_bytes, 100)
    assert_no_overlap(at)
    page = open(lowered.report(tmp_path / "r.html"), encoding="utf-8").read()
    assert "Arena" in page and f"{at.arena_bytes:,} B" in page


def test_wide_at_small_sizes():
    """wide (1024-4096-4096-1024) at B = 1, 2, 7 only: its per-size programs are the slow part."""
    w = zoo.get("wide")
    params = w.init(0)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    fixed = ff.compile(ff.value_and_grad(w.loss))
    for n in (1, 2, 7):
        _, x, y = w.example_inputs(seed=n, batch_size=n)
        _close(symbolic(params, x, y), fixed(params, x, y))
    _one_program(symbolic)


def test_threads_first_calling_at_different_sizes_build_one_program():
    """A server's first requests, of several sizes at once: one thread builds the symbolic
    signature's program, the others wait for it (each built its own: 2 programs here)."""
    w = zoo.get("digits")
    params = w.init(0)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    start, results = threading.Barrier(3), {}

    def call(n):
        _, x, y = w.example_inputs(seed=n, batch_size=n)
        start.wait()
        results[n] = (symbolic(params, x, y), x, y)

    threads = [threading.Thread(target=call, args=(n,)) for n in (5, 7, 64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _one_program(symbolic)
    assert symbolic.trace_count == 1
    fixed = ff.compile(ff.value_and_grad(w.loss))
    for got, x, y in results.values():
        _close(got, fixed(params, x, y), rtol=1e-4)


def test_the_reference_size_is_max_batch_else_the_default():
    from ffcompile.symbolic_batch import REFERENCE_BATCH

    assert BatchRange(None).reference == REFERENCE_BATCH == 128 and BatchRange(64).reference == 64
    w = zoo.get("xor")
    for max_batch, shown in ((None, "B in 1..inf, reference 128"), (32, "B in 1..32, reference 32")):
        cf = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), max_batch=max_batch)
        lowered = cf.lower(*w.placeholder_inputs(3))
        assert lowered.memory.batch == BatchRange(max_batch) and shown in str(lowered.stats())
