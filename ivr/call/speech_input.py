"""Speech input for ``gather`` and ``menu``: what to listen for, and one attempt's listening.

* :class:`SpeechOptions` - what the caller may say (phrases, synonyms per choice, or a JSGF
  grammar), which STT adapter, and the confidence / length limits. Pure data; the flow
  schema embeds it.
* :meth:`SpeechOptions.match` - a transcript -> the choice (or why there is none); sans-I/O.
* :class:`SpeechAttempt` - one gather attempt's speech: fed the VAD's speech events from the
  call's input stream, it recognises each utterance and says when speech decided the
  attempt. The Call's attempt loop (``Call._collect_once``) feeds it and the DTMF collector
  from the one stream.

Recognition streams each utterance to the STT while the caller speaks
(:class:`~ivr.call.utterance.UtteranceRecognizer`) and finishes at ``SpeechEnded``. The audio
is exactly the one in the VAD's ``SpeechEnded`` (pre-roll + speech + hangover), even when the
caller started speaking before this attempt began, so the same audio always gives the same
result; an utterance that ended before the attempt listened is decoded from that audio.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ivr.audio.vad import SpeechCancelled, SpeechEnded, SpeechStarted
from ivr.call.collector import Outcome
from ivr.call.inputs import Input, Transcript, stop
from ivr.call.utterance import UtteranceRecognizer

if TYPE_CHECKING:
    from ivr.call.media import CallMedia
    from ivr.speech.base import SpeechToText
    from ivr.speech.base import Transcript as SttTranscript

log = logging.getLogger("ivr.call.speech")

__all__ = ["SpeechAttempt", "SpeechMatch", "SpeechOptions", "normalize"]

_NOT_WORD = re.compile(r"[^\w' ]+")


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: ``"Sales!"`` -> ``"sales"``."""
    return " ".join(_NOT_WORD.sub(" ", str(text).lower().replace("-", " ")).split())


@dataclass(frozen=True)
class SpeechMatch:
    """What an utterance meant: ``choice`` (None: no match) and the rule that decided."""

    choice: str | None
    reason: str  # "speech" (matched) | "low_confidence" | "no_phrase" | "empty"


