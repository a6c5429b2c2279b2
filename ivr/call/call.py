"""The Call: the one object a flow talks to.

It joins one PBX leg (a participant on a route point), the leg's two audio streams and the
per-call audio pipeline (:class:`~ivr.call.media.CallMedia`). YAML steps and Python flows both
call these methods, so both kinds of flow behave identically.

Every operation that waits raises :class:`CallHangup` as soon as the caller hangs up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ivr.audio.prompts import PromptError, find_prompt, flow_folder, prompt_cache, prompt_search_path
from ivr.call.collector import AttemptMark, DigitCollector, DigitRules, GatherSession, PromptPlan
from ivr.call.collector import Outcome as AttemptOutcome
from ivr.call.collector import menu as menu_rules
from ivr.call.inputs import HUNG_UP, Digit, HungUp, Input, InputStream, PromptDone, WorkDone, stop
from ivr.call.observer import CallObservers
from ivr.call.record import CallRecord, Outcome
from ivr.call.results import (
    Caller,
    CallError,
    CallHangup,
    DirectoryMark,
    DirectoryResult,
    GatherResult,
    PlayResult,
    Prompt,
    RecordResult,
    TransferResult,
    TryEnd,
    failure_status,
)
from ivr.call.ringback import NONE, TONE, Ringback, ringback_tone
from ivr.call.speech_input import SpeechAttempt, SpeechOptions
from ivr.call.step_budget import StepBudget
from ivr.pbx.errors import NotFoundError, PbxError, UnprocessableError
from ivr.pbx.models import CallControlResultResponse, ParticipantInfo, ParticipantStatus

if TYPE_CHECKING:
    from ivr.call.media import CallMedia
    from ivr.call.pbx_view import HoursAnswer, NameMatch, PbxFacts, Presence
    from ivr.pbx.client import PbxClient
    from ivr.pbx.hours import Schedule
    from ivr.pbx.xapi import PbxSnapshot, User, XapiCache
    from ivr.speech.services import SpeechServices

log = logging.getLogger("ivr.call")
T = TypeVar("T")

TRANSFER_MODES = ("routeto", "transferto", "divert")
# After the PBX's own ring timeout, how long we still wait for its verdict before calling it.
TRANSFER_GRACE_S = 2.0
# After a "delivered" answer, how long our leg's Remove event may trail it.
TRANSFER_SETTLE_S = 0.5


class Call:
    """One call on a route point, as seen by a flow."""

    def __init__(
        self,
        pbx: PbxClient,
        participant: ParticipantInfo,
        media: CallMedia,
        *,
        audio_dirs: Sequence[Path] = (),
        recordings_dir: Path = Path("var/recordings"),
        speech: SpeechServices | None = None,
        record: CallRecord | None = None,
    ) -> None:
        self.pbx = pbx
        self.participant = participant
        self.media = media
        self.route_point = participant.dn
        self.participant_id = participant.id
        self.call_id = str(participant.callid or participant.id)
        self.caller = Caller(participant.party_caller_id or participant.party_dn, participant.party_caller_name)
        self.did = participant.party_did
        self.vars: dict[str, Any] = {}
        self.audio_dirs: list[Path] = list(audio_dirs)
        self.recordings_dir = recordings_dir
        self.speech = speech
        self.call_record = record or CallRecord(
            call_id=self.call_id,
            route_point=self.route_point,
            participant_id=self.participant_id,
            caller_number=self.caller.number,
            caller_name=self.caller.name,
            did=self.did,
        )
        try:  # durations on the loop's clock: virtual time in simulations, like the audio
            self.call_record.use_clock(asyncio.get_running_loop().time)
        except RuntimeError:
            pass  # made outside an event loop (tests of pieces): the monotonic clock stays
        self.log = logging.LoggerAdapter(log, {"call_id": self.call_id})
        self._ended = asyncio.Event()
        self._transfer_pending = False
        # Why the last PBX action failed, when the PBX caused it (5xx, refused): the call's
        # outcome is then pbx_error, not ivr_hangup, if the flow hangs up after it.
        self.pbx_failure: str | None = None
        # Set while a gather or menu waits for the caller's keys (the simulator presses then).
        self.listening = asyncio.Event()
        # How many times listening started: a driver waiting for "the next listen" counts, since
        # the event can clear and set again (a reprompt) between two of its polls.
        self.listen_count = 0
        # Wall-clock time as flows see it (office hours); the simulator can pin it.
        self.clock: Callable[[], datetime] | None = None
        # Why speech input stopped working on this call (STT failed): gathers then take DTMF only.
        self.speech_down: str | None = None
        # Who watches this call (ivr.call.observer): the worker's tracing, a Python flow's step
        # recorder, a live view; the interpreter and a Python flow's proxy report steps to them.
        self.observers = CallObservers()
        # The PBX's configuration as the worker keeps it (xapi.enabled): office hours, users,
        # presence, queues. Read through pbx_hours, presence, directory and pbx_facts.
        self.xapi: XapiCache | None = None
        # The flow steps this call has run and may run (ivr.call.step_budget): made by the
        # first flow that runs, shared with its subflows.
        self.flow_budget: StepBudget | None = None

    # --- state ------------------------------------------------------------------------------

    @property
    def hung_up(self) -> bool:
        return self._ended.is_set()

    @property
    def ended(self) -> asyncio.Event:
        return self._ended

    def on_removed(self, detail: str = "") -> None:
        """The PBX removed our participant: the caller hung up or the call moved away."""
        if not self._ended.is_set():
            self._ended.set()
            self.inputs.push(HUNG_UP)
            if not self._transfer_pending:  # a pending transfer decides the outcome itself
                self.call_record.finish(Outcome.CALLER_HANGUP, detail)
                self._notify("hangup", {"by": "caller", "detail": detail})
            self.media.close_nowait()

    def on_updated(self, participant: ParticipantInfo) -> None:
        self.participant = participant

    def on_pbx_digit(self, digits: str) -> None:
        for d in digits:
            self.media.pbx_digit(d)

    @property
    def current_step(self) -> str:
        """The flow step running now, e.g. "menu #main (main_menu.yaml:21)" (live views show it)."""
        return self.observers.current_step

    def _notify(self, event: str, info: dict[str, Any]) -> None:
        if event == "transfer":
            self.observers.transfer(info)
        else:
            self.observers.hangup(info)

    def _listening(self, on: bool) -> None:
        """A gather or menu attempt starts (or stops) waiting for the caller's keys."""
        if on:
            self.listen_count += 1
            self.listening.set()
        else:
            self.listening.clear()
        self.observers.listening(on, self.listen_count)

    def _check(self) -> None:
        if self._ended.is_set():
            raise CallHangup(f"call {self.call_id} has ended")

    async def until_hangup(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, or raise CallHangup as soon as the caller hangs up."""
        return await self._until_hangup(awaitable)

    @property
    def inputs(self) -> InputStream:
        """The call's one input stream: keys, speech, hang-up, ends of watched work."""
        return self.media.inputs

    @contextmanager
    def _listening_for_input(self) -> Iterator[None]:
        """While a gather or menu attempt listens (the simulator presses keys then)."""
        self._listening(True)
        try:
            yield
        finally:
            self._listening(False)

    async def _until_hangup(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` but raise CallHangup the moment the caller leaves."""
        self._check()
        task = self.inputs.start(awaitable, WorkDone)
        try:
            item = await self.inputs.next(lambda i: isinstance(i, WorkDone) and i.task is task)
        except BaseException:
            task.cancel()
            raise
        finally:
            self.inputs.forget(task)
        if isinstance(item, HungUp):
            await stop(task)
            raise CallHangup(f"call {self.call_id} has ended")
        return task.result()

    def now(self) -> datetime:
        """The current time, timezone-aware: what `hours` steps and `{{ now }}` see."""
        return self.clock() if self.clock is not None else datetime.now(UTC)

    def log_event(self, message: str, **fields: Any) -> None:
        """The flow's `log` step: a line in the worker log, tagged with the call id."""
        self.log.info(message, extra={"fields": fields} if fields else None)

    # --- answer / hangup / data -------------------------------------------------------------

    async def answer(self) -> None:
        """Connect the leg. Calls often reach a route point already Connected: then a no-op."""
        self._check()
        if self.participant.status != ParticipantStatus.CONNECTED:
            try:
                await self.pbx.rest.answer(self.route_point, self.participant_id)
            except NotFoundError:
                self.on_removed()
                raise CallHangup(f"call {self.call_id} ended before it was answered") from None
            await self._until_hangup(
                self.pbx.state.wait_status(self.route_point, self.participant_id, ParticipantStatus.CONNECTED, timeout=10)
            )
        if self.call_record.answered_at is None:
            self.call_record.answered_at = time.time()
        await self.media.start()

    async def hangup(self) -> None:
        """Drop our leg: the call ends for the caller."""
        if self._ended.is_set():
            return
        if self.pbx_failure is not None:
            self.call_record.finish(Outcome.PBX_ERROR, self.pbx_failure)
        else:
            self.call_record.finish(Outcome.IVR_HANGUP)
        self._notify("hangup", {"by": "ivr"})
        await self.media.drain(timeout=1.0)
        try:
            await self.pbx.rest.drop(self.route_point, self.participant_id)
        except NotFoundError:
            pass  # already gone: the goal is reached
        self._ended.set()
        self.inputs.push(HUNG_UP)
        self.media.close_nowait()

    async def attach_data(self, data: Mapping[str, Any]) -> None:
        """Store key/value data on the leg (3CX shows it to the agent who takes the call)."""
        self._check()
        clean = {str(k): str(v) for k, v in data.items()}
        try:
            await self.pbx.rest.attach_participant_data(self.route_point, self.participant_id, clean)
        except NotFoundError:
            raise
        except PbxError as exc:
            self.pbx_failure = f"attach_data: {exc.status or 'no answer'}: {exc.message}"
            raise

    async def sleep(self, seconds: float) -> None:
        await self._until_hangup(asyncio.sleep(max(0.0, float(seconds))))

    # --- prompts ----------------------------------------------------------------------------

    def resolve_audio(self, name: str | Path) -> Path:
        """Find a prompt file as every flow does (:func:`~ivr.audio.prompts.prompt_search_path`
        from the running flow's folder), then in the worker's ``audio_dirs``."""
        folder = flow_folder.get()
        dirs = [*(prompt_search_path(folder) if folder is not None else []), *self.audio_dirs]
        found = find_prompt(name, dirs)
        if found is not None:
            return found
        searched = ", ".join(dict.fromkeys(str(d) for d in dirs)) or "(no audio dirs)"
        raise CallError(f"audio file {name} not found (looked in {searched})")

    def _load(self, name: str | Path) -> np.ndarray:
        path = self.resolve_audio(name)
        try:
            return prompt_cache.get(path)
        except PromptError as exc:
            raise CallError(str(exc)) from None

    async def play(self, *files: str | Path, loop: int = 1, barge_in: bool = True) -> PlayResult:
        """Play audio files in order (``loop`` times). Stops early on barge-in."""
        self._check()
        clips = [self._load(f) for f in files]  # fail before playing anything
        result = PlayResult(completed=True)
        for _ in range(max(1, int(loop))):
            for name, pcm in zip(files, clips):
                self.call_record.prompts.append(str(name))
                result = await self._until_hangup(
                    self.media.play(pcm, barge_in_speech=barge_in, barge_in_dtmf=barge_in, tag=str(name))
                )
                if not result.completed:
                    return result
        return result

    async def say(
        self, text: str, *, voice: str | None = None, tts: str | None = None, barge_in: bool = True
    ) -> PlayResult:
        """Speak text with a TTS adapter; the first sentence plays while the rest is synthesized."""
        self._check()
        if self.speech is None:
            raise CallError("say: no TTS is configured for this worker")
        self.call_record.prompts.append(f"say:{text}")
        chunks = self.speech.synthesize(text, voice=voice, tts=tts)
        return await self._until_hangup(
            self.media.play_stream(chunks, barge_in_speech=barge_in, barge_in_dtmf=barge_in, tag=f"say:{text[:40]}")
        )

    async def play_prompt(self, prompt: Prompt | None, *, barge_in: bool = True) -> PlayResult:
        """Play a Prompt: a file, ``{"say": text}``, or a list of those."""
        if prompt is None:
            return PlayResult(completed=True)
        items: Sequence[Any]
        if isinstance(prompt, (str, Path, Mapping)):
            items = [prompt]
        else:
            items = list(prompt)
        result = PlayResult(completed=True)
        for item in items:
            if isinstance(item, Mapping):
                if "say" not in item:
                    raise CallError(f"prompt {dict(item)!r}: expected a file name or {{say: text}}")
                result = await self.say(str(item["say"]), voice=item.get("voice"), tts=item.get("tts"), barge_in=barge_in)
            else:
                result = await self.play(item, barge_in=barge_in)
            if not result.completed:
                return result
        return result

    # --- digits -----------------------------------------------------------------------------

    async def gather(
        self,
        *,
        prompt: Prompt | None = None,
        rules: DigitRules | None = None,
        retries: int = 2,
        reprompt: Prompt | None = None,
        no_input_prompt: Prompt | list[Prompt] | None = None,
        no_match_prompt: Prompt | list[Prompt] | None = None,
        barge_in: bool = True,
        speech: SpeechOptions | Mapping[str, Any] | None = None,
        start: AttemptMark | None = None,
        on_attempt: Callable[[AttemptMark], None] | None = None,
        **rule_fields: Any,
    ) -> GatherResult:
        """Collect digits by the VoiceXML timer rules (docs/dtmf-timers.md), with retries.

        ``rules`` (or its fields as keyword arguments: min_digits, max_digits, terminator,
        first_digit_timeout, ...) say what to collect; prompts escalate per attempt.
        ``speech`` (:class:`SpeechOptions`) also listens for spoken phrases: keys and speech
        race, the first to complete decides (``result.source``). If the STT fails, the call
        goes on with keys only and ``result.speech_error`` says why.

        ``start``: begin at that attempt, with its prompt and only the attempts after it (a
        gather resumed on another worker). ``on_attempt`` is told each attempt as it starts
        (the flow interpreter checkpoints it); it must not block.
        """
        self._check()
        if rules is None:
            rules = DigitRules(**rule_fields)
        elif rule_fields:
            rules = rules.model_copy(update=rule_fields)
        options = SpeechOptions.model_validate(speech) if isinstance(speech, Mapping) else speech
        stt = self._speech_input(options) if options is not None else None
        if stt is not None and options is not None and options.no_speech_timeout is not None:
            # One no-input timer for keys and speech: VoiceXML's `timeout`.
            rules = rules.model_copy(update={"first_digit_timeout": options.no_speech_timeout})
        speech_error = self.speech_down if options is not None else None
        prompts: dict[str, Any] = {}  # the collector sees prompts as opaque keys

        def key(p: Any) -> str | None:
            if p is None:
                return None
            k = f"prompt-{len(prompts)}"
            prompts[k] = p
            return k

        plan = PromptPlan(
            initial=key(prompt),
            reprompt=key(reprompt),
            no_input=tuple(key(p) for p in _as_list(no_input_prompt)),
            no_match=tuple(key(p) for p in _as_list(no_match_prompt)),
        )
        pending = self.media.take_digits() if rules.type_ahead else (self.media.take_digits() and "")
        session = GatherSession(rules, retries=retries, prompts=plan, pending=pending, start=start)
        loop = asyncio.get_running_loop()
        heard = None  # what speech decided the last attempt with, if it did
        while (attempt := session.next_attempt()) is not None:
            heard = None
            if on_attempt is not None:
                on_attempt(attempt.mark)
            outcome = attempt.collector.outcome  # type-ahead may already have decided it
            if outcome is None:
                listen = None
                if stt is not None and options is not None and self.speech_down is None:
                    listen = SpeechAttempt(
                        self.media, options, stt, barge_in=barge_in, on_failure=self._speech_failed,
                        ignore=partial(_has_digits, attempt.collector),
                    )
                outcome = await self._collect_once(
                    attempt.collector, [prompts[k] for k in attempt.prompts], barge_in, loop, listen
                )
                if listen is not None and outcome is listen.outcome:
                    heard = listen.heard
                if self.speech_down is not None and options is not None:
                    speech_error = self.speech_down
            session.record(outcome)
        self.media.unread_digits(session.leftover())
        late_terminator = session.late_terminator_until(loop.time())
        if late_terminator is not None and rules.terminator is not None:
            self.media.absorb_late_key(rules.terminator, late_terminator)
        final = session.result
        result = GatherResult(
            status=final.status,
            digits=final.digits,
            terminator=final.terminator,
            attempts=final.attempts,
            reason=final.reason,
        )
        if heard is not None:
            result.source, result.transcript, result.confidence = "speech", heard.transcript, heard.confidence
            result.choice = heard.choice
        result.speech_error = speech_error
        if speech_error is not None and result.status != "match":
            result.reason = "speech_unavailable"  # the flow can tell "said nothing" from "could not hear"
        self.call_record.digits.append(result.digits)
        return result

    def _speech_input(self, options: SpeechOptions) -> Any:
        """The STT adapter for a gather, or None (and the call is DTMF-only) if there is none."""
        if self.speech_down is not None:
            return None
        if self.speech is None:
            self._speech_failed("no speech services are configured for this worker")
            return None
        try:
            return self.speech.stt(options.stt)
        except Exception as exc:  # unknown name, missing engine: never silence, fall back to keys
            self._speech_failed(str(exc))
            return None

    def _speech_failed(self, message: str) -> None:
        message = " ".join(str(message).split())
        if self.speech_down is None:
            self.speech_down = message
            self.log.warning("speech input failed, DTMF only from now on: %s", message)

    async def menu(
        self,
        *,
        prompt: Prompt | None = None,
        choices: Mapping[str, Any] | Sequence[str],
        retries: int = 2,
        reprompt: Prompt | None = None,
        no_input_prompt: Prompt | list[Prompt] | None = None,
        no_match_prompt: Prompt | list[Prompt] | None = None,
        timeout: float = 5.0,
        barge_in: bool = True,
        speech: SpeechOptions | Mapping[str, Any] | None = None,
        start: AttemptMark | None = None,
        on_attempt: Callable[[AttemptMark], None] | None = None,
    ) -> GatherResult:
        """A single-key menu: the result's ``choice`` is the key pressed, or None.

        With ``speech`` (phrases as a mapping key -> phrases, e.g. ``{"1": ["sales", "buy"]}``)
        a choice can also be said; ``choice`` is then that key and ``source`` is "speech".
        ``start`` and ``on_attempt``: as for :meth:`gather`.
        """
        keys = list(choices.keys() if isinstance(choices, Mapping) else choices)
        rules = menu_rules(keys, first_digit_timeout=timeout, barge_in=barge_in)
        options = SpeechOptions.model_validate(speech) if isinstance(speech, Mapping) else speech
        if options is not None:
            if not isinstance(options.phrases, Mapping):
                raise CallError("menu speech: phrases must map menu keys to phrases, e.g. {'1': ['sales']}")
            unknown = [k for k in options.phrases if k not in rules.valid_keys]
            if unknown:
                raise CallError(f"menu speech: {', '.join(map(repr, unknown))} not among the menu keys {keys}")
        result = await self.gather(
            prompt=prompt,
            rules=rules,
            retries=retries,
            reprompt=reprompt,
            no_input_prompt=no_input_prompt,
            no_match_prompt=no_match_prompt,
            barge_in=barge_in,
            speech=options,
            start=start,
            on_attempt=on_attempt,
        )
        if result.status == "match" and result.source == "dtmf":
            result.choice = result.digits
        return result

    async def _collect_once(
        self,
        collector: DigitCollector,
        prompts: Sequence[Any],
        barge_in: bool,
        loop: asyncio.AbstractEventLoop,
        speech: SpeechAttempt | None = None,
    ) -> AttemptOutcome:
        """One attempt: play the prompt(s) while listening, then wait by the collector's timers.

        With ``speech``, keys and speech race: a DTMF match or no-match decides at once, a
        recognised utterance decides, and a DTMF no-input waits while the caller is still
        speaking or being recognised.
        """
        inputs = self.inputs
        play_task: asyncio.Future[None] | None = None
        if prompts:
            collector.prompt_started(loop.time())
            play_task = inputs.start(self._play_prompts(prompts, barge_in), PromptDone)
            if speech is not None:
                speech.prompt_started()
        else:
            collector.start(loop.time())

        def wanted(item: Input) -> bool:
            if isinstance(item, PromptDone):
                return item.task is play_task
            return isinstance(item, Digit) or (speech is not None and speech.wants(item))

        try:
            with self._listening_for_input():
                if speech is not None:
                    speech.open()
                while (decided := _decide(collector, speech)) is None:
                    item = await inputs.next(wanted, _earliest(collector.deadline, speech.deadline if speech else None))
                    if isinstance(item, HungUp):
                        raise CallHangup(f"call {self.call_id} has ended")
                    play_task = self._attempt_input(item, loop.time(), collector, speech, play_task)
                return decided
        finally:
            inputs.forget(play_task)
            if speech is not None:
                await speech.close()
            if play_task is not None and not play_task.done():
                self.media.cut("gather_done")
            # A prompt still playing stops; one that ended with the attempt (e.g. CallHangup as
            # the caller left) has its exception retrieved, or asyncio logs it as never retrieved.
            await stop(play_task)

    def _attempt_input(self, item: Input | None, now: float, collector: DigitCollector, speech: SpeechAttempt | None,
                       play_task: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        """Feed one input (None: a deadline) to the attempt's rules; the prompt task, or None
        once the prompt has ended."""
        if isinstance(item, Digit):
            if play_task is not None and collector.barge_in_wanted(item.key):
                self.media.cut("dtmf")
            collector.digit(item.key, now)
        elif speech is not None and item is not None and not isinstance(item, PromptDone):
            speech.feed(item, now)
        if speech is not None:
            speech.poll(now)
        if collector.outcome is None and play_task is not None and play_task.done():
            play_task.result()  # surface errors of the prompt (missing file, TTS failure)
            self.inputs.forget(play_task)
            play_task = None
            collector.prompt_finished(now)
            if speech is not None:
                speech.prompt_finished()
        if collector.outcome is None:
            collector.poll(now)
        return play_task

    async def _play_prompts(self, prompts: Sequence[Any], barge_in: bool) -> None:
        for prompt in prompts:
            result = await self.play_prompt(prompt, barge_in=barge_in)
            if not result.completed:
                return

    # --- transfer ---------------------------------------------------------------------------

    async def transfer(
        self, destination: str, *, mode: str = "routeto", timeout: float = 20, ringback: Any = TONE,
        in_flight_since: float | None = None,
    ) -> TransferResult:
        """Hand the call to ``destination``; the result's status is answered, busy, no_answer,
        not_registered or failed (``pbx_error`` tells a failure the PBX caused). A caller who
        hangs up while it rings raises CallHangup.

        ``routeto`` offers the call while we keep it: the caller hears ``ringback`` meanwhile
        ("tone", "none", or a prompt played in a loop, e.g. the flow's hold music);
        ``transferto`` is a blind transfer of a connected call (the PBX holds the caller);
        ``divert`` works on a ringing one. On ``answered`` the call has left the IVR: the flow
        should end. 3CX may answer the request only once the destination answered or failed,
        so it may take the whole ``timeout``; the answer and the events decide the result in
        every shape the PBX may use (see docs/flows.md). ``in_flight_since`` (wall clock): a
        worker that died offered this transfer then (a call taken over): if the PBX says the
        offer still rings, its outcome is awaited instead of offering again.
        """
        self._check()
        if mode not in TRANSFER_MODES:
            raise CallError(f"transfer: mode must be one of {', '.join(TRANSFER_MODES)}, not {mode!r}")
        destination = str(destination).strip()
        if not destination:
            raise CallError("transfer: empty destination")
        action = getattr(self.pbx.rest, mode)
        await self.media.drain(timeout=2.0)
        self._transfer_pending = True
        try:
            async with self._ringback(mode, ringback):
                result = await self._transfer(action, destination, mode, timeout, in_flight_since)
        finally:
            self._transfer_pending = False
        if result is None:  # the caller hung up while it rang
            self.call_record.finish(Outcome.CALLER_HANGUP, f"during {mode} to {destination}")
            self._notify("hangup", {"by": "caller", "detail": f"during {mode} to {destination}"})
            raise CallHangup(f"call {self.call_id} ended during the transfer to {destination}")
        self.pbx_failure = result.reason if result.pbx_error else None
        if result.pbx_error:
            self.call_record.errors.append(f"transfer {mode} to {destination}: {result.reason}")
        return self._transfer_done(result)

    def _ringback(self, mode: str, ringback: Any) -> Ringback:
        """What the caller hears while the transfer rings (routeto on a connected leg only:
        transferto is held by the PBX, a ringing divert has no audio of ours)."""
        if mode != "routeto" or ringback in (None, NONE) or self.participant.status != ParticipantStatus.CONNECTED:
            return Ringback(None, lambda: None)
        if ringback == TONE:
            tone = ringback_tone()

            async def play_once() -> Any:
                return await self.media.play(tone, barge_in_speech=False, barge_in_dtmf=False, tag="ringback")
        else:
            async def play_once() -> Any:
                return await self.play_prompt(ringback, barge_in=False)
        return Ringback(play_once, lambda: self.media.cut("transfer"))

    async def _transfer(self, action: Callable[..., Awaitable[Any]], destination: str, mode: str,
                        timeout: float, in_flight_since: float | None = None) -> TransferResult | None:
        """The result, or None if the caller hung up while the destination rang."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await action(self.route_point, self.participant_id, destination, timeout=max(1, round(timeout)))
        except NotFoundError:
            self.on_removed("before the transfer")  # our leg was gone: the caller had hung up
            return None
        except PbxError as exc:  # no word on the delivery: the PBX failed or refused the action
            if await self._wait_gone(0):  # (a timeout may come after the PBX acted)
                return self._delivered(destination, mode) if await self._delivered_to(destination) else None
            if in_flight_since is not None and isinstance(exc, UnprocessableError):
                # Refused because the previous owner's offer still rings: wait for its outcome.
                left = in_flight_since + timeout + TRANSFER_GRACE_S - time.time()
                if await self._wait_gone(max(0.0, left)):
                    return self._delivered(destination, mode) if await self._delivered_to(destination) else None
                return TransferResult("no_answer", destination, mode, "no answer (offered before a takeover)")
            why = f"HTTP {exc.status}: {exc.message}" if exc.status is not None else exc.message
            return TransferResult("failed", destination, mode, why, pbx_error=True)
        if not response.ok:
            return await self._failed(response, destination, mode)
        # A blocking PBX answers 200 once delivered; an immediate one says "Dialing" and the
        # events tell the rest. A "delivered" that leaves our leg in place is treated as pending.
        pending = str(response.reasontext or "").lower() == "dialing"
        if not pending and not await self._wait_gone(TRANSFER_SETTLE_S):
            pending = await self._still_ours()
        if not pending:
            return self._delivered(destination, mode)
        if await self._wait_gone(timeout + TRANSFER_GRACE_S - (loop.time() - started)):
            if await self._delivered_to(destination):
                return self._delivered(destination, mode)
            return None  # our leg went, the call is not at the destination: the caller hung up
        waited = loop.time() - started
        return TransferResult("no_answer", destination, mode, f"no answer after {waited:.1f} s")

    async def _still_ours(self) -> bool:
        """Whether our leg still exists on the PBX (asked, not inferred from events)."""
        try:
            await self.pbx.rest.get_participant(self.route_point, self.participant_id)
            return True
        except NotFoundError:
            return False
        except PbxError:
            return not self._ended.is_set()

    async def _failed(self, response: CallControlResultResponse, destination: str, mode: str) -> TransferResult | None:
        """A failed delivery: why, unless the failure was the caller leaving (our leg is gone)."""
        if not self._ended.is_set() and not await self._still_ours():  # the Remove may trail the answer
            self.on_removed("during the transfer")
        if self._ended.is_set():
            return None
        reason = str(response.reason or response.reasontext or response.status)
        status = failure_status(reason)
        if status == "failed" and "busy" in reason.lower():
            status = "busy"
        return TransferResult(status, destination, mode, reason)

    def _delivered(self, destination: str, mode: str) -> TransferResult:
        self.on_removed(f"{mode} to {destination}")  # our leg is replaced (its Remove may come later)
        self.call_record.transferred_to = destination
        self.call_record.finish(Outcome.TRANSFERRED, f"{mode} {destination}")
        self.media.close_nowait()
        return TransferResult("answered", destination, mode, "delivered")

    async def _wait_gone(self, timeout: float) -> bool:
        """True once our leg is removed, False if it is still there after ``timeout``."""
        if self._ended.is_set():
            return True
        try:
            await asyncio.wait_for(self._ended.wait(), max(0.0, timeout))
            return True
        except TimeoutError:
            return False

    async def _delivered_to(self, destination: str, settle: float = 0.5) -> bool:
        """After our leg went away while the PBX had not said "delivered": was the call
        delivered, or did the caller hang up while it rang?

        When the destination DN is monitored, the call must be Connected there (a leg that
        only rang does not count: it is removed when the caller hangs up; the Upsert may
        arrive just after our Remove, hence ``settle``). When it is not monitored we cannot
        see it, and an offer that took our leg away counts as delivered.
        """
        if destination not in self.pbx.state.dns:
            return True
        callid = self.participant.callid

        def arrived() -> bool:
            dn = self.pbx.state.dns.get(destination)
            return bool(dn and any(p.callid == callid and p.status == ParticipantStatus.CONNECTED
                                   for p in dn.participants))

        if arrived():
            return True
        try:
            await self.pbx.state.wait_for(lambda _state: arrived(), timeout=settle)
            return True
        except TimeoutError:
            return False

    def _transfer_done(self, result: TransferResult) -> TransferResult:
        self.log.info("transfer %s to %s: %s (%s)", result.mode, result.destination, result.status, result.reason)
        self._notify("transfer", {"destination": result.destination, "mode": result.mode,
                                  "status": result.status, "reason": result.reason})
        return result

    # --- the PBX's configuration (docs/flows.md, "The PBX's configuration") ------------------

    async def pbx_snapshot(self) -> PbxSnapshot | None:
        """The PBX's configuration as last read (None: not read, or xapi is not enabled).
        Waits only before the worker's first read, and then at most a few seconds."""
        from ivr.call.pbx_view import snapshot_of

        return await snapshot_of(self.xapi)

    def pbx_facts(self) -> PbxFacts:
        """What templates read as ``pbx``: users' presence, queues' agents, departments' state."""
        from ivr.call.pbx_view import facts_for

        return facts_for(self.xapi, self.now())

    async def pbx_hours(self, department: str | None = None, *, fallback: Schedule | None = None) -> HoursAnswer:
        """Open, closed, break or holiday now, by the PBX's settings: ``department``'s (its
        admin's forced mode first), else the system's. When the PBX's hours are unknown,
        ``fallback`` (a flow's schedule, :func:`ivr.pbx.hours.parse_schedule`) decides;
        without one that is a CallError."""
        from ivr.call.pbx_view import HoursUnknown, hours_state

        try:
            return hours_state(await self.pbx_snapshot(), self.now(), department, fallback)
        except HoursUnknown as exc:
            hint = "" if self.xapi is not None else " (this worker does not read it: xapi: {enabled: true} in ivr.yaml)"
            raise CallError(f"hours: {exc}{hint}") from None

    async def presence(self, number: str) -> Presence | None:
        """The presence of the user with extension ``number`` (None: the PBX has no such user,
        or its configuration is not known): ``.available``, ``.state``, ``.reason``."""
        from ivr.call.pbx_view import presence_of

        snap = await self.pbx_snapshot()
        user = snap.user(str(number).strip()) if snap is not None else None
        return presence_of(user) if user is not None else None

    async def directory(
        self,
        *,
        prompt: Prompt | None = None,
        match: NameMatch = "either",
        department: str | None = None,
        max_matches: int = 3,
        retries: int = 2,
        max_letters: int = 10,
        first_digit_timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
        too_many_prompt: Prompt | None = None,
        no_match_prompt: Prompt | None = None,
        no_input_prompt: Prompt | None = None,
        choose_prompt: Prompt | None = None,
        announce: Callable[[str, User], Prompt] | None = None,
        speech: SpeechOptions | Mapping[str, Any] | bool | None = None,
        barge_in: bool = True,
        start: DirectoryMark | None = None,
        on_attempt: Callable[[DirectoryMark], None] | None = None,
    ) -> DirectoryResult:
        """Dial-by-name: the caller keys the first letters of a name (2=ABC ... 9=WXYZ), or says
        it (``speech``: the names are the phrases); up to ``max_matches`` are announced with a
        key each and the caller picks one. Too many asks for more letters, none says so; each
        counts as a try (``retries`` more after the first). Users come from the PBX (hidden and
        disabled ones left out; ``department``: its members only). The flow transfers.

        ``start``: begin at that try, led by its feedback prompt, with only the tries after it
        (a directory resumed on another worker). ``on_attempt`` is told each try from the second
        on as it starts; it must not block. Tries are the unit: the choice among the names read
        out belongs to its try, so a try resumed in it asks for the letters again."""
        from ivr.call.pbx_view import directory_matches, entries

        if not 1 <= max_matches <= 9:
            raise CallError(f"directory: max_matches must be 1..9, not {max_matches}")
        if match not in ("last", "first", "either"):
            raise CallError(f"directory: match must be last, first or either, not {match!r}")
        snap = await self.pbx_snapshot()
        if snap is None:
            raise CallError("directory: the PBX's users are not known (is xapi enabled, and the PBX reachable?)")
        users = snap.directory()
        if department is not None:
            group = snap.group(department)
            if group is None:
                raise CallError(f"directory: the PBX has no department {department!r}")
            members = {m.Number for m in group.Members}
            users = [u for u in users if u.Number in members]
        by_number = {u.Number: u for u in users if u.Number}
        options = self._directory_speech(speech, users)
        rules = DigitRules(min_digits=1, max_digits=max_letters, terminator="#", first_digit_timeout=first_digit_timeout,
                           inter_digit_timeout=inter_digit_timeout)
        ask = prompt if prompt is not None else {"say": _directory_ask(match, options is not None)}
        feedback = {
            "none": no_match_prompt if no_match_prompt is not None else {"say": "There is no one by that name."},
            "too_many": too_many_prompt if too_many_prompt is not None
            else {"say": "There are too many names that match. Please key more letters."},
            "no_input": no_input_prompt if no_input_prompt is not None else {"say": "Sorry, I did not hear anything."},
            "not_chosen": None,
        }
        reason: TryEnd | None = None
        letters, source, shown = "", "dtmf", []
        attempts = 0
        if start is not None:  # the tries before it ran elsewhere (a mark past the last runs the last)
            attempts = min(start.number, retries + 1) - 1
            reason, letters, source, shown = start.after, start.letters, start.source, list(start.matches)
        while attempts <= retries:
            attempts += 1
            if reason is not None and on_attempt is not None:
                on_attempt(DirectoryMark(number=attempts, after=reason, source=source, letters=letters,
                                         matches=shown))
            lead = feedback.get(reason) if reason is not None else None
            heard = await self.gather(prompt=_prompt_parts(lead, ask), rules=rules, retries=0, barge_in=barge_in,
                                      speech=options)
            if heard.status != "match":
                reason = "no_input" if heard.status == "no_input" else "none"
                continue
            source, letters = heard.source, heard.digits
            if heard.source == "speech":
                found = [by_number[heard.choice]] if heard.choice in by_number else []
            else:
                found = directory_matches(users, heard.digits, match)
            shown = entries(found) if len(found) <= max_matches else []
            if not found:
                reason = "none"
                continue
            if len(found) > max_matches:
                reason = "too_many"
                continue
            chosen = await self._choose(found, announce, choose_prompt, first_digit_timeout, barge_in, options is not None)
            if chosen is not None:
                return DirectoryResult("found", chosen.Number or "", chosen.name, attempts, source, letters, shown, source)
            reason = "not_chosen"
        status = "no_input" if reason == "no_input" else "no_match"
        return DirectoryResult(status, "", "", attempts, source, letters, shown, reason or "")

    def _directory_speech(self, speech: SpeechOptions | Mapping[str, Any] | bool | None,
                          users: Sequence[User]) -> SpeechOptions | None:
        """The gather's speech options: the directory's names as the phrases."""
        from ivr.call.pbx_view import directory_phrases

        phrases = directory_phrases(users)
        if speech is None or speech is False or not phrases:
            return None
        base = {} if speech is True else (speech.model_dump() if isinstance(speech, SpeechOptions) else dict(speech))
        base["phrases"] = phrases
        return SpeechOptions.model_validate(base)

    async def _choose(self, found: Sequence[User], announce: Callable[[str, User], Prompt] | None,
                      choose_prompt: Prompt | None, timeout: float, barge_in: bool, by_speech: bool) -> User | None:
        """Announce each match with a key (1, 2, ...) and let the caller pick; * searches again."""
        keys = [str(i + 1) for i in range(len(found))]
        parts: list[Any] = []
        for key, user in zip(keys, found):
            parts.extend(_prompt_parts(announce(key, user) if announce else {"say": f"For {user.name}, press {key}."}))
        tail = choose_prompt if choose_prompt is not None else {"say": "To search again, press star."}
        phrases = None
        if by_speech:
            from ivr.call.pbx_view import directory_phrases

            said = directory_phrases(found)
            by_key = {k: ([*said.get(u.Number or "", [])]) for k, u in zip(keys, found)}
            if len(found) == 1:
                by_key[keys[0]].insert(0, "yes")
            phrases = {"phrases": {k: v for k, v in by_key.items() if v}} if any(by_key.values()) else None
        result = await self.menu(prompt=_prompt_parts(parts, tail), choices=[*keys, "*"], retries=1, timeout=timeout,
                                 barge_in=barge_in, speech=phrases)
        if result.status == "match" and result.choice in keys:
            return found[keys.index(result.choice)]
        return None

    # --- recording --------------------------------------------------------------------------

    async def record(
        self,
        path: str | Path,
        *,
        max_seconds: float = 120,
        silence_end: float | None = 3.0,
        stop_keys: str = "#",
        beep: bool = True,
        mode: str = "caller",
        metadata: Mapping[str, Any] | None = None,
        initial_silence: float | None = 5.0,
        discard_empty: bool = False,
    ) -> RecordResult:
        """Record the caller until silence, a stop key, the length limit, or hangup.

        ``silence_end`` counts once the caller has spoken; before that, ``initial_silence``
        (None: ``silence_end`` from the beep) lets a caller think. ``result.empty`` says no
        speech was heard; ``discard_empty`` then keeps no file."""
        self._check()
        target = Path(path)
        if not target.is_absolute():
            target = self.recordings_dir / target
        meta = {
            "call_id": self.call_id,
            "caller": self.caller.number,
            "caller_name": self.caller.name,
            "did": self.did,
            "route_point": self.route_point,
            **(dict(metadata) if metadata else {}),
        }
        result = await self.media.record(
            target,
            max_seconds=max_seconds,
            silence_end=silence_end,
            stop_keys=stop_keys,
            beep=beep,
            mode=mode,
            metadata=meta,
            initial_silence=initial_silence,
            discard_empty=discard_empty,
        )
        if result.path is not None:
            self.call_record.recordings.append(str(result.path))
        return result

    async def detect_machine(self, *, wait_for_beep: bool = False, max_greeting: float = 30.0,
                             **thresholds: Any) -> Any:
        """Human, machine or unknown, from the callee's voice cadence since now (ivr/audio/amd.py):
        call it first thing after an outbound call is answered. With ``wait_for_beep``, after a
        machine it also waits for the greeting's beep (or its end) so a message lands on the
        recording. ``thresholds``: AmdSettings fields (greeting_max, after_greeting_silence, ...)."""
        from ivr.audio.amd import AmdSettings
        from ivr.call.machine import detect

        try:
            settings = AmdSettings(**thresholds)
        except (TypeError, ValueError) as exc:
            raise CallError(f"detect_machine: {exc}") from None
        await self.media.start()  # idempotent: the callee's audio must flow from now on
        result = await self._until_hangup(detect(self.media, settings, wait_for_beep=wait_for_beep,
                                                 max_greeting=max_greeting))
        self.log.info("answering-machine detection: %s (%s) after %.2f s", result.result, result.reason,
                      result.decided_after)
        return result


def _decide(collector: DigitCollector, speech: SpeechAttempt | None) -> AttemptOutcome | None:
    """The attempt's outcome once keys or speech decided it, else None."""
    keys = collector.outcome
    if speech is None:
        return keys
    if keys is not None and keys.status != "no_input":
        return keys  # keys completed first
    if speech.outcome is not None:
        return speech.outcome
    if keys is not None and not speech.busy:
        return keys  # no key and no speech: no_input
    return None


def _earliest(*deadlines: float | None) -> float | None:
    return min((d for d in deadlines if d is not None), default=None)


def _directory_ask(match: str, by_speech: bool) -> str:
    which = {"last": "last name", "first": "first name", "either": "last or first name"}[match]
    said = ", or say the name" if by_speech else ""
    return f"Please key the first letters of the person's {which}, then press the pound key{said}."


def _prompt_parts(*prompts: Any) -> list[Any]:
    """Prompts (a file, {say:}, a list of those, or None) as one flat list of parts."""
    out: list[Any] = []
    for p in prompts:
        if p is None:
            continue
        out.extend(p if isinstance(p, (list, tuple)) else [p])
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _has_digits(collector: DigitCollector) -> bool:
    """Speech is ignored once keys were pressed in the attempt (keys win)."""
    return bool(collector.digits)
