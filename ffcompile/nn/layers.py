"""Layers: Linear, Dense (Linear + activation), Sequential, and the mlp helper."""
from __future__ import annotations

from typing import Callable

from . import init as initializers
from .module import Module, Param


class Linear(Module):
    """y = x @ w + b, with w of shape (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init="glorot_uniform", bias_init="zeros"):
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.init_w = initializers.get(init)
        self.init_b = initializers.get(bias_init)

    def param_specs(self):
        specs = {"w": Param((self.in_features, self.out_features), self.init_w)}
        if self.bias:
            specs["b"] = Param((self.out_features,), self.init_b)
        return specs

    def forward(self, params, x):
        y = x @ params["w"]
        return y + params["b"] if self.bias else y

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias})"


class Dense(Module):
    """A Linear layer followed by an activation module (paths `linear` and `act`)."""

    def __init__(self, in_features: int, out_features: int, activation: Module | None = None,
                 init="glorot_uniform"):
        self.linear = Linear(in_features, out_features, init=init)
        self.act = activation

    def forward(self, params, x):
        x = self.linear(params["linear"], x)
        return x if self.act is None else self.act(params["act"], x)


class Sequential(Module):
    """Modules applied in order; module i has path `layers.i`, params `params["layers"][i]`."""

    def __init__(self, *modules: Module):
        if not modules:
            raise ValueError("Sequential needs at least one module")
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
        self.layers = list(modules)

    def forward(self, params, x):
        for layer, layer_params in zip(self.layers, params["layers"], strict=True):
            x = layer(layer_params, x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]


def mlp(sizes: list[int], activation: Callable[[], Module], output_activation: Callable[[], Module] | None = None,
        init="glorot_uniform") -> Sequential:
    """A Sequential of Dense layers: sizes [in, h1, ..., out], `activation()` after every
    hidden layer (a fresh module each, so learnable activations are not shared) and
    `output_activation()` (if given) after the last."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {sizes}")
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        make = output_activation if last else activation
        layers.append(Dense(n_in, n_out, make() if make is not None else None, init=init))
    return Sequential(*layers)
