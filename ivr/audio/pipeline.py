"""Inbound audio processing: bytes from the caller -> frames -> DTMF, then VAD -> events.

DTMF runs first on every frame; frames where a tone is heard are replaced by silence before
the VAD sees them, because webrtcvad calls DTMF tones speech.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .dtmf import DtmfDetector
from .frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, FrameSplitter, pcm_to_array
from .vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector


@dataclass(frozen=True)
class DigitDetected:
    """In-band DTMF key ``digit`` heard, tone onset at stream time ``t`` (s)."""

    digit: str
    t: float


InboundEvent = DigitDetected | SpeechStarted | SpeechEnded | SpeechCancelled
FrameTap = Callable[[np.ndarray, float], None]


class InboundProcessor:
    """Turn the caller's raw PCM stream (8 kHz int16 LE, any chunk size) into events.

    ``dtmf``: True for a default :class:`DtmfDetector`, a detector instance, or False.
    ``vad``: True for a default :class:`VoiceActivityDetector`, an instance, or None/False
    for none. ``on_frame(frame, t)`` is called with every 20 ms frame as received (before
    masking) and its stream start time, so a recorder or STT can tap the audio.
    """

    def __init__(self, dtmf: bool | DtmfDetector = True, vad: VoiceActivityDetector | bool | None = True,
                 on_frame: FrameTap | None = None) -> None:
        self.dtmf = DtmfDetector(SAMPLE_RATE) if dtmf is True else (dtmf or None)
        self.vad = VoiceActivityDetector() if vad is True else (vad or None)
        if self.vad is not None and self.vad.sample_rate != SAMPLE_RATE:
            raise ValueError(f"InboundProcessor: the VAD must run at {SAMPLE_RATE} Hz, got {self.vad.sample_rate}")
        self.on_frame = on_frame
        self._splitter = FrameSplitter(FRAME_BYTES)
        self._frames = 0
        self._silent = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    @property
    def time(self) -> float:
        """Stream time (s) at the end of the last whole frame processed."""
        return self._frames * FRAME_MS / 1000

    def process(self, pcm: bytes | bytearray | memoryview) -> list[InboundEvent]:
        """Feed raw PCM bytes of any size; return the events of every whole frame completed."""
        events: list[InboundEvent] = []
        for raw in self._splitter.feed(pcm):
            events.extend(self._frame(pcm_to_array(raw)))
        return events

    def close(self) -> list[InboundEvent]:
        """End of stream: process the zero-padded remainder and close open detections."""
        events: list[InboundEvent] = []
        tail = self._splitter.flush()
        if tail is not None:
            events.extend(self._frame(pcm_to_array(tail)))
        if self.dtmf is not None:
            t = self.time
            events.extend(DigitDetected(d, t) for d in self.dtmf.flush())
        if self.vad is not None:
            events.extend(self.vad.finish())
        return events

    def _frame(self, frame: np.ndarray) -> list[InboundEvent]:
        t = self.time
        self._frames += 1
        if self.on_frame is not None:
            self.on_frame(frame, t)
        events: list[InboundEvent] = []
        tone = False
        if self.dtmf is not None:
            events.extend(DigitDetected(d, dt) for d, dt in self.dtmf.feed_timed(frame))
            tone = self.dtmf.tone_active
        if self.vad is not None:
            events.extend(self.vad.feed(self._silent if tone else frame, masked=tone))
        return events


class DigitMerger:
    """Count each key press once when it arrives both in-band and as a PBX DTMF event.

    Rule: a digit from one source is a duplicate if the *other* source reported the same
    digit within ``window`` seconds (either order) and that report has not already been
    matched. Each report matches at most one from the other source, so "55" pressed twice
    still counts twice. Same-source repeats always count. Times must be on one clock (e.g.
    ``loop.time()`` at arrival); they are passed in, so this class never reads a clock.
    """

    def __init__(self, window: float = 0.15) -> None:
        if window < 0:
            raise ValueError(f"DigitMerger: window must be >= 0 s, got {window}")
        self.window = window
        self._recent: deque[tuple[str, str, float]] = deque()  # (digit, source, t), unmatched

    def add(self, digit: str, source: str, t: float) -> str | None:
        """Report ``digit`` from ``source`` ("inband", "pbx", ...) at ``t``; return it if new."""
        # Forget reports that can no longer match anything.
        while self._recent and t - self._recent[0][2] > self.window:
            self._recent.popleft()
        for i, (d, s, t0) in enumerate(self._recent):
            if d == digit and s != source and abs(t - t0) <= self.window:
                del self._recent[i]
                return None
        self._recent.append((digit, source, t))
        return digit
