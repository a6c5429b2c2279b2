"""``hibari`` TTS (the default): the offline hibari-tts model, 24 kHz float -> 8 kHz int16.

Output is deterministic: every sentence is synthesized with the same fixed ``seed``, so a
prompt sounds the same each time (and can be cached). The model runs in a worker thread
(about 60 ms for an 8 s prompt) so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np

from .base import AdapterFailed, AdapterUnavailable
from .pcm import resample, to_int16
from .tts_stream import stream_sentences

NAME = "hibari"


class HibariTTS:
    """Offline neural TTS (registry name ``hibari``).

    Options: ``voice`` (default ``heart``, the voice in the package; others download once
    into hibari's cache), ``seed`` (default 0), ``threads`` (onnxruntime threads, default 1).
    """

    name = NAME

    def __init__(self, *, voice: str = "heart", seed: int = 0, threads: int = 1) -> None:
        self.voice, self.seed, self.threads = voice, seed, threads
        self._engines: dict[str, object] = {}
        self._lock = threading.Lock()  # one model load per voice, even from several threads

    def _engine(self, voice: str):
        with self._lock:
            eng = self._engines.get(voice)
            if eng is None:
                try:
                    from hibari import Hibari
                    from hibari.voices import VOICES
                except ImportError:
                    raise AdapterUnavailable("the hibari-tts package is missing: pip install hibari-tts",
                                             adapter=NAME) from None
                if voice not in VOICES:
                    raise AdapterFailed(f"unknown voice {voice!r}; known: {', '.join(sorted(VOICES))}", adapter=NAME)
                eng = self._engines[voice] = Hibari(voice=voice, threads=self.threads)
            return eng

    def _synth_blocking(self, sentence: str, voice: str, speed: float) -> np.ndarray:
        eng = self._engine(voice)
        audio = eng(sentence, speed=speed, seed=self.seed)
        return to_int16(resample(audio.astype(np.float32), eng.sample_rate, 8000))

    async def warm_up(self, voice: str | None = None) -> None:
        """Load the model (about 1 s) before the first call needs it."""
        await asyncio.to_thread(self._synth_blocking, "Ready.", voice or self.voice, 1.0)

    def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 audio, one chunk per sentence; ``rate`` 0.5..2.0 (1.0 normal)."""
        speed = 1.0 if rate is None else float(rate)
        if not 0.5 <= speed <= 2.0:
            raise ValueError(f"hibari.synthesize: rate must be between 0.5 and 2.0, got {rate!r}")
        v = voice or self.voice

        async def synth(sentence: str) -> np.ndarray:
            return await asyncio.to_thread(self._synth_blocking, sentence, v, speed)

        return stream_sentences(text, synth)
