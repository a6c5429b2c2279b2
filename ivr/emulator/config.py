"""Configuration of the 3CX emulator: one pydantic model, plus the extension-list parser."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Behaviour = Literal["answer", "busy", "no_answer", "not_registered"]
"""What an extension does when a call is offered to it (not_registered: no device is registered)."""

BEHAVIOURS: tuple[str, ...] = ("answer", "busy", "no_answer", "not_registered")

TransferAnswer = Literal["blocking", "dialing"]
"""When routeto/divert/transferto answer: once delivered or failed, or at once with ``Dialing``."""

TransferFailure = Literal["error", "failed"]
"""How a failed delivery is answered: an HTTP error status, or 200 with ``finalstatus: Failed``."""

TRANSFER_SETTINGS: tuple[str, ...] = ("transfer_answer", "transfer_failure", "transfer_error_status")
"""The config fields that may change while the emulator runs (``PUT /_emulator/settings``)."""


def _default_extensions() -> dict[str, str]:
    return {str(n): "answer" for n in range(100, 106)}


class EmulatorConfig(BaseModel):
    """Everything that shapes the emulated PBX. All times are in seconds."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = "900"
    client_secret: str = Field(default="secret", repr=False)  # never printed
    route_point: str = "800"
    extensions: dict[str, Behaviour] = Field(default_factory=_default_extensions)
    ring_seconds: float = Field(default=0.5, ge=0)
    """How long an answering extension (or an external number) rings before it answers."""
    no_answer_timeout: float = Field(default=20, gt=0)
    """How long an offer to a no_answer extension rings when the request gives no ``timeout``."""
    token_lifetime: float = Field(default=3600, gt=0)
    """JWT ``exp - iat``; the token answer still says ``expires_in: 60`` like real servers."""
    revoke_previous_tokens: bool = True
    """A new token revokes the client's previous ones and cuts audio streams opened with them."""
    inbound_status: Literal["Connected", "Ringing"] = "Connected"
    repeat_upserts: bool = False
    """Re-send an Upsert for every participant every ``repeat_interval`` s, like real servers."""
    repeat_interval: float = Field(default=0.75, gt=0)
    external_min_digits: int = Field(default=5, ge=1)
    """A destination of at least this many digits (optional leading +) that is no extension is an
    external number: it answers after ``ring_seconds``. Shorter unknown numbers are NotFound."""
    transfer_answer: TransferAnswer = "blocking"
    """``blocking``: routeto/divert/transferto answer when the destination answers (200 ``Success``)
    or every destination failed, as 3CX documents ``RouteToAsync``; ``dialing``: they answer at
    once with 200 ``Dialing`` and the outcome follows as events."""
    transfer_failure: TransferFailure = "error"
    """A failed delivery is answered with ``transfer_error_status`` carrying the usual result body
    (``error``), or with HTTP 200 and ``finalstatus: Failed`` (``failed``)."""
    transfer_error_status: int = Field(default=400, ge=400, le=599)
    """The HTTP status of a failed delivery when ``transfer_failure`` is ``error``."""
    cancel_delay: float = Field(default=0.1, ge=0, le=10)
    """When the caller hangs up while an offer rings, the destination's ringing leg is removed
    this much later (the PBX cancels the ringing phone after the caller's hang-up), so a client
    sees its own leg go first while the destination still rings."""
    host_address: str = "127.0.0.1:5483"
    """The ``host:port`` written into SIP device ids."""

    @field_validator("route_point")
    @classmethod
    def _dn_ok(cls, v: str) -> str:
        if not v or "/" in v or v.strip() != v:
            raise ValueError(f"route_point {v!r}: must be a non-empty DN without '/' or spaces")
        return v

    @field_validator("extensions")
    @classmethod
    def _ext_ok(cls, v: dict[str, str]) -> dict[str, str]:
        for dn in v:
            if not dn or "/" in dn or dn.strip() != dn:
                raise ValueError(f"extension {dn!r}: must be a non-empty DN without '/' or spaces")
        return v

    @model_validator(mode="after")
    def _rp_not_extension(self) -> EmulatorConfig:
        if self.route_point in self.extensions:
            raise ValueError(f"route_point {self.route_point!r} is also listed as an extension")
        return self


_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_extensions(spec: str) -> list[str]:
    """Parse ``"100-105,200,ROUTER2"`` into a list of DNs (ranges keep their zero padding).

    Raises ValueError naming the bad item.
    """
    out: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        m = _RANGE.match(item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo > 10000:
                raise ValueError(f"extension range {item!r}: must be low-high with at most 10000 DNs")
            width = len(m.group(1))
            out.extend(str(n).zfill(width) for n in range(lo, hi + 1))
        elif "/" in item or " " in item:
            raise ValueError(f"extension {item!r}: DNs may not contain '/' or spaces")
        else:
            out.append(item)
    if not out:
        raise ValueError(f"extensions {spec!r}: no DN given")
    return out
