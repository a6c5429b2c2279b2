"""``StreamRetry``: how both audio streams answer a PBX that refuses or fails them.

The GET (caller's voice) and the POST (audio to the caller) follow the same rules, so they
live here once:

* 401: the token was refused - drop it and try once more with a fresh one; a second 401 in a
  row is an :class:`~ivr.pbx.errors.AuthenticationError`;
* 424 (or 404 while the leg still exists): no media yet - retry with backoff until
  ``media_timeout``, then :class:`~ivr.pbx.errors.MediaNotReadyError`; 404 for a leg that is
  gone ends the stream;
* 429 and 5xx: the PBX is overloaded or failing - retry with backoff until ``media_timeout``;
* anything else: the matching :class:`~ivr.pbx.errors.PbxError` at once.

Once a stream works (:meth:`StreamRetry.streaming`), the next trouble starts from scratch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .auth import TokenManager
from .backoff import Backoff
from .config import PbxConfig
from .errors import AuthenticationError, MediaNotReadyError, error_for_status, message_from_body

log = logging.getLogger(__name__)


class StreamRetry:
    """The retry state of one audio stream: backoff, the media deadline, one re-auth."""

    def __init__(self, name: str, method: str, url: str, cfg: PbxConfig, tokens: TokenManager,
                 exists: Callable[[], Awaitable[bool]], media_timeout: float) -> None:
        self._name = name  # "inbound" / "outbound", as the streams' own log lines say
        self._method, self._url, self._cfg = method, url, cfg
        self._tokens = tokens
        self._exists = exists
        self._media_timeout = media_timeout
        self.backoff = Backoff(0.05, 1.0, cfg.reconnect_jitter)
        self._reauthed = False
        self.deadline = 0.0
        self.restart_deadline()

    def restart_deadline(self) -> None:
        """Give the PBX ``media_timeout`` from now to let the stream work."""
        self.deadline = asyncio.get_running_loop().time() + self._media_timeout

    @property
    def expired(self) -> bool:
        """``media_timeout`` has passed without the stream working."""
        return asyncio.get_running_loop().time() > self.deadline

    def streaming(self) -> None:
        """The stream works: forget earlier trouble (re-auth, backoff, deadline)."""
        self._reauthed = False
        self.backoff.reset()
        self.restart_deadline()

    async def refused(self, status: int, reason: str, body: bytes, token: str) -> float | None:
        """The PBX answered ``status`` (not 2xx). Returns the delay before the next attempt
        (0: at once), None if the participant is gone (the stream ends), or raises."""
        message = message_from_body(body, reason)
        if status == 401:
            if self._reauthed:
                raise AuthenticationError(401, message, self._method, self._url,
                                          pbx_url=self._cfg.url, client_id=self._cfg.client_id)
            self._reauthed = True
            self._tokens.invalidate(token)
            return 0.0
        if status in (404, 424):
            # 404 is also "no media yet" on some servers: ask whether the leg exists.
            if status == 404 and not await self._exists():
                return None
            if self.expired:
                raise MediaNotReadyError(status, message, self._method, self._url)
            return self.backoff.next()
        if status == 429 or status >= 500:
            if self.expired:
                raise error_for_status(status, message, self._method, self._url)
            log.info("%s stream %s: HTTP %d; retrying", self._name, self._url, status)
            return self.backoff.next()
        raise error_for_status(status, message, self._method, self._url)
