"""The Call as flows, Python flows and the agent use it: :class:`CallApi`, a Protocol.

``ivr.call.call.Call`` is the implementation; the YAML interpreter, a Python flow's proxy
(``ivr.flow.python_call.FlowCall``) and the agent type their ``call`` with this, so the layers
above see what they may use, and a stand-in for tests needs only what is used. Layers above
watch a call through ``observers`` (``ivr.call.observer``), never by setting attributes on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ivr.call.observer import CallObservers
from ivr.call.record import CallRecord
from ivr.call.results import Caller, DirectoryResult, GatherResult, PlayResult, Prompt, RecordResult, TransferResult
from ivr.call.ringback import TONE
from ivr.call.step_budget import StepBudget

if TYPE_CHECKING:  # annotations only
    from ivr.call.call import Call
    from ivr.call.collector import AttemptMark, DigitRules
    from ivr.call.media import CallMedia
    from ivr.call.pbx_view import HoursAnswer, NameMatch, PbxFacts, Presence
    from ivr.call.results import DirectoryMark
    from ivr.call.speech_input import SpeechOptions
    from ivr.pbx.hours import Schedule
    from ivr.pbx.xapi import User
    from ivr.speech.services import SpeechServices

__all__ = ["CallApi"]

T = TypeVar("T")


class CallApi(Protocol):
    """What a flow may use of a call (``ivr.call.call.Call`` has it all)."""

    call_id: str
    """The PBX's call id (the participant's ``callid``): logs, records and ``{{ call.id }}``."""
    caller: Caller
    """Who is calling: ``{{ caller.number }}``, ``{{ caller.name }}``."""
    did: str
    """The number dialled to reach us (``{{ call.did }}``)."""
    route_point: str
    """The route point's number the call sits on (``{{ call.route_point }}``)."""
    vars: dict[str, Any]
    """The flow's variables: YAML ``set``/``into``, a Python flow's ``call.vars``, the agent's ``set_variable``."""
    call_record: CallRecord
    """What the call did (steps, errors, outcome): the record the worker writes at its end."""
    media: CallMedia
    """The leg's audio pipeline: inputs (keys, speech events), output listeners, the VAD (the agent)."""
    speech: SpeechServices | None
    """The worker's STT/TTS/LLM adapters; None when none is configured (the agent then refuses)."""
    observers: CallObservers
    """Who watches the call: the interpreter and a Python flow's proxy report steps to them."""
    clock: Callable[[], datetime] | None
    """Wall-clock time as flows see it when something pins it (a simulator); None: the real clock."""
    audio_dirs: list[Path]
    """The worker's prompt folders, searched after the flow's own (templated prompt names)."""
    recordings_dir: Path
    """Where `record` and `voicemail` files go; a flow's file names cannot leave it."""
    flow_budget: StepBudget | None
    """The call's step count and limit, shared by its flow and every subflow (None until a flow runs)."""

    @property
    def hung_up(self) -> bool:
        """The caller has hung up (or the call left the route point)."""

    @property
    def ended(self) -> asyncio.Event:
        """Set when the call ends: await it to wait for the hang-up."""

    async def until_hangup(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, or raise CallHangup as soon as the caller hangs up."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware: what `hours` steps and `{{ now }}` see."""

    def log_event(self, message: str, **fields: Any) -> None:
        """The flow's `log` step: a line in the worker log, tagged with the call id."""

    async def answer(self) -> None:
        """Connect the leg. Calls often reach a route point already Connected: then a no-op."""

    async def hangup(self) -> None:
        """Drop our leg: the call ends for the caller."""

    async def attach_data(self, data: Mapping[str, Any]) -> None:
        """Store key/value data on the leg (3CX shows it to the agent who takes the call)."""

    async def sleep(self, seconds: float) -> None:
        """The `pause` step: wait ``seconds`` (CallHangup if the caller hangs up meanwhile)."""

    async def play(self, *files: str | Path, loop: int = 1, barge_in: bool = True) -> PlayResult:
        """Play audio files in order (``loop`` times). Stops early on barge-in."""

    async def say(
        self, text: str, *, voice: str | None = None, tts: str | None = None, barge_in: bool = True
    ) -> PlayResult:
        """Speak text with a TTS adapter; the first sentence plays while the rest is synthesized."""

    async def play_prompt(self, prompt: Prompt | None, *, barge_in: bool = True) -> PlayResult:
        """Play a Prompt: a file, ``{"say": text}``, or a list of those."""

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
        """Collect digits by the VoiceXML timer rules (docs/dtmf-timers.md), with retries;
        ``start``/``on_attempt``: begin at an attempt, be told each one (a resumed step)."""

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
        """A single-key menu: the result's ``choice`` is the key pressed, or None."""

    async def transfer(
        self, destination: str, *, mode: str = "routeto", timeout: float = 20, ringback: Any = TONE,
        in_flight_since: float | None = None,
    ) -> TransferResult:
        """Hand the call to ``destination`` (``mode``: routeto, transferto, divert); the result
        says whether it was answered, busy, not answered or failed."""

    def pbx_facts(self) -> PbxFacts:
        """What templates read as ``pbx``: users' presence, queues' agents, departments' state."""

    async def pbx_hours(self, department: str | None = None, *, fallback: Schedule | None = None) -> HoursAnswer:
        """Open, closed, break or holiday now, by the PBX's office hours (``fallback`` when unknown)."""

    async def presence(self, number: str) -> Presence | None:
        """The presence of extension ``number``; None when the PBX has no such user or is not read."""

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
        """Dial-by-name: the caller spells a name on the keypad (or says it), then picks a match.
        ``start``/``on_attempt``: begin at a try, be told each one (a resumed step)."""

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
        """Record the caller until silence, a stop key, the length limit, or hangup."""

    async def detect_machine(self, *, wait_for_beep: bool = False, max_greeting: float = 30.0,
                             **thresholds: Any) -> Any:
        """Answering-machine detection on the far end's greeting: human, machine or unknown."""


if TYPE_CHECKING:
    def _call_has_the_api(call: Call) -> CallApi:  # mypy checks that Call implements CallApi
        return call
