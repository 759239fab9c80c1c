"""A whole training step — forward, loss, backward, optimizer update — as one program.

`compile_train_step(loss_fn, optimizer)` traces

    step(params, opt_state, hyperparameters, *batch) -> (loss, new_params, new_opt_state)

into one graph and compiles it. `hyperparameters` holds the optimizer's scalars
for this step (`optimizer.hyperparameters(count)`: a dict of 0-d arrays in the
parameters' dtype, converted on the host, named like `hyperparameters.lr`): the step
fills it from the optimizer object at every call, so changing a hyperparameter or
following a schedule never recompiles. One 0-d array each, in the parameters'
dtype, so the update kernels read them as they are: sliced from one float64 array
and converted in the program, they took four scalar kernels of their own (SGD),
where an argument leaf costs the ordinary call ~0.03 us (fastcall.py).
Any object with `init(params)` and `update(grads, state, params)` is an
optimizer too; one without `hyperparameters` (not an ff.optim.Optimizer) gets
None for them and is traced with its values fixed. Calling the step returns the loss and writes
the new parameters and optimizer state over the caller's arrays (they are
donated): training code keeps its references. Where the schedule reads an
old value before it writes the new one (the usual case: an update is the last
use of its parameter), the program writes straight into the caller's array;
elsewhere the new value is copied back.
"""
from __future__ import annotations

import inspect

import numpy as np

from .api import USER_ERRORS, CompiledFunction
from .codegen.arguments import overlapping_arguments
from .distributed import DataParallel
from .ir import Role
from .ir.lang import Value, convert
from .runtime import ArgumentError, BoundCall
from .symbolic_batch import BatchSpec
from .trace import scope, user_traceback
from .transforms import value_and_grad
from .tree import tree_flatten, tree_paths


