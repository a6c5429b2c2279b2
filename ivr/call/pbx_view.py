"""What a call reads of the PBX's own configuration: office status (with the flow's schedule as
the fallback), the directory matched from keypad letters, a user's presence, and the ``pbx``
object flow templates read.

Everything here reads the worker's :class:`~ivr.pbx.xapi.XapiCache` snapshot and never asks the
PBX itself: a flow never waits on the PBX for a value the cache has seen. Before the cache's
first read a step waits for it up to :data:`FIRST_READ_WAIT` seconds, then falls back.
Pure functions (``keypad``, ``directory_matches``, ``presence_of``, ``hours_state``) take the
models and are tested on their own.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ivr.pbx.hours import Schedule, is_open
from ivr.pbx.xapi import CallsSnapshot, Group, OfficeStatus, PbxSnapshot, User, office_status

if TYPE_CHECKING:
    from ivr.pbx.xapi import XapiCache

__all__ = [
    "FIRST_READ_WAIT",
    "HoursAnswer",
    "NameMatch",
    "PbxFacts",
    "Presence",
    "directory_matches",
    "hours_state",
    "keypad",
    "presence_of",
    "snapshot_of",
]

#: Seconds a step waits for the cache's first read (a call right after the worker started).
FIRST_READ_WAIT = 2.0

NameMatch = Literal["last", "first", "either"]

_KEYPAD = {c: d for d, letters in {"2": "abc", "3": "def", "4": "ghi", "5": "jkl", "6": "mno",
                                   "7": "pqrs", "8": "tuv", "9": "wxyz"}.items() for c in letters}
# Letters NFKD does not split into a base letter and a mark.
_FOLD = {"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d", "þ": "th"}


async def snapshot_of(cache: XapiCache | None, wait: float = FIRST_READ_WAIT) -> PbxSnapshot | None:
    """The cache's snapshot; before its first read, wait up to ``wait`` s for it. None: unknown."""
    if cache is None:
        return None
    snap = cache.snapshot
    if snap is None and wait > 0 and await cache.wait_ready(wait):
        snap = cache.snapshot
    return snap


# --- office hours ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HoursAnswer:
    """``state`` (open, closed, break, holiday) and where it came from: ``source`` is ``pbx`` or
    ``flow`` (the step's own schedule, when the PBX's hours are unknown); ``forced`` the admin's
    mode that decided it, ``holiday`` the holiday's name."""

    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("open", "state", "source", "forced", "holiday")
    state: str
    source: str
    forced: str | None = None
    holiday: str | None = None

    @property
    def open(self) -> bool:
        return self.state == "open"

    def to_dict(self) -> dict[str, Any]:
        return {"open": self.open, "state": self.state, "source": self.source, "forced": self.forced,
                "holiday": self.holiday}


class HoursUnknown(LookupError):
    """Neither the PBX nor the flow says whether the office is open; the message says why."""


def _from_pbx(status: OfficeStatus) -> HoursAnswer:
    holiday = (status.holiday.Name or "holiday") if status.holiday is not None else None
    return HoursAnswer(status.state, "pbx", status.forced, holiday)


def schedule_state(schedule: Schedule, at: datetime) -> HoursAnswer:
    """A flow's own schedule: open, holiday (one of its holidays today) or closed."""
    if is_open(schedule, at):
        return HoursAnswer("open", "flow")
    if schedule.is_holiday(at.astimezone(schedule.tz).date()):
        return HoursAnswer("holiday", "flow", holiday="holiday")
    return HoursAnswer("closed", "flow")


def hours_state(snap: PbxSnapshot | None, at: datetime, department: str | None = None,
                fallback: Schedule | None = None) -> HoursAnswer:
    """The office's state at ``at`` by the PBX (``department``'s settings, else the system's),
    else by ``fallback``; HoursUnknown when neither says."""
    why = "the PBX's configuration has not been read"
    if snap is not None:
        group: Group | None = None
        if department is not None:
            group = snap.group(department)
            why = f"the PBX has no department {department!r}"
        if department is None or group is not None:
            status = office_status(snap.office_hours, at, group)
            if status is not None:
                return _from_pbx(status)
            why = "the PBX's office hours are unknown (no hours or an unknown time zone)"
    if fallback is not None:
        return schedule_state(fallback, at)
    raise HoursUnknown(f"{why}, and no weekly schedule to fall back on")


