"""Speech adapter protocols (STT, TTS, LLM), their data types, errors and timeout helpers.

Every adapter is async and cancellable. Audio crossing these interfaces is always 8 kHz,
mono, signed 16-bit numpy arrays (see ``docs/architecture.md``); adapters resample at
their own edge. Adapters are structural (``typing.Protocol``): a third-party class does
not need to inherit from anything here, it only needs the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

SAMPLE_RATE = 8000
"""The one internal sample rate: every adapter takes and returns 8 kHz int16 audio."""

T = TypeVar("T")


# -- errors --------------------------------------------------------------------------------


class SpeechError(Exception):
    """Base of every adapter error; ``adapter`` names the adapter that raised it."""

    def __init__(self, message: str, *, adapter: str = "") -> None:
        super().__init__(f"{adapter}: {message}" if adapter else message)
        self.adapter = adapter


class AdapterTimeout(SpeechError, TimeoutError):
    """The engine or service did not answer in time (a flow may retry or fall back)."""


class AdapterUnavailable(SpeechError):
    """The adapter cannot run here: a package, binary, model or server is missing or unreachable.

    The message says what to install or start.
    """


class AdapterFailed(SpeechError):
    """The engine ran and failed (bad request, bad answer, HTTP error, engine crash)."""


class AdapterHTTPError(AdapterFailed):
    """A remote service answered with an HTTP error; ``status`` is the HTTP status code."""

    def __init__(self, message: str, *, adapter: str = "", status: int) -> None:
        super().__init__(message, adapter=adapter)
        self.status = status


class UnknownAdapter(SpeechError, LookupError):
    """No adapter of that kind is registered under that name."""


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alternative:
    """A less likely reading of the same utterance."""

    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """A recognition result.

    ``text`` is what the flow should act on (for grammar recognition: the matched phrase
    exactly as the flow wrote it); ``raw`` is what the engine produced before that mapping.
    ``confidence`` is in 0..1.
    """

    text: str
    confidence: float = 0.0
    is_final: bool = False
    alternatives: tuple[Alternative, ...] = ()
    raw: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"Transcript.confidence must be in 0..1, got {self.confidence!r}")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: ``parameters`` is a JSON schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call requested by the model (arguments already parsed from JSON)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of assistant text, in order."""

    text: str


LLMDelta = TextDelta | ToolCall
"""What ``LanguageModel.stream`` yields: text pieces, then (or instead) complete tool calls."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn. ``role`` is system, user, assistant or tool.

    An assistant turn that called tools carries ``tool_calls``; the answer to a call is a
    ``tool`` turn with ``tool_call_id`` set and the result in ``content``.
    """

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"ChatMessage.role must be system, user, assistant or tool, got {self.role!r}")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("ChatMessage with role 'tool' needs tool_call_id")


# -- protocols -----------------------------------------------------------------------------


@runtime_checkable
class RecognitionStream(Protocol):
    """One utterance being recognised. Feed audio, then ``finish()``; always ``close()``."""

    async def feed(self, pcm: np.ndarray) -> None:
        """Add 8 kHz int16 mono audio (20 ms frames or any size)."""
        ...

    async def finish(self) -> Transcript:
        """End of speech: return the final transcript (``is_final=True``)."""
        ...

    def partials(self) -> AsyncIterator[Transcript]:
        """Partial transcripts as they change; may yield nothing. Ends after finish/close."""
        ...

    async def close(self) -> None:
        """Release the engine; safe to call more than once and after cancellation."""
        ...


@runtime_checkable
class SpeechToText(Protocol):
    """A speech recogniser."""

    name: str

    def start(
        self,
        *,
        phrases: Sequence[str] | None = None,
        grammar: str | None = None,
        language: str | None = None,
    ) -> RecognitionStream:
        """Begin an utterance; ``phrases`` restricts (or biases) recognition to those phrases."""
        ...


@runtime_checkable
class TextToSpeech(Protocol):
    """A speech synthesiser."""

    name: str

    def synthesize(self, text: str, *, voice: str | None = None, rate: float | None = None) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 chunks, the first as soon as the first sentence is ready.

        ``rate`` is a speed factor (1.0 normal, 0.5 slow, 2.0 fast).
        """
        ...


@runtime_checkable
class LanguageModel(Protocol):
    """A chat model with streaming output and tool calling."""

    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        temperature: float | None = None,
    ) -> AsyncIterator[LLMDelta]:
        """Yield ``TextDelta`` pieces and complete ``ToolCall`` objects; cancelling stops the request."""
        ...


# -- helpers -------------------------------------------------------------------------------


class BaseRecognitionStream:
    """Optional base for recognition streams: an async context manager and an empty ``partials()``."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def partials(self) -> AsyncIterator[Transcript]:
        return
        yield  # pragma: no cover - makes this an async generator that yields nothing

    async def close(self) -> None:  # pragma: no cover - overridden
        return None


def check_pcm(pcm: object, where: str) -> np.ndarray:
    """Return ``pcm`` if it is a 1-D int16 array, else raise a one-line TypeError naming ``where``."""
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
        got = f"{pcm.dtype} array of shape {pcm.shape}" if isinstance(pcm, np.ndarray) else type(pcm).__name__
        raise TypeError(f"{where}: expected a 1-D int16 numpy array of 8 kHz audio, got {got}")
    return pcm


async def with_timeout(aw: Awaitable[T], seconds: float | None, *, adapter: str, what: str) -> T:
    """Await ``aw`` for at most ``seconds`` (None: no limit); raise ``AdapterTimeout`` on expiry."""
    if seconds is None:
        return await aw
    try:
        return await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        raise AdapterTimeout(f"{what} took longer than {seconds:g} s", adapter=adapter) from None


async def iter_with_timeout(
    it: AsyncIterator[T],
    *,
    first: float | None,
    between: float | None,
    adapter: str,
    what: str,
) -> AsyncGenerator[T, None]:  # a generator: callers may aclose() it
    """Re-yield ``it``, raising ``AdapterTimeout`` if the first item takes longer than ``first``
    seconds or any later one longer than ``between`` (time to first token / audio, stalls)."""
    limit = first
    try:
        while True:
            try:
                item = await with_timeout(anext(it), limit, adapter=adapter, what=what)
            except StopAsyncIteration:
                return
            yield item
            limit = between
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


async def transcribe(stt: SpeechToText, pcm: np.ndarray, **start_options: Any) -> Transcript:
    """Recognise one whole utterance held in memory (convenience for tests and tools)."""
    stream = stt.start(**start_options)
    try:
        await stream.feed(pcm)
        return await stream.finish()
    finally:
        await stream.close()


async def synthesize_all(tts: TextToSpeech, text: str, **options: Any) -> np.ndarray:
    """Synthesize ``text`` completely and return one 8 kHz int16 array."""
    chunks = [c async for c in tts.synthesize(text, **options)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
