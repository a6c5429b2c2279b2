"""The emulator's PBX model beyond the route point: extensions with several devices, calls
straight to an extension, queue and IVR DNs, real-PBX habits, and streams over TLS.
Driven over real loopback sockets with raw aiohttp / asyncio (no project client code)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from test_emulator import Events, Wire, ev, make_wire, open_events

from ivr.emulator import DeviceConfig, Emulator, EmulatorConfig, parse_devices
from ivr.emulator.cli import build_parser, config_from_args
from ivr.testing.clock import VirtualTimeLoop

DESK_APP_WEB = [DeviceConfig(kind="desk", direct_control=True), DeviceConfig(kind="app"), DeviceConfig(kind="web")]


async def wait_until(predicate: Any, timeout: float = 3.0) -> Any:
    """Poll ``predicate()`` until truthy (the emulator acts on its own tasks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.01)


async def test_post_stream_aborted_over_tls_closes_its_handle(emulator_factory: Any, tmp_path: Any) -> None:
    """A client that aborts a POST stream over TLS: the stream's handle is closed and logged
    (the SSL transport has dropped its protocol by then; reading it must not skip the cleanup)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    emu: Emulator = await emulator_factory(_ssl_context=server_ctx)
    callid = await emu.place_call("+4930123456")
    token = emu.controller.tokens.issue("900").value
    leg = next(iter(emu.controller.pbx.calls[callid].legs.values()))
    path = f"/callcontrol/800/participants/{leg.id}/stream"
    _, writer = await asyncio.open_connection("127.0.0.1", emu.port, ssl=client_ctx,
                                                   server_hostname="127.0.0.1")
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                 "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    for _ in range(3):
        writer.write(b"140\r\n" + bytes(320) + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
    assert await wait_until(lambda: leg.streams), "the POST stream never opened"
    writer.transport.abort()  # no zero chunk, no TLS close_notify
    closed = await wait_until(lambda: [e for e in emu.call_info(callid)["log"] if e["event"] == "stream_closed"])
    assert closed and closed[0]["how"] == "client" and closed[0]["bytes"] == 960
    assert not leg.streams  # the handle is gone: a later end of the leg has nothing to cut


@pytest.fixture
async def model_wire(emulator_factory: Any) -> Any:
    """Extension 100 has a desk phone (direct control), the app and the web client and does not
    answer by itself; 101 and 102 answer; 103 does not, but its desk phone has direct control;
    104 is busy; a queue 8000 and an IVR 8001 are monitored."""
    emu = await emulator_factory(
        extensions={"100": "no_answer", "101": "answer", "102": "answer", "103": "no_answer", "104": "busy"},
        extension_devices={"100": DESK_APP_WEB, "103": [DeviceConfig(direct_control=True)]},
        queues=["8000"], ivrs=["8001"],
        no_answer_timeout=5, repeat_upserts=False)
    async with aiohttp.ClientSession() as session:
        yield await make_wire(emu, session)


def by_device(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["device_id"]: p for p in parts}


async def test_extension_devices_listed_each_with_its_own_id(model_wire: Wire) -> None:
    w = model_wire
    status, info = await w.get("/callcontrol/100")
    assert status == 200 and [d["user_agent"] for d in info["devices"]] == [
        "Emulated Desk Phone", "3CX App (emulated)", "3CX Web Client (emulated)"]
    ids = [d["device_id"] for d in info["devices"]]
    assert len(set(ids)) == 3 and all(i.startswith("sip:100@") for i in ids)
    for device_id in ids:
        status, dev = await w.get(f"/callcontrol/100/devices/{quote(device_id, safe='')}")
        assert status == 200 and dev["device_id"] == device_id
    status, devs = await w.get("/callcontrol/101/devices")
    assert status == 200 and len(devs) == 1  # the default: one desk phone


async def test_call_to_extension_rings_every_device_and_answer_needs_direct_control(model_wire: Wire) -> None:
    w = model_wire
    events = Events(await open_events(w))
    status, body = await w.ctl("POST", "/calls", {"from": "+4930123456", "to": "100", "name": "Alice"})
    assert status == 201
    callid = body["callid"]
    ringing = [await events.next() for _ in range(3)]
    status, parts = await w.get("/callcontrol/100/participants")
    assert status == 200 and len(parts) == 3 and {ev(m) for m in ringing} == {
        (0, f"/callcontrol/100/participants/{p['id']}") for p in parts}
    desk, app, web = (await w.get("/callcontrol/100"))[1]["devices"]
    legs = by_device(parts)
    assert [legs[d["device_id"]]["direct_control"] for d in (desk, app, web)] == [True, False, False]
    assert all(p["status"] == "Ringing" and p["party_caller_id"] == "+4930123456"
               and p["party_dn_type"] == "Wexternalline" and p["callid"] == callid for p in parts)
    assert w.emu.call_info(callid)["state"] == "ringing"
    for dev in (app, web):
        status, err = await w.post(f"/callcontrol/100/participants/{legs[dev['device_id']]['id']}/answer")
        assert status == 422 and "no direct control" in err["error_description"]
    desk_leg = legs[desk["device_id"]]
    status, res = await w.post(f"/callcontrol/100/participants/{desk_leg['id']}/answer")
    assert status == 200 and res["finalstatus"] == "Success"
    status, parts = await w.get("/callcontrol/100/participants")
    assert [(p["id"], p["status"]) for p in parts] == [(desk_leg["id"], "Connected")]
    info = w.emu.call_info(callid)
    assert info["state"] == "connected" and info["location"] == "100"
    assert {"event": "answered", "dn": "100", "device": desk["device_id"], "by": "api"}.items() <= info["log"][-1].items()
    await events.conn.close()


async def test_call_to_extension_answered_by_its_user_busy_or_unanswered(emulator_factory: Any) -> None:
    emu = await emulator_factory(extensions={"101": "answer", "104": "busy", "105": "no_answer"},
                                 devices=DESK_APP_WEB, repeat_upserts=False)
    answered = await emu.place_call("+4930111", to="101")
    assert len(emu.call_info(answered)["participants"]) == 3
    busy = await emu.place_call("+4930222", to="104")
    unanswered = await emu.place_call("+4930333", to="105")
    info = await wait_until(lambda: emu.call_info(answered)["state"] == "connected" and emu.call_info(answered))
    assert [p["direct_control"] for p in info["participants"]] == [True]  # the desk phone; the others stopped
    info = emu.call_info(busy)
    assert info["state"] == "ended" and not info["participants"]
    assert [e["event"] for e in info["log"]] == ["created", "rejected", "dropped"] and info["log"][-1]["by"] == "busy"
    info = await wait_until(lambda: emu.call_info(unanswered)["state"] == "ended" and emu.call_info(unanswered))
    assert info["log"][-1]["by"] == "no_answer" and not info["participants"]


async def test_divert_routeto_and_drop_on_a_ringing_extension_leg(model_wire: Wire) -> None:
    w = model_wire
    # divert: the ringing devices stop, the destination rings and answers
    callid = await w.emu.place_call("+4930123456", to="100")
    app = (await w.get("/callcontrol/100/participants"))[1][1]
    status, res = await w.post(f"/callcontrol/100/participants/{app['id']}/divert", {"destination": "101"})
    assert status == 200 and res["finalstatus"] == "Success"
    assert (await w.get("/callcontrol/100/participants"))[1] == []
    info = await wait_until(lambda: w.emu.call_info(callid)["location"] == "101" and w.emu.call_info(callid))
    assert [(p["dn"], p["status"]) for p in info["participants"]] == [("101", "Connected")]
    assert info["state"] == "connected"
    # routeto: the ringing leg stays until the destination answers (here: the API answers it
    # on 103's desk phone, which has direct control), then leaves
    callid = await w.emu.place_call("+4930123457", to="100")
    parts = (await w.get("/callcontrol/100/participants"))[1]
    web = parts[2]
    routing = asyncio.ensure_future(
        w.post(f"/callcontrol/100/participants/{web['id']}/routeto", {"destination": "103", "timeout": 5}))
    dest = await wait_until(lambda: w.emu.controller.pbx.dns["103"].legs)
    assert [p["id"] for p in (await w.get("/callcontrol/100/participants"))[1]] == [web["id"]]
    (leg,) = dest.values()
    status, res = await w.post(f"/callcontrol/103/participants/{leg.id}/answer")
    assert status == 200 and res["result"]["status"] == "Connected"
    status, res = await routing
    assert status == 200 and res["finalstatus"] == "Success"
    info = w.emu.call_info(callid)
    assert [(p["dn"], p["status"]) for p in info["participants"]] == [("103", "Connected")]
    assert info["location"] == "103" and info["state"] == "connected"
    # a busy destination refuses and nothing changes: the devices still ring
    callid = await w.emu.place_call("+4930123458", to="100")
    parts = (await w.get("/callcontrol/100/participants"))[1]
    status, res = await w.post(f"/callcontrol/100/participants/{parts[0]['id']}/divert", {"destination": "104"})
    # (an error status or 200, as the transfer answer shape is configured; the same result body)
    assert status in (200, 400) and res["finalstatus"] == "Failed" and res["reason"] == "PhoneBusy"
    assert len((await w.get("/callcontrol/100/participants"))[1]) == 3
    # drop: the call is declined, every device stops ringing
    status, res = await w.post(f"/callcontrol/100/participants/{parts[1]['id']}/drop")
    assert status == 200 and res["finalstatus"] == "Success"
    assert (await w.get("/callcontrol/100/participants"))[1] == []
    assert w.emu.call_info(callid)["state"] == "ended"


async def test_makecall_from_one_device_of_an_extension(model_wire: Wire) -> None:
    w = model_wire
    web = (await w.get("/callcontrol/100"))[1]["devices"][2]
    status, res = await w.post(f"/callcontrol/100/devices/{quote(web['device_id'], safe='')}/makecall",
                               {"destination": "101"})
    assert status == 200 and res["result"]["device_id"] == web["device_id"]
    assert res["result"]["direct_control"] is False and res["result"]["status"] == "Dialing"
    assert (await w.post("/callcontrol/100/devices/sip%3Anope/makecall", {"destination": "101"}))[0] == 404


async def test_queue_and_ivr_dns(model_wire: Wire) -> None:
    w = model_wire
    status, dns = await w.get("/callcontrol")
    types = {d["dn"]: d["type"] for d in dns}
    assert types["8000"] == "Wqueue" and types["8001"] == "Wivr" and types["800"] == "Wroutepoint"
    queue = next(d for d in dns if d["dn"] == "8000")
    assert [d["user_agent"] for d in queue["devices"]] == ["3CX Queue"]
    # an outbound campaign call from the queue's device to an external number
    device = quote(queue["devices"][0]["device_id"], safe="")
    status, res = await w.post(f"/callcontrol/8000/devices/{device}/makecall", {"destination": "+4930555555"})
    assert status == 200 and res["result"]["dn"] == "8000" and res["result"]["status"] == "Dialing"
    callid = res["result"]["callid"]
    await wait_until(lambda: w.emu.call_info(callid)["state"] == "connected")
    pid = res["result"]["id"]
    assert (await w.get(f"/callcontrol/8000/participants/{pid}"))[1]["status"] == "Connected"
    # a caller who dials the IVR's number arrives there like at the route point
    callid = await w.emu.place_call("+4930666666", to="8001")
    parts = (await w.get("/callcontrol/8001/participants"))[1]
    assert [(p["status"], p["callid"]) for p in parts] == [("Connected", callid)]
    bad = EmulatorConfig.model_validate
    with pytest.raises(ValueError, match="queues: DN '101' is also listed in extensions"):
        bad({"extensions": {"101": "answer"}, "queues": ["101"]})
    with pytest.raises(ValueError, match="ivrs: DN '800' is also the route_point"):
        bad({"ivrs": ["800"]})


# --- real-PBX habits, each with the option that turns it off ---------------------------------


async def test_party_did_empty_unless_a_did_was_dialled(emulator_factory: Any) -> None:
    emu = await emulator_factory()
    plain = await emu.place_call("+4930111")
    dialled = await emu.place_call("+4930222", did="+4930999")
    assert [p["party_did"] for p in emu.call_info(plain)["participants"]] == [""]
    assert [p["party_did"] for p in emu.call_info(dialled)["participants"]] == ["+4930999"]
    emu = await emulator_factory(inbound_did="to")
    assert [p["party_did"] for p in emu.call_info(await emu.place_call("+4930333"))["participants"]] == ["800"]


async def test_streams_424_on_a_leg_the_client_does_not_control(emulator_factory: Any) -> None:
    for any_leg in (False, True):
        emu = await emulator_factory(media_on_any_leg=any_leg)
        async with aiohttp.ClientSession() as session:
            w = await make_wire(emu, session)
            callid = await emu.place_call("+4930123456", to="101")  # an extension's ordinary call
            await wait_until(lambda e=emu, c=callid: e.call_info(c)["state"] == "connected")
            pid = emu.call_info(callid)["participants"][0]["id"]
            url = f"{w.url}/callcontrol/101/participants/{pid}/stream"
            async with session.get(url, headers=w.auth) as r:
                assert r.status == (200 if any_leg else 424)
                if not any_leg:
                    assert "only for the application's route point" in (await r.json())["error_description"]
            async with session.post(url, data=b"", headers={**w.auth, "Content-Length": "0"}) as r:
                assert r.status == (200 if any_leg else 424)
            rp = await emu.place_call("+4930123457")  # the route point's own call streams as before
            rp_pid = emu.call_info(rp)["participants"][0]["id"]
            async with session.post(f"{w.url}/callcontrol/800/participants/{rp_pid}/stream", data=b"",
                                    headers={**w.auth, "Content-Length": "0"}) as r:
                assert r.status == 200


async def test_action_with_empty_body_and_attach_party_data(emulator_factory: Any) -> None:
    emu = await emulator_factory(inbound_status="Ringing")
    async with aiohttp.ClientSession() as session:
        w = await make_wire(emu, session)
        callid = await emu.place_call("+4930123456")
        pid = (await w.rp_participant())["id"]
        base = f"{w.url}/callcontrol/800/participants/{pid}"
        async with session.post(f"{base}/answer", headers=w.auth) as r:  # no body, no Content-Type
            assert r.status == 200 and (await r.json())["result"]["status"] == "Connected"
        status, res = await w.post(f"/callcontrol/800/participants/{pid}/attach_party_data",
                                   {"attacheddata": {"ticket": "42"}})
        assert status == 200 and res["finalstatus"] == "Success" and "attacheddata" not in res["result"]
        assert {"event": "party_attached", "dn": "800", "data": {"ticket": "42"}}.items() <= emu.call_info(callid)["log"][-1].items()
        status, err = await w.post(f"/callcontrol/800/participants/{pid}/attach_party_data")
        assert status == 400 and "attach_party_data" in err["error_description"]
    emu = await emulator_factory(accept_empty_action_body=False)
    async with aiohttp.ClientSession() as session:
        w = await make_wire(emu, session)
        await emu.place_call("+4930123456")
        pid = (await w.rp_participant())["id"]
        async with session.post(f"{w.url}/callcontrol/800/participants/{pid}/drop", headers=w.auth) as r:
            assert r.status == 400 and "JSON object" in (await r.json())["error_description"]


async def test_upserts_repeat_by_default_while_participants_exist(emulator_factory: Any) -> None:
    assert EmulatorConfig().repeat_upserts and EmulatorConfig().repeat_interval == 0.75
    emu = await emulator_factory(repeat_interval=0.05)
    async with aiohttp.ClientSession() as session:
        w = await make_wire(emu, session)
        events = Events(await open_events(w))
        callid = await emu.place_call("+4930123456")
        path = f"/callcontrol/800/participants/{(await w.rp_participant())['id']}"
        assert [ev(m) for m in await events.take(3)] == [(0, path)] * 3  # one change, then repeats
        await emu.hangup(callid)
        assert ev(await events.until(lambda m: m.event.event_type == 1)) == (1, path)
        with pytest.raises(asyncio.TimeoutError):  # no participant left: nothing repeats
            await events.next(timeout=0.3)
        await events.conn.close()


def test_idle_emulator_on_a_virtual_clock_runs_no_repeat_rounds() -> None:
    """An idle emulator arms no timer: a virtual-clock test that waits long does not spin
    through repeat rounds (800 of them in 10 virtual minutes at 750 ms)."""
    rounds = 0

    async def main() -> float:
        nonlocal rounds
        emu = Emulator(EmulatorConfig())
        real = emu.controller.pbx.repeat_upserts

        def counting() -> None:
            nonlocal rounds
            rounds += 1
            real()

        emu.controller.pbx.repeat_upserts = counting  # type: ignore[method-assign]
        async with emu.running():
            loop = asyncio.get_running_loop()
            start = loop.time()
            await asyncio.sleep(600)
            idle_rounds = rounds
            callid = await emu.place_call("+4930123456")
            await asyncio.sleep(3.0)  # 4 rounds while the call exists
            await emu.hangup(callid)
            await asyncio.sleep(600)
            assert idle_rounds == 0
            return loop.time() - start

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        assert runner.run(main()) >= 1203
    assert rounds == 4


def test_cli_devices_queues_ivrs_and_habit_switches() -> None:
    assert parse_devices("desk:direct,app,web") == (None, DESK_APP_WEB)
    assert parse_devices("100=web") == ("100", [DeviceConfig(kind="web")])
    with pytest.raises(ValueError, match="'phone'"):
        parse_devices("phone")
    with pytest.raises(ValueError, match="':direct'"):
        parse_devices("desk:remote")
    args = build_parser().parse_args([
        "--extensions", "100-102", "--devices", "desk", "--devices", "100=desk:direct,app,web",
        "--queues", "8000", "--ivrs", "8001,8002", "--no-repeat-upserts", "--inbound-did", "to",
        "--media-on-any-leg", "--reject-empty-action-body"])
    cfg = config_from_args(args)
    assert cfg.devices_of("100") == DESK_APP_WEB and cfg.devices_of("101") == [DeviceConfig()]
    assert cfg.queues == ["8000"] and cfg.ivrs == ["8001", "8002"]
    assert not cfg.repeat_upserts and cfg.inbound_did == "to" and cfg.media_on_any_leg
    assert not cfg.accept_empty_action_body
    cfg = config_from_args(build_parser().parse_args([]))
    assert cfg.repeat_upserts and cfg.inbound_did == "dialled" and cfg.accept_empty_action_body
    with pytest.raises(ValueError, match="'200' is not in --extensions"):
        config_from_args(build_parser().parse_args(["--devices", "200=web"]))
    with pytest.raises(ValueError, match=r"^queues: DN '100' is also listed in extensions$"):
        config_from_args(build_parser().parse_args(["--queues", "100"]))
