"""LayerNorm (Ba et al. 2016), composed of existing ops: autodiff, fusion and both
backends need nothing new for it."""
from __future__ import annotations

from .. import functions as F
from . import init as initializers
from .module import Module, Param


class LayerNorm(Module):
    """(x - mean) / sqrt(var + eps) · weight + bias over the last len(normalized_shape)
    axes (var biased, as torch.nn.LayerNorm); weight starts at ones and bias at zeros."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive integers, got {normalized_shape!r}")
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be > 0, got {eps!r}")
        self.normalized_shape, self.eps, self.elementwise_affine = shape, float(eps), bool(elementwise_affine)

    def param_specs(self):
        if not self.elementwise_affine:
            return {}
        return {"weight": Param(self.normalized_shape, initializers.constant(1.0)),
                "bias": Param(self.normalized_shape, initializers.zeros)}

    def forward(self, params, x):
        n = len(self.normalized_shape)
        if tuple(x.shape[-n:]) != self.normalized_shape:
            raise ValueError(f"{self!r}: the input's last axes must be {self.normalized_shape}, "
                             f"got an input of shape {tuple(x.shape)}")
        axes = tuple(range(len(x.shape) - n, len(x.shape)))
        centered = x - F.mean(x, axes, keepdims=True)
        y = centered / F.sqrt(F.mean(centered * centered, axes, keepdims=True) + self.eps)
        return y * params["weight"] + params["bias"] if self.elementwise_affine else y

    def __repr__(self) -> str:
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")
