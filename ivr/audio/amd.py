"""Answering-machine detection from the callee's audio after answer (sans-I/O).

People pick up and say something short ("Hello?", "Anna speaking") and then wait for an answer.
Voicemail greetings and call-screening bots start talking and go on ("Hi, you've reached Anna.
I can't take your call right now, please leave a message after the tone"). The detector
watches the cadence of voice activity, frame by frame from the moment of answer, and decides:

- ``human``: an utterance shorter than ``greeting_max`` followed by ``after_greeting_silence``
  of silence (the caller waits for us). Typically decided 1-2 s after answer.
- ``machine``: one utterance longer than ``greeting_max`` (decided the moment it gets that
  long), or ``max_utterances`` utterances without a pause long enough for a reply.
- ``unknown``: nobody spoke within ``initial_silence``, or nothing was clear by ``total_max``.

After ``machine``, :class:`GreetingEnd` waits for the greeting to finish: a beep (a steady tone),
or ``end_silence`` of silence after the last speech, so the message is left on the recording.

Time is counted in frames fed (20 ms each): no clock, so tests and benchmarks are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .frames import FRAME_MS
from .vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector

AmdResult = Literal["human", "machine", "unknown"]
FRAME_S = FRAME_MS / 1000
NOISE_MARGIN = 10 ** (4 / 10)  # speech frames stand 4 dB above the noise floor
FLOOR_RISE = 10 ** (0.02 / 10)  # the floor may rise 0.02 dB per frame (1 dB/s): minimum tracking


@dataclass(frozen=True)
class AmdSettings:
    """Thresholds in seconds; the defaults suit 8 kHz telephone audio."""

    initial_silence: float = 2.5  # nobody spoke by then: unknown
    greeting_max: float = 1.5  # one utterance longer than this: machine
    after_greeting_silence: float = 0.8  # a short utterance and this much silence: human
    max_utterances: int = 4  # this many utterances with no pause for a reply: machine
    total_max: float = 4.0  # undecided by then: machine if still talking, else unknown
    min_utterance: float = 0.12  # shorter voiced blips (clicks, breath) are ignored

    def __post_init__(self) -> None:
        for name in ("initial_silence", "greeting_max", "after_greeting_silence", "total_max", "min_utterance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AmdSettings: {name} must be > 0, got {getattr(self, name)}")
        if self.max_utterances < 2:
            raise ValueError(f"AmdSettings: max_utterances must be >= 2, got {self.max_utterances}")


@dataclass(frozen=True)
class AmdDecision:
    """What the detector decided, why, and when (seconds after answer)."""

    result: AmdResult
    reason: str
    at: float
    speech_seconds: float = 0.0  # voiced time heard before the decision


class AnsweringMachineDetector:
    """Feed the callee's 20 ms int16 frames from the moment of answer; read ``decision``."""

    def __init__(self, settings: AmdSettings | None = None, *, sample_rate: int = 8000) -> None:
        self.settings = s = settings or AmdSettings()
        # Words inside a sentence are closer than 250 ms; a pause for a reply is longer.
        self._vad = VoiceActivityDetector(aggressiveness=2, start_ms=60, end_ms=250,
                                          min_speech_ms=int(s.min_utterance * 1000), pre_roll_ms=0,
                                          sample_rate=sample_rate)
        self.decision: AmdDecision | None = None
        self._floor: float | None = None  # noise floor (mean square), tracked from below
        self._utterances = 0
        self._speech_s = 0.0
        self._talking_since: float | None = None
        self._quiet_since = 0.0  # end of the last utterance (or answer)

    @property
    def time(self) -> float:
        """Seconds of audio fed since answer."""
        return self._vad.time

    def feed(self, frame: np.ndarray | bytes) -> AmdDecision | None:
        """One frame; the decision once there is one (later frames change nothing)."""
        if self.decision is not None:
            return self.decision
        if isinstance(frame, (bytes, bytearray, memoryview)):
            frame = np.frombuffer(frame, dtype="<i2")
        for event in self._vad.feed(frame, masked=self._is_noise(frame)):
            if isinstance(event, SpeechStarted):
                self._talking_since = event.t
            elif isinstance(event, SpeechEnded):
                self._talking_since = None
                self._utterances += 1
                self._speech_s += event.duration
                self._quiet_since = event.t
                if self._utterances >= self.settings.max_utterances:
                    return self._decide("machine", f"{self._utterances} utterances without a pause")
            elif isinstance(event, SpeechCancelled):
                self._talking_since = None
        return self._check()

    def _is_noise(self, frame: np.ndarray) -> bool:
        """True for frames not clearly above the line's noise floor.

        webrtcvad calls steady noise speech on a noisy line, which makes every hello sound
        like an endless greeting. The floor follows the quietest frames (minimum tracking:
        down at once, up by ~1 dB a second) and a frame counts only if it is ``NOISE_MARGIN`` (4 dB)
        above it.
        """
        x = frame.astype(np.float64)
        power = float(np.dot(x, x)) / len(x) + 1.0
        floor = self._floor
        floor = power if floor is None else min(power, floor * FLOOR_RISE)
        self._floor = floor
        return power < floor * NOISE_MARGIN

    def feed_many(self, frames: np.ndarray) -> AmdDecision | None:
        """Frames of shape (n, samples) in order; stops at the decision."""
        for frame in frames:
            if self.feed(frame) is not None:
                break
        return self.decision

    def _check(self) -> AmdDecision | None:
        s, now = self.settings, self.time
        if self._talking_since is not None:
            if now - self._talking_since >= s.greeting_max:
                return self._decide("machine", f"greeting longer than {s.greeting_max:g} s")
        elif self._utterances == 0:
            if now >= s.initial_silence:
                return self._decide("unknown", f"no speech within {s.initial_silence:g} s")
        elif now - self._quiet_since >= s.after_greeting_silence:
            return self._decide("human", f"short greeting, then {s.after_greeting_silence:g} s of silence")
        if now >= s.total_max:
            if self._talking_since is not None:
                return self._decide("machine", f"still talking after {s.total_max:g} s")
            return self._decide("unknown", f"undecided after {s.total_max:g} s")
        return None

    def _decide(self, result: AmdResult, reason: str) -> AmdDecision:
        talking = self.time - self._talking_since if self._talking_since is not None else 0.0
        self.decision = AmdDecision(result, reason, round(self.time, 3), round(self._speech_s + talking, 3))
        return self.decision


