"""Limits that keep one flow template from stalling the worker or eating its memory.

Every call of a worker shares one event loop, so a template is allowed a small budget:

* **steps**: each item a ``{% for %}`` loop takes and each call the template makes (a
  function, a method, a macro, a recursive ``loop()``) costs one; at most :data:`MAX_STEPS`
  per render;
* **time**: a render stops once it has run :data:`MAX_SECONDS` (checked at every step);
* **size**: no string a template builds (``~``, ``+``, ``*``, ``%``, ``.format``, ``join``,
  ``replace``, padding, the output itself) may exceed :data:`MAX_TEXT` characters, and no
  format width or precision, padding width or indent may exceed :data:`MAX_WIDTH`.

The checks raise :class:`jinja2.sandbox.SecurityError`; :mod:`ivr.templating.templates` turns it
into a one-line :class:`~ivr.templating.templates.TemplateError`. The size checks run *before*
the big value is built, from the operands' sizes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any

from jinja2 import pass_environment, pass_eval_context
from jinja2.sandbox import SecurityError

__all__ = [
    "MAX_SECONDS",
    "MAX_STEPS",
    "MAX_TEXT",
    "MAX_WIDTH",
    "budget",
    "check_percent_format",
    "check_text",
    "check_width",
    "guarded_loop",
    "tick",
]

#: Loop items plus calls one render may take.
MAX_STEPS = 100_000
#: Seconds one render may run (the event loop serves every call meanwhile).
MAX_SECONDS = 0.5
#: Characters in any string a template builds, its output included.
MAX_TEXT = 1_000_000
#: Format widths and precisions, padding widths, indents, slice counts.
MAX_WIDTH = 1_000
#: Calls inside calls (a macro calling itself, a recursive loop): refused before Python's
#: own recursion limit, whose RecursionError is slow and can upset the interpreter.
MAX_DEPTH = 50


@dataclass
class _Budget:
    steps: int
    deadline: float
    depth: int = 0


_current: ContextVar[_Budget | None] = ContextVar("ivr_template_budget", default=None)


class budget:  # lower case: used as `with limits.budget():`; a class is cheaper than @contextmanager
    """One render's budget; a render inside a render shares the outer one."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = None if _current.get() is not None else _current.set(
            _Budget(MAX_STEPS, time.perf_counter() + MAX_SECONDS))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)


def tick() -> None:
    """Charge one step; raise once the steps or the time are used up."""
    spent = _current.get()
    if spent is None:
        return
    spent.steps -= 1
    if spent.steps < 0:
        raise SecurityError(f"template ran more than {MAX_STEPS} loop items and calls")
    if time.perf_counter() > spent.deadline:
        raise SecurityError(f"template ran longer than {MAX_SECONDS:g} s")


class nested_call:  # lower case: used as `with limits.nested_call():`
    """One step, and one level of call depth while the call runs."""

    __slots__ = ("_budget",)

    def __enter__(self) -> None:
        tick()
        self._budget = _current.get()
        if self._budget is not None:
            if self._budget.depth >= MAX_DEPTH:
                raise SecurityError(f"template calls nested deeper than {MAX_DEPTH}")
            self._budget.depth += 1

    def __exit__(self, *exc: object) -> None:
        if self._budget is not None:
            self._budget.depth -= 1


def guarded_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a ``{% for %}`` loop iterates: the same items, one step each."""
    for item in iterable:
        tick()
        yield item


def check_text(size: int, what: str = "text") -> None:
    if size > MAX_TEXT:
        raise SecurityError(f"{what} too long (over {MAX_TEXT} characters)")


def check_width(width: Any, what: str = "width") -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise SecurityError(f"{what} {width} too large (max {MAX_WIDTH})")


def text_size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


# --- printf-style `%` and the `format` filter ----------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def check_percent_format(fmt: str, values: Any) -> None:
    """Refuse ``fmt % values`` when a width or precision is too large (or ``*``, taken from
    the values) or the result could exceed MAX_TEXT."""
    specs = 0
    for m in _PERCENT_SPEC.finditer(fmt):
        for part in (m.group(1), m.group(2)):
            if part == "*":
                raise SecurityError("'*' widths are not allowed in templates")
            if part is not None:
                check_width(int(part), "format width")
        if m.group(3) != "%":
            specs += 1
    if isinstance(values, Mapping):
        items: Iterable[Any] = values.values()
    elif isinstance(values, tuple):
        items = values
    else:
        items = (values,)
    longest = max((len(v) if isinstance(v, str) else len(str(v)) if isinstance(v, (int, float)) else 0
                   for v in items), default=0)
    check_text(len(fmt) + specs * max(longest, MAX_WIDTH), "formatted text")


def percent_format(fmt: str, values: Any) -> str:
    check_percent_format(fmt, values)
    return fmt % values


def format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's ``format`` filter (``"%s"|format(x)``) with the same checks as ``%``."""
    if args and kwargs:
        raise TypeError("can't handle positional and keyword arguments at the same time")
    return percent_format(str(value), kwargs or args)


