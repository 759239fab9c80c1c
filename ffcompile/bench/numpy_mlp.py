"""A zoo MLP as plain data, and its hand-written NumPy backprop.

`MLPSpec.of(workload)` reads a zoo workload's Sequential of Dense layers and
its criterion into what the peer contenders (hand NumPy, PyTorch, JAX) need
to rebuild the same computation: per layer (w, b) and an activation name, and
the loss name. Workloads that are not such an MLP raise `Unsupported`.

`NumpyMLP` is the baseline a careful user writes by hand: forward keeping the
activations, backward by the chain rule, SGD in place, float32 throughout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn

GELU_C = math.sqrt(2.0 / math.pi)
GELU_K = 0.044715


class Unsupported(Exception):
    """The workload is not a plain MLP the peer contenders can rebuild."""


def _activation_name(act) -> str:
    if act is None:
        return "identity"
    if isinstance(act, nn.GELU) and act.approximate == "tanh":
        return "gelu_tanh"
    names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
    if type(act) not in names:
        raise Unsupported(f"activation {act!r} has no peer implementation")
    return names[type(act)]


@dataclass(frozen=True)
class MLPSpec:
    activations: tuple[str, ...]  # one per layer, the output layer's last
    loss: str  # "mse" (0.5·sum over features, mean over batch) or "cross_entropy" (mean)

    @staticmethod
    def of(workload) -> MLPSpec:
        model = workload.model
        if not isinstance(model, nn.Sequential) or not all(isinstance(l, nn.Dense) for l in model.layers):
            raise Unsupported(f"{workload.name} is not a Sequential of Dense layers")
        losses = {nn.mse: "mse", nn.cross_entropy: "cross_entropy"}
        criterion = getattr(workload, "criterion", None)
        if criterion is None:  # a model file: its loss(params, x, y) is opaque to the peers
            raise Unsupported(f"{workload.name} names no criterion (nn.mse or nn.cross_entropy) "
                              "the peers can rebuild")
        if criterion not in losses:
            raise Unsupported(f"{workload.name}: loss {criterion!r} has no peer implementation")
        return MLPSpec(tuple(_activation_name(l.act) for l in model.layers), losses[criterion])

    @staticmethod
    def layers(params) -> list[tuple[np.ndarray, np.ndarray]]:
        """The (w, b) pairs of a zoo MLP's parameter tree, input layer first."""
        return [(layer["linear"]["w"], layer["linear"]["b"]) for layer in params["layers"]]


# ----------------------------------------------------------------- elementwise pieces, float32


def activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + GELU_K * z * z * z)))
    return z


def activation_vjp(name: str, z: np.ndarray, a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The cotangent of the pre-activation z, given a = act(z) and the cotangent g of a."""
    if name == "relu":
        return g * (z > 0.0)
    if name == "tanh":
        return g * (1.0 - a * a)
    if name == "sigmoid":
        return g * a * (1.0 - a)
    if name == "gelu_tanh":
        t = np.tanh(GELU_C * (z + GELU_K * z * z * z))
        dt = (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_K * z * z)
        return g * (0.5 * (1.0 + t) + 0.5 * z * dt)
    return g


def loss_and_grad(name: str, out: np.ndarray, y: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """The batch loss and its cotangent with respect to the network's output."""
    n = out.shape[0]
    if name == "mse":
        d = out - y
        return 0.5 * np.sum(d * d) / n, d * np.float32(1.0 / n)
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, y])
    grad = e / total
    grad[rows, y] -= 1.0
    grad *= np.float32(1.0 / n)
    return loss, grad


# ----------------------------------------------------------------- the network


class NumpyMLP:
    """Owns a copy of the parameters; `train_step` updates them in place."""

    def __init__(self, spec: MLPSpec, params, lr: float):
        self.spec = spec
        self.layers = [(w.copy(), b.copy()) for w, b in MLPSpec.layers(params)]
        self.lr = np.float32(lr)

    def load(self, params) -> None:
        """Overwrite the parameters in place with those of a zoo parameter tree."""
        for (w, b), (w0, b0) in zip(self.layers, MLPSpec.layers(params), strict=True):
            np.copyto(w, w0)
            np.copyto(b, b0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for (w, b), act in zip(self.layers, self.spec.activations):
            x = activate(act, x @ w + b)
        return x

    def train_step(self, x: np.ndarray, y: np.ndarray) -> np.float32:
        inputs, pre, post = [], [], []
        h = x
        for (w, b), act in zip(self.layers, self.spec.activations):
            inputs.append(h)
            z = h @ w + b
            h = activate(act, z)
            pre.append(z)
            post.append(h)
        loss, g = loss_and_grad(self.spec.loss, h, y)
        for i in reversed(range(len(self.layers))):
            w, b = self.layers[i]
            dz = activation_vjp(self.spec.activations[i], pre[i], post[i], g)
            if i:  # the input needs no cotangent
                g = dz @ w.T
            w -= self.lr * (inputs[i].T @ dz)
            b -= self.lr * dz.sum(axis=0)
        return loss
