"""Call audio as timelines in samples since call start (8 kHz, mono, int16).

``Voice`` is what the far party says (the control API queues speech on it; GET streams read
it at the wall-clock position). ``Heard`` is what the IVR played to the far party (POST
streams write into it as a jitter buffer would). Both store lists of chunks, never a
contiguous buffer for the whole call, so idle calls cost nothing.
"""

from __future__ import annotations

import io
from array import array

import numpy as np
import soundfile
import soxr

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2


def decode_audio(data: bytes) -> np.ndarray:
    """Decode a WAV (or any soundfile format) to 8 kHz mono int16. Raises ValueError if unreadable."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise ValueError(f"audio body: not a readable sound file ({exc})") from None
    mono = samples.mean(axis=1)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    return to_int16(mono)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """int16 passes through; floats in [-1, 1] are scaled and clipped."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"audio array: expected mono (1-D), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.round(arr * 32767.0), -32768, 32767).astype(np.int16)
    return np.clip(arr, -32768, 32767).astype(np.int16)


def encode_wav(pcm: np.ndarray) -> bytes:
    """8 kHz mono 16-bit WAV bytes."""
    buf = io.BytesIO()
    soundfile.write(buf, pcm, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def strip_wav_header(data: bytes) -> tuple[bytes, bool]:
    """Drop a RIFF/WAVE header at the start of a stream (the official example sends one)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pos = data.find(b"data", 12)
        if pos != -1 and pos + 8 <= len(data):
            return data[pos + 8 :], True
    return data, False


class Voice:
    """What the far party says: segments placed on the call's sample timeline.

    New speech starts now, or when earlier queued speech ends, whichever is later.
    """

    KEEP_SAMPLES = 10 * RATE  # speech that ended this long ago is forgotten

    def __init__(self) -> None:
        self._segments: list[tuple[int, np.ndarray]] = []
        self.end = 0  # sample index where queued speech ends

    def queue(self, pcm: np.ndarray, now_sample: int) -> tuple[int, int]:
        """Queue speech; returns its (start, end) sample positions."""
        start = max(now_sample, self.end)
        if len(pcm):
            self._segments.append((start, pcm))
            self.end = start + len(pcm)
        self._segments = [(s, p) for s, p in self._segments if s + len(p) > now_sample - self.KEEP_SAMPLES]
        return start, start + len(pcm)

    def speaks(self, start: int, count: int) -> bool:
        """Whether any queued speech falls in samples [start, start+count)."""
        if start >= self.end:  # the usual case: nothing queued from here on
            return False
        end = start + count
        return any(s < end and s + len(p) > start for s, p in self._segments)

    def render(self, start: int, count: int) -> bytes:
        """Samples [start, start+count) as s16le bytes; silence where nothing was said (a
        GET stream sends its cached silent chunk itself when :meth:`speaks` says no)."""
        out = np.zeros(count, dtype=np.int16)
        end = start + count
        for seg_start, pcm in self._segments:
            seg_end = seg_start + len(pcm)
            if seg_end <= start or seg_start >= end:
                continue
            lo, hi = max(start, seg_start), min(end, seg_end)
            out[lo - start : hi - start] = pcm[lo - seg_start : hi - seg_start]
        return out.tobytes()


class Arrivals:
    """When the IVR's audio arrived: (seconds since call start, bytes) per received chunk.

    A measurement hook for benchmarks (jitter, first byte, time to silence after barge-in).
    Bounded (12 bytes a chunk): past ``limit`` chunks it keeps the first half and a ring of
    the most recent half, so a long call keeps its start (first byte) and its latest audio.
    """

    def __init__(self, limit: int = 6000) -> None:
        self._half = max(1, limit // 2)
        self._t = array("d")
        self._n = array("i")
        self._pos = 0  # next slot of the ring (the second half) once it is full
        self.dropped = 0  # chunks overwritten in the ring

    def add(self, t: float, nbytes: int) -> None:
        if len(self._t) < 2 * self._half:
            self._t.append(t)
            self._n.append(nbytes)
            return
        i = self._half + self._pos
        self._t[i], self._n[i] = t, nbytes
        self._pos = (self._pos + 1) % self._half
        self.dropped += 1

    def as_json(self) -> dict[str, object]:
        """``{"t": [...], "bytes": [...], "dropped": n, "gap_after": i|None}`` in arrival order;
        when chunks were dropped, ``gap_after`` is the index after which they are missing."""
        h, p = self._half, self._pos
        order = list(range(len(self._t)))
        if self.dropped:
            order = order[:h] + order[h + p :] + order[h : h + p]
        return {
            "t": [round(self._t[i], 6) for i in order],
            "bytes": [self._n[i] for i in order],
            "dropped": self.dropped,
            "gap_after": h - 1 if self.dropped else None,
        }


class HeardCursor:
    """One POST stream's play-out position (a jitter buffer of unbounded depth)."""

    def __init__(self) -> None:
        self.next = 0  # sample where the next received audio will play
        self.odd = b""  # a byte left over from an odd-length chunk
        self.first = True  # the first bytes may carry a WAV header


class Heard:
    """Everything the IVR played to the far party, with timing preserved.

    Chunks are kept as the received bytes (s16le) and turned into samples only when read:
    a POST stream adds 50 of them a second per call, and most are never looked at one by one.
    """

    def __init__(self) -> None:
        self._chunks: list[tuple[int, bytes]] = []
        self._end = 0  # where the last received audio ends (samples since call start)
        self.received_bytes = 0

    def add(self, cursor: HeardCursor, data: bytes, arrival_sample: int) -> bool:
        """Place a received chunk: at its arrival, or behind audio still queued. Returns True
        if a stray WAV header was dropped."""
        stripped = False
        if cursor.first and data:
            cursor.first = False
            data, stripped = strip_wav_header(data)
        self.received_bytes += len(data)
        if cursor.odd:
            data = cursor.odd + data
        usable = len(data) - (len(data) % 2)
        if usable != len(data):
            cursor.odd = data[usable:]
            data = data[:usable]
        else:
            cursor.odd = b""
        if usable:
            start = max(arrival_sample, cursor.next)
            self._chunks.append((start, bytes(data)))
            cursor.next = start + usable // 2
            self._end = max(self._end, cursor.next)
        return stripped

    def chunks_since(self, index: int) -> tuple[list[tuple[int, np.ndarray]], int]:
        """Chunks ``(start_sample, pcm)`` added after the first ``index`` ones, and the new count.

        Lets a live listener (``ivr dev``) follow the timeline without re-rendering it."""
        return [(s, _pcm(b)) for s, b in self._chunks[index:]], len(self._chunks)

    def duration_samples(self) -> int:
        """Where the last received audio ends (samples since call start)."""
        return self._end

    def render(self) -> np.ndarray:
        """The whole heard signal from call start; overlapping streams are mixed."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        mix = np.zeros(self._end, dtype=np.int32)
        for s, b in self._chunks:
            p = _pcm(b)
            mix[s : s + len(p)] += p
        return np.clip(mix, -32768, 32767).astype(np.int16)


def _pcm(data: bytes) -> np.ndarray:
    """s16le bytes as a read-only int16 array (a view on little-endian hosts)."""
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
