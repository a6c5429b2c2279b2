"""``openai`` STT: ``/audio/transcriptions`` of an OpenAI-compatible speech API.

Not streaming: the utterance is buffered and sent as one 8 kHz WAV on ``finish()``. With
``phrases`` the phrases are sent as the ``prompt`` (a bias, not a restriction). Confidence
comes from ``verbose_json`` segments (mean ``avg_logprob``) or returned ``logprobs`` when
the service gives them; otherwise it is 1.0 (the service gives none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import AdapterFailed, BaseRecognitionStream, Transcript, check_pcm, with_timeout
from .openai_http import OpenAIEndpoint
from .pcm import wav_bytes

NAME = "openai"


def confidence_of(result: dict[str, Any]) -> float:
    """Confidence 0..1 from a transcription response (1.0 when it carries none)."""
    logprobs = [s["avg_logprob"] for s in result.get("segments") or () if "avg_logprob" in s]
    if not logprobs:
        logprobs = [t["logprob"] for t in result.get("logprobs") or () if "logprob" in t]
    if not logprobs:
        return 1.0
    return float(min(1.0, max(0.0, math.exp(sum(logprobs) / len(logprobs)))))


class OpenAISTT:
    """Remote transcription (registry name ``openai``). Options: ``model`` (default
    ``whisper-1``), ``response_format`` (``json`` or ``verbose_json``), ``language``,
    ``base_url``, ``api_key``, ``api_version``, ``auth``, ``timeout`` (whole request, default 30 s)."""

    name = NAME

    def __init__(self, *, model: str = "whisper-1", response_format: str = "json", language: str | None = None,
                 base_url: str | None = None, api_key: str | None = None, api_version: str | None = None,
                 auth: str = "bearer", timeout: float = 30.0, extra_headers: dict[str, str] | None = None) -> None:
        self.endpoint = OpenAIEndpoint(NAME, base_url=base_url, api_key=api_key, api_version=api_version,
                                       auth=auth, timeout=timeout, extra_headers=extra_headers)
        self.model, self.response_format, self.language, self.timeout = model, response_format, language, timeout

    def __repr__(self) -> str:
        return f"OpenAISTT(model={self.model!r}, endpoint={self.endpoint!r})"

    def start(self, *, phrases: Sequence[str] | None = None, grammar: str | None = None,
              language: str | None = None) -> OpenAIRecognition:
        """Begin an utterance (``grammar`` is not supported by this API and is ignored)."""
        prompt = ", ".join(phrases) if phrases else None
        return OpenAIRecognition(self, prompt, language or self.language)

    async def transcribe_wav(self, wav: bytes, *, prompt: str | None = None, language: str | None = None) -> dict:
        """POST one WAV file and return the JSON answer."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("file", wav, filename="utterance.wav", content_type="audio/wav")
        form.add_field("model", self.model)
        form.add_field("response_format", self.response_format)
        if prompt:
            form.add_field("prompt", prompt)
        if language:
            form.add_field("language", language.split("-")[0])

        async def post() -> dict:
            async with self.endpoint.request("/audio/transcriptions", "transcription", data=form) as resp:
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise AdapterFailed("transcription: the answer is not JSON", adapter=NAME) from None

        return await with_timeout(post(), self.timeout, adapter=NAME, what="transcription")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self.endpoint.aclose()


class OpenAIRecognition(BaseRecognitionStream):
    """One buffered utterance."""

    def __init__(self, stt: OpenAISTT, prompt: str | None, language: str | None) -> None:
        self._stt, self._prompt, self._language = stt, prompt, language
        self._chunks: list[np.ndarray] = []
        self._done = False

    async def feed(self, pcm: np.ndarray) -> None:
        """Buffer 8 kHz int16 audio."""
        check_pcm(pcm, "openai.feed")
        if self._done:
            raise AdapterFailed("feed() after finish() or close()", adapter=NAME)
        self._chunks.append(pcm.copy())

    async def finish(self) -> Transcript:
        """Send the utterance and return the final transcript."""
        if self._done:
            raise AdapterFailed("finish() called twice or after close()", adapter=NAME)
        self._done = True
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        result = await self._stt.transcribe_wav(wav_bytes(pcm), prompt=self._prompt, language=self._language)
        text = str(result.get("text", "")).strip()
        return Transcript(text, confidence=round(confidence_of(result), 4) if text else 0.0, is_final=True, raw=text)

    async def close(self) -> None:
        """Drop the buffered audio."""
        self._done = True
        self._chunks = []
