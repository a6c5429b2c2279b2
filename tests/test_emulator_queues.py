"""Calls waiting at the emulator's queues (issue 16): the queue takes a call at once, it waits
oldest first, the oldest rings the queue's available agents (ring all), an agent answers.
Call Control (participants on the Wqueue DN, events) and the Configuration API
(``/xapi/v1/ActiveCalls``) tell the same story from the one PBX model.

Driven over real loopback sockets with raw aiohttp / websockets (no project client code).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_emulator import Events, Wire, ev, make_wire, open_events
from test_emulator_model import wait_until

from ivr.emulator import Emulator, EmulatorConfig
from ivr.emulator.xapi import load_description

PBX_YAML = """\
users:
  - {number: "101", first_name: Anna, last_name: Schmidt, answer: no_answer}
  - {number: "102", first_name: Ben, last_name: Okafor, answer: no_answer}
  - {number: "103", first_name: Carla, last_name: Berg, presence: Away}
  - {number: "104", first_name: Dieter, last_name: Schulz, queue_status: LoggedOut}
  - {number: "105", first_name: Eva, last_name: Meyer, registered: false}
  - {number: "106", first_name: Frank, last_name: Paul}
queues:
  - {number: "810", name: Sales queue, agents: ["101", "102", "103", "104", "105"], ring_timeout: 0}
  - {number: "811", name: Small queue, agents: ["106"], max_callers: 1}
