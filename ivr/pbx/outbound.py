"""``OutboundAudio``: audio to the caller over ONE long-lived chunked ``POST .../stream``.

Raw PCM s16le 8 kHz mono, ``Content-Type: application/octet-stream``, never a WAV header.
3CX has no flush, so whatever was sent will play: a pacer sends 20 ms frames keeping at
most ``lead_ms`` of audio ahead of real time (measured on the loop clock, deadline-based so
it does not drift), and ``clear()`` (barge-in) therefore takes effect within ``lead_ms``.
Nothing is sent while the queue is empty (no padding). If the POST is cut while the call
goes on (token revoked), it is reopened with a fresh token and the queue continues.

The pacer is a plain callback on the process's shared timer (:class:`~ivr.pbx.tick.SharedTick`)
writing straight to the connection (:class:`~ivr.pbx.httpstream.HttpStream`): a frame costs no
task wake-up. A task per stream only opens, watches and reopens the connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .auth import TokenManager
from .config import PbxConfig
from .httpstream import HttpStream
from .rest import participant_url_path
from .streamretry import StreamRetry
from .tick import SharedTick

log = logging.getLogger(__name__)

FRAME_MS = 20
FRAME_BYTES = 320  # 20 ms at 8 kHz s16le mono
BYTES_PER_SECOND = 16_000
# Frames of one POST attempt kept until the PBX has clearly accepted it, so that audio
# sent into a rejected POST (401/424 arrive right after the first chunk) is sent again.
REQUEUE_FRAMES = 25
# The PBX stopped reading: hold frames back (they stay queued) rather than pile up in the socket.
MAX_BACKLOG_BYTES = BYTES_PER_SECOND


LATENESS_BUCKETS_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 40, 60, 100, 200, 500)
"""Upper bounds (ms) of the per-frame lateness histogram; one more bucket holds the rest."""


@dataclass
class OutboundStats:
    """Pacer measurements (times are loop times in seconds)."""

    bytes_sent: int = 0
    frames_sent: int = 0
    # Sends after the PBX had played everything before them: the caller heard a gap.
    underruns: int = 0
    # The pacer woke more than a frame late while a prompt kept playing: not heard as long as
    # the PBX still held audio (the lead), a sign of a loaded worker.
    late_sends: int = 0
    max_lateness_ms: float = 0.0
    first_write_at: float | None = None
    first_byte_at: float | None = None
    reopens: int = 0
    # Frames sent while a prompt kept playing, by how late each left against its due time
    # (bucket i counts lateness <= LATENESS_BUCKETS_MS[i]; the last bucket the rest).
    lateness_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS_MS) + 1))
    lateness_sum_s: float = 0.0  # of the frames in lateness_hist (lateness <= 0 counts as 0)

    def observe_lateness(self, late_s: float) -> None:
        """Count one frame that left ``late_s`` seconds after it was due (<= 0: on time)."""
        ms = late_s * 1000
        if late_s > 0:
            self.lateness_sum_s += late_s
        if ms > self.max_lateness_ms:
            self.max_lateness_ms = ms
        i = 0
        for bound in LATENESS_BUCKETS_MS:  # short list, most frames stop at the first bucket
            if ms <= bound:
                break
            i += 1
        self.lateness_hist[i] += 1

    def add_lateness(self, other: OutboundStats) -> None:
        """Count ``other``'s sends in this one's lateness histogram and sum (totals of streams)."""
        self.lateness_hist = [a + b for a, b in zip(self.lateness_hist, other.lateness_hist)]
        self.lateness_sum_s += other.lateness_sum_s

    def lateness_quantile_ms(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` of frame lateness (inf: above all)."""
        return hist_quantile(self.lateness_hist, q)