# --- the directory --------------------------------------------------------------------------


def keypad(text: str) -> str:
    """The keys that spell ``text`` on a phone keypad (2=ABC ... 9=WXYZ): ``"O'Brien"`` ->
    ``"627436"``. Accents are dropped (``Müller`` = ``Muller``); digits stay; the rest is skipped."""
    out: list[str] = []
    for ch in text.casefold():
        ch = _FOLD.get(ch, ch)
        for base in unicodedata.normalize("NFKD", ch):
            if base.isdigit() and base.isascii():
                out.append(base)
            elif base in _KEYPAD:
                out.append(_KEYPAD[base])
    return "".join(out)


def _names(user: User, match: NameMatch) -> list[str]:
    first, last = (user.FirstName or "").strip(), (user.LastName or "").strip()
    if not first and not last:  # only a display name: its words stand for both
        words = user.name.split()
        first, last = (words[0], words[-1]) if words else ("", "")
    return {"last": [last], "first": [first], "either": [last, first]}[match]


def directory_matches(users: Iterable[User], digits: str, match: NameMatch = "either") -> list[User]:
    """Listed users whose last (or first) name starts with the letters ``digits`` spell,
    ordered by last name, then first name."""
    if not digits:
        return []
    found = [u for u in users if u.listed and u.Number
             and any(n and keypad(n).startswith(digits) for n in _names(u, match))]
    return sorted(found, key=lambda u: ((u.LastName or u.name).casefold(), (u.FirstName or "").casefold(), u.Number))


def name_phrases(user: User) -> list[str]:
    """What a caller may say to pick ``user``: the full name, then the last name alone."""
    full = user.name
    out = [full]
    last = (user.LastName or "").strip()
    if last and last.casefold() != full.casefold():
        out.append(last)
    return out


def directory_phrases(users: Iterable[User]) -> dict[str, list[str]]:
    """Extension -> what a caller may say to pick that user (:func:`name_phrases`); a phrase two
    users share (the same last name) is left out for both, and a user with none left too."""
    from ivr.call.speech_input import normalize

    wanted = {u.Number: name_phrases(u) for u in users if u.Number}
    owners: dict[str, set[str]] = {}
    for number, phrases in wanted.items():
        for p in phrases:
            owners.setdefault(normalize(p), set()).add(number)
    out = {}
    for number, phrases in wanted.items():
        kept = [p for p in phrases if normalize(p) and owners[normalize(p)] == {number}]
        if kept:
            out[number] = kept
    return out


# --- presence -------------------------------------------------------------------------------

#: Presence states that keep a transfer from ringing.
UNAVAILABLE = frozenset({"away", "dnd", "out_of_office", "unregistered", "disabled"})
_PROFILE_STATES = {"available": "available", "away": "away", "outofoffice": "out_of_office",
                   "donotdisturb": "dnd", "dnd": "dnd"}
_REASONS = {"away": "is away", "dnd": "does not want to be disturbed", "out_of_office": "is out of office today",
            "unregistered": "cannot take calls right now", "disabled": "cannot take calls"}


@dataclass(frozen=True)
class Presence:
    """A user's presence as a transfer sees it. ``state``: available, away, dnd, out_of_office,
    unregistered (no phone registered), disabled, or ``custom`` (another profile, e.g. Custom 1);
    ``profile`` the PBX's profile name; ``reason`` a sentence to say (``Anna is out of office
    today``), empty when available."""

    STEP_FIELDS: ClassVar[tuple[str, ...]] = ("number", "state", "profile", "available", "reason")
    number: str
    name: str
    first_name: str
    state: str
    profile: str
    registered: bool
    reason: str

    @property
    def available(self) -> bool:
        return self.state not in UNAVAILABLE

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "name": self.name, "first_name": self.first_name, "state": self.state,
                "profile": self.profile, "registered": self.registered, "available": self.available,
                "reason": self.reason}


