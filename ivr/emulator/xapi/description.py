"""The PBX description file (``--pbx-config``): one YAML file that says what the emulated PBX
holds - users and their extensions, departments, system hours and holidays, queues, ring
groups. The Call Control side takes its extensions from the same users (``extensions()``), the
Configuration API (``/xapi/v1``) serves all of it. docs/pbx-config.md documents the format.

Hours use the ``hours`` step's syntax (ivr/pbx/hours.py): ``{mon-fri: "08:00-18:00"}``,
holidays ``"2026-12-25"``, ``"12-25"`` (every year) or ``"2026-12-24..2026-12-26"``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ivr.pbx.hours import HoursError, parse_days, parse_ranges, parse_schedule
from ivr.pbx.xapi.models import GroupHoursMode
from ivr.pbx.xapi.timezones import UnknownTimeZone, to_iana

# Numbers in YAML may be written bare (101): they are DN strings everywhere.
Number = Annotated[str, BeforeValidator(str)]
Numbers = Annotated[list[str], BeforeValidator(lambda v: [str(x) for x in v] if isinstance(v, list) else v)]

__all__ = ["PbxDescription", "PbxDescriptionError", "load_description"]

Weekly = dict[str, str | list[str] | None]
Answer = Literal["answer", "busy", "no_answer", "not_registered"]
QueueStatus = Literal["LoggedIn", "LoggedOut"]
DESTINATION_TYPES = (
    "None", "VoiceMail", "Extension", "Queue", "RingGroup", "IVR", "External", "Fax", "Boomerang", "Deflect",
    "VoiceMailOfDestination", "Callback", "RoutePoint", "ProceedWithNoExceptions",
)


class PbxDescriptionError(ValueError):
    """The file cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_weekly(v: Weekly | None) -> Weekly | None:
    if v is None:
        return v
    try:
        for day, ranges in v.items():
            parse_days(str(day))
            parse_ranges(ranges)
    except HoursError as exc:
        raise ValueError(str(exc)) from None
    return v


