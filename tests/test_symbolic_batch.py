"""batch_dim= (docs/symbolic_batch.md): one trace for every batch size. The symbolic graph
prints and parses back (`f32[B,784]`); on the NumPy backend, specialized to a size, it
gives bit for bit the results of the per-size program; on LLVM the one program for
every size gives them within float tolerance (test_symbolic_program.py has more);
forward, gradients and training steps; shapes that need a concrete batch size fail at
trace time, naming the op."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ffcompile as ff
from ffcompile import ArgumentError, ShapeError, zoo
from ffcompile.ir import Graph, IRParseError, TensorType, VerifyError, parse_ir, verify
from ffcompile.ir.specialize import specialize
from ffcompile.ir.symbolic import Sym, bytes_at
from ffcompile.ir.types import parse_type
from ffcompile.tree import tree_flatten, tree_map

SIZES = (1, 2, 7, 64, 129)
B = Sym("B")


def _leaves(tree):
    return tree_flatten(tree)[0]


def _same(a, b) -> bool:
    a, b = _leaves(a), _leaves(b)
    return len(a) == len(b) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))


def _agree(a, b, backend) -> bool:
    """Bit for bit on NumPy (a program per size); on LLVM, whose one program serves every
    size (its reductions and GEMMs split rows by the run-time size), within float tolerance."""
    if backend == "numpy":
        return _same(a, b)
    a, b = _leaves(a), _leaves(b)
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype
                                    and np.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(a, b))


# ---- the IR


def test_types_print_and_parse_symbols():
    for text in ("f32[B,512]", "f64[2*B]", "i32[3,B,4]", "bool[]"):
        assert str(parse_type(text)) == text
    assert TensorType((B, 4), "f32").size == Sym("B", 4)
    assert TensorType((B, 4), "f32").nbytes == Sym("B", 16)
    with pytest.raises(ValueError, match="malformed"):
        parse_type("f32[B+1]")


@settings(max_examples=200, deadline=None)
@given(coef=st.integers(1, 64), k=st.integers(-3, 64), n=st.integers(1, 1000))
def test_sym_arithmetic_agrees_with_every_size(coef, k, n):
    """What Sym computes, bound to any size n, is what the ints compute; what it cannot
    know for every size raises a ShapeError (never a wrong answer). `==` is equality for
    every size: B equals 2*B // 2 and no size below 1; `B == 3` holds for one size only, so
    it raises (a branch on it would take one side for every size)."""
    s, size = Sym("B", coef), coef * n
    checks = [(lambda a: a * k, k >= 0), (lambda a: a + a, True), (lambda a: a // k, k > 0 and coef % k == 0),
              (lambda a: a % k, k > 0 and coef % k == 0),
              # B >= 1: decided where the smallest value, coef, answers as every larger one
              (lambda a: a > k, k < coef), (lambda a: a >= k, k <= coef), (lambda a: a < k, k <= coef),
              (lambda a: a <= k, k < coef), (lambda a: a == k, k <= 0), (lambda a: a != k, k <= 0)]
    for fn, defined in checks:
        if not defined:
            with pytest.raises(ShapeError, match="needs a concrete value"):
                fn(s)
            continue
        got = fn(s)
        assert (got.at({"B": n}) if isinstance(got, Sym) else got) == fn(size)
    assert s == (s * 2) // 2 and s != Sym("B", coef + 1) and s != Sym("N", coef)


def test_sym_defers_to_traced_values(backend):
    def f(x):
        return x * x.shape[0] + (x.shape[0] - x), x.shape[0] / x, x / x.shape[0], x.shape[0] > x

    symbolic = ff.compile(f, batch_dim=0)
    for n in (1, 4):
        x = np.arange(1.0, 2 * n + 1).reshape(n, 2)
        assert _same(symbolic(x), ff.compile(f)(x))


def test_the_batch_size_alone_is_an_int_as_the_size_is(backend):
    """Where nothing gives it a dtype, x.shape[0] is an i32 literal, as the size n would be."""
    def f(x):
        return ff.where(x > 0, x.shape[0], 0)

    symbolic = ff.compile(f, batch_dim=0, backend=backend)
    for n in (1, 3):
        x = np.arange(2.0 * n).reshape(n, 2) - 1
        assert _same(symbolic(x), ff.compile(f, backend=backend)(x))


def test_the_batch_size_returned_is_the_int_the_per_size_program_returns(backend):
    def f(x):
        return x.sum(), x.shape

    symbolic = ff.compile(f, batch_dim=0, backend=backend)
    for n in (1, 3):
        x = np.ones((n, 2), np.float32)
        assert _same(symbolic(x), ff.compile(f, backend=backend)(x))


def test_symbolic_graph_round_trips_through_text():
    """Every symbolic graph a zoo model's gradient traces to prints and parses back."""
    for name in ("digits", "two_tower", "deep"):
        lowered = ff.compile(ff.value_and_grad(zoo.get(name).loss), batch_dim=(None, 0, 0),
                             backend="numpy").lower(*zoo.get(name).placeholder_inputs(3))
        text = lowered.symbolic_ir
        assert "[B," in text
        assert str(parse_ir(text)) == text


