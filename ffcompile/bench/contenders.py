"""The contenders of the benchmark: one small adapter each, registered in CONTENDERS.

A contender turns a `Problem` (a zoo workload, train or infer, its initial
parameters and batch) into a `Runner`: `run()` does one synchronous training
step (returning the loss) or one inference (returning the outputs), and
`layers()` gives the current parameters as (w, b) pairs, w of shape (in, out),
so every contender can be checked against every other; `reset()` puts the
initial parameters back (training on one batch for long enough diverges).
Preparation and the first run are the contender's compile time.

Adding a contender is one entry in CONTENDERS; `requires` names the modules
whose absence makes it "not installed" rather than an error.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import optim
from ..api import compile
from ..train import compile_train_step
from ..tree import tree_flatten, tree_map
from .numpy_mlp import MLPSpec, NumpyMLP

TRACEMALLOC = "tracemalloc"


@dataclass(frozen=True)
class Problem:
    workload: Any  # an ffcompile.zoo.Workload, or a model file in its place (harness.run_cell)
    mode: str  # "train" or "infer"
    params: dict  # the zoo parameter tree; adapters copy it, never write it
    x: Any
    y: np.ndarray
    lr: float
    threads: int


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Runner:
    run: Callable[[], Any]
    layers: Callable[[], list[tuple[np.ndarray, np.ndarray]]]
    reset: Callable[[], None] = _nothing  # inference changes no parameters


@dataclass(frozen=True)
class Contender:
    name: str
    prepare: Callable[[Problem], Runner]
    requires: tuple[str, ...] = ()
    # TRACEMALLOC, or why the step's peak memory is not measured.
    memory: str = TRACEMALLOC
    modes: tuple[str, ...] = ("train", "infer")  # the others are reported unsupported


# ----------------------------------------------------------------- ffcompile


def _reset_in_place(p: Problem, step, params, state) -> Callable[[], None]:
    """Put the initial parameters (and optimizer state) back into the arrays being trained."""
    def reset():
        initial = tree_flatten((p.params, step.init(p.params)))[0]
        for current, value in zip(tree_flatten((params, state))[0], initial, strict=True):
            np.copyto(current, value)

    return reset


def ffcompile_backend(backend: str) -> Callable[[Problem], Runner]:
    def prepare(p: Problem) -> Runner:
        params = tree_map(np.copy, p.params)
        if p.mode == "train":
            step = compile_train_step(p.workload.loss, optim.SGD(p.lr), backend=backend)
            state = step.init(params)
            # loss(params, x, y) takes a multi-input model's inputs as one tuple x.
            return Runner(lambda: step(params, state, p.x, p.y), lambda: MLPSpec.layers(params),
                          _reset_in_place(p, step, params, state))
        forward = compile(p.workload.model, backend=backend)
        inputs = p.x if isinstance(p.x, tuple) else (p.x,)  # model(params, *inputs)
        return Runner(lambda: forward(params, *inputs), lambda: MLPSpec.layers(params))

    return prepare


def ffcompile_bound(p: Problem) -> Runner:
    """The LLVM step (or forward) bound once to its parameters and batch (docs/bind.md):
    a run is one native call over the bound arrays, no argument handling."""
    params = tree_map(np.copy, p.params)
    if p.mode == "train":
        step = compile_train_step(p.workload.loss, optim.SGD(p.lr), backend="llvm")
        state = step.init(params)
        return Runner(step.bind(params, state, p.x, p.y), lambda: MLPSpec.layers(params),
                      _reset_in_place(p, step, params, state))
    forward = compile(p.workload.model, backend="llvm")
    inputs = p.x if isinstance(p.x, tuple) else (p.x,)
    return Runner(forward.bind(params, *inputs), lambda: MLPSpec.layers(params))


# ----------------------------------------------------------------- hand-written NumPy


def numpy_hand(p: Problem) -> Runner:
    net = NumpyMLP(MLPSpec.of(p.workload), p.params, p.lr)
    if p.mode == "train":
        return Runner(lambda: net.train_step(p.x, p.y), lambda: net.layers, lambda: net.load(p.params))
    return Runner(lambda: net.forward(p.x), lambda: net.layers)


# ----------------------------------------------------------------- PyTorch


def torch_mode(compiled: bool) -> Callable[[Problem], Runner]:
    def prepare(p: Problem) -> Runner:
        import torch
        import torch.nn.functional as F

        spec = MLPSpec.of(p.workload)
        torch.set_num_threads(p.threads)
        acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "identity": lambda z: z}
        # nn.Linear's layout: weight (out, in), so F.linear runs the addmm users get.
        weights = [(torch.tensor(w.T.copy(), requires_grad=True), torch.tensor(b, requires_grad=True))
                   for w, b in MLPSpec.layers(p.params)]
        x = torch.from_numpy(p.x)
        y = torch.from_numpy(p.y).long() if spec.loss == "cross_entropy" else torch.from_numpy(p.y)

        def forward(x):
            for (w, b), act in zip(weights, spec.activations):
                x = acts[act](F.linear(x, w, b))
            return x

        def loss_of(out):
            if spec.loss == "mse":
                return 0.5 * (out - y).square().sum(dim=1).mean()
            return F.cross_entropy(out, y)

        def layers():
            return [(w.detach().numpy().T, b.detach().numpy()) for w, b in weights]

        if p.mode == "infer":
            run = torch.compile(forward) if compiled else forward

            def infer():
                with torch.inference_mode():
                    return run(x)

            return Runner(infer, layers)
        optimizer = torch.optim.SGD([t for pair in weights for t in pair], lr=p.lr)

        def reset():
            with torch.no_grad():
                for (w, b), (w0, b0) in zip(weights, MLPSpec.layers(p.params), strict=True):
                    w.copy_(torch.from_numpy(w0.T))
                    b.copy_(torch.from_numpy(b0))

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(forward(x))
            loss.backward()
            optimizer.step()
            return loss.detach()

        # Dynamo splits the step at backward(): a compiled forward+loss (with its
        # AOT-compiled backward) and a compiled optimizer update.
        return Runner(torch.compile(step) if compiled else step, layers, reset)

    return prepare


# ----------------------------------------------------------------- JAX


def jax_jit(p: Problem) -> Runner:
    import functools

    import jax
    import jax.numpy as jnp

    spec = MLPSpec.of(p.workload)
    acts = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
            "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True), "identity": lambda z: z}
    def initial():
        return [(jnp.asarray(w), jnp.asarray(b)) for w, b in MLPSpec.layers(p.params)]

    state = [initial()]
    x, y = jnp.asarray(p.x), jnp.asarray(p.y)

    def forward(params, x):
        for (w, b), act in zip(params, spec.activations):
            x = acts[act](x @ w + b)
        return x

    def loss_of(params, x, y):
        out = forward(params, x)
        if spec.loss == "mse":
            return 0.5 * jnp.mean(jnp.sum(jnp.square(out - y), axis=1))
        log_p = jax.nn.log_softmax(out, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

    def layers():
        return [(np.asarray(w), np.asarray(b)) for w, b in state[0]]

    if p.mode == "infer":
        infer = jax.jit(forward)
        return Runner(lambda: infer(state[0], x).block_until_ready(), layers)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(params, x, y):
        loss, grads = jax.value_and_grad(loss_of)(params, x, y)
        return loss, jax.tree.map(lambda w, g: w - p.lr * g, params, grads)

    def run():
        loss, state[0] = step(state[0], x, y)
        return loss.block_until_ready()

    def reset():
        state[0] = initial()

    return Runner(run, layers, reset)


# ----------------------------------------------------------------- onnxruntime


def onnxruntime_infer(p: Problem) -> Runner:
    """Inference under onnxruntime at the run's thread count (its pool's spinning off): an
    imported ONNX file as it is, any other model as ff.onnx.export writes it (the same
    parameters and shapes)."""
    import onnxruntime as ort

    from ..onnx import export

    inputs = p.x if isinstance(p.x, tuple) else (p.x,)
    proto = getattr(p.workload.model, "proto", None) or export(p.workload.model, p.params, *inputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = p.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Its workers otherwise spin between runs, taking the cores from whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
    (output,) = [o.name for o in session.get_outputs()][:1]
    return Runner(lambda: session.run([output], feeds)[0], lambda: MLPSpec.layers(p.params))


# ----------------------------------------------------------------- the BLAS-bound floor


def gemm_shapes(p: Problem) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of the step: forward x@w per layer; backward
    dz.T-contractions for dw and dz@w.T for the input of every layer but the first."""
    MLPSpec.of(p.workload)  # raises Unsupported for a non-MLP workload
    sizes = [w.shape for w, _ in MLPSpec.layers(p.params)]
    batch = p.x.shape[0]
    shapes = [(batch, k, n) for k, n in sizes]
    if p.mode == "train":
        shapes += [(k, batch, n) for k, n in sizes]
        shapes += [(batch, n, k) for k, n in sizes[1:]]
    return shapes


