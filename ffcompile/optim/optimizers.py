"""Optimizers whose hyperparameters are runtime values of the compiled step.

An optimizer holds its hyperparameters as attributes, each a number or a
schedule (`ff.optim.schedules`), and they may change at any time: after
`opt.lr = 1e-4` the next step uses 1e-4, without recompiling. Every step,
`hyperparameters(count)` evaluates them on the host (float64) into the scalars
the update formula reads, and `compile_train_step` passes those as inputs of
the compiled program (its `hyperparameters` argument: 0-d arrays in the parameters' dtype).
They depend on count only through schedules (Adam's bias correction is
computed from the state's count inside the update), so a step whose optimizer
has no schedule and no changed attribute (`version`) reuses the last ones.

    init(params) -> state
    update(grads, state, params, hyperparameters=None) -> (new_params, new_state)

`update` is one formula for traced values and NumPy arrays: inside a compiled
step it emits IR; called on arrays it runs eagerly in NumPy and returns new
arrays (hyperparameters default to `hyperparameters(state["count"])`).

The state is a pytree of NumPy arrays (dicts; "params" below stands for a tree
shaped like the parameters, with arrays of their shapes and dtypes):

    SGD   {"count": int64[]}, plus "velocity": params when built with momentum
    Adam  {"count": int64[], "m": params, "v": params}  (first and second moments)

`count` is the number of updates done so far: schedules read it (the first
step is count 0) and Adam's bias correction uses t = count + 1.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.lang import Value
from ..ir.lang import convert
from ..ir.lang import exp as traced_exp
from ..ir.lang import sqrt as traced_sqrt
from ..tree import tree_flatten, tree_map, tree_unflatten
from .schedules import Value as Hyperparameter


def _non_negative(v):
    return v >= 0


def _positive(v):
    return v > 0


def _decay_rate(v):
    return 0 <= v < 1


_NEEDS = {_non_negative: ">= 0", _positive: "> 0", _decay_rate: "in [0, 1)"}


class Optimizer:
    """Base of the optimizers: hyperparameters (checked when set, and a schedule's
    values when evaluated), the step count, eager and traced updates alike."""

    limits: dict = {}  # hyperparameter name -> predicate its values must satisfy
    version = 0  # bumped whenever a hyperparameter is set
    scheduled = False  # whether some hyperparameter is a schedule

    def __setattr__(self, name, value):
        if name in self.limits:
            if not callable(value):
                self._check(name, value, name)
            object.__setattr__(self, name, value)
            object.__setattr__(self, "version", self.version + 1)
            object.__setattr__(self, "scheduled", any(callable(getattr(self, n, None)) for n in self.limits))
            return
        object.__setattr__(self, name, value)

    def _check(self, name: str, value, what: str) -> float:
        ok = self.limits[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not ok(float(value)):
            raise ValueError(f"{type(self).__name__}: {what} must be a number {_NEEDS[ok]} "
                             f"or a schedule, got {value!r}")
        return float(value)

    def value(self, name: str, count: int) -> float:
        """Hyperparameter `name` at step count (a schedule evaluated and checked)."""
        v = getattr(self, name)
        return self._check(name, v(count), f"{name} (its schedule at step {count})") if callable(v) else v

    def hyperparameters(self, count: int) -> dict[str, float]:
        """The scalars the update formula reads at step count."""
        raise NotImplementedError

    def init(self, params) -> dict:
        raise NotImplementedError

    def state_entries(self) -> dict[str, bool]:
        """The state's entries: name -> True if it holds one array per parameter."""
        raise NotImplementedError

    def update(self, grads, state, params, hyperparameters=None):
        """(new_params, new_state): traced inside a compiled step, eager on arrays."""
        self.check_state(state, tree_flatten(params)[1])
        if hyperparameters is None:
            if isinstance(state["count"], Value):
                raise TypeError(
                    f"{type(self).__name__}.update inside a trace needs hyperparameters= "
                    f"(opt.hyperparameters(count), passed as an argument of the compiled function; "
                    f"compile_train_step does this)")
            hyperparameters = self.hyperparameters(int(state["count"]))
        p, tree = tree_flatten(params)
        new_p, new_state = self._update(tree_flatten(grads)[0], state, p, hyperparameters, tree)
        new_state["count"] = _next(state["count"])
        return tree_unflatten(tree, new_p), new_state

    def _update(self, g, state, p, h, tree):
        raise NotImplementedError

    def check_state(self, state, params_tree=None) -> None:
        """A ValueError naming what is missing or misshapen (the per-parameter entries'
        structure too, given the parameters'): a hand-made or stale state would otherwise
        fail deep in tracing with a bare KeyError."""
        name, like = type(self).__name__, self.state_entries()
        fix = f"make it with {name}'s init(params) (step.init(params) for a training step)"
        if not isinstance(state, dict):
            raise ValueError(f"{name}: opt_state must be a dict with keys {sorted(like)}, "
                             f"got {type(state).__name__}; {fix}")
        missing = sorted(set(like) - set(state))
        if missing:
            raise ValueError(f"{name}: opt_state is missing {', '.join(map(repr, missing))} "
                             f"(it has {sorted(state) or 'no keys'}); {fix}")
        for entry, per_parameter in like.items():
            if per_parameter and params_tree is not None and tree_flatten(state[entry])[1] != params_tree:
                raise ValueError(f"{name}: opt_state[{entry!r}] must have the structure of the "
                                 f"parameters (one array per parameter); {fix}")


