"""Dropout: zero each activation with probability p in training, scale the rest by 1/(1-p).

Training is switched on by the model call, not by the module: `model(params, x,
key=key)` trains (each Dropout call draws its mask from the key folded with its call's
ordinal), `model(params, x)` or `train=False` evaluates, where dropout is the identity
(inverted dropout: the expected activation is the same in both, so evaluation needs no
rescaling). In a compiled training step the key is an argument, so a fresh key every
step reuses the same program.
"""
from __future__ import annotations

from .. import random
from ..ir import lang as L
from .module import Module, random_context


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, params, x):
        context = random_context()
        if context is None or not context.train or self.p == 0.0:
            return x
        key = context.next_key("Dropout")
        if self.p == 1.0:
            return x * 0.0
        keep = random.bernoulli(key, 1.0 - self.p, x.shape)
        return L.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