def test_symbols_in_attributes_parse_back():
    text = ("graph @g {\n  %0:f32[B,4] = input {name=\"x\"}\n"
            "  %1:f32[4*B] = reshape %0 {shape=[4*B]}\n"
            "  %2:f32[B,4] = reshape %1 {shape=[B, 4]}\n"
            "  %3:f32[B,4] = slice %2 {starts=[0, 0], steps=[1, 1], stops=[B, 4]}\n"
            "  %4:f32[] = constant {value=B}\n"
            "  return %3, %4\n}\n")
    graph = parse_ir(text)
    assert str(graph) == text
    concrete = specialize(graph, {"B": 5})
    assert concrete.nodes[1].type == TensorType((20,), "f32")
    assert concrete.nodes[4].attr("value") == 5.0 and isinstance(concrete.nodes[4].attr("value"), float)


@pytest.mark.parametrize("line, message", [
    ('%0:f32[true,4] = input {name="x"}', "a symbol is named like B (not true, false, inf or nan), got 'true'"),
    ('%0:f32[2*nan] = input {name="x"}', "got 'nan'"),
    ('%0:f32[] = constant {value=Bx}', "line 2, column 3: symbol Bx is no dimension of an input"),
    ('%0:f32[4] = input {name="x"}\n  %1:f32[N,4] = broadcast %0 {shape=[N, 4]}',
     "line 3, column 3: symbol N is no dimension of an input"),
    ('%0:f32[B,4] = input {name="x"}\n  %1:f32[4*B] = reshape %0 {shape=[3*B]}', "cannot reshape to [3*B]"),
])
def test_malformed_symbols_in_ir_text(line, message):
    """A symbol no input binds (a typo) or one named like an attribute word is refused at
    its line; errors show symbols as the text does."""
    with pytest.raises(IRParseError) as info:
        parse_ir(f"graph @f {{\n  {line}\n  return %0\n}}")
    assert message in str(info.value)


def test_the_verifier_refuses_a_symbol_no_input_binds():
    graph = parse_ir('graph @f {\n  %0:f32[B,4] = input {name="x"}\n  %1:f32[] = constant {value=B}\n'
                     '  return %1\n}')
    orphan = graph.nodes[1]
    with pytest.raises(VerifyError, match=r"%0 \(.*constant.*\): symbol B is no dimension of an input"):
        verify(Graph((orphan,), (0,), "f"))


def test_the_verifier_checks_symbolic_shapes():
    bad = "graph @g {\n  %0:f32[B,4] = input {name=\"x\"}\n  %1:f32[4,B] = neg %0\n  return %1\n}\n"
    with pytest.raises(ff.IRParseError, match=r"declared f32\[4,B\] but neg gives f32\[B,4\]"):
        parse_ir(bad)


