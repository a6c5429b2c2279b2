"""The emulator's /xapi/v1 over HTTP: the PBX description (its checks, one model with Call
Control), create/update/delete with the API's status codes, PATCH /OfficeHours, the OData
envelope and errors, and `ivr emulator --pbx-config`."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from xapi_helpers import PBX_YAML, description, write_description

from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.cli import build_parser, config_from_args, description_from_args
from ivr.emulator.xapi import PbxDescriptionError, load_description


class Api:
    """A raw HTTP client with a Bearer token, as any XAPI client is."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.s, self.url, self.h = session, url + "/xapi/v1", {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.s.request(method, self.url + path, json=body, headers=self.h) as r:
            text = await r.text()
            return r.status, (await r.json() if text else None)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Emulator, Api]]:
    emu = Emulator(EmulatorConfig(), pbx=description(tmp_path))
    await emu.start()
    async with aiohttp.ClientSession() as s:
        async with s.post(emu.url + "/connect/token", data={"client_id": "900", "client_secret": "secret"}) as r:
            token = (await r.json())["access_token"]
        yield emu, Api(s, emu.url, token)
    await emu.stop()


async def test_users_are_the_call_control_extensions(api: tuple[Emulator, Api]) -> None:
    emu, _ = api
    assert emu.config.extensions == {"101": "answer", "102": "answer", "103": "answer", "104": "busy", "105": "answer"}
    async with aiohttp.ClientSession() as s, s.get(emu.url + "/_emulator/extensions") as r:
        assert await r.json() == {"101": "answer", "102": "answer", "103": "answer", "104": "busy", "105": "answer"}


async def test_default_emulator_serves_its_extensions_as_users() -> None:
    async with Emulator(EmulatorConfig(extensions={"200": "answer", "201": "busy"})).running() as emu:
        store = emu.xapi
        assert sorted(u["Number"] for u in store.users.values()) == ["200", "201"]


async def test_user_crud_and_memberships(api: tuple[Emulator, Api]) -> None:
    _, a = api
    status, user = await a.call("POST", "/Users", {})
    assert status == 201 and user["Number"] == "106" and isinstance(user["Id"], int)  # after the highest
    uid = user["Id"]
    status, body = await a.call("POST", "/Users", {"Number": "101"})
    assert status == 400 and body["error"]["message"] == "Number:\nWARNINGS.XAPI.ALREADY_IN_USE"
    assert (await a.call("PATCH", f"/Users({uid})", {"Number": "106", "FirstName": "Zoe"}))[0] == 204
    status, body = await a.call("PATCH", f"/Users({uid})", {"Number": "100"})
    assert status == 400 and "Number" in body["error"]["message"]
    status, body = await a.call("PATCH", f"/Users({uid})", {"FirstName": 5})
    assert status == 400 and body["error"]["message"].startswith("FirstName:")
    status, groups = await a.call("GET", "/Groups?$select=Id,Name")
    sales = next(g["Id"] for g in groups["value"] if g["Name"] == "Sales")
    patch = {"Groups": [{"GroupId": sales, "Rights": {"RoleName": "managers"}}]}
    assert (await a.call("PATCH", f"/Users({uid})", patch))[0] == 204
    status, members = await a.call("GET", f"/Groups({sales})/Members")
    assert [(m["Number"], m["Rights"]["RoleName"]) for m in members["value"]] == [
        ("101", "users"), ("102", "users"), ("106", "managers")]
    status, one = await a.call("GET", "/Users(Number='106')")
    assert status == 200 and one["FirstName"] == "Zoe" and one["DisplayName"] == "Zoe"
    assert [g["Name"] for g in one["Groups"]] == ["Sales"] and "ForwardingProfiles" not in one
    assert (await a.call("PATCH", f"/Groups({sales})", {"Members": [{"Number": "102"}]}))[0] == 204
    status, mine = await a.call("GET", f"/Users({uid})/Groups")
    assert mine["value"] == []
    assert (await a.call("DELETE", f"/Users({uid})"))[0] == 204
    status, body = await a.call("GET", f"/Users({uid})")
    assert status == 404 and "not found" in body["error"]["message"]
    assert (await a.call("DELETE", f"/Users({uid})"))[0] == 404


