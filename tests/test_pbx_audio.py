"""Audio streams: outbound pacing end to end (lead bounded, a late pacer's one send, clear()
within lead, no WAV header), inbound real-time reading, 424 until media, reopening after token
revocation, truncation and stalls.

Pacing is measured at a tiny POST sink that timestamps every chunk as it arrives (same
loop clock); everything else runs against the real emulator. The pacer's decisions and
figures themselves (lead, batches, late sends, underruns, restarts, top-ups) are tested
without I/O, fed times, in test_pbx_pacer.py.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from ivr.pbx import (
    MediaNotReadyError,
    OutboundAudio,
    ParticipantUpdated,
    PbxClient,
    PbxConfig,
    TokenManager,
)
from ivr.pbx.tick import SharedTick

RATE = 8000
BPS = 16000  # bytes per second of s16le 8 kHz mono


def tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype("<i2").tobytes()


def ramp(seconds: float) -> bytes:
    """A signal whose every sample is distinct (modulo 2**15): easy to locate."""
    n = int(seconds * RATE)
    return ((np.arange(n) % 30000) + 1).astype("<i2").tobytes()


class Sink:
    """POST .../stream sink: records (loop time, bytes) of every chunk, and the headers."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self.opened = asyncio.Event()
        self.finished = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 60})

    async def stream(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        self.opened.set()
        loop = asyncio.get_running_loop()
        while True:
            data = await request.content.readany()
            if not data:
                break
            self.chunks.append((loop.time(), data))
        self.finished.set()
        return web.Response(status=200)

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    async def __aenter__(self) -> Sink:
        app = web.Application()
        app.router.add_post("/connect/token", self.token)
        app.router.add_post("/callcontrol/800/participants/1/stream", self.stream)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def max_lead_ms(chunks: list[tuple[float, bytes]], start: int = 0) -> float:
    """Largest amount of audio (ms) the sink had received ahead of real time.

    Real time starts when the first chunk of ``chunks[start:]`` arrived.
    """
    t0 = chunks[start][0]
    pos = 0
    worst = 0.0
    for t, data in chunks[start:]:
        pos += len(data)
        worst = max(worst, (t0 + pos / BPS - t) * 1000)
    return worst


async def open_sink_stream(sink: Sink, session: aiohttp.ClientSession, lead_ms: int = 60,
                           tick: SharedTick | None = None) -> OutboundAudio:
    cfg = PbxConfig(url=sink.url, client_id="900", client_secret="secret")

    async def exists() -> bool:
        return True

    out = OutboundAudio(TokenManager(session, cfg), cfg, "800", 1, exists=exists, lead_ms=lead_ms, tick=tick)
    out.start()
    out.write(b"\x00\x00")  # the request head goes out with the first chunk: open it now
    await asyncio.wait_for(sink.opened.wait(), 3)
    await out.drain()
    sink.chunks.clear()
    return out


@pytest.mark.parametrize("tick_ms", [0, 5], ids=["own-timer", "shared-tick"])
async def test_outbound_pacing_keeps_lead_bounded_and_real_time(tick_ms: int) -> None:
    audio = ramp(1.0)
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=60, tick=SharedTick(tick_ms / 1000) if tick_ms else None)
        loop = asyncio.get_running_loop()
        t_write = loop.time()
        out.write(audio)
        await out.drain()
        t_drained = loop.time()
        await out.close()
        await asyncio.wait_for(sink.finished.wait(), 3)
    assert sink.data == audio  # exact bytes, in order
    lead = max_lead_ms(sink.chunks)
    # measured on this machine: ~60 ms; leave room for a busy 2-core box
    assert lead <= 60 + 20, f"lead {lead:.1f} ms exceeds 60 ms"
    assert lead >= 30, f"lead {lead:.1f} ms: the pacer is not running ahead at all"
    # it takes real time: 1 s of audio written in ~1 s - lead
    took = t_drained - t_write
    assert 0.85 <= took <= 1.3, took
    assert out.stats.bytes_sent == len(audio) + 2
    assert out.stats.frames_sent == 51  # 50 frames + the 2-byte opener
    assert out.stats.late_sends == 0 or out.stats.max_lateness_ms > 20
    assert out.stats.first_byte_at is not None


