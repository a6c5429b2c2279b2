"""The speech adapters one worker uses, chosen by name in the config (or per flow step).

A Call holds one ``SpeechServices``; ``call.say`` and speech input go through it, so flows
name adapters (``tts: espeak``) and never construct them. Adapters are created on first
use and shared by every call (they are built to be shared: decoders are pooled, TTS output
is cached on disk).

With ``observe`` set (the worker's ``ivr_adapter_latency_seconds``), every adapter handed
out is measured, wherever it is used (``say``, speech input in gather/menu, the agent):
TTS from the request to the first audio, STT from the end of the utterance (``finish()``)
to the final transcript, an LLM from the request to its first delta (text or tool call).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np

from .base import (
    AdapterTimeout,
    ChatMessage,
    LanguageModel,
    LLMDelta,
    RecognitionStream,
    SpeechToText,
    TextToSpeech,
    ToolSpec,
    Transcript,
    iter_with_timeout,
)
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
        stt = get_stt(name, **self.options.get(name, {}))
        return stt if self._observe is None else _MeasuredSTT(stt, self._observe)

    def tts(self, name: str | None = None) -> TextToSpeech:
        name = name or self.tts_name
        if not name:
            raise LookupError("no text-to-speech adapter is configured (speech.tts)")
        tts = get_tts(name, cache=self.tts_cache, **self.options.get(name, {}))
        return tts if self._observe is None else _MeasuredTTS(tts, self._observe)

    def llm(self, name: str | None = None) -> LanguageModel:
        name = name or self.llm_name
        if not name:
            raise LookupError("no language model is configured (speech.llm)")
        llm = get_llm(name, **self.options.get(name, {}))
        return llm if self._observe is None else _MeasuredLLM(llm, self._observe)

    async def synthesize(self, text: str, *, voice: str | None = None, tts: str | None = None) -> AsyncIterator[np.ndarray]:
        """8 kHz int16 chunks of ``text``; AdapterTimeout if the first audio takes too long."""
        engine = self.tts(tts)
        async for chunk in iter_with_timeout(
            engine.synthesize(text, voice=voice), first=self.first_audio_timeout, between=None,
            adapter=getattr(engine, "name", tts or "tts"), what="synthesis",
        ):
            yield chunk


Observe = Callable[[str, str, float], None]


async def _measured(chunks: AsyncIterator[Any], observe: Callable[[], None]) -> AsyncIterator[Any]:
    """``chunks`` as they come; ``observe()`` when the first one arrives. Closing this closes
    ``chunks`` (a barge-in cancels a synthesis or a model's reply, and its request with it)."""
    first = True
    try:
        async for chunk in chunks:
            if first:
                observe()
                first = False
            yield chunk
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class _MeasuredTTS:
    """A TTS adapter whose syntheses report their latency: request to first audio."""

    def __init__(self, inner: TextToSpeech, observe: Observe) -> None:
        self._inner = inner
        self._observe = observe
        self.name = getattr(inner, "name", "tts")

    def synthesize(self, text: str, **options: Any) -> AsyncIterator[np.ndarray]:
        started = time.monotonic()
        return _measured(self._inner.synthesize(text, **options),
                         lambda: self._observe("tts", self.name, time.monotonic() - started))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class _MeasuredSTT:
    """An STT adapter whose recognitions report their latency: ``finish()`` to transcript.
    Everything else is the adapter's own."""

    def __init__(self, inner: SpeechToText, observe: Observe) -> None:
        self._inner = inner
        self._observe = observe
        self.name = getattr(inner, "name", "stt")

    def start(self, *, phrases: Sequence[str] | None = None, grammar: str | None = None,
              language: str | None = None) -> RecognitionStream:
        return _MeasuredStream(self._inner.start(phrases=phrases, grammar=grammar, language=language),
                               self._observe, self.name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class _MeasuredStream:
    def __init__(self, inner: RecognitionStream, observe: Observe, name: str) -> None:
        self._inner, self._observe, self._name = inner, observe, name

    async def feed(self, pcm: np.ndarray) -> None:
        await self._inner.feed(pcm)

    async def finish(self) -> Transcript:
        started = time.monotonic()
        result = await self._inner.finish()
        self._observe("stt", self._name, time.monotonic() - started)
        return result

    def partials(self) -> AsyncIterator[Transcript]:
        return self._inner.partials()

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class _MeasuredLLM:
    """A language model whose replies report their latency: request to first delta."""

    def __init__(self, inner: LanguageModel, observe: Observe) -> None:
        self._inner = inner
        self._observe = observe
        self.name = getattr(inner, "name", "llm")

    def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
               temperature: float | None = None) -> AsyncIterator[LLMDelta]:
        started = time.monotonic()
        return _measured(self._inner.stream(messages, tools=tools, temperature=temperature),
                         lambda: self._observe("llm", self.name, time.monotonic() - started))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


__all__ = ["SpeechServices", "AdapterTimeout"]
