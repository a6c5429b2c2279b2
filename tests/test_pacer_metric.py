"""The PBX client's outbound streams: topped up together; ivr_pacer_lateness_seconds over
every stream, open and ended, each counted once."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from test_pbx_audio import emu_cfg, incoming_call, ramp

from ivr.pbx import PbxClient
from ivr.worker.metrics import WorkerMetrics


def scraped(metrics: WorkerMetrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("ivr_pacer_lateness_seconds"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_lateness_of_live_and_ended_streams_is_in_the_metric(emulator) -> None:
    metrics = WorkerMetrics()
    async with PbxClient(emu_cfg(emulator.url, outbound_lead_ms=60)) as pbx:
        metrics.client = pbx
        before = scraped(metrics)
        assert before["ivr_pacer_lateness_seconds_count"] == 0
        callid, pid = await incoming_call(emulator, pbx)
        out = pbx.open_outbound("800", pid)
        out.write(ramp(1.0))
        await asyncio.sleep(0.3)
        assert out.ahead_ms <= 60 + 1
        assert pbx.top_up_outbound(0.08) == 1  # every open stream of the client
        assert out.ahead_ms > 60 + 20
        await out.wait_played()
        sends = sum(out.stats.lateness_hist)
        assert sends >= 10  # a frame or batch at a time after the opening burst, each measured
        live = scraped(metrics)
        assert live["ivr_pacer_lateness_seconds_count"] == sends
        await emulator.hangup(callid)  # the participant goes: the client forgets its streams
        for _ in range(100):
            if not pbx.top_up_outbound(0.0) and out.ended:
                break
            await asyncio.sleep(0.02)
        ended = scraped(metrics)  # its sends still count, once
        assert ended["ivr_pacer_lateness_seconds_count"] == sends
        assert ended['ivr_pacer_lateness_seconds_bucket{le="+Inf"}'] == sends
        assert pbx.pacer_lateness()[0] == out.stats.lateness_hist
