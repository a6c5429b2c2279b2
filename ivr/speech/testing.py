"""Test doubles for flows and agents: a scripted LLM, a scripted STT and a tone TTS.

They implement the same protocols as the real adapters (and are registered as ``scripted``
and ``tone``), so a flow can be tested end to end without engines or network::

    llm = ScriptedLLM(["Hello!", Turn(tool_calls=[ToolCall("c1", "transfer", {"to": "sales"})])])
    stt = ScriptedSTT(["sales", "operator"])
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .base import (
    AdapterFailed,
    BaseRecognitionStream,
    ChatMessage,
    LLMDelta,
    TextDelta,
    ToolCall,
    ToolSpec,
    Transcript,
    check_pcm,
)


@dataclass(frozen=True)
class Turn:
    """One scripted model answer: text (streamed token by token) and/or tool calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] | list[ToolCall] = ()


@dataclass
class LLMCall:
    """What one ``stream()`` call was given."""

    messages: list[ChatMessage]
    tools: list[ToolSpec]
    temperature: float | None


class ScriptedLLM:
    """Answers each ``stream()`` call with the next scripted turn.

    ``turns`` items may be a ``Turn``, a string (text only), a ``ToolCall`` or a dict with
    ``text``/``tool_calls``. ``token_delay`` seconds between tokens simulate generation speed.
    ``calls`` records every request; ``cancelled`` counts streams stopped before their end.
    """

    name = "scripted"

    def __init__(self, turns: Sequence[Turn | str | ToolCall | dict] = (), *, token_delay: float = 0.0) -> None:
        self.turns = [self._turn(t) for t in turns]
        self.token_delay = token_delay
        self.calls: list[LLMCall] = []
        self.cancelled = 0  # streams stopped by the consumer before their end (barge-in)

    @staticmethod
    def _turn(t: Turn | str | ToolCall | dict) -> Turn:
        if isinstance(t, Turn):
            return t
        if isinstance(t, str):
            return Turn(text=t)
        if isinstance(t, ToolCall):
            return Turn(tool_calls=(t,))
        if isinstance(t, dict):
            calls = tuple(c if isinstance(c, ToolCall) else ToolCall(c.get("id", f"call_{i}"), c["name"],
                                                                     dict(c.get("arguments", {})))
                          for i, c in enumerate(t.get("tool_calls", ())))
            return Turn(text=t.get("text", ""), tool_calls=calls)
        raise TypeError(f"ScriptedLLM: a turn must be Turn, str, ToolCall or dict, got {type(t).__name__}")

    async def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
                     temperature: float | None = None) -> AsyncIterator[LLMDelta]:
        """Yield the next turn's text tokens (words with their spaces), then its tool calls."""
        n = len(self.calls)
        self.calls.append(LLMCall(list(messages), list(tools), temperature))
        if n >= len(self.turns):
            raise AdapterFailed(f"no scripted turn left (call {n + 1}, {len(self.turns)} turns given)",
                                adapter=self.name)
        turn = self.turns[n]
        try:
            for token in re.findall(r"\s*\S+", turn.text):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                yield TextDelta(token)
            for call in turn.tool_calls:
                yield call
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


class ScriptedSTT:
    """Each ``finish()`` returns the next scripted transcript (a string or a ``Transcript``);
    none left: ``AdapterFailed``. Streams abandoned before ``finish()`` (a cough the VAD
    cancelled, speech a gather ignores) consume none.

    ``streams`` records, per utterance, the phrases asked for, the samples fed, the number
    of ``feed`` calls and whether ``finish`` was called (a streaming consumer feeds while
    the caller speaks: ``samples_fed > 0`` before ``finished``).
    """

    name = "scripted"

    def __init__(self, transcripts: Sequence[str | Transcript] = (), *, confidence: float = 0.9) -> None:
        self.transcripts = [t if isinstance(t, Transcript) else Transcript(t, confidence=confidence, is_final=True, raw=t)
                            for t in transcripts]
        self.streams: list[ScriptedRecognition] = []
        self.used = 0  # transcripts handed out

    def start(self, *, phrases: Sequence[str] | None = None, grammar: str | None = None,
              language: str | None = None) -> ScriptedRecognition:
        """Begin an utterance; ``finish()`` returns the next scripted transcript."""
        s = ScriptedRecognition(None, list(phrases) if phrases else None, take=self._take)
        self.streams.append(s)
        return s

    def _take(self) -> Transcript:
        if self.used >= len(self.transcripts):
            raise AdapterFailed(f"no scripted transcript left (utterance {self.used + 1}, "
                                f"{len(self.transcripts)} given)", adapter=self.name)
        self.used += 1
        return self.transcripts[self.used - 1]


@dataclass
class ScriptedRecognition(BaseRecognitionStream):
    """One scripted utterance: ``result``, or else the next transcript ``take()`` gives at finish."""

    result: Transcript | None
    phrases: list[str] | None = None
    samples_fed: int = 0
    feeds: int = 0
    finished: bool = False
    closed: bool = field(default=False)
    take: Callable[[], Transcript] | None = field(default=None, repr=False)

    async def feed(self, pcm: np.ndarray) -> None:
        check_pcm(pcm, "scripted.feed")
        self.samples_fed += len(pcm)
        self.feeds += 1

    async def finish(self) -> Transcript:
        self.finished = True
        if self.result is None:
            if self.take is None:
                raise AdapterFailed("no transcript for this utterance", adapter="scripted")
            self.result = self.take()
        r = self.result
        return r if r.is_final else Transcript(r.text, r.confidence, True, r.alternatives, r.raw)

    async def close(self) -> None:
        self.closed = True


class ToneTTS:
    """A deterministic TTS without an engine: one 440 Hz beep of ``ms_per_char`` per character
    per sentence, then 100 ms of silence. ``calls`` counts synthesize() calls."""

    name = "tone"

    def __init__(self, *, ms_per_char: float = 40.0, frequency: float = 440.0) -> None:
        self.ms_per_char, self.frequency = ms_per_char, frequency
        self.calls = 0

    async def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        from .text import split_sentences

        self.calls += 1
        speed = rate or 1.0
        for sentence in split_sentences(text):
            n = int(8000 * len(sentence) * self.ms_per_char / 1000 / speed)
            t = np.arange(n) / 8000
            tone = (0.3 * 32767 * np.sin(2 * np.pi * self.frequency * t)).astype(np.int16)
            yield np.concatenate([tone, np.zeros(800, np.int16)])
            await asyncio.sleep(0)
