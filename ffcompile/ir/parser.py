"""Parse the text form written by printer.py back into a Graph.

Every node is rebuilt through the Builder, so the declared type of each line
is checked against the op's shape rule and its attributes against their
kinds; errors name the line and column. Any text whatever gives a Graph or an
IRParseError: nesting is bounded, strings and numbers are decoded under a
guard, and nothing recurses deeper than that bound.
"""
from __future__ import annotations

import json
import math
import re

from .builder import Builder
from .errors import IRParseError, ShapeError
from .graph import Graph, Loc, Role
from .ops import OPS
from .printer import PLAIN_NAME
from .types import parse_dim, parse_type
from .verify import unbound_symbols

_STRING = r'"(?:[^"\\]|\\.)*"'
_TOKEN = re.compile(
    rf"""\s*(?:
      (?P<str>{_STRING})
    | (?P<sym>\d+\*{PLAIN_NAME.pattern})
    | (?P<num>-?(?:(?:inf|nan)(?![\w.])|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?))
    | (?P<word>{PLAIN_NAME.pattern})
    | (?P<ref>%\d+)
    | (?P<copy>\#\d+)
    | (?P<at>@(?:{_STRING}|[\w.\-]+))
    | (?P<punct>[{{}}\[\](),=:])
    )""",
    re.VERBOSE | re.ASCII,
)
_NODE = re.compile(r"%(\d+):(\S+)\s*=\s*([a-z_0-9]+)(.*)$", re.ASCII)
_DIGITS = 40  # longer integers are no index, size or int64 value: not worth converting
MAX_NESTING = 64  # NumPy's largest rank: a constant's value nests no deeper


class _Tokens:
    """The tokens of one line from `start`, each with its column (1-based)."""

    def __init__(self, text: str, line: int, start: int = 0):
        self.items, self.line, pos = [], line, start
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise IRParseError(f"cannot read {_cut(text[pos:])!r}", line, pos + 1)
            kind = match.lastgroup
            self.items.append((kind, match.group(kind), match.start(kind) + 1))
            pos = match.end()
        self.end = len(text) + 1
        self.pos = 0

    def peek(self):
        return self.items[self.pos][:2] if self.pos < len(self.items) else (None, None)

    def column(self) -> int:
        return self.items[self.pos][2] if self.pos < len(self.items) else self.end

    def fail(self, message: str):
        return IRParseError(message, self.line, self.column())

    def take(self, kind=None, text=None):
        got = self.peek()
        if got[0] is None or (kind and got[0] != kind) or (text and got[1] != text):
            raise self.fail(f"expected {text or kind}, found {_shown(got)}")
        self.pos += 1
        return got[1]


def _shown(token) -> str:
    return "end of line" if token[0] is None else repr(_cut(token[1]))


