"""Embedding: a table of vectors looked up by integer ids, as torch.nn.Embedding."""
from __future__ import annotations

from .. import functions as F
from . import init as initializers
from .module import Module, Param


class Embedding(Module):
    """weight[ids] for integer ids of any shape (the output adds an axis of size `dim`);
    weight starts N(0, 1) as in torch. The lookup is `ff.take`, so the weight's gradient
    is a scatter-add of the output's cotangent rows."""

    def __init__(self, num_embeddings: int, dim: int):
        if not (isinstance(num_embeddings, int) and num_embeddings >= 1 and isinstance(dim, int) and dim >= 1):
            raise ValueError(f"Embedding: num_embeddings and dim must be positive integers, got "
                             f"{num_embeddings!r} and {dim!r}")
        self.num_embeddings, self.dim = num_embeddings, dim

    def param_specs(self):
        return {"weight": Param((self.num_embeddings, self.dim), initializers.normal)}

    def forward(self, params, ids):
        return F.take(params["weight"], ids, axis=0)

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.dim})"
