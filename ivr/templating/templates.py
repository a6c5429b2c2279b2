"""Sandboxed Jinja2 templates and conditions for flow files.

Every string a flow author writes in a templated field becomes a :class:`Template` when the
flow is loaded: a ``str`` subclass that carries its compiled Jinja2 form, so syntax errors are
load errors (with file:line:col, mapped by the loader) and rendering a call's prompt costs one
function call. Strings without ``{{``/``{%``/``{#`` skip Jinja entirely.

Policy (documented in ``docs/flows.md``):

* The environment is :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`: no access to
  ``_private`` or dunder attributes, no mutation of lists/dicts, bounded ``range``; on top,
  :mod:`ivr.templating.limits` bounds each render's steps, time and the size of every string it
  builds (format widths included), so a template cannot eat the CPU or the memory.
* Undefined names raise (:class:`jinja2.StrictUndefined`); use ``x | default('y')`` or
  ``x is defined`` for optional values. ``None`` renders as an empty string.
* A template that is exactly one ``{{ expression }}`` is *native*: :func:`render_value`
  returns the expression's Python value (so ``set: {tries: "{{ tries + 1 }}"}`` stores an int).
* A condition (``if:``, ``when:``) is a bare expression (``tries > 2``), a template
  (``"{{ digits == '1' }}"``) or a YAML boolean.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from . import limits

__all__ = [
    "Condition",
    "Template",
    "TemplateError",
    "compile_template",
    "evaluate",
    "render",
    "render_value",
]

# Exponents and repetitions beyond these are refused: `9 ** 9 ** 9` or `'x' * 10**9`
# would otherwise stall the event loop that serves every call.
_MAX_POWER_BITS = 4096
_MAX_REPEAT = 100_000
_MARKERS = ("{{", "{%", "{#")
_SINGLE_EXPR = re.compile(r"\A\s*\{\{(?P<expr>.*?)\}\}\s*\Z", re.S)
_FALSE_WORDS = frozenset({"", "false", "no", "off", "0", "none"})


class RawUrl(str):
    """A value marked with ``| raw_url``: an http step's url takes it without percent-encoding."""

    __slots__ = ()


class TemplateError(ValueError):
    """A template failed to compile or to render; ``str()`` says which and why."""


class _FlowSandbox(ImmutableSandboxedEnvironment):
    """The sandbox plus the limits of :mod:`ivr.templating.limits`, so no template can stall the
    loop or blow the memory: capped ``**``, ``*``, ``+``, ``%``, ``~`` and string methods, a
    step budget charged by every loop item and call, a time budget per render."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right > 0 and left.bit_length() * right > _MAX_POWER_BITS:
                raise SecurityError(f"power result too large (over {_MAX_POWER_BITS} bits)")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    if len(seq) * n > _MAX_REPEAT:
                        raise SecurityError(f"repetition result too long (max {_MAX_REPEAT})")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
                raise SecurityError(f"product too large (over {_MAX_POWER_BITS} bits)")
        if operator == "+":
            limits.check_text(limits.text_size(left) + limits.text_size(right))
        if operator == "%" and isinstance(left, str):
            limits.check_percent_format(left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `vars.items` or `last.keys` must mean the flow's values, not dict methods.
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        with limits.nested_call():
            if isinstance(getattr(obj, "__self__", None), str) and not isinstance(obj, type):
                result = limits.checked_str_call(obj, args, kwargs)
                if result is not NotImplemented:
                    return result
            return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # str.format / format_map through a formatter that caps widths and the result's size
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
                "format", "format_map") or not isinstance(value.__self__, str):
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked_format(*args: Any, **kwargs: Any) -> str:
            formatter = limits.CheckedFormatter(self.getattr, self.getitem)
            if not is_map:
                return formatter.vformat(fmt, args, kwargs)
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            return formatter.vformat(fmt, (), args[0])

        return checked_format

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        return super()._generate(_Guard().visit(source), name, filename, defer_init)


class _Guard(NodeTransformer):
    """Rewrites a parsed template before compiling: every ``{% for %}`` iterates through
    :func:`limits.guarded_loop` (one step per item) and every ``~`` result is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "ivr_loop_guard", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "ivr_text_guard", [], [], None, None, lineno=node.lineno)


def _text_guard(value: Any) -> Any:
    limits.check_text(limits.text_size(value))
    return value


def _finalize(value: Any) -> Any:
    return "" if value is None else value


ENV = _FlowSandbox(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize,
                   keep_trailing_newline=True)
ENV.filters.update({
    "ivr_loop_guard": limits.guarded_loop, "ivr_text_guard": _text_guard,
    "format": limits.format_filter, "center": limits.center_filter, "indent": limits.indent_filter,
    "join": limits.join_filter, "replace": limits.replace_filter, "wordwrap": limits.wordwrap_filter,
    "tojson": limits.tojson_filter, "slice": limits.slice_filter,
    # marks a trusted value that an http step's url takes as it is (see ivr.templating.urls)
    "raw_url": RawUrl,
})
ENV.globals["lipsum"] = limits.lipsum


def has_template_syntax(text: str) -> bool:
    """True when ``text`` contains Jinja markers and so needs compiling."""
    return any(m in text for m in _MARKERS)


def _syntax_error(exc: jinja2.TemplateSyntaxError, source: str) -> TemplateError:
    where = f" (template line {exc.lineno})" if exc.lineno and "\n" in source.strip() else ""
    err = TemplateError(f"template syntax error: {exc.message}{where}")
    err.lineno = exc.lineno  # type: ignore[attr-defined]
    return err


