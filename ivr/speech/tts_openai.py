"""``openai`` TTS: ``/audio/speech`` of an OpenAI-compatible speech API.

One request per sentence (the next one prefetched). With ``response_format="pcm"`` (the
default: raw 16-bit little-endian mono at ``pcm_rate``, 24 kHz for OpenAI) the body is
resampled to 8 kHz as it streams in; with ``"wav"`` the file is decoded when complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from .base import AdapterFailed
from .openai_http import OpenAIEndpoint
from .pcm import read_wav, resample
from .tts_stream import stream_sentences

NAME = "openai"


class OpenAITTS:
    """Remote TTS (registry name ``openai``). Options: ``model`` (default ``tts-1``), ``voice``
    (default ``alloy``), ``response_format`` (``pcm`` or ``wav``), ``pcm_rate`` (default 24000),
    ``base_url``, ``api_key``, ``api_version``, ``auth``, ``timeout``."""

    name = NAME

    def __init__(self, *, model: str = "tts-1", voice: str = "alloy", response_format: str = "pcm",
                 pcm_rate: int = 24000, base_url: str | None = None, api_key: str | None = None,
                 api_version: str | None = None, auth: str = "bearer", timeout: float = 30.0,
                 extra_headers: dict[str, str] | None = None) -> None:
        if response_format not in ("pcm", "wav"):
            raise ValueError(f"openai tts: response_format must be 'pcm' or 'wav', got {response_format!r}")
        self.endpoint = OpenAIEndpoint(NAME, base_url=base_url, api_key=api_key, api_version=api_version,
                                       auth=auth, timeout=timeout, extra_headers=extra_headers)
        self.model, self.voice, self.response_format, self.pcm_rate = model, voice, response_format, pcm_rate

    def __repr__(self) -> str:
        return f"OpenAITTS(model={self.model!r}, endpoint={self.endpoint!r})"

    async def _synth(self, sentence: str, voice: str, speed: float | None) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": sentence, "voice": voice, "response_format": self.response_format}
        if speed is not None:
            body["speed"] = speed
        async with self.endpoint.request("/audio/speech", "speech", json=body) as resp:
            if self.response_format == "wav":
                try:
                    pcm, rate = read_wav(await resp.read())
                except Exception as e:
                    raise AdapterFailed(f"speech: the answer is not a readable WAV ({e})", adapter=NAME) from None
                return resample(pcm, rate, 8000)
            import soxr

            rs = soxr.ResampleStream(self.pcm_rate, 8000, 1, dtype="float32")  # int16 output is dithered
            out, odd = [], b""
            async for chunk in resp.content.iter_any():
                chunk = odd + chunk
                cut = len(chunk) & ~1  # samples may straddle network chunks
                odd = chunk[cut:]
                out.append(rs.resample_chunk(np.frombuffer(chunk[:cut], "<i2").astype(np.float32)))
            out.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
            return np.clip(np.round(np.concatenate(out)), -32768, 32767).astype(np.int16)

    def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 audio, one chunk per sentence; ``rate`` 0.25..4.0."""
        if rate is not None and not 0.25 <= rate <= 4.0:
            raise ValueError(f"openai.synthesize: rate must be between 0.25 and 4.0, got {rate!r}")
        v = voice or self.voice
        return stream_sentences(text, lambda s: self._synth(s, v, rate))

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self.endpoint.aclose()
