"""`ff.from_torch`: a torch.nn.Module as an ffcompile function and its parameters.

Route: torch's ONNX exporter (torch.export underneath, `dynamo=True`), then
`ff.onnx.load`. One importer and one op table serve ONNX files and torch
modules alike, and that table is held to ONNX's official backend tests; a
second frontend over torch.export's ATen graph would need its own table of
the ~180 core ATen ops and its own conformance story. The exporter's graph
optimizer is off so weights keep torch's names and layouts (a Linear weight
stays [out, in] with a Transpose in the graph, not a pre-transposed copy).
"""
from __future__ import annotations

import io
import warnings


def from_torch(module, *example_inputs, batch_dim=None):
    """(fn, params): fn(params, *inputs) traces like any ffcompile function.

    params maps module.state_dict() keys to NumPy arrays laid out as torch lays
    them out. The module is exported in eval mode for the example inputs'
    shapes and dtypes (float64 modules stay float64). `batch_dim` (an axis for every
    input, or one per input, None for none) exports that axis as torch.export's
    dynamic dimension, so `ff.compile(fn, batch_dim=(None, *axes))` traces fn once for
    every batch size, its shape arithmetic (`x.view(x.size(0), -1)`) folded at import."""
    import numpy as np
    import torch

    from .onnx import load

    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(example_inputs), buffer, dynamo=True, optimize=False,
                              verbose=False, dynamic_shapes=_dynamic_shapes(example_inputs, batch_dim))
    finally:
        module.train(was_training)
    import onnx

    model = load(onnx.load_from_string(buffer.getvalue()))
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    params = {k: np.array(state[k]) for k in model.params if k in state}
    # Float initializers that are not module state (constants the exporter made) stay fixed.
    fixed = {k: v for k, v in model.params.items() if k not in params}

    def fn(params, *inputs):
        return model({**fixed, **params}, *inputs)

    fn.__name__ = type(module).__name__
    return fn, params


def _dynamic_shapes(example_inputs, batch_dim):
    """torch.export's dynamic_shapes for the batch axes `batch_dim` names (None: all static)."""
    if batch_dim is None:
        return None
    import torch

    axes = (batch_dim,) * len(example_inputs) if isinstance(batch_dim, int) else tuple(batch_dim)
    if len(axes) != len(example_inputs):
        raise TypeError(f"batch_dim gives {len(axes)} axes for {len(example_inputs)} example inputs")
    batch = torch.export.Dim("batch")
    for axis, x in zip(axes, example_inputs):
        if axis is not None and x.shape[axis] < 2:  # torch.export specializes a size of 0 or 1
            raise ValueError(f"the example inputs' batch axis must have size 2 or more to be "
                             f"exported as dynamic, got an input of shape {tuple(x.shape)}")
    return tuple(None if axis is None else {axis: batch} for axis in axes)

