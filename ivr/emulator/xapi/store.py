"""The Configuration API's entities, held as the API's own JSON (dicts), built from the PBX
description and changed by the API's create/update/delete calls and the control endpoints.

Memberships are kept once (``user id -> {group id: role}``) and rendered on both sides
(``User.Groups``, ``Group.Members``), so the two views cannot disagree.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from tzlocal.windows_tz import tz_win

from ivr.pbx.hours import parse_days, parse_ranges
from ivr.pbx.xapi.models import GroupHoursMode
from ivr.pbx.xapi.timezones import to_iana

from ..queues import QueuePlan
from .description import (
    DepartmentSpec,
    DestinationSpec,
    HolidaySpec,
    PbxDescription,
    Weekly,
)

__all__ = ["XapiError", "XapiStore"]

Entity = dict[str, Any]
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PROFILE_NAMES = ("Available", "Away", "Out of office", "Custom 1", "Custom 2")
QUEUE_STATUSES = ("LoggedIn", "LoggedOut")
UNAVAILABLE_PROFILES = ("Away", "Out of office")  # an agent in these takes no queue calls


class XapiError(Exception):
    """An API error: HTTP status and the message of the OData error body."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def windows_zone(name: str) -> str:
    """A Windows zone name for ``name`` (IANA or Windows), as 3CX stores ``TimeZoneId``."""
    iana = to_iana(name)
    return tz_win.get(iana, name)


def _hms(minutes: int) -> str:
    if minutes >= 24 * 60:
        return "23:59:59"  # the end of the day, as a time of day
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def schedule(weekly: Weekly | None, kind: str = "SpecificHours") -> Entity:
    """``{mon-fri: "08:00-18:00"}`` -> ``Pbx.Schedule`` (an overnight range is split at midnight)."""
    periods: list[Entity] = []
    for key, ranges in (weekly or {}).items():
        for day in parse_days(str(key)):
            for start, end in parse_ranges(ranges):
                periods.append({"DayOfWeek": DAY_NAMES[day], "Start": _hms(start), "Stop": _hms(min(end, 1440))})
                if end > 1440:
                    periods.append({"DayOfWeek": DAY_NAMES[(day + 1) % 7], "Start": "00:00:00", "Stop": _hms(end - 1440)})
    periods.sort(key=lambda p: (DAY_NAMES.index(p["DayOfWeek"]), p["Start"]))
    return {"Type": kind, "IgnoreHolidays": False, "Periods": periods}


