"""Pydantic models of every object on the 3CX V20 Call Control wire.

Shared by the client (``ivr.pbx``) and the emulator (``ivr.emulator``) so the two can never
drift apart in shape. Models are liberal in what they accept: unknown fields are kept,
enumerations seen on real servers are plain strings, and ``finalstatus`` may be a string
(real servers) or an int (the official TypeScript types).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WireModel(BaseModel):
    """Base of all wire models: keep unknown fields, tolerate missing optional ones."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- authentication -------------------------------------------------------------------------


class TokenResponse(WireModel):
    token_type: str = "Bearer"
    expires_in: int | None = None
    access_token: str
    refresh_token: str | None = None


class AuthErrorBody(WireModel):
    error: str = "unauthorized"
    error_description: str = "The request requires valid user authentication."


# --- entities -------------------------------------------------------------------------------


class DeviceInfo(WireModel):
    dn: str = ""
    device_id: str = ""
    user_agent: str = ""

    @field_validator("dn", mode="before")
    @classmethod
    def _dn_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class ParticipantStatus:
    """Statuses confirmed on real servers. Any other string is accepted as well."""

    DIALING = "Dialing"
    RINGING = "Ringing"
    CONNECTED = "Connected"


class ParticipantInfo(WireModel):
    id: int
    status: str = ""
    dn: str = ""
    party_caller_name: str = ""
    party_dn: str = ""
    party_caller_id: str = ""
    party_did: str = ""
    party_dn_type: str = "None"
    device_id: str = ""
    direct_control: bool = False
    originated_by_dn: str = ""
    originated_by_type: str = "None"
    referred_by_dn: str = ""
    referred_by_type: str = "None"
    on_behalf_of_dn: str = ""
    on_behalf_of_type: str = "None"
    callid: int = 0
    legid: int = 0

    @field_validator(
        "dn",
        "party_dn",
        "party_caller_id",
        "party_did",
        "originated_by_dn",
        "referred_by_dn",
        "on_behalf_of_dn",
        mode="before",
    )
    @classmethod
    def _str_or_none(cls, v: Any) -> Any:
        if v is None:
            return ""
        return str(v) if isinstance(v, int) else v

    @field_validator("party_caller_name", "device_id", mode="before")
    @classmethod
    def _none_as_empty(cls, v: Any) -> Any:
        return "" if v is None else v


class DNType:
    """DN type strings seen on real servers. Any other string is accepted as well."""

    ROUTE_POINT = "Wroutepoint"
    EXTENSION = "Wextension"
    IVR = "Wivr"
    QUEUE = "Wqueue"
    EXTERNAL_LINE = "Wexternalline"
    SPECIAL_MENU = "Wspecialmenu"
    NONE = "None"


class DNInfo(WireModel):
    dn: str
    type: str = "None"
    devices: list[DeviceInfo] = Field(default_factory=list)
    participants: list[ParticipantInfo] = Field(default_factory=list)

    @field_validator("dn", mode="before")
    @classmethod
    def _dn_as_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("devices", "participants", mode="before")
    @classmethod
    def _none_as_list(cls, v: Any) -> Any:
        return [] if v is None else v


# --- requests and results -------------------------------------------------------------------


class FinalStatus:
    """``finalstatus`` values. Real servers send strings; the TypeScript types an int."""

    FAILED = "Failed"
    REJECTED = "Rejected"
    SUCCESS = "Success"

    _BY_INT: ClassVar[dict[int, str]] = {-1: "Failed", 0: "Rejected", 1: "Success"}

    @classmethod
    def normalise(cls, value: str | int | None) -> str:
        if isinstance(value, bool):  # bool is an int; never a status
            return str(value)
        if isinstance(value, int):
            return cls._BY_INT.get(value, str(value))
        return value or ""


class MakeCallRequest(WireModel):
    destination: str
    reason: str | None = None
    timeout: int | None = None
    attacheddata: dict[str, str] | None = None


class ActionRequest(WireModel):
    """Body of ``POST /callcontrol/{dn}/participants/{id}/{action}``."""

    destination: str | None = None
    reason: str | None = None
    timeout: int | None = None
    attacheddata: dict[str, str] | None = None


class CallControlResultResponse(WireModel):
    finalstatus: str | int = FinalStatus.SUCCESS
    reason: str | int | None = None
    reasontext: str | None = None
    result: ParticipantInfo | None = None

    @property
    def status(self) -> str:
        """``finalstatus`` as a string, whichever form the server sent."""
        return FinalStatus.normalise(self.finalstatus)

    @property
    def ok(self) -> bool:
        return self.status == FinalStatus.SUCCESS


class Action:
    """Participant actions (the last path segment)."""

    ANSWER = "answer"
    DROP = "drop"
    DIVERT = "divert"
    ROUTETO = "routeto"
    TRANSFERTO = "transferto"
    ATTACH_PARTICIPANT_DATA = "attach_participant_data"

    ALL = (ANSWER, DROP, DIVERT, ROUTETO, TRANSFERTO, ATTACH_PARTICIPANT_DATA)


# --- WebSocket events -----------------------------------------------------------------------


class EventType(IntEnum):
    UPSERT = 0
    REMOVE = 1
    DTMF_STRING = 2
    PROMPT_PLAYBACK_FINISHED = 3
    RESPONSE = 4


class WsEvent(WireModel):
    event_type: int
    entity: str = ""
    attached_data: dict[str, Any] | None = None

    @property
    def kind(self) -> EventType | None:
        """The known event type, or None for a type this client does not know."""
        try:
            return EventType(self.event_type)
        except ValueError:
            return None

    @property
    def dtmf_digits(self) -> str:
        """Digits of a DTMFstring event (one or several), "" otherwise."""
        data = self.attached_data or {}
        value = data.get("dtmf_input", "")
        return str(value) if value is not None else ""


class WsMessage(WireModel):
    sequence: int
    event: WsEvent


class WsRequest(WireModel):
    """A request sent over the socket (optional on real servers)."""

    RequestID: str
    Path: str
    RequestData: str = ""


# --- entity paths ---------------------------------------------------------------------------


def participant_path(dn: str, participant_id: int) -> str:
    return f"/callcontrol/{dn}/participants/{participant_id}"


def parse_entity(entity: str) -> tuple[str, str, str] | None:
    """Split ``/callcontrol/{dn}/{kind}/{id}`` into (dn, kind, id); None if not that shape.

    ``kind`` is ``participants`` or ``devices``. Device ids arrive URL-encoded.
    """
    from urllib.parse import unquote

    parts = entity.strip("/").split("/")
    if len(parts) == 4 and parts[0] == "callcontrol" and parts[2] in ("participants", "devices"):
        return unquote(parts[1]), parts[2], unquote(parts[3])
    return None
