"""The emulator's transfers as 3CX documents them (``RouteToAsync``), over raw loopback HTTP.

By default routeto/divert/transferto answer when the destination answers (200 ``Success``, the
route point's leg replaced) or when it failed (an HTTP error status with the usual result body,
the route point's leg alive and back with the IVR). The other shapes are options.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import numpy as np
import websockets
from test_emulator import Events, ev, make_wire, open_events, tone

from ivr.emulator.cli import build_parser, config_from_args


async def test_routeto_blocks_until_answered_and_a_later_drop_keeps_the_call(emulator_factory: Any) -> None:
    emu = await emulator_factory(ring_seconds=0.4, no_answer_timeout=5)
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        callid = await emu.place_call("+4930123456")
        p = await w.rp_participant()
        rp_path = f"/callcontrol/800/participants/{p['id']}"
        t0 = time.monotonic()
        status, res = await w.post(rp_path + "/routeto", {"destination": "101"})
        assert time.monotonic() - t0 >= 0.35  # answered when 101 answered, not at once
        assert status == 200 and (res["finalstatus"], res["reasontext"]) == ("Success", "Connected")
        assert (await w.get(rp_path))[0] == 404  # the answering leg replaced ours
        _, ext = await w.get("/callcontrol/101/participants")
        assert ext[0]["status"] == "Connected" and ext[0]["callid"] == callid
        # 3CX's own IVR example drops the route point's leg after a successful routeto: cleanup only
        status, _ = await w.post(rp_path + "/drop")
        assert status == 404
        info = emu.call_info(callid)
        assert info["state"] == "connected" and info["location"] == "101"
        await emu.speak(callid, tone(0.1))  # the caller keeps talking to the extension
        assert emu.call_info(callid)["state"] == "connected"


async def test_a_failed_routeto_is_an_error_status_and_the_leg_stays_with_its_streams(emulator_factory: Any) -> None:
    emu = await emulator_factory(extensions={"101": "busy", "102": "no_answer", "103": "not_registered"})
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        callid = await emu.place_call("+4930123456")
        p = await w.rp_participant()
        rp_path = f"/callcontrol/800/participants/{p['id']}"
        headers = {**w.auth, "Content-Type": "application/octet-stream"}
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def body() -> Any:
            while (chunk := await queue.get()) is not None:
                yield chunk

        post = asyncio.ensure_future(s.post(w.url + rp_path + "/stream", data=body(), headers=headers))
        await asyncio.sleep(0.05)
        for dest, reason in (("101", "PhoneBusy"), ("103", "PhoneNotRegistered"), ("999", "NotFound")):
            status, res = await w.post(rp_path + "/routeto", {"destination": dest})
            assert status == 400, (dest, status, res)
            assert (res["finalstatus"], res["reason"], res["result"]["id"]) == ("Failed", reason, p["id"])
        t0 = time.monotonic()
        status, res = await w.post(rp_path + "/routeto", {"destination": "102", "timeout": 1})
        assert time.monotonic() - t0 >= 0.95  # it rang for the route's own timeout
        assert status == 400 and res["reason"] == "NoAnswer"
        assert (await w.rp_participant())["status"] == "Connected"  # back with the IVR
        queue.put_nowait(tone(0.2, 600).astype("<i2").tobytes())  # the stream opened before still plays
        await asyncio.sleep(0.4)
        queue.put_nowait(None)
        await post
        assert np.abs(emu.heard_pcm(callid)).max() > 1000
        results = [(e["destination"], e["result"]) for e in emu.call_info(callid)["log"] if e["event"] == "routed"]
        assert results == [("101", "busy"), ("103", "not_registered"), ("999", "not_found"), ("102", "no_answer")]


async def test_the_caller_hanging_up_while_it_rings_answers_the_waiting_request(emulator_factory: Any) -> None:
    emu = await emulator_factory(extensions={"102": "no_answer"}, no_answer_timeout=30)
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        callid = await emu.place_call("+4930123456")
        p = await w.rp_participant()
        routing = asyncio.ensure_future(w.post(f"/callcontrol/800/participants/{p['id']}/routeto", {"destination": "102"}))
        await asyncio.sleep(0.2)
        assert not routing.done()
        await emu.hangup(callid)
        _, ringing = await w.get("/callcontrol/102/participants")
        assert [leg["callid"] for leg in ringing] == [callid]  # the phone is cancelled a moment later
        status, res = await asyncio.wait_for(routing, 2)
        await asyncio.sleep(0.15)
        assert (await w.get("/callcontrol/102/participants"))[1] == []
        assert status == 400 and (res["finalstatus"], res["reason"]) == ("Failed", "NotSpecified")
        assert emu.call_info(callid)["state"] == "ended"


async def test_transferto_and_divert_follow_the_same_model(emulator_factory: Any) -> None:
    emu = await emulator_factory(inbound_status="Ringing", extensions={"101": "answer", "102": "no_answer"})
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        callid = await emu.place_call("+4930123456")
        p = await w.rp_participant()
        rp_path = f"/callcontrol/800/participants/{p['id']}"
        status, res = await w.post(rp_path + "/divert", {"destination": "102", "timeout": 1})
        assert status == 400 and res["reason"] == "NoAnswer"
        assert (await w.rp_participant())["status"] == "Ringing"  # the ringing leg is still ours
        await w.post(rp_path + "/answer")
        watch = asyncio.ensure_future(_held_while_ringing(emu, callid))
        status, res = await w.post(rp_path + "/transferto", {"destination": "102", "timeout": 1})
        assert await watch is True  # held while 102 rang
        assert status == 400 and res["reason"] == "NoAnswer"
        info = emu.call_info(callid)
        assert info["held"] is False and info["location"] == "800"  # the held party came back
        status, res = await w.post(rp_path + "/transferto", {"destination": "101"})
        assert status == 200 and res["finalstatus"] == "Success"
        assert emu.call_info(callid)["location"] == "101"


async def _held_while_ringing(emu: Any, callid: int) -> bool:
    await asyncio.sleep(0.3)
    return bool(emu.call_info(callid)["held"])


async def test_failure_as_200_failed_and_the_dialing_shape_are_options(emulator_factory: Any) -> None:
    emu = await emulator_factory(extensions={"101": "busy", "102": "answer"}, transfer_failure="failed")
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        await emu.place_call("+4930123456")
        p = await w.rp_participant()
        rp_path = f"/callcontrol/800/participants/{p['id']}"
        status, res = await w.post(rp_path + "/routeto", {"destination": "101"})
        assert status == 200 and (res["finalstatus"], res["reason"]) == ("Failed", "PhoneBusy")
        # switched over the control API: answered at once, the outcome follows as events
        status, settings = await w.ctl("PUT", "/settings", {"transfer_answer": "dialing"})
        assert status == 200 and settings == {
            "transfer_answer": "dialing", "transfer_failure": "failed", "transfer_error_status": 400}
        events = Events(await open_events(w))
        t0 = time.monotonic()
        status, res = await w.post(rp_path + "/routeto", {"destination": "102"})
        assert time.monotonic() - t0 < 0.09 and (status, res["reasontext"]) == (200, "Dialing")
        await events.until(lambda m: ev(m) == (1, rp_path))
        await events.conn.close()
        assert (await w.ctl("PUT", "/settings", {"ring_seconds": 1}))[0] == 400
        status, err = await w.ctl("PUT", "/settings", {"transfer_error_status": 200})
        assert status == 400 and "transfer_error_status" in err["error_description"]


async def test_a_routeto_over_the_event_socket_is_answered_when_settled(emulator_factory: Any) -> None:
    emu = await emulator_factory(extensions={"101": "busy"}, transfer_error_status=409)
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        await emu.place_call("+4930123456")
        p = await w.rp_participant()
        path = f"/callcontrol/800/participants/{p['id']}/routeto"
        async with websockets.connect(w.url.replace("http", "ws") + "/callcontrol/ws",
                                      additional_headers=w.auth) as conn:
            await conn.send(json.dumps({"RequestID": "7", "Path": path, "RequestData": '{"destination": "101"}'}))
            while True:
                msg = json.loads(await asyncio.wait_for(conn.recv(), 2))
                if msg["event"]["event_type"] == 4:
                    break
        data = msg["event"]["attached_data"]
        assert data["StatusCode"] == 409 and json.loads(data["Response"])["reason"] == "PhoneBusy"


def test_cli_flags_choose_the_transfer_shape() -> None:
    args = build_parser().parse_args(["--transfer-answer", "dialing", "--transfer-failure", "failed",
                                      "--transfer-error-status", "500", "--not-registered", "103"])
    cfg = config_from_args(args)
    assert (cfg.transfer_answer, cfg.transfer_failure, cfg.transfer_error_status) == ("dialing", "failed", 500)
    assert cfg.extensions["103"] == "not_registered"
    default = config_from_args(build_parser().parse_args([]))
    assert (default.transfer_answer, default.transfer_failure, default.transfer_error_status) == ("blocking", "error", 400)


