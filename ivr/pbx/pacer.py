"""``Pacer``: when the audio of one outbound stream is due, without I/O (sans-I/O).

3CX plays what it receives and has no flush, so the pacer keeps the PBX holding at most
``lead`` of audio ahead of real time: told the time and how much audio is queued, it answers
how many bytes to send now and when to ask again, and keeps the stream's measurements
(lateness per send, late sends, underruns). Frames leave in batches of ``batch`` (a batch is
due when the PBX holds lead - batch); a pacer asked late answers all that is due in one send.
:class:`~ivr.pbx.outbound.OutboundAudio` owns the queue, the source, the timer and the socket.

Times are seconds on one monotonic clock (the event loop's); sizes are bytes of s16le 8 kHz mono.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FRAME_MS = 20
FRAME_BYTES = 320  # 20 ms at 8 kHz s16le mono
BYTES_PER_SECOND = 16_000
FRAME_S = FRAME_BYTES / BYTES_PER_SECOND

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
        self.max_lateness_ms = max(self.max_lateness_ms, ms)
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


class Pacer:
    """The pacing clock of one outbound stream and its stats.

    Push mode: ask :meth:`due` with the bytes queued. Pull mode (the audio is asked of a
    source only when due, so a barge-in that cuts the source is never sent): with nothing
    queued ask :meth:`pull` how many frames to take from the source, then :meth:`due`.
    ``extra_s`` (a top-up) lets one send run that much further ahead than the lead."""

    __slots__ = ("batch", "lead_s", "next_t", "paced_from", "playing", "stats")

    def __init__(self, lead_ms: int, batch_frames: int, stats: OutboundStats | None = None) -> None:
        if lead_ms < FRAME_MS:
            raise ValueError(f"outbound audio: lead_ms must be >= 20 (one frame), got {lead_ms}")
        self.lead_s = lead_ms / 1000
        self.batch = frames_per_send(lead_ms, batch_frames)
        self.stats = stats if stats is not None else OutboundStats()
        self.next_t: float | None = None  # when the audio sent so far ends playing at the PBX
        self.paced_from = 0.0  # when the pacing clock last restarted
        self.playing = False  # frames are going out back to back (a prompt is playing)

    def ahead(self, now: float) -> float:
        """Seconds of audio the PBX holds at ``now`` (sent, not yet played)."""
        next_t = self.next_t
        return 0.0 if next_t is None or next_t < now else next_t - now

    def pull(self, now: float, extra_s: float = 0.0) -> tuple[int, float]:
        """Pull mode, nothing queued: ``(frames, 0.0)`` to ask the source for now (all that is
        due, at least a batch), or ``(0, when)``: no batch is due before ``when``."""
        lead = self.lead_s + extra_s
        next_t = self.next_t
        # a whole lead when nothing plays at the PBX (the pacing clock restarts)
        ahead = 0.0 if next_t is None or next_t < now else next_t - now
        room = int((lead - ahead) * BYTES_PER_SECOND + 1e-6) // FRAME_BYTES
        if room < self.batch:
            return 0, now + ahead + self.batch * FRAME_S - lead
        return room, 0.0

    def due(self, now: float, queued: int, extra_s: float = 0.0) -> tuple[int, float | None]:
        """Of ``queued`` bytes (even), how many to send now, and when to ask again.

        ``(0, when)``: nothing is due before ``when``. ``(n, when)``: send ``n`` bytes now (they
        are counted as sent); the next batch is due at ``when`` (``now``: what is left is due at
        once). ``(0, None)``: nothing queued: the prompt is over, the next audio is not measured
        against this one's pace."""
        if queued <= 0:
            self.playing = False
            return 0, None
        usual_lead = self.lead_s
        lead = usual_lead + extra_s
        next_t = self.next_t
        # What the PBX can take now and still hold no more than the lead (a whole lead when
        # nothing is playing there: the pacing clock restarts now).
        restart = next_t is None or next_t < now
        ahead = 0.0 if restart or next_t is None else next_t - now
        room_bytes = (lead - ahead) * BYTES_PER_SECOND + 1e-6
        first = min(self.batch * FRAME_BYTES, queued)  # the batch an on-time wake-up would send
        stats = self.stats
        # While a prompt keeps playing each frame has a due time; measure against it.
        late = None
        if self.playing and next_t is not None:
            # Due when lead - batch is left at the PBX (the usual lead: a top-up sends ahead of
            # that); frames of the opening burst of a restart (a whole lead at once) are due
            # at the restart, not before it.
            late = now - max(next_t + first / BYTES_PER_SECOND - usual_lead, self.paced_from)
            if restart:
                stats.underruns += 1  # the PBX had nothing left to play: the caller hears a gap
        if restart or next_t is None:
            next_t = self.paced_from = now
        if room_bytes < first:  # not due yet: the PBX holds more than lead - batch
            self.next_t = next_t
            return 0, next_t + first / BYTES_PER_SECOND - lead
        size = min(max(first, int(room_bytes) // FRAME_BYTES * FRAME_BYTES), queued)
        self.next_t = next_t = next_t + size / BYTES_PER_SECOND
        if stats.first_byte_at is None:
            stats.first_byte_at = now
        stats.bytes_sent += size
        stats.frames_sent += -(-size // FRAME_BYTES)
        if late is not None:
            stats.observe_lateness(late)
            if late > FRAME_S:
                stats.late_sends += 1  # more than a frame late while the prompt played
        self.playing = True
        # The rest, or the next batch, paced as usual (a top-up is one send): due when
        # lead - batch is left at the PBX.
        first = min(self.batch * FRAME_BYTES, queued - size) or self.batch * FRAME_BYTES
        if size < queued and (usual_lead - (next_t - now)) * BYTES_PER_SECOND + 1e-6 >= first:
            return size, now  # a short tail fits the room left: at once, as its own send
        return size, next_t + first / BYTES_PER_SECOND - usual_lead

    def unsend(self, nbytes: int, frames: int) -> None:
        """``nbytes`` sent (``frames`` frames) were never played (the PBX rejected the POST):
        they will be sent again, so they no longer count nor run the clock ahead."""
        stats = self.stats
        stats.bytes_sent -= nbytes
        stats.frames_sent -= frames
        if self.next_t is not None:
            self.next_t -= nbytes / BYTES_PER_SECOND