class TrainStep:
    def __init__(self, loss_fn, optimizer, backend=None, data_parallel=None, **compile_options):
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        grad_fn = value_and_grad(loss_fn, argnums=0)
        # gradients averaged over the ranks by all_reduce ops in the program (distributed/)
        self.data_parallel = data_parallel if data_parallel is None or isinstance(data_parallel, DataParallel) \
            else DataParallel(data_parallel)

        def train_step(params, opt_state, hyperparameters, *batch):
            loss, grads = grad_fn(params, *batch)
            if self.data_parallel is not None:
                grads = self.data_parallel.reduce(grads)
            with scope(loss, "optim"), loss.builder.playing(Role.UPDATE):  # dumps show it as @optim
                if hyperparameters is None:
                    new_params, new_state = optimizer.update(grads, opt_state, params)
                else:
                    dtype = tree_flatten(params)[0][0].dtype
                    scalars = {name: h if h.dtype == dtype else convert(h, dtype)
                               for name, h in hyperparameters.items()}
                    new_params, new_state = optimizer.update(grads, opt_state, params, scalars)
            return loss, new_params, new_state

        train_step.__signature__ = _step_signature(loss_fn)
        batch_dim, max_batch = compile_options.pop("batch_dim", None), compile_options.pop("max_batch", None)
        if batch_dim is not None:  # of the batch arguments: params, opt_state, hyperparameters have none
            batch_dim = BatchSpec(batch_dim, max_batch, first=3)
        self._compiled = CompiledFunction(train_step, backend, donate=_donate_state, batch_dim=batch_dim,
                                          max_batch=max_batch, **compile_options)
        self._last_hyperparameters = None  # ((optimizer.version, dtype), arrays): reused until it changes
        self._dtype = None  # of the parameters, as the last call had them
        self._live = hasattr(optimizer, "hyperparameters")  # else an init/update object, values fixed
        self._state = (None, 0)  # (in_tree, leaves of params and opt_state in it), the last one asked

    @property
    def compiled(self) -> CompiledFunction:
        """The step as a compiled function of (params, opt_state, hyperparameters, *batch)."""
        return self._compiled

    def init(self, params):
        """The optimizer's initial state for params (NumPy arrays)."""
        return self.optimizer.init(params)

    def hyperparameters(self, opt_state, params=None) -> dict[str, np.ndarray] | None:
        """The optimizer's scalars for the step after opt_state, as the program's input: a
        0-d array each, in the dtype of params' first leaf (without params: of the last
        call's; float64 before any), the same arrays again while nothing changed them."""
        if not self._live:
            return None
        count = opt_state.get("count") if isinstance(opt_state, dict) else None
        if isinstance(count, Value):
            raise ArgumentError("a compiled training step runs on arrays, not on traced values")
        if count is None:
            self.optimizer.check_state(opt_state)  # a ValueError naming what is missing
            raise ArgumentError("opt_state has no 'count' (the step counter): make it with step.init(params)")
        if params is not None:
            self._dtype = _dtype_of(params)
        optimizer, last = self.optimizer, self._last_hyperparameters
        dtype = np.dtype(np.float64) if self._dtype is None else self._dtype  # (a dtype is falsy)
        if last is not None and last[0] == (optimizer.version, dtype) and not optimizer.scheduled:
            return last[1]
        arrays = {name: np.array(value, dtype) for name, value in optimizer.hyperparameters(int(count)).items()}
        self._last_hyperparameters = ((optimizer.version, dtype), arrays)
        return arrays

    def lower(self, params, opt_state, *batch):
        return self._compiled.lower(params, opt_state, self.hyperparameters(opt_state, params), *batch)

    def profile(self, params, opt_state, *batch, steps: int = 100):
        """The time of each kernel of the step's native code (ffcompile/profile.py), with
        parameters and state donated as in a call (run on copies: the arrays are untouched)."""
        hyperparameters = self.hyperparameters(opt_state, params)
        return self.lower(params, opt_state, *batch).profile(params, opt_state, hyperparameters, *batch,
                                                              steps=steps)

    def __call__(self, params, opt_state, *batch):
        args = (params, opt_state, self.hyperparameters(opt_state), *batch)
        # the fast path runs the program at once: a data-parallel step first checks that every
        # rank runs the same one (before its collectives), so it takes the checked path
        hit = None if self.data_parallel is not None else self._compiled.run_fast(args)
        if hit is not None:
            leaves, results, _, in_tree = hit
            state = self._state_of(in_tree)
        else:  # the hyperparameters in these params' dtype (the fast path assumed the last call's)
            args = (params, opt_state, self.hyperparameters(opt_state, params), *batch)
            leaves, results, state = self._checked_call(args, params, opt_state)
        # Results are (loss, new params, new state), flattened like (params, opt_state);
        # the program wrote the donated ones over the old arrays already.
        for old, new in zip(leaves[:state], results[1:1 + state]):
            if new is not old:
                np.copyto(old, new)
        return results[0]

    def _state_of(self, in_tree) -> int:
        """_state_leaves(in_tree), remembered for the last structure (the fast path's)."""
        tree, count = self._state
        if tree is not in_tree:
            count = _state_leaves(in_tree)
            self._state = (in_tree, count)
        return count

    def _checked_call(self, args, params, opt_state):
        """(leaves, results, state leaves) of a call through the full path: compiled on a new
        signature, arguments checked, converted or refused with the path of the bad one."""
        try:
            prepared = self._compiled.prepare(args)
        except USER_ERRORS as exc:
            raise user_traceback(exc) from None
        if prepared is None:
            raise ArgumentError("a compiled training step runs on arrays, not on traced values")
        executable, in_tree, leaves, run = prepared
        if self.data_parallel is not None:
            self.data_parallel.agree(executable, lambda: self._compiled.lower(*args))
        state = self._state_of(in_tree)
        # carray: C-contiguous, writeable (and aligned), read in one flags lookup
        if not all(isinstance(a, np.ndarray) and a.flags.carray for a in leaves[:state]):
            _check_donatable(params, "params")
            _check_donatable(opt_state, "opt_state")
        _check_unshared(leaves[:state], params, opt_state)
        return leaves, run(leaves), state

    def bind(self, params, opt_state, *batch) -> BoundCall:
        """`bound = step.bind(params, opt_state, *batch)`; `bound()` runs one training step
        over these very arrays, checked once here as a call checks them: params and
        opt_state are updated in place, the batch is read from its arrays (refill them in
        place between calls: `x[...] = next_x`), and the loss comes back in the same 0-d
        array every call, overwritten by the next. The optimizer's hyperparameters are
        read from it at every call, as a call reads them. Never resize or replace a bound
        array (the bound object references them all, so `resize` raises); see docs/bind.md."""
        hyperparameters = self.hyperparameters(opt_state, params)
        if hyperparameters is not None:
            hyperparameters = {name: h.copy() for name, h in hyperparameters.items()}  # the refresh writes them
        try:
            executable, in_tree, leaves, _ = self._compiled.prepare_arrays(
                (params, opt_state, hyperparameters, *batch))
        except USER_ERRORS as exc:
            raise user_traceback(exc) from None
        _check_donatable(params, "params")
        _check_donatable(opt_state, "opt_state")
        state = _state_leaves(in_tree)
        _check_unshared(leaves[:state], params, opt_state)
        if self.data_parallel is not None:
            self.data_parallel.agree(executable, lambda: self.lower(params, opt_state, *batch))
        binding, given = executable.bind_flat(leaves)
        # New state the program could not write over the old arrays is copied there, as __call__ does.
        after = [(old, new) for old, new in zip(given[:state], binding.results[1:1 + state]) if new is not old]
        return BoundCall(binding, given, binding.results[0], after, self._refresher(hyperparameters, opt_state),
                         executable.bound_checks(binding.results)[1])

    def _refresher(self, hyperparameters: dict[str, np.ndarray] | None, opt_state):
        """What a bound step runs before each call: rewrites its hyperparameters' arrays
        when the optimizer has a schedule or a hyperparameter was set since."""
        if hyperparameters is None:
            return None
        optimizer, count = self.optimizer, opt_state["count"]
        seen = [optimizer.version]

        def refresh():
            if optimizer.scheduled or optimizer.version != seen[0]:
                for name, value in optimizer.hyperparameters(int(count)).items():
                    hyperparameters[name][()] = value
                seen[0] = optimizer.version

        return refresh


