"""Errors users see: each names the op (or IR line) and the types involved."""


class ShapeError(TypeError):
    """An op was given operands whose shapes, dtypes or attributes don't fit."""


class DTypeError(ShapeError):
    """Operands whose element types differ: ffcompile does not promote implicitly (a
    Python scalar takes the other operand's dtype; arrays are converted with .astype)."""


class IRParseError(ValueError):
    """Malformed IR text; the message starts with the line and column ("line 3, column 17: ")."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.line, self.column = line, column
        super().__init__(message if line is None else f"line {line}, column {column}: {message}")


class VerifyError(ValueError):
    """A graph breaks an IR invariant (SSA order, types, attributes)."""
