"""Inbound audio processing: bytes from the caller -> frames -> DTMF, then VAD -> events.

DTMF runs first on every frame; frames where a tone is heard are replaced by silence before
the VAD sees them, because webrtcvad calls DTMF tones speech.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .dtmf import DtmfDetector, StagedBlock, classify_many
from .frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, FrameSplitter, pcm_to_array
from .vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector, mean_squares


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

    @property
    def time(self) -> float:
        """Stream time (s) at the end of the last whole frame processed."""
        return self._frames * FRAME_MS / 1000

    def process(self, pcm: bytes | bytearray | memoryview) -> list[InboundEvent]:
        """Feed raw PCM bytes of any size; return the events of every whole frame completed.

        All whole frames of one call are processed as one block (one numpy pass for DTMF and
        the VAD's energies) with the same events, in the same order, as frame by frame: feed
        40-60 ms at a time to amortise the per-call overhead.
        """
        block = self._splitter.feed_block(pcm)
        if not block:
            return []
        return self._block(pcm_to_array(block).reshape(-1, FRAME_SAMPLES))

    def close(self) -> list[InboundEvent]:
        """End of stream: process the zero-padded remainder and close open detections."""
        events: list[InboundEvent] = []
        tail = self._splitter.flush()
        if tail is not None:
            events.extend(self._block(pcm_to_array(tail).reshape(-1, FRAME_SAMPLES)))
        if self.dtmf is not None:
            t = self.time
            events.extend(DigitDetected(d, t) for d in self.dtmf.flush())
        if self.vad is not None:
            events.extend(self.vad.finish())
        return events

    @staticmethod
    def process_many(items: Sequence[tuple[InboundProcessor, bytes | bytearray | memoryview]]) -> list[list[InboundEvent]]:
        """:meth:`process` for many streams at once (same events per stream): the frames of
        all of them are one array, their energies one numpy pass, and the DTMF windows of all
        of them are classified in one matrix product (:func:`classify_many`).
        Detectors must share their settings; each processor may appear once."""
        blocks = [proc._splitter.feed_block(pcm) for proc, pcm in items]
        energies = mean_squares(pcm_to_array(b"".join(blocks)).reshape(-1, FRAME_SAMPLES))
        staged: list[_Staged | None] = []
        row = 0
        for (proc, _), block in zip(items, blocks):
            n = len(block) // FRAME_BYTES
            # Each call's frames view its own block, not the joined one: the VAD keeps frames
            # for a whole utterance, which must not keep every other call's audio alive.
            staged.append(proc._stage(pcm_to_array(block).reshape(-1, FRAME_SAMPLES), energies[row:row + n])
                          if n else None)
            row += n
        with_dtmf = [i for i, st in enumerate(staged) if st is not None and st.dtmf is not None]
        cands = classify_many([items[i][0].dtmf for i in with_dtmf], [staged[i].dtmf for i in with_dtmf])  # type: ignore[misc, union-attr]
        by_item = dict(zip(with_dtmf, cands))
        return [
            [] if st is None else proc._finish(st, by_item.get(i))
            for i, ((proc, _), st) in enumerate(zip(items, staged))
        ]

    def _block(self, frames: np.ndarray) -> list[InboundEvent]:
        """Process consecutive whole frames (shape (n, FRAME_SAMPLES))."""
        staged = self._stage(frames, mean_squares(frames))
        cands = self.dtmf.classify_staged(staged.dtmf) if self.dtmf is not None and staged.dtmf is not None else None
        return self._finish(staged, cands)

    def _stage(self, frames: np.ndarray, energies: list[float]) -> _Staged:
        first = self._frames
        self._frames += len(frames)
        if self.on_frame is not None:
            for k in range(len(frames)):
                self.on_frame(frames[k], (first + k) * FRAME_MS / 1000)
        dtmf = None
        if self.dtmf is not None:
            dtmf = self.dtmf.stage_frames(frames.reshape(-1), FRAME_SAMPLES, energies)
        return _Staged(frames, dtmf, energies)

    def _finish(self, staged: _Staged, cands: list[str | None] | None) -> list[InboundEvent]:
        frames = staged.frames
        keys: list[tuple[str, float, int]] = []
        tone = None
        if self.dtmf is not None and staged.dtmf is not None:
            keys, tone = self.dtmf.finish_frames(staged.dtmf, cands)
        vad_events: list = []
        if self.vad is not None:
            energies = staged.energies
            masked = None
            if tone is not None:  # frames where a tone is heard reach the VAD as silence
                frames = frames.copy()
                frames[tone] = 0
                masked = tone.tolist()
                energies = [0.0 if m else e for e, m in zip(energies, masked)]
            vad_events = self.vad.feed_frames(frames, masked, energies)
        if not keys:
            return [e for _, e in vad_events]
        # Frame by frame, a frame's digits came before its VAD events: keep that order.
        tagged = [(k, 0, DigitDetected(d, t)) for d, t, k in keys] + [(k, 1, e) for k, e in vad_events]
        tagged.sort(key=lambda item: (item[0], item[1]))
        return [e for _, _, e in tagged]


@dataclass
class _Staged:
    frames: np.ndarray  # the block's whole frames (n, FRAME_SAMPLES)
    dtmf: StagedBlock | None
    energies: list[float]  # mean square of each frame


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
