"""The emulated PBX's data: DNs, legs (participants), calls, open audio streams.

Behaviour (routing, offers, hangups) lives in ``switch.py``; this module only holds state
and renders it as wire models.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ivr.pbx.models import DeviceInfo, DNInfo, DNType, ParticipantInfo

from .media import RATE, Arrivals, Heard, Voice


class ApiError(Exception):
    """An error answer: HTTP status plus a one-line message naming what and where."""

    def __init__(self, status: int, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error or _ERROR_NAMES.get(status, "error")

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.message}


_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    424: "failed_dependency",
}


def device_id_for(dn: str, host_address: str, index: int = 0) -> str:
    """A stable SIP device id like ``sip:800@127.0.0.1:5483;rinstance=5f0c...`` (one per
    device of the DN: ``index`` 0 is its first)."""
    seed = f"emulator-{dn}" if index == 0 else f"emulator-{dn}-{index}"
    rinstance = hashlib.sha1(seed.encode()).hexdigest()[:16]
    return f"sip:{dn}@{host_address};rinstance={rinstance}"


@dataclass(eq=False)
class Device:
    """A device registered on a DN: its wire info and whether it can be answered remotely."""

    info: DeviceInfo
    direct_control: bool = False


@dataclass(eq=False)
class Dn:
    """A DN the API client controls (the route point) or monitors (extensions, queues, IVRs)."""

    dn: str
    type: str
    devices: list[Device]
    behaviour: str | None = None  # extensions: answer | busy | no_answer
    legs: dict[int, Leg] = field(default_factory=dict)
    waiting: list[Waiting] = field(default_factory=list)  # queues: the calls waiting here, oldest first

    @property
    def device(self) -> DeviceInfo:
        """The first device (the one calls from the DN itself use)."""
        return self.devices[0].info

    def find_device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.info.device_id == device_id), None)

    def info(self) -> DNInfo:
        return DNInfo(
            dn=self.dn,
            type=self.type,
            devices=[d.info for d in self.devices],
            participants=[leg.info() for leg in self.legs.values()],
        )


@dataclass
class Party:
    """The other side of a leg, as that leg sees it."""

    name: str = ""
    dn: str = ""
    caller_id: str = ""
    did: str = ""
    dn_type: str = DNType.NONE


class StreamHandle:
    """An open audio stream on a leg, so the PBX can end or cut it.

    ``end("end")`` finishes it cleanly (leg gone); ``end("abort")`` closes the connection
    without a proper end (token revoked, truncate fault).
    """

    def __init__(self, kind: str, leg: Leg, abort: Callable[[], None]) -> None:
        self.kind = kind  # "get" (PBX -> IVR) or "post" (IVR -> PBX)
        self.leg = leg
        self.end_mode: str | None = None
        self.ended = asyncio.Event()
        self.on_end: Callable[[], None] | None = None  # wakes a handler waiting on its stream
        self._abort = abort

    def cut_by_revocation(self) -> None:
        """Called when the token the stream was opened with is revoked."""
        self.end("abort")

    def end(self, mode: str = "end") -> None:
        if self.end_mode is not None:
            return
        self.end_mode = mode
        self.ended.set()
        if self.on_end is not None:
            self.on_end()
        if mode == "abort":
            self._abort()


@dataclass(eq=False)
class Leg:
    """A participant: one leg of a call on one of our DNs."""

    id: int
    legid: int
    dn: Dn
    call: Call
    status: str
    party: Party
    device_id: str = ""
    direct_control: bool = False  # of the leg's device
    originated_by: tuple[str, str] = ("", DNType.NONE)
    referred_by: tuple[str, str] = ("", DNType.NONE)
    on_behalf_of: tuple[str, str] = ("", DNType.NONE)
    attached: dict[str, Any] = field(default_factory=dict)
    gone: bool = False
    streams: set[StreamHandle] = field(default_factory=set)

    @property
    def path(self) -> str:
        return f"/callcontrol/{self.dn.dn}/participants/{self.id}"

    def info(self) -> ParticipantInfo:
        extra: dict[str, Any] = {"attacheddata": dict(self.attached)} if self.attached else {}
        return ParticipantInfo(
            id=self.id,
            status=self.status,
            dn=self.dn.dn,
            party_caller_name=self.party.name,
            party_dn=self.party.dn,
            party_caller_id=self.party.caller_id,
            party_did=self.party.did,
            party_dn_type=self.party.dn_type,
            device_id=self.device_id,
            direct_control=self.direct_control,
            originated_by_dn=self.originated_by[0],
            originated_by_type=self.originated_by[1],
            referred_by_dn=self.referred_by[0],
            referred_by_type=self.referred_by[1],
            on_behalf_of_dn=self.on_behalf_of[0],
            on_behalf_of_type=self.on_behalf_of[1],
            callid=self.call.callid,
            legid=self.legid,
            **extra,
        )


@dataclass(eq=False)
class Offer:
    """A pending delivery of a call to a destination (routeto/transferto/divert/makecall)."""

    kind: str
    destination: str
    origin: Leg  # the leg the action was called on (or the makecall leg)
    target: Leg | None  # the ringing leg at an extension; None for an external number
    timeout: float
    task: asyncio.Task[None] | None = None
    # A blocking offer's request waits on this: the 200 answer, or the OfferFailed to raise.
    answer: asyncio.Future[Any] | None = None


@dataclass(eq=False)
class Ringing:
    """A call ringing at an extension's devices (one leg per device) until one answers."""

    dn: Dn
    legs: list[Leg]
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Waiting:
    """A call waiting at a queue: its leg on the queue's DN, since when (loop clock), and the
    legs ringing at agents for it (only the oldest call of a queue rings agents)."""

    call: Call
    queue: Dn
    leg: Leg
    since: float
    ringing: list[Leg] = field(default_factory=list)
    declined: set[str] = field(default_factory=set)  # agents who rejected it this round
    round_timer: asyncio.TimerHandle | None = None  # ends a ring round after the queue's RingTimeout


@dataclass(eq=False)
class Call:
    """One call: the far party (a person), our legs, its audio and its log."""

    callid: int
    t0: float  # loop clock at creation
    direction: str  # inbound | outbound
    far: Party  # the person the control API speaks for
    caller: str
    to: str
    state: str = "ringing"  # dialing | ringing | connected | ended
    holder: Leg | None = None  # our leg that owns the call now
    location: str = ""  # where the call is: a DN, or an external number after routing out
    offer: Offer | None = None
    ringing: Ringing | None = None  # a call straight to an extension, not yet answered
    waiting: Waiting | None = None  # the call waits at a queue for an agent
    held: bool = False
    legs: dict[int, Leg] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    voice: Voice = field(default_factory=Voice)
    heard: Heard = field(default_factory=Heard)
    arrivals: Arrivals = field(default_factory=Arrivals)  # when the IVR's audio chunks came in
    stall_until: float = 0.0
    ended_at: float | None = None
    status_at: float | None = None  # loop time its state last changed (None: at creation)

    def sample_at(self, t: float) -> int:
        """Sample index on this call's timeline for loop time ``t``."""
        return int(round((t - self.t0) * RATE))

    def streams(self, kind: str | None = None) -> list[StreamHandle]:
        return [s for leg in self.legs.values() for s in leg.streams if kind is None or s.kind == kind]
