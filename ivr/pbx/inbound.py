"""``InboundAudio``: the caller's voice from ``GET .../participants/{id}/stream``.

Raw PCM s16le 8 kHz mono, yielded as it arrives (``async for chunk in inbound``) or, given a
:class:`~ivr.pbx.tick.SharedTick`, in blocks: after each chunk the reader waits for the next
tick and then takes everything that arrived meanwhile (PbxConfig ``inbound_block_ms``). Before
media exists the PBX answers 424 (or 404): retried with backoff up to ``media_timeout``, as are
429 and 5xx answers (an overloaded or failing PBX).
If the stream is cut while the participant still exists (typically: its token was revoked
because a new one was issued), it is reopened with a fresh token, transparently. Iteration
ends when the participant is gone or ``close()`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from yarl import URL

from .auth import TokenManager
from .backoff import Backoff
from .config import PbxConfig
from .errors import (
    AuthenticationError,
    MediaNotReadyError,
    PbxUnreachableError,
    error_for_status,
    message_from_body,
)
from .rest import participant_url_path
from .tick import SharedTick

log = logging.getLogger(__name__)


def stream_timeout(cfg: PbxConfig) -> aiohttp.ClientTimeout:
    """Long-lived streams: bounded connect, unbounded total and read."""
    return aiohttp.ClientTimeout(total=None, connect=cfg.request_timeout, sock_read=None)


class InboundAudio:
    """Reads one participant's incoming audio. Single consumer.

    ``exists()`` answers whether the participant is still there (the client asks REST);
    it decides between reopening a cut stream and ending.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenManager,
        cfg: PbxConfig,
        dn: str,
        participant_id: int,
        *,
        exists: Callable[[], Awaitable[bool]],
        media_timeout: float | None = None,
        tick: SharedTick | None = None,
    ) -> None:
        self.dn = dn
        # Reading in blocks: after each read, wait for the next shared tick so audio gathers
        # (one wake-up and one DSP pass per ~40 ms per call instead of one per 20 ms chunk).
        self._tick = tick
        self.participant_id = participant_id
        self._session = session
        self._tokens = tokens
        self._cfg = cfg
        self._exists = exists
        self._media_timeout = media_timeout if media_timeout is not None else cfg.media_timeout
        self._url = cfg.url + participant_url_path(dn, participant_id) + "/stream"
        self._resp: aiohttp.ClientResponse | None = None
        self._closed = asyncio.Event()
        self._iterating = False
        # metrics
        self.bytes_received = 0
        self.opens = 0  # successful opens; > 1 means the stream was reopened
        self.first_byte_at: float | None = None  # loop time

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed.is_set()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterating:
            raise RuntimeError(f"inbound audio of {self.dn}/{self.participant_id}: one reader only")
        self._iterating = True
        return self._iterate()

    async def close(self) -> None:
        """Stop reading; a pending ``async for`` ends."""
        self._closed.set()
        if self._resp is not None:
            self._resp.close()

    async def _iterate(self) -> AsyncIterator[bytes]:
        cfg = self._cfg
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.05, 1.0, cfg.reconnect_jitter)
        deadline = loop.time() + self._media_timeout
        reauthed = False
        while not self.closed:
            token = await self._tokens.token()
            try:
                resp = await self._session.get(
                    URL(self._url, encoded=True),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=stream_timeout(cfg),
                    ssl=cfg.ssl_context(),
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if self.closed:
                    return
                if loop.time() > deadline:
                    raise PbxUnreachableError(None, str(exc) or type(exc).__name__, "GET", self._url) from exc
                await self._pause(backoff.next())
                continue
            self._resp = resp
            try:
                if resp.status == 200:
                    self.opens += 1
                    reauthed = False
                    backoff.reset()
                    # The reading loop is inlined, not a nested generator: one async-generator
                    # hop per block instead of two (hundreds of calls x 25 blocks a second).
                    try:
                        while True:
                            chunk = await resp.content.readany()
                            if not chunk:
                                break
                            if self.first_byte_at is None:
                                self.first_byte_at = loop.time()
                            self.bytes_received += len(chunk)
                            yield chunk
                            if self._tick is not None and not self.closed:
                                await self._tick.wait()  # readany() then returns all that came meanwhile
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                        if not self.closed:
                            log.info("inbound stream %s interrupted: %s", self._url, exc or type(exc).__name__)
                    if self.closed or not await self._exists():
                        return
                    log.info("inbound stream %s cut while the call goes on; reopening", self._url)
                    deadline = loop.time() + self._media_timeout
                    continue
                body = await resp.read()
                message = message_from_body(body, resp.reason or "")
                if resp.status == 401:
                    if reauthed:
                        raise AuthenticationError(
                            401, message, "GET", self._url, pbx_url=cfg.url, client_id=cfg.client_id
                        )
                    reauthed = True
                    self._tokens.invalidate(token)
                    continue
                if resp.status in (404, 424):
                    # 404 is also "no media yet" on some servers: ask whether the leg exists.
                    if resp.status == 404 and not await self._exists():
                        return
                    if loop.time() > deadline:
                        raise MediaNotReadyError(resp.status, message, "GET", self._url)
                    await self._pause(backoff.next())
                    continue
                if resp.status == 429 or resp.status >= 500:
                    # The PBX is overloaded or failing right now: try again until media_timeout.
                    if loop.time() > deadline:
                        raise error_for_status(resp.status, message, "GET", self._url)
                    log.info("inbound stream %s: HTTP %d; retrying", self._url, resp.status)
                    await self._pause(backoff.next())
                    continue
                raise error_for_status(resp.status, message, "GET", self._url)
            finally:
                resp.close()
                self._resp = None

    async def _pause(self, delay: float) -> None:
        """Sleep, but wake up at once on close()."""
        try:
            await asyncio.wait_for(self._closed.wait(), delay)
        except asyncio.TimeoutError:
            pass
