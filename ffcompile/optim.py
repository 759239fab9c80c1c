"""Optimizers as traced functions, so the update is part of the step's graph.

An optimizer has `init(params) -> state` (NumPy arrays, a pytree) and
`update(grads, state, params) -> (new_params, new_state)`, written in `ff`
operations: compiled together with the loss and its gradient, a whole
training step is one program.
"""
from __future__ import annotations

import math

import numpy as np

from .tree import tree_flatten, tree_map, tree_unflatten


def _zeros_like(params):
    return tree_map(lambda p: np.zeros_like(np.asarray(p)), params)


def _checked_state(optimizer: str, state, like: dict, params_tree) -> list:
    """state's entries named in `like` (name -> True if it holds one leaf per parameter),
    or a ValueError naming what is missing or misshapen: a hand-made or stale state
    would otherwise fail deep in tracing with a bare KeyError."""
    fix = f"make it with {optimizer}'s init(params) (step.init(params) for a training step)"
    if not isinstance(state, dict):
        raise ValueError(f"{optimizer}: opt_state must be a dict with keys {sorted(like)}, "
                         f"got {type(state).__name__}; {fix}")
    missing = sorted(set(like) - set(state))
    if missing:
        raise ValueError(f"{optimizer}: opt_state is missing {', '.join(map(repr, missing))} "
                         f"(it has {sorted(state) or 'no keys'}); {fix}")
    for name, per_parameter in like.items():
        if per_parameter and tree_flatten(state[name])[1] != params_tree:
            raise ValueError(f"{optimizer}: opt_state[{name!r}] must have the structure of the "
                             f"parameters (one array per parameter); {fix}")
    return [state[name] for name in like]


class SGD:
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 decay.

    With momentum m: v <- m·v + g; the step is v (or g + m·v for Nesterov),
    as in PyTorch's SGD."""

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("SGD: lr must be positive, momentum and weight_decay non-negative")
        if nesterov and momentum == 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay

    def init(self, params):
        return {"velocity": _zeros_like(params)} if self.momentum else {}

    def update(self, grads, state, params):
        p_leaves, tree = tree_flatten(params)
        g_leaves = tree_flatten(grads)[0]
        if self.weight_decay:
            g_leaves = [g + self.weight_decay * p for g, p in zip(g_leaves, p_leaves)]
        if not self.momentum:
            new = [p - self.lr * g for p, g in zip(p_leaves, g_leaves)]
            return tree_unflatten(tree, new), state
        (old_velocity,) = _checked_state("SGD", state, {"velocity": True}, tree)
        velocity = [self.momentum * v + g for v, g in zip(tree_flatten(old_velocity)[0], g_leaves)]
        steps = ([g + self.momentum * v for g, v in zip(g_leaves, velocity)]
                 if self.nesterov else velocity)
        new = [p - self.lr * s for p, s in zip(p_leaves, steps)]
        return tree_unflatten(tree, new), {"velocity": tree_unflatten(tree, velocity)}


class Adam:
    """Adam (Kingma & Ba) with bias correction; weight_decay > 0 gives AdamW
    (decoupled decay, Loshchilov & Hutter), or L2 added to the gradient with
    decoupled=False."""

    def __init__(self, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = True):
        if lr <= 0 or not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0 or weight_decay < 0:
            raise ValueError("Adam: needs lr > 0, 0 <= b1, b2 < 1, eps > 0, weight_decay >= 0")
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled

    def init(self, params):
        leaves = tree_flatten(params)[0]
        dtype = np.asarray(leaves[0]).dtype if leaves else np.float32
        return {"m": _zeros_like(params), "v": _zeros_like(params), "t": np.zeros((), dtype)}

    def update(self, grads, state, params):
        from .ir import lang as L

        p_leaves, tree = tree_flatten(params)
        m_tree, v_tree, t = _checked_state("Adam", state, {"m": True, "v": True, "t": False}, tree)
        g_leaves = tree_flatten(grads)[0]
        if self.weight_decay and not self.decoupled:
            g_leaves = [g + self.weight_decay * p for g, p in zip(g_leaves, p_leaves)]
        t = t + 1.0
        # 1 - b^t with t traced: b^t = exp(t·log b).
        correct1 = 1.0 - L.exp(t * math.log(self.b1)) if self.b1 else 1.0
        correct2 = 1.0 - L.exp(t * math.log(self.b2)) if self.b2 else 1.0
        step_size = self.lr * L.sqrt(correct2) / correct1
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(p_leaves, g_leaves, tree_flatten(m_tree)[0], tree_flatten(v_tree)[0]):
            m = self.b1 * m + (1.0 - self.b1) * g
            v = self.b2 * v + (1.0 - self.b2) * (g * g)
            # eps scaled by sqrt(correct2) matches the textbook m̂ / (sqrt(v̂) + eps).
            update = step_size * m / (L.sqrt(v) + self.eps * L.sqrt(correct2))
            if self.weight_decay and self.decoupled:
                update = update + self.lr * self.weight_decay * p
            new_p.append(p - update)
            new_m.append(m)
            new_v.append(v)
        state = {"m": tree_unflatten(tree, new_m), "v": tree_unflatten(tree, new_v), "t": t}
        return tree_unflatten(tree, new_p), state


def AdamW(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2) -> Adam:
    return Adam(lr, b1, b2, eps, weight_decay, decoupled=True)
