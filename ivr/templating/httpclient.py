"""One HTTP request for a flow's http step or an agent's http tool, safe with secrets.

* The URL must be absolute http(s); header names and values must not hold line breaks (a
  CRLF from a caller or a model would split the request).
* Redirects are followed here (at most :data:`MAX_REDIRECTS`), not by aiohttp, so that a
  redirect to another origin (scheme, host or port) carries only :data:`SAFE_HEADERS`: an
  ``X-Api-Key`` or ``Authorization`` meant for one service never reaches another. 303 (and
  301/302 after a POST) continue as GET without a body, as browsers do.
* Every failure is an :class:`HttpFailure` whose text names only the host and the kind of
  failure, never the URL (its query may hold a token) nor a header value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .urls import UrlError, host_of, http_host

__all__ = ["MAX_REDIRECTS", "SAFE_HEADERS", "HttpAnswer", "HttpFailure", "fetch"]

MAX_REDIRECTS = 10
#: Headers that still go along when a redirect leads to another origin.
SAFE_HEADERS = frozenset({"accept", "accept-language", "content-type", "user-agent"})
_REDIRECTS = (301, 302, 303, 307, 308)
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


class HttpFailure(Exception):
    """The request failed; ``str()`` is ``"<host>: <what>"`` and safe to log."""


@dataclass
class HttpAnswer:
    status: int
    content_type: str
    text: str


def check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\x00"):
            raise ValueError(f"header {name.strip()[:40]!r} has a line break or NUL in it")


def _origin(url: Any) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


async def fetch(method: str, url: str, *, headers: Mapping[str, str] | None = None,
                params: Mapping[str, str] | None = None, json: Any = None, data: bytes | None = None,
                timeout: float = 5.0, max_body: int = 1024 * 1024) -> HttpAnswer:
    """Send the request (following redirects as the module doc says); the answer's first
    ``max_body`` bytes as text. Raises :class:`HttpFailure` for every failure."""
    import aiohttp
    from yarl import URL

    try:
        host = http_host(url)
        sent = dict(headers or {})
        check_headers(sent)
    except (UrlError, ValueError) as exc:
        raise HttpFailure(str(exc) if isinstance(exc, UrlError) else f"{host_of(url)}: {exc}") from None
    body: dict[str, Any] = {"json": json} if json is not None else {"data": data} if data is not None else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            # as rendered (values are encoded already; decoding %3D etc. again would undo that),
            # with only non-ASCII text the author wrote percent-encoded as UTF-8
            target: Any = URL(_NON_ASCII.sub(lambda m: quote(m.group()), url), encoded=True)
            for _ in range(MAX_REDIRECTS + 1):
                async with session.request(method, target, headers=sent, params=params, allow_redirects=False,
                                           **body) as resp:
                    location = resp.headers.get("Location")
                    if resp.status not in _REDIRECTS or not location:
                        raw = await resp.content.read(max_body)
                        return HttpAnswer(resp.status, resp.content_type or "",
                                          raw.decode(resp.charset or "utf-8", errors="replace"))
                    following = resp.url.join(URL(location))
                if following.scheme not in ("http", "https") or not following.host:
                    raise HttpFailure(f"{host}: redirected to a non-http(s) URL")
                if _origin(following) != _origin(resp.url):
                    sent = {k: v for k, v in sent.items() if k.lower() in SAFE_HEADERS}
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    method = "GET" if method != "HEAD" else method
                    body = {}
                params = None  # the Location carries its own query
                target, host = following, following.host
            raise HttpFailure(f"{host}: more than {MAX_REDIRECTS} redirects")
    except HttpFailure:
        raise
    except TimeoutError:  # asyncio's timeouts are this class
        raise HttpFailure(f"{host}: timed out") from None
    except aiohttp.ClientConnectorError as exc:
        why = exc.os_error.strerror if exc.os_error is not None and exc.os_error.strerror else "refused"
        raise HttpFailure(f"{host}: cannot connect ({why})") from None
    except aiohttp.InvalidURL:
        raise HttpFailure(f"{host}: invalid URL") from None
    except (aiohttp.ClientError, ValueError) as exc:
        # the type only: aiohttp's messages may quote the URL
        raise HttpFailure(f"{host}: {type(exc).__name__}") from None
