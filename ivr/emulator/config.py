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

DeviceKind = Literal["desk", "app", "web"]
"""A desk phone, the 3CX app on a phone, or the web client: each registers as its own device."""

DEVICE_KINDS: tuple[str, ...] = ("desk", "app", "web")


def _default_extensions() -> dict[str, Behaviour]:
    return {str(n): "answer" for n in range(100, 106)}


class DeviceConfig(BaseModel):
    """One device registered on an extension."""

    model_config = ConfigDict(extra="forbid")

    kind: DeviceKind = "desk"
    direct_control: bool = False
    """The device can be answered remotely (uaCSTA): ``answer`` on its ringing leg works."""


def _default_devices() -> list[DeviceConfig]:
    return [DeviceConfig()]


def _dn_problem(dn: str) -> str | None:
    if not dn or "/" in dn or dn.strip() != dn or " " in dn:
        return f"DN {dn!r}: must be non-empty, without '/' or spaces"
    return None


class EmulatorConfig(BaseModel):
    """Everything that shapes the emulated PBX. All times are in seconds."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = "900"
    client_secret: str = Field(default="secret", repr=False)  # never printed
    route_point: str = "800"
    extensions: dict[str, Behaviour] = Field(default_factory=_default_extensions)
    answer_audio: dict[str, str] = Field(default_factory=dict)
    """Number -> WAV file the far end says when a call the client dialled there is answered
    (a voicemail greeting, a person's "hello?"): answering-machine detection and campaigns."""
    ring_seconds: float = Field(default=0.5, ge=0)
    """How long an answering extension (or an external number) rings before it answers."""
    no_answer_timeout: float = Field(default=20, gt=0)
    """How long an offer to a no_answer extension rings when the request gives no ``timeout``."""
    token_lifetime: float = Field(default=3600, gt=0)
    """JWT ``exp - iat``; the token answer still says ``expires_in: 60`` like real servers."""
    revoke_previous_tokens: bool = True
    """A new token revokes the client's previous ones and cuts audio streams opened with them."""
    inbound_status: Literal["Connected", "Ringing"] = "Connected"
    devices: list[DeviceConfig] = Field(default_factory=_default_devices, min_length=1)
    """The devices of every extension not in ``extension_devices`` (the first one rings first)."""
    extension_devices: dict[str, list[DeviceConfig]] = Field(default_factory=dict)
    """Devices per extension, e.g. ``{"100": [desk with direct control, app, web]}``."""
    queues: list[str] = Field(default_factory=list)
    """Monitored DNs of type ``Wqueue`` (one device each)."""
    ivrs: list[str] = Field(default_factory=list)
    """Monitored DNs of type ``Wivr`` (one device each)."""
    repeat_upserts: bool = True
    """Re-send an Upsert for every participant every ``repeat_interval`` s while any exists,
    like real servers (~750 ms); False sends each change once."""
    repeat_interval: float = Field(default=0.75, gt=0)
    inbound_did: Literal["dialled", "to"] = "dialled"
    """``party_did`` of an external call: ``dialled`` = the DID the caller dialled, else empty
    (as captured on real V20 PBXs); ``to`` = the dialled DN when no DID is given."""
    media_on_any_leg: bool = False
    """False: audio streams only on the route point's legs; any other leg (a monitored
    extension's ordinary call, a queue's) answers 424 like real PBXs. True: on every leg."""
    accept_empty_action_body: bool = True
    """An action POST with no body (and no Content-Type) counts as ``{}``, like real PBXs;
    False answers 400."""
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

    @field_validator("queues", "ivrs")
    @classmethod
    def _dns_ok(cls, v: list[str]) -> list[str]:
        for dn in v:
            problem = _dn_problem(dn)
            if problem:
                raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _dns_distinct(self) -> EmulatorConfig:
        seen: dict[str, str] = {self.route_point: "the route_point"}
        for kind, dns in (("extensions", list(self.extensions)), ("queues", self.queues), ("ivrs", self.ivrs)):
            for dn in dns:
                if dn in seen:
                    raise ValueError(f"{kind}: DN {dn!r} is also {seen[dn]}")
                seen[dn] = f"listed in {kind}"
        for dn, devices in self.extension_devices.items():
            if dn not in self.extensions:
                raise ValueError(f"extension_devices: {dn!r} is not in extensions")
            if not devices:
                raise ValueError(f"extension_devices: {dn!r} needs at least one device")
        return self

    def devices_of(self, extension: str) -> list[DeviceConfig]:
        """The devices registered on ``extension``."""
        return self.extension_devices.get(extension, self.devices)


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


def parse_devices(spec: str) -> tuple[str | None, list[DeviceConfig]]:
    """Parse ``"desk:direct,app,web"`` or ``"100=desk:direct,app"`` into (extension or None,
    devices). ``:direct`` marks a device that can be answered remotely. ValueError names the
    bad item."""
    ext, sep, rest = spec.partition("=")
    if not sep:
        ext, rest = "", spec
    ext = ext.strip()
    devices: list[DeviceConfig] = []
    for raw in rest.split(","):
        item = raw.strip()
        if not item:
            continue
        kind, _, flag = item.partition(":")
        if kind not in DEVICE_KINDS:
            raise ValueError(f"device {item!r}: kind must be one of {', '.join(DEVICE_KINDS)}")
        if flag not in ("", "direct"):
            raise ValueError(f"device {item!r}: only ':direct' may follow the kind")
        devices.append(DeviceConfig(kind=kind, direct_control=flag == "direct"))
    if not devices:
        raise ValueError(f"devices {spec!r}: no device given")
    return ext or None, devices