async def test_groups_queues_ring_groups_holidays_crud(api: tuple[Emulator, Api]) -> None:
    _, a = api
    status, body = await a.call("POST", "/Groups", {})
    assert status == 400 and "Name" in body["error"]["message"]
    status, g = await a.call("POST", "/Groups", {"Name": "Group 1", "Members": [{"Number": "103"}]})
    assert status == 201 and g["Number"] and [m["Number"] for m in g["Members"]] == ["103"]
    assert g["CurrentGroupHours"] == "Default" and g["Hours"]["Type"] == "OfficeHours"
    assert (await a.call("PATCH", f"/Groups({g['Id']})", {"CurrentGroupHours": "ForceBreak"}))[0] == 204
    assert (await a.call("PATCH", f"/Groups({g['Id']})", {"CurrentGroupHours": "Lunch"}))[0] == 400
    assert (await a.call("PATCH", f"/Groups({g['Id']})", {"Number": "100"}))[0] == 400
    assert (await a.call("DELETE", f"/Groups({g['Id']})"))[0] == 204

    status, q = await a.call("POST", "/Queues", {"AnnouncementInterval": 50, "Agents": [{"Number": "101"}]})
    assert status == 201 and q["Number"] == "812" and q["AnnouncementInterval"] == 50
    assert [x["Number"] for x in q["Agents"]] == ["101"]
    status, got = await a.call("GET", "/Queues(Number='812')?$expand=Agents")
    assert got["Agents"][0]["Name"] == "Anna Schmidt"
    assert (await a.call("PATCH", f"/Queues({q['Id']})", {"Agents": [{"Number": "nobody"}]}))[0] == 400
    assert (await a.call("DELETE", f"/Queues({q['Id']})"))[0] == 204

    status, r = await a.call("POST", "/RingGroups", {"Name": "RG"})
    assert status == 201 and r["Name"] == "RG" and r["Number"] == "821"
    assert (await a.call("PATCH", f"/RingGroups({r['Id']})", {"Number": r["Number"], "RingTime": 30}))[0] == 204
    assert (await a.call("GET", f"/RingGroups({r['Id']})"))[1]["RingTime"] == 30
    assert (await a.call("DELETE", f"/RingGroups({r['Id']})"))[0] == 204

    status, h = await a.call("POST", "/Holidays", {"Name": "Boxing Day", "Day": 26, "Month": 12, "IsRecurrent": True})
    assert status == 201 and (h["DayEnd"], h["MonthEnd"]) == (26, 12)
    status, oh = await a.call("GET", "/OfficeHours?$expand=OfficeHolidays")
    assert "Boxing Day" in [x["Name"] for x in oh["OfficeHolidays"]]
    assert (await a.call("PATCH", f"/Holidays({h['Id']})", {"Name": "St Stephen's Day"}))[0] == 204
    assert (await a.call("POST", "/Holidays", {"Name": "no day"}))[0] == 400
    assert (await a.call("DELETE", f"/Holidays({h['Id']})"))[0] == 204
    status, oh = await a.call("GET", "/OfficeHours?$expand=OfficeHolidays")
    assert "St Stephen's Day" not in [x["Name"] for x in oh["OfficeHolidays"]]


async def test_patch_office_hours(api: tuple[Emulator, Api]) -> None:
    _, a = api
    hours = {"Type": "SpecificHours", "IgnoreHolidays": False,
             "Periods": [{"DayOfWeek": "Saturday", "Start": "10:00:00", "Stop": "14:00:00"}]}
    assert (await a.call("PATCH", "/OfficeHours", {"Hours": hours, "TimeZoneId": "Tokyo Standard Time",
                                                   "OfficeHolidays": []}))[0] == 204
    status, oh = await a.call("GET", "/OfficeHours")
    assert oh["Hours"] == hours and oh["TimeZoneId"] == "Tokyo Standard Time" and "OfficeHolidays" not in oh
    status, body = await a.call("PATCH", "/OfficeHours", {"TimeZoneId": "Mars Standard Time"})
    assert status == 400 and "TimeZoneId" in body["error"]["message"]
    assert (await a.call("PATCH", "/OfficeHours", {"Hours": "always"}))[0] == 400
    assert (await a.call("DELETE", "/OfficeHours"))[0] == 405