def presence_of(user: User) -> Presence:
    """The presence of ``user``: disabled first, then no phone registered, then the profile."""
    profile = (user.CurrentProfileName or "").strip()
    key = "".join(ch for ch in profile.casefold() if ch.isalnum())
    if user.Enabled is False:
        state = "disabled"
    elif user.IsRegistered is False:
        state = "unregistered"
    else:
        state = _PROFILE_STATES.get(key, "custom" if key else "available")
    first = (user.FirstName or "").strip() or user.name
    reason = f"{first} {_REASONS[state]}" if state in _REASONS else ""
    return Presence(user.Number or "", user.name, first, state, profile, user.IsRegistered is not False, reason)


# --- what templates read --------------------------------------------------------------------


class PbxFacts:
    """``pbx`` in flow templates: the PBX's configuration as last read, never waiting.

    ``pbx.known`` (a first read exists), ``pbx.age`` (seconds since it), ``pbx.user('101')``,
    ``pbx.queue('810')``, ``pbx.department('Sales')``; each a mapping, or None when the PBX has
    no such entity (or nothing was read yet). A queue's ``waiting`` and ``longest_wait`` come
    from the active calls as last read (``pbx.calls_age`` seconds ago; None: never read)."""

    def __init__(self, snap: PbxSnapshot | None, now: datetime, age: float | None = None,
                 calls: CallsSnapshot | None = None, wall: float | None = None) -> None:
        self._snap = snap
        self._now = now
        self._calls = calls
        self._wall = wall  # wall clock (time.time) now, to age the waits read earlier
        self.known = snap is not None
        self.age = age
        self.calls_age = None if calls is None or wall is None else max(0.0, wall - calls.fetched_at)

    def user(self, number: Any) -> dict[str, Any] | None:
        u = self._snap.user(str(number)) if self._snap is not None else None
        if u is None:
            return None
        p = presence_of(u)
        return {**p.to_dict(), "presence": p.state, "last_name": u.LastName or "", "email": u.EmailAddress or "",
                "queue_status": u.QueueStatus or "", "logged_in": u.QueueStatus != "LoggedOut"}

    def queue(self, number_or_name: Any) -> dict[str, Any] | None:
        q = self._snap.queue(str(number_or_name)) if self._snap is not None else None
        if q is None or self._snap is None:
            return None
        agents = []
        for a in q.Agents:
            u = self._snap.user(a.Number or "")
            p = presence_of(u) if u is not None else None
            logged_in = u is not None and u.QueueStatus != "LoggedOut" and bool(p and p.registered)
            agents.append({"number": a.Number or "", "name": (u.name if u else a.Name) or "",
                           "logged_in": logged_in, "available": bool(logged_in and p and p.available)})
        counts = self._calls.queue(q.Number or "", self._wall) if self._calls is not None else None
        return {"number": q.Number or "", "name": q.Name or "", "agents": agents,
                "logged_in": sum(a["logged_in"] for a in agents), "available": sum(a["available"] for a in agents),
                "waiting": counts.waiting if counts is not None else None,
                "longest_wait": counts.longest_wait_s if counts is not None else None}

    def department(self, name: Any) -> dict[str, Any] | None:
        g = self._snap.group(str(name)) if self._snap is not None else None
        if g is None or self._snap is None:
            return None
        status = office_status(self._snap.office_hours, self._now, g)
        return {"name": g.Name or "", "number": g.Number or "", "state": status.state if status else None,
                "open": bool(status and status.state == "open"), "forced": g.forced_mode(self._now),
                "members": [m.Number for m in g.Members if m.Number]}

    def directory(self) -> list[dict[str, Any]]:
        users = self._snap.directory() if self._snap is not None else []
        return [{"number": u.Number or "", "name": u.name} for u in users]

    def __repr__(self) -> str:
        return f"PbxFacts(known={self.known})"


def facts_for(cache: XapiCache | None, now: datetime) -> PbxFacts:
    """The ``pbx`` template object of a call whose worker keeps ``cache`` (None: unknown)."""
    if cache is None:
        return PbxFacts(None, now)
    return PbxFacts(cache.snapshot, now, cache.age(), cache.calls, cache.now())


def entries(users: Sequence[User]) -> list[dict[str, str]]:
    """Users as a directory result lists them."""
    return [{"number": u.Number or "", "name": u.name} for u in users]
