"""XapiClient against the emulator over loopback: every entity, filters with hostile
literals, paging, counts, errors, the version header, and one token shared with Call Control."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from xapi_helpers import client_cfg, description

from ivr.emulator import Emulator, EmulatorConfig
from ivr.pbx import NotFoundError, PbxClient, PbxError
from ivr.pbx.xapi import GroupHoursMode, Query, XapiClient, to_iana
from ivr.pbx.xapi import odata as o


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(ring_seconds=0.1), pbx=description(tmp_path))
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def xapi(emu: Emulator) -> AsyncIterator[XapiClient]:
    async with XapiClient.standalone(client_cfg(emu.url), page_size=2) as client:
        yield client


async def test_office_hours_and_holidays(xapi: XapiClient) -> None:
    oh = await xapi.office_hours()
    assert oh.TimeZoneId == "W. Europe Standard Time" and to_iana(oh.TimeZoneId) == "Europe/Berlin"
    assert oh.Hours is not None and oh.Hours.Type == "SpecificHours"
    assert [(p.DayOfWeek, p.Start, p.Stop) for p in oh.Hours.Periods][:2] == [
        ("Monday", "08:00:00", "18:00:00"), ("Tuesday", "08:00:00", "18:00:00")]
    assert oh.BreakTime is not None and oh.BreakTime.Periods[0].Start == "12:00:00"
    names = {h.Name: h for h in oh.OfficeHolidays}
    xmas, nye = names["Christmas Day"], names["New Year's Eve"]
    assert (xmas.Day, xmas.Month, xmas.IsRecurrent) == (25, 12, True)
    assert (nye.Year, nye.TimeOfStartDate, nye.TimeOfEndDate) == (2026, "PT12H", "PT24H")
    holidays = await xapi.holidays()
    assert {"Christmas Day", "New Year's Eve", "12-24"} <= {h.Name for h in holidays}


async def test_departments(xapi: XapiClient) -> None:
    groups = await xapi.groups(Query(expand=("Members", "OfficeHolidays"), orderby=("Name",)))
    sales, support = groups
    assert (sales.Name, support.Name) == ("Sales", "Support")
    assert sales.Hours is not None and sales.Hours.Type == "OfficeHours"  # follows the system
    assert sales.CurrentGroupHours == GroupHoursMode.DEFAULT and sales.OverrideExpiresAt is None
    assert sales.OfficeRoute and sales.OfficeRoute.Route and sales.OfficeRoute.Route.Type == "Queue"
    assert sales.OfficeRoute.Route.Number == "810"
    assert [m.Number for m in sales.Members] == ["101", "102"]
    assert support.TimeZoneId == "GMT Standard Time" and support.OverrideHolidays is True
    assert [h.Name for h in support.OfficeHolidays] == ["12-24"]
    # the overnight Saturday range is split at midnight
    assert support.Hours is not None and ("Sunday", "00:00:00", "02:00:00") in [
        (p.DayOfWeek, p.Start, p.Stop) for p in support.Hours.Periods]
    until = datetime(2026, 12, 8, 8, tzinfo=UTC)
    assert support.OverrideExpiresAt == until
    assert support.forced_mode(datetime(2026, 12, 7, 12, tzinfo=UTC)) == GroupHoursMode.FORCE_CLOSED
    assert support.forced_mode(until) == GroupHoursMode.DEFAULT  # expired
    one = await xapi.group(support.Id or 0, Query(select=("Id", "Name")))
    assert one.Name == "Support" and one.Hours is None  # $select honoured
    members = await xapi.group_members(support.Id or 0)
    assert [m.Number for m in members] == ["103", "104"]
    # navigation properties only come when expanded
    bare = await xapi.groups()
    assert all(g.Members == [] for g in bare)


async def test_users_filters_with_hostile_literals(xapi: XapiClient) -> None:
    users = await xapi.users()
    assert [u.Number for u in users] == ["101", "102", "103", "104", "105"]  # 3 pages of 2
    by = {u.Number: u for u in users}
    assert by["102"].CurrentProfileName == "Away" and by["104"].IsRegistered is False
    assert by["104"].QueueStatus == "LoggedOut" and by["105"].HideInPhonebook is True
    assert by["103"].name == "Carla O'Brien" and not by["105"].listed and by["101"].listed
    found = await xapi.users(Query(filter=o.eq("LastName", "O'Brien")))
    assert [u.Number for u in found] == ["103"]
    found = await xapi.users(Query(filter=o.eq(o.tolower("EmailAddress"), "anna.schmidt@example.com")))
    assert [u.Number for u in found] == ["101"]
    # a literal that tries to widen the filter matches nothing
    hostile = "x' or Number ne 'y"
    assert await xapi.users(Query(filter=o.eq("LastName", hostile))) == []
    assert await xapi.users(Query(filter=o.startswith("LastName", "O'B"))) == [by["103"]]
    found = await xapi.users(Query(filter=o.and_(o.startswith("LastName", "S"), o.not_(o.eq("Number", "104")))))
    assert [u.Number for u in found] == ["101"]
    found = await xapi.users(Query(filter=o.or_(o.contains("FirstName", "rl"), o.ne("IsRegistered", True))))
    assert [u.Number for u in found] == ["103", "104"]
    assert (await xapi.user_by_number("103")).LastName == "O'Brien"
    with pytest.raises(NotFoundError):
        await xapi.user_by_number("1'99")
    groups = await xapi.user_groups(by["101"].Id or 0)
    assert [g.Name for g in groups] == ["Sales"]


async def test_paging_order_top_and_count(xapi: XapiClient) -> None:
    before = xapi.requests
    desc = await xapi.users(Query(orderby=("Number desc",)))
    assert [u.Number for u in desc] == ["105", "104", "103", "102", "101"]
    assert xapi.requests - before == 3  # pages of 2, 2, 1
    assert [u.Number for u in await xapi.users(Query(top=3, skip=1))] == ["102", "103", "104"]
    assert await xapi.count("/Users") == 5
    assert await xapi.count("/Users", Query(filter=o.eq("CurrentProfileName", "Available"))) == 3
    pages = [len(p) async for p in xapi.pages("/Users", type(desc[0]))]
    assert pages == [2, 2, 1]


async def test_queues_ring_groups_and_active_calls(emu: Emulator, xapi: XapiClient) -> None:
    queues = await xapi.queues(Query(expand=("Agents",)))
    assert [(q.Number, q.Name, q.PollingStrategy) for q in queues] == [
        ("810", "Sales queue", "RingAll"), ("811", "Support queue", "Hunt")]
    assert [a.Number for a in queues[1].Agents] == ["103", "104"]
    q = await xapi.queue_by_number("811")
    assert q.Id == queues[1].Id and q.Agents == []  # not expanded
    assert [a.Name for a in await xapi.queue_agents(q.Id or 0)] == ["Carla O'Brien", "Dieter Schulz"]
    rings = await xapi.ring_groups(Query(expand=("Members",)))
    assert [(r.Number, [m.Number for m in r.Members]) for r in rings] == [("820", ["101", "105"])]
    assert [m.Number for m in await xapi.ring_group_members(rings[0].Id or 0)] == ["101", "105"]
    assert await xapi.active_calls() == []
    callid = await emu.place_call("+4930123456")
    calls = await xapi.active_calls()
    assert [(c.Id, c.Caller) for c in calls] == [(callid, "+4930123456")]
    assert calls[0].EstablishedAt is not None and calls[0].ServerNow is not None


async def test_version_and_errors(emu: Emulator, xapi: XapiClient) -> None:
    assert await xapi.version() == "20.0.10.999"
    with pytest.raises(PbxError) as err:
        await xapi.get("/Users", Query(extra={"$filter": "Number eq"}))
    assert err.value.status == 400 and "$filter" in err.value.message
    with pytest.raises(NotFoundError):
        await xapi.get("/NoSuchThing")
    async with aiohttp.ClientSession() as s, s.get(emu.url + "/xapi/v1/Users") as resp:
        assert resp.status == 401  # no token


async def test_control_endpoints_change_what_the_api_says(emu: Emulator, xapi: XapiClient) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.put(emu.url + "/_emulator/xapi/users/101", json={"presence": "Away", "registered": False}) as r:
            assert r.status == 200
        async with s.put(emu.url + "/_emulator/xapi/departments/sales/forced",
                         json={"mode": "ForceHoliday", "until": "2026-12-24T00:00:00+01:00"}) as r:
            assert r.status == 200
        async with s.put(emu.url + "/_emulator/xapi/departments/Sales/forced", json={"mode": "Closed"}) as r:
            assert r.status == 400 and "Closed" in (await r.json())["error"]
        async with s.put(emu.url + "/_emulator/xapi/users/999", json={"presence": "Away"}) as r:
            assert r.status == 404
    user = await xapi.user_by_number("101")
    assert (user.CurrentProfileName, user.IsRegistered) == ("Away", False)
    sales = (await xapi.groups(Query(filter=o.eq("Name", "Sales"))))[0]
    assert sales.CurrentGroupHours == "ForceHoliday"
    assert sales.OverrideExpiresAt == datetime(2026, 12, 23, 23, tzinfo=UTC)


async def test_one_token_shared_with_call_control(emu: Emulator) -> None:
    """The emulator revokes a client id's previous token when it issues a new one, like 3CX: a
    second token manager would cut the Call Control client off."""
    async with PbxClient(client_cfg(emu.url)) as pbx:
        xapi = XapiClient.sharing(pbx)
        assert xapi.tokens is pbx.tokens
        assert [u.Number for u in await xapi.users()] == ["101", "102", "103", "104", "105"]
        assert await xapi.version() == "20.0.10.999"
        dns = await pbx.rest.get_all()  # Call Control still works on the same token
        assert {d.dn for d in dns} >= {"800", "101", "105"}
        assert pbx.tokens.refreshes == 1
        assert len([t for t in emu.controller.tokens._tokens.values() if not t.revoked]) == 1
