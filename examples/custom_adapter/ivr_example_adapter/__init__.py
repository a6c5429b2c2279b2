"""An example third-party TTS adapter for ivr: one short beep per word.

It shows the whole contract: a ``name``, and ``synthesize()`` as an async generator of
8 kHz mono int16 numpy chunks (one per sentence). Nothing is imported from ivr except
the sentence splitter, which is optional.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from ivr.speech.text import split_sentences


class BeepTTS:
    """Says every word as a beep. Options (from the flow/config): ``pitch`` in Hz, ``beep_ms``."""

    name = "beep"

    def __init__(self, *, pitch: float = 660.0, beep_ms: int = 120) -> None:
        if not 100 <= pitch <= 3500:
            raise ValueError(f"beep: pitch must be 100..3500 Hz (8 kHz audio), got {pitch}")
        self.pitch, self.beep_ms = pitch, beep_ms

    def _beep(self, ms: int) -> np.ndarray:
        t = np.arange(8 * ms) / 8000
        return (0.25 * 32767 * np.sin(2 * np.pi * self.pitch * t)).astype(np.int16)

    async def synthesize(self, text: str, *, voice: str | None = None,
                         rate: float | None = None) -> AsyncIterator[np.ndarray]:
        ms = int(self.beep_ms / (rate or 1.0))
        gap = np.zeros(8 * ms // 2, np.int16)
        for sentence in split_sentences(text):
            yield np.concatenate([np.concatenate([self._beep(ms), gap]) for _ in sentence.split()])
            await asyncio.sleep(0)  # a real engine would await its work here
