"""Event socket and state mirror: resync after loss, sequence gaps, malformed messages,
deduplicated upserts, DTMF split per digit, 401 on the upgrade.

Most tests run against the real emulator. Gaps and malformed messages cannot be produced
by a well-behaved PBX, so those run against ``WirePbx``: a tiny aiohttp server whose
socket sends exactly the frames a test scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp import WSMsgType, web

from ivr.pbx import (
    DtmfReceived,
    ParticipantRemoved,
    ParticipantUpdated,
    PbxClient,
    PbxConfig,
    Resynced,
)
from ivr.pbx.events import Subscription
from ivr.pbx.models import ParticipantInfo


class WirePbx:
    """A scripted PBX: token, GET /callcontrol, GET participant, and a socket the test drives."""

    def __init__(self) -> None:
        self.participants: dict[int, dict] = {}
        self.snapshots = 0
        self.participant_gets = 0
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_opened = asyncio.Event()
        self.tokens_issued = 0
        self.reject_ws_once = False
        self.ws_rejections = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        self.tokens_issued += 1
        return web.json_response({"access_token": f"tok{self.tokens_issued}", "expires_in": 60})

    def _dninfo(self) -> list[dict]:
        return [{"dn": "800", "type": "Wroutepoint", "devices": [], "participants": list(self.participants.values())}]

    async def all(self, request: web.Request) -> web.Response:
        self.snapshots += 1
        return web.json_response(self._dninfo())

    async def participant(self, request: web.Request) -> web.Response:
        self.participant_gets += 1
        p = self.participants.get(int(request.match_info["pid"]))
        if p is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(p)

    async def ws(self, request: web.Request) -> web.StreamResponse:
        if self.reject_ws_once and request.headers.get("Authorization") == "Bearer tok1":
            self.ws_rejections += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.socket_opened.set()
        async for msg in ws:
            if msg.type == WSMsgType.CLOSE:
                break
        return ws

    async def send(self, payload: dict | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        await self.sockets[-1].send_str(text)

    async def __aenter__(self) -> WirePbx:
        app = web.Application()
        app.router.add_post("/connect/token", self.token)
        app.router.add_get("/callcontrol", self.all)
        app.router.add_get("/callcontrol/ws", self.ws)
        app.router.add_get("/callcontrol/{dn}/participants/{pid}", self.participant)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in self.sockets:
            await ws.close()
        assert self.runner is not None
        await self.runner.cleanup()


def participant(pid: int, status: str = "Connected", **kw) -> dict:
    return {"id": pid, "status": status, "dn": "800", "party_caller_id": "0123456789", "callid": pid, **kw}


def upsert(seq: int, pid: int) -> dict:
    return {"sequence": seq, "event": {"event_type": 0, "entity": f"/callcontrol/800/participants/{pid}", "attached_data": None}}


def wire_cfg(url: str) -> PbxConfig:
    return PbxConfig(
        url=url, client_id="900", client_secret="secret",
        reconnect_initial=0.05, reconnect_max=0.2, request_timeout=2,
    )


async def wait_until(cond, timeout: float = 3.0) -> None:
    """Poll ``cond`` (a test-side condition on the fake server) every 10 ms."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def next_of(sub: Subscription, kind: type, timeout: float = 3.0):
    """The next event of ``kind`` (others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        ev = await sub.get(max(0.01, deadline - time.monotonic()))
        if isinstance(ev, kind):
            return ev


async def test_sequence_gap_triggers_resync() -> None:
    async with WirePbx() as wire, PbxClient(wire_cfg(wire.url)) as pbx:
        sub = pbx.events()
        assert wire.snapshots == 1  # socket first, then the snapshot
        wire.participants[1] = participant(1)
        await wire.send(upsert(1, 1))
        ev = await next_of(sub, ParticipantUpdated)
        assert ev.participant.id == 1 and ev.previous is None
        # seq 2 and 3 are lost; participant 2 arrived and 1 left meanwhile
        wire.participants = {2: participant(2)}
        await wire.send({"sequence": 4, "event": {"event_type": 5, "entity": "/x"}})
        removed = await next_of(sub, ParticipantRemoved)
        assert (removed.dn, removed.participant_id) == ("800", 1)
        assert removed.last is not None and removed.last.id == 1
        await next_of(sub, Resynced)
        assert wire.snapshots == 2
        assert pbx.event_stream.gaps == 1
        assert pbx.state.participant("800", 2) is not None
        assert pbx.state.participant("800", 1) is None
        # contiguous sequence after the gap: no further resync
        wire.participants[2] = participant(2, party_caller_name="Ann")
        await wire.send(upsert(5, 2))
        ev = await next_of(sub, ParticipantUpdated)
        assert ev.participant.party_caller_name == "Ann" and ev.previous is not None
        assert wire.snapshots == 2


async def test_malformed_messages_are_logged_and_skipped(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ivr.pbx")
    async with WirePbx() as wire, PbxClient(wire_cfg(wire.url)) as pbx:
        sub = pbx.events()
        await wire.send("this is not json")
        await wire.send({"sequence": "x"})
        await wire.send({"sequence": 1, "event": {"entity": "/callcontrol/800/participants/1"}})
        await wire.send({"sequence": 1, "event": {"event_type": 0, "entity": "/callcontrol/800/participants/notanumber"}})
        await wire.send({"sequence": 2, "event": {"event_type": 2, "entity": "/callcontrol/800/participants/7",
                                                  "attached_data": {"dtmf_input": "42#"}}})
        digits = [await next_of(sub, DtmfReceived) for _ in range(3)]
        assert [d.digits for d in digits] == ["4", "2", "#"]
        assert all(d.participant_id == 7 and d.dn == "800" for d in digits)
        assert pbx.event_stream.malformed == 3
        assert pbx.event_stream.connects == 1  # never dropped the socket
        skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert len(skipped) == 3


async def test_repeated_upserts_are_deduplicated() -> None:
    async with WirePbx() as wire, PbxClient(wire_cfg(wire.url)) as pbx:
        sub = pbx.events()
        wire.participants[1] = participant(1, status="Ringing")
        for seq in range(1, 6):  # the same state five times, like real servers every 750 ms
            await wire.send(upsert(seq, 1))
        first = await next_of(sub, ParticipantUpdated)
        await wait_until(lambda: wire.participant_gets >= 1 and not pbx._fetching)
        # Upserts that arrive while a GET is in flight are coalesced into one more GET.
        gets = wire.participant_gets
        assert 1 <= gets <= 5
        wire.participants[1] = participant(1, status="Connected")
        await wire.send(upsert(6, 1))
        second = await next_of(sub, ParticipantUpdated)
        assert (first.participant.status, second.participant.status) == ("Ringing", "Connected")
        assert second.previous == first.participant
        await pbx.state.wait_status("800", 1, "Connected", timeout=2)
        assert wire.participant_gets == gets + 1
        with pytest.raises(asyncio.TimeoutError):
            await next_of(sub, ParticipantUpdated, timeout=0.2)
        # an Upsert whose GET answers 404 means the participant is gone
        del wire.participants[1]
        await wire.send(upsert(7, 1))
        gone = await next_of(sub, ParticipantRemoved)
        assert gone.participant_id == 1
        await pbx.state.wait_gone("800", 1, timeout=1)


async def test_401_on_upgrade_refreshes_token_and_reconnects() -> None:
    async with WirePbx() as wire:
        wire.reject_ws_once = True  # tok1 is refused on the upgrade
        async with PbxClient(wire_cfg(wire.url)) as pbx:
            assert wire.ws_rejections == 1
            assert wire.tokens_issued == 2
            assert pbx.tokens.current == "tok2"
            assert pbx.event_stream.connects == 1


async def test_state_api_and_route_points() -> None:
    async with WirePbx() as wire:
        wire.participants[3] = participant(3)
        async with PbxClient(wire_cfg(wire.url)) as pbx:
            rps = pbx.state.route_points()
            assert [d.dn for d in rps] == ["800"]
            assert isinstance(pbx.state.participant("800", 3), ParticipantInfo)
            assert set(pbx.state.dns) == {"800"}
            got = await pbx.state.wait_for(lambda s: s.participant("800", 3), timeout=0.1)
            assert got.id == 3
            with pytest.raises(asyncio.TimeoutError):
                await pbx.state.wait_status("800", 3, "Ringing", timeout=0.05)


# --- against the real emulator -----------------------------------------------------------

from ivr.pbx import Connected, Disconnected  # noqa: E402


def emu_cfg(url: str, **kw) -> PbxConfig:
    kw.setdefault("reconnect_initial", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    return PbxConfig(url=url, client_id="900", client_secret="secret", **kw)


async def test_socket_closed_under_the_client_loses_nothing(emulator) -> None:
    # reconnect_initial 0.4 s leaves a window in which calls change with no socket open
    async with PbxClient(emu_cfg(emulator.url, reconnect_initial=0.4, reconnect_max=1, reconnect_jitter=0)) as pbx:
        sub = pbx.events()
        c_old = await emulator.place_call("+4930000001")
        old = (await sub.next(ParticipantUpdated, timeout=3)).participant
        await emulator.inject_fault({"close_event_sockets": True})
        await sub.next(Disconnected, timeout=3)
        c_new = await emulator.place_call("+4930000002")  # its Upsert goes nowhere
        await emulator.hangup(c_old)  # so does this Remove
        await asyncio.sleep(0.05)
        assert pbx.state.participant("800", old.id) is not None  # not yet known
        await sub.next(Connected, timeout=3)
        new = await sub.next(ParticipantUpdated, timeout=3)
        assert new.participant.callid == c_new and new.previous is None
        gone = await sub.next(ParticipantRemoved, timeout=3)
        assert gone.participant_id == old.id and gone.last == old
        await sub.next(Resynced, timeout=3)
        assert pbx.event_stream.connects == 2
        assert [p.callid for p in pbx.state.participants("800")] == [c_new]
        # and live events flow again on the new socket
        await emulator.send_dtmf(c_new, "5")
        dtmf = await sub.next(DtmfReceived, timeout=3)
        assert (dtmf.participant_id, dtmf.digits) == (new.participant.id, "5")


async def test_revoked_token_socket_reconnects_with_fresh_token(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        sub = pbx.events()
        await emulator.inject_fault({"revoke_tokens": True})
        await emulator.inject_fault({"close_event_sockets": True})
        await sub.next(Resynced, timeout=3)  # reconnect needed a new token (401 otherwise)
        assert pbx.tokens.refreshes == 2
        cid = await emulator.place_call("+4930000003")
        ev = await sub.next(ParticipantUpdated, timeout=3)
        assert ev.participant.callid == cid


async def test_repeated_upserts_from_emulator_do_not_repeat_events(emulator_factory) -> None:
    emu = await emulator_factory(repeat_upserts=True, repeat_interval=0.05)
    async with PbxClient(emu_cfg(emu.url)) as pbx:
        sub = pbx.events()
        cid = await emu.place_call("+4930000004")
        first = await sub.next(ParticipantUpdated, timeout=3)
        await asyncio.sleep(0.4)  # ~8 repeated Upserts
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(ParticipantUpdated, timeout=0.05)
        assert first.participant.callid == cid
        await emu.send_dtmf(cid, "123")
        got = [await sub.next(DtmfReceived, timeout=3) for _ in range(3)]
        assert "".join(d.digits for d in got) == "123"


# --- limits against a misbehaving or hostile peer (issue 14) ------------------------------


async def test_an_oversized_event_message_drops_the_socket_instead_of_being_read() -> None:
    async with WirePbx() as wire:
        cfg = wire_cfg(wire.url).model_copy(update={"event_max_bytes": 64 * 1024})
        async with PbxClient(cfg) as pbx:
            sub = pbx.events()
            await wire.send("x" * (4 * 1024 * 1024))  # 4 MB: never buffered or parsed
            await wait_until(lambda: pbx.event_stream.connects == 2, timeout=10)
            assert pbx.event_stream.malformed == 0
            await wire.send({"sequence": 1, "event": {"event_type": 2, "entity": "/callcontrol/800/participants/7",
                                                      "attached_data": {"dtmf_input": "5"}}})
            assert (await next_of(sub, DtmfReceived, timeout=5)).digits == "5"  # the new socket works


async def test_an_upsert_flood_keeps_participant_fetches_and_sockets_bounded() -> None:
    class SlowPbx(WirePbx):
        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most_in_flight = 0
            self.peers: set[object] = set()

        async def participant(self, request: web.Request) -> web.Response:
            self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.05)
                return await super().participant(request)
            finally:
                self.in_flight -= 1

    async with SlowPbx() as wire:
        cfg = wire_cfg(wire.url).model_copy(update={"participant_fetches": 8, "rest_max_connections": 12})
        async with PbxClient(cfg) as pbx:
            flood = 400  # distinct participants: nothing to coalesce
            for pid in range(1, flood + 1):
                wire.participants[pid] = participant(pid)
            for seq, pid in enumerate(range(1, flood + 1), start=1):
                await wire.send(upsert(seq, pid))
            await wait_until(lambda: wire.participant_gets >= flood and not pbx._fetching, timeout=60)
            assert len(pbx.state.participants("800")) == flood  # all fetched, in turn
    assert wire.most_in_flight <= 8
    assert len(wire.peers) <= 12
