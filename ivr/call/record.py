"""The call record: what happened on one call, written as one JSON line when the call ends."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


MAX_RECORDED_STEPS = 2000
"""Steps kept in one call record (a YAML flow stops after 1000 and then runs its on_error);
the rest are counted in ``metrics["steps_not_kept"]``."""


class Outcome:
    """How a call ended. Every call ends in exactly one of these."""

    TRANSFERRED = "transferred"  # handed to another destination by transfer/routeto/divert
    CALLER_HANGUP = "caller_hangup"  # the caller left
    IVR_HANGUP = "ivr_hangup"  # the flow hung up (or ran to its end)
    PBX_ERROR = "pbx_error"  # the PBX failed or refused an action (a transfer), and the IVR ended the call
    OVERFLOW = "overflow"  # the worker could not take the call and sent it to the overflow
    ERROR = "error"  # the flow failed and no handler could place the call
    FALLBACK = "fallback"  # the flow failed; the worker sent the caller to the overflow destination
    DRAINED = "drained"  # cut at the drain deadline


@dataclass
class StepRecord:
    step: str
    id: str | None
    at: float  # seconds since the call started
    result: Any = None
    duration: float = 0.0


@dataclass
class CallRecord:
    call_id: str
    route_point: str
    participant_id: int
    caller_number: str = ""
    caller_name: str = ""
    did: str = ""
    # "inbound" (a call to a route point) or "outbound" (dialled by the worker: caller_number
    # is then the number called, the other party of the call).
    direction: str = "inbound"
    flow: str = ""
    flow_version: str = ""
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    outcome_detail: str = ""
    transferred_to: str | None = None
    digits: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    dial_status: str | None = None  # a call the worker dialled: answered, busy, no_answer, not_registered, failed
    variables: dict[str, Any] | None = None  # what the flow set, when the dialler asked for it (campaigns)
    taken_over: dict[str, Any] | None = None  # set when another worker's call was taken over (docs/ha.md)

    def __post_init__(self) -> None:
        # Elapsed time and durations run on a monotonic clock, the call's event loop once the
        # Call exists (virtual in simulations); started_at/ended_at stay wall-clock timestamps.
        self._clock: Callable[[], float] = time.monotonic
        self._t0 = self._clock() - (time.time() - self.started_at)
        self._t_end: float | None = None

    def backdate(self, started_at: float) -> None:
        """The call began at ``started_at`` (wall clock), before this record was made: a call
        taken over from another worker. Durations and step times count from then."""
        self._t0 -= self.started_at - started_at
        self.started_at = started_at

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Measure elapsed time and durations on ``clock`` from now on (e.g. ``loop.time``)."""
        so_far = self.elapsed()
        self._clock = clock
        self._t0 = clock() - so_far
        self._t_end = None if self._t_end is None else self._t0 + so_far

    def elapsed(self) -> float:
        """Seconds since the call started (until it ended)."""
        return (self._t_end if self._t_end is not None else self._clock()) - self._t0

    def add_step(self, step: str, step_id: str | None = None, result: Any = None, duration: float = 0.0) -> None:
        if len(self.steps) >= MAX_RECORDED_STEPS:  # a Python flow looping on call.sleep() must not grow the line forever
            self.metrics["steps_not_kept"] = self.metrics.get("steps_not_kept", 0) + 1
            return
        self.steps.append(StepRecord(step, step_id, round(self.elapsed(), 3), result, round(duration, 3)))

    def finish(self, outcome: str, detail: str = "") -> None:
        """Set the outcome once; the first decision wins (a hangup after a transfer stays a transfer)."""
        if self.outcome is None:
            self.outcome = outcome
            self.outcome_detail = detail
        if self.ended_at is None:
            self.ended_at = time.time()
            self._t_end = self._clock()

    @property
    def duration(self) -> float:
        return round(self.elapsed(), 3)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration"] = self.duration
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, separators=(",", ":"))


class CallRecordWriter:
    """Appends call records as JSON lines; one line per call, flushed at once."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: CallRecord) -> None:
        if not self.path:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
