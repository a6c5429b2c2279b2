"""The 3CX emulator driven over real loopback sockets with raw aiohttp / websockets."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest
import soundfile
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ivr.emulator import Emulator, EmulatorConfig, parse_extensions
from ivr.emulator.cli import build_parser, config_from_args, main
from ivr.pbx.models import WsMessage

AUTH_ERROR = {"error": "unauthorized", "error_description": "The request requires valid user authentication."}
CREDS = {"client_id": "900", "client_secret": "secret", "grant_type": "client_credentials"}


# --- helpers -----------------------------------------------------------------------------------


class Wire:
    """A raw HTTP client of the emulator (no project client code)."""

    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu, self.s, self.url = emu, session, emu.url
        self.token = ""

    async def login(self) -> str:
        async with self.s.post(self.url + "/connect/token", data=CREDS) as r:
            assert r.status == 200
            self.token = (await r.json())["access_token"]
        return self.token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.s.get(self.url + path, headers=self.auth) as r:
            return r.status, await r.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.s.post(self.url + path, json={} if body is None else body, headers=self.auth) as r:
            return r.status, await r.json()

    async def ctl(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.s.request(method, self.url + "/_emulator" + path, json=body) as r:
            return r.status, await r.json()

    async def rp_participant(self) -> dict[str, Any]:
        status, parts = await self.get("/callcontrol/800/participants")
        assert status == 200 and len(parts) == 1
        return parts[0]


@pytest.fixture
async def wire(emulator: Emulator) -> Any:
    async with aiohttp.ClientSession() as session:
        w = Wire(emulator, session)
        await w.login()
        yield w


async def make_wire(emu: Emulator, session: aiohttp.ClientSession) -> Wire:
    w = Wire(emu, session)
    await w.login()
    return w


class Events:
    """A websockets connection to /callcontrol/ws collecting parsed messages."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def next(self, timeout: float = 2.0) -> WsMessage:
        return WsMessage.model_validate_json(await asyncio.wait_for(self.conn.recv(), timeout))

    async def take(self, n: int, timeout: float = 2.0) -> list[WsMessage]:
        return [await self.next(timeout) for _ in range(n)]

    async def until(self, pred: Any, timeout: float = 2.0) -> WsMessage:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            msg = await self.next(max(0.01, deadline - asyncio.get_running_loop().time()))
            if pred(msg):
                return msg


async def open_events(w: Wire) -> Any:
    ws_url = w.url.replace("http://", "ws://") + "/callcontrol/ws"
    return await websockets.connect(ws_url, additional_headers=w.auth)


def ev(msg: WsMessage) -> tuple[int, str]:
    return msg.event.event_type, msg.event.entity