def _check_tz(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        to_iana(v)
    except UnknownTimeZone as exc:
        raise ValueError(str(exc)) from None
    return v


class HolidaySpec(_Strict):
    """A holiday: a day, a range or a yearly day, optionally only part of the day."""

    name: str = ""
    date: str  # hours syntax: YYYY-MM-DD, MM-DD (every year), YYYY-MM-DD..YYYY-MM-DD
    hours: str | None = None  # "HH:MM-HH:MM": only this part of the day is the holiday
    prompt: str | None = None

    @field_validator("date")
    @classmethod
    def _date_ok(cls, v: str) -> str:
        try:
            parse_schedule("UTC", {}, [v])
        except HoursError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("hours")
    @classmethod
    def _hours_ok(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ranges = parse_ranges(v)
            except HoursError as exc:
                raise ValueError(str(exc)) from None
            if len(ranges) != 1 or ranges[0][1] > 24 * 60:
                raise ValueError(f"holiday hours {v!r}: one range within the day, like \"09:00-12:00\"")
        return v


def _holiday(v: Any) -> Any:
    return {"date": v} if isinstance(v, str) else v


class SystemSpec(_Strict):
    timezone: str = "Europe/Berlin"  # IANA or Windows name
    language: str = "ENG"
    hours: Weekly = Field(default_factory=lambda: dict[str, str | list[str] | None]({"mon-fri": "08:00-18:00"}))
    break_: Weekly | None = Field(default=None, alias="break")
    holidays: list[HolidaySpec] = Field(default_factory=list)

    _w = field_validator("hours", "break_")(_check_weekly)
    _tz = field_validator("timezone")(_check_tz)

    @field_validator("holidays", mode="before")
    @classmethod
    def _hol(cls, v: Any) -> Any:
        return [_holiday(x) for x in v] if isinstance(v, list) else v


class UserSpec(_Strict):
    number: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    mobile: str = ""
    language: str = ""
    presence: str = "Available"  # CurrentProfileName: Available, Away, Out of office, ...
    registered: bool = True  # IsRegistered: a phone is registered
    queue_status: QueueStatus = "LoggedIn"
    hidden: bool = False  # HideInPhonebook
    enabled: bool = True
    answer: Answer = "answer"  # what the extension does when a call rings it (Call Control)

    @field_validator("number")
    @classmethod
    def _number_ok(cls, v: str) -> str:
        v = str(v)
        if not v or "/" in v or v.strip() != v:
            raise ValueError(f"user number {v!r}: a non-empty DN without '/' or spaces")
        return v


class DestinationSpec(_Strict):
    type: str = "None"
    number: str = ""
    external: str = ""
    prompt: str = ""

    @field_validator("type")
    @classmethod
    def _type_ok(cls, v: str) -> str:
        if v not in DESTINATION_TYPES:
            raise ValueError(f"route type {v!r}: one of {', '.join(DESTINATION_TYPES)}")
        return v


class RoutesSpec(_Strict):
    office: DestinationSpec | None = None
    out_of_office: DestinationSpec | None = None
    break_: DestinationSpec | None = Field(default=None, alias="break")
    holiday: DestinationSpec | None = None


class ForcedSpec(_Strict):
    mode: str
    until: datetime | None = None  # OverrideExpiresAt; aware, or UTC

    @field_validator("mode")
    @classmethod
    def _mode_ok(cls, v: str) -> str:
        if v not in GroupHoursMode.ALL:
            raise ValueError(f"forced mode {v!r}: one of {', '.join(GroupHoursMode.ALL)}")
        return v


class DepartmentSpec(_Strict):
    name: str
    number: str | None = None
    hours: Literal["system"] | Weekly = "system"  # "system": follows the system's office hours
    break_: Literal["system"] | Weekly | None = Field(default=None, alias="break")
    holidays: list[HolidaySpec] | None = None  # own holidays (instead of the system's)
    timezone: str | None = None
    language: str | None = None
    forced: ForcedSpec | None = None
    members: Numbers = Field(default_factory=list)
    routes: RoutesSpec = Field(default_factory=RoutesSpec)

    _tz = field_validator("timezone")(_check_tz)

    @field_validator("hours", "break_")
    @classmethod
    def _weekly(cls, v: Any) -> Any:
        return v if v == "system" else _check_weekly(v)

    @field_validator("forced", mode="before")
    @classmethod
    def _forced(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @field_validator("holidays", mode="before")
    @classmethod
    def _hol(cls, v: Any) -> Any:
        return [_holiday(x) for x in v] if isinstance(v, list) else v


class QueueSpec(_Strict):
    number: Number
    name: str = ""
    polling_strategy: str = "RingAll"
    agents: Numbers = Field(default_factory=list)
    max_callers: int = Field(default=10, ge=0)
    ring_timeout: int = Field(default=20, ge=0)
    master_timeout: int = Field(default=0, ge=0)


class RingGroupSpec(_Strict):
    number: Number
    name: str = ""
    strategy: str = "RingAll"
    ring_time: int = Field(default=20, ge=0)
    members: Numbers = Field(default_factory=list)


class PbxDescription(_Strict):
    """The whole file."""

    version: str = "20.0.10.000"  # X-3CX-Version
    system: SystemSpec = Field(default_factory=SystemSpec)
    users: list[UserSpec] = Field(default_factory=list)
    departments: list[DepartmentSpec] = Field(default_factory=list)
    queues: list[QueueSpec] = Field(default_factory=list)
    ring_groups: list[RingGroupSpec] = Field(default_factory=list)

    @field_validator("users", mode="before")
    @classmethod
    def _user_numbers(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{**x, "number": str(x["number"])} if isinstance(x, dict) and "number" in x else x for x in v]
        return v

    @model_validator(mode="after")
    def _references(self) -> PbxDescription:
        numbers: dict[str, str] = {}
        for kind, items in (("user", self.users), ("queue", self.queues), ("ring group", self.ring_groups)):
            for item in items:
                if item.number in numbers:
                    other = numbers[item.number]
                    raise ValueError(f"number {item.number!r} is given to two {kind}s" if other == kind
                                     else f"number {item.number!r} is both a {other} and a {kind}")
                numbers[item.number] = kind
        users = {u.number for u in self.users}
        names: set[str] = set()
        for d in self.departments:
            key = d.name.strip().casefold()
            if key in names:
                raise ValueError(f"department {d.name!r} is listed twice")
            names.add(key)
            for m in d.members:
                if m not in users:
                    raise ValueError(f"department {d.name!r}: member {m!r} is not a user")
        for q in self.queues:
            for a in q.agents:
                if a not in users:
                    raise ValueError(f"queue {q.number!r}: agent {a!r} is not a user")
        for r in self.ring_groups:
            for m in r.members:
                if m not in users:
                    raise ValueError(f"ring group {r.number!r}: member {m!r} is not a user")
        return self

    def extensions(self) -> dict[str, str]:
        """The Call Control extensions: every user's number and what it does when rung."""
        return {u.number: u.answer for u in self.users}


def _position(root: Any, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """1-based (line, col) of the deepest node of ``loc`` in the parsed YAML, if known."""
    node, pos = root, None
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            line, col = node.lc.key(key)
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line, col = node.lc.item(key)
        else:
            break
        pos, node = (line + 1, col + 1), node[key]
    return pos


def load_description(path: str | Path) -> PbxDescription:
    """Read and check a PBX description; :class:`PbxDescriptionError` with ``file:line:col: where: what``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PbxDescriptionError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = exc.problem_mark if isinstance(exc, MarkedYAMLError) else None
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = (exc.problem if isinstance(exc, MarkedYAMLError) else None) or "not valid YAML"
        raise PbxDescriptionError(f"{p}{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PbxDescriptionError(f"{p}: the file must be a mapping (system:, users:, departments: ...)")
    try:
        return PbxDescription.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        pos = _position(data, loc)
        where = f"{p}:{pos[0]}:{pos[1]}" if pos else str(p)
        dotted = ".".join(str(x) for x in loc)
        msg = first["msg"].removeprefix("Value error, ")
        raise PbxDescriptionError(f"{where}: {dotted}: {msg}" if dotted else f"{where}: {msg}") from None
