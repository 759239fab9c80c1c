"""ONNX frontend: `load` an ONNX model as a traceable function, `export` a traced one.

Needs the `onnx` extra (`pip install 'ffcompile[onnx]'`); ffcompile itself imports
without it: `ff.onnx` is loaded on first use.
"""
try:
    import onnx  # noqa: F401
except ImportError as exc:
    raise ImportError("ff.onnx needs the onnx extra: pip install 'ffcompile[onnx]'") from exc

from .errors import OnnxError  # noqa: E402
from .exporter import export  # noqa: E402
from .importer import OnnxModel, load  # noqa: E402

__all__ = ["OnnxError", "OnnxModel", "export", "load"]
