"""Fault injection state (``POST /_emulator/faults``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FailNext(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1)
    status: int = Field(ge=400, le=599)


class StallStream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callid: int
    seconds: float = Field(gt=0, le=3600)


class TruncateStream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    callid: int


class XapiUnavailable(BaseModel):
    """The Configuration API answers ``status`` for ``seconds`` (0 ends it); Call Control keeps working."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=86400)
    status: int = Field(default=503, ge=400, le=599)


class FaultRequest(BaseModel):
    """Body of ``POST /_emulator/faults``: exactly one field set."""

    model_config = ConfigDict(extra="forbid")
    close_event_sockets: bool | None = None
    revoke_tokens: bool | None = None
    fail_next: FailNext | None = None
    stall_stream: StallStream | None = None
    truncate_stream: TruncateStream | None = None
    xapi_unavailable: XapiUnavailable | None = None

    def kind(self) -> str:
        """The one fault requested; ValueError if none or several."""
        set_ = [name for name, value in self if value not in (None, False)]
        if len(set_) != 1:
            raise ValueError(f"faults body: give exactly one fault, got {set_ or 'none'}")
        return set_[0]


class FailNextCounter:
    """Fails the next N /callcontrol REST requests with a chosen status."""

    def __init__(self) -> None:
        self.remaining = 0
        self.status = 503

    def arm(self, count: int, status: int) -> None:
        self.remaining, self.status = count, status

    def take(self) -> int | None:
        """The status to fail this request with, or None."""
        if self.remaining <= 0:
            return None
        self.remaining -= 1
        return self.status
