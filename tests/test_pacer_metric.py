"""ivr_pacer_lateness_seconds: the pacers' lateness over the whole process, live and ended streams."""

from __future__ import annotations

import aiohttp
from prometheus_client import generate_latest

from ivr.pbx import OutboundAudio
from ivr.worker.metrics import WorkerMetrics
from test_pbx_audio import Sink, open_sink_stream, ramp


def scraped(metrics: WorkerMetrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("ivr_pacer_lateness_seconds"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_lateness_of_live_and_ended_streams_is_in_the_metric() -> None:
    metrics = WorkerMetrics()
    before = scraped(metrics)
    async with Sink() as sink, aiohttp.ClientSession() as session:
        out = await open_sink_stream(sink, session, lead_ms=60)
        out.write(ramp(0.5))
        await out.wait_played()
        sends = sum(out.stats.lateness_hist)
        assert sends >= 10  # a frame or batch at a time after the opening burst, each measured
        live = scraped(metrics)
        assert live["ivr_pacer_lateness_seconds_count"] - before["ivr_pacer_lateness_seconds_count"] == sends
        await out.close()
    ended = scraped(metrics)  # the stream is gone: its sends still count, once
    assert ended["ivr_pacer_lateness_seconds_count"] - before["ivr_pacer_lateness_seconds_count"] == sends
    assert ended['ivr_pacer_lateness_seconds_bucket{le="+Inf"}'] == ended["ivr_pacer_lateness_seconds_count"]
    hist, _ = OutboundAudio.process_lateness()
    assert sum(hist) == ended["ivr_pacer_lateness_seconds_count"]