def _read_names(ast: nodes.Template) -> frozenset[str]:
    """Top-level names a template reads. Cheaper than ``meta.find_undeclared_variables``
    (which runs a code generator); names the template assigns itself are left out."""
    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return frozenset(n.name for n in ast.find_all(nodes.Name) if n.ctx == "load" and n.name not in stored)


class Template(str):
    """A string that is also a compiled template.

    ``names`` is the set of top-level variables the template reads (used by the validator to
    warn about misspelt names); ``is_static`` means no Jinja syntax, render returns the text.
    """

    __slots__ = ("_expr", "_tmpl", "names")
    _tmpl: jinja2.Template | None
    _expr: Callable[..., Any] | None
    names: frozenset[str]

    def __new__(cls, source: str) -> Template:
        self = super().__new__(cls, source)
        self._tmpl = self._expr = None
        self.names = frozenset()
        if not has_template_syntax(source):
            return self
        try:
            single = _SINGLE_EXPR.match(source)
            inner = single.group("expr") if single else None
            if inner is not None and "{{" not in inner and "}}" not in inner:
                self._expr = ENV.compile_expression(inner, undefined_to_none=False)
            ast = ENV.parse(source)
            self.names = _read_names(ast)
            self._tmpl = ENV.from_string(ast)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(exc, source) from None
        return self

    @property
    def is_static(self) -> bool:
        """True when the text has no template syntax."""
        return self._tmpl is None

    def render(self, context: Mapping[str, Any]) -> str:
        """Render to a string; raises :class:`TemplateError` on undefined names etc."""
        if self._tmpl is None:
            return str(self)
        try:
            with limits.budget():
                chunks: list[str] = []
                size = 0
                tmpl = self._tmpl  # what Template.render does, with the output's size checked as it grows
                for chunk in tmpl.root_render_func(tmpl.new_context(dict(context))):
                    size += len(chunk)
                    limits.check_text(size, "output")
                    chunks.append(chunk)
                return "".join(chunks)
        except Exception as exc:  # noqa: BLE001 - author's expression: 1/0, 'a' + 1, huge range
            raise TemplateError(f"template {str(self)!r} failed: {_reason(exc)}") from None

    def value(self, context: Mapping[str, Any]) -> Any:
        """Render natively: a single ``{{ expr }}`` gives the expression's value."""
        if self._expr is None:
            return self.render(context)
        return _call_expr(self._expr, context, str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Template, (str(self),))


def _call_expr(fn: Callable[..., Any], context: Mapping[str, Any], source: str) -> Any:
    try:
        with limits.budget():
            result = fn(**context)
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        limits.check_text(limits.text_size(result), "value")
        return result
    except Exception as exc:  # noqa: BLE001 - see Template.render
        raise TemplateError(f"expression {source!r} failed: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, jinja2.TemplateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Condition:
    """A compiled condition: a YAML bool, a bare expression, or a template string."""

    __slots__ = ("_const", "_expr", "_tmpl", "names", "source")

    def __init__(self, source: str | bool | int | float) -> None:
        self.source = source
        self._const: bool | None = None
        self._expr: Callable[..., Any] | None = None
        self._tmpl: Template | None = None
        self.names: frozenset[str] = frozenset()
        if isinstance(source, (bool, int, float)):
            self._const = bool(source)
            return
        text = str(source)
        if not text.strip():
            raise TemplateError("condition is empty")
        single = _SINGLE_EXPR.match(text)
        if single and "{{" not in single.group("expr") and "}}" not in single.group("expr"):
            text = single.group("expr")
        elif has_template_syntax(text):
            # Mixed text and placeholders: render, then read the words true/false.
            self._tmpl = Template(text)
            self.names = self._tmpl.names
            return
        try:
            self._expr = ENV.compile_expression(text, undefined_to_none=False)
            self.names = _read_names(ENV.parse("{{ " + text + " }}"))
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_error(exc, text) from None

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """The condition's truth value in ``context``."""
        if self._const is not None:
            return self._const
        if self._tmpl is not None:
            return self._tmpl.render(context).strip().lower() not in _FALSE_WORDS
        assert self._expr is not None
        value = _call_expr(self._expr, context, str(self.source))
        try:
            return bool(value)
        except Exception as exc:  # noqa: BLE001
            raise TemplateError(f"condition {self.source!r} failed: {_reason(exc)}") from None

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


@lru_cache(maxsize=512)
def compile_template(source: str) -> Template:
    """Compile ``source`` once (cached); raises :class:`TemplateError` on bad syntax."""
    return Template(source)


@lru_cache(maxsize=512)
def _condition(source: str | bool) -> Condition:
    return Condition(source)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render a template string (compiled or not) to text in ``context``."""
    tmpl = template if isinstance(template, Template) else compile_template(template)
    return tmpl.render(context)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a YAML value: strings natively (see module doc), dicts and lists recursively."""
    if isinstance(value, str):
        tmpl = value if isinstance(value, Template) else compile_template(value)
        return tmpl.value(context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [render_value(v, context) for v in value]
    return value


def evaluate(condition: Condition | str | bool, context: Mapping[str, Any]) -> bool:
    """Evaluate a condition: ``"{{ digits == '1' }}"``, ``"tries > 2"`` or a bool."""
    cond = condition if isinstance(condition, Condition) else _condition(condition)
    return cond.evaluate(context)


def template_nodes(value: Any) -> list[Template]:
    """All :class:`Template` strings inside a (nested) value."""
    out: list[Template] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Template):
            out.append(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return out