async def test_envelope_select_count_and_errors(api: tuple[Emulator, Api]) -> None:
    _, a = api
    status, body = await a.call("GET", "/Users?$select=Number&$filter=Number ne '101'&$top=2&$count=true")
    assert status == 200 and body["@odata.context"].endswith("/xapi/v1/$metadata#Users")
    assert body["@odata.count"] == 4 and body["value"] == [{"Number": "102"}, {"Number": "103"}]
    status, body = await a.call("GET", "/Users?$filter=startswith(Number,")
    assert status == 400 and set(body["error"]) == {"code", "message"}
    assert (await a.call("GET", "/Users?$top=many"))[0] == 400
    assert (await a.call("GET", "/Users(abc)"))[0] == 400
    assert (await a.call("GET", "/Whatever"))[0] == 404
    assert (await a.call("PUT", "/Users"))[0] == 405
    async with aiohttp.ClientSession() as s:
        async with s.patch(a.url + "/OfficeHours", data=b"{not json", headers=a.h) as r:
            assert r.status == 400
        async with s.get(a.url + "/Defs?$select=Id", headers=a.h) as r:
            assert r.status == 200 and r.headers["X-3CX-Version"] == "20.0.10.999"
        async with s.get(a.url + "/Users", headers={"Authorization": "Bearer forged"}) as r:
            assert r.status == 401


def test_description_errors_name_the_file_and_field(tmp_path: Path) -> None:
    cases = {
        "users: [{number: '101'}, {number: '101'}]": "number '101' is given to two users",
        "departments: [{name: S, members: ['999']}]": "member '999' is not a user",
        "departments: [{name: S, forced: Closed}]": "departments.0.forced.mode: forced mode 'Closed'",
        "system: {hours: {mon-fri: '8-18'}}": "system.hours: bad time '8' (use HH:MM)",
        "system: {timezone: Mars/Base}": "system.timezone: unknown time zone",
        "users: [{number: '101', colour: red}]": "users.0.colour",
        "queues: [{number: '810', agents: ['1']}]": "agent '1' is not a user",
        "system: {holidays: ['2026-13-01']}": "bad date",
        "system: [": "pbx.yaml:1:",
        "- a list": "must be a mapping",
    }
    for text, expected in cases.items():
        with pytest.raises(PbxDescriptionError) as err:
            load_description(write_description(tmp_path, text))
        assert str(err.value).startswith(str(tmp_path / "pbx.yaml")) and expected in str(err.value), (text, err.value)
    with pytest.raises(PbxDescriptionError) as err:
        load_description(write_description(tmp_path, "users:\n  - number: '101'\n    colour: red\n"))
    assert str(err.value) == f"{tmp_path / 'pbx.yaml'}:3:5: users.0.colour: Extra inputs are not permitted"
    with pytest.raises(PbxDescriptionError, match="cannot read"):
        load_description(tmp_path / "missing.yaml")


def test_cli_pbx_config_sets_the_extensions(tmp_path: Path) -> None:
    path = write_description(tmp_path)
    args = build_parser().parse_args(["--pbx-config", str(path), "--no-answer", "105"])
    pbx = description_from_args(args)
    cfg = config_from_args(args, pbx)
    assert cfg.extensions == {"101": "answer", "102": "answer", "103": "answer", "104": "busy", "105": "no_answer"}
    args = build_parser().parse_args(["--pbx-config", str(path), "--extensions", "100-102"])
    with pytest.raises(ValueError, match="--extensions and --pbx-config"):
        description_from_args(args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ivr_emulator_pbx_config_process(tmp_path: Path) -> None:
    """The real `ivr emulator --pbx-config` process serves the description; a bad file is one line, exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("departments: [{name: S, members: ['9']}]\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "emulator", "--pbx-config", str(bad), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and err.decode().count("\n") == 1 and "member '9' is not a user" in err.decode()

    port = _free_port()
    path = write_description(tmp_path, PBX_YAML)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "emulator", "--pbx-config", str(path), "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"extensions 101,102,103,104,105" in line
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/connect/token", data={"client_id": "900", "client_secret": "secret"}) as r:
                token = (await r.json())["access_token"]
            async with s.get(url + "/xapi/v1/Queues(Number='811')?$expand=Agents",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                body = await r.json()
        assert body["Name"] == "Support queue" and [x["Number"] for x in body["Agents"]] == ["103", "104"]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_explicit_extensions_beside_a_description_are_users_too(tmp_path: Path) -> None:
    """One model: an extension the config names but the description does not becomes a bare user,
    and a configured behaviour wins over the description's `answer`."""
    emu = Emulator(EmulatorConfig(extensions={"101": "no_answer", "300": "answer"}), pbx=description(tmp_path))
    store = emu.xapi
    assert emu.config.extensions == {"101": "no_answer", "300": "answer"}
    assert {u["Number"] for u in store.users.values()} == {"101", "102", "103", "104", "105", "300"}
    assert next(u for u in emu.pbx_description.users if u.number == "101").answer == "no_answer"
