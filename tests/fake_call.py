"""FakeCall: one typed stand-in for a call, for tests of the interpreter, Python flows and the agent.

It has every member of :class:`ivr.call.api.CallApi` (mypy checks it: this file is in
``[tool.mypy] files``), with no PBX behind it. What needs no PBX works in memory, as a Call
without one would: ``vars``, ``call_record``, ``observers``, ``now()`` (``clock`` pins it),
``pbx_facts()`` and ``pbx_hours`` with nothing read from the PBX, ``log_event`` (kept in
``logged``), ``answer``/``hangup``/``attach_data``/``sleep``. The audio and PBX actions
(``play``, ``gather``, ``transfer``...) fail with "not scripted": a test subclasses FakeCall
and overrides the ones it expects, so an action it did not expect shows up as a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ivr.call.observer import CallObservers
from ivr.call.pbx_view import HoursUnknown, PbxFacts, facts_for, hours_state
from ivr.call.record import CallRecord
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
)
from ivr.call.ringback import TONE
from ivr.call.step_budget import StepBudget

if TYPE_CHECKING:
    from ivr.call.api import CallApi
    from ivr.call.collector import AttemptMark, DigitRules
    from ivr.call.media import CallMedia
    from ivr.call.pbx_view import HoursAnswer, NameMatch, Presence
    from ivr.call.speech_input import SpeechOptions
    from ivr.pbx.hours import Schedule
    from ivr.pbx.xapi import User
    from ivr.speech.services import SpeechServices

__all__ = ["FakeCall"]

T = TypeVar("T")


class NotScripted(AssertionError):
    """The code under test used an action the test did not script."""


class FakeCall:
    """A call with no PBX: CallApi's members, in memory; actions are scripted by subclassing."""

    def __init__(self, *, call_id: str = "c1", caller: Caller | None = None, did: str = "", route_point: str = "800",
                 media: CallMedia | None = None, speech: SpeechServices | None = None,
                 clock: Callable[[], datetime] | None = None, audio_dirs: Sequence[Path] = (),
                 recordings_dir: Path = Path("var/recordings")) -> None:
        self.call_id = call_id
        self.caller = caller or Caller("", "")
        self.did = did
        self.route_point = route_point
        self.vars: dict[str, Any] = {}
        self.call_record = CallRecord(call_id, route_point, 1, caller_number=self.caller.number,
                                      caller_name=self.caller.name, did=did)
        self._media = media
        self.speech = speech
        self.observers = CallObservers()
        self.clock = clock
        self.audio_dirs: list[Path] = list(audio_dirs)
        self.recordings_dir = recordings_dir
        self.flow_budget: StepBudget | None = None
        self.logged: list[tuple[str, dict[str, Any]]] = []  # log_event's messages and fields
        self.attached: dict[str, Any] = {}  # attach_data's data
        self.answered = False
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.call_id!r})"

    # --- state ------------------------------------------------------------------------------

    @property
    def media(self) -> CallMedia:
        if self._media is None:
            raise NotScripted(f"{self!r} has no media (FakeCall(media=...))")
        return self._media

    @media.setter
    def media(self, media: CallMedia) -> None:
        self._media = media

    @property
    def hung_up(self) -> bool:
        return self._ended.is_set()

    @property
    def ended(self) -> asyncio.Event:
        return self._ended

    async def until_hangup(self, awaitable: Awaitable[T]) -> T:
        if self.hung_up:
            raise CallHangup(f"call {self.call_id} has ended")
        return await awaitable

    def now(self) -> datetime:
        return self.clock() if self.clock is not None else datetime.now(UTC)

    def log_event(self, message: str, **fields: Any) -> None:
        self.logged.append((message, fields))

    def pbx_facts(self) -> PbxFacts:
        return facts_for(None, self.now())  # nothing read from a PBX

    async def pbx_hours(self, department: str | None = None, *, fallback: Schedule | None = None) -> HoursAnswer:
        try:
            return hours_state(None, self.now(), department, fallback)
        except HoursUnknown as exc:
            raise CallError(f"hours: {exc}") from None

    async def presence(self, number: str) -> Presence | None:
        return None  # the PBX's users are not known

    # --- what needs no PBX to pretend -------------------------------------------------------

    async def answer(self) -> None:
        self.answered = True

    async def hangup(self) -> None:
        self._ended.set()

    async def attach_data(self, data: Mapping[str, Any]) -> None:
        self.attached.update(data)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    # --- actions a test scripts (by overriding them) ----------------------------------------

    def _unscripted(self, action: str) -> NotScripted:
        return NotScripted(f"{self!r}: {action} was not scripted by this test (override it in a FakeCall subclass)")

    async def play(self, *files: str | Path, loop: int = 1, barge_in: bool = True) -> PlayResult:
        raise self._unscripted("play")

    async def say(
        self, text: str, *, voice: str | None = None, tts: str | None = None, barge_in: bool = True
    ) -> PlayResult:
        raise self._unscripted("say")

    async def play_prompt(self, prompt: Prompt | None, *, barge_in: bool = True) -> PlayResult:
        raise self._unscripted("play_prompt")

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
        raise self._unscripted("gather")

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
        raise self._unscripted("menu")

    async def transfer(
        self, destination: str, *, mode: str = "routeto", timeout: float = 20, ringback: Any = TONE,
        in_flight_since: float | None = None,
    ) -> TransferResult:
        raise self._unscripted("transfer")

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
        raise self._unscripted("directory")

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
        raise self._unscripted("record")

    async def detect_machine(self, *, wait_for_beep: bool = False, max_greeting: float = 30.0,
                             **thresholds: Any) -> Any:
        raise self._unscripted("detect_machine")


if TYPE_CHECKING:
    def _fake_has_the_api(call: FakeCall) -> CallApi:  # mypy checks that FakeCall implements CallApi
        return call
