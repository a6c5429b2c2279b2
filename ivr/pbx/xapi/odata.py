"""OData v4 query options for the 3CX Configuration API, built so caller data cannot change
the query's meaning.

String literals are quoted the way OData says (``'O''Brien'``: a quote inside is doubled),
property names are checked against the OData identifier syntax, and the whole query string is
percent-encoded once, here. ``Users?$filter=`` + ``eq("Number", number)`` is safe for any
``number`` a caller typed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import quote

__all__ = [
    "Query",
    "and_",
    "contains",
    "eq",
    "key",
    "literal",
    "ne",
    "not_",
    "or_",
    "prop",
    "startswith",
    "tolower",
]

# A property path: identifiers separated by '/' (navigation), e.g. ``Hours/Type``.
_PROP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_ORDER = re.compile(r"^([A-Za-z_][A-Za-z0-9_/]*)(\s+(asc|desc))?$", re.IGNORECASE)


class Expr(str):
    """A ``$filter`` expression built by this module (a plain ``str`` is never trusted as one)."""


def prop(name: str) -> Expr:
    """A property name, checked: ``prop("Hours/Type")``; ValueError for anything else."""
    if not isinstance(name, str) or not _PROP.match(name):
        raise ValueError(f"OData property name {name!r}: use letters, digits, '_' and '/'")
    return Expr(name)


def literal(value: object) -> str:
    """An OData literal: strings quoted (quotes doubled), booleans, numbers, null, dates."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"OData literal: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("OData literal: a datetime needs a time zone")
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"OData literal: unsupported type {type(value).__name__}")


def _operand(field_or_expr: str) -> str:
    return field_or_expr if isinstance(field_or_expr, Expr) else prop(field_or_expr)


def eq(field_: str, value: object) -> Expr:
    """``Field eq 'value'`` (``field_`` may be ``tolower("Field")``)."""
    return Expr(f"{_operand(field_)} eq {literal(value)}")


def ne(field_: str, value: object) -> Expr:
    """``Field ne 'value'``."""
    return Expr(f"{_operand(field_)} ne {literal(value)}")


def startswith(field_: str, value: str) -> Expr:
    """``startswith(Field,'value')``."""
    return Expr(f"startswith({_operand(field_)},{literal(value)})")


def contains(field_: str, value: str) -> Expr:
    """``contains(Field,'value')``."""
    return Expr(f"contains({_operand(field_)},{literal(value)})")


def tolower(field_: str) -> Expr:
    """``tolower(Field)``, as an operand of :func:`eq`, :func:`startswith`..."""
    return Expr(f"tolower({_operand(field_)})")


def _join(op: str, parts: Iterable[Expr]) -> Expr:
    items = list(parts)
    for p in items:
        if not isinstance(p, Expr):
            raise TypeError(f"OData {op}: operands must be built with this module, got {p!r}")
    if not items:
        raise ValueError(f"OData {op}: needs at least one operand")
    if len(items) == 1:
        return items[0]
    return Expr(f" {op} ".join(f"({p})" for p in items))


def and_(*parts: Expr) -> Expr:
    """``(a) and (b) ...``."""
    return _join("and", parts)


def or_(*parts: Expr) -> Expr:
    """``(a) or (b) ...``."""
    return _join("or", parts)


def not_(part: Expr) -> Expr:
    """``not (a)``."""
    if not isinstance(part, Expr):
        raise TypeError(f"OData not: operand must be built with this module, got {part!r}")
    return Expr(f"not ({part})")


def key(value: str | int) -> str:
    """An entity key in a path, percent-encoded: ``Users(Number='1''0')`` takes ``key("1'0")``."""
    return quote(literal(value), safe="")


@dataclass(frozen=True)
class Query:
    """The query options of one request; ``str(query)`` is the encoded query string."""

    filter: Expr | None = None
    select: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    orderby: tuple[str, ...] = ()
    top: int | None = None
    skip: int | None = None
    count: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # already-checked options, e.g. $search

    def __post_init__(self) -> None:
        if self.filter is not None and not isinstance(self.filter, Expr):
            raise TypeError("Query.filter: build it with ivr.pbx.xapi.odata (eq, and_, ...), not a plain string")
        for name in (*self.select, *self.expand):
            prop(name)
        for item in self.orderby:
            if not _ORDER.match(item.strip()):
                raise ValueError(f"OData $orderby item {item!r}: use 'Property' or 'Property desc'")
        for name, n in (("$top", self.top), ("$skip", self.skip)):
            if n is not None and (not isinstance(n, int) or n < 0):
                raise ValueError(f"OData {name}: must be a whole number >= 0, got {n!r}")

    def params(self) -> list[tuple[str, str]]:
        """The options as (name, value) pairs, not yet encoded."""
        out: list[tuple[str, str]] = []
        if self.filter is not None:
            out.append(("$filter", str(self.filter)))
        if self.select:
            out.append(("$select", ",".join(self.select)))
        if self.expand:
            out.append(("$expand", ",".join(self.expand)))
        if self.orderby:
            out.append(("$orderby", ",".join(" ".join(o.split()) for o in self.orderby)))
        if self.top is not None:
            out.append(("$top", str(self.top)))
        if self.skip is not None:
            out.append(("$skip", str(self.skip)))
        if self.count:
            out.append(("$count", "true"))
        out.extend(self.extra.items())
        return out

    def __str__(self) -> str:
        return "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in self.params())

    def replace(self, **changes: object) -> Query:
        """A copy with some options changed (paging)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return Query(**values)