def tone(seconds: float, freq: float = 440.0, amp: float = 0.5, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    soundfile.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def loud_spans(pcm: np.ndarray, frame: int = 80, threshold: int = 1000) -> list[tuple[float, float]]:
    """(start, end) seconds of non-silent regions, at 10 ms resolution."""
    n = len(pcm) // frame
    loud = np.abs(pcm[: n * frame].reshape(n, frame)).max(axis=1) > threshold
    spans, start = [], None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        if not on and start is not None:
            spans.append((start * frame / 8000, i * frame / 8000))
            start = None
    if start is not None:
        spans.append((start * frame / 8000, n * frame / 8000))
    return spans


def jwt_payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- authentication ----------------------------------------------------------------------------


async def test_token_form_urlencoded_and_multipart(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(emulator.url + "/connect/token", data=CREDS) as r:
            assert r.status == 200
            body = await r.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 60 and body["refresh_token"] is None
        header, payload, sig = body["access_token"].split(".")
        assert header and sig
        claims = jwt_payload(body["access_token"])
        assert claims["client_id"] == "900" and claims["exp"] - claims["iat"] == 3600

        form = aiohttp.FormData()
        for k, v in CREDS.items():
            form.add_field(k, v, content_type="text/plain")  # forces multipart/form-data
        async with s.post(emulator.url + "/connect/token", data=form) as r:
            assert r.request_info.headers["Content-Type"].startswith("multipart/form-data")
            assert r.status == 200
            assert (await r.json())["access_token"].count(".") == 2


async def test_token_errors(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(emulator.url + "/connect/token", data={**CREDS, "client_secret": "nope"}) as r:
            assert r.status == 401 and await r.json() == AUTH_ERROR
        async with s.post(emulator.url + "/connect/token", json=CREDS) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_request"
        async with s.post(emulator.url + "/connect/token", data={**CREDS, "grant_type": "password"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "unsupported_grant_type"


async def test_bearer_required_everywhere(wire: Wire) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        for method, path in (("GET", "/callcontrol"), ("GET", "/callcontrol/800"),
                             ("POST", "/callcontrol/800/makecall"), ("GET", "/callcontrol/800/participants/1/stream")):
            async with wire.s.request(method, wire.url + path, headers=headers, json={}) as r:
                assert r.status == 401, (method, path, headers)
                assert await r.json() == AUTH_ERROR
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(wire.url.replace("http", "ws") + "/callcontrol/ws")
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body) == AUTH_ERROR


async def test_new_token_revokes_previous_and_cuts_its_streams(wire: Wire) -> None:
    await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    old = wire.auth
    resp = await wire.s.get(f"{wire.url}/callcontrol/800/participants/{pid}/stream", headers=old)
    assert resp.status == 200
    await resp.content.readexactly(320)
    await wire.login()  # a new token for the same client
    assert (await wire.get("/callcontrol"))[0] == 200
    async with wire.s.get(wire.url + "/callcontrol", headers=old) as r:
        assert r.status == 401 and await r.json() == AUTH_ERROR
    with pytest.raises(aiohttp.ClientPayloadError):  # cut, not ended cleanly
        await asyncio.wait_for(resp.content.read(), 2)
    resp.release()


async def test_keep_previous_tokens_option_and_expiry(emulator_factory: Any) -> None:
    emu = await emulator_factory(revoke_previous_tokens=False, token_lifetime=0.4)
    async with aiohttp.ClientSession() as s:
        first = await make_wire(emu, s)
        old = first.token
        await first.login()
        assert jwt_payload(old)["exp"] - jwt_payload(old)["iat"] == pytest.approx(0.4)
        async with s.get(emu.url + "/callcontrol", headers={"Authorization": f"Bearer {old}"}) as r:
            assert r.status == 200  # not revoked by the second token
        await asyncio.sleep(0.5)
        status, body = await first.get("/callcontrol")
        assert status == 401 and body == AUTH_ERROR  # expired


# --- REST endpoints ----------------------------------------------------------------------------


async def test_dn_device_and_participant_endpoints(wire: Wire) -> None:
    status, dns = await wire.get("/callcontrol")
    assert status == 200
    types = {d["dn"]: d["type"] for d in dns}
    assert types == {"800": "Wroutepoint", **{str(n): "Wextension" for n in range(100, 106)}}
    rp = next(d for d in dns if d["dn"] == "800")
    device = rp["devices"][0]
    assert device["device_id"].startswith("sip:800@127.0.0.1:5483;rinstance=")

    assert (await wire.get("/callcontrol/800"))[1]["type"] == "Wroutepoint"
    assert (await wire.get("/callcontrol/800/devices"))[1] == [device]
    assert (await wire.get(f"/callcontrol/800/devices/{quote(device['device_id'], safe='')}"))[1] == device
    assert (await wire.get("/callcontrol/nope"))[0] == 404
    assert (await wire.get("/callcontrol/800/devices/sip%3A1%40x"))[0] == 404
    assert (await wire.get("/callcontrol/800/participants"))[1] == []

    callid = await wire.emu.place_call("+4930123456", name="Alice", did="+4930999")
    p = await wire.rp_participant()
    assert p["status"] == "Connected" and p["dn"] == "800" and p["callid"] == callid
    assert p["party_caller_id"] == "+4930123456" and p["party_caller_name"] == "Alice"
    assert p["party_did"] == "+4930999" and p["party_dn_type"] == "Wexternalline"
    assert p["device_id"] == device["device_id"] and p["legid"] != p["id"]
    assert (await wire.get(f"/callcontrol/800/participants/{p['id']}"))[1] == p
    assert (await wire.get("/callcontrol/800"))[1]["participants"] == [p]
    status, body = await wire.get("/callcontrol/800/participants/999")
    assert status == 404 and "999" in body["error_description"]
    # a participant that exists but sits on another DN
    status, body = await wire.get(f"/callcontrol/101/participants/{p['id']}")
    assert status == 403 and "not controlled by DN '101'" in body["error_description"]
    assert (await wire.post(f"/callcontrol/101/participants/{p['id']}/drop"))[0] == 403


async def test_action_body_must_be_json(wire: Wire) -> None:
    await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    url = f"{wire.url}/callcontrol/800/participants/{pid}/attach_participant_data"
    async with wire.s.post(url, headers=wire.auth) as r:  # empty body, no Content-Type: taken as {}
        assert r.status == 400 and "'attacheddata' object required" in (await r.json())["error_description"]
    async with wire.s.post(url, data=b"x=1", headers={**wire.auth, "Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with wire.s.post(url, data=b"{nope", headers={**wire.auth, "Content-Type": "application/json"}) as r:
        assert r.status == 400
    assert (await wire.post(f"/callcontrol/800/participants/{pid}/hold"))[0] == 404
    status, body = await wire.post(f"/callcontrol/800/participants/{pid}/routeto", {"destination": 5})
    assert status == 400 and "destination" in body["error_description"]


async def test_answer_rules(emulator_factory: Any) -> None:
    emu = await emulator_factory(inbound_status="Ringing", extensions={"101": "no_answer"}, transfer_answer="dialing", transfer_failure="failed")
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        events = Events(await open_events(w))
        await emu.place_call("+4930123456")
        p = await w.rp_participant()
        assert p["status"] == "Ringing"
        assert ev(await events.next()) == (0, f"/callcontrol/800/participants/{p['id']}")
        status, res = await w.post(f"/callcontrol/800/participants/{p['id']}/answer")
        assert status == 200 and res["finalstatus"] == "Success"
        assert (await w.rp_participant())["status"] == "Connected"
        assert ev(await events.next()) == (0, f"/callcontrol/800/participants/{p['id']}")
        status, body = await w.post(f"/callcontrol/800/participants/{p['id']}/answer")
        assert status == 422 and "not Ringing" in body["error_description"]
        # a ringing extension leg without direct control cannot be answered remotely
        await w.post(f"/callcontrol/800/participants/{p['id']}/routeto", {"destination": "101"})
        _, ext = await w.get("/callcontrol/101/participants")
        assert ext[0]["status"] == "Ringing"
        status, body = await w.post(f"/callcontrol/101/participants/{ext[0]['id']}/answer")
        assert status == 422 and "direct control" in body["error_description"]
        await events.conn.close()


# --- routing -----------------------------------------------------------------------------------


async def test_routeto_answering_extension(wire: Wire) -> None:
    wire.emu.set_transfer_shape(transfer_answer="dialing", transfer_failure="failed")  # the shape that answers at once: the events tell the rest
    events = Events(await open_events(wire))
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    rp_path = f"/callcontrol/800/participants/{p['id']}"
    assert ev(await events.next()) == (0, rp_path)
    status, res = await wire.post(rp_path + "/routeto", {"destination": "101"})
    assert status == 200
    assert (res["finalstatus"], res["reason"], res["reasontext"]) == ("Success", "NotSpecified", "Dialing")
    assert res["result"]["id"] == p["id"]
    upsert_ring = await events.next()
    assert upsert_ring.event.event_type == 0 and upsert_ring.event.entity.startswith("/callcontrol/101/participants/")
    _, ring = await wire.get(upsert_ring.event.entity)
    assert ring["status"] == "Ringing" and ring["party_caller_id"] == "+4930123456"
    assert ring["referred_by_dn"] == "800"
    assert ev(await events.next()) == (1, rp_path)  # the route point's leg leaves
    assert ev(await events.next()) == (0, upsert_ring.event.entity)
    _, answered = await wire.get(upsert_ring.event.entity)
    assert answered["status"] == "Connected" and answered["callid"] == callid
    assert (await wire.get(rp_path))[0] == 404
    info = wire.emu.call_info(callid)
    assert info["location"] == "101" and info["state"] == "connected"
    assert {"event": "routed", "destination": "101", "result": "answered"}.items() <= info["log"][-1].items()
    await events.conn.close()


async def test_routeto_busy_unknown_and_no_answer(wire: Wire) -> None:
    wire.emu.set_transfer_shape(transfer_answer="dialing", transfer_failure="failed")
    wire.emu.set_behaviour("102", "busy")
    assert (await wire.ctl("PUT", "/extensions/103", {"behaviour": "no_answer"})) == (
        200, {"dn": "103", "behaviour": "no_answer"})
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    rp_path = f"/callcontrol/800/participants/{p['id']}"
    status, res = await wire.post(rp_path + "/routeto", {"destination": "102"})
    assert status == 200 and (res["finalstatus"], res["reason"]) == ("Failed", "PhoneBusy")
    status, res = await wire.post(rp_path + "/routeto", {"destination": "999"})
    assert status == 200 and (res["finalstatus"], res["reason"]) == ("Failed", "NotFound")

    events = Events(await open_events(wire))
    t0 = time.monotonic()
    status, res = await wire.post(rp_path + "/routeto", {"destination": "103"})  # config timeout 0.3 s
    assert res["finalstatus"] == "Success"
    ring = await events.next()
    assert ring.event.entity.startswith("/callcontrol/103/")
    assert (await wire.post(rp_path + "/routeto", {"destination": "101"}))[0] == 422  # one offer at a time
    assert ev(await events.next()) == (1, ring.event.entity)  # offer withdrawn
    assert ev(await events.next()) == (0, rp_path)  # the caller stays on the route point
    assert 0.25 < time.monotonic() - t0 < 1.5
    assert (await wire.rp_participant())["status"] == "Connected"
    results = [(e["destination"], e["result"]) for e in wire.emu.call_info(callid)["log"] if e["event"] == "routed"]
    assert results == [("102", "busy"), ("999", "not_found"), ("103", "no_answer")]
    await events.conn.close()


async def test_transferto_holds_then_resumes_or_transfers(wire: Wire) -> None:
    wire.emu.set_transfer_shape(transfer_answer="dialing", transfer_failure="failed")
    wire.emu.set_behaviour("103", "no_answer")
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    rp_path = f"/callcontrol/800/participants/{p['id']}"
    status, _ = await wire.post(rp_path + "/transferto", {"destination": "103", "timeout": 1})
    assert status == 200
    assert wire.emu.call_info(callid)["held"] is True
    await asyncio.sleep(1.2)
    info = wire.emu.call_info(callid)
    assert info["held"] is False and info["location"] == "800"
    assert [e["event"] for e in info["log"]][-3:] == ["held", "transferred", "resumed"]
    status, _ = await wire.post(rp_path + "/transferto", {"destination": "104"})
    assert status == 200
    await asyncio.sleep(0.3)
    info = wire.emu.call_info(callid)
    assert info["location"] == "104" and info["log"][-1]["result"] == "answered"


async def test_transferto_and_divert_status_rules(emulator_factory: Any) -> None:
    emu = await emulator_factory(inbound_status="Ringing", transfer_answer="dialing", transfer_failure="failed")
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        events = Events(await open_events(w))
        callid = await emu.place_call("+4930123456")
        p = await w.rp_participant()
        rp_path = f"/callcontrol/800/participants/{p['id']}"
        await events.next()
        status, body = await w.post(rp_path + "/transferto", {"destination": "101"})
        assert status == 422 and "Connected" in body["error_description"]
        status, res = await w.post(rp_path + "/divert", {"destination": "101", "reason": "NoAnswer"})
        assert status == 200 and res["finalstatus"] == "Success"
        ring = await events.next()
        assert ring.event.entity.startswith("/callcontrol/101/")
        assert ev(await events.next()) == (1, rp_path)  # replaced once the destination answers
        assert ev(await events.next()) == (0, ring.event.entity)
        assert (await w.get(ring.event.entity))[1]["status"] == "Connected"
        assert emu.call_info(callid)["log"][-1]["event"] == "diverted"

        await emu.place_call("+4930555")
        p2 = await w.rp_participant()
        await w.post(f"/callcontrol/800/participants/{p2['id']}/answer")
        status, _ = await w.post(f"/callcontrol/800/participants/{p2['id']}/divert", {"destination": "101"})
        assert status == 422
        await events.conn.close()


async def test_makecall_from_device_and_dn(wire: Wire) -> None:
    events = Events(await open_events(wire))
    _, dev = await wire.get("/callcontrol/800/devices")
    device = quote(dev[0]["device_id"], safe="")
    status, res = await wire.post(f"/callcontrol/800/devices/{device}/makecall", {"destination": "101"})
    assert status == 200 and res["finalstatus"] == "Success"
    leg = res["result"]
    assert leg["status"] == "Dialing" and leg["dn"] == "800" and leg["party_dn"] == "101"
    rp_path = f"/callcontrol/800/participants/{leg['id']}"
    assert ev(await events.next()) == (0, rp_path)
    ring = await events.next()
    assert ring.event.entity.startswith("/callcontrol/101/")
    assert (await wire.get(ring.event.entity))[1]["status"] == "Ringing"
    got = {ev(m) for m in await events.take(2)}
    assert got == {(0, rp_path), (0, ring.event.entity)}
    assert (await wire.get(rp_path))[1]["status"] == "Connected"
    info = wire.emu.call_info(leg["callid"])
    assert info["direction"] == "outbound" and info["state"] == "connected"
    await wire.emu.send_dtmf(leg["callid"], "5")  # controllable like an inbound call
    assert (await events.next()).event.attached_data == {"dtmf_input": "5"}

    status, res = await wire.post("/callcontrol/800/makecall", {"destination": "+4930777777"})
    assert res["finalstatus"] == "Success" and res["result"]["party_dn_type"] == "Wexternalline"
    ext_path = f"/callcontrol/800/participants/{res['result']['id']}"
    await asyncio.sleep(0.25)
    assert (await wire.get(ext_path))[1]["status"] == "Connected"

    status, res = await wire.post("/callcontrol/800/makecall", {"destination": "42"})
    assert status == 200 and (res["finalstatus"], res["reason"]) == ("Failed", "NotFound")
    wire.emu.set_behaviour("104", "busy")
    status, res = await wire.post("/callcontrol/800/makecall", {"destination": "104"})
    assert (res["finalstatus"], res["reason"]) == ("Failed", "PhoneBusy")
    assert (await wire.post("/callcontrol/800/devices/sip%3Ax/makecall", {"destination": "101"}))[0] == 404
    assert (await wire.post("/callcontrol/800/makecall", {}))[0] == 400
    await events.conn.close()


async def test_drop_ends_call_and_streams(wire: Wire) -> None:
    events = Events(await open_events(wire))
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    rp_path = f"/callcontrol/800/participants/{p['id']}"
    await events.next()
    async with wire.s.get(wire.url + rp_path + "/stream", headers=wire.auth) as stream:
        assert stream.status == 200
        await stream.content.readexactly(320)
        status, res = await wire.post(rp_path + "/drop")
        assert status == 200 and res["finalstatus"] == "Success"
        assert ev(await events.next()) == (1, rp_path)
        rest = await asyncio.wait_for(stream.content.read(), 2)  # ends cleanly
        assert len(rest) % 320 == 0
    assert (await wire.get(rp_path))[0] == 404
    info = wire.emu.call_info(callid)
    assert info["state"] == "ended"
    assert [e["by"] for e in info["log"] if e["event"] == "dropped"] == ["api:800"]


async def test_attach_participant_data(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    path = f"/callcontrol/800/participants/{p['id']}"
    status, _ = await wire.post(path + "/attach_participant_data", {"attacheddata": {"lang": "de"}})
    assert status == 200
    assert (await wire.get(path))[1]["attacheddata"] == {"lang": "de"}
    assert wire.emu.call_info(callid)["attached_data"] == {"lang": "de"}
    assert (await wire.post(path + "/attach_participant_data", {}))[0] == 400


# --- event socket ------------------------------------------------------------------------------


async def test_ws_sequence_dtmf_and_socket_requests(wire: Wire) -> None:
    events = Events(await open_events(wire))
    callid = await wire.emu.place_call("+4930123456")
    p = await wire.rp_participant()
    rp_path = f"/callcontrol/800/participants/{p['id']}"
    status, body = await wire.ctl("POST", f"/calls/{callid}/dtmf", {"digits": "12#"})
    assert (status, body) == (200, {"sent": 3})
    msgs = await events.take(4)
    assert [m.sequence for m in msgs] == [1, 2, 3, 4]
    assert [(m.event.event_type, m.event.entity) for m in msgs[1:]] == [(2, rp_path)] * 3
    assert [m.event.dtmf_digits for m in msgs[1:]] == ["1", "2", "#"]
    await events.conn.send(json.dumps({"RequestID": "r1", "Path": "/callcontrol/800", "RequestData": ""}))
    reply = await events.next()
    assert reply.sequence == 5 and reply.event.event_type == 4
    data = reply.event.attached_data
    assert data is not None and data["RequestID"] == "r1" and data["StatusCode"] == 200
    assert json.loads(data["Response"])["participants"][0]["id"] == p["id"]
    await events.conn.send(json.dumps({"RequestID": "r2", "Path": "/callcontrol/nope", "RequestData": ""}))
    assert (await events.next()).event.attached_data["StatusCode"] == 404
    await events.conn.send(json.dumps({"RequestID": "r3", "Path": rp_path + "/attach_participant_data",
                                       "RequestData": json.dumps({"attacheddata": {"k": "v"}})}))
    got = await events.take(2)  # the Upsert of the change and the Response, in that order
    assert ev(got[0]) == (0, rp_path) and got[1].event.attached_data["StatusCode"] == 200
    status, body = await wire.ctl("POST", f"/calls/{callid}/dtmf", {"digits": "1x"})
    assert status == 400 and "digits" in body["error_description"]
    await events.conn.close()


async def test_ws_dtmf_interval(wire: Wire) -> None:
    events = Events(await open_events(wire))
    callid = await wire.emu.place_call("+4930123456")
    await events.next()
    t0 = time.monotonic()
    await wire.ctl("POST", f"/calls/{callid}/dtmf", {"digits": "123", "interval_ms": 100})
    assert 0.18 < time.monotonic() - t0 < 1.0
    assert [m.event.dtmf_digits for m in await events.take(3)] == ["1", "2", "3"]
    await events.conn.close()


async def test_ws_repeated_upserts(emulator_factory: Any) -> None:
    emu = await emulator_factory(repeat_upserts=True, repeat_interval=0.1)
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        events = Events(await open_events(w))
        await emu.place_call("+4930123456")
        p = await w.rp_participant()
        msgs = await events.take(4, timeout=1.0)
        assert {ev(m) for m in msgs} == {(0, f"/callcontrol/800/participants/{p['id']}")}
        assert [m.sequence for m in msgs] == [1, 2, 3, 4]
        await events.conn.close()


# --- audio streams -----------------------------------------------------------------------------


async def test_get_stream_424_before_media(emulator_factory: Any) -> None:
    emu = await emulator_factory(inbound_status="Ringing")
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        await emu.place_call("+4930123456")
        pid = (await w.rp_participant())["id"]
        async with s.get(f"{w.url}/callcontrol/800/participants/{pid}/stream", headers=w.auth) as r:
            assert r.status == 424 and "no media" in (await r.json())["error_description"]
        async with s.post(f"{w.url}/callcontrol/800/participants/{pid}/stream", data=b"\0" * 320,
                          headers=w.auth) as r:
            assert r.status == 424


async def test_get_stream_real_time_with_caller_speech(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    async with wire.s.get(f"{wire.url}/callcontrol/800/participants/{pid}/stream", headers=wire.auth) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
        chunk_sizes: list[int] = []
        received = bytearray()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        spoken = False
        while loop.time() - t0 < 1.0:
            data, _ = await r.content.readchunk()
            chunk_sizes.append(len(data))
            received += data
            if not spoken and loop.time() - t0 > 0.3:
                # the caller speaks 0.2 s of tone, resampled from a 16 kHz stereo WAV
                async with wire.s.post(f"{wire.url}/_emulator/calls/{callid}/audio",
                                       data=wav_bytes(tone(0.2, rate=16000), 16000, channels=2)) as a:
                    assert a.status == 200 and (await a.json())["seconds"] == pytest.approx(0.2, abs=0.01)
                spoken = True
        elapsed = loop.time() - t0
    rate = len(received) / elapsed
    assert 16000 * 0.8 < rate < 16000 * 1.2, rate
    assert set(chunk_sizes[:-1]) == {320}
    pcm = np.frombuffer(bytes(received), dtype="<i2")
    spans = loud_spans(pcm)
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == pytest.approx(0.2, abs=0.04)
    assert 0.25 < spans[0][0] < 0.6  # spoken when queued, after ~0.3 s of silence


async def test_audio_wait_returns_when_spoken_and_hangup_ends_stream(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    async with wire.s.get(f"{wire.url}/callcontrol/800/participants/{pid}/stream", headers=wire.auth) as r:
        t0 = time.monotonic()
        async with wire.s.post(f"{wire.url}/_emulator/calls/{callid}/audio?wait=1",
                               data=wav_bytes(tone(0.3), 8000)) as a:
            assert (await a.json())["spoken"] is True
        assert 0.27 < time.monotonic() - t0 < 1.0
        assert (await wire.ctl("POST", f"/calls/{callid}/hangup")) == (200, {"ended": True})
        await asyncio.wait_for(r.content.read(), 2)  # clean end of the chunked body
    assert (await wire.ctl("POST", f"/calls/{callid}/hangup"))[0] == 409
    info = wire.emu.call_info(callid)
    assert info["state"] == "ended"
    assert [e["by"] for e in info["log"] if e["event"] == "dropped"] == ["caller"]
    async with wire.s.post(f"{wire.url}/_emulator/calls/{callid}/audio", data=b"not a wav") as a:
        assert a.status in (400, 409)


async def test_post_stream_heard_timing(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    url = f"{wire.url}/callcontrol/800/participants/{pid}/stream"
    loop = asyncio.get_running_loop()
    t_call = loop.time()

    async def body() -> Any:
        await asyncio.sleep(0.2)
        yield tone(0.1).tobytes()  # arrives at ~0.2 s
        await asyncio.sleep(0.4)
        burst = tone(0.3, freq=600).tobytes()  # arrives at ~0.6 s, all at once:
        yield burst[:2401]  # odd split: a byte carried to the next chunk
        yield burst[2401:]

    headers = {**wire.auth, "Content-Type": "application/octet-stream"}
    async with wire.s.post(url, data=body(), headers=headers) as r:
        assert r.status == 200
    pcm = wire.emu.heard_pcm(callid)
    spans = loud_spans(pcm)
    assert len(spans) == 2
    assert spans[0][0] == pytest.approx(0.2, abs=0.08) and spans[0][1] - spans[0][0] == pytest.approx(0.1, abs=0.02)
    assert spans[1][0] == pytest.approx(0.6, abs=0.1)
    assert spans[1][1] - spans[1][0] == pytest.approx(0.3, abs=0.02)  # queued, played contiguous
    assert loop.time() - t_call < 2
    async with wire.s.get(f"{wire.url}/_emulator/calls/{callid}/heard.wav") as r:
        data, rate = soundfile.read(io.BytesIO(await r.read()), dtype="int16")
    assert rate == 8000 and np.array_equal(data, pcm)


async def test_post_stream_jitter_buffer_and_wav_header(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    url = f"{wire.url}/callcontrol/800/participants/{pid}/stream"

    async def body() -> Any:
        yield wav_bytes(tone(0.2), 8000)  # a whole WAV, header included
        yield tone(0.2, freq=700).tobytes()  # queued right behind it

    async with wire.s.post(url, data=body(), headers={**wire.auth, "Content-Type": "application/octet-stream"}) as r:
        assert r.status == 200
    spans = loud_spans(wire.emu.heard_pcm(callid))
    assert len(spans) == 1 and spans[0][1] - spans[0][0] == pytest.approx(0.4, abs=0.02)
    assert "stray_wav_header" in [e["event"] for e in wire.emu.call_info(callid)["log"]]
    async with wire.s.post(url, data=b"", headers=wire.auth) as r:  # Content-Length: 0
        assert r.status == 200


async def test_post_stream_closed_when_leg_ends(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]

    async def endless() -> Any:
        while True:
            yield bytes(320)
            await asyncio.sleep(0.02)

    async def hang_up_soon() -> None:
        await asyncio.sleep(0.2)
        await wire.emu.hangup(callid)

    task = asyncio.ensure_future(hang_up_soon())
    t0 = time.monotonic()
    async with wire.s.post(f"{wire.url}/callcontrol/800/participants/{pid}/stream", data=endless(),
                           headers={**wire.auth, "Content-Type": "application/octet-stream"}) as r:
        assert r.status == 200  # answered when the leg ended, though the body never ended
    assert time.monotonic() - t0 < 1.0
    await asyncio.wait_for(task, 2)
    assert wire.emu.call_info(callid)["heard_seconds"] == pytest.approx(0.2, abs=0.1)


async def test_post_stream_cut_when_token_revoked(wire: Wire) -> None:
    await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]

    async def endless() -> Any:
        while True:
            yield bytes(320)
            await asyncio.sleep(0.02)

    async def revoke_soon() -> None:
        await asyncio.sleep(0.2)
        await wire.login()  # a new token revokes the one the stream was opened with

    task = asyncio.ensure_future(revoke_soon())
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with wire.s.post(f"{wire.url}/callcontrol/800/participants/{pid}/stream", data=endless(),
                               headers={**wire.auth, "Content-Type": "application/octet-stream"}):
            pass
    await asyncio.wait_for(task, 2)


# --- control API -------------------------------------------------------------------------------


async def test_control_api_calls_and_extensions(wire: Wire) -> None:
    status, body = await wire.ctl("POST", "/calls", {"from": "+4930123456", "to": "800", "name": "Bob"})
    assert status == 201
    callid = body["callid"]
    status, calls = await wire.ctl("GET", "/calls")
    assert status == 200 and [c["callid"] for c in calls] == [callid]
    status, info = await wire.ctl("GET", f"/calls/{callid}")
    assert info["state"] == "connected" and info["name"] == "Bob" and info["from"] == "+4930123456"
    assert [e["event"] for e in info["log"]] == ["created", "answered"]
    assert info["participants"][0]["dn"] == "800"
    assert (await wire.ctl("GET", "/calls/424242"))[0] == 404
    assert (await wire.ctl("POST", "/calls", {"to": "800"}))[0] == 400
    status, body = await wire.ctl("POST", "/calls", {"from": "1", "to": "555"})
    assert status == 400 and "none of this PBX's DNs" in body["error_description"]
    assert (await wire.ctl("PUT", "/extensions/101", {"behaviour": "sleep"}))[0] == 400
    assert (await wire.ctl("PUT", "/extensions/999", {"behaviour": "busy"}))[0] == 404
    assert (await wire.ctl("GET", "/extensions"))[1]["101"] == "answer"


# --- faults ------------------------------------------------------------------------------------


async def test_fault_close_event_sockets_and_revoke_tokens(wire: Wire) -> None:
    events = Events(await open_events(wire))
    assert (await wire.ctl("POST", "/faults", {"close_event_sockets": True})) == (
        200, {"fault": "close_event_sockets", "affected": 1})
    with pytest.raises(ConnectionClosed):
        await events.next()
    await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    stream = await wire.s.get(f"{wire.url}/callcontrol/800/participants/{pid}/stream", headers=wire.auth)
    await stream.content.readexactly(320)
    assert (await wire.ctl("POST", "/faults", {"revoke_tokens": True}))[1]["affected"] == 1
    assert (await wire.get("/callcontrol"))[0] == 401
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(stream.content.read(), 2)
    stream.release()
    assert (await wire.ctl("POST", "/faults", {}))[0] == 400
    assert (await wire.ctl("POST", "/faults", {"revoke_tokens": True, "close_event_sockets": True}))[0] == 400


async def test_fault_fail_next(wire: Wire) -> None:
    assert (await wire.ctl("POST", "/faults", {"fail_next": {"count": 2, "status": 503}})) == (
        200, {"fault": "fail_next", "affected": 2})
    await wire.login()  # the token endpoint is not counted
    await wire.ctl("GET", "/calls")  # nor the control API
    assert (await wire.get("/callcontrol"))[0] == 503
    assert (await wire.get("/callcontrol/800"))[0] == 503
    assert (await wire.get("/callcontrol"))[0] == 200


async def test_fault_stall_and_truncate_stream(wire: Wire) -> None:
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    async with wire.s.get(f"{wire.url}/callcontrol/800/participants/{pid}/stream", headers=wire.auth) as r:
        await r.content.readexactly(320)
        status, body = await wire.ctl("POST", "/faults", {"stall_stream": {"callid": callid, "seconds": 0.4}})
        assert body == {"fault": "stall_stream", "affected": 1}
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []
        t0 = loop.time()
        while loop.time() - t0 < 0.8:
            await r.content.readany()
            arrivals.append(loop.time())
        gaps = np.diff([t0, *arrivals])
        assert gaps.max() > 0.3  # nothing came during the stall...
        assert arrivals[-1] - arrivals[int(np.argmax(gaps))] > 0.2  # ...and the stream resumed
        assert (await wire.ctl("POST", "/faults", {"truncate_stream": {"callid": callid}}))[1]["affected"] == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(r.content.read(), 2)
    assert (await wire.ctl("POST", "/faults", {"truncate_stream": {"callid": 1}}))[0] == 404


# --- audio stream internals: the shared GET pacer, lazy heard chunks --------------------------


class FakeTransport:
    """What GetStream.pump needs of an asyncio transport; records every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


def http_chunks(data: bytes) -> list[bytes]:
    """The payloads of HTTP/1.1 chunks written back to back."""
    out = []
    while data:
        head, rest = data.split(b"\r\n", 1)
        n = int(head, 16)
        out.append(rest[:n])
        assert rest[n : n + 2] == b"\r\n"
        data = rest[n + 2 :]
    return out


def test_get_pump_pacing_voice_stall_lag_and_hold() -> None:
    """The pacer's per-stream step on a fake clock: one 320-byte chunk per due frame, never
    early; the caller's voice in place; nothing during a stall; one frame after a long block."""
    from ivr.emulator.state import Call, Party, StreamHandle
    from ivr.emulator.streams import MAX_LAG_FRAMES, WRITE_HIGH, GetStream

    call = Call(1001, 0.0, "inbound", Party(), "+4930123456", "800")
    handle = StreamHandle("get", None, lambda: None)  # type: ignore[arg-type]
    t = FakeTransport()
    stream = GetStream(handle, call, t, pos=0)
    stream.pump(0.0199)
    assert t.writes == [] and stream.due_at == pytest.approx(0.02, abs=1e-4)  # not early
    stream.pump(0.02)
    assert http_chunks(b"".join(t.writes)) == [bytes(320)]
    t.writes.clear()
    stream.pump(0.1)  # the loop was late: the four frames due, one chunk each
    assert http_chunks(b"".join(t.writes)) == [bytes(320)] * 4 and stream.pos == 800
    t.writes.clear()
    ramp = (np.arange(1, 321) * 50).astype(np.int16)  # 40 ms of speech from sample 880
    call.voice.queue(ramp, 880)
    stream.pump(0.14)
    chunks = http_chunks(b"".join(t.writes))
    got = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert [len(c) for c in chunks] == [320, 320] and np.array_equal(got[80:], ramp[:240]) and not got[:80].any()
    t.writes.clear()
    call.held = True  # held: silence though the caller still "speaks"
    stream.pump(0.16)
    assert http_chunks(b"".join(t.writes)) == [bytes(320)]
    call.held = False
    t.writes.clear()
    call.stall_until = 0.5  # stall: nothing is sent, the position follows the clock
    stream.pump(0.3)
    stream.pump(0.49)
    assert t.writes == [] and stream.pos == call.sample_at(0.49)
    stream.pump(0.52)
    assert len(http_chunks(b"".join(t.writes))) == 1 and stream.pos == call.sample_at(0.49) + 160
    t.writes.clear()
    t.buffered = WRITE_HIGH + 1  # the client stopped reading: nothing more is queued
    stream.pump(1.0)
    assert t.writes == []
    t.buffered = 0  # it reads again 1.5 s later: one frame, then real time (no burst)
    stream.pump(2.0)
    assert (2.0 - 0.53) * 50 > MAX_LAG_FRAMES
    assert len(http_chunks(b"".join(t.writes))) == 1 and 0 <= call.sample_at(2.0) - stream.pos < 160
    assert stream.sent == 320 * 10
    t.closing = True  # the client went away
    stream.pump(2.1)
    assert handle.end_mode == "client"


async def test_many_get_streams_share_one_timer(emulator: Emulator) -> None:
    """Twenty GET streams, one pacer timer: each gets 16,000 B/s in 320-byte chunks and ends
    cleanly with the leg; the timer stops when the last stream closes."""
    from ivr.emulator.streams import get_pacer

    n = 20
    callids = [await emulator.place_call(f"+49301234{i:02d}") for i in range(n)]
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emulator, s)
        parts = {p["callid"]: p["id"] for p in (await w.get("/callcontrol/800/participants"))[1]}
        loop = asyncio.get_running_loop()
        opened = asyncio.Event()

        async def read(callid: int) -> tuple[float, list[int]]:
            url = f"{w.url}/callcontrol/800/participants/{parts[callid]}/stream"
            async with s.get(url, headers=w.auth) as r:
                sizes = [len((await r.content.readchunk())[0])]
                t0 = loop.time()
                if len(get_pacer().streams) == n:
                    opened.set()
                while loop.time() - t0 < 1.0:
                    sizes.append(len((await r.content.readchunk())[0]))
                rate = sum(sizes[1:]) / (loop.time() - t0)
                await opened.wait()
                await emulator.hangup(callid)
                await asyncio.wait_for(r.content.read(), 2)  # the final chunk
                return rate, sizes

        results = await asyncio.gather(*(read(c) for c in callids))
    for rate, sizes in results:
        assert 16000 * 0.8 < rate < 16000 * 1.2, rate
        assert set(sizes) == {320}
    pacer = get_pacer()
    assert pacer.streams == {} and not pacer.running
    closed = [e for e in emulator.call_info(callids[0])["log"] if e["event"] == "stream_closed"]
    assert closed[0]["how"] == "end" and closed[0]["bytes"] >= sum(results[0][1])


async def test_streams_log_client_that_goes_away(wire: Wire) -> None:
    """A client that drops the connection mid-stream: both streams close as ``client``, the
    POST with the bytes that came."""
    callid = await wire.emu.place_call("+4930123456")
    pid = (await wire.rp_participant())["id"]
    port = wire.emu.port
    path = f"/callcontrol/800/participants/{pid}/stream"
    head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {wire.token}\r\n"
    r_get, w_get = await asyncio.open_connection("127.0.0.1", port)
    w_get.write(f"GET {path} HTTP/1.1\r\n{head}\r\n".encode())
    await r_get.readuntil(b"\r\n\r\n")
    await r_get.readexactly(327)  # one chunk: size line, 320 bytes, CRLF
    r_post, w_post = await asyncio.open_connection("127.0.0.1", port)
    w_post.write(f"POST {path} HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode())
    for _ in range(3):
        w_post.write(b"140\r\n" + bytes(320) + b"\r\n")
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    w_get.close()
    w_post.close()
    deadline = asyncio.get_running_loop().time() + 2
    while True:
        closed = {e["direction"]: e for e in wire.emu.call_info(callid)["log"] if e["event"] == "stream_closed"}
        if len(closed) == 2 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    assert closed["get"]["how"] == "client" and closed["get"]["bytes"] >= 320
    assert closed["post"]["how"] == "client" and closed["post"]["bytes"] == 960
    assert len(wire.emu.controller.arrivals(callid)["t"]) >= 1


def test_heard_keeps_bytes_and_converts_when_read() -> None:
    from ivr.emulator.media import Heard, HeardCursor

    heard, a, b = Heard(), HeardCursor(), HeardCursor()
    x = (np.arange(1, 161) * 100).astype(np.int16).tobytes()
    assert heard.add(a, x[:101], 0) is False  # odd split: the last byte waits for the next chunk
    heard.add(a, x[101:], 10)  # arrives while the first part still plays: queued behind it
    heard.add(b, x, 40)  # a second stream, mixed in
    chunks, count = heard.chunks_since(0)
    assert count == 3 and [s for s, _ in chunks] == [0, 50, 40]
    assert all(p.dtype == np.int16 for _, p in chunks)
    assert np.array_equal(np.concatenate([chunks[0][1], chunks[1][1]]), np.frombuffer(x, "<i2"))
    assert heard.chunks_since(3) == ([], 3) and heard.duration_samples() == 200
    pcm = heard.render()
    want = np.zeros(200, np.int32)
    want[:160] += np.frombuffer(x, "<i2")
    want[40:200] += np.frombuffer(x, "<i2")
    assert np.array_equal(pcm, np.clip(want, -32768, 32767).astype(np.int16))


# --- configuration and CLI ---------------------------------------------------------------------


def test_parse_extensions_and_cli_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_extensions("100-102, 200,ROUTER") == ["100", "101", "102", "200", "ROUTER"]
    assert parse_extensions("007-009") == ["007", "008", "009"]
    with pytest.raises(ValueError, match="'5-1'"):
        parse_extensions("5-1")
    monkeypatch.setenv("IVR_EMULATOR_SECRET", "from-env")
    args = build_parser().parse_args(["--route-point", "ROUTER", "--extensions", "100-101", "--busy", "101"])
    cfg = config_from_args(args)
    assert cfg.client_secret == "from-env" and cfg.route_point == "ROUTER"
    assert cfg.extensions == {"100": "answer", "101": "busy"}
    assert "from-env" not in repr(cfg)
    with pytest.raises(ValueError, match="route_point"):
        EmulatorConfig(route_point="100", extensions={"100": "answer"})
    assert main(["--extensions", "100", "--busy", "555"]) == 2


async def test_non_numeric_route_point(emulator_factory: Any) -> None:
    emu = await emulator_factory(route_point="ROUTER")
    async with aiohttp.ClientSession() as s:
        w = await make_wire(emu, s)
        callid = await emu.place_call("+4930123456", to="ROUTER")
        status, parts = await w.get("/callcontrol/ROUTER/participants")
        assert status == 200 and parts[0]["callid"] == callid
        assert parts[0]["device_id"].startswith("sip:ROUTER@")


def test_emulator_cli_tls_flags_fail_in_one_line(tmp_path, capsys) -> None:
    from ivr.emulator.cli import main

    assert main(["--tls-key", str(tmp_path / "key.pem")]) == 2
    assert capsys.readouterr().err.strip() == "ivr emulator: --tls-key needs --tls-cert"
    assert main(["--tls-cert", str(tmp_path / "missing.pem")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ivr emulator: --tls-cert {tmp_path / 'missing.pem'}: cannot load") and "\n" not in err