def _duration(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return "PT" + (f"{h}H" if h else "") + (f"{m}M" if m else "") if minutes else "PT0S"


def holiday_entity(spec: HolidaySpec, hid: int) -> Entity:
    """A ``Pbx.Holiday`` for one described holiday."""
    text = spec.date.strip()
    first, _, last = text.partition("..")
    last = last or first
    recurrent = len(first.split("-")) == 2
    if recurrent:
        (m1, d1), (m2, d2) = (int(x) for x in first.split("-")), (int(x) for x in last.split("-"))
        y1 = y2 = 0
    else:
        y1, m1, d1 = (int(x) for x in first.split("-"))
        y2, m2, d2 = (int(x) for x in last.split("-"))
    entity: Entity = {
        "Id": hid, "Name": spec.name or text, "Day": d1, "Month": m1, "Year": y1,
        "DayEnd": d2, "MonthEnd": m2, "YearEnd": y2, "IsRecurrent": recurrent,
        "TimeOfStartDate": None, "TimeOfEndDate": None, "HolidayPrompt": spec.prompt,
    }
    if spec.hours:
        (start, end), = parse_ranges(spec.hours)
        entity["TimeOfStartDate"], entity["TimeOfEndDate"] = _duration(start), _duration(end)
    return entity


def _destination(spec: DestinationSpec | None) -> Entity:
    d = spec or DestinationSpec()
    return {
        "Route": {"Type": d.type, "Number": d.number or None, "To": d.type, "External": d.external or None, "Name": None},
        "Prompt": d.prompt or None,
        "IsPromptEnabled": bool(d.prompt),
    }


def _utc(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Fields a client may write, with the JSON types they must have (others are kept as given).
_TYPES: dict[str, tuple[type, ...]] = {
    "Number": (str,), "FirstName": (str,), "LastName": (str,), "DisplayName": (str,), "EmailAddress": (str,),
    "Mobile": (str,), "Name": (str,), "Enabled": (bool,), "HideInPhonebook": (bool,), "IsRegistered": (bool,),
    "CurrentProfileName": (str,), "QueueStatus": (str,), "Language": (str,), "Members": (list,), "Groups": (list,),
    "Agents": (list,), "CurrentGroupHours": (str,), "Day": (int,), "Month": (int,), "Year": (int,),
    "DayEnd": (int,), "MonthEnd": (int,), "YearEnd": (int,), "IsRecurrent": (bool,),
    "MaxCallersInQueue": (int,), "RingTimeout": (int,),
}
_NULLABLE_OK = {"Number", "OverrideExpiresAt", "Mobile", "DisplayName", "EmailAddress", "Language"}


def _check_types(body: Entity) -> None:
    for name, value in body.items():
        kinds = _TYPES.get(name)
        if kinds is None or (value is None and name in _NULLABLE_OK):
            continue
        if not isinstance(value, kinds) or (int in kinds and isinstance(value, bool)):
            raise XapiError(400, f"{name}: must be {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if "CurrentGroupHours" in body and body["CurrentGroupHours"] not in GroupHoursMode.ALL:
        raise XapiError(400, f"CurrentGroupHours: {body['CurrentGroupHours']!r} is not one of "
                             f"{', '.join(GroupHoursMode.ALL)}")
    if "QueueStatus" in body and body["QueueStatus"] not in QUEUE_STATUSES:
        raise XapiError(400, f"QueueStatus: {body['QueueStatus']!r} is not LoggedIn or LoggedOut")


class XapiStore:
    """Every entity the emulator serves under /xapi/v1, by collection and Id."""

    def __init__(self, desc: PbxDescription, *, reserved: Callable[[], Iterable[str]] = tuple) -> None:
        self.version = desc.version
        self._reserved = reserved  # numbers used outside the store (the route point)
        self._ids = itertools.count(1)
        self.users: dict[int, Entity] = {}
        self.groups: dict[int, Entity] = {}
        self.queues: dict[int, Entity] = {}
        self.ring_groups: dict[int, Entity] = {}
        self.holidays: dict[int, Entity] = {}
        self.memberships: dict[int, dict[int, str]] = {}  # user id -> {group id: role name}
        self.group_holidays: dict[int, list[int]] = {}  # group id -> holiday ids (own holidays)
        self.system_holidays: list[int] = []
        sysd = desc.system
        self.office_hours: Entity = {
            "Hours": schedule(sysd.hours),
            "BreakTime": schedule(sysd.break_),
            "TimeZoneId": windows_zone(sysd.timezone),
            "SystemLanguage": sysd.language,
        }
        for h in sysd.holidays:
            self.system_holidays.append(self._add_holiday(h))
        for u in desc.users:
            self._add_user(u.number, u.first_name, u.last_name, u.email, u.mobile, u.language, u.presence,
                           u.registered, u.queue_status, u.hidden, u.enabled)
        by_number = {u["Number"]: uid for uid, u in self.users.items()}
        for d in desc.departments:
            gid = self._add_department(d)
            for m in d.members:
                self.memberships.setdefault(by_number[m], {})[gid] = "users"
        for q in desc.queues:
            qid = next(self._ids)
            self.queues[qid] = {
                "Id": qid, "Number": q.number, "Name": q.name or f"Queue {q.number}", "PollingStrategy": q.polling_strategy,
                "MaxCallersInQueue": q.max_callers, "RingTimeout": q.ring_timeout, "MasterTimeout": q.master_timeout,
                "Agents": [by_number[a] for a in q.agents],
            }
        for r in desc.ring_groups:
            rid = next(self._ids)
            self.ring_groups[rid] = {
                "Id": rid, "Number": r.number, "Name": r.name or f"Ring group {r.number}", "RingStrategy": r.strategy,
                "RingTime": r.ring_time, "Members": [by_number[m] for m in r.members],
            }

    # --- building ---------------------------------------------------------------------------

    def _add_holiday(self, spec: HolidaySpec) -> int:
        hid = next(self._ids)
        self.holidays[hid] = holiday_entity(spec, hid)
        return hid

    def _add_user(self, number: str, first: str = "", last: str = "", email: str = "", mobile: str = "",
                  language: str = "", presence: str = "Available", registered: bool = True,
                  queue_status: str = "LoggedIn", hidden: bool = False, enabled: bool = True) -> Entity:
        uid = next(self._ids)
        user: Entity = {
            "Id": uid, "Number": number, "FirstName": first, "LastName": last,
            "DisplayName": " ".join(p for p in (first, last) if p), "EmailAddress": email, "Mobile": mobile,
            "Language": language or None, "CurrentProfileName": presence, "IsRegistered": registered,
            "QueueStatus": queue_status, "HideInPhonebook": hidden, "Enabled": enabled,
            "Hours": {"Type": "OfficeHours", "IgnoreHolidays": False, "Periods": []},
            "BreakTime": {"Type": "OfficeHours", "IgnoreHolidays": False, "Periods": []},
        }
        self.users[uid] = user
        return user

    def _add_department(self, d: DepartmentSpec) -> int:
        gid = next(self._ids)
        own = [self._add_holiday(h) for h in d.holidays] if d.holidays is not None else None
        self.group_holidays[gid] = own or []
        hours = {"Type": "OfficeHours", "IgnoreHolidays": False, "Periods": []} if d.hours == "system" \
            else schedule(d.hours)
        if d.break_ is None:
            brk = {"Type": "Never", "IgnoreHolidays": False, "Periods": []}
        elif d.break_ == "system":
            brk = {"Type": "OfficeHours", "IgnoreHolidays": False, "Periods": []}
        else:
            brk = schedule(d.break_)
        self.groups[gid] = {
            "Id": gid, "Number": d.number or f"GRP{gid:04d}", "Name": d.name, "Hours": hours, "BreakTime": brk,
            "OverrideHolidays": own is not None,
            "TimeZoneId": windows_zone(d.timezone) if d.timezone else self.office_hours["TimeZoneId"],
            "Language": d.language, "CurrentGroupHours": d.forced.mode if d.forced else GroupHoursMode.DEFAULT,
            "OverrideExpiresAt": _utc(d.forced.until) if d.forced else None,
            "OfficeRoute": _destination(d.routes.office), "OutOfOfficeRoute": _destination(d.routes.out_of_office),
            "BreakRoute": _destination(d.routes.break_), "HolidaysRoute": _destination(d.routes.holiday),
        }
        return gid

    # --- numbers ----------------------------------------------------------------------------

    def numbers(self) -> set[str]:
        """Every number in use: users, queues, ring groups, groups and the reserved ones."""
        used = {str(e.get("Number")) for table in (self.users, self.queues, self.ring_groups, self.groups)
                for e in table.values() if e.get("Number")}
        return used | set(self._reserved())

    def first_free_number(self, start: int, table: dict[int, Entity]) -> str:
        """The next number after the highest numeric one in ``table`` (at least ``start``) that
        nothing uses, as 3CX numbers new extensions."""
        used = self.numbers()
        numeric = [int(e["Number"]) for e in table.values() if str(e.get("Number", "")).isdigit()]
        n = max([start, *(x + 1 for x in numeric)])
        while str(n) in used:
            n += 1
        return str(n)

    def _claim_number(self, body: Entity, start: int, table: dict[int, Entity]) -> str:
        number = body.get("Number")
        if number in (None, ""):
            return self.first_free_number(start, table)
        if number in self.numbers():
            raise XapiError(400, "Number:\nWARNINGS.XAPI.ALREADY_IN_USE")
        return str(number)

    @staticmethod
    def _number_unchanged(entity: Entity, body: Entity) -> None:
        if "Number" in body and body["Number"] != entity.get("Number"):
            raise XapiError(400, "Number:\nWARNINGS.XAPI.CANNOT_BE_CHANGED")

    # --- rendering --------------------------------------------------------------------------

    def render_user(self, uid: int) -> Entity:
        user = copy.deepcopy(self.users[uid])
        user["Groups"] = [
            {"GroupId": gid, "Name": self.groups[gid]["Name"], "Number": self.groups[gid]["Number"],
             "Rights": {"RoleName": role}}
            for gid, role in self.memberships.get(uid, {}).items() if gid in self.groups
        ]
        user["ForwardingProfiles"] = [{"Id": i + 1, "Name": n} for i, n in enumerate(PROFILE_NAMES)]
        return user

    def render_members(self, gid: int) -> list[Entity]:
        out = []
        for uid, groups in self.memberships.items():
            if gid in groups and uid in self.users:
                u = self.users[uid]
                out.append({"Id": uid, "GroupId": gid, "Number": u["Number"], "Name": u["DisplayName"],
                            "MemberName": u["DisplayName"], "Rights": {"RoleName": groups[gid]}})
        return out

    def render_group(self, gid: int) -> Entity:
        group = copy.deepcopy(self.groups[gid])
        group["Members"] = self.render_members(gid)
        group["OfficeHolidays"] = [copy.deepcopy(self.holidays[h]) for h in self.group_holidays.get(gid, [])
                                   if h in self.holidays]
        return group

    def _agents(self, ids: list[int]) -> list[Entity]:
        out = []
        for uid in ids:
            u = self.users.get(uid)
            if u is not None:
                out.append({"Id": uid, "Number": u["Number"], "Name": u["DisplayName"], "SkillGroup": "1"})
        return out

    def render_queue(self, qid: int) -> Entity:
        q = copy.deepcopy(self.queues[qid])
        q["Agents"] = self._agents(q.get("Agents", []))
        return q

    def render_ring_group(self, rid: int) -> Entity:
        r = copy.deepcopy(self.ring_groups[rid])
        r["Members"] = [{k: a[k] for k in ("Id", "Number", "Name")} for a in self._agents(r.get("Members", []))]
        return r

    def render_office_hours(self) -> Entity:
        out = copy.deepcopy(self.office_hours)
        out["OfficeHolidays"] = [copy.deepcopy(self.holidays[h]) for h in self.system_holidays if h in self.holidays]
        return out

    def render_holiday(self, hid: int) -> Entity:
        return copy.deepcopy(self.holidays[hid])

    # --- users --------------------------------------------------------------------------------

    def user_by_number(self, number: str) -> int:
        for uid, u in self.users.items():
            if u["Number"] == number:
                return uid
        raise XapiError(404, f"User with Number '{number}' not found")

    def create_user(self, body: Entity) -> int:
        _check_types(body)
        number = self._claim_number(body, 100, self.users)
        fields = {k: v for k, v in body.items() if k not in ("Id", "Groups", "ForwardingProfiles", "Number")}
        user = self._add_user(number)
        user.update(fields)
        user["DisplayName"] = user.get("DisplayName") or " ".join(
            p for p in (user.get("FirstName"), user.get("LastName")) if p)
        if "Groups" in body:
            self._set_user_groups(user["Id"], body["Groups"])
        return int(user["Id"])

    def update_user(self, uid: int, body: Entity) -> None:
        _check_types(body)
        user = self.users[uid]
        self._number_unchanged(user, body)
        if "Groups" in body:
            self._set_user_groups(uid, body["Groups"])
        user.update({k: v for k, v in body.items() if k not in ("Id", "Groups", "ForwardingProfiles")})
        if "DisplayName" not in body and ("FirstName" in body or "LastName" in body):
            user["DisplayName"] = " ".join(p for p in (user.get("FirstName"), user.get("LastName")) if p)

    def _set_user_groups(self, uid: int, groups: list[Any]) -> None:
        new: dict[int, str] = {}
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or not isinstance(g.get("GroupId"), int) or g["GroupId"] not in self.groups:
                raise XapiError(400, f"Groups[{i}].GroupId: no such group")
            new[g["GroupId"]] = str((g.get("Rights") or {}).get("RoleName") or "users")
        self.memberships[uid] = new

    def delete_user(self, uid: int) -> None:
        del self.users[uid]
        self.memberships.pop(uid, None)
        for table in (self.queues, self.ring_groups):
            for e in table.values():
                for key in ("Agents", "Members"):
                    if key in e:
                        e[key] = [x for x in e[key] if x != uid]

    def set_presence(self, number: str, body: Entity) -> Entity:
        """The control endpoint: change presence, registration, queue status, visibility."""
        uid = self.user_by_number(number)
        mapping = {"presence": "CurrentProfileName", "registered": "IsRegistered", "queue_status": "QueueStatus",
                   "hidden": "HideInPhonebook", "enabled": "Enabled"}
        unknown = sorted(set(body) - set(mapping))
        if unknown:
            raise XapiError(400, f"unknown field(s) {', '.join(unknown)}; use {', '.join(mapping)}")
        change = {mapping[k]: v for k, v in body.items()}
        _check_types(change)
        self.users[uid].update(change)
        return self.render_user(uid)

    # --- groups -------------------------------------------------------------------------------

    def create_group(self, body: Entity) -> int:
        _check_types(body)
        if not str(body.get("Name") or "").strip():
            raise XapiError(400, "Name:\nWARNINGS.XAPI.REQUIRED")
        gid = self._add_department(DepartmentSpec(name=str(body["Name"])))
        group = self.groups[gid]
        if body.get("Number"):
            group["Number"] = self._claim_number(body, 0, self.groups)
        group.update({k: v for k, v in body.items() if k not in ("Id", "Number", "Members", "OfficeHolidays")})
        if "Members" in body:
            self._set_group_members(gid, body["Members"])
        return gid

    def update_group(self, gid: int, body: Entity) -> None:
        _check_types(body)
        group = self.groups[gid]
        self._number_unchanged(group, body)
        if "Members" in body:
            self._set_group_members(gid, body["Members"])
        group.update({k: v for k, v in body.items() if k not in ("Id", "Members", "OfficeHolidays")})

    def _set_group_members(self, gid: int, members: list[Any]) -> None:
        by_number = {u["Number"]: uid for uid, u in self.users.items()}
        new: dict[int, str] = {}
        for i, m in enumerate(members):
            number = m.get("Number") if isinstance(m, dict) else None
            if number not in by_number:
                raise XapiError(400, f"Members[{i}].Number: no user with number {number!r}")
            new[by_number[number]] = str((m.get("Rights") or {}).get("RoleName") or "users")
        for groups in self.memberships.values():
            groups.pop(gid, None)
        for uid, role in new.items():
            self.memberships.setdefault(uid, {})[gid] = role

    def delete_group(self, gid: int) -> None:
        del self.groups[gid]
        for groups in self.memberships.values():
            groups.pop(gid, None)
        self.group_holidays.pop(gid, None)

    def group_by_name(self, name: str) -> int:
        want = name.strip().casefold()
        for gid, g in self.groups.items():
            if str(g.get("Name", "")).strip().casefold() == want:
                return gid
        raise XapiError(404, f"department {name!r} not found")

    def force(self, name: str, body: Entity) -> Entity:
        """The control endpoint: a department's forced mode (``{"mode": ..., "until": ...}``)."""
        gid = self.group_by_name(name)
        unknown = sorted(set(body) - {"mode", "until"})
        if unknown:
            raise XapiError(400, f"unknown field(s) {', '.join(unknown)}; use mode, until")
        mode = body.get("mode", GroupHoursMode.DEFAULT)
        until = body.get("until")
        if until is not None:
            try:
                parsed = datetime.fromisoformat(str(until))
            except ValueError:
                raise XapiError(400, f"until: {until!r} is not an ISO date and time") from None
            until = _utc(parsed)
        _check_types({"CurrentGroupHours": mode})
        self.groups[gid]["CurrentGroupHours"] = mode
        self.groups[gid]["OverrideExpiresAt"] = None if mode == GroupHoursMode.DEFAULT else until
        return self.render_group(gid)

    # --- queues and ring groups -------------------------------------------------------------

    def _member_ids(self, items: list[Any], what: str) -> list[int]:
        by_number = {u["Number"]: uid for uid, u in self.users.items()}
        out = []
        for i, m in enumerate(items):
            number = m.get("Number") if isinstance(m, dict) else None
            if number not in by_number:
                raise XapiError(400, f"{what}[{i}].Number: no user with number {number!r}")
            out.append(by_number[number])
        return out

    def create_queue(self, body: Entity) -> int:
        _check_types(body)
        number = self._claim_number(body, 800, self.queues)
        qid = next(self._ids)
        q: Entity = {"Id": qid, "Number": number, "Name": f"Queue {number}", "PollingStrategy": "RingAll",
                     "MaxCallersInQueue": 10, "RingTimeout": 20, "MasterTimeout": 0, "Agents": []}
        q.update({k: v for k, v in body.items() if k not in ("Id", "Number", "Agents")})
        if "Agents" in body:
            q["Agents"] = self._member_ids(body["Agents"], "Agents")
        self.queues[qid] = q
        return qid

    def queue_plan(self, number: str) -> QueuePlan:
        """What the switch needs of queue ``number`` now: the agents who may take a call (enabled,
        a phone registered, logged in to queues, not Away / Out of office), in the queue's order,
        its ring time and its caller limit. No such queue: no agents, no limits."""
        q = next((q for q in self.queues.values() if q.get("Number") == number), None)
        if q is None:
            return QueuePlan()
        agents = []
        for uid in q.get("Agents", []):
            u = self.users.get(uid)
            if (u is not None and u.get("Enabled") is not False and u.get("IsRegistered") is True
                    and u.get("QueueStatus") == "LoggedIn" and u.get("CurrentProfileName") not in UNAVAILABLE_PROFILES):
                agents.append(str(u["Number"]))
        return QueuePlan(tuple(agents), float(q.get("RingTimeout") or 0), int(q.get("MaxCallersInQueue") or 0))

    def name_of(self, number: str) -> str:
        """The display name of the user or queue numbered ``number`` ("" if none)."""
        for table, field in ((self.users, "DisplayName"), (self.queues, "Name"), (self.ring_groups, "Name")):
            for e in table.values():
                if e.get("Number") == number:
                    return str(e.get(field) or "")
        return ""

    def update_queue(self, qid: int, body: Entity) -> None:
        _check_types(body)
        q = self.queues[qid]
        self._number_unchanged(q, body)
        if "Agents" in body:
            q["Agents"] = self._member_ids(body["Agents"], "Agents")
        q.update({k: v for k, v in body.items() if k not in ("Id", "Agents")})

    def create_ring_group(self, body: Entity) -> int:
        _check_types(body)
        number = self._claim_number(body, 700, self.ring_groups)
        rid = next(self._ids)
        r: Entity = {"Id": rid, "Number": number, "Name": f"Ring group {number}", "RingStrategy": "RingAll",
                     "RingTime": 20, "Members": []}
        r.update({k: v for k, v in body.items() if k not in ("Id", "Number", "Members")})
        if "Members" in body:
            r["Members"] = self._member_ids(body["Members"], "Members")
        self.ring_groups[rid] = r
        return rid

    def update_ring_group(self, rid: int, body: Entity) -> None:
        _check_types(body)
        r = self.ring_groups[rid]
        self._number_unchanged(r, body)
        if "Members" in body:
            r["Members"] = self._member_ids(body["Members"], "Members")
        r.update({k: v for k, v in body.items() if k not in ("Id", "Members")})

    # --- holidays and office hours ----------------------------------------------------------

    def create_holiday(self, body: Entity) -> int:
        _check_types(body)
        for name in ("Day", "Month"):
            if not isinstance(body.get(name), int):
                raise XapiError(400, f"{name}:\nWARNINGS.XAPI.REQUIRED")
        hid = next(self._ids)
        h: Entity = {"Id": hid, "Name": "", "Year": 0, "IsRecurrent": False, "TimeOfStartDate": None,
                     "TimeOfEndDate": None, "HolidayPrompt": None}
        h.update({k: v for k, v in body.items() if k != "Id"})
        h.setdefault("DayEnd", h["Day"])
        h.setdefault("MonthEnd", h["Month"])
        h.setdefault("YearEnd", h["Year"])
        self.holidays[hid] = h
        self.system_holidays.append(hid)
        return hid

    def update_holiday(self, hid: int, body: Entity) -> None:
        _check_types(body)
        self.holidays[hid].update({k: v for k, v in body.items() if k != "Id"})

    def delete_holiday(self, hid: int) -> None:
        del self.holidays[hid]
        self.system_holidays = [h for h in self.system_holidays if h != hid]
        for ids in self.group_holidays.values():
            if hid in ids:
                ids.remove(hid)

    def update_office_hours(self, body: Entity) -> None:
        for name in ("Hours", "BreakTime"):
            if name in body and not isinstance(body[name], dict):
                raise XapiError(400, f"{name}: must be a Pbx.Schedule object")
        if "TimeZoneId" in body:
            try:
                to_iana(str(body["TimeZoneId"]))
            except ValueError:
                raise XapiError(400, f"TimeZoneId: {body['TimeZoneId']!r} is not a known time zone") from None
        if "OfficeHolidays" in body:
            items = body["OfficeHolidays"]
            if not isinstance(items, list) or not all(isinstance(h, dict) and h.get("Id") in self.holidays
                                                      for h in items):
                raise XapiError(400, "OfficeHolidays: a list of existing holidays ({\"Id\": ...})")
            self.system_holidays = [h["Id"] for h in items]
        self.office_hours.update({k: v for k, v in body.items() if k != "OfficeHolidays"})


def wall_time(loop_time: float, loop_now: float) -> str:
    """A loop-clock instant as an ISO UTC time."""
    t = time.time() - (loop_now - loop_time)
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