class SpeechOptions(BaseModel):
    """What a gather or menu accepts as speech. Times are in seconds.

    ``phrases`` is a list (each phrase is its own choice) or a mapping choice -> phrases
    (synonyms: ``{"1": ["sales", "buy"]}``). ``grammar`` is JSGF text for the STT instead
    of the phrase list (the transcript is then mapped through ``phrases`` if given, else it
    is the choice itself). Neither: open transcription, the transcript is the choice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    phrases: list[str] | dict[str, list[str]] | None = Field(
        None, description="Phrases to listen for, or choice -> phrases (synonyms).")
    grammar: str | None = Field(None, description="JSGF grammar text given to the STT adapter.")
    stt: str | None = Field(None, description="STT adapter name; null: the worker's default.")
    language: str | None = Field(None, description="Language for the STT adapter, e.g. en-US.")
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="Below this confidence an utterance is no_match (VoiceXML default 0.5).")
    max_speech_seconds: float = Field(
        10.0, gt=0, le=120, description="An utterance longer than this ends the attempt as no_match.")
    no_speech_timeout: float | None = Field(
        None, gt=0, le=600, description="Seconds after the prompt to wait for speech or a key; null: the "
        "gather's first_digit_timeout (the menu's timeout).")
    recognition_timeout: float = Field(
        5.0, gt=0, le=60, description="How long the STT may take after the end of speech before it counts as failed.")

    @field_validator("phrases", mode="before")
    @classmethod
    def _phrases(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, dict):
            # YAML reads `1:` as an int and a lone synonym as a string.
            v = {str(k): ([p] if isinstance(p, str) else p) for k, p in v.items()}
        return v

    @model_validator(mode="after")
    def _check(self) -> SpeechOptions:
        if self.phrases is not None and not self.phrases:
            raise ValueError("speech phrases is empty: list what the caller may say")
        groups = self.phrases.items() if isinstance(self.phrases, dict) else [(None, self.phrases or [])]
        if self.phrases is None:
            groups = []
        seen: dict[str, str | None] = {}
        for choice, phrases in groups:
            if not phrases:
                raise ValueError(f"speech choice {choice!r} has no phrases")
            for phrase in phrases:
                key = normalize(phrase)
                if not key:
                    raise ValueError(f"speech phrase {phrase!r} has no words")
                if key in seen and seen[key] != choice:
                    raise ValueError(f"speech phrase {phrase!r} is listed for choices {seen[key]!r} and {choice!r}")
                seen[key] = choice
        if self.grammar is not None and not self.grammar.strip():
            raise ValueError("speech grammar is empty")
        return self

    def phrase_list(self) -> list[str] | None:
        """Every phrase, in order, for the STT's ``phrases`` (None when there are none)."""
        if self.phrases is None:
            return None
        if isinstance(self.phrases, dict):
            return [p for ps in self.phrases.values() for p in ps]
        return list(self.phrases)

    def choice_of(self) -> dict[str, str]:
        """Normalised phrase -> choice (a list's phrases are their own choices)."""
        if isinstance(self.phrases, dict):
            return {normalize(p): choice for choice, ps in self.phrases.items() for p in ps}
        return {normalize(p): p for p in self.phrases or ()}

    def match(self, text: str, confidence: float) -> SpeechMatch:
        """Map a transcript to a choice: an exact phrase first, then the one choice whose
        phrase occurs as whole words in it ("sales please"); several choices: no match."""
        said = normalize(text)
        if not said:
            return SpeechMatch(None, "empty")
        if confidence < self.min_confidence:
            return SpeechMatch(None, "low_confidence")
        if self.phrases is None:
            return SpeechMatch(text.strip(), "speech")
        table = self.choice_of()
        if said in table:
            return SpeechMatch(table[said], "speech")
        padded = f" {said} "
        found = {choice for phrase, choice in table.items() if f" {phrase} " in padded}
        if len(found) == 1:
            return SpeechMatch(found.pop(), "speech")
        return SpeechMatch(None, "no_phrase")


@dataclass
class SpeechHeard:
    """The utterance that decided an attempt (or was rejected)."""

    transcript: str
    confidence: float
    choice: str | None