def test_specialized_graphs_are_the_per_size_graphs():
    """After simplify, the symbolic trace specialized to a size is the graph a trace at that
    size optimizes to (the traced graphs differ only at 1, by broadcasts that become no-ops)."""
    for name in ("xor", "digits", "two_tower"):
        w = zoo.get(name)
        cf = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), backend="numpy")
        for n in SIZES:
            args = w.placeholder_inputs(n)
            assert cf.lower(*args).optimized == ff.compile(ff.value_and_grad(w.loss), backend="numpy") \
                .lower(*args).optimized, (name, n)
        assert cf.trace_count == 1


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), cols=st.integers(1, 5))
def test_any_size_specializes_to_the_per_size_graph(n, cols):
    def f(x, w):
        h = ff.tanh(x @ w) * x.sum(axis=1, keepdims=True)
        return h.mean() + ff.log_softmax(h, axis=1).sum(axis=0).max() + h.reshape(-1).sum() / x.shape[0]

    x, w = np.ones((n, cols), np.float32), np.ones((cols, 3), np.float32)
    symbolic = ff.compile(ff.value_and_grad(f, argnums=(0, 1)), batch_dim=(0, None), backend="numpy")
    fixed = ff.compile(ff.value_and_grad(f, argnums=(0, 1)), backend="numpy")
    assert symbolic.lower(x, w).optimized == fixed.lower(x, w).optimized


# ---- same answers


@pytest.mark.parametrize("name", ["digits", "mnist", "deep", "two_tower"])
def test_gradients_at_every_size(backend, name):
    w = zoo.get(name)
    params = w.init(0)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    for n in SIZES:
        _, x, y = w.example_inputs(batch_size=n)
        assert _agree(symbolic(params, x, y), ff.compile(ff.value_and_grad(w.loss))(params, x, y), backend), n
    assert symbolic.trace_count == 1


def test_forward_and_batch_reductions(backend):
    def f(x, w):
        h = ff.relu(x @ w)
        return h, h.mean(axis=0), h.sum() / x.shape[0], (h.T @ h).max()

    w = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    symbolic = ff.compile(f, batch_dim=(0, None))
    for n in SIZES:
        x = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
        assert _agree(symbolic(x, w), ff.compile(f)(x, w), backend), n
    assert symbolic.trace_count == 1


def test_batch_on_another_axis(backend):
    def f(xt, w):  # xt: [features, B]
        return (w @ xt).sum(axis=0)

    w = np.arange(12, dtype=np.float64).reshape(3, 4)
    symbolic = ff.compile(f, batch_dim=(1, None))
    for n in (1, 5, 9):
        xt = np.linspace(0, 1, 4 * n).reshape(4, n)
        assert _agree(symbolic(xt, w), ff.compile(f)(xt, w), backend)
    assert "f64[4,B]" in symbolic.last_lowered.symbolic_ir


LOSSES = {
    "cross_entropy": lambda out, y: ff.nn.cross_entropy(out.reshape(out.shape[0], -1)[:, :3], y),
    "nll_loss": lambda out, y: ff.nn.nll_loss(ff.log_softmax(out.reshape(out.shape[0], -1)[:, :3], axis=-1), y),
    "mse": lambda out, y: ff.nn.mse(out.reshape(out.shape[0], -1)[:, 0], y.astype("float32")),
    "bce": lambda out, y: ff.nn.binary_cross_entropy_with_logits(out.reshape(out.shape[0], -1)[:, 0],
                                                                 y.astype("float32")),
}
MODELS = {
    "embedding": (lambda: ff.nn.Sequential(ff.nn.Embedding(10, 4)),
                  lambda rng, n: rng.integers(0, 10, (n, 5)).astype(np.int32)),
    "layernorm": (lambda: ff.nn.Sequential(ff.nn.Linear(4, 6), ff.nn.LayerNorm(6), ff.nn.GELU(), ff.nn.PReLU(6),
                                           ff.nn.Linear(6, 3)),
                  lambda rng, n: rng.standard_normal((n, 4)).astype(np.float32)),
}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", MODELS)
def test_modules_and_losses_over_the_batch(backend, model, loss):
    make_model, make_x = MODELS[model]
    module = make_model()

    def f(params, x, y):
        return LOSSES[loss](module(params, x), y)

    params, rng = module.init(0), np.random.default_rng(0)
    symbolic = ff.compile(ff.value_and_grad(f), batch_dim=(None, 0, 0))
    for n in (1, 3, 9):
        x, y = make_x(rng, n), rng.integers(0, 3, n).astype(np.int32)
        assert _agree(symbolic(params, x, y), ff.compile(ff.value_and_grad(f))(params, x, y), backend), n
    assert symbolic.trace_count == 1


