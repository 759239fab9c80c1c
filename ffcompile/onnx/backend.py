"""ffcompile as an ONNX backend (`onnx.backend.base.Backend`), for ONNX's own test suite.

`backend_for("llvm")` / `backend_for("numpy")` give one Backend class per
ffcompile code generator. `prepare` imports the model; each `run` compiles it
for the inputs' shapes (cached per signature like any ff.compile). Inputs the
model uses as shapes or axes are fixed as constants per distinct value.
"""
from __future__ import annotations

import numpy as np
import onnx.backend.base as base

from ..api import compile as ff_compile
from .importer import load


class FfcompileRep(base.BackendRep):
    def __init__(self, proto, backend: str):
        self.proto = proto
        self.backend = backend
        self.model = load(proto)
        self.compiled = {}  # values of the static inputs -> (model, compiled function)

    def _specialized(self, feeds: dict):
        static = {name: feeds[name] for name in self.model.static_inputs}
        key = tuple((name, v.dtype.str, v.shape, v.tobytes()) for name, v in static.items())
        if key not in self.compiled:
            model = load(self.proto, constants=static) if static else self.model
            self.compiled[key] = model, ff_compile(model, backend=self.backend)
        return self.compiled[key]

    def run(self, inputs, **kwargs):
        if not isinstance(inputs, (list, tuple, dict)):
            inputs = [inputs]
        if not isinstance(inputs, dict):
            inputs = dict(zip(self.model.input_names, inputs))
        feeds = {name: np.asarray(x) for name, x in inputs.items()}
        model, compiled = self._specialized(feeds)
        outs = compiled(model.params, *(feeds[name] for name in model.input_names))
        return tuple(outs) if isinstance(outs, (list, tuple)) else (outs,)


def backend_for(backend: str) -> type[base.Backend]:
    class FfcompileBackend(base.Backend):
        @classmethod
        def prepare(cls, model, device="CPU", **kwargs):
            super().prepare(model, device, **kwargs)
            return FfcompileRep(model, backend)

        @classmethod
        def run_model(cls, model, inputs, device="CPU", **kwargs):
            return cls.prepare(model, device).run(inputs)

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return device == "CPU"

    FfcompileBackend.__name__ = f"Ffcompile{backend.capitalize()}Backend"
    return FfcompileBackend
