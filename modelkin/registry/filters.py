"""The one filter grammar shared by ``list``, ``search`` and ``lineage tree`` (MLflow-like).

    name LIKE 'bert%' AND tags.task = 'digits' AND family = 'mlp' AND parameters > 1e6

Comparisons are ``= == != < <= > >= LIKE ILIKE IN``; they combine with ``AND``/``OR`` (AND binds tighter) and
parentheses. Values are quoted strings, numbers, ``true``/``false`` or ``null``; ``IN ('a', 'b')`` takes a list.
A comparison against a missing field (an absent tag, say) is false, as SQL's NULL is.
Keys are fixed per command (``FIELDS`` for versions); ``tags.<key>`` reads a tag; a key with unusual characters
can be written in backquotes: ``tags.`my key```.

A filter parses into a small tree (``Comparison``, ``BoolOp``) that is evaluated in Python here, and that the
version listing also translates into SQL (as bound parameters, never as text). ``LIKE`` runs in linear time
however many ``%`` a pattern holds: each run between two ``%`` has a fixed length, so the leftmost match of each
run in turn decides the whole match, without backtracking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelkin.errors import InvalidFilter

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Comparison:
    """``key op value``; ``op`` is one of == != < <= > >= LIKE ILIKE IN (IN takes a tuple of values)."""

    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    parts: tuple[Node, ...]


Node = Comparison | BoolOp

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
      | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<op><=|>=|!=|==|=|<|>)
      | (?P<punct>[(),])
      | (?P<ident>(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)(?:\.(?:[A-Za-z_][A-Za-z0-9_.-]*|`[^`]+`))*)
    )""",
    re.VERBOSE,
)
_TRAILING_SPACE = re.compile(r"\s*\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WORD_OPS = {"like": "LIKE", "ilike": "ILIKE", "in": "IN"}
_CONSTANTS = {"true": True, "false": False, "null": None}
MAX_DEPTH = 32


@dataclass(frozen=True)
class _Tok:
    kind: str
    value: Any
    pos: int


def _tokenize(expr: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        if _TRAILING_SPACE.match(expr, pos):
            break
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            raise InvalidFilter(f"filter: unexpected {expr[pos : pos + 40].strip()[:20]!r} at character {pos + 1}.")
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            value = text[1:-1].replace(text[0] * 2, text[0])
            if not value.isascii() and _SURROGATE.search(value):
                raise InvalidFilter(f"filter: the string at character {pos + 1} is not valid Unicode.")
            toks.append(_Tok("value", value, m.start(kind)))
        elif kind == "num":
            if len(text) > 400:
                raise InvalidFilter(f"filter: the number at character {pos + 1} is too long.")
            toks.append(_Tok("value", float(text) if any(c in text for c in ".eE") else int(text), m.start(kind)))
        elif kind == "ident" and text.lower() in ("and", "or"):
            toks.append(_Tok(text.upper(), text.upper(), m.start(kind)))
        elif kind == "ident" and text.lower() in _WORD_OPS:
            toks.append(_Tok("op", _WORD_OPS[text.lower()], m.start(kind)))
        elif kind == "ident" and text.lower() in _CONSTANTS:
            toks.append(_Tok("value", _CONSTANTS[text.lower()], m.start(kind)))
        elif kind == "ident":
            toks.append(_Tok("ident", text.replace("`", ""), m.start(kind)))
        else:
            toks.append(_Tok(kind if kind == "punct" else "op", "==" if text == "=" else text, m.start(kind)))
        pos = m.end()
    return toks


class _Parser:
    def __init__(self, expr: str, keys: frozenset[str]) -> None:
        self.toks = _tokenize(expr)
        self.i = 0
        self.depth = 0
        self.keys = keys

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: Any = None) -> _Tok:
        tok = self.peek()
        if tok is None or tok.kind != kind or (value is not None and tok.value != value):
            where = f"at character {tok.pos + 1}" if tok else "at the end"
            wanted = value or {"ident": "a key", "value": "a value", "op": "an operator"}.get(kind, kind)
            raise InvalidFilter(f"filter: expected {wanted} {where}.")
        self.i += 1
        return tok

    def parse(self) -> Node:
        pred = self.disjunction()
        if (tok := self.peek()) is not None:
            raise InvalidFilter(f"filter: unexpected {tok.value!r} at character {tok.pos + 1}.")
        return pred

    def disjunction(self) -> Node:
        parts = [self.conjunction()]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("OR", tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.atom()]
        while (tok := self.peek()) is not None and tok.kind == "AND":
            self.i += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else BoolOp("AND", tuple(parts))

    def atom(self) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.value == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidFilter(f"filter: parentheses nest deeper than {MAX_DEPTH} levels.")
            self.i += 1
            inner = self.disjunction()
            self.depth -= 1
            self.take("punct", ")")
            return inner
        key = self.take("ident").value
        if key not in self.keys and not (key.startswith("tags.") and len(key) > 5):
            raise InvalidFilter(
                f"filter: unknown key {key!r}.", hint=f"known keys: {', '.join(sorted(self.keys))}, tags.<key>"
            )
        op = self.take("op").value
        if op == "IN":
            self.take("punct", "(")
            values = [self.take("value").value]
            while (t := self.peek()) is not None and t.kind == "punct" and t.value == ",":
                self.i += 1
                values.append(self.take("value").value)
            self.take("punct", ")")
            return Comparison(key, op, tuple(values))
        value = self.take("value").value
        if op in ("LIKE", "ILIKE") and not isinstance(value, str):
            raise InvalidFilter(f"filter: {op} needs a quoted pattern after {key}.")
        return Comparison(key, op, value)


def like_matcher(pattern: str, ignore_case: bool = False) -> Callable[[str], bool]:
    """SQL LIKE (``%`` any run, ``_`` one character) as a test that takes time linear in the text."""
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    runs = [re.compile("".join("." if c == "_" else re.escape(c) for c in run), flags) for run in pattern.split("%")]
    lengths = [len(run) for run in pattern.split("%")]
    if len(runs) == 1:
        return lambda text: runs[0].fullmatch(text) is not None
    first, middle, last = runs[0], runs[1:-1], runs[-1]

    def match(text: str) -> bool:
        if first.match(text) is None:
            return False
        pos = lengths[0]
        for rx in middle:  # fixed-length runs: the leftmost place each fits is the best place for it
            m = rx.search(text, pos)
            if m is None:
                return False
            pos = m.end()
        start = len(text) - lengths[-1]
        return start >= pos and last.fullmatch(text, start) is not None

    return match


def compile_node(node: Node) -> Predicate:
    """A predicate over a record's field mapping, for a parsed filter."""
    if isinstance(node, BoolOp):
        parts = [compile_node(p) for p in node.parts]
        if node.op == "AND":
            return lambda rec: all(p(rec) for p in parts)
        return lambda rec: any(p(rec) for p in parts)
    return _compare(node.key, node.op, node.value)


def _compare(key: str, op: str, value: Any) -> Predicate:
    if op in ("LIKE", "ILIKE"):
        matches = like_matcher(value, ignore_case=op == "ILIKE")
        return lambda rec: isinstance(v := rec.get(key), str) and matches(v)
    if op == "IN":
        return lambda rec: (v := rec.get(key)) is not None and any(_eq(v, x) for x in value)
    if op == "==":
        return lambda rec: (v := rec.get(key)) is not None and _eq(v, value)
    if op == "!=":
        return lambda rec: (v := rec.get(key)) is not None and not _eq(v, value)
    compare: Callable[[Any, Any], bool] = {
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }[op]  # fmt: skip

    def ordered(rec: Mapping[str, Any]) -> bool:
        v = rec.get(key)
        if v is None or value is None:
            return False
        try:
            return compare(_coerce(v, value), value)
        except TypeError:
            return False

    return ordered


def _coerce(v: Any, like: Any) -> Any:
    """Tags are strings; compare them as numbers when the filter compares with a number."""
    if isinstance(like, (int, float)) and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _eq(v: Any, x: Any) -> bool:
    return bool(_coerce(v, x) == x) or str(v) == str(x)


def parse_filter_tree(expr: str | None, keys: frozenset[str]) -> Node | None:
    """The tree of ``expr``, or None for an empty filter."""
    if expr is None or not expr.strip():
        return None
    return _Parser(expr, keys).parse()


def parse_filter(expr: str | None, keys: frozenset[str]) -> Predicate:
    """Compile ``expr`` into a predicate over a record's field mapping; an empty filter keeps everything."""
    node = parse_filter_tree(expr, keys)
    return (lambda rec: True) if node is None else compile_node(node)
