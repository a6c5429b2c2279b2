"""RestClient against the real emulator: every endpoint and action, every error code,
401 refresh-and-retry, bursts of 503, and the POST retry rules."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import quote

import pytest

from ivr.pbx import (
    ForbiddenError,
    NotFoundError,
    ParticipantRemoved,
    ParticipantUpdated,
    PbxClient,
    PbxConfig,
    PbxUnreachableError,
    ServerError,
    UnprocessableError,
)
from ivr.pbx.models import CallControlResultResponse, DeviceInfo, DNInfo, ParticipantInfo


def client_cfg(url: str, **kw) -> PbxConfig:
    kw.setdefault("retry_initial", 0.01)
    kw.setdefault("retry_max", 0.05)
    kw.setdefault("reconnect_initial", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    return PbxConfig(url=url, client_id="900", client_secret="secret", **kw)


@pytest.fixture
async def pbx(emulator):
    async with PbxClient(client_cfg(emulator.url)) as client:
        yield client


async def arrived(pbx: PbxClient, sub, dn: str = "800", status: str | None = None) -> ParticipantInfo:
    ev = await sub.next(
        ParticipantUpdated,
        where=lambda e: e.dn == dn and (status is None or e.participant.status == status),
        timeout=3,
    )
    return ev.participant


async def test_reads(emulator, pbx) -> None:
    dns = await pbx.rest.get_all()
    assert all(isinstance(d, DNInfo) for d in dns)
    by_dn = {d.dn: d for d in dns}
    assert by_dn["800"].type == "Wroutepoint" and by_dn["101"].type == "Wextension"
    rp = await pbx.rest.get_dn("800")
    assert rp.dn == "800" and rp.participants == []
    devices = await pbx.rest.get_devices("800")
    assert len(devices) == 1 and isinstance(devices[0], DeviceInfo)
    device_id = devices[0].device_id
    assert ":" in device_id and ";" in device_id and "@" in device_id  # needs URL-encoding
    assert await pbx.rest.get_device("800", device_id) == devices[0]
    with pytest.raises(NotFoundError) as info:
        await pbx.rest.get_device("800", "sip:999@nowhere;rinstance=x")
    assert quote("sip:999@nowhere;rinstance=x", safe="") in info.value.url
    with pytest.raises(NotFoundError, match="DN 'nope' not found"):
        await pbx.rest.get_dn("nope")

    sub = pbx.events()
    callid = await emulator.place_call("+4930123456", name="Ann")
    p = await arrived(pbx, sub)
    assert p.callid == callid and p.party_caller_id == "+4930123456"
    assert await pbx.rest.get_participants("800") == [p]
    assert await pbx.rest.get_participant("800", p.id) == p


async def test_error_codes_403_404_422(emulator, pbx) -> None:
    sub = pbx.events()
    await emulator.place_call("+4930123456")
    p = await arrived(pbx, sub)
    with pytest.raises(ForbiddenError) as forb:
        await pbx.rest.get_participant("101", p.id)  # a leg DN 101 does not control
    assert forb.value.status == 403 and "not controlled" in str(forb.value)
    with pytest.raises(NotFoundError) as nf:
        await pbx.rest.get_participant("800", 9999)
    assert nf.value.status == 404
    assert str(nf.value).startswith(f"GET {emulator.url}/callcontrol/800/participants/9999: HTTP 404")
    with pytest.raises(UnprocessableError) as unp:
        await pbx.rest.answer("800", p.id)  # already Connected
    assert unp.value.status == 422 and "\n" not in str(unp.value)
    with pytest.raises(UnprocessableError):
        await pbx.rest.divert("800", p.id, "101")  # divert is for Ringing legs only


async def test_answer_and_divert_on_ringing_route_point(emulator_factory) -> None:
    emu = await emulator_factory(inbound_status="Ringing")
    async with PbxClient(client_cfg(emu.url)) as pbx:
        sub = pbx.events()
        c1 = await emu.place_call("+4930000001")
        p1 = await arrived(pbx, sub, status="Ringing")
        res = await pbx.rest.answer("800", p1.id)
        assert isinstance(res, CallControlResultResponse) and res.ok
        await pbx.state.wait_status("800", p1.id, "Connected", timeout=3)
        assert "answered" in [e["event"] for e in emu.call_info(c1)["log"]]

        c2 = await emu.place_call("+4930000002")
        p2 = await arrived(pbx, sub, status="Ringing")
        res = await pbx.rest.divert("800", p2.id, "102", reason="NoAnswer")
        assert res.ok
        await pbx.state.wait_gone("800", p2.id, timeout=3)
        await pbx.state.wait_for(lambda s: s.participants("102"), timeout=3)
        info = emu.call_info(c2)
        assert info["offer"] is None or info["offer"]["destination"] == "102"


async def test_routeto_transferto_drop_attach(emulator, pbx) -> None:
    sub = pbx.events()
    c1 = await emulator.place_call("+4930000001")
    p1 = await arrived(pbx, sub)
    res = await pbx.rest.attach_participant_data("800", p1.id, {"lang": "de", "case": "42"})
    assert res.ok
    assert emulator.call_info(c1)["attached_data"] == {"lang": "de", "case": "42"}
    with pytest.raises(ValueError, match="must be str"):
        await pbx.rest.attach_participant_data("800", p1.id, {"n": 1})  # type: ignore[dict-item]

    res = await pbx.rest.routeto("800", p1.id, "101", timeout=5)
    assert res.ok and res.result is not None and res.result.id == p1.id
    await sub.next(ParticipantRemoved, where=lambda e: e.participant_id == p1.id, timeout=3)
    await asyncio.wait_for(_until(lambda: emulator.call_info(c1)["location"] == "101"), 3)

    c2 = await emulator.place_call("+4930000002")
    p2 = await arrived(pbx, sub)
    res = await pbx.rest.transferto("800", p2.id, "102")
    assert res.ok
    await pbx.state.wait_gone("800", p2.id, timeout=3)
    log = [e for e in emulator.call_info(c2)["log"] if e["event"] == "transferred"]
    assert log and log[-1]["result"] == "answered"

    c3 = await emulator.place_call("+4930000003")
    p3 = await arrived(pbx, sub)
    res = await pbx.rest.drop("800", p3.id)
    assert res.ok
    await pbx.state.wait_gone("800", p3.id, timeout=3)
    assert emulator.call_info(c3)["state"] == "ended"

    # a refused delivery (an error status with the result body) is a result, not an exception
    c4 = await emulator.place_call("+4930000004")
    p4 = await arrived(pbx, sub)
    res = await pbx.rest.routeto("800", p4.id, "999")
    assert not res.ok and res.status == "Failed"
    assert emulator.call_info(c4)["state"] != "ended"


async def test_makecall_and_device_makecall(emulator, pbx) -> None:
    res = await pbx.rest.makecall("800", "101", attacheddata={"campaign": "x"})
    assert res.ok and res.result is not None
    origin = res.result
    await pbx.state.wait_status("800", origin.id, "Connected", timeout=3)
    device = (await pbx.rest.get_devices("800"))[0].device_id
    res2 = await pbx.rest.device_makecall("800", device, "+4930555555", timeout=5)
    assert res2.ok and res2.result is not None and res2.result.id != origin.id
    with pytest.raises(NotFoundError):
        await pbx.rest.device_makecall("800", "sip:nope@x", "101")


async def test_401_refreshes_once_and_retries(emulator, pbx) -> None:
    assert pbx.tokens.refreshes == 1
    await emulator.inject_fault({"revoke_tokens": True})
    # many concurrent requests all see 401 on the same token: one refresh between them
    results = await asyncio.gather(*(pbx.rest.get_dn("800") for _ in range(20)))
    assert all(r.dn == "800" for r in results)
    assert pbx.tokens.refreshes == 2


async def test_burst_of_503_is_retried(emulator, pbx) -> None:
    # No call is up, so no background traffic takes a share of the injected failures.
    sent = pbx.rest.requests
    await emulator.inject_fault({"fail_next": {"count": 3, "status": 503}})
    assert (await pbx.rest.get_dn("800")).dn == "800"
    assert pbx.rest.requests - sent == 4
    # more failures than retry_attempts (4): the last error is raised
    await emulator.inject_fault({"fail_next": {"count": 5, "status": 503}})
    with pytest.raises(ServerError) as info:
        await pbx.rest.get_all()
    assert info.value.status == 503 and "fail_next" in str(info.value)
    # a POST action is retried on 503 (the PBX refused it before doing anything)
    await emulator.inject_fault({"fail_next": {"count": 2, "status": 503}})
    sent = pbx.rest.requests
    res = await pbx.rest.makecall("800", "101")
    assert res.ok and pbx.rest.requests - sent == 3


async def test_post_is_not_retried_on_502(emulator, pbx) -> None:
    await emulator.inject_fault({"fail_next": {"count": 1, "status": 502}})
    sent = pbx.rest.requests
    with pytest.raises(ServerError) as info:
        await pbx.rest.makecall("800", "101")
    assert info.value.status == 502
    assert pbx.rest.requests - sent == 1  # the PBX may have acted: never call twice
    await emulator.inject_fault({"fail_next": {"count": 1, "status": 502}})
    assert (await pbx.rest.get_all())  # a GET is retried on 502


async def test_unreachable_rest_raises_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client_cfg(f"http://127.0.0.1:{port}", retry_attempts=2)
    import aiohttp

    from ivr.pbx import RestClient, TokenManager

    async with aiohttp.ClientSession() as session:
        rest = RestClient(session, TokenManager(session, cfg), cfg)
        with pytest.raises(PbxUnreachableError, match="connect/token"):
            await rest.get_all()


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)