def test_random_samples_and_dropout_over_the_batch(backend):
    """ff.random draws over a symbolic shape (x.shape, B leading or inner) the per-size numbers."""
    R = ff.random
    model = ff.nn.Sequential(ff.nn.Linear(3, 4), ff.nn.Dropout(0.5))

    def f(key, params, x):
        noise = (x * R.uniform(key, x.shape)).sum(axis=1)
        transposed = (x * R.normal(key, (x.shape[1], x.shape[0])).T).sum()
        return noise, transposed, model(params, x, key=key).sum(axis=0)

    params = model.init(0)
    symbolic = ff.compile(f, batch_dim=(None, None, 0))
    for n in (1, 5, 64):
        x = np.random.default_rng(n).standard_normal((n, 3)).astype(np.float32)
        assert _agree(symbolic(R.key(3), params, x), ff.compile(f)(R.key(3), params, x), backend), n
    assert symbolic.trace_count == 1


@pytest.mark.parametrize("optimizer", [ff.optim.SGD(0.1, momentum=0.9), ff.optim.Adam(1e-3)],
                         ids=["momentum", "adam"])
def test_training_steps_with_a_ragged_epoch(backend, optimizer):
    """An epoch of digits whose last batch is smaller: one trace; the parameters after every
    step are those of the per-size steps (bit for bit on NumPy); one program on LLVM."""
    w = zoo.get("digits")
    symbolic = ff.compile_train_step(w.loss, optimizer, batch_dim=0, max_batch=64)
    params_a = w.init(0)
    params_b = tree_map(np.copy, params_a)
    state_a, state_b = symbolic.init(params_a), symbolic.init(params_b)
    fixed = {}
    for k, n in enumerate((64, 64, 7, 1, 64, 2)):
        _, x, y = w.example_inputs(seed=k, batch_size=n)
        loss_a = symbolic(params_a, state_a, x, y)
        step = fixed.setdefault(n, ff.compile_train_step(w.loss, optimizer))
        loss_b = step(params_b, state_b, x, y)
        assert _agree((loss_a, params_a, state_a), (loss_b, params_b, state_b), backend), n
    assert symbolic.compiled.trace_count == 1
    assert symbolic.compiled.signatures == (4 if backend == "numpy" else 1)


def test_bind_at_a_batch_size(backend):
    def f(x, w):
        return ff.tanh(x @ w).mean()

    w = np.ones((3, 2))
    symbolic = ff.compile(f, batch_dim=(0, None))
    for n in (2, 5):
        x = np.linspace(-1, 1, 3 * n).reshape(n, 3)
        bound = symbolic.bind(x, w)
        assert np.array_equal(bound(), ff.compile(f)(x, w))
    assert symbolic.trace_count == 1


# ---- memory: the arena of each size is planned, allocated at that size, and measured


def test_planned_arena_is_the_allocated_one_at_every_size(backend):
    w = zoo.get("mnist")
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0))
    arenas = {}
    for n in (1, 7, 64, 129):
        lowered = symbolic.lower(*w.placeholder_inputs(n))
        program = lowered.program
        assert program.arena_bytes == lowered.memory.arena_bytes  # LLVM: one Envelope of B for every n
        if hasattr(program, "arena"):  # the NumPy program's one allocation
            assert program.arena.nbytes == lowered.memory.arena_bytes
        arenas[n] = bytes_at(lowered.memory.arena_bytes, n)
    # (At B = 1 the NumPy program copies the transposed weights its gemv products read, as the
    # reference multiplies by buffers: numpy_arena._gemm_reads_as_flag. Its arena is the largest.)
    assert arenas[7] < arenas[64] < arenas[129] and (backend == "numpy" or arenas[1] < arenas[7])


# ---- errors


