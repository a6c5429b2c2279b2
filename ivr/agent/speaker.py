"""Speak one assistant reply while it is still being written, and know what the caller heard.

Sentences arrive from the LLM loop one by one; a background task synthesizes each in turn and
queues its chunks on the call's playback queue at once (``CallMedia.enqueue``), so sentence
*n+1* is synthesized while sentence *n* plays. Every chunk keeps its play future, so after a
barge-in the reply can be cut back to the words that actually reached the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.call.results import PlayResult
from ivr.speech.base import TextToSpeech, iter_with_timeout

__all__ = ["Reply"]

SAMPLES_PER_MS = 8


@dataclass
class _Chunk:
    sentence: int
    samples: int
    played: asyncio.Future[PlayResult]


class Reply:
    """One reply: ``say(sentence)`` as text comes in, ``close()`` when the text is complete,
    ``await played()`` until the audio is out; ``cancel()`` on barge-in, then ``heard()``."""

    def __init__(self, media: Any, tts: TextToSpeech, *, voice: str | None = None,
                 first_audio_timeout: float | None = 5.0,
                 on_first_audio: Callable[[], None] | None = None) -> None:
        self.media = media
        self.tts = tts
        self.voice = voice
        self.first_audio_timeout = first_audio_timeout
        self.on_first_audio = on_first_audio
        self.sentences: list[str] = []
        self._chunks: list[_Chunk] = []
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False
        self.cancelled = False
        self._task = asyncio.ensure_future(self._speak())

    @property
    def text(self) -> str:
        """Everything handed to ``say`` so far."""
        return " ".join(self.sentences)

    def say(self, sentence: str) -> None:
        """Queue one complete sentence for synthesis."""
        self.sentences.append(sentence)
        self._queue.put_nowait(sentence)

    def close(self) -> None:
        """No more sentences will come (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    async def _speak(self) -> None:
        index = 0
        name = getattr(self.tts, "name", "tts")
        while (sentence := await self._queue.get()) is not None:
            # A TTS that hangs must not leave the caller in silence: bound its first chunk.
            async for chunk in iter_with_timeout(self.tts.synthesize(sentence, voice=self.voice),
                                                 first=self.first_audio_timeout, between=None,
                                                 adapter=name, what="synthesis"):
                if not len(chunk):
                    continue
                if not self._chunks and self.on_first_audio is not None:
                    self.on_first_audio()
                fut = self.media.enqueue(chunk, barge_in_speech=True, barge_in_dtmf=False, tag="agent")
                self._chunks.append(_Chunk(index, len(chunk), fut))
            index += 1

    async def synthesized(self) -> None:
        """Wait until every sentence has been synthesized and queued (raises TTS errors)."""
        if not self.cancelled:
            await self._task

    async def played(self) -> None:
        """Wait until the whole reply has played (or was cut); raises TTS errors."""
        if self.cancelled:
            return
        await self._task
        for chunk in list(self._chunks):
            await chunk.played

    def cancel(self, reason: str = "speech") -> None:
        """Stop synthesizing and drop what is queued (barge-in)."""
        self.cancelled = True
        self._task.cancel()
        if any(not c.played.done() for c in self._chunks):
            self.media.cut(reason)

    async def aclose(self) -> None:
        """Cancel and wait for the synthesis task to end (cleanup)."""
        self.cancel("agent_done")
        await asyncio.gather(self._task, return_exceptions=True)

    def heard(self) -> str:
        """The words the caller heard: whole sentences played, then the played share of the
        sentence that was cut (by duration), marked with "..."."""
        total = [0] * len(self.sentences)
        played = [0] * len(self.sentences)
        for c in self._chunks:
            total[c.sentence] += c.samples
            if c.played.done() and not c.played.cancelled():
                result = c.played.result()
                played[c.sentence] += c.samples if result.completed else min(c.samples, result.played_ms * SAMPLES_PER_MS)
        words: list[str] = []
        for i, sentence in enumerate(self.sentences):
            if total[i] and played[i] >= total[i]:
                words.append(sentence)
                continue
            if total[i] and played[i]:
                parts = sentence.split()
                n = int(len(parts) * played[i] / total[i])
                if n:
                    words.append(" ".join(parts[:n]) + "...")
            break
        return " ".join(words)