class SpeechAttempt:
    """Speech input during one gather attempt.

    The Call's loop calls :meth:`open`, then hands it the inputs it :meth:`wants` (speech
    events, its own recognitions' :class:`~ivr.call.inputs.Transcript`) with :meth:`feed`,
    and calls :meth:`poll` at :attr:`deadline`. :attr:`outcome` is set once speech
    decided the attempt; :attr:`busy` is True while an utterance is being spoken or
    recognised (a DTMF no-input timeout then waits for it). An STT failure calls
    ``on_failure(message)`` and the attempt goes on with DTMF only.
    """

    def __init__(
        self,
        media: CallMedia,
        options: SpeechOptions,
        stt: SpeechToText,
        *,
        barge_in: bool,
        on_failure: Callable[[str], None],
        ignore: Callable[[], bool] = lambda: False,
    ) -> None:
        self.media = media
        self.options = options
        self.stt = stt
        self.barge_in = barge_in
        self.on_failure = on_failure
        self.ignore = ignore  # True while speech must not count (the caller is typing digits)
        self.outcome: Outcome | None = None
        self.heard: SpeechHeard | None = None
        self.failed: str | None = None
        self.deadline: float | None = None
        self._prompting = False
        self._speaking = False
        self._skip_utterance = False
        self._recognition: asyncio.Future[SttTranscript] | None = None
        self._recognizer: UtteranceRecognizer | None = None  # made by open()
        # Events queued before this attempt are stale; an utterance already under way is
        # not: its SpeechEnded carries the whole audio.
        media.inputs.drop_speech()
        if media.vad.in_speech:
            self._speaking = True

    @property
    def busy(self) -> bool:
        """Speech is under way or being recognised: the attempt must wait for it."""
        return self.failed is None and self.outcome is None and (self._speaking or self._recognition is not None)

    def prompt_started(self) -> None:
        self._prompting = True

    def prompt_finished(self) -> None:
        self._prompting = False

    def open(self) -> None:
        """Start listening (the Call's loop calls it inside the try/finally that close()s us)."""
        if self._recognizer is None:
            o = self.options
            self._recognizer = UtteranceRecognizer(self.media, self.stt, phrases=None if o.grammar else o.phrase_list(),
                                                   grammar=o.grammar, language=o.language)

    def wants(self, item: Input) -> bool:
        """Whether ``item`` is ours: a speech event while we listen, or our recognition's end."""
        if isinstance(item, Transcript):
            return item.task is self._recognition
        return (self.failed is None and self.outcome is None
                and isinstance(item, (SpeechStarted, SpeechEnded, SpeechCancelled)))

    def feed(self, item: Input, now: float) -> None:
        """Act on one of the inputs we :meth:`wants`."""
        if isinstance(item, Transcript):
            if item.task is self._recognition:
                self.media.inputs.forget(item.task)
                self._recognition = None
                self._on_recognised(item.task)
        else:
            self._on_event(item, now)

    def poll(self, now: float) -> None:
        """The max-speech deadline passed: the utterance is too long (VoiceXML maxspeechtimeout)."""
        if self.deadline is not None and now >= self.deadline and self._speaking and self.outcome is None:
            self._speaking = False
            self.deadline = None
            self.outcome = Outcome(status="no_match", reason="max_speech")

    def _on_event(self, event: Any, now: float) -> None:
        if self.failed is not None or self.outcome is not None:
            return
        if isinstance(event, SpeechStarted):
            self._speaking = True
            # VoiceXML bargein=false: speech over a prompt that may not be interrupted is ignored.
            self._skip_utterance = (self._prompting and not self.barge_in) or self.ignore()
            self.deadline = now + self.options.max_speech_seconds
            if self._skip_utterance:
                self._drop(event.t)
        elif isinstance(event, SpeechCancelled):
            self._speaking = False
            self.deadline = None
            self._drop(event.start)
        elif isinstance(event, SpeechEnded):
            self._speaking = False
            self.deadline = None
            if self._skip_utterance or self.ignore():
                self._skip_utterance = False
                self._drop(event.start)
                return
            if self._recognition is None:  # one utterance at a time; a second one is dropped
                self._recognition = self.media.inputs.start(self._recognise(event), Transcript)
            else:
                self._drop(event.start)

    def _drop(self, start: float) -> None:
        if self._recognizer is not None:
            self._recognizer.drop(start)

    async def _recognise(self, event: SpeechEnded) -> SttTranscript:
        from ivr.speech.base import with_timeout

        assert self._recognizer is not None
        return await with_timeout(self._recognizer.result(event), self.options.recognition_timeout,
                                  adapter=getattr(self.stt, "name", "stt"), what="recognition")

    def _on_recognised(self, task: asyncio.Future[SttTranscript]) -> None:
        from ivr.speech.base import SpeechError

        try:
            result = task.result()
        except (SpeechError, LookupError, ValueError) as exc:
            self._fail(str(exc))
            return
        match = self.options.match(result.text, result.confidence)
        log.info("speech: heard %r (confidence %.2f) -> %s", result.text, result.confidence,
                 match.choice if match.choice is not None else match.reason)
        self.heard = SpeechHeard(result.text, result.confidence, match.choice)
        if match.choice is not None:
            self.outcome = Outcome(status="match", reason="speech")
        else:
            self.outcome = Outcome(status="no_match", reason=match.reason)

    def _fail(self, message: str) -> None:
        message = " ".join(message.split())  # one line in logs and results
        self.failed = message
        self._speaking = False
        self.deadline = None
        self.on_failure(message)

    async def close(self) -> None:
        """Stop listening; a recognition still running is cancelled (its stream closes itself)."""
        recognition, self._recognition = self._recognition, None
        if recognition is not None:
            self.media.inputs.forget(recognition)
            await stop(recognition)  # cancelled or failed: either way no longer ours
        if self._recognizer is not None:
            await self._recognizer.close()