@pytest.mark.parametrize("fn, pieces", [
    (lambda x: x[0].sum(), ["indexing f32[B,4] with 0 along axis 0", "symbolic batch"]),
    (lambda x: x[:2].sum(), ["indexing f32[B,4]", "only ':'"]),
    (lambda x: x.reshape(-1, 3).sum(), ["reshape: f32[B,4] to ['-1', '3']", "4*B % 3"]),
    (lambda x: x.sum() * int(x.shape[0]), ["int()", "concrete value of the symbolic batch size B"]),
    # a branch on the size would be traced once, for every size: B == 1 is true for one
    (lambda x: x.sum() if x.shape[0] == 1 else x.mean(), ["B == 1 needs a concrete value"]),
    (lambda x: x.sum() if 10 in x.shape else x.mean(), ["B == 10 needs a concrete value"]),
    (lambda x: x.sum() * (1 / x.shape[0]), ["1 / B", "divide the traced value by it instead"]),
    (lambda x: x.sum() * (5 % x.shape[0]), ["5 % B needs a concrete value"]),
    # with a float or a power, not Python's bare "unsupported operand type(s)" TypeError
    (lambda x: x.sum() / (x.shape[0] * 1.0), ["the product B * 1.0 needs a concrete value"]),
    (lambda x: x.sum() / (np.float32(2) * x.shape[0]), ["the product B * 2.0 needs a concrete value"]),
    (lambda x: x.sum() * (x.shape[0] - 1.0), ["B - 1.0 needs a concrete value"]),
    (lambda x: x.sum() * (0.5 + x.shape[0]), ["the sum B + 0.5 needs a concrete value"]),
    (lambda x: x.sum() / x.shape[0] ** 0.5, ["B ** 0.5 needs a concrete value"]),
    (lambda x: x.sum() * divmod(x.shape[0], 2)[1], ["B // 2 needs a concrete value"]),
    (lambda x: (x + np.ones((5, 4), np.float32)).sum(), ["add", "do not broadcast", "f32[B,4]", "f32[5,4]"]),
    (lambda x: ff.concatenate([x, np.ones((1, 4), np.float32)], axis=0).sum(), ["the sum B + 1"]),
])
def test_shapes_that_need_a_concrete_size_fail_at_trace_time(fn, pieces):
    with pytest.raises(ShapeError) as info:
        ff.compile(fn, batch_dim=0, backend="numpy")(np.ones((5, 4), np.float32))
    for piece in pieces:
        assert piece in str(info.value)


def test_size_arithmetic_that_holds_at_every_batch_size():
    """abs, round and ** 1 of B are B; a NumPy integer multiplies it as an int does."""
    def f(x):
        n = x.shape[0]
        return x.reshape(abs(n) * np.int64(2), 2) * 1.0, x.reshape(round(n) ** 1, 4).sum(axis=0)

    symbolic = ff.compile(f, batch_dim=0, backend="numpy")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert _same(symbolic(x), ff.compile(f, backend="numpy")(x))
    assert "f32[2*B,2]" in symbolic.lower(x).symbolic_ir


def test_spec_with_none_points_to_batch_dim():
    with pytest.raises(TypeError, match=r"ff.spec\(None, 784\): a size of None .* compile with batch_dim="):
        ff.spec((None, 784))


