"""office_status: the PBX's own hours, read from the emulator over loopback - each forced mode
and its expiry, holidays (recurrent, with hours, a department's own), break time, a department
that follows the system's schedule, one with its own schedule, zone and an overnight range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from xapi_helpers import client_cfg, description

from ivr.emulator import Emulator, EmulatorConfig
from ivr.pbx.xapi import Group, OfficeHours, Query, Schedule, XapiClient, office_status
from ivr.pbx.xapi import odata as o

BERLIN, LONDON = ZoneInfo("Europe/Berlin"), ZoneInfo("Europe/London")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def london(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # type: ignore[misc]


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[tuple[Emulator, XapiClient]]:
    emu = Emulator(EmulatorConfig(), pbx=description(tmp_path))
    await emu.start()
    async with XapiClient.standalone(client_cfg(emu.url)) as xapi:
        yield emu, xapi
    await emu.stop()


async def read(xapi: XapiClient, name: str) -> tuple[OfficeHours, Group]:
    groups = await xapi.groups(Query(filter=o.eq("Name", name), expand=("OfficeHolidays",)))
    return await xapi.office_hours(), groups[0]


async def test_system_schedule_break_and_holidays(pbx: tuple[Emulator, XapiClient]) -> None:
    _, xapi = pbx
    oh = await xapi.office_hours()
    cases = {
        berlin(2026, 11, 23, 10): "open",  # Monday morning
        berlin(2026, 11, 23, 12, 30): "break",
        berlin(2026, 11, 23, 18): "closed",  # the end is exclusive
        berlin(2026, 11, 21, 10): "closed",  # Saturday
        berlin(2026, 12, 25, 10): "holiday",  # Christmas, every year (a Friday in 2026)
        berlin(2027, 12, 24, 10): "open",  # the 24th is only Support's
        berlin(2026, 12, 31, 11, 59): "open",  # New Year's Eve is a holiday from noon
        berlin(2026, 12, 31, 12): "holiday",
    }
    got = {at: office_status(oh, at) for at in cases}
    assert {at: s.state if s else None for at, s in got.items()} == cases
    assert got[berlin(2026, 12, 31, 12)].holiday.Name == "New Year's Eve"  # type: ignore[union-attr]
    # the same instant seen from another zone is still Berlin's wall clock
    assert office_status(oh, datetime(2026, 11, 23, 7, 30, tzinfo=UTC)).state == "open"  # type: ignore[union-attr]
    assert office_status(oh, datetime(2026, 11, 23, 6, 30, tzinfo=UTC)).state == "closed"  # type: ignore[union-attr]


async def test_department_following_the_system_and_each_forced_mode(pbx: tuple[Emulator, XapiClient]) -> None:
    emu, xapi = pbx
    oh, sales = await read(xapi, "Sales")
    assert office_status(oh, berlin(2026, 11, 23, 10), sales).state == "open"  # type: ignore[union-attr]
    assert office_status(oh, berlin(2026, 11, 23, 12, 30), sales).state == "open"  # type: ignore[union-attr]
    # Sales has no break ("Never"): the system's 12-13 break does not apply to it
    assert sales.BreakTime is not None and sales.BreakTime.Type == "Never"
    assert office_status(oh, berlin(2026, 12, 25, 10), sales).state == "holiday"  # type: ignore[union-attr]
    sunday = berlin(2026, 11, 22, 10)
    expected = {"ForceOpened": "open", "ForceClosed": "closed", "ForceBreak": "break", "ForceHoliday": "holiday",
                "ForceCustomOperator": "closed"}
    async with aiohttp.ClientSession() as s:
        for mode, state in expected.items():
            async with s.put(emu.url + "/_emulator/xapi/departments/Sales/forced", json={"mode": mode}) as r:
                assert r.status == 200
            _, sales = await read(xapi, "Sales")
            status = office_status(oh, sunday, sales)
            assert status is not None and (status.state, status.forced) == (state, mode)
        async with s.put(emu.url + "/_emulator/xapi/departments/Sales/forced",
                         json={"mode": "ForceOpened", "until": "2026-11-22T10:00:00+01:00"}) as r:
            assert r.status == 200
    _, sales = await read(xapi, "Sales")
    before = office_status(oh, berlin(2026, 11, 22, 9, 59), sales)
    after = office_status(oh, sunday, sales)  # the override expired: Sunday is closed again
    assert before is not None and before.state == "open" and after is not None and (after.state, after.forced) == ("closed", None)


async def test_department_with_its_own_schedule_zone_holidays_and_overnight_hours(pbx: tuple[Emulator, XapiClient]) -> None:
    _, xapi = pbx
    oh, support = await read(xapi, "Support")
    forced = office_status(oh, datetime(2026, 12, 7, 12, tzinfo=UTC), support)
    assert forced is not None and (forced.state, forced.forced) == ("closed", "ForceClosed")
    cases = {
        london(2026, 12, 8, 8): "open",  # the override ended at 08:00 UTC; own hours from 07:00 London
        london(2026, 12, 9, 7): "open",
        london(2026, 12, 9, 6, 59): "closed",
        london(2026, 12, 8, 12, 30): "break",  # break: system -> 12-13 on Support's wall clock
        london(2026, 12, 8, 19, 30): "open",
        london(2026, 12, 24, 10): "holiday",  # its own holidays ...
        london(2026, 12, 25, 10): "open",  # ... instead of the system's
        london(2026, 12, 12, 23): "open",  # Saturday 22:00-02:00
        london(2026, 12, 13, 1, 30): "open",
        london(2026, 12, 13, 2): "closed",
    }
    got = {at: office_status(oh, at, support) for at in cases}
    assert {at: s.state if s else None for at, s in got.items()} == cases


def test_unknown_settings_and_bad_input() -> None:
    oh = OfficeHours(Hours=Schedule(Type="SpecificHours"), TimeZoneId="Mars Standard Time")
    assert office_status(oh, datetime(2026, 1, 1, tzinfo=UTC)) is None  # unknown zone
    assert office_status(OfficeHours(TimeZoneId="UTC"), datetime(2026, 1, 1, tzinfo=UTC)) is None  # no hours
    always = OfficeHours(Hours=Schedule(Type="AllHours"), TimeZoneId="UTC")
    assert office_status(always, datetime(2026, 1, 1, tzinfo=UTC)).state == "open"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="aware"):
        office_status(always, datetime(2026, 1, 1))