def frames_per_send(lead_ms: int, batch_frames: int) -> int:
    """Frames a pacer sends per wake-up: a batch leaves when the PBX holds lead - batch, so the
    lead bound holds; batching trades slack against wake-ups (CPU), never the bound."""
    return max(1, min(batch_frames, lead_ms // FRAME_MS))


def slack_ms(lead_ms: int, batch_frames: int) -> int:
    """Audio the PBX holds at least while a prompt plays: the lead minus one batch."""
    return lead_ms - FRAME_MS * frames_per_send(lead_ms, batch_frames)


def hist_quantile(hist: list[int], q: float) -> float | None:
    """Quantile ``q`` (0..1) of a LATENESS_BUCKETS_MS histogram, as a bucket's upper bound."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank and count:
            return float(LATENESS_BUCKETS_MS[i]) if i < len(LATENESS_BUCKETS_MS) else float("inf")
    return float("inf")


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
        if self.lead_ms < 20:
            raise ValueError(f"outbound audio: lead_ms must be >= 20 (one frame), got {self.lead_ms}")
        self.batch = frames_per_send(self.lead_ms, cfg.outbound_batch_frames)
        self._tokens = tokens
        self._cfg = cfg
        self._exists = exists
        self._media_timeout = media_timeout if media_timeout is not None else cfg.media_timeout
        self._url = cfg.url + participant_url_path(dn, participant_id) + "/stream"
        self._buf = bytearray()
        self._drained = asyncio.Event()
        self._drained.set()
        self._next_t: float | None = None  # loop time at which audio sent so far ends playing
        self._paced_from = 0.0  # loop time the pacing clock last restarted
        self._closing = False
        self._playing = False  # frames are going out back to back (a prompt is playing)
        self._conn: HttpStream | None = None  # the POST currently open
        self._timer_token = 0  # the pacer's pending wake-up; older ones are ignored
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._attempt: list[bytes] | None = []  # frames of this POST attempt (None: past the cap)
        self.ended = False  # the participant is gone: the POST will not be reopened
        # Told when the stream gives up for good (pull mode has no write() to raise from).
        self.on_error: Callable[[BaseException], None] | None = None
        self.stats = OutboundStats()

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
        if self._next_t is None:
            return 0.0
        return max(0.0, (self._next_t - asyncio.get_running_loop().time()) * 1000)

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
        if self._next_t is not None:
            delay = self._next_t - asyncio.get_running_loop().time()
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
            except asyncio.TimeoutError:
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
        """Send every frame that is due now, then arrange to be called when the next one is.

        All that is due goes out as one send: a pacer that woke late (or restarts, or tops up
        by ``extra_s``) sends what the PBX can take while holding no more than the lead, not
        one batch per send. Catching up with more sends than on time would cost the most CPU
        exactly when the process is behind."""
        conn = self._conn
        if conn is None or conn.closed or self._closing:
            return  # the connection loop calls wake() once a POST is open again
        loop = asyncio.get_running_loop()
        usual_lead = self.lead_ms / 1000
        lead = usual_lead + extra_s
        stats = self.stats
        frame_s = FRAME_BYTES / BYTES_PER_SECOND
        now = loop.time()
        batch = self.batch
        while True:
            # What the PBX can take now and still hold no more than the lead (a whole lead
            # when nothing is playing there: the pacing clock restarts now).
            next_t = self._next_t
            restart = next_t is None or next_t < now
            ahead = 0.0 if next_t is None or restart else next_t - now  # audio the PBX holds now
            room_bytes = (lead - ahead) * BYTES_PER_SECOND + 1e-6
            room = int(room_bytes) // FRAME_BYTES  # whole frames
            n = len(self._buf) - len(self._buf) % 2
            if n == 0 and self._source is not None:
                if room < batch:  # not due yet (a restart has room for a whole lead >= batch)
                    self._wake_at(now + ahead + batch * frame_s - lead)
                    return
                pulled = self._source()
                if pulled:
                    self._buf += pulled
                    for _ in range(room - 1):  # the rest of what is due, if the source has it
                        more = self._source()
                        if not more:
                            break
                        self._buf += more
                    continue
            if n == 0:
                self._drained.set()
                self._playing = False
                return  # idle until write() or wake()
            if conn.backlog > MAX_BACKLOG_BYTES:
                self._wake_at(now + frame_s)  # the PBX is not reading: keep the audio queued
                return
            first = min(batch * FRAME_BYTES, n)  # the batch an on-time wake-up would send
            # While a prompt keeps playing each frame has a due time; measure against it.
            late = None
            if self._playing and self._next_t is not None:
                # Due when lead - batch is left at the PBX (the usual lead: a top-up sends
                # ahead of that); frames of the opening burst of a restart (a whole lead at
                # once) are due at the restart, not before it.
                late = now - max(self._next_t + first / BYTES_PER_SECOND - usual_lead, self._paced_from)
                if restart:
                    stats.underruns += 1  # the PBX had nothing left to play: the caller hears a gap
            if restart:
                self._next_t = self._paced_from = now
            if room_bytes < first:  # not due yet: the PBX holds more than lead - batch
                self._wake_at(self._next_t + first / BYTES_PER_SECOND - lead)
                return
            size = min(max(first, room * FRAME_BYTES), n)
            frame = bytes(self._buf[:size])
            del self._buf[:size]
            self._next_t += size / BYTES_PER_SECOND
            if stats.first_byte_at is None:
                stats.first_byte_at = now
            stats.bytes_sent += size
            stats.frames_sent += -(-size // FRAME_BYTES)
            if late is not None:
                stats.observe_lateness(late)
                if late > frame_s:
                    stats.late_sends += 1  # more than a frame late while the prompt played
            self._playing = True
            if self._attempt is not None:
                self._attempt.append(frame)
                if len(self._attempt) > REQUEUE_FRAMES:
                    self._attempt = None
            conn.write(frame)
            if extra_s:  # the top-up is out: pace as usual from here on
                extra_s, lead = 0.0, usual_lead

    def _requeue_attempt(self) -> None:
        """The PBX rejected the POST: its frames were not played, queue them again."""
        frames = self._attempt or []
        self._attempt = []
        if not frames or self._closing:
            return
        data = b"".join(frames)
        self._buf[:0] = data
        self._drained.clear()
        self.stats.bytes_sent -= len(data)
        self.stats.frames_sent -= sum(-(-len(f) // FRAME_BYTES) for f in frames)
        if self._next_t is not None:
            self._next_t -= len(data) / BYTES_PER_SECOND

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
            except (asyncio.TimeoutError, OSError) as exc:  # ConnectionError is an OSError
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
