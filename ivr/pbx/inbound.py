"""``InboundAudio``: the caller's voice from ``GET .../participants/{id}/stream``.

Raw PCM s16le 8 kHz mono, handed to a callback (``start(on_audio)``, what calls use) or
yielded (``async for chunk in inbound``). Given a :class:`~ivr.pbx.tick.SharedTick` and a
block length (PbxConfig ``inbound_block_ms``), the stream is polled from the shared timer
every block: everything that arrived meanwhile is handed over at once, with no task wake-up
per chunk or per block (hundreds of calls x 50 chunks a second); the response is read by the
project's own HTTP/1.1 stream (:class:`~ivr.pbx.httpstream.HttpStream`). Before media exists
the PBX answers 424 (or 404): retried with backoff up to ``media_timeout``, as are 429 and
5xx answers (an overloaded or failing PBX); the rules are :mod:`ivr.pbx.streamretry`.
If the stream is cut while the participant still exists (typically: its token was revoked
because a new one was issued), it is reopened with a fresh token, transparently. Reading
ends when the participant is gone or ``close()`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from .auth import TokenManager
from .config import PbxConfig
from .errors import PbxUnreachableError
from .httpstream import HttpStream
from .rest import participant_url_path
from .streamretry import StreamRetry
from .tick import SharedTick

log = logging.getLogger(__name__)


class _CallbackFailed(Exception):
    """The consumer's ``on_audio`` raised: the stream stops and the task raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class InboundAudio:
    """Reads one participant's incoming audio. Single consumer.

    ``exists()`` answers whether the participant is still there (the client asks REST);
    it decides between reopening a cut stream and ending.
    """

    def __init__(
        self,
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
        self._tokens = tokens
        self._cfg = cfg
        self._exists = exists
        self._media_timeout = media_timeout if media_timeout is not None else cfg.media_timeout
        self._url = cfg.url + participant_url_path(dn, participant_id) + "/stream"
        self._conn: HttpStream | None = None  # the GET currently open
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_audio: Callable[[bytes], None] | None = None
        self._poll_phase = 0  # this stream's grid point within a block (SharedTick.spread)
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
        if self._conn is not None:
            self._conn.close()

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

    # --- reading an open response ---------------------------------------------------------------

    def _deliver(self, chunk: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = asyncio.get_running_loop().time()
        self.bytes_received += len(chunk)
        assert self._on_audio is not None
        self._on_audio(chunk)

    def _poll(self, conn: HttpStream) -> None:
        """From the shared timer, every block: hand over what arrived, notice the end."""
        if conn is not self._conn:
            return  # a poll of a response already given up
        data = conn.take()
        if data:
            try:
                self._deliver(bytes(data))
            except Exception as exc:  # on_audio failed: stop this call's stream, not the timer
                if not conn.body_done.done():
                    conn.body_done.set_result(_CallbackFailed(exc))
                return
        if conn.body_done.done():
            return
        assert self._tick is not None
        # On this stream's own phase, missed blocks skipped: polled late after a stall (a
        # collection), it must not move to "now" with every other stream polled late, or all
        # calls' audio would be read and analysed in one grid point from then on.
        now = asyncio.get_running_loop().time()
        self._tick.call_at(self._tick.next_on_phase(now, self._block_s, self._poll_phase), self._poll, conn)

    async def _read_body(self, conn: HttpStream) -> None:
        """Read one open 200 response to its end; raises ConnectionError if it is cut."""
        if self._tick is None:
            conn.on_body = self._deliver  # every chunk as it comes
        else:
            self._poll_phase = self._tick.spread(self._block_s)
            self._poll(conn)
        result = await asyncio.shield(conn.body_done)
        if self._tick is not None and not isinstance(result, _CallbackFailed):
            self._poll(conn)  # the last audio before the end
        if isinstance(result, _CallbackFailed):
            raise result.error
        if isinstance(result, OSError):
            raise result
        if result is not None:  # on_body raised inside the protocol
            raise result

    # --- the connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self._cfg
        retry = StreamRetry("inbound", "GET", self._url, cfg, self._tokens, self._exists, self._media_timeout)
        while not self.closed:
            token = await self._tokens.token()
            try:
                conn = await HttpStream.get(
                    self._url, {"Authorization": f"Bearer {token}"}, ssl=cfg.ssl_context(), timeout=cfg.request_timeout
                )
                self._conn = conn
                if self.closed:
                    conn.close()
                    return
                status, reason = await conn.head()
            except (TimeoutError, OSError) as exc:  # ConnectionError is an OSError
                self._conn = None
                if self.closed:
                    return
                if retry.expired:
                    raise PbxUnreachableError(None, str(exc) or type(exc).__name__, "GET", self._url) from exc
                await self._pause(retry.backoff.next())
                continue
            try:
                if status == 200:
                    self.opens += 1
                    retry.streaming()
                    try:
                        await self._read_body(conn)
                    except OSError as exc:
                        if not self.closed:
                            log.info("inbound stream %s interrupted: %s", self._url, exc or type(exc).__name__)
                    if self.closed or not await self._exists():
                        return
                    log.info("inbound stream %s cut while the call goes on; reopening", self._url)
                    retry.restart_deadline()
                    continue
                try:
                    _, _, body = await conn.response()
                except OSError:
                    body = b""
                delay = await retry.refused(status, reason, body, token)
                if delay is None:
                    return  # the participant is gone
                if delay:
                    await self._pause(delay)
            finally:
                conn.close()
                self._conn = None

    async def _pause(self, delay: float) -> None:
        """Sleep, but wake up at once on close()."""
        try:
            await asyncio.wait_for(self._closed.wait(), delay)
        except TimeoutError:
            pass
