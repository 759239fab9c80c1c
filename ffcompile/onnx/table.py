"""The complete ONNX rule table: importing the rule modules registers their rules."""
from . import rules_elementwise, rules_layout, rules_tensor  # noqa: F401
from .rules import RULES

__all__ = ["RULES"]
