"""Typed models of the Configuration API entities an IVR reads (``Pbx.*`` in swagger.yaml).

Liberal in what they accept: every field is optional, unknown fields are kept (``extra``),
enumerations are plain strings (a newer PBX may add values), and a value of the wrong shape
where only a hint is expected (a date that does not parse) reads as unknown (None) instead of
failing the whole list. The names are the API's own, so a field can be looked up in
swagger.yaml as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ActiveCall",
    "Destination",
    "ForwardingProfile",
    "Group",
    "GroupHoursMode",
    "Holiday",
    "OfficeHours",
    "Period",
    "Queue",
    "QueueAgent",
    "RingGroup",
    "RingGroupMember",
    "Route",
    "RuleHoursType",
    "Schedule",
    "User",
    "UserGroup",
]


class GroupHoursMode:
    """Values of ``Group.CurrentGroupHours`` (``Pbx.GroupHoursMode``): an admin's override."""

    DEFAULT = "Default"
    FORCE_OPENED = "ForceOpened"
    FORCE_CLOSED = "ForceClosed"
    FORCE_BREAK = "ForceBreak"
    FORCE_CUSTOM_OPERATOR = "ForceCustomOperator"
    FORCE_HOLIDAY = "ForceHoliday"
    ALL = (DEFAULT, FORCE_OPENED, FORCE_CLOSED, FORCE_BREAK, FORCE_CUSTOM_OPERATOR, FORCE_HOLIDAY)


class RuleHoursType:
    """Values of ``Schedule.Type`` (``Pbx.RuleHoursType``)."""

    ALL_HOURS = "AllHours"
    OFFICE_HOURS = "OfficeHours"  # follow the system's /OfficeHours
    OUT_OF_OFFICE_HOURS = "OutOfOfficeHours"
    SPECIFIC_HOURS = "SpecificHours"
    SPECIFIC_HOURS_EXCLUDING_HOLIDAYS = "SpecificHoursExcludingHolidays"
    OUT_OF_SPECIFIC_HOURS = "OutOfSpecificHours"
    OUT_OF_SPECIFIC_HOURS_INCLUDING_HOLIDAYS = "OutOfSpecificHoursIncludingHolidays"
    NEVER = "Never"
    BREAK_TIME = "BreakTime"