class BeepDetector:
    """A steady tone (an answering machine's beep): one dominant frequency between 300 and
    3000 Hz holding most of the frame's energy for ``min_ms``. Speech has several formants and
    moves; a beep does not."""

    def __init__(self, *, min_ms: int = 120, purity: float = 0.6, min_rms: float = 300.0,
                 sample_rate: int = 8000) -> None:
        self._need = max(1, -(-min_ms // FRAME_MS))
        self._purity = purity
        self._min_power = min_rms * min_rms
        n = sample_rate * FRAME_MS // 1000
        self._window = np.hanning(n)
        freqs = np.fft.rfftfreq(n, 1 / sample_rate)
        self._band = (freqs >= 300) & (freqs <= 3000)
        self._run = 0
        self._bin = -1

    def feed(self, frame: np.ndarray) -> bool:
        """True once the tone has lasted ``min_ms`` (on the frame that completes it)."""
        x = np.asarray(frame, dtype=np.float64)
        if float(np.mean(x * x)) < self._min_power:
            self._run = 0
            return False
        spectrum = np.abs(np.fft.rfft(x * self._window)) ** 2
        total = float(spectrum.sum()) or 1.0
        peak = int(np.argmax(spectrum))
        share = float(spectrum[max(0, peak - 1):peak + 2].sum()) / total
        if not self._band[peak] or share < self._purity:
            self._run = 0
            return False
        self._run = self._run + 1 if abs(peak - self._bin) <= 1 else 1
        self._bin = peak
        return self._run >= self._need


class GreetingEnd:
    """After ``machine``: when to start speaking so the message lands on the recording.

    Ends on the beep (``reason`` ``beep``), on ``end_silence`` of silence after the greeting's
    last speech (``silence``), or after ``max_wait`` (``timeout``).
    """

    def __init__(self, *, end_silence: float = 1.5, max_wait: float = 30.0, sample_rate: int = 8000) -> None:
        self.end_silence = end_silence
        self.max_wait = max_wait
        self._vad = VoiceActivityDetector(aggressiveness=2, start_ms=60, end_ms=250, min_speech_ms=120,
                                          pre_roll_ms=0, sample_rate=sample_rate)
        self._beep = BeepDetector(sample_rate=sample_rate)
        self._quiet_since = 0.0
        self.reason: str | None = None
        self.at: float | None = None

    def feed(self, frame: np.ndarray | bytes) -> str | None:
        """One frame; ``beep``, ``silence`` or ``timeout`` once the greeting is over."""
        if self.reason is not None:
            return self.reason
        if isinstance(frame, (bytes, bytearray, memoryview)):
            frame = np.frombuffer(frame, dtype="<i2")
        if self._beep.feed(frame):
            return self._end("beep")
        for event in self._vad.feed(frame):
            if isinstance(event, SpeechEnded):
                self._quiet_since = event.t
        now = self._vad.time
        if not self._vad.in_speech and now - self._quiet_since >= self.end_silence:
            return self._end("silence")
        if now >= self.max_wait:
            return self._end("timeout")
        return None

    def _end(self, reason: str) -> str:
        self.reason, self.at = reason, round(self._vad.time, 3)
        return reason