async def test_a_late_pacer_catches_up_in_one_send_within_the_lead() -> None:
    # A loop that stood still (a long callback, a collection) wakes every pacer late: each must
    # send all that is due at once, not batch by batch - the catch-up would cost the most
    # sends, and so CPU, exactly when the process is behind.
    import time

    tick = SharedTick(0.005)
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=200, tick=tick)
        audio = ramp(0.9)
        out.write(audio)
        await asyncio.sleep(0.3)  # paced: the PBX holds 160-200 ms
        conn = out._conn
        assert conn is not None and out.batch == 2
        writes: list[int] = []
        write = conn.write
        conn.write = lambda data: (writes.append(len(data)), write(data))  # type: ignore[method-assign]
        time.sleep(0.1)  # the loop stands still; the PBX plays 100 ms of what it held
        await asyncio.sleep(0.012)  # the tick runs the late pacer
        assert len(writes) == 1, writes  # 100-140 ms due: one send, not 3 of one batch each
        assert writes[0] >= 100 * BPS // 1000
        assert out.ahead_ms <= 200 + 1  # and still within the lead
        await out.drain()
        await asyncio.sleep(0.05)
        assert sink.data == audio  # nothing lost or doubled
        await out.close()


async def test_clear_stops_within_lead() -> None:
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=60)
        loop = asyncio.get_running_loop()
        out.write(tone(2.0))
        await asyncio.sleep(0.5)
        dropped = out.clear()
        t_clear = loop.time()
        assert 1400 <= dropped <= 1560, dropped
        assert out.queued_ms == 0
        await asyncio.sleep(0.2)
        # everything that reached the PBX finishes playing within lead_ms of the clear
        t0 = sink.chunks[0][0]
        plays_until = t0 + len(sink.data) / BPS
        assert (plays_until - t_clear) * 1000 <= 60 + 20
        assert len(sink.data) == out.stats.bytes_sent - 2
        assert all(t <= t_clear + 0.025 for t, _ in sink.chunks)
        await out.drain()  # nothing queued: returns at once
        await out.close()


async def test_outbound_headers_and_no_wav_header() -> None:
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session)
        audio = ramp(0.1)
        out.write(audio)
        await out.drain()
        await out.close()
        await asyncio.wait_for(sink.finished.wait(), 3)
    headers = sink.headers[0]
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in headers
    assert headers["Authorization"] == "Bearer t"
    assert not sink.data.startswith(b"RIFF") and sink.data == audio


# --- against the emulator ----------------------------------------------------------------


