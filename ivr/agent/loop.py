"""The agent's turn-taking loop: listen (VAD endpointing) -> STT -> LLM -> TTS, with barge-in.

One :class:`AgentLoop` runs one conversation on one call:

1. the greeting is spoken (the caller may interrupt it);
2. listen: the call's input stream (``call.media.inputs``) gives SpeechStarted / SpeechEnded(audio) /
   SpeechCancelled, keys and hang-up; no speech for ``silence_timeout`` s -> the reprompt line, and after
   ``max_reprompts`` of those the conversation ends ``no_input``;
3. the utterance goes to the STT while the caller speaks (:class:`~ivr.call.utterance.UtteranceRecognizer`),
   so the transcript is ready just after the end of the turn (``end_of_turn_ms`` of silence);
   it joins the history;
4. the LLM streams its answer; text is cut into sentences (:mod:`ivr.agent.sentences`) and
   each sentence is synthesized and queued while the model is still writing
   (:class:`~ivr.agent.speaker.Reply`); tool calls run through :class:`~ivr.agent.tools.ToolBox`
   and their results go back to the model for another round;
5. barge-in: SpeechStarted while the agent talks or thinks cuts the audio, cancels the LLM
   stream and the TTS, and keeps only the words heard in the history; the caller's
   utterance is then the next turn.

Any adapter failure or timeout ends the conversation with a spoken apology and an
``error`` result - never silence. The caller hanging up raises ``CallHangup`` as every Call
operation does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivr.audio.vad import SpeechCancelled, SpeechEnded, SpeechStarted
from ivr.call.inputs import Digit, HungUp, Input, WorkDone, stop
from ivr.call.results import CallError, CallHangup
from ivr.call.utterance import UtteranceRecognizer
from ivr.speech.base import ChatMessage, SpeechError, TextDelta, ToolCall, iter_with_timeout, with_timeout

from .metrics import TurnMetrics
from .result import AgentResult
from .sentences import SentenceSplitter
from .speaker import Reply
from .tools import AgentTools, ToolBox
from .turns import GaveUp, ListenRules

if TYPE_CHECKING:  # annotations only
    from ivr.call.api import CallApi

__all__ = ["AgentLoop", "AgentSettings", "run_agent"]

log = logging.getLogger("ivr.agent")

DEFAULT_APOLOGY = "I'm sorry, something went wrong on our side."


class _Deadline(Exception):
    """max_seconds passed while the agent was speaking or the model replying."""


class _KeyPressed(Exception):
    """The caller pressed one of the agent's ``keys``."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

DEFAULT_REPROMPT = "Are you still there?"
#: Model rounds in one turn (tool call -> result -> model again) before we stop asking.
MAX_TOOL_ROUNDS = 4
_BARGED = "barged"


