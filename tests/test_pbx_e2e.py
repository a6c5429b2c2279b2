"""A scripted call end to end over loopback: caller -> route point -> prompt -> caller
speaks -> caller presses 1 -> routeto 101 -> the emulator's log shows the transfer answered."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile

from ivr.pbx import DtmfReceived, ParticipantRemoved, ParticipantUpdated, PbxClient, PbxConfig
from ivr.pbx.models import DNType


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_scripted_call_routes_to_101(emulator_factory, tmp_path, scheme) -> None:
    # https: REST, the event socket (wss) and both audio streams over TLS, verified against
    # the CA given as verify_tls - as against a real 3CX with a private CA.
    verify: bool | str = True
    if scheme == "https":
        import ssl

        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        verify = str(tmp_path / "ca.pem")
        emulator = await emulator_factory(_ssl_context=server_ctx)
    else:
        emulator = await emulator_factory()
    assert emulator.url.startswith(f"{scheme}://")
    # a 0.4 s prompt as a WAV file, the way prompts live on disk
    t = np.arange(int(0.4 * 8000)) / 8000
    prompt_wav = tmp_path / "menu.wav"
    soundfile.write(prompt_wav, (0.3 * np.cos(2 * np.pi * 600 * t)), 8000, subtype="PCM_16")
    prompt, rate = soundfile.read(prompt_wav, dtype="int16")  # cos: first sample non-zero
    assert rate == 8000
    pcm = prompt.astype("<i2").tobytes()  # samples only: the WAV header stays on disk

    cfg = PbxConfig(url=emulator.url, client_id="900", client_secret="secret", verify_tls=verify)
    async with PbxClient(cfg) as pbx:
        (rp,) = pbx.state.route_points()
        assert rp.type == DNType.ROUTE_POINT
        events = pbx.events()

        callid = await emulator.place_call("+4930123456", name="Caller")
        leg = (await events.next(ParticipantUpdated, where=lambda e: e.dn == rp.dn, timeout=3)).participant
        assert leg.status == "Connected" and leg.party_caller_id == "+4930123456"

        inbound = pbx.open_inbound(rp.dn, leg.id)
        outbound = pbx.open_outbound(rp.dn, leg.id)
        caller_audio = bytearray()

        async def listen() -> None:
            async for chunk in inbound:
                caller_audio.extend(chunk)

        listener = asyncio.create_task(listen())
        outbound.write(pcm)
        await asyncio.wait_for(outbound.wait_played(), 3)

        said = (np.arange(1, 2001) % 3000 + 100).astype(np.int16)  # 0.25 s, recognisable
        await emulator.speak(callid, said, wait=True)
        await asyncio.sleep(0.1)
        assert said.astype("<i2").tobytes() in bytes(caller_audio)

        await emulator.send_dtmf(callid, "1")
        press = await events.next(DtmfReceived, timeout=3)
        assert (press.participant_id, press.digits) == (leg.id, "1")

        result = await pbx.rest.routeto(rp.dn, leg.id, "101")
        assert result.ok
        await events.next(ParticipantRemoved, where=lambda e: e.participant_id == leg.id, timeout=3)
        await asyncio.wait_for(listener, 3)  # the caller's stream ended with our leg
        await outbound.close()

        info = emulator.call_info(callid)
        routed = [e for e in info["log"] if e["event"] == "routed"]
        assert routed and routed[-1]["destination"] == "101" and routed[-1]["result"] == "answered"
        assert info["location"] == "101" and info["state"] == "connected"
        heard = emulator.heard_pcm(callid)
        start = int(np.flatnonzero(heard)[0])
        assert heard[start : start + len(prompt)].astype("<i2").tobytes() == pcm
