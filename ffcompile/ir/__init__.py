"""The graph IR. Imports nothing else of ffcompile."""
from .builder import Builder
from .errors import DTypeError, IRParseError, ShapeError, VerifyError
from .graph import Graph, Loc, Node, Role
from .ops import OPS
from .parser import parse_ir
from .printer import print_graph
from .types import TensorType
from .verify import verify

__all__ = ["Builder", "DTypeError", "Graph", "IRParseError", "Loc", "Node", "OPS", "Role", "ShapeError", "TensorType",
           "VerifyError", "parse_ir", "print_graph", "verify"]
