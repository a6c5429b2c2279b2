"""What the Call's operations return, and the exceptions they raise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CallHangup(Exception):
    """The caller hung up (or the leg ended) while an operation was running."""


class CallError(Exception):
    """An operation on the call failed in a way the flow may want to handle (its on_error runs)."""


@dataclass(frozen=True)
class Caller:
    number: str
    name: str = ""

    def __str__(self) -> str:  # templates print {{ caller }} as the number
        return self.number


@dataclass
class PlayResult:
    completed: bool
    interrupted_by: str | None = None  # "dtmf" | "speech" | "hangup" | None
    played_ms: int = 0


@dataclass
class GatherResult:
    status: str  # "match" | "no_input" | "no_match"
    digits: str = ""
    terminator: str | None = None
    attempts: int = 0
    source: str = "dtmf"  # "dtmf" | "speech"
    transcript: str | None = None
    confidence: float | None = None
    choice: str | None = None
    reason: str = ""
    speech_error: str | None = None  # why speech input was off (STT failed): keys only

    @property
    def matched(self) -> bool:
        return self.status == "match"


@dataclass
class TransferResult:
    status: str  # "answered" | "busy" | "no_answer" | "not_registered" | "failed"
    destination: str = ""
    mode: str = "routeto"
    reason: str = ""
    pbx_error: bool = False  # failed because the PBX failed or refused the action (5xx, 422, no answer)

    @property
    def answered(self) -> bool:
        return self.status == "answered"


@dataclass
class RecordResult:
    path: Path | None
    duration: float
    reason: str  # "silence" | "no_speech" (initial_silence passed) | "max_length" | "key" | "hangup"
    metadata: dict[str, Any] = field(default_factory=dict)
    empty: bool = False  # the caller never spoke (no speech detected): a flow can drop or branch on it


@dataclass
class DirectoryResult:
    """Dial-by-name (``Call.directory``): ``status`` found, no_match (nobody, or nothing chosen
    after the last try) or no_input; the person chosen (``number``, ``name``); ``source`` dtmf
    or speech; ``letters`` the keys typed last; ``matches`` the names announced last."""

    status: str  # "found" | "no_match" | "no_input"
    number: str = ""
    name: str = ""
    attempts: int = 0
    source: str = "dtmf"
    letters: str = ""
    matches: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""  # found: speech/dtmf; otherwise: none, too_many, not_chosen, no_input, unknown

    @property
    def found(self) -> bool:
        return self.status == "found"


#: What ends a directory try without a choice (DirectoryResult.reason, DirectoryMark.after).
TryEnd = Literal["no_input", "none", "too_many", "not_chosen"]


class DirectoryMark(BaseModel):
    """Where a directory (``Call.directory``) is, as a plain value: try ``number`` is starting,
    ``after`` what ended the try before (its feedback prompt leads this one), and what that
    try heard (``source``, ``letters``, ``matches``: the result if no later try hears more).
    A directory started at a mark (another worker resuming the call) has only the tries left."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=2)
    after: TryEnd
    source: str = "dtmf"
    letters: str = ""
    matches: list[dict[str, str]] = Field(default_factory=list)


# A prompt: an audio file, {"say": text, "voice": ...}, or a list of those played in order.
Prompt = str | Path | Mapping[str, Any] | Sequence[str | Path | Mapping[str, Any]]


# The fields a flow step keeps of each Call result (a YAML step's ``last``, a call record's step).
_STEP_FIELDS: dict[type, tuple[str, ...]] = {
    PlayResult: ("completed", "interrupted_by"),
    GatherResult: ("status", "digits", "terminator", "attempts", "source", "transcript", "confidence", "choice",
                   "reason", "speech_error"),  # gather and menu keep them all
    TransferResult: ("status", "reason", "destination", "pbx_error"),
    RecordResult: ("path", "duration", "reason", "empty"),
    DirectoryResult: ("status", "number", "name", "attempts", "source", "letters", "matches", "reason"),
}


def step_result(result: Any) -> dict[str, Any] | None:
    """A Call result as a flow step records it: its plain fields (a path as text), or None for
    anything that is not a play, gather/menu, transfer or record result."""
    keep = next((_STEP_FIELDS[t] for t in type(result).__mro__ if t in _STEP_FIELDS), None)
    if keep is None:  # a result type elsewhere that declares its step fields (ivr.call.pbx_view)
        keep = getattr(type(result), "STEP_FIELDS", None)
    if keep is None:  # (by class, subclasses included: a flow's own or a test's result types)
        return None
    out = {k: getattr(result, k) for k in keep}
    if isinstance(out.get("path"), Path):
        out["path"] = str(out["path"])
    return out


# A failed delivery's reason (3CX DivertReason names, case and "_" ignored) -> the result status.
_FAILURE_STATUS = {"phonebusy": "busy", "busy": "busy", "noanswer": "no_answer",
                   "phonenotregistered": "not_registered", "notregistered": "not_registered"}


def failure_status(reason: str) -> str:
    """``PhoneBusy`` -> ``busy``, ``NoAnswer`` -> ``no_answer``, ``PhoneNotRegistered`` ->
    ``not_registered``; anything else ``failed``. Transfers and dialling read reasons alike."""
    return _FAILURE_STATUS.get(str(reason).replace("_", "").lower(), "failed")