def _cut(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _string(tokens: _Tokens) -> str:
    column = tokens.column()
    return _decoded(tokens.take("str"), tokens.line, column)


def _decoded(literal: str, line: int, column: int) -> str:
    try:
        return json.loads(literal)
    except ValueError as exc:  # a bad escape or a raw control character
        raise IRParseError(f"bad string {_cut(literal)}: {exc.msg}", line, column) from None


def _integer(text: str, line: int, column: int) -> int:
    if len(text.lstrip("-")) > _DIGITS:
        raise IRParseError(f"integer of more than {_DIGITS} digits", line, column)
    return int(text)


def _value(tokens: _Tokens, depth: int = 0):
    kind, text = tokens.peek()
    if kind == "punct" and text == "[":
        if depth == MAX_NESTING:
            raise tokens.fail(f"lists nested deeper than {MAX_NESTING}")
        tokens.take()
        items = []
        while tokens.peek()[1] != "]":
            items.append(_value(tokens, depth + 1))
            if tokens.peek()[1] == ",":
                tokens.take()
        tokens.take("punct", "]")
        return tuple(items)
    if kind == "str":
        return _string(tokens)
    if kind == "word" and text in ("true", "false"):
        return tokens.take() == "true"
    if kind in ("word", "sym"):  # a symbolic size: B, 2*B
        column = tokens.column()
        try:
            return parse_dim(tokens.take(), text)
        except (ValueError, TypeError) as exc:
            raise IRParseError(str(exc), tokens.line, column) from None
    if kind == "num":
        column = tokens.column()
        text = tokens.take()
        if re.fullmatch(r"-?\d+", text, re.ASCII):
            return _integer(text, tokens.line, column)
        value = float(text)
        return math.nan if value != value else value  # one NaN object: equal graphs compare equal
    raise tokens.fail(f"expected an attribute value, found {_shown((kind, text))}")


def _attrs(tokens: _Tokens) -> dict:
    attrs = {}
    if tokens.peek()[1] != "{":
        return attrs
    tokens.take()
    while tokens.peek()[1] != "}":
        if tokens.peek()[0] is None:
            raise tokens.fail("expected '}' closing the attributes")
        column = tokens.column()
        key = tokens.take("word")
        if key in attrs:
            raise IRParseError(f"attribute {key!r} given twice", tokens.line, column)
        if key == "type":
            raise IRParseError("'type' is the annotation after ':', not an attribute", tokens.line, column)
        tokens.take("punct", "=")
        attrs[key] = _value(tokens)
        if tokens.peek()[1] == ",":
            tokens.take()
    tokens.take("punct", "}")
    return attrs


def _name(tokens: _Tokens, text: str, column: int) -> str:
    """A bare or quoted name (role, scope, graph name)."""
    return _decoded(text, tokens.line, column) if text.startswith('"') else text


def _loc(tokens: _Tokens) -> Loc | None:
    if tokens.peek()[1] != "loc":
        return None
    tokens.take()
    tokens.take("punct", "(")
    transforms = []
    while tokens.peek()[0] == "word":
        transforms.append(tokens.take())
    file = _string(tokens)
    tokens.take("punct", ":")
    column = tokens.column()
    number = tokens.take("num")
    if not re.fullmatch(r"\d+", number, re.ASCII):
        raise IRParseError(f"a line number is a non-negative integer, found {number!r}", tokens.line, column)
    line = _integer(number, tokens.line, column)
    scope = ""
    if tokens.peek()[0] == "at":
        column = tokens.column()
        scope = _name(tokens, tokens.take()[1:], column)
    tokens.take("punct", ")")
    return Loc(file, line, scope, tuple(transforms))


def _header(raw: str, number: int, indent: int) -> str:
    tokens = _Tokens(raw, number, indent)
    if tokens.peek() != ("word", "graph"):
        raise IRParseError(f"expected 'graph @name {{', found {_cut(raw.strip())!r}", number, indent + 1)
    tokens.take()
    column = tokens.column()
    name = _name(tokens, tokens.take("at")[1:], column)
    tokens.take("punct", "{")
    if tokens.peek()[0] is not None:
        raise tokens.fail(f"unexpected {_shown(tokens.peek())}")
    return name


def parse_ir(text: str) -> Graph:
    """Parse IR text into a Graph; raises IRParseError naming the offending line and column."""
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("//"):
            lines.append((n, raw, stripped))
    if not lines:
        raise IRParseError("empty IR text")
    n, raw, _ = lines[0]
    builder = Builder(_header(raw, n, _indent(raw)))
    if lines[-1][2] != "}":
        raise IRParseError("expected '}' closing the graph", lines[-1][0], _indent(lines[-1][1]) + 1)
    ids: dict[int, int] = {}
    bound: set[str] = set()  # the symbols (B) of the inputs so far
    outputs = None
    for n, raw, line in lines[1:-1]:
        indent = _indent(raw)
        if outputs is not None:
            raise IRParseError("nothing may follow 'return'", n, indent + 1)
        if line == "return" or line.startswith("return "):
            outputs = _outputs(_Tokens(raw, n, indent + len("return")), ids)
            continue
        number, index = _node(builder, ids, raw, n, indent)
        unbound = unbound_symbols(builder.nodes[index], bound)
        if unbound:
            raise IRParseError(unbound, n, indent + 1)
        ids[number] = index
    if outputs is None:
        raise IRParseError("missing 'return'", lines[-1][0], _indent(lines[-1][1]) + 1)
    return builder.finish(outputs)


def _indent(raw: str) -> int:
    return len(raw) - len(raw.lstrip())


_ROLES = {role.value for role in Role} - {Role.FORWARD.value}  # forward prints no role


def _node(builder: Builder, ids: dict[int, int], raw: str, n: int, indent: int) -> tuple[int, int]:
    """Parse one `%N:type = op operands {attrs} role loc(...)` line into the builder: (N, index)."""
    node = _NODE.match(raw, indent)
    if not node:
        raise IRParseError(f"expected '%N:type = op ...', found {_cut(raw.strip())!r}", n, indent + 1)
    number_text, type_text, op_name, _ = node.groups()
    number = _integer(number_text, n, indent + 2)
    if number in ids:
        raise IRParseError(f"%{number} is defined twice", n, indent + 1)
    if op_name not in OPS:
        raise IRParseError(f"unknown op {op_name!r}", n, node.start(3) + 1)
    op = OPS[op_name]
    try:
        declared = parse_type(type_text)
    except (ValueError, TypeError) as exc:
        raise IRParseError(str(exc), n, node.start(2) + 1) from None
    tokens = _Tokens(raw, n, node.start(4))
    operands = []
    while tokens.peek()[0] == "ref":
        operands.append(_ref(ids, tokens))
        if tokens.peek()[1] == ",":
            tokens.take()
    attrs = _attrs(tokens)
    if "type" in op.attributes:
        attrs["type"] = declared
    role, copy = Role.FORWARD, 1
    if tokens.peek()[0] == "word" and tokens.peek()[1] in _ROLES:
        role = Role(tokens.take())
        if role is Role.RECOMPUTE and tokens.peek()[0] == "copy":
            column = tokens.column()
            copy = _integer(tokens.take("copy")[1:], n, column)
    loc = _loc(tokens)
    if tokens.peek()[0] is not None:
        raise tokens.fail(f"unexpected {_shown(tokens.peek())}")
    try:
        index = builder.emit(op, operands, attrs, loc, role, copy)
    except ShapeError as exc:
        raise IRParseError(str(exc), n, node.start(3) + 1) from None
    inferred = builder.nodes[index].type
    if inferred != declared:
        raise IRParseError(f"declared {declared} but {op_name} gives {inferred}", n, node.start(2) + 1)
    return number, index


def _outputs(tokens: _Tokens, ids: dict[int, int]) -> list[int]:
    outputs = []
    while tokens.peek()[0] is not None:
        outputs.append(_ref(ids, tokens))
        if tokens.peek()[0] is not None:
            tokens.take("punct", ",")
    return outputs


def _ref(ids: dict[int, int], tokens: _Tokens) -> int:
    column = tokens.column()
    if tokens.peek()[0] != "ref":
        raise tokens.fail(f"expected a value like %3, found {_shown(tokens.peek())}")
    number = _integer(tokens.take()[1:], tokens.line, column)
    if number not in ids:
        raise IRParseError(f"%{number} is not defined", tokens.line, column)
    return ids[number]
