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
    caller: Caller
    did: str
    vars: dict[str, Any]
    call_record: CallRecord
    media: CallMedia
    speech: SpeechServices | None
    observers: CallObservers
    clock: Callable[[], datetime] | None

    @property
    def hung_up(self) -> bool: ...

    @property
    def ended(self) -> asyncio.Event: ...

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
        ...

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
        ...

    def pbx_facts(self) -> PbxFacts:
        """What templates read as ``pbx``: users' presence, queues' agents, departments' state."""

    async def pbx_hours(self, department: str | None = None, *, fallback: Schedule | None = None) -> HoursAnswer:
        ...

    async def presence(self, number: str) -> Presence | None:
        ...

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
        """``start``/``on_attempt``: begin at a try, be told each one (a resumed step)."""

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
        ...


if TYPE_CHECKING:
    def _call_has_the_api(call: Call) -> CallApi:  # mypy checks that Call implements CallApi
        return call
