"""``InboundAudio``: the caller's voice from ``GET .../participants/{id}/stream``.

Raw PCM s16le 8 kHz mono, handed to a callback (``start(on_audio)``, what calls use) or
yielded (``async for chunk in inbound``). Given a :class:`~ivr.pbx.tick.SharedTick` and a
block length (PbxConfig ``inbound_block_ms``), the stream is polled from the shared timer
every block: everything that arrived meanwhile is handed over at once, with no task wake-up
per chunk or per block (hundreds of calls x 50 chunks a second). Before media exists the PBX
answers 424 (or 404): retried with backoff up to ``media_timeout``, as are 429 and 5xx
answers (an overloaded or failing PBX).
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


class _CallbackFailed(Exception):
    """The consumer's ``on_audio`` raised: the stream stops and the task raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
        block_s: float = 0.0,
    ) -> None:
        self.dn = dn
        # Reading in blocks: poll the response every block_s from the shared timer (one DSP
        # pass per ~40 ms per call instead of one per 20 ms chunk, and no task wake-up).
        self._tick = tick if block_s > 0 else None
        self._block_s = block_s
        self.participant_id = participant_id
        self._session = session
        self._tokens = tokens
        self._cfg = cfg
        self._exists = exists
        self._media_timeout = media_timeout if media_timeout is not None else cfg.media_timeout
        self._url = cfg.url + participant_url_path(dn, participant_id) + "/stream"
        self._resp: aiohttp.ClientResponse | None = None
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_audio: Callable[[bytes], None] | None = None
        self._block_done: asyncio.Future[BaseException | None] | None = None  # the polled response ended
        self._next_poll = 0.0
        # metrics
        self.bytes_received = 0
        self.opens = 0  # successful opens; > 1 means the stream was reopened
        self.first_byte_at: float | None = None  # loop time

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed.is_set()

    def start(self, on_audio: Callable[[bytes], None]) -> asyncio.Task[None]:
        """Hand every piece of caller audio to ``on_audio`` (called from the event loop; keep it
        short and non-blocking). Returns the reading task: it ends when the participant is
        gone or on ``close()``, and raises if the stream cannot be had (e.g. no media in time).
        An exception from ``on_audio`` stops the stream and is raised by the task."""
        if self._task is not None:
            raise RuntimeError(f"inbound audio of {self.dn}/{self.participant_id}: one reader only")
        self._on_audio = on_audio
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"inbound-{self.dn}-{self.participant_id}"
        )
        return self._task

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def close(self) -> None:
        """Stop reading; the reading task (and a pending ``async for``) ends."""
        self._closed.set()
        self._end_block(None)
        if self._resp is not None:
            self._resp.close()

    async def _iterate(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        task = self.start(queue.put_nowait)
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                task.result()  # the stream's error, if it failed
                return
        finally:
            if not task.done():
                await self.close()
                await asyncio.gather(task, return_exceptions=True)

    def _deliver(self, chunk: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = asyncio.get_running_loop().time()
        self.bytes_received += len(chunk)
        assert self._on_audio is not None
        self._on_audio(chunk)

    def _end_block(self, result: BaseException | None) -> None:
        if self._block_done is not None and not self._block_done.done():
            self._block_done.set_result(result)

    def _poll(self, _arg: object = None) -> None:
        """From the shared timer, every block: hand over what arrived, notice the end."""
        resp = self._resp
        if resp is None or self._block_done is None or self._block_done.done():
            return
        content = resp.content
        try:
            data = content.read_nowait()  # raises the payload error if the stream broke
            if data:
                self._deliver(data)
        except (aiohttp.ClientError, OSError) as exc:
            self._end_block(exc)
            return
        except Exception as exc:  # on_audio failed: stop this call's stream, not the timer
            self._end_block(_CallbackFailed(exc))
            return
        if content.at_eof():
            self._end_block(None)
            return
        now = asyncio.get_running_loop().time()
        self._next_poll = max(self._next_poll + self._block_s, now)
        assert self._tick is not None
        self._tick.call_at(self._next_poll, self._poll)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> None:
        """Read one open response to its end (raises aiohttp/OS errors if it is cut)."""
        if self._tick is None:
            while True:
                chunk = await resp.content.readany()
                if not chunk:
                    return
                self._deliver(chunk)
        loop = asyncio.get_running_loop()
        self._block_done = loop.create_future()
        self._next_poll = loop.time()
        self._poll()
        try:
            result = await self._block_done
        finally:
            self._block_done = None
        if isinstance(result, _CallbackFailed):
            raise result.error
        if result is not None:
            raise result

    async def _run(self) -> None:
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
                    try:
                        await self._read_body(resp)
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
