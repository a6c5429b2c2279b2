"""``OutboundAudio``: audio to the caller over ONE long-lived chunked ``POST .../stream``.

Raw PCM s16le 8 kHz mono, ``Content-Type: application/octet-stream``, never a WAV header.
3CX has no flush, so whatever was sent will play: a pacer sends 20 ms frames keeping at
most ``lead_ms`` of audio ahead of real time (measured on the loop clock, deadline-based so
it does not drift), and ``clear()`` (barge-in) therefore takes effect within ``lead_ms``.
Nothing is sent while the queue is empty (no padding). If the POST is cut while the call
goes on (token revoked), it is reopened with a fresh token and the queue continues.

When audio is due, and the stream's measurements, are the sans-I/O :class:`~ivr.pbx.pacer.Pacer`;
this module does the I/O around it. The pacer runs as a plain callback on the process's shared
timer (:class:`~ivr.pbx.tick.SharedTick`) writing straight to the connection
(:class:`~ivr.pbx.httpstream.HttpStream`): a frame costs no task wake-up. A task per stream
only opens, watches and reopens the connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from .auth import TokenManager
from .config import PbxConfig
from .httpstream import HttpStream
from .pacer import (  # noqa: F401  (re-exported: the stats and pacing figures, where callers import them)
    BYTES_PER_SECOND,
    FRAME_BYTES,
    FRAME_S,
    LATENESS_BUCKETS_MS,
    OutboundStats,
    Pacer,
    frames_per_send,
    hist_quantile,
    slack_ms,
)
from .rest import participant_url_path
from .streamretry import StreamRetry
from .tick import SharedTick

log = logging.getLogger(__name__)

# Frames of one POST attempt kept until the PBX has clearly accepted it, so that audio
# sent into a rejected POST (401/424 arrive right after the first chunk) is sent again.
REQUEUE_FRAMES = 25
# The PBX stopped reading: hold frames back (they stay queued) rather than pile up in the socket.
MAX_BACKLOG_BYTES = BYTES_PER_SECOND


class OutboundAudio:
    """Writes one participant's outgoing audio; call :meth:`start` once, then ``write``.

    The HTTP request goes out with the first audio frame, so an idle stream costs nothing at
    the PBX. Frames sent into a POST the PBX rejects (401, 424, 404) are sent again on the
    next attempt.
    """

    def __init__(
        self,
        tokens: TokenManager,
        cfg: PbxConfig,
        dn: str,
        participant_id: int,
        *,
        exists: Callable[[], Awaitable[bool]],
        lead_ms: int | None = None,
        media_timeout: float | None = None,
        source: Callable[[], bytes | None] | None = None,
        tick: SharedTick | None = None,
    ) -> None:
        self.dn = dn
        # The pacer's wake-ups: on the process's shared grid (one timer for every stream, up to
        # one grid step late) or, without a tick, one loop timer per stream per frame.
        self._tick = tick
        # Pull mode: when the queue is empty the pacer asks ``source()`` for the next frame
        # at the moment it is due, so audio cut at the source (barge-in) is never sent.
        self._source = source
        self.participant_id = participant_id
        self.lead_ms = lead_ms if lead_ms is not None else cfg.outbound_lead_ms
        self._pacer = Pacer(self.lead_ms, cfg.outbound_batch_frames)
        self.batch = self._pacer.batch
        self.stats = self._pacer.stats
        self._tokens = tokens
        self._cfg = cfg
        self._exists = exists
        self._media_timeout = media_timeout if media_timeout is not None else cfg.media_timeout
        self._url = cfg.url + participant_url_path(dn, participant_id) + "/stream"
        self._buf = bytearray()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._conn: HttpStream | None = None  # the POST currently open
        self._timer_token = 0  # the pacer's pending wake-up; older ones are ignored
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._attempt: list[bytes] | None = []  # frames of this POST attempt (None: past the cap)
        self.ended = False  # the participant is gone: the POST will not be reopened
        # Told when the stream gives up for good (pull mode has no write() to raise from).
        self.on_error: Callable[[BaseException], None] | None = None

    # --- public API --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the POST in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def write(self, pcm: bytes) -> None:
        """Queue raw PCM (s16le 8 kHz mono). A trailing odd byte waits for the next write."""
        if self._error is not None:
            raise self._error
        if self._closing:
            raise RuntimeError(f"outbound audio of {self.dn}/{self.participant_id} is closed")
        if not pcm:
            return
        if self.stats.first_write_at is None:
            self.stats.first_write_at = asyncio.get_running_loop().time()
        self._buf += pcm
        if len(self._buf) >= 2:
            self._drained.clear()
        self.wake()

    def wake(self) -> None:
        """There is audio (queued, or at the source in pull mode): pace it from now on."""
        if self._conn is not None and not self._closing:
            self._timer_token += 1  # replaces a pending wake-up, which may be far off (idle)
            asyncio.get_running_loop().call_soon(self._on_timer, self._timer_token)

    def clear(self) -> float:
        """Drop everything not yet written; return how many ms of audio were dropped."""
        dropped = len(self._buf)
        self._buf.clear()
        self._drained.set()
        return dropped * 1000 / BYTES_PER_SECOND

    @property
    def queued_ms(self) -> float:
        """Audio queued but not yet written."""
        return len(self._buf) * 1000 / BYTES_PER_SECOND

    @property
    def ahead_ms(self) -> float:
        """How far the audio already written runs ahead of real time now."""
        return self._pacer.ahead(asyncio.get_running_loop().time()) * 1000

    async def drain(self) -> None:
        """Wait until everything queued has been written to the connection."""
        waiter = asyncio.ensure_future(self._drained.wait())
        try:
            if self._task is not None:
                await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await waiter
        finally:
            waiter.cancel()
        if self._error is not None:
            raise self._error

    async def wait_played(self) -> None:
        """Wait until everything queued has been written AND played out in real time."""
        await self.drain()
        if self._pacer.next_t is not None:
            delay = self._pacer.next_t - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def close(self) -> None:
        """Drop unsent audio and end the POST with the zero-length chunk."""
        self._closing = True
        self._timer_token += 1
        self._buf.clear()
        self._drained.set()
        conn = self._conn
        if conn is not None:
            if conn.started:
                conn.finish()  # the zero chunk; the PBX answers and the connection loop ends
            else:
                conn.close()  # the PBX never saw this request: nothing to end
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self._cfg.request_timeout)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # --- the pacer ----------------------------------------------------------------------------

    def _on_timer(self, token: int) -> None:
        if token == self._timer_token:
            self._pump()

    def _wake_at(self, when: float) -> None:
        self._timer_token += 1
        if self._tick is not None:
            self._tick.call_at(when, self._on_timer, self._timer_token, first=True)
        else:
            asyncio.get_running_loop().call_at(when, self._on_timer, self._timer_token)

    def top_up(self, extra_s: float) -> bool:
        """Send now what would be due within ``extra_s`` more than the lead: the PBX then holds
        up to lead + extra_s, so a pause of the whole process (a full garbage collection) as
        long as that is not heard. Barge-in in that moment plays up to ``extra_s`` longer.
        Returns False if there is no open POST to send into."""
        if self._conn is None or self._conn.closed or self._closing:
            return False
        self._pump(extra_s)
        return True

    def _pump(self, extra_s: float = 0.0) -> None:
        """Send every frame that is due now (the :class:`Pacer` says how much), then arrange to
        be called when the next one is.

        All that is due goes out as one send: a pacer that woke late (or restarts, or tops up
        by ``extra_s``) sends what the PBX can take while holding no more than the lead, not
        one batch per send. Catching up with more sends than on time would cost the most CPU
        exactly when the process is behind."""
        conn = self._conn
        if conn is None or conn.closed or self._closing:
            return  # the connection loop calls wake() once a POST is open again
        now = asyncio.get_running_loop().time()
        pacer = self._pacer
        buf = self._buf
        source = self._source
        while True:
            short = True  # the queue may hold less than is due (not all of it pulled just now)
            if source is not None and len(buf) < 2:
                frames, wake_at = pacer.pull(now, extra_s)
                if not frames:  # not due yet
                    self._wake_at(wake_at)
                    return
                short = False
                for _ in range(frames):  # what is due, as far as the source has it
                    pulled = source()
                    if not pulled:
                        short = True
                        break
                    buf += pulled
            n = len(buf) - len(buf) % 2
            if n and conn.backlog > MAX_BACKLOG_BYTES:
                self._wake_at(now + FRAME_S)  # the PBX is not reading: keep the audio queued
                return
            size, wake = pacer.due(now, n, extra_s)
            if size:
                frame = bytes(buf[:size])
                del buf[:size]
                if self._attempt is not None:
                    self._attempt.append(frame)
                    if len(self._attempt) > REQUEUE_FRAMES:
                        self._attempt = None
                conn.write(frame)
                extra_s = 0.0  # the top-up is out: pace as usual from here on
                if wake is not None and (wake <= now or (short and len(buf) < 2)):
                    # more is due at once, or the queue ran out: idle (push mode) or ask the
                    # source again (it had less than was due)
                    continue
            if wake is None:
                self._drained.set()
                return  # idle until write() or wake()
            self._wake_at(wake)
            return

    def _requeue_attempt(self) -> None:
        """The PBX rejected the POST: its frames were not played, queue them again."""
        frames = self._attempt or []
        self._attempt = []
        if not frames or self._closing:
            return
        data = b"".join(frames)
        self._buf[:0] = data
        self._drained.clear()
        self._pacer.unsend(len(data), sum(-(-len(f) // FRAME_BYTES) for f in frames))

    # --- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by write()/drain() and on_error
            self._error = exc
            log.warning("outbound stream %s failed: %s", self._url, exc)
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            self._drained.set()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _post(self, token: str) -> tuple[int, str, bytes]:
        """One POST attempt: open it, let the pacer stream into it, return the PBX's answer."""
        cfg = self._cfg
        tls: ssl.SSLContext | bool = cfg.ssl_context()
        conn = await HttpStream.post(
            self._url,
            {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
            ssl=tls,
            timeout=cfg.request_timeout,
        )
        self._conn = conn
        try:
            if self._closing:
                return 200, "", b""
            self.wake()
            return await conn.response()
        finally:
            self._conn = None
            conn.close()

    async def _connect_loop(self) -> None:
        retry = StreamRetry("outbound", "POST", self._url, self._cfg, self._tokens, self._exists, self._media_timeout)
        opened = False
        while not self._closing:
            token = await self._tokens.token()
            sent_before = self.stats.bytes_sent
            self._attempt = []
            if opened:
                self.stats.reopens += 1
            opened = True
            status: int | None = None
            try:
                status, reason, body = await self._post(token)
            except (TimeoutError, OSError) as exc:  # ConnectionError is an OSError
                if self._closing:
                    return
                log.info("outbound stream %s interrupted: %s", self._url, exc or type(exc).__name__)
            if self._closing:
                return
            if status is None or 200 <= status < 300:
                # Cut, or the server ended the stream: the call ended, or it cut us (token revoked).
                if self.stats.bytes_sent > sent_before:  # it was streaming: a fresh start
                    retry.streaming()
                if not await self._exists():
                    self.ended = True
                    return
                await asyncio.sleep(retry.backoff.next())
                continue
            self._requeue_attempt()
            delay = await retry.refused(status, reason, body, token)
            if delay is None:
                self.ended = True  # the participant is gone
                return
            if delay:
                await asyncio.sleep(delay)