class XapiModel(BaseModel):
    """Base: unknown fields kept, names as the API spells them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _lenient_datetime(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


class Period(XapiModel):
    DayOfWeek: str | None = None  # Sunday .. Saturday
    Start: str | None = None  # "HH:MM:SS"
    Stop: str | None = None


class Schedule(XapiModel):
    Type: str | None = None  # RuleHoursType
    IgnoreHolidays: bool | None = None
    Periods: list[Period] = Field(default_factory=list)


class Holiday(XapiModel):
    Id: int | None = None
    Name: str | None = None
    Day: int | None = None
    Month: int | None = None
    Year: int | None = None  # 0 or None with IsRecurrent: every year
    DayEnd: int | None = None
    MonthEnd: int | None = None
    YearEnd: int | None = None
    IsRecurrent: bool | None = None
    TimeOfStartDate: str | None = None  # ISO-8601 duration after midnight, e.g. "PT9H"
    TimeOfEndDate: str | None = None
    HolidayPrompt: str | None = None


class OfficeHours(XapiModel):
    Hours: Schedule | None = None
    BreakTime: Schedule | None = None
    OfficeHolidays: list[Holiday] = Field(default_factory=list)
    TimeZoneId: str | None = None  # Windows zone name; see timezones.to_iana
    SystemLanguage: str | None = None


class Destination(XapiModel):
    Type: str | None = None
    Number: str | None = None
    To: str | None = None
    External: str | None = None
    Name: str | None = None


class Route(XapiModel):
    Route: Destination | None = None
    Prompt: str | None = None
    IsPromptEnabled: bool | None = None


class UserGroup(XapiModel):
    """A membership: a user in a group (``Users({Id})/Groups``, ``Groups({Id})/Members``)."""

    Id: int | None = None
    GroupId: int | None = None
    Name: str | None = None
    Number: str | None = None
    MemberName: str | None = None
    Rights: dict[str, Any] | None = None


class ForwardingProfile(XapiModel):
    Id: int | None = None
    Name: str | None = None
    CustomName: str | None = None
    CustomMessage: str | None = None


class User(XapiModel):
    Id: int | None = None
    Number: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    DisplayName: str | None = None
    EmailAddress: str | None = None
    Mobile: str | None = None
    HideInPhonebook: bool | None = None
    Enabled: bool | None = None
    Language: str | None = None
    CurrentProfileName: str | None = None  # the presence: one of ForwardingProfiles' names
    ForwardingProfiles: list[ForwardingProfile] = Field(default_factory=list)
    IsRegistered: bool | None = None  # False: no phone registered
    QueueStatus: str | None = None  # LoggedIn / LoggedOut
    Hours: Schedule | None = None
    BreakTime: Schedule | None = None
    Groups: list[UserGroup] = Field(default_factory=list)

    @property
    def name(self) -> str:
        """The name to show or say: DisplayName, else first and last name, else the number."""
        if self.DisplayName and self.DisplayName.strip():
            return self.DisplayName.strip()
        full = " ".join(p for p in (self.FirstName, self.LastName) if p and p.strip())
        return full or (self.Number or "")

    @property
    def listed(self) -> bool:
        """Shown in the directory: enabled and not hidden from the phonebook."""
        return self.Enabled is not False and self.HideInPhonebook is not True


class Group(XapiModel):
    """A department."""

    Id: int | None = None
    Number: str | None = None
    Name: str | None = None
    Hours: Schedule | None = None
    BreakTime: Schedule | None = None
    OfficeHolidays: list[Holiday] = Field(default_factory=list)
    OverrideHolidays: bool | None = None
    TimeZoneId: str | None = None
    Language: str | None = None
    CurrentGroupHours: str | None = None  # GroupHoursMode
    OverrideExpiresAt: datetime | None = None
    OfficeRoute: Route | None = None
    OutOfOfficeRoute: Route | None = None
    BreakRoute: Route | None = None
    HolidaysRoute: Route | None = None
    Members: list[UserGroup] = Field(default_factory=list)

    _expires = field_validator("OverrideExpiresAt", mode="before")(_lenient_datetime)

    def forced_mode(self, now: datetime) -> str:
        """The admin's override in force at ``now`` (aware), or ``Default``: an override whose
        ``OverrideExpiresAt`` has passed no longer counts."""
        mode = self.CurrentGroupHours or GroupHoursMode.DEFAULT
        if mode == GroupHoursMode.DEFAULT:
            return mode
        until = self.OverrideExpiresAt
        if until is not None:
            if until.tzinfo is None:  # the PBX writes UTC
                until = until.replace(tzinfo=UTC)
            if now >= until:
                return GroupHoursMode.DEFAULT
        return mode


class QueueAgent(XapiModel):
    Id: int | None = None
    Number: str | None = None
    Name: str | None = None
    SkillGroup: str | None = None


class Queue(XapiModel):
    Id: int | None = None
    Number: str | None = None
    Name: str | None = None
    PollingStrategy: str | None = None
    MaxCallersInQueue: int | None = None
    RingTimeout: int | None = None
    MasterTimeout: int | None = None
    CallbackEnableTime: int | None = None
    CallbackPrefix: str | None = None
    OutOfOfficeRoute: Route | None = None
    BreakRoute: Route | None = None
    HolidaysRoute: Route | None = None
    Agents: list[QueueAgent] = Field(default_factory=list)


class RingGroupMember(XapiModel):
    Id: int | None = None
    Number: str | None = None
    Name: str | None = None


class RingGroup(XapiModel):
    Id: int | None = None
    Number: str | None = None
    Name: str | None = None
    RingStrategy: str | None = None
    RingTime: int | None = None
    Members: list[RingGroupMember] = Field(default_factory=list)


class ActiveCall(XapiModel):
    """A call in progress (``GET /ActiveCalls``). ``Callee`` is where it is: a number, or a
    number and a name (``810 Sales queue``); ``Status`` is a free string (``Talking``, ``Routing``,
    ...); ``LastChangeStatus`` when it took that status, by the PBX's clock as ``ServerNow``."""

    Id: int | None = None
    Caller: str | None = None
    Callee: str | None = None
    Status: str | None = None
    EstablishedAt: datetime | None = None
    LastChangeStatus: datetime | None = None
    ServerNow: datetime | None = None

    _times = field_validator("EstablishedAt", "LastChangeStatus", "ServerNow", mode="before")(_lenient_datetime)
