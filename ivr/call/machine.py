"""Answering-machine detection on a live call: the callee's frames from the media layer go to
the sans-I/O detector (ivr/audio/amd.py) as they arrive; the call waits for its decision."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ivr.audio.amd import AmdDecision, AmdSettings, AnsweringMachineDetector, GreetingEnd

if TYPE_CHECKING:
    from ivr.call.media import CallMedia


@dataclass(frozen=True)
class MachineResult:
    """What ``call.detect_machine`` found: ``result`` human, machine or unknown, and when."""

    result: str
    reason: str
    decided_after: float  # seconds of the callee's audio heard before the decision
    greeting_end: str | None = None  # after a machine, with wait_for_beep: beep, silence or timeout
    waited: float = 0.0  # seconds of audio heard in all (decision plus the wait for the beep)

    @property
    def machine(self) -> bool:
        return self.result == "machine"


async def detect(media: CallMedia, settings: AmdSettings, *, wait_for_beep: bool = False,
                 max_greeting: float = 30.0) -> MachineResult:
    """Listen from now on until the detector decides (and, after a machine, until the greeting
    ends when ``wait_for_beep``). Frames are handled in the media layer's callback: no task
    per frame, and the detector never blocks the audio path."""
    loop = asyncio.get_running_loop()
    decided: asyncio.Future[tuple[AmdDecision, str | None, float]] = loop.create_future()
    amd = AnsweringMachineDetector(settings)
    ending: list[GreetingEnd] = []

    def on_frame(frame: np.ndarray, *_: Any) -> None:
        if decided.done():
            return
        if ending:
            reason = ending[0].feed(frame)
            if reason is not None:
                decided.set_result((amd.decision, reason, amd.time + (ending[0].at or 0.0)))  # type: ignore[arg-type]
            return
        decision = amd.feed(frame)
        if decision is None:
            return
        if decision.result == "machine" and wait_for_beep:
            ending.append(GreetingEnd(max_wait=max_greeting))
            return
        decided.set_result((decision, None, decision.at))

    remove = media.add_listener(on_frame)
    try:
        decision, greeting_end, heard = await decided
    finally:
        remove()
    return MachineResult(decision.result, decision.reason, decision.at, greeting_end, round(heard, 3))
