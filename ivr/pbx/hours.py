"""Office hours: is the office open at a given instant? Pure functions, no I/O.

A schedule is a weekly plan in wall-clock time of one IANA time zone plus holiday dates.
The instant is converted to that zone first, so daylight-saving changes need no special
case: "08:00-18:00" means 08:00 to 18:00 on the office's wall clock on every day, whatever
the UTC offset that day.

Spec syntax (also used by the ``hours`` step):

* days: ``mon`` .. ``sun`` (or full names), ranges ``mon-fri`` (may wrap: ``fri-mon``),
  lists ``sat,sun`` or ``mon-wed, fri``, and ``daily``. Several keys naming the same day add
  their ranges together.
* hours: ``"08:00-18:00"``, a list of such ranges, ``"closed"`` (or empty) or ``"open"``
  (all day). ``24:00`` is allowed as an end. A range whose end is before its start runs
  past midnight (``"22:00-06:00"``) and counts for the next morning too.
* holidays: ``"2026-12-25"`` (one date), ``"12-25"`` (that day every year), or a range
  ``"2026-12-24..2026-12-31"``. A holiday closes its whole calendar day, including the
  morning part of a shift that started the evening before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["HoursError", "Schedule", "is_open", "parse_schedule"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sunday": 6, "tues": 1, "thur": 3, "thurs": 3,
}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_MD = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_DAY_MINUTES = 24 * 60


class HoursError(ValueError):
    """An invalid time zone, day, time range or holiday; the message names the culprit."""


@dataclass(frozen=True)
class Schedule:
    """A parsed weekly schedule. ``weekly[d]`` lists (start, end) minutes for weekday ``d``
    (0 = Monday); ``spill[d]`` lists the after-midnight part of overnight ranges of day d."""

    tz: ZoneInfo
    weekly: tuple[tuple[tuple[int, int], ...], ...]
    spill: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date] = frozenset()
    yearly: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    def is_holiday(self, day: date) -> bool:
        """True when ``day`` (a local calendar date) is a holiday."""
        return day in self.holidays or (day.month, day.day) in self.yearly


def _day_index(name: str) -> int:
    key = name.strip().lower()
    if key[:3] in _DAYS and (len(key) == 3 or key in _FULL):
        return _DAYS.index(key[:3])
    if key in _FULL:
        return _FULL[key]
    raise HoursError(f"unknown day {name.strip()!r} (use mon, tue, wed, thu, fri, sat, sun)")


def parse_days(spec: str) -> list[int]:
    """``"mon-fri"``, ``"sat,sun"``, ``"daily"`` -> weekday numbers (0 = Monday)."""
    text = str(spec).strip().lower()
    if text in ("daily", "everyday", "all", "mon-sun"):
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise HoursError(f"empty day in {spec!r}")
        if "-" in part:
            a, _, b = part.partition("-")
            first, last = _day_index(a), _day_index(b)
            i = first
            while True:  # ranges may wrap around the week: fri-mon
                days.append(i)
                if i == last:
                    break
                i = (i + 1) % 7
        else:
            days.append(_day_index(part))
    return days


def _minutes(text: str, *, end: bool) -> int:
    m = _TIME.match(text.strip())
    if not m:
        raise HoursError(f"bad time {text.strip()!r} (use HH:MM)")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24 or (h == 24 and (mi or not end)):
        raise HoursError(f"bad time {text.strip()!r}")
    return h * 60 + mi


def parse_ranges(spec: str | Sequence[str] | None) -> list[tuple[int, int]]:
    """``"08:00-12:00"`` (or a list, ``"closed"``, ``"open"``) -> [(start, end) minutes].

    An overnight range is returned with ``end > 1440`` (end + 24 h)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[tuple[int, int]] = []
    for item in items:
        if not isinstance(item, str):
            raise HoursError(f"bad time range {item!r} (use \"HH:MM-HH:MM\")")
        text = item.strip().lower()
        if text in ("", "closed", "off"):
            continue
        if text in ("open", "24h", "all day"):
            out.append((0, _DAY_MINUTES))
            continue
        start_s, sep, end_s = text.partition("-")
        if not sep:
            raise HoursError(f"bad time range {item!r} (use \"HH:MM-HH:MM\")")
        start, end = _minutes(start_s, end=False), _minutes(end_s, end=True)
        if end == start:
            raise HoursError(f"empty time range {item!r}")
        out.append((start, end if end > start else end + _DAY_MINUTES))
    return out


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise HoursError(f"bad date {text.strip()!r} (use YYYY-MM-DD)") from None


def parse_schedule(
    timezone: str,
    weekly: Mapping[str, str | Sequence[str] | None],
    holidays: Iterable[str | date] = (),
) -> Schedule:
    """Build a :class:`Schedule`; raises :class:`HoursError` with a one-line reason."""
    try:
        tz = ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise HoursError(f"unknown time zone {timezone!r} (use an IANA name like Europe/Berlin)") from None
    days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    spill: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for key, value in weekly.items():
        ranges = parse_ranges(value)
        for d in parse_days(str(key)):
            for start, end in ranges:
                days[d].append((start, min(end, _DAY_MINUTES)))
                if end > _DAY_MINUTES:
                    spill[d].append((0, end - _DAY_MINUTES))
    fixed: set[date] = set()
    yearly: set[tuple[int, int]] = set()
    for h in holidays:
        if isinstance(h, datetime):
            raise HoursError(f"holiday {h!r} must be a date, not a date and time")
        if isinstance(h, date):
            fixed.add(h)
            continue
        text = str(h).strip()
        if ".." in text:
            a, _, b = text.partition("..")
            first, last = _parse_date(a), _parse_date(b)
            if last < first:
                raise HoursError(f"holiday range {text!r} ends before it starts")
            if (last - first).days > 366:
                raise HoursError(f"holiday range {text!r} is longer than a year")
            fixed.update(first + timedelta(days=i) for i in range((last - first).days + 1))
        elif _MD.match(text):
            month, day = (int(x) for x in text.split("-"))
            try:
                date(2000, month, day)  # a leap year, so 02-29 is allowed
            except ValueError:
                raise HoursError(f"bad holiday {text!r} (use MM-DD)") from None
            yearly.add((month, day))
        else:
            fixed.add(_parse_date(text))
    return Schedule(
        tz=tz,
        weekly=tuple(tuple(sorted(r)) for r in days),
        spill=tuple(tuple(sorted(r)) for r in spill),
        holidays=frozenset(fixed),
        yearly=frozenset(yearly),
    )


def is_open(schedule: Schedule, at: datetime) -> bool:
    """Is the office open at the aware instant ``at``?"""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("is_open needs an aware datetime (with tzinfo)")
    local = at.astimezone(schedule.tz)
    today = local.date()
    if schedule.is_holiday(today):
        return False
    minute = local.hour * 60 + local.minute + local.second / 60
    wd = local.weekday()
    if any(start <= minute < end for start, end in schedule.weekly[wd]):
        return True
    yesterday = today - timedelta(days=1)
    if schedule.is_holiday(yesterday):
        return False
    return any(start <= minute < end for start, end in schedule.spill[(wd - 1) % 7])
