"""The workloads ffcompile is measured on, by name.

Each `Workload` gives a model (an nn.Module), a loss criterion, its default
batch size and a synthetic batch maker; `loss(params, x, y)` is what
ff.compile and ff.value_and_grad trace. All parameters and inputs are float32;
class labels are int32.

    w = zoo.get("mnist")
    params, x, y = w.example_inputs()
    value, grads = ff.compile(ff.value_and_grad(w.loss))(params, x, y)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import functions as F
from . import nn
from .ir import TensorType
from .tree import tree_map

Batch = tuple  # (x, y): x an array, or a tuple of arrays for a model with several inputs


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    model: nn.Module
    criterion: Callable  # (model outputs, y) -> scalar loss
    batch_size: int
    sample: Callable[[np.random.Generator, int], Batch]

    def init(self, seed: int = 0) -> dict:
        return self.model.init(seed)

    def predict(self, params, x):
        """The model's outputs; a tuple x holds the inputs of a multi-input model."""
        return self.model(params, *x) if isinstance(x, tuple) else self.model(params, x)

    def loss(self, params, x, y):
        return self.criterion(self.predict(params, x), y)

    def batch(self, seed: int = 0, batch_size: int | None = None) -> Batch:
        return self.sample(np.random.default_rng(seed), batch_size or self.batch_size)

    def example_inputs(self, seed: int = 0, batch_size: int | None = None) -> tuple:
        """(params, x, y): initialized parameters and a synthetic batch."""
        return (self.init(seed), *self.batch(seed, batch_size))

    def placeholder_inputs(self, batch_size: int | None = None) -> tuple:
        """(params, x, y) with zero-stride placeholder parameters: right shapes and
        dtypes for tracing (`lower`) without drawing or storing the weights."""
        params = tree_map(_placeholder, self.model.param_types())
        return (params, *self.batch(0, batch_size))


def _placeholder(t: TensorType) -> np.ndarray:
    return np.broadcast_to(np.zeros((), t.np_dtype), t.shape)


# --------------------------------------------------------------------------- synthetic batches


def _features(rng, n: int, width: int) -> np.ndarray:
    return rng.standard_normal((n, width)).astype(np.float32)


def _classification(inputs: int | tuple[int, ...], classes: int):
    def sample(rng, n):
        x = (tuple(_features(rng, n, w) for w in inputs) if isinstance(inputs, tuple)
             else _features(rng, n, inputs))
        return x, rng.integers(0, classes, n).astype(np.int32)

    return sample


def _regression(inputs: int, outputs: int):
    def sample(rng, n):
        return _features(rng, n, inputs), _features(rng, n, outputs)

    return sample


def _xor(rng, n):
    """The four XOR points, repeated to fill the batch."""
    points = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    x = np.resize(points, (n, 2))
    return x, (x[:, :1] != x[:, 1:]).astype(np.float32)


# --------------------------------------------------------------------------- the two-tower DAG


class TwoTower(nn.Module):
    """An image tower and a text tower, a projection shared by both into one
    embedding space, joined ([img, txt, img·txt]), then a classifier — the
    shape of a two-stream vision-language model such as VL-BERT's heads."""

    def __init__(self, image_features=196, text_features=300, hidden=256, embed=128, classes=10):
        self.image = nn.Dense(image_features, hidden, nn.ReLU(), init="he_normal")
        self.text = nn.Dense(text_features, hidden, nn.GELU("tanh"))
        self.project = nn.Dense(hidden, embed, nn.Tanh())
        self.classifier = nn.mlp([3 * embed, hidden, classes], nn.ReLU, init="he_normal")

    def forward(self, params, image, text):
        img = self.project(params["project"], self.image(params["image"], image))
        txt = self.project(params["project"], self.text(params["text"], text))
        joined = F.concatenate([img, txt, img * txt], axis=-1)
        return self.classifier(params["classifier"], joined)


# --------------------------------------------------------------------------- the zoo


def _xor_workload():
    return Workload("xor", "2-8-1 MLP, tanh hidden, sigmoid output, MSE",
                    nn.mlp([2, 8, 1], nn.Tanh, nn.Sigmoid), nn.mse, 4, _xor)


def _digits_workload():
    return Workload("digits", "64-128-128-10 MLP, ReLU, cross-entropy (8x8 digit images)",
                    nn.mlp([64, 128, 128, 10], nn.ReLU, init="he_normal"), nn.cross_entropy, 64,
                    _classification(64, 10))


def _mnist_workload():
    return Workload("mnist", "784-512-512-10 MLP, ReLU, cross-entropy",
                    nn.mlp([784, 512, 512, 10], nn.ReLU, init="he_normal"), nn.cross_entropy, 128,
                    _classification(784, 10))


def _wide_workload():
    return Workload("wide", "1024-4096-4096-1024 MLP, GELU (tanh form), MSE",
                    nn.mlp([1024, 4096, 4096, 1024], lambda: nn.GELU("tanh")), nn.mse, 256,
                    _regression(1024, 1024))


def _deep_workload():
    return Workload("deep", "32 tanh layers of width 256 (input 256), 10 outputs, cross-entropy",
                    nn.mlp([256] * 33 + [10], nn.Tanh), nn.cross_entropy, 64,
                    _classification(256, 10))


def _two_tower_workload():
    return Workload("two_tower", "DAG: image tower (196) and text tower (300), shared projection, "
                    "joined, classifier (10), cross-entropy",
                    TwoTower(), nn.cross_entropy, 64, _classification((196, 300), 10))


_BUILDERS: dict[str, Callable[[], Workload]] = {
    "xor": _xor_workload,
    "digits": _digits_workload,
    "mnist": _mnist_workload,
    "wide": _wide_workload,
    "deep": _deep_workload,
    "two_tower": _two_tower_workload,
}


def names() -> list[str]:
    return list(_BUILDERS)


def get(name: str) -> Workload:
    """A fresh workload (new module objects) by name."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown zoo model {name!r}; choose one of {', '.join(_BUILDERS)}")
    return _BUILDERS[name]()
