"""An ONNX file as a command-line model (`ffcompile dump|export|bench model.onnx`).

It offers what cli.py asks of a model file: `model(params, *inputs)` and
`example_inputs(batch_size)`. Dimensions the file leaves symbolic (a batch
axis) take the batch size (default 1); inputs are seeded random floats, or
zeros for integer inputs (indices). It has no loss: `--train` is refused.
"""
from __future__ import annotations

import os

import numpy as np
import onnx

from .dtypes import TO_NUMPY
from .importer import load


class OnnxFile:
    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self.proto = onnx.load(path)
        self.model = load(self.proto)

    def _input(self, value, batch: int, rng) -> np.ndarray:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
        dtype = TO_NUMPY[tensor.elem_type]
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        return np.zeros(shape, dtype)

    def example_inputs(self, batch_size: int | None = None) -> tuple:
        """(params, x, None); x is a tuple for a model of several inputs."""
        rng = np.random.default_rng(0)
        by_name = {v.name: v for v in self.proto.graph.input}
        xs = tuple(self._input(by_name[n], batch_size or 1, rng) for n in self.model.input_names)
        return self.model.params, xs[0] if len(xs) == 1 else xs, None
