"""Streaming recognition of the caller's utterances: decode while the caller speaks.

:class:`UtteranceRecognizer` watches the call's VAD through a frame listener
(``CallMedia.add_listener``). When an utterance starts it opens an STT
:class:`~ivr.speech.base.RecognitionStream` and feeds it the VAD's frames (pre-roll
included) as they arrive, so when the VAD decides the utterance ended
(``SpeechEnded``) only the last frames and the engine's final pass remain:
:meth:`UtteranceRecognizer.result` is ready within tens of ms instead of decoding the
whole utterance after the fact.

The audio fed is exactly ``SpeechEnded.audio`` (the VAD's segment, DTMF masked, then the
frames decided after the last listener call are taken from the event), so streaming gives
the same transcript as decoding the event's audio. Utterances are matched to their events
by their start time (``SpeechEnded.start == SpeechStarted.t``); an utterance that was not
streamed (it ended before the recognizer existed) is decoded from the event's audio.

Used by the agent loop (``ivr.agent.loop``) and by speech input in gather/menu
(``ivr.call.speech_input``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ivr.audio.vad import SpeechEnded
    from ivr.call.media import CallMedia
    from ivr.speech.base import SpeechToText, Transcript

__all__ = ["UtteranceRecognizer"]

log = logging.getLogger("ivr.call.utterance")


class _Utterance:
    """One utterance on its way to the STT: frames queued by the listener (synchronously,
    on the media's task) and fed by :meth:`run` (its own task)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.frames_taken = 0  # VAD segment frames already queued
        self.queued = 0  # samples queued in total (the prefix of SpeechEnded.audio)
        self.pending: list[np.ndarray] = []
        self.ending = False  # the rest of the audio is queued: finish after feeding it
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def add(self, frames: list[np.ndarray]) -> None:
        if frames:
            self.pending.extend(frames)
            self.frames_taken += len(frames)
            self.queued += sum(len(f) for f in frames)
            self.wake.set()

    def end(self, audio: np.ndarray) -> None:
        """The VAD ended the utterance with ``audio``: queue what was not streamed yet."""
        if not self.ending:
            self.ending = True
            rest = audio[self.queued:]
            if len(rest):
                self.pending.append(rest)
                self.queued += len(rest)
            self.wake.set()

    async def run(self, stt: SpeechToText, options: dict[str, Any]) -> Transcript:
        stream = stt.start(**options)
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if self.pending:
                    # Everything queued since the last feed in one call: while the engine
                    # works (pocketsphinx: in a worker thread) frames pile up and go together.
                    chunk, self.pending = self.pending, []
                    await stream.feed(chunk[0] if len(chunk) == 1 else np.concatenate(chunk))
                if self.ending and not self.pending:
                    return await stream.finish()
        finally:
            await stream.close()


class UtteranceRecognizer:
    """Recognise every utterance the call's VAD finds, streaming while the caller speaks.

    ``phrases`` / ``grammar`` / ``language`` are passed to ``stt.start()``. Consumers read
    the VAD's events from the call's input stream (``media.inputs``) and hand them over:
    ``await result(ended)`` for the transcript of a ``SpeechEnded``, ``drop(start)`` for an
    utterance they will not use (cancelled, ignored). Always ``await close()``.

    The per-frame cost on the event loop is a property read and a list append; the STT's
    ``feed`` does the decoding (pocketsphinx batches it to a worker thread).
    """

    def __init__(self, media: CallMedia, stt: SpeechToText, *, phrases: Sequence[str] | None = None,
                 grammar: str | None = None, language: str | None = None) -> None:
        self.media = media
        self.vad = media.vad
        self.stt = stt
        self.options: dict[str, Any] = {"phrases": list(phrases) if phrases else None, "grammar": grammar,
                                        "language": language}
        self._current: _Utterance | None = None  # the one the VAD is still in
        self._open: dict[float, _Utterance] = {}  # by start time, until result() or drop()
        self._dropped: float | None = None  # start of an utterance not to stream
        self._closed = False
        self._remove = media.add_listener(self._on_frame)

    # --- the listener (runs for every caller frame, before the VAD sees that frame) -------

    def _on_frame(self, _frame: np.ndarray) -> None:
        start = self.vad.utterance_start
        cur = self._current
        if cur is not None and cur.start != start:
            self._current = cur = None  # the VAD ended it; its SpeechEnded brings the rest
        if start is None or start == self._dropped:
            return
        if cur is None:
            cur = self._current = self._open_utterance(start)
        cur.add(self.vad.utterance_frames(cur.frames_taken))

    def _open_utterance(self, start: float) -> _Utterance:
        utt = _Utterance(start)
        utt.task = asyncio.ensure_future(utt.run(self.stt, self.options))
        utt.task.add_done_callback(_retrieve)
        self._open[start] = utt
        return utt

    # --- consumers ------------------------------------------------------------------------

    async def result(self, ended: SpeechEnded) -> Transcript:
        """The final transcript of the utterance ``ended`` closes. Wrap in a timeout: being
        cancelled (or timing out) abandons the recognition and closes its stream."""
        if self._closed:
            raise RuntimeError("UtteranceRecognizer.result() after close()")
        utt = self._open.pop(ended.start, None)
        if utt is None:  # not streamed (it ended before we listened, or was dropped): decode its audio
            utt = self._open_utterance(ended.start)
            del self._open[ended.start]
        if utt is self._current:
            self._current = None
        self._discard_older(ended.start)
        utt.end(ended.audio)
        assert utt.task is not None
        try:
            return await utt.task
        finally:
            if not utt.task.done():
                utt.task.cancel()

    def drop(self, start: float) -> None:
        """Do not recognise the utterance that started at ``start`` (a ``SpeechStarted.t`` or
        the ``start`` of its ``SpeechEnded`` / ``SpeechCancelled``); frees its engine."""
        self._dropped = start
        utt = self._open.pop(start, None)
        if utt is self._current:
            self._current = None
        if utt is not None and utt.task is not None:
            utt.task.cancel()

    async def close(self) -> None:
        """Stop listening; recognitions still running are cancelled and their streams closed."""
        self._closed = True
        self._remove()
        tasks = [u.task for u in self._open.values() if u.task is not None]
        self._open.clear()
        self._current = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _discard_older(self, start: float) -> None:
        # Utterances before this one whose events the consumer never handed over (drained
        # as stale, or ignored): nobody will ask for them.
        for key in [k for k in self._open if k < start]:
            utt = self._open.pop(key)
            if utt is self._current:
                self._current = None
            if utt.task is not None:
                utt.task.cancel()


def _retrieve(task: asyncio.Task) -> None:
    """Mark an abandoned recognition's failure as seen (no "exception never retrieved")."""
    if not task.cancelled():
        task.exception()
