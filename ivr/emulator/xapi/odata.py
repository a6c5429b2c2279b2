"""OData v4 query options as the emulator serves them: ``$filter`` (eq, ne, gt, ge, lt, le,
and, or, not, startswith, endswith, contains, tolower, toupper), ``$select``, ``$expand``,
``$orderby``, ``$top``, ``$skip``, ``$count``. Entities are plain dicts; a bad option is an
:class:`ODataError` (answered 400 with the OData error body).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ODataError", "QueryOptions", "parse_filter", "parse_options"]

Entity = dict[str, Any]
Predicate = Callable[[Entity], Any]


class ODataError(ValueError):
    """A query option the emulator cannot apply; the message says which and why."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_./]*)|(?P<op>[(),]))"
)
MAX_DEPTH = 40
MAX_FILTER = 8000
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"startswith": 2, "endswith": 2, "contains": 2, "tolower": 1, "toupper": 1, "length": 1}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ODataError(f"$filter: unexpected {text[pos:].strip()[:20]!r} at position {pos}")
        kind = m.lastgroup or ""
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _get(entity: Entity, path: str) -> Any:
    value: Any = entity
    for part in path.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def nest(self) -> None:
        """One level deeper (parentheses, not, a function); a hostile filter cannot exhaust the stack."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ODataError(f"$filter: nested deeper than {MAX_DEPTH} levels")

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ODataError(f"$filter {self.text!r}: ends too early")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise ODataError(f"$filter: expected {text!r} at position {tok.pos}, got {tok.text!r}")

    def word(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in words:
            self.i += 1
            return tok.text
        return None

    def parse(self) -> Predicate:
        expr = self.or_()
        tok = self.peek()
        if tok is not None:
            raise ODataError(f"$filter: unexpected {tok.text!r} at position {tok.pos}")
        return expr

    def or_(self) -> Predicate:
        left = self.and_()
        while self.word("or"):
            left = _either(left, self.and_())
        return left

    def and_(self) -> Predicate:
        left = self.unary()
        while self.word("and"):
            left = _both(left, self.unary())
        return left

    def unary(self) -> Predicate:
        if self.word("not"):
            self.nest()
            inner = self.unary()
            self.depth -= 1
            return lambda e: not inner(e)
        return self.comparison()

    def comparison(self) -> Predicate:
        left = self.primary()
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in _COMPARE:
            self.i += 1
            right = self.primary()
            return _compare(tok.text, left, right)
        return left

    def primary(self) -> Predicate:
        tok = self.take()
        if tok.text == "(":
            self.nest()
            inner = self.or_()
            self.expect(")")
            self.depth -= 1
            return inner
        if tok.kind == "str":
            value = tok.text[1:-1].replace("''", "'")
            return lambda e: value
        if tok.kind == "num":
            number = float(tok.text) if "." in tok.text else int(tok.text)
            return lambda e: number
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                flag = tok.text == "true"
                return lambda e: flag
            if tok.text == "null":
                return lambda e: None
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self.call(tok)
            if tok.text in _COMPARE or tok.text in ("and", "or", "not"):
                raise ODataError(f"$filter: {tok.text!r} at position {tok.pos} needs an operand before it")
            path = tok.text
            return lambda e: _get(e, path)
        raise ODataError(f"$filter: unexpected {tok.text!r} at position {tok.pos}")

    def call(self, name: _Tok) -> Predicate:
        arity = _FUNCS.get(name.text)
        if arity is None:
            raise ODataError(f"$filter: unknown function {name.text!r} at position {name.pos}")
        self.expect("(")
        self.nest()
        args = [self.or_()]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.i += 1
            args.append(self.or_())
        self.expect(")")
        self.depth -= 1
        if len(args) != arity:
            raise ODataError(f"$filter: {name.text} takes {arity} argument(s), got {len(args)}")
        return _function(name.text, args)


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: bool(a(e)) or bool(b(e))


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda e: bool(a(e)) and bool(b(e))


def _order_key(prop: str) -> Callable[[Entity], tuple[int, Any]]:
    return lambda e: _sort_key(_get(e, prop))


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _function(name: str, args: list[Predicate]) -> Predicate:
    if name in ("tolower", "toupper", "length"):
        (a,) = args

        def one(e: Entity) -> Any:
            s = _text(a(e))
            if s is None:
                return None
            return s.lower() if name == "tolower" else s.upper() if name == "toupper" else len(s)

        return one
    a, b = args

    def two(e: Entity) -> bool:
        s, t = _text(a(e)), _text(b(e))
        if s is None or t is None:
            return False
        return s.startswith(t) if name == "startswith" else s.endswith(t) if name == "endswith" else t in s

    return two


def _compare(op: str, left: Predicate, right: Predicate) -> Predicate:
    def cmp(e: Entity) -> bool:
        a, b = left(e), right(e)
        if op == "eq":
            return bool(a == b)
        if op == "ne":
            return bool(a != b)
        if a is None or b is None:
            return False
        try:
            return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])
        except TypeError:
            return False

    return cmp


def parse_filter(text: str) -> Predicate:
    """A ``$filter`` expression as a predicate over entity dicts; ODataError if malformed."""
    if not text.strip():
        raise ODataError("$filter: empty")
    if len(text) > MAX_FILTER:
        raise ODataError(f"$filter: longer than {MAX_FILTER} characters")
    return _Parser(text).parse()


@dataclass
class QueryOptions:
    filter: Predicate | None = None
    select: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    orderby: tuple[tuple[str, bool], ...] = ()  # (property, descending)
    top: int | None = None
    skip: int = 0
    count: bool = False

    def apply(self, items: Sequence[Entity]) -> tuple[list[Entity], int]:
        """Filter, order and page; returns (page, how many matched before paging)."""
        rows = [e for e in items if self.filter is None or self.filter(e)]
        for prop, desc in reversed(self.orderby):
            rows.sort(key=_order_key(prop), reverse=desc)
        total = len(rows)
        rows = rows[self.skip:]
        if self.top is not None:
            rows = rows[: self.top]
        return rows, total


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, int(v))
    if isinstance(v, (int, float)):
        return (1, v)
    return (2, str(v))


def _names(text: str, option: str) -> tuple[str, ...]:
    out = []
    for raw in text.split(","):
        name = raw.strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_/]*$", name):
            raise ODataError(f"{option}: {raw.strip()!r} is not a property name")
        out.append(name)
    return tuple(out)


def _whole(text: str, option: str) -> int:
    if not text.strip().isdigit():
        raise ODataError(f"{option}: {text!r} is not a whole number >= 0")
    return int(text)


def parse_options(query: Mapping[str, str]) -> QueryOptions:
    """The ``$`` options of a request's query string."""
    opts = QueryOptions()
    for name, value in query.items():
        if not name.startswith("$"):
            continue
        if name == "$filter":
            opts.filter = parse_filter(value)
        elif name == "$select":
            opts.select = _names(value, name)
        elif name == "$expand":
            opts.expand = _names(re.sub(r"\([^()]*\)", "", value), name)
        elif name == "$orderby":
            order = []
            for raw in value.split(","):
                parts = raw.split()
                if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
                    raise ODataError(f"$orderby: {raw.strip()!r} is not 'Property [asc|desc]'")
                _names(parts[0], name)
                order.append((parts[0], len(parts) == 2 and parts[1].lower() == "desc"))
            opts.orderby = tuple(order)
        elif name == "$top":
            opts.top = _whole(value, name)
        elif name == "$skip":
            opts.skip = _whole(value, name)
        elif name == "$count":
            if value.lower() not in ("true", "false"):
                raise ODataError(f"$count: {value!r} is not true or false")
            opts.count = value.lower() == "true"
        elif name == "$search":
            continue  # accepted, not applied (free-text search is PBX-specific)
        else:
            raise ODataError(f"the query option {name!r} is not supported")
    return opts