# --- str.format ----------------------------------------------------------------------------

_FORMAT_SPEC = re.compile(r"\A(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?")


class CheckedFormatter(Formatter):
    """``str.format`` for the sandbox: attribute lookups through the sandbox, widths and
    precisions capped, the result's size counted as it grows."""

    def __init__(self, getattr_: Callable[[Any, str], Any], getitem: Callable[[Any, Any], Any]) -> None:
        self._getattr, self._getitem = getattr_, getitem
        self._size = 0

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        from _string import formatter_field_name_split  # type: ignore[import-not-found]

        first, rest = formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, i in rest:
            obj = self._getattr(obj, i) if is_attr else self._getitem(obj, i)
        return obj, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        m = _FORMAT_SPEC.match(format_spec)
        if m:
            for part in ("width", "precision"):
                if m.group(part):
                    check_width(int(m.group(part)), f"format {part}")
        out = super().format_field(value, format_spec)
        self._size += len(out)
        check_text(self._size, "formatted text")
        return out


# --- str methods and filters that can make big strings -------------------------------------


def _join_size(sep: str, items: list[Any]) -> int:
    return sum(len(i) if isinstance(i, str) else len(str(i)) for i in items) + len(sep) * max(len(items) - 1, 0)


def _replace_size(s: str, old: str, new: str, count: int = -1) -> int:
    hits = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


def checked_str_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a ``str`` method a template calls, refusing calls that would build a huge string.
    Returns NotImplemented for methods that need no check."""
    s: str = method.__self__
    name = method.__name__
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width")
        if isinstance(width, int) and width > len(s):
            check_width(width, f"{name} width")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        check_width(size, "tab size")
        check_text(len(s) + s.count("\t") * max(int(size), 0))
    elif name == "join":
        items = list(args[0]) if args else []
        check_text(_join_size(s, items), "joined text")
        return method(items)
    elif name == "replace":
        if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            count = args[2] if len(args) > 2 else kwargs.get("count", -1)
            check_text(_replace_size(s, args[0], args[1], count), "replaced text")
    elif name in ("translate", "maketrans"):
        raise SecurityError(f"str.{name} is not allowed in templates")
    return NotImplemented


def center_filter(value: Any, width: int = 80) -> str:
    check_width(width, "center width")
    return str(value).center(width)


def indent_filter(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    from jinja2.filters import do_indent

    text = str(s)
    if isinstance(width, int):
        check_width(width, "indent")
    else:
        check_text(len(str(width)) * (text.count("\n") + 1) + len(text), "indented text")
    return do_indent(text, width, first, blank)


@pass_eval_context
def join_filter(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    from jinja2.filters import sync_do_join

    items = list(value)
    if attribute is None:
        check_text(_join_size(str(d), items), "joined text")
    else:
        check_text(len(str(d)) * len(items), "joined text")
    return sync_do_join(eval_ctx, items, d, attribute)


@pass_eval_context
def replace_filter(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    from jinja2.filters import do_replace

    check_text(_replace_size(str(s), str(old), str(new), -1 if count is None else count), "replaced text")
    return do_replace(eval_ctx, s, old, new, count)


@pass_environment
def wordwrap_filter(environment: Any, s: Any, width: int = 79, break_long_words: bool = True,
                    wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    from jinja2.filters import do_wordwrap

    text = str(s)
    if wrapstring is not None:
        check_text(len(text) + len(wrapstring) * (len(text) + 1), "wrapped text")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


@pass_eval_context
def tojson_filter(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
    from jinja2.filters import do_tojson

    check_width(indent, "tojson indent")
    return do_tojson(eval_ctx, value, indent)


def slice_filter(value: Any, slices: int, fill_with: Any = None) -> Any:
    from jinja2.filters import sync_do_slice

    check_width(slices, "slice count")
    return sync_do_slice(value, slices, fill_with)


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's names
    from jinja2.utils import generate_lorem_ipsum

    check_width(n * max, "lipsum words")
    return generate_lorem_ipsum(n, html, min, max)
