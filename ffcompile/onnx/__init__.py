"""ONNX frontend: `load` an ONNX model as a traceable function, `export` a traced one.

Needs the `onnx` extra (`pip install 'ffcompile[onnx]'`); ffcompile itself imports
without it: `ff.onnx` is loaded on first use.
"""
from .errors import OnnxError
from .exporter import export
from .importer import OnnxModel, load

__all__ = ["OnnxError", "OnnxModel", "export", "load"]
