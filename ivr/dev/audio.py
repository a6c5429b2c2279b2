"""Live audio between the page and an emulated call, in 20 ms frames of 8 kHz int16.

* :class:`HeardFollower` follows what the IVR plays to the caller (the emulator's "heard"
  timeline, jitter buffer included) and cuts it into frames as real time reaches them.
* :func:`caller_says_live` puts microphone frames on the caller's voice, so the IVR hears
  them on its GET stream like any caller speech (without one log line per frame).
"""

from __future__ import annotations

import asyncio

import numpy as np

from ivr.emulator import Emulator
from ivr.emulator.media import FRAME_SAMPLES, RATE

FRAME_BYTES = FRAME_SAMPLES * 2
# Microphone audio is placed this far ahead of "now", so frames arriving a little late from
# the browser still join up instead of leaving gaps (a small jitter buffer).
MIC_LEAD_SAMPLES = RATE * 60 // 1000
# A follower that fell this far behind (a stalled loop) skips ahead rather than bursting.
MAX_BEHIND_SAMPLES = RATE // 2


class HeardFollower:
    """Frames of what the caller hears on one emulated call, from call start, in real time."""

    def __init__(self, emu: Emulator, callid: int) -> None:
        self._call = emu.controller.pbx.get_call(callid)
        self._index = 0  # chunks of the heard timeline already taken in
        self._pending: list[tuple[int, np.ndarray]] = []  # chunks not yet wholly sent
        self.pos = 0  # first sample of the next frame to send
        self.samples_sent = 0
        self.skipped_samples = 0

    def due(self, now: float) -> list[bytes]:
        """The whole frames between the last call and loop time ``now`` (s16le, 320 bytes each).

        Audio reaching the emulator is never placed before its arrival, so everything up to
        ``now`` is final once read."""
        now_sample = self._call.sample_at(now)
        if now_sample - self.pos > MAX_BEHIND_SAMPLES:
            skip = (now_sample - self.pos - FRAME_SAMPLES) // FRAME_SAMPLES * FRAME_SAMPLES
            self.pos += skip
            self.skipped_samples += skip
        frames = (now_sample - self.pos) // FRAME_SAMPLES
        if frames <= 0:
            return []
        new, self._index = self._call.heard.chunks_since(self._index)
        self._pending.extend(new)
        start, count = self.pos, frames * FRAME_SAMPLES
        end = start + count
        mix = np.zeros(count, dtype=np.int32)
        for seg_start, pcm in self._pending:
            lo, hi = max(start, seg_start), min(end, seg_start + len(pcm))
            if lo < hi:
                mix[lo - start : hi - start] += pcm[lo - seg_start : hi - seg_start]
        self._pending = [(s, p) for s, p in self._pending if s + len(p) > end]
        self.pos = end
        self.samples_sent += count
        data = np.clip(mix, -32768, 32767).astype("<i2").tobytes()
        return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


def caller_says_live(emu: Emulator, callid: int, pcm: np.ndarray) -> bool:
    """Queue live microphone audio as the caller's speech; False if the call has ended.

    Unlike ``Emulator.speak`` this writes no log entry per frame: the microphone sends 50
    frames a second."""
    call = emu.controller.pbx.get_call(callid)
    if call.state == "ended":
        return False
    now = asyncio.get_running_loop().time()
    call.voice.queue(np.asarray(pcm, dtype=np.int16), call.sample_at(now) + MIC_LEAD_SAMPLES)
    return True


def pcm_from_bytes(data: bytes) -> np.ndarray:
    """Little-endian int16 samples from a binary WebSocket frame (an odd last byte is dropped)."""
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
