"""The speech adapters one worker uses, chosen by name in the config (or per flow step).

A Call holds one ``SpeechServices``; ``call.say`` and speech input go through it, so flows
name adapters (``tts: espeak``) and never construct them. Adapters are created on first
use and shared by every call (they are built to be shared: decoders are pooled, TTS output
is cached on disk).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Callable

import numpy as np

from .base import AdapterTimeout, LanguageModel, SpeechToText, TextToSpeech, iter_with_timeout
from .registry import get_llm, get_stt, get_tts


class SpeechServices:
    """Default adapter names plus per-adapter options; resolves names to shared instances."""

    def __init__(
        self,
        *,
        stt: str | None = "pocketsphinx",
        tts: str | None = "hibari",
        llm: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        tts_cache: bool | str | None = True,
        first_audio_timeout: float = 5.0,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.stt_name = stt
        self.tts_name = tts
        self.llm_name = llm
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.tts_cache = tts_cache
        # A failing TTS must not leave the caller in silence longer than this.
        self.first_audio_timeout = first_audio_timeout
        self._observe = observe  # (kind, name, seconds): adapter latency, for metrics

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "SpeechServices":
        """From the worker config's ``speech:`` section (ivr.config.SpeechSettings)."""
        return cls(stt=settings.stt, tts=settings.tts, llm=settings.llm, options=settings.options, **kwargs)

    def stt(self, name: str | None = None) -> SpeechToText:
        name = name or self.stt_name
        if not name:
            raise LookupError("no speech-to-text adapter is configured (speech.stt)")
        return get_stt(name, **self.options.get(name, {}))

    def tts(self, name: str | None = None) -> TextToSpeech:
        name = name or self.tts_name
        if not name:
            raise LookupError("no text-to-speech adapter is configured (speech.tts)")
        return get_tts(name, cache=self.tts_cache, **self.options.get(name, {}))

    def llm(self, name: str | None = None) -> LanguageModel:
        name = name or self.llm_name
        if not name:
            raise LookupError("no language model is configured (speech.llm)")
        return get_llm(name, **self.options.get(name, {}))

    async def synthesize(self, text: str, *, voice: str | None = None, tts: str | None = None) -> AsyncIterator[np.ndarray]:
        """8 kHz int16 chunks of ``text``; AdapterTimeout if the first audio takes too long."""
        engine = self.tts(tts)
        started = time.monotonic()
        first = True
        async for chunk in iter_with_timeout(
            engine.synthesize(text, voice=voice), first=self.first_audio_timeout, between=None,
            adapter=getattr(engine, "name", tts or "tts"), what="synthesis",
        ):
            if first and self._observe is not None:
                self._observe("tts", getattr(engine, "name", "tts"), time.monotonic() - started)
            first = False
            yield chunk


__all__ = ["SpeechServices", "AdapterTimeout"]