def _dtype_of(params) -> np.dtype:
    """The parameters' dtype (their first leaf's), which the update computes in."""
    leaves = tree_flatten(params)[0]
    return np.asarray(leaves[0]).dtype if leaves else np.dtype(np.float64)


def _state_leaves(in_tree) -> int:
    """How many leaves params and opt_state have: the first arguments, and results 1..n."""
    return in_tree.children[0].num_leaves + in_tree.children[1].num_leaves


def _donate_state(in_tree) -> dict[int, int]:
    """New params and optimizer state (results 1..n) go over the old ones (arguments 0..n-1)."""
    return {1 + i: i for i in range(_state_leaves(in_tree))}


def _step_signature(loss_fn) -> inspect.Signature:
    """(params, opt_state, hyperparameters, <loss_fn's batch parameters>): names the graph's inputs."""
    P = inspect.Parameter
    batch = []
    try:
        batch = [P(p.name, P.POSITIONAL_OR_KEYWORD)
                 for p in list(inspect.signature(loss_fn).parameters.values())[1:]
                 if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        pass
    return inspect.Signature([P("params", P.POSITIONAL_OR_KEYWORD),
                              P("opt_state", P.POSITIONAL_OR_KEYWORD),
                              P("hyperparameters", P.POSITIONAL_OR_KEYWORD), *batch])


def _check_donatable(tree, name: str) -> None:
    for leaf, path in zip(tree_flatten(tree)[0], tree_paths(tree, name)):
        if not isinstance(leaf, np.ndarray) or not leaf.flags.c_contiguous or not leaf.flags.writeable:
            raise ArgumentError(
                f"{path}: a training step updates its state in place, so it must be a writeable "
                f"C-contiguous numpy array, got {type(leaf).__name__}"
                + (f" with flags c_contiguous={leaf.flags.c_contiguous}, writeable={leaf.flags.writeable}"
                   if isinstance(leaf, np.ndarray) else ""))


def _check_unshared(state: list[np.ndarray], params, opt_state) -> None:
    """Refuse params and optimizer state that share memory (say the same array passed as two
    parameters, meant as tied weights): the step writes each one's update in place, so the
    shared memory would hold whichever was written last. Tied weights are one parameter used
    twice in the loss. The arrays are C-contiguous here, so address ranges tell overlap."""
    shared = overlapping_arguments(state)
    if shared:
        paths = tree_paths(params, "params") + tree_paths(opt_state, "opt_state")
        names = ", ".join(paths[k] for k in sorted(shared))
        raise ArgumentError(f"{names} share memory: a training step updates each parameter and optimizer state "
                            f"array in place, so each needs its own (pass a copy; for tied weights, use one "
                            f"parameter twice in the loss)")


def compile_train_step(loss_fn, optimizer, backend=None, data_parallel=None, **compile_options) -> TrainStep:
    """Compile loss_fn(params, *batch) with optimizer into one in-place training step.
    data_parallel: an mpi4py communicator (True: COMM_WORLD) or a distributed.DataParallel;
    each rank then passes its shard of the batch, and the step averages the gradients over
    the ranks before the update (docs/distributed.md). The loss returned is this rank's.
    batch_dim= (an axis, or one per batch argument) and max_batch=: one trace for every
    batch size (docs/symbolic_batch.md)."""
    return TrainStep(loss_fn, optimizer, backend, data_parallel, **compile_options)
