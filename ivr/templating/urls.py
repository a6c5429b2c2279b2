"""URLs built from templates: every value percent-encoded unless marked ``| raw_url``.

An http step's ``url`` (and an agent http tool's) renders each ``{{ value }}`` with
:func:`encode_value`, so a caller number like ``../../admin/delete?all=1#`` stays one path
segment (``..%2F..%2Fadmin%2Fdelete%3Fall%3D1%23``) instead of reaching another endpoint.
A trusted value that *is* a URL or a path (a base URL from ``params``) is written
``{{ params.base | raw_url }}``.

:func:`http_host` checks the rendered URL and :func:`host_of` names only its host: error
messages and logs never carry the URL (its query may hold secrets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from jinja2 import nodes

from . import limits
from .templates import ENV, RawUrl, TemplateError

__all__ = ["UrlError", "body_warning", "encode_value", "host_of", "http_host", "render_url", "url_warning"]


class UrlError(ValueError):
    """A rendered URL that is not an absolute http(s) URL; ``str()`` names only its host."""


def encode_value(value: Any) -> str:
    """A value as it goes into a URL: percent-encoded (``/ ? # & =`` too), raw when marked."""
    if isinstance(value, RawUrl):
        return str(value)
    if value is None:
        return ""
    return quote(str(value), safe="")


_URL_ENV = type(ENV)(undefined=jinja2.StrictUndefined, autoescape=False, finalize=encode_value,
                     keep_trailing_newline=True)
_URL_ENV.filters.update(ENV.filters)
_URL_ENV.globals.update(ENV.globals)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return _URL_ENV.from_string(source)


def render_url(template: str, context: Mapping[str, Any]) -> str:
    """Render a URL template with its values percent-encoded (see the module doc)."""
    # Messages name the url's host, not its text: a literal key in the query stays out of logs.
    try:
        compiled = _compiled(str(template))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"url template for {host_of(template)}: syntax error: {exc.message}") from None
    try:
        with limits.budget():
            return compiled.render(context)
    except Exception as exc:  # noqa: BLE001 - the author's expression, as Template.render
        reason = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
        raise TemplateError(f"url template for {host_of(template)} failed: {reason}") from None


def host_of(url: str) -> str:
    """The host of ``url`` for messages, or ``?`` when there is none."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def http_host(url: str) -> str:
    """The host of an absolute http(s) URL; :class:`UrlError` (host only) otherwise."""
    host = host_of(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UrlError(f"{host}: invalid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UrlError(f"{host}: not an http(s) URL")
    if not parts.hostname:
        raise UrlError("?: the URL has no host")
    if any(c in url for c in "\r\n\x00 "):
        raise UrlError(f"{host}: invalid URL (a space or control character)")
    return host


# --- validation: what `ivr validate` warns about -------------------------------------------

_ORIGIN_PREFIX = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*://[^/?#{]+[/?#]")


def _outputs(source: str) -> list[nodes.Node]:
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return []
    out: list[nodes.Node] = []
    for node in ast.find_all(nodes.Output):
        out.extend(node.nodes)
    return out


def url_warning(source: str) -> str | None:
    """Why a url template will not work as meant, or None: a value before the path (the
    scheme, host or port) is percent-encoded unless marked ``| raw_url``."""
    parts = _outputs(source)
    prefix = ""
    for node in parts:
        if isinstance(node, nodes.TemplateData):
            prefix += node.data
            continue
        if _ORIGIN_PREFIX.match(prefix):
            return None
        if isinstance(node, nodes.Filter) and node.name == "raw_url":
            return None
        return ("values in a url are percent-encoded, so this one cannot give the scheme, host or port: "
                "write '| raw_url' after a trusted base URL (e.g. {{ params.base | raw_url }}/path)")
    return None


def body_warning(source: str) -> str | None:
    """A warning for a ``body:`` that renders values into JSON-looking text, or None."""
    parts = _outputs(source)
    values = [n for n in parts if not isinstance(n, nodes.TemplateData)]
    text = "".join(n.data for n in parts if isinstance(n, nodes.TemplateData)).lstrip()
    if not values or not text.startswith(("{", "[")):
        return None
    if all(isinstance(n, nodes.Filter) and n.name == "tojson" for n in values):
        return None  # every value is JSON-encoded
    return ("body renders values into JSON text: a value with a quote in it (a caller's name) can add "
            "keys; use 'json: {...}' instead (or '| tojson' on every value)")
