"""What the OpenAI-compatible adapters share: endpoint, credentials, session, error mapping.

Works with OpenAI, Azure OpenAI (``api_version`` adds ``?api-version=``, ``auth="api-key"``
sends the ``api-key`` header), vLLM, Ollama and llama.cpp servers (``base_url`` of their
``/v1``). The API key comes from the ``api_key`` option or ``$OPENAI_API_KEY`` and is never
logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from .base import AdapterFailed, AdapterHTTPError, AdapterTimeout, AdapterUnavailable

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIEndpoint:
    """Connection settings and one aiohttp session per event loop.

    ``timeout`` bounds connecting and each read (a stalled stream fails after it);
    ``extra_headers`` are added to every request.
    """

    def __init__(self, adapter: str, *, base_url: str | None = None, api_key: str | None = None,
                 api_version: str | None = None, auth: str = "bearer", timeout: float = 30.0,
                 extra_headers: dict[str, str] | None = None) -> None:
        if auth not in ("bearer", "api-key", "none"):
            raise ValueError(f"{adapter}: auth must be 'bearer', 'api-key' or 'none', got {auth!r}")
        self.adapter = adapter
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.api_version, self.auth, self.timeout = api_version, auth, timeout
        self.extra_headers = dict(extra_headers or {})
        self._session = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEndpoint({self.base_url!r}, key={'set' if self._api_key else 'unset'})"

    def url(self, path: str) -> str:
        """Full URL for an API path like ``/chat/completions``."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        return f"{url}?api-version={self.api_version}" if self.api_version else url

    def headers(self) -> dict[str, str]:
        """Auth and extra headers for one request."""
        h = dict(self.extra_headers)
        if self._api_key and self.auth == "bearer":
            h["Authorization"] = f"Bearer {self._api_key}"
        elif self._api_key and self.auth == "api-key":
            h["api-key"] = self._api_key
        return h

    def session(self):
        """The aiohttp session for the running loop (a registry-cached adapter may outlive a loop)."""
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout))
            self._session_loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    @contextlib.asynccontextmanager
    async def request(self, path: str, what: str, **kwargs: Any) -> AsyncIterator[Any]:
        """POST to ``path`` and yield the response; HTTP and network errors become typed errors."""
        import aiohttp

        url = self.url(path)
        try:
            async with self.session().post(url, headers=self.headers(), **kwargs) as resp:
                if resp.status >= 400:
                    raise await http_error(self.adapter, what, resp)
                yield resp
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise AdapterTimeout(f"{what}: no answer from {self.base_url} within {self.timeout:g} s",
                                 adapter=self.adapter) from None
        except aiohttp.ClientConnectionError as e:
            if isinstance(e, aiohttp.ClientConnectorError):
                raise AdapterUnavailable(f"{what}: cannot connect to {self.base_url} ({e.os_error}); "
                                         "is the server running and base_url right?", adapter=self.adapter) from None
            raise AdapterFailed(f"{what}: connection to {self.base_url} failed: {e}", adapter=self.adapter) from None


async def http_error(adapter: str, what: str, resp: Any) -> AdapterHTTPError:
    """An ``AdapterHTTPError`` naming the status and the service's own error message."""
    try:
        body = await resp.text()
    except Exception:
        body = ""
    detail = body[:200]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        err = json.loads(body).get("error")
        detail = err.get("message", detail) if isinstance(err, dict) else str(err or detail)
    hint = {401: " (check api_key / OPENAI_API_KEY)", 403: " (key lacks access)",
            404: " (check base_url and model)", 429: " (rate limited or out of quota)"}.get(resp.status, "")
    return AdapterHTTPError(f"{what}: HTTP {resp.status}{hint}: {' '.join(detail.split())}",
                            adapter=adapter, status=resp.status)
