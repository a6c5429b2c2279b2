"""Full garbage collections paced by the worker: audio topped up first, pauses measured."""

from __future__ import annotations

import asyncio
import gc
import weakref

import aiohttp
from prometheus_client import CollectorRegistry

from ivr.worker.gcpacing import NEVER, PacedCollector
from test_pbx_audio import Sink, open_sink_stream, ramp


async def test_top_up_sends_ahead_by_the_extra_and_pacing_goes_on() -> None:
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=60)
        out.write(ramp(1.0))
        await asyncio.sleep(0.2)  # paced: the PBX holds at most the 60 ms lead
        assert out.ahead_ms <= 60 + 1
        assert out.top_up(0.08)
        assert 60 + 80 - 20 - 5 <= out.ahead_ms <= 60 + 80 + 1  # one frame short at most
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
