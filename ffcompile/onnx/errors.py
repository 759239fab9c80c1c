"""The one error the ONNX frontend raises for a model it cannot represent."""
from __future__ import annotations


class OnnxError(ValueError):
    """An ONNX node, attribute, dtype or model feature ffcompile does not handle.

    The message names the node, its op type and what is supported; nothing of
    the model is compiled when it is raised."""


def node_error(node, message: str) -> OnnxError:
    name = node.name or (node.output[0] if node.output else "?")
    return OnnxError(f"ONNX node {name!r} ({node.op_type}): {message}")
