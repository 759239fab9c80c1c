"""Parameter initializers: (rng, shape, dtype) -> ndarray, seeded by the caller's Generator.

Weights are laid out (in_features, out_features), so fan_in is the product of
all axes but the last and fan_out is the last axis. He (Kaiming) scales for
ReLU-family layers, Glorot (Xavier) for tanh/sigmoid layers. Normals are
plain (untruncated) normals, as PyTorch's `kaiming_normal_`/`xavier_normal_`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, tuple, np.dtype], np.ndarray]


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter of this shape."""
    shape = tuple(shape)
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    return math.prod(shape[:-1]), shape[-1]


def _normal(rng, shape, dtype, std):
    return (rng.standard_normal(shape) * std).astype(dtype)


def _uniform(rng, shape, dtype, limit):
    return rng.uniform(-limit, limit, shape).astype(dtype)


def he_normal(rng, shape, dtype=np.float32):
    """N(0, 2/fan_in): keeps activation variance constant through ReLU layers."""
    return _normal(rng, shape, dtype, math.sqrt(2.0 / fans(shape)[0]))


def he_uniform(rng, shape, dtype=np.float32):
    """U(-sqrt(6/fan_in), sqrt(6/fan_in)): the same variance as he_normal."""
    return _uniform(rng, shape, dtype, math.sqrt(6.0 / fans(shape)[0]))


def glorot_normal(rng, shape, dtype=np.float32):
    """N(0, 2/(fan_in + fan_out)): balances forward and backward variance."""
    fan_in, fan_out = fans(shape)
    return _normal(rng, shape, dtype, math.sqrt(2.0 / (fan_in + fan_out)))


def glorot_uniform(rng, shape, dtype=np.float32):
    """U(-sqrt(6/(fan_in + fan_out)), +sqrt(...)): the same variance as glorot_normal."""
    fan_in, fan_out = fans(shape)
    return _uniform(rng, shape, dtype, math.sqrt(6.0 / (fan_in + fan_out)))


def normal(rng, shape, dtype=np.float32):
    """N(0, 1), as torch.nn.Embedding's weight."""
    return _normal(rng, shape, dtype, 1.0)


def zeros(rng, shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def constant(value: float) -> Initializer:
    """An initializer filling every entry with `value` (e.g. PReLU's slope 0.25)."""

    def init(rng, shape, dtype=np.float32):
        return np.full(shape, value, dtype)

    init.__name__ = f"constant({value})"
    return init


kaiming_normal, kaiming_uniform = he_normal, he_uniform
xavier_normal, xavier_uniform = glorot_normal, glorot_uniform

BY_NAME: dict[str, Initializer] = {
    "he_normal": he_normal, "he_uniform": he_uniform,
    "kaiming_normal": kaiming_normal, "kaiming_uniform": kaiming_uniform,
    "glorot_normal": glorot_normal, "glorot_uniform": glorot_uniform,
    "xavier_normal": xavier_normal, "xavier_uniform": xavier_uniform,
    "normal": normal, "zeros": zeros,
}


def get(init: str | Initializer) -> Initializer:
    """An initializer given by name or as a function."""
    if callable(init):
        return init
    if init not in BY_NAME:
        raise ValueError(f"unknown initializer {init!r}; choose one of {sorted(BY_NAME)} or pass a function")
    return BY_NAME[init]