def test_call_errors():
    f = ff.compile(lambda x, y: (x * y).sum(), batch_dim=0, max_batch=8, backend="numpy")
    with pytest.raises(ArgumentError, match="disagree on the batch size: x has 3, y has 4"):
        f(np.ones(3), np.ones(4))
    with pytest.raises(ArgumentError, match=r"batch size 9 \(x\) is outside max_batch's range 1..8"):
        f(np.ones(9), np.ones(9))
    with pytest.raises(ArgumentError, match=r"batch size 0 \(x\) is outside max_batch's range 1..8"):
        f(np.ones(0), np.ones(0))
    with pytest.raises(ArgumentError, match=r"batch size 0 \(x\): a symbolic batch is never empty"):
        ff.compile(lambda x: x.sum(), batch_dim=0, backend="numpy")(np.ones(0))
    with pytest.raises(ArgumentError, match="batch_dim 1 is out of range for f64\\[3\\]"):
        ff.compile(lambda x: x.sum(), batch_dim=1, backend="numpy")(np.ones(3))
    with pytest.raises(ArgumentError, match="batch_dim gives 1 entries for 2"):
        ff.compile(lambda x, y: x.sum(), batch_dim=(0,), backend="numpy")(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="max_batch bounds the symbolic batch size: it needs batch_dim"):
        ff.compile(lambda x: x, max_batch=4)
    with pytest.raises(ValueError, match="batch_dim must be an axis"):
        ff.compile(lambda x: x, batch_dim=-1)
    for bad in (True, 2.0, "8", 0, np.int64(-3)):
        with pytest.raises(ValueError, match="max_batch must be a positive int"):
            ff.compile(lambda x: x, batch_dim=0, max_batch=bad)
    with pytest.raises(ValueError, match="batch_dim must be an axis"):
        ff.compile(lambda x: x, batch_dim=(np.float64(0),))
    assert f(np.ones(8), np.ones(8)) == 8.0


def test_numpy_integers_are_sizes_and_axes():
    """A bound or axis read off an array (np.int64) works as the int it equals."""
    g = ff.compile(lambda x, y: (x * y).sum(), batch_dim=(np.int64(0), np.int32(0)), max_batch=np.int64(8),
                   backend="numpy")
    assert g(np.ones(8), np.ones(8)) == 8.0
    with pytest.raises(ArgumentError, match=r"batch size 9 \(x\) is outside max_batch's range 1..8"):
        g(np.ones(9), np.ones(9))


def test_a_pytree_of_batch_arrays_shares_one_batch_size():
    def f(batch):
        return batch["x"] * batch["w"].sum(axis=1, keepdims=True)

    cf = ff.compile(f, batch_dim=0, backend="numpy")
    for n in (3, 6):
        batch = {"x": np.ones((n, 2)), "w": np.arange(3.0 * n).reshape(n, 3)}
        assert _same(cf(batch), f(batch))
    assert cf.trace_count == 1
    with pytest.raises(ArgumentError, match=r"disagree on the batch size: batch.w has 3, batch.x has 6"):
        cf({"x": np.ones((6, 2)), "w": np.ones((3, 3))})


def test_a_python_scalar_and_an_array_of_its_dtype_are_traced_apart():
    """A Python float is weakly typed (it takes x's f32), a 0-d f64 array is not (f32 * f64
    is refused): one symbolic trace must not serve both."""
    def f(x, s):
        return x * s

    cf = ff.compile(f, batch_dim=(0, None), backend="numpy")
    x = np.ones((3, 2), np.float32)
    assert cf(x, 2.0).dtype == np.float32
    with pytest.raises(ff.DTypeError, match="operand dtypes differ"):
        cf(x[:2], np.array(2.0))
    assert cf(x[:1], 3.0).dtype == np.float32 and cf.trace_count == 1


def test_a_tuple_batch_dim_speaks_of_every_positional_argument_static_ones_too():
    """An entry per positional argument, as documented: a static argument keeps its entry,
    so the entries after it still name their own arguments."""
    def f(w, k, x):
        return (x * w).sum(axis=1) * k

    w, x = np.arange(1.0, 4.0).reshape(1, 3), np.ones((5, 3))
    cf = ff.compile(f, batch_dim=(None, None, 0), static_argnums=1, backend="numpy")
    for n in (5, 2):
        assert _same(cf(w, 2.0, x[:n]), ff.compile(f, static_argnums=1, backend="numpy")(w, 2.0, x[:n]))
    assert _same(cf(w, x=x, k=3.0), f(w, 3.0, x))
    assert cf.trace_count == 2  # per static value, not per size
    with pytest.raises(ArgumentError, match="batch_dim gives 3 entries for 2 positional batch arguments"):
        cf(w, 2.0)



# ---- ONNX: a symbolic batch dimension of the file maps onto batch_dim