@dataclass
class AgentSettings:
    """Everything one conversation is configured with (``Call.agent(**options)`` keywords).

    Adapter names default to the worker's (``call.speech``). ``system`` and ``greeting`` are
    plain text here: the flow layer renders its templates before calling. ``apology`` is a
    Prompt (file or ``{say:}``); by default the apology line is spoken with the TTS, and if
    that fails too, ``fallback_prompt`` (a file) is played.
    """

    system: str = ""
    greeting: str | None = None
    llm: str | None = None
    stt: str | None = None
    tts: str | None = None
    voice: str | None = None
    tools: AgentTools = field(default_factory=AgentTools)
    max_turns: int = 10
    max_seconds: float = 300.0
    silence_timeout: float = 8.0
    max_reprompts: int = 2
    reprompt: str = DEFAULT_REPROMPT
    apology: Any = None
    fallback_prompt: str | None = "sorry.wav"
    llm_timeout: float = 10.0  # first token, and between tokens
    stt_timeout: float = 10.0  # end of speech -> final transcript
    end_of_turn_ms: int = 700  # caller silence that ends a turn (the VAD's end_ms while the agent listens)
    tts_timeout: float = 5.0  # first audio of each sentence
    temperature: float | None = None
    keys: str = ""  # DTMF keys that end the conversation with status "key" (e.g. "0" for the operator)
    variables: dict[str, Any] | None = None  # what set_variable writes (default: call.vars)
    context: Callable[[], Mapping[str, Any]] | None = None  # template context for http tools

    def __post_init__(self) -> None:
        self.tools = AgentTools.of(self.tools)
        if self.max_turns < 1:
            raise ValueError(f"agent: max_turns must be >= 1, got {self.max_turns}")
        for name in ("max_seconds", "silence_timeout", "llm_timeout", "stt_timeout", "tts_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"agent: {name} must be > 0, got {getattr(self, name)}")
        if self.max_reprompts < 0:
            raise ValueError(f"agent: max_reprompts must be >= 0, got {self.max_reprompts}")
        if not 100 <= self.end_of_turn_ms <= 5000:
            raise ValueError(f"agent: end_of_turn_ms must be 100-5000, got {self.end_of_turn_ms}")
        self.keys = str(self.keys or "").upper()
        bad = sorted({k for k in self.keys if k not in "0123456789*#ABCD"})
        if bad:
            raise ValueError(f"agent: keys must be DTMF keys (0-9, *, #, A-D), got {''.join(bad)!r}")


class AgentLoop:
    """One conversation on ``call``; ``await AgentLoop(call, settings).run()``."""

    def __init__(self, call: CallApi, settings: AgentSettings) -> None:
        self.call = call
        self.media = call.media
        self.s = settings
        self.loop = asyncio.get_running_loop()
        self.history: list[ChatMessage] = [ChatMessage("system", settings.system)] if settings.system else []
        self.transcript: list[dict[str, Any]] = []
        self.turns = 0
        self.turn_metrics: list[dict[str, Any]] = []
        self._turn: TurnMetrics | None = None
        self._open_reply: Reply | None = None  # the reply not yet in the history (cut at an early end)
        self._replies: list[Reply] = []
        self.deadline = self.loop.time() + settings.max_seconds
        self.toolbox: ToolBox | None = None
        self.recognizer: UtteranceRecognizer | None = None

    # --- the conversation -------------------------------------------------------------------

    async def run(self) -> AgentResult:
        """Talk until a tool ends it, a limit is reached, or an adapter fails."""
        speech = self.call.speech
        if speech is None:
            raise CallError("agent: no speech services are configured for this worker (speech: llm/stt/tts)")
        await self.call.answer()  # the media must run; a no-op when the flow answered already
        self.media.take_digits()
        self.media.inputs.drop_speech()  # speech from before the agent started
        remove = self.media.add_output_listener(self._frame_out)
        # Gathers keep the media's shorter end_ms; a turn needs a longer pause to end.
        end_ms, self.media.vad.end_ms = self.media.vad.end_ms, self.s.end_of_turn_ms
        try:
            try:
                self.llm, self.stt, self.tts = speech.llm(self.s.llm), speech.stt(self.s.stt), speech.tts(self.s.tts)
                self.recognizer = UtteranceRecognizer(self.media, self.stt)
                self.toolbox = ToolBox(self.s.tools, self.call, variables=self.s.variables, context=self.s.context,
                                       settle=self._settle)
                return await self._converse()
            except CallHangup:
                raise
            except (CallError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - any adapter failure: apologise, report
                return await self._fail(exc)
        finally:
            remove()
            self.media.vad.end_ms = end_ms
            if self.recognizer is not None:
                await self.recognizer.close()
            for reply in self._replies:
                await reply.aclose()
            if self.turn_metrics:
                self.call.call_record.metrics.setdefault("agent_turns", []).extend(self.turn_metrics)

    async def _converse(self) -> AgentResult:
        """The conversation, ended early by max_seconds or one of the agent's keys at any
        point (the caller listening, the agent speaking, the model writing)."""
        try:
            return await self._turns()
        except _Deadline:
            self._stop_talking("agent_timeout")
            return self._result("timeout")
        except _KeyPressed as pressed:
            self._stop_talking("dtmf")
            return self._result("key", {"key": pressed.key})

    def _stop_talking(self, reason: str) -> None:
        """Cut what the agent is saying; the history keeps what the caller heard."""
        reply, self._open_reply = self._open_reply, None
        if reply is not None:
            heard = self._cut(reply)
            if heard:
                self.history.append(ChatMessage("assistant", heard))
                self._note("assistant", heard, interrupted=True)
        self.media.cut(reason)

    async def _turns(self) -> AgentResult:
        speaking = False
        if self.s.greeting:
            speaking = await self._speak_line(self.s.greeting)
        reprompts = 0
        while True:
            if self.turns >= self.s.max_turns:
                return self._result("max_turns")
            heard = await self._listen(speaking)
            speaking = False
            if heard == "timeout":
                return self._result("timeout")
            if heard == "silence":
                reprompts += 1
                if reprompts > self.s.max_reprompts:
                    return self._result("no_input")
                speaking = await self._speak_line(self.s.reprompt)
                continue
            assert isinstance(heard, SpeechEnded)
            turn = TurnMetrics(self.turns + 1, self.loop.time(), vad_hangover=max(0.0, heard.detected_at - heard.t),
                               speech=heard.duration)
            text = await self._transcribe(heard)
            turn.mark("stt", self.loop.time())
            if not text:
                continue  # noise the VAD took for speech: keep listening, no turn used
            reprompts = 0
            self.turns += 1
            self.history.append(ChatMessage("user", text))
            self._note("user", text)
            self._turn = turn
            try:
                outcome = await self._respond(turn)
            finally:
                self._turn = None
                self.turn_metrics.append(turn.to_dict())
            if isinstance(outcome, AgentResult):
                return outcome
            speaking = outcome == _BARGED
            if self.loop.time() >= self.deadline:
                return self._result("timeout")

    # --- listening --------------------------------------------------------------------------

    def _hears(self, item: Input) -> bool:
        """What the agent listens to: speech, and keys when keys end it (other keys stay queued)."""
        return isinstance(item, (SpeechStarted, SpeechEnded, SpeechCancelled)) or (
            bool(self.s.keys) and isinstance(item, Digit))

    async def _next(self, deadline: float, work: asyncio.Future[Any] | None = None) -> Input | None:
        """The next input the agent hears (or ``work`` ending), None at ``deadline``. Raises
        CallHangup when the call ends and _KeyPressed on one of the agent's keys; other keys
        are dropped."""
        while True:
            item = await self.media.inputs.next(
                lambda i: self._hears(i) or (isinstance(i, WorkDone) and i.task is work), deadline)
            if isinstance(item, HungUp):
                raise CallHangup(f"call {self.call.call_id} has ended")
            if not isinstance(item, Digit):
                return item
            if item.key.upper() in self.s.keys:
                raise _KeyPressed(item.key.upper())
            log.debug("agent: key %s ignored (keys that end the agent: %s)", item.key, self.s.keys)

    async def _listen(self, speaking: bool) -> SpeechEnded | GaveUp:
        """The caller's next utterance, or "silence" / "timeout" (max_seconds reached); the
        rules are ListenRules', this only waits and feeds them."""
        rules = ListenRules(self.loop.time(), silence_timeout=self.s.silence_timeout, deadline=self.deadline,
                            speaking=speaking)
        while True:
            event = await self._next(rules.wake_at())
            if event is None:
                gave_up = rules.gave_up(self.loop.time())
                if gave_up is not None:
                    return gave_up
            elif isinstance(event, SpeechStarted):
                rules.speech_started()
            elif isinstance(event, SpeechCancelled):
                self._drop(event.start)
                rules.speech_cancelled(self.loop.time())
            elif isinstance(event, SpeechEnded):
                return event

    async def _watch(self, work: Awaitable[Any]) -> bool:
        """Await ``work`` unless the caller starts speaking first: True on barge-in.
        Raises _Deadline at max_seconds (an endless reply must not hold the call) and
        _KeyPressed on one of the agent's keys."""
        inputs = self.media.inputs
        task = inputs.start(work, WorkDone)
        try:
            # The work takes its first step before a barge-in already queued stops it (a model
            # request is made, then cancelled), as when this raced futures with asyncio.wait.
            await asyncio.sleep(0)
            while not task.done():
                if self.deadline - self.loop.time() <= 0:
                    raise _Deadline()
                event = await self._next(self.deadline, task)
                if isinstance(event, SpeechStarted):
                    return True
                if isinstance(event, (SpeechEnded, SpeechCancelled)):
                    # an end or cancel of speech that began before this wait: nothing to interrupt
                    self._drop(event.start)
            task.result()
            return False
        finally:
            inputs.forget(task)
            if not task.done():
                await stop(task)

    async def _transcribe(self, heard: SpeechEnded) -> str:
        """The utterance's transcript: decoded while the caller spoke, finished now."""
        assert self.recognizer is not None
        result = await with_timeout(self.recognizer.result(heard), self.s.stt_timeout,
                                    adapter=getattr(self.stt, "name", "stt"), what="recognition")
        return result.text.strip()

    def _drop(self, start: float) -> None:
        if self.recognizer is not None:
            self.recognizer.drop(start)

    # --- speaking ---------------------------------------------------------------------------

    def _reply(self) -> Reply:
        turn = self._turn
        reply = Reply(self.media, self.tts, voice=self.s.voice, first_audio_timeout=self.s.tts_timeout,
                      on_first_audio=(lambda: turn.mark("first_audio", self.loop.time())) if turn else None)
        self._replies.append(reply)
        self._open_reply = reply
        return reply

    def _frame_out(self, _frame: bytes) -> None:
        turn = self._turn
        if turn is not None and turn.has("first_audio") and not turn.has("first_byte"):
            turn.mark("first_byte", self.loop.time())

    async def _speak_line(self, text: str) -> bool:
        """Say a fixed line (greeting, reprompt) as the assistant; True if the caller barged in."""
        reply = self._reply()
        for sentence in SentenceSplitter().feed(text + "\n"):
            reply.say(sentence)
        reply.close()
        barged = await self._watch(reply.played())
        said = self._cut(reply) if barged else reply.text
        self._open_reply = None
        if said:
            self.history.append(ChatMessage("assistant", said))
            self._note("assistant", said, interrupted=barged)
        return barged

    def _cut(self, reply: Reply) -> str:
        reply.cancel()
        return reply.heard()

    async def _settle(self) -> None:
        """Let the reply so far play out before a tool acts ("I'll put you through...")."""
        for reply in self._replies:
            await self.call.until_hangup(reply.played())

    # --- one turn ---------------------------------------------------------------------------

    async def _respond(self, turn: TurnMetrics) -> AgentResult | str | None:
        """Answer the caller: model rounds until it stops calling tools. Returns an
        AgentResult when a tool ended the conversation, _BARGED on barge-in, else None."""
        assert self.toolbox is not None
        for _ in range(MAX_TOOL_ROUNDS):
            turn.llm_rounds += 1
            reply = self._reply()
            parts: list[str] = []
            calls: list[ToolCall] = []
            barged = await self._watch(self._stream(reply, parts, calls))
            if not barged:
                if not calls:
                    reply.close()
                    barged = await self._watch(reply.played())
            self._open_reply = None
            if barged:
                turn.barge_in = True
                heard = self._cut(reply)
                if heard:
                    self.history.append(ChatMessage("assistant", heard))
                    self._note("assistant", heard, interrupted=True)
                return _BARGED
            text = reply.text
            self.history.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
            if text:
                self._note("assistant", text)
            if not calls:
                return None
            for call in calls:
                turn.tools.append(call.name)
                outcome = await self.toolbox.run(call)
                self.history.append(ChatMessage("tool", _json(outcome.result), tool_call_id=call.id, name=call.name))
                self._note_tool(call, outcome.result)
                if outcome.end is not None:
                    return self._result(outcome.end, outcome.data)
        log.warning("agent: the model still called tools after %d rounds; waiting for the caller", MAX_TOOL_ROUNDS)
        return None

    async def _stream(self, reply: Reply, parts: list[str], calls: list[ToolCall]) -> None:
        """Run one model round: text -> sentences -> the reply; tool calls collected."""
        turn = self._turn
        splitter = SentenceSplitter()
        name = getattr(self.llm, "name", "llm")
        deltas = self.llm.stream(list(self.history), tools=self.toolbox.specs if self.toolbox else (),
                                 temperature=self.s.temperature)
        # aclosing: a barge-in cancels this task, and the model's stream must stop with it
        async with aclosing(iter_with_timeout(deltas, first=self.s.llm_timeout, between=self.s.llm_timeout,
                                              adapter=name, what="LLM reply")) as stream:
            async for delta in stream:
                if turn is not None:
                    turn.mark("first_token", self.loop.time())
                if isinstance(delta, TextDelta):
                    parts.append(delta.text)
                    for sentence in splitter.feed(delta.text):
                        reply.say(sentence)
                elif isinstance(delta, ToolCall):
                    calls.append(delta)
        for sentence in splitter.flush():
            reply.say(sentence)
        if calls:
            reply.close()
            await reply.synthesized()  # surface TTS errors before the tools act

    # --- endings ----------------------------------------------------------------------------

    def _result(self, status: str, data: dict[str, Any] | None = None, error: str | None = None) -> AgentResult:
        return AgentResult(status, dict(data or {}), self.turns, list(self.transcript), error)  # type: ignore[arg-type]

    async def _fail(self, exc: BaseException) -> AgentResult:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, (SpeechError, LookupError, TimeoutError)):
            log.warning("agent on call %s: %s", self.call.call_id, message)
        else:
            log.warning("agent on call %s failed", self.call.call_id, exc_info=exc)
        for reply in self._replies:
            await reply.aclose()
        self.media.cut("agent_error")
        self.call.call_record.errors.append(f"agent: {message}")
        apology = self.s.apology if self.s.apology is not None else {"say": DEFAULT_APOLOGY, "tts": self.s.tts}
        try:
            await self.call.play_prompt(apology, barge_in=False)
            said = apology.get("say") if isinstance(apology, Mapping) else None
        except CallHangup:
            raise
        except Exception as again:  # noqa: BLE001 - the TTS may be what failed: play the file
            log.warning("agent: the apology failed too (%s); playing %s", again, self.s.fallback_prompt)
            said = None
            if self.s.fallback_prompt:
                try:
                    await self.call.play(self.s.fallback_prompt, barge_in=False)
                except CallError as missing:
                    log.warning("agent: no fallback prompt: %s", missing)
        if said:
            self._note("assistant", said)
        return self._result("error", error=message)

    # --- the record -------------------------------------------------------------------------

    def _note(self, role: str, text: str, **extra: Any) -> None:
        entry = {"role": role, "text": text, "t": round(self.call.call_record.elapsed(), 3)}
        entry.update({k: v for k, v in extra.items() if v})
        self.transcript.append(entry)
        self.call.call_record.transcript.append(entry)

    def _note_tool(self, call: ToolCall, result: Mapping[str, Any]) -> None:
        entry = {"role": "tool", "name": call.name, "arguments": dict(call.arguments), "result": dict(result),
                 "t": round(self.call.call_record.elapsed(), 3)}
        self.transcript.append(entry)
        self.call.call_record.transcript.append(entry)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


async def run_agent(call: CallApi, **options: Any) -> AgentResult:
    """Run one LLM voice conversation on ``call`` (what ``Call.agent`` does); see AgentSettings."""
    return await AgentLoop(call, AgentSettings(**options)).run()
