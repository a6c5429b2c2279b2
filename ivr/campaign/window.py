"""Calling windows: ``"mon-fri 09:00-18:00"``, in each contact's own time zone.

Syntax: one or more ``DAYS HH:MM-HH:MM`` parts separated by ``;`` or ``,`` before a day name,
e.g. ``"mon-fri 09:00-12:00 14:00-18:00; sat 10:00-13:00"``. Days and ranges are those of the
flow ``hours`` step (ivr/pbx/hours.py), which also does the time-zone arithmetic.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache

from ivr.pbx.hours import HoursError, Schedule, is_open, parse_schedule

_PART = re.compile(r"^\s*([A-Za-z][A-Za-z,\-\s]*?)\s+(\d.*)$")
ALWAYS = "always"


class WindowError(ValueError):
    """A calling window that cannot be parsed; one line naming the bad part."""


class CallingWindow:
    """When calls may be placed. ``CallingWindow("always")`` never closes."""

    def __init__(self, spec: str = ALWAYS) -> None:
        self.spec = spec.strip()
        self.weekly: dict[str, list[str]] = {}
        if self.spec.lower() == ALWAYS:
            return
        # Parts end at ";" or at a comma after a time ("09:00-18:00, sat ..."); commas between
        # day names ("mon,wed") belong to the days.
        for part in re.split(r";|(?<=\d)\s*,\s*(?=[A-Za-z])", self.spec):
            if not part.strip():
                continue
            match = _PART.match(part)
            if not match:
                raise WindowError(f"calling window {spec!r}: {part.strip()!r} is not 'DAYS HH:MM-HH:MM'")
            days, ranges = match.group(1).strip(), match.group(2).split()
            self.weekly.setdefault(days, []).extend(ranges)
        if not self.weekly:
            raise WindowError(f"calling window {spec!r} is empty")
        try:
            self._schedule("UTC")  # check days and ranges once, up front
        except HoursError as exc:
            raise WindowError(f"calling window {spec!r}: {exc}") from None

    @property
    def always(self) -> bool:
        return not self.weekly

    def _schedule(self, timezone: str) -> Schedule:
        return _schedule(tuple((k, tuple(v)) for k, v in self.weekly.items()), timezone)

    def is_open(self, at: datetime, timezone: str) -> bool:
        """May a contact in ``timezone`` be called at the aware instant ``at``?"""
        return self.always or is_open(self._schedule(timezone), at)

    def next_open(self, at: datetime, timezone: str, *, days: int = 8) -> datetime | None:
        """The first instant at or after ``at`` when the window is open there; None if it does
        not open within ``days`` (every range start of every day is a candidate: no scanning)."""
        if self.is_open(at, timezone):
            return at
        schedule = self._schedule(timezone)
        local = at.astimezone(schedule.tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for offset in range(days + 1):
            day = midnight + timedelta(days=offset)
            weekday = day.weekday()
            starts = sorted({start for start, _ in schedule.weekly[weekday]} | {0 for _ in schedule.spill[weekday - 1]})
            for minute in starts:
                candidate = (day + timedelta(minutes=minute)).replace(tzinfo=schedule.tz)
                if candidate > local and self.is_open(candidate, timezone):
                    return candidate.astimezone(at.tzinfo)
        return None

    def __repr__(self) -> str:
        return f"CallingWindow({self.spec!r})"


@lru_cache(maxsize=256)
def _schedule(weekly: tuple[tuple[str, tuple[str, ...]], ...], timezone: str) -> Schedule:
    return parse_schedule(timezone, {days: list(ranges) for days, ranges in weekly})