def _next(count):
    return count + 1 if isinstance(count, Value) else np.array(count + 1, np.int64)


def _sqrt(x):
    if isinstance(x, Value):
        return traced_sqrt(x)
    return math.sqrt(x) if isinstance(x, float) else np.sqrt(x)  # a Python float stays weakly typed


def _power(log_base, count, like):
    """base^(count + 1) as exp((count + 1)·log base), a scalar of like's dtype (a Python
    float on the host, so NumPy keeps the parameters' dtype)."""
    if isinstance(count, Value):
        return traced_exp(convert(count + 1, like.dtype) * log_base)
    return math.exp((int(count) + 1) * log_base)


def _zeros_like(params):
    return tree_map(lambda p: np.zeros_like(np.asarray(p)), params)


def _count():
    return np.zeros((), np.int64)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 decay.

    g <- g + weight_decay·p; with momentum m: v <- m·v + g, and the step is v
    (g + m·v for Nesterov): p <- p - lr·step, as in PyTorch's SGD."""

    limits = {"lr": _non_negative, "momentum": _non_negative, "weight_decay": _non_negative}

    def __init__(self, lr: Hyperparameter, momentum: Hyperparameter = 0.0, nesterov: bool = False,
                 weight_decay: Hyperparameter = 0.0):
        # Whether there is a velocity is the state's structure, fixed here; its value is not.
        object.__setattr__(self, "_velocity", callable(momentum) or momentum != 0)
        if nesterov and not self._velocity:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        object.__setattr__(self, "_nesterov", bool(nesterov))
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    @property
    def nesterov(self) -> bool:
        return self._nesterov

    def __setattr__(self, name, value):
        if name == "momentum" and "_velocity" in vars(self) and not self._velocity and value != 0:
            raise ValueError("SGD: built without momentum, so it has no velocity state: "
                             "build SGD(lr, momentum=...) to train with momentum")
        super().__setattr__(name, value)

    def hyperparameters(self, count):
        h = {"lr": self.value("lr", count), "weight_decay": self.value("weight_decay", count)}
        if self._velocity:
            h["momentum"] = self.value("momentum", count)
        return h

    def init(self, params):
        return {"count": _count(), "velocity": _zeros_like(params)} if self._velocity else {"count": _count()}

    def state_entries(self) -> dict[str, bool]:
        return {"count": False, "velocity": True} if self._velocity else {"count": False}

    def _update(self, g, state, p, h, tree):
        lr, wd = h["lr"], h["weight_decay"]
        if not self._velocity:  # p (1 - lr wd) - lr g: a GEMM's alpha and beta (codegen/llvm/accumulate.py)
            keep = 1.0 - lr * wd
            return [pi * keep - lr * gi for pi, gi in zip(p, g)], {}
        g = [gi + wd * pi for gi, pi in zip(g, p)]
        m = h["momentum"]
        velocity = [m * v + gi for v, gi in zip(tree_flatten(state["velocity"])[0], g)]
        steps = [gi + m * v for gi, v in zip(g, velocity)] if self._nesterov else velocity
        return [pi - lr * s for pi, s in zip(p, steps)], {"velocity": tree_unflatten(tree, velocity)}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, in PyTorch's formulation; weight_decay > 0
    gives AdamW (decoupled: p <- p·(1 - lr·weight_decay), Loshchilov & Hutter), or L2
    added to the gradient with decoupled=False (torch.optim.Adam's weight_decay)."""

    limits = {"lr": _non_negative, "b1": _decay_rate, "b2": _decay_rate, "eps": _positive,
              "weight_decay": _non_negative}

    def __init__(self, lr: Hyperparameter = 1e-3, b1: Hyperparameter = 0.9, b2: Hyperparameter = 0.999,
                 eps: Hyperparameter = 1e-8, weight_decay: Hyperparameter = 0.0, decoupled: bool = True):
        self.lr, self.b1, self.b2, self.eps, self.weight_decay = lr, b1, b2, eps, weight_decay
        object.__setattr__(self, "_decoupled", bool(decoupled))

    @property
    def decoupled(self) -> bool:
        return self._decoupled

    def hyperparameters(self, count):
        b1, b2 = self.value("b1", count), self.value("b2", count)
        # log 0 = -inf gives b^t = exp(-inf) = 0: no averaging, no bias correction.
        return {"lr": self.value("lr", count), "b1": b1, "b2": b2, "eps": self.value("eps", count),
                "log_b1": math.log(b1) if b1 else -math.inf, "log_b2": math.log(b2) if b2 else -math.inf,
                "weight_decay": self.value("weight_decay", count)}

    def init(self, params):
        return {"count": _count(), "m": _zeros_like(params), "v": _zeros_like(params)}

    def state_entries(self) -> dict[str, bool]:
        return {"count": False, "m": True, "v": True}

    def _update(self, g, state, p, h, tree):
        lr, b1, b2, wd = h["lr"], h["b1"], h["b2"], h["weight_decay"]
        step_size = lr / (1.0 - _power(h["log_b1"], state["count"], lr))
        sqrt_bias_correction2 = _sqrt(1.0 - _power(h["log_b2"], state["count"], lr))
        if not self._decoupled:
            g = [gi + wd * pi for gi, pi in zip(g, p)]
        new_p, new_m, new_v = [], [], []
        for pi, gi, m, v in zip(p, g, tree_flatten(state["m"])[0], tree_flatten(state["v"])[0]):
            m = b1 * m + (1.0 - b1) * gi
            v = b2 * v + (1.0 - b2) * (gi * gi)
            if self._decoupled:
                pi = pi * (1.0 - lr * wd)
            new_p.append(pi - step_size * (m / (_sqrt(v) / sqrt_bias_correction2 + h["eps"])))
            new_m.append(m)
            new_v.append(v)
        return new_p, {"m": tree_unflatten(tree, new_m), "v": tree_unflatten(tree, new_v)}


def AdamW(lr: Hyperparameter = 1e-3, b1: Hyperparameter = 0.9, b2: Hyperparameter = 0.999,
          eps: Hyperparameter = 1e-8, weight_decay: Hyperparameter = 1e-2) -> Adam:
    """Adam with decoupled weight decay (torch.optim.AdamW's defaults)."""
    return Adam(lr, b1, b2, eps, weight_decay, decoupled=True)