def blas_floor(p: Problem) -> Runner:
    """The step's GEMMs alone, each numpy.matmul at its shape into a preallocated result."""
    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32),
                 np.empty((m, n), np.float32)) for m, k, n in gemm_shapes(p)]

    def run():
        for a, b, out in operands:
            np.matmul(a, b, out=out)

    return Runner(run, list)


BLAS_FLOOR = Contender("BLAS floor", blas_floor)

_NOT_TRACED = "n/a: {} allocates outside Python's allocator, invisible to tracemalloc"

# Reference first: the harness compares every contender's result to the reference's.
CONTENDERS: list[Contender] = [
    Contender("ffcompile-llvm", ffcompile_backend("llvm")),
    Contender("ffcompile-bound", ffcompile_bound),
    Contender("ffcompile-numpy", ffcompile_backend("numpy")),
    Contender("numpy-hand", numpy_hand),
    Contender("torch-eager", torch_mode(compiled=False), ("torch",), _NOT_TRACED.format("torch")),
    Contender("torch.compile", torch_mode(compiled=True), ("torch",), _NOT_TRACED.format("torch")),
    Contender("jax-jit", jax_jit, ("jax",), _NOT_TRACED.format("XLA")),
    Contender("onnxruntime", onnxruntime_infer, ("onnxruntime", "onnx"), _NOT_TRACED.format("onnxruntime"),
              ("infer",)),
]

# The default reference: the first of these that ran in a cell.
REFERENCES = ("ffcompile-llvm", "ffcompile-numpy")