"""


@pytest.fixture
async def queue_wire(tmp_path: Path) -> AsyncIterator[Wire]:
    path = tmp_path / "pbx.yaml"
    path.write_text(PBX_YAML, encoding="utf-8")
    emu = Emulator(EmulatorConfig(ring_seconds=0.1, no_answer_timeout=5, repeat_upserts=False),
                   pbx=load_description(path))
    await emu.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield await make_wire(emu, session)
    finally:
        await emu.stop()


async def active_calls(w: Wire) -> dict[int, dict[str, Any]]:
    status, body = await w.get("/xapi/v1/ActiveCalls")
    assert status == 200, body
    return {c["Id"]: c for c in body["value"]}


def ringing_at(w: Wire, dn: str) -> list[int]:
    """Callids ringing at extension ``dn``."""
    return [leg.call.callid for leg in w.emu.controller.pbx.dns[dn].legs.values() if leg.status == "Ringing"]


async def test_three_callers_wait_and_an_agent_answers_one(queue_wire: Wire) -> None:
    w = queue_wire
    events = Events(await open_events(w))
    calls = []
    for n in range(3):
        status, body = await w.ctl("POST", "/calls", {"from": f"+493012345{n}", "to": "810"})
        assert status == 201
        calls.append(body["callid"])
    first, second, third = calls

    # Call Control: three Connected legs on the queue's DN, one per caller
    status, parts = await w.get("/callcontrol/810/participants")
    assert status == 200 and sorted(p["callid"] for p in parts) == calls
    assert all(p["status"] == "Connected" and p["party_caller_id"].startswith("+49") for p in parts)
    queue_legs = {p["callid"]: p["id"] for p in parts}
    # the oldest rings every available agent at once; Away, logged out, unregistered ones never ring
    assert ringing_at(w, "101") == [first] and ringing_at(w, "102") == [first]
    assert all(not w.emu.controller.pbx.dns[dn].legs for dn in ("103", "104", "105"))
    status, agent_legs = await w.get("/callcontrol/101/participants")
    assert agent_legs[0]["on_behalf_of_dn"] == "810" and agent_legs[0]["on_behalf_of_type"] == "Wqueue"
    assert w.emu.queues()["810"] == [
        {"callid": first, "from": "+4930123450", "waited": pytest.approx(0, abs=10), "ringing": ["101", "102"]},
        {"callid": second, "from": "+4930123451", "waited": pytest.approx(0, abs=10), "ringing": []},
        {"callid": third, "from": "+4930123452", "waited": pytest.approx(0, abs=10), "ringing": []},
    ]

    # the Configuration API says the same: three calls waiting at "810 Sales queue"
    listed = await active_calls(w)
    assert sorted(listed) == calls
    assert {(c["Callee"], c["Status"]) for c in listed.values()} == {("810 Sales queue", "Routing")}
    assert all(c["LastChangeStatus"] and c["ServerNow"] and c["EstablishedAt"] for c in listed.values())
    info = w.emu.call_info(first)
    assert info["queue"] == {"dn": "810", "position": 1, "waited": pytest.approx(0, abs=10), "ringing": ["101", "102"]}

    # agent 101 takes the oldest call; 102 stops ringing for it and rings for the next
    status, body = await w.ctl("POST", "/extensions/101/answer")
    assert status == 200 and body == {"dn": "101", "callid": first}
    removed = await events.until(lambda m: ev(m) == (1, f"/callcontrol/810/participants/{queue_legs[first]}"))
    assert removed.event.attached_data is None
    status, parts = await w.get("/callcontrol/810/participants")
    assert sorted(p["callid"] for p in parts) == [second, third]
    status, agent_legs = await w.get("/callcontrol/101/participants")
    assert [(p["callid"], p["status"]) for p in agent_legs] == [(first, "Connected")]
    assert await wait_until(lambda: ringing_at(w, "102") == [second])
    assert ringing_at(w, "101") == []  # on a call: busy for the queue
    listed = await active_calls(w)
    assert (listed[first]["Status"], listed[first]["Callee"]) == ("Talking", "101 Anna Schmidt")
    assert [listed[c]["Status"] for c in (second, third)] == ["Routing", "Routing"]
    log = [e for e in w.emu.call_info(first)["log"] if e["event"] in ("queued", "agent_ringing", "answered")]
    assert [(e["event"], e.get("dn") or e.get("agent") or e.get("queue")) for e in log] == [
        ("answered", "810"), ("queued", "810"), ("agent_ringing", "101"), ("agent_ringing", "102"), ("answered", "101")]
    assert w.emu.call_info(first)["queue"] is None and w.emu.call_info(first)["location"] == "101"

    # nothing rings at 103: a second answer there is refused
    status, body = await w.ctl("POST", "/extensions/103/answer")
    assert status == 409 and "no call is ringing" in body["error_description"]
    await events.conn.close()


async def test_a_caller_who_hangs_up_leaves_the_queue(queue_wire: Wire) -> None:
    w = queue_wire
    ids = [(await w.ctl("POST", "/calls", {"from": f"+49301234{n}", "to": "810"}))[1]["callid"] for n in range(2)]
    assert ringing_at(w, "101") == [ids[0]]
    status, _ = await w.ctl("POST", f"/calls/{ids[0]}/hangup")
    assert status == 200
    # its agents' legs go, and the next caller rings them
    assert await wait_until(lambda: ringing_at(w, "101") == [ids[1]] and ringing_at(w, "102") == [ids[1]])
    assert sorted(await active_calls(w)) == [ids[1]]
    assert [e["event"] for e in w.emu.call_info(ids[0])["log"]][-2:] == ["left_queue", "dropped"]


async def test_routeto_a_queue_is_delivered_when_the_queue_takes_the_call(queue_wire: Wire) -> None:
    """routeto answers 200 at once (the queue takes the call, as a destination that answers),
    the route point's leg goes, and the call waits there; a full queue is busy and the route
    point keeps the call."""
    w = queue_wire
    status, body = await w.ctl("POST", "/calls", {"from": "+4930123456"})
    callid = body["callid"]
    leg = await w.rp_participant()
    status, res = await w.post(f"/callcontrol/800/participants/{leg['id']}/routeto", {"destination": "811"})
    assert status == 200 and res["finalstatus"] == "Success"
    assert (await w.get("/callcontrol/800/participants"))[1] == []
    status, parts = await w.get("/callcontrol/811/participants")
    assert [(p["callid"], p["status"], p["referred_by_dn"]) for p in parts] == [(callid, "Connected", "800")]
    info = w.emu.call_info(callid)
    assert info["location"] == "811" and info["queue"]["dn"] == "811"
    assert [e["event"] for e in info["log"]][-3:] == ["routed", "queued", "agent_ringing"]
    # 106 answers by itself (answer) after ring_seconds: the queue's call reaches it
    assert await wait_until(lambda: w.emu.call_info(callid)["location"] == "106")
    assert (await active_calls(w))[callid]["Status"] == "Talking"

    # 811 takes one caller at a time: with 106 on a call the next waits, the one after is busy
    waiting = (await w.ctl("POST", "/calls", {"from": "+4930123457", "to": "811"}))[1]["callid"]
    assert w.emu.call_info(waiting)["queue"]["dn"] == "811"
    status, body = await w.ctl("POST", "/calls", {"from": "+4930123458"})
    leg = await w.rp_participant()
    status, res = await w.post(f"/callcontrol/800/participants/{leg['id']}/routeto", {"destination": "811"})
    assert status == 400 and res["reason"] == "PhoneBusy"
    assert (await w.rp_participant())["id"] == leg["id"]  # still with the route point
    # a caller dialling the full queue straight is rejected busy
    status, body = await w.ctl("POST", "/calls", {"from": "+4930123459", "to": "811"})
    assert w.emu.call_info(body["callid"])["state"] == "ended"
    assert w.emu.call_info(body["callid"])["log"][-1] == {"t": pytest.approx(0, abs=10), "event": "dropped", "by": "busy"}


async def test_agents_follow_presence_and_queue_status_changes(queue_wire: Wire) -> None:
    w = queue_wire
    callid = (await w.ctl("POST", "/calls", {"from": "+4930123456", "to": "810"}))[1]["callid"]
    assert ringing_at(w, "103") == []
    async with w.s.put(w.url + "/_emulator/xapi/users/103", json={"presence": "Available"}) as r:
        assert r.status == 200
    assert await wait_until(lambda: ringing_at(w, "103") == [callid])  # back: rung for the waiting call
    async with w.s.put(w.url + "/_emulator/xapi/users/101", json={"queue_status": "LoggedOut"}) as r:
        assert r.status == 200
    status, _ = await w.ctl("POST", "/calls", {"from": "+4930123457", "to": "810"})
    status, _ = await w.ctl("POST", "/calls", {"from": "+4930123458", "to": "810"})
    await w.ctl("POST", "/extensions/103/answer")  # 103 takes the first; 101 logged out is not rung again
    nxt = w.emu.queues()["810"][0]["callid"]
    assert await wait_until(lambda: ringing_at(w, "102") == [nxt])
    assert ringing_at(w, "101") == []  # logged out: not rung for the next call
    # an agent who answers by itself picks up after ring_seconds
    status, _ = await w.ctl("PUT", "/extensions/102", {"behaviour": "answer"})
    assert status == 200
    assert await wait_until(lambda: w.emu.call_info(nxt)["location"] == "102")


async def test_an_agent_who_declines_is_not_rung_again_this_round(queue_wire: Wire) -> None:
    w = queue_wire
    callid = (await w.ctl("POST", "/calls", {"from": "+4930123456", "to": "810"}))[1]["callid"]
    status, legs = await w.get("/callcontrol/101/participants")
    status, res = await w.post(f"/callcontrol/101/participants/{legs[0]['id']}/drop")
    assert status == 200 and res["reasontext"] == "Dropped"
    assert ringing_at(w, "101") == [] and ringing_at(w, "102") == [callid]
    assert w.emu.call_info(callid)["state"] == "connected" and w.emu.call_info(callid)["queue"]["ringing"] == ["102"]
    assert any(e["event"] == "agent_declined" and e["agent"] == "101" for e in w.emu.call_info(callid)["log"])


async def test_a_ring_round_ends_after_the_queues_ring_timeout(tmp_path: Path) -> None:
    path = tmp_path / "pbx.yaml"
    path.write_text(PBX_YAML.replace("ring_timeout: 0", "ring_timeout: 1"), encoding="utf-8")
    emu = Emulator(EmulatorConfig(ring_seconds=0.1, repeat_upserts=False), pbx=load_description(path))
    await emu.start()
    try:
        callid = await emu.place_call("+4930123456", to="810")
        first = {leg.id for leg in emu.controller.pbx.dns["101"].legs.values()}
        assert len(first) == 1

        def rounds() -> int:
            return sum(e["event"] == "agents_no_answer" for e in emu.call_info(callid)["log"])

        assert await wait_until(lambda: rounds() == 1, timeout=5)
        again = {leg.id for leg in emu.controller.pbx.dns["101"].legs.values()}
        assert len(again) == 1 and again != first  # rung again in the next round, as a new leg
        assert emu.call_info(callid)["queue"]["ringing"] == ["101", "102"]
    finally:
        await emu.stop()


async def test_xapi_unavailable_fault_leaves_call_control_working(queue_wire: Wire) -> None:
    w = queue_wire
    status, body = await w.ctl("POST", "/faults", {"xapi_unavailable": {"seconds": 60}})
    assert status == 200 and body == {"fault": "xapi_unavailable", "affected": 0}
    status, body = await w.get("/xapi/v1/ActiveCalls")
    assert status == 503 and "emulator fault" in body["error"]["message"]
    assert (await w.get("/callcontrol/810/participants"))[0] == 200
    status, body = await w.ctl("POST", "/faults", {"xapi_unavailable": {"seconds": 0}})
    assert (await w.get("/xapi/v1/ActiveCalls"))[0] == 200
    status, body = await w.ctl("POST", "/faults", {"xapi_unavailable": {"seconds": -1}})
    assert status == 400


def test_cli_serves_the_descriptions_queues_as_queue_dns(tmp_path: Path) -> None:
    from ivr.emulator.cli import build_parser, config_from_args, description_from_args

    path = tmp_path / "pbx.yaml"
    path.write_text(PBX_YAML, encoding="utf-8")
    args = build_parser().parse_args(["--pbx-config", str(path), "--queues", "8000,810"])
    cfg = config_from_args(args, description_from_args(args))
    assert cfg.queues == ["8000", "810", "811"]
    args = build_parser().parse_args(["--pbx-config", str(path), "--route-point", "810"])
    with pytest.raises(ValueError, match=r"^queues: DN '810' is also the route_point$"):
        config_from_args(args, description_from_args(args))


async def test_transferto_and_divert_to_a_queue(queue_wire: Wire) -> None:
    """A blind transfer of a connected call and a divert of a ringing one are delivered the
    same way: the queue takes the call, the leg that acted is gone, the call waits."""
    w = queue_wire
    callid = (await w.ctl("POST", "/calls", {"from": "+4930123456"}))[1]["callid"]
    leg = await w.rp_participant()
    status, res = await w.post(f"/callcontrol/800/participants/{leg['id']}/transferto", {"destination": "810"})
    assert status == 200 and res["finalstatus"] == "Success"
    info = w.emu.call_info(callid)
    assert info["queue"]["dn"] == "810" and info["held"] is False
    assert [e["event"] for e in info["log"] if e["event"] in ("held", "transferred", "queued")] == [
        "held", "transferred", "queued"]

    w.emu.config.inbound_status = "Ringing"
    callid = (await w.ctl("POST", "/calls", {"from": "+4930123457"}))[1]["callid"]
    leg = await w.rp_participant()
    assert leg["status"] == "Ringing"
    status, res = await w.post(f"/callcontrol/800/participants/{leg['id']}/divert", {"destination": "810"})
    assert status == 200 and res["finalstatus"] == "Success"
    assert w.emu.call_info(callid)["queue"] == {"dn": "810", "position": 2, "waited": pytest.approx(0, abs=10),
                                                "ringing": []}
    assert [c["callid"] for c in w.emu.queues()["810"]][1] == callid
