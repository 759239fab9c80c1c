"""Parse the text form written by printer.py back into a Graph.

Every node is rebuilt through the Builder, so the declared type of each line
is checked against the op's shape rule; errors name the line.
"""
from __future__ import annotations

import json
import re

from .builder import Builder
from .errors import IRParseError, ShapeError
from .graph import Graph, Loc
from .ops import OPS
from .types import parse_type

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>-?(?:inf|nan|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?))
    | (?P<word>[A-Za-z_][\w.]*)
    | (?P<ref>%\d+)
    | (?P<at>@[^\s)]*)
    | (?P<punct>[{}\[\](),=:])
    )""",
    re.VERBOSE,
)
_HEADER = re.compile(r"^graph\s+@([\w.\-]+)\s*\{$")
_NODE = re.compile(r"^%(\d+):(\S+)\s*=\s*([a-z_0-9]+)(.*)$")
_RETURN = re.compile(r"^return\s*(.*)$")


class _Tokens:
    def __init__(self, text: str, line: int):
        self.items, self.line, pos = [], line, 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise IRParseError(f"line {line}: cannot read {text[pos:]!r}")
            self.items.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        self.pos = 0

    def peek(self):
        return self.items[self.pos] if self.pos < len(self.items) else (None, None)

    def take(self, kind=None, text=None):
        got = self.peek()
        if got[0] is None or (kind and got[0] != kind) or (text and got[1] != text):
            raise IRParseError(f"line {self.line}: expected {text or kind}, found {_shown(got)}")
        self.pos += 1
        return got[1]


def _shown(token) -> str:
    return "end of line" if token[0] is None else repr(token[1])


def _value(tokens: _Tokens):
    kind, text = tokens.peek()
    if kind == "punct" and text == "[":
        tokens.take()
        items = []
        while tokens.peek()[1] != "]":
            items.append(_value(tokens))
            if tokens.peek()[1] == ",":
                tokens.take()
        tokens.take("punct", "]")
        return tuple(items)
    if kind == "str":
        return json.loads(tokens.take())
    if kind == "word" and text in ("true", "false"):
        return tokens.take() == "true"
    if kind == "num":
        text = tokens.take()
        is_int = re.fullmatch(r"-?\d+", text) is not None
        return int(text) if is_int else float(text)
    raise IRParseError(f"line {tokens.line}: expected an attribute value, found {_shown((kind, text))}")


def _attrs(tokens: _Tokens) -> dict:
    attrs = {}
    if tokens.peek()[1] != "{":
        return attrs
    tokens.take()
    while tokens.peek()[1] != "}":
        if tokens.peek()[0] is None:
            raise IRParseError(f"line {tokens.line}: expected '}}' closing the attributes")
        key = tokens.take("word")
        tokens.take("punct", "=")
        attrs[key] = _value(tokens)
        if tokens.peek()[1] == ",":
            tokens.take()
    tokens.take("punct", "}")
    return attrs


def _loc(tokens: _Tokens) -> Loc | None:
    if tokens.peek()[1] != "loc":
        return None
    tokens.take()
    tokens.take("punct", "(")
    role = tokens.take("word") if tokens.peek()[0] == "word" else ""
    file = json.loads(tokens.take("str"))
    tokens.take("punct", ":")
    line = int(tokens.take("num"))
    scope = tokens.take("at")[1:] if tokens.peek()[0] == "at" else ""
    tokens.take("punct", ")")
    return Loc(file, line, scope, role)


def parse_ir(text: str) -> Graph:
    """Parse IR text into a Graph; raises IRParseError naming the offending line."""
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), 1)]
    lines = [(n, s) for n, s in lines if s and not s.startswith("//")]
    if not lines:
        raise IRParseError("empty IR text")
    n, first = lines[0]
    header = _HEADER.match(first)
    if not header:
        raise IRParseError(f"line {n}: expected 'graph @name {{', found {first!r}")
    if lines[-1][1] != "}":
        raise IRParseError(f"line {lines[-1][0]}: expected '}}' closing the graph")
    builder = Builder(header.group(1))
    ids: dict[int, int] = {}
    outputs = None
    for n, line in lines[1:-1]:
        if outputs is not None:
            raise IRParseError(f"line {n}: nothing may follow 'return'")
        ret = _RETURN.match(line)
        if ret:
            outputs = [_ref(ids, r.strip(), n) for r in ret.group(1).split(",") if r.strip()]
            continue
        node = _NODE.match(line)
        if not node:
            raise IRParseError(f"line {n}: expected '%N:type = op ...', found {line!r}")
        number, type_text, op_name, rest = node.groups()
        if int(number) in ids:
            raise IRParseError(f"line {n}: %{number} is defined twice")
        if op_name not in OPS:
            raise IRParseError(f"line {n}: unknown op {op_name!r}")
        op = OPS[op_name]
        try:
            declared = parse_type(type_text)
        except (ValueError, TypeError) as exc:
            raise IRParseError(f"line {n}: {exc}") from None
        tokens = _Tokens(rest, n)
        operands = []
        while tokens.peek()[0] == "ref":
            operands.append(_ref(ids, tokens.take(), n))
            if tokens.peek()[1] == ",":
                tokens.take()
        attrs = _attrs(tokens)
        if "type" in op.attr_names:
            attrs["type"] = declared
        loc = _loc(tokens)
        if tokens.peek()[0] is not None:
            raise IRParseError(f"line {n}: unexpected {tokens.peek()[1]!r}")
        try:
            index = builder.emit(op, operands, attrs, loc)
        except ShapeError as exc:
            raise IRParseError(f"line {n}: {exc}") from None
        inferred = builder.nodes[index].type
        if inferred != declared:
            raise IRParseError(f"line {n}: declared {declared} but {op_name} gives {inferred}")
        ids[int(number)] = index
    if outputs is None:
        raise IRParseError(f"line {lines[-1][0]}: missing 'return'")
    return builder.finish(outputs)


def _ref(ids: dict[int, int], text: str, line: int) -> int:
    if not re.fullmatch(r"%\d+", text):
        raise IRParseError(f"line {line}: expected a value like %3, found {text!r}")
    number = int(text[1:])
    if number not in ids:
        raise IRParseError(f"line {line}: %{number} is not defined")
    return ids[number]
