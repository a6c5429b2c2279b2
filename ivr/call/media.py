"""The audio side of one call: the two PBX streams joined to the audio pipeline.

Inbound: PBX GET stream -> :class:`~ivr.audio.pipeline.InboundProcessor` (DTMF first, then
VAD) -> digits (merged with the PBX's DTMF events so a key press counts once) and speech
events on the call's one input stream (:class:`~ivr.call.inputs.InputStream`), utterances,
recorder and STT taps.

Outbound: prompts go on a :class:`~ivr.audio.playback.PlaybackQueue`; the PBX POST stream's
pacer pulls one 20 ms frame at a time from it, a small lead ahead of real time. Barge-in
cuts items in the queue at once, so only the pacer's lead (default 80 ms) still plays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ivr.audio.pipeline import DigitDetected, DigitMerger, InboundEvent, InboundProcessor
from ivr.audio.playback import PlaybackCut, PlaybackFinished, PlaybackQueue
from ivr.audio.prompts import beep as make_beep
from ivr.audio.recorder import Recorder
from ivr.audio.vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector
from ivr.call.audio_batch import shared_batch
from ivr.call.inputs import Digit, HungUp, Input, InputStream
from ivr.call.results import CallError, PlayResult, RecordResult

if TYPE_CHECKING:
    from ivr.pbx.client import PbxClient
    from ivr.pbx.inbound import InboundAudio
    from ivr.pbx.outbound import OutboundAudio

log = logging.getLogger("ivr.call.media")

FrameListener = Callable[[np.ndarray], None]


@dataclass
class MediaSettings:
    lead_ms: int | None = None  # None: the PBX config's outbound_lead_ms
    inband_dtmf: bool = True  # also detect DTMF tones in the caller's audio
    vad_aggressiveness: int = 2
    vad_start_ms: int = 60
    vad_end_ms: int = 500
    vad_min_speech_ms: int = 120
    media_timeout: float = 10.0  # how long to wait for the streams to become available


class CallMedia:
    """Audio for one participant. ``start()`` once the leg is Connected; ``close()`` at the end."""

    def __init__(self, pbx: PbxClient, dn: str, participant_id: int, *,
                 settings: MediaSettings | None = None, metrics: Any = None) -> None:
        self.pbx = pbx
        self.dn = dn
        self.participant_id = participant_id
        self.settings = settings or MediaSettings()
        self.metrics = metrics
        s = self.settings
        self.vad = VoiceActivityDetector(
            aggressiveness=s.vad_aggressiveness, start_ms=s.vad_start_ms, end_ms=s.vad_end_ms, min_speech_ms=s.vad_min_speech_ms
        )
        self.processor = InboundProcessor(dtmf=s.inband_dtmf, vad=self.vad, on_frame=self._tap)
        self.merger = DigitMerger()
        self.playback = PlaybackQueue()
        self.inputs = InputStream()  # keys and speech events (and the Call's hang-up), in order
        self._listeners: list[FrameListener] = []
        self._out_listeners: list[Callable[[bytes], None]] = []  # frames as handed to the PBX
        self._waiters: dict[int, asyncio.Future[PlayResult]] = {}
        self._inbound: InboundAudio | None = None
        self._outbound: OutboundAudio | None = None
        self._out_error: CallError | None = None  # set when the stream to the caller gave up
        self._reader: asyncio.Task | None = None
        self._started = False
        self._closed = False
        self._ivr_frames: deque[bytes | None] = deque()  # frames played since the last caller frame (recording "both")
        self._recorder: Recorder | None = None
        self.barge_ins = {"dtmf": 0, "speech": 0}
        self._late_key: tuple[str, float] | None = None  # (key, until): see absorb_late_key

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started or self._closed:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._loop_t0 = loop.time()
        self._outbound = self.pbx.open_outbound(
            self.dn, self.participant_id, self.settings.lead_ms,
            media_timeout=self.settings.media_timeout, source=self._next_frame,
        )
        self._outbound.on_error = self._outbound_failed
        self._inbound = self.pbx.open_inbound(self.dn, self.participant_id, media_timeout=self.settings.media_timeout)
        self._batch = shared_batch()
        self._reader = self._inbound.start(self._on_caller_audio)
        self._reader.add_done_callback(self._inbound_ended)

    def close_nowait(self) -> None:
        """Stop everything now (the leg is gone); pending plays end as interrupted by hangup."""
        if self._closed:
            return
        self._closed = True
        for item_id in self.playback.clear():
            self._resolve(item_id, PlayResult(False, "hangup"))
        self.playback.pop_events()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result(PlayResult(False, "hangup"))
        self._waiters.clear()
        if self._reader is not None:
            self._reader.cancel()

    async def close(self) -> None:
        self.close_nowait()
        if self._reader is not None:
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        for stream in (self._inbound, self._outbound):
            if stream is not None:
                try:
                    await stream.close()
                except Exception:  # closing a stream of a call that is gone may fail: nothing to do
                    log.debug("closing a stream failed", exc_info=True)

    @property
    def recording(self) -> bool:
        """Whether a recording is taking the caller's audio now (after its beep)."""
        return self._recorder is not None

    def stats(self) -> dict[str, Any]:
        out = self._outbound.stats if self._outbound is not None else None
        inbound_bytes = self._inbound.bytes_received if self._inbound is not None else 0
        data: dict[str, Any] = {"barge_ins": dict(self.barge_ins), "inbound_bytes": inbound_bytes}
        if out is not None:
            data.update(
                underruns=out.underruns,  # the PBX ran out of audio: gaps heard
                late_sends=out.late_sends,
                max_lateness_ms=round(out.max_lateness_ms, 1),
                lateness_hist=list(out.lateness_hist),  # buckets: ivr.pbx.outbound.LATENESS_BUCKETS_MS
                outbound_bytes=out.bytes_sent,
                stream_reopens=out.reopens,
            )
            if out.first_byte_at is not None:
                data["first_byte_ms"] = round((out.first_byte_at - self._loop_t0) * 1000, 1)
        return data

    # --- outbound ---------------------------------------------------------------------------

    def _next_frame(self) -> bytes | None:
        """Called by the pacer for each 20 ms of audio to send; None when nothing plays."""
        frame = self.playback.next_frame()
        if frame is not None:
            for out_listener in self._out_listeners:
                out_listener(frame)
        for event in self.playback.pop_events():
            self._on_playback_event(event)
        if self._recorder is not None and self._recorder.mode == "both":
            self._ivr_frames.append(frame)
        return frame

    def _on_playback_event(self, event: PlaybackFinished | PlaybackCut) -> None:
        if isinstance(event, PlaybackFinished):
            self._resolve(event.id, PlayResult(True, None))
        else:
            self._resolve(event.id, PlayResult(False, event.reason, event.played_ms))

    def _resolve(self, item_id: int, result: PlayResult) -> None:
        fut = self._waiters.pop(item_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _outbound_failed(self, exc: BaseException) -> None:
        """The stream to the caller gave up: fail queued plays now, so the flow's on_error
        runs at once instead of waiting for audio that can never be sent."""
        self._out_error = CallError(f"audio to the caller failed: {exc}")
        self.playback.clear()
        self.playback.pop_events()
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(self._out_error)

    def _enqueue(self, pcm: np.ndarray, barge_in_speech: bool, barge_in_dtmf: bool, tag: Any) -> asyncio.Future[PlayResult]:
        fut: asyncio.Future[PlayResult] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_result(PlayResult(False, "hangup"))
            return fut
        if self._out_error is not None:
            fut.set_exception(self._out_error)
            return fut
        item_id = self.playback.enqueue(pcm, barge_in_speech=barge_in_speech, barge_in_dtmf=barge_in_dtmf, tag=tag)
        self._waiters[item_id] = fut
        if self._outbound is not None:
            self._outbound.wake()
        return fut

    def enqueue(self, pcm: np.ndarray, *, barge_in_speech: bool = True, barge_in_dtmf: bool = True,
                tag: Any = None) -> asyncio.Future[PlayResult]:
        """Queue one clip without waiting (start() first); the future resolves when it has
        played or was cut, with ``played_ms``. The agent streams its replies this way."""
        return self._enqueue(np.asarray(pcm, dtype=np.int16), barge_in_speech, barge_in_dtmf, tag)

    async def play(self, pcm: np.ndarray, *, barge_in_speech: bool = True, barge_in_dtmf: bool = True,
                   tag: Any = None) -> PlayResult:
        """Queue one clip and wait until it has been handed to the pacer, or was cut."""
        if not self._started:
            await self.start()
        return await self._enqueue(pcm, barge_in_speech, barge_in_dtmf, tag)

    async def play_stream(
        self, chunks: AsyncIterator[np.ndarray], *, barge_in_speech: bool = True, barge_in_dtmf: bool = True, tag: Any = None
    ) -> PlayResult:
        """Play audio as it is produced (TTS): each chunk is queued as soon as it arrives."""
        if not self._started:
            await self.start()
        last: asyncio.Future[PlayResult] | None = None
        pending: list[asyncio.Future[PlayResult]] = []
        try:
            async for chunk in chunks:
                fut = self._enqueue(np.asarray(chunk, dtype=np.int16), barge_in_speech, barge_in_dtmf, tag)
                pending.append(fut)
                last = fut
                cut = next((f.result() for f in pending if f.done() and not f.result().completed), None)
                if cut is not None:
                    return cut  # barged in while synthesis went on: stop synthesizing
        finally:
            # Whichever way this ends (a cut, a failed stream, a cancel), every clip's outcome
            # counts as seen: the one that matters is raised below, the rest must not end up
            # as "Future exception was never retrieved" tracebacks in the log.
            for fut in pending:
                fut.add_done_callback(_outcome_seen)
            if hasattr(chunks, "aclose"):
                await chunks.aclose()
        if last is None:
            return PlayResult(True)
        results = [await f for f in pending]
        return next((r for r in results if not r.completed), results[-1])

    def cut(self, reason: str = "clear") -> None:
        """Stop what plays and drop what is queued."""
        self.playback.clear()
        for event in self.playback.pop_events():
            if isinstance(event, PlaybackCut):
                self._resolve(event.id, PlayResult(False, reason, event.played_ms))
            else:
                self._on_playback_event(event)

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait until queued prompts have been sent (bounded by ``timeout``)."""
        if self._outbound is None:
            return
        pending = [f for f in self._waiters.values() if not f.done()]
        try:
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
            await asyncio.wait_for(self._outbound.wait_played(), timeout)
        except (TimeoutError, Exception):
            pass

    # --- inbound ----------------------------------------------------------------------------

    def add_listener(self, listener: FrameListener) -> Callable[[], None]:
        """Receive every caller frame (20 ms int16) from now on; returns a remover. A listener
        that raises is logged and removed; the call goes on."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def add_output_listener(self, listener: Callable[[bytes], None]) -> Callable[[], None]:
        """Be told of every 20 ms frame the moment the pacer sends it to the PBX; returns a
        remover. Runs in the pacer: keep it to a few operations (the agent stamps a time)."""
        self._out_listeners.append(listener)
        return lambda: self._out_listeners.remove(listener) if listener in self._out_listeners else None

    def pbx_digit(self, digit: str) -> None:
        """A DTMF event from the PBX."""
        now = asyncio.get_running_loop().time()
        if self.merger.add(digit, "pbx", now):
            self._on_digit(digit, now)

    def flush_digits(self) -> None:
        self.take_digits()

    def take_digits(self) -> str:
        """Remove and return the keys pressed but not yet read (type-ahead)."""
        return self.inputs.take_digits()

    def unread_digits(self, keys: str) -> None:
        """Put keys back in front of the queue, for the next gather to read first."""
        if keys:
            self.inputs.unread_digits(keys, asyncio.get_running_loop().time())

    def absorb_late_key(self, key: str, until: float) -> None:
        """``key``, if it is the next key and comes by ``until`` (loop time), belongs to the
        input that just ended (a terminator typed after max_digits): drop it, so it neither
        cuts the next prompt nor starts the next gather."""
        first = self.inputs.first_digit()
        self._late_key = None
        if first is not None and first.key == key and first.at <= until:
            self.inputs.remove(first)
        elif first is None:
            self._late_key = (key, until)

    def _on_digit(self, digit: str, now: float) -> None:
        late, self._late_key = self._late_key, None
        if late is not None and digit == late[0] and now <= late[1]:
            return  # it belongs to the gather that just ended
        self.inputs.push(Digit(digit, now))
        self._after_barge_in("dtmf", self.playback.on_digit())

    def _on_speech_start(self) -> None:
        self._after_barge_in("speech", self.playback.on_speech())

    def _after_barge_in(self, kind: str, cut: list[int]) -> None:
        """Count a barge-in that cut a prompt, and resolve the plays it ended."""
        if cut:
            self.barge_ins[kind] += 1
            if self.metrics is not None:
                self.metrics.barge_ins.labels(kind).inc()
        for event in self.playback.pop_events():
            self._on_playback_event(event)

    def _on_caller_audio(self, chunk: bytes) -> None:
        """Caller audio as it is read (a block of ~40 ms): analysed with other calls' blocks
        (DTMF first, then VAD), events back in :meth:`_on_inbound_events`."""
        if not self._closed:
            self._batch.add(self.processor, chunk, self._on_inbound_events)

    def _on_inbound_events(self, events: list[InboundEvent]) -> None:
        if self._closed or not events:  # most blocks of most calls: nothing happened
            return
        now = asyncio.get_running_loop().time()
        for event in events:
            if isinstance(event, DigitDetected):
                if self.merger.add(event.digit, "inband", now):
                    self._on_digit(event.digit, now)
            elif isinstance(event, SpeechStarted):
                self._on_speech_start()
                self.inputs.push(event)
            elif isinstance(event, (SpeechEnded, SpeechCancelled)):
                self.inputs.push(event)

    def _inbound_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("caller audio stream failed: %s", task.exception())

    def _tap(self, frame: np.ndarray, _t: float = 0.0) -> None:
        if not self._listeners and self._recorder is None:
            return
        for listener in list(self._listeners):
            try:
                listener(frame)
            except Exception:  # a tap's bug (an STT adapter's): drop that tap, the call goes on
                log.exception("a caller-audio listener failed and was removed: %r", listener)
                self._listeners.remove(listener)
        rec = self._recorder
        if rec is not None:
            rec.add_caller(frame)
            if rec.mode == "both":
                rec.add_ivr(self._ivr_frames.popleft() if self._ivr_frames else None)

    # --- recording --------------------------------------------------------------------------

    async def record(
        self,
        target: Path,
        *,
        max_seconds: float,
        silence_end: float | None,
        stop_keys: str,
        beep: bool,
        mode: str,
        metadata: dict[str, Any],
        initial_silence: float | None = None,
        discard_empty: bool = False,
    ) -> RecordResult:
        """Record until silence, a stop key, the length limit or hangup; save WAV + JSON sidecar.

        Until the caller first speaks, ``initial_silence`` (if set) bounds the wait instead of
        ``silence_end``: people take a moment after the beep (``silence_end=None``, never stop
        on silence, disables both). A recording without speech is
        ``empty``; with ``discard_empty`` it is not saved (``path`` None)."""
        if not self._started:
            await self.start()
        if beep:
            await self.play(make_beep(), barge_in_speech=False, barge_in_dtmf=False, tag="beep")
        self.flush_digits()
        recorder = Recorder(mode=mode, max_seconds=max_seconds)
        self._ivr_frames.clear()
        self._recorder = recorder
        loop = asyncio.get_running_loop()
        started = loop.time()
        rules = _RecordRules(started, max_seconds, silence_end, initial_silence)
        try:
            while (reason := rules.reason(loop.time())) is None:
                item = await self.inputs.next(_record_input, rules.deadline())
                if isinstance(item, HungUp):
                    reason = "hangup"
                    break
                if isinstance(item, Digit) and item.key in stop_keys:
                    reason = "key"
                    break
                if item is not None:
                    rules.speech(item, loop.time())
        finally:
            self._recorder = None
        duration = recorder.duration
        meta = {**metadata, "reason": reason, "speech_detected": rules.heard_speech, "started_at": time.time() - duration}
        empty = not rules.heard_speech
        if duration <= 0 or (empty and discard_empty):
            return RecordResult(None, round(max(duration, 0.0), 3), reason, meta, empty=empty)
        target.parent.mkdir(parents=True, exist_ok=True)
        path = await asyncio.to_thread(recorder.save, target, meta)
        return RecordResult(path, round(duration, 3), reason, meta, empty=empty)


def _record_input(item: Input) -> bool:
    return isinstance(item, (Digit, SpeechStarted, SpeechEnded, SpeechCancelled))


class _RecordRules:
    """When a recording stops, sans-I/O: told the caller's speech and the time, says why
    (``max_length``, ``no_speech``, ``silence``) and when to look again."""

    def __init__(self, started: float, max_seconds: float, silence_end: float | None,
                 initial_silence: float | None) -> None:
        self.started, self.max_seconds = started, max_seconds
        self.silence_end, self.initial_silence = silence_end, initial_silence
        self.heard_speech = False
        self.last_voice = started

    def _waiting_for_speech(self) -> bool:
        return self.initial_silence is not None and self.silence_end is not None and not self.heard_speech

    def reason(self, now: float) -> str | None:
        if now - self.started >= self.max_seconds:
            return "max_length"
        if self._waiting_for_speech():
            assert self.initial_silence is not None
            return "no_speech" if now >= self.started + self.initial_silence else None
        if self.silence_end is not None and now >= self.last_voice + self.silence_end:
            return "silence"
        return None

    def deadline(self) -> float:
        deadline = self.started + self.max_seconds
        if self._waiting_for_speech():
            assert self.initial_silence is not None
            return min(deadline, self.started + self.initial_silence)
        if self.silence_end is not None:
            return min(deadline, self.last_voice + self.silence_end)
        return deadline

    def speech(self, event: Input, now: float) -> None:
        if isinstance(event, SpeechStarted):
            self.heard_speech = True
            self.last_voice = float("inf")  # no silence timeout while the caller speaks
        elif isinstance(event, (SpeechEnded, SpeechCancelled)):
            self.last_voice = now


def _outcome_seen(fut: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as retrieved (its caller has what it needs)."""
    if not fut.cancelled():
        fut.exception()
