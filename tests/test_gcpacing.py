"""Full garbage collections paced by the worker: audio topped up first, pauses measured."""

from __future__ import annotations

import asyncio
import gc
import weakref

import aiohttp
from prometheus_client import CollectorRegistry
from test_pbx_audio import Sink, open_sink_stream, ramp

from ivr.pbx.tick import SharedTick
from ivr.worker.gcpacing import NEVER, PacedCollector


async def test_top_up_sends_ahead_by_the_extra_and_pacing_goes_on() -> None:
    tick = SharedTick(0.005)
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=60, tick=tick)
        out.write(ramp(1.0))
        await asyncio.sleep(0.2)  # paced: the PBX holds at most the 60 ms lead
        assert out.ahead_ms <= 60 + 1
        conn = out._conn
        assert conn is not None
        writes: list[int] = []
        write = conn.write
        conn.write = lambda data: (writes.append(len(data)), write(data))  # type: ignore[method-assign]
        assert out.top_up(0.08)
        assert 60 + 80 - 20 - 5 <= out.ahead_ms <= 60 + 80 + 1  # one frame short at most
        assert len(writes) == 1  # the whole top-up in one send
        assert out.stats.max_lateness_ms < 20 and out.stats.late_sends == 0  # ahead of time, not late
        # The pacer's next wake-up is the usual one: when the PBX is down to lead - batch again.
        due = out._pacer.next_t - 0.060 + out.batch * 0.020  # type: ignore[operator]
        assert max(tick._first_slots) * tick.period <= due + tick.period  # (the earlier one: stale, ignored)
        await out.drain()
        await asyncio.sleep(0.05)
        assert sink.data == ramp(1.0)  # nothing lost or doubled by the extra sends
        await out.close()
    assert not out.top_up(0.08)  # a closed stream has nothing to send into


async def test_paced_collector_owns_full_collections_and_measures_them() -> None:
    registry = CollectorRegistry()
    saved = gc.get_threshold()
    topped: list[float] = []

    def top_up(extra_s: float) -> int:
        topped.append(extra_s)
        return 3

    collector = PacedCollector(top_up, interval=3600, top_up_ms=40, registry=registry)
    collector.start()
    try:
        assert gc.get_threshold() == (saved[0], saved[1], NEVER)  # no automatic full collections
        assert gc.get_freeze_count() > 0  # start-up objects out of the collector's sight

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        pause = collector.collect()
        assert topped == [0.04]  # every stream's audio topped up first
        assert gone() is None
        assert pause > 0 and collector.pauses[-1] == pause
        assert registry.get_sample_value("ivr_gc_pause_seconds_count") == 1
    finally:
        collector.stop()
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


def test_a_pause_longer_than_the_queued_audio_is_logged(caplog) -> None:
    # With no top-up and no slack every pause outlasts the audio: the operator is told.
    quiet = PacedCollector(lambda extra_s: 0, top_up_ms=0, slack_ms=10_000)
    heard = PacedCollector(lambda extra_s: 0, top_up_ms=0, slack_ms=0)
    with caplog.at_level("WARNING", logger="ivr.worker.gcpacing"):
        quiet.collect()
        assert not caplog.records
        heard.collect()
    assert "full garbage collection stopped the audio" in caplog.text


def test_the_top_up_grows_with_the_streams_and_learns_the_stall() -> None:
    import time

    from ivr.worker.gcpacing import FIRST_GUESS_PER_STREAM_S, MARGIN

    streams = {"n": 10}
    topped: list[float] = []

    def slow_top_up(extra_s: float) -> int:
        topped.append(extra_s)
        time.sleep(0.1)  # topping up many streams takes time too: part of the stall
        return streams["n"]

    collector = PacedCollector(slow_top_up, top_up_ms=80, slack_ms=40, streams=lambda: streams["n"], lead_ms=80)
    # Before any measurement: a pessimistic guess per stream, never below the configured least.
    assert collector.top_up_for(10) == 0.08
    assert collector.top_up_for(500) == MARGIN * FIRST_GUESS_PER_STREAM_S * 500 - 0.04
    assert collector.top_up_for(5000) == 0.42  # lead + top-up stays within 500 ms ahead
    collector.collect()
    assert topped == [0.08]
    assert collector.top_up_for(500) == MARGIN * FIRST_GUESS_PER_STREAM_S * 500 - 0.04  # 10 streams: not learned
    streams["n"] = 40
    collector.collect()  # a stall of >= 100 ms over 40 streams: >= 2.5 ms each
    assert collector.top_up_for(40) >= MARGIN * 0.1 - 0.04
    collector.collect()
    assert topped[-1] >= MARGIN * 0.1 - 0.04  # the next collection is topped up for it


def test_the_slack_a_pacer_keeps_is_its_lead_minus_the_batch_it_really_sends() -> None:
    from ivr.pbx.outbound import frames_per_send, slack_ms

    assert slack_ms(80, 2) == 40
    assert frames_per_send(20, 2) == 1 and slack_ms(20, 2) == 0  # one frame of lead: batches of one


async def test_the_worker_runs_with_paced_collections_and_gives_them_back(tmp_path) -> None:
    # `ivr run` (paced_gc=True): full collections are the worker's while it runs, Python's after.
    from ivr.config import PbxSettings, Route, WorkerConfig
    from ivr.emulator import Emulator, EmulatorConfig
    from ivr.worker.runner import Worker

    flow = tmp_path / "hangup.yaml"
    flow.write_text("steps:\n  - hangup\n")
    saved = gc.get_threshold()
    emu = Emulator(EmulatorConfig(client_secret="s"))
    async with emu.running():
        config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900", client_secret="s"),
                              routes=[Route(route_point="800", flow=str(flow))], records=str(tmp_path / "calls.jsonl"))
        worker = Worker(config, paced_gc=True)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        assert gc.get_threshold() == (saved[0], saved[1], NEVER) and gc.get_freeze_count() > 0
        stop.set()
        await asyncio.wait_for(task, 10)
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


async def test_full_collections_stay_paced_while_the_worker_drains(tmp_path) -> None:
    # Calls still play audio during the drain (up to drain_timeout): Python's own full
    # collections, scanning the unfrozen start-up objects too, must not come back before it ends.
    from ivr.config import PbxSettings, Route, WorkerConfig
    from ivr.emulator import Emulator, EmulatorConfig
    from ivr.worker.runner import Worker

    flow = tmp_path / "wait.yaml"
    flow.write_text("steps:\n  - answer\n  - pause: 30\n")
    saved = gc.get_threshold()
    emu = Emulator(EmulatorConfig(client_secret="s"))
    async with emu.running():
        config = WorkerConfig(pbx=PbxSettings(url=emu.url, client_id="900", client_secret="s"),
                              routes=[Route(route_point="800", flow=str(flow))], records=str(tmp_path / "calls.jsonl"))
        worker = Worker(config, paced_gc=True)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 10)
        callid = await emu.place_call("+4930123456")
        for _ in range(200):
            if worker.calls:
                break
            await asyncio.sleep(0.01)
        assert worker.calls, "the call did not reach the worker"
        stop.set()
        for _ in range(100):
            if worker.draining:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert worker.draining and not task.done()
        assert gc.get_threshold() == (saved[0], saved[1], NEVER) and gc.get_freeze_count() > 0
        await emu.hangup(callid)
        await asyncio.wait_for(task, 10)
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0