def emu_cfg(url: str, **kw) -> PbxConfig:
    kw.setdefault("reconnect_initial", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    return PbxConfig(url=url, client_id="900", client_secret="secret", **kw)


async def incoming_call(emu, pbx: PbxClient, status: str = "Connected") -> tuple[int, int]:
    sub = pbx.events()
    callid = await emu.place_call("+4930123456")
    ev = await sub.next(ParticipantUpdated, where=lambda e: e.participant.callid == callid, timeout=3)
    sub.close()
    assert ev.participant.status == status
    return callid, ev.participant.id


class Reader:
    """Reads an inbound stream in the background, timestamping chunks."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.chunks: list[tuple[float, bytes]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        async for chunk in self.stream:
            self.chunks.append((loop.time(), chunk))

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def bytes_between(self, t0: float, t1: float) -> int:
        return sum(len(c) for t, c in self.chunks if t0 <= t < t1)


async def test_inbound_reads_caller_audio_in_real_time(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        reader = Reader(pbx.open_inbound("800", pid))
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        speech = ramp(0.5)
        await emulator.speak(callid, np.frombuffer(speech, "<i2"))
        t0 = loop.time()
        await asyncio.sleep(0.8)
        t1 = loop.time()
        # about 16,000 bytes per second arrive, as they are said
        got = reader.bytes_between(t0 + 0.1, t1)
        expected = (t1 - t0 - 0.1) * BPS
        assert abs(got - expected) <= 0.15 * expected, (got, expected)
        assert speech in reader.data  # the caller's words, bit-exact and contiguous
        await emulator.hangup(callid)
        await asyncio.wait_for(reader.task, 3)  # ends with the call
        assert reader.stream.opens == 1


async def test_inbound_polls_stay_spread_over_the_grid_after_a_stall(emulator) -> None:
    # Each stream is polled on its own grid point of the 40 ms block; after the loop stood
    # still (a full collection) the streams must not all move to the same grid point, or
    # every call's audio would be read and analysed in one go from then on.
    import time
    from collections import Counter

    async with PbxClient(emu_cfg(emulator.url, inbound_block_ms=40, outbound_tick_ms=5)) as pbx:
        loop = asyncio.get_running_loop()
        polls: list[list[float]] = []
        tasks = []
        callids = []
        for _ in range(8):
            callid, pid = await incoming_call(emulator, pbx)
            callids.append(callid)
            times: list[float] = []
            polls.append(times)
            tasks.append(pbx.open_inbound("800", pid).start(lambda chunk, times=times: times.append(loop.time())))
        await asyncio.sleep(0.3)
        loop.call_soon(time.sleep, 0.1)  # the whole loop stands still, as in a full collection
        await asyncio.sleep(0.05)
        after = loop.time() + 0.1  # past the stall and the catch-up
        await asyncio.sleep(0.5)
        phases = []
        for times in polls:
            late = [t for t in times if t >= after]
            assert len(late) >= 8, "a stream was not polled every block"
            phases.append(Counter(round(t / 0.005) % 8 for t in late).most_common(1)[0][0])
        assert len(set(phases)) >= 6, phases  # each its own grid point, not all the same
        for callid in callids:
            await emulator.hangup(callid)
        await asyncio.wait_for(asyncio.gather(*tasks), 3)


async def test_a_failing_audio_consumer_stops_its_stream_and_its_task_says_why(emulator) -> None:
    # on_audio runs from the shared media timer: its error must end this stream only.
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        calls = []

        def broken(chunk: bytes) -> None:
            calls.append(len(chunk))
            raise ValueError("consumer bug")

        task = pbx.open_inbound("800", pid).start(broken)
        with pytest.raises(ValueError, match="consumer bug"):
            await asyncio.wait_for(task, 3)
        assert len(calls) == 1  # not called again after it failed
        other = Reader(pbx.open_inbound("800", pid))  # the client and the call go on
        await asyncio.sleep(0.3)
        assert len(other.data) > 0
        await emulator.hangup(callid)
        await asyncio.wait_for(other.task, 3)


async def test_inbound_waits_through_424_until_answered(emulator_factory) -> None:
    emu = await emulator_factory(inbound_status="Ringing")
    async with PbxClient(emu_cfg(emu.url)) as pbx:
        _callid, pid = await incoming_call(emu, pbx, status="Ringing")
        with pytest.raises(MediaNotReadyError) as info:
            async for _ in pbx.open_inbound("800", pid, media_timeout=0.2):
                pass
        assert info.value.status == 424
        reader = Reader(pbx.open_inbound("800", pid, media_timeout=3))
        await asyncio.sleep(0.2)
        assert reader.data == b""
        await pbx.rest.answer("800", pid)
        await asyncio.wait_for(_until(lambda: len(reader.data) >= 3200), 3)
        await reader.stream.close()
        await asyncio.wait_for(reader.task, 3)


async def test_token_revoked_mid_call_both_directions_keep_going(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        reader = Reader(pbx.open_inbound("800", pid))
        out = pbx.open_outbound("800", pid)
        loop = asyncio.get_running_loop()
        out.write(tone(1.5))
        await asyncio.sleep(0.5)
        await emulator.inject_fault({"revoke_tokens": True})  # cuts both streams
        t_revoke = loop.time()
        await out.drain()
        await asyncio.sleep(0.3)
        assert reader.bytes_between(t_revoke + 0.3, loop.time()) > 0  # inbound flows again
        assert reader.stream.opens == 2
        assert out.stats.reopens >= 1
        assert pbx.tokens.refreshes == 2  # one new token for both streams (and the socket)
        heard = emulator.heard_pcm(callid)
        # nearly all of the 1.5 s prompt was heard: at most what was in flight was lost
        assert np.count_nonzero(heard) / RATE >= 1.5 - 0.15
        await out.close()
        await emulator.hangup(callid)
        await asyncio.wait_for(reader.task, 3)


async def test_inbound_survives_truncation_and_stall(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        reader = Reader(pbx.open_inbound("800", pid))
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.2)
        await emulator.inject_fault({"truncate_stream": {"callid": callid}})
        await asyncio.wait_for(_until(lambda: reader.stream.opens == 2), 3)
        await emulator.inject_fault({"stall_stream": {"callid": callid, "seconds": 0.3}})
        t_stall = loop.time()
        await asyncio.sleep(0.6)
        assert reader.bytes_between(t_stall + 0.05, t_stall + 0.25) == 0
        assert reader.bytes_between(t_stall + 0.4, loop.time()) > 0
        assert reader.stream.opens == 2  # a stall is waited out, not reopened
        await emulator.hangup(callid)
        await asyncio.wait_for(reader.task, 3)


async def test_outbound_to_emulator_plays_contiguously(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        out = pbx.open_outbound("800", pid)
        prompt = ramp(0.8)
        out.write(prompt)
        await out.wait_played()
        await out.close()
        heard = emulator.heard_pcm(callid)
        start = int(np.flatnonzero(heard)[0])
        played = heard[start : start + len(prompt) // 2].astype("<i2").tobytes()
        assert played == prompt  # no header, no gap, no reordering
        log = [e["event"] for e in emulator.call_info(callid)["log"]]
        assert "stray_wav_header" not in log
        assert out.stats.late_sends == 0


async def _until(cond) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_outbound_waits_for_media_and_loses_nothing(emulator_factory) -> None:
    emu = await emulator_factory(inbound_status="Ringing")
    async with PbxClient(emu_cfg(emu.url)) as pbx:
        callid, pid = await incoming_call(emu, pbx, status="Ringing")
        out = pbx.open_outbound("800", pid, media_timeout=3)
        prompt = ramp(0.3)
        out.write(prompt)  # the POST is answered 424 until the leg is Connected
        await asyncio.sleep(0.3)
        assert len(emu.heard_pcm(callid)) == 0
        await pbx.rest.answer("800", pid)
        await asyncio.wait_for(out.wait_played(), 3)
        heard = emu.heard_pcm(callid)
        start = int(np.flatnonzero(heard)[0])
        assert heard[start : start + len(prompt) // 2].astype("<i2").tobytes() == prompt
        await out.close()


async def test_outbound_rejected_with_401_resends_the_frames(emulator) -> None:
    async with PbxClient(emu_cfg(emulator.url)) as pbx:
        callid, pid = await incoming_call(emulator, pbx)
        out = pbx.open_outbound("800", pid)
        out.write(tone(0.1))
        await out.wait_played()
        await emulator.inject_fault({"revoke_tokens": True})  # cuts the POST; it reopens...
        await asyncio.wait_for(_until(lambda: out.stats.reopens == 1), 3)
        await asyncio.sleep(0.05)
        await emulator.inject_fault({"revoke_tokens": True})  # ...with a token now dead too
        prompt = ramp(0.3)
        out.write(prompt)  # goes out with the dead token: 401, then again with a fresh one
        await asyncio.wait_for(out.wait_played(), 3)
        heard = emulator.heard_pcm(callid).astype("<i2").tobytes()
        assert prompt in heard
        assert out.stats.reopens == 2 and pbx.tokens.refreshes == 3
        await out.close()
