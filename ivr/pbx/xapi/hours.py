"""Is a department open, closed, on break or on holiday, by the PBX's own settings? Pure
functions over the Configuration API models, no I/O.

The order 3CX applies: an admin's forced mode (``CurrentGroupHours`` until ``OverrideExpiresAt``)
first; then holidays (the department's own when ``OverrideHolidays``, else the system's; a
holiday with ``TimeOfStartDate``/``TimeOfEndDate`` only for that part of the day; a schedule
with ``IgnoreHolidays`` is not closed by them); then the office hours (a department whose
``Hours.Type`` is ``OfficeHours`` follows the system's); then break time within open hours.
Wall-clock times are in the department's ``TimeZoneId`` (else the system's), a Windows name
mapped to IANA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from .models import Group, GroupHoursMode, Holiday, OfficeHours, RuleHoursType, Schedule
from .timezones import UnknownTimeZone, zone

__all__ = ["OfficeState", "OfficeStatus", "office_status"]

OfficeState = Literal["open", "closed", "break", "holiday"]

_DAYS = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6}
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_FORCED: dict[str, OfficeState] = {
    GroupHoursMode.FORCE_OPENED: "open",
    GroupHoursMode.FORCE_CLOSED: "closed",
    GroupHoursMode.FORCE_BREAK: "break",
    GroupHoursMode.FORCE_HOLIDAY: "holiday",
    # Calls go to the department's custom operator instead of its office route: not open as usual.
    GroupHoursMode.FORCE_CUSTOM_OPERATOR: "closed",
}
_FOLLOW_SYSTEM = (RuleHoursType.OFFICE_HOURS, RuleHoursType.OUT_OF_OFFICE_HOURS)


@dataclass(frozen=True)
class OfficeStatus:
    """The answer: ``state``; ``forced`` the admin's mode when one decided it; ``holiday`` the
    holiday that closes the office now."""

    state: OfficeState
    forced: str | None = None
    holiday: Holiday | None = None


def _seconds(text: str | None) -> float | None:
    """``"PT9H30M"`` -> 34200.0; None if absent or not a duration."""
    if not text:
        return None
    value = text.strip().upper()
    m = _DURATION.match(value)
    if not m or value in ("P", "PT"):
        return None
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def _clock(text: str | None, *, end: bool) -> float | None:
    """``"08:00:00"`` -> seconds after midnight; ``23:59:59`` as an end means the day's end."""
    if not text:
        return None
    parts = text.strip().split(":")
    try:
        h, mi = int(parts[0]), int(parts[1])
        s = float(parts[2]) if len(parts) > 2 else 0.0
    except (ValueError, IndexError):
        return None
    value = h * 3600 + mi * 60 + s
    if end and value >= 86399:
        return 86400.0
    return value


def _in_periods(schedule: Schedule, local: datetime) -> bool:
    now = local.hour * 3600 + local.minute * 60 + local.second
    wd = local.weekday()
    for p in schedule.Periods:
        day = _DAYS.get((p.DayOfWeek or "").strip().lower())
        start, stop = _clock(p.Start, end=False), _clock(p.Stop, end=True)
        if day is None or start is None or stop is None:
            continue
        if stop > start:
            if day == wd and start <= now < stop:
                return True
        elif stop < start and ((day == wd and now >= start) or ((day + 1) % 7 == wd and now < stop)):
            return True  # a period past midnight
    return False


def _in_schedule(schedule: Schedule | None, system: Schedule | None, local: datetime) -> bool | None:
    """Does ``schedule`` (following ``system`` where it says so) include ``local``? None: unknown."""
    if schedule is None:
        return None
    kind = schedule.Type or RuleHoursType.SPECIFIC_HOURS
    if kind == RuleHoursType.ALL_HOURS:
        return True
    if kind == RuleHoursType.NEVER:
        return False
    if kind in _FOLLOW_SYSTEM:
        if system is None or system is schedule:
            return None
        inside = _in_schedule(system, None, local)
        return inside if inside is None or kind == RuleHoursType.OFFICE_HOURS else not inside
    if kind in (RuleHoursType.OUT_OF_SPECIFIC_HOURS, RuleHoursType.OUT_OF_SPECIFIC_HOURS_INCLUDING_HOLIDAYS):
        return not _in_periods(schedule, local)
    return _in_periods(schedule, local)


def _holiday_span(h: Holiday, year: int) -> tuple[datetime, datetime] | None:
    """The holiday's [start, end) in local wall-clock time, in ``year`` when it recurs."""
    if not h.Day or not h.Month:
        return None
    y1 = year if h.IsRecurrent or not h.Year else h.Year
    try:
        first = date(y1, h.Month, h.Day)
        last_year = y1 if h.IsRecurrent or not h.YearEnd else h.YearEnd
        last = date(last_year, h.MonthEnd or h.Month, h.DayEnd or h.Day)
    except ValueError:
        return None
    if last < first:  # a recurrent range over New Year
        last = date(last.year + 1, last.month, last.day)
    start_s, end_s = _seconds(h.TimeOfStartDate), _seconds(h.TimeOfEndDate)
    start = datetime.combine(first, time()) + timedelta(seconds=start_s or 0)
    if not end_s:
        end = datetime.combine(last + timedelta(days=1), time())
    else:
        end = datetime.combine(last, time()) + timedelta(seconds=end_s)
    return start, end


def _holiday_now(holidays: list[Holiday], local: datetime) -> Holiday | None:
    naive = local.replace(tzinfo=None)
    for h in holidays:
        for year in (naive.year - 1, naive.year):
            span = _holiday_span(h, year)
            if span is not None and span[0] <= naive < span[1]:
                return h
    return None


def office_status(system: OfficeHours, at: datetime, group: Group | None = None) -> OfficeStatus | None:
    """The state at the aware instant ``at`` of ``group`` (or of the system without one); None
    when the PBX's settings do not say (no hours, an unknown time zone): fall back to the flow's."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("office_status needs an aware datetime (with tzinfo)")
    if group is not None:
        forced = group.forced_mode(at)
        if forced in _FORCED:
            return OfficeStatus(_FORCED[forced], forced=forced)
    zone_name = (group.TimeZoneId if group is not None else None) or system.TimeZoneId or ""
    try:
        local = at.astimezone(zone(zone_name))
    except UnknownTimeZone:
        return None
    hours = group.Hours if group is not None else system.Hours
    follows_system = group is not None and hours is not None and hours.Type in _FOLLOW_SYSTEM
    effective = system.Hours if follows_system else hours
    if not (effective is not None and effective.IgnoreHolidays):
        own = group is not None and bool(group.OverrideHolidays)
        holidays = group.OfficeHolidays if own and group is not None else system.OfficeHolidays
        holiday = _holiday_now(list(holidays), local)
        if holiday is not None:
            return OfficeStatus("holiday", holiday=holiday)
    system_hours = system.Hours if group is not None else None
    inside = _in_schedule(hours, system_hours, local)
    if inside is None:
        return None
    if not inside:
        return OfficeStatus("closed")
    brk = group.BreakTime if group is not None else system.BreakTime
    system_break = system.BreakTime if group is not None else None
    on_break = bool(_in_schedule(brk, system_break, local)) if brk is not None else False
    return OfficeStatus("break" if on_break else "open")