def _onnx_mlp(batch="N"):
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((5, 8)).astype(np.float32), "b1": np.ones(8, np.float32),
             "w2": rng.standard_normal((8, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_symbolic_batch_dimension_is_batch_dim(backend):
    model = ff.onnx.load(_onnx_mlp())
    assert model.batch_dim == (None, 0)
    symbolic = ff.compile(model, batch_dim=model.batch_dim)
    for n in SIZES:
        x = np.random.default_rng(n).standard_normal((n, 5)).astype(np.float32)
        assert _agree(symbolic(model.params, x), ff.compile(model)(model.params, x), backend), n
    assert symbolic.trace_count == 1
    with pytest.raises(ff.onnx.OnnxError, match="no input of the model has a symbolic dimension"):
        ff.onnx.load(_onnx_mlp(batch=4)).batch_dim


def test_onnx_shape_of_a_symbolic_value_names_the_node_that_needs_the_size():
    """A shape holding B folds (tests/test_onnx_symbolic.py); a bool of it is refused by name."""
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ffcompile[onnx]')")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.BOOL, name="the_cast"),
             helper.make_node("Where", ["f", "x", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = ff.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ff.onnx.OnnxError, match=r"ONNX node 'the_cast' \(Cast\): casts int64\[2\] \[B, 2\] to bool"):
        ff.compile(model, batch_dim=model.batch_dim, backend="numpy")({}, np.ones((3, 2), np.float32))


# ---- remat and export: per size, from the one trace


def test_a_byte_budget_holds_at_every_size():
    w = zoo.get("deep")
    reference = ff.compile(ff.value_and_grad(w.loss), backend="numpy").lower(*w.placeholder_inputs(64))
    budget = int(0.8 * reference.memory.arena_bytes)
    symbolic = ff.compile(ff.value_and_grad(w.loss), batch_dim=(None, 0, 0), memory_budget=budget,
                          backend="numpy")
    params = w.init(0)
    for n in (64, 7, 1):
        _, x, y = w.example_inputs(batch_size=n)
        lowered = symbolic.lower(params, x, y)
        assert lowered.program.arena_bytes <= budget, n
        fixed = ff.compile(ff.value_and_grad(w.loss), memory_budget=budget, backend="numpy")
        assert _same(symbolic(params, x, y), fixed(params, x, y)), n
    assert symbolic.trace_count == 1


def test_export_writes_the_one_program_taking_the_batch_size(tmp_path):
    symbolic = ff.compile(lambda x, w: ff.tanh(x @ w).sum(axis=1), batch_dim=(0, None), backend="llvm",
                          max_batch=100)
    w = np.ones((3, 2), np.float32)
    for n in (5, 9):
        header = symbolic.export(tmp_path / f"libm{n}.so", np.ones((n, 3), np.float32), w).header_path.read_text()
        assert "void m{}_entry(void **args, int64_t batch);".format(n) in header
        assert f"#define M{n}_MAX_BATCH 100" in header and f"M{n}_INPUT0_SHAPE(batch)" in header
    assert symbolic.trace_count == 1
    assert symbolic.lower(np.ones((5, 3), np.float32), w) is symbolic.lower(np.ones((9, 3), np.float32), w)


# ---- every public function whose arguments share a leading axis, with that axis symbolic


def test_public_functions_over_a_symbolic_leading_axis():
    """Each FUNCTION_CASES case whose array arguments share axis 0 runs with batch_dim=0 to
    the per-size results bit for bit, or fails at trace time with a ShapeError that shows
    the symbolic type (prelu's alpha meeting B)."""
    from samples import FUNCTION_CASES

    same, refused = [], []
    for name, cases in FUNCTION_CASES.items():
        for k, case in enumerate(cases):
            args = case.make(np.random.default_rng(k))
            arrays = [np.asarray(a) for a in args]
            if not all(a.ndim >= 1 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
                continue
            try:
                got = ff.compile(case.fn, batch_dim=0, backend="numpy")(*args)
            except ShapeError as exc:
                assert "B" in str(exc), (name, str(exc))
                refused.append(name)
                continue
            want = ff.compile(case.fn, backend="numpy")(*args)
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(_leaves(got), _leaves(want))), name
            same.append(name)
    assert len(same) >= 63 and set(refused) <= {"prelu"}, (len(same), refused)
